//! The sink: packers cut the tokenized documents into rows (the one ordered stage), the
//! writers turn rows into shards (see [`crate::schedule`]), a progress file follows every
//! shard, and a progress bar shows the bytes read.

use super::is_val;
use super::outdir::{OutputDir, PrefixHasher, Progress};
use super::{PreprocessConfig, TokenizedDoc};
use crate::input::InputFile;
use crate::packer::Packer;
use crate::profile::{self, Stage};
use crate::schedule::{Entry, Flow, OutputSettings, ReadSettings, ShardSettings, Snapshot};
use anyhow::{bail, Context, Result};
use h5gpt_formats::exit::with_hint;
use h5gpt_formats::fsio::write_atomic;
use h5gpt_formats::manifest::{DatasetStats, ShardEntry};
use h5gpt_formats::Packing;
use h5gpt_tokenizer::tokenizer::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What the writers finished, per output directory: its shards and their statistics.
pub(super) type Written = Vec<(Vec<ShardEntry>, DatasetStats)>;

/// Reads, tokenizes, packs and writes every document of `files` from where `out` stands into
/// `dirs` (one per output), saving progress after every shard. `H5GPT_FAULT=abort-after-shard`
/// stops the run after that shard (the reliability tests' interruption).
pub(super) fn pack_and_write(
    config: &PreprocessConfig,
    files: &[InputFile],
    tokenizer: Arc<Tokenizer>,
    packing: Packing,
    dirs: &[PathBuf],
    out: &mut OutputDir,
) -> Result<Written> {
    let started = Instant::now();
    let OutputDir {
        state,
        hasher,
        progress_path,
        resumed,
        ..
    } = out;
    let eos = tokenizer.eos_id();
    let packers: Vec<Packer> = state
        .outputs
        .iter()
        .map(|out| Packer::new(config.seq_len, eos, out.carry.clone()))
        .collect();
    let bytes_read = Arc::new(AtomicU64::new(0));
    for f in &files[..state.file_index] {
        bytes_read.fetch_add(f.bytes, Ordering::Relaxed);
    }
    let read = read_settings(config, files, state, &bytes_read, &tokenizer);
    let shape = ShardSettings {
        seq_len: config.seq_len,
        examples_per_shard: config.examples_per_shard,
        compression: config.compression,
    };
    let outputs_in = dirs
        .iter()
        .zip(&state.outputs)
        .map(|(dir, out)| OutputSettings {
            dir: dir.clone(),
            shards: out.shards.clone(),
            stats: out.stats,
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.threads.max(1))
        .build()
        .context("cannot start worker threads")?;

    let bar = progress_bar(config.progress, files.iter().map(|f| f.bytes).sum());
    let fault_at = h5gpt_formats::fault::armed("abort-after-shard");
    let mut stage = PackStage {
        config,
        files,
        state,
        hasher,
        progress_path: progress_path.as_path(),
        resumed: *resumed,
        packing,
        eos,
        unk: tokenizer.unk_id().map(|u| u as i32),
        packers,
        bytes_read: bytes_read.clone(),
        tokens_this_run: 0,
        first_doc: true,
    };

    // Every heavy stage runs on the pool; this closure, the one ordered stage, packs.
    let written = pool.install(|| -> Result<Written> {
        let mut flow = Flow::start(config.threads, read, shape, outputs_in, fault_at);
        while let Some(batch) = flow.next_batch()? {
            let packing_started = Instant::now();
            for entry in batch.entries {
                stage.entry(entry, &mut flow)?;
            }
            profile::add(Stage::Pack, packing_started.elapsed());
            if let Some(e) = batch.error {
                let hint = if e.record_level {
                    "fix or remove that record, or pass --skip-bad-records to count and skip bad records"
                } else {
                    "the file is unreadable, truncated or corrupt: restore it or leave it out of --input"
                };
                bail!(with_hint(
                    e,
                    hint,
                ));
            }
            bar.set_position(bytes_read.load(Ordering::Relaxed));
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{:.0}k tok/s",
                stage.tokens_this_run as f64 / secs / 1e3
            ));
        }
        stage.flush(&mut flow)?;
        flow.finish()
    })?;
    bar.finish_and_clear();
    Ok(written)
}

/// What the readers read: the files from where the run stands, tokenized, normalized,
/// deduplicated and decontaminated (training documents only) as configured.
fn read_settings(
    config: &PreprocessConfig,
    files: &[InputFile],
    state: &Progress,
    bytes_read: &Arc<AtomicU64>,
    tokenizer: &Arc<Tokenizer>,
) -> ReadSettings {
    ReadSettings {
        files: files.to_vec(),
        text_key: config.text_key.clone(),
        skip_bad: config.skip_bad_records,
        start_file: state.file_index,
        start_record: state.record_index,
        bytes_read: bytes_read.clone(),
        tokenizer: tokenizer.clone(),
        nfc: config.normalize_nfc,
        part: config.part,
        dedup: config.dedup_decisions.clone(),
        cleaner: config.decontamination.as_ref().map(|d| {
            let config = Arc::new(config.clone());
            crate::schedule::Cleaner {
                decontamination: d.clone(),
                applies: Arc::new(move |f: usize, r: u64| !is_val(&config, f, r)),
            }
        }),
    }
}

