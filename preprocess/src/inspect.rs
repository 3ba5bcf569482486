//! `inspect`: summary, decoded samples and invariant checks of shard sets.

use anyhow::{Context, Result};
use h5gpt_formats::reader::ExampleBuf;

use h5gpt_formats::verify::{verify, VerifyOptions, VerifyReport};
use h5gpt_formats::{AccessPath, DatasetStats, ShardSet};
use h5gpt_tokenizer::shard_manifest::verify_shard_manifest;
use h5gpt_tokenizer::tokenizer::{Tokenizer, TokenizerError};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What `inspect` was asked to do.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    /// Shard directories and/or files.
    pub inputs: Vec<PathBuf>,
    /// Rows to print.
    pub show: usize,
    /// Print rows as text.
    pub decode: bool,
    /// Check every invariant and checksum.
    pub verify: bool,
    /// Violations to list before stopping to collect.
    pub max_violations: usize,
    /// Progress bars on stderr.
    pub progress: bool,
    /// Count exact and near-duplicate rows (`--duplicates`).
    pub duplicates: bool,
}

/// The summary of a shard set.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Shard files.
    pub shards: usize,
    /// Examples (rows).
    pub rows: u64,
    /// Tokens per row.
    pub seq_len: usize,
    /// Token counts (from the manifest when it has them, else counted).
    pub stats: DatasetStats,
    /// Shards read through the memory map.
    pub fast_path_shards: usize,
    /// Shards read through HDF5.
    pub slow_path_shards: usize,
    /// Bytes on disk.
    pub bytes_on_disk: u64,
    /// Tokenizer named by the manifest.
    pub tokenizer: Option<String>,
    /// Packing named by the manifest.
    pub packing: Option<String>,
    /// Per shard: file, rows, access path.
    pub files: Vec<ShardSummary>,
}

/// One shard in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ShardSummary {
    /// Path.
    pub path: PathBuf,
    /// Examples.
    pub rows: usize,
    /// `fast` or `slow`.
    pub access: &'static str,
    /// Bytes on disk.
    pub bytes: u64,
}

