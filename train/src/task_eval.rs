//! Downstream accuracy of a model on a task file ([`h5gpt_formats::task`]): multiple choice
//! (HellaSwag, `{context, choices, answer}`) and LAMBADA, scored as lm-evaluation-harness
//! scores them (its `_encode_pair`, log-likelihood and `acc`/`acc_norm`), plus build-nanogpt's
//! per-token normalisation under its own name. `eval --task` and `train --eval-task` call
//! [`score_task`]; `docs/eval.md` states the rules.

use crate::model::Gpt;
use crate::precision::Precision;
use anyhow::{bail, Result};
use h5gpt_formats::task::{Scored, Task, TaskFormat};
use h5gpt_tokenizer::tokenizer::Tokenizer;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// One request: the tokens of context and continuation, and how many of them are the
/// continuation's.
#[derive(Debug, Clone)]
struct Request {
    tokens: Vec<i64>,
    continuation: usize,
}

/// lm-evaluation-harness's `_encode_pair`: trailing spaces of the context move to the
/// continuation; the whole string and the context are encoded, and the continuation's tokens
/// are the whole's past the context's. An empty context is the end-of-text token.
fn harness_request(tokenizer: &Tokenizer, context: &str, continuation: &str) -> Request {
    let trimmed = context.trim_end();
    let (context, continuation) = if trimmed.len() < context.len() {
        (
            trimmed,
            format!("{}{continuation}", &context[trimmed.len()..]),
        )
    } else {
        (context, continuation.to_owned())
    };
    let ids =
        |text: &str| -> Vec<i64> { tokenizer.encode(text).into_iter().map(i64::from).collect() };
    if context.is_empty() {
        let cont = ids(&continuation);
        let mut tokens = vec![i64::from(tokenizer.eos_id())];
        let n = cont.len();
        tokens.extend(cont);
        return Request {
            tokens,
            continuation: n,
        };
    }
    let whole = ids(&format!("{context}{continuation}"));
    let context_len = ids(context).len().min(whole.len());
    Request {
        continuation: whole.len() - context_len,
        tokens: whole,
    }
}

/// build-nanogpt's HellaSwag encoding: `ctx` and `" " + ending` encoded separately and
/// concatenated.
fn nanogpt_request(tokenizer: &Tokenizer, context: &str, continuation: &str) -> Request {
    let mut tokens: Vec<i64> = tokenizer
        .encode(context)
        .into_iter()
        .map(i64::from)
        .collect();
    if tokens.is_empty() {
        tokens.push(i64::from(tokenizer.eos_id()));
    }
    let cont: Vec<i64> = tokenizer
        .encode(continuation)
        .into_iter()
        .map(i64::from)
        .collect();
    let n = cont.len();
    tokens.extend(cont);
    Request {
        tokens,
        continuation: n,
    }
}

/// A request's result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Likelihood {
    /// Sum of the continuation tokens' log-probabilities (nats).
    pub loglik: f64,
    /// Every continuation token is the model's greedy (arg-max) choice.
    pub greedy: bool,
    /// Tokens of the continuation.
    pub tokens: usize,
    /// The context was cut on the left to fit the model's context.
    pub truncated: bool,
}

/// How requests are batched.
#[derive(Debug, Clone, Copy)]
pub struct ScoreOptions {
    /// Requests (rows) per forward pass.
    pub batch_rows: usize,
    /// Where the model runs.
    pub device: Device,
    /// In which precision.
    pub precision: Precision,
}

