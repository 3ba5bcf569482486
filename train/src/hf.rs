//! Hugging Face GPT-2 interchange: [`export`] a model as a directory that
//! `transformers.GPT2LMHeadModel.from_pretrained(DIR)` loads, and [`load`] such a directory
//! back into our layout (then [`copy_into`] a model built with the returned config).
//!
//! An HF GPT-2 directory holds `config.json` (a `GPT2Config`) and `model.safetensors`. Which
//! tensors there are, their HF names (ours: `transformer.wte.weight`,
//! `transformer.h.{i}.attn.c_attn.weight`, …) and layouts come from the model's parameter list
//! ([`param_specs`]); what differs is the layout ([`HfLayout`]):
//!
//! - HF's `Conv1D` stores the weights of `c_attn`, `c_proj` and `c_fc` as `[in, out]`; our
//!   linear layers hold `[out, in]`, so those weights are transposed both ways;
//! - HF's token embedding has exactly `vocab_size` rows; ours may be padded to a multiple of
//!   64 (`pad_vocab`): export drops the padding rows, load appends zero rows (their logits
//!   start at 0, which training pushes down like any unused token's);
//! - the LM head is tied to `wte` on both sides: no `lm_head.weight` is written, and one that
//!   is read must equal `wte` unless `tie_word_embeddings` ties them anyway.
//!
//! HF GPT-2 always has biases, LayerNorm ε = 1e-5 and the tanh GELU; a model or config that
//! differs is refused with a message saying what, rather than exported or loaded subtly wrong.

use h5gpt_core::config::{GptConfig, DEFAULT_LAYER_NORM_EPS};
use h5gpt_core::params::{param_specs, HfLayout};
use h5gpt_formats::exit::with_hint;
use h5gpt_formats::fsio::{begin_dir, commit_dir, fsync_file, write_atomic};
use h5gpt_formats::spec::{GPT2_EOS_ID, GPT2_VOCAB_SIZE};
use h5gpt_formats::FormatError;
use h5gpt_tokenizer::tokenizer::Tokenizer;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, TchError, Tensor};

/// The weights file of an HF model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The config file of an HF model directory.
pub const CONFIG_FILE: &str = "config.json";

/// The marker every export writes beside its files: JSON naming the tool and the files the
/// export wrote (`{"written_by": "h5gpt export", "version": 1, "files": [...]}`). An existing
/// directory is replaced whole only when it holds this marker and no file it does not list.
pub const MARKER_FILE: &str = "h5gpt-export.json";

/// Every file an export writes besides its marker. A directory from before the marker
/// ([`MARKER_FILE`]) with `config.json`, `model.safetensors` and nothing outside this set is
/// still taken for an earlier export.
const LEGACY_EXPORT_FILES: [&str; 7] = [
    CONFIG_FILE,
    WEIGHTS_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
];

/// Activations HF GPT-2 may name for our GELU (the tanh approximation).
const TANH_GELU: [&str; 2] = ["gelu_new", "gelu_pytorch_tanh"];

