//! `--dtype`: fp32 everywhere, bf16 autocast over fp32 weights, or bf16 weights and
//! activations with fp32 master weights (`bf16-pure`, as Megatron-LM and llm.c train).

use crate::shim::{AutocastDevice, AutocastGuard};
use anyhow::Result;
pub use h5gpt_core::options::requests::DtypeRequest;
use h5gpt_formats::exit::with_hint;
use serde::{Deserialize, Serialize};
use tch::Device;

/// The arithmetic a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32.
    Fp32,
    /// Forward and loss under bf16 autocast; weights, gradients and optimizer state in fp32.
    Bf16,
    /// The model's weights, activations and gradients in bf16 (no cast kernels in forward,
    /// half the LayerNorm and residual traffic); fp32 master weights stepped by AdamW with fp32
    /// gradients accumulated across micro-batches (Megatron's `main_grad`), copied into the
    /// bf16 weights after each step. Checkpoints hold the fp32 masters.
    #[serde(rename = "bf16-pure")]
    Bf16Pure,
}

impl Precision {
    /// Resolves `--dtype` for `device`, which runs bf16 at speed or not (`bf16`:
    /// [`crate::device::bf16_supported`]): `auto` is bf16 autocast on such a GPU, fp32 elsewhere
    /// (with a note on a GPU without bf16); `bf16` and `bf16-pure` on a GPU without it are
    /// refused. Returns the precision and the note.
    pub fn resolve(
        request: DtypeRequest,
        device: Device,
        bf16: bool,
    ) -> std::result::Result<(Precision, Option<String>), String> {
        let gpu_without_bf16 = device.is_cuda() && !bf16;
        let refuse = |name: &str| {
            Err(with_hint(
                format!(
                    "--dtype {name}: this GPU ({device:?}) has no fast bf16 (compute capability below 8.0: cuBLAS and flash attention would be slow or fail)",
                ),
                "use --dtype fp32 (or auto), or a GPU of compute capability 8.0 or newer (A100, H100, L40S, RTX 30xx and up)",
            ))
        };
        Ok(match request {
            DtypeRequest::Fp32 => (Precision::Fp32, None),
            DtypeRequest::Bf16 if gpu_without_bf16 => return refuse("bf16"),
            DtypeRequest::Bf16Pure if gpu_without_bf16 => return refuse("bf16-pure"),
            DtypeRequest::Bf16 => (Precision::Bf16, None),
            DtypeRequest::Bf16Pure => (Precision::Bf16Pure, None),
            DtypeRequest::Auto if gpu_without_bf16 => (
                Precision::Fp32,
                Some(format!(
                    "note: --dtype auto: fp32, as this GPU ({device:?}) has no fast bf16 (compute capability below 8.0)"
                )),
            ),
            DtypeRequest::Auto if device.is_cuda() => (Precision::Bf16, None),
            DtypeRequest::Auto => (Precision::Fp32, None),
        })
    }

    /// Name as `--dtype` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Bf16Pure => "bf16-pure",
        }
    }

    /// Enters autocast for a forward pass when this precision needs it; dropping the guard
    /// leaves it and clears the cast cache.
    pub fn autocast(self, device: Device) -> Result<Option<AutocastGuard>> {
        Ok(match self {
            // bf16-pure's weights are bf16 already: nothing to cast.
            Precision::Fp32 | Precision::Bf16Pure => None,
            Precision::Bf16 => Some(AutocastGuard::bf16(if device.is_cuda() {
                AutocastDevice::Cuda
            } else {
                AutocastDevice::Cpu
            })?),
        })
    }
}
