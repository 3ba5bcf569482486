//! Checkpoints: `RUN/checkpoints/step-NNNNNNNN/` holding `model.safetensors` (Hugging Face
//! GPT-2 names, our `[out, in]` linear layout), `optimizer.safetensors`, `state.json`, and the
//! training data's `tokenizer.json` when its tokenizer is not a tiktoken one, so `sample`
//! and `export` need nothing but the checkpoint.
//!
//! A checkpoint is written to a temporary directory, every file fsynced, then renamed into
//! place; a directory without `state.json` is incomplete and never loaded.

use crate::model::Gpt;
use crate::optim::AdamW;
use anyhow::{bail, Context, Result};
use h5gpt_core::config::GptConfig;
use h5gpt_formats::checksum::file_xxh3_64;
use h5gpt_formats::exit::with_hint;
use h5gpt_formats::fsio::{begin_dir, commit_dir, fsync_file, write_atomic};
use h5gpt_tokenizer::tokenizer::{Tokenizer, TOKENIZER_FILE};
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Tensor};

pub use h5gpt_formats::run::{CHECKPOINTS, CHECKPOINT_PREFIX};

/// A checkpoint's `state.json`, with the model's shape as [`GptConfig`]. The type lives in
/// [`h5gpt_formats::run`] so that tools without libtorch (`inspect --run`) read it too.
pub type CheckpointState = h5gpt_formats::run::CheckpointState<GptConfig>;

pub use h5gpt_formats::run::STATE_VERSION;

/// The model's weights in a checkpoint.
pub const MODEL_FILE: &str = "model.safetensors";

/// The optimizer's state in a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// The training data's tokenizer, as a checkpoint keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedTokenizer {
    /// Name (`gpt2`, `cl100k_base`, `trained-wordlevel`, `synthetic`, …).
    pub name: String,
    /// Its `tokenizer.json`, for tokenizers that are not tiktoken's.
    pub json: Option<Vec<u8>>,
    /// End-of-document id.
    pub eos_id: Option<u32>,
}

impl SavedTokenizer {
    /// The tokenizer of a training set: its manifest's name and EOS, and the
    /// `tokenizer.json` beside its shards (checked against the manifest's checksum).
    pub fn of_set(set: &h5gpt_formats::ShardSet) -> Result<SavedTokenizer> {
        let Some(params) = set.data_params() else {
            return Ok(SavedTokenizer {
                name: default_tokenizer(),
                json: None,
                eos_id: None,
            });
        };
        let identity = params.tokenizer_identity();
        let json = match params
            .h5gpt
            .as_ref()
            .and_then(|s| s.tokenizer_file.as_ref())
        {
            Some(_) => {
                let dir = set.manifest_dir().unwrap_or(Path::new("."));
                let tokenizer = Tokenizer::for_shard_dir(dir, Some(params))?;
                tokenizer.json().map(<[u8]>::to_vec)
            }
            None => None,
        };
        Ok(SavedTokenizer {
            name: identity.name,
            json,
            eos_id: identity.eos_id,
        })
    }
}

impl SavedTokenizer {
    /// What identifies the tokenizer: the checksum of its `tokenizer.json` when it has one,
    /// its name otherwise (see [`h5gpt_formats::manifest::TokenizerIdentity::key`]).
    pub fn key(&self) -> String {
        let sum = self
            .json
            .as_deref()
            .map(h5gpt_formats::checksum::bytes_xxh3_64);
        h5gpt_formats::manifest::tokenizer_key(&self.name, sum.as_deref())
    }

    /// The tokenizer a checkpoint's model was trained with, as its `state.json` names it and
    /// its `tokenizer.json` (if any) holds it.
    pub fn of_checkpoint(checkpoint: &Path, state: &CheckpointState) -> SavedTokenizer {
        SavedTokenizer {
            name: state.tokenizer.clone(),
            json: std::fs::read(checkpoint.join(TOKENIZER_FILE)).ok(),
            eos_id: state.eos_id,
        }
    }
}

/// Refuses data `set` when its tokenizer is not the one the checkpoint's model was trained
/// with (its ids would mean other tokens). Tokenizers are compared by content: a
/// `tokenizer.json` by its checksum, a tiktoken encoding by its name; the names of file
/// tokenizers (`trained-bpe`, `tokenizer.json`) are labels only.
pub fn check_data_tokenizer(
    checkpoint: &Path,
    state: &CheckpointState,
    set: &h5gpt_formats::ShardSet,
) -> Result<()> {
    check_data_against(
        checkpoint,
        &SavedTokenizer::of_checkpoint(checkpoint, state),
        set,
    )
}