/// What can go wrong exporting or loading a Hugging Face GPT-2 model. Messages name the file
/// (or tensor) and what is wrong, with a hint where there is something to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HfError {
    /// An I/O error on a file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A crash-safe write (fsync, rename) failed.
    #[error(transparent)]
    Fs(#[from] FormatError),
    /// libtorch could not read, write or convert tensors.
    #[error("{path}: {source}")]
    Tensors {
        /// The safetensors file (or the model, for copies).
        path: PathBuf,
        /// The underlying error.
        source: TchError,
    },
    /// `config.json` is not JSON, or a field has the wrong type.
    #[error("{path}: {what}\n---> HINT: expected a GPT2Config as `save_pretrained` writes it")]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The model (or config) uses something our GPT-2 or HF's cannot express.
    #[error("{path}: {what}")]
    Unsupported {
        /// The export directory, or the config file read.
        path: PathBuf,
        /// What cannot be expressed, and why.
        what: String,
    },
    /// The Hugging Face tokenizer files could not be written into the export.
    #[error("{path}: cannot write the tokenizer files: {source}")]
    TokenizerFiles {
        /// The export directory.
        path: PathBuf,
        /// What went wrong.
        source: h5gpt_tokenizer::hf_files::HfFilesError,
    },
    /// The export target exists, is not empty and is not an earlier export (no
    /// [`MARKER_FILE`], or files an export did not write).
    #[error("{path}: exists, is not empty and is not an earlier export ({why}): not replacing it\n---> HINT: pass a new directory, an empty one, or an earlier export; `--force` writes the export's files into it and leaves every other file alone")]
    TargetNotAnExport {
        /// The target directory.
        path: PathBuf,
        /// Why it is not taken for an export (the first foreign file, or no marker).
        why: String,
    },
    /// A tensor the model needs is missing.
    #[error("{within}: tensor {name} is missing")]
    MissingTensor {
        /// Where it was looked for (a file, or the variables of a model).
        within: String,
        /// The tensor.
        name: String,
    },
    /// A tensor nothing in the model takes.
    #[error("{within}: unexpected tensor {name} (not a GPT-2 parameter of this shape)")]
    UnexpectedTensor {
        /// Where it was found.
        within: String,
        /// The tensor.
        name: String,
    },
    /// A tensor has another shape than the model needs.
    #[error("{within}: tensor {name} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Where it was found.
        within: String,
        /// The tensor.
        name: String,
        /// The shape the model needs.
        expected: Vec<i64>,
        /// The shape it has.
        found: Vec<i64>,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> HfError + '_ {
    move |source| HfError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn tch_error(path: &Path) -> impl FnOnce(TchError) -> HfError + '_ {
    move |source| HfError::Tensors {
        path: path.to_path_buf(),
        source,
    }
}

/// A spec's shape as libtorch takes it.
fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&n| n as i64).collect()
}

/// The `config.json` of an export: a `GPT2Config` with our shape.
///
/// `bos_token_id`/`eos_token_id` are the tokenizer's end-of-text id when it is known (`eos`),
/// else GPT-2's (50256) when the vocabulary is GPT-2's; any other vocabulary (test and
/// synthetic data) has no known end-of-text token, so they are `null` rather than an id that
/// may be out of range or mean something else.
fn config_json(config: &GptConfig, eos: Option<usize>) -> Value {
    let eos =
        eos.or((config.vocab_size == GPT2_VOCAB_SIZE as usize).then_some(GPT2_EOS_ID as usize));
    json!({
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.n_ctx,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.ffn_size,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": config.layer_norm_eps,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "tie_word_embeddings": true,
        "use_cache": true,
        "torch_dtype": "float32",
    })
}

/// Exports the model `config` built in `vs` as a Hugging Face GPT-2 directory `dir`:
/// `model.safetensors` (HF names and layout, contiguous f32, the vocabulary padding dropped)
/// and `config.json` (a `GPT2Config` for `GPT2LMHeadModel`).
///
/// The directory is written crash-safely: into a temporary sibling `.NAME.tmp`, every file
/// fsynced, then renamed into place. An existing `dir` is replaced only when it is empty or an
/// earlier export (see [`Replace`]); any other non-empty directory is refused. A model HF
/// GPT-2 cannot express (no biases, μP) is refused.
pub fn export(vs: &nn::VarStore, config: &GptConfig, dir: &Path) -> Result<(), HfError> {
    export_with_tokenizer(vs, config, dir, None, Replace::ExportsOnly)
}

/// What an export may do to an existing target directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Replace it whole only when it is empty or an earlier export: it holds [`MARKER_FILE`]
    /// and only files that marker lists (or, from before the marker, only export files with
    /// `config.json` and `model.safetensors`). Anything else is refused
    /// ([`HfError::TargetNotAnExport`]).
    ExportsOnly,
    /// `--force`: write the export's files into any directory, each replacing a file of the
    /// same name; remove files an earlier export listed in its marker and this one does not
    /// write; never touch any other file.
    Force,
}

