//! # h5gpt-core
//!
//! Everything about a GPT run that needs no tensors: the model configuration and its presets,
//! the list of parameter tensors ([`params`]), μP, the learning-rate schedule, FLOPs and
//! scaling laws, the GPU table, the loss plot, and the options of `train`, `sample`, `eval` and
//! `export` ([`options`]). `h5gpt-train` builds the libtorch model from these descriptions, and
//! `h5gpt plan` plans runs with them; this crate links no libtorch.

pub mod cerebras;
pub mod config;
pub mod hardware;
pub mod mup;
pub mod options;
pub mod params;
pub mod plan;
pub mod plot;
pub mod schedule;
