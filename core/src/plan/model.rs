//! One model shape planned: its parameters by part, FLOPs per token, and, for a number of
//! training tokens, total FLOPs, predicted loss and time.

use super::flops::{six_n, six_n_plus_attention, AppendixF, TransformerShape};
use super::scaling::{LossFit, FITS};
use crate::config::{GptConfig, ParameterBreakdown};
use serde::Serialize;

/// Parameter counts of a [`GptConfig`], exactly as the model allocates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    /// By part, with the vocabulary padded as the model pads it.
    pub padded: ParameterBreakdown,
    /// By part, with the unpadded vocabulary (Hugging Face's GPT-2).
    pub unpadded: ParameterBreakdown,
    /// Separate LM-head parameters: 0, the head is tied to the token embedding.
    pub head: usize,
    /// All allocated parameters ([`GptConfig::parameter_count`]).
    pub total: usize,
    /// All parameters with the unpadded vocabulary (GPT-2 small: 124,439,808).
    pub total_unpadded: usize,
    /// Without embeddings (Kaplan's N).
    pub non_embedding: usize,
    /// Unpadded, without the position embedding: the blocks plus the (tied) output layer, what
    /// Chinchilla counts and what the loss fits take as N (GPT-2 small: 123,653,376).
    pub chinchilla: usize,
    /// The N of 6N and of MFU: allocated parameters less the position embedding.
    pub flops: usize,
}

impl ParamCounts {
    /// The counts of `cfg`.
    pub fn new(cfg: &GptConfig) -> ParamCounts {
        let padded = cfg.breakdown();
        let unpadded = cfg.breakdown_unpadded();
        ParamCounts {
            padded,
            unpadded,
            head: 0,
            total: padded.total(),
            total_unpadded: unpadded.total(),
            non_embedding: padded.non_embedding(),
            chinchilla: unpadded.total() - unpadded.position_embedding,
            flops: cfg.flops_parameter_count(),
        }
    }
}

/// FLOPs per token of training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FlopsPerToken {
    /// Tokens per row (the T of 12·L·H·Q·T and the S of Appendix F).
    pub seq_len: usize,
    /// 6N with N = [`ParamCounts::flops`].
    pub six_n: f64,
    /// 6N + 12·L·H·Q·T (what `train` measures MFU against).
    pub six_n_attention: f64,
    /// Chinchilla Appendix F per sequence / S, embeddings and logits included.
    pub appendix_f_all: f64,
    /// Chinchilla Appendix F per sequence / S, blocks only.
    pub appendix_f_blocks: f64,
}

impl FlopsPerToken {
    /// The FLOPs per token of `cfg` on rows of `seq_len` tokens.
    pub fn new(cfg: &GptConfig, seq_len: usize) -> FlopsPerToken {
        let shape = TransformerShape::from(cfg);
        let n = cfg.flops_parameter_count() as f64;
        let f = AppendixF::new(&shape, seq_len, cfg.embedding_rows());
        let s = seq_len as f64;
        FlopsPerToken {
            seq_len,
            six_n: six_n(n),
            six_n_attention: six_n_plus_attention(n, &shape, seq_len),
            appendix_f_all: f.training_all() / s,
            appendix_f_blocks: f.training_blocks() / s,
        }
    }
}

/// A predicted loss under one fit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PredictedLoss {
    /// The fit's name.
    pub fit: &'static str,
    /// L(N, D), N = [`ParamCounts::chinchilla`].
    pub loss: f64,
}

/// Training time at a throughput.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimeEstimate {
    /// Peak FLOP/s of one device.
    pub peak_flops: f64,
    /// Model FLOPs utilization assumed.
    pub mfu: f64,
    /// Seconds on one device.
    pub seconds: f64,
}

impl TimeEstimate {
    /// Time for `flops` at `mfu` of `peak_flops`.
    pub fn new(flops: f64, peak_flops: f64, mfu: f64) -> TimeEstimate {
        TimeEstimate {
            peak_flops,
            mfu,
            seconds: flops / (peak_flops * mfu),
        }
    }
}

/// A training run of a model over a number of tokens.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingPlan {
    /// Training tokens D.
    pub tokens: f64,
    /// D / N with N = [`ParamCounts::chinchilla`].
    pub tokens_per_param: f64,
    /// Training FLOPs: [`FlopsPerToken::six_n_attention`] × D.
    pub flops: f64,
    /// 6·N·D with N = [`ParamCounts::chinchilla`] (the budget the fits' allocation uses).
    pub flops_6nd: f64,
    /// Predicted loss under each fit.
    pub losses: Vec<PredictedLoss>,
    /// Time on one device, when a peak throughput is known.
    pub time: Option<TimeEstimate>,
}

/// One model planned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelPlan {
    /// The shape.
    pub config: GptConfig,
    /// Parameters.
    pub params: ParamCounts,
    /// FLOPs per token at `config.n_ctx`.
    pub flops_per_token: FlopsPerToken,
}

impl ModelPlan {
    /// The plan of `cfg`, rows of `cfg.n_ctx` tokens.
    pub fn new(cfg: &GptConfig) -> ModelPlan {
        ModelPlan {
            config: *cfg,
            params: ParamCounts::new(cfg),
            flops_per_token: FlopsPerToken::new(cfg, cfg.n_ctx),
        }
    }

    /// Training on `tokens` tokens; `fits` the loss fits to predict with; time at `mfu` of
    /// `peak_flops` when given.
    pub fn training(
        &self,
        tokens: f64,
        fits: &[LossFit],
        peak_flops: Option<f64>,
        mfu: f64,
    ) -> TrainingPlan {
        let n = self.params.chinchilla as f64;
        let flops = self.flops_per_token.six_n_attention * tokens;
        TrainingPlan {
            tokens,
            tokens_per_param: tokens / n,
            flops,
            flops_6nd: 6.0 * n * tokens,
            losses: fits
                .iter()
                .map(|fit| PredictedLoss {
                    fit: fit.name,
                    loss: fit.loss(n, tokens),
                })
                .collect(),
            time: peak_flops.map(|peak| TimeEstimate::new(flops, peak, mfu)),
        }
    }

    /// Training on `tokens` under every fit.
    pub fn training_all_fits(
        &self,
        tokens: f64,
        peak_flops: Option<f64>,
        mfu: f64,
    ) -> TrainingPlan {
        self.training(tokens, &FITS, peak_flops, mfu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_small_counts() {
        let p = ParamCounts::new(&GptConfig::gpt2_small());
        assert_eq!(p.total, 124_475_904);
        assert_eq!(p.total_unpadded, 124_439_808);
        assert_eq!(p.chinchilla, 123_653_376);
        assert_eq!(p.non_embedding, 85_056_000);
        assert_eq!(p.flops, 123_689_472);
    }
}
