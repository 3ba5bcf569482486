//! # h5gpt-train
//!
//! The trainer's engine room (work in progress for the trainer issue): the libtorch shim that
//! gives tch fused AdamW and bf16 autocast.

pub mod shim;
