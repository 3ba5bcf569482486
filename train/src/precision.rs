//! `--dtype`: fp32 everywhere, or bf16 autocast over fp32 master weights.

use crate::shim::{AutocastDevice, AutocastGuard};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Device;

/// What `--dtype` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtypeRequest {
    /// bf16 autocast on CUDA, fp32 on CPU.
    Auto,
    /// fp32 (TF32 matmuls on CUDA).
    Fp32,
    /// bf16 autocast.
    Bf16,
}

impl std::str::FromStr for DtypeRequest {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DtypeRequest::Auto),
            "fp32" | "float32" => Ok(DtypeRequest::Fp32),
            "bf16" | "bfloat16" => Ok(DtypeRequest::Bf16),
            other => Err(format!("`{other}`: expected auto, fp32 or bf16")),
        }
    }
}

/// The arithmetic a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32.
    Fp32,
    /// Forward and loss under bf16 autocast; weights, gradients and optimizer state in fp32.
    Bf16,
}

impl Precision {
    /// Resolves `--dtype` for `device`.
    pub fn resolve(request: DtypeRequest, device: Device) -> Precision {
        match request {
            DtypeRequest::Fp32 => Precision::Fp32,
            DtypeRequest::Bf16 => Precision::Bf16,
            DtypeRequest::Auto if device.is_cuda() => Precision::Bf16,
            DtypeRequest::Auto => Precision::Fp32,
        }
    }

    /// Name as `--dtype` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }

    /// Enters autocast for a forward pass when this precision needs it; dropping the guard
    /// leaves it and clears the cast cache.
    pub fn autocast(self, device: Device) -> Result<Option<AutocastGuard>> {
        Ok(match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(AutocastGuard::bf16(if device.is_cuda() {
                AutocastDevice::Cuda
            } else {
                AutocastDevice::Cpu
            })?),
        })
    }
}
