//! `plan fit`: your own scaling law from your own runs.

use super::{parse_flops, parse_tokens, sci, table};
use anyhow::Result;
use h5gpt_core::config::{GptConfig, Preset};
use h5gpt_core::plan::fit::{
    bootstrap, fit_law, fit_parabola, power_law, Bootstrap, FitOptions, Interval, Law, LawFit,
    Observation, PowerLaw, HUBER_DELTA, INTERVAL, LAW_NAMES,
};
use h5gpt_core::plan::runs::{
    by_budget, check_same_data, collect, suggestions, RunRecord, RunsError, MIN_RUNS,
};
use h5gpt_core::plan::scaling::{Allocation, LossFit, CHINCHILLA, EPOCH};
use h5gpt_core::plan::scaling_plot::{write_scaling_plot, IsoFlopSeries};
use h5gpt_core::plan::sweep::SWEEP_FILE;
use h5gpt_formats::exit::UsageError;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Fit L(N, D) = E + A/N^α + B/D^β to your runs (Chinchilla's Approach 3: Huber loss,
/// δ = 1e-3, on log-loss residuals, L-BFGS from a grid of starts, bootstrap intervals over
/// the runs), with Approach 2's IsoFLOP minima for sweeps; the compute-optimal N and D for a
/// budget beside Chinchilla's and Epoch's fits; `scaling.png`.
///
/// N is the non-embedding parameter count, D the tokens trained, C the FLOPs the runs cost
/// (FLOPs per token × D; 6ND beside it). Chinchilla's and Epoch's fits count all parameters.
#[derive(Debug, clap::Args)]
pub struct FitArgs {
    /// Run folders (train --out), or sweep folders (plan sweep --out): each run's final
    /// validation loss, N and D are read from its newest checkpoint.
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// The compute-optimal N and D for this budget (C = 6ND) under the fitted law.
    #[arg(long, value_parser = parse_flops)]
    pub flops: Option<f64>,
    /// The compute-optimal N for these training tokens; with --predict, the named run's tokens.
    #[arg(long, value_parser = parse_tokens)]
    pub tokens: Option<f64>,
    /// Predict the loss of a bigger run: --predict --model gpt2-medium --tokens 9e9.
    #[arg(long, requires_all = ["model", "tokens"])]
    pub predict: bool,
    /// The preset --predict predicts.
    #[arg(long, requires = "predict")]
    pub model: Option<String>,
    /// Bootstrap resamples of the runs (0: no intervals).
    #[arg(long, default_value_t = 200)]
    pub bootstrap: usize,
    /// Seed of the resampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to draw the picture. [default: scaling.png in the sweep folder when one is
    /// given, else in the current directory]
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// Draw no picture.
    #[arg(long, conflicts_with = "plot")]
    pub no_plot: bool,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// One budget's IsoFLOP minimum (Approach 2).
#[derive(Debug, Clone, Serialize)]
struct IsoFlopMinimum {
    /// The budget (the sweep's, or the runs' mean C).
    flops: f64,
    /// Runs at this budget.
    runs: usize,
    /// N at the parabola's minimum (loss against ln N).
    params: Option<f64>,
    /// D at the parabola's minimum (loss against ln D).
    tokens: Option<f64>,
    /// The loss there.
    loss: Option<f64>,
    /// The minimum lies inside the runs' span of N.
    inside: bool,
}

/// Approach 2 across budgets.
#[derive(Debug, Clone, Serialize)]
struct Approach2 {
    minima: Vec<IsoFlopMinimum>,
    /// N_opt ∝ C^a.
    params: Option<PowerLaw>,
    /// D_opt ∝ C^b.
    tokens: Option<PowerLaw>,
}

fn approach2(runs: &[RunRecord]) -> (Approach2, Vec<IsoFlopSeries>) {
    let mut minima = Vec::new();
    let mut series = Vec::new();
    for (budget, members) in by_budget(runs) {
        let flops = if members[0].budget.is_some() {
            budget
        } else {
            members.iter().map(|r| r.flops).sum::<f64>() / members.len() as f64
        };
        let by_n: Vec<(f64, f64)> = members
            .iter()
            .map(|r| (r.params.ln(), r.loss.unwrap_or(f64::NAN)))
            .collect();
        let by_d: Vec<(f64, f64)> = members
            .iter()
            .map(|r| (r.tokens.ln(), r.loss.unwrap_or(f64::NAN)))
            .collect();
        let parabola = fit_parabola(&by_n);
        let (lo, hi) = by_n
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.0), b.max(p.0))
            });
        let vertex = parabola.map(|p| p.vertex());
        minima.push(IsoFlopMinimum {
            flops,
            runs: members.len(),
            params: vertex.map(|v| v.0.exp()),
            tokens: fit_parabola(&by_d).map(|p| p.vertex().0.exp()),
            loss: vertex.map(|v| v.1),
            inside: vertex.is_some_and(|v| v.0 >= lo && v.0 <= hi),
        });
        series.push(IsoFlopSeries {
            budget: flops,
            points: members
                .iter()
                .map(|r| (r.params, r.loss.unwrap_or(f64::NAN)))
                .collect(),
            parabola,
        });
    }
    let pts = |f: fn(&IsoFlopMinimum) -> Option<f64>| -> Vec<(f64, f64)> {
        minima
            .iter()
            .filter_map(|m| f(m).map(|v| (m.flops, v)))
            .collect()
    };
    let params = power_law(&pts(|m| m.params));
    let tokens = power_law(&pts(|m| m.tokens));
    (
        Approach2 {
            minima,
            params,
            tokens,
        },
        series,
    )
}

