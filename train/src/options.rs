//! The `train` command's options: flags, a `--config FILE.toml` with the same names, preset
//! defaults, and their resolution into a [`TrainConfig`].
//!
//! Precedence: command-line flag > config file > the model preset's default > the built-in
//! default. The resolved options are written to the run's `config.toml`, which `--config`
//! reads back.

use crate::device::{select, DeviceRequest};
use crate::optim::AdamWConfig;
use crate::precision::{DtypeRequest, Precision};
use crate::trainer::{TrainConfig, VerifyMode};
use anyhow::{bail, Context, Result};
use clap::Parser;
use h5gpt_core::cerebras::{self, LrPhase, PhaseSchedule};
use h5gpt_core::config::{
    GptConfig, InitConfig, MupConfig, Preset, SpInitStd, MUP_BASE_LR, PRESETS,
};
use h5gpt_formats::exit::UsageError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Train a GPT-2/GPT-3 style model on a shard directory written by `preprocess`.
///
/// Every option can also be set in a TOML file given with --config (keys spelled like the
/// flags, with `_` for `-`); flags override the file, the file overrides the preset.
#[derive(Debug, Clone, Default, PartialEq, Parser, Serialize, Deserialize)]
#[command(name = "train", version, about, long_about)]
#[serde(deny_unknown_fields, default)]
pub struct TrainOptions {
    /// Shard directory, or one with `train/` (and `val/`) subdirectories; several are read as
    /// one set (they must share one tokenizer).
    #[arg(long, num_args = 1..)]
    #[serde(
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub shards: Vec<PathBuf>,
    /// A weighted blend of the --shards sets: the fraction of rows drawn from each, in order
    /// (normalized to sum to 1), e.g. `--shards A B --weights 0.7 0.3`. [default: none: the
    /// sets are read as one]
    #[arg(long, num_args = 1.., value_name = "W")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<f64>,
    /// The blend as TOML tables (config files only): `[[blend]]` with `path` and `weight`, one
    /// per set; the same as --shards with --weights.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blend: Vec<BlendEntry>,
    /// Resume with other --weights than the checkpoint's: the stream continues from the
    /// checkpoint's position with the new weights (each set continues its own order, so no row
    /// repeats early). Without it a resume with other weights is refused.
    #[arg(long)]
    #[serde(skip)]
    pub reweight: bool,
    /// Run directory: config.toml, metrics.jsonl, loss.png, checkpoints/. Rerunning into it
    /// resumes. [default: runs/YYYYMMDD-HHMMSS]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// TOML file with any of these options, or a Cerebras Model Zoo YAML config (`.yaml`,
    /// either generation: release 2.0.3's or 2.10's layout), mapped onto these options with a
    /// report of every key.
    #[arg(long, value_name = "FILE.toml|FILE.yaml")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// With a YAML --config: run even with keys this reader does not know (the report lists
    /// them); without it they are an error.
    #[arg(long)]
    #[serde(skip)]
    pub allow_unknown: bool,
    /// With a YAML --config: the directory its relative `data_dir`s are resolved against.
    /// [default: the working directory, as Cerebras does]
    #[arg(long, value_name = "DIR")]
    #[serde(skip)]
    pub data_root: Option<PathBuf>,
    /// Evaluation shard directories, read as one set, instead of the --shards' `val/` (or
    /// held-out rows).
    #[arg(long, num_args = 1.., value_name = "DIR")]
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub val_shards: Vec<PathBuf>,
    /// Continue from the newest checkpoint of --out (default: the newest run under runs/);
    /// an error when there is none.
    #[arg(long)]
    #[serde(skip)]
    pub resume: bool,
    /// Model preset (see --list-models), or `auto`: the shape sized to the tokens the run will
    /// see (Chinchilla's 20 per parameter, see --ratio), context = the shards' seq_len.
    /// [default: auto]
    #[arg(long)]
    pub model: Option<String>,
    /// Tokens per parameter the auto-sized model aims at (Chinchilla: 20).
    /// [default: 20]
    #[arg(long)]
    pub ratio: Option<f64>,
    /// List the model presets and exit.
    #[arg(long)]
    #[serde(skip)]
    pub list_models: bool,
    /// Override: transformer blocks.
    #[arg(long)]
    pub n_layer: Option<usize>,
    /// Override: attention heads.
    #[arg(long)]
    pub n_head: Option<usize>,
    /// Override: embedding width.
    #[arg(long)]
    pub n_embd: Option<usize>,
    /// Override: context length. [default: the preset's, or the shards' seq_len]
    #[arg(long)]
    pub n_ctx: Option<usize>,
    /// Width of the MLP's hidden layer (Cerebras' `filter_size`); any width works. Not rescaled
    /// by --n-embd. [default: 4 × n_embd]
    #[arg(long)]
    pub ffn_size: Option<usize>,
    /// ε of every LayerNorm. [default: 1e-5]
    #[arg(long)]
    pub layer_norm_eps: Option<f64>,
    /// Init std of the hidden matrices (QKV, MLP in), standard parameterization.
    /// [default: 0.02]
    #[arg(long, value_name = "STD")]
    pub init_std: Option<f64>,
    /// Init std of the token and position embeddings, standard parameterization.
    /// [default: --init-std]
    #[arg(long, value_name = "STD")]
    pub init_embedding_std: Option<f64>,
    /// Init std of the projections into the residual stream, standard parameterization.
    /// [default: --init-std/√(2·n_layer)]
    #[arg(long, value_name = "STD")]
    pub init_residual_std: Option<f64>,
    /// Truncate the initial normals at ± this many stds (Cerebras' `truncated_normal`, `a`/`b`
    /// = ∓2σ: 2). [default: not truncated]
    #[arg(long, value_name = "K")]
    pub init_truncation: Option<f64>,
    /// Dropout probability. [default: 0]
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Biases in linear layers and LayerNorms. [default: true]
    #[arg(long)]
    pub bias: Option<bool>,
    /// Vocabulary size. [default: the shards' (data_params.json), else 50257]
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// μP (Maximal Update Parameterization, as Cerebras-GPT): hyperparameters tuned at
    /// --mup-base-width carry over to any width. Makes --lr the base LR (default 6e-3).
    /// [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub mup: Option<bool>,
    /// μP: width D₀ of the base model; m = n_embd / D₀. [default: 256]
    #[arg(long, value_name = "D0")]
    pub mup_base_width: Option<usize>,
    /// μP: multiplier of the embedding output. [default: 10]
    #[arg(long, value_name = "X")]
    pub mup_embed_mult: Option<f64>,
    /// μP: σ_base, init std of the embeddings (hidden matrices: σ_base/√m). [default: 0.08]
    #[arg(long, value_name = "STD")]
    pub mup_init_std: Option<f64>,
    /// Start from a Hugging Face GPT-2 directory (config.json + model.safetensors); its shape
    /// becomes the model's.
    #[arg(long, value_name = "DIR")]
    pub init_from_hf: Option<PathBuf>,
    /// Rows per forward/backward pass. [default: the preset's]
    #[arg(long)]
    pub micro_batch: Option<usize>,
    /// Tokens per optimizer step; gradient accumulation makes up the difference.
    /// [default: the preset's, e.g. 524288 for gpt2-small]
    #[arg(long)]
    pub total_batch_tokens: Option<usize>,
    /// Rows per optimizer step (global, over all ranks; Cerebras' `batch_size`), used as given:
    /// never shrunk for small data. Replaces --total-batch-tokens. [default: from
    /// --total-batch-tokens]
    #[arg(long, conflicts_with = "total_batch_tokens")]
    pub batch_size: Option<usize>,
    /// Peak learning rate. [default: the preset's, e.g. 6e-4 for gpt2-small]
    #[arg(long)]
    pub lr: Option<f64>,
    /// Final learning rate as a fraction of the peak. [default: 0.1]
    #[arg(long)]
    pub min_lr_ratio: Option<f64>,
    /// The learning rate as phases, Cerebras' semantics (config files only; a YAML --config
    /// writes it): `[[lr_schedule]]` with `kind` (`linear`, `cosine`, `constant`),
    /// `initial_lr`, `end_lr`, `steps`. Replaces --lr's warm-up and cosine.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lr_schedule: Vec<LrPhase>,
    /// AdamW β₁. [default: 0.9]
    #[arg(long)]
    pub adam_beta1: Option<f64>,
    /// AdamW β₂. [default: 0.95]
    #[arg(long)]
    pub adam_beta2: Option<f64>,
    /// AdamW ε. [default: 1e-8]
    #[arg(long)]
    pub adam_eps: Option<f64>,
    /// AdamW weight decay of the matrices (decoupled, × the LR). [default: 0.1]
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Clip the global gradient norm to this (0: no clipping). [default: 1]
    #[arg(long)]
    pub grad_clip: Option<f64>,
    /// Shuffle the training rows (`false`: read them in file order, epoch after epoch, as
    /// Cerebras' `shuffle: false`). [default: true]
    #[arg(long, value_name = "BOOL")]
    pub shuffle: Option<bool>,
    /// Linear warm-up steps. [default: 10]
    #[arg(long, conflicts_with = "warmup_tokens")]
    pub warmup_steps: Option<usize>,
    /// Linear warm-up in tokens (GPT-3: 375e6), rounded up to whole steps.
    #[arg(long)]
    pub warmup_tokens: Option<f64>,
    /// Optimizer steps. [default: --epochs worth]
    #[arg(long, conflicts_with = "max_tokens")]
    pub max_steps: Option<usize>,
    /// Tokens to train on, rounded up to whole steps.
    #[arg(long)]
    pub max_tokens: Option<f64>,
    /// Epochs when neither --max-steps nor --max-tokens is given. [default: 1]
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Seed of initialization, data order and dropout. [default: 1337]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Checkpoint every N steps (and at the end). [default: 100]
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Checkpoints kept. [default: 2]
    #[arg(long)]
    pub keep_checkpoints: Option<usize>,
    /// Validation loss every N steps (and at the start and end); 0: never. [default: 50]
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Micro-batches per validation. [default: 20]
    #[arg(long)]
    pub eval_batches: Option<usize>,
    /// After the last step, evaluate every row of the validation set (val/, or the held-out
    /// rows) and record it as the run's final validation loss (state.json `final_eval`,
    /// metrics.jsonl `final_val_loss`), as `plan fit` reads it. [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub final_eval: Option<bool>,
    /// `auto` (bf16 autocast on CUDA, fp32 on CPU), `fp32`, `bf16` (autocast over fp32 weights)
    /// or `bf16-pure` (bf16 weights and activations, fp32 master weights and gradient
    /// accumulation; checkpoints keep the fp32 masters). [default: auto]
    #[arg(long)]
    pub dtype: Option<String>,
    /// `auto`, `cpu` or `cuda`. [default: auto]
    #[arg(long)]
    pub device: Option<String>,
    /// Peak FLOP/s of the device for MFU. [default: looked up from the GPU's name]
    #[arg(long)]
    pub peak_flops: Option<f64>,
    /// CPU threads for libtorch. [default: libtorch's choice]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Shard checksums before step 0: `cached` (hash the shards not verified before; a cache
    /// beside them, keyed by path, size, mtime and inode, remembers the rest) or `full` (hash
    /// every shard). [default: cached]
    #[arg(long, value_name = "MODE")]
    pub verify: Option<String>,
    /// Do not check the shards' checksums before step 0 (the log says so).
    #[arg(long, conflicts_with = "verify")]
    #[serde(skip)]
    pub no_verify: bool,
    /// Seconds a data-parallel rank waits for the others (rendezvous, each collective) before
    /// it gives up with an error: a dead rank stops the run instead of hanging it. [default: 600]
    #[arg(long)]
    pub dist_timeout: Option<f64>,
    /// Steps with a non-finite loss or gradient norm to skip (not applied, counted and logged)
    /// before the run stops; 0: the first one stops it with an error naming the step. Large
    /// runs allow a few for rare spikes. [default: 0]
    #[arg(long, value_name = "N")]
    pub skip_nonfinite: Option<usize>,
}

