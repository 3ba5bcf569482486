//! Where a run's figures go: the console (through the progress bar), the training and
//! validation curves, `metrics.jsonl`, TensorBoard's event file and `loss.png`, all behind one
//! [`RunLog`]. Ranks other than 0 have a quiet log that writes nothing.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Training and validation curves for `loss.png`, as (tokens, loss).
#[derive(Default)]
struct Curves {
    train: Vec<(u64, f64)>,
    val: Vec<(u64, f64)>,
    /// Each task's headline accuracy, by task name.
    tasks: std::collections::BTreeMap<String, Vec<(u64, f64)>>,
}

/// The accuracy a task's curve shows: `acc_norm` where it has one (multiple choice), else
/// `acc` (LAMBADA).
fn headline(row: &serde_json::Value) -> Option<f64> {
    row["acc_norm"].as_f64().or_else(|| row["acc"].as_f64())
}

/// A run's console, curves, `metrics.jsonl` and loss plot.
pub(crate) struct RunLog<'a> {
    bar: ProgressBar,
    print: &'a mut dyn FnMut(&str),
    /// Ranks other than 0 print and write nothing.
    quiet: bool,
    /// Rank 0's `metrics.jsonl`, once [`RunLog::open_metrics`] has reopened it.
    metrics: Option<std::fs::File>,
    curves: Curves,
    /// The run directory (where `metrics.jsonl` and `loss.png` go).
    out: PathBuf,
    /// Where TensorBoard's events go (`None`: nowhere).
    tensorboard: Option<PathBuf>,
    /// Rank 0's event file, once [`RunLog::open_metrics`] has reopened it.
    events: Option<crate::tensorboard::EventWriter>,
}

