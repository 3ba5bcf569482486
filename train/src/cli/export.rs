//! `h5gpt export`: a checkpoint as a Hugging Face GPT-2 model directory (see [`crate::hf`]);
//! `h5gpt-export` is the same command under its earlier name, deprecated.

use crate::checkpoint::{load_model, load_tokenizer};
use crate::hf::{export_with_tokenizer, Replace, CONFIG_FILE, WEIGHTS_FILE};
use anyhow::{Context, Result};
use clap::CommandFactory;
use h5gpt_core::options::inference::ExportArgs;
use h5gpt_formats::exit::report;
use std::ffi::OsString;
use std::process::ExitCode;
use tch::Device;

/// Runs `export` on `args` (the program name first), reporting itself as `bin` in usage lines
/// and `name` in its messages.
pub fn main(name: &str, bin: &str, args: Vec<OsString>) -> ExitCode {
    report(
        name,
        run(name, super::parse(ExportArgs::command(), bin, args)),
    )
}

fn run(bin: &str, args: ExportArgs) -> Result<()> {
    let loaded = load_model(&args.checkpoint, Device::Cpu)?;
    let config = loaded.state.model;
    println!(
        "{bin}: checkpoint {} (step {})",
        loaded.path.display(),
        loaded.state.step
    );
    println!("{bin}: model {config:?}");
    // Tokenizer files only for the tokenizer whose vocabulary the model has.
    let loaded_tokenizer = load_tokenizer(&loaded.path, &loaded.state);
    let usable = loaded_tokenizer
        .as_ref()
        .ok()
        .filter(|t| t.vocab_size() as usize == config.vocab_size);
    let replace = if args.force {
        Replace::Force
    } else {
        Replace::ExportsOnly
    };
    export_with_tokenizer(&loaded.vs, &config, &args.hf, usable, replace)
        .with_context(|| format!("cannot export to {}", args.hf.display()))?;
    let params = config.breakdown_unpadded().total();
    println!(
        "{bin}: wrote {} and {}",
        args.hf.join(WEIGHTS_FILE).display(),
        args.hf.join(CONFIG_FILE).display()
    );
    println!(
        "{bin}: {params} parameters, vocab {} (embedding rows {} in the checkpoint), \
         n_ctx {}, {} layers × {} heads × width {}",
        config.vocab_size,
        config.embedding_rows(),
        config.n_ctx,
        config.n_layer,
        config.n_head,
        config.n_embd
    );
    match (usable, &loaded_tokenizer) {
        (Some(t), _) => println!(
            "{bin}: tokenizer `{}` written beside it: load both with \
             AutoModelForCausalLM.from_pretrained({dir:?}) and AutoTokenizer.from_pretrained({dir:?})",
            t.name(),
            dir = args.hf.display().to_string()
        ),
        (None, Ok(t)) => println!(
            "{bin}: no tokenizer files written: the checkpoint's tokenizer `{}` has {} tokens, \
             the model's vocabulary {}",
            t.name(),
            t.vocab_size(),
            config.vocab_size
        ),
        (None, Err(_)) => println!(
            "{bin}: no tokenizer files written: the model was trained on `{}` tokens",
            loaded.state.tokenizer
        ),
    }
    Ok(())
}
