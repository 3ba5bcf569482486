//! `sample`: text from a trained model's checkpoint.

use anyhow::Result;
use clap::Parser;
use h5gpt_formats::exit::{check_at_least_one, check_finite_within};
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
    /// Sampling temperature, finite and at least 0 (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Sample among the k most likely tokens, at least 1 (1: greedy).
    #[arg(long, default_value_t = 200)]
    top_k: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Samples to draw, at least 1 (seeds seed, seed+1, …).
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
    check_finite_within("--temperature", args.temperature, 0.0, f64::INFINITY)?;
    check_at_least_one("--top-k", args.top_k)?;
    check_at_least_one("--num-samples", args.num_samples)?;
    if args.seed.checked_add(args.num_samples as u64 - 1).is_none() {
        return Err(h5gpt_formats::exit::UsageError::new(format!(
            "--seed {} with --num-samples {}: the seeds seed, seed+1, … overflow",
            args.seed, args.num_samples
        ))
        .into());
    }
    let Inference {
        loaded,
        device,
        precision,
        note,
    } = args.model.load()?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    let tokenizer = args.model.tokenizer(&loaded)?;
    let mut prompt: Vec<i64> = tokenizer
        .encode(&args.prompt)
        .into_iter()
        .map(i64::from)
        .collect();
    if prompt.is_empty() {
        prompt.push(i64::from(tokenizer.eos_id()));
    }
    eprintln!(
        "sample: {} (step {}) on {device:?}, {}",
        loaded.path.display(),
        loaded.state.step,
        precision.name()
    );
    for i in 0..args.num_samples {
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
