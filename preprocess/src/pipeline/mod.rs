//! The `preprocess` run: read → tokenize → pack → write, every stage but packing in parallel
//! (see [`crate::schedule`]), with a progress file after every shard so an interrupted run
//! continues where it stopped and ends byte-identical to an uninterrupted one.

use crate::input::{discover, InputFile};
use crate::packer::Packer;
use crate::profile::{self, Stage};
use crate::schedule::{Entry, Flow, OutputSettings, ReadSettings, ShardSettings, Snapshot};
use crate::tokenizer_train::{train_tokenizer, CorpusSettings};
use crate::val_split::{count_documents, DocPart, SplitRule};
use anyhow::{bail, Context, Result};
use h5gpt_formats::exit::UsageError;
use h5gpt_formats::fsio::write_atomic;
use h5gpt_formats::lock::{RunLock, LOCK_FILE};
use h5gpt_formats::manifest::{DataParams, DatasetStats, ManifestCore, ShardEntry};
use h5gpt_formats::permutation::mix64;
use h5gpt_formats::spec::DATA_PARAMS_FILE;
use h5gpt_formats::{Compression, Packing};
use h5gpt_tokenizer::split::split_for_tokenization;
use h5gpt_tokenizer::tokenizer::{resolve_tokenizer_arg, Tokenizer, TOKENIZER_FILE};
use h5gpt_tokenizer::train::TrainSpec;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Name of the progress file kept in the output directory while a run is unfinished.
pub const PROGRESS_FILE: &str = ".preprocess-progress.json";
/// Target bytes of one tokenization unit when a long document is split.
const SPLIT_BYTES: usize = 64 << 10;

/// Which tokenizer a run uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum TokenizerChoice {
    /// `--tokenizer NAME|FILE`: a tiktoken encoding or a `tokenizer.json` (with an optional
    /// `--eos-token`).
    Given {
        /// Name or path, as given.
        name: String,
        /// End-of-document token of a `tokenizer.json`.
        eos_token: Option<String>,
    },
    /// `--train-tokenizer`: trained on the training documents first.
    Train(TrainSpec),
}

impl Default for TokenizerChoice {
    fn default() -> Self {
        TokenizerChoice::Given {
            name: "gpt2".into(),
            eos_token: None,
        }
    }
}

/// Everything that shapes the output (`threads` and `progress` do not).
#[derive(Debug, Clone, Serialize)]
pub struct PreprocessConfig {
    /// Files and directories, as given.
    pub inputs: Vec<PathBuf>,
    /// Output directory.
    #[serde(skip)]
    pub out: PathBuf,
    /// JSON key / Parquet column holding the text.
    pub text_key: String,
    /// File-name filter for directory inputs.
    pub glob: Option<String>,
    /// Tokens per row.
    pub seq_len: usize,
    /// Rows per shard.
    pub examples_per_shard: usize,
    /// Shard layout.
    pub compression: Compression,
    /// Stream packing (`true`) or one document per row.
    pub pack: bool,
    /// Apply Unicode NFC before tokenizing.
    pub normalize_nfc: bool,
    /// Fraction of documents that go to `val/`.
    pub val_fraction: f64,
    /// The part of each document this run reads: the whole text, or (for a split inside
    /// documents, see [`crate::val_split`]) its head or tail. Set by [`run`] itself.
    #[serde(skip_serializing_if = "DocPart::is_whole")]
    pub part: DocPart,
    /// Seed of the train/val choice.
    pub seed: u64,
    /// Skip bad records instead of failing.
    pub skip_bad_records: bool,
    /// The tokenizer.
    pub tokenizer: TokenizerChoice,
    /// Tokenizer threads.
    #[serde(skip)]
    pub threads: usize,
    /// Start over even if `out` holds another run.
    #[serde(skip)]
    pub force: bool,
    /// Show a progress bar.
    #[serde(skip)]
    pub progress: bool,
    /// Print per-stage time counters after the summary (`--profile`).
    #[serde(skip)]
    pub profile: bool,
}

