//! Mapping a Model Zoo config onto our options: the model shape, μP, the optimizer, the
//! schedule, the data and the loop, from either generation of their layout.

use super::schedule::{LrPhase, PhaseKind, PhaseSchedule};
use super::yaml::{ConfigError, Document, Entry, Section};
use crate::config::{
    GptConfig, InitConfig, MupConfig, Preset, SpInitStd, DEFAULT_LAYER_NORM_EPS, PRESETS,
};
use h5gpt_formats::exit::with_hint;
use std::path::{Path, PathBuf};
use yaml_rust2::Yaml;

/// Which layout a config has, told apart by its structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// Release 2.0.3 (and the 1.x/2.x releases before 2.3's rework): top-level `train_input`,
    /// `eval_input`, `model`, `optimizer`, `runconfig`; μP initializer stds already scaled.
    Release2_0,
    /// Release 2.10 (the `trainer:` layout): `trainer.init.{model, optimizer, schedulers,
    /// precision, loop, checkpoint}` and `trainer.fit.{train,val}_dataloader`.
    Release2_10,
}

impl Generation {
    /// The full key of a model setting in this layout.
    fn model_key(self, key: &str) -> String {
        match self {
            Generation::Release2_0 => format!("model.{key}"),
            Generation::Release2_10 => format!("trainer.init.model.{key}"),
        }
    }

    /// How the report names it.
    pub fn describe(self) -> &'static str {
        match self {
            Generation::Release2_0 => {
                "Model Zoo release 2.0.3 layout (top-level train_input, model, optimizer, runconfig)"
            }
            Generation::Release2_10 => {
                "Model Zoo release 2.10 layout (trainer: init: {model, optimizer, schedulers, ...}, fit: {...})"
            }
        }
    }

    /// Tells the generation from the document's top-level keys.
    pub fn of(doc: &Document) -> Result<Generation, ConfigError> {
        let top = doc.top();
        if top.has("trainer") {
            Ok(Generation::Release2_10)
        } else if top.has("model")
            && (top.has("train_input") || top.has("optimizer") || top.has("runconfig"))
        {
            Ok(Generation::Release2_0)
        } else {
            Err(doc.error(
                "",
                format!(
                    "not a Cerebras Model Zoo run config: expected a top-level `trainer` (release 2.3 and later) or `model` with `train_input`/`optimizer`/`runconfig` (release 2.0.3); found {}",
                    top.keys().join(", ")
                ),
            ))
        }
    }
}

/// How to read a config.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Run with keys this reader does not know (they are listed in the report); otherwise
    /// they are an error.
    pub allow_unknown: bool,
    /// Directory that relative `data_dir`s are resolved against; `None`: the working
    /// directory, as Cerebras does.
    pub data_root: Option<PathBuf>,
}

/// A config mapped onto our options.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// The YAML file.
    pub file: PathBuf,
    /// Its layout.
    pub generation: Generation,
    /// The model it describes.
    pub model: GptConfig,
    /// Its learning-rate schedule (the base LR under μP).
    pub schedule: PhaseSchedule,
    /// The `train` options it sets, spelled as in our TOML `--config` files.
    pub options: toml::Table,
    /// Every key of the file and what became of it.
    pub entries: Vec<Entry>,
    /// How their semantics compare with ours where they differ.
    pub notes: Vec<String>,
    /// The preset lending defaults the file does not set (the micro-batch when it has none).
    pub preset: &'static Preset,
}

/// Reads `file` and maps it.
pub fn load(file: &Path, options: &LoadOptions) -> Result<Mapped, ConfigError> {
    let doc = Document::read(file)?;
    map(&doc, options)
}

/// Relative tolerance for values that must agree (stds written to 16 digits).
const AGREE: f64 = 1e-6;

fn agree(a: f64, b: f64) -> bool {
    (a - b).abs() <= AGREE * a.abs().max(b.abs()).max(1e-300)
}

/// What the walk collects before it becomes a [`Mapped`].
#[derive(Default)]
struct Collected {
    n_embd: Option<usize>,
    n_layer: Option<usize>,
    n_head: Option<usize>,
    ffn: Option<usize>,
    n_ctx: Option<usize>,
    vocab: Option<usize>,
    dropout: Option<f64>,
    eps: Option<f64>,
    init: Initializers,
    mup: MupKeys,
    betas: Option<(f64, f64)>,
    adam_eps: Option<f64>,
    weight_decay: Option<f64>,
    grad_clip: Option<f64>,
    phases: Vec<LrPhase>,
    shards: Vec<PathBuf>,
    val_shards: Vec<PathBuf>,
    batch_size: Option<usize>,
    micro_batch: Option<usize>,
    max_seq_len: Option<usize>,
    shuffle: Option<bool>,
    seed: Option<u64>,
    eval_batch_size: Option<usize>,
    max_steps: Option<usize>,
    eval_every: Option<usize>,
    eval_steps: Option<usize>,
    save_every: Option<usize>,
    bf16: Option<bool>,
    loss_weight: Option<(f64, String)>,
    unknown: Vec<String>,
    notes: Vec<String>,
}

/// One `*_initializer`: (std, truncation in stds).
#[derive(Default, Clone, Copy)]
struct Initializers {
    embedding: Option<(f64, Option<f64>)>,
    hidden: Option<(f64, Option<f64>)>,
    output: Option<(f64, Option<f64>)>,
}

/// μP as either generation spells it.
#[derive(Default, Clone, Copy)]
struct MupKeys {
    base_hidden: Option<f64>,
    base_filter: Option<f64>,
    embeddings_scale: Option<f64>,
    output_logits_alpha: Option<f64>,
    output_logits_scale: Option<f64>,
    decoder_kernel_lr: Option<f64>,
    scale_qk_dot_by_d: Option<bool>,
}

/// Maps a parsed document.
pub fn map(doc: &Document, options: &LoadOptions) -> Result<Mapped, ConfigError> {
    let generation = Generation::of(doc)?;
    let mut c = Collected::default();
    let top = doc.top();
    let sparsity = match generation {
        Generation::Release2_0 => top.has("sparsity").then(|| "sparsity".to_string()),
        Generation::Release2_10 => match top.raw("trainer") {
            Some(Yaml::Hash(trainer)) => trainer
                .get(&Yaml::String("init".into()))
                .and_then(|init| init.as_hash())
                .filter(|init| init.contains_key(&Yaml::String("sparsity".into())))
                .map(|_| "trainer.init.sparsity".to_string()),
            _ => None,
        },
    };
    if let Some(key) = sparsity {
        return Err(doc.error(
            &key,
            with_hint(
                "weight-sparse training (the Model Zoo's sparsity configs) is not supported: we train dense models",
                "the same config without its `sparsity` section trains the dense model",
            ),
        ));
    }
    match generation {
        Generation::Release2_0 => walk_2_0(&top, &mut c, options)?,
        Generation::Release2_10 => walk_2_10(&top, &mut c, options)?,
    }
    c.unknown.extend(doc.sweep());
    if !c.unknown.is_empty() && !options.allow_unknown {
        return Err(doc.error(
            "",
            with_hint(
                format!(
                    "keys this reader does not know: {}",
                    c.unknown.join(", "),
                ),
                "check their spelling against the Model Zoo release; --allow-unknown runs without them (the report lists them)",
            ),
        ));
    }
    finish(doc, generation, c)
}