/// Log-likelihoods of `requests`, in their order. Identical requests (an item's harness and
/// build-nanogpt forms usually encode alike) are scored once: see [`score_unique`].
fn loglikelihoods(
    model: &Gpt,
    requests: &[Request],
    options: ScoreOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Likelihood>> {
    let mut index: std::collections::HashMap<(&[i64], usize), usize> =
        std::collections::HashMap::new();
    let (mut unique, mut copies, mut slot) = (Vec::new(), Vec::new(), Vec::new());
    for r in requests {
        let next = unique.len();
        let k = *index
            .entry((r.tokens.as_slice(), r.continuation))
            .or_insert(next);
        if k == next {
            unique.push(r.clone());
            copies.push(0);
        }
        copies[k] += 1;
        slot.push(k);
    }
    let scored = score_unique(model, &unique, &copies, options, progress)?;
    Ok(slot.into_iter().map(|k| scored[k]).collect())
}

/// Log-likelihoods of `requests` as lm-evaluation-harness computes them: the input is
/// `(context + continuation)[-(n_ctx + 1):][:-1]` and the continuation's log-probabilities
/// are read at its last positions. Requests run longest first, `batch_rows` at a time, right-
/// padded within a batch (a causal model's positions do not see the padding after them).
/// `progress` hears of each batch as the `copies` of its requests it stands for.
fn score_unique(
    model: &Gpt,
    requests: &[Request],
    copies: &[usize],
    options: ScoreOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Likelihood>> {
    let n_ctx = model.config().n_ctx;
    let vocab = model.config().vocab_size as i64;
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(requests[i].tokens.len()));
    let mut out = vec![None; requests.len()];
    for chunk in order.chunks(options.batch_rows.max(1)) {
        // Each row's input: all tokens but the last, the last n_ctx of them.
        let inputs: Vec<(&[i64], bool)> = chunk
            .iter()
            .map(|&i| {
                let r = &requests[i];
                if r.continuation == 0 {
                    bail!("a continuation of no tokens (request {i})");
                }
                if r.continuation > n_ctx {
                    bail!(
                        "a continuation of {} tokens does not fit the model's context of {n_ctx}",
                        r.continuation
                    );
                }
                let input = &r.tokens[..r.tokens.len() - 1];
                let cut = input.len().saturating_sub(n_ctx);
                Ok((&input[cut..], cut > 0))
            })
            .collect::<Result<_>>()?;
        let width = inputs.iter().map(|(t, _)| t.len()).max().unwrap_or(1);
        let mut ids = vec![0i64; chunk.len() * width];
        let (mut rows, mut positions, mut targets) = (Vec::new(), Vec::new(), Vec::new());
        for (b, (&i, (input, _))) in chunk.iter().zip(&inputs).enumerate() {
            ids[b * width..b * width + input.len()].copy_from_slice(input);
            let r = &requests[i];
            let targets_of = &r.tokens[r.tokens.len() - r.continuation..];
            for (k, &t) in targets_of.iter().enumerate() {
                rows.push(b as i64);
                positions.push((input.len() - r.continuation + k) as i64);
                targets.push(t);
            }
        }
        let (picked, argmax) = tch::no_grad(|| -> Result<(Vec<f64>, Vec<i64>)> {
            let idx = Tensor::from_slice(&ids)
                .view([chunk.len() as i64, width as i64])
                .to_device(options.device); // (B, T)
            let at = |v: &[i64]| Tensor::from_slice(v).to_device(options.device);
            // The continuation positions only (the head runs at those alone), over the real
            // vocabulary: (N, V).
            let logits = {
                let _autocast = options.precision.autocast(options.device)?;
                model.forward_at(&idx, &at(&rows), &at(&positions))
            };
            let logits = logits.narrow(1, 0, vocab).to_kind(Kind::Float);
            let log_probs = logits.log_softmax(-1, Kind::Float);
            let picked = log_probs
                .gather(1, &at(&targets).unsqueeze(1), false)
                .squeeze_dim(1)
                .to_kind(Kind::Double)
                .to_device(Device::Cpu);
            let argmax = logits.argmax(1, false).to_device(Device::Cpu);
            Ok((
                Vec::<f64>::try_from(&picked)?,
                Vec::<i64>::try_from(&argmax)?,
            ))
        })?;
        let mut at = 0;
        for (&i, (_, truncated)) in chunk.iter().zip(&inputs) {
            let r = &requests[i];
            let span = at..at + r.continuation;
            let targets_of = &r.tokens[r.tokens.len() - r.continuation..];
            out[i] = Some(Likelihood {
                loglik: picked[span.clone()].iter().sum(),
                greedy: argmax[span].iter().zip(targets_of).all(|(a, t)| a == t),
                tokens: r.continuation,
                truncated: *truncated,
            });
            at += r.continuation;
        }
        progress(chunk.iter().map(|&i| copies[i]).sum());
    }
    Ok(out
        .into_iter()
        .map(|l| l.expect("every request scored"))
        .collect())
}

/// An accuracy (or other mean) and its standard error, as lm-evaluation-harness reports it:
/// the sample standard deviation (n − 1) over √n; `None` for fewer than two items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metric {
    /// The value.
    pub value: f64,
    /// Its standard error.
    pub stderr: Option<f64>,
}

impl Metric {
    /// The mean of `xs` and its standard error.
    pub fn mean(xs: &[f64]) -> Metric {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let stderr = (xs.len() > 1).then(|| {
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
            (var / n).sqrt()
        });
        Metric {
            value: mean,
            stderr,
        }
    }
}

/// One item's results.
#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    /// Its index in the file (0-based).
    pub index: usize,
    /// The right continuation.
    pub answer: usize,
    /// Each continuation's log-likelihood (harness form).
    pub loglik: Vec<f64>,
    /// Each continuation's tokens.
    pub tokens: Vec<usize>,
    /// LAMBADA: every target token greedy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub greedy: Option<bool>,
    /// Multiple choice: arg-max of `loglik` (`acc`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pred: Option<usize>,
    /// Multiple choice: arg-max of `loglik` per character (`acc_norm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pred_norm: Option<usize>,
    /// Multiple choice: arg-max of `loglik` per token (`acc_per_token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pred_per_token: Option<usize>,
    /// HellaSwag: the log-likelihoods of build-nanogpt's form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nanogpt_loglik: Option<Vec<f64>>,
    /// HellaSwag: build-nanogpt's form's continuation tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nanogpt_tokens: Option<Vec<usize>>,
    /// A context was cut on the left to fit the model.
    pub truncated: bool,
}

