//! Picking the device, saying why CUDA cannot be used, and the peak FLOP/s MFU is measured
//! against.

use anyhow::{bail, Result};
use std::path::Path;
use tch::Device;

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
impl serde::Serialize for DeviceRequest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for DeviceRequest {
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

/// Why CUDA is not usable here, with how to fix it; `None` when it is.
pub fn cuda_unusable_reason() -> Option<String> {
    if tch::Cuda::is_available() {
        return None;
    }
    if !crate::shim::cuda_backend_linked() {
        return Some(
            "this binary's libtorch has no CUDA backend (a CPU-only torch wheel, or libtorch_cuda.so was not linked)\n---> HINT: rebuild with the CUDA build of torch==2.11.0 in .venv (scripts/setup.sh installs it) so train/build.rs links libtorch_cuda"
                .into(),
        );
    }
    let driver = Path::new("/proc/driver/nvidia/version");
    if !driver.exists() {
        return Some(
            "no NVIDIA driver is loaded (/proc/driver/nvidia/version is missing)\n---> HINT: install the NVIDIA driver (CUDA 13 needs ≥ 580) and check `nvidia-smi`, or use --device cpu"
                .into(),
        );
    }
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    Some(format!(
        "the NVIDIA driver is loaded but libtorch sees no usable GPU (CUDA_VISIBLE_DEVICES={}); the driver may be older than CUDA 13 needs (≥ 580)\n---> HINT: check `nvidia-smi` and CUDA_VISIBLE_DEVICES, or use --device cpu",
        visible.as_deref().unwrap_or("unset")
    ))
}

/// The device [`select`] picked, and what to tell the user about the choice.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    /// The device.
    pub device: Device,
    /// A note for the user (the caller prints it): `--device auto` fell back to the CPU on a
    /// machine where a GPU seems to be present, and why.
    pub note: Option<String>,
}

/// The device for `request`; asking for CUDA where it is unusable is an error that says why.
pub fn select(request: DeviceRequest) -> Result<Selected> {
    let (device, note) = match request {
        DeviceRequest::Cpu => (Device::Cpu, None),
        DeviceRequest::Auto => match cuda_unusable_reason() {
            None => (Device::Cuda(0), None),
            // Worth a word only where a GPU seems to be present.
            Some(reason) => (
                Device::Cpu,
                Path::new("/proc/driver/nvidia/version")
                    .exists()
                    .then(|| format!("note: using the CPU: CUDA is not usable: {reason}")),
            ),
        },
        DeviceRequest::Cuda => match cuda_unusable_reason() {
            None => (Device::Cuda(0), None),
            Some(reason) => bail!("--device cuda, but CUDA is not usable: {reason}"),
        },
    };
    Ok(Selected { device, note })
}

/// The GPU's marketing name (`nvidia-smi`), when there is one.
pub fn gpu_name() -> Option<String> {
    let output = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "-i", "0"])
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output.status.success() && !name.is_empty()).then_some(name)
}

/// Dense bf16 peak FLOP/s of a GPU named `name` (the table lives in [`h5gpt_core::hardware`]).
pub use h5gpt_core::hardware::peak_bf16_flops;