fn walk_2_0(
    top: &Section<'_>,
    c: &mut Collected,
    options: &LoadOptions,
) -> Result<(), ConfigError> {
    let model = top
        .section("model")?
        .ok_or_else(|| top.error("model", "missing"))?;
    read_model(&model, c)?;
    if let Some(optimizer) = top.section("optimizer")? {
        read_optimizer_2_0(&optimizer, c)?;
    }
    if let Some(input) = top.section("train_input")? {
        read_train_input(&input, c, options)?;
    }
    if let Some(input) = top.section("eval_input")? {
        read_eval_input(&input, c, options)?;
    }
    if let Some(run) = top.section("runconfig")? {
        c.max_steps = run.usize("max_steps", "--max-steps")?;
        c.eval_steps = run.usize(
            "eval_steps",
            "--eval-batches (eval rows = eval_steps × eval batch_size)",
        )?;
        c.save_every = run.usize("checkpoint_steps", "--save-every")?;
        c.eval_every = run.usize("eval_frequency", "--eval-every")?;
        if let Some(seed) = run.usize("seed", "--seed")? {
            c.seed = Some(seed as u64);
        }
        read_log_steps(&run);
        for key in [
            "enable_distributed",
            "use_cs_grad_accum",
            "use_appliance_data",
            "num_csx",
            "num_workers_per_csx",
            "num_wgt_servers",
            "num_act_servers",
            "target_device",
            "mgmt_address",
            "mount_dirs",
            "python_paths",
            "compile_dir",
            "job_labels",
            "credentials_path",
            "precision_opt_level",
            "execute_crd_memory_gi",
            "wrk_memory_gi",
            "act_memory_gi",
            "cmd_memory_gi",
            "wgt_memory_gi",
            "debug_args_path",
            "transfer_processes",
            "job_time_sec",
            "disable_version_check",
        ] {
            run.ignore(key, "Cerebras hardware and cluster setting");
        }
        run.ignore(
            "mode",
            "we train (eval runs during training; see eval_frequency)",
        );
        run.ignore("model_dir", "our run folder is --out");
        run.ignore(
            "save_initial_checkpoint",
            "we checkpoint every --save-every steps and at the end, not at step 0",
        );
        run.ignore("save_losses", "we always write metrics.jsonl");
        run.ignore("keep_checkpoint_max", "see --keep-checkpoints (default 2)");
    }
    Ok(())
}

fn walk_2_10(
    top: &Section<'_>,
    c: &mut Collected,
    options: &LoadOptions,
) -> Result<(), ConfigError> {
    if matches!(top.raw("trainer"), Some(Yaml::Array(_))) {
        return Err(top.error(
            "trainer",
            "a list of trainer phases is not supported: give one trainer",
        ));
    }
    let trainer = top
        .section("trainer")?
        .ok_or_else(|| top.error("trainer", "empty"))?;
    let init = trainer
        .section("init")?
        .ok_or_else(|| trainer.error("init", "missing"))?;
    let model = init
        .section("model")?
        .ok_or_else(|| init.error("model", "missing"))?;
    read_model(&model, c)?;
    if let Some(seed) = init.usize("seed", "--seed")? {
        c.seed = Some(seed as u64);
    }
    if let Some(optimizer) = init.section("optimizer")? {
        read_optimizer_2_10(&init, &optimizer, c)?;
    }
    if let Some(list) = init.raw("schedulers") {
        read_schedulers_2_10(&init, list, c)?;
    }
    if let Some(precision) = init.section("precision")? {
        read_precision_2_10(&precision, c)?;
    }
    read_loop_and_checkpoint_2_10(&init, c)?;
    if let Some(logging) = init.section("logging")? {
        read_log_steps(&logging);
        logging.ignore("log_level", "our log is the console and metrics.jsonl");
    }
    init.ignore("backend", "Cerebras hardware (backend_type, cluster)");
    read_callbacks(&init, c)?;
    init.ignore("loggers", "our log is the console and metrics.jsonl");
    init.ignore("model_dir", "our run folder is --out");
    if let Some(fit) = trainer.section("fit")? {
        if let Some(input) = fit.section("train_dataloader")? {
            read_train_input(&input, c, options)?;
        }
        if let Some(input) = fit.section("val_dataloader")? {
            read_eval_input(&input, c, options)?;
        }
        fit.ignore("ckpt_path", "resume with --resume from our own checkpoints");
    }
    trainer.ignore(
        "validate",
        "a separate validation run; we evaluate fit.val_dataloader during training",
    );
    trainer.ignore(
        "validate_all",
        "a separate validation run; we evaluate fit.val_dataloader during training",
    );
    Ok(())
}

/// A 2.10 `trainer.init.optimizer`: one AdamW, its settings and its learning-rate adjustments.
fn read_optimizer_2_10(
    init: &Section<'_>,
    optimizer: &Section<'_>,
    c: &mut Collected,
) -> Result<(), ConfigError> {
    let keys = optimizer.keys();
    let [name] = keys.as_slice() else {
        return Err(init.error("optimizer", "expected one optimizer (AdamW: {...})"));
    };
    if !name.eq_ignore_ascii_case("adamw") {
        return Err(optimizer.error(
            name,
            "only AdamW is supported (the optimizer of GPT-3 and Cerebras-GPT)",
        ));
    }
    let adamw = optimizer
        .section(name)?
        .ok_or_else(|| optimizer.error(name, "empty"))?;
    read_adamw(&adamw, c)?;
    read_lr_adjustment(&adamw, c)?;
    Ok(())
}

