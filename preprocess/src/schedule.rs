//! The parallel half of a `preprocess` run: every heavy stage runs as tasks on one pool of
//! `--threads` threads, around one ordered stage (packing) that keeps the output
//! byte-identical at any thread count.
//!
//! - **Reading.** Up to `threads` input files are read (and decompressed, and their JSON
//!   parsed) at once, each by one task at a time, in batches of about [`BATCH_BYTES`] of text;
//!   the task that read a batch tokenizes it (long documents in parallel pieces). Batches are
//!   numbered per file and handed to the packer in file order, then batch order: the sorted
//!   order of the inputs, as if one thread had read them.
//! - **Packing** ([`Flow::next_batch`], [`Flow::push_row`]) runs on the thread that called
//!   into the pool. While it has nothing to pack it runs pool tasks itself, so `--threads 1`
//!   is one thread doing everything.
//! - **Writing.** Rows go to their shard in slices of about [`SLICE_BYTES`], written by
//!   position into the shard's temporary file ([`PositionalShard`]) by pool tasks; once the
//!   last slice of a shard is written, a task lays the HDF5 metadata around them and
//!   checksums the file. Gzip shards are finished by one task each (HDF5 compresses them).
//!   Several shards can be in flight at once.
//! - **Committing.** One thread moves finished shards into place (fsync, rename, fsync of the
//!   directory) strictly in shard order, and writes each progress snapshot once every shard it
//!   lists is in place: the progress file always names a shard whose predecessors are all
//!   complete.
//!
//! Memory is bounded: at most `2 × (2 × threads + 2)` batches are read ahead of the packer
//! (`2 × threads + 2` from any files, as many again from the file being packed) and at most
//! `2 × threads + 2` slices wait to be written, so the peak is about
//! `(2 × threads + 2) × (2 × BATCH_BYTES × 3 + SLICE_BYTES)` on top of the tokenizer and the
//! decompressors, whatever the shard size (gzip shards also stage up to
//! [`h5gpt_formats::writer::SPILL_BYTES`] each, for `threads + 1` shards).

use crate::input::{open_records, InputError, InputFile, Records};
use crate::packer::Row;
use crate::pipeline::{tokenize_batch, Doc, TokenizedDoc};
use crate::profile::{self, Stage};
use anyhow::{Context, Result};
use h5gpt_formats::manifest::{DatasetStats, ShardEntry};
use h5gpt_formats::spec::shard_file_name;
use h5gpt_formats::{Compression, FormatError, PositionalShard, ShardWriter, StagedShard};
use h5gpt_tokenizer::tokenizer::Tokenizer;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Text bytes per batch read and tokenized by one task.
pub const BATCH_BYTES: usize = 4 << 20;
/// Bytes of rows per positional write.
pub const SLICE_BYTES: usize = 8 << 20;

