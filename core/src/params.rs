//! Every parameter tensor of the model, listed once.
//!
//! [`param_specs`] gives, for a [`GptConfig`], each tensor the model allocates: its name (as the
//! model and its checkpoints name it), its shape, its [`Role`] (which fixes its μP rule, see
//! [`crate::mup`]), the [`Part`] of the model it is counted under, and its Hugging Face GPT-2
//! name and [`HfLayout`]. Everything that needs to know the parameters reads this list:
//!
//! - `h5gpt_train::model::Gpt::new` creates the variables, in the list's order (which fixes what
//!   the random-number generator draws for each), initialized as [`ParamSpec::init`] says;
//! - `h5gpt_train::hf` exports and loads Hugging Face GPT-2 tensors by `hf_name` and layout;
//! - [`GptConfig::breakdown`] and [`GptConfig::parameter_count`] (and the `plan` tool's
//!   [`ParamCounts`](crate::plan::model::ParamCounts)) sum it;
//! - [`crate::mup::mup_table`], [`crate::mup::rule_for`] and the optimizer's groups take each
//!   tensor's rule from its role.
//!
//! A new tensor (or a new shape of one) is added here and nowhere else.

use crate::config::GptConfig;
use crate::mup::{Init, TensorKind};
use serde::Serialize;

/// What a parameter does. The variant order is the order of [`crate::mup::mup_table`]'s rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Role {
    /// The token embedding, `[rows, n_embd]`; also the (tied) LM head.
    TokenEmbedding,
    /// The learned position embedding, `[n_ctx, n_embd]`.
    PositionEmbedding,
    /// The attention's fused query/key/value projection (`attn.c_attn`), `[3·n_embd, n_embd]`.
    AttentionQkv,
    /// The MLP's first layer (`mlp.c_fc`), `[ffn, n_embd]` (`ffn`:
    /// [`ffn_width`](GptConfig::ffn_width), 4·`n_embd` unless `ffn_size` says).
    FfnIn,
    /// The attention's output projection into the residual stream (`attn.c_proj`).
    AttentionOutput,
    /// The MLP's second layer, a projection into the residual stream (`mlp.c_proj`).
    FfnOut,
    /// A LayerNorm gain (`ln_1`, `ln_2`, `ln_f`).
    LayerNormGain,
    /// A bias, of a linear layer or a LayerNorm.
    Bias,
}

impl Role {
    /// The μP / standard-parameterization rule it falls under.
    pub fn kind(self) -> TensorKind {
        match self {
            Role::TokenEmbedding | Role::PositionEmbedding => TensorKind::Embedding,
            Role::AttentionQkv | Role::FfnIn => TensorKind::Hidden,
            Role::AttentionOutput | Role::FfnOut => TensorKind::ResidualOutput,
            Role::LayerNormGain => TensorKind::LayerNormGain,
            Role::Bias => TensorKind::Bias,
        }
    }

    /// The names of its tensors as one pattern (`*` matches any text): how
    /// [`crate::mup::mup_table`] labels its row.
    pub fn pattern(self) -> &'static str {
        match self {
            Role::TokenEmbedding => "transformer.wte.weight",
            Role::PositionEmbedding => "transformer.wpe.weight",
            Role::AttentionQkv => "transformer.h.*.attn.c_attn.weight",
            Role::FfnIn => "transformer.h.*.mlp.c_fc.weight",
            Role::AttentionOutput => "transformer.h.*.attn.c_proj.weight",
            Role::FfnOut => "transformer.h.*.mlp.c_proj.weight",
            Role::LayerNormGain => "transformer.*ln_*.weight",
            Role::Bias => "transformer.*.bias",
        }
    }
}

/// The part of the model a parameter is counted under (see
/// [`ParameterBreakdown`](crate::config::ParameterBreakdown)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Part {
    /// The token embedding (= the tied LM head).
    TokenEmbedding,
    /// The position embedding.
    PositionEmbedding,
    /// Attention: QKV and output projections with their biases.
    Attention,
    /// MLP: both layers with their biases.
    Mlp,
    /// LayerNorm gains and biases.
    LayerNorm,
}

/// How a parameter's Hugging Face GPT-2 tensor relates to ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum HfLayout {
    /// Same shape, same values.
    Same,
    /// A `Conv1D` weight: HF stores `[in, out]`, our linear layers `[out, in]` (transposed
    /// both ways).
    Conv1d,
    /// The token embedding: HF has exactly `vocab_size` rows, ours
    /// [`embedding_rows`](GptConfig::embedding_rows) (padded when `pad_vocab`: an export drops
    /// the padding rows, a load appends zero rows). It is also the LM head, tied on both sides:
    /// no `lm_head.weight` is written, and one that is read must equal it.
    TokenEmbedding,
}

