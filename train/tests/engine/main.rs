//! Trainer tests on CPU, in one binary (each test binary that links libtorch costs link time).

// Test scenarios read top to bottom: a long one is clearer whole than cut into steps.
#![allow(clippy::too_many_lines)]

mod cerebras;
mod device;
mod distributed;
mod hf;
mod link;
mod model;
mod mup;
mod optim;
mod options;
mod shim;
mod sweep_configs;
mod task_eval;
mod trainer;

/// libtorch has one global random generator. Tests that seed it or draw from it (model init,
/// dropout, sampling) hold this lock, so parallel tests cannot interleave their draws and make a
/// bit-exact comparison fail.
pub fn torch_rng() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