/// A task's scores.
#[derive(Debug, Clone, Serialize)]
pub struct TaskScores {
    /// The task's name (its file stem).
    pub task: String,
    /// Its format.
    pub format: TaskFormat,
    /// Items scored.
    pub items: usize,
    /// Items with a context cut on the left to fit the model's context.
    pub truncated: usize,
    /// The metrics by name (see `docs/eval.md`): `acc`, `acc_norm`, `acc_per_token`, and for
    /// HellaSwag `nanogpt_acc`, `nanogpt_acc_norm`; LAMBADA: `acc`, `perplexity`.
    pub metrics: BTreeMap<String, Metric>,
    /// Per item.
    #[serde(skip)]
    pub per_item: Vec<ItemResult>,
}

impl TaskScores {
    /// The headline accuracy: `acc_norm` for multiple choice, `acc` for LAMBADA.
    pub fn headline(&self) -> (&'static str, f64) {
        match self.format {
            TaskFormat::Lambada => ("acc", self.metrics["acc"].value),
            _ => ("acc_norm", self.metrics["acc_norm"].value),
        }
    }

    /// One line: the task, its metrics and counts.
    pub fn summary(&self) -> String {
        let metrics: Vec<String> = self
            .metrics
            .iter()
            .map(|(name, m)| match m.stderr {
                Some(se) => format!("{name} {:.4} ± {se:.4}", m.value),
                None => format!("{name} {:.4}", m.value),
            })
            .collect();
        format!(
            "{} ({}): {} | {} items, {} truncated",
            self.task,
            self.format.name(),
            metrics.join(" | "),
            self.items,
            self.truncated
        )
    }
}

/// The index of the first largest value (numpy's `argmax`).
fn argmax(xs: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, x) in xs.enumerate() {
        if x > best.1 || i == 0 {
            best = (i, x);
        }
    }
    best.0
}

