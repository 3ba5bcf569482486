//! Model shapes and the preset table, free of libtorch so the planning tools can use them.
//!
//! A [`GptConfig`] is what the model allocates; a [`Preset`] is a named shape with the
//! learning rate and batch size its paper trained it with (GPT-3 Table 2.1, Cerebras-GPT
//! Table 1), which become the defaults of a run that picks it.

use crate::params::{param_specs, ParamSpec, Part};
use h5gpt_formats::spec::GPT2_VOCAB_SIZE;
use serde::{Deserialize, Serialize};

/// The multiple the embedding rows are padded to (tensor-core friendly; nanoGPT's 50304).
pub const VOCAB_PAD_MULTIPLE: usize = 64;

/// The most transformer blocks a model may have (GPT-3 175B has 96).
pub const MAX_N_LAYER: usize = 100_000;
/// The widest `n_embd` (and most heads) a model may have: 2^20 (GPT-3 175B: 12,288).
pub const MAX_WIDTH: usize = 1 << 20;
/// The longest context: 2^24 tokens.
pub const MAX_N_CTX: usize = 1 << 24;
/// The largest vocabulary (see [`h5gpt_formats::spec::MAX_VOCAB_SIZE`]).
pub const MAX_VOCAB_SIZE: usize = h5gpt_formats::spec::MAX_VOCAB_SIZE as usize;
/// The widest MLP hidden layer: 2^24.
pub const MAX_FFN_SIZE: usize = 1 << 24;
/// The shape limits in words, for error messages.
pub const SHAPE_LIMITS: &str = "limits: n_layer ≤ 100,000, n_embd and n_head ≤ 1,048,576, \
    n_ctx ≤ 16,777,216, vocab_size ≤ 16,777,216, ffn_size ≤ 16,777,216";

/// Model shape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    /// Tokens the data can hold (GPT-2: 50257).
    pub vocab_size: usize,
    /// Round the embedding rows up to a multiple of 64 (the extra logits learn to be low).
    pub pad_vocab: bool,
    /// Context length: rows of the position embedding.
    pub n_ctx: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// Embedding width (`n_head` × head size).
    pub n_embd: usize,
    /// Biases in linear layers and LayerNorms (GPT-2: true).
    pub bias: bool,
    /// Dropout probability (pretraining: 0).
    pub dropout: f64,
    /// μP (Maximal Update Parameterization) settings; `None`: the standard parameterization.
    /// Absent from files written before μP existed, and left out when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mup: Option<MupConfig>,
    /// Width of the MLP's hidden layer; `None`: 4 × `n_embd` (GPT-2). Absent from files written
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffn_size: Option<usize>,
    /// ε of every LayerNorm (GPT-2: 1e-5). Absent from files written before it existed.
    #[serde(
        default = "default_layer_norm_eps",
        skip_serializing_if = "is_default_layer_norm_eps"
    )]
    pub layer_norm_eps: f64,
    /// Initialization other than GPT-2's N(0, 0.02) (Cerebras Model Zoo configs); `None`:
    /// GPT-2's, or μP's under `mup`. Absent from files written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitConfig>,
}

/// GPT-2's LayerNorm ε.
pub const DEFAULT_LAYER_NORM_EPS: f64 = 1e-5;

fn default_layer_norm_eps() -> f64 {
    DEFAULT_LAYER_NORM_EPS
}

fn is_default_layer_norm_eps(eps: &f64) -> bool {
    *eps == DEFAULT_LAYER_NORM_EPS
}

/// How the weight matrices are initialized, where a config says (Cerebras' `initializer`,
/// `embedding_initializer`, `output_layer_initializer`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// Standard deviations of the standard parameterization (ignored under μP, whose rules
    /// derive them from σ_base); `None`: GPT-2's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<SpInitStd>,
    /// Truncate the normal at ± this many standard deviations, as `torch.nn.init.trunc_normal_`
    /// (Cerebras' `truncated_normal` with `a = -2σ`, `b = 2σ`: 2); `None`: not truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<f64>,
}

/// Standard deviations of the standard parameterization's normal initializations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpInitStd {
    /// Token and position embeddings (GPT-2: 0.02).
    pub embedding: f64,
    /// QKV and the MLP's first layer (GPT-2: 0.02).
    pub hidden: f64,
    /// Projections into the residual stream (GPT-2: 0.02/√(2L)).
    pub residual: f64,
}

