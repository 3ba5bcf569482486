//! `train`: the standalone entry point of `h5gpt train`, kept for scripts and torchrun lines
//! that call it (`torchrun --no-python … train …`). See `h5gpt train --help` and docs/train.md.

fn main() -> std::process::ExitCode {
    h5gpt_train::cli::train::main("train", std::env::args_os().collect())
}
