//! The `preprocess` and `inspect` commands: their options and what they print. The
//! `preprocess` executable and `h5gpt` (its `preprocess` and `inspect` subcommands) call these.

pub mod inspect;
pub mod preprocess;
pub mod report;
