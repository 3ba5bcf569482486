//! `plan sweep`: an IsoFLOP grid of `train` configs, a script that runs them, and a table of
//! N, D, steps and time.

use super::{duration, parse_flops, parse_tokens, sci, table};
use anyhow::{bail, Context, Result};
use h5gpt_core::plan::sweep::{
    design, write, RunSettings, SweepManifest, SweepRun, SweepSpec, SCRIPT_FILE, SWEEP_FILE,
};
use h5gpt_formats::exit::{with_hint, UsageError};
use h5gpt_formats::DataParams;
use std::path::{Path, PathBuf};

/// Plan an IsoFLOP sweep (Chinchilla's Approach 2): for each compute budget, model sizes
/// spaced evenly in log N around the compute-optimal one, each trained on the tokens that spend
/// the budget. Writes one `train` config per run (TOML, runnable as written), `run_all.sh`,
/// and `sweep.json`; then `sh OUT/run_all.sh` and `plan fit OUT`.
///
/// The runs are comparable: μP (one learning rate for every width), one global batch, the
/// same seed, a schedule over each run's length, and the whole val/ set evaluated after the
/// last step as the run's final validation loss.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Compute budgets C in FLOPs (what a run costs: FLOPs per token × D), comma-separated:
    /// 1e15,4e15,1.6e16.
    #[arg(long, value_delimiter = ',', value_parser = parse_flops, required = true)]
    pub flops: Vec<f64>,
    /// Shard directory with train/ and val/ (preprocess --val-fraction).
    #[arg(long)]
    pub shards: PathBuf,
    /// Model sizes per budget.
    #[arg(long, default_value_t = 5)]
    pub models_per_budget: usize,
    /// Folder for the configs, the script, sweep.json and the runs.
    #[arg(long, default_value = "sweep")]
    pub out: PathBuf,
    /// Epochs of the training data a run may read; a sweep that needs more is refused.
    #[arg(long, default_value_t = 1.0)]
    pub max_epochs: f64,
    /// The largest model of a budget over its smallest (N, non-embedding).
    #[arg(long, default_value_t = 16.0)]
    pub spread: f64,
    /// Tokens per parameter (D/N) of each budget's centre model: the grid spreads around it.
    #[arg(long, default_value_t = h5gpt_core::plan::sweep::CENTRE_RATIO)]
    pub ratio: f64,
    /// Tokens per optimizer step, the same for every run. [default: 32 rows, halved while an
    /// epoch would give fewer than 100 steps, as train does]
    #[arg(long, value_parser = parse_tokens)]
    pub batch_tokens: Option<f64>,
    /// Rows per forward/backward pass.
    #[arg(long, default_value_t = 8)]
    pub micro_batch: usize,
    /// μP base learning rate of every run.
    #[arg(long, default_value_t = h5gpt_core::config::MUP_BASE_LR)]
    pub lr: f64,
    /// μP base width. [default: the sweep's narrowest model]
    #[arg(long)]
    pub mup_base_width: Option<usize>,
    /// Seed of every run.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Estimate the time on this GPU (h100, a100, …) at --mfu, instead of timing this machine.
    #[arg(long)]
    pub gpu: Option<String>,
    /// Model FLOPs utilization for --gpu.
    #[arg(long, default_value_t = 0.4)]
    pub mfu: f64,
    /// Steps of each run timed on this machine (with the `train` beside `h5gpt`, or $TRAIN);
    /// 0: no timing.
    #[arg(long, default_value_t = 5)]
    pub time_steps: usize,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What the shards hold.
struct Shards {
    dir: PathBuf,
    tokens: u64,
    rows: u64,
    seq_len: usize,
    vocab_size: usize,
}

