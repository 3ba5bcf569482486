//! `train` (and `h5gpt train`): a GPT-2/GPT-3 style model on h5gpt shards. See `h5gpt train
//! --help` and docs/train.md.

use crate::distributed::Launch;
use crate::options::{resolve, TrainOptions};
use crate::panics;
use crate::trainer::{train, RunHandles, TrainConfig, TrainSummary};
use anyhow::Result;
use h5gpt_core::config::PRESETS;
use h5gpt_formats::exit::{exit_code, RUNTIME};
use h5gpt_formats::lock::RunLock;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Runs `train` on `args` (the program name first), reporting itself as `bin` in usage lines;
/// the exit code as docs/train.md states it.
pub fn main(bin: &str, args: Vec<OsString>) -> ExitCode {
    // libtorch errors arrive as panics; the trainer turns them into errors with hints, so the
    // hook keeps quiet about those, and reports any other panic (a bug) with its file:line.
    panics::install_hook();
    match std::panic::catch_unwind(|| run(bin, args)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("train: error: {e:#}");
            ExitCode::from(exit_code(e.as_ref()))
        }
        Err(payload) => {
            let message = panics::panic_message(payload.as_ref());
            eprintln!("train: internal error (a bug; please report it): {message}");
            ExitCode::from(RUNTIME)
        }
    }
}

fn list_models() {
    println!(
        "{:<20} {:>7} {:>6} {:>6} {:>6} {:>9} {:>10} {:>12}  source",
        "preset", "layers", "heads", "width", "n_ctx", "params", "lr", "batch tok"
    );
    for p in PRESETS {
        let cfg = p.config(None);
        println!(
            "{:<20} {:>7} {:>6} {:>6} {:>6} {:>8.1}M {:>10.1e} {:>12}  {}",
            p.name,
            p.n_layer,
            p.n_head,
            p.n_embd,
            p.n_ctx.map_or("data".into(), |c| c.to_string()),
            cfg.breakdown_unpadded().total() as f64 / 1e6,
            p.lr,
            p.total_batch_tokens,
            p.source
        );
    }
}

/// A flag raised by SIGINT or SIGTERM (the run checkpoints and stops); a second signal while
/// the first is being handled kills the process.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while the first is being handled kills the process.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// The effective settings on stderr: data, model, precision, device, batches and LR, and
/// the process group of a distributed run.
fn print_settings(config: &TrainConfig, model_name: &str, handles: &RunHandles) {
    let model = config.model;
    let counted = model.breakdown();
    eprintln!(
        "train: {} -> {} | model {} L{} H{} E{} T{} | {:.2}M parameters ({:.2}M with the {}-token vocabulary unpadded, {:.2}M without embeddings) | {} on {:?} | micro-batch {} | total batch {} | lr {:e}",
        crate::data::describe(&config.shards),
        config.out.display(),
        model_name,
        model.n_layer,
        model.n_head,
        model.n_embd,
        model.n_ctx,
        counted.total() as f64 / 1e6,
        model.breakdown_unpadded().total() as f64 / 1e6,
        model.vocab_size,
        counted.non_embedding() as f64 / 1e6,
        config.precision.name(),
        config.device,
        config.micro_batch,
        match config.batch_rows {
            Some(rows) => format!("{rows} rows"),
            None => format!("{} tokens", config.total_batch_tokens),
        },
        config.lr,
    );
    if let Some(launch) = &handles.launch {
        eprintln!(
            "train: rank 0 of {} | store {}:{} ({:?})",
            launch.world_size, launch.master_addr, launch.master_port, launch.launcher
        );
    }
}

/// How the run ended: stopped (and where it saved), nothing to do, or done.
fn print_outcome(config: &TrainConfig, summary: &TrainSummary) {
    if summary.interrupted {
        println!(
            "stopped at step {} of {}; checkpoint {}",
            summary.end_step,
            summary.total_steps,
            summary
                .checkpoint
                .as_ref()
                .map_or("-".into(), |p| p.display().to_string())
        );
    } else if summary.start_step > summary.total_steps {
        println!(
            "done: nothing to train: the run is already at step {}, past the {} steps asked \
             (--max-steps, --max-tokens or --epochs) | {}",
            summary.start_step,
            summary.total_steps,
            config.out.display()
        );
    } else {
        println!(
            "done: steps {}..{} of {} | {}",
            summary.start_step,
            summary.end_step,
            summary.total_steps,
            config.out.display()
        );
    }
}

fn run(bin: &str, args: Vec<OsString>) -> Result<()> {
    // The declared defaults go into the help (`TrainOptions::command_with_defaults`).
    let cli: TrainOptions = super::parse(TrainOptions::command_with_defaults(), bin, args);
    if cli.list_models {
        list_models();
        return Ok(());
    }
    let resolved = resolve(cli)?;
    if let Some(threads) = resolved.options.threads {
        tch::set_num_threads(threads as i32);
    }
    let config = resolved.config;
    // Under torchrun or srun: this process is one rank; only rank 0 prints and writes.
    let mut handles = RunHandles {
        launch: Launch::from_env()?,
        ..RunHandles::default()
    };
    let rank0 = handles.launch.as_ref().is_none_or(|l| l.rank == 0);
    if rank0 {
        if let Some(report) = &config.config_report {
            print!("{report}");
        }
        for note in &resolved.notes {
            println!("{note}");
        }
    }
    handles.stop = Some(stop_on_signals()?);
    handles.progress = rank0 && std::io::stderr().is_terminal();
    if !rank0 {
        train(&config, &handles, &mut |_| {})?;
        return Ok(());
    }
    // One writer per run folder: a second `train --out` into it stops here.
    let lock = RunLock::acquire(&config.out, "train", "--out")?;
    if let Some(stale) = lock.took_over() {
        println!(
            "note: took over the lock left by {stale} ({})",
            lock.path().display()
        );
    }
    // Written by the trainer once the run has started, so a failed start leaves nothing.
    handles.config_toml = Some(resolved.options.to_toml()?);
    print_settings(&config, &resolved.model_name, &handles);
    let summary = train(&config, &handles, &mut |line| println!("{line}"))?;
    print_outcome(&config, &summary);
    Ok(())
}
