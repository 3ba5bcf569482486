//! The front end `sample` and `eval` share: which checkpoint, on which device, in which
//! precision, and loading it.

use crate::checkpoint::{load_model, load_tokenizer, LoadedModel};
use crate::device::select;
use crate::model::Gpt;
use crate::precision::Precision;
use anyhow::{bail, Context, Result};
use h5gpt_formats::exit::{with_hint, UsageError};
use h5gpt_tokenizer::tokenizer::{resolve_tokenizer_arg, Tokenizer};
use std::path::PathBuf;
use tch::nn;
use tch::Device;

pub use h5gpt_core::options::inference::InferenceArgs;

/// A checkpoint's model, loaded for inference.
pub struct Inference {
    /// The model and its checkpoint.
    pub loaded: LoadedModel,
    /// Where it runs.
    pub device: Device,
    /// In which precision.
    pub precision: Precision,
    /// What to tell the user about the device choice (see [`crate::device::Selected`]).
    pub note: Option<String>,
}

/// Loading what [`InferenceArgs`] names: the model (onto the device, in the precision asked
/// for) and its tokenizer.
pub trait LoadInference {
    /// Picks the device and precision and loads the checkpoint's model onto the device.
    fn load(&self) -> Result<Inference>;
    /// The tokenizer of `loaded`'s model: `--tokenizer` when given, else the checkpoint's.
    fn tokenizer(&self, loaded: &LoadedModel) -> Result<Tokenizer>;
    /// Loads --checkpoint (with its tokenizer) or --hf for scoring.
    fn load_for_scoring(&self) -> Result<ScoringModel>;
}

impl LoadInference for InferenceArgs {
    fn load(&self) -> Result<Inference> {
        let (device, precision, note) = device_and_precision(self)?;
        let Some(checkpoint) = &self.checkpoint else {
            return Err(UsageError::new(
                "--hf is read by `eval --task` only: give --checkpoint RUN",
            )
            .into());
        };
        let loaded = load_model(checkpoint, device)?;
        if let Some(arg) = &self.tokenizer {
            // Checked before the caller does anything with the model.
            resolve_tokenizer_arg(arg, None)
                .map_err(|e| UsageError::new(format!("--tokenizer {arg}: {e}")))?;
        }
        Ok(Inference {
            loaded,
            device,
            precision,
            note,
        })
    }

    /// Refused when its ids can reach beyond the model's vocabulary (its prompt would index
    /// past the embedding): a checkpoint written from shards without our manifest section
    /// records `gpt2`, whatever vocabulary its model has.
    fn tokenizer(&self, loaded: &LoadedModel) -> Result<Tokenizer> {
        let tokenizer = match &self.tokenizer {
            Some(arg) => resolve_tokenizer_arg(arg, None)
                .map_err(|e| UsageError::new(format!("--tokenizer {arg}: {e}")))?,
            None => load_tokenizer(&loaded.path, &loaded.state)?,
        };
        let model_vocab = loaded.state.model.vocab_size;
        if tokenizer.vocab_size() as usize > model_vocab {
            let source = match &self.tokenizer {
                Some(arg) => format!("--tokenizer {arg}"),
                None => format!("the checkpoint's tokenizer `{}`", loaded.state.tokenizer),
            };
            bail!(with_hint(
                format!(
                    "{}: {source} has {} tokens, but the model's vocabulary has {model_vocab}: its ids \
                     would reach past the model's embedding",
                    loaded.path.display(),
                    tokenizer.vocab_size(),
                ),
                "pass the tokenizer the model \
                 was trained with: --tokenizer FILE.json (or a tiktoken name)",
            ));
        }
        Ok(tokenizer)
    }

    fn load_for_scoring(&self) -> Result<ScoringModel> {
        let Some(dir) = &self.hf else {
            let Inference {
                loaded,
                device,
                precision,
                note,
            } = self.load()?;
            let tokenizer = self.tokenizer(&loaded)?;
            return Ok(ScoringModel {
                vs: loaded.vs,
                model: loaded.model,
                tokenizer,
                source: loaded.path,
                step: Some(loaded.state.step),
                device,
                precision,
                note,
            });
        };
        let (device, precision, note) = device_and_precision(self)?;
        let (config, tensors) = crate::hf::load(dir)?;
        let vs = nn::VarStore::new(device);
        let model = Gpt::new(&vs.root(), config);
        crate::hf::copy_into(&vs, &tensors)?;
        let tokenizer = hf_tokenizer(dir, config.vocab_size)?;
        Ok(ScoringModel {
            vs,
            model,
            tokenizer,
            source: dir.clone(),
            step: None,
            device,
            precision,
            note,
        })
    }
}

/// The device (`--device`) and precision (`--dtype`) to run on, with what to tell the user
/// about the choice. Inference keeps the checkpoint's fp32 weights: bf16-pure runs as
/// autocast here.
fn device_and_precision(args: &InferenceArgs) -> Result<(Device, Precision, Option<String>)> {
    let selected = select(args.device, 0)?;
    let device = selected.device;
    let bf16 = crate::device::bf16_supported(crate::device::capability(device));
    let (precision, dtype_note) =
        Precision::resolve(args.dtype, device, bf16).map_err(anyhow::Error::msg)?;
    let precision = match precision {
        Precision::Bf16Pure => Precision::Bf16,
        p => p,
    };
    let note = match (selected.note, dtype_note) {
        (Some(a), Some(b)) => Some(format!("{a}\n{b}")),
        (a, b) => a.or(b),
    };
    Ok((device, precision, note))
}

/// A model to score text with (`eval --task`): a checkpoint's, or a Hugging Face directory's
/// through [`crate::hf::load`], with its tokenizer.
pub struct ScoringModel {
    /// The variables.
    pub vs: nn::VarStore,
    /// The model.
    pub model: Gpt,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// What was loaded (the checkpoint or the directory).
    pub source: PathBuf,
    /// The checkpoint's step (`None` for a Hugging Face directory).
    pub step: Option<usize>,
    /// Where it runs.
    pub device: Device,
    /// In which precision.
    pub precision: Precision,
    /// What to tell the user about the device choice.
    pub note: Option<String>,
}

/// A Hugging Face directory's tokenizer: its `tokenizer.json` (end of text: `config.json`'s
/// `eos_token_id`, else found in the file), else GPT-2's encoding for a 50257-token vocabulary.
fn hf_tokenizer(dir: &std::path::Path, vocab_size: usize) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if path.is_file() {
        let config: serde_json::Value = std::fs::read(dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let eos = config["eos_token_id"]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok());
        return Tokenizer::load("hf", Some(&path), eos)
            .with_context(|| format!("{}: cannot load the tokenizer", path.display()));
    }
    if vocab_size == 50257 {
        return Ok(Tokenizer::gpt2());
    }
    anyhow::bail!(with_hint(
        format!(
            "{}: no tokenizer.json, and a vocabulary of {vocab_size} tokens is not GPT-2's (50257)",
            dir.display(),
        ),
        "save the tokenizer beside the model (`tokenizer.save_pretrained(DIR)`)",
    ))
}