/// One set of a `[[blend]]` in a config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlendEntry {
    /// Shard directory (plain, or with `train/` and `val/`).
    pub path: PathBuf,
    /// Fraction of rows drawn from it.
    pub weight: f64,
}

macro_rules! overlay {
    ($dst:ident, $src:ident; $($field:ident),* $(,)?) => {
        $( if $dst.$field.is_none() { $dst.$field = $src.$field.clone(); } )*
    };
}

impl TrainOptions {
    /// Fills what is unset here from `file` (a `--config` file's options).
    pub fn overlay(&mut self, file: &TrainOptions) {
        // A length or warm-up given one way here replaces the file's, given either way.
        let mut file = file.clone();
        if self.max_steps.is_some() || self.max_tokens.is_some() {
            (file.max_steps, file.max_tokens) = (None, None);
        }
        if self.warmup_steps.is_some() || self.warmup_tokens.is_some() {
            (file.warmup_steps, file.warmup_tokens) = (None, None);
        }
        if self.shards.is_empty() && self.blend.is_empty() {
            self.shards = file.shards.clone();
            self.blend = file.blend.clone();
        }
        if self.weights.is_empty() && self.blend.is_empty() {
            self.weights = file.weights.clone();
        }
        if self.val_shards.is_empty() {
            self.val_shards = file.val_shards.clone();
        }
        // A batch given one way here replaces the file's, given either way.
        if self.batch_size.is_some() || self.total_batch_tokens.is_some() {
            (file.batch_size, file.total_batch_tokens) = (None, None);
        }
        // A learning rate given here replaces the file's schedule (it would shadow it).
        if self.lr_schedule.is_empty() && self.lr.is_none() {
            self.lr_schedule = file.lr_schedule.clone();
        }
        overlay!(self, file; out, model, n_layer, n_head, n_embd, n_ctx, dropout, bias,
            vocab_size, ratio, mup, mup_base_width, mup_embed_mult, mup_init_std, init_from_hf,
            micro_batch, total_batch_tokens, lr, min_lr_ratio, warmup_steps, warmup_tokens,
            max_steps, max_tokens, epochs, seed, save_every, keep_checkpoints, eval_every,
            eval_batches, final_eval, dtype, device, peak_flops, threads, dist_timeout, skip_nonfinite, verify,
            ffn_size, layer_norm_eps, init_std, init_embedding_std, init_residual_std,
            init_truncation, batch_size, adam_beta1, adam_beta2, adam_eps, weight_decay,
            grad_clip, shuffle);
    }

