//! `h5gpt eval`: a checkpoint's loss and perplexity over a shard directory, or a model's accuracy on
//! a task file (`--task`: [`crate::task_eval`]).

use crate::checkpoint::{check_data_against, check_data_tokenizer, LoadedModel, SavedTokenizer};
use crate::evaluate::evaluate;
use crate::inference::{Inference, LoadInference};
use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use h5gpt_core::options::inference::EvalArgs;
use h5gpt_formats::exit::{check_at_least_one, report, with_hint};
use h5gpt_formats::split::SplitDirs;
use h5gpt_formats::ShardSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Runs `eval` on `args` (the program name first), reporting itself as `bin` in usage lines.
pub fn main(bin: &str, args: Vec<OsString>) -> ExitCode {
    report("eval", run(super::parse(EvalArgs::command(), bin, args)))
}

fn run(args: EvalArgs) -> Result<()> {
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
        ..
    } = super::load_model(&args.model)?;
    let dir = eval_dir(shards)?;
    let set = ShardSet::open(&[&dir])
        .with_context(|| format!("cannot open shards in {}", dir.display()))?;
    check_shards_fit_model(&args, &loaded, &set, &dir)?;
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

/// The rows to evaluate on: a split's val/ rows, or a plain shard directory's rows (a split
/// without val/ is an error).
fn eval_dir(shards: &Path) -> Result<PathBuf> {
    let split = SplitDirs::of(shards);
    Ok(match split.val {
        Some(val) => val,
        None if split.is_split => bail!(with_hint(
            format!(
                "{}: a train/val split without val/: no rows to evaluate on",
                shards.display()
            ),
            format!(
                "point --shards at {} to evaluate on the training rows",
                split.train.display()
            ),
        )),
        None => split.train,
    })
}

/// Checks the shards are of the model's tokenizer (`--tokenizer`, or the checkpoint's), their
/// ids within its embedding and their rows within its context.
fn check_shards_fit_model(
    args: &EvalArgs,
    loaded: &LoadedModel,
    set: &ShardSet,
    dir: &Path,
) -> Result<()> {
    match &args.model.tokenizer {
        // The shards must be of the tokenizer the user says the model was trained with.
        Some(_) => {
            let t = args.model.tokenizer(loaded)?;
            let given = SavedTokenizer {
                name: t.name().to_string(),
                json: t.json().map(<[u8]>::to_vec),
                eos_id: Some(t.eos_id()),
            };
            check_data_against(&loaded.path, &given, set)?;
        }
        None => check_data_tokenizer(&loaded.path, &loaded.state, set)?,
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
    Ok(())
}

/// `eval --task`: what to score and where the results go.
#[derive(Debug, Clone)]
struct TaskRun {
    /// The task file.
    path: std::path::PathBuf,
    /// The first N items only.
    limit: Option<usize>,
    /// Requests per forward pass.
    batch_rows: usize,
    /// Print one JSON object instead of text.
    json: bool,
    /// Write per-item results here (jsonl).
    per_item: Option<std::path::PathBuf>,
}

impl TaskRun {
    /// Reads the task, scores it with `scorer` (a progress bar on stderr) and prints the
    /// results; writes the per-item file when asked.
    fn run(&self, scorer: &crate::inference::ScoringModel) -> Result<()> {
        use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
        let task = h5gpt_formats::task::Task::read(&self.path, self.limit)?;
        if let Some(note) = &scorer.note {
            eprintln!("{note}");
        }
        eprintln!(
            "eval: {} ({} items, {}) with {}{} on {:?}, {}",
            task.path.display(),
            task.items.len(),
            task.format.name(),
            scorer.source.display(),
            scorer
                .step
                .map(|s| format!(" (step {s})"))
                .unwrap_or_default(),
            scorer.device,
            scorer.precision.name()
        );
        let bar = ProgressBar::with_draw_target(
            Some(crate::task_eval::request_count(&task) as u64),
            ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {pos}/{len} continuations [{elapsed_precise} < {eta_precise}]",
            )
            .expect("valid template"),
        );
        let options = crate::task_eval::ScoreOptions {
            batch_rows: self.batch_rows,
            device: scorer.device,
            precision: scorer.precision,
        };
        let started = std::time::Instant::now();
        let scores = crate::task_eval::score_task(
            &scorer.model,
            &scorer.tokenizer,
            &task,
            options,
            &mut |n| bar.inc(n as u64),
        )?;
        let seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        if let Some(path) = &self.per_item {
            let mut text = String::new();
            for item in &scores.per_item {
                text.push_str(&serde_json::to_string(item)?);
                text.push('\n');
            }
            h5gpt_formats::fsio::write_atomic(path, text.as_bytes())?;
        }
        if self.json {
            let mut value = serde_json::to_value(&scores)?;
            value["model"] = serde_json::json!(scorer.source);
            value["step"] = serde_json::json!(scorer.step);
            value["file"] = serde_json::json!(task.path);
            value["seconds"] = serde_json::json!(seconds);
            println!("{value}");
        } else {
            println!("{}", scores.summary());
            eprintln!(
                "eval: {} items in {seconds:.1}s ({:.1} items/s)",
                scores.items,
                scores.items as f64 / seconds.max(1e-9)
            );
        }
        Ok(())
    }
}
