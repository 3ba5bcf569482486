//! Sampling text from a trained model: temperature and top-k, one token at a time.

use crate::model::Gpt;
use crate::precision::Precision;
use anyhow::Result;
use tch::{Device, Kind, Tensor};

/// How to pick each new token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleOptions {
    /// Tokens to add.
    pub max_new_tokens: usize,
    /// Logits are divided by this; 0 means greedy.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (1: greedy); `None`: all.
    pub top_k: Option<usize>,
    /// Seed of the sampling RNG.
    pub seed: u64,
}

/// Continues `prompt` (token ids; at least one) by `options.max_new_tokens` tokens and
/// returns the new ones. Only the model's real vocabulary (`vocab_size`, not the padded
/// rows) can be drawn; the context is cropped to the model's last `n_ctx` tokens.
pub fn generate(
    model: &Gpt,
    prompt: &[i64],
    options: SampleOptions,
    device: Device,
    precision: Precision,
) -> Result<Vec<i64>> {
    assert!(!prompt.is_empty(), "a prompt of at least one token");
    let cfg = *model.config();
    tch::manual_seed(options.seed as i64);
    let mut tokens = prompt.to_vec();
    let greedy = options.temperature <= 0.0 || options.top_k == Some(1);
    for _ in 0..options.max_new_tokens {
        let start = tokens.len().saturating_sub(cfg.n_ctx);
        let idx = Tensor::from_slice(&tokens[start..])
            .view([1, -1])
            .to_device(device);
        let next = tch::no_grad(|| -> Result<i64> {
            let logits = {
                let _autocast = precision.autocast(device)?;
                model.forward(&idx, false)
            };
            let last = logits
                .select(1, -1)
                .narrow(1, 0, cfg.vocab_size as i64)
                .to_kind(Kind::Float);
            if greedy {
                return Ok(last.argmax(-1, false).int64_value(&[0]));
            }
            let mut scaled = last / options.temperature;
            if let Some(k) = options.top_k.filter(|&k| k < cfg.vocab_size) {
                let (top, _) = scaled.topk(k as i64, -1, true, true);
                let threshold = top.narrow(1, k as i64 - 1, 1);
                scaled = scaled.masked_fill(&scaled.lt_tensor(&threshold), f64::NEG_INFINITY);
            }
            let probs = scaled.softmax(-1, Kind::Float);
            Ok(probs.multinomial(1, false).int64_value(&[0, 0]))
        })?;
        tokens.push(next);
    }
    Ok(tokens.split_off(prompt.len()))
}
