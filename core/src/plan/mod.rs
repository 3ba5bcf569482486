//! Planning a run before it starts, free of libtorch (the `plan` binary links no libtorch):
//! parameter counts, FLOPs, Chinchilla's tables, scaling-law loss and compute-optimal
//! allocation, and the auto-sized default model.
//!
//! - [`flops`]: FLOPs per token (6N, and 6N + 12·L·H·Q·T) and per sequence (Chinchilla
//!   Appendix F).
//! - [`chinchilla`]: Chinchilla's Table A9 (the 50 models), Table A4 (App. F against 6ND) and
//!   Table 3 (Approach 1), with our estimates beside them.
//! - [`scaling`]: L(N, D) = E + A/N^α + B/D^β under Chinchilla's fit and Epoch AI's refit,
//!   compute-optimal N and D for a budget, and parameters for a tokens-per-parameter rule.
//! - [`autosize`]: the model `train` picks when no `--model` is given.
//! - [`model`]: one shape's parameters by part, FLOPs, predicted loss and training time.
//!
//! Extension point: a parametrization that changes what is counted or how the learning rate
//! and initialization scale with width (μP) belongs beside [`model`], as another field of
//! [`model::ModelPlan`] filled from the same [`crate::config::GptConfig`].

pub mod autosize;
pub mod chinchilla;
pub mod flops;
pub mod model;
pub mod scaling;

pub use autosize::{auto_size, AutoSize};