/// [`BATCH_BYTES`] and [`SLICE_BYTES`], unless `H5GPT_PREPROCESS_BATCH=TEXT_BYTES:ROW_BYTES`
/// makes them smaller (a testing aid: small corpora then take many batches and slices).
fn batch_and_slice_bytes() -> (usize, usize) {
    let parse = || -> Option<(usize, usize)> {
        let v = std::env::var("H5GPT_PREPROCESS_BATCH").ok()?;
        let (a, b) = v.split_once(':')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let (batch, slice) = parse().unwrap_or((BATCH_BYTES, SLICE_BYTES));
    (batch.clamp(1, BATCH_BYTES), slice.clamp(1, SLICE_BYTES))
}

/// One record of the input, in stream order, tokenized.
pub enum Entry {
    /// A document.
    Doc(TokenizedDoc),
    /// A bad record skipped with `--skip-bad-records`: what was wrong.
    Bad(String),
    /// A document dropped (neither tokenized nor written): `true` as a duplicate (`--dedup`),
    /// `false` by `--decontaminate`.
    Dropped(bool),
}

/// Decontamination as the reader applies it.
#[derive(Clone)]
pub struct Cleaner {
    /// The n-grams.
    pub decontamination: Arc<crate::decontaminate::Decontamination>,
    /// Whether document `(file, record)` is one to clean (a training document).
    pub applies: Arc<dyn Fn(usize, u64) -> bool + Send + Sync>,
}

/// The records of one batch, in order; `error` stops the run after them.
pub struct Batch {
    /// Records.
    pub entries: Vec<Entry>,
    /// The error that ended the input here, if one did.
    pub error: Option<InputError>,
}

/// What a run reads: the inputs, and where a resumed run starts.
pub struct ReadSettings {
    /// Input files, in stream order.
    pub files: Vec<InputFile>,
    /// JSON key / Parquet column of the text.
    pub text_key: String,
    /// Skip bad records instead of failing.
    pub skip_bad: bool,
    /// First file to read.
    pub start_file: usize,
    /// First record to read in that file.
    pub start_record: u64,
    /// Grows as input bytes are read (for the progress bar).
    pub bytes_read: Arc<AtomicU64>,
    /// The tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// Apply NFC before tokenizing.
    pub nfc: bool,
    /// The part of each document to read (its head or tail for a split inside documents).
    pub part: crate::val_split::DocPart,
    /// The dedup pass's decisions: the documents to drop.
    pub dedup: Option<Arc<crate::dedup::Decisions>>,
    /// `--decontaminate`.
    pub cleaner: Option<Cleaner>,
}

/// How one output directory is written.
pub struct OutputSettings {
    /// The directory.
    pub dir: PathBuf,
    /// Shards already complete in it (a resumed run).
    pub shards: Vec<ShardEntry>,
    /// Their statistics.
    pub stats: DatasetStats,
}

/// Shared shape of every output.
#[derive(Debug, Clone, Copy)]
pub struct ShardSettings {
    /// Tokens per row.
    pub seq_len: usize,
    /// Rows per shard.
    pub examples_per_shard: usize,
    /// Shard layout.
    pub compression: Compression,
}

enum Msg {
    Batch {
        file: usize,
        index: usize,
        last: bool,
        batch: Batch,
    },
    SliceWritten(Result<(), FormatError>),
    Staged {
        output: usize,
        index: usize,
        result: Result<StagedShard, FormatError>,
    },
}

/// An open input file between two batches.
struct Reader {
    records: Records,
    /// Index of the next record in the file.
    next: u64,
}

/// Which reads may start: at most `threads` files at once, at most `cap` batches read but not
/// yet packed, except that the file the packer is in may always read up to `cap` batches past
/// the one it needs next. Without that exception the other files' read-ahead filled the cap,
/// and the packer's own file was read one batch at a time behind it: one core busy at any
/// thread count.
struct ReadScheduler {
    threads: usize,
    cap: usize,
    n_files: usize,
    next_open: usize,
    reading: usize,
    in_flight: usize,
    parked: BTreeMap<usize, (usize, Reader)>,
    /// The batch the packer needs next: (file, batch).
    cursor: (usize, usize),
}

type Read = (usize, usize, Option<Reader>);

impl ReadScheduler {
    fn starts(&mut self) -> Vec<Read> {
        let mut out = Vec::new();
        let files: Vec<usize> = self.parked.keys().copied().collect();
        for file in files {
            let index = self.parked[&file].0;
            let packers_file = file == self.cursor.0 && index < self.cursor.1 + self.cap;
            if self.in_flight < self.cap || packers_file {
                let (index, reader) = self.parked.remove(&file).expect("parked");
                self.in_flight += 1;
                out.push((file, index, Some(reader)));
            }
        }
        while self.next_open < self.n_files
            && self.reading < self.threads
            && (self.in_flight < self.cap || self.cursor == (self.next_open, 0))
        {
            out.push((self.next_open, 0, None));
            self.next_open += 1;
            self.reading += 1;
            self.in_flight += 1;
        }
        out
    }

    fn after_read(&mut self, file: usize, index: usize, reader: Option<Reader>) -> Vec<Read> {
        match reader {
            Some(reader) => {
                self.parked.insert(file, (index + 1, reader));
            }
            None => self.reading -= 1,
        }
        self.starts()
    }

    fn consumed(&mut self, cursor: (usize, usize)) -> Vec<Read> {
        self.in_flight -= 1;
        self.cursor = cursor;
        self.starts()
    }
}

struct ReadShared {
    settings: ReadSettings,
    batch_bytes: usize,
    scheduler: Mutex<ReadScheduler>,
    tx: Mutex<Sender<Msg>>,
}

fn start_reads(shared: &Arc<ReadShared>, reads: Vec<Read>) {
    for (file, index, reader) in reads {
        let shared = shared.clone();
        rayon::spawn(move || read_batch(&shared, file, index, reader));
    }
}

/// Reads batch `index` of `file` (opening the file for batch 0), hands the reader on, then
/// tokenizes the batch.
fn read_batch(shared: &Arc<ReadShared>, file: usize, index: usize, reader: Option<Reader>) {
    let s = &shared.settings;
    let mut error = None;
    let mut reader = match reader {
        Some(r) => Some(r),
        None => match open_records(&s.files[file], &s.text_key, s.bytes_read.clone()) {
            Ok(records) => Some(Reader { records, next: 0 }),
            Err(e) => {
                error = Some(e);
                None
            }
        },
    };
    let mut raw: Vec<RawEntry> = Vec::new();
    let mut bytes = 0usize;
    let mut last = true;
    if let Some(r) = reader.as_mut() {
        last = false;
        while bytes < shared.batch_bytes {
            let Some(item) = r.records.next() else {
                last = true;
                break;
            };
            let this = r.next;
            r.next += 1;
            let skip = file == s.start_file && this < s.start_record;
            match item {
                Ok(_) if !skip && s.dedup.as_ref().is_some_and(|d| d.drops(file, this)) => {
                    raw.push(Err(Err(true)));
                }
                Ok((_, text)) => {
                    if !skip {
                        let item = clean_document(s, file, this, text);
                        if let Ok(doc) = &item {
                            bytes += doc.text.as_ref().map_or(0, String::len);
                        }
                        raw.push(item);
                    }
                }
                Err(e) if e.record_level && s.skip_bad => {
                    if !skip {
                        raw.push(Err(Ok(e.to_string())));
                    }
                }
                Err(e) => {
                    error = Some(e);
                    last = true;
                    break;
                }
            }
        }
    }
    let reads = shared.scheduler.lock().expect("scheduler lock").after_read(
        file,
        index,
        if last { None } else { reader },
    );
    start_reads(shared, reads);

    let entries = tokenize_in_order(s, raw);
    let tx = shared.tx.lock().expect("sender lock").clone();
    let _ = tx.send(Msg::Batch {
        file,
        index,
        last,
        batch: Batch { entries, error },
    });
}

/// A document, or what to put in its place (`Ok(what)`: a bad record; `Err(duplicate)`:
/// dropped).
type RawEntry = Result<Doc, Result<String, bool>>;

/// Record `this` of `file` as a document: the part of it this run writes, cut or dropped by
/// decontamination where that applies.
fn clean_document(s: &ReadSettings, file: usize, this: u64, text: String) -> RawEntry {
    use crate::decontaminate::Cleaned;
    let text = s.part.apply(text);
    let cleaned = match &s.cleaner {
        Some(c) if (c.applies)(file, this) => c.decontamination.decontaminator.clean(&text),
        _ => Cleaned::Clean,
    };
    let pieces = match cleaned {
        Cleaned::Clean => None,
        Cleaned::Cut(pieces, _) => Some(pieces),
        Cleaned::Dropped(_) => return Err(Err(false)),
    };
    Ok(Doc {
        file_index: file,
        record_index: this,
        text: Some(text),
        pieces,
    })
}

/// Tokenizes the batch's documents (in parallel) and puts them back among the skipped and
/// dropped records, in input order.
fn tokenize_in_order(s: &ReadSettings, raw: Vec<RawEntry>) -> Vec<Entry> {
    let mut docs = Vec::new();
    let mut order = Vec::with_capacity(raw.len());
    for item in raw {
        match item {
            Ok(doc) => {
                docs.push(doc);
                order.push(None);
            }
            Err(what) => order.push(Some(what)),
        }
    }
    let mut tokenized = tokenize_batch(&s.tokenizer, docs, s.nfc).into_iter();
    order
        .into_iter()
        .map(|o| match o {
            None => Entry::Doc(tokenized.next().expect("one per document")),
            Some(Ok(what)) => Entry::Bad(what),
            Some(Err(duplicate)) => Entry::Dropped(duplicate),
        })
        .collect()
}

/// A positional shard being written: the packer holds one reference while it fills it, each
/// slice task one while it writes. Whoever lets go last finishes the shard.
struct ShardJob {
    shard: PositionalShard,
    output: usize,
    index: usize,
    /// Examples and statistics, set when the packer closes the shard.
    closed: Mutex<Option<(usize, DatasetStats)>>,
    tx: Sender<Msg>,
}

fn release(job: Arc<ShardJob>) {
    let Some(job) = Arc::into_inner(job) else {
        return;
    };
    let (examples, stats) = job
        .closed
        .into_inner()
        .expect("close lock")
        .expect("closed before its last slice is released");
    let start = Instant::now();
    let result = job.shard.finish(examples, stats);
    if let Ok(staged) = &result {
        profile::add(Stage::Checksum, staged.checksum_time());
        profile::add(
            Stage::Metadata,
            start.elapsed().saturating_sub(staged.checksum_time()),
        );
    }
    let _ = job.tx.send(Msg::Staged {
        output: job.output,
        index: job.index,
        result,
    });
}

enum Filling {
    Positional {
        job: Arc<ShardJob>,
        buf: Vec<i32>,
        /// Example index of `buf[0]`.
        buf_first: usize,
    },
    Hdf5(ShardWriter),
}

struct Output {
    dir: PathBuf,
    /// Index of the shard being filled (or the next one).
    next_index: usize,
    filling: Option<Filling>,
    rows: usize,
    stats: DatasetStats,
    /// Statistics of every closed shard.
    closed_stats: DatasetStats,
    /// Finished shards waiting for their predecessors before being committed.
    staged: BTreeMap<usize, StagedShard>,
    next_commit: usize,
}

/// Writes a progress snapshot, given the entries of every output's shards in place.
pub type WriteSnapshot = Box<dyn FnOnce(&[Vec<ShardEntry>]) -> Result<()> + Send>;

/// A progress snapshot: written by the committer once `shards[i]` shards of every output `i`
/// are in place, by `write` (given the entries of all shards in place).
pub struct Snapshot {
    /// Shards of each output the snapshot lists.
    pub shards: Vec<usize>,
    /// Writes it.
    pub write: WriteSnapshot,
}

enum CommitMsg {
    Shard(usize, StagedShard),
    Snapshot(Snapshot),
}

/// Moves shards into place in order, and writes progress snapshots once what they list is.
fn committer(
    rx: Receiver<CommitMsg>,
    mut committed: Vec<Vec<ShardEntry>>,
    fault_at: Option<usize>,
) -> Result<Vec<Vec<ShardEntry>>> {
    let mut snapshots: VecDeque<Snapshot> = VecDeque::new();
    let mut commits = 0usize;
    for msg in rx {
        match msg {
            CommitMsg::Shard(output, staged) => {
                let written = profile::time(Stage::Commit, || staged.commit())?;
                committed[output].push(written.entry);
                commits += 1;
                if fault_at == Some(commits) {
                    eprintln!("H5GPT_FAULT: aborting after shard {commits} (testing aid)");
                    std::process::abort();
                }
            }
            CommitMsg::Snapshot(s) => snapshots.push_back(s),
        }
        let mut ready = None;
        while snapshots.front().is_some_and(|s| {
            s.shards
                .iter()
                .zip(&committed)
                .all(|(&n, done)| n <= done.len())
        }) {
            ready = snapshots.pop_front();
        }
        if let Some(s) = ready {
            profile::time(Stage::Commit, || (s.write)(&committed))?;
        }
    }
    Ok(committed)
}

/// The running parallel part of one `preprocess` run. Create it, and call its methods, on a
/// thread of the rayon pool that should do the work (inside `ThreadPool::install`).
pub struct Flow {
    threads: usize,
    slice_bytes: usize,
    shape: ShardSettings,
    rx: Receiver<Msg>,
    tx: Sender<Msg>,
    read: Arc<ReadShared>,
    ready: BTreeMap<(usize, usize), (bool, Batch)>,
    cursor: (usize, usize),
    n_files: usize,
    outputs: Vec<Output>,
    slices_in_flight: usize,
    shards_in_flight: usize,
    commit_tx: Option<Sender<CommitMsg>>,
    committer: Option<std::thread::JoinHandle<Result<Vec<Vec<ShardEntry>>>>>,
}

impl Flow {
    /// Starts reading. `fault_at`: abort after that many shards are committed (testing aid).
    pub fn start(
        threads: usize,
        read: ReadSettings,
        shape: ShardSettings,
        outputs: Vec<OutputSettings>,
        fault_at: Option<usize>,
    ) -> Flow {
        let threads = threads.max(1);
        let (tx, rx) = channel();
        let cursor = (read.start_file, 0);
        let n_files = read.files.len();
        let scheduler = ReadScheduler {
            threads,
            cap: 2 * threads + 2,
            n_files,
            next_open: read.start_file,
            reading: 0,
            in_flight: 0,
            parked: BTreeMap::new(),
            cursor,
        };
        let (batch_bytes, slice_bytes) = batch_and_slice_bytes();
        let shared = Arc::new(ReadShared {
            settings: read,
            batch_bytes,
            scheduler: Mutex::new(scheduler),
            tx: Mutex::new(tx.clone()),
        });
        let reads = shared.scheduler.lock().expect("scheduler lock").starts();
        start_reads(&shared, reads);
        let committed = outputs.iter().map(|o| o.shards.clone()).collect();
        let (commit_tx, commit_rx) = channel();
        let committer = std::thread::spawn(move || committer(commit_rx, committed, fault_at));
        Flow {
            threads,
            slice_bytes,
            shape,
            rx,
            tx,
            read: shared,
            ready: BTreeMap::new(),
            cursor,
            n_files,
            outputs: outputs
                .into_iter()
                .map(|o| Output {
                    dir: o.dir,
                    next_index: o.shards.len(),
                    next_commit: o.shards.len(),
                    filling: None,
                    rows: 0,
                    stats: DatasetStats::default(),
                    closed_stats: o.stats,
                    staged: BTreeMap::new(),
                })
                .collect(),
            slices_in_flight: 0,
            shards_in_flight: 0,
            commit_tx: Some(commit_tx),
            committer: Some(committer),
        }
    }

    fn slice_cap(&self) -> usize {
        2 * self.threads + 2
    }

    /// The next batch in stream order (`None` after the last), running pool tasks while it
    /// waits.
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        loop {
            self.drain()?;
            if self.cursor.0 >= self.n_files {
                return Ok(None);
            }
            let can_pack =
                self.slices_in_flight < self.slice_cap() && self.shards_in_flight <= self.threads;
            if can_pack {
                if let Some((last, batch)) = self.ready.remove(&self.cursor) {
                    let (file, index) = self.cursor;
                    self.cursor = if last {
                        (file + 1, 0)
                    } else {
                        (file, index + 1)
                    };
                    let reads = self
                        .read
                        .scheduler
                        .lock()
                        .expect("scheduler lock")
                        .consumed(self.cursor);
                    start_reads(&self.read, reads);
                    return Ok(Some(batch));
                }
            }
            self.wait()?;
        }
    }

    fn drain(&mut self) -> Result<()> {
        while let Ok(msg) = self.rx.try_recv() {
            self.handle(msg)?;
        }
        Ok(())
    }

    /// Runs one pool task, or waits a little for a message.
    fn wait(&mut self) -> Result<()> {
        let start = Instant::now();
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            if let Ok(msg) = self.rx.recv_timeout(Duration::from_millis(1)) {
                self.handle(msg)?;
            }
            profile::add(Stage::Wait, start.elapsed());
        }
        Ok(())
    }

    fn handle(&mut self, msg: Msg) -> Result<()> {
        match msg {
            Msg::Batch {
                file,
                index,
                last,
                batch,
            } => {
                self.ready.insert((file, index), (last, batch));
            }
            Msg::SliceWritten(result) => {
                self.slices_in_flight -= 1;
                result?;
            }
            Msg::Staged {
                output,
                index,
                result,
            } => {
                self.shards_in_flight -= 1;
                self.outputs[output].staged.insert(index, result?);
                loop {
                    let out = &mut self.outputs[output];
                    let Some(staged) = out.staged.remove(&out.next_commit) else {
                        break;
                    };
                    out.next_commit += 1;
                    self.commit(CommitMsg::Shard(output, staged))?;
                }
            }
        }
        Ok(())
    }

    fn commit(&mut self, msg: CommitMsg) -> Result<()> {
        let sent = self
            .commit_tx
            .as_ref()
            .is_some_and(|tx| tx.send(msg).is_ok());
        if !sent {
            // The committer stopped: its error says why.
            self.commit_tx = None;
            if let Some(handle) = self.committer.take() {
                handle.join().expect("committer thread")?;
            }
            anyhow::bail!("the shard committer stopped");
        }
        Ok(())
    }

    /// Appends a row to output `output`. Returns whether it completed a shard.
    pub fn push_row(&mut self, output: usize, row: Row<'_>) -> Result<bool> {
        let shape = self.shape;
        let out = &mut self.outputs[output];
        if out.filling.is_none() {
            let path = out.dir.join(shard_file_name(out.next_index));
            out.filling = Some(match shape.compression {
                Compression::None => Filling::Positional {
                    job: Arc::new(ShardJob {
                        shard: PositionalShard::create(
                            &path,
                            shape.seq_len,
                            shape.examples_per_shard,
                        )?,
                        output,
                        index: out.next_index,
                        closed: Mutex::new(None),
                        tx: self.tx.clone(),
                    }),
                    buf: Vec::new(),
                    buf_first: 0,
                },
                Compression::Gzip => {
                    Filling::Hdf5(ShardWriter::new(path, shape.seq_len, shape.compression))
                }
            });
        }
        out.stats.add_row(row.attention_mask);
        out.rows += 1;
        let slice_examples = (self.slice_bytes / (3 * shape.seq_len * 4)).max(1);
        let mut full_slice = None;
        match out.filling.as_mut().expect("filling") {
            Filling::Positional {
                job,
                buf,
                buf_first,
            } => {
                if buf.capacity() == 0 {
                    buf.reserve_exact(slice_examples * 3 * shape.seq_len);
                }
                buf.extend_from_slice(row.input_ids);
                buf.extend_from_slice(row.attention_mask);
                buf.extend_from_slice(row.labels);
                if out.rows - *buf_first >= slice_examples {
                    full_slice = Some((job.clone(), *buf_first, std::mem::take(buf)));
                    *buf_first = out.rows;
                }
            }
            Filling::Hdf5(writer) => writer.push(row.input_ids, row.attention_mask, row.labels)?,
        }
        if let Some((job, first, buf)) = full_slice {
            self.write_slice(job, first, buf);
        }
        if self.outputs[output].rows >= shape.examples_per_shard {
            self.close(output);
            return Ok(true);
        }
        Ok(false)
    }

    fn write_slice(&mut self, job: Arc<ShardJob>, first: usize, buf: Vec<i32>) {
        self.slices_in_flight += 1;
        let tx = self.tx.clone();
        rayon::spawn(move || {
            let result = profile::time(Stage::Write, || job.shard.write_examples(first, &buf));
            drop(buf);
            release(job);
            let _ = tx.send(Msg::SliceWritten(result));
        });
    }

    /// Rows in the shard being filled in output `output`.
    pub fn pending_rows(&self, output: usize) -> usize {
        self.outputs[output].rows
    }

    /// Statistics of the shards closed so far in output `output`.
    pub fn closed_stats(&self, output: usize) -> DatasetStats {
        self.outputs[output].closed_stats
    }

    /// Shards closed so far (in place or on their way) in output `output`.
    pub fn closed_shards(&self, output: usize) -> usize {
        self.outputs[output].next_index
    }

    /// Closes the shard being filled in output `output`, if it has rows.
    fn close(&mut self, output: usize) {
        let out = &mut self.outputs[output];
        let Some(filling) = out.filling.take() else {
            return;
        };
        let (rows, stats) = (out.rows, out.stats);
        out.closed_stats.add(&stats);
        out.rows = 0;
        out.stats = DatasetStats::default();
        let index = out.next_index;
        out.next_index += 1;
        self.shards_in_flight += 1;
        match filling {
            Filling::Positional {
                job,
                buf,
                buf_first,
            } => {
                *job.closed.lock().expect("close lock") = Some((rows, stats));
                if !buf.is_empty() {
                    self.write_slice(job.clone(), buf_first, buf);
                }
                rayon::spawn(move || release(job));
            }
            Filling::Hdf5(writer) => {
                let tx = self.tx.clone();
                rayon::spawn(move || {
                    let start = Instant::now();
                    let result = writer.stage();
                    if let Ok(staged) = &result {
                        profile::add(Stage::Checksum, staged.checksum_time());
                        profile::add(
                            Stage::Write,
                            start.elapsed().saturating_sub(staged.checksum_time()),
                        );
                    }
                    let _ = tx.send(Msg::Staged {
                        output,
                        index,
                        result,
                    });
                });
            }
        }
    }

    /// Hands a progress snapshot to the committer.
    pub fn snapshot(&mut self, snapshot: Snapshot) -> Result<()> {
        self.commit(CommitMsg::Snapshot(snapshot))
    }

    /// Closes every output's last shard, waits until every shard is in place, and returns
    /// each output's shards with their statistics.
    pub fn finish(mut self) -> Result<Vec<(Vec<ShardEntry>, DatasetStats)>> {
        for output in 0..self.outputs.len() {
            self.close(output);
        }
        while self.shards_in_flight > 0 || self.slices_in_flight > 0 {
            self.drain()?;
            if self.shards_in_flight > 0 || self.slices_in_flight > 0 {
                self.wait()?;
            }
        }
        self.commit_tx = None;
        let committed = self
            .committer
            .take()
            .expect("committer running")
            .join()
            .expect("committer thread")
            .context("committing shards")?;
        Ok(committed
            .into_iter()
            .zip(&self.outputs)
            .map(|(shards, out)| (shards, out.closed_stats))
            .collect())
    }
}
