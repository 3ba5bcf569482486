//! An IsoFLOP sweep (Chinchilla's Approach 2) planned: for each compute budget, model sizes
//! spaced evenly in log N around the compute-optimal one, each trained on the tokens that
//! spend the budget; one `train` config per run and a script that runs them in order.
//!
//! Conventions: N is the non-embedding parameter count (Kaplan's); C is what a run costs,
//! `GptConfig::flops_per_token` (6N' + 12·L·H·Q·T, N' all parameters less the position
//! embedding) × D. The runs are made comparable: μP (one learning rate for every width, the
//! base width the sweep's narrowest), one global batch, a learning-rate schedule that decays
//! over each run's own length, the same seed, and the whole validation set evaluated after the
//! last step (`final_eval`).

use crate::config::{GptConfig, MUP_BASE_LR};
use h5gpt_formats::fsio::write_atomic;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The file in a sweep folder that lists its runs.
pub const SWEEP_FILE: &str = "sweep.json";

/// The script that runs a sweep's runs in order.
pub const SCRIPT_FILE: &str = "run_all.sh";

/// Version of the `sweep.json` this build writes.
pub const SWEEP_VERSION: u32 = 1;

/// Chinchilla's tokens per parameter: where each budget's grid is centred by default.
pub const CENTRE_RATIO: f64 = 20.0;

/// What a sweep is planned from.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepSpec {
    /// Compute budgets C in FLOPs.
    pub budgets: Vec<f64>,
    /// Runs per budget.
    pub models_per_budget: usize,
    /// The largest N of a budget over its smallest.
    pub spread: f64,
    /// Tokens per parameter (D/N) of each budget's centre model (Chinchilla: 20).
    pub centre_ratio: f64,
    /// Tokens per row of the shards.
    pub seq_len: usize,
    /// The shards' vocabulary.
    pub vocab_size: usize,
    /// Rows per optimizer step (one global batch for every run).
    pub batch_rows: usize,
    /// Training tokens the shards hold.
    pub corpus_tokens: u64,
    /// Epochs of the training data a run may read.
    pub max_epochs: f64,
}

/// Why a sweep cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SweepError {
    /// A run would read the data more often than allowed.
    #[error(
        "the sweep would repeat data: its longest run ({name}) trains on {tokens:.3e} tokens, \
         {epochs:.2} epochs of the {corpus} training tokens, more than --max-epochs {max_epochs}\n\
         ---> HINT: the sweep needs {needed:.3e} training tokens at --max-epochs {max_epochs}: \
         preprocess more data, lower the largest --flops, or allow more epochs (--max-epochs)"
    )]
    RepeatsData {
        /// The run.
        name: String,
        /// Its tokens.
        tokens: f64,
        /// Epochs that is.
        epochs: f64,
        /// Training tokens of the shards.
        corpus: u64,
        /// The allowed epochs.
        max_epochs: f64,
        /// Training tokens the sweep needs.
        needed: f64,
    },
    /// A budget is too small for even one optimizer step of the smallest shape.
    #[error(
        "--flops {budget:.3e}: the run {name} would train for {tokens:.0} tokens, less than one \
         step of {step_tokens} tokens\n---> HINT: raise the budget or lower --batch-tokens"
    )]
    TooSmall {
        /// The budget.
        budget: f64,
        /// The run.
        name: String,
        /// Its tokens.
        tokens: f64,
        /// Tokens per step.
        step_tokens: usize,
    },
    /// Bad numbers.
    #[error("{0}")]
    Invalid(String),
}

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRun {
    /// Its name (the config's file stem and the run folder's name).
    pub name: String,
    /// The budget it belongs to.
    pub budget: f64,
    /// Its shape.
    pub model: GptConfig,
    /// N: non-embedding parameters.
    pub params: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// D: training tokens (steps × the global batch).
    pub tokens: f64,
    /// C: FLOPs per token × D (what the run costs, close to the budget).
    pub flops: f64,
    /// 6·N·D with N the non-embedding count, for comparison.
    pub flops_6nd: f64,
    /// Its `train --config` file.
    pub config: PathBuf,
    /// Its run folder (the config's `out`).
    pub out: PathBuf,
}

