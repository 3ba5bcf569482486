//! `h5gpt plan`: parameters, FLOPs, predicted loss, compute-optimal sizes and training time, before a
//! run starts. Built on `h5gpt_core` alone: it links no libtorch.

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use h5gpt_core::cerebras;
use h5gpt_core::config::{GptConfig, MupConfig, Preset, MUP_BASE_LR};
use h5gpt_core::hardware::{peak_bf16_flops, GPU_NAMES};
use h5gpt_core::mup;
use h5gpt_core::plan::chinchilla::{table_a4, table_a9, TABLE_3};
use h5gpt_core::plan::model::{ModelPlan, TrainingPlan};
use h5gpt_core::plan::scaling::{params_for_tokens, LossFit, CHINCHILLA, EPOCH};
use h5gpt_core::plan::{auto_size, AutoSize};
use h5gpt_formats::exit::{with_hint, UsageError};
use h5gpt_formats::spec::GPT2_VOCAB_SIZE;
use h5gpt_formats::split::SplitDirs;
use h5gpt_formats::text::thousands;
use h5gpt_formats::DataParams;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Returns a usage error (exit 2): a bad flag or value.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(UsageError::new(format!($($arg)*)).into())
    };
}

/// Plan a run: a model's parameters and FLOPs, its predicted loss and training time, the
/// compute-optimal size for a budget or a corpus, and Chinchilla's tables reproduced.
///
/// With no arguments: GPT-2 small trained on 20 tokens per parameter. `plan sweep` and
/// `plan fit` fit your own scaling law.
#[derive(Debug, Parser)]
#[command(
    name = "plan",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
pub struct PlanArgs {
    /// `convert-mup`: a Model Zoo config in its μP form.
    #[command(subcommand)]
    command: Option<Command>,
    /// A Cerebras Model Zoo YAML config (release 2.0.3 or 2.10 layout) to plan: its model,
    /// with the parameter count as Cerebras gives it (unpadded vocabulary, tied head once,
    /// position embeddings included) and ours (padded), its schedule, and what becomes of
    /// every key (the report `train --config` prints).
    #[arg(long, value_name = "FILE.yaml", conflicts_with = "model")]
    config: Option<PathBuf>,
    /// With --config: accept keys this reader does not know (they are listed).
    #[arg(long, requires = "config")]
    allow_unknown: bool,
    /// A preset to plan (gpt2-small, gpt3-xl, …; see train --help). [default: gpt2-small when a
    /// shape flag is given]
    #[arg(long)]
    model: Option<String>,
    /// Override the preset's transformer blocks.
    #[arg(long)]
    n_layer: Option<usize>,
    /// Override the preset's attention heads.
    #[arg(long)]
    n_head: Option<usize>,
    /// Override the preset's width.
    #[arg(long)]
    n_embd: Option<usize>,
    /// Override the context length (tokens per row). [default: the preset's, else the shards'
    /// seq_len, else 1024]
    #[arg(long)]
    n_ctx: Option<usize>,
    /// Vocabulary (padded to a multiple of 64 in the model). [default: 50257, GPT-2's]
    #[arg(long)]
    vocab_size: Option<usize>,
    /// Training tokens (9e9 and 9_000_000_000 both work). Without --model: the model size
    /// these tokens call for; at most 1e18. [default with --model: --ratio × its parameters]
    #[arg(long, value_parser = parse_tokens)]
    tokens: Option<f64>,
    /// Tokens per parameter for sizing from data (Chinchilla: 20; Kaplan/GPT-3: 1.7).
    #[arg(long, default_value_t = 20.0)]
    ratio: f64,
    /// Shard directory: its data_params.json gives the tokens (and seq_len and vocabulary).
    #[arg(long, conflicts_with = "tokens")]
    shards: Option<PathBuf>,
    /// Compute budget C = 6ND in FLOPs (5.76e23; at most 1e32): the compute-optimal N and D.
    #[arg(long, value_parser = parse_flops)]
    flops: Option<f64>,
    /// Loss fit: chinchilla (Hoffmann et al. 2022), epoch (Besiroglu et al. 2024), or both.
    #[arg(long, value_enum, default_value_t = FitChoice::Both)]
    fit: FitChoice,
    /// List Chinchilla's Table A9 (its 50 models) with our parameter estimates.
    #[arg(long)]
    chinchilla_table: bool,
    /// Reproduce Chinchilla's Table A4 (Appendix F FLOPs against 6ND), both conventions.
    #[arg(long)]
    flops_table: bool,
    /// Model FLOPs utilization assumed for the time estimate.
    #[arg(long, default_value_t = 0.4)]
    mfu: f64,
    /// GPU whose dense bf16 peak the time estimate uses (h100, a100, h200, or a name such as
    /// "H100 PCIe").
    #[arg(long, default_value = "h100")]
    gpu: String,
    /// Peak TFLOP/s for the time estimate, instead of --gpu's.
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    json: bool,
    /// μP (as `train --mup`, Cerebras-GPT's defaults: base width 256, embedding multiplier 10,
    /// σ_base 0.08, η_base 6e-3): also print the model's per-tensor init std and learning rate.
    #[arg(long)]
    mup: bool,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Plan an IsoFLOP sweep: one train config per run and a script that runs them all.
    Sweep(sweep::SweepArgs),
    /// Fit L(N, D) = E + A/N^α + B/D^β to your runs (Chinchilla's Approach 3 and 2).
    Fit(fit::FitArgs),
    /// Turn a standard-parameterization Model Zoo config into its μP form, as the Model Zoo's
    /// convert_config_to_mup.py does (Cerebras-GPT's base: width 256, LR 6e-3, init std 0.08,
    /// embedding multiplier 10). Writes our TOML (a `train --config` file), or with
    /// --format yaml the Model Zoo YAML of the input's generation.
    ConvertMup(ConvertMupArgs),
}

