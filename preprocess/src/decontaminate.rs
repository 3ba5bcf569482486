//! `preprocess --decontaminate FILE…`: benchmark text cut out of the training documents, as
//! GPT-3 did (its appendix C).
//!
//! Every `--decontaminate-ngram` (default 13) consecutive words of an evaluation item (words
//! as dedup normalises them: NFC, lower-cased, split at whitespace) is a contaminating n-gram.
//! In a training document, each occurrence is cut out with [`MARGIN_CHARS`] characters on
//! either side; the document is split at the cuts into pieces (whitespace-only pieces go), the
//! pieces go on as documents of their own (an end-of-document token between them), and a
//! document cut into more than [`MAX_PIECES`] pieces is dropped. Only `train/` is cleaned.
//!
//! The files: a task file `h5gpt eval --task` reads (HellaSwag, `{context, choices, answer}`
//! or LAMBADA, through the same reader, [`h5gpt_formats::task`]) gives, per item, each
//! context joined to each of its continuations as `eval --task` scores them (both of
//! HellaSwag's forms); any other JSON lines (`.jsonl`/`.json`) give their objects' fields
//! `text`, `ctx`, `ctx_a`, `ctx_b`, `question`, `query`, `goal`, `passage` and each string of
//! `endings`, each on its own; any other file: each non-empty line is an item. An item of
//! fewer words than the n-gram contributes nothing.

use crate::dedup::normalise::normalise;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use unicode_normalization::UnicodeNormalization;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Characters cut on either side of a matched n-gram (GPT-3's 200).
pub const MARGIN_CHARS: usize = 200;
/// A document cut into more pieces than this is dropped (GPT-3's 10).
pub const MAX_PIECES: usize = 10;
/// JSON fields read as items.
pub const TEXT_FIELDS: [&str; 8] = [
    "text", "ctx", "ctx_a", "ctx_b", "question", "query", "goal", "passage",
];

/// `--decontaminate` and `--decontaminate-ngram`, with the files' checksums (so the run's
/// fingerprint changes with their content).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DecontaminateSettings {
    /// The evaluation files.
    pub files: Vec<PathBuf>,
    /// Their xxh3-64.
    pub xxh3_64: Vec<String>,
    /// Words per n-gram.
    pub ngram: usize,
}

impl DecontaminateSettings {
    /// Settings for `files` (read now for their checksums).
    pub fn new(files: Vec<PathBuf>, ngram: usize) -> Result<DecontaminateSettings> {
        let xxh3_64 = files
            .iter()
            .map(|f| {
                h5gpt_formats::checksum::file_xxh3_64(f)
                    .with_context(|| format!("--decontaminate {}: cannot read", f.display()))
            })
            .collect::<Result<_>>()?;
        Ok(DecontaminateSettings {
            files,
            xxh3_64,
            ngram,
        })
    }

    /// Whether no file is given.
    pub fn is_off(&self) -> bool {
        self.files.is_empty()
    }
}

/// The contaminating n-grams.
#[derive(Debug, Default)]
pub struct Decontaminator {
    ngram: usize,
    grams: HashSet<u64>,
    /// Items read.
    pub items: u64,
}

/// A cut: the matched n-gram's byte range in the document, and the range cut (margins in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Match {
    /// The matched words' byte range.
    pub matched: Range<usize>,
    /// The n-gram's words as normalised.
    pub ngram: String,
}

/// What decontamination does to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleaned {
    /// No n-gram matched.
    Clean,
    /// The pieces left (byte ranges of the document, in order) and the matches.
    Cut(Vec<Range<usize>>, Vec<Match>),
    /// Cut into more than [`MAX_PIECES`] pieces, or into none: dropped.
    Dropped(Vec<Match>),
}

fn gram_hash(words: &[u64]) -> u64 {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    xxh3_64(&bytes)
}

fn word_hash(word: &str) -> u64 {
    xxh3_64_with_seed(word.as_bytes(), 13)
}

