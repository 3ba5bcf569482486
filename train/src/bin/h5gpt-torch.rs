//! `h5gpt-torch`: the libtorch-linked half of `h5gpt`. `h5gpt train|sample|eval|export …` runs
//! `h5gpt-torch train|sample|eval|export …` from the folder `h5gpt` is in (or from `PATH`);
//! `h5gpt-torch version-info` is what `h5gpt --version` prints of libtorch and CUDA.

use h5gpt_train::cli;
use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(command) = args.next() else {
        eprintln!("h5gpt-torch: run by `h5gpt`: h5gpt train|sample|eval|export [OPTIONS]");
        return ExitCode::from(h5gpt_formats::exit::USAGE);
    };
    let name = command.to_string_lossy().into_owned();
    let argv: Vec<OsString> = std::iter::once(command).chain(args).collect();
    let bin = format!("h5gpt {name}");
    match name.as_str() {
        "train" => cli::train::main(&bin, argv),
        "sample" => cli::sample::main(&bin, argv),
        "eval" => cli::eval::main(&bin, argv),
        "export" => cli::export::main("export", &bin, argv),
        "version-info" => {
            print!("{}", cli::version_info());
            ExitCode::SUCCESS
        }
        other => {
            eprintln!(
                "h5gpt-torch: `{other}` is not a command here: train, sample, eval or export"
            );
            ExitCode::from(h5gpt_formats::exit::USAGE)
        }
    }
}