/// One parameter tensor of the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamSpec {
    /// Its name in the model's variables and checkpoints (`transformer.h.0.attn.c_attn.weight`).
    pub name: String,
    /// Its name in a Hugging Face `GPT2LMHeadModel` state dict (the same, by design).
    pub hf_name: String,
    /// Its shape as the model holds it (linear weights `[out, in]`).
    pub shape: Vec<usize>,
    /// What it does (fixes its μP rule).
    pub role: Role,
    /// Which part of the model it is counted under.
    pub part: Part,
    /// How the Hugging Face tensor relates to it.
    pub hf_layout: HfLayout,
}

impl ParamSpec {
    /// Elements as the model allocates them.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Its shape in Hugging Face's layout (`config` gives the unpadded vocabulary).
    pub fn hf_shape(&self, config: &GptConfig) -> Vec<usize> {
        match self.hf_layout {
            HfLayout::Same => self.shape.clone(),
            HfLayout::Conv1d => vec![self.shape[1], self.shape[0]],
            HfLayout::TokenEmbedding => vec![config.vocab_size, self.shape[1]],
        }
    }

    /// Elements in Hugging Face's layout (the vocabulary unpadded).
    pub fn hf_numel(&self, config: &GptConfig) -> usize {
        self.hf_shape(config).iter().product()
    }

    /// The μP / standard-parameterization rule it falls under.
    pub fn kind(&self) -> TensorKind {
        self.role.kind()
    }

    /// How it is initialized under `config`'s parameterization.
    pub fn init(&self, config: &GptConfig) -> Init {
        self.kind().init(config)
    }
}

