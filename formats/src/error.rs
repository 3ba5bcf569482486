//! The library's error type: every variant names the file it is about.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// What can go wrong reading, writing or loading shards. Messages name the file and end with a
/// hint where there is something to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// A run's record (`state.json`, `segments.jsonl`) is unreadable or inconsistent.
    #[error("{path}: {what}")]
    RunRecord {
        /// The file.
        path: PathBuf,
        /// What is wrong, with a hint where there is something to do.
        what: String,
    },
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// HDF5 refused something.
    #[error("{path}: HDF5: {source}")]
    Hdf5 {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: hdf5::Error,
    },
    /// A directory without any `*.h5` file.
    #[error("{path}: no *.h5 shards found\n---> HINT: point at a directory written by `preprocess` (with --val-fraction: OUT/train or OUT/val), or list shard files")]
    NoShards {
        /// The directory.
        path: PathBuf,
    },
    /// The file is not laid out as a shard.
    #[error("{path}: not a shard: {what}\n---> HINT: a shard holds dataset `data`, int32, shape [n_examples, 3, seq_len] (Cerebras Model Zoo layout)")]
    Layout {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Shards disagree on `seq_len`.
    #[error("{path}: seq_len {found} differs from {expected} in {first}\n---> HINT: all shards of one set must come from one preprocess run (same --seq-len)")]
    SeqLenMismatch {
        /// The disagreeing file.
        path: PathBuf,
        /// Its seq_len.
        found: usize,
        /// The seq_len of the first shard.
        expected: usize,
        /// The first shard.
        first: PathBuf,
    },
    /// Shard directories written with different tokenizers.
    #[error("{path}: tokenized with {found}, but {first} with {expected}\n---> HINT: token ids of different tokenizers mean different things; preprocess every corpus with one tokenizer (the same --tokenizer, or --tokenizer FIRST_DIR/tokenizer.json)")]
    TokenizerMismatch {
        /// The disagreeing directory.
        path: PathBuf,
        /// Its tokenizer.
        found: String,
        /// The first directory's tokenizer.
        expected: String,
        /// The first directory.
        first: PathBuf,
    },
    /// The `n_examples` attribute disagrees with the dataset.
    #[error("{path}: attribute n_examples = {attr} but dataset has {rows} examples")]
    NExamplesMismatch {
        /// The file.
        path: PathBuf,
        /// The attribute's value.
        attr: i64,
        /// Rows in the dataset.
        rows: usize,
    },
    /// The file is shorter than its dataset needs (cut off while copying, say).
    #[error("{path}: truncated: {detail}\n---> HINT: the file was cut short (interrupted copy or download?); copy it again or re-run preprocess")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// `data_params.json` could not be parsed.
    #[error("{path}: invalid data_params.json: {source}")]
    ManifestParse {
        /// The manifest.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// `data_params.json` of a format this reader does not know (a newer writer's).
    #[error("{path}: format_version {found}: written by a newer h5gpt (this one reads format_version {supported} and older)\n---> HINT: read these shards with the h5gpt that wrote them, or a newer one")]
    NewerFormat {
        /// The manifest.
        path: PathBuf,
        /// Its `format_version`.
        found: u32,
        /// The newest this reader knows ([`crate::spec::FORMAT_VERSION`]).
        supported: u32,
    },
    /// The shards disagree with `data_params.json`.
    #[error("{path}: disagrees with data_params.json: {what}\n---> HINT: shards were added, removed or replaced after preprocess wrote the manifest; re-run preprocess or restore the files")]
    ManifestMismatch {
        /// The shard or manifest.
        path: PathBuf,
        /// What disagrees.
        what: String,
    },
    /// A shard's checksum differs from the manifest's.
    #[error("{path}: checksum xxh3-64 {found} but data_params.json records {expected}\n---> HINT: the file changed after it was written (corruption?); re-run preprocess")]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// Recorded checksum.
        expected: String,
        /// Computed checksum.
        found: String,
    },
    /// A loader or writer setting that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl FormatError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FormatError::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps an HDF5 error with its path; HDF5's "truncated file" becomes [`FormatError::Truncated`].
    pub fn hdf5(path: impl Into<PathBuf>, source: hdf5::Error) -> Self {
        let path = path.into();
        let text = source.to_string();
        if text.contains("truncated file") {
            return FormatError::Truncated { path, detail: text };
        }
        FormatError::Hdf5 { path, source }
    }

    /// A layout error.
    pub fn layout(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        FormatError::Layout {
            path: path.into(),
            what: what.into(),
        }
    }
}
