//! `train` reads the configs `plan sweep` writes as they are written: each resolves to the
//! planned shape, length, batch, μP and final validation.

use h5gpt_core::plan::sweep::{design, write, RunSettings, SweepSpec};
use h5gpt_formats::synthetic::{write_synthetic, SyntheticSpec};
use h5gpt_formats::Compression;
use h5gpt_train::options::{resolve, TrainOptions};
use std::path::Path;

#[test]
fn sweep_configs_are_train_options_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    for (sub, n) in [("train", 4000), ("val", 32)] {
        let spec = SyntheticSpec {
            examples: n,
            seq_len: 64,
            examples_per_shard: 4096,
            compression: Compression::None,
            partial_tokens: None,
        };
        write_synthetic(&shards.join(sub), spec).unwrap();
    }
    let spec = SweepSpec {
        budgets: vec![1e12, 3e12],
        models_per_budget: 5,
        spread: 16.0,
        centre_ratio: 20.0,
        seq_len: 64,
        vocab_size: 256_002,
        batch_rows: 32,
        corpus_tokens: 4000 * 64,
        max_epochs: 1.0,
    };
    let runs = design(&spec).unwrap();
    let settings = RunSettings {
        shards: shards.clone(),
        ..RunSettings::default()
    };
    let out = dir.path().join("sweep");
    let manifest = write(&out, &spec, &settings, runs, "test").unwrap();
    assert!(manifest.runs.len() >= 4, "{} runs", manifest.runs.len());
    for run in &manifest.runs {
        let options = TrainOptions {
            config: Some(run.config.clone()),
            ..TrainOptions::default()
        };
        let resolved = resolve(options).unwrap();
        let c = &resolved.config;
        assert_eq!(c.model.n_embd, run.model.n_embd);
        assert_eq!(c.model.n_layer, run.model.n_layer);
        assert_eq!(c.model.n_head, run.model.n_head);
        assert_eq!(c.max_steps, Some(run.steps));
        assert!(c.final_eval);
        assert_eq!(c.model.mup.unwrap().base_width, manifest.mup_base_width);
        assert_eq!(c.out, run.out);
        assert_eq!(c.shards, vec![shards.clone()]);
        assert_eq!(c.total_batch_tokens, 32 * 64);
        assert_eq!(c.micro_batch, 8);
        assert_eq!(c.lr, 6e-3);
        assert_eq!(c.eval_every, 0);
        assert!(Path::new(&run.config).is_file());
    }
}