fn bool_f64(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// Scores every item of `task` with `model` (in eval mode, no gradients; nothing else of the
/// model or of any random stream is touched). `progress` is told how many requests each batch
/// scored.
pub fn score_task(
    model: &Gpt,
    tokenizer: &Tokenizer,
    task: &Task,
    options: ScoreOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<TaskScores> {
    if task.items.is_empty() {
        bail!("{}: no items to score", task.path.display());
    }
    let (requests, spans) = task_requests(tokenizer, task);
    let results = loglikelihoods(model, &requests, options, progress)?;
    let mut per_item = Vec::new();
    let mut columns: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut truncated = 0;
    for (index, (item, (harness, raw))) in task.items.iter().zip(spans).enumerate() {
        let h = &results[harness];
        let loglik: Vec<f64> = h.iter().map(|l| l.loglik).collect();
        let tokens: Vec<usize> = h.iter().map(|l| l.tokens).collect();
        let raw = raw.map(|r| &results[r]);
        let cut = h.iter().chain(raw.unwrap_or(&[])).any(|l| l.truncated);
        truncated += usize::from(cut);
        let mut result = ItemResult {
            index,
            answer: item.answer,
            loglik: loglik.clone(),
            tokens: tokens.clone(),
            greedy: None,
            pred: None,
            pred_norm: None,
            pred_per_token: None,
            nanogpt_loglik: None,
            nanogpt_tokens: None,
            truncated: cut,
        };
        if task.format.is_multiple_choice() {
            let chars = &item.harness.choice_chars;
            let pred = argmax(loglik.iter().copied());
            let pred_norm = argmax(loglik.iter().zip(chars).map(|(l, &c)| l / c as f64));
            let pred_tok = argmax(loglik.iter().zip(&tokens).map(|(l, &t)| l / t as f64));
            for (name, p) in [
                ("acc", pred),
                ("acc_norm", pred_norm),
                ("acc_per_token", pred_tok),
            ] {
                columns
                    .entry(name)
                    .or_default()
                    .push(bool_f64(p == item.answer));
            }
            (result.pred, result.pred_norm, result.pred_per_token) =
                (Some(pred), Some(pred_norm), Some(pred_tok));
            if let Some(raw) = raw {
                let ll: Vec<f64> = raw.iter().map(|l| l.loglik).collect();
                let tok: Vec<usize> = raw.iter().map(|l| l.tokens).collect();
                let sum = argmax(ll.iter().copied());
                let per_token = argmax(ll.iter().zip(&tok).map(|(l, &t)| l / t as f64));
                columns
                    .entry("nanogpt_acc")
                    .or_default()
                    .push(bool_f64(sum == item.answer));
                columns
                    .entry("nanogpt_acc_norm")
                    .or_default()
                    .push(bool_f64(per_token == item.answer));
                result.nanogpt_loglik = Some(ll);
                result.nanogpt_tokens = Some(tok);
            }
        } else {
            columns
                .entry("acc")
                .or_default()
                .push(bool_f64(h[0].greedy));
            columns.entry("loglik").or_default().push(h[0].loglik);
            result.greedy = Some(h[0].greedy);
        }
        per_item.push(result);
    }
    let metrics = aggregate(&columns);
    Ok(TaskScores {
        task: task.name.clone(),
        format: task.format,
        items: task.items.len(),
        truncated,
        metrics,
        per_item,
    })
}

/// Which requests score an item: its harness form's, and build-nanogpt's when it has one.
type ItemSpans = (Range<usize>, Option<Range<usize>>);

/// Every request of every item (harness form, then build-nanogpt's), in one list, and each
/// item's spans of it.
fn task_requests(tokenizer: &Tokenizer, task: &Task) -> (Vec<Request>, Vec<ItemSpans>) {
    let mut requests = Vec::new();
    let mut spans = Vec::new();
    for item in &task.items {
        let push = |requests: &mut Vec<Request>, s: &Scored, raw: bool| {
            let start = requests.len();
            for c in &s.continuations {
                requests.push(if raw {
                    nanogpt_request(tokenizer, &s.context, c)
                } else {
                    harness_request(tokenizer, &s.context, c)
                });
            }
            start..requests.len()
        };
        let harness = push(&mut requests, &item.harness, false);
        let raw = item.raw.as_ref().map(|r| push(&mut requests, r, true));
        spans.push((harness, raw));
    }
    (requests, spans)
}

/// Each metric's mean and standard error over the items; the log-likelihoods of a
/// non-multiple-choice task become a perplexity.
fn aggregate(columns: &BTreeMap<&str, Vec<f64>>) -> BTreeMap<String, Metric> {
    let mut metrics: BTreeMap<String, Metric> = BTreeMap::new();
    for (name, xs) in columns {
        if *name == "loglik" {
            // lm-evaluation-harness's `perplexity` aggregation: exp(−mean log-likelihood).
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            metrics.insert(
                "perplexity".into(),
                Metric {
                    value: (-mean).exp(),
                    stderr: None,
                },
            );
        } else {
            metrics.insert((*name).into(), Metric::mean(xs));
        }
    }
    metrics
}

/// The number of requests (forward rows) scoring `task` takes, for a progress bar.
pub fn request_count(task: &Task) -> usize {
    task.items
        .iter()
        .map(|i| {
            i.harness.continuations.len() + i.raw.as_ref().map_or(0, |r| r.continuations.len())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lm-evaluation-harness's `mean_stderr` for [1, 0, 1, 1]: stdev (n−1) 0.5 / √4 = 0.25.
    #[test]
    fn standard_error_as_the_harness() {
        let m = Metric::mean(&[1.0, 0.0, 1.0, 1.0]);
        assert_eq!(m.value, 0.75);
        assert!((m.stderr.unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(Metric::mean(&[1.0]).stderr, None);
    }

    #[test]
    fn argmax_takes_the_first_largest() {
        assert_eq!(argmax([1.0, 3.0, 3.0, 2.0].into_iter()), 1);
        assert_eq!(
            argmax([f64::NEG_INFINITY, f64::NEG_INFINITY].into_iter()),
            0
        );
    }

    /// The continuation's tokens are the whole's past the context's; a trailing space of the
    /// context moves to the continuation; an empty context is end-of-text.
    #[test]
    fn requests_encode_as_the_harness() {
        let tok = Tokenizer::gpt2();
        let ids = |s: &str| -> Vec<i64> { tok.encode(s).into_iter().map(i64::from).collect() };
        let r = harness_request(&tok, "The cat", " sat down");
        assert_eq!(r.tokens, ids("The cat sat down"));
        assert_eq!(
            r.continuation,
            ids("The cat sat down").len() - ids("The cat").len()
        );
        let r = harness_request(&tok, "The cat ", " sat");
        assert_eq!(r.tokens, ids("The cat  sat"));
        assert_eq!(
            r.continuation,
            ids("The cat  sat").len() - ids("The cat").len()
        );
        let r = harness_request(&tok, "", " sat");
        assert_eq!(r.tokens[0], i64::from(tok.eos_id()));
        assert_eq!(r.continuation, ids(" sat").len());
        let r = nanogpt_request(&tok, "The cat", " sat");
        assert_eq!(r.tokens, [ids("The cat"), ids(" sat")].concat());
    }
}
