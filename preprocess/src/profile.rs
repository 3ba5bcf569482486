//! Per-stage time counters of a `preprocess` run (`--profile`): where the seconds go, summed
//! over all threads, to find the stage that does not scale.
//!
//! The counters are process-wide and always on (one clock read per buffer, record, batch or
//! shard, never per token); `--profile` only prints them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A stage of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading input files (system calls; page cache or disk).
    Io,
    /// zstd / gzip decompression, including the reads it makes ([`report`] subtracts them).
    Decompress,
    /// Splitting lines and parsing JSON, including decompression ([`report`] subtracts it).
    Records,
    /// Unicode normalization and tokenizing.
    Tokenize,
    /// Cutting rows (the one ordered stage).
    Pack,
    /// Writing rows into shard files.
    Write,
    /// HDF5 metadata of finished shards.
    Metadata,
    /// xxh3 checksums of finished shards.
    Checksum,
    /// fsync and rename of finished shards, and progress files.
    Commit,
    /// The ordered stage waiting with nothing to do.
    Wait,
}

const STAGES: [Stage; 10] = [
    Stage::Io,
    Stage::Decompress,
    Stage::Records,
    Stage::Tokenize,
    Stage::Pack,
    Stage::Write,
    Stage::Metadata,
    Stage::Checksum,
    Stage::Commit,
    Stage::Wait,
];

static NANOS: [AtomicU64; 10] = [const { AtomicU64::new(0) }; 10];

/// Adds `elapsed` to `stage`.
pub fn add(stage: Stage, elapsed: Duration) {
    NANOS[stage as usize].fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
}

/// Runs `f`, counting its time under `stage`.
pub fn time<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    add(stage, start.elapsed());
    out
}

fn seconds(stage: Stage) -> f64 {
    NANOS[stage as usize].load(Ordering::Relaxed) as f64 / 1e9
}

/// User and system CPU seconds of this process so far (Linux; `None` elsewhere).
pub fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 after the name.
    Some((ticks(11)? / 100.0, ticks(12)? / 100.0))
}

/// The counters as a table: seconds per stage (summed over threads), share of the busy time,
/// and text MB/s per busy second of that stage.
pub fn report(wall_seconds: f64, text_bytes: u64, threads: usize) -> String {
    let io = seconds(Stage::Io);
    let decompress = (seconds(Stage::Decompress) - io).max(0.0);
    let records = (seconds(Stage::Records) - seconds(Stage::Decompress).max(io)).max(0.0);
    let rows: Vec<(&str, f64)> = STAGES
        .iter()
        .filter(|&&s| s != Stage::Wait)
        .map(|&s| match s {
            Stage::Io => ("read (I/O)", io),
            Stage::Decompress => ("decompress", decompress),
            Stage::Records => ("lines + JSON", records),
            Stage::Tokenize => ("tokenize", seconds(s)),
            Stage::Pack => ("pack (ordered)", seconds(s)),
            Stage::Write => ("write rows", seconds(s)),
            Stage::Metadata => ("HDF5 metadata", seconds(s)),
            Stage::Checksum => ("checksum", seconds(s)),
            Stage::Commit => ("fsync + rename", seconds(s)),
            Stage::Wait => unreachable!(),
        })
        .collect();
    let busy: f64 = rows.iter().map(|r| r.1).sum::<f64>().max(1e-9);
    let mb = text_bytes as f64 / 1e6;
    let mut out = format!(
        "profile            stage seconds summed over threads ({threads} threads, {wall_seconds:.2} s wall)\n"
    );
    for (name, secs) in rows {
        out.push_str(&format!(
            "  {name:<16} {secs:8.3} s {:5.1}%  {:>9}\n",
            100.0 * secs / busy,
            if secs > 0.0 {
                format!("{:.0} MB/s", mb / secs)
            } else {
                "-".into()
            }
        ));
    }
    out.push_str(&format!(
        "  {:<16} {:8.3} s (the ordered stage idle: waiting for input)\n",
        "pack waits",
        seconds(Stage::Wait)
    ));
    if let Some((user, system)) = cpu_seconds() {
        out.push_str(&format!(
            "  cpu              {user:.2} s user + {system:.2} s system = {:.2} cores busy on average\n",
            (user + system) / wall_seconds.max(1e-9)
        ));
    }
    out
}
