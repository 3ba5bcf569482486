//! The trainer's data: the training and evaluation shard sets (of one or more shard
//! directories, one tokenizer), and batches turned into
//! tensors on the device.

use anyhow::{bail, Context, Result};
use h5gpt_formats::exit::with_hint;
use h5gpt_formats::split::SplitDirs;
use h5gpt_formats::ShardSet;
use std::path::PathBuf;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Where the evaluation rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalSource {
    /// A `val/` directory beside `train/`.
    ValDir,
    /// The last rows of the training directory, which training never sees.
    HeldOut(usize),
    /// No evaluation.
    None,
}

/// The training set and, when there is one, the evaluation set.
pub struct DataSplit {
    /// Rows training samples from.
    pub train: Arc<ShardSet>,
    /// Rows evaluation reads.
    pub val: Option<Arc<ShardSet>>,
    /// Where `val` came from.
    pub source: EvalSource,
}

fn open(dirs: &[PathBuf], what: &str) -> Result<ShardSet> {
    ShardSet::open(dirs).with_context(|| format!("cannot open {what} shards in {}", describe(dirs)))
}

/// The shard directories, as messages name them.
pub fn describe(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The training and validation directories of `shards`: each is a directory with `train/`
/// (and optionally `val/`) subdirectories, or a plain shard directory (the rule:
/// [`SplitDirs`]).
pub fn split_dirs(shards: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for dir in shards {
        let split = SplitDirs::of(dir);
        train.push(split.train);
        val.extend(split.val);
    }
    (train, val)
}

/// The manifest of the training directories of `shards` taken together: the first one's,
/// with the token counts of all; `None` when the first has none. Directories written with
/// different tokenizers are refused.
pub fn training_params(shards: &[PathBuf]) -> Result<Option<h5gpt_formats::DataParams>> {
    let (train_dirs, _) = split_dirs(shards);
    let mut all = Vec::new();
    for dir in &train_dirs {
        all.push(h5gpt_formats::DataParams::read_from_dir(dir)?);
    }
    h5gpt_formats::manifest::check_same_tokenizer(
        train_dirs
            .iter()
            .map(PathBuf::as_path)
            .zip(all.iter().map(Option::as_ref)),
    )?;
    let mut iter = all.into_iter();
    let Some(Some(mut first)) = iter.next() else {
        return Ok(None);
    };
    for params in iter.flatten() {
        first.h5_dataset_stats.add(&params.h5_dataset_stats);
    }
    Ok(Some(first))
}

/// Opens `shards` (see [`split_dirs`]) as one training set, and the `val/` directories as one
/// evaluation set. Without any `val/`, `held_out(rows of the training set)` rows at its end are
/// kept for evaluation (0: none). Directories written with different tokenizers are refused.
///
/// `val_shards`, when not empty, are the evaluation set instead of the `val/` directories.
pub fn open_split(
    shards: &[PathBuf],
    val_shards: &[PathBuf],
    held_out: impl FnOnce(usize) -> usize,
) -> Result<DataSplit> {
    let (train_dirs, mut val_dirs) = split_dirs(shards);
    if !val_shards.is_empty() {
        val_dirs = val_shards.to_vec();
    }
    let all = open(&train_dirs, "training")?;
    if !val_dirs.is_empty() {
        let val = open(&val_dirs, "validation")?;
        if val.seq_len() != all.seq_len() {
            bail!(
                "{}: rows of {} tokens, but {} has rows of {}",
                describe(&val_dirs),
                val.seq_len(),
                describe(&train_dirs),
                all.seq_len()
            );
        }
        h5gpt_formats::manifest::check_same_tokenizer([
            (train_dirs[0].as_path(), all.data_params()),
            (val_dirs[0].as_path(), val.data_params()),
        ])?;
        return Ok(DataSplit {
            train: Arc::new(all),
            val: Some(Arc::new(val)),
            source: EvalSource::ValDir,
        });
    }
    let n = all.len();
    let held_out = held_out(n);
    if held_out == 0 {
        return Ok(DataSplit {
            train: Arc::new(all),
            val: None,
            source: EvalSource::None,
        });
    }
    if held_out >= n {
        bail!(
            "{}: cannot hold out {held_out} of {n} rows for evaluation",
            describe(&train_dirs)
        );
    }
    Ok(DataSplit {
        train: Arc::new(all.slice(0..n - held_out)),
        val: Some(Arc::new(all.slice(n - held_out..n))),
        source: EvalSource::HeldOut(held_out),
    })
}

/// A weighted blend: each `--shards` entry is a set of its own, with its own evaluation rows.
pub struct BlendData {
    /// Each set's training rows.
    pub sets: Vec<Arc<ShardSet>>,
    /// Each set's evaluation rows, where it has a `val/` directory or a held-out tail.
    pub vals: Vec<Option<Arc<ShardSet>>>,
    /// Rows held out at the end of each set.
    pub held_out: Vec<usize>,
}

/// Opens each of `shards` as a set of a blend (see [`open_split`]; `held_out(i, rows)` is
/// the tail kept for evaluation from set `i`). The sets must share seq_len and tokenizer.
pub fn open_blend(
    shards: &[PathBuf],
    held_out: impl Fn(usize, usize) -> usize,
) -> Result<BlendData> {
    let mut data = BlendData {
        sets: Vec::new(),
        vals: Vec::new(),
        held_out: Vec::new(),
    };
    for (i, dir) in shards.iter().enumerate() {
        let split = open_split(std::slice::from_ref(dir), &[], |rows| held_out(i, rows))?;
        if let Some(first) = data.sets.first() {
            if split.train.seq_len() != first.seq_len() {
                bail!(with_hint(
                    format!(
                        "{}: rows of {} tokens, but {} has rows of {}",
                        dir.display(),
                        split.train.seq_len(),
                        shards[0].display(),
                        first.seq_len(),
                    ),
                    "a blend mixes sets of one --seq-len; re-run preprocess on one of them",
                ));
            }
            h5gpt_formats::manifest::check_same_tokenizer([
                (shards[0].as_path(), first.data_params()),
                (dir.as_path(), split.train.data_params()),
            ])?;
        }
        data.held_out.push(match split.source {
            EvalSource::HeldOut(rows) => rows,
            EvalSource::ValDir | EvalSource::None => 0,
        });
        data.sets.push(split.train);
        data.vals.push(split.val);
    }
    Ok(data)
}

/// Rows held out for evaluation from a plain shard directory of `rows` rows: `wanted`, at
/// most a tenth of the data.
pub fn held_out_rows(rows: usize, wanted: usize) -> usize {
    wanted.min(rows / 10)
}

/// Token ids, labels and attention mask of one micro-batch as `(rows, seq_len)` int64
/// tensors on `device`. On CUDA the host copy is pinned and moved without blocking, so the
/// next batch can be prepared while the GPU works.
pub struct BatchTensors {
    /// `input_ids`.
    pub input_ids: Tensor,
    /// `labels`.
    pub labels: Tensor,
    /// `attention_mask`.
    pub mask: Tensor,
}

impl BatchTensors {
    /// Builds the tensors from row-major buffers, after checking every id is below `vocab`
    /// (the tokenizer's vocabulary size).
    /// `row_name` names a row in errors.
    pub fn new(
        input_ids: &[i32],
        labels: &[i32],
        mask: &[i32],
        rows: usize,
        vocab: usize,
        device: Device,
        row_name: &dyn Fn(usize) -> String,
    ) -> Result<BatchTensors> {
        let seq = input_ids.len() / rows.max(1);
        for (buffer, what) in [(input_ids, "input_ids"), (labels, "labels")] {
            if let Some(at) = buffer.iter().position(|&t| t < 0 || t as usize >= vocab) {
                bail!(with_hint(
                    format!(
                        "{}: {what}[{}] = {} is outside the vocabulary of {vocab} tokens",
                        row_name(at / seq),
                        at % seq,
                        buffer[at],
                    ),
                    "no tokenizer of this vocabulary writes that id: the shard is corrupt or was tokenized with a larger vocabulary (vocab_size in data_params.json); `inspect --verify` lists every such row; re-run preprocess",
                ));
            }
        }
        let shape = [rows as i64, seq as i64];
        let to_device = |v: &[i32]| -> Result<Tensor> {
            let host = Tensor::from_slice(v).view(shape);
            Ok(if device.is_cuda() {
                crate::shim::pin_memory(&host)?
                    .to_device_(device, Kind::Int, true, false)
                    .to_kind(Kind::Int64)
            } else {
                host.to_kind(Kind::Int64)
            })
        };
        Ok(BatchTensors {
            input_ids: to_device(input_ids)?,
            labels: to_device(labels)?,
            mask: to_device(mask)?,
        })
    }
}
