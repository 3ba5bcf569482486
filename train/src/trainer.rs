//! The training loop: data from the sample-stream loader, gradient accumulation to the global
//! batch, global-norm clipping, fused AdamW on the GPT-3 schedule, one log line and one
//! `metrics.jsonl` row per step, and crash-safe checkpoints that resume exactly.

use crate::checkpoint::{self, latest_checkpoint, CheckpointState};
use crate::model::{Gpt, GptConfig};
use crate::optim::{AdamW, AdamWConfig};
use crate::schedule::LrSchedule;
use anyhow::{bail, Context, Result};
use h5gpt_formats::{Batch, BatchLayout, Loader, LoaderConfig, ShardSet};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Shard directory (or one with `train/` and `val/`).
    pub shards: PathBuf,
    /// Run directory.
    pub out: PathBuf,
    /// Model shape (`n_ctx` ≥ the shards' seq_len).
    pub model: GptConfig,
    /// Rows per forward/backward pass.
    pub micro_batch: usize,
    /// Tokens per optimizer step (rounded down to whole micro-batches).
    pub total_batch_tokens: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate / peak.
    pub min_lr_ratio: f64,
    /// Warm-up steps.
    pub warmup_steps: usize,
    /// Steps to run (default: `epochs` worth).
    pub max_steps: Option<usize>,
    /// Epochs to run when `max_steps` is not set.
    pub epochs: f64,
    /// Seed of the initialization and the sample stream.
    pub seed: u64,
    /// Checkpoint every this many steps (and at the end).
    pub save_every: usize,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// Device.
    pub device: Device,
}

/// One step's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepMetrics {
    /// Step index (0-based).
    pub step: usize,
    /// Tokens seen after this step.
    pub tokens: u64,
    /// Mean training loss over the step's micro-batches.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub norm: f64,
    /// Milliseconds.
    pub dt_ms: f64,
    /// Tokens per second.
    pub tok_per_s: f64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Per step, this process only.
    pub steps: Vec<StepMetrics>,
    /// Step the run started at (non-zero when resumed).
    pub start_step: usize,
    /// Total steps of the run.
    pub total_steps: usize,
}

fn open_split(shards: &Path) -> Result<Arc<ShardSet>> {
    let train_dir = shards.join("train");
    let dir = if train_dir.is_dir() {
        train_dir
    } else {
        shards.to_path_buf()
    };
    Ok(Arc::new(ShardSet::open(&[&dir]).with_context(|| {
        format!("cannot open training shards in {}", dir.display())
    })?))
}

/// Samples per optimizer step: `total_batch_tokens / seq_len` rounded down to whole
/// micro-batches, then halved while an epoch would give fewer than 100 steps (never below one
/// micro-batch). Returns the batch and the notes to print.
pub fn global_batch(
    total_batch_tokens: usize,
    seq_len: usize,
    micro_batch: usize,
    examples: usize,
) -> (usize, Vec<String>) {
    let mut notes = Vec::new();
    let wanted = total_batch_tokens / seq_len;
    let mut batch = (wanted / micro_batch).max(1) * micro_batch;
    if batch * seq_len != total_batch_tokens {
        notes.push(format!(
            "total batch {total_batch_tokens} tokens is not a multiple of micro-batch {micro_batch} × seq_len {seq_len}: using {} tokens",
            batch * seq_len
        ));
    }
    let before = batch;
    while batch > micro_batch && examples / batch < 100 {
        let halved = (batch / 2 / micro_batch).max(1) * micro_batch;
        if halved == batch {
            break;
        }
        batch = halved;
    }
    if batch < before {
        notes.push(format!(
            "an epoch of {examples} rows would give fewer than 100 optimizer steps: total batch shrunk to {batch} rows ({} tokens)",
            batch * seq_len
        ));
    }
    (batch, notes)
}

fn batch_tensors(batch: &Batch, device: Device) -> (Tensor, Tensor, Tensor) {
    let shape = [batch.rows as i64, batch.seq_len as i64];
    let t = |v: &[i32]| {
        Tensor::from_slice(v)
            .view(shape)
            .to_kind(Kind::Int64)
            .to_device(device)
    };
    (
        t(&batch.input_ids),
        t(&batch.labels),
        t(&batch.attention_mask),
    )
}

