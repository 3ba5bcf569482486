//! FLOPs of training: per token (6N; 6N + 12·L·H·Q·T as in nanoGPT and PaLM Appendix B) and
//! per sequence as Chinchilla's Appendix F counts them.

use crate::config::GptConfig;
use serde::Serialize;

/// A decoder-only transformer's shape in Chinchilla's terms (Table A9's columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TransformerShape {
    /// Residual width.
    pub d_model: usize,
    /// Hidden width of the feed-forward block.
    pub ffw_size: usize,
    /// Key/query/value width of one head.
    pub kv_size: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Transformer blocks.
    pub n_layers: usize,
}

impl TransformerShape {
    /// Total key/query/value width (k·h; not always `d_model` in Chinchilla's Table A9).
    pub fn attention_width(&self) -> usize {
        self.kv_size * self.n_heads
    }
}

impl From<&GptConfig> for TransformerShape {
    /// The model's shape (feed-forward width: `ffn_size`, GPT-2's 4 × `n_embd` by default).
    fn from(cfg: &GptConfig) -> TransformerShape {
        TransformerShape {
            d_model: cfg.n_embd,
            ffw_size: cfg.ffn_width(),
            kv_size: cfg.head_size(),
            n_heads: cfg.n_head,
            n_layers: cfg.n_layer,
        }
    }
}

/// Training FLOPs per token, 6N: forward 2N, backward 4N (Kaplan et al. 2020).
pub fn six_n(n: f64) -> f64 {
    6.0 * n
}

/// Training FLOPs per token with attention: 6N + 12·L·H·Q·T, T the tokens per row (the
/// attention scores and their weighted sum, forward and backward; PaLM Appendix B, nanoGPT's
/// `estimate_mfu`).
pub fn six_n_plus_attention(n: f64, shape: &TransformerShape, seq_len: usize) -> f64 {
    let (l, h, q) = (
        shape.n_layers as f64,
        shape.n_heads as f64,
        shape.kv_size as f64,
    );
    6.0 * n + 12.0 * l * h * q * seq_len as f64
}

/// Forward FLOPs of one sequence, by term, as Chinchilla's Appendix F lists them (S the
/// sequence length, V the vocabulary, d the width, k·h the attention width, f the FFN width).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AppendixF {
    /// Embedding lookup counted as a matmul: 2·S·V·d.
    pub embeddings: f64,
    /// Q, K and V projections, all layers: L·2·3·S·d·(k·h).
    pub qkv: f64,
    /// Attention logits K·Q, all layers: L·2·S²·(k·h).
    pub attention_logits: f64,
    /// Softmax, all layers: L·3·h·S².
    pub softmax: f64,
    /// Softmax × V, all layers: L·2·S²·(k·h).
    pub attention_values: f64,
    /// Attention output projection, all layers: L·2·S·(k·h)·d.
    pub attention_output: f64,
    /// Feed-forward block, all layers: L·2·S·2·d·f.
    pub feed_forward: f64,
    /// Output logits: 2·S·d·V.
    pub logits: f64,
}

impl AppendixF {
    /// The terms for one sequence of `seq_len` tokens over a `vocab`-row embedding.
    pub fn new(shape: &TransformerShape, seq_len: usize, vocab: usize) -> AppendixF {
        let s = seq_len as f64;
        let v = vocab as f64;
        let d = shape.d_model as f64;
        let f = shape.ffw_size as f64;
        let kh = shape.attention_width() as f64;
        let h = shape.n_heads as f64;
        let l = shape.n_layers as f64;
        AppendixF {
            embeddings: 2.0 * s * v * d,
            qkv: l * 2.0 * 3.0 * s * d * kh,
            attention_logits: l * 2.0 * s * s * kh,
            softmax: l * 3.0 * h * s * s,
            attention_values: l * 2.0 * s * s * kh,
            attention_output: l * 2.0 * s * kh * d,
            feed_forward: l * 2.0 * s * 2.0 * d * f,
            logits: 2.0 * s * d * v,
        }
    }

    /// Forward FLOPs of the transformer blocks alone (no embeddings, no logits).
    pub fn forward_blocks(&self) -> f64 {
        self.qkv
            + self.attention_logits
            + self.softmax
            + self.attention_values
            + self.attention_output
            + self.feed_forward
    }

    /// Forward FLOPs as Appendix F prints them: embeddings + blocks + logits.
    pub fn forward_all(&self) -> f64 {
        self.embeddings + self.forward_blocks() + self.logits
    }

    /// Training FLOPs (forward + backward = 3 × forward) without embeddings and logits: the
    /// convention that reproduces Table A4.
    pub fn training_blocks(&self) -> f64 {
        3.0 * self.forward_blocks()
    }

    /// Training FLOPs (3 × forward) with embeddings and logits, as Appendix F is written.
    pub fn training_all(&self) -> f64 {
        3.0 * self.forward_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_small_per_token_flops_match_the_config() {
        let cfg = GptConfig::gpt2_small();
        let n = cfg.flops_parameter_count() as f64;
        let shape = TransformerShape::from(&cfg);
        assert_eq!(
            six_n_plus_attention(n, &shape, 1024),
            cfg.flops_per_token(1024)
        );
        assert_eq!(six_n(n), 6.0 * 123_689_472.0);
        // nanoGPT's estimate_mfu by hand: 6N + 12·L·H·Q·T = 6N + 12·12·12·64·1024.
        assert_eq!(
            cfg.flops_per_token(1024),
            6.0 * 123_689_472.0 + 12.0 * 12.0 * 12.0 * 64.0 * 1024.0
        );
    }

    #[test]
    fn appendix_f_terms_by_hand() {
        // d = 4, f = 16, k·h = 2·2 = 4, L = 1, S = 3, V = 10.
        let shape = TransformerShape {
            d_model: 4,
            ffw_size: 16,
            kv_size: 2,
            n_heads: 2,
            n_layers: 1,
        };
        let f = AppendixF::new(&shape, 3, 10);
        assert_eq!(f.embeddings, 240.0); // 2·3·10·4
        assert_eq!(f.qkv, 288.0); // 2·3·3·4·4
        assert_eq!(f.attention_logits, 72.0); // 2·9·4
        assert_eq!(f.softmax, 54.0); // 3·2·9
        assert_eq!(f.attention_values, 72.0);
        assert_eq!(f.attention_output, 96.0); // 2·3·4·4
        assert_eq!(f.feed_forward, 768.0); // 2·3·2·4·16
        assert_eq!(f.logits, 240.0);
        assert_eq!(f.training_all(), 3.0 * (240.0 + 1350.0 + 240.0));
        assert_eq!(f.training_blocks(), 3.0 * 1350.0);
    }
}
