//! The commands that run on libtorch, as entry points that the `train`, `h5gpt-torch` and
//! `h5gpt-export` executables call with their arguments: `train`, `sample`, `eval` and
//! `export`. Their options are declared in [`h5gpt_core::options`], where `h5gpt` (which links
//! no libtorch) reads them for its help, completions and man pages.

pub mod eval;
pub mod export;
pub mod sample;
pub mod train;

use clap::FromArgMatches;
use std::ffi::OsString;

/// Parses `args` (the program name first) with `command` (`P::command()`, or `train`'s with its
/// stated defaults) as `P`, naming the command `bin` in usage lines (`h5gpt train`, or `train`
/// for the standalone executable); exits as clap does on `--help`, `--version` or a usage
/// error (exit 2).
pub fn parse<P: FromArgMatches>(command: clap::Command, bin: &str, args: Vec<OsString>) -> P {
    let matches = command.bin_name(bin.to_string()).get_matches_from(args);
    P::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Loads the model `args` names (`sample`, `eval`) and prints the note on the device choice, if
/// any, to stderr.
fn load_model(
    args: &crate::inference::InferenceArgs,
) -> anyhow::Result<crate::inference::Inference> {
    use crate::inference::LoadInference;
    let inference = args.load()?;
    if let Some(note) = &inference.note {
        eprintln!("{note}");
    }
    Ok(inference)
}

/// What `h5gpt --version` reports of this executable: the libtorch it runs on and whether it
/// has a usable CUDA backend, one `key: value` line each.
pub fn version_info() -> String {
    let cuda = match crate::device::cuda_unusable_reason() {
        None => format!("yes ({} GPU(s) usable)", tch::Cuda::device_count()),
        Some(reason) => {
            let built_in = if crate::shim::cuda_backend_linked() {
                "built in"
            } else {
                "not built in"
            };
            let why = reason.lines().next().unwrap_or_default();
            format!("{built_in}, no GPU usable here: {why}")
        }
    };
    format!("libtorch: {}\ncuda: {cuda}\n", crate::shim::torch_version())
}
