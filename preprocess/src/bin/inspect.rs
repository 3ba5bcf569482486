//! `inspect`: summary, decoded samples and invariant checks of h5gpt / Cerebras shard sets.

use clap::Parser;
use h5gpt_preprocess::inspect::{print_human, run, InspectOptions};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Summarize, show and verify HDF5 shard sets (h5gpt or Cerebras Model Zoo layout).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Shard directories and/or `.h5` files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Print the first N rows.
    #[arg(long, default_value_t = 0, value_name = "N")]
    show: usize,
    /// Print shown rows as text (GPT-2 BPE).
    #[arg(long)]
    decode: bool,
    /// Re-check every row invariant (and stream invariants for `packing: stream`) and every
    /// checksum; exit with status 1 naming the first violations.
    #[arg(long)]
    verify: bool,
    /// Violations to list with --verify.
    #[arg(long, default_value_t = 20, value_name = "N")]
    max_violations: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = InspectOptions {
        inputs: args.inputs,
        show: args.show,
        decode: args.decode,
        verify: args.verify,
        max_violations: args.max_violations,
        progress: std::io::stderr().is_terminal(),
    };
    match run(&options) {
        Ok(out) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&out).expect("serializable")
                );
            } else {
                print_human(&out, args.decode);
            }
            match out.verify {
                Some(v) if !v.ok => ExitCode::from(1),
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("inspect: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
