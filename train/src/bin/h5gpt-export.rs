//! `h5gpt-export`: `h5gpt export` under its earlier name, kept for one release (deprecated).

fn main() -> std::process::ExitCode {
    eprintln!("h5gpt-export: deprecated: use `h5gpt export` (this name goes in the next release)");
    h5gpt_train::cli::export::main(
        "h5gpt-export",
        "h5gpt-export",
        std::env::args_os().collect(),
    )
}
