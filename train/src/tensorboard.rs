//! TensorBoard event files: scalars as TensorBoard's `EventFileLoader` reads them, written
//! without TensorFlow or a protobuf compiler.
//!
//! A file is a sequence of TFRecords — `u64` length, masked CRC32C of the length, the bytes,
//! masked CRC32C of the bytes (little-endian) — each holding one `tensorflow.Event`. Only three
//! messages are needed, so they are encoded by hand (a protobuf crate would bring a code
//! generator or derive macros for seven fields):
//!
//! ```text
//! Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//! Summary { repeated Value value = 1; }
//! Value   { string tag = 1; float simple_value = 2; }
//! ```
//!
//! CRC32C (Castagnoli) comes from the maintained `crc32c` crate (hardware instructions where
//! the CPU has them).
//!
//! On resume the run's events past its checkpoint are dropped by rewriting: [`EventWriter::open`]
//! reads the directory's event files, keeps the events the resumed run does not redo (the rule
//! of `metrics.jsonl`), writes them with their wall times into one new file (temporary name,
//! fsync, rename) and removes the old files. TensorBoard's own purge (a `SessionLog.START`
//! event) is not used: other readers (tbparse, `tf.compat.v1.train.summary_iterator`) do not
//! apply it.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The prefix of every event file's name (TensorBoard's glob).
pub const FILE_PREFIX: &str = "events.out.tfevents.";

/// TFRecord's masked CRC32C.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// `bytes` framed as one TFRecord.
fn record(bytes: &[u8]) -> Vec<u8> {
    let len = (bytes.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(&masked_crc(bytes).to_le_bytes());
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// One event: at `wall_time` (seconds since the epoch), `step`, a file version or scalars.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
    /// The x axis.
    pub step: i64,
    /// The first event's `brain.Event:2`.
    pub file_version: Option<String>,
    /// `(tag, value)` scalars.
    pub scalars: Vec<(String, f32)>,
}

impl Event {
    /// The protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        key(&mut out, 1, 1);
        out.extend_from_slice(&self.wall_time.to_le_bytes());
        key(&mut out, 2, 0);
        varint(&mut out, self.step as u64);
        if let Some(version) = &self.file_version {
            bytes_field(&mut out, 3, version.as_bytes());
        }
        if !self.scalars.is_empty() {
            let mut summary = Vec::new();
            for (tag, value) in &self.scalars {
                let mut v = Vec::new();
                bytes_field(&mut v, 1, tag.as_bytes());
                key(&mut v, 2, 5);
                v.extend_from_slice(&value.to_le_bytes());
                bytes_field(&mut summary, 1, &v);
            }
            bytes_field(&mut out, 5, &summary);
        }
        out
    }

    /// Decodes an event this module wrote (fields it does not know are skipped).
    pub fn decode(bytes: &[u8]) -> Result<Event> {
        let mut event = Event {
            wall_time: 0.0,
            step: 0,
            file_version: None,
            scalars: Vec::new(),
        };
        for (field, value) in fields(bytes)? {
            match (field, value) {
                (1, Field::Fixed64(v)) => event.wall_time = f64::from_le_bytes(v),
                (2, Field::Varint(v)) => event.step = v as i64,
                (3, Field::Bytes(b)) => {
                    event.file_version = Some(String::from_utf8_lossy(b).into_owned())
                }
                (5, Field::Bytes(summary)) => {
                    for (f, value) in fields(summary)? {
                        let (1, Field::Bytes(value)) = (f, value) else {
                            continue;
                        };
                        let (mut tag, mut scalar) = (String::new(), None);
                        for (f, x) in fields(value)? {
                            match (f, x) {
                                (1, Field::Bytes(t)) => {
                                    tag = String::from_utf8_lossy(t).into_owned()
                                }
                                (2, Field::Fixed32(x)) => scalar = Some(f32::from_le_bytes(x)),
                                _ => {}
                            }
                        }
                        if let Some(x) = scalar {
                            event.scalars.push((tag, x));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(event)
    }
}

enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

/// The fields of one protobuf message.
fn fields(mut bytes: &[u8]) -> Result<Vec<(u64, Field<'_>)>> {
    fn read_varint(bytes: &mut &[u8]) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some((&b, rest)) = bytes.split_first() else {
                bail!("a truncated varint");
            };
            *bytes = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        bail!("a varint longer than 10 bytes")
    }
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
        if bytes.len() < n {
            bail!("a truncated field");
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let k = read_varint(&mut bytes)?;
        let field = match k & 7 {
            0 => Field::Varint(read_varint(&mut bytes)?),
            1 => Field::Fixed64(take(&mut bytes, 8)?.try_into().expect("8 bytes")),
            2 => {
                let n = read_varint(&mut bytes)? as usize;
                Field::Bytes(take(&mut bytes, n)?)
            }
            5 => Field::Fixed32(take(&mut bytes, 4)?.try_into().expect("4 bytes")),
            wire => bail!("unsupported wire type {wire}"),
        };
        out.push((k >> 3, field));
    }
    Ok(out)
}

/// The events of one file, each record's checksums checked. A record cut short at the end (a
/// run killed while writing) ends the list.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rest = bytes.as_slice();
    let mut events = Vec::new();
    while rest.len() >= 12 {
        let len_bytes = &rest[..8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        let len_crc = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes"));
        if masked_crc(len_bytes) != len_crc {
            bail!("{}: a record's length checksum is wrong", path.display());
        }
        if rest.len() < 12 + len + 4 {
            break;
        }
        let data = &rest[12..12 + len];
        let crc = u32::from_le_bytes(rest[12 + len..16 + len].try_into().expect("4 bytes"));
        if masked_crc(data) != crc {
            bail!("{}: a record's data checksum is wrong", path.display());
        }
        events
            .push(Event::decode(data).with_context(|| format!("{}: a bad event", path.display()))?);
        rest = &rest[16 + len..];
    }
    Ok(events)
}

/// The event files in `dir`, by name (TensorBoard's order).
pub fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(FILE_PREFIX))
        })
        .collect();
    files.sort();
    files
}