/// Per-output counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct OutputCounts {
    documents: u64,
    tokens: u64,
    /// Tokens that are the tokenizer's unknown-word id (word-level tokenizers).
    #[serde(default)]
    unknown: u64,
}

/// State of one output directory at a shard boundary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OutputState {
    shards: Vec<ShardEntry>,
    stats: DatasetStats,
    carry: Vec<i32>,
    counts: OutputCounts,
}

/// Global counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunCounts {
    /// Records read (documents, empty ones and bad ones).
    pub records: u64,
    /// Empty documents skipped.
    pub empty_skipped: u64,
    /// Bad records skipped (`--skip-bad-records`).
    pub bad_skipped: u64,
}

/// The progress file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    fingerprint: String,
    /// The document in progress: input file index and record index within it.
    file_index: usize,
    record_index: u64,
    /// Tokens of that document (EOS included) already packed.
    token_offset: usize,
    counts: RunCounts,
    outputs: Vec<OutputState>,
    /// The first bad records seen (reported at the end).
    bad_examples: Vec<String>,
    /// The input bytes read so far, per file (the files before the current one whole): what a
    /// resume proves unchanged before it continues. Absent from older progress files.
    #[serde(default)]
    inputs: Vec<InputPrefix>,
}

/// The first `offset` bytes of an input file and their xxh3-64.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct InputPrefix {
    offset: u64,
    xxh3_64: String,
}

/// Running xxh3-64 of the input files' bytes, file after file, extended as the run reads on.
/// Streamed files are hashed up to the offset the reader reached; a Parquet file, read by
/// random access, counts as read whole once it is opened, so it is hashed whole.
struct PrefixHasher {
    done: Vec<InputPrefix>,
    file: usize,
    offset: u64,
    hasher: xxhash_rust::xxh3::Xxh3,
    reader: Option<std::fs::File>,
}

impl PrefixHasher {
    fn new() -> PrefixHasher {
        PrefixHasher {
            done: Vec::new(),
            file: 0,
            offset: 0,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            reader: None,
        }
    }

    /// Extends the hashes to byte `offset` of file `index` (the files before it whole).
    fn advance(&mut self, files: &[InputFile], index: usize, offset: u64) -> Result<()> {
        while self.file < index.min(files.len()) {
            self.extend_to(files, files[self.file].bytes)?;
            self.done.push(self.current());
            (self.file, self.offset, self.reader) = (self.file + 1, 0, None);
            self.hasher = xxhash_rust::xxh3::Xxh3::new();
        }
        if let Some(file) = files.get(index) {
            self.extend_to(files, offset.min(file.bytes))?;
        }
        Ok(())
    }

    fn extend_to(&mut self, files: &[InputFile], target: u64) -> Result<()> {
        use std::io::Read;
        if target <= self.offset {
            return Ok(());
        }
        let path = &files[self.file].path;
        if self.reader.is_none() {
            use std::io::Seek;
            let mut file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            file.seek(std::io::SeekFrom::Start(self.offset))
                .with_context(|| format!("cannot read {}", path.display()))?;
            self.reader = Some(file);
        }
        let reader = self.reader.as_mut().expect("opened above");
        let mut buf = vec![0u8; (1 << 20).min((target - self.offset) as usize)];
        while self.offset < target {
            let want = buf.len().min((target - self.offset) as usize);
            let n = reader
                .read(&mut buf[..want])
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                // Shorter than before: hash what there is; the comparison tells.
                break;
            }
            self.hasher.update(&buf[..n]);
            self.offset += n as u64;
        }
        Ok(())
    }

    fn current(&self) -> InputPrefix {
        InputPrefix {
            offset: self.offset,
            xxh3_64: h5gpt_formats::checksum::format_xxh3_64(self.hasher.digest()),
        }
    }

    /// Every file's prefix so far.
    fn prefixes(&self) -> Vec<InputPrefix> {
        let mut all = self.done.clone();
        all.push(self.current());
        all
    }
}

