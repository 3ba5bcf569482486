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

/// Declares the options once: each field with its help (doc comment), flag (`#[arg]`) and
/// TOML key (the field's name, `#[serde]`). A field marked `[setting …]` is an `Option` that a
/// `--config` file or the run's `config.toml` fills when the flag leaves it unset; `default =`
/// is its built-in default (parsed like the flag's value), `check =` its valid range. From the
/// one declaration come the struct (clap flags and TOML keys), [`TrainOptions::overlay`]'s
/// list, the range checks of [`TrainOptions::validate`], [`TrainOptions::builtin`] and the
/// defaults the help text is tested against.
macro_rules! declare_options {
    (
        $(#[$($smeta:tt)*])*
        pub struct $name:ident {
            $(
                $(#[$($fmeta:tt)*])*
                $field:ident : $ty:ty
                    $([$setting:ident $(, default = $default:literal)? $(, check = $check:expr)?])?,
            )*
        }
    ) => {
        $(#[$($smeta)*])*
        pub struct $name {
            $( $(#[$($fmeta)*])* pub $field: $ty, )*
        }

        impl $name {
            /// Fills the settings unset here from `file`.
            fn overlay_settings(&mut self, file: &$name) {
                $( $(
                    let _ = stringify!($setting);
                    if self.$field.is_none() {
                        self.$field = file.$field.clone();
                    }
                )? )*
            }

            /// Checks each setting against its declared range.
            fn check_ranges(&self) -> Result<(), UsageError> {
                $( $( $(
                    if let Some(value) = self.$field {
                        $check.apply(stringify!($field), value)?;
                    }
                )? )? )*
                Ok(())
            }

            /// The options with every built-in default set (and nothing else).
            pub fn builtin() -> $name {
                let mut options = $name::default();
                $( $( $(
                    options.$field = Some($default.parse().expect(concat!(
                        "the built-in default of ",
                        stringify!($field),
                        " parses"
                    )));
                )? )? )*
                options
            }
        }

        impl $name {
            /// Each setting's built-in default as declared: (field, value as the flag takes it).
            pub fn declared_defaults() -> &'static [(&'static str, &'static str)] {
                &[ $( $( $( (stringify!($field), $default), )? )? )* ]
            }
        }
    };
}

/// A setting's valid range.
enum Check {
    /// A count: at least 1.
    AtLeastOne(&'static str),
    /// A positive, finite number.
    Positive(&'static str),
    /// A finite number, at least 0.
    NonNegative(&'static str),
    /// Within `[start, end]`, or `[start, end)` when `open_end`.
    Within(std::ops::RangeInclusive<f64>, bool, &'static str),
}

/// A setting's value as the range checks read it.
trait Number {
    fn to_f64(self) -> f64;
}

impl Number for usize {
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Number for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

/// `[start, end)`.
const OPEN_END: bool = true;
/// `[start, end]`.
const CLOSED: bool = false;

fn at_least_one(what: &'static str) -> Check {
    Check::AtLeastOne(what)
}

fn positive(what: &'static str) -> Check {
    Check::Positive(what)
}

fn non_negative(what: &'static str) -> Check {
    Check::NonNegative(what)
}

fn within(range: std::ops::RangeInclusive<f64>, open_end: bool, what: &'static str) -> Check {
    Check::Within(range, open_end, what)
}

impl Check {
    /// Checks `value` of setting `field`; the error names the flag.
    fn apply(&self, field: &str, value: impl Number) -> Result<(), UsageError> {
        let v = value.to_f64();
        let flag = field.replace('_', "-");
        let why = match self {
            Check::AtLeastOne(what) if v < 1.0 => format!("{what} must be at least 1"),
            Check::Positive(what) if !(v.is_finite() && v > 0.0) => {
                format!("{what} must be a positive, finite number")
            }
            Check::NonNegative(what) if !(v.is_finite() && v >= 0.0) => {
                format!("{what} must be a finite number, at least 0")
            }
            Check::Within(range, open_end, what)
                if !range.contains(&v) || (*open_end && v == *range.end()) =>
            {
                format!(
                    "{what} must be in [{}, {}{}",
                    range.start(),
                    range.end(),
                    if *open_end { ")" } else { "]" }
                )
            }
            _ => return Ok(()),
        };
        Err(UsageError::new(format!("--{flag} {v}: {why}")))
    }
}

declare_options! {
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
    shards: Vec<PathBuf>,
    /// A weighted blend of the --shards sets: the fraction of rows drawn from each, in order
    /// (normalized to sum to 1), e.g. `--shards A B --weights 0.7 0.3`. [default: none: the
    /// sets are read as one]
    #[arg(long, num_args = 1.., value_name = "W")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    weights: Vec<f64>,
    /// The blend as TOML tables (config files only): `[[blend]]` with `path` and `weight`, one
    /// per set; the same as --shards with --weights.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blend: Vec<BlendEntry>,
    /// Resume with other --weights than the checkpoint's: the stream continues from the
    /// checkpoint's position with the new weights (each set continues its own order, so no row
    /// repeats early). Without it a resume with other weights is refused.
    #[arg(long)]
    #[serde(skip)]
    reweight: bool,
    /// Resume although the data differs from the checkpoint's run: other --shards (training
    /// data of another content) or another --shuffle. The stream continues from the
    /// checkpoint's position on the new data, and segments.jsonl records what changed.
    /// Without it such a resume is refused, naming the difference.
    #[arg(long)]
    #[serde(skip)]
    allow_data_change: bool,
    /// Run directory: config.toml, metrics.jsonl, loss.png, checkpoints/. Rerunning into it
    /// resumes. [default: runs/YYYYMMDD-HHMMSS]
    #[arg(long)]
    out: Option<PathBuf> [setting],
    /// TOML file with any of these options, or a Cerebras Model Zoo YAML config (`.yaml`,
    /// either generation: release 2.0.3's or 2.10's layout), mapped onto these options with a
    /// report of every key.
    #[arg(long, value_name = "FILE.toml|FILE.yaml")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// With a YAML --config: run even with keys this reader does not know (the report lists
    /// them); without it they are an error.
    #[arg(long)]
    #[serde(skip)]
    allow_unknown: bool,
    /// With a YAML --config: the directory its relative `data_dir`s are resolved against.
    /// [default: the working directory, as Cerebras does]
    #[arg(long, value_name = "DIR")]
    #[serde(skip)]
    data_root: Option<PathBuf>,
    /// Evaluation shard directories, read as one set, instead of the --shards' `val/` (or
    /// held-out rows).
    #[arg(long, num_args = 1.., value_name = "DIR")]
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    val_shards: Vec<PathBuf>,
    /// Continue from the newest checkpoint of --out (default: the newest run under runs/);
    /// an error when there is none.
    #[arg(long)]
    #[serde(skip)]
    resume: bool,
    /// Model preset (see --list-models), or `auto`: the shape sized to the tokens the run will
    /// see (Chinchilla's 20 per parameter, see --ratio), context = the shards' seq_len.
    /// [default: auto]
    #[arg(long)]
    model: Option<String> [setting],
    /// Tokens per parameter the auto-sized model aims at (Chinchilla: 20).
    /// [default: 20]
    #[arg(long)]
    ratio: Option<f64> [setting, check = positive("the tokens per parameter")],
    /// List the model presets and exit.
    #[arg(long)]
    #[serde(skip)]
    list_models: bool,
    /// Override: transformer blocks.
    #[arg(long)]
    n_layer: Option<usize> [setting, check = at_least_one("the number of transformer blocks")],
    /// Override: attention heads.
    #[arg(long)]
    n_head: Option<usize> [setting, check = at_least_one("the number of attention heads")],
    /// Override: embedding width.
    #[arg(long)]
    n_embd: Option<usize> [setting, check = at_least_one("the embedding width")],
    /// Override: context length. [default: the preset's, or the shards' seq_len]
    #[arg(long)]
    n_ctx: Option<usize> [setting, check = at_least_one("the context length")],
    /// Width of the MLP's hidden layer (Cerebras' `filter_size`); any width works. Not rescaled
    /// by --n-embd. [default: 4 × n_embd]
    #[arg(long)]
    ffn_size: Option<usize> [setting, check = at_least_one("the MLP width")],
    /// ε of every LayerNorm. [default: 1e-5]
    #[arg(long)]
    layer_norm_eps: Option<f64> [setting, check = positive("the LayerNorm ε")],
    /// Init std of the hidden matrices (QKV, MLP in), standard parameterization.
    /// [default: 0.02]
    #[arg(long, value_name = "STD")]
    init_std: Option<f64> [setting, check = positive("the init std")],
    /// Init std of the token and position embeddings, standard parameterization.
    /// [default: --init-std]
    #[arg(long, value_name = "STD")]
    init_embedding_std: Option<f64> [setting, check = positive("the init std")],
    /// Init std of the projections into the residual stream, standard parameterization.
    /// [default: --init-std/√(2·n_layer)]
    #[arg(long, value_name = "STD")]
    init_residual_std: Option<f64> [setting, check = positive("the init std")],
    /// Truncate the initial normals at ± this many stds (Cerebras' `truncated_normal`, `a`/`b`
    /// = ∓2σ: 2). [default: not truncated]
    #[arg(long, value_name = "K")]
    init_truncation: Option<f64> [setting, check = positive("the truncation in stds")],
    /// Dropout probability. [default: 0]
    #[arg(long)]
    dropout: Option<f64> [setting, check = within(0.0..=1.0, OPEN_END, "the dropout probability")],
    /// Biases in linear layers and LayerNorms. [default: true]
    #[arg(long)]
    bias: Option<bool> [setting],
    /// Vocabulary size. [default: the shards' (data_params.json), else 50257]
    #[arg(long)]
    vocab_size: Option<usize> [setting, check = at_least_one("the vocabulary size")],
    /// μP (Maximal Update Parameterization, as Cerebras-GPT): hyperparameters tuned at
    /// --mup-base-width carry over to any width. Makes --lr the base LR (default 6e-3).
    /// [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    mup: Option<bool> [setting],
    /// μP: width D₀ of the base model; m = n_embd / D₀. [default: 256]
    #[arg(long, value_name = "D0")]
    mup_base_width: Option<usize> [setting, check = at_least_one("the μP base width")],
    /// μP: multiplier of the embedding output. [default: 10]
    #[arg(long, value_name = "X")]
    mup_embed_mult: Option<f64> [setting, check = positive("the μP embedding multiplier")],
    /// μP: σ_base, init std of the embeddings (hidden matrices: σ_base/√m). [default: 0.08]
    #[arg(long, value_name = "STD")]
    mup_init_std: Option<f64> [setting, check = positive("the μP init std")],
    /// Start from a Hugging Face GPT-2 directory (config.json + model.safetensors); its shape
    /// becomes the model's.
    #[arg(long, value_name = "DIR")]
    init_from_hf: Option<PathBuf> [setting],
    /// Rows per forward/backward pass. [default: the preset's]
    #[arg(long)]
    micro_batch: Option<usize> [setting, check = at_least_one("the rows per micro-batch")],
    /// Tokens per optimizer step; gradient accumulation makes up the difference.
    /// [default: the preset's, e.g. 524288 for gpt2-small]
    #[arg(long)]
    total_batch_tokens: Option<usize> [setting, check = at_least_one("the tokens per optimizer step")],
    /// Rows per optimizer step (global, over all ranks; Cerebras' `batch_size`), used as given:
    /// never shrunk for small data. Replaces --total-batch-tokens. [default: from
    /// --total-batch-tokens]
    #[arg(long, conflicts_with = "total_batch_tokens")]
    batch_size: Option<usize> [setting, check = at_least_one("the rows per optimizer step")],
    /// Peak learning rate. [default: the preset's, e.g. 6e-4 for gpt2-small]
    #[arg(long)]
    lr: Option<f64> [setting, check = positive("the learning rate")],
    /// Final learning rate as a fraction of the peak. [default: 0.1]
    #[arg(long)]
    min_lr_ratio: Option<f64> [setting, default = "0.1", check = within(0.0..=1.0, CLOSED, "the final learning rate as a fraction of the peak")],
    /// The learning rate as phases, Cerebras' semantics (config files only; a YAML --config
    /// writes it): `[[lr_schedule]]` with `kind` (`linear`, `cosine`, `constant`),
    /// `initial_lr`, `end_lr`, `steps`. Replaces --lr's warm-up and cosine.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lr_schedule: Vec<LrPhase>,
    /// AdamW β₁. [default: 0.9]
    #[arg(long)]
    adam_beta1: Option<f64> [setting, check = within(0.0..=1.0, OPEN_END, "AdamW's β₁")],
    /// AdamW β₂. [default: 0.95]
    #[arg(long)]
    adam_beta2: Option<f64> [setting, check = within(0.0..=1.0, OPEN_END, "AdamW's β₂")],
    /// AdamW ε. [default: 1e-8]
    #[arg(long)]
    adam_eps: Option<f64> [setting, check = positive("AdamW's ε")],
    /// AdamW weight decay of the matrices (decoupled, × the LR). [default: 0.1]
    #[arg(long)]
    weight_decay: Option<f64> [setting, check = non_negative("the weight decay")],
    /// Clip the global gradient norm to this (0: no clipping). [default: 1]
    #[arg(long)]
    grad_clip: Option<f64> [setting],
    /// Shuffle the training rows (`false`: read them in file order, epoch after epoch, as
    /// Cerebras' `shuffle: false`). [default: true]
    #[arg(long, value_name = "BOOL")]
    shuffle: Option<bool> [setting],
    /// Linear warm-up steps. [default: 10]
    #[arg(long, conflicts_with = "warmup_tokens")]
    warmup_steps: Option<usize> [setting, default = "10"],
    /// Linear warm-up in tokens (GPT-3: 375e6), rounded up to whole steps.
    #[arg(long)]
    warmup_tokens: Option<f64> [setting, check = non_negative("the warm-up in tokens")],
    /// Optimizer steps. [default: --epochs worth]
    #[arg(long, conflicts_with = "max_tokens")]
    max_steps: Option<usize> [setting, check = at_least_one("the number of optimizer steps")],
    /// Tokens to train on, rounded up to whole steps.
    #[arg(long)]
    max_tokens: Option<f64> [setting, check = positive("the tokens to train on")],
    /// Epochs when neither --max-steps nor --max-tokens is given. [default: 1]
    #[arg(long)]
    epochs: Option<f64> [setting, default = "1", check = positive("the number of epochs")],
    /// Seed of initialization, data order and dropout. [default: 1337]
    #[arg(long)]
    seed: Option<u64> [setting, default = "1337"],
    /// Checkpoint every N steps (and at the end). [default: 100]
    #[arg(long)]
    save_every: Option<usize> [setting, default = "100", check = at_least_one("the checkpoint interval")],
    /// Checkpoints kept. [default: 2]
    #[arg(long)]
    keep_checkpoints: Option<usize> [setting, default = "2", check = at_least_one("the number of checkpoints kept")],
    /// Validation loss every N steps (and at the start and end); 0: never. [default: 50]
    #[arg(long)]
    eval_every: Option<usize> [setting, default = "50"],
    /// Micro-batches per validation. [default: 20]
    #[arg(long)]
    eval_batches: Option<usize> [setting, default = "20", check = at_least_one("the micro-batches per validation")],
    /// After the last step, evaluate every row of the validation set (val/, or the held-out
    /// rows) and record it as the run's final validation loss (state.json `final_eval`,
    /// metrics.jsonl `final_val_loss`), as `plan fit` reads it. [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    final_eval: Option<bool> [setting, default = "false"],
    /// A task file (jsonl: HellaSwag, `{context, choices, answer}` or LAMBADA) whose accuracy
    /// is measured during training (repeat for several; see docs/eval.md). [default: none]
    #[arg(long, value_name = "FILE.jsonl")]
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    eval_task: Vec<PathBuf>,
    /// Score the --eval-task files every N steps (and at the start and end); 0: every
    /// --eval-every. [default: 0]
    #[arg(long)]
    eval_task_every: Option<usize> [setting, default = "0"],
    /// Score the first N items of each --eval-task; 0: all. [default: 0]
    #[arg(long)]
    eval_task_limit: Option<usize> [setting, default = "0"],
    /// TensorBoard event files: a directory, or `off`. [default: RUN/tensorboard]
    #[arg(long, value_name = "DIR|off")]
    tensorboard: Option<String> [setting],
    /// `auto` (bf16 autocast on CUDA, fp32 on CPU), `fp32`, `bf16` (autocast over fp32 weights)
    /// or `bf16-pure` (bf16 weights and activations, fp32 master weights and gradient
    /// accumulation; checkpoints keep the fp32 masters). [default: auto]
    #[arg(long)]
    dtype: Option<DtypeRequest> [setting, default = "auto"],
    /// `auto`, `cpu` or `cuda`. [default: auto]
    #[arg(long)]
    device: Option<DeviceRequest> [setting, default = "auto"],
    /// Peak FLOP/s of the device for MFU. [default: looked up from the GPU's name]
    #[arg(long)]
    peak_flops: Option<f64> [setting, check = positive("the device's peak FLOP/s")],
    /// CPU threads for libtorch. [default: libtorch's choice]
    #[arg(long)]
    threads: Option<usize> [setting, check = at_least_one("the number of CPU threads")],
    /// Shard checksums before step 0: `cached` (hash the shards not verified before; a cache
    /// beside them, keyed by path, size, mtime and inode, remembers the rest) or `full` (hash
    /// every shard). [default: cached]
    #[arg(long, value_name = "MODE")]
    verify: Option<String> [setting],
    /// Do not check the shards' checksums before step 0 (the log says so).
    #[arg(long, conflicts_with = "verify")]
    #[serde(skip)]
    no_verify: bool,
    /// Seconds a data-parallel rank waits for the others (rendezvous, each collective) before
    /// it gives up with an error: a dead rank stops the run instead of hanging it. [default: 600]
    #[arg(long)]
    dist_timeout: Option<f64> [setting, default = "600", check = positive("the timeout in seconds")],
    /// Steps with a non-finite loss or gradient norm to skip (not applied, counted and logged)
    /// before the run stops; 0: the first one stops it with an error naming the step. Large
    /// runs allow a few for rare spikes. [default: 0]
    #[arg(long, value_name = "N")]
    skip_nonfinite: Option<usize> [setting, default = "0"],
}

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
        if self.eval_task.is_empty() {
            self.eval_task = file.eval_task.clone();
        }
        // A batch given one way here replaces the file's, given either way.
        if self.batch_size.is_some() || self.total_batch_tokens.is_some() {
            (file.batch_size, file.total_batch_tokens) = (None, None);
        }
        // A learning rate given here replaces the file's schedule (it would shadow it).
        if self.lr_schedule.is_empty() && self.lr.is_none() {
            self.lr_schedule = file.lr_schedule.clone();
        }
        self.overlay_settings(&file);
    }

    /// Checks every numeric option's range before anything uses it. A value from a `--config`
    /// file (or the run's `config.toml`) gets the same message as one from its flag.
    pub fn validate(&self) -> Result<(), UsageError> {
        self.check_ranges()?;
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
        // Unreadable, like unparsable, is a usage error (exit 2), as a missing --shards is.
        let text = std::fs::read_to_string(path).map_err(|e| {
            UsageError::new(format!("cannot read --config {}: {e}", path.display()))
        })?;
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
            let epochs = filled(cli.epochs);
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
    // The built-in defaults fill what the flags and files leave unset.
    cli.overlay(&TrainOptions::builtin());
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
            return Err(UsageError::new(format!(
                "--weights: {} weights for {} --shards sets\n---> HINT: one weight per set, in the order of --shards",
                cli.weights.len(),
                cli.shards.len()
            ))
            .into());
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

    // Each rank picks its GPU by its local rank (0 in a single process).
    let local_rank = crate::dist::Launch::from_env()?.map_or(0, |launch| launch.local_rank);
    let selected = select(filled(cli.device), local_rank)?;
    notes.extend(selected.note);
    let device = selected.device;
    let bf16 = crate::device::bf16_supported(crate::device::capability(device));
    let (precision, note) =
        Precision::resolve(filled(cli.dtype), device, bf16).map_err(UsageError::new)?;
    notes.extend(note);

    let mut config = TrainConfig::new(PathBuf::new(), out, model);
    config.shards = shards;
    config.micro_batch = cli.micro_batch.unwrap_or(preset.micro_batch);
    config.total_batch_tokens = cli.total_batch_tokens.unwrap_or(preset.total_batch_tokens);
    config.lr = cli
        .lr
        .unwrap_or(if mup_on { MUP_BASE_LR } else { preset.lr });
    config.min_lr_ratio = filled(cli.min_lr_ratio);
    config.warmup_tokens = cli.warmup_tokens.map(|t| t as u64);
    config.warmup_steps = cli.warmup_steps.unwrap_or(config.warmup_steps);
    config.max_steps = cli.max_steps;
    config.max_tokens = cli.max_tokens.map(|t| t as u64);
    config.epochs = filled(cli.epochs);
    config.seed = filled(cli.seed);
    config.save_every = filled(cli.save_every);
    config.keep_checkpoints = filled(cli.keep_checkpoints);
    config.eval_every = filled(cli.eval_every);
    config.eval_batches = filled(cli.eval_batches);
    config.final_eval = filled(cli.final_eval);
    config.eval_tasks = cli.eval_task.clone();
    config.eval_task_every = match filled(cli.eval_task_every) {
        0 => config.eval_every,
        n => n,
    };
    config.eval_task_limit = match filled(cli.eval_task_limit) {
        0 => None,
        n => Some(n),
    };
    config.tensorboard = match cli.tensorboard.as_deref() {
        None => Some(config.out.join("tensorboard")),
        Some("off") => None,
        Some("") => return Err(UsageError::new("--tensorboard: a directory, or `off`").into()),
        Some(dir) => Some(PathBuf::from(dir)),
    };
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
    config.allow_data_change = cli.allow_data_change;
    config.skip_nonfinite = filled(cli.skip_nonfinite);
    config.dist_timeout = std::time::Duration::from_secs_f64(filled(cli.dist_timeout));

    // What config.toml records: the options as given (defaults filled in), with what the
    // resolution derived (the model's shape, the batch, the learning rate).
    let options = TrainOptions {
        shards: config.shards.clone(),
        weights: config.weights.clone().unwrap_or_default(),
        blend: Vec::new(),
        reweight: false,
        allow_data_change: false,
        out: Some(config.out.clone()),
        config: None,
        allow_unknown: false,
        data_root: None,
        val_shards: config.val_shards.clone(),
        resume: false,
        model: Some(model_name.clone()),
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
        warmup_steps: config
            .warmup_tokens
            .is_none()
            .then_some(config.warmup_steps),
        warmup_tokens: config.warmup_tokens.map(|t| t as f64),
        max_tokens: config.max_tokens.map(|t| t as f64),
        no_verify: false,
        ..cli
    };
    Ok(Resolved {
        config,
        options,
        preset,
        model_name,
        notes,
    })
}

/// A setting that [`TrainOptions::builtin`] fills.
pub(crate) fn filled<T>(value: Option<T>) -> T {
    value.expect("a setting with a built-in default (TrainOptions::builtin fills it)")
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
