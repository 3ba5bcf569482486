//! The sample audit: which rows every step of a run read, recomputed from the run's own
//! records (`segments.jsonl`, checkpoints, `metrics.jsonl`) without any log of batches.
//!
//! Step `k` ran under the last [`Segment`] (in file order) whose `first_step` is at most `k`;
//! its stream positions are `segment.position + (k − first_step) × global_batch` onwards, cut
//! into ranks and micro-batches by the segment's [`BatchLayout`], and each position's row is
//! a pure function of the seed (see [`crate::stream`] and [`crate::blend`]).

use crate::blend::{Sample, Sampler};
use crate::error::{FormatError, Result};
use crate::run::{read_segments, Segment, CHECKPOINTS, CHECKPOINT_PREFIX, STATE_FILE};
use crate::stream::BatchLayout;
use serde::Serialize;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The rows one rank read in one micro-batch of a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feed {
    /// Data-parallel rank.
    pub rank: usize,
    /// Micro-batch within the step on that rank.
    pub micro: usize,
    /// Stream positions.
    pub positions: Range<u64>,
    /// What each position read.
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

/// A run's schedule, from its records.
#[derive(Debug, Clone)]
pub struct RunAudit {
    run: PathBuf,
    segments: Vec<Segment>,
    end_step: usize,
}

/// Steps a run completed: the newest checkpoint's, or the last step in `metrics.jsonl`,
/// whichever is later.
pub fn completed_steps(run: &Path) -> usize {
    let mut end = 0;
    if let Ok(entries) = std::fs::read_dir(run.join(CHECKPOINTS)) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(step) = name
                .strip_prefix(CHECKPOINT_PREFIX)
                .and_then(|s| s.parse().ok())
            {
                if entry.path().join(STATE_FILE).is_file() {
                    end = end.max(step);
                }
            }
        }
    }
    for line in std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
    {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if let (Some(step), true) = (v["step"].as_u64(), v.get("loss").is_some()) {
                end = end.max(step as usize + 1);
            }
        }
    }
    end
}

impl RunAudit {
    /// Reads the records of run directory `run`.
    pub fn open(run: &Path) -> Result<RunAudit> {
        let segments = read_segments(run)?;
        if segments.is_empty() {
            return Err(FormatError::RunRecord {
                path: run.join(crate::run::SEGMENTS_FILE),
                what: "no segment recorded".into(),
            });
        }
        Ok(RunAudit {
            run: run.to_path_buf(),
            end_step: completed_steps(run),
            segments,
        })
    }

    /// The run directory.
    pub fn run(&self) -> &Path {
        &self.run
    }

    /// Steps the run completed.
    pub fn end_step(&self) -> usize {
        self.end_step
    }

    /// The segments, in file order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The segment that ran step `step`, with its index.
    pub fn segment_for(&self, step: usize) -> Option<(usize, &Segment)> {
        self.segments
            .iter()
            .enumerate()
            .rev()
            .find(|(_, s)| s.first_step <= step)
    }

    fn check_step(&self, step: usize) -> Result<(usize, &Segment)> {
        if step >= self.end_step {
            return Err(FormatError::Config(format!(
                "{}: step {step} was not run (the run completed {} steps, 0..{})",
                self.run.display(),
                self.end_step,
                self.end_step
            )));
        }
        self.segment_for(step).ok_or_else(|| {
            FormatError::Config(format!(
                "{}: no segment covers step {step}",
                self.run.display()
            ))
        })
    }

    /// The rows step `step` fed to each rank and micro-batch.
    pub fn step(&self, step: usize) -> Result<Vec<Feed>> {
        let (_, segment) = self.check_step(step)?;
        let mut sampler = segment.sampler()?;
        Ok(feeds(segment, &mut sampler, step))
    }

    /// Walks every step of the run in order, calling `f(step, feed)` for each feed.
    pub fn walk(&self, mut f: impl FnMut(usize, &Feed)) -> Result<()> {
        let mut current: Option<(usize, Sampler)> = None;
        for step in 0..self.end_step {
            let (index, segment) = self.check_step(step)?;
            if current.as_ref().map(|(i, _)| *i) != Some(index) {
                current = Some((index, segment.sampler()?));
            }
            let (_, sampler) = current.as_mut().expect("sampler");
            for feed in feeds(segment, sampler, step) {
                f(step, &feed);
            }
        }
        Ok(())
    }