/// `plan convert-mup`'s arguments.
#[derive(Debug, clap::Args)]
struct ConvertMupArgs {
    /// The standard-parameterization config (YAML, release 2.0.3 or 2.10 layout).
    config: PathBuf,
    /// Width D₀ the base hyperparameters were tuned at.
    #[arg(long, default_value_t = 256)]
    base_width: usize,
    /// η_base: the schedule is scaled to peak at it.
    #[arg(long, default_value_t = 6e-3)]
    base_lr: f64,
    /// σ_base: the embeddings' init std (hidden matrices σ/√m, output σ/√(2mL)).
    #[arg(long, default_value_t = 0.08)]
    base_init_std: f64,
    /// Multiplier of the embedding output.
    #[arg(long, default_value_t = 10.0)]
    embed_mult: f64,
    /// Output format: `toml` (our `train --config`) or `yaml` (the Model Zoo's, same
    /// generation as the input; comments are not kept).
    #[arg(long, default_value = "toml")]
    format: String,
    /// Write here (atomically) instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// `plan convert-mup`.
fn convert_mup(args: &ConvertMupArgs) -> Result<()> {
    for (flag, v) in [
        ("--base-lr", args.base_lr),
        ("--base-init-std", args.base_init_std),
        ("--embed-mult", args.embed_mult),
    ] {
        if !(v.is_finite() && v > 0.0) {
            usage!("{flag} {v} is not a positive number");
        }
    }
    if args.base_width == 0 {
        usage!("--base-width must be at least 1");
    }
    let base = cerebras::convert::MupBase {
        base_width: args.base_width,
        base_lr: args.base_lr,
        init_std: args.base_init_std,
        embed_mult: args.embed_mult,
    };
    let doc =
        cerebras::yaml::Document::read(&args.config).map_err(|e| UsageError::new(e.to_string()))?;
    let converted = cerebras::convert::convert_to_mup(&doc, &base)
        .map_err(|e| UsageError::new(e.to_string()))?;
    let text = match args.format.as_str() {
        "yaml" => cerebras::convert::to_yaml_text(&converted),
        "toml" => {
            let doc = cerebras::yaml::Document::from_yaml(&args.config, converted)
                .map_err(|e| UsageError::new(e.to_string()))?;
            let mapped = cerebras::map::map(&doc, &cerebras::LoadOptions::default())
                .map_err(|e| UsageError::new(e.to_string()))?;
            format!(
                "# μP form of {} (plan convert-mup): train --config this file\n{}",
                args.config.display(),
                toml::to_string(&mapped.options)?
            )
        }
        other => usage!("--format {other}: one of toml or yaml"),
    };
    match &args.out {
        Some(path) => h5gpt_formats::fsio::write_atomic(path, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(())
}

/// Which loss fits to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FitChoice {
    /// Hoffmann et al. 2022, Approach 3.
    Chinchilla,
    /// Besiroglu et al. 2024 refit.
    Epoch,
    /// Both.
    Both,
}

impl FitChoice {
    fn fits(self) -> Vec<LossFit> {
        match self {
            FitChoice::Chinchilla => vec![CHINCHILLA],
            FitChoice::Epoch => vec![EPOCH],
            FitChoice::Both => vec![CHINCHILLA, EPOCH],
        }
    }
}

/// The most tokens `plan` takes (10^18: far past any corpus, and within what a 64-bit count
/// holds, which 10^20 is not).
const MAX_TOKENS: f64 = 1e18;

/// The largest compute budget `plan` takes, in FLOPs (10^32; GPT-4-class runs are ~10^25).
const MAX_FLOPS: f64 = 1e32;

/// A positive amount written as `9e9`, `9000000000`, `9_000_000_000` or `9,000,000,000`, at
/// most `max`.
fn parse_bounded(s: &str, max: f64, what: &str) -> Result<f64, String> {
    let cleaned: String = s.chars().filter(|c| *c != '_' && *c != ',').collect();
    match cleaned.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= max => Ok(v),
        Ok(v) if v.is_finite() && v > max => Err(format!(
            "`{s}` is more {what} than plan takes (at most {max:e})"
        )),
        _ => Err(format!("`{s}` is not a positive number (e.g. 9e9)")),
    }
}

/// A token count (`--tokens`, `--batch-tokens`): see [`parse_bounded`], at most [`MAX_TOKENS`].
fn parse_tokens(s: &str) -> Result<f64, String> {
    parse_bounded(s, MAX_TOKENS, "tokens")
}

/// A compute budget (`--flops`): see [`parse_bounded`], at most [`MAX_FLOPS`].
fn parse_flops(s: &str) -> Result<f64, String> {
    parse_bounded(s, MAX_FLOPS, "FLOPs")
}

/// What a shard directory's manifest says about the data.
struct Corpus {
    path: PathBuf,
    tokens: u64,
    seq_len: Option<usize>,
    vocab_size: Option<usize>,
    tokenizer: String,
}

/// Reads the token count (loss-counted tokens, else real, else stored positions) of `dir`'s
/// data_params.json, or of `dir/train/`'s when `dir` holds a train/val split.
fn read_corpus(dir: &Path) -> Result<Corpus> {
    let read = |d: &Path| {
        DataParams::read_from_dir(d)
            .with_context(|| format!("cannot read {}", d.join("data_params.json").display()))
    };
    let train = SplitDirs::of(dir).train;
    let (path, params) = match read(dir)? {
        Some(p) => (dir.to_path_buf(), p),
        None => match read(&train)? {
            Some(p) => (train, p),
            None => usage!(
                "{}",
                with_hint(
                    format!("{}: no data_params.json here or in train/", dir.display()),
                    "point --shards at a directory `preprocess --out` wrote",
                )
            ),
        },
    };
    let stats = params.h5_dataset_stats;
    let tokens = Some(stats.training_tokens())
        .filter(|&t| t > 0)
        .with_context(|| {
            format!(
                "{}: h5_dataset_stats counts no tokens",
                path.join("data_params.json").display()
            )
        })?;
    Ok(Corpus {
        tokens,
        seq_len: params.seq_len(),
        vocab_size: params.post_process.vocab_size.map(|v| v as usize),
        tokenizer: params.tokenizer_identity().name,
        path,
    })
}

/// The model `--model` and the shape flags describe; `None` when none is given.
fn model_config(args: &PlanArgs, corpus: Option<&Corpus>) -> Result<Option<GptConfig>> {
    let overrides = [
        args.n_layer,
        args.n_head,
        args.n_embd,
        args.n_ctx,
        args.vocab_size,
    ];
    if args.model.is_none() && overrides.iter().all(Option::is_none) {
        return Ok(None);
    }
    let name = args.model.as_deref().unwrap_or("gpt2-small");
    let Some(preset) = Preset::find(name) else {
        usage!("unknown --model `{name}`; presets: {}", Preset::names());
    };
    let mut cfg = preset.config(corpus.and_then(|c| c.seq_len));
    cfg.n_layer = args.n_layer.unwrap_or(cfg.n_layer);
    cfg.n_head = args.n_head.unwrap_or(cfg.n_head);
    cfg.n_embd = args.n_embd.unwrap_or(cfg.n_embd);
    cfg.n_ctx = args.n_ctx.unwrap_or(cfg.n_ctx);
    cfg.vocab_size = args.vocab_size.unwrap_or(cfg.vocab_size);
    cfg.validate()
        .map_err(|e| UsageError::new(format!("model shape: {e}")))?;
    Ok(Some(cfg))
}

mod fit;
mod sweep;

/// The model of a Model Zoo config, with the shape flags applied.
fn cerebras_model(args: &PlanArgs, mapped: &cerebras::Mapped) -> Result<GptConfig> {
    let mut cfg = mapped.model;
    cfg.n_layer = args.n_layer.unwrap_or(cfg.n_layer);
    cfg.n_head = args.n_head.unwrap_or(cfg.n_head);
    cfg.n_embd = args.n_embd.unwrap_or(cfg.n_embd);
    cfg.n_ctx = args.n_ctx.unwrap_or(cfg.n_ctx);
    cfg.vocab_size = args.vocab_size.unwrap_or(cfg.vocab_size);
    cfg.validate()
        .map_err(|e| UsageError::new(format!("model shape: {e}")))?;
    Ok(cfg)
}

/// Runs `h5gpt plan` with `args`.
pub fn run(args: PlanArgs) -> Result<()> {
    match &args.command {
        Some(Command::ConvertMup(convert)) => return convert_mup(convert),
        Some(Command::Sweep(sweep)) => {
            let line: Vec<String> = std::env::args().collect();
            return sweep::run(sweep, &line.join(" "));
        }
        Some(Command::Fit(fit)) => return fit::run(fit),
        None => {}
    }
    check_rates(&args)?;
    let peak = peak_flops(&args)?;
    let fits = args.fit.fits();
    let corpus = args.shards.as_deref().map(read_corpus).transpose()?;
    let tokens = args.tokens.or(corpus.as_ref().map(|c| c.tokens as f64));
    let mapped = load_cerebras_config(&args)?;
    let mut cfg = match &mapped {
        Some(mapped) => Some(cerebras_model(&args, mapped)?),
        None => model_config(&args, corpus.as_ref())?,
    };
    let tables = args.chinchilla_table || args.flops_table;
    let bare = cfg.is_none() && tokens.is_none() && args.flops.is_none() && !tables;
    if bare {
        cfg = Some(GptConfig::gpt2_small());
    }

    let mut out = Report::default();
    if let Some(mapped) = &mapped {
        out.cerebras(mapped);
    }
    if let Some(cfg) = cfg {
        out.model(&args, cfg, tokens, &fits, peak, mapped.as_ref());
    } else if let Some(t) = tokens {
        out.data(&args, t, corpus.as_ref());
    }
    if let Some(c) = args.flops {
        out.allocation(c, &fits);
    }
    if args.chinchilla_table {
        out.text += &a9_text();
        out.doc
            .insert("chinchilla_table".into(), to_value(&table_a9()));
    }
    if args.flops_table {
        out.text += &a4_text();
        out.doc.insert("flops_table".into(), to_value(&table_a4()));
    }
    out.print(args.json, bare)
}

/// Checks `--mfu` is in (0, 1] and `--ratio` positive and finite.
fn check_rates(args: &PlanArgs) -> Result<()> {
    if !(args.mfu > 0.0 && args.mfu <= 1.0) {
        usage!("--mfu {} is not in (0, 1]", args.mfu);
    }
    if !(args.ratio.is_finite() && args.ratio > 0.0) {
        usage!("--ratio {} is not a positive, finite number", args.ratio);
    }
    Ok(())
}

/// The accelerator's peak FLOP/s: `--peak-tflops`, else the `--gpu`'s bf16 peak.
fn peak_flops(args: &PlanArgs) -> Result<f64> {
    Ok(match args.peak_tflops {
        Some(t) if t.is_finite() && t > 0.0 => t * 1e12,
        Some(t) => usage!("--peak-tflops {t} is not positive"),
        None => match peak_bf16_flops(&args.gpu) {
            Some(peak) => peak,
            None => usage!(
                "unknown --gpu `{}`; known: {} (or give --peak-tflops)",
                args.gpu,
                GPU_NAMES.join(", ")
            ),
        },
    })
}

/// The `--config` Model Zoo file, mapped (a bad one is a usage error).
fn load_cerebras_config(args: &PlanArgs) -> Result<Option<cerebras::Mapped>> {
    Ok(match &args.config {
        Some(path) => Some(
            cerebras::load(
                path,
                &cerebras::LoadOptions {
                    allow_unknown: args.allow_unknown,
                    data_root: None,
                },
            )
            .map_err(|e| UsageError::new(e.to_string()))?,
        ),
        None => None,
    })
}

/// What `plan` prints: the text and the `--json` document, section by section.
#[derive(Default)]
struct Report {
    /// The tables, in order.
    text: String,
    /// The same figures, one key per section.
    doc: Map<String, Value>,
}

impl Report {
    /// The Model Zoo config's report and parameter counts.
    fn cerebras(&mut self, mapped: &cerebras::Mapped) {
        self.text += &cerebras::report::render(mapped);
        self.text += "\n";
        self.doc.insert(
            "cerebras".into(),
            json!({
                "file": mapped.file,
                "parameters_cerebras": cerebras::report::cerebras_parameter_count(mapped),
                "parameters_padded": mapped.model.parameter_count(),
                "options": mapped.options,
            }),
        );
    }