    /// Checks every numeric option's range before anything uses it. A value from a `--config`
    /// file (or the run's `config.toml`) gets the same message as one from its flag.
    pub fn validate(&self) -> Result<(), UsageError> {
        fn at_least_one(flag: &str, value: Option<usize>, what: &str) -> Result<(), UsageError> {
            match value {
                Some(0) => Err(UsageError::new(format!(
                    "--{flag} 0: {what} must be at least 1"
                ))),
                _ => Ok(()),
            }
        }
        fn positive(flag: &str, value: Option<f64>, what: &str) -> Result<(), UsageError> {
            match value {
                Some(v) if !(v.is_finite() && v > 0.0) => Err(UsageError::new(format!(
                    "--{flag} {v}: {what} must be a positive, finite number"
                ))),
                _ => Ok(()),
            }
        }
        fn within(
            flag: &str,
            value: Option<f64>,
            range: std::ops::RangeInclusive<f64>,
            open_end: bool,
            what: &str,
        ) -> Result<(), UsageError> {
            match value {
                Some(v) if !range.contains(&v) || (open_end && v == *range.end()) => {
                    Err(UsageError::new(format!(
                        "--{flag} {v}: {what} must be in [{}, {}{}",
                        range.start(),
                        range.end(),
                        if open_end { ")" } else { "]" }
                    )))
                }
                _ => Ok(()),
            }
        }
        at_least_one("n-layer", self.n_layer, "the number of transformer blocks")?;
        at_least_one("n-head", self.n_head, "the number of attention heads")?;
        at_least_one("n-embd", self.n_embd, "the embedding width")?;
        at_least_one("n-ctx", self.n_ctx, "the context length")?;
        at_least_one("vocab-size", self.vocab_size, "the vocabulary size")?;
        at_least_one("mup-base-width", self.mup_base_width, "the μP base width")?;
        at_least_one("micro-batch", self.micro_batch, "the rows per micro-batch")?;
        at_least_one("batch-size", self.batch_size, "the rows per optimizer step")?;
        at_least_one("ffn-size", self.ffn_size, "the MLP width")?;
        positive("layer-norm-eps", self.layer_norm_eps, "the LayerNorm ε")?;
        positive("init-std", self.init_std, "the init std")?;
        positive(
            "init-embedding-std",
            self.init_embedding_std,
            "the init std",
        )?;
        positive("init-residual-std", self.init_residual_std, "the init std")?;
        positive(
            "init-truncation",
            self.init_truncation,
            "the truncation in stds",
        )?;
        positive("adam-eps", self.adam_eps, "AdamW's ε")?;
        within("adam-beta1", self.adam_beta1, 0.0..=1.0, true, "AdamW's β₁")?;
        within("adam-beta2", self.adam_beta2, 0.0..=1.0, true, "AdamW's β₂")?;
        if let Some(v) = self.weight_decay.filter(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(UsageError::new(format!(
                "--weight-decay {v}: the weight decay must be a finite number, at least 0"
            )));
        }
        if let Some(v) = self.grad_clip.filter(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(UsageError::new(format!(
                "--grad-clip {v}: the gradient-norm limit must be a finite number, at least 0 (0: no clipping)"
            )));
        }
        if !self.lr_schedule.is_empty() {
            PhaseSchedule(self.lr_schedule.clone())
                .validate()
                .map_err(|e| UsageError::new(format!("lr_schedule: {e}")))?;
        }
        at_least_one(
            "total-batch-tokens",
            self.total_batch_tokens,
            "the tokens per optimizer step",
        )?;
        at_least_one("max-steps", self.max_steps, "the number of optimizer steps")?;
        at_least_one("save-every", self.save_every, "the checkpoint interval")?;
        at_least_one(
            "keep-checkpoints",
            self.keep_checkpoints,
            "the number of checkpoints kept",
        )?;
        at_least_one(
            "eval-batches",
            self.eval_batches,
            "the micro-batches per validation",
        )?;
        at_least_one("threads", self.threads, "the number of CPU threads")?;
        positive("ratio", self.ratio, "the tokens per parameter")?;
        positive(
            "mup-embed-mult",
            self.mup_embed_mult,
            "the μP embedding multiplier",
        )?;
        positive("mup-init-std", self.mup_init_std, "the μP init std")?;
        positive("lr", self.lr, "the learning rate")?;
        positive("max-tokens", self.max_tokens, "the tokens to train on")?;
        positive("epochs", self.epochs, "the number of epochs")?;
        positive("peak-flops", self.peak_flops, "the device's peak FLOP/s")?;
        positive("dist-timeout", self.dist_timeout, "the timeout in seconds")?;
        within(
            "dropout",
            self.dropout,
            0.0..=1.0,
            true,
            "the dropout probability",
        )?;
        within(
            "min-lr-ratio",
            self.min_lr_ratio,
            0.0..=1.0,
            false,
            "the final learning rate as a fraction of the peak",
        )?;
        if let Some(v) = self.warmup_tokens.filter(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(UsageError::new(format!(
                "--warmup-tokens {v}: the warm-up in tokens must be a finite number, at least 0"
            )));
        }
        if let (Some(n_embd), Some(n_head)) = (self.n_embd, self.n_head) {
            if n_embd % n_head != 0 {
                return Err(UsageError::new(format!(
                    "--n-embd {n_embd} is not divisible by --n-head {n_head}: every head must have the same width"
                )));
            }
        }
        Ok(())
    }

