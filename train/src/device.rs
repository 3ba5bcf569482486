//! Picking the device, saying why CUDA cannot be used, and the peak FLOP/s MFU is measured
//! against.

use anyhow::{bail, Result};
pub use h5gpt_core::options::requests::DeviceRequest;
use h5gpt_formats::exit::with_hint;
use std::path::Path;
use tch::Device;

/// Why CUDA is not usable here, with how to fix it; `None` when it is.
pub fn cuda_unusable_reason() -> Option<String> {
    if tch::Cuda::is_available() {
        return None;
    }
    if !crate::shim::cuda_backend_linked() {
        return Some(with_hint(
            "this binary's libtorch has no CUDA backend (a CPU-only torch wheel, or libtorch_cuda.so was not linked)",
            "rebuild with the CUDA build of torch==2.11.0 in .venv (scripts/setup.sh installs it) so train/build.rs links libtorch_cuda",
        ));
    }
    let driver = Path::new("/proc/driver/nvidia/version");
    if !driver.exists() {
        return Some(with_hint(
            "no NVIDIA driver is loaded (/proc/driver/nvidia/version is missing)",
            "install the NVIDIA driver (CUDA 13 needs ≥ 580) and check `nvidia-smi`, or use --device cpu",
        ));
    }
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    Some(with_hint(
        format!(
            "the NVIDIA driver is loaded but libtorch sees no usable GPU (CUDA_VISIBLE_DEVICES={}); the driver may be older than CUDA 13 needs (≥ 580)",
            visible.as_deref().unwrap_or("unset"),
        ),
        "check `nvidia-smi` and CUDA_VISIBLE_DEVICES, or use --device cpu",
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

/// The device for `request` on the rank whose local rank is `local_rank` (0 for a single
/// process); asking for CUDA where it is unusable, or where the rank has no GPU
/// ([`cuda_index_for`]), is an error that says why.
pub fn select(request: DeviceRequest, local_rank: usize) -> Result<Selected> {
    let cuda = || -> Result<Device> {
        let visible = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
        Ok(Device::Cuda(
            cuda_index_for(local_rank, visible).map_err(anyhow::Error::msg)?,
        ))
    };
    let (device, note) = match request {
        DeviceRequest::Cpu => (Device::Cpu, None),
        DeviceRequest::Auto => match cuda_unusable_reason() {
            None => (cuda()?, None),
            // Worth a word only where a GPU seems to be present.
            Some(reason) => (
                Device::Cpu,
                Path::new("/proc/driver/nvidia/version")
                    .exists()
                    .then(|| format!("note: using the CPU: CUDA is not usable: {reason}")),
            ),
        },
        DeviceRequest::Cuda => match cuda_unusable_reason() {
            None => (cuda()?, None),
            Some(reason) => bail!("--device cuda, but CUDA is not usable: {reason}"),
        },
    };
    Ok(Selected { device, note })
}

/// The CUDA device index of the rank with local rank `local_rank` where `visible` GPUs are
/// visible to the process: `local_rank` when it is below `visible` (one process per node sees
/// every GPU, as under `torchrun`); the only GPU when one is visible (a launcher that binds a GPU
/// to each process through `CUDA_VISIBLE_DEVICES`, as SLURM's `--gpus-per-task=1`); otherwise
/// an error naming both numbers.
pub fn cuda_index_for(local_rank: usize, visible: usize) -> std::result::Result<usize, String> {
    match visible {
        0 => Err("no CUDA device is visible to this process".into()),
        1 => Ok(0),
        n if local_rank < n => Ok(local_rank),
        n => Err(with_hint(
            format!(
                "local rank {local_rank} has no GPU: this process sees {n} CUDA devices (0..{n}; CUDA_VISIBLE_DEVICES={})",
                std::env::var("CUDA_VISIBLE_DEVICES").as_deref().unwrap_or("unset"),
            ),
            format!(
                "start at most {n} ranks per machine, give each rank one GPU through CUDA_VISIBLE_DEVICES (SLURM: --gpus-per-task=1), or set LOCAL_RANK (it falls back to RANK, which counts the ranks of every machine)",
            ),
        )),
    }
}

/// One thing a rank does to its device at start-up, in the order [`startup_actions`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupAction {
    /// Make this CUDA device the process's current one (`cudaSetDevice`).
    SetCudaDevice(usize),
    /// Join the process group (NCCL bound to this CUDA device; Gloo: `None`).
    JoinGroup {
        /// The device the NCCL group is bound to.
        bound_device: Option<usize>,
    },
}

/// What a rank on `device` does before it creates any tensor, in order: on CUDA the rank's GPU
/// becomes the current device first (else libtorch's guards, events and NCCL would create a
/// context on GPU 0 in every rank), then, with several ranks, the process group joins, bound to
/// that device.
pub fn startup_actions(device: Device, distributed: bool) -> Vec<StartupAction> {
    let cuda = match device {
        Device::Cuda(index) => Some(index),
        _ => None,
    };
    let mut actions: Vec<StartupAction> =
        cuda.map(StartupAction::SetCudaDevice).into_iter().collect();
    if distributed {
        actions.push(StartupAction::JoinGroup { bound_device: cuda });
    }
    actions
}

/// Whether a device of compute capability `capability` (`None`: the CPU) runs bf16 at speed:
/// the CPU, and CUDA from compute capability 8.0 (Ampere) on, where cuBLAS and flash attention
/// have bf16 kernels.
pub fn bf16_supported(capability: Option<(i32, i32)>) -> bool {
    capability.is_none_or(|(major, _)| major >= 8)
}

/// The compute capability of `device` (`None` on the CPU, or where it cannot be read).
pub fn capability(device: Device) -> Option<(i32, i32)> {
    match device {
        Device::Cuda(index) => crate::shim::cuda_device_info(index)
            .ok()
            .map(|i| i.capability),
        _ => None,
    }
}

/// The name of CUDA device `index` as the device reports it (the one this rank uses, whatever
/// `CUDA_VISIBLE_DEVICES` maps it to), when it can be read.
pub fn gpu_name(index: usize) -> Option<String> {
    crate::shim::cuda_device_info(index).ok().map(|i| i.name)
}

/// Dense bf16 peak FLOP/s of a GPU named `name` (the table lives in [`h5gpt_core::hardware`]).
pub use h5gpt_core::hardware::peak_bf16_flops;
