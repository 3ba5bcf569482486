//! The command-line options of the commands that run on libtorch (`train`, `sample`, `eval`,
//! `export`), declared here, away from libtorch, so that `h5gpt` (which links none) builds
//! their help, completions and man pages from the same declarations the trainer parses.

pub mod inference;
pub mod requests;
pub mod train;