    /// Reads a `--config` file.
    pub fn read_file(path: &Path) -> Result<TrainOptions> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --config {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| UsageError::new(format!("{}: {e}", path.display())).into())
    }

    /// The options as TOML (what `config.toml` holds).
    pub fn to_toml(&self) -> Result<String> {
        Ok(format!(
            "# Resolved options of this run; `train --config` reads this file.\n{}",
            toml::to_string(self)?
        ))
    }
}

/// `shards = "DIR"` (as earlier versions wrote it) or `shards = ["DIR", …]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

/// A default run directory: `runs/YYYYMMDD-HHMMSS` (UTC).
pub fn timestamped_run_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    PathBuf::from("runs").join(format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// The newest run directory under `runs/` that has a checkpoint.
fn newest_run(runs: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(runs)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| crate::checkpoint::latest_checkpoint(p).is_some())
        .collect();
    dirs.sort_by_key(|p| {
        std::fs::metadata(crate::checkpoint::latest_checkpoint(p).unwrap_or_default())
            .and_then(|m| m.modified())
            .ok()
    });
    dirs.pop()
}

/// Options resolved: the trainer's configuration, and the options with every value filled
/// in (for `config.toml`).
pub struct Resolved {
    /// What the trainer runs.
    pub config: TrainConfig,
    /// Every option, as used.
    pub options: TrainOptions,
    /// The preset the model and its learning rate and batch came from (for `auto`: the
    /// preset nearest in size, whose learning rate and batch the run takes).
    pub preset: &'static Preset,
    /// `--model` as resolved: a preset's name or `auto`.
    pub model_name: String,
    /// Lines to print before training (the auto-sized model's plan).
    pub notes: Vec<String>,
}

