//! Finding input files and reading documents out of them, streaming.
//!
//! By extension: `.jsonl`/`.json` (one JSON object per line, text under a key; The Pile's
//! `{"text": …, "meta": {…}}`), the same compressed as `.zst` or `.gz`, `.parquet` (a string
//! column), and anything else as plain text, one document per file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::profile::{self, Stage};

/// Counts the time spent in a decompressor (its own reads included) under [`Stage::Decompress`].
struct Decompressing<R>(R);

impl<R: Read> Read for Decompressing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        profile::time(Stage::Decompress, || self.0.read(buf))
    }
}

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// JSON lines, uncompressed.
    Jsonl,
    /// JSON lines, zstd-compressed.
    JsonlZst,
    /// JSON lines, gzip-compressed.
    JsonlGz,
    /// Apache Parquet with a string column.
    Parquet,
    /// Plain text: the whole file is one document.
    Text,
}

impl InputKind {
    /// Kind by file name.
    pub fn of(path: &Path) -> InputKind {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let json = |rest: &str| rest.ends_with(".jsonl") || rest.ends_with(".json");
        if let Some(rest) = name.strip_suffix(".zst") {
            if json(rest) {
                return InputKind::JsonlZst;
            }
        }
        if let Some(rest) = name.strip_suffix(".gz") {
            if json(rest) {
                return InputKind::JsonlGz;
            }
        }
        if json(&name) {
            InputKind::Jsonl
        } else if name.ends_with(".parquet") {
            InputKind::Parquet
        } else {
            InputKind::Text
        }
    }
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Path to open.
    pub path: PathBuf,
    /// How to read it.
    pub kind: InputKind,
    /// Size on disk.
    pub bytes: u64,
}

/// A problem with the input. `record` problems can be skipped with `--skip-bad-records`.
#[derive(Debug, thiserror::Error)]
#[error("{path}{}: {what}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct InputError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (JSON lines) or row (Parquet), where one applies.
    pub line: Option<u64>,
    /// What is wrong.
    pub what: String,
    /// Whether only this record is bad (the rest of the file is readable).
    pub record_level: bool,
}

impl InputError {
    fn file(path: &Path, what: impl Into<String>) -> InputError {
        InputError {
            path: path.into(),
            line: None,
            what: what.into(),
            record_level: false,
        }
    }

    fn record(path: &Path, line: u64, what: impl Into<String>) -> InputError {
        InputError {
            path: path.into(),
            line: Some(line),
            what: what.into(),
            record_level: true,
        }
    }
}

/// Matches a file name against a shell-style pattern with `*` and `?`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Expands files and directories (recursively) into a sorted list of input files: the files
/// of [`discover_inputs`] without an excluded folder, for callers that need no report.
pub fn discover(inputs: &[PathBuf], glob: Option<&str>) -> Result<Vec<InputFile>, InputError> {
    Ok(discover_inputs(inputs, glob, &[])?.files)
}

/// An entry of an input directory that the walk left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The entry, as reached.
    pub path: PathBuf,
    /// Why it was left out.
    pub why: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.why)
    }
}

/// What [`discover_inputs`] found.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    /// The input files, in order, each once.
    pub files: Vec<InputFile>,
    /// What was left out, and why (not files whose names start with `.`, nor names `glob`
    /// filters out: those are left out by rule).
    pub skipped: Vec<Skipped>,
}

/// `path` with symbolic links, `.` and `..` resolved: canonical where it exists, else its
/// nearest existing ancestor canonical with the rest appended. What identifies a file or folder
/// however it is spelled (`./x`, `x`, through a link).
pub fn canonical(path: &Path) -> PathBuf {
    if let Ok(found) = std::fs::canonicalize(path) {
        return found;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut rest = Vec::new();
    let mut at = absolute.as_path();
    loop {
        if let Ok(found) = std::fs::canonicalize(at) {
            return rest.iter().rev().fold(found, |p, c| p.join(c));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                at = parent;
            }
            _ => return absolute,
        }
    }
}

