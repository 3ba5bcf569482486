//! Full checks of a shard set: every row invariant, the stream invariants where the manifest
//! declares `packing: "stream"`, and the checksums it records.
//!
//! Row invariants (every shard, ours or foreign): the attention mask is a prefix of ones then
//! zeros; `labels[j] == input_ids[j+1]` wherever `attention_mask[j+1] == 1`; where the mask is
//! 0, `input_ids` and `labels` hold the pad id; every id is in `0..vocab_size`.
//!
//! Stream invariants: consecutive rows, across shard boundaries too, overlap by one token
//! (`labels[r][-1] == input_ids[r+1][0]`); only the very last row may be partial, and it holds
//! at least one position.

use crate::checksum::file_xxh3_64;
use crate::error::Result;
use crate::reader::ShardSet;
use crate::spec::{Packing, GPT2_EOS_ID, GPT2_VOCAB_SIZE, ROWS_PER_EXAMPLE};
use std::path::{Path, PathBuf};

/// What to check against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Every id must be below this.
    pub vocab_size: u32,
    /// Id that fills masked-out positions.
    pub pad_id: u32,
    /// `Some(Stream)` adds the stream invariants.
    pub packing: Option<Packing>,
    /// Stop collecting after this many violations.
    pub max_violations: usize,
    /// Also compare file checksums with the manifest.
    pub checksums: bool,
}

impl VerifyOptions {
    /// Options taken from the set's manifest (GPT-2's ids when it says nothing).
    pub fn for_set(set: &ShardSet) -> VerifyOptions {
        let params = set.data_params();
        let post = params.map(|p| &p.post_process);
        VerifyOptions {
            vocab_size: post.and_then(|p| p.vocab_size).unwrap_or(GPT2_VOCAB_SIZE),
            pad_id: post.and_then(|p| p.pad_id).unwrap_or(GPT2_EOS_ID),
            packing: params.and_then(|p| p.packing()),
            max_violations: 20,
            checksums: true,
        }
    }
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The shard.
    pub path: PathBuf,
    /// Example index within the shard.
    pub row: usize,
    /// Token column, where one applies.
    pub column: Option<usize>,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: row {}", self.path.display(), self.row)?;
        if let Some(c) = self.column {
            write!(f, ", column {c}")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Examples checked.
    pub rows_checked: u64,
    /// Shards whose checksum was compared.
    pub checksums_checked: usize,
    /// The first violations found (at most `max_violations`).
    pub violations: Vec<Violation>,
    /// All violations, including those not kept.
    pub violation_count: u64,
}

impl VerifyReport {
    /// Whether everything held.
    pub fn is_ok(&self) -> bool {
        self.violation_count == 0
    }
}

struct Checker {
    options: VerifyOptions,
    report: VerifyReport,
    /// The last row's final label and whether that row was partial, with where it was.
    previous: Option<(i32, bool, PathBuf, usize)>,
}

impl Checker {
    fn flag(&mut self, path: &std::path::Path, row: usize, column: Option<usize>, what: String) {
        self.report.violation_count += 1;
        if self.report.violations.len() < self.options.max_violations {
            self.report.violations.push(Violation {
                path: path.into(),
                row,
                column,
                what,
            });
        }
    }

