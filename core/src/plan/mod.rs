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
//! - [`sweep`]: an IsoFLOP grid of runs (`plan sweep`): the shapes, their tokens, their
//!   `train` configs and a script that runs them.
//! - [`runs`]: the runs `plan fit` reads: N, D, C and the final validation loss from each run's
//!   own files, checked to be comparable.
//! - [`fit`]: your own scaling law from those runs: Approach 3 (Huber, L-BFGS, bootstrap)
//!   and Approach 2 (IsoFLOP parabolas, N_opt ∝ C^a), with [`lbfgs`] the minimizer.
//! - [`scaling_plot`]: `scaling.png`, the IsoFLOP curves, their minima and the fitted frontier.
//!
//! Extension point: a parametrization that changes what is counted or how the learning rate
//! and initialization scale with width (μP) belongs beside [`model`], as another field of
//! [`model::ModelPlan`] filled from the same [`crate::config::GptConfig`].

pub mod autosize;
pub mod chinchilla;
pub mod fit;
pub mod flops;
pub mod lbfgs;
pub mod model;
pub mod runs;
pub mod scaling;
pub mod scaling_plot;
pub mod sweep;

pub use autosize::{auto_size, AutoSize};
