//! The records of a training run, readable without libtorch (so `inspect` can audit runs):
//! a checkpoint's `state.json` ([`CheckpointState`]) and the run's append-only history
//! `RUN/segments.jsonl` ([`Segment`], one line per start or resume).
//!
//! Checkpoints keep only the newest few and `metrics.jsonl` is rewritten on resume, so the
//! segments are what tells, for any step the run took, which stream positions it read: the
//! sample stream is a pure function of the seed and the position, so nothing else is logged.

use crate::blend::{BlendRecord, Sampler};
use crate::error::{FormatError, Result};
use crate::fsio::fsync_file;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The run's history file, in the run directory.
pub const SEGMENTS_FILE: &str = "segments.jsonl";

/// A checkpoint's file with its [`CheckpointState`].
pub const STATE_FILE: &str = "state.json";

/// The folder of a run that holds its checkpoints.
pub const CHECKPOINTS: &str = "checkpoints";

/// Version of the [`Segment`] lines this build writes. 2: `shuffle` (absent: true).
pub const SEGMENT_VERSION: u32 = 2;

/// A checkpoint's `state.json`. `M` is the model's shape: `train` reads it as its model
/// configuration, tools without the model read it as plain JSON (the default).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState<M = serde_json::Value> {
    /// Optimizer steps completed.
    pub step: usize,
    /// Loader stream position after that step.
    pub position: u64,
    /// Sample-stream seed.
    pub seed: u64,
    /// Samples per optimizer step.
    pub global_batch: usize,
    /// Tokens per row of the training data.
    pub seq_len: usize,
    /// Rows at the end of a plain shard directory held out for evaluation.
    #[serde(default)]
    pub held_out: usize,
    /// Model shape.
    pub model: M,
    /// Tokenizer of the training data, as `data_params.json` names it (a label: the
    /// checkpoint's `tokenizer.json`, when it has one, is the tokenizer's identity).
    #[serde(default = "default_tokenizer")]
    pub tokenizer: String,
    /// Its end-of-document id (`None` in checkpoints of older versions: GPT-2's).
    #[serde(default)]
    pub eos_id: Option<u32>,
    /// The weighted blend the run reads (`None`: its shard sets are read as one; absent from
    /// checkpoints of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blend: Option<BlendRecord>,
    /// [`STATE_VERSION`] of the writer; 0 in checkpoints written before versions existed.
    #[serde(default)]
    pub version: u32,
    /// xxh3-64 of the checkpoint's other files (`model.safetensors`, `optimizer.safetensors`,
    /// `tokenizer.json`), by name, checked before a resume loads it. Empty in version-0
    /// checkpoints.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub files: std::collections::BTreeMap<String, String>,
}

/// Version of the `state.json` this build writes. 1: `version` and the per-file checksums
/// `files` (a file without them is version 0 and still loads). 2: the model may carry
/// `ffn_size`, `layer_norm_eps` and `init` (absent: GPT-2's, so versions 0 and 1 load).
pub const STATE_VERSION: u32 = 2;

fn default_tokenizer() -> String {
    "gpt2".into()
}

impl<M: serde::de::DeserializeOwned> CheckpointState<M> {
    /// Reads `checkpoint/state.json`.
    pub fn read(checkpoint: &Path) -> Result<Self> {
        let path = checkpoint.join(STATE_FILE);
        let bytes = std::fs::read(&path).map_err(|e| FormatError::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| FormatError::RunRecord {
            path,
            what: format!("unreadable: {e}"),
        })
    }
}

