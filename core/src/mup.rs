//! Per-tensor initialization, learning rate and weight decay: μP (Maximal Update
//! Parameterization) as Cerebras-GPT uses it, or the standard parameterization (SP). Free of
//! libtorch: the model's initialization, the optimizer's groups and `plan --mup` all read
//! [`mup_table`].
//!
//! With width multiplier m = `n_embd` / D₀, σ = σ_base and η = the run's base learning rate:
//!
//! | tensors                          | SP init             | μP init        | μP LR | decay |
//! |----------------------------------|---------------------|----------------|-------|-------|
//! | token and position embeddings    | N(0, 0.02)          | N(0, σ)        | η     | yes   |
//! | QKV, MLP in (`c_attn`, `c_fc`)   | N(0, 0.02)          | N(0, σ/√m)     | η/m   | yes   |
//! | residual outputs (both `c_proj`) | N(0, 0.02/√(2L))    | N(0, σ/√(2mL)) | η/m   | yes   |
//! | LayerNorm gains                  | 1                   | 1              | η     | no    |
//! | biases (linear and LayerNorm)    | 0                   | 0              | η     | no    |
//!
//! Under SP every learning rate is η. μP also multiplies the embedding output by
//! `embed_mult`, the logits by 1/m and scales attention scores by 1/d_head instead of
//! 1/√d_head (see [`GptConfig::embedding_multiplier`], [`GptConfig::output_multiplier`],
//! [`GptConfig::attention_scale`]). The position embedding is treated like the token embedding
//! (μP counts both as input weights). Weight decay is decoupled and multiplied by the tensor's
//! learning rate (PyTorch's AdamW), so it shrinks with the LR of hidden matrices.

use crate::config::GptConfig;
use serde::Serialize;
use std::fmt::Write as _;

/// Init std of every normally initialized tensor under the standard parameterization (GPT-2).
pub const SP_INIT_STD: f64 = 0.02;

/// The role a parameter plays, which fixes its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum TensorKind {
    /// Token or position embedding (the token embedding is also the tied output layer).
    Embedding,
    /// A hidden matrix: the QKV projection or the MLP's first layer.
    Hidden,
    /// A projection into the residual stream: attention output or the MLP's second layer.
    ResidualOutput,
    /// A LayerNorm gain.
    LayerNormGain,
    /// A bias (of a linear layer or a LayerNorm).
    Bias,
}

/// How a tensor is initialized.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Init {
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
}

impl Init {
    /// The standard deviation (0 for constants).
    pub fn std(&self) -> f64 {
        match *self {
            Init::Normal(std) => std,
            Init::Zeros | Init::Ones => 0.0,
        }
    }
}

impl TensorKind {
    /// Initialization under `config`'s parameterization.
    pub fn init(self, config: &GptConfig) -> Init {
        let layers = config.n_layer as f64;
        match (self, config.mup) {
            (TensorKind::LayerNormGain, _) => Init::Ones,
            (TensorKind::Bias, _) => Init::Zeros,
            (kind, None) => match config.init.and_then(|init| init.std) {
                // A config's own standard deviations (Cerebras' initializers).
                Some(std) => Init::Normal(match kind {
                    TensorKind::Embedding => std.embedding,
                    TensorKind::Hidden => std.hidden,
                    _ => std.residual,
                }),
                None if kind == TensorKind::ResidualOutput => {
                    // GPT-2's residual scaling 1/√(2L).
                    Init::Normal(SP_INIT_STD / (2.0 * layers).sqrt())
                }
                None => Init::Normal(SP_INIT_STD),
            },
            (TensorKind::Embedding, Some(mup)) => Init::Normal(mup.init_std),
            (TensorKind::Hidden, Some(mup)) => {
                Init::Normal(mup.init_std / config.width_mult().sqrt())
            }
            (TensorKind::ResidualOutput, Some(mup)) => {
                Init::Normal(mup.init_std / (2.0 * config.width_mult() * layers).sqrt())
            }
        }
    }

    /// Learning rate as a multiple of the base (scheduled) one: 1/m for μP's hidden and
    /// residual-output matrices, 1 otherwise.
    pub fn lr_mult(self, config: &GptConfig) -> f64 {
        match (self, config.mup) {
            (TensorKind::Hidden | TensorKind::ResidualOutput, Some(_)) => 1.0 / config.width_mult(),
            _ => 1.0,
        }
    }

