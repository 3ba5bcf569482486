//! The pass's decisions in the output folder, and its report.
//!
//! `dedup.jsonl` holds one line per removed document (its file, record and line, the kept
//! document it duplicates, the estimated Jaccard); `dedup-state.json`, written after it, holds
//! the report, the settings' fingerprint and the xxh3-64 of every input file. A run that finds
//! both, with its own fingerprint and the inputs hashing the same, reuses the decisions instead
//! of redoing the pass (a resumed run, or `preprocess` run again on a finished output).

use super::pass::{find, Found};
use super::{Decisions, DedupSettings, Removal};
use crate::input::InputFile;
use anyhow::{bail, Context, Result};
use h5gpt_formats::checksum::file_xxh3_64;
use h5gpt_formats::exit::with_hint;
use h5gpt_formats::fsio::write_atomic;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One line per removed document.
pub const DEDUP_JSONL: &str = "dedup.jsonl";
/// The report and the fingerprints the decisions are checked by.
pub const DEDUP_STATE: &str = "dedup-state.json";
/// Version of `dedup-state.json`.
const STATE_VERSION: u32 = 1;
/// Clusters listed in the report.
const LARGEST_CLUSTERS: usize = 10;

/// A line of `dedup.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovedDoc {
    /// The removed document's file.
    pub file: String,
    /// Its record index in the file (0-based, every record counted).
    pub record: u64,
    /// Its 1-based line (JSON lines) or row (Parquet); 1 for a text file.
    pub line: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// The kept document it duplicates (its cluster's first document in input order).
    pub kept_file: String,
    /// Its record index.
    pub kept_record: u64,
    /// Its line.
    pub kept_line: u64,
    /// Estimated Jaccard similarity of their word n-gram sets (1 for an exact duplicate).
    pub jaccard: f64,
    /// Whether the normalised texts are equal.
    pub exact: bool,
}

/// Documents and bytes removed from one input file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileRemoval {
    /// The file.
    pub file: String,
    /// Documents removed.
    pub documents: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A cluster of duplicates: its kept document and its size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// The kept document's file.
    pub file: String,
    /// Its line.
    pub line: u64,
    /// Documents in the cluster (the kept one included).
    pub documents: u64,
}