/// The items of one evaluation file.
pub fn read_items(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--decontaminate {}: cannot read", path.display()))?;
    let name = path.to_string_lossy().to_lowercase();
    let json = name.ends_with(".jsonl") || name.ends_with(".json");
    if json {
        if let Ok(task) = h5gpt_formats::task::Task::parse(path, &text, None) {
            return Ok(task_items(&task));
        }
    }
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !json {
            items.push(line.to_owned());
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: invalid JSON (a JSON-lines file of evaluation items)",
                path.display(),
                n + 1
            )
        })?;
        let Some(object) = value.as_object() else {
            bail!("{}:{}: not a JSON object", path.display(), n + 1);
        };
        for field in TEXT_FIELDS {
            if let Some(s) = object.get(field).and_then(|v| v.as_str()) {
                items.push(s.to_owned());
            }
        }
        if let Some(endings) = object.get("endings").and_then(|v| v.as_array()) {
            items.extend(endings.iter().filter_map(|e| e.as_str()).map(str::to_owned));
        }
    }
    Ok(items)
}

/// A task's text as `eval --task` scores it: each context with each of its continuations (the
/// harness form and, for HellaSwag, build-nanogpt's), so n-grams across the join count too.
fn task_items(task: &h5gpt_formats::task::Task) -> Vec<String> {
    let mut items = Vec::new();
    for item in &task.items {
        for scored in std::iter::once(&item.harness).chain(&item.raw) {
            for continuation in &scored.continuations {
                items.push(format!("{}{continuation}", scored.context));
            }
        }
    }
    items
}

impl Decontaminator {
    /// The n-grams of the items of `settings.files`.
    pub fn load(settings: &DecontaminateSettings) -> Result<Decontaminator> {
        let mut d = Decontaminator {
            ngram: settings.ngram.max(1),
            ..Decontaminator::default()
        };
        for file in &settings.files {
            for item in read_items(file)? {
                d.add_item(&item);
            }
        }
        Ok(d)
    }

    /// Adds one item's n-grams.
    pub fn add_item(&mut self, item: &str) {
        self.items += 1;
        let words: Vec<u64> = normalise(item)
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(word_hash)
            .collect();
        for window in words.windows(self.ngram) {
            self.grams.insert(gram_hash(window));
        }
    }

    /// Distinct n-grams.
    pub fn len(&self) -> usize {
        self.grams.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.grams.is_empty()
    }

    /// Finds the n-grams in `text` and cuts them out with their margins.
    pub fn clean(&self, text: &str) -> Cleaned {
        if self.grams.is_empty() {
            return Cleaned::Clean;
        }
        // Words with their byte ranges; each normalised on its own (as `normalise` would).
        let mut spans = Vec::new();
        let mut hashes = Vec::new();
        let mut start = None;
        for (i, c) in text
            .char_indices()
            .chain(std::iter::once((text.len(), ' ')))
        {
            match (c.is_whitespace(), start) {
                (true, Some(s)) => {
                    let word: String = text[s..i].nfc().flat_map(char::to_lowercase).collect();
                    spans.push(s..i);
                    hashes.push(word_hash(&word));
                    start = None;
                }
                (false, None) => start = Some(i),
                _ => {}
            }
        }
        let mut matches = Vec::new();
        let mut cuts: Vec<Range<usize>> = Vec::new();
        for (k, window) in hashes.windows(self.ngram).enumerate() {
            if !self.grams.contains(&gram_hash(window)) {
                continue;
            }
            let matched = spans[k].start..spans[k + self.ngram - 1].end;
            let cut = back_chars(text, matched.start, MARGIN_CHARS)
                ..forward_chars(text, matched.end, MARGIN_CHARS);
            matches.push(Match {
                ngram: text[matched.clone()]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
                matched,
            });
            match cuts.last_mut() {
                Some(last) if cut.start <= last.end => last.end = last.end.max(cut.end),
                _ => cuts.push(cut),
            }
        }
        if matches.is_empty() {
            return Cleaned::Clean;
        }
        let mut pieces = Vec::new();
        let mut at = 0;
        for cut in &cuts {
            pieces.push(at..cut.start);
            at = cut.end;
        }
        pieces.push(at..text.len());
        pieces.retain(|p| !text[p.clone()].trim().is_empty());
        if pieces.is_empty() || pieces.len() > MAX_PIECES {
            Cleaned::Dropped(matches)
        } else {
            Cleaned::Cut(pieces, matches)
        }
    }
}

