//! GPT-2 in tch: learned token and position embeddings, pre-LayerNorm blocks (causal
//! self-attention through `scaled_dot_product_attention`, an MLP (4× wide unless `ffn_size`
//! says) with tanh-GELU), a final LayerNorm and an LM head tied to the token embedding.
//!
//! Initialization follows [`mup_table`](h5gpt_core::mup::mup_table): GPT-2's N(0, 0.02) with the
//! residual projections at 0.02/√(2L), or μP's when the config has a
//! [`MupConfig`](h5gpt_core::config::MupConfig) — which also multiplies the embedding output by
//! `embed_mult`, the logits by 1/m and scales attention scores by 1/d_head.
//!
//! The variables are those of the parameter list ([`param_specs`]): its names (Hugging Face's
//! GPT-2's, `transformer.wte.weight`, `transformer.h.{i}.attn.c_attn.weight`, …, so weights can
//! move both ways), its shapes (linear weights `[out, in]`; HF's Conv1D stores `[in, out]`), its
//! order of creation and each tensor's initialization.

use h5gpt_core::mup::Init;
use h5gpt_core::params::{param_specs, ParamSpec};
use std::collections::HashMap;
use tch::nn;
use tch::{Kind, Tensor};

pub use h5gpt_core::config::{padded_vocab, GptConfig};

/// Creates every variable of `config`'s parameter list under `root`, in the list's order
/// (which fixes what the random-number generator draws for each), initialized by its rule
/// (a normal truncated right after it is drawn when the config's `init` says). Returns them by
/// name.
fn create_variables(root: &nn::Path, config: &GptConfig) -> Variables {
    let variables = param_specs(config)
        .into_iter()
        .map(|spec| {
            let tensor = create_variable(root, &spec, config);
            (spec.name, tensor)
        })
        .collect();
    Variables(variables)
}

/// One variable of the list under `root` (tch names a variable by path components, joined by
/// dots).
fn create_variable(root: &nn::Path, spec: &ParamSpec, config: &GptConfig) -> Tensor {
    let (dir, leaf) = spec
        .name
        .rsplit_once('.')
        .expect("parameter names have a module path");
    let mut parts = dir.split('.');
    let first = parts.next().expect("split yields at least one part");
    let path = parts.fold(root / first, |path, part| &path / part);
    let init = match spec.init(config) {
        Init::Normal(stdev) => nn::Init::Randn { mean: 0.0, stdev },
        Init::Zeros => nn::Init::Const(0.0),
        Init::Ones => nn::Init::Const(1.0),
    };
    let shape: Vec<i64> = spec.shape.iter().map(|&n| n as i64).collect();
    let var = path.var(leaf, &shape, init);
    if let (Init::Normal(std), Some(bound)) = (
        spec.init(config),
        config.init.and_then(|init| init.truncation),
    ) {
        truncate_normal_init(&var, std, bound);
    }
    var
}

/// The model's variables by name, taken out one by one as the layers are assembled.
struct Variables(HashMap<String, Tensor>);

impl Variables {
    /// The variable `name`, which the parameter list must have.
    fn take(&mut self, name: &str) -> Tensor {
        self.0
            .remove(name)
            .unwrap_or_else(|| panic!("the parameter list has no {name}"))
    }

    /// The variable `name`, if the list has it (biases, when the model has them).
    fn take_optional(&mut self, name: &str) -> Option<Tensor> {
        self.0.remove(name)
    }
}

