//! `h5gpt-export`: the `export` command under a name no shell shadows (see [`h5gpt_train::hf`]).

fn main() -> std::process::ExitCode {
    h5gpt_train::hf::cli_main("h5gpt-export")
}
