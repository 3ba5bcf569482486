//! The dedup pass. Stage 1 reads the input in order and computes each document's exact hash
//! and MinHash signature on the worker pool (reading the next batch while the last one is
//! hashed), appending them in input order to a temporary file in the output folder. Stage 2
//! builds the index from that file, one document at a time in input order: an exact match, or
//! a band shared with an earlier document whose signature then agrees on at least the
//! threshold, links the two; links join clusters (union-find) whose first document is kept.
//! Only the index lives in memory ([`bytes_per_document`]); signatures are read back from the
//! file when a candidate needs confirming.

use super::lsh::{Banding, UnionFind};
use super::minhash::{estimated_jaccard, exact_hash, MinHasher};
use super::normalise::{normalise, words};
use super::{DedupMode, DedupSettings};
use crate::input::{open_records, InputFile};
use anyhow::{bail, Context, Result};
use h5gpt_formats::exit::{with_hint, UsageError};
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// No document, in the chains of the band table.
const NONE: u32 = u32::MAX;

/// Earlier documents of one band bucket compared with a new one, at most (the most recent
/// first): bounds the work a bucket of many near-copies costs; members of the new document's
/// own cluster are skipped without counting.
const MAX_CANDIDATES_PER_BAND: usize = 64;

/// Index bytes per document: 56 for the exact table and the union-find (a 32-byte
/// `(u128, u32)` entry at the table's 50 to 87.5% load, and a `u32` parent), plus, in near mode,
/// 32 per band (a 16-byte `(u64, u32)` entry at that load and a `u32` chain link). At the
/// default 9 bands: 344 bytes, so 200M documents need about 69 GB (and the temporary
/// signature file 4 × perm + 48 bytes per document on disk: about 112 GB at 128).
pub fn bytes_per_document(settings: &DedupSettings) -> u64 {
    56 + settings.banding().map_or(0, |b| 32 * b.bands as u64)
}

/// The index of stage 2, usable on its own (the tests feed it texts).
pub struct Index {
    threshold: f64,
    banding: Option<Banding>,
    exact: HashMap<u128, u32>,
    bands: HashMap<u64, u32>,
    next: Vec<u32>,
    /// The clusters.
    pub clusters: UnionFind,
    /// Documents linked by an exact match (the rest of the removed ones were near matches).
    pub exact_linked: Vec<bool>,
}

impl Index {
    /// An empty index for `settings`.
    pub fn new(settings: &DedupSettings) -> Index {
        Index {
            threshold: settings.threshold,
            banding: settings.banding(),
            exact: HashMap::new(),
            bands: HashMap::new(),
            next: Vec::new(),
            clusters: UnionFind::default(),
            exact_linked: Vec::new(),
        }
    }

    /// Adds the next document (its exact hash and, in near mode, its signature) and links it
    /// to the earlier documents it duplicates; `signature_of(id)` reads an earlier document's
    /// signature back. Returns its id (documents are numbered in the order added).
    pub fn add(
        &mut self,
        exact: u128,
        signature: Option<&[u32]>,
        signature_of: &mut dyn FnMut(u32) -> Result<Vec<u32>>,
    ) -> Result<u32> {
        let id = self.clusters.push();
        let bands = self.banding.map_or(0, |b| b.bands);
        if let Some(&first) = self.exact.get(&exact) {
            self.clusters.union(first, id);
            self.exact_linked.push(true);
            self.next.extend(std::iter::repeat_n(NONE, bands));
            return Ok(id);
        }
        self.exact.insert(exact, id);
        self.exact_linked.push(false);
        let (Some(banding), Some(signature)) = (self.banding, signature) else {
            self.next.extend(std::iter::repeat_n(NONE, bands));
            return Ok(id);
        };
        for (band, key) in banding.keys(signature).into_iter().enumerate() {
            let head = self.bands.insert(key, id).unwrap_or(NONE);
            self.next.push(head);
            let (mut candidate, mut compared) = (head, 0);
            while candidate != NONE && compared < MAX_CANDIDATES_PER_BAND {
                if self.clusters.find(candidate) != self.clusters.find(id) {
                    compared += 1;
                    let other = signature_of(candidate)?;
                    if estimated_jaccard(signature, &other) >= self.threshold {
                        self.clusters.union(candidate, id);
                    }
                }
                candidate = self.next[candidate as usize * bands + band];
            }
        }
        Ok(id)
    }
}