/// [`export`], plus the tokenizer files `transformers` loads with
/// `AutoTokenizer.from_pretrained(dir)` (see
/// [`write_hf_tokenizer_files`](h5gpt_tokenizer::hf_files::write_hf_tokenizer_files)), written
/// into the same temporary directory before it is renamed into place; its end-of-document id
/// becomes `config.json`'s `bos_token_id`/`eos_token_id`.
pub fn export_with_tokenizer(
    vs: &nn::VarStore,
    config: &GptConfig,
    dir: &Path,
    tokenizer: Option<&Tokenizer>,
    replace: Replace,
) -> Result<(), HfError> {
    config.validate().map_err(|what| HfError::Unsupported {
        path: dir.to_path_buf(),
        what: format!("invalid model shape: {what}"),
    })?;
    if !config.bias {
        return Err(HfError::Unsupported {
            path: dir.to_path_buf(),
            what: with_hint(
                "the model has no biases (bias = false), but Hugging Face GPT-2 always has \
                 them (linear layers and LayerNorms)",
                "only models trained with biases can be exported as GPT-2",
            ),
        });
    }
    if let Some(mup) = &config.mup {
        return Err(HfError::Unsupported {
            path: dir.to_path_buf(),
            what: format!(
                "the model is in μP (base width {}): its embedding multiplier ({}), logit \
                 multiplier (1/m = {}) and 1/d_head attention scale have no place in Hugging \
                 Face GPT-2, which would compute other logits from the same weights\n---> \
                 HINT: only models trained without --mup can be exported as GPT-2",
                mup.base_width,
                mup.embed_mult,
                1.0 / config.width_mult()
            ),
        });
    }
    let tensors = export_tensors(vs, config)?;

    if dir.file_name().is_none() {
        return Err(HfError::Unsupported {
            path: dir.to_path_buf(),
            what: "the export directory needs a name (not `.`, `..` or `/`)".into(),
        });
    }
    let merge_into = if dir.exists() {
        match (existing_export(dir)?, replace) {
            (Ok(()), _) => false,
            (Err(_), Replace::Force) => true,
            (Err(why), Replace::ExportsOnly) => {
                return Err(HfError::TargetNotAnExport {
                    path: dir.to_path_buf(),
                    why,
                })
            }
        }
    } else {
        false
    };
    let parent = dir.parent().unwrap_or(Path::new(""));
    if !parent.as_os_str().is_empty() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }

    let tmp = begin_dir(dir)?;
    let weights = tmp.join(WEIGHTS_FILE);
    Tensor::write_safetensors(&tensors, &weights).map_err(tch_error(&weights))?;
    fsync_file(&weights)?;
    let eos = tokenizer.map(|t| t.eos_id() as usize);
    let json =
        serde_json::to_vec_pretty(&config_json(config, eos)).expect("a JSON value serializes");
    write_atomic(&tmp.join(CONFIG_FILE), &json)?;
    let mut files = vec![CONFIG_FILE.to_string(), WEIGHTS_FILE.to_string()];
    if let Some(t) = tokenizer {
        files.extend(
            h5gpt_tokenizer::hf_files::write_hf_tokenizer_files(
                t.name(),
                t.json(),
                t.eos_id(),
                &tmp,
            )
            .map_err(|source| HfError::TokenizerFiles {
                path: dir.to_path_buf(),
                source,
            })?,
        );
    }
    files.sort();
    let marker = json!({"written_by": "h5gpt export", "version": 1, "files": files});
    write_atomic(
        &tmp.join(MARKER_FILE),
        &serde_json::to_vec_pretty(&marker).expect("a JSON value serializes"),
    )?;
    if merge_into {
        merge_export(&tmp, dir, &files)?;
    } else {
        // An earlier export is moved aside first: a crash in between leaves both complete
        // copies (`.NAME.old`, `.NAME.tmp`), never a half-written `dir`.
        commit_dir(&tmp, dir)?;
    }
    Ok(())
}

