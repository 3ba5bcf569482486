//! # h5gpt-train
//!
//! The trainer: the GPT-2 model in tch, the libtorch shim that gives tch fused AdamW, bf16
//! autocast and TF32, the GPT-3 optimisation recipe, the training loop with its checkpoints,
//! evaluation, sampling, and Hugging Face export/import.

pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod device;
pub mod distributed;
pub mod evaluate;
pub mod generate;
pub mod hf;
pub mod inference;
pub mod model;
pub mod optim;
pub mod options;
pub mod panics;
pub mod precision;
mod run_log;
pub mod shim;
pub mod task_eval;
pub mod tensorboard;
pub mod trainer;
