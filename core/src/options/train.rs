//! The `train` command's options, declared once: flags (clap), `--config FILE.toml` keys
//! (serde, the same names), built-in defaults and valid ranges. This module links no libtorch,
//! so `h5gpt` builds `train`'s help, completions and man page from it; `h5gpt_train::options`
//! resolves the options into the trainer's configuration.
//!
//! Precedence: command-line flag > config file > the model preset's default > the built-in
//! default. The resolved options are written to the run's `config.toml`, which `--config`
//! reads back.

use super::requests::{DeviceRequest, DtypeRequest};
use crate::cerebras::{LrPhase, PhaseSchedule};
use anyhow::Result;
use clap::Parser;
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
                    $([$setting:ident $(, default = $default:literal)? $(, shown = $shown:literal)? $(, check = $check:expr)?])?,
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
            /// Checks each setting against its declared range: every setting out of range.
            fn range_errors(&self) -> Vec<UsageError> {
                let mut errors = Vec::new();
                $( $( $(
                    if let Some(value) = self.$field {
                        errors.extend($check.apply(stringify!($field), value).err());
                    }
                )? )? )*
                errors
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

        // Every setting states its default: a built-in value, or what it depends on.
        $( $(
            const _: () = assert!(
                0 $( + { let _ = $default; 1 } )? $( + { let _ = $shown; 1 } )? == 1,
                concat!("the setting `", stringify!($field), "` declares one of `default =` or `shown =`")
            );
        )? )*

        impl $name {
            /// Each setting's built-in default as declared: (field, value as the flag takes it).
            pub fn declared_defaults() -> &'static [(&'static str, &'static str)] {
                &[ $( $( $( (stringify!($field), $default), )? )? )* ]
            }

            /// `command` (this struct's, or `h5gpt`'s `train` subcommand) with every setting's
            /// default appended to its help, from [`Self::stated_defaults`]: the help states the
            /// declared default, never a copy of it.
            pub fn with_stated_defaults(mut command: clap::Command) -> clap::Command {
                for (field, default) in Self::stated_defaults() {
                    command = command.mut_arg(*field, |arg| {
                        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                        let long = arg.get_long_help().map(ToString::to_string);
                        let arg = arg.help(format!("{help} [default: {default}]"));
                        match long {
                            Some(long) => arg.long_help(format!("{long} [default: {default}]")),
                            None => arg,
                        }
                    });
                }
                command
            }

            /// The clap command with the stated defaults (see [`Self::with_stated_defaults`]).
            pub fn command_with_defaults() -> clap::Command {
                Self::with_stated_defaults(<Self as clap::CommandFactory>::command())
            }

            /// Every setting's default as `--help` states it: the built-in value, or what the
            /// default depends on (the preset, the data, another option): (field, text).
            pub fn stated_defaults() -> &'static [(&'static str, &'static str)] {
                &[ $( $(
                    $( (stringify!($field), $default), )?
                    $( (stringify!($field), $shown), )?
                )? )* ]
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
    /// resumes.
    #[arg(long)]
    out: Option<PathBuf> [setting, shown = "runs/YYYYMMDD-HHMMSS"],
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
    #[arg(long)]
    model: Option<String> [setting, default = "auto"],
    /// Tokens per parameter the auto-sized model aims at (Chinchilla: 20).
    #[arg(long)]
    ratio: Option<f64> [setting, default = "20", check = positive("the tokens per parameter")],
    /// List the model presets and exit.
    #[arg(long)]
    #[serde(skip)]
    list_models: bool,
    /// Override: transformer blocks.
    #[arg(long)]
    n_layer: Option<usize> [setting, shown = "the preset's", check = at_least_one("the number of transformer blocks")],
    /// Override: attention heads.
    #[arg(long)]
    n_head: Option<usize> [setting, shown = "the preset's", check = at_least_one("the number of attention heads")],
    /// Override: embedding width.
    #[arg(long)]
    n_embd: Option<usize> [setting, shown = "the preset's", check = at_least_one("the embedding width")],
    /// Override: context length.
    #[arg(long)]
    n_ctx: Option<usize> [setting, shown = "the preset's, or the shards' seq_len", check = at_least_one("the context length")],
    /// Width of the MLP's hidden layer (Cerebras' `filter_size`); any width works. Not rescaled
    /// by --n-embd.
    #[arg(long)]
    ffn_size: Option<usize> [setting, shown = "4 × n_embd", check = at_least_one("the MLP width")],
    /// ε of every LayerNorm.
    #[arg(long)]
    layer_norm_eps: Option<f64> [setting, shown = "1e-5", check = positive("the LayerNorm ε")],
    /// Init std of the hidden matrices (QKV, MLP in), standard parameterization.
    #[arg(long, value_name = "STD")]
    init_std: Option<f64> [setting, shown = "0.02", check = positive("the init std")],
    /// Init std of the token and position embeddings, standard parameterization.
    #[arg(long, value_name = "STD")]
    init_embedding_std: Option<f64> [setting, shown = "--init-std", check = positive("the init std")],
    /// Init std of the projections into the residual stream, standard parameterization.
    #[arg(long, value_name = "STD")]
    init_residual_std: Option<f64> [setting, shown = "--init-std/√(2·n_layer)", check = positive("the init std")],
    /// Truncate the initial normals at ± this many stds (Cerebras' `truncated_normal`, `a`/`b`
    /// = ∓2σ: 2).
    #[arg(long, value_name = "K")]
    init_truncation: Option<f64> [setting, shown = "not truncated", check = positive("the truncation in stds")],
    /// Dropout probability.
    #[arg(long)]
    dropout: Option<f64> [setting, shown = "0", check = within(0.0..=1.0, OPEN_END, "the dropout probability")],
    /// Biases in linear layers and LayerNorms.
    #[arg(long)]
    bias: Option<bool> [setting, shown = "true"],
    /// Vocabulary size.
    #[arg(long)]
    vocab_size: Option<usize> [setting, shown = "the shards' (data_params.json), else 50257", check = at_least_one("the vocabulary size")],
    /// μP (Maximal Update Parameterization, as Cerebras-GPT): hyperparameters tuned at
    /// --mup-base-width carry over to any width. Makes --lr the base LR (default 6e-3).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    mup: Option<bool> [setting, default = "false"],
    /// μP: width D₀ of the base model; m = n_embd / D₀.
    #[arg(long, value_name = "D0")]
    mup_base_width: Option<usize> [setting, default = "256", check = at_least_one("the μP base width")],
    /// μP: multiplier of the embedding output.
    #[arg(long, value_name = "X")]
    mup_embed_mult: Option<f64> [setting, default = "10", check = positive("the μP embedding multiplier")],
    /// μP: σ_base, init std of the embeddings (hidden matrices: σ_base/√m).
    #[arg(long, value_name = "STD")]
    mup_init_std: Option<f64> [setting, default = "0.08", check = positive("the μP init std")],
    /// Start from a Hugging Face GPT-2 directory (config.json + model.safetensors); its shape
    /// becomes the model's.
    #[arg(long, value_name = "DIR")]
    init_from_hf: Option<PathBuf> [setting, shown = "none"],
    /// Rows per forward/backward pass.
    #[arg(long)]
    micro_batch: Option<usize> [setting, shown = "the preset's", check = at_least_one("the rows per micro-batch")],
    /// Tokens per optimizer step; gradient accumulation makes up the difference.
    #[arg(long)]
    total_batch_tokens: Option<usize> [setting, shown = "the preset's, e.g. 524288 for gpt2-small", check = at_least_one("the tokens per optimizer step")],
    /// Rows per optimizer step (global, over all ranks; Cerebras' `batch_size`), used as given:
    /// never shrunk for small data. Replaces --total-batch-tokens.
    #[arg(long, conflicts_with = "total_batch_tokens")]
    batch_size: Option<usize> [setting, shown = "from --total-batch-tokens", check = at_least_one("the rows per optimizer step")],
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64> [setting, shown = "the preset's, e.g. 6e-4 for gpt2-small", check = positive("the learning rate")],
    /// Final learning rate as a fraction of the peak.
    #[arg(long)]
    min_lr_ratio: Option<f64> [setting, default = "0.1", check = within(0.0..=1.0, CLOSED, "the final learning rate as a fraction of the peak")],
    /// The learning rate as phases, Cerebras' semantics (config files only; a YAML --config
    /// writes it): `[[lr_schedule]]` with `kind` (`linear`, `cosine`, `constant`),
    /// `initial_lr`, `end_lr`, `steps`. Replaces --lr's warm-up and cosine.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lr_schedule: Vec<LrPhase>,
    /// AdamW β₁.
    #[arg(long)]
    adam_beta1: Option<f64> [setting, default = "0.9", check = within(0.0..=1.0, OPEN_END, "AdamW's β₁")],
    /// AdamW β₂.
    #[arg(long)]
    adam_beta2: Option<f64> [setting, default = "0.95", check = within(0.0..=1.0, OPEN_END, "AdamW's β₂")],
    /// AdamW ε.
    #[arg(long)]
    adam_eps: Option<f64> [setting, default = "1e-8", check = positive("AdamW's ε")],
    /// AdamW weight decay of the matrices (decoupled, × the LR).
    #[arg(long)]
    weight_decay: Option<f64> [setting, default = "0.1", check = non_negative("the weight decay")],
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long)]
    grad_clip: Option<f64> [setting, default = "1"],
    /// Shuffle the training rows (`false`: read them in file order, epoch after epoch, as
    /// Cerebras' `shuffle: false`).
    #[arg(long, value_name = "BOOL")]
    shuffle: Option<bool> [setting, default = "true"],
    /// Linear warm-up steps.
    #[arg(long, conflicts_with = "warmup_tokens")]
    warmup_steps: Option<usize> [setting, default = "10"],
    /// Linear warm-up in tokens (GPT-3: 375e6), rounded up to whole steps.
    #[arg(long)]
    warmup_tokens: Option<f64> [setting, shown = "none", check = non_negative("the warm-up in tokens")],
    /// Optimizer steps.
    #[arg(long, conflicts_with = "max_tokens")]
    max_steps: Option<usize> [setting, shown = "--epochs worth", check = at_least_one("the number of optimizer steps")],
    /// Tokens to train on, rounded up to whole steps.
    #[arg(long)]
    max_tokens: Option<f64> [setting, shown = "none", check = positive("the tokens to train on")],
    /// Epochs when neither --max-steps nor --max-tokens is given.
    #[arg(long)]
    epochs: Option<f64> [setting, default = "1", check = positive("the number of epochs")],
    /// Seed of initialization, data order and dropout.
    #[arg(long)]
    seed: Option<u64> [setting, default = "1337"],
    /// Checkpoint every N steps (and at the end).
    #[arg(long)]
    save_every: Option<usize> [setting, default = "100", check = at_least_one("the checkpoint interval")],
    /// Checkpoints kept.
    #[arg(long)]
    keep_checkpoints: Option<usize> [setting, default = "2", check = at_least_one("the number of checkpoints kept")],
    /// Validation loss every N steps (and at the start and end); 0: never.
    #[arg(long)]
    eval_every: Option<usize> [setting, default = "50"],
    /// Micro-batches per validation.
    #[arg(long)]
    eval_batches: Option<usize> [setting, default = "20", check = at_least_one("the micro-batches per validation")],
    /// After the last step, evaluate every row of the validation set (val/, or the held-out
    /// rows) and record it as the run's final validation loss (state.json `final_eval`,
    /// metrics.jsonl `final_val_loss`), as `plan fit` reads it.
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
    /// --eval-every.
    #[arg(long)]
    eval_task_every: Option<usize> [setting, default = "0"],
    /// Score the first N items of each --eval-task; 0: all.
    #[arg(long)]
    eval_task_limit: Option<usize> [setting, default = "0"],
    /// Print a console line every N steps (and the first and last); `metrics.jsonl`, the
    /// curves and TensorBoard keep every step.
    #[arg(long, value_name = "N")]
    log_every: Option<usize> [setting, default = "1", check = at_least_one("the steps between console lines")],
    /// TensorBoard event files: a directory, or `off`.
    #[arg(long, value_name = "DIR|off")]
    tensorboard: Option<String> [setting, shown = "RUN/tensorboard"],
    /// `auto` (bf16 autocast on CUDA, fp32 on CPU), `fp32`, `bf16` (autocast over fp32 weights)
    /// or `bf16-pure` (bf16 weights and activations, fp32 master weights and gradient
    /// accumulation; checkpoints keep the fp32 masters).
    #[arg(long)]
    dtype: Option<DtypeRequest> [setting, default = "auto"],
    /// `auto`, `cpu` or `cuda`.
    #[arg(long)]
    device: Option<DeviceRequest> [setting, default = "auto"],
    /// Peak FLOP/s of the device for MFU.
    #[arg(long)]
    peak_flops: Option<f64> [setting, shown = "looked up from the GPU's name", check = positive("the device's peak FLOP/s")],
    /// CPU threads for libtorch.
    #[arg(long)]
    threads: Option<usize> [setting, shown = "libtorch's choice", check = at_least_one("the number of CPU threads")],
    /// Shard checksums before step 0: `cached` (hash the shards not verified before; a cache
    /// beside them, keyed by path, size, mtime and inode, remembers the rest) or `full` (hash
    /// every shard).
    #[arg(long, value_name = "MODE")]
    verify: Option<String> [setting, default = "cached"],
    /// Do not check the shards' checksums before step 0 (the log says so).
    #[arg(long, conflicts_with = "verify")]
    #[serde(skip)]
    no_verify: bool,
    /// Seconds a data-parallel rank waits for the others (rendezvous, each collective) before
    /// it gives up with an error: a dead rank stops the run instead of hanging it.
    #[arg(long)]
    dist_timeout: Option<f64> [setting, default = "600", check = positive("the timeout in seconds")],
    /// Steps with a non-finite loss or gradient norm to skip (not applied, counted and logged)
    /// before the run stops; 0: the first one stops it with an error naming the step. Large
    /// runs allow a few for rare spikes.
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
    ///
    /// Every bad setting is reported, one line each, not just the first.
    pub fn validate(&self) -> Result<(), UsageError> {
        let mut errors = self.range_errors();
        if let Some(v) = self.grad_clip.filter(|v| !(v.is_finite() && *v >= 0.0)) {
            errors.push(UsageError::new(format!(
                "--grad-clip {v}: the gradient-norm limit must be a finite number, at least 0 (0: no clipping)"
            )));
        }
        if !self.lr_schedule.is_empty() {
            if let Err(e) = PhaseSchedule(self.lr_schedule.clone()).validate() {
                errors.push(UsageError::new(format!("lr_schedule: {e}")));
            }
        }
        if let (Some(n_embd), Some(n_head)) = (self.n_embd, self.n_head) {
            if n_head > 0 && n_embd % n_head != 0 {
                errors.push(UsageError::new(format!(
                    "--n-embd {n_embd} is not divisible by --n-head {n_head}: every head must have the same width"
                )));
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            n => Err(UsageError::new(format!(
                "{n} settings are out of range:\n{}",
                errors
                    .iter()
                    .map(|e| format!("  {e}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))),
        }
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