/// μP as Cerebras-GPT uses it (Yang et al. 2022, "Tensor Programs V"; Dey et al. 2023):
/// hyperparameters tuned on a model of width `base_width` carry over to any width
/// `n_embd = m · base_width`. [`crate::mup::mup_table`] lists what it does per tensor; the
/// base learning rate is the run's (`--lr`, [`MUP_BASE_LR`] by default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MupConfig {
    /// Width D₀ the base hyperparameters were tuned at; m = `n_embd` / D₀ (default 256).
    pub base_width: usize,
    /// Multiplier of the embedding output (token + position; default 10).
    pub embed_mult: f64,
    /// σ_base: init std of the embeddings, divided by √m for hidden matrices (default 0.08).
    pub init_std: f64,
}

/// Cerebras-GPT's μP base learning rate η_base (the default `--lr` under `--mup`).
pub const MUP_BASE_LR: f64 = 6e-3;

impl Default for MupConfig {
    /// Cerebras-GPT's μP settings: D₀ = 256, embedding multiplier 10, σ_base = 0.08, as the
    /// `train` options declare them (`--mup-base-width`, `--mup-embed-mult`, `--mup-init-std`).
    fn default() -> Self {
        let builtin = crate::options::train::TrainOptions::builtin();
        MupConfig {
            base_width: builtin.mup_base_width.expect("declared with a default"),
            embed_mult: builtin.mup_embed_mult.expect("declared with a default"),
            init_std: builtin.mup_init_std.expect("declared with a default"),
        }
    }
}

/// Largest share of padding rows, in percent of the vocabulary, worth adding.
const VOCAB_PAD_MAX_PERCENT: usize = 1;

/// `vocab` rounded up to a multiple of 64 when that helps: the GPU's output matmul runs
/// faster on a multiple of 64 (GPT-2's 50,257 → 50,304, +0.09%), but for a small vocabulary
/// the padding rows would be a noticeable share of the embedding (a 303-token vocabulary
/// would grow 5.6%) for a matmul that costs little anyway, so a vocabulary is padded only
/// when the padding adds at most 1% of its rows.
pub fn padded_vocab(vocab: usize) -> usize {
    let padded = vocab.div_ceil(VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE;
    if (padded - vocab) * 100 <= vocab * VOCAB_PAD_MAX_PERCENT {
        padded
    } else {
        vocab
    }
}

/// Parameters of one part of the model (see [`GptConfig::breakdown`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParameterBreakdown {
    /// Token embedding (= the tied LM head).
    pub token_embedding: usize,
    /// Position embedding.
    pub position_embedding: usize,
    /// Attention: QKV and output projections with their biases, all layers.
    pub attention: usize,
    /// MLP: both projections with their biases, all layers.
    pub mlp: usize,
    /// LayerNorm gains and biases, all layers and the final one.
    pub layer_norm: usize,
}

impl ParameterBreakdown {
    /// All parameters (the tied head counted once).
    pub fn total(&self) -> usize {
        self.token_embedding + self.position_embedding + self.attention + self.mlp + self.layer_norm
    }

    /// Without the embeddings (Kaplan's N; what scaling laws count).
    pub fn non_embedding(&self) -> usize {
        self.attention + self.mlp + self.layer_norm
    }
}

impl GptConfig {
    /// GPT-2 small (124M).
    pub fn gpt2_small() -> GptConfig {
        Preset::find("gpt2-small")
            .expect("preset table has gpt2-small")
            .config(None)
    }

    /// A tiny model for tests and CPU demos: 2 layers, 2 heads, width 32, no vocab padding.
    pub fn tiny(vocab_size: usize, n_ctx: usize) -> GptConfig {
        GptConfig {
            vocab_size,
            pad_vocab: false,
            n_ctx,
            n_layer: 2,
            n_head: 2,
            n_embd: 32,
            bias: true,
            dropout: 0.0,
            mup: None,
            ffn_size: None,
            layer_norm_eps: DEFAULT_LAYER_NORM_EPS,
            init: None,
        }
    }

    /// Rows of the token embedding (and logits): the vocabulary, padded when `pad_vocab`.
    pub fn embedding_rows(&self) -> usize {
        if self.pad_vocab {
            padded_vocab(self.vocab_size)
        } else {
            self.vocab_size
        }
    }

    /// Width of the MLP's hidden layer: `ffn_size`, else 4 × `n_embd`.
    pub fn ffn_width(&self) -> usize {
        self.ffn_size.unwrap_or(4 * self.n_embd)
    }

    /// Width of one attention head.
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// μP's width multiplier m = `n_embd` / D₀; 1 under the standard parameterization.
    pub fn width_mult(&self) -> f64 {
        self.mup
            .map_or(1.0, |mup| self.n_embd as f64 / mup.base_width as f64)
    }