/// The files an earlier export's marker in `dir` lists (None without a readable marker, or
/// when it lists a name no export writes: such a marker was not written by us).
fn marked_files(dir: &Path) -> Option<Vec<String>> {
    let bytes = std::fs::read(dir.join(MARKER_FILE)).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    if value.get("written_by")?.as_str()? != "h5gpt export" {
        return None;
    }
    let files: Vec<String> = value
        .get("files")?
        .as_array()?
        .iter()
        .map(|f| f.as_str().map(str::to_string))
        .collect::<Option<_>>()?;
    files
        .iter()
        .all(|f| LEGACY_EXPORT_FILES.contains(&f.as_str()))
        .then_some(files)
}

/// Whether the existing target `dir` may be replaced whole: `Ok(Ok(()))` when it is empty or
/// an earlier export, `Ok(Err(why))` when it is not (why: the first file no export wrote, or
/// the missing marker). Only a directory that is not one is an error.
fn existing_export(dir: &Path) -> Result<Result<(), String>, HfError> {
    if !dir.is_dir() {
        return Err(HfError::Unsupported {
            path: dir.to_path_buf(),
            what: "exists and is not a directory".into(),
        });
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let is_file = entry.file_type().map_err(io_error(dir))?.is_file();
        names.push((entry.file_name().to_string_lossy().into_owned(), is_file));
    }
    names.sort();
    if names.is_empty() {
        return Ok(Ok(()));
    }
    let (ours, from): (Vec<String>, &str) = match marked_files(dir) {
        Some(files) => (files, MARKER_FILE),
        None => {
            let legacy = [CONFIG_FILE, WEIGHTS_FILE]
                .iter()
                .all(|f| names.iter().any(|(n, file)| n == f && *file));
            if !legacy {
                return Ok(Err(format!(
                    "no {MARKER_FILE}, and not the files an earlier export writes"
                )));
            }
            (
                LEGACY_EXPORT_FILES.iter().map(|f| f.to_string()).collect(),
                "the files an export writes",
            )
        }
    };
    for (name, is_file) in &names {
        let known = name == MARKER_FILE || ours.iter().any(|f| f == name);
        if !known || !is_file {
            return Ok(Err(format!("{name} is not among {from}")));
        }
    }
    Ok(Ok(()))
}

/// `--force` into a directory that holds other files: moves each finished file of the export
/// in `staged` into `dir` (each rename atomic, replacing a file of that name), removes files an
/// earlier export's marker lists that this export does not write, and leaves every other file
/// of `dir` alone. The marker is moved last, so it never lists a file not yet in place.
fn merge_export(staged: &Path, dir: &Path, files: &[String]) -> Result<(), HfError> {
    let stale: Vec<String> = marked_files(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|f| !files.contains(f))
        .collect();
    for name in files.iter().map(String::as_str).chain([MARKER_FILE]) {
        let target = dir.join(name);
        std::fs::rename(staged.join(name), &target).map_err(io_error(&target))?;
    }
    for name in stale {
        let path = dir.join(&name);
        if path.is_file() {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    h5gpt_formats::fsio::fsync_dir(dir)?;
    std::fs::remove_dir(staged).map_err(io_error(staged))?;
    Ok(())
}

/// The model's variables in HF's names and layout: contiguous f32 on the CPU.
fn export_tensors(vs: &nn::VarStore, config: &GptConfig) -> Result<Vec<(String, Tensor)>, HfError> {
    let _guard = tch::no_grad_guard();
    let within = "the model's variables".to_string();
    let mut variables = vs.variables();
    let mut out = Vec::new();
    for p in param_specs(config) {
        let var = variables
            .remove(&p.name)
            .ok_or_else(|| HfError::MissingTensor {
                within: within.clone(),
                name: p.name.clone(),
            })?;
        if var.size() != dims(&p.shape) {
            return Err(HfError::ShapeMismatch {
                within,
                name: p.name,
                expected: dims(&p.shape),
                found: var.size(),
            });
        }
        let t = var.detach().to_device(Device::Cpu).to_kind(Kind::Float);
        let t = match p.hf_layout {
            HfLayout::Same => t,
            HfLayout::Conv1d => t.tr(),
            HfLayout::TokenEmbedding => t.narrow(0, 0, config.vocab_size as i64),
        };
        out.push((p.hf_name, t.contiguous()));
    }
    if let Some(name) = variables.into_keys().min() {
        return Err(HfError::UnexpectedTensor { within, name });
    }
    Ok(out)
}

/// Reads field `key` of a config object, `None` when absent or null.
fn field<'a>(cfg: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    cfg.get(key).filter(|v| !v.is_null())
}

/// Typed access to `config.json`, with GPT2Config's defaults for absent fields (what
/// transformers itself would use).
struct ConfigReader<'a> {
    path: &'a Path,
    cfg: &'a Map<String, Value>,
}