/// Where a document is, and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) file: usize,
    /// Record index (as the run counts records: every record, bad ones included).
    pub(super) record: u64,
    /// 1-based line (JSON lines) or row (Parquet); 1 for a text file.
    pub(super) line: u64,
    pub(super) bytes: u64,
}

/// One document's entry in the signature file: place, exact hash, signature.
struct Print {
    place: Place,
    exact: u128,
    signature: Vec<u32>,
}

const HEADER_BYTES: usize = 8 + 8 + 8 + 8 + 16;

impl Print {
    fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        out.write_all(&(self.place.file as u64).to_le_bytes())?;
        out.write_all(&self.place.record.to_le_bytes())?;
        out.write_all(&self.place.line.to_le_bytes())?;
        out.write_all(&self.place.bytes.to_le_bytes())?;
        out.write_all(&self.exact.to_le_bytes())?;
        for v in &self.signature {
            out.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    }

    fn parse(bytes: &[u8]) -> Print {
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        Print {
            place: Place {
                file: u64_at(0) as usize,
                record: u64_at(8),
                line: u64_at(16),
                bytes: u64_at(24),
            },
            exact: u128::from_le_bytes(bytes[32..48].try_into().expect("16 bytes")),
            signature: bytes[HEADER_BYTES..]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        }
    }
}

/// What the pass found: every document's place and cluster root, in input order.
pub(super) struct Found {
    /// Per document: its place, its cluster's first document's id, the estimated Jaccard with
    /// it, and whether an exact match linked it.
    pub(super) docs: Vec<(Place, u32, f64, bool)>,
}

/// A batch of documents as read: place and text.
type RawBatch = Vec<(Place, String)>;

/// Reads the documents of `files` in order, in batches of about `batch_bytes`.
struct DocStream<'a> {
    files: &'a [InputFile],
    text_key: &'a str,
    skip_bad: bool,
    file: usize,
    records: Option<crate::input::Records>,
    record: u64,
}

impl DocStream<'_> {
    fn next_batch(&mut self, batch_bytes: usize) -> Result<Option<RawBatch>> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while bytes < batch_bytes {
            if self.records.is_none() {
                let Some(file) = self.files.get(self.file) else {
                    break;
                };
                self.records = Some(
                    open_records(file, self.text_key, Arc::new(AtomicU64::new(0))).map_err(
                        |e| anyhow::anyhow!(with_hint(
                            e,
                            "the file is unreadable, truncated or corrupt: restore it or leave it out of --input",
                        )),
                    )?,
                );
                self.record = 0;
            }
            let records = self.records.as_mut().expect("opened above");
            match records.next() {
                None => {
                    self.records = None;
                    self.file += 1;
                }
                Some(item) => {
                    let record = self.record;
                    self.record += 1;
                    match item {
                        Ok((index, text)) => {
                            if !text.is_empty() {
                                bytes += text.len();
                                let place = Place {
                                    file: self.file,
                                    record,
                                    line: index + 1,
                                    bytes: text.len() as u64,
                                };
                                batch.push((place, text));
                            }
                        }
                        Err(e) if e.record_level && self.skip_bad => {}
                        Err(e) => {
                            let hint = if e.record_level {
                                "fix or remove that record, or pass --skip-bad-records to count and skip bad records"
                            } else {
                                "the file is unreadable, truncated or corrupt: restore it or leave it out of --input"
                            };
                            bail!(with_hint(e, hint,));
                        }
                    }
                }
            }
        }
        Ok((!batch.is_empty()).then_some(batch))
    }
}

/// Text read per batch of stage 1.
const BATCH_BYTES: usize = 8 << 20;

