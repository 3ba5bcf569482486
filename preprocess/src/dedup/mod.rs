//! `preprocess --dedup exact|near`: a first pass over the input that finds duplicate
//! documents, keeps the first of each cluster in input order and tells the run which to drop.
//!
//! - `normalise`: the text dedup compares (its own rule, independent of `--normalize`);
//! - `minhash`: the 128-bit exact hash and the MinHash signature of a document;
//! - `lsh`: the banding (chosen for `--dedup-threshold` as datasketch does) and the union-find;
//! - `pass`: the pass itself (parallel signatures into a temporary file in the output folder,
//!   then the index in input order, so the result depends on neither `--threads` nor timing);
//! - `store`: the decisions saved in the output folder (`dedup.jsonl`, `dedup-state.json`),
//!   checked against the inputs' fingerprints before a resumed run reuses them, and the report.
//!
//! See docs/dedup.md for the flags, the memory figures and an example.

pub mod lsh;
pub mod minhash;
pub mod normalise;
mod pass;
pub mod rows;
mod store;

pub use pass::{bytes_per_document, Index};
pub use store::{
    prepare, save_if_missing, Cluster, DedupReport, FileRemoval, RemovedDoc, DEDUP_JSONL,
    DEDUP_STATE,
};

use h5gpt_formats::exit::UsageError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `--dedup`: which duplicates are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DedupMode {
    /// No dedup pass (the output is what it was before dedup existed).
    #[default]
    Off,
    /// Documents whose normalised texts are equal (a 128-bit hash).
    Exact,
    /// Exact duplicates, and documents whose word n-gram sets have an estimated Jaccard
    /// similarity of at least `--dedup-threshold` (MinHash LSH).
    Near,
}

/// The dedup settings (those that shape the output are in the run's fingerprint).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DedupSettings {
    /// The mode.
    pub mode: DedupMode,
    /// Words per n-gram (`--dedup-ngram`).
    pub ngram: usize,
    /// MinHash permutations (`--dedup-perm`).
    pub perm: usize,
    /// Seed of the permutations (`--dedup-seed`).
    pub seed: u64,
    /// Jaccard threshold (`--dedup-threshold`).
    pub threshold: f64,
    /// Report only: the decisions are made and saved, no document is dropped.
    pub report_only: bool,
    /// Bound on the index's memory in bytes (`--dedup-mem`); does not shape the output.
    #[serde(skip)]
    pub mem: u64,
}

impl Default for DedupSettings {
    fn default() -> Self {
        DedupSettings {
            mode: DedupMode::Off,
            ngram: 5,
            perm: 128,
            seed: 0,
            threshold: 0.8,
            report_only: false,
            mem: default_mem(),
        }
    }
}

/// Half the machine's memory (`MemTotal` of /proc/meminfo; 8 GiB where that is unreadable).
pub fn default_mem() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(8 << 30, |kib| kib * 1024 / 2)
}

/// Most permutations `--dedup-perm` accepts.
pub const MAX_PERM: usize = 1024;

impl DedupSettings {
    /// Whether dedup is off (then nothing about it is recorded anywhere).
    pub fn is_off(&self) -> bool {
        self.mode == DedupMode::Off
    }

    /// The LSH banding of `near` mode (`None` otherwise).
    pub fn banding(&self) -> Option<lsh::Banding> {
        (self.mode == DedupMode::Near).then(|| lsh::Banding::optimal(self.threshold, self.perm))
    }

    /// Checks the numbers (a [`UsageError`]: exit code 2).
    pub fn validate(&self) -> Result<(), UsageError> {
        if self.ngram == 0 {
            return Err(UsageError::new(
                "--dedup-ngram 0: must be at least 1 (words)",
            ));
        }
        if !(1..=MAX_PERM).contains(&self.perm) {
            return Err(UsageError::new(format!(
                "--dedup-perm {}: must be in 1..={MAX_PERM}",
                self.perm
            )));
        }
        if self.threshold.is_nan() || self.threshold <= 0.0 || self.threshold > 1.0 {
            return Err(UsageError::new(format!(
                "--dedup-threshold {}: must be in (0, 1] (a Jaccard similarity)",
                self.threshold
            )));
        }
        Ok(())
    }
}

/// Why a document is dropped: the kept document it duplicates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Removal {
    /// The kept document's input file index.
    pub kept_file: usize,
    /// Its record index.
    pub kept_record: u64,
    /// The estimated Jaccard similarity (1 for an exact duplicate).
    pub jaccard: f64,
}

/// The pass's decisions: which documents (input file index, record index) are dropped.
#[derive(Debug, Clone)]
pub struct Decisions {
    /// The settings they were made with.
    pub settings: DedupSettings,
    /// The dropped documents.
    pub removed: HashMap<(usize, u64), Removal>,
    /// The report.
    pub report: DedupReport,
    /// Whether they were loaded from the output folder (a resumed or repeated run).
    pub loaded: bool,
    /// The files saved into each output folder.
    pending: Box<Pending>,
}

/// The files of new decisions, written once the output folder is ours.
#[derive(Debug, Clone)]
struct Pending {
    jsonl: Vec<u8>,
    state: Vec<u8>,
}

impl Decisions {
    /// Whether document `(file, record)` is dropped from the output (never with
    /// `--dedup-report-only`).
    pub fn drops(&self, file: usize, record: u64) -> bool {
        !self.settings.report_only && self.removed.contains_key(&(file, record))
    }

    /// Documents the output loses.
    pub fn dropped(&self) -> u64 {
        if self.settings.report_only {
            0
        } else {
            self.removed.len() as u64
        }
    }
}