/// `--model auto` (the default): the model sized for the tokens the run will see.
pub const AUTO_MODEL: &str = "auto";

/// The auto-sized model (see [`h5gpt_core::plan::auto_size`]) and the preset whose non-embedding
/// size is nearest to it, which lends its learning rate and batch.
fn auto_model(
    cli: &TrainOptions,
    shards: &str,
    params: Option<&h5gpt_formats::DataParams>,
    notes: &mut Vec<String>,
) -> Result<(&'static Preset, GptConfig)> {
    let hint = "---> HINT: pick a model with --model (see --list-models)";
    let params = params.with_context(|| {
        format!(
            "{}: no data_params.json, so the model cannot be sized to the data\n{hint}",
            shards
        )
    })?;
    let seq_len = params
        .seq_len()
        .with_context(|| format!("{}: data_params.json has no seq_len\n{hint}", shards))?;
    let corpus = params.h5_dataset_stats.training_tokens() as f64;
    let (tokens, basis) = match (cli.max_tokens, cli.max_steps) {
        (Some(tokens), _) => (tokens, "--max-tokens".to_string()),
        (None, Some(steps)) => {
            // The batch as the trainer will size it (the small presets' 65,536 tokens, shrunk
            // for small data).
            let rows = params.h5_dataset_stats.num_sequences as usize;
            let (batch, _) = crate::trainer::global_batch(
                cli.total_batch_tokens.unwrap_or(65_536),
                seq_len,
                cli.micro_batch.unwrap_or(8),
                rows,
            );
            let batch = batch * seq_len;
            (
                (steps * batch) as f64,
                format!("--max-steps {steps} × {batch} tokens per step"),
            )
        }
        (None, None) => {
            let epochs = cli.epochs.unwrap_or(1.0);
            (
                corpus * epochs,
                format!("{corpus:.0} tokens × {epochs} epochs"),
            )
        }
    };
    if tokens < 1.0 {
        bail!("{}: no tokens to size a model for\n{hint}", shards);
    }
    let ratio = cli
        .ratio
        .unwrap_or(h5gpt_core::plan::scaling::CHINCHILLA_RATIO);
    let vocab = params
        .post_process
        .vocab_size
        .map_or(h5gpt_formats::spec::GPT2_VOCAB_SIZE as usize, |v| {
            v as usize
        });
    let sized = h5gpt_core::plan::auto_size(tokens, ratio, seq_len, vocab);
    let log_gap = |p: &Preset| {
        let n = p.config(Some(seq_len)).breakdown().non_embedding() as f64;
        (n.ln() - (sized.non_embedding_params as f64).ln()).abs()
    };
    let preset = PRESETS
        .iter()
        .min_by(|a, b| log_gap(a).total_cmp(&log_gap(b)))
        .expect("presets exist");
    notes.push(format!("model auto: sized for {basis}"));
    notes.extend(sized.explanation.iter().cloned());
    notes.push(format!(
        "training FLOPs ≈ {:.3e}; learning rate and batch of `{}`, the preset nearest in non-embedding size",
        sized.training_flops(),
        preset.name
    ));
    Ok((preset, sized.config))
}