impl PrefixHasher {
    /// Advances to where the reader is and returns every file's prefix so far: the current
    /// file is `file_index`, and the offset reached in it comes from the count of bytes read
    /// over all files (the reader runs ahead of the writer, so this covers every document
    /// already packed).
    fn read_up_to(
        &mut self,
        files: &[InputFile],
        file_index: usize,
        bytes_read: u64,
    ) -> Result<Vec<InputPrefix>> {
        let before: u64 = files[..file_index].iter().map(|f| f.bytes).sum();
        self.advance(files, file_index, bytes_read.saturating_sub(before))?;
        Ok(self.prefixes())
    }
}

/// Proves that the inputs an unfinished run read are unchanged: their recorded prefixes hash
/// the same now. Returns the hasher, advanced to where the run stopped.
fn check_inputs(files: &[InputFile], recorded: &[InputPrefix]) -> Result<PrefixHasher> {
    let mut hasher = PrefixHasher::new();
    let Some(last) = recorded.len().checked_sub(1) else {
        return Ok(hasher);
    };
    hasher.advance(files, last, recorded[last].offset)?;
    for (i, (now, then)) in hasher.prefixes().iter().zip(recorded).enumerate() {
        if now != then {
            bail!(
                "{}: changed since the unfinished run in --out began (its first {} bytes hash to {} now, {} then): continuing would splice shards of the old and the new text\n---> HINT: rerun with --force to start over from the inputs as they are now, or restore the file",
                files[i].path.display(),
                then.offset,
                now.xxh3_64,
                then.xxh3_64
            );
        }
    }
    Ok(hasher)
}

/// What a run did, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Input files.
    pub files: usize,
    /// Input bytes.
    pub input_bytes: u64,
    /// Counts.
    pub counts: RunCounts,
    /// Per output directory: (dir, documents, tokens, rows, shards).
    pub outputs: Vec<(PathBuf, u64, u64, u64, usize)>,
    /// Seconds.
    pub seconds: f64,
    /// Whether the output was already complete (nothing done).
    pub already_complete: bool,
    /// Whether this run continued an interrupted one.
    pub resumed: bool,
    /// The first skipped bad records.
    pub bad_examples: Vec<String>,
    /// Tokenizer name, as recorded in `data_params.json`.
    pub tokenizer: String,
    /// Its vocabulary size.
    pub vocab_size: u32,
    /// Tokens that are the unknown-word id, over all outputs (`None`: the tokenizer has none).
    pub unknown_tokens: Option<u64>,
    /// How `train/` and `val/` were split (`None`: no `--val-fraction`).
    pub split_rule: Option<SplitRule>,
    /// Non-empty documents counted before the split rule was chosen.
    pub documents_counted: Option<u64>,
}

/// A document as read.
pub struct Doc {
    /// Input file index.
    pub file_index: usize,
    /// Record index within the file.
    pub record_index: u64,
    /// Its text.
    pub text: Option<String>,
}

/// A document, tokenized.
pub struct TokenizedDoc {
    /// Input file index.
    pub file_index: usize,
    /// Record index within the file.
    pub record_index: u64,
    /// `None`: an empty document.
    pub tokens: Option<Vec<i32>>,
}

fn output_dirs(config: &PreprocessConfig) -> Vec<PathBuf> {
    if config.val_fraction > 0.0 {
        vec![config.out.join("train"), config.out.join("val")]
    } else {
        vec![config.out.clone()]
    }
}

/// The input files as recorded in the fingerprint and the manifest: path and size.
fn files_json(files: &[InputFile]) -> Value {
    files
        .iter()
        .map(|f| json!({"path": f.path.to_string_lossy(), "bytes": f.bytes}))
        .collect()
}