    /// The model's parameters and FLOPs, its training on the given (or `--ratio × N`)
    /// tokens, and its μP table when it uses μP.
    fn model(
        &mut self,
        args: &PlanArgs,
        cfg: GptConfig,
        tokens: Option<f64>,
        fits: &[LossFit],
        peak: f64,
        mapped: Option<&cerebras::Mapped>,
    ) {
        let plan = ModelPlan::new(&cfg);
        let (d, chosen) = match tokens {
            Some(t) => (t, "given"),
            None => (args.ratio * plan.params.chinchilla as f64, "--ratio × N"),
        };
        let training = plan.training(d, fits, Some(peak), args.mfu);
        let name = match &args.config {
            Some(path) => path.display().to_string(),
            None => args.model.as_deref().unwrap_or("gpt2-small").to_string(),
        };
        self.text += &model_text(&plan, &name);
        self.text += &training_text(&training, chosen, &args.gpu, args.peak_tflops.is_some());
        self.doc.insert("model".into(), to_value(&plan));
        self.doc.insert("training".into(), to_value(&training));
        if args.mup || cfg.mup.is_some() {
            self.mup(cfg, mapped);
        }
    }

    /// The μP multipliers of every tensor (default μP settings when the model has none).
    fn mup(&mut self, cfg: GptConfig, mapped: Option<&cerebras::Mapped>) {
        let cfg = GptConfig {
            mup: cfg.mup.or(Some(MupConfig::default())),
            ..cfg
        };
        // A config's schedule peak is its base LR.
        let base_lr = mapped
            .map(|m| m.schedule.peak())
            .filter(|lr| *lr > 0.0)
            .unwrap_or(MUP_BASE_LR);
        self.text += "\n";
        self.text += &mup::format_table(&cfg, base_lr);
        self.doc.insert(
            "mup".into(),
            json!({
                "config": cfg.mup,
                "width_mult": cfg.width_mult(),
                "base_lr": base_lr,
                "tensors": mup::mup_table(&cfg, base_lr),
            }),
        );
    }

