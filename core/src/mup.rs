//! Per-tensor initialization, learning rate and weight decay: μP (Maximal Update
//! Parameterization) as Cerebras-GPT uses it, or the standard parameterization (SP). Free of
//! libtorch. Each tensor's rule follows from its [`Role`] in the model's parameter list
//! ([`crate::params::param_specs`]): the model's initialization, the optimizer's groups,
//! [`rule_for`] and `plan --mup`'s [`mup_table`] all read it there.
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
use crate::params::{param_specs, Role};
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

/// One row of [`mup_table`]: the rule of the parameters of one [`Role`], whose names match
/// `pattern`.
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
    /// The rule of `role`'s tensors in a model with `config` trained at base learning rate
    /// `base_lr`.
    pub fn new(role: Role, config: &GptConfig, base_lr: f64) -> TensorRule {
        let kind = role.kind();
        let lr_mult = kind.lr_mult(config);
        TensorRule {
            pattern: role.pattern(),
            kind,
            init: kind.init(config),
            lr_mult,
            lr: base_lr * lr_mult,
            weight_decay: kind.weight_decay(),
        }
    }

    /// Whether parameter `name` falls under this rule (by its pattern; [`rule_for`] looks the
    /// name up in the parameter list instead).
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
/// `base_lr`: μP's when `config.mup` is set, the standard parameterization's otherwise. One row
/// per [`Role`] the model's parameter list ([`param_specs`]) has, in the roles' order, so bias
/// rows appear only when the model has biases; each parameter matches exactly one row.
pub fn mup_table(config: &GptConfig, base_lr: f64) -> Vec<TensorRule> {
    let mut roles: Vec<Role> = param_specs(config).iter().map(|spec| spec.role).collect();
    roles.sort_unstable();
    roles.dedup();
    roles
        .into_iter()
        .map(|role| TensorRule::new(role, config, base_lr))
        .collect()
}

/// The rule of parameter `name` (as `h5gpt_train::model::Gpt` names it), from its role in the
/// parameter list; `None` when the model has no such parameter.
pub fn rule_for(config: &GptConfig, base_lr: f64, name: &str) -> Option<TensorRule> {
    param_specs(config)
        .into_iter()
        .find(|spec| spec.name == name)
        .map(|spec| TensorRule::new(spec.role, config, base_lr))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MupConfig;

    /// The table built from the parameter list has the rows it had when it was written by
    /// hand, in the same order, with the same rules.
    #[test]
    fn the_table_is_the_hand_written_one() {
        let cfg = GptConfig {
            mup: Some(MupConfig::default()),
            n_embd: 512,
            n_head: 4,
            ..GptConfig::tiny(64, 8)
        };
        let table = mup_table(&cfg, 6e-3);
        let rows: Vec<(&str, TensorKind)> = table.iter().map(|r| (r.pattern, r.kind)).collect();
        assert_eq!(
            rows,
            [
                ("transformer.wte.weight", TensorKind::Embedding),
                ("transformer.wpe.weight", TensorKind::Embedding),
                ("transformer.h.*.attn.c_attn.weight", TensorKind::Hidden),
                ("transformer.h.*.mlp.c_fc.weight", TensorKind::Hidden),
                (
                    "transformer.h.*.attn.c_proj.weight",
                    TensorKind::ResidualOutput
                ),
                (
                    "transformer.h.*.mlp.c_proj.weight",
                    TensorKind::ResidualOutput
                ),
                ("transformer.*ln_*.weight", TensorKind::LayerNormGain),
                ("transformer.*.bias", TensorKind::Bias),
            ]
        );
        // m = 2: hidden matrices at η/2, N(0, 0.08/√2); residual outputs N(0, 0.08/√(2·2·2)).
        assert_eq!(table[2].lr, 3e-3);
        assert_eq!(table[2].init, Init::Normal(0.08 / 2f64.sqrt()));
        assert_eq!(table[4].init, Init::Normal(0.08 / 8f64.sqrt()));
        assert_eq!((table[7].init, table[7].weight_decay), (Init::Zeros, false));
        // Without biases the bias row goes.
        let no_bias = mup_table(&GptConfig { bias: false, ..cfg }, 6e-3);
        assert_eq!(no_bias.len(), 7);
        assert!(no_bias.iter().all(|r| r.kind != TensorKind::Bias));
    }

    #[test]
    fn rule_for_reads_the_parameter_list() {
        let cfg = GptConfig::tiny(64, 8); // 2 layers
        let rule = rule_for(&cfg, 1.0, "transformer.h.1.mlp.c_fc.weight").unwrap();
        assert_eq!(rule.kind, TensorKind::Hidden);
        let rule = rule_for(&cfg, 1.0, "transformer.h.0.ln_2.bias").unwrap();
        assert_eq!(rule.kind, TensorKind::Bias);
        // A name the model does not have (a third layer) has no rule, though a pattern
        // would match it.
        assert_eq!(rule_for(&cfg, 1.0, "transformer.h.2.mlp.c_fc.weight"), None);
        assert_eq!(rule_for(&cfg, 1.0, "lm_head.weight"), None);
    }
}
