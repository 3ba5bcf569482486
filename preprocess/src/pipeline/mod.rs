//! The `preprocess` run: read → tokenize → pack → write, every stage but packing in parallel
//! (see [`crate::schedule`]), with a progress file after every shard so an interrupted run
//! continues where it stopped and ends byte-identical to an uninterrupted one.
//!
//! [`run`] goes through the stages in order, each in its own module:
//! - `outdir`: the output directory's state (the lock, the resume policy, the progress file);
//! - the dedup pass (`--dedup`, [`crate::dedup`]): first of all, its decisions handed to every
//!   later stage (the split rule counts the documents that remain, the tokenizer trains on
//!   them, the reader drops the others) and saved in the output folder;
//! - `tokenize`: the reader/tokenizer stage (a given tokenizer or one trained first);
//! - `sink`: packers, shard writers, progress saves and the progress bar;
//! - `manifests`: one `data_params.json` per output directory.

mod manifests;
mod outdir;
mod sink;
mod tokenize;

pub use outdir::PROGRESS_FILE;
pub use tokenize::{tokenize_batch, Doc, TokenizedDoc};

use crate::decontaminate::{self, DecontaminateSettings, Decontamination, DECONTAMINATION_JSONL};
use crate::dedup::{self, Decisions, DedupSettings};
use crate::input::{discover_inputs, InputFile};
use crate::val_split::{count_file_documents, DocPart, SplitRule};
use anyhow::{bail, Result};
use h5gpt_formats::exit::{with_hint, UsageError};
use h5gpt_formats::permutation::mix64;
use h5gpt_formats::split::split_paths;
use h5gpt_formats::{Compression, Packing};
use h5gpt_tokenizer::tokenizer::{Tokenizer, TOKENIZER_FILE};
use h5gpt_tokenizer::train::TrainSpec;
use outdir::Opened;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

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

/// Where a run's notes go: lines for the user (a lock taken over, inputs skipped, the dedup
/// pass's banding and time, a tokenizer being trained). The library prints nothing itself; the
/// command line hands in a printer. The default drops them.
#[derive(Clone, Default)]
pub struct Notes(Option<Printer>);

/// A printer of notes, shared by the pipeline's threads.
type Printer = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

impl Notes {
    /// Notes handed to `print`.
    pub fn to(print: impl Fn(&str) + Send + Sync + 'static) -> Notes {
        Notes(Some(std::sync::Arc::new(print)))
    }

    /// Hands `line` on.
    pub fn note(&self, line: &str) {
        if let Some(print) = &self.0 {
            print(line);
        }
    }
}

impl std::fmt::Debug for Notes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Notes(printed)"
        } else {
            "Notes(dropped)"
        })
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
    /// `--dedup` and its settings (absent from the fingerprint when off, so outputs without
    /// dedup stay what they were).
    #[serde(skip_serializing_if = "DedupSettings::is_off")]
    pub dedup: DedupSettings,
    /// The dedup pass's decisions, once made (set by [`run`] itself).
    #[serde(skip)]
    pub dedup_decisions: Option<Arc<Decisions>>,
    /// `--decontaminate` (absent from the fingerprint when no file is given).
    #[serde(skip_serializing_if = "DecontaminateSettings::is_off")]
    pub decontaminate: DecontaminateSettings,
    /// The decontamination scan of the training documents (set by [`run`] itself).
    #[serde(skip)]
    pub decontamination: Option<Arc<Decontamination>>,
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
    /// Where the run's notes for the user go (the command line prints them to stderr).
    #[serde(skip)]
    pub notes: Notes,
    /// Print per-stage time counters after the summary (`--profile`).
    #[serde(skip)]
    pub profile: bool,
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
    /// Documents dropped as duplicates (`--dedup`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dedup_dropped: u64,
    /// Training documents dropped by `--decontaminate` (cut into too many pieces).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub decontaminated_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    /// What each output directory received.
    pub outputs: Vec<OutputSummary>,
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
    /// The dedup pass's decisions (`None`: `--dedup off`).
    #[serde(skip)]
    pub dedup: Option<Arc<Decisions>>,
    /// What `--decontaminate` did to the training documents.
    pub decontamination: Option<decontaminate::DecontaminationReport>,
}

