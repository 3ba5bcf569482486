//! End-to-end tests: run the binaries as a user would, on data the tests make themselves.

// Test scenarios read top to bottom: a long one is clearer whole than cut into steps.
#![allow(clippy::too_many_lines)]

mod audit;
mod blend;
mod cerebras;
mod crate_graph;
mod dedup;
mod eval_task;
mod h5gpt_command;
mod inspect;
mod main_job;
mod nonfinite;
mod preprocess;
mod reliability;
mod reliability_checks;
mod scaling;
mod second_pass;
mod tokenizers;
mod train;
mod train_dist;
mod val_split;
