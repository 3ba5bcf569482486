//! # h5gpt-formats
//!
//! The shard format, its manifest and the training data loader of h5gpt.
//!
//! - [`audit`]: which rows each step of a run read, and the per-epoch coverage proof.
//! - [`blend`]: weighted blends of several shard sets.
//! - [`checksum`]: xxh3-64 checksums of whole shard files.
//! - [`error`]: the library's error type ([`FormatError`]), naming the file it is about.
//! - [`exit`]: exit codes, the usage error and [`exit::with_hint`].
//! - [`fault`]: the `H5GPT_FAULT` testing aids (only with the `fault-injection` feature).
//! - [`fsio`]: crash-safe file helpers (temporary name, fsync, rename).
//! - [`loader`]: the prefetching batch loader.
//! - [`lock`]: exclusive locks on run and output folders.
//! - [`manifest`]: the `data_params.json` manifest.
//! - [`permutation`]: a keyed pseudo-random permutation in O(1) memory (the shuffle).
//! - [`reader`]: opening and validating shard sets; the memory-mapped fast path.
//! - [`run`]: the records of a training run (`state.json`, `segments.jsonl`, checkpoint names).
//! - [`spec`]: the on-disk layout (Cerebras Model Zoo compatible HDF5).
//! - [`split`]: the train/val directory rule.
//! - [`stream`]: the epoch-shuffled sample stream.
//! - [`synthetic`]: self-checking synthetic shard sets for tests and demos.
//! - [`task`]: downstream evaluation sets (HellaSwag, multiple choice, LAMBADA) from jsonl.
//! - [`text`]: numbers formatted for people (`thousands`).
//! - [`verify`]: full invariant and checksum checks.
//! - [`writer`]: crash-safe, byte-reproducible shard writing.

pub mod audit;
pub mod blend;
pub mod checksum;
pub mod error;
pub mod exit;
pub mod fault;
pub mod fsio;
pub mod loader;
pub mod lock;
pub mod manifest;
pub mod permutation;
pub mod reader;
pub mod run;
pub mod spec;
pub mod split;
pub mod stream;
pub mod synthetic;
pub mod task;
pub mod text;
pub mod verify;
pub mod writer;

pub use error::{FormatError, Result};
pub use loader::{Batch, Loader, LoaderConfig};
pub use manifest::{DataParams, DatasetStats, ManifestCore, ShardEntry};
pub use reader::{AccessPath, Shard, ShardSet};
pub use spec::{Compression, Packing};
pub use stream::{BatchLayout, SampleStream};
pub use writer::{PositionalShard, ShardSetWriter, ShardWriter, StagedShard};
