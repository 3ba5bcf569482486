//! `h5gpt sample`: text from a trained model's checkpoint.

use crate::generate::{generate, SampleOptions};
use crate::inference::{Inference, LoadInference};
use anyhow::Result;
use clap::CommandFactory;
use h5gpt_core::options::inference::SampleArgs;
use h5gpt_formats::exit::{check_at_least_one, check_finite_within, report};
use std::ffi::OsString;
use std::process::ExitCode;

/// Runs `sample` on `args` (the program name first), reporting itself as `bin` in usage lines.
pub fn main(bin: &str, args: Vec<OsString>) -> ExitCode {
    report(
        "sample",
        run(super::parse(SampleArgs::command(), bin, args)),
    )
}

fn run(args: SampleArgs) -> Result<()> {
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
        ..
    } = super::load_model(&args.model)?;
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