    /// What the embedding output (token + position) is multiplied by: μP's `embed_mult`;
    /// `None` under the standard parameterization (no multiplication at all).
    pub fn embedding_multiplier(&self) -> Option<f64> {
        self.mup.map(|mup| mup.embed_mult)
    }

    /// What the logits are multiplied by: 1/m under μP; `None` under the standard
    /// parameterization.
    pub fn output_multiplier(&self) -> Option<f64> {
        self.mup.map(|_| 1.0 / self.width_mult())
    }

    /// The attention-score scale: 1/d_head under μP; `None` (SDPA's default 1/√d_head)
    /// under the standard parameterization.
    pub fn attention_scale(&self) -> Option<f64> {
        self.mup.map(|_| 1.0 / self.head_size() as f64)
    }

    /// Checks the shape is buildable: every size positive and within [`SHAPE_LIMITS`] (checked
    /// before anything, the parameter list included, is built from it).
    pub fn validate(&self) -> Result<(), String> {
        if self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 || self.n_ctx == 0 {
            return Err(format!(
                "n_layer, n_head, n_embd and n_ctx must be positive (got {}, {}, {}, {})",
                self.n_layer, self.n_head, self.n_embd, self.n_ctx
            ));
        }
        for (what, value, limit) in [
            ("n_layer", self.n_layer, MAX_N_LAYER),
            ("n_embd", self.n_embd, MAX_WIDTH),
            ("n_head", self.n_head, MAX_WIDTH),
            ("n_ctx", self.n_ctx, MAX_N_CTX),
            ("vocab_size", self.vocab_size, MAX_VOCAB_SIZE),
            ("ffn_size", self.ffn_width(), MAX_FFN_SIZE),
        ] {
            if value > limit {
                return Err(format!(
                    "{what} {value} is beyond the largest this program builds ({limit}; {SHAPE_LIMITS})"
                ));
            }
        }
        if self.n_embd % self.n_head != 0 {
            return Err(format!(
                "n_embd {} is not divisible by n_head {}",
                self.n_embd, self.n_head
            ));
        }
        if self.vocab_size == 0 {
            return Err("vocab_size must be positive".into());
        }
        if self.ffn_size == Some(0) {
            return Err("ffn_size must be positive".into());
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!(
                "layer_norm_eps {} is not a positive number",
                self.layer_norm_eps
            ));
        }
        if let Some(init) = &self.init {
            if let Some(k) = init.truncation.filter(|k| !(k.is_finite() && *k > 0.0)) {
                return Err(format!(
                    "init truncation {k} is not a positive number of stds"
                ));
            }
            if let Some(std) = &init.std {
                for (what, v) in [
                    ("embedding", std.embedding),
                    ("hidden", std.hidden),
                    ("residual", std.residual),
                ] {
                    if !(v.is_finite() && v > 0.0) {
                        return Err(format!("{what} init std {v} is not a positive number"));
                    }
                }
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        if let Some(mup) = &self.mup {
            if mup.base_width == 0 {
                return Err("μP base width must be positive".into());
            }
            for (what, v) in [
                ("embedding multiplier", mup.embed_mult),
                ("init std", mup.init_std),
            ] {
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!("μP {what} {v} is not a positive number"));
                }
            }
        }
        Ok(())
    }

    /// Parameters by part: the parameter list ([`param_specs`]) summed, each tensor counted
    /// with `numel`.
    fn breakdown_by(&self, numel: impl Fn(&ParamSpec) -> usize) -> ParameterBreakdown {
        let mut out = ParameterBreakdown {
            token_embedding: 0,
            position_embedding: 0,
            attention: 0,
            mlp: 0,
            layer_norm: 0,
        };
        for spec in param_specs(self) {
            let slot = match spec.part {
                Part::TokenEmbedding => &mut out.token_embedding,
                Part::PositionEmbedding => &mut out.position_embedding,
                Part::Attention => &mut out.attention,
                Part::Mlp => &mut out.mlp,
                Part::LayerNorm => &mut out.layer_norm,
            };
            *slot += numel(&spec);
        }
        out
    }

    /// Parameters as the model allocates them (padded vocabulary when `pad_vocab`).
    pub fn breakdown(&self) -> ParameterBreakdown {
        self.breakdown_by(ParamSpec::numel)
    }

    /// Parameters with the unpadded vocabulary (what Hugging Face's GPT-2 has).
    pub fn breakdown_unpadded(&self) -> ParameterBreakdown {
        self.breakdown_by(|spec| spec.hf_numel(self))
    }

    /// Parameters the model allocates (the tied head counted once).
    pub fn parameter_count(&self) -> usize {
        self.breakdown().total()
    }

    /// The N of MFU, as nanoGPT counts it: allocated parameters less the position embedding.
    pub fn flops_parameter_count(&self) -> usize {
        let parts = self.breakdown();
        parts.total() - parts.position_embedding
    }

    /// Training FLOPs per token: 6N + 12·L·H·Q·T, T the tokens per row (computed by
    /// [`six_n_plus_attention`](crate::plan::flops::six_n_plus_attention), with N from
    /// [`flops_parameter_count`](Self::flops_parameter_count)).
    pub fn flops_per_token(&self, seq_len: usize) -> f64 {
        crate::plan::flops::six_n_plus_attention(
            self.flops_parameter_count() as f64,
            &crate::plan::flops::TransformerShape::from(self),
            seq_len,
        )
    }
}