    /// Walks the whole schedule and checks that every row is read exactly once per epoch of
    /// its set (at most once in an epoch the run did not finish), and that each step starts
    /// where the one before it ended.
    pub fn check_epochs(&self) -> Result<EpochReport> {
        let first = &self.segments[0];
        let rows = first.set_rows();
        for (i, s) in self.segments.iter().enumerate() {
            if s.set_rows() != rows || s.seed != first.seed {
                return Err(FormatError::Config(format!(
                    "{}: segment {} (from step {}) reads other data ({:?} rows, seed {}) than the first ({:?} rows, seed {}): epochs cannot be checked across it",
                    self.run.display(), i + 1, s.first_step, s.set_rows(), s.seed, rows, first.seed
                )));
            }
        }
        let names: Vec<String> = match &first.blend {
            Some(b) => b
                .sets
                .iter()
                .map(|s| s.path.display().to_string())
                .collect(),
            None => vec![first
                .shards
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" + ")],
        };
        let mut sets: Vec<SetEpochs> = rows
            .iter()
            .zip(names)
            .map(|(&n, name)| SetEpochs {
                name,
                rows: n,
                reads: 0,
                complete_epochs: 0,
                partial_epoch_rows: 0,
                epoch: 0,
                counts: vec![0; n as usize],
            })
            .collect();
        let mut violations = Vec::new();
        let mut expected_position = None;
        let mut last_step = None;
        self.walk(|step, feed| {
            if last_step != Some(step) {
                last_step = Some(step);
                let (_, segment) = self.segment_for(step).expect("checked");
                let start = segment.step_position(step);
                if let Some(expected) = expected_position {
                    if start != expected && violations.len() < 20 {
                        violations.push(format!(
                            "step {step} starts at stream position {start}, but step {} ended at {expected}",
                            step - 1
                        ));
                    }
                }
                expected_position = Some(start + segment.global_batch as u64);
            }
            for sample in &feed.samples {
                let set = &mut sets[sample.set];
                let epoch = sample.set_position / set.rows;
                while epoch > set.epoch {
                    set.close_epoch(&mut violations);
                }
                set.reads += 1;
                let count = &mut set.counts[sample.row as usize];
                *count += 1;
                if *count == 2 && violations.len() < 20 {
                    violations.push(format!(
                        "{}: row {} read twice in epoch {} (again at step {step})",
                        set.name, sample.row, set.epoch
                    ));
                }
            }
        })?;
        for set in &mut sets {
            set.partial_epoch_rows = set.counts.iter().filter(|&&c| c > 0).count() as u64;
        }
        Ok(EpochReport {
            steps: self.end_step,
            segments: self.segments.len(),
            world_sizes: self.segments.iter().map(|s| s.world_size).collect(),
            ok: violations.is_empty(),
            sets: sets.into_iter().map(SetEpochs::report).collect(),
            violations,
        })
    }
}

/// The feeds of step `step` under `segment`.
fn feeds(segment: &Segment, sampler: &mut Sampler, step: usize) -> Vec<Feed> {
    let start = segment.step_position(step);
    let mut out = Vec::new();
    for rank in 0..segment.world_size {
        let layout = BatchLayout {
            global_batch: segment.global_batch,
            micro_batch: segment.micro_batch,
            world_size: segment.world_size,
            rank,
        };
        for micro in 0..layout.micro_steps() {
            let positions = layout.micro_range(start, micro);
            let samples = positions.clone().map(|p| sampler.sample(p)).collect();
            out.push(Feed {
                rank,
                micro,
                positions,
                samples,
            });
        }
    }
    out
}

struct SetEpochs {
    name: String,
    rows: u64,
    reads: u64,
    complete_epochs: u64,
    partial_epoch_rows: u64,
    epoch: u64,
    counts: Vec<u32>,
}

impl SetEpochs {
    fn close_epoch(&mut self, violations: &mut Vec<String>) {
        let missing = self.counts.iter().filter(|&&c| c == 0).count();
        if missing > 0 && violations.len() < 20 {
            violations.push(format!(
                "{}: epoch {} ended with {missing} of {} rows never read",
                self.name, self.epoch, self.rows
            ));
        }
        self.complete_epochs += 1;
        self.epoch += 1;
        self.counts.iter_mut().for_each(|c| *c = 0);
    }

    fn report(self) -> SetEpochReport {
        SetEpochReport {
            name: self.name,
            rows: self.rows,
            reads: self.reads,
            complete_epochs: self.complete_epochs,
            partial_epoch_rows: self.partial_epoch_rows,
        }
    }
}

/// One set's epochs over a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetEpochReport {
    /// The set (its directory).
    pub name: String,
    /// Rows in the set.
    pub rows: u64,
    /// Rows read from it over the run.
    pub reads: u64,
    /// Epochs completed (for a blend: how many times the set ran out and restarted with a
    /// new permutation).
    pub complete_epochs: u64,
    /// Distinct rows read in the epoch in progress.
    pub partial_epoch_rows: u64,
}

/// What [`RunAudit::check_epochs`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EpochReport {
    /// Steps walked.
    pub steps: usize,
    /// Segments (starts and resumes) of the run.
    pub segments: usize,
    /// World size of each segment.
    pub world_sizes: Vec<usize>,
    /// Per set.
    pub sets: Vec<SetEpochReport>,
    /// Whether every row was read exactly once per completed epoch and at most once in the
    /// epoch in progress, with no gap or overlap between steps.
    pub ok: bool,
    /// What is wrong (the first 20).
    pub violations: Vec<String>,
}