/// A figure and its bootstrap interval.
#[derive(Debug, Clone, Serialize)]
struct Estimate {
    value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<Interval>,
}

fn estimate(value: f64, boot: Option<&Bootstrap>, f: impl Fn(&Law) -> f64) -> Estimate {
    Estimate {
        value,
        interval: boot.map(|b| b.interval_of(f)),
    }
}

fn show(e: &Estimate, digits: usize, scientific: bool) -> String {
    let fmt = |v: f64| {
        if scientific {
            format!("{v:.digits$e}")
        } else {
            format!("{v:.digits$}")
        }
    };
    match &e.interval {
        Some(i) => format!("{} [{}, {}]", fmt(e.value), fmt(i.lo), fmt(i.hi)),
        None => fmt(e.value),
    }
}

/// Runs `plan fit`.
pub fn run(args: &FitArgs) -> Result<()> {
    let runs = collect_fittable_runs(&args.runs)?;
    let predict_cfg = predicted_config(args, &runs)?;
    let obs = observations(&runs);
    let options = FitOptions::default();
    let fit: LawFit = fit_law(&obs, &options)
        .ok_or_else(|| anyhow::anyhow!("the fit failed: no start of the grid gives a finite objective (are the losses positive and finite?)"))?;
    let law = fit.law;
    let boot = (args.bootstrap > 0)
        .then(|| bootstrap(&obs, &law, args.bootstrap, args.seed, &options.lbfgs));
    let yours = law.as_loss_fit("yours", "plan fit");
    let (approach2, series) = approach2(&runs);
    let allocations = allocations(args, &yours, boot.as_ref());
    let prediction = predict_cfg
        .as_ref()
        .map(|(name, cfg)| predict(name, cfg, args, &law, boot.as_ref()));
    let plot_path = plot_path(args);
    if let Some(path) = &plot_path {
        draw_scaling_plot(path, &runs, &series, &yours)?;
    }
    let report = Report {
        runs: &runs,
        fit: &fit,
        boot: boot.as_ref(),
        approach2: &approach2,
        allocations: &allocations,
        prediction: prediction.as_ref(),
        plot_path: plot_path.as_ref(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
        return Ok(());
    }
    print!("{}", report.text());
    Ok(())
}

/// The runs of the given folders, checked to share their data and to be enough to fit.
fn collect_fittable_runs(folders: &[PathBuf]) -> Result<Vec<RunRecord>> {
    let runs = collect(folders)?;
    check_same_data(&runs)?;
    if runs.len() < MIN_RUNS {
        return Err(RunsError::TooFew {
            count: runs.len(),
            suggestions: suggestions(&runs),
        }
        .into());
    }
    Ok(runs)
}

/// The preset `--predict --model` names, at the runs' context and vocabulary.
fn predicted_config(args: &FitArgs, runs: &[RunRecord]) -> Result<Option<(String, GptConfig)>> {
    Ok(match (&args.model, args.predict) {
        (Some(name), true) => {
            let preset = Preset::find(name).ok_or_else(|| {
                UsageError::new(format!(
                    "unknown --model `{name}`; presets: {}",
                    Preset::names()
                ))
            })?;
            let mut cfg = preset.config(Some(runs[0].model.n_ctx));
            cfg.vocab_size = runs[0].model.vocab_size;
            Some((name.clone(), cfg))
        }
        _ => None,
    })
}

/// Each run's (N, D, final loss), the points the law is fitted to.
fn observations(runs: &[RunRecord]) -> Vec<Observation> {
    runs.iter()
        .map(|r| Observation {
            params: r.params,
            tokens: r.tokens,
            loss: r.loss.expect("collect keeps runs with a final loss"),
        })
        .collect()
}

/// The compute-optimal allocations asked for by `--flops` and `--tokens` (without
/// `--predict`), under your law (with bootstrap intervals) and the published fits.
fn allocations(args: &FitArgs, yours: &LossFit, boot: Option<&Bootstrap>) -> Vec<AllocationReport> {
    let mut asks = Vec::new();
    if let Some(c) = args.flops {
        asks.push((Given::Flops, c));
    }
    if let (Some(d), false) = (args.tokens, args.predict) {
        asks.push((Given::Tokens, d));
    }
    asks.into_iter()
        .map(|(given, value)| {
            let of = |l: &Law| given.allocate(&l.as_loss_fit("bootstrap", "plan fit"), value);
            AllocationReport {
                given,
                value,
                yours: given.allocate(yours, value),
                params_interval: boot.map(|b| b.interval_of(|l| of(l).params)),
                tokens_interval: boot.map(|b| b.interval_of(|l| of(l).tokens)),
                chinchilla: given.allocate(&CHINCHILLA, value),
                epoch: given.allocate(&EPOCH, value),
            }
        })
        .collect()
}

/// The loss of the `--predict` preset on `--tokens` under your law and the published fits.
fn predict(
    name: &str,
    cfg: &GptConfig,
    args: &FitArgs,
    law: &Law,
    boot: Option<&Bootstrap>,
) -> Prediction {
    let d = args.tokens.expect("--predict requires --tokens");
    let n = cfg.breakdown().non_embedding() as f64;
    let unpadded = cfg.breakdown_unpadded();
    let n_all = (unpadded.total() - unpadded.position_embedding) as f64;
    Prediction {
        model: name.to_string(),
        tokens: d,
        params_non_embedding: n,
        params_all: n_all,
        yours: estimate(law.loss(n, d), boot, |l| l.loss(n, d)),
        chinchilla: CHINCHILLA.loss(n_all, d),
        epoch: EPOCH.loss(n_all, d),
    }
}

/// Where to draw `scaling.png`: `--plot`, else the one sweep folder's, else the current
/// directory's; none with `--no-plot`.
fn plot_path(args: &FitArgs) -> Option<PathBuf> {
    if args.no_plot {
        None
    } else {
        Some(
            args.plot
                .clone()
                .unwrap_or_else(|| match args.runs.as_slice() {
                    [one] if one.join(SWEEP_FILE).is_file() => one.join("scaling.png"),
                    _ => PathBuf::from("scaling.png"),
                }),
        )
    }
}

/// Draws the IsoFLOP curves and your law's compute-optimal frontier over the runs' budgets
/// (a quarter of the smallest to four times the largest).
fn draw_scaling_plot(
    path: &Path,
    runs: &[RunRecord],
    series: &[IsoFlopSeries],
    yours: &LossFit,
) -> Result<()> {
    let c_lo = runs.iter().map(|r| r.flops).fold(f64::INFINITY, f64::min) / 4.0;
    let c_hi = runs.iter().map(|r| r.flops).fold(0.0, f64::max) * 4.0;
    let frontier: Vec<(f64, f64)> = (0..=80)
        .map(|k| {
            let c = c_lo * (c_hi / c_lo).powf(k as f64 / 80.0);
            let a = yours.optimal(c);
            (a.params, a.loss)
        })
        .collect();
    write_scaling_plot(
        path,
        series,
        &frontier,
        &format!("IsoFLOP curves and the fitted law ({} runs)", runs.len()),
    )?;
    Ok(())
}

/// Everything `plan fit` found, to print as tables or as one JSON document.
struct Report<'a> {
    runs: &'a [RunRecord],
    fit: &'a LawFit,
    boot: Option<&'a Bootstrap>,
    approach2: &'a Approach2,
    allocations: &'a [AllocationReport],
    prediction: Option<&'a Prediction>,
    plot_path: Option<&'a PathBuf>,
}

