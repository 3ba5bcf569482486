//! GPT-2 in tch: learned token and position embeddings, pre-LayerNorm blocks (causal
//! self-attention through `scaled_dot_product_attention`, an MLP (4× wide unless `ffn_size`
//! says) with tanh-GELU), a final
//! LayerNorm and an LM head tied to the token embedding.
//!
//! Initialization follows [`mup_table`](h5gpt_core::mup::mup_table): GPT-2's N(0, 0.02) with the
//! residual projections at 0.02/√(2L), or μP's when the config has a
//! [`MupConfig`](h5gpt_core::config::MupConfig) — which also multiplies the embedding output by
//! `embed_mult`, the logits by 1/m and scales attention scores by 1/d_head.
//!
//! Parameter names follow Hugging Face's GPT-2 (`transformer.wte.weight`,
//! `transformer.h.{i}.attn.c_attn.weight`, …), so weights can move both ways; our linear
//! weights are `[out, in]` (HF's Conv1D stores `[in, out]`).

use h5gpt_core::mup::TensorKind;
use tch::nn;
use tch::{Kind, Tensor};

pub use h5gpt_core::config::{padded_vocab, GptConfig};

fn linear(path: nn::Path, input: usize, output: usize, std: f64, bias: bool) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: std,
        },
        bs_init: Some(nn::Init::Const(0.0)),
        bias,
    };
    nn::linear(path, input as i64, output as i64, config)
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
}