/// The byte offset `n` characters before `at` (or 0).
fn back_chars(text: &str, at: usize, n: usize) -> usize {
    text[..at]
        .char_indices()
        .rev()
        .nth(n - 1)
        .map_or(0, |(i, _)| i)
}

/// The byte offset `n` characters after `at` (or the end).
fn forward_chars(text: &str, at: usize, n: usize) -> usize {
    text[at..]
        .char_indices()
        .nth(n)
        .map_or(text.len(), |(i, _)| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(prefix: &str, n: usize) -> String {
        (0..n)
            .map(|i| format!("{prefix}{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn with_item(item: &str) -> Decontaminator {
        let mut d = Decontaminator {
            ngram: 13,
            ..Decontaminator::default()
        };
        d.add_item(item);
        d
    }

    #[test]
    fn a_planted_13_gram_is_cut_with_its_margins() {
        let benchmark = words("bench", 20);
        let d = with_item(&benchmark);
        // 13 benchmark words, upper-cased and spaced differently, between two long texts.
        let planted = words("bench", 13).to_uppercase().replace(' ', "  ");
        let (head, tail) = (words("h", 200), words("t", 200));
        let text = format!("{head} {planted} {tail}");
        let Cleaned::Cut(pieces, matches) = d.clean(&text) else {
            panic!("not cut");
        };
        assert_eq!(matches.len(), 1);
        let m = &matches[0].matched;
        assert_eq!(&text[m.clone()], planted);
        assert_eq!(pieces.len(), 2);
        // 200 characters go on either side of the match.
        assert_eq!(text[pieces[0].end..m.start].chars().count(), 200);
        assert_eq!(text[m.end..pieces[1].start].chars().count(), 200);
        assert_eq!((pieces[0].start, pieces[1].end), (0, text.len()));
        // 12 words do not match.
        assert_eq!(
            d.clean(&format!("{head} {} {tail}", words("bench", 12))),
            Cleaned::Clean
        );
    }

    #[test]
    fn a_document_cut_into_more_than_ten_pieces_is_dropped() {
        let d = with_item(&words("bench", 13));
        let planted = words("bench", 13);
        let filler = words("f", 150); // 639 characters: more than the 2 × 200 of two margins
        let text_with = |cuts: usize| {
            let mut parts = vec![filler.clone()];
            for _ in 0..cuts {
                parts.push(planted.clone());
                parts.push(filler.clone());
            }
            parts.join(" ")
        };
        // 10 cuts: 11 pieces → dropped; 9 cuts: 10 pieces → kept.
        assert!(matches!(d.clean(&text_with(10)), Cleaned::Dropped(m) if m.len() == 10));
        assert!(matches!(d.clean(&text_with(9)), Cleaned::Cut(p, _) if p.len() == 10));
    }

    #[test]
    fn task_files_are_read_as_eval_scores_them() {
        let dir = tempfile::tempdir().unwrap();
        let choices = dir.path().join("arc.jsonl");
        std::fs::write(
            &choices,
            "{\"context\": \"Question: why\", \"choices\": [\"one\", \"two\"], \"answer\": 1}\n",
        )
        .unwrap();
        assert_eq!(
            read_items(&choices).unwrap(),
            ["Question: why one", "Question: why two"]
        );
        let lambada = dir.path().join("lambada.jsonl");
        std::fs::write(&lambada, "{\"text\": \"he saw the dog\"}\n").unwrap();
        assert_eq!(read_items(&lambada).unwrap(), ["he saw the dog"]);
    }

    #[test]
    fn hellaswag_and_lambada_fields_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("items.jsonl");
        std::fs::write(
            &path,
            "{\"ctx\": \"a b\", \"endings\": [\"c\", \"d\"], \"label\": 0}\n{\"text\": \"lambada passage\"}\n\n",
        )
        .unwrap();
        assert_eq!(
            read_items(&path).unwrap(),
            ["a b", "c", "d", "lambada passage"]
        );
        let plain = dir.path().join("items.txt");
        std::fs::write(&plain, "one line\n\nanother\n").unwrap();
        assert_eq!(read_items(&plain).unwrap(), ["one line", "another"]);
    }
}

/// What decontamination did to the training documents (the summary and the manifest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DecontaminationReport {
    /// Evaluation items read.
    pub items: u64,
    /// Distinct n-grams among them.
    pub ngrams: u64,
    /// Training documents with at least one match.
    pub documents_cut: u64,
    /// Matches (n-gram occurrences) cut out.
    pub matches: u64,
    /// Of the documents cut, those dropped (more than [`MAX_PIECES`] pieces).
    pub documents_dropped: u64,
}

/// A line of `decontamination.jsonl`: one training document with matches.
#[derive(Debug, Clone, Serialize)]
struct ReportLine<'a> {
    file: String,
    record: u64,
    line: u64,
    /// Pieces kept (0: dropped).
    pieces: usize,
    dropped: bool,
    /// Byte range of each match in the document (after any split inside documents) and its
    /// words.
    matches: &'a [Match],
}