    /// The model sized from `tokens` (given, or the corpus's) at `--ratio`.
    fn data(&mut self, args: &PlanArgs, t: f64, corpus: Option<&Corpus>) {
        let seq_len = corpus.and_then(|c| c.seq_len).unwrap_or(1024);
        let vocab = args
            .vocab_size
            .or(corpus.and_then(|c| c.vocab_size))
            .unwrap_or(GPT2_VOCAB_SIZE as usize);
        let params = params_for_tokens(t, args.ratio);
        let auto = auto_size(t, args.ratio, seq_len, vocab);
        self.text += &data_text(t, args.ratio, params, corpus, &auto);
        let mut data = json!({
            "tokens": t,
            "ratio": args.ratio,
            "params": params,
            "auto_size": auto,
        });
        if let Some(c) = corpus {
            data["shards"] = json!(c.path);
        }
        self.doc.insert("data".into(), data);
    }

    /// The compute-optimal split of `c` FLOPs under each fit, and Chinchilla's Table 3 beside.
    fn allocation(&mut self, c: f64, fits: &[LossFit]) {
        self.text += &allocation_text(c, fits);
        let allocation: Vec<Value> = fits
            .iter()
            .map(|f| json!({"fit": f, "optimal": f.optimal(c)}))
            .collect();
        let table3: Vec<Value> = TABLE_3
            .iter()
            .map(|row| {
                json!({
                    "paper": row,
                    "fits": fits.iter().map(|f| json!({"fit": f.name, "optimal": f.optimal(row.flops)})).collect::<Vec<_>>(),
                })
            })
            .collect();
        self.doc.insert(
            "allocation".into(),
            json!({"flops": c, "fits": allocation, "table_3": table3}),
        );
    }