fn layer_norm(path: nn::Path, width: usize, cfg: &GptConfig) -> LayerNorm {
    LayerNorm {
        weight: path.ones("weight", &[width as i64]),
        bias: cfg.bias.then(|| path.zeros("bias", &[width as i64])),
        width: width as i64,
        eps: cfg.layer_norm_eps,
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
    c_attn: nn::Linear,
    attn_proj: nn::Linear,
    ln_2: LayerNorm,
    c_fc: nn::Linear,
    mlp_proj: nn::Linear,
    n_head: i64,
    dropout: f64,
    /// Attention-score scale; `None`: SDPA's 1/√d_head.
    attn_scale: Option<f64>,
}

impl Block {
    fn new(path: &nn::Path, cfg: &GptConfig) -> Block {
        let d = cfg.n_embd;
        let std = TensorKind::Hidden.init(cfg).std();
        // Residual projections: scaled by 1/√(2·n_layer) (GPT-2 paper; μP: 1/√(2·m·n_layer)).
        let residual_std = TensorKind::ResidualOutput.init(cfg).std();
        let f = cfg.ffn_width();
        let block = Block {
            ln_1: layer_norm(path / "ln_1", d, cfg),
            c_attn: linear(path / "attn" / "c_attn", d, 3 * d, std, cfg.bias),
            attn_proj: linear(path / "attn" / "c_proj", d, d, residual_std, cfg.bias),
            ln_2: layer_norm(path / "ln_2", d, cfg),
            c_fc: linear(path / "mlp" / "c_fc", d, f, std, cfg.bias),
            mlp_proj: linear(path / "mlp" / "c_proj", f, d, residual_std, cfg.bias),
            n_head: cfg.n_head as i64,
            dropout: cfg.dropout,
            attn_scale: cfg.attention_scale(),
        };
        if let Some(bound) = cfg.init.and_then(|init| init.truncation) {
            truncate_normal_init(&block.c_attn.ws, std, bound);
            truncate_normal_init(&block.c_fc.ws, std, bound);
            truncate_normal_init(&block.attn_proj.ws, residual_std, bound);
            truncate_normal_init(&block.mlp_proj.ws, residual_std, bound);
        }
        block
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let (b, t, c) = x.size3().expect("(B, T, C)");
        let hs = c / self.n_head;
        let qkv = self.ln_1.forward(x).apply(&self.c_attn); // (B, T, 3C)
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
        let x = x + y.apply(&self.attn_proj).dropout(p, train);
        let h = self.ln_2.forward(&x).apply(&self.c_fc).gelu("tanh"); // (B, T, ffn)
        &x + h.apply(&self.mlp_proj).dropout(p, train)
    }
}

/// The GPT-2 model.
pub struct Gpt {
    config: GptConfig,
    wte: nn::Embedding,
    wpe: nn::Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
}

impl Gpt {
    /// Builds the model's parameters under `root` (named as in Hugging Face GPT-2).
    pub fn new(root: &nn::Path, config: GptConfig) -> Gpt {
        let tr = root / "transformer";
        let embedding_std = TensorKind::Embedding.init(&config).std();
        let embedding = |path: nn::Path, n: usize| {
            let cfg = nn::EmbeddingConfig {
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: embedding_std,
                },
                ..Default::default()
            };
            nn::embedding(path, n as i64, config.n_embd as i64, cfg)
        };
        let gpt = Gpt {
            config,
            wte: embedding(&tr / "wte", config.embedding_rows()),
            wpe: embedding(&tr / "wpe", config.n_ctx),
            blocks: (0..config.n_layer)
                .map(|i| Block::new(&(&tr / "h" / i), &config))
                .collect(),
            ln_f: layer_norm(&tr / "ln_f", config.n_embd, &config),
        };
        if let Some(bound) = config.init.and_then(|init| init.truncation) {
            truncate_normal_init(&gpt.wte.ws, embedding_std, bound);
            truncate_normal_init(&gpt.wpe.ws, embedding_std, bound);
        }
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

    fn run(&self, idx: &Tensor, train: bool, mut activations: Option<&mut Vec<Tensor>>) -> Tensor {
        let (_, t) = idx.size2().expect("(B, T)");
        assert!(
            t as usize <= self.config.n_ctx,
            "sequence {t} longer than n_ctx {}",
            self.config.n_ctx
        );
        let pos = Tensor::arange(t, (Kind::Int64, idx.device()));
        let mut x = idx.apply(&self.wte) + pos.apply(&self.wpe); // (B, T, C)
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
        // Tied head: logits = ln_f(x) · wteᵀ (μP: × 1/m).
        let logits = self.ln_f.forward(&x).matmul(&self.wte.ws.tr()); // (B, T, rows)
        match self.config.output_multiplier() {
            Some(mult) => logits * mult,
            None => logits,
        }
    }

    /// Mean cross-entropy over positions whose `mask` is 1.
    pub fn loss(&self, idx: &Tensor, labels: &Tensor, mask: &Tensor, train: bool) -> Tensor {
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
        let targets = labels.where_self(
            &mask.ne(0),
            &Tensor::from(-100i64).to_device(labels.device()),
        );
        cross_entropy(&logits.reshape([-1, rows]), &targets.view([-1]))
    }
}

/// Mean cross-entropy of `logits` `(N, V)` against `targets` `(N,)`, over targets that are not
/// −100, as a 0-d f32 tensor.
///
/// The log-softmax runs in the logits' own dtype, accumulating in fp32 (for bf16 logits,
/// PyTorch's `SoftMaxForward<bf16, float, bf16>` under autocast): bf16 logits are never
/// copied to fp32, which would double the traffic of the largest activation in forward and
/// backward. Only the N picked log-probabilities are summed in fp32. (In fp32 it is the loss
/// of `cross_entropy_loss` with `ignore_index = -100`.)
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    let valid = targets.ne(-100); // (N,)
                                  // The dtype named explicitly: autocast would otherwise run log_softmax in fp32.
    let log_probs = logits.log_softmax(-1, logits.kind()); // (N, V), logits' dtype
    let picked = log_probs
        .gather(-1, &targets.clamp_min(0).unsqueeze(-1), false)
        .squeeze_dim(-1)
        .to_kind(Kind::Float); // (N,)
    let count = valid.sum(Kind::Float);
    -(picked * valid.to_kind(Kind::Float)).sum(Kind::Float) / count
}