/// Runs (or resumes) training.
pub fn train(config: &TrainConfig, log: &mut dyn FnMut(&str)) -> Result<TrainSummary> {
    let set = open_split(&config.shards)?;
    let seq = set.seq_len();
    let model_cfg = config.model;
    if seq > model_cfg.n_ctx {
        bail!(
            "{}: rows of {seq} tokens do not fit the model's context of {}\n---> HINT: re-run preprocess with --seq-len {} or pick a model with a longer context (--n-ctx)",
            config.shards.display(),
            model_cfg.n_ctx,
            model_cfg.n_ctx
        );
    }
    if let Some(vocab) = set.data_params().and_then(|p| p.post_process.vocab_size) {
        if vocab as usize > model_cfg.vocab_size {
            bail!(
                "the shards' vocabulary ({vocab}) is larger than the model's ({})",
                model_cfg.vocab_size
            );
        }
    }
    let (global, notes) = global_batch(
        config.total_batch_tokens,
        seq,
        config.micro_batch,
        set.len(),
    );
    for note in notes {
        log(&format!("note: {note}"));
    }
    let total_steps = config.max_steps.unwrap_or_else(|| {
        ((config.epochs * set.len() as f64) / global as f64)
            .ceil()
            .max(1.0) as usize
    });
    let schedule = LrSchedule {
        max_lr: config.lr,
        min_lr_ratio: config.min_lr_ratio,
        warmup_steps: config.warmup_steps,
        decay_steps: total_steps,
    };

    tch::manual_seed(config.seed as i64);
    let mut vs = nn::VarStore::new(config.device);
    let model = Gpt::new(&vs.root(), model_cfg);
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    let (mut start_step, mut position) = (0usize, 0u64);
    if let Some(ckpt) = latest_checkpoint(&config.out) {
        let state = checkpoint::read_state(&ckpt)?;
        if state.model != model_cfg {
            bail!(
                "{}: checkpoint of another model ({:?}); this run has {:?}\n---> HINT: use the same model flags, or another --out",
                ckpt.display(), state.model, model_cfg
            );
        }
        vs.load(ckpt.join("model.safetensors"))?;
        let saved = Tensor::read_safetensors(ckpt.join("optimizer.safetensors"))?;
        opt.load_state(&saved)
            .map_err(|e| anyhow::anyhow!("{}: {e}", ckpt.display()))?;
        start_step = state.step;
        position = state.position;
        log(&format!(
            "resuming from {} (step {start_step})",
            ckpt.display()
        ));
    }
    std::fs::create_dir_all(&config.out)?;
    let metrics_path = config.out.join("metrics.jsonl");
    // Keep the metrics of the steps the checkpoint covers; later rows are redone.
    let kept: Vec<String> = std::fs::read_to_string(&metrics_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| (s as usize) < start_step)
        })
        .map(str::to_owned)
        .collect();
    let mut metrics = std::fs::File::create(&metrics_path)?;
    for line in kept {
        writeln!(metrics, "{line}")?;
    }

    let layout = BatchLayout {
        global_batch: global,
        micro_batch: config.micro_batch.min(global),
        world_size: 1,
        rank: 0,
    };
    let mut loader = Loader::new(
        set.clone(),
        LoaderConfig {
            seed: config.seed,
            layout,
            start_position: position,
            prefetch: 2,
        },
    )?;
    let micro_steps = layout.micro_steps();
    let tokens_per_step = (global * seq) as u64;
    let mut summary = TrainSummary {
        steps: Vec::new(),
        start_step,
        total_steps,
    };
    let mut saves = 0usize;
    for step in start_step..total_steps {
        let started = Instant::now();
        let lr = schedule.lr(step);
        opt.zero_grad();
        let mut loss_sum = Tensor::zeros([], (Kind::Float, config.device));
        for _ in 0..micro_steps {
            let batch = loader.next_batch()?;
            let (idx, labels, mask) = batch_tensors(&batch, config.device);
            loader.recycle(batch);
            let loss = model.loss(&idx, &labels, &mask, true) / micro_steps as f64;
            loss.backward();
            loss_sum += loss.detach();
        }
        let norm = opt.clip_grad_norm(1.0);
        opt.step(lr)?;
        let loss = loss_sum.double_value(&[]) as f32;
        let dt = started.elapsed().as_secs_f64();
        let m = StepMetrics {
            step,
            tokens: (step as u64 + 1) * tokens_per_step,
            loss,
            lr,
            norm,
            dt_ms: dt * 1e3,
            tok_per_s: tokens_per_step as f64 / dt,
        };
        log(&format!(
            "step {:>5} | loss {:.6} | lr {:.4e} | norm {:.4} | dt {:.2}ms | tok/s {:.0}",
            m.step, m.loss, m.lr, m.norm, m.dt_ms, m.tok_per_s
        ));
        writeln!(metrics, "{}", serde_json::to_string(&m)?)?;
        summary.steps.push(m);
        let done = step + 1;
        if done % config.save_every.max(1) == 0 || done == total_steps {
            saves += 1;
            let state = CheckpointState {
                step: done,
                position: loader.position(),
                seed: config.seed,
                global_batch: global,
                seq_len: seq,
                model: model_cfg,
            };
            checkpoint::save(
                &config.out,
                &vs,
                &opt,
                &state,
                saves,
                config.keep_checkpoints,
            )?;
        }
    }
    metrics.sync_all()?;
    Ok(summary)
}