    #[allow(clippy::needless_range_loop)] // j indexes four parallel rows
    fn check_row(
        &mut self,
        path: &std::path::Path,
        row: usize,
        ids: &[i32],
        mask: &[i32],
        labels: &[i32],
    ) {
        let seq = ids.len();
        let vocab = self.options.vocab_size as i64;
        let pad = self.options.pad_id as i32;
        let mut valid = 0usize;
        let mut seen_zero = false;
        for (j, &m) in mask.iter().enumerate() {
            match m {
                1 if seen_zero => {
                    self.flag(
                        path,
                        row,
                        Some(j),
                        "attention_mask has a 1 after a 0 (not a prefix of ones)".into(),
                    );
                    break;
                }
                1 => valid += 1,
                0 => seen_zero = true,
                _ => {
                    self.flag(
                        path,
                        row,
                        Some(j),
                        format!("attention_mask holds {m}, not 0 or 1"),
                    );
                    break;
                }
            }
        }
        for j in 0..seq {
            for (name, id) in [("input_ids", ids[j]), ("labels", labels[j])] {
                if !(0..vocab).contains(&(id as i64)) {
                    self.flag(
                        path,
                        row,
                        Some(j),
                        format!("{name} holds {id}, outside vocabulary 0..{vocab}"),
                    );
                }
            }
            if mask[j] == 0 && (ids[j] != pad || labels[j] != pad) {
                self.flag(
                    path,
                    row,
                    Some(j),
                    format!(
                        "masked position holds input {} / label {}, expected pad {pad}",
                        ids[j], labels[j]
                    ),
                );
            }
            if j + 1 < seq && mask[j + 1] == 1 && labels[j] != ids[j + 1] {
                self.flag(
                    path,
                    row,
                    Some(j),
                    format!(
                        "labels[{j}] = {} but input_ids[{}] = {}",
                        labels[j],
                        j + 1,
                        ids[j + 1]
                    ),
                );
            }
        }
        if self.options.packing == Some(Packing::Stream) {
            if let Some((last_label, partial, prev_path, prev_row)) = self.previous.take() {
                if partial {
                    self.flag(
                        &prev_path,
                        prev_row,
                        None,
                        "partial row is not the last row of the stream".into(),
                    );
                } else if last_label != ids[0] {
                    self.flag(
                        path,
                        row,
                        Some(0),
                        format!("input_ids[0] = {} but the previous row's last label is {last_label} (rows must overlap by one token)", ids[0]),
                    );
                }
            }
            if valid == 0 {
                self.flag(path, row, None, "row holds no tokens".into());
            }
            self.previous = Some((labels[seq - 1], valid < seq, path.into(), row));
        }
    }
}

/// Checks every row of `set` (and the checksums, if asked). `progress` is called with the
/// number of examples checked since its last call.
pub fn verify(
    set: &ShardSet,
    options: VerifyOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport> {
    let mut checker = Checker {
        options,
        report: VerifyReport::default(),
        previous: None,
    };
    let seq = set.seq_len();
    let example_len = ROWS_PER_EXAMPLE * seq;
    let block = (8 << 20) / (example_len * 4).max(1);
    for shard in set.shards() {
        let mut start = 0;
        while start < shard.n_examples() {
            let count = block.max(1).min(shard.n_examples() - start);
            let tokens = shard.read_examples(start, count)?;
            for (k, example) in tokens.chunks_exact(example_len).enumerate() {
                let (ids, rest) = example.split_at(seq);
                let (mask, labels) = rest.split_at(seq);
                checker.check_row(shard.path(), start + k, ids, mask, labels);
            }
            start += count;
            checker.report.rows_checked += count as u64;
            progress(count as u64);
        }
    }
    if options.checksums {
        if let (Some(params), Some(dir)) = (set.data_params(), set.manifest_dir()) {
            for entry in params.h5gpt.iter().flat_map(|s| &s.shards) {
                let path = dir.join(&entry.file);
                let found = file_xxh3_64(&path)?;
                checker.report.checksums_checked += 1;
                if found != entry.xxh3_64 {
                    checker.flag(
                        &path,
                        0,
                        None,
                        format!(
                            "checksum xxh3-64 {found} but data_params.json records {}",
                            entry.xxh3_64
                        ),
                    );
                }
            }
        }
    }
    Ok(checker.report)
}

/// Name of the cache of verified shards kept beside them (or, where their directory is
/// read-only, in the run folder).
pub const VERIFIED_CACHE: &str = ".h5gpt-verified.json";

/// One shard whose checksum was found right, keyed by what changes when the file does: its
/// ctime too, which any write sets and which, unlike the mtime (`touch -r`), cannot be set
/// back. Entries of caches written before the ctime was kept (version 1) have none and never
/// match: those shards are hashed once more.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct VerifiedShard {
    size: u64,
    mtime_ns: u64,
    #[serde(default)]
    ctime_ns: u64,
    inode: u64,
    xxh3_64: String,
}

/// Version of [`VERIFIED_CACHE`]: 2 keys on the ctime as well.
const VERIFIED_CACHE_VERSION: u32 = 2;

/// The cache file: shard path → its verified identity.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct VerifiedCache {
    #[serde(default)]
    version: u32,
    #[serde(default)]
    shards: std::collections::BTreeMap<String, VerifiedShard>,
}