/// One row as shown by `--show`.
#[derive(Debug, Clone, Serialize)]
pub struct ShownRow {
    /// Global example index.
    pub index: usize,
    /// Shard file.
    pub shard: PathBuf,
    /// Example index within the shard.
    pub row: usize,
    /// Input ids.
    pub input_ids: Vec<i32>,
    /// Positions that count in the loss.
    pub valid_tokens: usize,
    /// Decoded input (with `--decode`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

fn progress_bar(enabled: bool, total: u64, what: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} rows ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Summarizes an opened set.
pub fn summarize(set: &ShardSet, progress: bool) -> Result<Summary> {
    let params = set.data_params();
    let stats = match params {
        // Our manifests' counts are exact; foreign ones may omit some, so count those.
        Some(p) if p.h5gpt.is_some() && p.h5_dataset_stats.num_sequences == set.len() as u64 => {
            p.h5_dataset_stats
        }
        _ => count_stats(set, progress)?,
    };
    let files = set
        .shards()
        .iter()
        .map(|s| ShardSummary {
            path: s.path().to_path_buf(),
            rows: s.n_examples(),
            access: match s.access_path() {
                AccessPath::Fast => "fast",
                AccessPath::Slow => "slow",
            },
            bytes: s.file_bytes(),
        })
        .collect::<Vec<_>>();
    Ok(Summary {
        shards: files.len(),
        rows: set.len() as u64,
        seq_len: set.seq_len(),
        stats,
        fast_path_shards: files.iter().filter(|f| f.access == "fast").count(),
        slow_path_shards: files.iter().filter(|f| f.access == "slow").count(),
        bytes_on_disk: files.iter().map(|f| f.bytes).sum(),
        tokenizer: params
            .and_then(|p| p.h5gpt.as_ref())
            .map(|s| s.tokenizer.clone()),
        packing: params.and_then(|p| p.packing()).map(|p| p.to_string()),
        files,
    })
}

fn count_stats(set: &ShardSet, progress: bool) -> Result<DatasetStats> {
    let bar = progress_bar(progress, set.len() as u64, "counting");
    let seq = set.seq_len();
    let mut stats = DatasetStats::default();
    let mut example = ExampleBuf::new(seq);
    for index in 0..set.len() {
        set.read_example(index, example.as_mut())?;
        stats.add_row(&example.attention_mask);
        if index % 4096 == 0 {
            bar.set_position(index as u64);
        }
    }
    bar.finish_and_clear();
    Ok(stats)
}

/// The tokenizer that decodes `set`'s rows, or `None` for data of an unknown tokenizer
/// (synthetic test data), whose rows are shown as ids.
pub fn decoding_tokenizer(set: &ShardSet) -> Result<Option<Tokenizer>> {
    let dir = set.manifest_dir().unwrap_or(Path::new("."));
    match Tokenizer::for_shard_dir(dir, set.data_params()) {
        Ok(t) => Ok(Some(t)),
        Err(TokenizerError::Unknown { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The first `n` rows.
pub fn show_rows(set: &ShardSet, n: usize, decode: bool) -> Result<Vec<ShownRow>> {
    let tokenizer = if decode {
        decoding_tokenizer(set)?
    } else {
        None
    };
    let seq = set.seq_len();
    let mut example = ExampleBuf::new(seq);
    let mut rows = Vec::new();
    for index in 0..n.min(set.len()) {
        set.read_example(index, example.as_mut())?;
        let (ids, mask) = (&example.input_ids, &example.attention_mask);
        let (shard, row) = set.locate(index);
        let valid = mask.iter().filter(|&&m| m != 0).count();
        let text = tokenizer.as_ref().map(|t| {
            let tokens: Vec<u32> = ids[..valid].iter().map(|&t| t as u32).collect();
            t.decode_lossy(&tokens)
        });
        rows.push(ShownRow {
            index,
            shard: set.shards()[shard].path().to_path_buf(),
            row,
            input_ids: ids.clone(),
            valid_tokens: valid,
            text,
        });
    }
    Ok(rows)
}

/// Runs every check with a progress bar.
pub fn verify_set(set: &ShardSet, max_violations: usize, progress: bool) -> Result<VerifyReport> {
    let mut options = VerifyOptions::for_set(set);
    options.max_violations = max_violations;
    let bar = progress_bar(progress, set.len() as u64, "verifying");
    let report = verify(set, options, &mut |n| bar.inc(n))?;
    bar.finish_and_clear();
    Ok(report)
}

/// Everything `inspect` found, for `--json`.
#[derive(Debug, Serialize)]
pub struct InspectOutput {
    /// The summary.
    pub summary: Summary,
    /// Rows asked for with `--show`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<ShownRow>,
    /// The verify report, with `--verify`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyJson>,
    /// Duplicate rows, with `--duplicates`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<crate::dedup::rows::RowDuplicates>,
}

/// The verify report as JSON.
#[derive(Debug, Serialize)]
pub struct VerifyJson {
    /// Whether every check passed.
    pub ok: bool,
    /// Rows checked.
    pub rows_checked: u64,
    /// Checksums compared.
    pub checksums_checked: usize,
    /// All violations.
    pub violation_count: u64,
    /// The first violations, as text.
    pub violations: Vec<String>,
    /// What could not be checked, and why that is fine (a Cerebras manifest has no checksums).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Checks that every directory among `inputs` has a shard manifest to verify against, and
/// that our manifests agree with their tokenizer ([`verify_shard_manifest`], the check `train`
/// runs before it reads a row).
/// Returns the problems (verification fails) and the notes (a Cerebras-written manifest
/// carries no checksums: nothing to check, and that is said).
pub fn manifest_problems(inputs: &[PathBuf]) -> (Vec<String>, Vec<String>) {
    let (mut problems, mut notes) = (Vec::new(), Vec::new());
    for dir in inputs.iter().filter(|p| p.is_dir()) {
        let path = dir.join(h5gpt_formats::spec::DATA_PARAMS_FILE);
        match h5gpt_formats::DataParams::read_from_dir(dir) {
            Ok(None) => problems.push(format!(
                "{}: missing, so the shards' checksums cannot be verified (restore it, or re-run preprocess)",
                path.display()
            )),
            Err(e) => problems.push(e.to_string()),
            Ok(Some(params)) if params.h5gpt.is_some() => {
                // The check `train` runs: label, tokenizer.json checksum, vocabulary, ids.
                if let Err(e) = verify_shard_manifest(dir, &params) {
                    problems.push(e.to_string());
                }
            }
            Ok(Some(params)) => {
                let cerebras = params.seq_len().is_some()
                    && !(params.setup.is_empty()
                        && params.processing.is_empty()
                        && params.dataset.is_empty());
                if cerebras {
                    notes.push(format!(
                        "{}: written by another tool (Cerebras sections, no h5gpt section): no checksums to check",
                        path.display()
                    ));
                } else {
                    problems.push(format!(
                        "{}: not a shard manifest: no `h5gpt` section (with the shards' checksums) and no Cerebras sections (`setup`, `processing`, `dataset` with `max_seq_length`) (restore it, or re-run preprocess)",
                        path.display()
                    ));
                }
            }
        }
    }
    (problems, notes)
}

/// Runs `inspect`.
pub fn run(options: &InspectOptions) -> Result<InspectOutput> {
    let set = ShardSet::open(&options.inputs).with_context(|| {
        format!(
            "cannot open shards {}",
            options
                .inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let summary = summarize(&set, options.progress)?;
    let rows = show_rows(&set, options.show, options.decode)?;
    let verify = if options.verify {
        let report = verify_set(&set, options.max_violations, options.progress)?;
        let (problems, notes) = manifest_problems(&options.inputs);
        Some(VerifyJson {
            ok: report.is_ok() && problems.is_empty(),
            rows_checked: report.rows_checked,
            checksums_checked: report.checksums_checked,
            violation_count: report.violation_count + problems.len() as u64,
            violations: problems
                .into_iter()
                .chain(report.violations.iter().map(ToString::to_string))
                .collect(),
            notes,
        })
    } else {
        None
    };
    let duplicates = if options.duplicates {
        Some(crate::dedup::rows::duplicate_rows(&set)?)
    } else {
        None
    };
    Ok(InspectOutput {
        summary,
        rows,
        verify,
        duplicates,
    })
}

/// Formats bytes as MiB/GiB.
pub fn human_bytes(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= 1024.0 * MIB {
        format!("{:.2} GiB", bytes as f64 / (1024.0 * MIB))
    } else {
        format!("{:.2} MiB", bytes as f64 / MIB)
    }
}