/// A 2.10 `trainer.init.schedulers`: one learning-rate scheduler.
fn read_schedulers_2_10(
    init: &Section<'_>,
    list: &Yaml,
    c: &mut Collected,
) -> Result<(), ConfigError> {
    let items: Vec<&Yaml> = match list {
        Yaml::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    if items.len() != 1 {
        return Err(init.error(
            "schedulers",
            format!(
                "{} schedulers: one learning-rate scheduler is supported (others schedule weight decay or per-group rates)",
                items.len()
            ),
        ));
    }
    read_scheduler_2_10(init, init.key("schedulers[0]"), items[0], c)?;
    Ok(())
}

/// A 2.10 `trainer.init.precision`: bf16 or fp32, and the gradient-norm clip.
fn read_precision_2_10(precision: &Section<'_>, c: &mut Collected) -> Result<(), ConfigError> {
    if let Some(kind) = precision.str("fp16_type", "--dtype")? {
        match kind {
            "bfloat16" => c.bf16 = Some(true),
            "float16" | "cbfloat16" => {
                c.bf16 = Some(true);
                c.notes.push(format!(
                    "precision.fp16_type {kind}: trained in bf16 autocast (we have no fp16 with loss scaling)"
                ));
            }
            other => {
                return Err(precision.error(
                    "fp16_type",
                    format!("{other:?}: expected bfloat16 or float16"),
                ))
            }
        }
    }
    if precision.bool("enabled", "--dtype (false: fp32)")? == Some(false) {
        c.bf16 = Some(false);
    }
    c.grad_clip = precision
        .f64("max_gradient_norm", "--grad-clip")?
        .or(c.grad_clip);
    if precision.has("max_gradient_value") {
        return Err(precision.error(
            "max_gradient_value",
            "clipping by value is not supported (we clip the global norm: max_gradient_norm)",
        ));
    }
    precision.ignore("precision_opt_level", "Cerebras compiler setting");
    precision.ignore("log_loss_scale", "no loss scaling in bf16");
    precision.ignore("loss_scaling_factor", "no loss scaling in bf16");
    precision.ignore("initial_loss_scale", "no loss scaling in bf16");
    precision.ignore("steps_per_increase", "no loss scaling in bf16");
    precision.ignore("min_loss_scale", "no loss scaling in bf16");
    precision.ignore("max_loss_scale", "no loss scaling in bf16");
    Ok(())
}

/// A 2.10 `trainer.init.loop` (steps, evaluation) and `trainer.init.checkpoint` (its period).
fn read_loop_and_checkpoint_2_10(init: &Section<'_>, c: &mut Collected) -> Result<(), ConfigError> {
    if let Some(run) = init.section("loop")? {
        c.max_steps = run.usize("max_steps", "--max-steps")?;
        c.eval_every = run.usize("eval_frequency", "--eval-every")?;
        c.eval_steps = run.usize(
            "eval_steps",
            "--eval-batches (eval rows = eval_steps × eval batch_size)",
        )?;
        if run.has("num_steps") {
            return Err(run.error("num_steps", "give the run's length as max_steps"));
        }
        run.ignore(
            "grad_accum_steps",
            "we accumulate gradients to make batch_size from micro_batch_size",
        );
    }
    if let Some(checkpoint) = init.section("checkpoint")? {
        c.save_every = checkpoint.usize("steps", "--save-every")?;
        checkpoint.ignore(
            "save_initial_checkpoint",
            "we checkpoint every --save-every steps and at the end, not at step 0",
        );
        checkpoint.ignore(
            "disable_strict_checkpoint_loading",
            "our resume is always strict",
        );
        checkpoint.ignore("checkpoint_name", "our checkpoints are step-NNNNNN folders");
    }
    Ok(())
}

/// The callbacks of a 2.10 `trainer.init`: `ComputeNorm` (ignored: we log the gradient norm
/// every step), `ScopedTrainFlags` (its `csx.performance.micro_batch_size` is our
/// `--micro-batch`) and `ScopedValidateFlags` (ignored). Any other callback, or flag, is left
/// unread, so it is reported as unknown.
fn read_callbacks(init: &Section<'_>, c: &mut Collected) -> Result<(), ConfigError> {
    const MICRO_BATCH: &str = "csx.performance.micro_batch_size";
    let items: Vec<&Yaml> = match init.raw("callbacks") {
        None | Some(Yaml::Null) => return Ok(()),
        Some(Yaml::Array(items)) => items.iter().collect(),
        Some(_) => return Err(init.error("callbacks", "expected a list of callbacks")),
    };
    for (i, item) in items.into_iter().enumerate() {
        let callback = init.nested(format!("{}[{i}]", init.key("callbacks")), item)?;
        for name in callback.keys() {
            match name {
                "ComputeNorm" => callback.ignore(name, "we log the gradient norm every step"),
                "ScopedTrainFlags" | "ScopedValidateFlags" => {
                    let Some(flags) = callback.section(name)? else {
                        callback.ignore(name, "no flags");
                        continue;
                    };
                    if name == "ScopedTrainFlags" {
                        if let Some(micro) = flags.usize(MICRO_BATCH, "--micro-batch")? {
                            c.micro_batch = Some(micro);
                        }
                    } else {
                        flags.ignore(MICRO_BATCH, "evaluation uses --micro-batch");
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn read_log_steps(section: &Section<'_>) {
    section.ignore("log_steps", "we log every step");
    section.ignore(
        "log_summaries",
        "we log the loss, LR and gradient norm every step",
    );
}

/// A model section: its shape, architecture, initializers, μP, loss and precision.
fn read_model(m: &Section<'_>, c: &mut Collected) -> Result<(), ConfigError> {
    if let Some(name) = m.str("name", "the model family")? {
        if !matches!(name, "gpt2" | "gpt3") {
            return Err(m.error(
                "name",
                format!("{name:?}: only gpt2 and gpt3 are supported"),
            ));
        }
    }
    c.n_embd = m.usize("hidden_size", "--n-embd")?;
    c.n_layer = m.usize("num_hidden_layers", "--n-layer")?;
    c.n_head = m.usize("num_heads", "--n-head")?;
    c.ffn = m.usize("filter_size", "--ffn-size")?;
    c.n_ctx = m.usize("max_position_embeddings", "--n-ctx")?;
    c.vocab = m.usize("vocab_size", "--vocab-size")?;
    c.dropout = m.f64("dropout_rate", "--dropout")?;
    if let Some(attention) = m.f64("attention_dropout_rate", "--dropout (one rate for both)")? {
        if attention != c.dropout.unwrap_or(0.0) {
            return Err(m.error(
                "attention_dropout_rate",
                format!(
                    "{attention} differs from dropout_rate {}: our model has one dropout rate",
                    c.dropout.unwrap_or(0.0)
                ),
            ));
        }
    }
    m.ignore(
        "residual_dropout_rate",
        "one dropout rate (dropout_rate) for all dropouts",
    );
    c.eps = m.f64("layer_norm_epsilon", "--layer-norm-eps")?;
    check_architecture(m, c)?;
    c.init.embedding = read_initializer(m, "embedding_initializer")?;
    c.init.hidden = read_initializer(m, "initializer")?;
    c.init.output = read_initializer(m, "output_layer_initializer")?;
    if m.has("initializer_range") {
        let std = m.f64("initializer_range", "init std")?.unwrap_or(0.02);
        if c.init.hidden.is_none() {
            c.init.hidden = Some((std, None));
        }
    }
    read_model_mup(m, c)?;
    read_model_loss(m, c)?;
    // Precision (2.0.3 keeps it with the model).
    if let Some(bf16) = m.bool("use_bfloat16", "--dtype bf16")? {
        c.bf16 = Some(bf16);
    }
    if m.bool("mixed_precision", "--dtype (false: fp32)")? == Some(false) {
        c.bf16 = Some(false);
    }
    m.ignore("fp16_type", "see precision");
    m.ignore("compute_eval_metrics", "we report the validation loss");
    m.ignore("boundary_casting", "Cerebras numerics setting");
    m.ignore("tf_summary", "Cerebras logging setting");
    m.ignore(
        "embedding_dropout_rate",
        "one dropout rate (dropout_rate) for all dropouts",
    );
    Ok(())
}

/// The model's architecture keys, checked to be ours: a tied LM head without bias, biases
/// everywhere, learned position embeddings, GELU, scaled dot-product multi-head attention.
fn check_architecture(m: &Section<'_>, c: &mut Collected) -> Result<(), ConfigError> {
    if let Some(true) = m
        .bool("share_embedding_weights", "tied LM head (always, here)")?
        .map(|b| !b)
    {
        return Err(m.error(
            "share_embedding_weights",
            "false: an untied LM head is not supported (ours is tied to the token embedding)",
        ));
    }
    for key in [
        "use_ffn_bias",
        "use_projection_bias_in_attention",
        "use_ffn_bias_in_attention",
    ] {
        if m.bool(key, "biases in linear layers (--bias true)")? == Some(false) {
            return Err(m.error(
                key,
                "false: the model has biases in every linear layer and LayerNorm or none; only all of use_ffn_bias, use_projection_bias_in_attention and use_ffn_bias_in_attention true is supported",
            ));
        }
    }
    if m.bool("use_bias_in_output", "no LM-head bias (ours has none)")? == Some(true) {
        return Err(m.error(
            "use_bias_in_output",
            "true: an LM-head bias is not supported (the tied head has none)",
        ));
    }
    if let Some(kind) = m.str("position_embedding_type", "learned position embeddings")? {
        if kind != "learned" {
            return Err(m.error(
                "position_embedding_type",
                format!("{kind:?}: only learned position embeddings are supported (not fixed, rotary or alibi)"),
            ));
        }
    }
    if m.bool("use_position_embedding", "learned position embeddings")? == Some(false) {
        return Err(m.error(
            "use_position_embedding",
            "false: a model without position embeddings is not supported",
        ));
    }
    if let Some(f) = m.str("nonlinearity", "GELU (tanh form)")? {
        if f != "gelu" && f != "gelu_new" {
            return Err(m.error("nonlinearity", format!("{f:?}: only gelu is supported")));
        }
        if f == "gelu" {
            c.notes.push(
                "model.nonlinearity gelu: our MLP uses GPT-2's tanh form of GELU (Cerebras' gelu is the exact erf form; they differ by less than 0.001 everywhere)".into(),
            );
        }
    }
    if let Some(kind) = m.str(
        "attention_type",
        "attention scores × 1/√d_head (μP: 1/d_head)",
    )? {
        if kind != "scaled_dot_product" {
            return Err(m.error(
                "attention_type",
                format!("{kind:?}: only scaled_dot_product attention is supported"),
            ));
        }
    }
    if let Some(module) = m.str("attention_module", "multi-head attention")? {
        if module != "aiayn_attention" && module != "multiquery_attention" {
            return Err(m.error("attention_module", format!("{module:?} is not supported")));
        }
    }
    Ok(())
}

/// μP, as either generation spells it (checked later, in [`resolve_mup`]).
fn read_model_mup(m: &Section<'_>, c: &mut Collected) -> Result<(), ConfigError> {
    c.mup.base_hidden = m.f64("mup_base_hidden_size", "--mup-base-width")?;
    c.mup.base_filter = m.f64("mup_base_filter_size", "μP: must be filter_size / m")?;
    c.mup.embeddings_scale = m.f64("embeddings_scale", "--mup-embed-mult")?;
    c.mup.output_logits_alpha = m.f64("output_logits_alpha", "μP: logits × alpha/m (alpha 1)")?;
    c.mup.output_logits_scale = m.f64("output_logits_scale", "μP: logits × 1/m")?;
    c.mup.scale_qk_dot_by_d = m.bool("scale_qk_dot_by_d", "μP: attention scores × 1/d_head")?;
    if let Some(alpha) = m.f64("attention_logits_alpha", "μP: attention alpha (1)")? {
        if alpha != 1.0 {
            return Err(m.error(
                "attention_logits_alpha",
                format!("{alpha}: only 1 is supported"),
            ));
        }
    }
    m.bool("scale_output_logits_by_d", "μP: logits × 1/m")?;
    Ok(())
}

/// The loss normalization: `num_tokens` (ours), or `batch_size` with a `loss_weight`.
fn read_model_loss(m: &Section<'_>, c: &mut Collected) -> Result<(), ConfigError> {
    match m.str("loss_scaling", "loss normalization")? {
        None | Some("num_tokens") => {}
        Some("batch_size") => {
            let weight = m.f64("loss_weight", "loss normalization")?.ok_or_else(|| {
                m.error(
                    "loss_weight",
                    "loss_scaling batch_size needs a loss_weight (1/max_sequence_length)",
                )
            })?;
            c.loss_weight = Some((weight, m.key("loss_weight")));
        }
        Some(other) => {
            return Err(m.error(
                "loss_scaling",
                format!("{other:?}: expected num_tokens or batch_size"),
            ))
        }
    }
    if m.has("loss_weight") && c.loss_weight.is_none() {
        m.read("loss_weight", "loss normalization");
    }
    Ok(())
}

/// A `*_initializer` mapping: `(std, truncation in stds)`.
fn read_initializer(m: &Section<'_>, key: &str) -> Result<Option<(f64, Option<f64>)>, ConfigError> {
    let init = match m.raw(key) {
        None => return Ok(None),
        Some(Yaml::String(name)) => {
            m.read(key, "init");
            return match name.as_str() {
                "normal" => Ok(Some((1.0, None))),
                other => Err(m.error(key, format!("{other:?} without a std is not supported"))),
            };
        }
        Some(_) => m.section(key)?.expect("a mapping"),
    };
    let name = init
        .str("name", "init distribution")?
        .ok_or_else(|| init.error("name", "missing"))?;
    let mean = init.f64("mean", "init mean (must be 0)")?.unwrap_or(0.0);
    if mean != 0.0 {
        return Err(init.error("mean", format!("{mean}: only mean 0 is supported")));
    }
    let std = init.f64("std", "init std")?.unwrap_or(1.0);
    if !(std.is_finite() && std > 0.0) {
        return Err(init.error("std", format!("{std} is not a positive number")));
    }
    let truncation = match name {
        "normal" => None,
        "truncated_normal" => {
            let a = init.f64("a", "init lower bound")?.unwrap_or(-2.0 * std);
            let b = init.f64("b", "init upper bound")?.unwrap_or(2.0 * std);
            if !agree(-a, b) {
                return Err(init.error(
                    "a",
                    format!(
                        "bounds {a} and {b} are not symmetric about 0: only ±k·std is supported"
                    ),
                ));
            }
            Some(b / std)
        }
        other => {
            return Err(init.error(
                "name",
                format!("{other:?}: only normal and truncated_normal are supported"),
            ))
        }
    };
    Ok(Some((std, truncation)))
}

fn read_adamw(o: &Section<'_>, c: &mut Collected) -> Result<(), ConfigError> {
    if let Some(betas) = o.raw("betas") {
        let pair = match betas {
            Yaml::Array(items) if items.len() == 2 => items
                .iter()
                .map(|v| match v {
                    Yaml::Integer(i) => Some(*i as f64),
                    other => other.as_f64(),
                })
                .collect::<Option<Vec<f64>>>(),
            _ => None,
        };
        let pair = pair.ok_or_else(|| o.error("betas", "expected [beta1, beta2]"))?;
        o.read("betas", "--adam-beta1, --adam-beta2");
        c.betas = Some((pair[0], pair[1]));
    }
    c.adam_eps = o.f64("eps", "--adam-eps")?;
    c.weight_decay = o
        .f64("weight_decay", "--weight-decay")?
        .or(o.f64("weight_decay_rate", "--weight-decay")?);
    if o.bool("correct_bias", "Adam bias correction (always, here)")? == Some(false) {
        return Err(o.error(
            "correct_bias",
            "false: Adam without bias correction is not supported",
        ));
    }
    o.ignore("amsgrad", "");
    if let Some(Yaml::Boolean(true)) = o.raw("amsgrad") {
        return Err(o.error("amsgrad", "true: AMSGrad is not supported"));
    }
    Ok(())
}

fn read_lr_adjustment(o: &Section<'_>, c: &mut Collected) -> Result<(), ConfigError> {
    if let Some(adjust) = o.section("adjust_learning_rate")? {
        c.mup.decoder_kernel_lr = adjust.f64("decoder_kernel", "μP: hidden-matrix LR × 1/m")?;
        for key in adjust.keys() {
            if key != "decoder_kernel" {
                return Err(adjust.error(
                    key,
                    "only decoder_kernel (μP's 1/m for the hidden matrices) is supported",
                ));
            }
        }
    }
    Ok(())
}

fn read_optimizer_2_0(o: &Section<'_>, c: &mut Collected) -> Result<(), ConfigError> {
    if let Some(kind) = o.str("optimizer_type", "AdamW")? {
        if !kind.eq_ignore_ascii_case("adamw") {
            return Err(o.error(
                "optimizer_type",
                format!(
                    "{kind:?}: only AdamW is supported (the optimizer of GPT-3 and Cerebras-GPT)"
                ),
            ));
        }
    }
    read_adamw(o, c)?;
    c.grad_clip = o.f64("max_gradient_norm", "--grad-clip")?;
    if o.has("max_gradient_value") {
        return Err(o.error(
            "max_gradient_value",
            "clipping by value is not supported (we clip the global norm: max_gradient_norm)",
        ));
    }
    read_lr_adjustment(o, c)?;
    match o.raw("learning_rate") {
        None => {}
        Some(Yaml::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let phase = o.nested(format!("{}[{i}]", o.key("learning_rate")), item)?;
                let kind = phase
                    .str("scheduler", "schedule phase")?
                    .ok_or_else(|| phase.error("scheduler", "missing"))?;
                c.phases
                    .push(read_phase(&phase, kind, i + 1 == items.len())?);
            }
        }
        Some(Yaml::Hash(_)) => {
            let phase = o.section("learning_rate")?.expect("a mapping");
            let kind = phase
                .str("scheduler", "schedule phase")?
                .ok_or_else(|| phase.error("scheduler", "missing"))?;
            c.phases.push(read_phase(&phase, kind, true)?);
        }
        Some(_) => {
            let lr = o
                .f64("learning_rate", "constant learning rate")?
                .expect("present");
            c.phases.push(LrPhase {
                kind: PhaseKind::Constant,
                initial_lr: lr,
                end_lr: lr,
                steps: None,
            });
        }
    }
    o.ignore(
        "log_summaries",
        "we log the loss, LR and gradient norm every step",
    );
    o.ignore(
        "ws_summary",
        "TensorFlow-era summary logging (zero gradients, parameter norm): we log the gradient norm every step",
    );
    o.ignore("loss_scaling_factor", "no loss scaling in bf16");
    o.ignore("initial_loss_scale", "no loss scaling in bf16");
    o.ignore("steps_per_increase", "no loss scaling in bf16");
    o.ignore("min_loss_scale", "no loss scaling in bf16");
    o.ignore("max_loss_scale", "no loss scaling in bf16");
    Ok(())
}

/// One phase, under either generation's name for it (`Linear`/`LinearLR`, …).
fn read_phase(p: &Section<'_>, kind: &str, last: bool) -> Result<LrPhase, ConfigError> {
    let kind = match kind.trim_end_matches("LR").to_ascii_lowercase().as_str() {
        "linear" => PhaseKind::Linear,
        "cosinedecay" | "cosine" => PhaseKind::Cosine,
        "constant" => PhaseKind::Constant,
        _ => {
            return Err(p.error(
                "",
                format!("learning-rate scheduler {kind:?}: supported are Linear(LR), CosineDecay(LR), Constant(LR) and SequentialLR of them"),
            ))
        }
    };
    let steps = p
        .usize("total_iters", "phase length in steps")?
        .or(p.usize("steps", "phase length in steps")?)
        .or(p.usize("decay_steps", "phase length in steps")?);
    let (initial_lr, end_lr) = match kind {
        PhaseKind::Constant => {
            let lr = p
                .f64("learning_rate", "constant learning rate")?
                .ok_or_else(|| p.error("learning_rate", "missing"))?;
            (lr, lr)
        }
        _ => (
            p.f64("initial_learning_rate", "phase start LR")?
                .ok_or_else(|| p.error("initial_learning_rate", "missing"))?,
            p.f64("end_learning_rate", "phase end LR")?
                .ok_or_else(|| p.error("end_learning_rate", "missing"))?,
        ),
    };
    if steps.is_none() && !last {
        return Err(p.error(
            "total_iters",
            "missing: every phase but the last needs a length",
        ));
    }
    if steps.is_none() && kind != PhaseKind::Constant {
        return Err(p.error("total_iters", "missing"));
    }
    p.ignore("cycle", "");
    if let Some(Yaml::Boolean(true)) = p.raw("cycle") {
        return Err(p.error("cycle", "true: cycling schedules are not supported"));
    }
    Ok(LrPhase {
        kind,
        initial_lr,
        end_lr,
        steps,
    })
}

fn read_scheduler_2_10(
    parent: &Section<'_>,
    path: String,
    item: &Yaml,
    c: &mut Collected,
) -> Result<(), ConfigError> {
    let typed = parent.nested(path, item)?;
    let keys = typed.keys();
    let [name] = keys.as_slice() else {
        return Err(parent.error(
            "schedulers",
            "expected one scheduler per item (LinearLR: {...})",
        ));
    };
    let body = typed
        .section(name)?
        .ok_or_else(|| typed.error(name, "empty"))?;
    if *name == "SequentialLR" {
        let Some(Yaml::Array(items)) = body.raw("schedulers") else {
            return Err(body.error("schedulers", "expected a list of schedulers"));
        };
        for (i, inner) in items.iter().enumerate() {
            let wrapper = body.nested(format!("{}[{i}]", body.key("schedulers")), inner)?;
            let inner_keys = wrapper.keys();
            let [inner_name] = inner_keys.as_slice() else {
                return Err(wrapper.error("", "expected one scheduler (LinearLR: {...})"));
            };
            let phase = wrapper
                .section(inner_name)?
                .ok_or_else(|| wrapper.error(inner_name, "empty"))?;
            c.phases
                .push(read_phase(&phase, inner_name, i + 1 == items.len())?);
        }
        if let Some(Yaml::Array(milestones)) = body.raw("milestones") {
            let expected = PhaseSchedule(c.phases.clone()).boundaries();
            let given: Vec<i64> = milestones.iter().filter_map(Yaml::as_i64).collect();
            let expected: Vec<i64> = expected.iter().skip(1).map(|&b| b as i64).collect();
            if given != expected {
                return Err(body.error(
                    "milestones",
                    format!("{given:?} differ from the phases' lengths ({expected:?})"),
                ));
            }
            body.read("milestones", "checked against the phases' lengths");
        }
    } else {
        c.phases.push(read_phase(&body, name, true)?);
    }
    Ok(())
}

fn data_dirs(
    s: &Section<'_>,
    key: &str,
    options: &LoadOptions,
) -> Result<Vec<PathBuf>, ConfigError> {
    let dirs: Vec<&str> = match s.raw(key) {
        None => return Ok(Vec::new()),
        Some(Yaml::String(dir)) => vec![dir.as_str()],
        Some(Yaml::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| s.error(key, "expected paths")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(s.error(key, "expected a path or a list of paths")),
    };
    Ok(dirs
        .into_iter()
        .map(|d| {
            let path = PathBuf::from(d);
            match (&options.data_root, path.is_absolute()) {
                (Some(root), false) => root.join(path),
                _ => path,
            }
        })
        .collect())
}

fn read_data_processor(s: &Section<'_>) -> Result<(), ConfigError> {
    if let Some(kind) = s.str("data_processor", "our HDF5 shard reader (the same layout)")? {
        if !matches!(
            kind,
            "GptHDF5DataProcessor" | "GptHDF5MapDataProcessor" | "GptHDF5IterableDataProcessor"
        ) {
            return Err(s.error(
                "data_processor",
                format!("{kind:?}: only the GPT HDF5 data processors are supported (their shards are ours)"),
            ));
        }
    }
    for key in [
        "num_workers",
        "prefetch_factor",
        "persistent_workers",
        "use_worker_cache",
        "shuffle_buffer",
        "drop_last",
        "pin_memory",
    ] {
        s.ignore(
            key,
            "host data-loader tuning (our loader reads ahead on its own)",
        );
    }
    s.ignore("mixed_precision", "see precision");
    s.ignore("vocab_size", "the model's vocab_size");
    Ok(())
}

fn read_train_input(
    s: &Section<'_>,
    c: &mut Collected,
    options: &LoadOptions,
) -> Result<(), ConfigError> {
    read_data_processor(s)?;
    c.shards = data_dirs(s, "data_dir", options)?;
    s.read("data_dir", "--shards (a list is one set, read together)");
    c.batch_size = s.usize(
        "batch_size",
        "--batch-size (global rows per step, never shrunk)",
    )?;
    match s.raw("micro_batch_size") {
        Some(Yaml::Integer(_)) => c.micro_batch = s.usize("micro_batch_size", "--micro-batch")?,
        Some(_) => s.ignore("micro_batch_size", "not a number: our micro-batch default"),
        None => {}
    }
    c.max_seq_len = s.usize(
        "max_sequence_length",
        "checked: ≤ n_ctx; rows come from the shards",
    )?;
    c.shuffle = s.bool("shuffle", "--shuffle")?;
    if let Some(seed) = s.usize("shuffle_seed", "--seed (also seeds init and dropout)")? {
        c.seed.get_or_insert(seed as u64);
    }
    Ok(())
}

fn read_eval_input(
    s: &Section<'_>,
    c: &mut Collected,
    options: &LoadOptions,
) -> Result<(), ConfigError> {
    read_data_processor(s)?;
    c.val_shards = data_dirs(s, "data_dir", options)?;
    s.read("data_dir", "--val-shards");
    c.eval_batch_size = s.usize(
        "batch_size",
        "--eval-batches (eval rows = eval_steps × batch_size)",
    )?;
    s.ignore("shuffle", "evaluation reads its rows in order");
    s.ignore("shuffle_seed", "evaluation reads its rows in order");
    s.ignore("micro_batch_size", "evaluation uses --micro-batch");
    s.ignore("max_sequence_length", "the shards' seq_len");
    Ok(())
}

/// The μP settings, from whichever spelling the file has.
fn resolve_mup(
    doc: &Document,
    generation: Generation,
    c: &Collected,
    n_embd: usize,
    ffn: usize,
    n_layer: usize,
) -> Result<Option<(MupConfig, f64)>, ConfigError> {
    let k = c.mup;
    let on =
        k.base_hidden.is_some() || k.output_logits_scale.is_some() || k.decoder_kernel_lr.is_some();
    if !on {
        if let Some(scale) = k.embeddings_scale.filter(|s| *s != 1.0) {
            return Err(doc.error(
                &generation.model_key("embeddings_scale"),
                format!("{scale} without μP (mup_base_hidden_size, or 2.0.3's output_logits_scale): not supported"),
            ));
        }
        return Ok(None);
    }
    // The width multiplier m.
    let m = match (k.base_hidden, k.decoder_kernel_lr, k.output_logits_scale) {
        (Some(base), _, _) => n_embd as f64 / base,
        (None, Some(lr), _) => 1.0 / lr,
        (None, None, Some(scale)) => 1.0 / scale,
        (None, None, None) => unreachable!("μP is on"),
    };
    let base_width = n_embd as f64 / m;
    if (base_width - base_width.round()).abs() > 1e-6 || base_width < 0.5 {
        return Err(doc.error(
            &generation.model_key("hidden_size"),
            format!("μP width multiplier {m} gives a base width {base_width} that is not a whole number"),
        ));
    }
    let base_width = base_width.round() as usize;
    check_mup_multipliers(doc, generation, &k, m, ffn)?;
    let embed_mult = k.embeddings_scale.unwrap_or(1.0);
    let sigma = mup_base_std(doc, generation, &c.init, m, n_layer)?;
    Ok(Some((
        MupConfig {
            base_width,
            embed_mult,
            init_std: sigma,
        },
        m,
    )))
}

/// Checks that the file's μP multipliers are ours for the width multiplier `m`: hidden LR
/// and logits × 1/m, logits alpha 1, one multiplier for the filter too, attention × 1/d_head.
fn check_mup_multipliers(
    doc: &Document,
    generation: Generation,
    k: &MupKeys,
    m: f64,
    ffn: usize,
) -> Result<(), ConfigError> {
    if let Some(lr) = k.decoder_kernel_lr {
        if !agree(lr, 1.0 / m) {
            return Err(doc.error(
                "optimizer.adjust_learning_rate.decoder_kernel",
                format!(
                    "{lr}: our μP scales the hidden matrices' LR by 1/m = {}",
                    1.0 / m
                ),
            ));
        }
    }
    if let Some(scale) = k.output_logits_scale {
        if !agree(scale, 1.0 / m) {
            return Err(doc.error(
                &generation.model_key("output_logits_scale"),
                format!("{scale}: our μP multiplies the logits by 1/m = {}", 1.0 / m),
            ));
        }
    }
    if let Some(alpha) = k.output_logits_alpha {
        if alpha != 1.0 {
            return Err(doc.error(
                &generation.model_key("output_logits_alpha"),
                format!("{alpha}: only 1 is supported (logits × 1/m)"),
            ));
        }
    }
    if let Some(base_filter) = k.base_filter {
        if !agree(ffn as f64 / base_filter, m) {
            return Err(doc.error(
                &generation.model_key("mup_base_filter_size"),
                format!(
                    "{base_filter}: filter_size / mup_base_filter_size = {} differs from hidden_size / mup_base_hidden_size = {m}; our μP uses one width multiplier",
                    ffn as f64 / base_filter
                ),
            ));
        }
    }
    if k.scale_qk_dot_by_d != Some(true) {
        return Err(doc.error(
            &generation.model_key("scale_qk_dot_by_d"),
            "μP needs scale_qk_dot_by_d: true (attention scores × 1/d_head)",
        ));
    }
    Ok(())
}

/// σ_base from the initializers (2.0.3: already scaled), checking the hidden and output
/// initializers' stds are the ones our μP derives from it.
fn mup_base_std(
    doc: &Document,
    generation: Generation,
    init: &Initializers,
    m: f64,
    n_layer: usize,
) -> Result<f64, ConfigError> {
    let (sigma, _) = init.embedding.or(init.hidden).ok_or_else(|| {
        doc.error(
            &generation.model_key("embedding_initializer"),
            "μP needs the initializers' std (σ_base)",
        )
    })?;
    let (hidden_scale, output_scale) = match generation {
        Generation::Release2_0 => (1.0 / m.sqrt(), 1.0 / (2.0 * m * n_layer as f64).sqrt()),
        // 2.3 and later scale the initializers themselves.
        Generation::Release2_10 => (1.0, 1.0),
    };
    for (key, init, scale, rule) in [
        ("initializer", init.hidden, hidden_scale, "σ_base/√m"),
        (
            "output_layer_initializer",
            init.output,
            output_scale,
            "σ_base/√(2·m·L)",
        ),
    ] {
        if let Some((std, _)) = init {
            if !agree(std, sigma * scale) {
                return Err(doc.error(
                    &generation.model_key(key),
                    format!(
                        "std {std}: our μP uses {rule} = {} for it (σ_base {sigma} from embedding_initializer)",
                        sigma * scale
                    ),
                ));
            }
        }
    }
    Ok(sigma)
}

/// Turns what the walk collected into a [`Mapped`]: the model, its schedule, our options and
/// the notes, after the checks that need several keys at once.
fn finish(doc: &Document, generation: Generation, mut c: Collected) -> Result<Mapped, ConfigError> {
    let need = |v: Option<usize>, key: &str| {
        v.ok_or_else(|| doc.error(&generation.model_key(key), "missing"))
    };
    let n_embd = need(c.n_embd, "hidden_size")?;
    let n_layer = need(c.n_layer, "num_hidden_layers")?;
    let n_head = need(c.n_head, "num_heads")?;
    let n_ctx = need(c.n_ctx, "max_position_embeddings")?;
    let vocab = need(c.vocab, "vocab_size")?;
    let ffn = c.ffn.unwrap_or(4 * n_embd);
    if let Some(msl) = c.max_seq_len {
        if msl > n_ctx {
            return Err(doc.error(
                "max_sequence_length",
                format!("{msl} is longer than max_position_embeddings {n_ctx}"),
            ));
        }
    }
    let mup = resolve_mup(doc, generation, &c, n_embd, ffn, n_layer)?;
    let truncation = one_truncation(doc, generation, &c.init)?;
    let sp_std = match mup {
        Some(_) => None,
        None => standard_init_std(&c.init, n_layer),
    };
    let init = (sp_std.is_some() || truncation.is_some()).then_some(InitConfig {
        std: sp_std,
        truncation,
    });
    let model = GptConfig {
        vocab_size: vocab,
        pad_vocab: true,
        n_ctx,
        n_layer,
        n_head,
        n_embd,
        bias: true,
        dropout: c.dropout.unwrap_or(0.0),
        mup: mup.map(|(m, _)| m),
        ffn_size: (ffn != 4 * n_embd).then_some(ffn),
        layer_norm_eps: c.eps.unwrap_or(DEFAULT_LAYER_NORM_EPS),
        init,
    };
    model
        .validate()
        .map_err(|e| doc.error(&generation.model_key("hidden_size"), format!("model: {e}")))?;
    let schedule = PhaseSchedule(std::mem::take(&mut c.phases));
    if !schedule.0.is_empty() {
        schedule.validate().map_err(|e| {
            doc.error(
                match generation {
                    Generation::Release2_0 => "optimizer.learning_rate",
                    Generation::Release2_10 => "trainer.init.schedulers",
                },
                e,
            )
        })?;
    }
    check_loss_weight(doc, &mut c, n_ctx)?;
    let preset = nearest_preset(&model);
    let micro_batch = micro_batch(doc, &c, preset)?;
    // The options, spelled as in our TOML.
    let mut t = toml::Table::new();
    model_options(&mut t, &c, &model, ffn, preset);
    training_options(&mut t, &mut c, &schedule, micro_batch);
    if c.eval_every.is_none() && c.save_every.is_some() && generation == Generation::Release2_0 {
        c.notes.push(
            "runconfig has no eval_frequency: we evaluate at every checkpoint (checkpoint_steps), as their train_and_eval mode does".into(),
        );
    }
    Ok(Mapped {
        file: doc.file().to_path_buf(),
        generation,
        model,
        schedule,
        options: t,
        entries: doc.entries(),
        notes: c.notes,
        preset,
    })
}

/// The one truncation (in stds) every initializer shares; initializers that truncate at
/// different bounds are an error.
fn one_truncation(
    doc: &Document,
    generation: Generation,
    init: &Initializers,
) -> Result<Option<f64>, ConfigError> {
    let truncations: Vec<Option<f64>> = [init.embedding, init.hidden, init.output]
        .iter()
        .flatten()
        .map(|(_, t)| *t)
        .collect();
    let truncation = truncations.first().copied().flatten();
    if truncations.iter().any(|t| match (t, truncation) {
        (Some(a), Some(b)) => !agree(*a, b),
        (None, None) => false,
        _ => true,
    }) {
        return Err(doc.error(
            &generation.model_key("initializer"),
            format!("the initializers truncate at different multiples of their std ({truncations:?}); only one bound, ±k·std, is supported"),
        ));
    }
    Ok(truncation)
}

/// The standard parameterization's stds when any initializer gives one (hidden 0.02 by
/// default, the embedding as the hidden, the residual projections hidden/√(2L)).
fn standard_init_std(init: &Initializers, n_layer: usize) -> Option<SpInitStd> {
    match (init.embedding, init.hidden, init.output) {
        (None, None, None) => None,
        (e, h, o) => {
            let hidden = h.map_or(0.02, |(s, _)| s);
            Some(SpInitStd {
                embedding: e.map_or(hidden, |(s, _)| s),
                hidden,
                residual: o.map_or(hidden / (2.0 * n_layer as f64).sqrt(), |(s, _)| s),
            })
        }
    }
}

/// Loss normalization: theirs sums the token losses × loss_weight / batch_size; only the
/// weight that makes it our mean is accepted (with a note saying why they agree).
fn check_loss_weight(doc: &Document, c: &mut Collected, n_ctx: usize) -> Result<(), ConfigError> {
    let msl = c.max_seq_len.unwrap_or(n_ctx);
    if let Some((weight, key)) = &c.loss_weight {
        if !agree(*weight, 1.0 / msl as f64) {
            return Err(doc.error(
                key,
                format!(
                    "{weight} with loss_scaling batch_size: only 1/max_sequence_length = {} (the mean over tokens) is supported",
                    1.0 / msl as f64
                ),
            ));
        }
        c.notes.push(format!(
            "loss_scaling batch_size with loss_weight 1/{msl}: their loss is the sum of the token losses / (batch_size × {msl}); ours is the mean over the positions that are targets. Our shards' rows are packed, every position a target, so the two are the same loss and the same gradient scale."
        ));
    }
    Ok(())
}

/// The preset of the model's shape, else the one nearest in non-embedding parameters.
fn nearest_preset(model: &GptConfig) -> &'static Preset {
    let (n_layer, n_head, n_embd, n_ctx) = (model.n_layer, model.n_head, model.n_embd, model.n_ctx);
    PRESETS
        .iter()
        .find(|p| p.n_layer == n_layer && p.n_head == n_head && p.n_embd == n_embd)
        .unwrap_or_else(|| {
            let n = model.breakdown_unpadded().non_embedding() as f64;
            PRESETS
                .iter()
                .min_by(|a, b| {
                    let gap = |p: &Preset| {
                        (p.config(Some(n_ctx)).breakdown().non_embedding() as f64 / n)
                            .ln()
                            .abs()
                    };
                    gap(a).total_cmp(&gap(b))
                })
                .expect("presets exist")
        })
}

/// The micro-batch: the file's, else the largest divisor of the batch up to the preset's;
/// one that does not divide the batch is an error.
fn micro_batch(
    doc: &Document,
    c: &Collected,
    preset: &Preset,
) -> Result<Option<usize>, ConfigError> {
    let micro_batch = match (c.micro_batch, c.batch_size) {
        (Some(micro), _) => Some(micro),
        // The largest divisor of the batch up to the preset's micro-batch.
        (None, Some(batch)) => (1..=preset.micro_batch.min(batch))
            .rev()
            .find(|m| batch % m == 0),
        (None, None) => None,
    };
    if let (Some(micro), Some(batch)) = (micro_batch, c.batch_size) {
        if batch % micro != 0 {
            return Err(doc.error(
                "micro_batch_size",
                format!("{micro} does not divide batch_size {batch}"),
            ));
        }
    }
    Ok(micro_batch)
}

/// A count as a TOML integer.
fn toml_int(v: usize) -> toml::Value {
    toml::Value::Integer(v as i64)
}

/// Folders as a TOML array of strings.
fn toml_paths(dirs: &[PathBuf]) -> toml::Value {
    toml::Value::Array(
        dirs.iter()
            .map(|d| toml::Value::String(d.display().to_string()))
            .collect(),
    )
}

/// Our options for the data folders and the model: preset, shape, initialization and μP.
fn model_options(
    t: &mut toml::Table,
    c: &Collected,
    model: &GptConfig,
    ffn: usize,
    preset: &Preset,
) {
    let mut set = |key: &str, value: toml::Value| {
        t.insert(key.into(), value);
    };
    if !c.shards.is_empty() {
        set("shards", toml_paths(&c.shards));
    }
    if !c.val_shards.is_empty() {
        set("val_shards", toml_paths(&c.val_shards));
    }
    set("model", toml::Value::String(preset.name.into()));
    set("n_layer", toml_int(model.n_layer));
    set("n_head", toml_int(model.n_head));
    set("n_embd", toml_int(model.n_embd));
    set("n_ctx", toml_int(model.n_ctx));
    set("vocab_size", toml_int(model.vocab_size));
    set("ffn_size", toml_int(ffn));
    set("dropout", toml::Value::Float(model.dropout));
    set("bias", toml::Value::Boolean(true));
    set("layer_norm_eps", toml::Value::Float(model.layer_norm_eps));
    let init = model.init.as_ref();
    if let Some(std) = init.and_then(|i| i.std) {
        set("init_embedding_std", toml::Value::Float(std.embedding));
        set("init_std", toml::Value::Float(std.hidden));
        set("init_residual_std", toml::Value::Float(std.residual));
    }
    if let Some(k) = init.and_then(|i| i.truncation) {
        set("init_truncation", toml::Value::Float(k));
    }
    set("mup", toml::Value::Boolean(model.mup.is_some()));
    if let Some(m) = model.mup {
        set("mup_base_width", toml_int(m.base_width));
        set("mup_embed_mult", toml::Value::Float(m.embed_mult));
        set("mup_init_std", toml::Value::Float(m.init_std));
    }
}

/// Our options for the optimizer, schedule, batches, steps, evaluation and precision; a note
/// on how the evaluation's rows are read.
fn training_options(
    t: &mut toml::Table,
    c: &mut Collected,
    schedule: &PhaseSchedule,
    micro_batch: Option<usize>,
) {
    let mut set = |key: &str, value: toml::Value| {
        t.insert(key.into(), value);
    };
    if let Some((b1, b2)) = c.betas {
        set("adam_beta1", toml::Value::Float(b1));
        set("adam_beta2", toml::Value::Float(b2));
    }
    if let Some(v) = c.adam_eps {
        set("adam_eps", toml::Value::Float(v));
    }
    if let Some(v) = c.weight_decay {
        set("weight_decay", toml::Value::Float(v));
    }
    if let Some(v) = c.grad_clip {
        set("grad_clip", toml::Value::Float(v));
    }
    if !schedule.0.is_empty() {
        set("lr", toml::Value::Float(schedule.peak()));
        set(
            "lr_schedule",
            toml::Value::try_from(schedule).expect("a schedule serializes"),
        );
    }
    if let Some(v) = c.batch_size {
        set("batch_size", toml_int(v));
    }
    if let Some(v) = micro_batch {
        set("micro_batch", toml_int(v));
    }
    if let Some(v) = c.shuffle {
        set("shuffle", toml::Value::Boolean(v));
    }
    if let Some(v) = c.seed {
        set("seed", toml::Value::Integer(v as i64));
    }
    if let Some(v) = c.max_steps {
        set("max_steps", toml_int(v));
    }
    if let Some(v) = c.save_every {
        set("save_every", toml_int(v));
    }
    // 2.0.3 evaluates at each checkpoint (train_and_eval); 2.10 every eval_frequency steps.
    if let Some(v) = c.eval_every.or(c.save_every) {
        set("eval_every", toml_int(v));
    }
    if let (Some(steps), Some(micro)) = (c.eval_steps, micro_batch) {
        let rows = steps * c.eval_batch_size.or(c.batch_size).unwrap_or(micro);
        set("eval_batches", toml_int(rows.div_ceil(micro).max(1)));
        c.notes.push(format!(
            "evaluation: eval_steps {steps} × batch_size {} = {rows} rows, read as {} micro-batches of {micro}",
            rows / steps.max(1),
            rows.div_ceil(micro).max(1)
        ));
    }
    if let Some(bf16) = c.bf16 {
        set(
            "dtype",
            toml::Value::String(if bf16 { "bf16" } else { "fp32" }.into()),
        );
    }
}
