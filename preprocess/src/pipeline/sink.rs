//! The sink: packers cut the tokenized documents into rows (the one ordered stage), the
//! writers turn rows into shards (see [`crate::schedule`]), a progress file follows every
//! shard, and a progress bar shows the bytes read.

use super::is_val;
use super::outdir::{OutputDir, Progress};
use super::PreprocessConfig;
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
    let (progress_path, resumed) = (progress_path.as_path(), *resumed);
    let eos = tokenizer.eos_id();
    let unk = tokenizer.unk_id().map(|u| u as i32);
    let mut packers: Vec<Packer> = state
        .outputs
        .iter()
        .map(|out| Packer::new(config.seq_len, eos, out.carry.clone()))
        .collect();
    let bytes_read = Arc::new(AtomicU64::new(0));
    for f in &files[..state.file_index] {
        bytes_read.fetch_add(f.bytes, Ordering::Relaxed);
    }
    let read = ReadSettings {
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
    };
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
    let mut tokens_this_run = 0u64;
    let mut first_doc = true;

    // Every heavy stage runs on the pool; this closure, the one ordered stage, packs.
    let written = pool.install(|| -> Result<Written> {
        let mut flow = Flow::start(config.threads, read, shape, outputs_in, fault_at);
        while let Some(batch) = flow.next_batch()? {
            let packing_started = Instant::now();
            for entry in batch.entries {
                let doc = match entry {
                    Entry::Bad(what) => {
                        state.counts.records += 1;
                        state.counts.bad_skipped += 1;
                        if state.bad_examples.len() < 10 {
                            state.bad_examples.push(what);
                        }
                        continue;
                    }
                    Entry::Dropped(duplicate) => {
                        state.counts.records += 1;
                        if duplicate {
                            state.counts.dedup_dropped += 1;
                        } else {
                            state.counts.decontaminated_dropped += 1;
                        }
                        continue;
                    }
                    Entry::Doc(doc) => doc,
                };
                let offset = if first_doc
                    && resumed
                    && (doc.file_index, doc.record_index) == (state.file_index, state.record_index)
                {
                    state.token_offset
                } else {
                    0
                };
                first_doc = false;
                state.file_index = doc.file_index;
                state.record_index = doc.record_index;
                let Some(mut tokens) = doc.tokens else {
                    state.counts.records += 1;
                    state.counts.empty_skipped += 1;
                    continue;
                };
                tokens.push(eos as i32);
                let which = usize::from(is_val(config, doc.file_index, doc.record_index));
                if offset == 0 {
                    state.counts.records += 1;
                    state.outputs[which].counts.documents += 1;
                    state.outputs[which].counts.tokens += tokens.len() as u64;
                    if let Some(unk) = unk {
                        state.outputs[which].counts.unknown +=
                            tokens.iter().filter(|&&t| t == unk).count() as u64;
                    }
                    tokens_this_run += tokens.len() as u64;
                }
                let mut pos = offset;
                loop {
                    let completed = {
                        let Some(row) = packers[which].next_row(&tokens, &mut pos) else {
                            break;
                        };
                        flow.push_row(which, row)?
                    };
                    if completed {
                        state.token_offset = pos;
                        state.inputs = hasher.read_up_to(
                            files,
                            state.file_index,
                            bytes_read.load(Ordering::Relaxed),
                        )?;
                        save_progress(progress_path, state, &mut flow, &packers)?;
                    }
                }
                if packing == Packing::Document {
                    if let Some(row) = packers[which].flush() {
                        if flow.push_row(which, row)? {
                            state.token_offset = tokens.len();
                            state.inputs = hasher.read_up_to(
                                files,
                                state.file_index,
                                bytes_read.load(Ordering::Relaxed),
                            )?;
                            save_progress(progress_path, state, &mut flow, &packers)?;
                        }
                    }
                }
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
            bar.set_message(format!("{:.0}k tok/s", tokens_this_run as f64 / secs / 1e3));
        }
        // The last partial windows; then every shard is finished and in place.
        for (which, packer) in packers.iter_mut().enumerate() {
            if let Some(row) = packer.flush() {
                flow.push_row(which, row)?;
            }
        }
        flow.finish()
    })?;
    bar.finish_and_clear();
    Ok(written)
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