fn read_shards(dir: &Path) -> Result<Shards> {
    let hint = "preprocess with --val-fraction (a sweep's runs are compared on the validation set)";
    let split = h5gpt_formats::split::SplitDirs::of(dir);
    let (train, Some(val)) = (split.train, split.val) else {
        return Err(UsageError::new(with_hint(
            format!(
                "--shards {}: a sweep needs train/ and val/ subdirectories",
                dir.display()
            ),
            hint,
        ))
        .into());
    };
    let read = |d: &Path| -> Result<DataParams> {
        DataParams::read_from_dir(d)
            .with_context(|| format!("cannot read {}", d.join("data_params.json").display()))?
            .with_context(|| format!("{}: no data_params.json", d.display()))
    };
    let params = read(&train)?;
    read(&val)?;
    let seq_len = params
        .seq_len()
        .with_context(|| format!("{}: data_params.json has no seq_len", train.display()))?;
    let stats = &params.h5_dataset_stats;
    Ok(Shards {
        dir: std::path::absolute(dir)?,
        tokens: stats.num_sequences * seq_len as u64,
        rows: stats.num_sequences,
        seq_len,
        vocab_size: params
            .post_process
            .vocab_size
            .map_or(h5gpt_formats::spec::GPT2_VOCAB_SIZE as usize, |v| {
                v as usize
            }),
    })
}

/// Rows per step: `wanted` rounded down to whole micro-batches, halved while an epoch of
/// `rows` would give fewer than 100 steps (as `train` sizes its batch), so that the run trains
/// on exactly the batch planned.
fn batch_rows(wanted: usize, micro_batch: usize, rows: u64) -> usize {
    let mut batch = (wanted / micro_batch).max(1) * micro_batch;
    while batch > micro_batch && rows / (batch as u64) < 100 {
        let halved = (batch / 2 / micro_batch).max(1) * micro_batch;
        if halved == batch {
            break;
        }
        batch = halved;
    }
    batch
}

/// Seconds per step of each run, timed with `train` for `steps` steps (the median, the first
/// left out when there are more); `None` for a run that could not be timed.
fn time_runs(manifest: &SweepManifest, steps: usize) -> Result<(Vec<Option<f64>>, String)> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("train")))
        .filter(|p| p.is_file());
    let train = match std::env::var_os("TRAIN") {
        Some(t) => PathBuf::from(t),
        None => match beside {
            Some(p) => p,
            None => PathBuf::from("train"),
        },
    };
    let scratch = tempfile_dir()?;
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for run in &manifest.runs {
        let dir = scratch.join(&run.name);
        let steps_arg = steps.to_string();
        let result = std::process::Command::new(&train)
            .arg("--config")
            .arg(&run.config)
            .arg("--out")
            .arg(&dir)
            .args(["--max-steps", &steps_arg, "--save-every", &steps_arg])
            .args(["--final-eval", "false", "--no-verify"])
            .output();
        let seconds = match result {
            Ok(o) if o.status.success() => median_step_seconds(&dir.join("metrics.jsonl")),
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                failures.push(format!(
                    "{}: {}",
                    run.name,
                    err.lines().last().unwrap_or("failed")
                ));
                None
            }
            Err(e) => {
                failures.push(format!("{}: {e}", train.display()));
                None
            }
        };
        out.push(seconds);
        let _ = std::fs::remove_dir_all(&dir);
        if failures.len() == 1 && out.len() == 1 && seconds.is_none() {
            break; // `train` itself is missing or broken: do not try every run.
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    out.resize(manifest.runs.len(), None);
    Ok((out, failures.join("; ")))
}

/// A fresh scratch folder under the system's temporary directory.
fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("h5gpt-sweep-timing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Median `dt_ms` of a timing run's steps, the first left out when there are more, in seconds.
fn median_step_seconds(metrics: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(metrics).ok()?;
    let dts: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["dt_ms"].as_f64())
        .collect();
    let mut used = if dts.len() > 1 {
        dts[1..].to_vec()
    } else {
        dts
    };
    used.sort_by(f64::total_cmp);
    let n = used.len();
    (n > 0).then(|| (used[(n - 1) / 2] + used[n / 2]) / 2.0 / 1000.0)
}

