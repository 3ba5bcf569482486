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

/// Expands files and directories (recursively) into a sorted list of input files. Files named
/// directly are kept in the order given; directory contents are sorted by path. `glob`
/// filters file names found in directories.
pub fn discover(inputs: &[PathBuf], glob: Option<&str>) -> Result<Vec<InputFile>, InputError> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input)
            .map_err(|e| InputError::file(input, format!("cannot read: {e}")))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(input, &mut found)?;
            found.sort();
            for path in found {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                if name.starts_with('.') || glob.is_some_and(|g| !glob_match(g, &name)) {
                    continue;
                }
                files.push(path);
            }
        } else {
            files.push(input.clone());
        }
    }
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::metadata(&path)
                .map_err(|e| InputError::file(&path, format!("cannot read: {e}")))?
                .len();
            Ok(InputFile {
                kind: InputKind::of(&path),
                path,
                bytes,
            })
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| InputError::file(dir, format!("cannot list: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| InputError::file(dir, format!("cannot list: {e}")))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| InputError::file(&path, e.to_string()))?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
            out.push(path);
        }
    }
    Ok(())
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
    Ok(match file.kind {
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
    })
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
