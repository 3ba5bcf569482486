//! The front end `sample` and `eval` share: which checkpoint, on which device, in which
//! precision, and loading it.

use crate::checkpoint::{load_model, LoadedModel};
use crate::device::{select, DeviceRequest};
use crate::precision::{DtypeRequest, Precision};
use anyhow::Result;
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