    /// Prints the JSON document, or the text (with a pointer to `--help` when `plan` was
    /// given nothing to plan).
    fn print(self, json: bool, bare: bool) -> Result<()> {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&Value::Object(self.doc))?
            );
        } else {
            print!("{}", self.text);
            if bare {
                println!(
                    "\n(plan --help: --model and shape flags, --tokens/--shards for a model sized from \
                     data, --flops for a compute-optimal split, --chinchilla-table, --flops-table)"
                );
            }
        }
        Ok(())
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("plan values serialize")
}

/// Rows under a header, columns aligned: the first to the left, the others to the right.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = " ".repeat(w - cell.chars().count());
            if i == 0 {
                out += &format!("{cell}{pad}");
            } else {
                out += &format!("  {pad}{cell}");
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

fn count(n: usize) -> String {
    thousands(n as u64)
}

fn sci(x: f64) -> String {
    format!("{x:.3e}")
}

/// `seconds` as the largest sensible unit.
fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.1} s"),
        s if s < 7200.0 => format!("{:.1} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86_400.0),
    }
}

fn model_text(plan: &ModelPlan, name: &str) -> String {
    let c = &plan.config;
    let p = &plan.params;
    let mut out = format!(
        "model {name}: n_layer {}, n_head {}, n_embd {}, n_ctx {}, vocab {} (embedding rows {})\n\n",
        c.n_layer,
        c.n_head,
        c.n_embd,
        c.n_ctx,
        c.vocab_size,
        c.embedding_rows()
    );
    let part = |name: &str, padded: usize, unpadded: usize| {
        vec![name.to_string(), count(padded), count(unpadded)]
    };
    let (a, b) = (&p.padded, &p.unpadded);
    let padded_header = format!("vocab {}", c.embedding_rows());
    let unpadded_header = format!("vocab {}", c.vocab_size);
    let rows = vec![
        part("token embedding", a.token_embedding, b.token_embedding),
        part(
            "position embedding",
            a.position_embedding,
            b.position_embedding,
        ),
        part("attention", a.attention, b.attention),
        part("MLP", a.mlp, b.mlp),
        part("LayerNorm", a.layer_norm, b.layer_norm),
        part("head (tied to the token embedding)", p.head, p.head),
        part("total", a.total(), b.total()),
        part("non-embedding", a.non_embedding(), b.non_embedding()),
        part(
            "total less position embedding",
            a.total() - a.position_embedding,
            b.total() - b.position_embedding,
        ),
    ];
    out += &table(&["parameters", &padded_header, &unpadded_header], &rows);
    let f = &plan.flops_per_token;
    out += &format!("\nFLOPs per token (training, T = {}):\n", f.seq_len);
    out += &table(
        &["convention", "FLOPs"],
        &[
            vec![format!("6N (N = {})", count(p.flops)), sci(f.six_n)],
            vec!["6N + 12·L·H·Q·T".into(), sci(f.six_n_attention)],
            vec![
                "Chinchilla App. F, embeddings and logits".into(),
                sci(f.appendix_f_all),
            ],
            vec![
                "Chinchilla App. F, blocks only".into(),
                sci(f.appendix_f_blocks),
            ],
        ],
    );
    out
}