/// Resolves flags (with their `--config` file) into a training configuration.
pub fn resolve(mut cli: TrainOptions) -> Result<Resolved> {
    let mut config_report = None;
    let yaml = cli.config.as_deref().is_some_and(cerebras::is_yaml);
    if !yaml && (cli.data_root.is_some() || cli.allow_unknown) {
        return Err(UsageError::new(
            "--data-root and --allow-unknown only apply with a Cerebras YAML --config",
        )
        .into());
    }
    if let Some(path) = cli.config.clone() {
        let file = if cerebras::is_yaml(&path) {
            let (options, report) = read_cerebras(&path, &cli)?;
            config_report = Some(report);
            options
        } else {
            TrainOptions::read_file(&path)?
        };
        cli.overlay(&file);
    }
    // μP's settings are checked before the run directory's config.toml fills in: that file
    // has them from an earlier μP run, which `--mup false` may mean to override.
    let mup_on = cli.mup == Some(true);
    if !mup_on
        && (cli.mup_base_width.is_some()
            || cli.mup_embed_mult.is_some()
            || cli.mup_init_std.is_some())
    {
        return Err(UsageError::new(
            "--mup-base-width, --mup-embed-mult and --mup-init-std only apply with --mup",
        )
        .into());
    }
    let out = match (&cli.out, cli.resume) {
        (Some(out), _) => out.clone(),
        (None, true) => newest_run(Path::new("runs")).context(
            "--resume without --out: no run under runs/ has a checkpoint\n---> HINT: pass --out runs/NAME",
        )?,
        (None, false) => timestamped_run_dir(),
    };
    // Rerunning into a run directory reuses its options for what the flags leave unset.
    let saved = out.join("config.toml");
    if saved.is_file() {
        let file = TrainOptions::read_file(&saved)?;
        cli.overlay(&file);
    }
    cli.validate()?;
    if !cli.blend.is_empty() {
        if !cli.shards.is_empty()
            && cli.shards != cli.blend.iter().map(|b| b.path.clone()).collect::<Vec<_>>()
        {
            bail!("[[blend]] and --shards name different sets: give the blend one way\n---> HINT: --shards A B --weights 0.7 0.3, or [[blend]] tables in --config");
        }
        cli.shards = cli.blend.iter().map(|b| b.path.clone()).collect();
        if cli.weights.is_empty() {
            cli.weights = cli.blend.iter().map(|b| b.weight).collect();
        }
    }
    if cli.shards.is_empty() {
        return Err(UsageError::new(
            "--shards DIR is required (a directory written by `preprocess`)",
        )
        .into());
    }
    for dir in &cli.shards {
        if !dir.is_dir() {
            let what = if dir.exists() {
                "is not a directory"
            } else {
                "no such directory"
            };
            return Err(UsageError::new(format!(
                "--shards {}: {what}\n---> HINT: pass a directory written by `preprocess --out`",
                dir.display()
            ))
            .into());
        }
    }
    if !cli.weights.is_empty() {
        if cli.weights.len() != cli.shards.len() {
            bail!(
                "--weights: {} weights for {} --shards sets\n---> HINT: one weight per set, in the order of --shards",
                cli.weights.len(),
                cli.shards.len()
            );
        }
        h5gpt_formats::blend::normalize_weights(&cli.weights)
            .map_err(|e| UsageError::new(format!("--weights: {e}")))?;
    }
    let shards = cli.shards.clone();
    let params = crate::data::training_params(&shards)?;
    let seq_len = params.as_ref().and_then(|p| p.seq_len());
    let data_vocab = params
        .as_ref()
        .and_then(|p| p.post_process.vocab_size)
        .map(|v| v as usize);

    let model_name = cli.model.clone().unwrap_or_else(|| AUTO_MODEL.into());
    let mut notes = Vec::new();
    let (preset, mut model) = if model_name == AUTO_MODEL {
        auto_model(
            &cli,
            &crate::data::describe(&shards),
            params.as_ref(),
            &mut notes,
        )?
    } else {
        let preset = Preset::find(&model_name).ok_or_else(|| {
            UsageError::new(format!(
                "--model {model_name}: unknown preset\n---> HINT: one of {AUTO_MODEL}, {}",
                Preset::names()
            ))
        })?;
        (preset, preset.config(seq_len))
    };
    if let Some(vocab) = data_vocab {
        model.vocab_size = vocab;
    }
    if let Some(dir) = &cli.init_from_hf {
        let hf = crate::hf::read_model_config(dir)?;
        model = GptConfig {
            pad_vocab: model.pad_vocab,
            ..hf
        };
    }
    model.n_layer = cli.n_layer.unwrap_or(model.n_layer);
    model.n_head = cli.n_head.unwrap_or(model.n_head);
    model.n_embd = cli.n_embd.unwrap_or(model.n_embd);
    model.n_ctx = cli.n_ctx.unwrap_or(model.n_ctx);
    model.dropout = cli.dropout.unwrap_or(model.dropout);
    model.bias = cli.bias.unwrap_or(model.bias);
    model.vocab_size = cli.vocab_size.unwrap_or(model.vocab_size);
    model.ffn_size = cli
        .ffn_size
        .or(model.ffn_size)
        .filter(|&f| f != 4 * model.n_embd);
    model.layer_norm_eps = cli.layer_norm_eps.unwrap_or(model.layer_norm_eps);
    let sp_std = (cli.init_std.is_some()
        || cli.init_embedding_std.is_some()
        || cli.init_residual_std.is_some())
    .then(|| {
        let hidden = cli.init_std.unwrap_or(h5gpt_core::mup::SP_INIT_STD);
        SpInitStd {
            embedding: cli.init_embedding_std.unwrap_or(hidden),
            hidden,
            residual: cli
                .init_residual_std
                .unwrap_or(hidden / (2.0 * model.n_layer as f64).sqrt()),
        }
    });
    if sp_std.is_some() && cli.mup == Some(true) {
        return Err(UsageError::new(
            "--init-std, --init-embedding-std and --init-residual-std set the standard parameterization's stds; under --mup use --mup-init-std",
        )
        .into());
    }
    if sp_std.is_some() || cli.init_truncation.is_some() {
        model.init = Some(InitConfig {
            std: sp_std,
            truncation: cli.init_truncation,
        });
    }
    let mup_on = cli.mup.unwrap_or(false);
    if mup_on {
        let base = MupConfig::default();
        model.mup = Some(MupConfig {
            base_width: cli.mup_base_width.unwrap_or(base.base_width),
            embed_mult: cli.mup_embed_mult.unwrap_or(base.embed_mult),
            init_std: cli.mup_init_std.unwrap_or(base.init_std),
        });
    }
    model
        .validate()
        .map_err(|e| UsageError::new(format!("model configuration: {e}")))?;

    let device_request: DeviceRequest = cli
        .device
        .as_deref()
        .unwrap_or("auto")
        .parse()
        .map_err(|e| UsageError::new(format!("--device {e}")))?;
    let selected = select(device_request)?;
    notes.extend(selected.note);
    let device = selected.device;
    let dtype: DtypeRequest = cli
        .dtype
        .as_deref()
        .unwrap_or("auto")
        .parse()
        .map_err(|e| UsageError::new(format!("--dtype {e}")))?;
    let precision = Precision::resolve(dtype, device);

    let mut config = TrainConfig::new(PathBuf::new(), out, model);
    config.shards = shards;
    config.micro_batch = cli.micro_batch.unwrap_or(preset.micro_batch);
    config.total_batch_tokens = cli.total_batch_tokens.unwrap_or(preset.total_batch_tokens);
    config.lr = cli
        .lr
        .unwrap_or(if mup_on { MUP_BASE_LR } else { preset.lr });
    config.min_lr_ratio = cli.min_lr_ratio.unwrap_or(config.min_lr_ratio);
    config.warmup_tokens = cli.warmup_tokens.map(|t| t as u64);
    config.warmup_steps = cli.warmup_steps.unwrap_or(config.warmup_steps);
    config.max_steps = cli.max_steps;
    config.max_tokens = cli.max_tokens.map(|t| t as u64);
    config.epochs = cli.epochs.unwrap_or(config.epochs);
    config.seed = cli.seed.unwrap_or(config.seed);
    config.save_every = cli.save_every.unwrap_or(config.save_every);
    config.keep_checkpoints = cli.keep_checkpoints.unwrap_or(config.keep_checkpoints);
    config.eval_every = cli.eval_every.unwrap_or(50);
    config.eval_batches = cli.eval_batches.unwrap_or(config.eval_batches);
    config.final_eval = cli.final_eval.unwrap_or(false);
    config.precision = precision;
    config.device = device;
    config.init_from_hf = cli.init_from_hf.clone();
    config.peak_flops = cli.peak_flops;
    config.require_checkpoint = cli.resume;
    config.verify = match (cli.no_verify, cli.verify.as_deref().unwrap_or("cached")) {
        (true, _) => VerifyMode::Off,
        (false, "cached") => VerifyMode::Cached,
        (false, "full") => VerifyMode::Full,
        (false, other) => {
            return Err(UsageError::new(format!(
                "--verify {other}: one of `cached` or `full` (or --no-verify)"
            ))
            .into())
        }
    };
    config.weights = (!cli.weights.is_empty()).then(|| cli.weights.clone());
    config.val_shards = cli.val_shards.clone();
    config.batch_rows = cli.batch_size;
    if let Some(rows) = cli.batch_size {
        config.micro_batch = cli.micro_batch.unwrap_or(preset.micro_batch.min(rows));
        if rows % config.micro_batch != 0 {
            return Err(UsageError::new(format!(
                "--batch-size {rows} is not a multiple of --micro-batch {}",
                config.micro_batch
            ))
            .into());
        }
    }
    if !cli.lr_schedule.is_empty() {
        let schedule = PhaseSchedule(cli.lr_schedule.clone());
        config.lr = schedule.peak();
        config.lr_schedule = Some(schedule);
    }
    let adamw = AdamWConfig::default();
    config.adamw = AdamWConfig {
        beta1: cli.adam_beta1.unwrap_or(adamw.beta1),
        beta2: cli.adam_beta2.unwrap_or(adamw.beta2),
        eps: cli.adam_eps.unwrap_or(adamw.eps),
        weight_decay: cli.weight_decay.unwrap_or(adamw.weight_decay),
    };
    config.grad_clip = cli.grad_clip.unwrap_or(config.grad_clip);
    config.shuffle = cli.shuffle.unwrap_or(true);
    config.config_report = config_report;
    config.reweight = cli.reweight;
    config.skip_nonfinite = cli.skip_nonfinite.unwrap_or(0);
    if let Some(seconds) = cli.dist_timeout {
        config.dist_timeout = std::time::Duration::from_secs_f64(seconds);
    }

    let options = TrainOptions {
        shards: config.shards.clone(),
        weights: config.weights.clone().unwrap_or_default(),
        blend: Vec::new(),
        reweight: false,
        out: Some(config.out.clone()),
        config: None,
        allow_unknown: false,
        data_root: None,
        val_shards: config.val_shards.clone(),
        resume: false,
        model: Some(model_name.clone()),
        ratio: cli.ratio,
        list_models: false,
        n_layer: Some(model.n_layer),
        n_head: Some(model.n_head),
        n_embd: Some(model.n_embd),
        n_ctx: Some(model.n_ctx),
        dropout: Some(model.dropout),
        ffn_size: Some(model.ffn_width()),
        layer_norm_eps: Some(model.layer_norm_eps),
        init_std: sp_std.map(|s| s.hidden),
        init_embedding_std: sp_std.map(|s| s.embedding),
        init_residual_std: sp_std.map(|s| s.residual),
        init_truncation: cli.init_truncation,
        bias: Some(model.bias),
        vocab_size: Some(model.vocab_size),
        mup: Some(mup_on),
        mup_base_width: model.mup.map(|m| m.base_width),
        mup_embed_mult: model.mup.map(|m| m.embed_mult),
        mup_init_std: model.mup.map(|m| m.init_std),
        init_from_hf: config.init_from_hf.clone(),
        micro_batch: Some(config.micro_batch),
        total_batch_tokens: config
            .batch_rows
            .is_none()
            .then_some(config.total_batch_tokens),
        batch_size: config.batch_rows,
        lr_schedule: config
            .lr_schedule
            .as_ref()
            .map_or_else(Vec::new, |s| s.0.clone()),
        adam_beta1: Some(config.adamw.beta1),
        adam_beta2: Some(config.adamw.beta2),
        adam_eps: Some(config.adamw.eps),
        weight_decay: Some(config.adamw.weight_decay),
        grad_clip: Some(config.grad_clip),
        shuffle: Some(config.shuffle),
        lr: Some(config.lr),
        min_lr_ratio: Some(config.min_lr_ratio),
        warmup_steps: config
            .warmup_tokens
            .is_none()
            .then_some(config.warmup_steps),
        warmup_tokens: config.warmup_tokens.map(|t| t as f64),
        max_steps: config.max_steps,
        max_tokens: config.max_tokens.map(|t| t as f64),
        epochs: Some(config.epochs),
        seed: Some(config.seed),
        save_every: Some(config.save_every),
        keep_checkpoints: Some(config.keep_checkpoints),
        eval_every: Some(config.eval_every),
        eval_batches: Some(config.eval_batches),
        final_eval: Some(config.final_eval),
        dtype: Some(dtype_name(dtype).into()),
        device: Some(device_name(device_request).into()),
        peak_flops: cli.peak_flops,
        threads: cli.threads,
        dist_timeout: Some(config.dist_timeout.as_secs_f64()),
        verify: cli.verify.clone(),
        no_verify: false,
        skip_nonfinite: Some(config.skip_nonfinite),
    };
    Ok(Resolved {
        config,
        options,
        preset,
        model_name,
        notes,
    })
}

/// A Model Zoo YAML `--config`: its options (as a TOML file's) and the report of its keys.
fn read_cerebras(path: &Path, cli: &TrainOptions) -> Result<(TrainOptions, String)> {
    let load = cerebras::LoadOptions {
        allow_unknown: cli.allow_unknown,
        data_root: cli.data_root.clone(),
    };
    let mapped = cerebras::load(path, &load).map_err(|e| UsageError::new(e.to_string()))?;
    let options: TrainOptions = mapped.options.clone().try_into().with_context(|| {
        format!(
            "{}: the mapped options do not read back (a bug)",
            path.display()
        )
    })?;
    Ok((options, cerebras::report::render(&mapped)))
}

fn dtype_name(d: DtypeRequest) -> &'static str {
    match d {
        DtypeRequest::Auto => "auto",
        DtypeRequest::Fp32 => "fp32",
        DtypeRequest::Bf16 => "bf16",
        DtypeRequest::Bf16Pure => "bf16-pure",
    }
}

fn device_name(d: DeviceRequest) -> &'static str {
    match d {
        DeviceRequest::Auto => "auto",
        DeviceRequest::Cpu => "cpu",
        DeviceRequest::Cuda => "cuda",
    }
}
