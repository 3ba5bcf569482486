//! The runs `plan fit` reads, each from its own files: the newest checkpoint's `state.json`
//! gives the model (N, the non-embedding count), the tokens trained (D = steps × global
//! batch × seq_len), the final validation loss (`final_eval`, written by `train
//! --final-eval`), and the data fingerprint. A sweep folder (with `sweep.json`) stands for
//! its runs and lends them their budgets.

use super::sweep::{SweepManifest, SWEEP_FILE};
use crate::config::GptConfig;
use h5gpt_formats::run::{latest_checkpoint, CheckpointState, DataFingerprint, CHECKPOINTS};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The fewest runs a five-parameter fit accepts.
pub const MIN_RUNS: usize = 15;

/// One run as `plan fit` sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// The run folder.
    pub dir: PathBuf,
    /// The checkpoint read (the newest).
    pub checkpoint: PathBuf,
    /// The model's shape.
    pub model: GptConfig,
    /// N: non-embedding parameters.
    pub params: f64,
    /// All parameters less the position embedding, unpadded (what Chinchilla's and Epoch's fits
    /// count as N).
    pub params_chinchilla: f64,
    /// D: tokens trained (steps × global batch × seq_len).
    pub tokens: f64,
    /// C: FLOPs per token × D.
    pub flops: f64,
    /// 6·N·D with N non-embedding.
    pub flops_6nd: f64,
    /// Optimizer steps.
    pub steps: usize,
    /// The final validation loss.
    pub loss: Option<f64>,
    /// What it trained on.
    pub data: Option<DataFingerprint>,
    /// The sweep budget it belongs to, when read from a sweep folder.
    pub budget: Option<f64>,
}

impl RunRecord {
    /// The run's name: its folder's.
    pub fn name(&self) -> String {
        self.dir.file_name().map_or_else(
            || self.dir.display().to_string(),
            |n| n.to_string_lossy().into(),
        )
    }
}

/// Why the runs cannot be fitted.
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    /// A path is neither a run nor a sweep.
    #[error("{0}: not a run folder (no {CHECKPOINTS}/) nor a sweep folder (no {SWEEP_FILE})\n---> HINT: pass the folders `train --out` wrote, or the folder `h5gpt plan sweep --out` wrote")]
    NotARun(PathBuf),
    /// A file could not be read.
    #[error("{path}: {what}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        what: String,
    },
    /// Runs without a final validation loss.
    #[error("{} run{} without a final validation loss (state.json `final_eval`):\n  {}\n---> HINT: train with --final-eval (the configs `plan sweep` writes set it); a run that has not finished, or has not started, has none yet", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.join("\n  "))]
    NoFinalLoss(Vec<String>),
    /// Runs of different data.
    #[error("the runs trained on different data, and one law cannot describe them:\n{0}\n---> HINT: fit the runs of one dataset, tokenizer and seq_len at a time")]
    MixedData(String),
    /// Too few runs.
    #[error("{count} runs: the five-parameter fit needs at least {MIN_RUNS}; add runs at\n{suggestions}---> HINT: `h5gpt plan sweep` plans an IsoFLOP grid of 5 runs per budget")]
    TooFew {
        /// Runs given.
        count: usize,
        /// Where to add runs, one line each.
        suggestions: String,
    },
}