impl ConfigReader<'_> {
    fn bad(&self, what: String) -> HfError {
        HfError::BadConfig {
            path: self.path.to_path_buf(),
            what,
        }
    }

    fn usize(&self, key: &str, default: usize) -> Result<usize, HfError> {
        match field(self.cfg, key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| self.bad(format!("{key} = {v}: expected a non-negative integer"))),
        }
    }

    fn f64(&self, key: &str, default: f64) -> Result<f64, HfError> {
        match field(self.cfg, key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.bad(format!("{key} = {v}: expected a number"))),
        }
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool, HfError> {
        match field(self.cfg, key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.bad(format!("{key} = {v}: expected true or false"))),
        }
    }

    fn str(&self, key: &str, default: &'static str) -> Result<String, HfError> {
        match field(self.cfg, key) {
            None => Ok(default.to_string()),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.bad(format!("{key} = {v}: expected a string"))),
        }
    }

    fn unsupported(&self, what: String) -> HfError {
        HfError::Unsupported {
            path: self.path.to_path_buf(),
            what: with_hint(
                what,
                "only GPT-2 as OpenAI trained it (tanh GELU, 4× MLP, LayerNorm ε 1e-5, tied head) maps onto this model",
            ),
        }
    }
}

/// Reads `config.json` into our model shape, refusing what our GPT-2 cannot express.
/// The second value is `tie_word_embeddings`.
fn read_config(path: &Path) -> Result<(GptConfig, bool), HfError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| HfError::BadConfig {
        path: path.to_path_buf(),
        what: format!("not JSON: {e}"),
    })?;
    let Some(cfg) = value.as_object() else {
        return Err(HfError::BadConfig {
            path: path.to_path_buf(),
            what: "not a JSON object".into(),
        });
    };
    let r = ConfigReader { path, cfg };
    match field(cfg, "model_type").and_then(Value::as_str) {
        Some("gpt2") => {}
        Some(other) => {
            return Err(r.unsupported(format!("model_type {other:?}: expected \"gpt2\"")))
        }
        None => return Err(r.bad("no model_type: expected \"gpt2\"".into())),
    }
    // GPT2Config's defaults.
    let n_embd = r.usize("n_embd", 768)?;
    let config = GptConfig {
        vocab_size: r.usize("vocab_size", GPT2_VOCAB_SIZE as usize)?,
        pad_vocab: true,
        n_ctx: r.usize("n_positions", 1024)?,
        n_layer: r.usize("n_layer", 12)?,
        n_head: r.usize("n_head", 12)?,
        n_embd,
        bias: true,
        dropout: r.f64("resid_pdrop", 0.1)?,
        mup: None,
        ffn_size: None,
        layer_norm_eps: DEFAULT_LAYER_NORM_EPS,
        init: None,
    };
    config
        .validate()
        .map_err(|what| r.bad(format!("invalid model shape: {what}")))?;
    let activation = r.str("activation_function", "gelu_new")?;
    if !TANH_GELU.contains(&activation.as_str()) {
        return Err(r.unsupported(format!(
            "activation_function {activation:?}: this model uses the tanh GELU ({})",
            TANH_GELU.join(" or ")
        )));
    }
    // `n_inner` null: 4 × n_embd.
    let n_inner = r.usize("n_inner", 4 * n_embd)?;
    let eps = r.f64("layer_norm_epsilon", DEFAULT_LAYER_NORM_EPS)?;
    let config = GptConfig {
        ffn_size: (n_inner != 4 * n_embd).then_some(n_inner),
        layer_norm_eps: eps,
        ..config
    };
    config
        .validate()
        .map_err(|what| r.bad(format!("invalid model shape: {what}")))?;
    if !r.bool("scale_attn_weights", true)? {
        return Err(r.unsupported(
            "scale_attn_weights false: this model scales attention by 1/√head_size".into(),
        ));
    }
    if r.bool("scale_attn_by_inverse_layer_idx", false)? {
        return Err(r.unsupported(
            "scale_attn_by_inverse_layer_idx true: this model scales every layer alike".into(),
        ));
    }
    if r.bool("add_cross_attention", false)? {
        return Err(r.unsupported("add_cross_attention true: this model is decoder-only".into()));
    }
    Ok((config, r.bool("tie_word_embeddings", true)?))
}

