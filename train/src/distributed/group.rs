//! A c10d process group (the shim's `csrc/dist.cpp`): rendezvous through a `TCPStore`, then
//! in-place collectives on tensors.

use super::{DistError, Launch};
use std::ffi::{c_char, c_void, CString};
use std::time::Duration;
use tch::Tensor;

#[allow(non_camel_case_types)]
type C_tensor = torch_sys::C_tensor;

extern "C" {
    fn h5gpt_dist_has_nccl() -> i32;
    fn h5gpt_dist_new(
        backend: i32,
        rank: i32,
        world: i32,
        master_addr: *const c_char,
        master_port: i32,
        is_server: i32,
        prefix: *const c_char,
        timeout_ms: i64,
        gloo_iface: *const c_char,
        gloo_host: *const c_char,
        cuda_device: i32,
        out: *mut *mut c_void,
    ) -> i32;
    fn h5gpt_dist_all_reduce_sum(group: *mut c_void, tensor: *mut C_tensor) -> i32;
    fn h5gpt_dist_broadcast(group: *mut c_void, tensor: *mut C_tensor, root: i32) -> i32;
    fn h5gpt_dist_barrier(group: *mut c_void) -> i32;
    fn h5gpt_dist_shutdown(group: *mut c_void) -> i32;
    fn h5gpt_dist_free(group: *mut c_void);
}

use crate::shim::last_error;

/// The c10d backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors, TCP.
    Gloo,
    /// NCCL: CUDA tensors.
    Nccl,
}

impl Backend {
    /// Whether this build has the backend (NCCL needs its headers at build time).
    pub fn available(self) -> bool {
        match self {
            Backend::Gloo => true,
            // SAFETY: a plain query.
            Backend::Nccl => unsafe { h5gpt_dist_has_nccl() == 1 },
        }
    }

    /// `gloo` or `nccl`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

/// A process group of `world_size` ranks.
pub struct ProcessGroup {
    raw: *mut c_void,
    rank: usize,
    world_size: usize,
    timeout: Duration,
}

impl ProcessGroup {
    /// Joins the group `launch` describes: rank 0 (unless torchrun's agent does) serves the
    /// `TCPStore`, every rank waits for the others at most `timeout`, which also bounds each
    /// later collective. Gloo binds to `GLOO_SOCKET_IFNAME` when set, to the loopback address
    /// when the store is on it, else to the address this machine's hostname resolves to. NCCL
    /// is bound to CUDA device `cuda_device` (the rank's, made current before:
    /// [`crate::device::startup_actions`]).
    pub fn connect(
        launch: &Launch,
        backend: Backend,
        cuda_device: Option<usize>,
        timeout: Duration,
    ) -> Result<ProcessGroup, DistError> {
        let connect_error = |message: String| DistError::Connect {
            rank: launch.rank,
            world_size: launch.world_size,
            addr: format!("{}:{}", launch.master_addr, launch.master_port),
            message,
        };
        let cstring =
            |s: &str| CString::new(s).map_err(|_| connect_error(format!("{s:?} holds a NUL byte")));
        let iface = std::env::var("GLOO_SOCKET_IFNAME").unwrap_or_default();
        let loopback = launch.master_addr == "localhost" || launch.master_addr.starts_with("127.");
        let host = if iface.is_empty() && loopback {
            "127.0.0.1"
        } else {
            ""
        };
        let (addr, prefix, iface, host) = (
            cstring(&launch.master_addr)?,
            cstring(&launch.store_prefix)?,
            cstring(&iface)?,
            cstring(host)?,
        );
        let mut raw: *mut c_void = std::ptr::null_mut();
        // SAFETY: every string is NUL-terminated and outlives the call; `raw` receives an owned
        // group on success, freed in Drop.
        let code = unsafe {
            h5gpt_dist_new(
                match backend {
                    Backend::Gloo => 0,
                    Backend::Nccl => 1,
                },
                launch.rank as i32,
                launch.world_size as i32,
                addr.as_ptr(),
                i32::from(launch.master_port),
                i32::from(launch.hosts_store()),
                prefix.as_ptr(),
                timeout.as_millis() as i64,
                iface.as_ptr(),
                host.as_ptr(),
                cuda_device.map_or(-1, |d| d as i32),
                &mut raw,
            )
        };
        if code != 0 {
            return Err(connect_error(last_error()));
        }
        Ok(ProcessGroup {
            raw,
            rank: launch.rank,
            world_size: launch.world_size,
            timeout,
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Ranks in the group.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    fn check(&self, what: &'static str, code: i32) -> Result<(), DistError> {
        if code == 0 {
            return Ok(());
        }
        Err(DistError::Collective {
            rank: self.rank,
            world_size: self.world_size,
            what,
            timeout_s: self.timeout.as_secs_f64(),
            message: last_error(),
        })
    }

    /// Sums `tensor` over all ranks, in place (a dense, contiguous tensor).
    pub fn all_reduce_sum(&self, tensor: &Tensor) -> Result<(), DistError> {
        // SAFETY: `raw` is a live group; the tensor pointer is a live `at::Tensor*`.
        let code = unsafe { h5gpt_dist_all_reduce_sum(self.raw, tensor.as_ptr() as *mut C_tensor) };
        self.check("all-reduce", code)
    }

    /// Overwrites `tensor` with rank `root`'s, in place.
    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<(), DistError> {
        // SAFETY: as in `all_reduce_sum`.
        let code = unsafe {
            h5gpt_dist_broadcast(self.raw, tensor.as_ptr() as *mut C_tensor, root as i32)
        };
        self.check("broadcast", code)
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: `raw` is a live group.
        let code = unsafe { h5gpt_dist_barrier(self.raw) };
        self.check("barrier", code)
    }
}

impl ProcessGroup {
    /// Shuts the group down after its last collective (NCCL: the communicators are finalized
    /// rather than aborted by the destructor, which warns "destroy_process_group() was not
    /// called"; a no-op for Gloo). The group must not be used afterwards.
    pub fn shutdown(self) -> Result<(), DistError> {
        // SAFETY: `raw` is a live group; it is freed once, by Drop, after this.
        let code = unsafe { h5gpt_dist_shutdown(self.raw) };
        self.check("shutdown", code)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from h5gpt_dist_new and is freed once.
        unsafe { h5gpt_dist_free(self.raw) }
    }
}