/// Runs the pass over `files` with `threads` workers, its temporary file in `dir`.
pub(super) fn find(
    settings: &DedupSettings,
    files: &[InputFile],
    text_key: &str,
    skip_bad: bool,
    threads: usize,
    dir: &Path,
) -> Result<Found> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // A pass killed before it ended leaves its file behind: gone before this one starts.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".dedup-signatures-") && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let temp = dir.join(format!(".dedup-signatures-{}.tmp", std::process::id()));
    let result = find_with(settings, files, text_key, skip_bad, threads, &temp);
    let _ = std::fs::remove_file(&temp);
    result
}

/// Finds the duplicates among `files`' documents: their prints written to `temp` in input
/// order, then indexed from there.
fn find_with(
    settings: &DedupSettings,
    files: &[InputFile],
    text_key: &str,
    skip_bad: bool,
    threads: usize,
    temp: &Path,
) -> Result<Found> {
    let near = settings.mode == DedupMode::Near;
    let hasher = MinHasher::new(
        if near { settings.perm } else { 0 },
        settings.ngram,
        settings.seed,
    );
    let documents = write_prints(settings, files, text_key, skip_bad, threads, temp, &hasher)?;
    index_prints(settings, temp, documents, HEADER_BYTES + 4 * hasher.perm())
}

