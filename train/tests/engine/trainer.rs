//! The training loop on CPU: exact resume from a checkpoint, batch sizing.

use h5gpt_formats::{Compression, ShardSetWriter};
use h5gpt_train::model::GptConfig;
use h5gpt_train::trainer::{global_batch, train, TrainConfig};
use std::path::Path;
use tch::Device;

/// A stream-packed shard set of pseudo-random tokens below 64.
fn shards(dir: &Path, rows: usize, seq: usize) {
    let mut state = 12345u64;
    let stream: Vec<i32> = (0..rows * seq + 1)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % 64) as i32
        })
        .collect();
    let mut w = ShardSetWriter::new(dir, seq, Compression::None, 40).unwrap();
    for r in 0..rows {
        let window = &stream[r * seq..r * seq + seq + 1];
        w.push(&window[..seq], &vec![1; seq], &window[1..]).unwrap();
    }
    w.finish().unwrap();
}

fn config(shards: &Path, out: &Path) -> TrainConfig {
    TrainConfig {
        shards: shards.into(),
        out: out.into(),
        model: GptConfig::tiny(64, 16),
        micro_batch: 4,
        total_batch_tokens: 8 * 16,
        lr: 3e-3,
        min_lr_ratio: 0.1,
        warmup_steps: 2,
        max_steps: Some(6),
        epochs: 1.0,
        seed: 7,
        save_every: 3,
        keep_checkpoints: 5,
        device: Device::Cpu,
    }
}

/// A run resumed from its step-3 checkpoint gives the uninterrupted run's losses, bit for bit.
#[test]
fn resumed_run_reproduces_losses_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shards");
    shards(&data, 1000, 16);
    let (full, resumed) = (dir.path().join("full"), dir.path().join("resumed"));
    let a = train(&config(&data, &full), &mut |_| {}).unwrap();
    assert_eq!(a.steps.len(), 6);
    assert!(a.steps[5].loss < a.steps[0].loss, "the loss falls");
    std::fs::create_dir_all(resumed.join("checkpoints")).unwrap();
    let from = full.join("checkpoints/step-00000003");
    let to = resumed.join("checkpoints/step-00000003");
    std::fs::create_dir_all(&to).unwrap();
    for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    let b = train(&config(&data, &resumed), &mut |_| {}).unwrap();
    assert_eq!(b.start_step, 3);
    let bits = |s: &[h5gpt_train::trainer::StepMetrics]| {
        s.iter().map(|m| m.loss.to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(bits(&b.steps), bits(&a.steps[3..]));
}

#[test]
fn a_checkpoint_of_another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shards");
    shards(&data, 200, 16);
    let out = dir.path().join("run");
    train(&config(&data, &out), &mut |_| {}).unwrap();
    let mut other = config(&data, &out);
    other.model.n_layer = 3;
    let err = train(&other, &mut |_| {}).err().unwrap().to_string();
    assert!(err.contains("checkpoint of another model"), "{err}");
}

#[test]
fn rows_longer_than_the_context_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shards");
    shards(&data, 50, 32);
    let err = train(&config(&data, &dir.path().join("run")), &mut |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--seq-len 16"), "{err}");
}

#[test]
fn small_epochs_shrink_the_global_batch() {
    // 524288 tokens of 1024 = 512 rows; 10_000 rows would give 19 steps: shrink to 64 rows.
    let (batch, notes) = global_batch(524_288, 1024, 8, 10_000);
    assert_eq!(batch, 64);
    assert!(
        notes.iter().any(|n| n.contains("fewer than 100")),
        "{notes:?}"
    );
    // Enough data: unchanged.
    assert_eq!(global_batch(524_288, 1024, 8, 1_000_000).0, 512);
    // Rounded down to whole micro-batches.
    let (batch, notes) = global_batch(1000, 10, 8, 1_000_000);
    assert_eq!(batch, 96);
    assert!(notes[0].contains("not a multiple"), "{notes:?}");
}