/// [`check_data_tokenizer`] against `saved`, the tokenizer `checkpoint`'s model was trained
/// with as its record or the user (`eval --tokenizer`) gives it.
pub fn check_data_against(
    checkpoint: &Path,
    saved: &SavedTokenizer,
    set: &h5gpt_formats::ShardSet,
) -> Result<()> {
    let data = SavedTokenizer::of_set(set)?;
    let eos_differs = matches!((data.eos_id, saved.eos_id), (Some(a), Some(b)) if a != b);
    if data.key() != saved.key() || eos_differs {
        let detail = |t: &SavedTokenizer| match &t.json {
            Some(json) => format!(
                "`{}` tokens (tokenizer.json {})",
                t.name,
                h5gpt_formats::checksum::bytes_xxh3_64(json)
            ),
            None => format!("`{}` tokens", t.name),
        };
        let redo = match &saved.json {
            Some(_) => format!("{}/{TOKENIZER_FILE}", checkpoint.display()),
            None => saved.name.clone(),
        };
        bail!(with_hint(
            format!(
                "{}: tokenized with {}, but {} was trained on {}",
                set.manifest_dir()
                    .unwrap_or(Path::new("the shards"))
                    .display(),
                detail(&data),
                checkpoint.display(),
                detail(saved),
            ),
            format!(
                "use shards preprocessed with the run's tokenizer (preprocess --tokenizer {redo})",
            ),
        ));
    }
    Ok(())
}

/// The tokenizer a checkpoint's model was trained with: a tiktoken one by name, or the
/// checkpoint's `tokenizer.json`.
pub fn load_tokenizer(checkpoint: &Path, state: &CheckpointState) -> Result<Tokenizer> {
    let file = checkpoint.join(TOKENIZER_FILE);
    let json = file.is_file().then_some(file.as_path());
    Tokenizer::load(&state.tokenizer, json, state.eos_id).with_context(|| {
        format!(
            "{}: trained on `{}` tokens, which cannot be encoded or decoded here",
            checkpoint.display(),
            state.tokenizer
        )
    })
}

fn default_tokenizer() -> String {
    "gpt2".into()
}

/// The directory name of the checkpoint after `step` steps.
pub fn checkpoint_name(step: usize) -> String {
    format!("{CHECKPOINT_PREFIX}{step:08}")
}

/// Where run directory `out` keeps the checkpoint after `step` steps.
pub fn checkpoint_path(out: &Path, step: usize) -> PathBuf {
    out.join(CHECKPOINTS).join(checkpoint_name(step))
}

pub use h5gpt_formats::run::{checkpoint_dirs, latest_checkpoint};

/// A checkpoint directory from what a user typed: a checkpoint itself, or a run directory
/// (its newest complete checkpoint).
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.exists() {
        bail!("{}: no such run or checkpoint directory", path.display());
    }
    latest_checkpoint(path).with_context(|| {
        with_hint(
            format!(
                "{}: no complete checkpoint (looked for {}/step-*/state.json)",
                path.display(),
                CHECKPOINTS,
            ),
            "pass a run directory written by `train`, or one of its checkpoints/step-* directories",
        )
    })
}

/// Reads a checkpoint's `state.json`.
pub fn read_state(checkpoint: &Path) -> Result<CheckpointState> {
    Ok(CheckpointState::read(checkpoint)?)
}

/// Checks that a safetensors file is whole: its header parses and the file is exactly as long
/// as the header's tensors need (a copy or a write cut short is not).
fn safetensors_complete(path: &Path) -> std::result::Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut size = [0u8; 8];
    file.read_exact(&mut size)
        .map_err(|_| format!("{len} bytes, too short for a header"))?;
    let header_len = u64::from_le_bytes(size);
    if header_len > len.saturating_sub(8) || header_len > 100 << 20 {
        return Err(format!(
            "the header claims {header_len} bytes, the file has {len}: cut short or corrupt"
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| format!("unreadable header: {e}"))?;
    let end = header
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(_, t)| t["data_offsets"][1].as_u64())
        .max()
        .unwrap_or(0);
    let expected = 8 + header_len + end;
    if len != expected {
        return Err(format!(
            "{len} bytes, but its header describes {expected}: cut short or corrupt"
        ));
    }
    Ok(())
}