impl RunSummary {
    /// A warning when the validation share realised (val/'s tokens over both sides') is
    /// outside `[F/2, 2F]` for `--val-fraction F`: a cut at the only newline of a document, or
    /// a hash that sent a few long documents one way, can give far more or far less.
    pub fn val_fraction_warning(&self, fraction: f64) -> Option<String> {
        if fraction <= 0.0 || self.already_complete {
            return None;
        }
        let side = |name: &str| {
            self.outputs
                .iter()
                .filter(|o| o.dir.file_name().is_some_and(|n| n == name))
                .map(|o| o.tokens)
                .sum::<u64>()
        };
        let (train, val) = (side("train"), side("val"));
        if train + val == 0 {
            return None;
        }
        let realised = val as f64 / (train + val) as f64;
        if (fraction / 2.0..=fraction * 2.0).contains(&realised) {
            return None;
        }
        Some(with_hint(
            format!(
                "--val-fraction {fraction}: val/ got {val} tokens and train/ {train}, a fraction of \
                 {realised:.3}, outside [{}, {}]",
                fraction / 2.0,
                fraction * 2.0,
            ),
            match self.split_rule {
                Some(SplitRule::WithinDocuments) =>
                    "each document is cut at the newline nearest \
                    the fraction; a text with few newlines cuts far from it: add line breaks, or \
                    give several documents",
                _ =>
                    "whole documents go one way or the other; with a few long documents, try \
                    another --seed or more, shorter documents",
            },
        ))
    }
}

/// What one output directory received.
#[derive(Debug, Clone, Serialize)]
pub struct OutputSummary {
    /// The directory (`OUT`, or `OUT/train` and `OUT/val`).
    pub dir: PathBuf,
    /// Documents packed into it.
    pub documents: u64,
    /// Their tokens (end-of-document tokens included).
    pub tokens: u64,
    /// Rows written.
    pub rows: u64,
    /// Shards written.
    pub shards: usize,
}

/// Whether document `(file, record)` is dropped as a duplicate.
fn is_dropped(config: &PreprocessConfig, file_index: usize, record_index: u64) -> bool {
    config
        .dedup_decisions
        .as_ref()
        .is_some_and(|d| d.drops(file_index, record_index))
}

/// Whether document `(file, record)` goes to the validation set.
fn is_val(config: &PreprocessConfig, file_index: usize, record_index: u64) -> bool {
    if config.val_fraction <= 0.0 {
        return false;
    }
    let h = mix64(config.seed ^ mix64(((file_index as u64) << 40) ^ record_index));
    (h as f64 / u64::MAX as f64) < config.val_fraction
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
        self.dedup.validate()?;
        Ok(())
    }
}

/// Longest row `--seq-len` accepts (a row's three int32 arrays must stay far below a shard).
pub const MAX_SEQ_LEN: usize = 1 << 20;

