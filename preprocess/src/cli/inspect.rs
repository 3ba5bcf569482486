//! `h5gpt inspect`: summary, decoded samples and invariant checks of h5gpt / Cerebras shard sets.

use crate::cli::report::{print_epochs, print_find, print_human, print_step};
use crate::inspect::{run, InspectOptions};
use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Summarize, show and verify HDF5 shard sets (h5gpt or Cerebras Model Zoo layout).
#[derive(Debug, Parser)]
#[command(name = "inspect", version, about)]
pub struct InspectArgs {
    /// Shard directories and/or `.h5` files.
    #[arg(required_unless_present = "run")]
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
    /// Count the rows that are exact duplicates of an earlier row, and those that MinHash over
    /// token 5-grams finds nearly are (Jaccard ≥ 0.8): all but the first of each cluster.
    #[arg(long)]
    duplicates: bool,
    /// Violations to list with --verify (at least 1).
    #[arg(long, default_value_t = 20, value_name = "N")]
    max_violations: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Audit training run directory RUN (written by `train`) instead of shards: with --step,
    /// --check-epochs or --find. Reads RUN/segments.jsonl, its checkpoints and metrics.jsonl.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["inputs", "show", "verify"])]
    run: Option<PathBuf>,
    /// With --run: the (shard, row) ids step K fed to each rank and micro-batch (--decode
    /// prints their text).
    #[arg(long, value_name = "K", requires = "run")]
    step: Option<usize>,
    /// With --run: walk the run's whole schedule (through resumes and world-size changes) and
    /// check that every row is read exactly once per epoch (per set, for a blend); exit with
    /// status 1 if not.
    #[arg(long, requires = "run")]
    check_epochs: bool,
    /// With --run: the steps whose batches contained TEXT (a match may span two consecutive
    /// rows: both are reported).
    #[arg(long, value_name = "TEXT", requires = "run")]
    find: Option<String>,
}

fn audit(args: &InspectArgs, run_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    use crate::run_inspect as ri;
    let audit = h5gpt_formats::audit::RunAudit::open(run_dir)?;
    let print_json = |v: &dyn erased::Json| println!("{}", v.json());
    if let Some(step) = args.step {
        let report = ri::step_report(&audit, step, args.decode)?;
        if args.json {
            print_json(&report);
        } else {
            print_step(&report);
        }
    }
    if let Some(text) = &args.find {
        let report = ri::find(&audit, text)?;
        if args.json {
            print_json(&report);
        } else {
            print_find(&report);
        }
    }
    if args.check_epochs {
        let report = audit.check_epochs()?;
        if args.json {
            print_json(&report);
        } else {
            print_epochs(&report);
        }
        if !report.ok {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

mod erased {
    /// Pretty JSON of any serializable report.
    pub trait Json {
        fn json(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string_pretty(self).expect("serializable")
        }
    }
}

/// Refuses (exit 2, like a missing `--shards` elsewhere) a path given on the command line
/// that does not exist or cannot be opened, and a count out of range.
fn check_args(args: &InspectArgs) -> Result<(), h5gpt_formats::exit::UsageError> {
    use h5gpt_formats::exit::UsageError;
    h5gpt_formats::exit::check_at_least_one("--max-violations", args.max_violations)?;
    let paths = args.inputs.iter().map(|p| ("", p));
    for (flag, path) in paths.chain(args.run.iter().map(|p| ("--run ", p))) {
        let opened = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => std::fs::read_dir(path).map(drop),
            Ok(_) => std::fs::File::open(path).map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = opened {
            return Err(UsageError::new(format!(
                "{flag}{}: cannot open: {e}",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Runs `inspect` with `args` (parsed by `h5gpt`); the exit code: 1 when a check fails.
pub fn run_command(args: InspectArgs) -> ExitCode {
    if let Err(e) = check_args(&args) {
        eprintln!("inspect: error: {e}");
        return ExitCode::from(h5gpt_formats::exit::USAGE);
    }
    if let Some(run_dir) = &args.run {
        if args.step.is_none() && !args.check_epochs && args.find.is_none() {
            eprintln!("inspect: error: --run needs --step K, --check-epochs or --find TEXT");
            return ExitCode::from(2);
        }
        return match audit(&args, run_dir) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("inspect: error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let options = InspectOptions {
        inputs: args.inputs.clone(),
        show: args.show,
        decode: args.decode,
        verify: args.verify,
        max_violations: args.max_violations,
        progress: std::io::stderr().is_terminal(),
        duplicates: args.duplicates,
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
            ExitCode::from(h5gpt_formats::exit::exit_code(e.as_ref()))
        }
    }
}
