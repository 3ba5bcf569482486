//! The front end `sample` and `eval` share: which checkpoint, on which device, in which
//! precision, and loading it.

use crate::checkpoint::{load_model, load_tokenizer, LoadedModel};
use crate::device::{select, DeviceRequest};
use crate::precision::{DtypeRequest, Precision};
use anyhow::{bail, Result};
use h5gpt_formats::exit::UsageError;
use h5gpt_tokenizer::tokenizer::{resolve_tokenizer_arg, Tokenizer};
use std::path::PathBuf;
use tch::Device;

/// `--checkpoint`, `--device` and `--dtype` (flattened into a binary's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct InferenceArgs {
    /// Run directory (`runs/NAME`: its newest complete checkpoint) or one of its
    /// `checkpoints/step-*` directories.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// `auto`, `cpu` or `cuda`.
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
    /// `auto`, `fp32` or `bf16`.
    #[arg(long, default_value = "auto")]
    pub dtype: DtypeRequest,
    /// The tokenizer the model was trained with, when the checkpoint's record of it is missing
    /// or wrong: a tiktoken name (gpt2, cl100k_base, o200k_base) or a tokenizer.json file.
    /// [default: the checkpoint's]
    #[arg(long, value_name = "FILE|NAME")]
    pub tokenizer: Option<String>,
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
        let selected = select(self.device, 0)?;
        let device = selected.device;
        let bf16 = crate::device::bf16_supported(crate::device::capability(device));
        let (precision, dtype_note) =
            Precision::resolve(self.dtype, device, bf16).map_err(anyhow::Error::msg)?;
        // Inference keeps the checkpoint's fp32 weights: bf16-pure runs as autocast here.
        let precision = match precision {
            Precision::Bf16Pure => Precision::Bf16,
            p => p,
        };
        let loaded = load_model(&self.checkpoint, device)?;
        if let Some(arg) = &self.tokenizer {
            // Checked before the caller does anything with the model.
            resolve_tokenizer_arg(arg, None)
                .map_err(|e| UsageError::new(format!("--tokenizer {arg}: {e}")))?;
        }
        Ok(Inference {
            loaded,
            device,
            precision,
            note: match (selected.note, dtype_note) {
                (Some(a), Some(b)) => Some(format!("{a}\n{b}")),
                (a, b) => a.or(b),
            },
        })
    }
}

impl InferenceArgs {
    /// The tokenizer of `loaded`'s model: `--tokenizer` when given, else the checkpoint's.
    /// Refused when its ids can reach beyond the model's vocabulary (its prompt would index
    /// past the embedding): a checkpoint written from shards without our manifest section
    /// records `gpt2`, whatever vocabulary its model has.
    pub fn tokenizer(&self, loaded: &LoadedModel) -> Result<Tokenizer> {
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
            bail!(
                "{}: {source} has {} tokens, but the model's vocabulary has {model_vocab}: its ids \
                 would reach past the model's embedding\n---> HINT: pass the tokenizer the model \
                 was trained with: --tokenizer FILE.json (or a tiktoken name)",
                loaded.path.display(),
                tokenizer.vocab_size()
            );
        }
        Ok(tokenizer)
    }
}