impl Report<'_> {
    /// The bootstrap intervals of the law's constants, in [`LAW_NAMES`] order.
    fn intervals(&self) -> Option<[Interval; 5]> {
        self.boot.map(|b| b.intervals)
    }

    /// The `--json` document.
    fn json(&self) -> serde_json::Value {
        let (fit, law) = (self.fit, &self.fit.law);
        let intervals = self.intervals();
        let law_doc: serde_json::Map<String, serde_json::Value> = LAW_NAMES
            .iter()
            .zip(law.values())
            .enumerate()
            .map(|(k, (name, v))| {
                (
                    name.to_string(),
                    json!({"value": v, "interval": intervals.map(|i| i[k])}),
                )
            })
            .collect();
        json!({
            "conventions": {
                "N": "non-embedding parameters",
                "D": "tokens trained (steps × global batch × seq_len)",
                "C": "FLOPs per token (6N' + 12·L·H·Q·T) × D; 6ND beside it",
                "allocation": "C = 6ND with N non-embedding; Chinchilla's and Epoch's fits count all parameters",
            },
            "runs": self.runs,
            "fit": {
                "law": law_doc,
                "huber_delta": HUBER_DELTA,
                "objective": fit.objective,
                "rms_log_residual": fit.rms_log_residual,
                "converged": fit.converged,
                "grid_points": fit.grid_points,
                "starts": fit.starts,
                "bootstrap": self.boot.map(|b| json!({"resamples": b.resamples, "failed": b.failed, "coverage": INTERVAL})),
                "warnings": law_warnings(law),
            },
            "approach2": self.approach2,
            "allocations": self.allocations,
            "prediction": self.prediction,
            "plot": self.plot_path,
        })
    }

    /// The tables: the runs, Approach 3, Approach 2, the allocations, the prediction and
    /// where the picture went.
    fn text(&self) -> String {
        let mut out = self.runs_table();
        out += &self.approach3_text();
        out += &self.approach2_text();
        for a in self.allocations {
            out += &allocation_text(a, &self.fit.law);
        }
        if let Some(p) = self.prediction {
            out += &format!(
                "\npredicted final loss of {} on {} tokens: yours {} (N = {} non-embedding); Chinchilla {:.3}, Epoch {:.3} (N = {} all parameters; their data and tokenizer)\n",
                p.model,
                sci(p.tokens),
                show(&p.yours, 3, false),
                super::count(p.params_non_embedding as usize),
                p.chinchilla,
                p.epoch,
                super::count(p.params_all as usize),
            );
        }
        if let Some(path) = self.plot_path {
            out += &format!("\nwrote {}\n", path.display());
        }
        out
    }

    /// The headline (runs, budgets, data) and one row per run.
    fn runs_table(&self) -> String {
        let runs = self.runs;
        let mut out = String::new();
        let fp = runs[0].data.as_ref();
        out += &format!(
            "{} runs in {} budgets; data: {}\n\n",
            runs.len(),
            self.approach2.minima.len(),
            fp.map_or("no fingerprint recorded".into(), |f| format!(
                "tokenizer `{}`, seq_len {}, training data {}",
                f.tokenizer, f.seq_len, f.train
            ))
        );
        let rows: Vec<Vec<String>> = runs
            .iter()
            .map(|r| {
                vec![
                    r.name(),
                    super::count(r.params as usize),
                    sci(r.tokens),
                    format!("{:.1}", r.tokens / r.params),
                    sci(r.flops),
                    sci(r.flops_6nd),
                    format!("{:.4}", r.loss.unwrap_or(f64::NAN)),
                ]
            })
            .collect();
        out += &table(
            &[
                "run",
                "N (non-emb)",
                "D",
                "D/N",
                "C (ours)",
                "6ND",
                "final val loss",
            ],
            &rows,
        );
        out
    }

    /// The fitted law with its intervals, the residual, the warnings and the published fits.
    fn approach3_text(&self) -> String {
        let (fit, law) = (self.fit, &self.fit.law);
        let intervals = self.intervals();
        let mut out = format!(
            "\nApproach 3: L(N, D) = E + A/N^α + B/D^β, N non-embedding, D tokens\n\
             (Huber δ = {HUBER_DELTA} on log L, L-BFGS from the best {} of a {}-point grid{}{})\n",
            fit.starts,
            fit.grid_points,
            self.boot.map_or(String::new(), |b| format!(
                "; [{:.0}% bootstrap interval over {} resamples of the runs{}]",
                INTERVAL * 100.0,
                b.resamples,
                if b.failed > 0 {
                    format!(", {} failed", b.failed)
                } else {
                    String::new()
                }
            )),
            if fit.converged {
                ""
            } else {
                "; the best start did not converge"
            }
        );
        let names = ["E", "A", "B", "α", "β"];
        let values = law.values();
        let law_rows: Vec<Vec<String>> = (0..5)
            .map(|k| {
                let e = Estimate {
                    value: values[k],
                    interval: intervals.map(|i| i[k]),
                };
                vec![
                    names[k].to_string(),
                    show(&e, if k == 1 || k == 2 { 3 } else { 4 }, k == 1 || k == 2),
                ]
            })
            .collect();
        out += &table(&["", "yours"], &law_rows);
        out += &format!(
            "rms of log L̂ − log L over the runs: {:.4}\n",
            fit.rms_log_residual
        );
        for warning in law_warnings(law) {
            out += &format!("warning: {warning}\n");
        }
        out += &format!(
            "for comparison (all parameters counted): Chinchilla E {} A {} B {} α {} β {}; Epoch E {} A {} B {} α {} β {}\n",
            CHINCHILLA.e, CHINCHILLA.a, CHINCHILLA.b, CHINCHILLA.alpha, CHINCHILLA.beta,
            EPOCH.e, EPOCH.a, EPOCH.b, EPOCH.alpha, EPOCH.beta
        );
        out
    }

    /// Each budget's IsoFLOP minimum and the power laws through them.
    fn approach2_text(&self) -> String {
        let approach2 = self.approach2;
        let mut out = String::from(
            "\nApproach 2: per budget, the minimum of a parabola in log N (and log D)\n",
        );
        let a2_rows: Vec<Vec<String>> = approach2
            .minima
            .iter()
            .map(|m| {
                vec![
                    format!("{:.3e}", m.flops),
                    m.runs.to_string(),
                    m.params.map_or("-".into(), sci),
                    m.tokens.map_or("-".into(), sci),
                    m.loss.map_or("-".into(), |l| format!("{l:.4}")),
                    match (m.params, m.inside) {
                        (None, _) if m.runs < 3 => "fewer than 3 runs".into(),
                        (None, _) => "no minimum (not convex)".into(),
                        (Some(_), true) => "inside the runs' N".into(),
                        (Some(_), false) => "outside the runs' N: extrapolated".into(),
                    },
                ]
            })
            .collect();
        out += &table(&["C", "runs", "N_opt", "D_opt", "loss", "note"], &a2_rows);
        match (&approach2.params, &approach2.tokens) {
            (Some(p), Some(d)) => {
                out += &format!(
                    "N_opt ∝ C^{:.3}, D_opt ∝ C^{:.3} (Chinchilla's Approach 2: 0.49 and 0.51)\n",
                    p.exponent, d.exponent
                )
            }
            (Some(p), None) => out += &format!("N_opt ∝ C^{:.3}\n", p.exponent),
            _ => out += "N_opt ∝ C^a: needs minima at two budgets or more\n",
        }
        out
    }
}