/// Runs `plan sweep`.
pub fn run(args: &SweepArgs, command_line: &str) -> Result<()> {
    check_options(args)?;
    let peak = peak_flops(args)?;
    let shards = read_shards(&args.shards)?;
    let wanted_rows = match args.batch_tokens {
        Some(t) => (t as usize / shards.seq_len).max(1),
        None => 32,
    };
    let rows = batch_rows(wanted_rows, args.micro_batch.min(wanted_rows), shards.rows);
    let micro_batch = args.micro_batch.min(rows);
    let spec = SweepSpec {
        budgets: args.flops.clone(),
        models_per_budget: args.models_per_budget,
        spread: args.spread,
        centre_ratio: args.ratio,
        seq_len: shards.seq_len,
        vocab_size: shards.vocab_size,
        batch_rows: rows,
        corpus_tokens: shards.tokens,
        max_epochs: args.max_epochs,
    };
    let runs = design(&spec).map_err(|e| match e {
        h5gpt_core::plan::sweep::SweepError::Invalid(m) => anyhow::Error::new(UsageError::new(m)),
        other => anyhow::Error::new(other),
    })?;
    let out = std::path::absolute(&args.out)?;
    check_same_sweep(&out, &runs)?;
    let settings = RunSettings {
        shards: shards.dir.clone(),
        micro_batch,
        batch_rows: rows,
        lr: args.lr,
        seed: args.seed,
        mup_base_width: args.mup_base_width,
    };
    let manifest = write(&out, &spec, &settings, runs, command_line).map_err(anyhow::Error::msg)?;
    let (times, timing_note) = step_times(args, peak, &manifest)?;
    let seconds: Vec<Option<f64>> = manifest
        .runs
        .iter()
        .zip(&times)
        .map(|(r, t)| t.map(|s| s * r.steps as f64))
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&sweep_json(&out, &manifest, &seconds))?
        );
        return Ok(());
    }
    print!(
        "{}",
        sweep_text(
            &manifest,
            &shards,
            &seconds,
            &timing_note,
            args.models_per_budget
        )
    );
    Ok(())
}

/// Checks `--max-epochs`, `--micro-batch`, `--lr` and `--mfu` (usage errors).
fn check_options(args: &SweepArgs) -> Result<()> {
    if !(args.max_epochs.is_finite() && args.max_epochs > 0.0) {
        return Err(
            UsageError::new(format!("--max-epochs {} is not positive", args.max_epochs)).into(),
        );
    }
    if args.micro_batch == 0 {
        return Err(UsageError::new("--micro-batch 0: must be at least 1").into());
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(UsageError::new(format!("--lr {} is not positive", args.lr)).into());
    }
    if !(args.mfu > 0.0 && args.mfu <= 1.0) {
        return Err(UsageError::new(format!("--mfu {} is not in (0, 1]", args.mfu)).into());
    }
    Ok(())
}

/// The `--gpu`'s bf16 peak FLOP/s, when one is named.
fn peak_flops(args: &SweepArgs) -> Result<Option<f64>> {
    Ok(match &args.gpu {
        Some(gpu) => Some(h5gpt_core::hardware::peak_bf16_flops(gpu).ok_or_else(|| {
            UsageError::new(format!(
                "unknown --gpu `{gpu}`; known: {}",
                h5gpt_core::hardware::GPU_NAMES.join(", ")
            ))
        })?),
        None => None,
    })
}

/// Refuses an `--out` that holds another sweep (the same runs may be written again).
fn check_same_sweep(out: &Path, runs: &[SweepRun]) -> Result<()> {
    if out.join(SWEEP_FILE).is_file() {
        let old = SweepManifest::read(out).map_err(anyhow::Error::msg)?;
        let same = old.runs.len() == runs.len()
            && old
                .runs
                .iter()
                .zip(runs)
                .all(|(a, b)| a.name == b.name && a.steps == b.steps && a.model == b.model);
        if !same {
            bail!(with_hint(
                format!(
                    "{}: holds another sweep ({} runs)",
                    out.join(SWEEP_FILE).display(),
                    old.runs.len()
                ),
                "pick another --out, or remove it",
            ));
        }
    }
    Ok(())
}

