//! Loss over a shard set without training: the trainer's periodic validation and `eval`.

use crate::data::BatchTensors;
use crate::model::Gpt;
use crate::precision::Precision;
use anyhow::Result;
use h5gpt_formats::reader::ExampleMut;
use h5gpt_formats::ShardSet;
use tch::{Device, Kind};

/// Mean loss over the counted tokens of some rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalResult {
    /// Mean cross-entropy per counted token (nats).
    pub loss: f64,
    /// Tokens counted (attention mask 1).
    pub tokens: u64,
    /// Rows read.
    pub rows: usize,
}

impl EvalResult {
    /// `exp(loss)`.
    pub fn perplexity(&self) -> f64 {
        self.loss.exp()
    }
}

/// Evaluates `model` on the first `max_rows` rows of `set` (all when `None`), `micro_batch`
/// rows at a time, in order; the loss is averaged over every counted token.
pub fn evaluate(
    model: &Gpt,
    set: &ShardSet,
    micro_batch: usize,
    max_rows: Option<usize>,
    device: Device,
    precision: Precision,
) -> Result<EvalResult> {
    let seq = set.seq_len();
    let rows = max_rows.map_or(set.len(), |m| m.min(set.len()));
    let vocab = model.config().embedding_rows();
    let micro_batch = micro_batch.max(1);
    let (mut ids, mut mask, mut labels) = (
        vec![0i32; micro_batch * seq],
        vec![0i32; micro_batch * seq],
        vec![0i32; micro_batch * seq],
    );
    let (mut loss_sum, mut tokens) = (0f64, 0u64);
    let mut start = 0;
    while start < rows {
        let n = micro_batch.min(rows - start);
        for r in 0..n {
            let span = r * seq..(r + 1) * seq;
            set.read_example(
                start + r,
                ExampleMut {
                    input_ids: &mut ids[span.clone()],
                    attention_mask: &mut mask[span.clone()],
                    labels: &mut labels[span],
                },
            )?;
        }
        let used = n * seq;
        let batch = BatchTensors::new(
            &ids[..used],
            &labels[..used],
            &mask[..used],
            n,
            vocab,
            device,
            &|r| format!("evaluation row {}", start + r),
        )?;
        let counted = mask[..used].iter().filter(|&&m| m != 0).count() as u64;
        if counted > 0 {
            let mean = tch::no_grad(|| -> Result<f64> {
                let _autocast = precision.autocast(device)?;
                Ok(model
                    .loss(&batch.input_ids, &batch.labels, &batch.mask, false)
                    .to_kind(Kind::Double)
                    .double_value(&[]))
            })?;
            loss_sum += mean * counted as f64;
            tokens += counted;
        }
        start += n;
    }
    Ok(EvalResult {
        loss: if tokens > 0 {
            loss_sum / tokens as f64
        } else {
            f64::NAN
        },
        tokens,
        rows,
    })
}