/// The name of an HF tensor as the parameter list spells HF names: `transformer.` prefixed
/// (the original `gpt2` hub checkpoint omits it); `None` for what the model does not hold
/// (`lm_head.weight`, which is handled separately, and the causal-mask buffers
/// `attn.bias`/`attn.masked_bias`).
fn canonical_hf_name(hf: &str) -> Option<String> {
    if hf == "lm_head.weight" {
        return None;
    }
    let name = if hf.starts_with("transformer.") {
        hf.to_string()
    } else {
        format!("transformer.{hf}")
    };
    let buffer = name.rsplit('.').take(2).collect::<Vec<_>>();
    if matches!(buffer.as_slice(), ["bias" | "masked_bias", "attn"]) {
        return None;
    }
    Some(name)
}

/// The model shape of a Hugging Face GPT-2 directory, from its `config.json` alone (checked
/// as [`load`] checks it).
pub fn read_model_config(dir: &Path) -> Result<GptConfig, HfError> {
    Ok(read_config(&dir.join(CONFIG_FILE))?.0)
}

/// Reads a Hugging Face GPT-2 directory (`config.json` and `model.safetensors`) into our
/// model shape and layout.
///
/// Tensor names with or without the `transformer.` prefix are accepted; the causal-mask
/// buffers (`attn.bias`, `attn.masked_bias`) are skipped, and `lm_head.weight` too when it is
/// tied (`tie_word_embeddings`, the default) or equal to `wte`. The config must be GPT-2 as
/// our model computes it: `model_type` "gpt2", activation `gelu_new` or `gelu_pytorch_tanh`,
/// `n_inner` null or 4·`n_embd`, `layer_norm_epsilon` 1e-5, plain attention scaling;
/// anything else is refused with a message naming the field.
///
/// The config returned has `pad_vocab` and `bias` set and `dropout` from `resid_pdrop`.
/// The tensors are f32 on the CPU in our layout: linear weights `[out, in]`, and `wte`
/// padded to `embedding_rows()` with zero rows (their logits start at 0; any value would do,
/// since no token id reaches them). Build a model with the config and [`copy_into`] it.
pub fn load(dir: &Path) -> Result<(GptConfig, Vec<(String, Tensor)>), HfError> {
    let (config, tied) = read_config(&dir.join(CONFIG_FILE))?;
    let path = dir.join(WEIGHTS_FILE);
    if !path.is_file() {
        return Err(HfError::Io {
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                with_hint(
                    "not found",
                    "only single-file safetensors weights are read; re-save with \
                     `model.save_pretrained(DIR, safe_serialization=True, max_shard_size=\"100GB\")`",
                ),
            ),
        });
    }
    let within = path.display().to_string();
    let _guard = tch::no_grad_guard();
    let mut found: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut lm_head = None;
    for (hf, tensor) in Tensor::read_safetensors(&path).map_err(tch_error(&path))? {
        let tensor = tensor.to_kind(Kind::Float);
        match canonical_hf_name(&hf) {
            Some(name) if found.contains_key(&name) => {
                return Err(HfError::UnexpectedTensor {
                    within,
                    name: format!("{hf} (a second copy of {name})"),
                });
            }
            Some(name) => {
                found.insert(name, tensor);
            }
            None if hf == "lm_head.weight" => lm_head = Some(tensor),
            None => {}
        }
    }
    let mut out = Vec::new();
    let mut wte = None;
    for p in param_specs(&config) {
        let t = found
            .remove(&p.hf_name)
            .ok_or_else(|| HfError::MissingTensor {
                within: within.clone(),
                name: p.hf_name.clone(),
            })?;
        let expected = dims(&p.hf_shape(&config));
        if t.size() != expected {
            return Err(HfError::ShapeMismatch {
                within,
                name: p.hf_name,
                expected,
                found: t.size(),
            });
        }
        let t = match p.hf_layout {
            HfLayout::Same => t,
            HfLayout::Conv1d => t.tr(),
            HfLayout::TokenEmbedding => {
                wte = Some(t.shallow_clone());
                let pad = config.embedding_rows() - config.vocab_size;
                let zeros =
                    Tensor::zeros([pad as i64, p.shape[1] as i64], (Kind::Float, Device::Cpu));
                Tensor::cat(&[t, zeros], 0)
            }
        };
        out.push((p.name, t.contiguous()));
    }
    if let Some(name) = found.into_keys().next() {
        return Err(HfError::UnexpectedTensor { within, name });
    }
    if let (Some(head), false) = (lm_head, tied) {
        let wte = wte.expect("the parameter list has the token embedding");
        if head.size() != wte.size() || !head.equal(&wte) {
            return Err(HfError::Unsupported {
                path,
                what: "lm_head.weight differs from transformer.wte.weight and \
                       tie_word_embeddings is false: this model's LM head is tied to the \
                       token embedding"
                    .into(),
            });
        }
    }
    Ok((config, out))
}

/// Copies `tensors` (our names and layout, as [`load`] returns them) into the variables of
/// `vs`, without recording gradients. Every variable must be given, with its shape, and
/// nothing else; the first missing, mismatched or unexpected tensor is named.
pub fn copy_into(vs: &nn::VarStore, tensors: &[(String, Tensor)]) -> Result<(), HfError> {
    let within = "tensors copied into the model".to_string();
    let given: HashMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let variables: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    for (name, var) in &variables {
        let t = given
            .get(name.as_str())
            .ok_or_else(|| HfError::MissingTensor {
                within: within.clone(),
                name: name.clone(),
            })?;
        if t.size() != var.size() {
            return Err(HfError::ShapeMismatch {
                within,
                name: name.clone(),
                expected: var.size(),
                found: t.size(),
            });
        }
    }
    if let Some(name) = given.keys().filter(|n| !variables.contains_key(**n)).min() {
        return Err(HfError::UnexpectedTensor {
            within,
            name: name.to_string(),
        });
    }
    tch::no_grad(|| {
        for (name, var) in &variables {
            let mut var = var.shallow_clone();
            var.f_copy_(given[name.as_str()])
                .map_err(tch_error(Path::new(name)))?;
        }
        Ok(())
    })
}