/// A named model shape with its paper's training defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    /// `--model` name.
    pub name: &'static str,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Width.
    pub n_embd: usize,
    /// Context length; `None`: the shards' seq_len.
    pub n_ctx: Option<usize>,
    /// Peak learning rate.
    pub lr: f64,
    /// Tokens per optimizer step.
    pub total_batch_tokens: usize,
    /// Rows per forward/backward pass (a default that fits an 80 GB GPU in bf16).
    pub micro_batch: usize,
    /// Where the numbers come from.
    pub source: &'static str,
}

const M: usize = 1 << 20;

macro_rules! preset {
    ($name:literal, $l:expr, $h:expr, $d:expr, $ctx:expr, $lr:expr, $batch:expr, $micro:expr, $src:literal) => {
        Preset {
            name: $name,
            n_layer: $l,
            n_head: $h,
            n_embd: $d,
            n_ctx: $ctx,
            lr: $lr,
            total_batch_tokens: $batch,
            micro_batch: $micro,
            source: $src,
        }
    };
}

/// Every preset `--model` accepts.
pub const PRESETS: &[Preset] = &[
    // Small shapes for CPUs and tests; their context is the shards' seq_len.
    preset!("tiny", 2, 2, 64, None, 1e-3, 65_536, 8, "CPU demo"),
    preset!("mini", 4, 4, 128, None, 1e-3, 65_536, 8, "CPU demo"),
    preset!(
        "nano",
        6,
        6,
        384,
        None,
        1e-3,
        65_536,
        8,
        "nanoGPT's Shakespeare model"
    ),
    // GPT-2 shapes (Radford et al. 2019) with the GPT-3 Table 2.1 LR and batch of the
    // nearest GPT-3 size.
    preset!(
        "gpt2-small",
        12,
        12,
        768,
        Some(1024),
        6e-4,
        M / 2,
        16,
        "GPT-2; GPT-3 Small LR/batch"
    ),
    preset!(
        "gpt2-medium",
        24,
        16,
        1024,
        Some(1024),
        3e-4,
        M / 2,
        8,
        "GPT-2; GPT-3 Medium LR/batch"
    ),
    preset!(
        "gpt2-large",
        36,
        20,
        1280,
        Some(1024),
        2.5e-4,
        M / 2,
        8,
        "GPT-2; GPT-3 Large LR/batch"
    ),
    preset!(
        "gpt2-xl",
        48,
        25,
        1600,
        Some(1024),
        2e-4,
        M,
        4,
        "GPT-2; GPT-3 XL LR/batch"
    ),
    // GPT-3 Table 2.1 (dense attention). The table's XL row (24 heads × 128 = 3072 ≠ 2048)
    // and 13B width (5140) are typos: 16 heads × 128 and 40 heads × 128 = 5120.
    preset!(
        "gpt3-small",
        12,
        12,
        768,
        Some(2048),
        6e-4,
        M / 2,
        8,
        "GPT-3 Table 2.1"
    ),
    preset!(
        "gpt3-medium",
        24,
        16,
        1024,
        Some(2048),
        3e-4,
        M / 2,
        8,
        "GPT-3 Table 2.1"
    ),
    preset!(
        "gpt3-large",
        24,
        16,
        1536,
        Some(2048),
        2.5e-4,
        M / 2,
        4,
        "GPT-3 Table 2.1"
    ),
    preset!(
        "gpt3-xl",
        24,
        16,
        2048,
        Some(2048),
        2e-4,
        M,
        4,
        "GPT-3 Table 2.1"
    ),
    preset!(
        "gpt3-2.7b",
        32,
        32,
        2560,
        Some(2048),
        1.6e-4,
        M,
        2,
        "GPT-3 Table 2.1"
    ),
    preset!(
        "gpt3-6.7b",
        32,
        32,
        4096,
        Some(2048),
        1.2e-4,
        2 * M,
        1,
        "GPT-3 Table 2.1"
    ),
    preset!(
        "gpt3-13b",
        40,
        40,
        5120,
        Some(2048),
        1e-4,
        2 * M,
        1,
        "GPT-3 Table 2.1"
    ),
    // Cerebras-GPT Table 1 (batch in sequences of 2048 tokens).
    preset!(
        "cerebras-gpt-111m",
        10,
        12,
        768,
        Some(2048),
        6e-4,
        120 * 2048,
        8,
        "Cerebras-GPT Table 1"
    ),
    preset!(
        "cerebras-gpt-256m",
        14,
        17,
        1088,
        Some(2048),
        6e-4,
        264 * 2048,
        8,
        "Cerebras-GPT Table 1"
    ),
    preset!(
        "cerebras-gpt-590m",
        18,
        12,
        1536,
        Some(2048),
        2e-4,
        264 * 2048,
        4,
        "Cerebras-GPT Table 1"
    ),
    preset!(
        "cerebras-gpt-1.3b",
        24,
        16,
        2048,
        Some(2048),
        2e-4,
        528 * 2048,
        4,
        "Cerebras-GPT Table 1"
    ),
    preset!(
        "cerebras-gpt-2.7b",
        32,
        32,
        2560,
        Some(2048),
        2e-4,
        528 * 2048,
        2,
        "Cerebras-GPT Table 1"
    ),
    preset!(
        "cerebras-gpt-6.7b",
        32,
        32,
        4096,
        Some(2048),
        1.2e-4,
        1040 * 2048,
        1,
        "Cerebras-GPT Table 1"
    ),
    preset!(
        "cerebras-gpt-13b",
        40,
        40,
        5120,
        Some(2048),
        1.2e-4,
        720 * 2048,
        1,
        "Cerebras-GPT Table 1"
    ),
];