/// One allocation's table: yours (when α, β > 0), Chinchilla's and Epoch's.
fn allocation_text(a: &AllocationReport, law: &Law) -> String {
    let mut out = format!(
        "\ncompute-optimal for {} (C = 6ND):\n",
        match a.given {
            Given::Flops => format!("C = {} FLOPs", sci(a.value)),
            Given::Tokens => format!("D = {} tokens", sci(a.value)),
        }
    );
    let interval = |i: &Option<Interval>| {
        i.map_or(String::new(), |i| format!(" [{:.2e}, {:.2e}]", i.lo, i.hi))
    };
    let row = |name: &str, al: &Allocation, n_i: String, d_i: String| {
        vec![
            name.to_string(),
            format!("{}{n_i}", sci(al.params)),
            format!("{}{d_i}", sci(al.tokens)),
            format!("{:.1}", al.tokens_per_param),
            format!("{:.3}", al.loss),
            sci(al.flops),
        ]
    };
    let yours = if law.alpha > 0.0 && law.beta > 0.0 {
        row(
            "yours (N non-embedding)",
            &a.yours,
            interval(&a.params_interval),
            interval(&a.tokens_interval),
        )
    } else {
        let mut cells = vec!["yours: none (needs α, β > 0)".to_string()];
        cells.extend(std::iter::repeat_n("-".to_string(), 5));
        cells
    };
    out += &table(
        &["fit", "N_opt", "D_opt", "D/N", "loss", "C"],
        &[
            yours,
            row(
                "chinchilla (N all parameters)",
                &a.chinchilla,
                String::new(),
                String::new(),
            ),
            row(
                "epoch (N all parameters)",
                &a.epoch,
                String::new(),
                String::new(),
            ),
        ],
    );
    out
}

