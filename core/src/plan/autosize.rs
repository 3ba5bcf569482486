//! The auto-sized default model: the shape whose non-embedding parameter count is closest, in
//! log space, to the compute-optimal size for the tokens a run will see.
//!
//! The family: head size 64, `d_model = 64·w`, `n_head = w`, and `n_layer = w` or `w + 1`
//! for w = 1, 2, …, so d_model/n_layer lies between 32 and 64 (GPT-2 small's 768/12 = 64 and
//! Chinchilla's smallest models' 64 at one end; GPT-2 XL's 1600/48 ≈ 33 at the other). Listed
//! as `(w, w), (w, w + 1), (w + 1, w + 1), …` the shapes grow in parameters and never shrink in
//! width, heads or depth, so a larger corpus never gets a smaller model.

use super::scaling::CHINCHILLA_RATIO;
use crate::config::GptConfig;
use h5gpt_formats::text::thousands;
use serde::Serialize;
use std::fmt;

/// Head size of every shape in the family.
pub const HEAD_SIZE: usize = 64;

/// Largest width step considered (d_model 16384, 257 layers: far beyond any corpus here).
pub const MAX_WIDTH_STEPS: usize = 256;

/// The model chosen for a number of training tokens.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoSize {
    /// The chosen shape: padded vocabulary, biases, no dropout, `n_ctx` = the shards' seq_len.
    pub config: GptConfig,
    /// Training tokens the choice was made for.
    pub tokens: f64,
    /// Tokens per parameter.
    pub ratio: f64,
    /// The compute-optimal non-embedding parameter count, `tokens / ratio`.
    pub target_params: f64,
    /// The chosen shape's non-embedding parameters.
    pub non_embedding_params: usize,
    /// Why this shape: one line per reason.
    pub explanation: Vec<String>,
}

impl fmt::Display for AutoSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.explanation {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

impl AutoSize {
    /// Training FLOPs of the chosen model over [`tokens`](Self::tokens):
    /// (6N + 12·L·H·Q·T) per token, as `train` counts them for MFU.
    pub fn training_flops(&self) -> f64 {
        self.config.flops_per_token(self.config.n_ctx) * self.tokens
    }
}

/// The family's `index`-th shape: width step `w = index / 2 + 1`, `n_layer = w + index % 2`.
pub fn family_shape(index: usize, seq_len: usize, vocab_size: usize) -> GptConfig {
    let w = index / 2 + 1;
    GptConfig {
        pad_vocab: true,
        n_layer: w + index % 2,
        n_head: w,
        n_embd: HEAD_SIZE * w,
        bias: true,
        dropout: 0.0,
        // The remaining fields (vocabulary, context, standard parameterization) as `tiny` sets them.
        ..GptConfig::tiny(vocab_size, seq_len)
    }
}

/// Every shape of the family, smallest first.
pub fn family(seq_len: usize, vocab_size: usize) -> impl Iterator<Item = GptConfig> {
    (0..2 * MAX_WIDTH_STEPS).map(move |i| family_shape(i, seq_len, vocab_size))
}

fn log_distance(params: usize, target: f64) -> f64 {
    ((params as f64).ln() - target.ln()).abs()
}

/// The model for `tokens` training tokens (the corpus times the planned epochs) at `ratio`
/// tokens per parameter (Chinchilla: 20): the family shape whose non-embedding parameter count
/// is closest to `tokens / ratio` in log space (the smaller on a tie), with context `seq_len`
/// and a `vocab_size` vocabulary (padded to a multiple of 64).
pub fn auto_size(tokens: f64, ratio: f64, seq_len: usize, vocab_size: usize) -> AutoSize {
    let target = tokens / ratio;
    let count = |i: usize| {
        family_shape(i, seq_len, vocab_size)
            .breakdown()
            .non_embedding()
    };
    let last = 2 * MAX_WIDTH_STEPS - 1;
    // Non-embedding counts grow along the family: walk up while the next shape is closer.
    let mut index = 0;
    while target > 0.0
        && index < last
        && log_distance(count(index + 1), target) < log_distance(count(index), target)
    {
        index += 1;
    }
    let best = family_shape(index, seq_len, vocab_size);
    let chosen = best.breakdown();
    let n = chosen.non_embedding();
    let below = index.checked_sub(1).map(count);
    let above = (index < last).then(|| count(index + 1));
    let mut explanation = vec![
        format!(
            "training tokens D = {} ({tokens:.3e})",
            thousands(tokens.round() as u64)
        ),
        format!(
            "target N = D / {ratio} tokens per parameter{} = {} non-embedding parameters",
            if ratio == CHINCHILLA_RATIO { " (Chinchilla)" } else { "" },
            thousands(target.round() as u64)
        ),
        format!(
            "family: head size {HEAD_SIZE}, d_model = {HEAD_SIZE}·w, n_head = w, n_layer = w or w + 1 \
             (d_model/n_layer from 32 to 64), n_ctx = seq_len {seq_len}"
        ),
        format!(
            "chose d_model {}, {} layer{}, {} head{}: {} non-embedding parameters, {:.2}× the target \
             (closest in log space; next smaller {}, next larger {})",
            best.n_embd,
            best.n_layer,
            if best.n_layer == 1 { "" } else { "s" },
            best.n_head,
            if best.n_head == 1 { "" } else { "s" },
            thousands(n as u64),
            n as f64 / target,
            below.map_or("none".into(), |p| thousands(p as u64)),
            above.map_or("none".into(), |p| thousands(p as u64)),
        ),
        format!(
            "with the {}-row embedding ({} parameters) and {} position rows: {} parameters in all",
            thousands(best.embedding_rows() as u64),
            thousands(chosen.token_embedding as u64),
            seq_len,
            thousands(chosen.total() as u64)
        ),
    ];
    if below.is_none() {
        explanation.push("(the family's smallest shape)".into());
    } else if above.is_none() {
        explanation.push("(the family's largest shape)".into());
    }
    AutoSize {
        config: best,
        tokens,
        ratio,
        target_params: target,
        non_embedding_params: n,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_family_grows_in_every_dimension() {
        let shapes: Vec<GptConfig> = family(64, 50257).collect();
        for w in shapes.windows(2) {
            assert!(w[1].n_embd >= w[0].n_embd && w[1].n_layer >= w[0].n_layer);
            assert!(w[1].n_head >= w[0].n_head);
            assert!(w[1].breakdown().non_embedding() > w[0].breakdown().non_embedding());
        }
        for c in &shapes {
            c.validate().unwrap();
            assert_eq!(c.head_size(), HEAD_SIZE);
            let aspect = c.n_embd as f64 / c.n_layer as f64;
            assert!((32.0..=64.0).contains(&aspect), "{c:?}");
        }
    }
}