fn training_text(t: &TrainingPlan, chosen: &str, gpu: &str, custom_peak: bool) -> String {
    let mut out = format!(
        "\ntraining on D = {} tokens ({chosen}): {:.1} tokens per parameter\n",
        sci(t.tokens),
        t.tokens_per_param
    );
    out += &format!(
        "FLOPs: {} at 6N + 12·L·H·Q·T per token; 6ND = {}\n",
        sci(t.flops),
        sci(t.flops_6nd)
    );
    for l in &t.losses {
        out += &format!("predicted loss ({}): {:.3}\n", l.fit, l.loss);
    }
    if let Some(time) = &t.time {
        let device = if custom_peak {
            format!("{:.0} TFLOP/s", time.peak_flops / 1e12)
        } else {
            format!("{gpu} ({:.0} TFLOP/s bf16)", time.peak_flops / 1e12)
        };
        out += &format!(
            "time on one {device} at {:.0}% MFU: {}\n",
            time.mfu * 100.0,
            duration(time.seconds)
        );
    }
    out
}

fn data_text(
    tokens: f64,
    ratio: f64,
    params: u64,
    corpus: Option<&Corpus>,
    auto: &AutoSize,
) -> String {
    let mut out = String::new();
    if let Some(c) = corpus {
        out += &format!(
            "shards {}: {} tokens of tokenizer `{}`{}\n",
            c.path.display(),
            thousands(c.tokens),
            c.tokenizer,
            c.vocab_size
                .map(|v| format!(" ({} ids)", thousands(v as u64)))
                .unwrap_or_default()
        );
    }
    out += &format!(
        "{} tokens at {ratio} tokens per parameter: N = {} parameters\n",
        thousands(tokens.round() as u64),
        thousands(params)
    );
    out += &format!(
        "\nthe model train picks without --model (seq_len {}):\n{auto}",
        auto.config.n_ctx
    );
    out
}