/// One start or resume of a run: a line of `RUN/segments.jsonl`. The run fed step `k` from
/// the last segment (in file order) whose `first_step` is at most `k`: a resume from an older
/// checkpoint redoes the steps after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Segment {
    /// [`SEGMENT_VERSION`] of the writer.
    pub version: u32,
    /// The first step this segment runs (0, or the checkpoint's step it resumed from).
    pub first_step: usize,
    /// Stream position at the start of `first_step`.
    pub position: u64,
    /// Sample-stream seed.
    pub seed: u64,
    /// Samples per optimizer step, over all ranks.
    pub global_batch: usize,
    /// Samples per forward/backward pass on one rank.
    pub micro_batch: usize,
    /// Data-parallel ranks.
    pub world_size: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// The shard directories as given to `train` (each plain, or with `train/` and `val/`).
    pub shards: Vec<PathBuf>,
    /// The training directories they resolve to, absolute, in order: the rows of the
    /// stream are theirs, read as one set.
    pub train_dirs: Vec<PathBuf>,
    /// Rows in the sample stream (the training set, without held-out rows).
    pub train_rows: u64,
    /// Rows at the end of the training directories held out for evaluation.
    #[serde(default)]
    pub held_out: usize,
    /// The weighted blend, when `--weights` (or `[[blend]]`) made one; `None`: the
    /// directories are read as one set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blend: Option<BlendRecord>,
    /// Whether the rows are read in a shuffled order (`false`: in file order, epoch after
    /// epoch; `train --shuffle false`). Absent (true) in segments of version 1.
    #[serde(default = "shuffled", skip_serializing_if = "is_shuffled")]
    pub shuffle: bool,
}

fn shuffled() -> bool {
    true
}

fn is_shuffled(shuffle: &bool) -> bool {
    *shuffle
}

impl Segment {
    /// The sampler this segment read with.
    pub fn sampler(&self) -> Result<Sampler> {
        match &self.blend {
            Some(blend) => blend.sampler(self.seed),
            None if !self.shuffle => Ok(Sampler::Plain(crate::stream::SampleStream::sequential(
                self.train_rows,
            ))),
            None => Sampler::new(&[self.train_rows], &[], self.seed),
        }
    }

    /// Rows per set (one set unless blended).
    pub fn set_rows(&self) -> Vec<u64> {
        match &self.blend {
            Some(blend) => blend.sets.iter().map(|s| s.rows).collect(),
            None => vec![self.train_rows],
        }
    }

    /// The stream position at which step `step` (≥ `first_step`) starts.
    pub fn step_position(&self, step: usize) -> u64 {
        self.position + (step - self.first_step) as u64 * self.global_batch as u64
    }
}

/// Appends `segment` as one line to `run/segments.jsonl` and syncs it to disk.
pub fn append_segment(run: &Path, segment: &Segment) -> Result<()> {
    let path = run.join(SEGMENTS_FILE);
    let mut line = serde_json::to_vec(segment).expect("segment serializes");
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| FormatError::io(&path, e))?;
    file.write_all(&line)
        .map_err(|e| FormatError::io(&path, e))?;
    drop(file);
    fsync_file(&path)
}

/// Reads `run/segments.jsonl`, in file order. A last line cut short by a crash is ignored.
pub fn read_segments(run: &Path) -> Result<Vec<Segment>> {
    let path = run.join(SEGMENTS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FormatError::RunRecord {
                path,
                what: "no such file\n---> HINT: the run's history is written by `train` at every start and resume (runs of versions before it have none); pass a run directory written by `train`".into(),
            })
        }
        Err(e) => return Err(FormatError::io(&path, e)),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut segments = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Segment>(line) {
            Ok(segment) => segments.push(segment),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) => {
                return Err(FormatError::RunRecord {
                    path,
                    what: format!("line {}: {e}", i + 1),
                })
            }
        }
    }
    Ok(segments)
}

#[cfg(test)]
mod segment_tests {
    use super::Segment;

    /// A version-1 line (before `shuffle`) reads as shuffled; `shuffle: false` reads in order.
    #[test]
    fn a_segment_written_before_shuffle_existed_is_shuffled() {
        let v1 = r#"{"version":1,"first_step":0,"position":0,"seed":7,"global_batch":2,"micro_batch":2,"world_size":1,"seq_len":4,"shards":["d"],"train_dirs":["d"],"train_rows":6,"held_out":0}"#;
        let segment: Segment = serde_json::from_str(v1).unwrap();
        assert!(segment.shuffle);
        let mut sequential = Segment {
            shuffle: false,
            ..segment
        };
        let mut sampler = sequential.sampler().unwrap();
        let rows: Vec<u64> = (0..7).map(|p| sampler.sample(p).id).collect();
        assert_eq!(rows, [0, 1, 2, 3, 4, 5, 0]);
        sequential.shuffle = true;
        let line = serde_json::to_string(&sequential).unwrap();
        assert!(!line.contains("shuffle"), "the default is left out: {line}");
    }
}
