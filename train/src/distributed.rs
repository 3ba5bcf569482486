//! Data parallelism through PyTorch's own c10d: the launch environment (`torchrun`, SLURM or
//! hand-set variables), a process group over a `TCPStore` rendezvous (Gloo on CPU, NCCL on
//! CUDA), and gradient buckets all-reduced once per optimizer step.
//!
//! A process started without any of these variables is a plain single-process run: no store,
//! no process group, the numerics of a run that never heard of ranks.

mod buckets;
mod group;
mod launch;

pub use buckets::{bucket_ranges, flat_grad_buffers, GradBuckets, BUCKET_BYTES};
pub use group::{Backend, ProcessGroup};
pub use launch::{first_slurm_host, Launch, Launcher, DEFAULT_PORT};

/// What can go wrong when ranks meet or talk.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A launch variable that cannot be used.
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The rendezvous or the process group could not be set up.
    #[error("rank {rank} of {world_size}: cannot join the process group at {addr}: {message}\n---> HINT: check MASTER_ADDR/MASTER_PORT (every rank must reach rank 0's address; the port must be free there) and that all {world_size} ranks start within --dist-timeout")]
    Connect {
        /// This rank.
        rank: usize,
        /// Ranks in the group.
        world_size: usize,
        /// `host:port` of the store.
        addr: String,
        /// libtorch's message.
        message: String,
    },
    /// A collective failed: another rank died, stopped answering, or disagreed.
    #[error("rank {rank} of {world_size}: {what} failed: {message}\n---> HINT: another rank died or stopped answering (see its output); each collective waits at most --dist-timeout ({timeout_s}s)")]
    Collective {
        /// This rank.
        rank: usize,
        /// Ranks in the group.
        world_size: usize,
        /// The collective.
        what: &'static str,
        /// The timeout in seconds.
        timeout_s: f64,
        /// libtorch's message.
        message: String,
    },
}