/// What looks wrong with a fitted law: exponents outside (0, 3), or an irreducible loss at 0.
fn law_warnings(law: &Law) -> Vec<String> {
    let mut out = Vec::new();
    for (name, v, term) in [("α", law.alpha, "N"), ("β", law.beta, "D")] {
        if !(v > 0.0 && v < 3.0) {
            out.push(format!(
                "{name} = {v:.3}: the runs do not show the power law in {term} the fit assumes (too few, too short, or too noisy runs); extrapolations from it mean little"
            ));
        }
    }
    if law.e < 1e-3 {
        out.push(format!(
            "E = {:.2e}: the fit puts the irreducible loss at zero; the runs do not constrain it",
            law.e
        ));
    }
    out
}

/// What an allocation is asked for by.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
enum Given {
    /// A budget C (`--flops`).
    Flops,
    /// Training tokens D (`--tokens`).
    Tokens,
}

impl Given {
    fn allocate(self, fit: &LossFit, value: f64) -> Allocation {
        match self {
            Given::Flops => fit.optimal(value),
            Given::Tokens => fit.optimal_for_tokens(value),
        }
    }
}

/// The compute-optimal allocation under the fitted law, beside the published fits'.
#[derive(Debug, Clone, Serialize)]
struct AllocationReport {
    given: Given,
    value: f64,
    /// Under your law (N non-embedding).
    yours: Allocation,
    params_interval: Option<Interval>,
    tokens_interval: Option<Interval>,
    /// Under Chinchilla's fit (N all parameters).
    chinchilla: Allocation,
    /// Under Epoch's fit (N all parameters).
    epoch: Allocation,
}

/// The predicted loss of a named bigger run.
#[derive(Debug, Clone, Serialize)]
struct Prediction {
    model: String,
    tokens: f64,
    params_non_embedding: f64,
    params_all: f64,
    yours: Estimate,
    chinchilla: f64,
    epoch: f64,
}
