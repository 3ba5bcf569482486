//! # h5gpt-train
//!
//! The trainer's engine room (work in progress for the trainer issue): the libtorch shim that
//! gives tch fused AdamW and bf16 autocast, and the GPT-2 model.

pub mod checkpoint;
pub mod config;
pub mod dist;
pub mod hardware;
pub mod hf;
pub mod model;
pub mod mup;
pub mod optim;
pub mod plan;
pub mod plot;
pub mod schedule;
pub mod shim;
pub mod trainer;