/// Checks a complete checkpoint before a resume loads it: its `state.json` reads, every file
/// it has a checksum of still has that checksum, and its safetensors files are whole.
/// Returns its state, or why it cannot be used.
pub fn check_checkpoint(dir: &Path) -> std::result::Result<CheckpointState, String> {
    let state = read_state(dir).map_err(|e| format!("{e:#}"))?;
    for (name, expected) in &state.files {
        let found = file_xxh3_64(&dir.join(name)).map_err(|e| e.to_string())?;
        if &found != expected {
            return Err(format!(
                "{name}: checksum xxh3-64 {found}, but state.json records {expected} (corrupted since it was saved)"
            ));
        }
    }
    for name in [MODEL_FILE, OPTIMIZER_FILE] {
        safetensors_complete(&dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(state)
}

/// A checkpoint to resume from with its state (`None`: there is none), and a line for each
/// newer checkpoint skipped, saying why.
pub type Resume = (Option<(PathBuf, CheckpointState)>, Vec<String>);

/// The checkpoint a resume of run directory `out` starts from: the newest complete one that
/// passes [`check_checkpoint`], with its state, and a line for each newer one skipped (and
/// why). `Ok((None, _))`: no checkpoint at all; an error when there are some and none passes.
pub fn newest_usable_checkpoint(out: &Path) -> Result<Resume> {
    let mut skipped = Vec::new();
    let complete = checkpoint_dirs(out)
        .into_iter()
        .rev()
        .filter(|p| p.join("state.json").is_file());
    for dir in complete {
        match check_checkpoint(&dir) {
            Ok(state) => return Ok((Some((dir, state)), skipped)),
            Err(why) => skipped.push(format!("skipped checkpoint {}: {why}", dir.display())),
        }
    }
    if !skipped.is_empty() {
        bail!(with_hint(
            format!(
                "{}: no checkpoint loads and verifies:\n  {}",
                out.display(),
                skipped.join("\n  "),
            ),
            format!(
                "restore a checkpoint from a copy, or move {} away to start the run over",
                out.join(CHECKPOINTS).display(),
            ),
        ));
    }
    Ok((None, skipped))
}

/// Writes a checkpoint (model — the optimizer's fp32 masters where it keeps them —, optimizer,
/// state, and `tokenizer_json` when given)
/// crash-safely, then keeps the newest `keep`. `save_index` counts this run's saves (for the
/// fault-injection hook).
pub fn save(
    out: &Path,
    vs: &nn::VarStore,
    opt: &AdamW,
    state: &CheckpointState,
    tokenizer_json: Option<&[u8]>,
    save_index: usize,
    keep: usize,
) -> Result<PathBuf> {
    let dir = out.join(CHECKPOINTS);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let target = dir.join(checkpoint_name(state.step));
    let tmp = begin_dir(&target)?;
    // A failed write (a full disk, a read-only folder) names the checkpoint and leaves nothing
    // under its name: the staging folder goes too, so the space is free for the rerun.
    let written = write_files(&tmp, vs, opt, state, tokenizer_json, save_index)
        .and_then(|()| Ok(commit_dir(&tmp, &target)?));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("cannot write checkpoint {}", target.display())));
    }
    let mut all = checkpoint_dirs(out);
    while all.len() > keep.max(1) {
        std::fs::remove_dir_all(all.remove(0))?;
    }
    Ok(target)
}

