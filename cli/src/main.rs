//! `h5gpt`: one command for the whole pipeline, as cargo and git have.
//!
//! `h5gpt` itself links no libtorch: `preprocess`, `inspect` and `plan` run in this process, so
//! a data-preparation machine needs nothing else. `train`, `sample`, `eval` and `export` run the
//! libtorch-linked `h5gpt-torch` (built by the `h5gpt-train` crate), found beside this
//! executable or on `PATH`: this process execs it with the same arguments and environment, so
//! `torchrun --no-python … h5gpt train …` works as `train …` does (see [`torch`]).
//! `completions` and `man` are generated from the same declarations the commands parse.

mod plan;
mod torch;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use clap_complete::Shell;
use h5gpt_core::options::inference::{EvalArgs, ExportArgs, SampleArgs};
use h5gpt_core::options::train::TrainOptions;
use h5gpt_formats::exit::report;
use h5gpt_preprocess::cli::inspect::InspectArgs;
use h5gpt_preprocess::cli::preprocess::PreprocessArgs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Pretrain GPT-2/GPT-3 style language models on HDF5 corpora: raw text to shards
/// (`preprocess`), shards checked (`inspect`), a run planned (`plan`), trained (`train`),
/// sampled (`sample`), evaluated (`eval`) and exported to Hugging Face (`export`).
#[derive(Debug, Parser)]
#[command(name = "h5gpt", disable_version_flag = true)]
struct Cli {
    /// Print the version, the libtorch that `h5gpt-torch` runs on and whether it has CUDA.
    #[arg(short = 'V', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The subcommands. The variants' arguments are the commands' own declarations.
#[derive(Debug, Subcommand)]
enum Command {
    /// Raw text (txt, jsonl, jsonl.zst, parquet) → tokens → packed rows → HDF5 shards and
    /// `data_params.json`.
    Preprocess(PreprocessArgs),
    /// Summarize, show and verify HDF5 shard sets, or audit which rows a run's step saw.
    Inspect(InspectArgs),
    /// Train a GPT-2/GPT-3 style model on a shard directory (runs `h5gpt-torch`).
    Train(Box<TrainOptions>),
    /// Generate text from a checkpoint (runs `h5gpt-torch`).
    Sample(SampleArgs),
    /// Loss and perplexity over shards, or accuracy on a task file (runs `h5gpt-torch`).
    Eval(EvalArgs),
    /// A checkpoint as a Hugging Face GPT-2 model directory (runs `h5gpt-torch`).
    Export(ExportArgs),
    /// Parameters, FLOPs, predicted loss and training time of a run, scaling-law sweeps and
    /// fits.
    Plan(plan::PlanArgs),
    /// Print a shell completion script: `h5gpt completions bash > ~/.local/share/bash-completion/completions/h5gpt`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write man pages (h5gpt.1 and h5gpt-COMMAND.1 for each command) into DIR.
    Man {
        /// The folder (created if missing).
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The libtorch commands go to `h5gpt-torch` before any parsing here, with their arguments
    // untouched: it parses them with the same declarations and reports its own usage errors.
    if let Some(command) = args.get(1).and_then(|a| a.to_str()) {
        if torch::COMMANDS.contains(&command) {
            return torch::run(&args[1..]);
        }
    }
    let matches = command_tree().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if cli.version {
        print!("{}", torch::version_report());
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        // No command: the help, as a usage error.
        let _ = command_tree().print_help();
        return ExitCode::from(h5gpt_formats::exit::USAGE);
    };
    match command {
        Command::Preprocess(args) => {
            report("preprocess", h5gpt_preprocess::cli::preprocess::run(args))
        }
        Command::Inspect(args) => h5gpt_preprocess::cli::inspect::run_command(args),
        Command::Plan(args) => report("plan", plan::run(args)),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut command_tree(), "h5gpt", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man { dir } => report("man", write_man_pages(&dir)),
        Command::Train(_) | Command::Sample(_) | Command::Eval(_) | Command::Export(_) => {
            unreachable!("the libtorch commands are handed to h5gpt-torch before parsing")
        }
    }
}

/// The whole command tree, with `train`'s declared defaults in its help (as `h5gpt-torch train
/// --help` shows them).
fn command_tree() -> clap::Command {
    Cli::command().mut_subcommand("train", TrainOptions::with_stated_defaults)
}

/// Writes `h5gpt.1` and one `h5gpt-COMMAND.1` per command into `dir`, each atomically.
fn write_man_pages(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let root = command_tree().version(env!("CARGO_PKG_VERSION"));
    let mut pages = vec![("h5gpt".to_string(), root.clone())];
    for sub in root.get_subcommands() {
        // clap names a command with a `&'static str` (its `string` feature is off); a page
        // name lives as long as this short process anyway.
        let name: &'static str = format!("h5gpt-{}", sub.get_name()).leak();
        pages.push((name.to_string(), sub.clone().name(name)));
    }
    for (name, command) in pages {
        let mut page = Vec::new();
        clap_mangen::Man::new(command).render(&mut page)?;
        let path = dir.join(format!("{name}.1"));
        h5gpt_formats::fsio::write_atomic(&path, &page)?;
        println!("{}", path.display());
    }
    Ok(())
}