/// Whether a tag is an evaluation's (kept at the checkpoint's own step on resume, as
/// `metrics.jsonl` keeps its `val_loss` and task rows there).
fn is_evaluation_tag(tag: &str) -> bool {
    tag.starts_with("val/") || tag.starts_with("task/")
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Appends scalars to a run's event file.
pub struct EventWriter {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl EventWriter {
    /// Opens `dir` for a run starting at `start_step`: the events of earlier files a resumed
    /// run does not redo are kept (train scalars of steps before `start_step`, evaluation
    /// scalars at or before it when `start_step > 0`), rewritten into one new file, and the old
    /// files are removed.
    pub fn open(dir: &Path, start_step: usize) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let old = event_files(dir);
        let start = start_step as i64;
        let mut kept = Vec::new();
        for path in &old {
            for mut event in read_events(path)? {
                if event.file_version.is_some() {
                    continue;
                }
                event.scalars.retain(|(tag, _)| {
                    event.step < start
                        || (event.step == start && start > 0 && is_evaluation_tag(tag))
                });
                if !event.scalars.is_empty() {
                    kept.push(event);
                }
            }
        }
        // A name after every old one, so TensorBoard reads it last.
        let wall = now();
        let mut name = format!("{FILE_PREFIX}{:010}.h5gpt", wall as u64);
        while old
            .iter()
            .any(|p| p.file_name().and_then(|n| n.to_str()) >= Some(name.as_str()))
        {
            name.push('+');
        }
        let path = dir.join(&name);
        let mut bytes = record(
            &Event {
                wall_time: wall,
                step: 0,
                file_version: Some("brain.Event:2".into()),
                scalars: Vec::new(),
            }
            .encode(),
        );
        for event in &kept {
            bytes.extend(record(&event.encode()));
        }
        h5gpt_formats::fsio::write_atomic(&path, &bytes)?;
        for p in &old {
            std::fs::remove_file(p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(EventWriter {
            path,
            file: std::io::BufWriter::new(file),
        })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `scalars` at `step` (now).
    pub fn scalars(&mut self, step: usize, scalars: &[(&str, f64)]) -> Result<()> {
        let event = Event {
            wall_time: now(),
            step: step as i64,
            file_version: None,
            scalars: scalars
                .iter()
                .filter(|(_, v)| v.is_finite())
                .map(|(t, v)| ((*t).to_owned(), *v as f32))
                .collect(),
        };
        if event.scalars.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&record(&event.encode()))
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Flushes the events written so far to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Flushes and syncs the file.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.file
            .get_ref()
            .sync_all()
            .with_context(|| format!("cannot sync {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TFRecord's CRC32C of "123456789" is 0xe3069283 (the CRC-32C check value); masked as
    /// TensorFlow's `crc32c::Mask`: ((c >> 15) | (c << 17)) + 0xa282ead8.
    #[test]
    fn masked_crc_of_the_check_string() {
        let c: u32 = 0xe306_9283;
        assert_eq!(crc32c::crc32c(b"123456789"), c);
        assert_eq!(
            masked_crc(b"123456789"),
            c.rotate_right(15).wrapping_add(0xa282_ead8)
        );
    }

    #[test]
    fn events_round_trip() {
        let e = Event {
            wall_time: 1.5e9,
            step: 300,
            file_version: None,
            scalars: vec![("train/loss".into(), 3.25), ("val/loss".into(), -1.0)],
        };
        assert_eq!(Event::decode(&e.encode()).unwrap(), e);
    }

    /// Reopening at step 2 keeps train scalars before it and evaluations at it, drops the rest,
    /// and leaves one file.
    #[test]
    fn reopening_drops_what_the_resumed_run_redoes() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::open(dir.path(), 0).unwrap();
        for step in 0..4 {
            w.scalars(step, &[("train/loss", step as f64)]).unwrap();
            w.scalars(step, &[("val/loss", 10.0 + step as f64)])
                .unwrap();
        }
        w.flush().unwrap();
        drop(w);
        let w = EventWriter::open(dir.path(), 2).unwrap();
        assert_eq!(event_files(dir.path()), vec![w.path().to_path_buf()]);
        let seen: Vec<(i64, String)> = read_events(w.path())
            .unwrap()
            .into_iter()
            .flat_map(|e| e.scalars.into_iter().map(move |(t, _)| (e.step, t)))
            .collect();
        let expected: Vec<(i64, String)> = [
            (0, "train/loss"),
            (0, "val/loss"),
            (1, "train/loss"),
            (1, "val/loss"),
            (2, "val/loss"),
        ]
        .into_iter()
        .map(|(s, t)| (s, t.to_owned()))
        .collect();
        assert_eq!(seen, expected);
    }
}
