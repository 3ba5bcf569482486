//! The output directory's state: whose run it holds (the fingerprint of the inputs and
//! settings), the resume policy (continue an unfinished run, skip a complete one, refuse a
//! foreign one, `--force` clears ours), and the progress file that lets an interrupted run
//! continue, with the proof that the inputs it read are unchanged.

use super::{PreprocessConfig, RunCounts, TokenizerChoice};
use crate::input::{canonical, InputFile};
use anyhow::{bail, Context, Result};
use h5gpt_formats::exit::with_hint;
use h5gpt_formats::fsio::write_atomic;
use h5gpt_formats::lock::{RunLock, LOCK_FILE};
use h5gpt_formats::manifest::{DataParams, DatasetStats, ShardEntry};
use h5gpt_formats::spec::DATA_PARAMS_FILE;
use h5gpt_formats::split::split_paths;
use h5gpt_tokenizer::tokenizer::TOKENIZER_FILE;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Name of the progress file kept in the output directory while a run is unfinished.
pub const PROGRESS_FILE: &str = ".preprocess-progress.json";

/// Per-output counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct OutputCounts {
    pub(super) documents: u64,
    pub(super) tokens: u64,
    /// Tokens that are the tokenizer's unknown-word id (word-level tokenizers).
    #[serde(default)]
    pub(super) unknown: u64,
}

/// State of one output directory at a shard boundary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct OutputState {
    pub(super) shards: Vec<ShardEntry>,
    pub(super) stats: DatasetStats,
    pub(super) carry: Vec<i32>,
    pub(super) counts: OutputCounts,
}

/// The progress file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Progress {
    pub(super) fingerprint: String,
    /// The document in progress: input file index and record index within it.
    pub(super) file_index: usize,
    pub(super) record_index: u64,
    /// Tokens of that document (EOS included) already packed.
    pub(super) token_offset: usize,
    pub(super) counts: RunCounts,
    pub(super) outputs: Vec<OutputState>,
    /// The first bad records seen (reported at the end).
    pub(super) bad_examples: Vec<String>,
    /// The input bytes read so far, per file (the files before the current one whole): what a
    /// resume proves unchanged before it continues. Absent from older progress files.
    #[serde(default)]
    pub(super) inputs: Vec<InputPrefix>,
}

/// The first `offset` bytes of an input file and their xxh3-64.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct InputPrefix {
    offset: u64,
    xxh3_64: String,
}

/// Running xxh3-64 of the input files' bytes, file after file, extended as the run reads on.
/// Streamed files are hashed up to the offset the reader reached; a Parquet file, read by
/// random access, counts as read whole once it is opened, so it is hashed whole.
pub(super) struct PrefixHasher {
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

    /// Every file, whole: the hashes advanced to the end of the last file.
    pub(super) fn whole_files(&mut self, files: &[InputFile]) -> Result<Vec<String>> {
        self.advance(files, files.len(), 0)?;
        Ok(self.done.iter().map(|p| p.xxh3_64.clone()).collect())
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
    pub(super) fn read_up_to(
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
            bail!(with_hint(
                format!(
                    "{}: changed since the unfinished run in --out began (its first {} bytes hash to {} now, {} then): continuing would splice shards of the old and the new text",
                    files[i].path.display(),
                    then.offset,
                    now.xxh3_64,
                    then.xxh3_64,
                ),
                "rerun with --force to start over from the inputs as they are now, or restore the file",
            ));
        }
    }
    Ok(hasher)
}

/// The input files as recorded in the fingerprint and the manifest: path and size.
pub(super) fn files_json(files: &[InputFile]) -> Value {
    files
        .iter()
        .map(|f| json!({"path": f.path.to_string_lossy(), "bytes": f.bytes}))
        .collect()
}