/// Name of the decontamination record in the training output folder.
pub const DECONTAMINATION_JSONL: &str = "decontamination.jsonl";

/// The decontaminator and what it does to this run's training documents.
#[derive(Debug)]
pub struct Decontamination {
    /// The n-grams.
    pub decontaminator: Decontaminator,
    /// The counts.
    pub report: DecontaminationReport,
    /// The lines of `decontamination.jsonl`.
    pub jsonl: Vec<u8>,
}

/// Scans the training documents of `files` (`applies(file, record)`: kept, and training) for
/// the n-grams of `settings`, after `part`; the read stage makes the same cuts as it reads.
pub fn scan(
    settings: &DecontaminateSettings,
    files: &[crate::input::InputFile],
    text_key: &str,
    part: crate::val_split::DocPart,
    applies: &(dyn Fn(usize, u64) -> bool + Sync),
) -> Result<Decontamination> {
    use rayon::prelude::*;
    let decontaminator = Decontaminator::load(settings)?;
    let mut report = DecontaminationReport {
        items: decontaminator.items,
        ngrams: decontaminator.len() as u64,
        ..DecontaminationReport::default()
    };
    let mut jsonl = Vec::new();
    for (file_index, file) in files.iter().enumerate() {
        let mut records = crate::input::open_records(
            file,
            text_key,
            std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
        )?
        .enumerate();
        let mut done = false;
        while !done {
            // Bad records are the main pass's to report: here they only count as records.
            let mut docs: Vec<(u64, u64, String)> = Vec::new();
            for _ in 0..4096 {
                let Some((record, item)) = records.next() else {
                    done = true;
                    break;
                };
                if let Ok((index, text)) = item {
                    if applies(file_index, record as u64) {
                        docs.push((record as u64, index, text));
                    }
                }
            }
            let cleaned: Vec<Cleaned> = docs
                .par_iter()
                .map(|(_, _, text)| decontaminator.clean(&part.apply(text.clone())))
                .collect();
            for ((record, index, _), cleaned) in docs.iter().zip(cleaned) {
                let (pieces, matches, dropped) = match &cleaned {
                    Cleaned::Clean => continue,
                    Cleaned::Cut(pieces, matches) => (pieces.len(), matches, false),
                    Cleaned::Dropped(matches) => (0, matches, true),
                };
                report.documents_cut += 1;
                report.matches += matches.len() as u64;
                report.documents_dropped += u64::from(dropped);
                serde_json::to_writer(
                    &mut jsonl,
                    &ReportLine {
                        file: file.path.to_string_lossy().into_owned(),
                        record: *record,
                        line: index + 1,
                        pieces,
                        dropped,
                        matches,
                    },
                )?;
                jsonl.push(b'\n');
            }
        }
    }
    Ok(Decontamination {
        decontaminator,
        report,
        jsonl,
    })
}