impl<'a> RunLog<'a> {
    /// A log printing through `print` (nothing when `quiet`), writing into `out`.
    pub(crate) fn new(out: &Path, print: &'a mut dyn FnMut(&str), quiet: bool) -> RunLog<'a> {
        RunLog {
            bar: ProgressBar::hidden(),
            print,
            quiet,
            metrics: None,
            curves: Curves::default(),
            out: out.to_path_buf(),
            tensorboard: None,
            events: None,
        }
    }

    /// Writes TensorBoard events into `dir` (from [`RunLog::open_metrics`] on).
    pub(crate) fn set_tensorboard(&mut self, dir: Option<PathBuf>) {
        self.tensorboard = dir;
    }

    /// Prints a line above the progress bar.
    pub(crate) fn line(&mut self, line: &str) {
        if self.quiet {
            return;
        }
        let print = &mut self.print;
        self.bar.suspend(|| print(line));
    }

    /// Reopens `metrics.jsonl` (rank 0), keeping the rows a resumed run does not redo (steps
    /// before `start_step`, validations at or before it), and takes up the curves they hold.
    pub(crate) fn open_metrics(&mut self, start_step: usize) -> Result<()> {
        if self.quiet {
            return Ok(());
        }
        let path = self.out.join("metrics.jsonl");
        let mut kept = Vec::new();
        for line in std::fs::read_to_string(&path).unwrap_or_default().lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let (Some(step), Some(tokens)) = (v["step"].as_u64(), v["tokens"].as_u64()) else {
                continue;
            };
            let step = step as usize;
            if let Some(task) = v["task"].as_str() {
                // Task rows are kept as validations are.
                if step < start_step || (step == start_step && start_step > 0) {
                    if let Some(acc) = headline(&v) {
                        let curve = self.curves.tasks.entry(task.to_owned()).or_default();
                        curve.push((tokens, acc));
                    }
                    kept.push(line.to_owned());
                }
            } else if let Some(val) = v["val_loss"].as_f64() {
                // A resumed run keeps the validation at its checkpoint's step; a run that
                // starts over from step 0 runs the step-0 validation again.
                if step < start_step || (step == start_step && start_step > 0) {
                    self.curves.val.push((tokens, val));
                    kept.push(line.to_owned());
                }
            } else if step < start_step {
                if let Some(loss) = v["loss"].as_f64() {
                    self.curves.train.push((tokens, loss));
                }
                kept.push(line.to_owned());
            }
        }
        let mut file = std::fs::File::create(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        for line in kept {
            writeln!(file, "{line}")?;
        }
        self.metrics = Some(file);
        if let Some(dir) = &self.tensorboard {
            // Events past the checkpoint are dropped the same way (see crate::tensorboard).
            self.events = Some(crate::tensorboard::EventWriter::open(dir, start_step)?);
        }
        Ok(())
    }

    /// Draws a progress bar of `total` steps from `start` (on the terminal's stderr).
    pub(crate) fn show_progress(&mut self, start: usize, total: usize) {
        self.bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        self.bar.set_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {pos}/{len} steps [{elapsed_precise} < {eta_precise}] {msg}",
            )
            .expect("valid template"),
        );
        self.bar.set_position(start as u64);
        self.bar.reset_eta();
    }

    /// Advances the progress bar by one step whose loss was `loss`.
    pub(crate) fn tick(&mut self, loss: f32) {
        self.bar.set_message(format!("loss {loss:.4}"));
        self.bar.inc(1);
    }

    /// Records a training step: its `metrics.jsonl` row and its point of the curve.
    pub(crate) fn step_row(&mut self, row: &crate::trainer::StepMetrics) -> Result<()> {
        self.append(row)?;
        if let Some(events) = &mut self.events {
            let mut scalars = vec![
                ("train/loss", f64::from(row.loss)),
                ("train/lr", row.lr),
                ("train/grad_norm", row.norm),
                ("train/tok_per_s", row.tok_per_s),
                ("train/tokens", row.tokens as f64),
            ];
            scalars.extend(row.mfu.map(|m| ("train/mfu", m)));
            scalars.extend(row.peak_mem_gib.map(|m| ("train/peak_mem_gib", m)));
            events.scalars(row.step, &scalars)?;
        }
        if row.loss.is_finite() {
            self.curves.train.push((row.tokens, row.loss as f64));
        }
        Ok(())
    }

    /// Records a validation: its `metrics.jsonl` row and its point of the curve.
    pub(crate) fn eval_row(&mut self, row: &crate::trainer::EvalMetrics) -> Result<()> {
        self.append(row)?;
        self.curves.val.push((row.tokens, row.val_loss));
        if let Some(events) = &mut self.events {
            let tags: Vec<String> = row
                .val_loss_sets
                .keys()
                .map(|name| format!("val/loss/{name}"))
                .collect();
            let mut scalars = vec![("val/loss", row.val_loss)];
            scalars.extend(
                tags.iter()
                    .map(String::as_str)
                    .zip(row.val_loss_sets.values().copied()),
            );
            events.scalars(row.step, &scalars)?;
        }
        Ok(())
    }

    /// Records a task evaluation: its `metrics.jsonl` row, its TensorBoard scalars
    /// (`task/NAME/METRIC`) and its point of the accuracy curve.
    pub(crate) fn task_row(&mut self, row: &crate::trainer::TaskMetrics) -> Result<()> {
        self.append(row)?;
        let value = serde_json::to_value(row)?;
        if let Some(acc) = headline(&value) {
            let curve = self.curves.tasks.entry(row.task.clone()).or_default();
            curve.push((row.tokens, acc));
        }
        if let Some(events) = &mut self.events {
            let tags: Vec<(String, f64)> = row
                .metrics
                .iter()
                .map(|(name, v)| (format!("task/{}/{name}", row.task), *v))
                .collect();
            let scalars: Vec<(&str, f64)> = tags.iter().map(|(t, v)| (t.as_str(), *v)).collect();
            events.scalars(row.step, &scalars)?;
        }
        Ok(())
    }

    /// Records the final validation (`--final-eval`): a `final_val_loss` row of `metrics.jsonl`.
    pub(crate) fn final_eval_row(&mut self, row: &crate::trainer::FinalEvalMetrics) -> Result<()> {
        if let Some(events) = &mut self.events {
            events.scalars(row.step, &[("final/val_loss", row.final_val_loss)])?;
        }
        self.append(row)
    }

    fn append(&mut self, row: &impl Serialize) -> Result<()> {
        if let Some(file) = &mut self.metrics {
            writeln!(file, "{}", serde_json::to_string(row)?)?;
        }
        Ok(())
    }

    /// Flushes `metrics.jsonl` and the TensorBoard events and redraws `loss.png` (rank 0).
    pub(crate) fn plot(&mut self) -> Result<()> {
        if let Some(events) = &mut self.events {
            events.flush()?;
        }
        if let Some(file) = &mut self.metrics {
            file.flush()?;
            self.draw();
        }
        Ok(())
    }

    /// Clears the progress bar, syncs `metrics.jsonl` and draws the final `loss.png`.
    pub(crate) fn finish(&mut self) -> Result<()> {
        self.bar.finish_and_clear();
        if let Some(events) = &mut self.events {
            events.sync()?;
        }
        if let Some(file) = &self.metrics {
            file.sync_all()?;
            self.draw();
        }
        Ok(())
    }

    /// Draws `loss.png`; a failure is reported, not fatal.
    fn draw(&mut self) {
        let path = self.out.join("loss.png");
        let title = self
            .out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tasks: Vec<(&str, &[(u64, f64)])> = self
            .curves
            .tasks
            .iter()
            .map(|(name, curve)| (name.as_str(), curve.as_slice()))
            .collect();
        if let Err(e) = h5gpt_core::plot::write_run_plot(
            &path,
            &self.curves.train,
            &self.curves.val,
            &tasks,
            &title,
        ) {
            self.line(&format!("warning: cannot draw {}: {e}", path.display()));
        }
    }
}
