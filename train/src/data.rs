//! The trainer's data: the training and evaluation shard sets, and batches turned into
//! tensors on the device.

use anyhow::{bail, Context, Result};
use h5gpt_formats::ShardSet;
use std::path::Path;
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

fn open(dir: &Path, what: &str) -> Result<ShardSet> {
    ShardSet::open(&[dir])
        .with_context(|| format!("cannot open {what} shards in {}", dir.display()))
}

/// Opens `shards`: a directory with `train/` (and optionally `val/`) subdirectories, or a
/// plain shard directory. For a plain one, `held_out` rows at its end are kept for
/// evaluation (0: none).
pub fn open_split(shards: &Path, held_out: usize) -> Result<DataSplit> {
    let train_dir = shards.join("train");
    if train_dir.is_dir() {
        let train = open(&train_dir, "training")?;
        let val_dir = shards.join("val");
        let val = if val_dir.is_dir() {
            let val = open(&val_dir, "validation")?;
            if val.seq_len() != train.seq_len() {
                bail!(
                    "{}: rows of {} tokens, but {} has rows of {}",
                    val_dir.display(),
                    val.seq_len(),
                    train_dir.display(),
                    train.seq_len()
                );
            }
            Some(Arc::new(val))
        } else {
            None
        };
        let source = if val.is_some() {
            EvalSource::ValDir
        } else {
            EvalSource::None
        };
        return Ok(DataSplit {
            train: Arc::new(train),
            val,
            source,
        });
    }
    let all = open(shards, "training")?;
    if held_out == 0 {
        return Ok(DataSplit {
            train: Arc::new(all),
            val: None,
            source: EvalSource::None,
        });
    }
    let n = all.len();
    if held_out >= n {
        bail!(
            "{}: cannot hold out {held_out} of {n} rows for evaluation",
            shards.display()
        );
    }
    Ok(DataSplit {
        train: Arc::new(all.slice(0..n - held_out)),
        val: Some(Arc::new(all.slice(n - held_out..n))),
        source: EvalSource::HeldOut(held_out),
    })
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
    /// Builds the tensors from row-major buffers, after checking every id fits `vocab`.
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
                bail!(
                    "{}: {what}[{}] = {} does not fit the model's vocabulary of {vocab}\n---> HINT: the shards were tokenized with a larger vocabulary than the model has: train with the shards' tokenizer (vocab_size in data_params.json) or re-run preprocess",
                    row_name(at / seq),
                    at % seq,
                    buffer[at]
                );
            }
        }
        let shape = [rows as i64, seq as i64];
        let to_device = |v: &[i32]| {
            let host = Tensor::from_slice(v).view(shape);
            if device.is_cuda() {
                host.pin_memory(device)
                    .to_device_(device, Kind::Int, true, false)
                    .to_kind(Kind::Int64)
            } else {
                host.to_kind(Kind::Int64)
            }
        };
        Ok(BatchTensors {
            input_ids: to_device(input_ids),
            labels: to_device(labels),
            mask: to_device(mask),
        })
    }
}