/// `tokenizer_file` is the checksum of a given `tokenizer.json` (a trained one follows from
/// the settings in `config`). `--skip-bad-records` is left out: it changes no row of a run
/// that has met no bad record, so a run stopped by one continues with it.
fn fingerprint(
    config: &PreprocessConfig,
    files: &[InputFile],
    tokenizer_file: Option<&str>,
) -> String {
    let files = files_json(files);
    let config = PreprocessConfig {
        skip_bad_records: false,
        ..config.clone()
    };
    let text = json!({"config": config, "files": files, "tokenizer_file": tokenizer_file, "format": h5gpt_formats::spec::FORMAT_VERSION}).to_string();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// Whether document `(file, record)` goes to the validation set.
fn is_val(config: &PreprocessConfig, file_index: usize, record_index: u64) -> bool {
    if config.val_fraction <= 0.0 {
        return false;
    }
    let h = mix64(config.seed ^ mix64(((file_index as u64) << 40) ^ record_index));
    (h as f64 / u64::MAX as f64) < config.val_fraction
}

/// Temporary files: a writer's staging names, never complete output.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Files a preprocess run writes into an output directory.
fn is_ours(name: &str) -> bool {
    name.ends_with(".h5")
        || name == DATA_PARAMS_FILE
        || name == PROGRESS_FILE
        || name == TOKENIZER_FILE
        || name == h5gpt_formats::verify::VERIFIED_CACHE
        || is_temporary(name)
}

/// Removes the files in `dir` whose names match `which` (a missing `dir` has none).
fn remove_files(dir: &Path, which: fn(&str) -> bool) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && which(&name) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Whether `dir` holds anything but our own lock file.
fn dir_has_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| e.file_name() != LOCK_FILE)
    })
}

impl PreprocessConfig {
    /// Checks every numeric setting before anything uses it (a [`UsageError`]: exit code 2).
    pub fn validate(&self) -> Result<(), UsageError> {
        for (flag, value) in [
            ("seq-len", self.seq_len),
            ("examples-per-shard", self.examples_per_shard),
            ("threads", self.threads),
        ] {
            if value == 0 {
                return Err(UsageError::new(format!("--{flag} 0: must be at least 1")));
            }
        }
        if self.seq_len > MAX_SEQ_LEN {
            return Err(UsageError::new(format!(
                "--seq-len {}: at most {MAX_SEQ_LEN} tokens per row",
                self.seq_len
            )));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(UsageError::new(format!(
                "--val-fraction {}: must be in [0, 1) (the fraction of documents written to val/)",
                self.val_fraction
            )));
        }
        if let TokenizerChoice::Train(spec) = &self.tokenizer {
            if spec.min_frequency == 0 {
                return Err(UsageError::new(
                    "--min-frequency 0: must be at least 1 (a count of occurrences)",
                ));
            }
        }
        Ok(())
    }
}

/// Longest row `--seq-len` accepts (a row's three int32 arrays must stay far below a shard).
pub const MAX_SEQ_LEN: usize = 1 << 20;

