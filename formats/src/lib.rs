//! # h5gpt-formats
//!
//! The shard format, its manifest and the training data loader of h5gpt.
//!
//! - [`spec`]: the on-disk layout (Cerebras Model Zoo compatible HDF5).
//! - [`writer`]: crash-safe, byte-reproducible shard writing.
//! - [`manifest`]: the `data_params.json` manifest.
//! - [`reader`]: opening and validating shard sets; the memory-mapped fast path.
//! - [`stream`], [`permutation`]: the epoch-shuffled sample stream.
//! - [`loader`]: the prefetching batch loader.
//! - [`verify`]: full invariant and checksum checks.
//! - [`lock`]: exclusive locks on run and output folders.
//! - [`exit`]: exit codes and the usage error.
//! - [`run`]: the records of a training run (`state.json`, `segments.jsonl`).
//! - [`audit`]: which rows each step of a run read, and the per-epoch coverage proof.
//! - [`blend`]: weighted blends of several shard sets.
//! - [`split`]: the train/val directory rule.
//! - [`synthetic`]: self-checking synthetic shard sets for tests and demos.
//! - [`task`]: downstream evaluation sets (HellaSwag, multiple choice, LAMBADA) from jsonl.
//! - [`text`]: numbers formatted for people (`thousands`).

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