/// A linear layer `y = x·Wᵀ + b`, `W` `[out, in]`.
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn new(vars: &mut Variables, prefix: &str) -> Linear {
        Linear {
            weight: vars.take(&format!("{prefix}.weight")),
            bias: vars.take_optional(&format!("{prefix}.bias")),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// LayerNorm with an optional bias (tch's has both or neither).
struct LayerNorm {
    weight: Tensor,
    bias: Option<Tensor>,
    width: i64,
    eps: f64,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(
            [self.width],
            Some(&self.weight),
            self.bias.as_ref(),
            self.eps,
            true,
        )
    }

    fn new(vars: &mut Variables, prefix: &str, cfg: &GptConfig) -> LayerNorm {
        let weight = vars.take(&format!("{prefix}.weight"));
        LayerNorm {
            width: weight.size()[0],
            weight,
            bias: vars.take_optional(&format!("{prefix}.bias")),
            eps: cfg.layer_norm_eps,
        }
    }
}

/// Redraws `weight` (drawn N(0, `std`)) from N(0, `std`) truncated to ±`bound` standard
/// deviations, as `torch.nn.init.trunc_normal_` does: uniform in [2Φ(−k)−1, 2Φ(k)−1], then
/// erfinv, scaled by σ√2, clamped to the bounds.
pub fn truncate_normal_init(weight: &Tensor, std: f64, bound: f64) {
    // 2Φ(k) − 1 = erf(k/√2); computed by libtorch's erf (Rust's std has none).
    let upper = Tensor::from(bound / std::f64::consts::SQRT_2)
        .erf()
        .double_value(&[]);
    tch::no_grad(|| {
        let mut w = weight.shallow_clone();
        let _ = w.uniform_(-upper, upper);
        let _ = w.erfinv_();
        let _ = w.g_mul_scalar_(std * std::f64::consts::SQRT_2);
        let _ = w.clamp_(-bound * std, bound * std);
    });
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
    n_head: i64,
    dropout: f64,
    /// Attention-score scale; `None`: SDPA's 1/√d_head.
    attn_scale: Option<f64>,
}

impl Block {
    /// Block `i` from its variables (`transformer.h.{i}.…`).
    fn new(vars: &mut Variables, i: usize, cfg: &GptConfig) -> Block {
        let p = format!("transformer.h.{i}");
        Block {
            ln_1: LayerNorm::new(vars, &format!("{p}.ln_1"), cfg),
            c_attn: Linear::new(vars, &format!("{p}.attn.c_attn")),
            attn_proj: Linear::new(vars, &format!("{p}.attn.c_proj")),
            ln_2: LayerNorm::new(vars, &format!("{p}.ln_2"), cfg),
            c_fc: Linear::new(vars, &format!("{p}.mlp.c_fc")),
            mlp_proj: Linear::new(vars, &format!("{p}.mlp.c_proj")),
            n_head: cfg.n_head as i64,
            dropout: cfg.dropout,
            attn_scale: cfg.attention_scale(),
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let (b, t, c) = x.size3().expect("(B, T, C)");
        let hs = c / self.n_head;
        let qkv = self.c_attn.forward(&self.ln_1.forward(x)); // (B, T, 3C)
        let split = qkv.split(c, 2);
        // (B, T, C) -> (B, nh, T, hs)
        let heads = |t_: &Tensor| t_.view([b, t, self.n_head, hs]).transpose(1, 2);
        let (q, k, v) = (heads(&split[0]), heads(&split[1]), heads(&split[2]));
        let p = if train { self.dropout } else { 0.0 };
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            p,
            true,
            self.attn_scale,
            false,
        );
        let y = y.transpose(1, 2).contiguous().view([b, t, c]); // (B, T, C)
        let x = x + self.attn_proj.forward(&y).dropout(p, train);
        let h = self.c_fc.forward(&self.ln_2.forward(&x)).gelu("tanh"); // (B, T, ffn)
        &x + self.mlp_proj.forward(&h).dropout(p, train)
    }
}

/// The GPT-2 model.
pub struct Gpt {
    config: GptConfig,
    /// Token embedding `[rows, C]`, also the tied LM head.
    wte: Tensor,
    /// Position embedding `[n_ctx, C]`.
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
}

impl Gpt {
    /// Builds the model's parameters under `root`: the variables of the parameter list
    /// ([`param_specs`]), named as in Hugging Face GPT-2.
    pub fn new(root: &nn::Path, config: GptConfig) -> Gpt {
        let mut vars = create_variables(root, &config);
        let gpt = Gpt {
            config,
            wte: vars.take("transformer.wte.weight"),
            wpe: vars.take("transformer.wpe.weight"),
            blocks: (0..config.n_layer)
                .map(|i| Block::new(&mut vars, i, &config))
                .collect(),
            ln_f: LayerNorm::new(&mut vars, "transformer.ln_f", &config),
        };
        let unused: Vec<&String> = vars.0.keys().collect();
        assert!(unused.is_empty(), "parameters no layer takes: {unused:?}");
        gpt
    }

    /// The shape it was built with.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// Logits `(B, T, vocab)` for token ids `(B, T)` (int64).
    pub fn forward(&self, idx: &Tensor, train: bool) -> Tensor {
        self.run(idx, train, None)
    }

    /// Logits as [`forward`](Self::forward) computes them, and the residual stream `(B, T, C)`
    /// after the embeddings and after every block: `n_layer + 1` tensors, the last block's
    /// output last (before the final LayerNorm). For inspecting activations, such as μP's
    /// coordinate check.
    pub fn forward_with_activations(&self, idx: &Tensor, train: bool) -> (Tensor, Vec<Tensor>) {
        let mut activations = Vec::with_capacity(self.blocks.len() + 1);
        let logits = self.run(idx, train, Some(&mut activations));
        (logits, activations)
    }

    /// Logits `(N, vocab)` at `N` chosen positions only: row `rows[k]`, position
    /// `positions[k]` of the forward over `idx` `(B, T)` (both int64 on `idx`'s device). The
    /// same values as [`forward`](Self::forward) at those positions, without the head's matmul
    /// over every other position (a third of GPT-2 small's FLOPs at full context): what scoring
    /// a continuation needs.
    pub fn forward_at(&self, idx: &Tensor, rows: &Tensor, positions: &Tensor) -> Tensor {
        let x = self.residual_stream(idx, false, None);
        let x = x.index(&[Some(rows), Some(positions)]); // (N, C)
        self.head(&x)
    }

    fn run(&self, idx: &Tensor, train: bool, activations: Option<&mut Vec<Tensor>>) -> Tensor {
        let x = self.residual_stream(idx, train, activations);
        self.head(&x)
    }

    /// The tied head over the last block's output `(…, C)`: logits = ln_f(x) · wteᵀ (μP:
    /// × 1/m), `(…, rows)`.
    fn head(&self, x: &Tensor) -> Tensor {
        let logits = self.ln_f.forward(x).matmul(&self.wte.tr());
        match self.config.output_multiplier() {
            Some(mult) => logits * mult,
            None => logits,
        }
    }

    /// The residual stream after the last block, `(B, T, C)` (before the final LayerNorm);
    /// `activations` collects it after the embeddings and after every block.
    fn residual_stream(
        &self,
        idx: &Tensor,
        train: bool,
        mut activations: Option<&mut Vec<Tensor>>,
    ) -> Tensor {
        let (_, t) = idx.size2().expect("(B, T)");
        assert!(
            t as usize <= self.config.n_ctx,
            "sequence {t} longer than n_ctx {}",
            self.config.n_ctx
        );
        let pos = Tensor::arange(t, (Kind::Int64, idx.device()));
        let mut x = embed(&self.wte, idx) + embed(&self.wpe, &pos); // (B, T, C)
        if let Some(mult) = self.config.embedding_multiplier() {
            x *= mult;
        }
        let mut x = x.dropout(self.config.dropout, train);
        for block in &self.blocks {
            if let Some(seen) = activations.as_deref_mut() {
                seen.push(x.shallow_clone());
            }
            x = block.forward(&x, train);
        }
        if let Some(seen) = activations {
            seen.push(x.shallow_clone());
        }
        x
    }

    /// Mean cross-entropy over positions whose `mask` is 1 (the summed loss of
    /// [`loss_sum`](Self::loss_sum) over its count of loss tokens).
    pub fn loss(&self, idx: &Tensor, labels: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let LossSum { sum, tokens } = self.loss_sum(idx, labels, mask, train);
        sum / tokens
    }

    /// The cross-entropy summed over the positions whose `mask` is not 0, and their count, both
    /// 0-d f32 tensors on the model's device. The training step backpropagates the sum and
    /// divides by the global batch's count (Megatron's per-token loss), so the loss and the
    /// gradient weigh every loss token alike, however the batch is cut into micro-batches and
    /// ranks. Nothing here moves a host value to the device or reads one back.
    pub fn loss_sum(&self, idx: &Tensor, labels: &Tensor, mask: &Tensor, train: bool) -> LossSum {
        let logits = self.forward(idx, train); // (B, T, rows)

        // The softmax runs over the real vocabulary: padding rows are never targets, and leaving
        // them out makes the loss that of the unpadded model (what an export is). Their logits
        // are set to −∞ outside autograd rather than sliced off: a slice costs a copy of the
        // logits (the softmax wants them contiguous) and, in backward, a padded-size zero tensor
        // to scatter the gradient into. Loss and gradients are the same: a −∞ logit has
        // probability 0, so it adds nothing to the softmax, and the softmax's backward gives it
        // gradient 0, as the slice would. (Nothing saved for backward holds the logits yet: the
        // head's matmul saves only its inputs.)
        let (rows, v) = (logits.size()[2], self.config.vocab_size as i64);
        if rows > v {
            tch::no_grad(|| {
                let _ = logits.narrow(2, v, rows - v).fill_(f64::NEG_INFINITY);
            });
        }
        // −100 (ignored) where the mask is 0: a fill with a scalar, not a `where` with a 0-d
        // tensor, which on CUDA is a blocking copy from pageable host memory.
        let masked = mask.eq(0);
        let targets = labels.masked_fill(&masked, -100);
        LossSum {
            sum: cross_entropy_sum(&logits.reshape([-1, rows]), &targets.view([-1])),
            tokens: masked.logical_not().sum(Kind::Float),
        }
    }
}

/// A micro-batch's loss before the mean: the summed cross-entropy of its loss tokens and their
/// count (0-d f32 tensors on the device).
pub struct LossSum {
    /// Σ −log p(label) over the loss tokens.
    pub sum: Tensor,
    /// Number of loss tokens.
    pub tokens: Tensor,
}

/// The rows of `table` at `ids` (an embedding lookup, as `nn::Embedding` does it).
fn embed(table: &Tensor, ids: &Tensor) -> Tensor {
    Tensor::embedding(table, ids, -1, false, false)
}

/// Mean cross-entropy of `logits` `(N, V)` against `targets` `(N,)`, over targets that are not
/// −100, as a 0-d f32 tensor: [`cross_entropy_sum`] over the count of such targets.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    cross_entropy_sum(logits, targets) / targets.ne(-100).sum(Kind::Float)
}

