//! Safe wrappers over the C++ shim (`csrc/shim.cpp`): fused AdamW, foreach gradient clipping,
//! gradient handles, autocast and the CUDA allocator's statistics.

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
        found_inf: *mut C_tensor,
    ) -> i32;
    fn h5gpt_pin_memory(t: *mut C_tensor, out: *mut *mut C_tensor) -> i32;
    fn h5gpt_grads_to_none(params: *const *mut C_tensor, n: i32) -> i32;
    fn h5gpt_set_grad(param: *mut C_tensor, grad: *mut C_tensor) -> i32;
    fn h5gpt_foreach_copy_or_add(
        dst: *const *mut C_tensor,
        src: *const *mut C_tensor,
        n: i32,
        add: i32,
    ) -> i32;
    fn h5gpt_clip_grad_norm(
        grads: *const *mut C_tensor,
        n: i32,
        max_norm: f64,
        scale: *mut C_tensor,
        out_norm: *mut *mut C_tensor,
    ) -> i32;
    fn h5gpt_cuda_peak_memory(
        index: i32,
        allocated: *mut i64,
        reserved: *mut i64,
        reset: i32,
    ) -> i32;
    fn h5gpt_cuda_event_record(index: i32) -> *mut std::ffi::c_void;
    fn h5gpt_cuda_event_synchronize(event: *mut std::ffi::c_void) -> i32;
    fn h5gpt_cuda_event_free(event: *mut std::ffi::c_void);
    fn h5gpt_autocast_enter(
        device: i32,
        dtype: i32,
        prev_enabled: *mut i32,
        prev_dtype: *mut i32,
    ) -> i32;
    fn h5gpt_autocast_exit(device: i32, prev_enabled: i32, prev_dtype: i32) -> i32;
    fn h5gpt_autocast_enabled(device: i32) -> i32;
    fn h5gpt_torch_version() -> *const std::ffi::c_char;
    fn h5gpt_set_float32_matmul_precision(precision: *const std::ffi::c_char) -> i32;
    fn h5gpt_has_cuda() -> i32;
    fn h5gpt_cuda_set_device(index: i32) -> i32;
    fn h5gpt_cuda_device_info(
        index: i32,
        name: *mut std::ffi::c_char,
        name_len: i32,
        major: *mut i32,
        minor: *mut i32,
    ) -> i32;
    fn h5gpt_cuda_set_sync_debug_mode(mode: i32) -> i32;
}

/// An error raised inside libtorch, with its message.
#[derive(Debug, thiserror::Error)]
#[error("libtorch: {0}")]
pub struct ShimError(pub String);