/// The identity of a run: its inputs and settings. `tokenizer_file` is the checksum of a
/// given `tokenizer.json` (a trained one follows from the settings in `config`), which
/// identifies it, wherever it lies. Inputs count by their canonical paths (`./f`, `f` and a
/// link to it are one input); the output folder does not count (a moved or copied output is
/// the same run). `--skip-bad-records` is left out: it changes no row of a run that has met no
/// bad record, so a run stopped by one continues with it.
pub(super) fn fingerprint(
    config: &PreprocessConfig,
    files: &[InputFile],
    tokenizer_file: Option<&str>,
) -> String {
    let mut identity = PreprocessConfig {
        skip_bad_records: false,
        inputs: config.inputs.iter().map(|p| canonical(p)).collect(),
        ..config.clone()
    };
    if let (TokenizerChoice::Given { name, .. }, Some(_)) =
        (&mut identity.tokenizer, tokenizer_file)
    {
        // By content (its checksum, below), not by where it was.
        name.clear();
    }
    let files: Value = files
        .iter()
        .map(|f| json!({"path": canonical(&f.path).to_string_lossy(), "bytes": f.bytes}))
        .collect();
    let text = json!({"config": identity, "files": files, "tokenizer_file": tokenizer_file, "format": h5gpt_formats::spec::FORMAT_VERSION, "identity": 2}).to_string();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// The fingerprint earlier versions recorded (paths as given, a given `tokenizer.json` by
/// its path too): outputs and progress files written with it are still this run's.
pub(super) fn legacy_fingerprint(
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

/// Key in a manifest's `setup` of the xxh3-64 of every input file, whole, in order: what a
/// rerun into a complete output compares the inputs with.
pub(super) const INPUT_CHECKSUMS: &str = "input_xxh3_64";

/// Proves that the inputs of the complete run in `dir` (its manifest `params`) are unchanged:
/// they hash as `setup.input_xxh3_64` records (manifests written before it was recorded
/// prove nothing and pass).
fn check_complete_inputs(files: &[InputFile], params: &DataParams) -> Result<()> {
    let Some(recorded) = params.setup.get(INPUT_CHECKSUMS).and_then(Value::as_array) else {
        return Ok(());
    };
    let now = PrefixHasher::new().whole_files(files)?;
    for (i, (now, then)) in now.iter().zip(recorded).enumerate() {
        if then.as_str() != Some(now.as_str()) {
            bail!(with_hint(
                format!(
                    "{}: changed since the run in --out was made (it hashes to {now} now, {} then): its shards no longer hold this input",
                    files[i].path.display(),
                    then.as_str().unwrap_or("?"),
                ),
                "rerun with --force to redo the run from the inputs as they are now, or restore the file",
            ));
        }
    }
    Ok(())
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
        || name == crate::dedup::DEDUP_JSONL
        || name == crate::dedup::DEDUP_STATE
        || name == crate::decontaminate::DECONTAMINATION_JSONL
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

/// An output directory this run writes to, locked for it, with the run's progress.
pub(super) struct OutputDir {
    /// One writer per output folder: a second `preprocess --out` into it stops at the lock.
    _lock: RunLock,
    /// The progress file.
    pub(super) progress_path: PathBuf,
    /// Where the run stands (loaded from the progress file when resuming).
    pub(super) state: Progress,
    /// Whether this run continues an interrupted one.
    pub(super) resumed: bool,
    /// The inputs' hashes, advanced to where the run stands.
    pub(super) hasher: PrefixHasher,
}

/// What [`open`] found in the output directory.
pub(super) enum Opened {
    /// It already holds the complete output of this very run: nothing to do.
    Complete,
    /// Ready to write: a fresh run, or the unfinished one to continue.
    Ready(Box<OutputDir>),
}

/// Locks `config.out` and applies the resume policy: `--force` clears our files first; a
/// progress file of this run (same `fingerprint`) is continued once the inputs it read prove
/// unchanged, one of another run is refused; a complete output of this run is
/// [`Opened::Complete`]; any other non-empty directory is refused. Then `dirs` exist without
/// stale temporaries, and the progress file says which run the directory belongs to.
pub(super) fn open(
    config: &PreprocessConfig,
    dirs: &[PathBuf],
    files: &[InputFile],
    fingerprint: &str,
    legacy: &str,
) -> Result<Opened> {
    let ours = |f: &str| f == fingerprint || f == legacy;
    let progress_path = config.out.join(PROGRESS_FILE);
    let lock = RunLock::acquire(&config.out, "preprocess", "--out")?;
    if let Some(stale) = lock.took_over() {
        config.notes.note(&format!(
            "preprocess: took over the lock left by {stale} ({})",
            lock.path().display()
        ));
    }

    if config.force {
        let split = split_paths(&config.out);
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
        if !ours(&saved.fingerprint) {
            bail!(with_hint(
                format!(
                    "{} holds an unfinished run with other inputs or settings",
                    config.out.display(),
                ),
                "use the same command to continue it, --force to start over, or another --out",
            ));
        }
        progress = Some(saved);
    } else if !config.force && dir_has_files(&config.out) {
        let manifests: Vec<DataParams> = dirs
            .iter()
            .filter_map(|d| DataParams::read_from_dir(d).ok().flatten())
            .filter(|p| {
                p.setup
                    .get("fingerprint")
                    .and_then(Value::as_str)
                    .is_some_and(ours)
            })
            .collect();
        if manifests.len() == dirs.len() {
            // One manifest tells: every output of a run records the same inputs.
            check_complete_inputs(files, &manifests[0])?;
            return Ok(Opened::Complete);
        }
        bail!(with_hint(
            format!(
                "{} is not empty and holds no run of these inputs and settings",
                config.out.display(),
            ),
            "use --force to overwrite it, or pick another --out",
        ));
    }
    let resumed = progress.is_some();
    let hasher = match &progress {
        Some(saved) => check_inputs(files, &saved.inputs)?,
        None => PrefixHasher::new(),
    };
    let state = progress.unwrap_or(Progress {
        fingerprint: fingerprint.to_owned(),
        file_index: 0,
        record_index: 0,
        token_offset: 0,
        counts: RunCounts::default(),
        outputs: vec![OutputState::default(); dirs.len()],
        bad_examples: Vec::new(),
        inputs: Vec::new(),
    });
    for dir in dirs {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        remove_files(dir, is_temporary)?;
    }
    if !resumed {
        // From here on the output directory always says which run it belongs to.
        write_atomic(&progress_path, &serde_json::to_vec(&state)?)?;
    }
    Ok(Opened::Ready(Box::new(OutputDir {
        _lock: lock,
        progress_path,
        state,
        resumed,
        hasher,
    })))
}

impl OutputDir {
    /// Gives up a run that cannot succeed (an output got no rows): removes what it wrote
    /// (shards, temporaries, the progress file) and the directories in `dirs` other than
    /// `out` that are left empty. Files that are not ours are never touched.
    pub(super) fn abandon(self, dirs: &[PathBuf], out: &Path) -> Result<()> {
        for dir in dirs {
            remove_files(dir, is_ours)?;
        }
        if self.progress_path.exists() {
            std::fs::remove_file(&self.progress_path)?;
        }
        for dir in dirs.iter().filter(|d| d.as_path() != out) {
            // Only an empty directory goes.
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    /// Ends the run once every manifest is written: the progress file goes last.
    pub(super) fn finish(self) -> Result<Progress> {
        if self.progress_path.exists() {
            std::fs::remove_file(&self.progress_path)?;
        }
        Ok(self.state)
    }
}