/// A sweep: its settings and its runs (`sweep.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepManifest {
    /// [`SWEEP_VERSION`] of the writer.
    pub version: u32,
    /// Compute budgets.
    pub budgets: Vec<f64>,
    /// The shard directory.
    pub shards: PathBuf,
    /// Tokens per row.
    pub seq_len: usize,
    /// Rows per optimizer step.
    pub batch_rows: usize,
    /// Rows per forward/backward pass.
    pub micro_batch: usize,
    /// μP base learning rate.
    pub lr: f64,
    /// μP base width (the sweep's narrowest model).
    pub mup_base_width: usize,
    /// Seed of every run.
    pub seed: u64,
    /// The runs, by budget, smallest model first.
    pub runs: Vec<SweepRun>,
}

impl SweepManifest {
    /// Reads `dir/sweep.json`.
    pub fn read(dir: &Path) -> Result<SweepManifest, String> {
        let path = dir.join(SWEEP_FILE);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The width of each candidate shape: multiples of 8 to 64, of 16 to 128, of 32 to 512, of 64
/// to 1024, of 128 to 4096.
fn widths() -> impl Iterator<Item = usize> {
    (2..=8)
        .map(|k| 8 * k)
        .chain((5..=8).map(|k| 16 * k))
        .chain((5..=16).map(|k| 32 * k))
        .chain((9..=16).map(|k| 64 * k))
        .chain((9..=32).map(|k| 128 * k))
}

/// Head size of a width: 64 from 256 (where it divides), else the largest of 32, 16 and 8
/// that divides it.
fn head_size(d: usize) -> usize {
    if d >= 256 && d % 64 == 0 {
        64
    } else {
        [32, 16, 8].into_iter().find(|h| d % h == 0).unwrap_or(d)
    }
}

/// Every candidate shape: widths in multiples of 8 to 64, of 16 to 128, of 32 to 512, of 64 to
/// 1024 and of 128 to 4096; depths with d_model/n_layer between 16 and 128 (and 1 or 2 layers
/// for the narrowest); heads of 64 from width 256 where 64 divides it, else of 32, 16 or 8.
pub fn candidates(seq_len: usize, vocab_size: usize) -> Vec<GptConfig> {
    let mut out = Vec::new();
    for d in widths() {
        let (lo, hi) = ((d / 128).max(1), (d / 16).max(2));
        for n_layer in lo..=hi {
            out.push(GptConfig {
                vocab_size,
                pad_vocab: true,
                n_ctx: seq_len,
                n_layer,
                n_head: d / head_size(d),
                n_embd: d,
                bias: true,
                dropout: 0.0,
                mup: None,
                ..GptConfig::tiny(vocab_size, seq_len)
            });
        }
    }
    out
}

/// Non-embedding parameters of `cfg` (N).
pub fn non_embedding(cfg: &GptConfig) -> usize {
    cfg.breakdown().non_embedding()
}

/// The candidate closest to `target` non-embedding parameters in log space; among shapes
/// within 2 % of it, the one with d_model/n_layer closest to 64 (GPT-2 small's).
pub fn shape_for(target: f64, candidates: &[GptConfig]) -> GptConfig {
    let gap = |c: &GptConfig| ((non_embedding(c) as f64).ln() - target.ln()).abs();
    let best = candidates.iter().map(gap).fold(f64::INFINITY, f64::min);
    let aspect = |c: &GptConfig| ((c.n_embd as f64 / c.n_layer as f64).ln() - 64f64.ln()).abs();
    *candidates
        .iter()
        .filter(|c| gap(c) <= best + 0.02)
        .min_by(|a, b| aspect(a).total_cmp(&aspect(b)))
        .expect("candidates exist")
}

/// A budget as a short label: `1e15`, `2.5e16`.
pub fn budget_label(c: f64) -> String {
    let text = format!("{c:.2e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
    format!("{mantissa}e{exponent}")
}

/// The runs of a sweep (without config paths, which [`write()`] fills in). For each budget C:
/// the candidate whose tokens D = C / FLOPs-per-token are closest to `centre_ratio` × N is
/// the centre; `models_per_budget` sizes from centre/√spread to centre·√spread, evenly in log
/// N, each the nearest candidate (a size that lands on a shape already taken is dropped);
/// steps = D / tokens per step, rounded.
pub fn design(spec: &SweepSpec) -> Result<Vec<SweepRun>, SweepError> {
    if spec.budgets.is_empty() {
        return Err(SweepError::Invalid(
            "--flops: give at least one budget".into(),
        ));
    }
    if spec.models_per_budget < 3 {
        return Err(SweepError::Invalid(format!(
            "--models-per-budget {}: a parabola needs at least 3 runs per budget",
            spec.models_per_budget
        )));
    }
    if !(spec.centre_ratio.is_finite() && spec.centre_ratio > 0.0) {
        return Err(SweepError::Invalid(format!(
            "--ratio {}: the tokens per parameter must be positive",
            spec.centre_ratio
        )));
    }
    if !(spec.spread.is_finite() && spec.spread > 1.0) {
        return Err(SweepError::Invalid(format!(
            "--spread {}: the largest model over the smallest must be above 1",
            spec.spread
        )));
    }
    let candidates = candidates(spec.seq_len, spec.vocab_size);
    let step_tokens = spec.batch_rows * spec.seq_len;
    let tokens_for = |c: f64, cfg: &GptConfig| c / cfg.flops_per_token(spec.seq_len);
    let mut budgets = spec.budgets.clone();
    budgets.sort_by(f64::total_cmp);
    budgets.dedup();
    let mut runs = Vec::new();
    for &c in &budgets {
        let centre = candidates
            .iter()
            .min_by(|a, b| {
                let off = |cfg: &GptConfig| {
                    ((tokens_for(c, cfg) / non_embedding(cfg) as f64).ln() - spec.centre_ratio.ln())
                        .abs()
                };
                off(a).total_cmp(&off(b))
            })
            .expect("candidates exist");
        let n0 = non_embedding(centre) as f64;
        let k = spec.models_per_budget;
        let mut shapes: Vec<GptConfig> = Vec::new();
        for i in 0..k {
            let t = i as f64 / (k - 1) as f64 - 0.5;
            let shape = shape_for(n0 * spec.spread.powf(t), &candidates);
            if !shapes.contains(&shape) {
                shapes.push(shape);
            }
        }
        for model in shapes {
            let name = format!("c{}-L{}-d{}", budget_label(c), model.n_layer, model.n_embd);
            let tokens = tokens_for(c, &model);
            let steps = (tokens / step_tokens as f64).round() as usize;
            if steps == 0 {
                return Err(SweepError::TooSmall {
                    budget: c,
                    name,
                    tokens,
                    step_tokens,
                });
            }
            let d = (steps * step_tokens) as f64;
            let n = non_embedding(&model);
            runs.push(SweepRun {
                name,
                budget: c,
                model,
                params: n,
                steps,
                tokens: d,
                flops: model.flops_per_token(spec.seq_len) * d,
                flops_6nd: 6.0 * n as f64 * d,
                config: PathBuf::new(),
                out: PathBuf::new(),
            });
        }
    }
    let longest = runs
        .iter()
        .max_by(|a, b| a.tokens.total_cmp(&b.tokens))
        .expect("runs exist");
    let allowed = spec.max_epochs * spec.corpus_tokens as f64;
    if longest.tokens > allowed {
        return Err(SweepError::RepeatsData {
            name: longest.name.clone(),
            tokens: longest.tokens,
            epochs: longest.tokens / spec.corpus_tokens.max(1) as f64,
            corpus: spec.corpus_tokens,
            max_epochs: spec.max_epochs,
            needed: longest.tokens / spec.max_epochs,
        });
    }
    Ok(runs)
}

/// How every run of a sweep trains, beside its shape and length.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// The shard directory (absolute).
    pub shards: PathBuf,
    /// Rows per forward/backward pass.
    pub micro_batch: usize,
    /// Rows per optimizer step.
    pub batch_rows: usize,
    /// μP base learning rate.
    pub lr: f64,
    /// Seed.
    pub seed: u64,
    /// μP base width; `None`: the sweep's narrowest model.
    pub mup_base_width: Option<usize>,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            shards: PathBuf::new(),
            micro_batch: 8,
            batch_rows: 32,
            lr: MUP_BASE_LR,
            seed: 1337,
            mup_base_width: None,
        }
    }
}

