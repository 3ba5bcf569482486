//! `preprocess`: the standalone entry point of `h5gpt preprocess`, kept for scripts that call
//! it. See `h5gpt preprocess --help` and docs/preprocess.md.

use clap::Parser;
use h5gpt_preprocess::cli::preprocess::{run, PreprocessArgs};

fn main() -> std::process::ExitCode {
    h5gpt_formats::exit::report("preprocess", run(PreprocessArgs::parse()))
}
