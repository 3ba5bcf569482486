//! What `--dtype` and `--device` ask for: names as the flags and `config.toml` spell them.
//! The train crate turns them into a libtorch device and a precision.

use serde::{Deserialize, Serialize};

/// What `--dtype` asked for. Written as its name; read as `--dtype` reads it (aliases
/// included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtypeRequest {
    /// bf16 autocast on CUDA, fp32 on CPU.
    Auto,
    /// fp32 (TF32 matmuls on CUDA).
    Fp32,
    /// bf16 autocast.
    Bf16,
    /// bf16 weights and activations, fp32 masters and gradient accumulation.
    Bf16Pure,
}

impl DtypeRequest {
    /// The name as `--dtype` spells it.
    pub fn name(self) -> &'static str {
        match self {
            DtypeRequest::Auto => "auto",
            DtypeRequest::Fp32 => "fp32",
            DtypeRequest::Bf16 => "bf16",
            DtypeRequest::Bf16Pure => "bf16-pure",
        }
    }
}

impl std::fmt::Display for DtypeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for DtypeRequest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for DtypeRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for DtypeRequest {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DtypeRequest::Auto),
            "fp32" | "float32" => Ok(DtypeRequest::Fp32),
            "bf16" | "bfloat16" => Ok(DtypeRequest::Bf16),
            "bf16-pure" => Ok(DtypeRequest::Bf16Pure),
            other => Err(format!("`{other}`: expected auto, fp32, bf16 or bf16-pure")),
        }
    }
}

/// What `--device` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// CUDA when usable, else CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA device; an error when unusable.
    Cuda,
}

impl DeviceRequest {
    /// The name as `--device` spells it.
    pub fn name(self) -> &'static str {
        match self {
            DeviceRequest::Auto => "auto",
            DeviceRequest::Cpu => "cpu",
            DeviceRequest::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Written as its name; read as `--device` reads it (aliases included).
impl Serialize for DeviceRequest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for DeviceRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for DeviceRequest {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" | "cuda:0" | "gpu" => Ok(DeviceRequest::Cuda),
            other => Err(format!("`{other}`: expected auto, cpu or cuda")),
        }
    }
}
