//! Cerebras Model Zoo run configs: `train --config params_gpt3_xl.yaml` and `plan --config`.
//!
//! Both generations of their YAML are read, told apart by structure ([`Generation`]): release
//! 2.0.3's top-level `train_input`/`eval_input`/`model`/`optimizer`/`runconfig`, and release
//! 2.10's `trainer: {init: {...}, fit: {...}}`. Every key is read into one of our options,
//! ignored for a stated reason, or refused with an error naming it; keys this reader does
//! not know are an error unless `--allow-unknown`. The result is the same option table a
//! TOML `--config` gives ([`Mapped::options`]), with a report of every key ([`report`]).
//!
//! Free of libtorch, like the rest of this crate.

pub mod convert;
pub mod map;
pub mod report;
pub mod schedule;
pub mod yaml;

pub use map::{load, Generation, LoadOptions, Mapped};
pub use schedule::{LrPhase, PhaseKind, PhaseSchedule};
pub use yaml::ConfigError;

/// Whether `path` names a YAML file (by its extension), which `--config` reads as a Model Zoo
/// config; anything else is our TOML.
pub fn is_yaml(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// The file the run folder keeps the report in.
pub const REPORT_FILE: &str = "cerebras-config-report.txt";

#[cfg(test)]
mod tests;