/// Expands files and directories (recursively) into a sorted list of input files. Files named
/// directly are kept in the order given; directory contents are sorted by path. `glob`
/// filters file names found in directories. Symbolic links are followed, to files and to
/// directories; a directory reached a second time (a link loop, or two links to one folder)
/// is not walked again, and a file reached by two paths is read once (the first, by its
/// canonical path). Folders in `exclude` (the output folder) are not walked. Everything left
/// out that way, and dangling links and entries that are not regular files, is reported in
/// [`Discovered::skipped`].
pub fn discover_inputs(
    inputs: &[PathBuf],
    glob: Option<&str>,
    exclude: &[PathBuf],
) -> Result<Discovered, InputError> {
    let mut walk = Walk {
        exclude: exclude.iter().map(|p| canonical(p)).collect(),
        ..Walk::default()
    };
    let mut paths = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input)
            .map_err(|e| InputError::file(input, format!("cannot read: {e}")))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk.dir(input, &mut found)?;
            found.sort();
            for path in found {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                if name.starts_with('.') || glob.is_some_and(|g| !glob_match(g, &name)) {
                    continue;
                }
                paths.push(path);
            }
        } else {
            paths.push(input.clone());
        }
    }
    let mut seen: std::collections::HashMap<PathBuf, PathBuf> = Default::default();
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(&path)
            .map_err(|e| InputError::file(&path, format!("cannot read: {e}")))?;
        if let Some(first) = seen.get(&canonical(&path)) {
            walk.skipped.push(Skipped {
                why: format!("the same file as {}, read once", first.display()),
                path,
            });
            continue;
        }
        seen.insert(canonical(&path), path.clone());
        files.push(InputFile {
            kind: InputKind::of(&path),
            path,
            bytes: meta.len(),
        });
    }
    Ok(Discovered {
        files,
        skipped: walk.skipped,
    })
}

/// The state of one directory walk.
#[derive(Default)]
struct Walk {
    /// Canonical folders not to walk.
    exclude: Vec<PathBuf>,
    /// Canonical folders walked so far, with the path they were first reached by.
    visited: std::collections::HashMap<PathBuf, PathBuf>,
    skipped: Vec<Skipped>,
}

impl Walk {
    fn dir(&mut self, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
        let real = canonical(dir);
        if self.exclude.contains(&real) {
            self.skipped.push(Skipped {
                path: dir.into(),
                why: "the output folder (--out), not read as input".into(),
            });
            return Ok(());
        }
        if let Some(first) = self.visited.get(&real) {
            self.skipped.push(Skipped {
                path: dir.into(),
                why: format!(
                    "the folder {} again (a symbolic link loop, or a second link to it), walked once",
                    first.display()
                ),
            });
            return Ok(());
        }
        self.visited.insert(real, dir.to_path_buf());
        let entries = std::fs::read_dir(dir)
            .map_err(|e| InputError::file(dir, format!("cannot list: {e}")))?;
        let mut entries = entries
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| InputError::file(dir, format!("cannot list: {e}")))?;
        // Sorted, so that which of two paths to one file or folder comes first is fixed.
        entries.sort();
        for path in entries {
            let link = std::fs::symlink_metadata(&path)
                .map_err(|e| InputError::file(&path, e.to_string()))?;
            // Through links: what the entry is.
            let kind = match std::fs::metadata(&path) {
                Ok(meta) => meta.file_type(),
                Err(e) if link.file_type().is_symlink() => {
                    self.skipped.push(Skipped {
                        why: format!("a symbolic link that leads nowhere ({e})"),
                        path,
                    });
                    continue;
                }
                Err(e) => return Err(InputError::file(&path, e.to_string())),
            };
            if kind.is_dir() {
                self.dir(&path, out)?;
            } else if kind.is_file() {
                out.push(path);
            } else {
                self.skipped.push(Skipped {
                    path,
                    why: "not a regular file (a socket, pipe or device)".into(),
                });
            }
        }
        Ok(())
    }
}

