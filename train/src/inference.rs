//! The front end `sample` and `eval` share: which checkpoint, on which device, in which
//! precision, and loading it.

use crate::checkpoint::{load_model, load_tokenizer, LoadedModel};
use crate::device::{select, DeviceRequest};
use crate::model::Gpt;
use crate::precision::{DtypeRequest, Precision};
use anyhow::Context;
use anyhow::Result;
use h5gpt_formats::exit::UsageError;
use h5gpt_tokenizer::tokenizer::Tokenizer;
use std::path::PathBuf;
use tch::nn;
use tch::Device;

/// `--checkpoint`, `--device` and `--dtype` (flattened into a binary's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct InferenceArgs {
    /// Run directory (`runs/NAME`: its newest complete checkpoint) or one of its
    /// `checkpoints/step-*` directories.
    #[arg(long, required_unless_present = "hf", conflicts_with = "hf")]
    pub checkpoint: Option<PathBuf>,
    /// A Hugging Face GPT-2 directory (`config.json`, `model.safetensors`; its
    /// `tokenizer.json` when it has one, else GPT-2's encoding) instead of --checkpoint
    /// (`eval --task` only).
    #[arg(long, value_name = "DIR")]
    pub hf: Option<PathBuf>,
    /// `auto`, `cpu` or `cuda`.
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
    /// `auto`, `fp32` or `bf16`.
    #[arg(long, default_value = "auto")]
    pub dtype: DtypeRequest,
}

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

impl InferenceArgs {
    /// Picks the device and precision and loads the checkpoint's model onto the device.
    pub fn load(&self) -> Result<Inference> {
        let selected = select(self.device)?;
        let device = selected.device;
        // Inference keeps the checkpoint's fp32 weights: bf16-pure runs as autocast here.
        let precision = match Precision::resolve(self.dtype, device) {
            Precision::Bf16Pure => Precision::Bf16,
            p => p,
        };
        let Some(checkpoint) = &self.checkpoint else {
            return Err(UsageError::new(
                "--hf is read by `eval --task` only: give --checkpoint RUN",
            )
            .into());
        };
        let loaded = load_model(checkpoint, device)?;
        Ok(Inference {
            loaded,
            device,
            precision,
            note: selected.note,
        })
    }
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

impl InferenceArgs {
    /// Loads --checkpoint (with its tokenizer) or --hf for scoring.
    pub fn load_for_scoring(&self) -> Result<ScoringModel> {
        let Some(dir) = &self.hf else {
            let Inference {
                loaded,
                device,
                precision,
                note,
            } = self.load()?;
            let tokenizer = load_tokenizer(&loaded.path, &loaded.state)?;
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
        let selected = select(self.device)?;
        let device = selected.device;
        let precision = match Precision::resolve(self.dtype, device) {
            Precision::Bf16Pure => Precision::Bf16,
            p => p,
        };
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
            note: selected.note,
        })
    }
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
    anyhow::bail!(
        "{}: no tokenizer.json, and a vocabulary of {vocab_size} tokens is not GPT-2's (50257)\n---> HINT: save the tokenizer beside the model (`tokenizer.save_pretrained(DIR)`)",
        dir.display()
    )
}