/// Summed cross-entropy of `logits` `(N, V)` against `targets` `(N,)` over targets that are
/// not −100, as a 0-d f32 tensor.
///
/// fp32 logits take libtorch's fused `cross_entropy_loss` (log-softmax and NLL, sum reduction,
/// `ignore_index = -100`) instead of a gather and a masked sum (issue 30's suspected cause of
/// the CPU step's regression; the timing is still to be taken).
/// bf16 logits run the log-softmax in bf16, accumulating in fp32 (for bf16 logits, PyTorch's
/// `SoftMaxForward<bf16, float, bf16>` under autocast): they are never copied to fp32, which
/// would double the traffic of the largest activation in forward and backward; only the N
/// picked log-probabilities are summed in fp32.
pub fn cross_entropy_sum(logits: &Tensor, targets: &Tensor) -> Tensor {
    if logits.kind() == Kind::Float {
        return logits.cross_entropy_loss(targets, None::<Tensor>, tch::Reduction::Sum, -100, 0.0);
    }
    let ignored = targets.eq(-100); // (N,)
                                    // The dtype named explicitly: autocast would otherwise run log_softmax in fp32.
    let log_probs = logits.log_softmax(-1, logits.kind()); // (N, V), logits' dtype
    let picked = log_probs
        .gather(-1, &targets.clamp_min(0).unsqueeze(-1), false)
        .squeeze_dim(-1)
        .to_kind(Kind::Float) // (N,)
        .masked_fill(&ignored, 0.0);
    -picked.sum(Kind::Float)
}
