//! The records of a training run, readable without libtorch (so `inspect` can audit runs):
//! a checkpoint's `state.json` ([`CheckpointState`]) and the run's append-only history
//! `RUN/segments.jsonl` ([`Segment`], one line per start or resume).
//!
//! Checkpoints keep only the newest few and `metrics.jsonl` is rewritten on resume, so the
//! segments are what tells, for any step the run took, which stream positions it read: the
//! sample stream is a pure function of the seed and the position, so nothing else is logged.

use crate::blend::{BlendRecord, Sampler};
use crate::error::{FormatError, Result};
use crate::exit::with_hint;
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

/// The start of every checkpoint folder's name: `step-` and the step, eight digits
/// (`step-00000500`; `h5gpt_train::checkpoint::checkpoint_name`).
pub const CHECKPOINT_PREFIX: &str = "step-";

/// Version of the [`Segment`] lines this build writes. 2: `shuffle` (absent: true). 3:
/// `data_change` (absent: none).
pub const SEGMENT_VERSION: u32 = 3;

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
    /// What the run trained on, so that runs on different data can be told apart (`plan fit`
    /// refuses to mix them). `None` in checkpoints of versions before 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataFingerprint>,
    /// The loss on the whole evaluation set after the last step (`train --final-eval`): the
    /// run's final validation loss. `None` when not asked for, in checkpoints before the last
    /// step, and in checkpoints of versions before 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_eval: Option<FinalEval>,
}

/// Version of the `state.json` this build writes. 1: `version` and the per-file checksums
/// `files` (a file without them is version 0 and still loads). 2: the model may carry
/// `ffn_size`, `layer_norm_eps` and `init` (absent: GPT-2's, so versions 0 and 1 load). 3: the
/// data fingerprint `data` and the final validation `final_eval` (absent from older files,
/// which still load).
pub const STATE_VERSION: u32 = 3;

/// The identity of a run's data: tokenizer, row length, and the content of its training and
/// validation sets (from their manifests' shard checksums, so a copied or moved shard
/// directory keeps its fingerprint).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DataFingerprint {
    /// The tokenizer's identity ([`crate::manifest::TokenizerIdentity::key`]).
    pub tokenizer: String,
    /// Tokens per row.
    pub seq_len: usize,
    /// xxh3-64 over the training directories' shard checksums (or, for a directory whose
    /// manifest lists none, its `data_params.json`), in order.
    pub train: String,
    /// The same over the validation directories; `None` when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<String>,
}

impl DataFingerprint {
    /// The fingerprint of training directories `train` and validation directories `val`
    /// (each with its `data_params.json`); `Ok(None)` when a training directory has no
    /// manifest (nothing identifies its data).
    pub fn of_dirs(train: &[PathBuf], val: &[PathBuf], seq_len: usize) -> Result<Option<Self>> {
        let mut tokenizer = None;
        let mut digest = |dirs: &[PathBuf]| -> Result<Option<String>> {
            let mut text = String::new();
            for dir in dirs {
                let Some(params) = crate::DataParams::read_from_dir(dir)? else {
                    return Ok(None);
                };
                tokenizer.get_or_insert_with(|| params.tokenizer_identity().key());
                match params.h5gpt.as_ref().filter(|s| !s.shards.is_empty()) {
                    Some(section) => {
                        for shard in &section.shards {
                            text += &format!("{} {}\n", shard.n_examples, shard.xxh3_64);
                        }
                    }
                    None => text += &crate::checksum::bytes_xxh3_64(&params.to_bytes()),
                }
                text += "|\n";
            }
            Ok(Some(crate::checksum::bytes_xxh3_64(text.as_bytes())))
        };
        let Some(train) = digest(train)? else {
            return Ok(None);
        };
        let val = if val.is_empty() { None } else { digest(val)? };
        Ok(Some(DataFingerprint {
            tokenizer: tokenizer.unwrap_or_default(),
            seq_len,
            train,
            val,
        }))
    }

    /// How `self` and `other` differ, in words (empty when they do not).
    pub fn differences(&self, other: &DataFingerprint) -> Vec<String> {
        let mut out = Vec::new();
        if self.tokenizer != other.tokenizer {
            out.push(format!(
                "tokenizer `{}` vs `{}`",
                self.tokenizer, other.tokenizer
            ));
        }
        if self.seq_len != other.seq_len {
            out.push(format!("seq_len {} vs {}", self.seq_len, other.seq_len));
        }
        if self.train != other.train {
            out.push(format!("training data {} vs {}", self.train, other.train));
        }
        if self.val != other.val {
            let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
            out.push(format!(
                "validation data {} vs {}",
                show(&self.val),
                show(&other.val)
            ));
        }
        out
    }
}

