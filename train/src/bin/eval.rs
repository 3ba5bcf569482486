//! `eval`: a checkpoint's loss and perplexity over a shard directory, or a model's accuracy on
//! a task file (`--task`: [`h5gpt_train::task_eval`]).

use anyhow::{bail, Context, Result};
use clap::Parser;
use h5gpt_formats::exit::check_at_least_one;
use h5gpt_formats::split::SplitDirs;
use h5gpt_formats::ShardSet;
use h5gpt_train::checkpoint::{check_data_against, check_data_tokenizer, SavedTokenizer};
use h5gpt_train::evaluate::evaluate;
use h5gpt_train::inference::{Inference, InferenceArgs};
use h5gpt_train::task_eval::TaskRun;
use std::path::PathBuf;
use std::process::ExitCode;

/// Loss and perplexity of a checkpoint over a shard directory (its `val/` when it has one), or
/// accuracy on a multiple-choice or LAMBADA task file (`--task`, see docs/eval.md).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    model: InferenceArgs,
    /// Shard directory (a directory with `val/` is evaluated on `val/`).
    #[arg(long, required_unless_present = "task", conflicts_with = "task")]
    shards: Option<PathBuf>,
    /// A task file (jsonl: HellaSwag, `{context, choices, answer}` or LAMBADA) to score
    /// instead of --shards: accuracy as lm-evaluation-harness computes it (docs/eval.md).
    #[arg(long, value_name = "FILE.jsonl")]
    task: Option<PathBuf>,
    /// With --task: score the first N items only. [default: all]
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// With --task: write each item's log-likelihoods and predictions to FILE (jsonl).
    #[arg(long, value_name = "FILE", requires = "task")]
    per_item: Option<PathBuf>,
    /// Rows per forward pass, at least 1 (with --task: continuations per forward pass).
    #[arg(long, default_value_t = 8)]
    micro_batch: usize,
    /// Evaluate at most this many rows (at least 1). [default: all]
    #[arg(long)]
    max_rows: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eval: error: {e:#}");
            ExitCode::from(h5gpt_formats::exit::exit_code(e.as_ref()))
        }
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    check_at_least_one("--micro-batch", args.micro_batch)?;
    if let Some(rows) = args.max_rows {
        check_at_least_one("--max-rows", rows)?;
    }
    if let Some(task) = &args.task {
        let options = TaskRun {
            path: task.clone(),
            limit: args.limit,
            batch_rows: args.micro_batch,
            json: args.json,
            per_item: args.per_item.clone(),
        };
        return options.run(&args.model.load_for_scoring()?);
    }
    let Some(shards) = &args.shards else {
        bail!("--shards DIR or --task FILE is needed");
    };
    let Inference {
        loaded,
        device,
        precision,
        note,
    } = args.model.load()?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    // A split's val/ rows, or a plain shard directory's rows.
    let split = SplitDirs::of(shards);
    let dir = match split.val {
        Some(val) => val,
        None if split.is_split => bail!(
            "{}: a train/val split without val/: no rows to evaluate on\n---> HINT: point --shards at {} to evaluate on the training rows",
            shards.display(),
            split.train.display()
        ),
        None => split.train,
    };
    let set = ShardSet::open(&[&dir])
        .with_context(|| format!("cannot open shards in {}", dir.display()))?;
    match &args.model.tokenizer {
        // The shards must be of the tokenizer the user says the model was trained with.
        Some(_) => {
            let t = args.model.tokenizer(&loaded)?;
            let given = SavedTokenizer {
                name: t.name().to_string(),
                json: t.json().map(<[u8]>::to_vec),
                eos_id: Some(t.eos_id()),
            };
            check_data_against(&loaded.path, &given, &set)?;
        }
        None => check_data_tokenizer(&loaded.path, &loaded.state, &set)?,
    }
    let model_rows = loaded.model.config().embedding_rows();
    if let Some(vocab) = set.data_params().and_then(|p| p.post_process.vocab_size) {
        if vocab as usize > model_rows {
            bail!(
                "{}: the shards' vocabulary ({vocab} tokens) is larger than the model's ({model_rows}): their ids would reach past its embedding",
                dir.display()
            );
        }
    }
    if set.seq_len() > loaded.model.config().n_ctx {
        bail!(
            "{}: rows of {} tokens do not fit the model's context of {}",
            dir.display(),
            set.seq_len(),
            loaded.model.config().n_ctx
        );
    }
    let result = evaluate(
        &loaded.model,
        &set,
        args.micro_batch,
        args.max_rows,
        device,
        precision,
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "checkpoint": loaded.path,
                "step": loaded.state.step,
                "shards": dir,
                "rows": result.rows,
                "tokens": result.tokens,
                "loss": result.loss,
                "perplexity": result.perplexity(),
            })
        );
    } else {
        println!(
            "{} (step {}) on {}: loss {:.4} | perplexity {:.2} | {} rows, {} tokens",
            loaded.path.display(),
            loaded.state.step,
            dir.display(),
            result.loss,
            result.perplexity(),
            result.rows,
            result.tokens
        );
    }
    Ok(())
}
