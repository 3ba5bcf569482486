//! `sample`: text from a trained model's checkpoint.

use anyhow::{bail, Result};
use clap::Parser;
use h5gpt_train::checkpoint::load_tokenizer;
use h5gpt_train::generate::{generate, SampleOptions};
use h5gpt_train::inference::{Inference, InferenceArgs};
use std::process::ExitCode;

/// Generate text from a checkpoint (a run directory: its newest checkpoint).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    model: InferenceArgs,
    /// Text to continue. [default: start of a document]
    #[arg(long, default_value = "")]
    prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200)]
    max_new_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Sample among the k most likely tokens (1: greedy).
    #[arg(long, default_value_t = 200)]
    top_k: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Samples to draw (seeds seed, seed+1, …).
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sample: error: {e:#}");
            ExitCode::from(h5gpt_formats::exit::exit_code(e.as_ref()))
        }
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    let Inference {
        loaded,
        device,
        precision,
        note,
    } = args.model.load()?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    let tokenizer = load_tokenizer(&loaded.path, &loaded.state)?;
    let mut prompt: Vec<i64> = tokenizer
        .encode(&args.prompt)
        .into_iter()
        .map(i64::from)
        .collect();
    if prompt.is_empty() {
        prompt.push(i64::from(tokenizer.eos_id()));
    }
    if args.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    eprintln!(
        "sample: {} (step {}) on {device:?}, {}",
        loaded.path.display(),
        loaded.state.step,
        precision.name()
    );
    for i in 0..args.num_samples.max(1) {
        let new = generate(
            &loaded.model,
            &prompt,
            SampleOptions {
                max_new_tokens: args.max_new_tokens,
                temperature: args.temperature,
                top_k: Some(args.top_k),
                seed: args.seed + i as u64,
            },
            device,
            precision,
        )?;
        // The prompt is decoded with the continuation: word-level tokenizers put their spaces
        // between tokens, and byte-level ones give the prompt back exactly.
        let skip = usize::from(args.prompt.is_empty());
        let ids: Vec<u32> = prompt[skip..]
            .iter()
            .chain(&new)
            .map(|&t| t as u32)
            .collect();
        if i > 0 {
            println!("---------------");
        }
        println!("{}", tokenizer.decode_lossy(&ids));
    }
    Ok(())
}