/// Stage 1: each document's print (exact hash, and MinHash signature for near dedup) into
/// `temp`, in input order, hashed in parallel while the next batch is read; the count of
/// prints written.
fn write_prints(
    settings: &DedupSettings,
    files: &[InputFile],
    text_key: &str,
    skip_bad: bool,
    threads: usize,
    temp: &Path,
    hasher: &MinHasher,
) -> Result<u64> {
    let near = settings.mode == DedupMode::Near;
    let per_doc = bytes_per_document(settings);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .context("cannot start worker threads")?;
    let fault_at = h5gpt_formats::fault::armed("abort-in-dedup");

    let mut out = BufWriter::new(
        std::fs::File::create(temp).with_context(|| format!("cannot create {}", temp.display()))?,
    );
    let mut stream = DocStream {
        files,
        text_key,
        skip_bad,
        file: 0,
        records: None,
        record: 0,
    };
    let mut documents = 0u64;
    let mut batches = 0usize;
    let mut batch = stream.next_batch(BATCH_BYTES)?;
    while let Some(current) = batch {
        let (prints, next) = pool.install(|| {
            rayon::join(
                || {
                    current
                        .into_par_iter()
                        .filter_map(|(place, text)| {
                            let norm = normalise(&text);
                            if norm.is_empty() {
                                return None; // Whitespace only: nothing to compare.
                            }
                            let signature = if near {
                                hasher.signature(words(&norm)).unwrap_or_default()
                            } else {
                                Vec::new()
                            };
                            Some(Print {
                                place,
                                exact: exact_hash(&norm),
                                signature,
                            })
                        })
                        .collect::<Vec<_>>()
                },
                || stream.next_batch(BATCH_BYTES),
            )
        });
        for print in &prints {
            print
                .write(&mut out)
                .with_context(|| format!("cannot write {}", temp.display()))?;
        }
        documents += prints.len() as u64;
        check_index_memory(settings, documents, per_doc)?;
        batches += 1;
        if fault_at == Some(batches) {
            eprintln!(
                "H5GPT_FAULT: aborting in the dedup pass after batch {batches} (testing aid)"
            );
            std::process::abort();
        }
        batch = next?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", temp.display()))?;
    drop(out);
    Ok(documents)
}

/// Refuses to go on once the index of `documents` would outgrow `--dedup-mem`.
fn check_index_memory(settings: &DedupSettings, documents: u64, per_doc: u64) -> Result<()> {
    let near = settings.mode == DedupMode::Near;
    if documents.saturating_mul(per_doc) > settings.mem {
        bail!(UsageError::new(with_hint(
            format!(
                "--dedup {}: the index would need more than {} documents × {} bytes = {:.1} GB (the input holds at least that many), over --dedup-mem {:.1} GB",
                if near { "near" } else { "exact" },
                documents,
                per_doc,
                (documents * per_doc) as f64 / 1e9,
                settings.mem as f64 / 1e9,
            ),
            format!(
                "raise --dedup-mem if the machine has the memory, use --dedup exact ({} bytes per document), or deduplicate parts of the corpus separately",
                bytes_per_document(&DedupSettings { mode: DedupMode::Exact, ..*settings })
            ),
        )));
    }
    Ok(())
}

/// Stage 2: the index of the `documents` prints in `temp` (records of `record_bytes`), in
/// input order; each document's cluster root and its estimated Jaccard similarity to it.
fn index_prints(
    settings: &DedupSettings,
    temp: &Path,
    documents: u64,
    record_bytes: usize,
) -> Result<Found> {
    let near = settings.mode == DedupMode::Near;
    let file =
        std::fs::File::open(temp).with_context(|| format!("cannot open {}", temp.display()))?;
    let random = file.try_clone()?;
    let read_print = |id: u32| -> Result<Print> {
        let mut buf = vec![0u8; record_bytes];
        random
            .read_exact_at(&mut buf, id as u64 * record_bytes as u64)
            .with_context(|| format!("cannot read {}", temp.display()))?;
        Ok(Print::parse(&buf))
    };
    let mut index = Index::new(settings);
    let mut places = Vec::with_capacity(documents as usize);
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; record_bytes];
    for _ in 0..documents {
        reader
            .read_exact(&mut buf)
            .with_context(|| format!("cannot read {}", temp.display()))?;
        let print = Print::parse(&buf);
        places.push(print.place);
        let signature = near.then_some(print.signature.as_slice());
        index.add(print.exact, signature, &mut |id| {
            Ok(read_print(id)?.signature)
        })?;
    }
    let mut docs = Vec::with_capacity(places.len());
    for (id, place) in places.into_iter().enumerate() {
        let id = id as u32;
        let root = index.clusters.find(id);
        let exact = index.exact_linked[id as usize];
        let jaccard = if root == id || !near || exact {
            1.0
        } else {
            estimated_jaccard(&read_print(id)?.signature, &read_print(root)?.signature)
        };
        docs.push((place, root, jaccard, exact));
    }
    Ok(Found { docs })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs an in-memory index over `texts`; returns each document's cluster root.
    pub(crate) fn roots(settings: &DedupSettings, texts: &[String]) -> Vec<u32> {
        let near = settings.mode == DedupMode::Near;
        let hasher = MinHasher::new(settings.perm, settings.ngram, settings.seed);
        let sigs: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| hasher.signature(words(&normalise(t))).unwrap_or_default())
            .collect();
        let mut index = Index::new(settings);
        for (t, sig) in texts.iter().zip(&sigs) {
            let exact = exact_hash(&normalise(t));
            index
                .add(exact, near.then_some(sig.as_slice()), &mut |id| {
                    Ok(sigs[id as usize].clone())
                })
                .unwrap();
        }
        (0..texts.len() as u32)
            .map(|i| index.clusters.find(i))
            .collect()
    }

    /// A planted corpus: `bases` random 300-word documents; each followed by copies at known
    /// word-replacement rates. Words come from a 50k vocabulary, so unrelated documents share
    /// no 5-gram.
    struct Planted {
        texts: Vec<String>,
        /// (original, copy, true 5-gram Jaccard)
        pairs: Vec<(usize, usize, f64)>,
    }

    fn shingles(words: &[&str], n: usize) -> std::collections::HashSet<Vec<String>> {
        words
            .windows(n)
            .map(|w| w.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    /// `bases` originals, each followed by one copy per entry of `replace` with that many of
    /// its 300 words replaced (evenly spread).
    fn planted(bases: usize, replace: &[usize], seed: u64) -> Planted {
        use h5gpt_formats::permutation::mix64;
        let mut state = seed;
        let mut rand = move || {
            state = mix64(state.wrapping_add(0x9e37_79b9_7f4a_7c15));
            state
        };
        let mut texts = Vec::new();
        let mut pairs = Vec::new();
        for _ in 0..bases {
            let words: Vec<String> = (0..300).map(|_| format!("w{}", rand() % 50_000)).collect();
            let original = texts.len();
            texts.push(words.join(" "));
            for &k in replace {
                let mut copy = words.clone();
                // Evenly spread replaced positions (a fixed pattern with a random offset).
                let offset = (rand() % 300) as usize;
                for j in 0..k {
                    let at = (offset + j * 300 / k.max(1)) % 300;
                    copy[at] = format!("r{}", rand());
                }
                let a: Vec<&str> = words.iter().map(String::as_str).collect();
                let b: Vec<&str> = copy.iter().map(String::as_str).collect();
                let (sa, sb) = (shingles(&a, 5), shingles(&b, 5));
                let j = sa.intersection(&sb).count() as f64 / sa.union(&sb).count() as f64;
                pairs.push((original, texts.len(), j));
                texts.push(copy.join(" "));
            }
        }
        Planted { texts, pairs }
    }

    fn near() -> DedupSettings {
        DedupSettings {
            mode: DedupMode::Near,
            ..DedupSettings::default()
        }
    }

    #[test]
    fn near_mode_finds_the_close_copies_and_links_no_distant_one() {
        // 1, 2 or 3 words replaced of 300: 5-gram Jaccard 0.967, 0.935, 0.904; 45 or 60
        // replaced (every 6.7th or 5th word): about 0.18 and 0.11.
        let corpus = planted(200, &[1, 2, 3, 45, 60], 11);
        let settings = near();
        let banding = settings.banding().unwrap();
        let roots = roots(&settings, &corpus.texts);
        let (mut close, mut found, mut far, mut expected) = (0, 0, 0, 0.0);
        for &(a, b, j) in &corpus.pairs {
            if j >= 0.9 {
                close += 1;
                found += usize::from(roots[a] == roots[b]);
                expected += banding.probability(j);
            } else if j <= 0.3 {
                far += 1;
                assert_ne!(roots[b], roots[a], "a pair at Jaccard {j:.3} was linked");
                assert_eq!(
                    roots[b], b as u32,
                    "a pair at Jaccard {j:.3} was linked elsewhere"
                );
            }
        }
        // The banding for 0.8 with 128 permutations, 9 × 13, makes a pair of Jaccard s a
        // candidate with probability P(s) = 1 − (1 − s^13)^9: 0.929 at 0.9, 0.988 at 0.935,
        // 0.9995 at 0.967, so 0.972 expected over these pairs (the confirmation, estimated
        // Jaccard ≥ 0.8 with a standard error of 0.027 at 0.9, nearly always passes). 95% is
        // 3.5 standard deviations (0.0066 for 600 pairs) below that.
        assert!(close >= 590 && far >= 390, "{close} close, {far} far pairs");
        let expected = expected / close as f64;
        assert!(
            (0.96..0.98).contains(&expected),
            "expected recall {expected}"
        );
        assert!(
            found as f64 >= 0.95 * close as f64,
            "found {found} of {close} pairs at Jaccard ≥ 0.9 (expected {expected:.3})"
        );
        // Unrelated originals stay apart.
        let originals: Vec<u32> = (0..200).map(|i| roots[i * 6]).collect();
        assert!(originals
            .iter()
            .enumerate()
            .all(|(i, &r)| r == (i * 6) as u32));
    }

    #[test]
    fn exact_mode_finds_normalised_copies_only() {
        let texts: Vec<String> = [
            "The quick brown fox",
            "the  QUICK brown\n fox ",
            "the quick brown fox.",
            "another text",
            "Another\ttext",
            "the quick brown fox",
        ]
        .map(String::from)
        .to_vec();
        let settings = DedupSettings {
            mode: DedupMode::Exact,
            ..DedupSettings::default()
        };
        assert_eq!(roots(&settings, &texts), [0, 0, 2, 3, 3, 0]);
        // Near mode also finds every exact copy.
        assert_eq!(roots(&near(), &texts)[..2], [0, 0]);
    }

    #[test]
    fn the_first_document_of_a_chain_is_kept() {
        let a = (0..200).map(|i| format!("a{i}")).collect::<Vec<_>>();
        let mut b = a.clone();
        b[100] = "changed".into();
        let texts = vec![b.join(" "), "unrelated words here".into(), a.join(" ")];
        assert_eq!(roots(&near(), &texts), [0, 1, 0]);
    }
}