    /// Whether AdamW decays it: matrices yes, LayerNorm gains and biases no.
    pub fn weight_decay(self) -> bool {
        !matches!(self, TensorKind::LayerNormGain | TensorKind::Bias)
    }
}

/// One row of [`mup_table`]: the parameters whose names match `pattern`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TensorRule {
    /// Hugging Face GPT-2 parameter names; `*` matches any text, dots included.
    pub pattern: &'static str,
    /// What they are.
    pub kind: TensorKind,
    /// How they are initialized.
    pub init: Init,
    /// Learning rate / base learning rate.
    pub lr_mult: f64,
    /// Peak learning rate: base × `lr_mult`.
    pub lr: f64,
    /// Decayed by AdamW.
    pub weight_decay: bool,
}

impl TensorRule {
    /// Whether parameter `name` falls under this rule.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.pattern.as_bytes(), name.as_bytes())
    }
}

/// `*` matches any run of bytes (dots included); everything else matches itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// The rules for every parameter of a model with `config` trained at base learning rate
/// `base_lr`: μP's when `config.mup` is set, the standard parameterization's otherwise. Each
/// parameter matches exactly one rule ([`rule_for`]); bias rows appear only when the model has
/// biases.
pub fn mup_table(config: &GptConfig, base_lr: f64) -> Vec<TensorRule> {
    let mut rows = vec![
        ("transformer.wte.weight", TensorKind::Embedding),
        ("transformer.wpe.weight", TensorKind::Embedding),
        ("transformer.h.*.attn.c_attn.weight", TensorKind::Hidden),
        ("transformer.h.*.mlp.c_fc.weight", TensorKind::Hidden),
        (
            "transformer.h.*.attn.c_proj.weight",
            TensorKind::ResidualOutput,
        ),
        (
            "transformer.h.*.mlp.c_proj.weight",
            TensorKind::ResidualOutput,
        ),
        ("transformer.*ln_*.weight", TensorKind::LayerNormGain),
    ];
    if config.bias {
        rows.push(("transformer.*.bias", TensorKind::Bias));
    }
    rows.into_iter()
        .map(|(pattern, kind)| {
            let lr_mult = kind.lr_mult(config);
            TensorRule {
                pattern,
                kind,
                init: kind.init(config),
                lr_mult,
                lr: base_lr * lr_mult,
                weight_decay: kind.weight_decay(),
            }
        })
        .collect()
}

/// The rule of parameter `name` (as `h5gpt_train::model::Gpt` names it), if any.
pub fn rule_for(config: &GptConfig, base_lr: f64, name: &str) -> Option<TensorRule> {
    mup_table(config, base_lr)
        .into_iter()
        .find(|rule| rule.matches(name))
}

/// The table as text: a header saying the parameterization, then one line per rule.
pub fn format_table(config: &GptConfig, base_lr: f64) -> String {
    let mut out = match config.mup {
        Some(mup) => format!(
            "μP: width {} / base width {} = m {} | embedding output × {} | logits × 1/m = {:.6} | attention scores × 1/d_head = 1/{} | σ_base {} | η_base {:e}\n",
            config.n_embd,
            mup.base_width,
            config.width_mult(),
            mup.embed_mult,
            1.0 / config.width_mult(),
            config.head_size(),
            mup.init_std,
            base_lr
        ),
        None => format!(
            "standard parameterization: attention scores × 1/√d_head | base LR {base_lr:e}\n"
        ),
    };
    let _ = writeln!(
        out,
        "{:<36} {:<15} {:<15} {:>9} {:>11}  decay",
        "parameter", "kind", "init", "LR mult", "LR"
    );
    for rule in mup_table(config, base_lr) {
        let init = match (rule.init, config.init.and_then(|init| init.truncation)) {
            (Init::Normal(std), Some(k)) => format!("N(0, {std:.6}) ±{k}σ"),
            (Init::Normal(std), None) => format!("N(0, {std:.6})"),
            (Init::Zeros, _) => "zeros".into(),
            (Init::Ones, _) => "ones".into(),
        };
        let _ = writeln!(
            out,
            "{:<36} {:<15} {:<15} {:>9.4} {:>11.4e}  {}",
            rule.pattern,
            format!("{:?}", rule.kind),
            init,
            rule.lr_mult,
            rule.lr,
            if rule.weight_decay { "yes" } else { "no" }
        );
    }
    out
}