/// What the pass found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DedupReport {
    /// Non-empty documents compared.
    pub documents: u64,
    /// Documents removed (or, with `--dedup-report-only`, that would be).
    pub removed: u64,
    /// Their bytes.
    pub removed_bytes: u64,
    /// Of them, exact duplicates.
    pub exact: u64,
    /// Of them, near duplicates.
    pub near: u64,
    /// LSH bands (0 in exact mode).
    pub bands: usize,
    /// Rows per band.
    pub rows: usize,
    /// The S-curve's 50% point.
    pub half_point: f64,
    /// Per input file with removals, in input order.
    pub per_file: Vec<FileRemoval>,
    /// The largest clusters, largest first.
    pub largest_clusters: Vec<Cluster>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DedupState {
    version: u32,
    fingerprint: String,
    inputs: Vec<InputHash>,
    report: DedupReport,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct InputHash {
    path: String,
    bytes: u64,
    xxh3_64: String,
}

/// The fingerprint of what the decisions depend on: settings, how records are read, files.
fn fingerprint(
    settings: &DedupSettings,
    files: &[InputFile],
    text_key: &str,
    skip_bad: bool,
) -> String {
    let s = DedupSettings {
        report_only: false,
        ..*settings
    };
    let files: Vec<_> = files
        .iter()
        .map(|f| json!({"path": f.path.to_string_lossy(), "bytes": f.bytes}))
        .collect();
    let text =
        json!({"dedup": s, "text_key": text_key, "skip_bad_records": skip_bad, "files": files})
            .to_string();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

fn input_hashes(files: &[InputFile]) -> Result<Vec<InputHash>> {
    files
        .par_iter()
        .map(|f| {
            Ok(InputHash {
                path: f.path.to_string_lossy().into_owned(),
                bytes: f.bytes,
                xxh3_64: file_xxh3_64(&f.path)
                    .with_context(|| format!("cannot read {}", f.path.display()))?,
            })
        })
        .collect()
}

/// The decisions for this run (`config.dedup` over `files`): those saved in `dirs` (the first
/// that holds any) when they were made with these settings from these very inputs, or a new
/// pass (its temporary file in `dirs[0]`). Saved decisions of other settings are ignored with
/// `--force` and refused without.
pub fn prepare(
    config: &crate::pipeline::PreprocessConfig,
    files: &[InputFile],
    dirs: &[PathBuf],
) -> Result<Decisions> {
    let (settings, text_key, skip_bad) = (
        &config.dedup,
        config.text_key.as_str(),
        config.skip_bad_records,
    );
    let (threads, force, notes) = (config.threads, config.force, &config.notes);
    settings.validate()?;
    let fingerprint = fingerprint(settings, files, text_key, skip_bad);
    // With --force the output folder is cleared: the pass is redone.
    let saved = dirs.iter().find(|d| d.join(DEDUP_STATE).is_file());
    if let (Some(dir), false) = (saved, force) {
        match load(dir, settings, files, &fingerprint)? {
            Ok(decisions) => return Ok(decisions),
            Err(why) => bail!(with_hint(
                format!(
                    "{}: {why}",
                    dir.join(DEDUP_STATE).display(),
                ),
                "use the same command and inputs to continue, --force to start over, or another --out",
            )),
        }
    }
    let banding = settings.banding();
    if let Some(b) = banding {
        notes.note(&format!(
            "preprocess: dedup near: {} permutations as {} bands × {} rows for Jaccard {} (the S-curve's 50% point: {:.3}; a pair at 0.9 is a candidate with probability {:.4}), {}-word n-grams",
            settings.perm,
            b.bands,
            b.rows,
            settings.threshold,
            b.half_point(),
            b.probability(0.9),
            settings.ngram
        ));
    }
    let started = std::time::Instant::now();
    let found = find(settings, files, text_key, skip_bad, threads, &dirs[0])?;
    let inputs = input_hashes(files)?;
    notes.note(&format!(
        "preprocess: dedup pass: {} documents in {:.2} s",
        found.docs.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(decide(settings, files, found, fingerprint, inputs))
}

fn decide(
    settings: &DedupSettings,
    files: &[InputFile],
    found: Found,
    fingerprint: String,
    inputs: Vec<InputHash>,
) -> Decisions {
    let name = |i: usize| files[i].path.to_string_lossy().into_owned();
    let banding = settings.banding();
    let mut report = DedupReport {
        documents: found.docs.len() as u64,
        bands: banding.map_or(0, |b| b.bands),
        rows: banding.map_or(0, |b| b.rows),
        half_point: banding.map_or(1.0, |b| b.half_point()),
        ..DedupReport::default()
    };
    let mut lines = Vec::new();
    let mut removed = HashMap::new();
    let mut per_file: Vec<FileRemoval> = Vec::new();
    let mut sizes: HashMap<u32, u64> = HashMap::new();
    for (id, &(place, root, jaccard, exact)) in found.docs.iter().enumerate() {
        if root == id as u32 {
            continue;
        }
        let kept = found.docs[root as usize].0;
        *sizes.entry(root).or_insert(1) += 1;
        report.removed += 1;
        report.removed_bytes += place.bytes;
        if exact {
            report.exact += 1;
        } else {
            report.near += 1;
        }
        match per_file.last_mut() {
            Some(f) if f.file == name(place.file) => {
                f.documents += 1;
                f.bytes += place.bytes;
            }
            _ => per_file.push(FileRemoval {
                file: name(place.file),
                documents: 1,
                bytes: place.bytes,
            }),
        }
        removed.insert(
            (place.file, place.record),
            Removal {
                kept_file: kept.file,
                kept_record: kept.record,
                jaccard,
            },
        );
        lines.push(RemovedDoc {
            file: name(place.file),
            record: place.record,
            line: place.line,
            bytes: place.bytes,
            kept_file: name(kept.file),
            kept_record: kept.record,
            kept_line: kept.line,
            jaccard,
            exact,
        });
    }
    let mut clusters: Vec<(u32, u64)> = sizes.into_iter().collect();
    clusters.sort_by_key(|&(root, size)| (std::cmp::Reverse(size), root));
    report.largest_clusters = clusters
        .into_iter()
        .take(LARGEST_CLUSTERS)
        .map(|(root, size)| {
            let kept = found.docs[root as usize].0;
            Cluster {
                file: name(kept.file),
                line: kept.line,
                documents: size,
            }
        })
        .collect();
    report.per_file = per_file;
    Decisions {
        settings: *settings,
        removed,
        report: report.clone(),
        loaded: false,
        pending: Box::new(super::Pending {
            jsonl: lines.iter().fold(Vec::new(), |mut out, line| {
                serde_json::to_writer(&mut out, line).expect("serialisable");
                out.push(b'\n');
                out
            }),
            state: serde_json::to_vec_pretty(&DedupState {
                version: STATE_VERSION,
                fingerprint,
                inputs,
                report,
            })
            .expect("serialisable"),
        }),
    }
}

/// Loads the decisions saved in `dir`: `Ok(Err(why))` when they are not this run's.
fn load(
    dir: &Path,
    settings: &DedupSettings,
    files: &[InputFile],
    fingerprint: &str,
) -> Result<Result<Decisions, String>> {
    let state_path = dir.join(DEDUP_STATE);
    let state: DedupState = serde_json::from_slice(
        &std::fs::read(&state_path)
            .with_context(|| format!("cannot read {}", state_path.display()))?,
    )
    .with_context(|| format!("{}: unreadable", state_path.display()))?;
    if state.version != STATE_VERSION {
        return Ok(Err(format!(
            "version {} (this build writes {STATE_VERSION})",
            state.version
        )));
    }
    if state.fingerprint != fingerprint {
        return Ok(Err(
            "holds the dedup decisions of other inputs or settings".into()
        ));
    }
    let now = input_hashes(files)?;
    if let Some((then, now)) = state.inputs.iter().zip(&now).find(|(a, b)| a != b) {
        return Ok(Err(format!(
            "{} changed since the dedup pass (xxh3-64 {} then, {} now): its decisions no longer hold",
            now.path, then.xxh3_64, now.xxh3_64
        )));
    }
    let index: HashMap<String, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.path.to_string_lossy().into_owned(), i))
        .collect();
    let jsonl = dir.join(DEDUP_JSONL);
    let raw = std::fs::read(&jsonl).with_context(|| format!("cannot read {}", jsonl.display()))?;
    let text = String::from_utf8_lossy(&raw);
    let mut removed = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let doc: RemovedDoc = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: unreadable line", jsonl.display(), n + 1))?;
        let (Some(&file), Some(&kept_file)) = (index.get(&doc.file), index.get(&doc.kept_file))
        else {
            bail!(
                "{}:{}: names a file that is not an input",
                jsonl.display(),
                n + 1
            );
        };
        removed.insert(
            (file, doc.record),
            Removal {
                kept_file,
                kept_record: doc.kept_record,
                jaccard: doc.jaccard,
            },
        );
    }
    if removed.len() as u64 != state.report.removed {
        bail!(with_hint(
            format!(
                "{}: {} lines, but {} says {} documents were removed",
                jsonl.display(),
                removed.len(),
                state_path.display(),
                state.report.removed,
            ),
            "rerun with --force",
        ));
    }
    Ok(Ok(Decisions {
        settings: *settings,
        removed,
        report: state.report,
        loaded: true,
        pending: Box::new(super::Pending {
            jsonl: raw.clone(),
            state: std::fs::read(&state_path)?,
        }),
    }))
}

/// Saves the decisions into `dir` unless it holds them already: `dedup.jsonl`, then
/// `dedup-state.json` (which says they are complete).
pub fn save_if_missing(decisions: &Decisions, dir: &Path) -> Result<()> {
    if dir.join(DEDUP_STATE).is_file() {
        return Ok(());
    }
    let pending = &decisions.pending;
    write_atomic(&dir.join(DEDUP_JSONL), &pending.jsonl)?;
    write_atomic(&dir.join(DEDUP_STATE), &pending.state)?;
    Ok(())
}
