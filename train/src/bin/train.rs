//! `train`: a GPT-2/GPT-3 style model on h5gpt shards (work in progress: see the trainer issue).

use anyhow::{bail, Result};
use clap::Parser;
use h5gpt_train::model::{padded_vocab, GptConfig};
use h5gpt_train::trainer::{train, TrainConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use tch::Device;

/// Train a GPT model on a shard directory written by `preprocess`.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Shard directory, or one with `train/` (and `val/`) subdirectories.
    #[arg(long)]
    shards: PathBuf,
    /// Run directory (checkpoints, metrics.jsonl). Rerunning into it resumes.
    #[arg(long)]
    out: PathBuf,
    /// Model preset: `tiny` (2 layers, width 64) or `gpt2-small`.
    #[arg(long, default_value = "tiny")]
    model: String,
    /// Override: transformer blocks.
    #[arg(long)]
    n_layer: Option<usize>,
    /// Override: attention heads.
    #[arg(long)]
    n_head: Option<usize>,
    /// Override: embedding width.
    #[arg(long)]
    n_embd: Option<usize>,
    /// Override: context length (default: the preset's, or the shards' seq_len for `tiny`).
    #[arg(long)]
    n_ctx: Option<usize>,
    /// Rows per forward/backward pass.
    #[arg(long, default_value_t = 8)]
    micro_batch: usize,
    /// Tokens per optimizer step (gradient accumulation makes up the difference).
    #[arg(long, default_value_t = 524_288)]
    total_batch_tokens: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 6e-4)]
    lr: f64,
    /// Final learning rate as a fraction of the peak.
    #[arg(long, default_value_t = 0.1)]
    min_lr_ratio: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 10)]
    warmup_steps: usize,
    /// Optimizer steps (default: --epochs worth).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Epochs when --max-steps is not given.
    #[arg(long, default_value_t = 1.0)]
    epochs: f64,
    /// Seed of initialization and data order.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 100)]
    save_every: usize,
    /// Checkpoints kept.
    #[arg(long, default_value_t = 2)]
    keep_checkpoints: usize,
    /// `cpu`, `cuda` or `auto`.
    #[arg(long, default_value = "auto")]
    device: String,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("train: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    let device = match args.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        "cuda" => bail!("--device cuda, but CUDA is not usable here (no GPU or driver visible to libtorch)\n---> HINT: use --device cpu, or check `nvidia-smi`"),
        "auto" => Device::cuda_if_available(),
        other => bail!("--device {other}: expected cpu, cuda or auto"),
    };
    let seq_len = h5gpt_formats::DataParams::read_from_dir(&args.shards.join("train"))
        .ok()
        .flatten()
        .or_else(|| {
            h5gpt_formats::DataParams::read_from_dir(&args.shards)
                .ok()
                .flatten()
        })
        .and_then(|p| p.seq_len());
    let mut model = match args.model.as_str() {
        "tiny" => GptConfig {
            n_embd: 64,
            ..GptConfig::tiny(padded_vocab(50257), seq_len.unwrap_or(256))
        },
        "gpt2-small" => GptConfig::gpt2_small(),
        other => bail!("--model {other}: known presets are tiny, gpt2-small"),
    };
    model.n_layer = args.n_layer.unwrap_or(model.n_layer);
    model.n_head = args.n_head.unwrap_or(model.n_head);
    model.n_embd = args.n_embd.unwrap_or(model.n_embd);
    model.n_ctx = args.n_ctx.unwrap_or(model.n_ctx);
    if model.n_embd % model.n_head != 0 {
        bail!(
            "--n-embd {} is not divisible by --n-head {}",
            model.n_embd,
            model.n_head
        );
    }
    let config = TrainConfig {
        shards: args.shards,
        out: args.out,
        model,
        micro_batch: args.micro_batch,
        total_batch_tokens: args.total_batch_tokens,
        lr: args.lr,
        min_lr_ratio: args.min_lr_ratio,
        warmup_steps: args.warmup_steps,
        max_steps: args.max_steps,
        epochs: args.epochs,
        seed: args.seed,
        save_every: args.save_every,
        keep_checkpoints: args.keep_checkpoints,
        device,
    };
    eprintln!(
        "train: {} -> {} | model L{} H{} E{} T{} ({:.2}M parameters) | micro-batch {} | total batch {} tokens | lr {} | device {:?}",
        config.shards.display(),
        config.out.display(),
        model.n_layer,
        model.n_head,
        model.n_embd,
        model.n_ctx,
        model.parameter_count() as f64 / 1e6,
        config.micro_batch,
        config.total_batch_tokens,
        config.lr,
        config.device
    );
    let summary = train(&config, &mut |line| println!("{line}"))?;
    println!(
        "done: steps {}..{} of {}",
        summary.start_step, summary.total_steps, summary.total_steps
    );
    Ok(())
}