fn unreadable(path: &Path, what: impl ToString) -> RunsError {
    RunsError::Unreadable {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

/// Reads one run folder. A run with no checkpoint yet reads as a run without a final loss.
pub fn read_run(dir: &Path, budget: Option<f64>) -> Result<Option<RunRecord>, RunsError> {
    let Some(checkpoint) = latest_checkpoint(dir) else {
        return Ok(None);
    };
    let state = CheckpointState::<serde_json::Value>::read(&checkpoint)
        .map_err(|e| unreadable(&checkpoint, e))?;
    let model: GptConfig = serde_json::from_value(state.model.clone())
        .map_err(|e| unreadable(&checkpoint.join("state.json"), format!("`model`: {e}")))?;
    let tokens = (state.step * state.global_batch * state.seq_len) as f64;
    let params = model.breakdown().non_embedding() as f64;
    let unpadded = model.breakdown_unpadded();
    Ok(Some(RunRecord {
        dir: dir.to_path_buf(),
        checkpoint,
        model,
        params,
        params_chinchilla: (unpadded.total() - unpadded.position_embedding) as f64,
        tokens,
        flops: model.flops_per_token(state.seq_len) * tokens,
        flops_6nd: 6.0 * params * tokens,
        steps: state.step,
        loss: state
            .final_eval
            .filter(|f| f.step == state.step)
            .map(|f| f.loss),
        data: state.data,
        budget,
    }))
}

/// The runs behind `paths`: run folders, and sweep folders (their runs, with their budgets).
/// Every run must have a final validation loss; the error names those that do not.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<RunRecord>, RunsError> {
    let mut runs = Vec::new();
    let mut missing = Vec::new();
    for path in paths {
        if path.join(SWEEP_FILE).is_file() {
            let sweep =
                SweepManifest::read(path).map_err(|e| unreadable(&path.join(SWEEP_FILE), e))?;
            for run in &sweep.runs {
                match read_run(&run.out, Some(run.budget))? {
                    Some(r) if r.loss.is_some() => runs.push(r),
                    _ => missing.push(format!("{} (budget {:.3e})", run.out.display(), run.budget)),
                }
            }
        } else if path.join(CHECKPOINTS).is_dir() {
            match read_run(path, None)? {
                Some(r) if r.loss.is_some() => runs.push(r),
                _ => missing.push(path.display().to_string()),
            }
        } else {
            return Err(RunsError::NotARun(path.clone()));
        }
    }
    if !missing.is_empty() {
        return Err(RunsError::NoFinalLoss(missing));
    }
    Ok(runs)
}

/// Refuses runs of different data: each group of runs that share a fingerprint is named, with
/// how it differs from the first.
pub fn check_same_data(runs: &[RunRecord]) -> Result<(), RunsError> {
    let mut groups: Vec<(Option<&DataFingerprint>, Vec<String>)> = Vec::new();
    for run in runs {
        match groups.iter_mut().find(|g| g.0 == run.data.as_ref()) {
            Some(group) => group.1.push(run.dir.display().to_string()),
            None => groups.push((run.data.as_ref(), vec![run.dir.display().to_string()])),
        }
    }
    if groups.len() <= 1 {
        return Ok(());
    }
    let first = groups[0].0;
    let mut text = String::new();
    for (i, (fp, names)) in groups.iter().enumerate() {
        let what = match (fp, first) {
            (None, _) => "no data fingerprint (written before `train` recorded one)".to_string(),
            (Some(fp), _) if i == 0 => format!(
                "tokenizer `{}`, seq_len {}, training data {}",
                fp.tokenizer, fp.seq_len, fp.train
            ),
            (Some(fp), Some(first)) => first.differences(fp).join("; "),
            (Some(fp), None) => format!(
                "tokenizer `{}`, seq_len {}, training data {}",
                fp.tokenizer, fp.seq_len, fp.train
            ),
        };
        text += &format!(
            "  group {} ({what}):\n    {}\n",
            i + 1,
            names.join("\n    ")
        );
    }
    Err(RunsError::MixedData(text.trim_end().to_string()))
}

/// Runs grouped by compute budget: a sweep's budget where the run has one, else runs whose C
/// lies within 25 % of the group's first (in increasing C). Groups in increasing C.
pub fn by_budget(runs: &[RunRecord]) -> Vec<(f64, Vec<&RunRecord>)> {
    let mut groups: Vec<(f64, Vec<&RunRecord>)> = Vec::new();
    for run in runs {
        let Some(budget) = run.budget else { continue };
        match groups.iter_mut().find(|g| g.0 == budget) {
            Some(group) => group.1.push(run),
            None => groups.push((budget, vec![run])),
        }
    }
    let mut loose: Vec<&RunRecord> = runs.iter().filter(|r| r.budget.is_none()).collect();
    loose.sort_by(|a, b| a.flops.total_cmp(&b.flops));
    let first_loose = groups.len();
    for run in loose {
        match groups[first_loose..].last_mut() {
            Some((c, members)) if run.flops <= *c * 1.25 => members.push(run),
            _ => groups.push((run.flops, vec![run])),
        }
    }
    groups.sort_by(|a, b| a.0.total_cmp(&b.0));
    groups
}

/// Where to add runs to reach [`MIN_RUNS`]: first more sizes for budgets with fewer than 5
/// (continuing their spacing in log N, alternately above and below), then new budgets 4×
/// above the largest with 5 sizes around 20 tokens per parameter. One line per run: C, N, D.
pub fn suggestions(runs: &[RunRecord]) -> String {
    let mut needed = MIN_RUNS.saturating_sub(runs.len());
    let mut lines = String::new();
    let add = |c: f64, n: f64, lines: &mut String| {
        *lines += &format!(
            "  C = {c:.2e} FLOPs: N ≈ {n:.2e} non-embedding parameters, D ≈ {:.2e} tokens (≈ C/6N)\n",
            c / (6.0 * n)
        );
    };
    let groups = by_budget(runs);
    for (c, members) in &groups {
        if needed == 0 {
            break;
        }
        let mut ns: Vec<f64> = members.iter().map(|r| r.params).collect();
        ns.sort_by(f64::total_cmp);
        let ratio = if ns.len() >= 2 {
            (ns[ns.len() - 1] / ns[0])
                .powf(1.0 / (ns.len() - 1) as f64)
                .max(1.5)
        } else {
            2.0
        };
        let (mut lo, mut hi) = (ns[0], ns[ns.len() - 1]);
        for k in 0..5usize.saturating_sub(ns.len()) {
            if needed == 0 {
                break;
            }
            let n = if k % 2 == 0 {
                hi *= ratio;
                hi
            } else {
                lo /= ratio;
                lo
            };
            add(*c, n, &mut lines);
            needed -= 1;
        }
    }
    let mut c = groups.last().map_or(1e15, |g| g.0);
    while needed > 0 {
        c *= 4.0;
        let centre = (c / (6.0 * 20.0)).sqrt();
        for k in 0..5 {
            if needed == 0 {
                break;
            }
            add(c, centre * 2f64.powi(k - 2), &mut lines);
            needed -= 1;
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dir: &str, params: f64, flops: f64, budget: Option<f64>) -> RunRecord {
        RunRecord {
            dir: PathBuf::from(dir),
            checkpoint: PathBuf::new(),
            model: GptConfig::tiny(64, 16),
            params,
            params_chinchilla: params,
            tokens: flops / (6.0 * params),
            flops,
            flops_6nd: flops,
            steps: 1,
            loss: Some(3.0),
            data: None,
            budget,
        }
    }

    #[test]
    fn runs_group_by_sweep_budget_or_by_nearby_compute() {
        let runs = vec![
            record("a", 1e5, 1.0e15, None),
            record("b", 2e5, 1.1e15, None),
            record("c", 1e5, 4.0e15, None),
            record("d", 1e5, 9e14, Some(1e15)),
            record("e", 2e5, 1.05e15, Some(1e15)),
        ];
        let groups = by_budget(&runs);
        let names: Vec<Vec<String>> = groups
            .iter()
            .map(|g| g.1.iter().map(|r| r.name()).collect())
            .collect();
        assert_eq!(names, vec![vec!["d", "e"], vec!["a", "b"], vec!["c"]]);
    }

    #[test]
    fn suggestions_fill_up_to_the_minimum() {
        let runs: Vec<RunRecord> = (0..4)
            .map(|i| record(&format!("r{i}"), 1e5 * 2f64.powi(i), 1e15, Some(1e15)))
            .collect();
        let text = suggestions(&runs);
        assert_eq!(text.lines().count(), MIN_RUNS - 4, "{text}");
        assert!(
            text.contains("C = 1.00e15") && text.contains("C = 4.00e15"),
            "{text}"
        );
    }

    #[test]
    fn mixed_data_names_the_groups_and_what_differs() {
        let fp = |train: &str, seq_len| DataFingerprint {
            tokenizer: "gpt2".into(),
            seq_len,
            train: train.into(),
            val: None,
        };
        let mut a = record("runs/a", 1e5, 1e15, None);
        a.data = Some(fp("aaaa", 64));
        let mut b = record("runs/b", 1e5, 1e15, None);
        b.data = Some(fp("bbbb", 128));
        let c = a.clone();
        check_same_data(&[a.clone(), c]).unwrap();
        let err = check_same_data(&[a, b]).unwrap_err().to_string();
        assert!(err.contains("runs/a") && err.contains("runs/b"), "{err}");
        assert!(
            err.contains("seq_len 64 vs 128") && err.contains("aaaa vs bbbb"),
            "{err}"
        );
    }
}