/// One run's `train --config` file: the keys of `train`'s options.
#[derive(Debug, Serialize)]
struct TrainToml<'a> {
    shards: Vec<&'a Path>,
    out: &'a Path,
    model: &'static str,
    n_layer: usize,
    n_head: usize,
    n_embd: usize,
    n_ctx: usize,
    dropout: f64,
    bias: bool,
    mup: bool,
    mup_base_width: usize,
    lr: f64,
    min_lr_ratio: f64,
    warmup_steps: usize,
    micro_batch: usize,
    total_batch_tokens: usize,
    max_steps: usize,
    seed: u64,
    eval_every: usize,
    final_eval: bool,
    save_every: usize,
    keep_checkpoints: usize,
}

/// Warm-up steps of a run of `steps` steps: 5 % of it, at least 1.
pub fn warmup_steps(steps: usize) -> usize {
    (steps / 20).max(1)
}

/// Single-quotes `text` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Writes the sweep into folder `out` (absolute): `configs/NAME.toml` per run (runs go to
/// `runs/NAME/`), [`SCRIPT_FILE`] and [`SWEEP_FILE`], each crash-safely. Returns the manifest.
pub fn write(
    out: &Path,
    spec: &SweepSpec,
    settings: &RunSettings,
    mut runs: Vec<SweepRun>,
    command: &str,
) -> Result<SweepManifest, String> {
    let io = |path: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let configs = out.join("configs");
    std::fs::create_dir_all(&configs).map_err(|e| io(&configs, &e))?;
    let base_width = settings
        .mup_base_width
        .unwrap_or_else(|| runs.iter().map(|r| r.model.n_embd).min().unwrap_or(256));
    let mut script = format!(
        "#!/bin/sh\n# Trains the {} runs of this sweep in order (written by: {command}).\n\
         # Rerunning it continues: a finished run resumes at its last step and stops.\n\
         # Then: h5gpt plan fit {}\nset -e\nTRAIN=\"${{TRAIN:-train}}\"\n",
        runs.len(),
        shell_quote(&out.display().to_string())
    );
    for run in &mut runs {
        run.config = configs.join(format!("{}.toml", run.name));
        run.out = out.join("runs").join(&run.name);
        let toml = TrainToml {
            shards: vec![&settings.shards],
            out: &run.out,
            model: "gpt2-small",
            n_layer: run.model.n_layer,
            n_head: run.model.n_head,
            n_embd: run.model.n_embd,
            n_ctx: run.model.n_ctx,
            dropout: 0.0,
            bias: true,
            mup: true,
            mup_base_width: base_width,
            lr: settings.lr,
            min_lr_ratio: 0.1,
            warmup_steps: warmup_steps(run.steps),
            micro_batch: settings.micro_batch,
            total_batch_tokens: settings.batch_rows * spec.seq_len,
            max_steps: run.steps,
            seed: settings.seed,
            eval_every: 0,
            final_eval: true,
            save_every: run.steps,
            keep_checkpoints: 1,
        };
        let mut text = format!(
            "# plan sweep: budget {:.3e} FLOPs; N = {} non-embedding parameters; D = {:.4e} tokens \
             ({} steps); C = {:.4e} FLOPs (6ND = {:.4e}).\n# The shape is set below; `model` \
             only names the preset the flags override.\n",
            run.budget, run.params, run.tokens, run.steps, run.flops, run.flops_6nd
        );
        text += &toml::to_string(&toml).map_err(|e| io(&run.config, &e))?;
        write_atomic(&run.config, text.as_bytes()).map_err(|e| io(&run.config, &e))?;
        let _ = writeln!(
            script,
            "\"$TRAIN\" --config {}",
            shell_quote(&run.config.display().to_string())
        );
    }
    let script_path = out.join(SCRIPT_FILE);
    write_atomic(&script_path, script.as_bytes()).map_err(|e| io(&script_path, &e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io(&script_path, &e))?;
    }
    let mut budgets = spec.budgets.clone();
    budgets.sort_by(f64::total_cmp);
    budgets.dedup();
    let manifest = SweepManifest {
        version: SWEEP_VERSION,
        budgets,
        shards: settings.shards.clone(),
        seq_len: spec.seq_len,
        batch_rows: settings.batch_rows,
        micro_batch: settings.micro_batch,
        lr: settings.lr,
        mup_base_width: base_width,
        seed: settings.seed,
        runs,
    };
    let path = out.join(SWEEP_FILE);
    let json = serde_json::to_vec_pretty(&manifest).expect("the manifest serializes");
    write_atomic(&path, &json).map_err(|e| io(&path, &e))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(budgets: Vec<f64>, corpus: u64) -> SweepSpec {
        SweepSpec {
            budgets,
            models_per_budget: 5,
            spread: 16.0,
            centre_ratio: CENTRE_RATIO,
            seq_len: 64,
            vocab_size: 512,
            batch_rows: 16,
            corpus_tokens: corpus,
            max_epochs: 1.0,
        }
    }

    #[test]
    fn each_budget_gets_sizes_spaced_in_log_n_that_spend_it() {
        let runs = design(&spec(vec![1e12, 4e12, 1.6e13], 1 << 40)).unwrap();
        for budget in [1e12, 4e12, 1.6e13] {
            let mine: Vec<&SweepRun> = runs.iter().filter(|r| r.budget == budget).collect();
            assert!(mine.len() >= 4, "{budget}: {} runs", mine.len());
            for w in mine.windows(2) {
                let ratio = w[1].params as f64 / w[0].params as f64;
                assert!((1.3..4.0).contains(&ratio), "{budget}: {ratio}");
            }
            let spread = mine.last().unwrap().params as f64 / mine[0].params as f64;
            assert!((6.0..40.0).contains(&spread), "{budget}: spread {spread}");
            for r in &mine {
                // Whole steps: within half a step of the budget.
                let step = 16.0 * 64.0 * r.model.flops_per_token(64);
                assert!((r.flops - budget).abs() <= step / 2.0 + 1.0, "{r:?}");
                assert_eq!(r.tokens, (r.steps * 16 * 64) as f64);
                r.model.validate().unwrap();
            }
        }
        // Bigger budgets centre on bigger models.
        let centre = |b: f64| {
            let mine: Vec<&SweepRun> = runs.iter().filter(|r| r.budget == b).collect();
            mine[mine.len() / 2].params
        };
        assert!(centre(1e12) < centre(4e12) && centre(4e12) < centre(1.6e13));
    }

    #[test]
    fn a_sweep_that_repeats_data_is_refused_with_what_it_needs() {
        let err = design(&spec(vec![1e12, 1e13], 1_000_000)).unwrap_err();
        let SweepError::RepeatsData { needed, tokens, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(needed, tokens);
        assert!(*tokens > 1e6);
        assert!(err.to_string().contains("--max-epochs"), "{err}");
        // Allowing the epochs it needs makes it plannable.
        let mut s = spec(vec![1e12, 1e13], 1_000_000);
        s.max_epochs = needed / 1e6 + 0.01;
        design(&s).unwrap();
    }

    #[test]
    fn too_small_a_budget_is_refused() {
        let err = design(&spec(vec![1e3], 1 << 40)).unwrap_err();
        assert!(matches!(err, SweepError::TooSmall { .. }), "{err:?}");
    }

    #[test]
    fn budget_labels() {
        assert_eq!(budget_label(1e15), "1e15");
        assert_eq!(budget_label(2.5e16), "2.5e16");
        assert_eq!(budget_label(1.234e9), "1.23e9");
    }
}