fn allocation_text(c: f64, fits: &[LossFit]) -> String {
    let mut out = format!(
        "\ncompute-optimal allocation for C = {} FLOPs (C = 6ND):\n",
        sci(c)
    );
    let rows: Vec<Vec<String>> = fits
        .iter()
        .map(|f| {
            let a = f.optimal(c);
            vec![
                format!(
                    "{} (E {}, A {}, B {}, α {}, β {})",
                    f.name, f.e, f.a, f.b, f.alpha, f.beta
                ),
                sci(a.params),
                sci(a.tokens),
                format!("{:.3}", a.loss),
                format!("{:.1}", a.tokens_per_param),
            ]
        })
        .collect();
    out += &table(&["fit", "N_opt", "D_opt", "loss", "D/N"], &rows);
    out += "\nChinchilla Table 3 (Approach 1) beside the fits at its FLOPs:\n";
    let mut header = vec!["params", "FLOPs", "tokens"];
    let names: Vec<String> = fits
        .iter()
        .flat_map(|f| [format!("N_opt {}", f.name), format!("D_opt {}", f.name)])
        .collect();
    header.extend(names.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = TABLE_3
        .iter()
        .map(|row| {
            let mut cells = vec![
                row.label.to_string(),
                format!("{:.2e}", row.flops),
                format!("{:.3e}", row.tokens),
            ];
            for f in fits {
                let a = f.optimal(row.flops);
                cells.push(sci(a.params));
                cells.push(sci(a.tokens));
            }
            cells
        })
        .collect();
    out += &table(&header, &rows);
    out
}

fn a9_text() -> String {
    let rows = table_a9();
    let mut out = String::from(
        "\nChinchilla Table A9: paper's parameters (millions) beside ours (V = 32,000, relative-position \
         d² + 2d per layer, output layer, no input embedding)\n",
    );
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.paper_millions.to_string(),
                r.shape.d_model.to_string(),
                r.shape.ffw_size.to_string(),
                r.shape.kv_size.to_string(),
                r.shape.n_heads.to_string(),
                r.shape.n_layers.to_string(),
                format!("{:.3}", r.estimate as f64 / 1e6),
                format!("{:+.3}%", 100.0 * r.relative_error),
                if r.matches { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    out += &table(
        &[
            "paper M", "d_model", "ffw_size", "kv_size", "n_heads", "n_layers", "ours M", "error",
            "match",
        ],
        &cells,
    );
    let misses: Vec<String> = rows
        .iter()
        .filter(|r| !r.matches)
        .map(|r| format!("{}M ({:+.2}%)", r.paper_millions, 100.0 * r.relative_error))
        .collect();
    out += &format!(
        "{} of {} rows match; the others: {}\n",
        rows.len() - misses.len(),
        rows.len(),
        misses.join(", ")
    );
    out
}

fn a4_text() -> String {
    let rows = table_a4();
    let mut out = String::from(
        "\nChinchilla Table A4: Appendix F FLOPs per sequence / 6·S·N (S = 2048, V = 32,000, N as in \
         Table A9)\n",
    );
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.paper_params.to_string(),
                r.shape.n_layers.to_string(),
                r.shape.d_model.to_string(),
                r.shape.n_heads.to_string(),
                r.shape.kv_size.to_string(),
                count(r.params as usize),
                format!("{:.2}", r.ratio_blocks),
                format!("{:.2}", r.ratio_all),
                format!("{:.2}", r.paper_ratio),
            ]
        })
        .collect();
    out += &table(
        &[
            "params",
            "n_layers",
            "d_model",
            "n_heads",
            "kv_size",
            "N",
            "blocks only",
            "with emb+logits",
            "paper",
        ],
        &cells,
    );
    out += "blocks only (embeddings and logits left out, the authors' correction) reproduces the paper.\n";
    out
}