/// Every parameter of the model `config` builds, in the order the model creates them (and
/// Hugging Face's GPT-2 lists them): `wte`, `wpe`, then per block `ln_1`, `attn.c_attn`,
/// `attn.c_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj` (each weight followed by its bias when the
/// model has biases), then `ln_f`.
pub fn param_specs(config: &GptConfig) -> Vec<ParamSpec> {
    let d = config.n_embd;
    let ffn = config.ffn_width();
    let mut out = Vec::with_capacity(2 + 12 * config.n_layer + 2);
    let mut push = |name: String, shape: Vec<usize>, role, part, hf_layout| {
        out.push(ParamSpec {
            hf_name: name.clone(),
            name,
            shape,
            role,
            part,
            hf_layout,
        })
    };
    push(
        "transformer.wte.weight".into(),
        vec![config.embedding_rows(), d],
        Role::TokenEmbedding,
        Part::TokenEmbedding,
        HfLayout::TokenEmbedding,
    );
    push(
        "transformer.wpe.weight".into(),
        vec![config.n_ctx, d],
        Role::PositionEmbedding,
        Part::PositionEmbedding,
        HfLayout::Same,
    );
    // A LayerNorm of width d, or a linear layer `in` → `out`, with its role and part.
    enum Layer {
        LayerNorm,
        Linear(usize, usize, Role, Part),
    }
    let block = [
        ("ln_1", Layer::LayerNorm),
        (
            "attn.c_attn",
            Layer::Linear(d, 3 * d, Role::AttentionQkv, Part::Attention),
        ),
        (
            "attn.c_proj",
            Layer::Linear(d, d, Role::AttentionOutput, Part::Attention),
        ),
        ("ln_2", Layer::LayerNorm),
        ("mlp.c_fc", Layer::Linear(d, ffn, Role::FfnIn, Part::Mlp)),
        ("mlp.c_proj", Layer::Linear(ffn, d, Role::FfnOut, Part::Mlp)),
    ];
    let layers = (0..config.n_layer)
        .flat_map(|i| {
            block
                .iter()
                .map(move |(name, layer)| (format!("transformer.h.{i}.{name}"), layer))
        })
        .chain([("transformer.ln_f".to_string(), &Layer::LayerNorm)]);
    for (prefix, layer) in layers {
        let (out_width, part) = match *layer {
            Layer::LayerNorm => {
                push(
                    format!("{prefix}.weight"),
                    vec![d],
                    Role::LayerNormGain,
                    Part::LayerNorm,
                    HfLayout::Same,
                );
                (d, Part::LayerNorm)
            }
            Layer::Linear(input, output, role, part) => {
                push(
                    format!("{prefix}.weight"),
                    vec![output, input],
                    role,
                    part,
                    HfLayout::Conv1d,
                );
                (output, part)
            }
        };
        if config.bias {
            push(
                format!("{prefix}.bias"),
                vec![out_width],
                Role::Bias,
                part,
                HfLayout::Same,
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_list_by_hand() {
        let cfg = GptConfig::tiny(10, 4); // L = 2, d = 32
        let specs = param_specs(&cfg);
        assert_eq!(specs.len(), 2 + 2 * 12 + 2);
        let shape = |name: &str| {
            specs
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("{name}"))
                .shape
                .clone()
        };
        assert_eq!(shape("transformer.wte.weight"), [10, 32]);
        assert_eq!(shape("transformer.wpe.weight"), [4, 32]);
        assert_eq!(shape("transformer.h.1.attn.c_attn.weight"), [96, 32]);
        assert_eq!(shape("transformer.h.1.attn.c_attn.bias"), [96]);
        assert_eq!(shape("transformer.h.0.mlp.c_fc.weight"), [128, 32]);
        assert_eq!(shape("transformer.h.0.mlp.c_proj.weight"), [32, 128]);
        assert_eq!(shape("transformer.ln_f.bias"), [32]);
        let c_fc = specs
            .iter()
            .find(|s| s.name == "transformer.h.0.mlp.c_fc.weight")
            .unwrap();
        assert_eq!(c_fc.hf_shape(&cfg), [32, 128]);
        assert_eq!((c_fc.role, c_fc.part), (Role::FfnIn, Part::Mlp));
        // Names are unique, and HF's are ours.
        let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), specs.len());
        assert!(specs.iter().all(|s| s.hf_name == s.name));
        // Without biases: no `.bias` at all, every weight still there.
        let no_bias = param_specs(&GptConfig { bias: false, ..cfg });
        assert_eq!(no_bias.len(), 2 + 2 * 6 + 1);
        assert!(no_bias.iter().all(|s| s.role != Role::Bias));
    }

    #[test]
    fn padded_vocabulary_only_in_our_shape() {
        let cfg = GptConfig::gpt2_small();
        let wte = &param_specs(&cfg)[0];
        assert_eq!(wte.shape, [50304, 768]);
        assert_eq!(wte.hf_shape(&cfg), [50257, 768]);
        assert_eq!(wte.numel() - wte.hf_numel(&cfg), 47 * 768);
    }

    #[test]
    fn every_name_matches_its_roles_pattern_only() {
        let cfg = GptConfig::tiny(10, 4);
        let roles = [
            Role::TokenEmbedding,
            Role::PositionEmbedding,
            Role::AttentionQkv,
            Role::FfnIn,
            Role::AttentionOutput,
            Role::FfnOut,
            Role::LayerNormGain,
            Role::Bias,
        ];
        for spec in param_specs(&cfg) {
            let rule = |role: Role| crate::mup::TensorRule::new(role, &cfg, 1.0);
            let matching: Vec<Role> = roles
                .into_iter()
                .filter(|r| rule(*r).matches(&spec.name))
                .collect();
            assert_eq!(matching, [spec.role], "{}", spec.name);
        }
    }

    /// The counts are the list's sums, and equal GPT-2's closed form (12·L·d² + biases, …),
    /// for shapes with and without biases, padded and unpadded vocabularies, another FFN
    /// width and every preset.
    #[test]
    fn counts_are_the_lists_sums_and_the_closed_form() {
        let mut configs = vec![
            GptConfig::tiny(96, 16),
            GptConfig {
                bias: false,
                ..GptConfig::tiny(64, 8)
            },
            GptConfig {
                pad_vocab: true,
                ..GptConfig::tiny(50257, 8)
            },
            GptConfig {
                ffn_size: Some(100),
                ..GptConfig::tiny(64, 8)
            },
        ];
        configs.extend(crate::config::PRESETS.iter().map(|p| p.config(Some(256))));
        for cfg in configs {
            let specs = param_specs(&cfg);
            let sum: usize = specs.iter().map(ParamSpec::numel).sum();
            let hf_sum: usize = specs.iter().map(|s| s.hf_numel(&cfg)).sum();
            assert_eq!(cfg.parameter_count(), sum, "{cfg:?}");
            assert_eq!(cfg.breakdown_unpadded().total(), hf_sum, "{cfg:?}");
            let (l, d, f, rows) = (
                cfg.n_layer,
                cfg.n_embd,
                cfg.ffn_width(),
                cfg.embedding_rows(),
            );
            let b = usize::from(cfg.bias);
            let parts = cfg.breakdown();
            assert_eq!(parts.token_embedding, rows * d);
            assert_eq!(parts.position_embedding, cfg.n_ctx * d);
            assert_eq!(parts.attention, l * (4 * d * d + b * 4 * d), "{cfg:?}");
            assert_eq!(parts.mlp, l * (2 * d * f + b * (f + d)), "{cfg:?}");
            assert_eq!(parts.layer_norm, (2 * l + 1) * (1 + b) * d, "{cfg:?}");
            assert_eq!(cfg.breakdown_unpadded().token_embedding, cfg.vocab_size * d);
        }
    }
}