/// Runs `preprocess`.
pub fn run(config: &PreprocessConfig) -> Result<RunSummary> {
    let started = Instant::now();
    config.validate()?;
    let files = discover(&config.inputs, config.glob.as_deref())?;
    if files.is_empty() {
        bail!(
            "no input files found in {:?}\n---> HINT: check --input and --glob",
            config.inputs
        );
    }
    if config.part.is_whole() && config.val_fraction > 0.0 {
        let documents = count_documents(&config.inputs, config.glob.as_deref(), &config.text_key);
        if SplitRule::choose(documents, config.val_fraction) == SplitRule::WithinDocuments {
            return run_within_documents(config, documents);
        }
    }
    let input_bytes: u64 = files.iter().map(|f| f.bytes).sum();
    let given = match &config.tokenizer {
        TokenizerChoice::Given { name, eos_token } => {
            Some(resolve_tokenizer_arg(name, eos_token.as_deref())?)
        }
        TokenizerChoice::Train(spec) => {
            spec.validate()?;
            None
        }
    };
    let given_file = given.as_ref().and_then(Tokenizer::file_entry);
    let fingerprint = fingerprint(
        config,
        &files,
        given_file.as_ref().map(|f| f.xxh3_64.as_str()),
    );
    let dirs = output_dirs(config);
    let progress_path = config.out.join(PROGRESS_FILE);
    // One writer per output folder: a second `preprocess --out` into it stops here.
    let lock = RunLock::acquire(&config.out, "preprocess", "--out")?;
    if let Some(stale) = lock.took_over() {
        eprintln!(
            "preprocess: took over the lock of {stale}, which is no longer running ({})",
            lock.path().display()
        );
    }

    if config.force {
        let split = [config.out.join("train"), config.out.join("val")];
        for dir in std::iter::once(&config.out)
            .chain(dirs.iter())
            .chain(split.iter())
        {
            remove_files(dir, is_ours)?;
        }
        for dir in split.iter().filter(|d| !dirs.contains(d)) {
            // A split of an earlier run that this one does not write: gone once empty, so
            // that `train --shards OUT` does not look inside it.
            let _ = std::fs::remove_dir(dir);
        }
    }
    let mut progress: Option<Progress> = None;
    if progress_path.exists() {
        let saved: Progress = serde_json::from_slice(&std::fs::read(&progress_path)?)
            .with_context(|| format!("{}: unreadable progress file", progress_path.display()))?;
        if saved.fingerprint != fingerprint {
            bail!(
                "{} holds an unfinished run with other inputs or settings\n---> HINT: use the same command to continue it, --force to start over, or another --out",
                config.out.display()
            );
        }
        progress = Some(saved);
    } else if !config.force && dir_has_files(&config.out) {
        let complete = dirs.iter().all(|d| {
            DataParams::read_from_dir(d)
                .ok()
                .flatten()
                .and_then(|p| {
                    p.setup
                        .get("fingerprint")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .is_some_and(|f| f == fingerprint)
        });
        if complete {
            return Ok(RunSummary {
                files: files.len(),
                input_bytes,
                counts: RunCounts::default(),
                outputs: Vec::new(),
                seconds: started.elapsed().as_secs_f64(),
                already_complete: true,
                resumed: false,
                bad_examples: Vec::new(),
                tokenizer: given.as_ref().map_or_else(String::new, |t| t.name().into()),
                vocab_size: given.as_ref().map_or(0, Tokenizer::vocab_size),
                unknown_tokens: None,
                split_rule: None,
                documents_counted: None,
            });
        }
        bail!(
            "{} is not empty and holds no run of these inputs and settings\n---> HINT: use --force to overwrite it, or pick another --out",
            config.out.display()
        );
    }
    let resumed = progress.is_some();
    let mut hasher = match &progress {
        Some(saved) => check_inputs(&files, &saved.inputs)?,
        None => PrefixHasher::new(),
    };
    let mut state = progress.unwrap_or(Progress {
        fingerprint: fingerprint.clone(),
        file_index: 0,
        record_index: 0,
        token_offset: 0,
        counts: RunCounts::default(),
        outputs: vec![OutputState::default(); dirs.len()],
        bad_examples: Vec::new(),
        inputs: Vec::new(),
    });
    for dir in &dirs {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        remove_files(dir, is_temporary)?;
    }
    if !resumed {
        // From here on the output directory always says which run it belongs to.
        write_atomic(&progress_path, &serde_json::to_vec(&state)?)?;
    }

    let tokenizer = Arc::new(match (given, &config.tokenizer) {
        (Some(t), _) => t,
        (None, TokenizerChoice::Train(spec)) => {
            if config.progress {
                eprintln!(
                    "preprocess: training a {} tokenizer ({} tokens) on the training documents",
                    spec.kind.tokenizer_name(),
                    spec.vocab_size
                );
            }
            let keep = |file: usize, record: u64| !is_val(config, file, record);
            train_tokenizer(
                spec,
                &files,
                &CorpusSettings {
                    text_key: &config.text_key,
                    skip_bad: config.skip_bad_records,
                    nfc: config.normalize_nfc,
                    keep: &keep,
                    part: config.part,
                    threads: config.threads,
                },
            )?
        }
        (None, TokenizerChoice::Given { .. }) => unreachable!("given tokenizers resolve above"),
    });
    let eos = tokenizer.eos_id();
    let unk = tokenizer.unk_id().map(|u| u as i32);
    let packing = if config.pack {
        Packing::Stream
    } else {
        Packing::Document
    };
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
        files: files.clone(),
        text_key: config.text_key.clone(),
        skip_bad: config.skip_bad_records,
        start_file: state.file_index,
        start_record: state.record_index,
        bytes_read: bytes_read.clone(),
        tokenizer: tokenizer.clone(),
        nfc: config.normalize_nfc,
        part: config.part,
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

    let bar = if config.progress {
        let bar = ProgressBar::new(input_bytes);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let fault_at = h5gpt_formats::fault::armed("abort-after-shard");
    let mut tokens_this_run = 0u64;
    let mut first_doc = true;

    // Every heavy stage runs on the pool; this closure, the one ordered stage, packs.
    let results = pool.install(|| -> Result<Vec<(Vec<ShardEntry>, DatasetStats)>> {
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
                            &files,
                            state.file_index,
                            bytes_read.load(Ordering::Relaxed),
                        )?;
                        save_progress(&progress_path, &mut state, &mut flow, &packers)?;
                    }
                }
                if packing == Packing::Document {
                    if let Some(row) = packers[which].flush() {
                        if flow.push_row(which, row)? {
                            state.token_offset = tokens.len();
                            state.inputs = hasher.read_up_to(
                                &files,
                                state.file_index,
                                bytes_read.load(Ordering::Relaxed),
                            )?;
                            save_progress(&progress_path, &mut state, &mut flow, &packers)?;
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
                bail!("{e}\n---> HINT: {hint}");
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

    // The manifests; the progress file goes last.
    let mut outputs = Vec::new();
    for (i, (shards, stats)) in results.into_iter().enumerate() {
        let dir = &dirs[i];
        let counts = &state.outputs[i].counts;
        if shards.is_empty() && state.counts.bad_skipped > 0 && counts.documents == 0 {
            bail!(
                "{}: no rows to write: all {} records read were bad and skipped (--skip-bad-records), {} of them empty\n---> HINT: the input holds no valid document; the first bad records: {}",
                dir.display(),
                state.counts.records,
                state.counts.empty_skipped,
                state.bad_examples.join("; ")
            );
        }
        if shards.is_empty() {
            bail!(
                "{}: no rows to write ({} documents, {} tokens)\n---> HINT: {}",
                dir.display(),
                counts.documents,
                counts.tokens,
                no_rows_hint(config, &state.counts, counts, i, dirs.len())
            );
        }
        outputs.push((
            dir.clone(),
            counts.documents,
            counts.tokens,
            stats.num_sequences,
            shards.len(),
        ));
        if let Some(json) = tokenizer.json() {
            write_atomic(&dir.join(TOKENIZER_FILE), json)?;
        }
        let params = manifest(
            config,
            &tokenizer,
            &files,
            &fingerprint,
            &state.counts,
            counts,
            shards,
            stats,
            i,
            dirs.len(),
        );
        params.write_to_dir(dir)?;
    }
    if progress_path.exists() {
        std::fs::remove_file(&progress_path)?;
    }
    Ok(RunSummary {
        files: files.len(),
        input_bytes,
        counts: state.counts,
        outputs,
        seconds: started.elapsed().as_secs_f64(),
        already_complete: false,
        resumed,
        unknown_tokens: unk.map(|_| state.outputs.iter().map(|o| o.counts.unknown).sum()),
        bad_examples: state.bad_examples,
        tokenizer: tokenizer.name().into(),
        vocab_size: tokenizer.vocab_size(),
        split_rule: (config.val_fraction > 0.0).then_some(SplitRule::Documents),
        documents_counted: None,
    })
}

/// What to say when output `index` of `outputs` got no rows: what actually happened.
fn no_rows_hint(
    config: &PreprocessConfig,
    run: &RunCounts,
    counts: &OutputCounts,
    index: usize,
    outputs: usize,
) -> String {
    let read = run.records - run.bad_skipped;
    if let (DocPart::Head(f) | DocPart::Tail(f), 0) = (config.part, counts.documents) {
        return format!(
            "the documents are too short to cut inside (the last {f} of each goes to val/, cut at a newline): nothing is left for this side; use a longer input or --val-fraction 0"
        );
    }
    if read == 0 {
        return "the input holds no records; check --input, --glob and --text-key".into();
    }
    if run.records == run.empty_skipped + run.bad_skipped && run.records > 0 {
        return format!(
            "all {} records are empty or bad; check --text-key (is the text under another key?)",
            run.records
        );
    }
    match config.part {
        _ if outputs > 1 && counts.documents == 0 => format!(
            "none of the {} documents went to {} (--val-fraction {}, whole documents by a seeded hash); use another --seed or --val-fraction",
            read - run.empty_skipped,
            if index == 0 { "train/" } else { "val/" },
            config.val_fraction
        ),
        _ => format!(
            "its {} documents hold {} tokens, fewer than the 2 a row needs; use a longer input",
            counts.documents, counts.tokens
        ),
    }
}

/// `--val-fraction F` with too few documents for a whole-document split: two runs over the
/// same input, the heads of the documents into `OUT/train` and their tails into `OUT/val`
/// (see [`crate::val_split`]). A tokenizer trained with `--train-tokenizer` is trained on the
/// heads, and the tails are tokenized with that very `tokenizer.json`.
fn run_within_documents(config: &PreprocessConfig, documents: u64) -> Result<RunSummary> {
    let fraction = config.val_fraction;
    let head = PreprocessConfig {
        out: config.out.join("train"),
        val_fraction: 0.0,
        part: DocPart::Head(fraction),
        ..config.clone()
    };
    let mut train = run(&head)?;
    let mut tail = PreprocessConfig {
        out: config.out.join("val"),
        val_fraction: 0.0,
        part: DocPart::Tail(fraction),
        ..config.clone()
    };
    if let TokenizerChoice::Train(_) = &config.tokenizer {
        tail.tokenizer = TokenizerChoice::Given {
            name: head.out.join(TOKENIZER_FILE).to_string_lossy().into_owned(),
            eos_token: None,
        };
    }
    let val = run(&tail)?;
    train.outputs.extend(val.outputs);
    train.seconds += val.seconds;
    train.already_complete &= val.already_complete;
    train.resumed |= val.resumed;
    train.unknown_tokens = match (train.unknown_tokens, val.unknown_tokens) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    };
    train.split_rule = Some(SplitRule::WithinDocuments);
    train.documents_counted = Some(documents);
    Ok(train)
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

#[allow(clippy::too_many_arguments)]
fn manifest(
    config: &PreprocessConfig,
    tokenizer: &Tokenizer,
    files: &[InputFile],
    fingerprint: &str,
    run: &RunCounts,
    counts: &OutputCounts,
    shards: Vec<ShardEntry>,
    stats: DatasetStats,
    index: usize,
    outputs: usize,
) -> DataParams {
    let mut params = DataParams::from_core(ManifestCore {
        tokenizer: tokenizer.name().into(),
        tokenizer_file: tokenizer.file_entry(),
        packing: if config.pack {
            Packing::Stream
        } else {
            Packing::Document
        },
        seq_len: config.seq_len,
        compression: config.compression,
        eos_id: tokenizer.eos_id(),
        pad_id: tokenizer.eos_id(),
        vocab_size: tokenizer.vocab_size(),
        shards,
        stats,
    });
    let setup: &mut Map<String, Value> = &mut params.setup;
    setup.insert(
        "input".into(),
        json!(config
            .inputs
            .iter()
            .map(|p| p.to_string_lossy())
            .collect::<Vec<_>>()),
    );
    setup.insert("input_files".into(), files_json(files));
    setup.insert("fingerprint".into(), fingerprint.into());
    setup.insert(
        "split".into(),
        (match config.part {
            DocPart::Head(_) => "train",
            DocPart::Tail(_) => "val",
            DocPart::Whole if outputs == 1 => "all",
            DocPart::Whole if index == 0 => "train",
            DocPart::Whole => "val",
        })
        .into(),
    );
    let p = &mut params.processing;
    match (tokenizer.name(), tokenizer.json()) {
        ("gpt2", _) => {
            p.insert("tokenizer_type".into(), "GPT2Tokenizer".into());
            p.insert("encoding".into(), "r50k_base".into());
        }
        (name, None) => {
            p.insert("tokenizer_type".into(), "tiktoken".into());
            p.insert("encoding".into(), name.into());
        }
        (_, Some(_)) => {
            p.insert("tokenizer_type".into(), "HuggingFaceTokenizer".into());
            p.insert("huggingface_tokenizer".into(), TOKENIZER_FILE.into());
        }
    }
    match &config.tokenizer {
        TokenizerChoice::Given { name, .. } => {
            p.insert("tokenizer".into(), name.clone().into());
        }
        TokenizerChoice::Train(spec) => {
            p.insert("tokenizer_training".into(), json!(spec));
        }
    }
    p.insert("use_ftfy".into(), false.into());
    p.insert(
        "normalize".into(),
        (if config.normalize_nfc { "nfc" } else { "none" }).into(),
    );
    p.insert("jsonl_key".into(), config.text_key.clone().into());
    p.insert("glob".into(), config.glob.clone().into());
    p.insert("files_per_record".into(), config.examples_per_shard.into());
    p.insert("compression".into(), config.compression.to_string().into());
    match config.part {
        DocPart::Head(f) | DocPart::Tail(f) => {
            p.insert("val_fraction".into(), f.into());
            p.insert(
                "split_rule".into(),
                SplitRule::WithinDocuments.name().into(),
            );
        }
        DocPart::Whole => {
            p.insert("val_fraction".into(), config.val_fraction.into());
            if config.val_fraction > 0.0 {
                p.insert("split_rule".into(), SplitRule::Documents.name().into());
            }
        }
    }
    p.insert("seed".into(), config.seed.into());
    p.insert("skip_bad_records".into(), config.skip_bad_records.into());
    let extra = &mut params.post_process.extra;
    extra.insert("n_docs".into(), counts.documents.into());
    if tokenizer.unk_id().is_some() {
        extra.insert("unknown_tokens".into(), counts.unknown.into());
    }
    extra.insert("num_stream_tokens".into(), counts.tokens.into());
    extra.insert("records_read".into(), run.records.into());
    extra.insert("empty_documents_skipped".into(), run.empty_skipped.into());
    extra.insert("bad_records_skipped".into(), run.bad_skipped.into());
    extra.insert("processed_files".into(), files.len().into());
    extra.insert(
        "raw_bytes_count".into(),
        files.iter().map(|f| f.bytes).sum::<u64>().into(),
    );
    params
}

/// Tokenizes a batch in parallel, splitting long documents at safe points.
pub fn tokenize_batch(tokenizer: &Tokenizer, docs: Vec<Doc>, nfc: bool) -> Vec<TokenizedDoc> {
    use unicode_normalization::UnicodeNormalization;
    let (places, texts): (Vec<(usize, u64)>, Vec<Option<String>>) = docs
        .into_iter()
        .map(|d| ((d.file_index, d.record_index), d.text))
        .unzip();
    let texts: Vec<Option<String>> = if nfc {
        texts
            .into_par_iter()
            .map(|t| t.map(|t| profile::time(Stage::Tokenize, || t.nfc().collect())))
            .collect()
    } else {
        texts
    };
    let units: Vec<(usize, &str)> = texts
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.as_deref().map(|t| (i, t)))
        .flat_map(|(i, t)| {
            let pieces = if tokenizer.splits_documents() {
                split_for_tokenization(t, SPLIT_BYTES)
            } else {
                std::iter::once(0..t.len()).collect()
            };
            pieces.into_iter().map(move |r| (i, &t[r]))
        })
        .collect();
    let encoded: Vec<(usize, Vec<u32>)> = units
        .par_iter()
        .with_max_len(1)
        .map(|&(i, text)| (i, profile::time(Stage::Tokenize, || tokenizer.encode(text))))
        .collect();
    let mut tokens: Vec<Vec<i32>> = vec![Vec::new(); texts.len()];
    for (i, piece) in encoded {
        tokens[i].extend(piece.into_iter().map(|t| t as i32));
    }
    places
        .into_iter()
        .zip(texts)
        .zip(tokens)
        .map(
            |(((file_index, record_index), text), tokens)| TokenizedDoc {
                file_index,
                record_index,
                tokens: text.filter(|t| !t.is_empty()).map(|_| tokens),
            },
        )
        .collect()
}
