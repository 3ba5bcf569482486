//! Safe wrappers over the C++ shim (`csrc/shim.cpp`): fused AdamW and autocast.

use std::ffi::CStr;
use tch::Tensor;

#[allow(non_camel_case_types)]
type C_tensor = torch_sys::C_tensor;

extern "C" {
    fn h5gpt_last_error() -> *const std::ffi::c_char;
    fn h5gpt_fused_adamw(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        steps: *const *mut C_tensor,
        n: i32,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> i32;
    fn h5gpt_autocast_enter(device: i32, dtype: i32) -> i32;
    fn h5gpt_autocast_exit(device: i32) -> i32;
    fn h5gpt_torch_version() -> *const std::ffi::c_char;
    fn h5gpt_set_float32_matmul_precision(precision: *const std::ffi::c_char) -> i32;
    fn h5gpt_has_cuda() -> i32;
}

/// An error raised inside libtorch, with its message.
#[derive(Debug, thiserror::Error)]
#[error("libtorch: {0}")]
pub struct ShimError(pub String);

fn check(code: i32) -> Result<(), ShimError> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a pointer to a thread-local, NUL-terminated string that lives
    // until the next failing call on this thread; we copy it at once.
    let message = unsafe { CStr::from_ptr(h5gpt_last_error()) };
    Err(ShimError(message.to_string_lossy().into_owned()))
}

/// The libtorch version the shim was compiled against (e.g. `2.11.0`).
pub fn torch_version() -> String {
    // SAFETY: a static NUL-terminated string in the shim.
    unsafe { CStr::from_ptr(h5gpt_torch_version()) }
        .to_string_lossy()
        .into_owned()
}

/// Lets float32 matmuls use TF32 tensor cores on CUDA (`torch.set_float32_matmul_precision`
/// `"high"`), or not (`"highest"`).
pub fn allow_tf32(enabled: bool) -> Result<(), ShimError> {
    let precision: &CStr = if enabled { c"high" } else { c"highest" };
    // SAFETY: a NUL-terminated static string; libtorch copies it.
    check(unsafe { h5gpt_set_float32_matmul_precision(precision.as_ptr()) })
}

/// Whether libtorch has its CUDA backend (false for a CPU-only build, or when
/// `libtorch_cuda.so` was not linked in).
pub fn cuda_backend_linked() -> bool {
    // SAFETY: a plain query.
    unsafe { h5gpt_has_cuda() == 1 }
}

/// AdamW hyper-parameters shared by one fused call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWHyper {
    /// Learning rate.
    pub lr: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// ε.
    pub eps: f64,
}

/// One fused AdamW step (`at::_fused_adamw_`) over parameters that share `hyper`.
/// `steps` are scalar f32 tensors (one per parameter), incremented here.
pub fn fused_adamw(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avgs: &[&Tensor],
    exp_avg_sqs: &[&Tensor],
    steps: &[&Tensor],
    hyper: AdamWHyper,
) -> Result<(), ShimError> {
    let n = params.len();
    assert!(
        [grads.len(), exp_avgs.len(), exp_avg_sqs.len(), steps.len()]
            .iter()
            .all(|&l| l == n),
        "one gradient, moment pair and step per parameter"
    );
    let ptrs = |ts: &[&Tensor]| -> Vec<*mut C_tensor> {
        ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
    };
    let (p, g, m, v, s) = (
        ptrs(params),
        ptrs(grads),
        ptrs(exp_avgs),
        ptrs(exp_avg_sqs),
        ptrs(steps),
    );
    // SAFETY: every pointer is a live `at::Tensor*` owned by a tch Tensor borrowed for the
    // duration of the call; the arrays hold `n` entries each.
    check(unsafe {
        h5gpt_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n as i32,
            hyper.lr,
            hyper.beta1,
            hyper.beta2,
            hyper.weight_decay,
            hyper.eps,
        )
    })
}

/// Where autocast applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutocastDevice {
    /// CPU ops.
    Cpu,
    /// CUDA ops.
    Cuda,
}

impl AutocastDevice {
    fn code(self) -> i32 {
        match self {
            AutocastDevice::Cpu => 0,
            AutocastDevice::Cuda => 1,
        }
    }
}

/// bf16 autocast for the guard's lifetime, like `torch.autocast(device, dtype=torch.bfloat16)`;
/// leaving the outermost guard clears the cast cache.
pub struct AutocastGuard {
    device: AutocastDevice,
}

impl AutocastGuard {
    /// Enters bf16 autocast on `device`.
    pub fn bf16(device: AutocastDevice) -> Result<AutocastGuard, ShimError> {
        // SAFETY: plain calls into libtorch's thread-local autocast state.
        check(unsafe { h5gpt_autocast_enter(device.code(), 0) })?;
        Ok(AutocastGuard { device })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: as in `bf16`.
        let _ = check(unsafe { h5gpt_autocast_exit(self.device.code()) });
    }
}