/// Counts bytes read from the underlying file (compressed bytes, for progress).
struct CountingReader<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = profile::time(Stage::Io, || self.inner.read(buf))?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The documents of one file, in order; each item is `(record index, text)`.
pub type Records = Box<dyn Iterator<Item = Result<(u64, String), InputError>> + Send>;

/// Opens a file's documents. `bytes_read` grows as the file is read.
pub fn open_records(
    file: &InputFile,
    text_key: &str,
    bytes_read: Arc<AtomicU64>,
) -> Result<Records, InputError> {
    let path = file.path.clone();
    let raw =
        File::open(&path).map_err(|e| InputError::file(&path, format!("cannot open: {e}")))?;
    let counted = CountingReader {
        inner: raw,
        counter: bytes_read.clone(),
    };
    let key = text_key.to_string();
    let kind = file.kind;
    let checked = path.clone();
    let records: Records = match file.kind {
        InputKind::Jsonl => Box::new(JsonLines::new(path, Box::new(counted), key)),
        InputKind::JsonlZst => {
            let decoder = zstd::stream::read::Decoder::new(counted)
                .map_err(|e| InputError::file(&path, format!("cannot start zstd: {e}")))?;
            Box::new(JsonLines::new(path, Box::new(Decompressing(decoder)), key))
        }
        InputKind::JsonlGz => Box::new(JsonLines::new(
            path,
            Box::new(Decompressing(flate2::read::MultiGzDecoder::new(counted))),
            key,
        )),
        InputKind::Text => {
            let mut bytes = Vec::new();
            let mut reader = counted;
            reader
                .read_to_end(&mut bytes)
                .map_err(|e| InputError::file(&path, format!("cannot read: {e}")))?;
            let item = String::from_utf8(bytes).map(|t| (0, t)).map_err(|e| {
                let at = e.utf8_error().valid_up_to();
                let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() as u64;
                InputError::record(&path, line, format!("invalid UTF-8 at byte {at}"))
            });
            Box::new(std::iter::once(item))
        }
        InputKind::Parquet => {
            // Parquet needs random access; count the file as read once it is opened.
            drop(counted);
            bytes_read.fetch_add(file.bytes, Ordering::Relaxed);
            Box::new(crate::parquet_input::read_column(&path, &key)?)
        }
    };
    Ok(Box::new(records.map(move |item| {
        let (index, text) = item?;
        // No run can be longer than its document: ordinary documents are not scanned.
        let too_long = (text.len() > MAX_RUN_BYTES)
            .then(|| longest_run(&text))
            .flatten()
            .filter(|run| run.bytes > MAX_RUN_BYTES);
        match too_long {
            Some(run) => {
                // Text files hold one document: name the line the run starts on.
                let line = match kind {
                    InputKind::Text => 1 + bytecount_newlines(&text.as_bytes()[..run.start]),
                    _ => index + 1,
                };
                Err(InputError::record(&checked, line, run.describe()))
            }
            None => Ok((index, text)),
        }
    })))
}

/// The longest run of whitespace, or of other characters, that a document may hold: 1 MiB.
///
/// Byte-pair encoding merges inside one pre-tokenizer piece, and a piece of GPT-2's (and of
/// cl100k/o200k's, and of byte-level trained) pre-tokenizers lies within one such run, give or
/// take one neighbouring character. BPE of a piece takes about 60 bytes of memory per byte of
/// it (tiktoken's merge state and heap) and cannot be cut into pieces without changing the ids,
/// so this bound is what keeps a document without whitespace (a 32 MB base64 blob, say) from
/// taking gigabytes: such a document is a bad record, reported with its file and line, and
/// skipped under `--skip-bad-records`.
pub const MAX_RUN_BYTES: usize = 1 << 20;

/// A run of characters of one kind (whitespace or not) in a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Byte offset of its first character.
    pub start: usize,
    /// Its length in bytes.
    pub bytes: usize,
    /// Whether it is whitespace.
    pub whitespace: bool,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "a run of {} bytes {} (from byte {} of the document) is longer than the {} bytes one pre-tokenizer piece may have (byte-pair encoding one piece takes about 60 bytes of memory per byte, and cutting it would change the ids)",
            self.bytes,
            if self.whitespace { "of whitespace" } else { "without whitespace" },
            self.start,
            MAX_RUN_BYTES
        )
    }
}