/// The one ordered stage: counts every record, packs each document into its output's rows,
/// and saves progress after every shard those rows complete.
struct PackStage<'a> {
    config: &'a PreprocessConfig,
    files: &'a [InputFile],
    state: &'a mut Progress,
    hasher: &'a mut PrefixHasher,
    progress_path: &'a Path,
    /// This run continues an interrupted one: its first document may be partly written.
    resumed: bool,
    packing: Packing,
    eos: u32,
    unk: Option<i32>,
    /// One per output (train, val).
    packers: Vec<Packer>,
    bytes_read: Arc<AtomicU64>,
    /// Tokens of the documents this run counted (for the rate on the bar).
    tokens_this_run: u64,
    /// No document has come yet.
    first_doc: bool,
}

impl PackStage<'_> {
    /// Counts a skipped or dropped record, or packs a document.
    fn entry(&mut self, entry: Entry, flow: &mut Flow) -> Result<()> {
        let state = &mut *self.state;
        match entry {
            Entry::Bad(what) => {
                state.counts.records += 1;
                state.counts.bad_skipped += 1;
                if state.bad_examples.len() < 10 {
                    state.bad_examples.push(what);
                }
                Ok(())
            }
            Entry::Dropped(duplicate) => {
                state.counts.records += 1;
                if duplicate {
                    state.counts.dedup_dropped += 1;
                } else {
                    state.counts.decontaminated_dropped += 1;
                }
                Ok(())
            }
            Entry::Doc(doc) => self.document(doc, flow),
        }
    }

    /// Packs one document (from where a resumed run stopped inside it), counting it unless it
    /// was counted before the interruption.
    fn document(&mut self, doc: TokenizedDoc, flow: &mut Flow) -> Result<()> {
        let state = &mut *self.state;
        let offset = if self.first_doc
            && self.resumed
            && (doc.file_index, doc.record_index) == (state.file_index, state.record_index)
        {
            state.token_offset
        } else {
            0
        };
        self.first_doc = false;
        state.file_index = doc.file_index;
        state.record_index = doc.record_index;
        let Some(mut tokens) = doc.tokens else {
            state.counts.records += 1;
            state.counts.empty_skipped += 1;
            return Ok(());
        };
        tokens.push(self.eos as i32);
        let which = usize::from(is_val(self.config, doc.file_index, doc.record_index));
        if offset == 0 {
            state.counts.records += 1;
            state.outputs[which].counts.documents += 1;
            state.outputs[which].counts.tokens += tokens.len() as u64;
            if let Some(unk) = self.unk {
                state.outputs[which].counts.unknown +=
                    tokens.iter().filter(|&&t| t == unk).count() as u64;
            }
            self.tokens_this_run += tokens.len() as u64;
        }
        let mut pos = offset;
        loop {
            let completed = {
                let Some(row) = self.packers[which].next_row(&tokens, &mut pos) else {
                    break;
                };
                flow.push_row(which, row)?
            };
            if completed {
                self.shard_closed(pos, flow)?;
            }
        }
        if self.packing == Packing::Document {
            if let Some(row) = self.packers[which].flush() {
                if flow.push_row(which, row)? {
                    self.shard_closed(tokens.len(), flow)?;
                }
            }
        }
        Ok(())
    }

    /// A shard just closed with the current document's tokens up to `token_offset` written:
    /// advances the inputs' hashes and saves progress.
    fn shard_closed(&mut self, token_offset: usize, flow: &mut Flow) -> Result<()> {
        let state = &mut *self.state;
        state.token_offset = token_offset;
        state.inputs = self.hasher.read_up_to(
            self.files,
            state.file_index,
            self.bytes_read.load(Ordering::Relaxed),
        )?;
        save_progress(self.progress_path, state, flow, &self.packers)
    }

    /// The last partial windows; then every shard is finished and in place.
    fn flush(&mut self, flow: &mut Flow) -> Result<()> {
        for (which, packer) in self.packers.iter_mut().enumerate() {
            if let Some(row) = packer.flush() {
                flow.push_row(which, row)?;
            }
        }
        Ok(())
    }
}

/// The bar of the bytes read (hidden without `--progress`).
fn progress_bar(shown: bool, input_bytes: u64) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(input_bytes);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Hands the state after the shard just closed to the committer, which writes it once that
/// shard and all before it are in place.
fn save_progress(
    path: &Path,
    state: &mut Progress,
    flow: &mut Flow,
    packers: &[Packer],
) -> Result<()> {
    // Rows staged in an output but not yet in a shard are not in the progress file. With a val
    // split the other output usually has some: then keep the older progress (resuming redoes
    // more work, but ends identical).
    if (0..packers.len()).any(|i| flow.pending_rows(i) > 0) {
        return Ok(());
    }
    let mut shards = Vec::new();
    for (i, (out, packer)) in state.outputs.iter_mut().zip(packers).enumerate() {
        out.stats = flow.closed_stats(i);
        out.carry = packer.carry().to_vec();
        shards.push(flow.closed_shards(i));
    }
    let mut snapshot = state.clone();
    let path = path.to_path_buf();
    let counts = shards.clone();
    flow.snapshot(Snapshot {
        shards,
        write: Box::new(move |committed| {
            for ((out, done), n) in snapshot.outputs.iter_mut().zip(committed).zip(&counts) {
                out.shards = done[..*n].to_vec();
            }
            write_atomic(&path, &serde_json::to_vec(&snapshot)?)?;
            Ok(())
        }),
    })
}