impl Preset {
    /// The preset called `name`.
    pub fn find(name: &str) -> Option<&'static Preset> {
        PRESETS.iter().find(|p| p.name == name)
    }

    /// All preset names, comma-separated (for error messages).
    pub fn names() -> String {
        PRESETS
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The model shape, GPT-2 vocabulary padded; `seq_len` fills a context the preset leaves
    /// open (1024 when unknown).
    pub fn config(&self, seq_len: Option<usize>) -> GptConfig {
        GptConfig {
            vocab_size: GPT2_VOCAB_SIZE as usize,
            pad_vocab: true,
            n_ctx: self.n_ctx.or(seq_len).unwrap_or(1024),
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_embd: self.n_embd,
            bias: true,
            dropout: 0.0,
            mup: None,
            ffn_size: None,
            layer_norm_eps: DEFAULT_LAYER_NORM_EPS,
            init: None,
        }
    }
}

#[cfg(test)]
mod serde_tests {
    use super::*;

    /// A model written before `ffn_size`, `layer_norm_eps` and `init` existed (a `state.json`'s
    /// `model`, a run's saved config) loads as GPT-2's, and such a model is written as before.
    #[test]
    fn a_config_written_before_the_cerebras_fields_loads() {
        let old = r#"{"vocab_size":50257,"pad_vocab":true,"n_ctx":1024,"n_layer":12,"n_head":12,"n_embd":768,"bias":true,"dropout":0.0}"#;
        let cfg: GptConfig = serde_json::from_str(old).unwrap();
        assert_eq!(cfg, GptConfig::gpt2_small());
        assert_eq!(
            (cfg.ffn_width(), cfg.layer_norm_eps, cfg.init),
            (3072, 1e-5, None)
        );
        assert_eq!(serde_json::to_string(&cfg).unwrap(), old);
        // Unknown fields are still refused.
        let typo = old.replace("\"bias\"", "\"biass\"");
        assert!(serde_json::from_str::<GptConfig>(&typo).is_err());
        // New fields round-trip.
        let cerebras = GptConfig {
            ffn_size: Some(1000),
            layer_norm_eps: 1e-6,
            init: Some(InitConfig {
                std: Some(SpInitStd {
                    embedding: 0.02,
                    hidden: 0.02,
                    residual: 0.0025,
                }),
                truncation: Some(2.0),
            }),
            ..cfg
        };
        let text = serde_json::to_string(&cerebras).unwrap();
        assert_eq!(serde_json::from_str::<GptConfig>(&text).unwrap(), cerebras);
        assert_eq!(cerebras.breakdown().mlp, 12 * (768 * 1000 * 2 + 1000 + 768));
    }
}
