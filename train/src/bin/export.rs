//! `export`: a checkpoint as a Hugging Face GPT-2 model directory (see [`h5gpt_train::hf`]).
//! The same command ships as `h5gpt-export`, since a bare `export` is a shell builtin.

fn main() -> std::process::ExitCode {
    h5gpt_train::hf::cli_main("export")
}