/// The longest run of whitespace or of non-whitespace characters in `text` (the first of the
/// longest), or `None` for an empty text.
pub fn longest_run(text: &str) -> Option<Run> {
    if text.is_empty() {
        return None;
    }
    let mut best = Run {
        start: 0,
        bytes: 0,
        whitespace: false,
    };
    let mut current: Option<Run> = None;
    for (i, c) in text.char_indices() {
        let whitespace = c.is_whitespace();
        match &mut current {
            Some(run) if run.whitespace == whitespace => run.bytes += c.len_utf8(),
            _ => {
                if let Some(run) = current {
                    if run.bytes > best.bytes {
                        best = run;
                    }
                }
                current = Some(Run {
                    start: i,
                    bytes: c.len_utf8(),
                    whitespace,
                });
            }
        }
    }
    if let Some(run) = current {
        if run.bytes > best.bytes {
            best = run;
        }
    }
    Some(best)
}

fn bytecount_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// JSON lines: one object per line, the document under `key`.
struct JsonLines {
    path: PathBuf,
    reader: BufReader<Box<dyn Read + Send>>,
    key: String,
    line: u64,
    buf: Vec<u8>,
    failed: bool,
}

impl JsonLines {
    fn new(path: PathBuf, reader: Box<dyn Read + Send>, key: String) -> Self {
        JsonLines {
            path,
            reader: BufReader::with_capacity(1 << 20, reader),
            key,
            line: 0,
            buf: Vec::new(),
            failed: false,
        }
    }

    fn parse(&self, bytes: &[u8]) -> Result<String, InputError> {
        let line = self.line;
        let text = std::str::from_utf8(bytes).map_err(|e| {
            InputError::record(
                &self.path,
                line,
                format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
            )
        })?;
        let mut value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| InputError::record(&self.path, line, format!("invalid JSON: {e}")))?;
        let object = value
            .as_object_mut()
            .ok_or_else(|| InputError::record(&self.path, line, "not a JSON object"))?;
        match object.remove(&self.key) {
            Some(serde_json::Value::String(s)) => Ok(s),
            Some(other) => Err(InputError::record(
                &self.path,
                line,
                format!(
                    "`{}` is not a string (found {})",
                    self.key,
                    json_type(&other)
                ),
            )),
            None => Err(InputError::record(
                &self.path,
                line,
                format!("no `{}` key (use --text-key to pick another)", self.key),
            )),
        }
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl Iterator for JsonLines {
    type Item = Result<(u64, String), InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = std::time::Instant::now();
        let item = self.next_record();
        profile::add(Stage::Records, start.elapsed());
        item
    }
}

impl JsonLines {
    fn next_record(&mut self) -> Option<Result<(u64, String), InputError>> {
        if self.failed {
            return None;
        }
        loop {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {
                    self.line += 1;
                    let bytes = std::mem::take(&mut self.buf);
                    let trimmed = trim_ascii(&bytes);
                    if trimmed.is_empty() {
                        self.buf = bytes;
                        continue;
                    }
                    let parsed = self.parse(trimmed);
                    self.buf = bytes;
                    return Some(parsed.map(|t| (self.line - 1, t)));
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(InputError::file(
                        &self.path,
                        format!(
                            "read error after line {} (truncated or corrupt file?): {e}",
                            self.line
                        ),
                    )));
                }
            }
        }
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_run_finds_the_first_longest_run_of_either_kind() {
        assert_eq!(longest_run(""), None);
        let run = |start, bytes, whitespace| {
            Some(Run {
                start,
                bytes,
                whitespace,
            })
        };
        assert_eq!(longest_run("ab  cd"), run(0, 2, false));
        assert_eq!(longest_run("ab   cd"), run(2, 3, true));
        assert_eq!(longest_run("a bb\u{3000}\u{3000}é"), run(4, 6, true));
        assert_eq!(longest_run("x héé"), run(2, 5, false));
    }
}