/// The loss on the whole evaluation set after a run's last step.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct FinalEval {
    /// Steps completed when it was measured.
    pub step: usize,
    /// Mean cross-entropy per counted token (nats).
    pub loss: f64,
    /// Rows evaluated (every row of the evaluation set).
    pub rows: usize,
    /// Tokens counted.
    pub tokens: u64,
}

/// Checkpoint directories (`step-NNNNNNNN`) of run directory `run`, oldest first; complete or
/// not.
pub fn checkpoint_dirs(run: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(run.join(CHECKPOINTS))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(CHECKPOINT_PREFIX))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The newest complete checkpoint of run directory `run` (one that has its `state.json`).
pub fn latest_checkpoint(run: &Path) -> Option<PathBuf> {
    checkpoint_dirs(run)
        .into_iter()
        .rev()
        .find(|p| p.join(STATE_FILE).is_file())
}

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
    /// A resume that changed what the run reads (`train --allow-data-change`): what changed,
    /// in words. `None` for a start, a resume on the same data, and segments of versions
    /// before 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_change: Option<String>,
}

fn shuffled() -> bool {
    true
}

fn is_shuffled(shuffle: &bool) -> bool {
    *shuffle
}

/// The segment that fed step `step`: the last (in file order) whose `first_step` is at most
/// `step`.
pub fn segment_of_step(segments: &[Segment], step: usize) -> Option<&Segment> {
    segments.iter().rev().find(|s| s.first_step <= step)
}

impl Segment {
    /// Checks the numbers a reader divides by or samples from: the batch layout (every size at
    /// least 1, dividing evenly), `seq_len`, and at least one training row in every set.
    pub fn check(&self) -> std::result::Result<(), String> {
        crate::stream::BatchLayout {
            global_batch: self.global_batch,
            micro_batch: self.micro_batch,
            world_size: self.world_size,
            rank: 0,
        }
        .validate()
        .map_err(|e| e.to_string())?;
        if self.seq_len == 0 {
            return Err("seq_len 0: must be at least 1".into());
        }
        if self.set_rows().contains(&0) {
            return Err("a training set of 0 rows: a run reads at least one".into());
        }
        Ok(())
    }

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
                what: with_hint(
                    "no such file",
                    "the run's history is written by `train` at every start and resume (runs of versions before it have none); pass a run directory written by `train`",
                ),
            })
        }
        Err(e) => return Err(FormatError::io(&path, e)),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut segments = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Segment>(line) {
            Ok(segment) => {
                segment.check().map_err(|what| FormatError::RunRecord {
                    path: path.clone(),
                    what: format!("line {}: {what}", i + 1),
                })?;
                segments.push(segment)
            }
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

    /// Issue 24 item 3: `inspect --run` divided by zero (or sampled an empty stream) on a
    /// segment with `micro_batch: 0` or `train_rows: 0`; the reader refuses such a line.
    #[test]
    fn a_segment_with_zero_sizes_is_refused_naming_the_line() {
        let good = r#"{"version":1,"first_step":0,"position":0,"seed":7,"global_batch":2,"micro_batch":2,"world_size":1,"seq_len":4,"shards":["d"],"train_dirs":["d"],"train_rows":6,"held_out":0}"#;
        let tmp = tempfile::tempdir().unwrap();
        for (field, bad) in [
            ("micro_batch", r#""micro_batch":0"#),
            ("train_rows", r#""train_rows":0"#),
            ("global_batch", r#""global_batch":0"#),
            ("world_size", r#""world_size":0"#),
            ("seq_len", r#""seq_len":0"#),
        ] {
            let from = format!(
                r#""{field}":{}"#,
                if field == "train_rows" {
                    6
                } else if field == "seq_len" {
                    4
                } else if field == "world_size" {
                    1
                } else {
                    2
                }
            );
            let line = good.replace(&from, bad);
            assert_ne!(line, good, "{field}");
            std::fs::write(
                tmp.path().join(super::SEGMENTS_FILE),
                format!("{good}\n{line}\n"),
            )
            .unwrap();
            let err = super::read_segments(tmp.path()).unwrap_err().to_string();
            assert!(
                err.contains("segments.jsonl") && err.contains("line 2"),
                "{field}: {err}"
            );
        }
    }

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
        assert!(!line.contains("data_change"), "{line}");
        assert_eq!(sequential.data_change, None, "absent before version 3");
    }
}