/// Runs `preprocess`: the output directory's state, the tokenizer, then packing and writing,
/// and the manifests last.
pub fn run(config: &PreprocessConfig) -> Result<RunSummary> {
    let started = Instant::now();
    config.validate()?;
    let files = find_input_files(config)?;
    if !config.dedup.is_off() && config.dedup_decisions.is_none() {
        // The dedup pass comes first: every later stage sees its decisions.
        let decisions = dedup::prepare(
            config,
            &files,
            &[config.out.clone(), split_paths(&config.out)[0].clone()],
        )?;
        let with = PreprocessConfig {
            dedup_decisions: Some(Arc::new(decisions)),
            ..config.clone()
        };
        return run(&with);
    }
    if config.part.is_whole() && config.val_fraction > 0.0 {
        let documents = count_file_documents(&files, &config.text_key)
            .saturating_sub(config.dedup_decisions.as_ref().map_or(0, |d| d.dropped()));
        if SplitRule::choose(documents, config.val_fraction) == SplitRule::WithinDocuments {
            return run_within_documents(config, documents);
        }
    }
    let scanned = with_decontamination(config, &files)?;
    let config = scanned.as_ref().unwrap_or(config);
    let input_bytes: u64 = files.iter().map(|f| f.bytes).sum();
    let packing = if config.pack {
        Packing::Stream
    } else {
        Packing::Document
    };
    let given = tokenize::resolve_given(config)?;
    let (fingerprint, legacy) = fingerprints(config, &files, given.as_ref());
    let dirs = output_dirs(config);

    let mut out = match outdir::open(config, &dirs, &files, &fingerprint, &legacy)? {
        Opened::Ready(out) => *out,
        Opened::Complete => {
            return Ok(already_complete(
                config,
                &files,
                given.as_ref(),
                started.elapsed().as_secs_f64(),
            ))
        }
    };
    save_decisions(config, &dirs[0])?;
    let tokenizer = Arc::new(tokenize::train_or_given(config, given, &files)?);
    let written =
        sink::pack_and_write(config, &files, tokenizer.clone(), packing, &dirs, &mut out)?;
    let input_sums = out.hasher.whole_files(&files)?;
    let no_rows = written.iter().any(|(shards, _)| shards.is_empty());
    let outputs = match manifests::write_manifests(
        config,
        &tokenizer,
        (files.as_slice(), input_sums.as_slice()),
        &fingerprint,
        packing,
        &out.state,
        &dirs,
        written,
    ) {
        Ok(outputs) => outputs,
        // An output that got no rows fails the same way on every rerun: nothing of it is
        // worth resuming, so nothing of it is left (no progress file, no shards).
        Err(e) if no_rows => {
            out.abandon(&dirs, &config.out)?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let resumed = out.resumed;
    let state = out.finish()?;
    Ok(RunSummary {
        files: files.len(),
        input_bytes,
        seconds: started.elapsed().as_secs_f64(),
        already_complete: false,
        resumed,
        unknown_tokens: tokenizer
            .unk_id()
            .map(|_| state.outputs.iter().map(|o| o.counts.unknown).sum()),
        counts: state.counts,
        outputs,
        bad_examples: state.bad_examples,
        tokenizer: tokenizer.name().into(),
        vocab_size: tokenizer.vocab_size(),
        split_rule: (config.val_fraction > 0.0).then_some(SplitRule::Documents),
        documents_counted: None,
        dedup: config.dedup_decisions.clone(),
        decontamination: config.decontamination.as_ref().map(|d| d.report.clone()),
    })
}

/// The input files `--input` and `--glob` find (what the walk skipped is said on stderr);
/// none is an error.
fn find_input_files(config: &PreprocessConfig) -> Result<Vec<InputFile>> {
    let found = discover_inputs(
        &config.inputs,
        config.glob.as_deref(),
        &output_folders(config),
    )?;
    if config.part.is_whole() {
        // (The two runs of a within-document split walk the same inputs again, silently.)
        for skipped in &found.skipped {
            config.notes.note(&format!("preprocess: skipped {skipped}"));
        }
    }
    if found.files.is_empty() {
        bail!(with_hint(
            format!("no input files found in {:?}", config.inputs),
            "check --input and --glob",
        ));
    }
    Ok(found.files)
}

/// The configuration with the decontamination scan of the training documents (those of this
/// run unless it writes the tails of a split inside documents, val/); `None` when there is
/// nothing to scan or the scan is done.
fn with_decontamination(
    config: &PreprocessConfig,
    files: &[InputFile],
) -> Result<Option<PreprocessConfig>> {
    if !config.decontaminate.is_off()
        && config.decontamination.is_none()
        && !matches!(config.part, DocPart::Tail(_))
    {
        let applies = |f: usize, r: u64| !is_val(config, f, r) && !is_dropped(config, f, r);
        let scan = decontaminate::scan(
            &config.decontaminate,
            files,
            &config.text_key,
            config.part,
            &applies,
        )?;
        Ok(Some(PreprocessConfig {
            decontamination: Some(Arc::new(scan)),
            ..config.clone()
        }))
    } else {
        Ok(None)
    }
}

/// The summary of a run the output folder already holds, complete.
fn already_complete(
    config: &PreprocessConfig,
    files: &[InputFile],
    given: Option<&Tokenizer>,
    seconds: f64,
) -> RunSummary {
    RunSummary {
        files: files.len(),
        input_bytes: files.iter().map(|f| f.bytes).sum(),
        counts: RunCounts::default(),
        outputs: Vec::new(),
        seconds,
        already_complete: true,
        resumed: false,
        bad_examples: Vec::new(),
        tokenizer: given.map_or_else(String::new, |t| t.name().into()),
        vocab_size: given.map_or(0, Tokenizer::vocab_size),
        unknown_tokens: None,
        split_rule: None,
        documents_counted: None,
        dedup: config.dedup_decisions.clone(),
        decontamination: None,
    }
}

/// The run's fingerprint and its legacy form (which a progress file of an older version
/// holds), over the configuration, the inputs and the given tokenizer file's hash.
fn fingerprints(
    config: &PreprocessConfig,
    files: &[InputFile],
    given: Option<&Tokenizer>,
) -> (String, String) {
    let given_file = given.and_then(Tokenizer::file_entry);
    let fingerprint = outdir::fingerprint(
        config,
        files,
        given_file.as_ref().map(|f| f.xxh3_64.as_str()),
    );
    let legacy = outdir::legacy_fingerprint(
        config,
        files,
        given_file.as_ref().map(|f| f.xxh3_64.as_str()),
    );
    (fingerprint, legacy)
}

/// Saves, into the training folder `train_dir`, the dedup decisions (unless there already)
/// and the decontamination report.
fn save_decisions(config: &PreprocessConfig, train_dir: &Path) -> Result<()> {
    if let Some(decisions) = &config.dedup_decisions {
        dedup::save_if_missing(decisions, train_dir)?;
    }
    if let Some(d) = &config.decontamination {
        h5gpt_formats::fsio::write_atomic(&train_dir.join(DECONTAMINATION_JSONL), &d.jsonl)?;
    }
    Ok(())
}

/// The folders the input walk leaves out: `--out` (with an input directory around it, a rerun
/// would otherwise read its own shards); for the two runs of a within-document split, whose
/// `out` is `OUT/train` or `OUT/val`, the user's `OUT`.
fn output_folders(config: &PreprocessConfig) -> Vec<PathBuf> {
    let mut folders = vec![config.out.clone()];
    if !config.part.is_whole() {
        folders.extend(config.out.parent().map(PathBuf::from));
    }
    folders
}

/// The output directories: `OUT`, or `OUT/train` and `OUT/val` with `--val-fraction`.
fn output_dirs(config: &PreprocessConfig) -> Vec<PathBuf> {
    if config.val_fraction > 0.0 {
        split_paths(&config.out).to_vec()
    } else {
        vec![config.out.clone()]
    }
}

/// `--val-fraction F` with too few documents for a whole-document split: two runs over the
/// same input, the heads of the documents into `OUT/train` and their tails into `OUT/val`
/// (see [`crate::val_split`]). A tokenizer trained with `--train-tokenizer` is trained on the
/// heads, and the tails are tokenized with that very `tokenizer.json`.
fn run_within_documents(config: &PreprocessConfig, documents: u64) -> Result<RunSummary> {
    let fraction = config.val_fraction;
    let [train_dir, val_dir] = split_paths(&config.out);
    let head = PreprocessConfig {
        out: train_dir,
        val_fraction: 0.0,
        part: DocPart::Head(fraction),
        ..config.clone()
    };
    let mut train = run(&head)?;
    let mut tail = PreprocessConfig {
        out: val_dir,
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
    train.decontamination = train.decontamination.or(val.decontamination);
    train.split_rule = Some(SplitRule::WithinDocuments);
    train.documents_counted = Some(documents);
    Ok(train)
}