/// The files of a checkpoint, written into its staging folder `tmp`.
fn write_files(
    tmp: &Path,
    vs: &nn::VarStore,
    opt: &AdamW,
    state: &CheckpointState,
    tokenizer_json: Option<&[u8]>,
    save_index: usize,
) -> Result<()> {
    let model = tmp.join(MODEL_FILE);
    let written = || format!("cannot write {}", model.display());
    // bf16-pure: the fp32 masters, so that resume and export stay exact.
    match opt.master_weights() {
        Some(masters) => Tensor::write_safetensors(&masters, &model).with_context(written)?,
        None => vs.save(&model).with_context(written)?,
    }
    fsync_file(&model)?;
    if h5gpt_formats::fault::armed("abort-during-save") == Some(save_index) {
        eprintln!(
            "H5GPT_FAULT: aborting in the middle of checkpoint save {save_index} (testing aid)"
        );
        std::process::abort();
    }
    let optimizer = tmp.join(OPTIMIZER_FILE);
    Tensor::write_safetensors(&opt.state(), &optimizer)
        .with_context(|| format!("cannot write {}", optimizer.display()))?;
    fsync_file(&optimizer)?;
    if let Some(json) = tokenizer_json {
        write_atomic(&tmp.join(TOKENIZER_FILE), json)?;
    }
    // Checksums of what was written, so a resume can tell a checkpoint corrupted since.
    let mut state = state.clone();
    state.version = STATE_VERSION;
    for name in [MODEL_FILE, OPTIMIZER_FILE, TOKENIZER_FILE] {
        let path = tmp.join(name);
        if path.is_file() {
            state.files.insert(name.into(), file_xxh3_64(&path)?);
        }
    }
    write_atomic(&tmp.join("state.json"), &serde_json::to_vec_pretty(&state)?)?;
    Ok(())
}

/// Restores a training run from checkpoint `dir` (whose state is `state`): the model's weights
/// into `vs` and the optimizer's moments into `opt`. `model` is the run's model, which must be
/// the checkpoint's; `config_toml` is the run's options file, named in the hint.
pub fn restore(
    dir: &Path,
    state: &CheckpointState,
    model: &GptConfig,
    vs: &mut nn::VarStore,
    opt: &mut AdamW,
    config_toml: &Path,
) -> Result<()> {
    if state.model != *model {
        bail!(with_hint(
            format!(
                "{}: checkpoint of another model ({:?}); this run has {:?}",
                dir.display(),
                state.model,
                model,
            ),
            format!(
                "use the same model flags (the run's config.toml has them: --config {}), or another --out",
                config_toml.display(),
            ),
        ));
    }
    vs.load(dir.join(MODEL_FILE))
        .with_context(|| format!("{}: cannot load {MODEL_FILE}", dir.display()))?;
    let saved = Tensor::read_safetensors(dir.join(OPTIMIZER_FILE))
        .with_context(|| format!("{}: cannot load {OPTIMIZER_FILE}", dir.display()))?;
    opt.load_state(&saved)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    Ok(())
}

/// A model loaded from a checkpoint for inference (sampling, evaluation, export).
pub struct LoadedModel {
    /// The variables (Hugging Face GPT-2 names).
    pub vs: nn::VarStore,
    /// The model.
    pub model: Gpt,
    /// The checkpoint's state.
    pub state: CheckpointState,
    /// The checkpoint directory.
    pub path: PathBuf,
}

/// Loads the model of a checkpoint or run directory onto `device`.
pub fn load_model(path: &Path, device: Device) -> Result<LoadedModel> {
    let path = resolve_checkpoint(path)?;
    let state = read_state(&path)?;
    let mut vs = nn::VarStore::new(device);
    let model = Gpt::new(&vs.root(), state.model);
    vs.load(path.join("model.safetensors"))
        .with_context(|| format!("{}: cannot load model.safetensors", path.display()))?;
    Ok(LoadedModel {
        vs,
        model,
        state,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `state.json` as checkpoints were written before `version` and `files` existed.
    #[test]
    fn a_state_written_before_versions_loads() {
        let state: CheckpointState =
            serde_json::from_str(include_str!("../tests/fixtures/state-v0.json")).unwrap();
        assert_eq!(state.version, 0);
        assert!(state.files.is_empty());
        assert_eq!(state.step, 2);
        assert_eq!(state.model.n_embd, 64);
    }

    /// A version-1 `state.json` (checksums, no data fingerprint or final validation) loads.
    #[test]
    fn a_state_written_before_the_final_validation_loads() {
        let state: CheckpointState =
            serde_json::from_str(include_str!("../tests/fixtures/state-v1.json")).unwrap();
        assert_eq!(state.version, 1);
        assert_eq!(state.files.len(), 2);
        assert!(state.data.is_none() && state.final_eval.is_none());
        // Written back, the new fields stay absent.
        let text = serde_json::to_string(&state).unwrap();
        assert!(
            !text.contains("final_eval") && !text.contains("\"data\""),
            "{text}"
        );
    }
}