impl VerifiedCache {
    fn read(path: &Path) -> VerifiedCache {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn write(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("the cache serializes");
        crate::fsio::write_atomic(path, &bytes)
    }
}

/// What [`verify_checksums`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChecksumOutcome {
    /// Shards the manifest lists with a checksum.
    pub shards: usize,
    /// Of those, shards the cache vouched for (same path, size, mtime, ctime and inode).
    pub cached: usize,
    /// Bytes read and hashed.
    pub bytes_hashed: u64,
    /// Wall time.
    pub seconds: f64,
    /// Where the cache was written (`None`: nothing new to record, or no writable place).
    pub cache: Option<PathBuf>,
}

fn identity(path: &Path, xxh3_64: &str) -> Result<VerifiedShard> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| crate::FormatError::io(path, e))?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    let ctime_ns = (meta.ctime() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.ctime_nsec() as u64);
    Ok(VerifiedShard {
        size: meta.len(),
        mtime_ns,
        ctime_ns,
        inode: meta.ino(),
        xxh3_64: xxh3_64.into(),
    })
}

/// Checks the xxh3-64 of every shard `params` (the manifest of `dir`) lists. Shards are
/// immutable once written, so a shard verified before, with the same path, size, mtime, ctime
/// and inode (recorded in [`VERIFIED_CACHE`] in `dir`, or in `fallback_dir` when `dir` is
/// read-only), is not read again unless `full`. A mismatch is a
/// [`crate::FormatError::ChecksumMismatch`] naming the shard, and drops every cached entry of
/// the set (in both caches), so no later check trusts the cache for it.
pub fn verify_checksums(
    dir: &Path,
    params: &crate::DataParams,
    fallback_dir: &Path,
    full: bool,
) -> Result<ChecksumOutcome> {
    let started = std::time::Instant::now();
    let (own, fallback) = (dir.join(VERIFIED_CACHE), fallback_dir.join(VERIFIED_CACHE));
    let mut cache = VerifiedCache::read(&own);
    if !full {
        cache.shards.extend(VerifiedCache::read(&fallback).shards);
    }
    let mut outcome = ChecksumOutcome::default();
    let mut added = false;
    for entry in params.h5gpt.iter().flat_map(|s| &s.shards) {
        let path = dir.join(&entry.file);
        let key = cache_key(&path);
        outcome.shards += 1;
        let now = identity(&path, &entry.xxh3_64)?;
        if !full && cache.shards.get(&key) == Some(&now) {
            outcome.cached += 1;
            continue;
        }
        let found = file_xxh3_64(&path)?;
        outcome.bytes_hashed += now.size;
        if found != entry.xxh3_64 {
            forget_set(dir, params, &[&own, &fallback]);
            return Err(crate::FormatError::ChecksumMismatch {
                path,
                expected: entry.xxh3_64.clone(),
                found,
            });
        }
        cache.shards.insert(key, now);
        added = true;
    }
    if added {
        cache.version = VERIFIED_CACHE_VERSION;
        outcome.cache = if cache.write(&own).is_ok() {
            Some(own)
        } else {
            std::fs::create_dir_all(fallback_dir)
                .ok()
                .and_then(|()| cache.write(&fallback).ok())
                .map(|()| fallback)
        };
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// The cache key of a shard: its canonical path.
fn cache_key(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

/// Drops every shard of `params` (the manifest of `dir`) from the caches at `caches` that
/// exist (best effort: a cache that cannot be rewritten is removed, or left when even that
/// fails, and then still keyed on files that changed).
fn forget_set(dir: &Path, params: &crate::DataParams, caches: &[&Path]) {
    let keys: Vec<String> = params
        .h5gpt
        .iter()
        .flat_map(|s| &s.shards)
        .map(|entry| cache_key(&dir.join(&entry.file)))
        .collect();
    for path in caches.iter().filter(|p| p.is_file()) {
        let mut cache = VerifiedCache::read(path);
        let before = cache.shards.len();
        cache.shards.retain(|key, _| !keys.contains(key));
        if cache.shards.len() != before && cache.write(path).is_err() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{write_synthetic, SyntheticSpec};

    /// Flips one byte in the middle of `path` and sets its mtime back, as `touch -r` would.
    fn tamper_keeping_mtime(path: &Path) {
        let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes.len() - 100;
        bytes[at] ^= 1;
        std::fs::write(path, &bytes).unwrap();
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(mtime).unwrap();
    }

    /// Issue 24 item 6: a shard changed with its mtime set back is hashed again (the cache
    /// keys on the ctime too), and a `full` check that finds a mismatch the cache vouched for
    /// drops the set's entries, so the plain check after it fails as well.
    #[test]
    fn the_cache_keys_on_ctime_and_a_full_mismatch_drops_it() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, run) = (tmp.path().join("data"), tmp.path().join("run"));
        let spec = SyntheticSpec {
            examples: 40,
            seq_len: 16,
            examples_per_shard: 20,
            compression: crate::spec::Compression::None,
            partial_tokens: None,
        };
        let params = write_synthetic(&dir, spec).unwrap();
        let first = verify_checksums(&dir, &params, &run, false).unwrap();
        assert_eq!((first.shards, first.cached), (2, 0));
        assert_eq!(
            verify_checksums(&dir, &params, &run, false).unwrap().cached,
            2
        );

        let shard = dir.join(&params.h5gpt.as_ref().unwrap().shards[0].file);
        tamper_keeping_mtime(&shard);
        let err = verify_checksums(&dir, &params, &run, false).unwrap_err();
        assert!(
            matches!(&err, crate::FormatError::ChecksumMismatch { path, .. } if *path == shard),
            "{err}"
        );

        // A cache fooled anyway (rewritten to vouch for the changed shard, as a filesystem
        // without ctimes would let happen): `full` finds it, and the cache forgets the set.
        let cache_path = dir.join(VERIFIED_CACHE);
        let mut cache = VerifiedCache::read(&cache_path);
        let sum = params.h5gpt.as_ref().unwrap().shards[0].xxh3_64.clone();
        cache
            .shards
            .insert(cache_key(&shard), identity(&shard, &sum).unwrap());
        cache.write(&cache_path).unwrap();
        // (The failed check above dropped shard 1's entry: it is hashed again here.)
        assert_eq!(
            verify_checksums(&dir, &params, &run, false).unwrap().cached,
            1
        );
        assert!(verify_checksums(&dir, &params, &run, true).is_err());
        assert!(VerifiedCache::read(&cache_path).shards.is_empty());
        assert!(verify_checksums(&dir, &params, &run, false).is_err());
    }

    /// A cache written before the ctime was kept (version 1) loads, and vouches for nothing.
    #[test]
    fn a_version_1_cache_is_read_and_rehashed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let spec = SyntheticSpec {
            examples: 10,
            seq_len: 16,
            examples_per_shard: 10,
            compression: crate::spec::Compression::None,
            partial_tokens: None,
        };
        let params = write_synthetic(&dir, spec).unwrap();
        verify_checksums(&dir, &params, tmp.path(), false).unwrap();
        let cache_path = dir.join(VERIFIED_CACHE);
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cache_path).unwrap()).unwrap();
        json["version"] = 1.into();
        for entry in json["shards"].as_object_mut().unwrap().values_mut() {
            entry.as_object_mut().unwrap().remove("ctime_ns");
        }
        std::fs::write(&cache_path, json.to_string()).unwrap();
        assert_eq!(VerifiedCache::read(&cache_path).shards.len(), 1);
        let o = verify_checksums(&dir, &params, tmp.path(), false).unwrap();
        assert_eq!(o.cached, 0);
        assert_eq!(VerifiedCache::read(&cache_path).version, 2);
    }
}
