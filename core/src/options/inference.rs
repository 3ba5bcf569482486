//! The options of the commands that use a trained model: `sample`, `eval` and `export`, and
//! the model choice (`--checkpoint`/`--hf`, `--device`, `--dtype`, `--tokenizer`) that
//! `sample` and `eval` share.

use super::requests::{DeviceRequest, DtypeRequest};
use clap::Parser;
use std::path::PathBuf;

/// `--checkpoint`, `--device` and `--dtype` (flattened into a command's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct InferenceArgs {
    /// Run directory (`runs/NAME`: its newest complete checkpoint) or one of its
    /// `checkpoints/step-*` directories.
    #[arg(long, required_unless_present = "hf", conflicts_with = "hf")]
    pub checkpoint: Option<PathBuf>,
    /// A Hugging Face GPT-2 directory (`config.json`, `model.safetensors`; its
    /// `tokenizer.json` when it has one, else GPT-2's encoding) instead of --checkpoint
    /// (`eval --task` only).
    #[arg(long, value_name = "DIR")]
    pub hf: Option<PathBuf>,
    /// `auto`, `cpu` or `cuda`.
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
    /// `auto`, `fp32` or `bf16`.
    #[arg(long, default_value = "auto")]
    pub dtype: DtypeRequest,
    /// The tokenizer the model was trained with, when the checkpoint's record of it is missing
    /// or wrong: a tiktoken name (gpt2, cl100k_base, o200k_base) or a tokenizer.json file.
    /// [default: the checkpoint's]
    #[arg(long, value_name = "FILE|NAME")]
    pub tokenizer: Option<String>,
}

/// Generate text from a checkpoint (a run directory: its newest checkpoint).
#[derive(Debug, Parser)]
#[command(name = "sample", version, about)]
pub struct SampleArgs {
    /// The model.
    #[command(flatten)]
    pub model: InferenceArgs,
    /// Text to continue. [default: start of a document]
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200)]
    pub max_new_tokens: usize,
    /// Sampling temperature, finite and at least 0 (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Sample among the k most likely tokens, at least 1 (1: greedy).
    #[arg(long, default_value_t = 200)]
    pub top_k: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Samples to draw, at least 1 (seeds seed, seed+1, …).
    #[arg(long, default_value_t = 1)]
    pub num_samples: usize,
}

/// Loss and perplexity of a checkpoint over a shard directory (its `val/` when it has one), or
/// accuracy on a multiple-choice or LAMBADA task file (`--task`, see docs/eval.md).
#[derive(Debug, Parser)]
#[command(name = "eval", version, about)]
pub struct EvalArgs {
    /// The model.
    #[command(flatten)]
    pub model: InferenceArgs,
    /// Shard directory (a directory with `val/` is evaluated on `val/`).
    #[arg(long, required_unless_present = "task", conflicts_with = "task")]
    pub shards: Option<PathBuf>,
    /// A task file (jsonl: HellaSwag, `{context, choices, answer}` or LAMBADA) to score
    /// instead of --shards: accuracy as lm-evaluation-harness computes it (docs/eval.md).
    #[arg(long, value_name = "FILE.jsonl")]
    pub task: Option<PathBuf>,
    /// With --task: score the first N items only. [default: all]
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// With --task: write each item's log-likelihoods and predictions to FILE (jsonl).
    #[arg(long, value_name = "FILE", requires = "task")]
    pub per_item: Option<PathBuf>,
    /// Rows per forward pass, at least 1 (with --task: continuations per forward pass).
    #[arg(long, default_value_t = 8)]
    pub micro_batch: usize,
    /// Evaluate at most this many rows (at least 1). [default: all]
    #[arg(long)]
    pub max_rows: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Export a checkpoint as a Hugging Face GPT-2 model directory (config.json and
/// model.safetensors) that `transformers.GPT2LMHeadModel.from_pretrained(DIR)` loads.
#[derive(Debug, Parser)]
#[command(name = "export", version, about)]
pub struct ExportArgs {
    /// A run directory (exports its newest complete checkpoint) or one of its
    /// `checkpoints/step-N` directories.
    #[arg(long, value_name = "RUN|CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// Output directory. Created if missing; an earlier export there (it holds
    /// `h5gpt-export.json` and only the files that lists) is replaced; any other non-empty
    /// directory is refused (exit 1) unless --force.
    #[arg(long, value_name = "DIR")]
    pub hf: PathBuf,
    /// Write into a non-empty directory that is not an earlier export: the export's files
    /// replace files of the same names; every other file there is left alone.
    #[arg(long)]
    pub force: bool,
}
