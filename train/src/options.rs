//! Resolving the `train` options (declared in [`h5gpt_core::options::train`]) into a
//! [`TrainConfig`]: the `--config` file or Cerebras YAML, the preset, the data, the device.
//!
//! Precedence: command-line flag > config file > the model preset's default > the built-in
//! default. The resolved options are written to the run's `config.toml`, which `--config`
//! reads back.

use crate::device::select;
use crate::optim::AdamWConfig;
use crate::precision::Precision;
use crate::trainer::{TrainConfig, VerifyMode};
use anyhow::{bail, Context, Result};
use h5gpt_core::cerebras::{self, PhaseSchedule};
use h5gpt_core::config::{
    GptConfig, InitConfig, MupConfig, Preset, SpInitStd, MUP_BASE_LR, PRESETS,
};
use h5gpt_formats::exit::UsageError;
use std::path::{Path, PathBuf};

pub use h5gpt_core::options::train::{BlendEntry, TrainOptions};

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
    let ratio = filled(cli.ratio);
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

/// Resolves flags (with their `--config` file) into a training configuration, in named steps:
/// the sources merged (`merge_sources`: flags over `--config` over the run's `config.toml`
/// over the built-in defaults, then checked), the data sets, the model (the preset or the
/// auto-sized shape, then the overrides), the device and precision, then the trainer's settings
/// and what `config.toml` records.
pub fn resolve(cli: TrainOptions) -> Result<Resolved> {
    let Merged {
        mut cli,
        out,
        config_report,
    } = merge_sources(cli)?;
    let shards = data_sets(&mut cli)?;
    let params = crate::data::training_params(&shards)?;
    let mut notes = Vec::new();
    let ResolvedModel {
        preset,
        model,
        model_name,
        sp_std,
    } = resolve_model(&cli, &shards, params.as_ref(), &mut notes)?;
    let (device, precision) = device_and_precision(&cli, &mut notes)?;
    let mut config = TrainConfig::new(PathBuf::new(), out, model);
    config.shards = shards;
    config.precision = precision;
    config.device = device;
    config.config_report = config_report;
    batch_and_schedule(&mut config, &cli, preset)?;
    evaluation_and_runtime(&mut config, &cli)?;
    let options = recorded_options(&config, cli, &model_name, sp_std);
    Ok(Resolved {
        config,
        options,
        preset,
        model_name,
        notes,
    })
}

/// The options merged from every source, and the run directory they name.
struct Merged {
    /// Flags over `--config` over the run's `config.toml` over the built-in defaults.
    cli: TrainOptions,
    /// The run directory.
    out: PathBuf,
    /// The report of a Cerebras YAML `--config`.
    config_report: Option<String>,
}

/// Merges the sources (flags, then `--config`, then the run's `config.toml`, then the built-in
/// defaults) and checks every range once, whatever the source.
fn merge_sources(mut cli: TrainOptions) -> Result<Merged> {
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
    Ok(Merged {
        cli,
        out,
        config_report,
    })
}

/// The shard sets: `--shards` (with `--weights`) or `[[blend]]` tables, each an existing
/// directory, with one weight per set.
fn data_sets(cli: &mut TrainOptions) -> Result<Vec<PathBuf>> {
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
    Ok(cli.shards.clone())
}

/// The model as resolved, with what `config.toml` records of it.
struct ResolvedModel {
    /// The preset it came from (for `auto`: the one nearest in size).
    preset: &'static Preset,
    /// Its shape and initialization.
    model: GptConfig,
    /// `--model` as given: a preset's name or `auto`.
    model_name: String,
    /// The standard parameterization's init stds, when any was given.
    sp_std: Option<SpInitStd>,
}

/// The model: the preset (or the shape `auto` sizes from the data), the shards' vocabulary, a
/// Hugging Face start, then every override, μP and init flag; validated.
fn resolve_model(
    cli: &TrainOptions,
    shards: &[PathBuf],
    params: Option<&h5gpt_formats::DataParams>,
    notes: &mut Vec<String>,
) -> Result<ResolvedModel> {
    let seq_len = params.and_then(|p| p.seq_len());
    let data_vocab = params
        .and_then(|p| p.post_process.vocab_size)
        .map(|v| v as usize);
    let model_name = filled(cli.model.clone());
    let (preset, mut model) = if model_name == AUTO_MODEL {
        auto_model(cli, &crate::data::describe(shards), params, notes)?
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
    if filled(cli.mup) {
        model.mup = Some(MupConfig {
            base_width: filled(cli.mup_base_width),
            embed_mult: filled(cli.mup_embed_mult),
            init_std: filled(cli.mup_init_std),
        });
    }
    model
        .validate()
        .map_err(|e| UsageError::new(format!("model configuration: {e}")))?;
    Ok(ResolvedModel {
        preset,
        model,
        model_name,
        sp_std,
    })
}

/// The device (each rank picks its GPU by its local rank) and the precision on it.
fn device_and_precision(
    cli: &TrainOptions,
    notes: &mut Vec<String>,
) -> Result<(tch::Device, Precision)> {
    let local_rank = crate::distributed::Launch::from_env()?.map_or(0, |launch| launch.local_rank);
    let selected = select(filled(cli.device), local_rank)?;
    notes.extend(selected.note);
    let device = selected.device;
    let bf16 = crate::device::bf16_supported(crate::device::capability(device));
    let (precision, note) =
        Precision::resolve(filled(cli.dtype), device, bf16).map_err(UsageError::new)?;
    notes.extend(note);
    Ok((device, precision))
}

/// The batch, the learning rate and its schedule, the warm-up and the run's length.
fn batch_and_schedule(config: &mut TrainConfig, cli: &TrainOptions, preset: &Preset) -> Result<()> {
    let mup_on = filled(cli.mup);
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
    config.adamw = AdamWConfig {
        beta1: filled(cli.adam_beta1),
        beta2: filled(cli.adam_beta2),
        eps: filled(cli.adam_eps),
        weight_decay: filled(cli.weight_decay),
    };
    config.grad_clip = filled(cli.grad_clip);
    Ok(())
}

/// Evaluation, checkpoints, data order and the run's runtime settings.
fn evaluation_and_runtime(config: &mut TrainConfig, cli: &TrainOptions) -> Result<()> {
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
    config.init_from_hf = cli.init_from_hf.clone();
    config.peak_flops = cli.peak_flops;
    config.require_checkpoint = cli.resume;
    config.verify = match (cli.no_verify, filled(cli.verify.as_deref())) {
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
    config.shuffle = filled(cli.shuffle);
    config.reweight = cli.reweight;
    config.allow_data_change = cli.allow_data_change;
    config.skip_nonfinite = filled(cli.skip_nonfinite);
    config.log_every = filled(cli.log_every);
    config.dist_timeout = std::time::Duration::from_secs_f64(filled(cli.dist_timeout));
    Ok(())
}

/// What `config.toml` records: the options as given (defaults filled in), with what the
/// resolution derived (the model's shape, the batch, the learning rate).
fn recorded_options(
    config: &TrainConfig,
    cli: TrainOptions,
    model_name: &str,
    sp_std: Option<SpInitStd>,
) -> TrainOptions {
    let model = &config.model;
    let mup_on = filled(cli.mup);
    TrainOptions {
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
        model: Some(model_name.to_string()),
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
    }
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