/// The message of the shim's last failure on this thread: the one error channel of every
/// shim function (`csrc/guard.h`), the process group's (`csrc/dist.cpp`) included.
pub(crate) fn last_error() -> String {
    // SAFETY: the shim returns a pointer to a thread-local, NUL-terminated string that lives
    // until the next failing call on this thread; we copy it at once.
    unsafe { CStr::from_ptr(h5gpt_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn check(code: i32) -> Result<(), ShimError> {
    if code == 0 {
        return Ok(());
    }
    Err(ShimError(last_error()))
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
/// `libtorch_cuda.so` was not linked in). libtorch's own answer (`at::hasCUDA`) is also false
/// on a machine without a GPU or driver, so a `libtorch_cuda` mapped into this process counts
/// too.
pub fn cuda_backend_linked() -> bool {
    // SAFETY: a plain query.
    let usable = unsafe { h5gpt_has_cuda() == 1 };
    usable
        || std::fs::read_to_string("/proc/self/maps")
            .is_ok_and(|maps| maps.contains("/libtorch_cuda.so"))
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

fn ptrs(ts: &[&Tensor]) -> Vec<*mut C_tensor> {
    ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}

/// One fused AdamW step (`at::_fused_adamw_`) over parameters that share `hyper`.
/// `steps` are scalar f32 tensors (one per parameter), incremented here by one foreach kernel.
/// `found_inf`, a scalar f32 tensor on the parameters' device, skips the step on the device
/// where it is 1 (nothing changes, the counters stay): a non-finite step is dropped without a
/// host sync.
pub fn fused_adamw(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avgs: &[&Tensor],
    exp_avg_sqs: &[&Tensor],
    steps: &[&Tensor],
    hyper: AdamWHyper,
    found_inf: Option<&Tensor>,
) -> Result<(), ShimError> {
    let n = params.len();
    assert!(
        [grads.len(), exp_avgs.len(), exp_avg_sqs.len(), steps.len()]
            .iter()
            .all(|&l| l == n),
        "one gradient, moment pair and step per parameter"
    );
    let (p, g, m, v, s) = (
        ptrs(params),
        ptrs(grads),
        ptrs(exp_avgs),
        ptrs(exp_avg_sqs),
        ptrs(steps),
    );
    let inf = found_inf.map_or(std::ptr::null_mut(), |t| t.as_ptr() as *mut C_tensor);
    // SAFETY: every pointer is a live `at::Tensor*` owned by a tch Tensor borrowed for the
    // duration of the call (or null for no `found_inf`); the arrays hold `n` entries each.
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
            inf,
        )
    })
}

/// A copy of CPU tensor `t` in pinned (page-locked) memory, for non-blocking copies to the GPU:
/// `Tensor.pin_memory()` without the deprecated device argument tch's binding always passes.
pub fn pin_memory(t: &Tensor) -> Result<Tensor, ShimError> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: a live `at::Tensor*` borrowed for the call; on success `out` is a new, owned one.
    check(unsafe { h5gpt_pin_memory(t.as_ptr() as *mut _, &mut out) })?;
    // SAFETY: `out` is a fresh, owned `at::Tensor*`.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Drops the gradients of `params` (`zero_grad(set_to_none=True)`): the next backward writes
/// them instead of adding into zeros.
pub fn grads_to_none(params: &[&Tensor]) -> Result<(), ShimError> {
    let p = ptrs(params);
    // SAFETY: live `at::Tensor*`s borrowed for the call; the array holds `p.len()` entries.
    check(unsafe { h5gpt_grads_to_none(p.as_ptr(), p.len() as i32) })
}

/// Makes `grad` (same shape, dtype and device) the `.grad` of `param`: backward accumulates
/// into it in place, so it may be a view into a larger buffer.
pub fn set_grad(param: &Tensor, grad: &Tensor) -> Result<(), ShimError> {
    assert_eq!(
        param.size(),
        grad.size(),
        "a gradient has its parameter's shape"
    );
    // SAFETY: both are live `at::Tensor*`s borrowed for the call; the shim copies the handle.
    check(unsafe { h5gpt_set_grad(param.as_ptr() as *mut _, grad.as_ptr() as *mut _) })
}

/// `dst[i].copy_(src[i])` for every pair in foreach kernels (`_foreach_copy_`), converting
/// dtypes; with `add`, `dst[i] += src[i]` (`_foreach_add_`) instead.
pub fn foreach_copy_or_add(dst: &[&Tensor], src: &[&Tensor], add: bool) -> Result<(), ShimError> {
    assert_eq!(dst.len(), src.len(), "one source per destination");
    let (d, s) = (ptrs(dst), ptrs(src));
    // SAFETY: live `at::Tensor*`s borrowed for the call; both arrays hold `d.len()` entries.
    check(unsafe {
        h5gpt_foreach_copy_or_add(d.as_ptr(), s.as_ptr(), d.len() as i32, i32::from(add))
    })
}

/// `torch.nn.utils.clip_grad_norm_(foreach=True)` of `grads` × `scale` (a 0-d f32 tensor on
/// their device; `None`: 1): the global L2 norm of the scaled gradients as a 0-d f32 tensor on
/// their device, after which every gradient is multiplied by
/// scale × min(1, `max_norm` / (norm + 1e-6)) — two foreach kernels and no host sync.
pub fn clip_grad_norm(
    grads: &[&Tensor],
    max_norm: f64,
    scale: Option<&Tensor>,
) -> Result<Tensor, ShimError> {
    let g = ptrs(grads);
    let scale = scale.map_or(std::ptr::null_mut(), |t| t.as_ptr() as *mut C_tensor);
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: live `at::Tensor*`s (and `scale`, live or null) borrowed for the call; on success
    // the shim stores a new heap `at::Tensor*` in `out`, which `from_ptr` takes ownership of.
    check(unsafe { h5gpt_clip_grad_norm(g.as_ptr(), g.len() as i32, max_norm, scale, &mut out) })?;
    // SAFETY: `out` is a fresh, owned `at::Tensor*`.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// A point in the work queued on a CUDA device's current stream (a `c10::Event`).
pub struct CudaEvent(*mut std::ffi::c_void);

impl CudaEvent {
    /// Records the point after everything queued so far on CUDA device `index`.
    pub fn record(index: usize) -> Result<CudaEvent, ShimError> {
        // SAFETY: a plain call; null means failure, with the message in last_error.
        let event = unsafe { h5gpt_cuda_event_record(index as i32) };
        if event.is_null() {
            check(1)?;
        }
        Ok(CudaEvent(event))
    }

    /// Blocks until the device has done the work queued before the event (and nothing more).
    pub fn synchronize(&self) -> Result<(), ShimError> {
        // SAFETY: `self.0` is a live event made by `record`.
        check(unsafe { h5gpt_cuda_event_synchronize(self.0) })
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        // SAFETY: made by `record`, freed once here.
        unsafe { h5gpt_cuda_event_free(self.0) }
    }
}

/// Peak memory of CUDA device `index` as its caching allocator counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeakMemory {
    /// Bytes held by tensors at the peak (`torch.cuda.max_memory_allocated`).
    pub allocated: u64,
    /// Bytes the allocator reserved from the driver at the peak
    /// (`torch.cuda.max_memory_reserved`).
    pub reserved: u64,
}

/// The peaks of CUDA device `index` since the start or the last reset; `reset` starts a new
/// period. An error on a build or machine without CUDA.
pub fn cuda_peak_memory(index: usize, reset: bool) -> Result<PeakMemory, ShimError> {
    let (mut allocated, mut reserved) = (0i64, 0i64);
    // SAFETY: plain outputs written by the shim.
    check(unsafe {
        h5gpt_cuda_peak_memory(
            index as i32,
            &mut allocated,
            &mut reserved,
            i32::from(reset),
        )
    })?;
    Ok(PeakMemory {
        allocated: allocated.max(0) as u64,
        reserved: reserved.max(0) as u64,
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

/// Whether autocast is on for `device` on this thread.
pub fn autocast_enabled(device: AutocastDevice) -> bool {
    // SAFETY: a plain query of libtorch's thread-local autocast state.
    unsafe { h5gpt_autocast_enabled(device.code()) == 1 }
}

/// bf16 autocast for the guard's lifetime, like `torch.autocast(device, dtype=torch.bfloat16)`:
/// dropping it restores the autocast state it found (so guards nest), and leaving the
/// outermost guard clears the cast cache.
pub struct AutocastGuard {
    device: AutocastDevice,
    /// The state entering found: enabled (0/1) and dtype (a `c10::ScalarType`).
    prev_enabled: i32,
    prev_dtype: i32,
}

impl AutocastGuard {
    /// Enters bf16 autocast on `device`.
    pub fn bf16(device: AutocastDevice) -> Result<AutocastGuard, ShimError> {
        let (mut prev_enabled, mut prev_dtype) = (0, 0);
        // SAFETY: plain calls into libtorch's thread-local autocast state; the outputs are
        // written by the shim.
        check(unsafe {
            h5gpt_autocast_enter(device.code(), 0, &mut prev_enabled, &mut prev_dtype)
        })?;
        Ok(AutocastGuard {
            device,
            prev_enabled,
            prev_dtype,
        })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: as in `bf16`; the state given back is what `bf16` read.
        let _ = check(unsafe {
            h5gpt_autocast_exit(self.device.code(), self.prev_enabled, self.prev_dtype)
        });
    }
}

/// Makes CUDA device `index` the process's current device (`cudaSetDevice`), before any
/// tensor, event or process group exists: libtorch's device guards restore the current device,
/// and an event recorded or destroyed through them sets it, so with device 0 current every rank
/// would create a CUDA context (about 0.5 GB) on GPU 0 as well as on its own.
pub fn cuda_set_device(index: usize) -> Result<(), ShimError> {
    // SAFETY: a plain call.
    check(unsafe { h5gpt_cuda_set_device(index as i32) })
}

/// What MFU and `--dtype` need to know of a CUDA device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaDeviceInfo {
    /// The marketing name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Compute capability (major, minor).
    pub capability: (i32, i32),
}

/// The name and compute capability of CUDA device `index` (its properties; no context is
/// created). An error on a build or machine without CUDA.
pub fn cuda_device_info(index: usize) -> Result<CudaDeviceInfo, ShimError> {
    let mut name = [0 as std::ffi::c_char; 256];
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the shim writes at most `name.len()` bytes, NUL-terminated, and two ints.
    check(unsafe {
        h5gpt_cuda_device_info(
            index as i32,
            name.as_mut_ptr(),
            name.len() as i32,
            &mut major,
            &mut minor,
        )
    })?;
    // SAFETY: NUL-terminated by the shim within the buffer.
    let name = unsafe { CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok(CudaDeviceInfo {
        name,
        capability: (major, minor),
    })
}

/// CUDA's check for calls that make the host wait for the device
/// (`torch.cuda.set_sync_debug_mode`), set by the environment variable
/// [`SYNC_DEBUG_VAR`]: `warn` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncDebug {
    /// No check.
    #[default]
    Off,
    /// A warning at every synchronizing call.
    Warn,
    /// An error at every synchronizing call.
    Error,
}

/// The environment variable that turns [`SyncDebug`] on for the training step.
pub const SYNC_DEBUG_VAR: &str = "H5GPT_CUDA_SYNC_DEBUG";

impl SyncDebug {
    /// Reads `value` (`off`/`0`/empty, `warn`, `error`).
    pub fn parse(value: &str) -> Result<SyncDebug, String> {
        match value.trim() {
            "" | "0" | "off" => Ok(SyncDebug::Off),
            "warn" | "1" => Ok(SyncDebug::Warn),
            "error" | "2" => Ok(SyncDebug::Error),
            other => Err(format!(
                "{SYNC_DEBUG_VAR}={other:?}: expected off, warn or error"
            )),
        }
    }

    /// The mode [`SYNC_DEBUG_VAR`] asks for (off when unset).
    pub fn from_env() -> Result<SyncDebug, String> {
        std::env::var(SYNC_DEBUG_VAR).map_or(Ok(SyncDebug::Off), |v| SyncDebug::parse(&v))
    }

    fn code(self) -> i32 {
        match self {
            SyncDebug::Off => 0,
            SyncDebug::Warn => 1,
            SyncDebug::Error => 2,
        }
    }
}

/// [`SyncDebug`] on for the guard's lifetime (nothing when off); dropping it turns the check
/// off again, so only the code inside is checked.
pub struct SyncDebugGuard(bool);

impl SyncDebugGuard {
    /// Turns `mode` on (a CUDA run's step; nothing to do when off).
    pub fn enter(mode: SyncDebug) -> Result<SyncDebugGuard, ShimError> {
        if mode == SyncDebug::Off {
            return Ok(SyncDebugGuard(false));
        }
        // SAFETY: a plain call.
        check(unsafe { h5gpt_cuda_set_sync_debug_mode(mode.code()) })?;
        Ok(SyncDebugGuard(true))
    }
}

impl Drop for SyncDebugGuard {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: a plain call.
            let _ = check(unsafe { h5gpt_cuda_set_sync_debug_mode(0) });
        }
    }
}
