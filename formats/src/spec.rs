//! The shard format, as constants and small types.
//!
//! One HDF5 file per shard (`*.h5`) holds one dataset, [`DATASET_NAME`], of dtype int32
//! little-endian and shape `[n_examples, 3, seq_len]`. For every example, row
//! [`ROW_INPUT_IDS`] holds `input_ids`, row [`ROW_ATTENTION_MASK`] the `attention_mask`
//! (Cerebras calls it `input_mask`) and row [`ROW_LABELS`] the `labels`. The file carries the
//! scalar int64 attribute [`N_EXAMPLES_ATTR`]. This is the layout Cerebras Model Zoo's
//! `create_hdf5_dataset.py` writes and its `GptHDF5DataProcessor` reads.

use serde::{Deserialize, Serialize};

/// Name of the one dataset inside every shard.
pub const DATASET_NAME: &str = "data";
/// Name of the file attribute holding the number of examples (int64 scalar).
pub const N_EXAMPLES_ATTR: &str = "n_examples";
/// Rows per example: `input_ids`, `attention_mask`, `labels`.
pub const ROWS_PER_EXAMPLE: usize = 3;
/// Index of `input_ids` among an example's rows.
pub const ROW_INPUT_IDS: usize = 0;
/// Index of `attention_mask` among an example's rows.
pub const ROW_ATTENTION_MASK: usize = 1;
/// Index of `labels` among an example's rows.
pub const ROW_LABELS: usize = 2;
/// Bytes per stored token (int32).
pub const TOKEN_BYTES: usize = 4;
/// The manifest that sits beside the shards.
pub const DATA_PARAMS_FILE: &str = "data_params.json";
/// Version of our own `h5gpt` section of `data_params.json`. Raised only by a change an older
/// reader would misread; fields added later (counts, notes) are additive and keep it. A reader
/// refuses a manifest of a newer version ("written by a newer h5gpt").
pub const FORMAT_VERSION: u32 = 1;
/// GPT-2's `<|endoftext|>` id; also the pad id of GPT-2 shards.
pub const GPT2_EOS_ID: u32 = 50256;
/// GPT-2's vocabulary size.
pub const GPT2_VOCAB_SIZE: u32 = 50257;
/// The largest vocabulary any h5gpt tool accepts: 2^24 = 16,777,216 tokens (64 times GPT-4o's
/// 200k; far below the 2^31 − 1 that the shards' int32 ids could hold). A tokenizer with an id
/// at or beyond it is refused when it is read.
pub const MAX_VOCAB_SIZE: u32 = 1 << 24;
/// Suffix of every complete shard. Temporary files never end in it.
pub const SHARD_SUFFIX: &str = ".h5";

/// File name of shard number `index`: `shard-000000.h5`, `shard-000001.h5`, … (sorts by index).
pub fn shard_file_name(index: usize) -> String {
    format!("shard-{index:06}{SHARD_SUFFIX}")
}

/// How token streams were cut into rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Packing {
    /// Documents joined into one stream, cut into windows that overlap by one token
    /// (`labels[r][-1] == input_ids[r+1][0]`), across shard boundaries too.
    Stream,
    /// One document per row (long documents split into windows), each padded.
    Document,
}

impl std::fmt::Display for Packing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Packing::Stream => "stream",
            Packing::Document => "document",
        })
    }
}

/// How the dataset is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Contiguous and uncompressed: memory-mappable (the default).
    #[default]
    None,
    /// Chunks of one example `(1, 3, seq_len)` with deflate, as Cerebras writes them.
    Gzip,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        })
    }
}

/// Deflate level used by [`Compression::Gzip`] (h5py's default for `compression="gzip"`).
pub const GZIP_LEVEL: u8 = 4;