/// Each run's seconds per step (from `--gpu` at `--mfu`, or timed on this machine over
/// `--time-steps` steps, or none) and a note saying which.
fn step_times(
    args: &SweepArgs,
    peak: Option<f64>,
    manifest: &SweepManifest,
) -> Result<(Vec<Option<f64>>, String)> {
    Ok(match (peak, args.time_steps) {
        (Some(peak), _) => (
            manifest
                .runs
                .iter()
                .map(|r| Some(r.flops / (peak * args.mfu) / r.steps as f64))
                .collect(),
            format!(
                "time: at {:.0}% MFU of {} ({:.0} TFLOP/s bf16)",
                args.mfu * 100.0,
                args.gpu.as_deref().unwrap_or(""),
                peak / 1e12
            ),
        ),
        (None, 0) => (
            vec![None; manifest.runs.len()],
            "time: not estimated (--time-steps 0)".into(),
        ),
        (None, steps) => {
            let (t, failures) = time_runs(manifest, steps)?;
            let mut note = format!(
                "time: the median step of {steps} timed on this machine (the first left out) × each run's steps; start-up and the final evaluation not included"
            );
            if !failures.is_empty() {
                note += &format!("\nnote: timing failed: {failures}");
            }
            (t, note)
        }
    })
}

/// The `--json` document: the files written, the shared settings and each run with its time.
fn sweep_json(out: &Path, manifest: &SweepManifest, seconds: &[Option<f64>]) -> serde_json::Value {
    let runs: Vec<serde_json::Value> = manifest
        .runs
        .iter()
        .zip(seconds)
        .map(|(r, s)| {
            let mut v = serde_json::to_value(r).expect("runs serialize");
            v["seconds"] = serde_json::json!(s);
            v
        })
        .collect();
    serde_json::json!({
        "sweep": out.join(SWEEP_FILE),
        "script": out.join(SCRIPT_FILE),
        "batch_rows": manifest.batch_rows,
        "seq_len": manifest.seq_len,
        "mup_base_width": manifest.mup_base_width,
        "lr": manifest.lr,
        "runs": runs,
        "total_seconds": seconds.iter().copied().sum::<Option<f64>>(),
    })
}

fn sweep_text(
    m: &SweepManifest,
    shards: &Shards,
    seconds: &[Option<f64>],
    timing: &str,
    per_budget: usize,
) -> String {
    let mut out = format!(
        "shards {}: {} training rows of {} tokens ({} tokens)\n",
        shards.dir.display(),
        h5gpt_formats::text::thousands(shards.rows),
        shards.seq_len,
        h5gpt_formats::text::thousands(shards.tokens)
    );
    out += &format!(
        "every run: μP (base width {}, base LR {}), {} rows × {} tokens per step, micro-batch {}, seed {}, warm-up 5%, cosine to 0.1× over its own steps, the whole val/ set evaluated after the last step\n\n",
        m.mup_base_width, m.lr, m.batch_rows, m.seq_len, m.micro_batch, m.seed
    );
    let rows: Vec<Vec<String>> = m
        .runs
        .iter()
        .zip(seconds)
        .map(|(r, s): (&SweepRun, &Option<f64>)| {
            vec![
                r.name.clone(),
                format!("{:.2e}", r.budget),
                super::count(r.params),
                format!("{}×{}", r.model.n_layer, r.model.n_embd),
                sci(r.tokens),
                format!("{:.1}", r.tokens / r.params as f64),
                r.steps.to_string(),
                sci(r.flops),
                sci(r.flops_6nd),
                s.map_or("-".into(), duration),
            ]
        })
        .collect();
    out += &table(
        &[
            "run",
            "budget",
            "N (non-emb)",
            "L×d",
            "D",
            "D/N",
            "steps",
            "C (ours)",
            "6ND",
            "time",
        ],
        &rows,
    );
    for &budget in &m.budgets {
        let k = m.runs.iter().filter(|r| r.budget == budget).count();
        if k < per_budget {
            out += &format!(
                "note: budget {budget:.3e} has {k} distinct model sizes, not {per_budget} (the grid reached the smallest or largest shape, or two sizes fell on one shape)\n"
            );
        }
    }
    let total: Option<f64> = seconds.iter().copied().sum();
    out += &format!(
        "\n{} runs; {timing}; total {}\n",
        m.runs.len(),
        total.map_or("-".into(), duration)
    );
    let dir = m
        .runs
        .first()
        .and_then(|r| r.config.parent())
        .and_then(Path::parent)
        .map_or_else(String::new, |d| d.display().to_string());
    out += &format!(
        "wrote {dir}/configs/*.toml, {dir}/{SCRIPT_FILE}, {dir}/{SWEEP_FILE}\nnext: sh {dir}/{SCRIPT_FILE} && h5gpt plan fit {dir}\n"
    );
    out
}
