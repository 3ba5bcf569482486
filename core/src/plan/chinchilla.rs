//! Chinchilla's tables (Hoffmann et al. 2022, arXiv 2203.15556) and our reproduction of them.
//!
//! - Table A9: the 50 models trained, with parameters in millions. Our estimate counts what
//!   Chinchilla counts: the blocks (Q, K, V and output projections over the attention width
//!   k·h, their biases, the relative-position terms d² + 2d of each layer, the feed-forward
//!   block with biases, two LayerNorms), the final LayerNorm and the output layer d·V with
//!   V = 32 000; no input embedding.
//! - Table A4: Appendix F's FLOPs against 6ND. The ratios (1.03, 1.10, 1.08, 1.04, 1.03, 0.99
//!   at S = 2048, V = 32 000) come out only when Appendix F's embeddings and logits are left out
//!   and N is the Table A9 count: the correction the authors gave for the paper's formula.
//! - Table 3: Approach 1's compute-optimal FLOPs and tokens for nine model sizes.

use super::flops::{AppendixF, TransformerShape};
use serde::Serialize;

/// Chinchilla's vocabulary (SentencePiece, 32 000 tokens).
pub const VOCAB: usize = 32_000;

/// Table A4's sequence length.
pub const SEQ_LEN: usize = 2048;

/// One Table A9 row: parameters (millions, as printed), d_model, ffw_size, kv_size, n_heads,
/// n_layers.
pub type A9Row = (u64, usize, usize, usize, usize, usize);

/// Table A9, "All models", as printed in the paper.
pub const TABLE_A9: [A9Row; 50] = [
    (44, 512, 2048, 64, 8, 8),
    (57, 576, 2304, 64, 9, 9),
    (74, 640, 2560, 64, 10, 10),
    (90, 640, 2560, 64, 10, 13),
    (106, 640, 2560, 64, 10, 16),
    (117, 768, 3072, 64, 12, 12),
    (140, 768, 3072, 64, 12, 15),
    (163, 768, 3072, 64, 12, 18),
    (175, 896, 3584, 64, 14, 14),
    (196, 896, 3584, 64, 14, 16),
    (217, 896, 3584, 64, 14, 18),
    (251, 1024, 4096, 64, 16, 16),
    (278, 1024, 4096, 64, 16, 18),
    (306, 1024, 4096, 64, 16, 20),
    (425, 1280, 5120, 128, 10, 18),
    (489, 1280, 5120, 128, 10, 21),
    (509, 1408, 5632, 128, 11, 18),
    (552, 1280, 5120, 128, 10, 24),
    (587, 1408, 5632, 128, 11, 21),
    (632, 1536, 6144, 128, 12, 19),
    (664, 1408, 5632, 128, 11, 24),
    (724, 1536, 6144, 128, 12, 22),
    (816, 1536, 6144, 128, 12, 25),
    (893, 1792, 7168, 128, 14, 20),
    (1018, 1792, 7168, 128, 14, 23),
    (1143, 1792, 7168, 128, 14, 26),
    (1266, 2048, 8192, 128, 16, 22),
    (1424, 2176, 8704, 128, 17, 22),
    (1429, 2048, 8192, 128, 16, 25),
    (1593, 2048, 8192, 128, 16, 28),
    (1609, 2176, 8704, 128, 17, 25),
    (1731, 2304, 9216, 128, 18, 24),
    (1794, 2176, 8704, 128, 17, 28),
    (2007, 2304, 9216, 128, 18, 28),
    (2283, 2304, 9216, 128, 18, 32),
    (2298, 2560, 10240, 128, 20, 26),
    (2639, 2560, 10240, 128, 20, 30),
    (2980, 2560, 10240, 128, 20, 34),
    (3530, 2688, 10752, 128, 22, 36),
    (3802, 2816, 11264, 128, 22, 36),
    (4084, 2944, 11776, 128, 22, 36),
    (4516, 3072, 12288, 128, 24, 36),
    (6796, 3584, 14336, 128, 28, 40),
    (9293, 4096, 16384, 128, 32, 42),
    (11452, 4352, 17408, 128, 32, 47),
    (12295, 4608, 18432, 128, 36, 44),
    (12569, 4608, 18432, 128, 32, 47),
    (13735, 4864, 19456, 128, 32, 47),
    (14940, 4992, 19968, 128, 32, 49),
    (16183, 5120, 20480, 128, 40, 47),
];

/// One Table A4 row: parameters as printed, n_layers, d_model, ffw_size, n_heads, k/q size,
/// and the FLOP ratio (Appendix F / 6ND) as printed.
pub type A4Row = (&'static str, usize, usize, usize, usize, usize, f64);

/// Table A4, "FLOP comparison".
pub const TABLE_A4: [A4Row; 6] = [
    ("73M", 10, 640, 2560, 10, 64, 1.03),
    ("305M", 20, 1024, 4096, 16, 64, 1.10),
    ("552M", 24, 1280, 5120, 10, 128, 1.08),
    ("1.1B", 26, 1792, 7168, 14, 128, 1.04),
    ("1.6B", 28, 2048, 8192, 16, 128, 1.03),
    ("6.8B", 40, 3584, 14336, 28, 128, 0.99),
];

/// One Table 3 row: parameters, FLOPs and tokens, as printed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Table3Row {
    /// Model size as the paper writes it.
    pub label: &'static str,
    /// Parameters.
    pub params: f64,
    /// Approach 1's compute-optimal training FLOPs.
    pub flops: f64,
    /// Approach 1's compute-optimal training tokens.
    pub tokens: f64,
}

const fn t3(label: &'static str, params: f64, flops: f64, tokens: f64) -> Table3Row {
    Table3Row {
        label,
        params,
        flops,
        tokens,
    }
}

/// Table 3, "Estimated optimal training FLOPs and training tokens for various model sizes"
/// (Approach 1).
pub const TABLE_3: [Table3Row; 9] = [
    t3("400M", 400e6, 1.92e19, 8.0e9),
    t3("1B", 1e9, 1.21e20, 20.2e9),
    t3("10B", 10e9, 1.23e22, 205.1e9),
    t3("67B", 67e9, 5.76e23, 1.5e12),
    t3("175B", 175e9, 3.85e24, 3.7e12),
    t3("280B", 280e9, 9.90e24, 5.9e12),
    t3("520B", 520e9, 3.43e25, 11.0e12),
    t3("1T", 1e12, 1.27e26, 21.2e12),
    t3("10T", 10e12, 1.30e28, 216.2e12),
];

/// Parameters as Chinchilla counts them (see the module documentation), for `vocab` output
/// rows.
pub fn estimate_params(shape: &TransformerShape, vocab: usize) -> u64 {
    let d = shape.d_model as u64;
    let f = shape.ffw_size as u64;
    let kh = shape.attention_width() as u64;
    let qkv = 3 * d * kh + 3 * kh;
    let relative_position = d * d + 2 * d;
    let output = kh * d + d;
    let feed_forward = d * f + f + f * d + d;
    let layer_norms = 2 * 2 * d;
    let per_layer = qkv + relative_position + output + feed_forward + layer_norms;
    shape.n_layers as u64 * per_layer + 2 * d + d * vocab as u64
}

/// A Table A9 model with our estimate beside the paper's figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct A9Comparison {
    /// The model's shape.
    pub shape: TransformerShape,
    /// The paper's parameters, in millions.
    pub paper_millions: u64,
    /// Our estimate.
    pub estimate: u64,
    /// `(estimate − paper) / paper`, the paper's figure taken as exact millions.
    pub relative_error: f64,
    /// Whether the estimate rounds to the paper's figure in millions.
    pub matches: bool,
}

fn a9_shape(row: &A9Row) -> TransformerShape {
    let &(_, d_model, ffw_size, kv_size, n_heads, n_layers) = row;
    TransformerShape {
        d_model,
        ffw_size,
        kv_size,
        n_heads,
        n_layers,
    }
}

/// Every Table A9 row compared with [`estimate_params`] at V = 32 000.
pub fn table_a9() -> Vec<A9Comparison> {
    TABLE_A9
        .iter()
        .map(|row| {
            let shape = a9_shape(row);
            let estimate = estimate_params(&shape, VOCAB);
            let paper = row.0 as f64 * 1e6;
            A9Comparison {
                shape,
                paper_millions: row.0,
                estimate,
                relative_error: (estimate as f64 - paper) / paper,
                matches: (estimate as f64 / 1e6).round() as u64 == row.0,
            }
        })
        .collect()
}

/// A Table A4 model: Appendix F's FLOPs per sequence against 6·S·N, both conventions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct A4Comparison {
    /// Parameters as the paper prints them.
    pub paper_params: &'static str,
    /// The model's shape.
    pub shape: TransformerShape,
    /// N: [`estimate_params`] at V = 32 000.
    pub params: u64,
    /// Training FLOPs per sequence without embeddings and logits.
    pub flops_blocks: f64,
    /// Training FLOPs per sequence with embeddings and logits (Appendix F as written).
    pub flops_all: f64,
    /// 6·S·N.
    pub six_nd: f64,
    /// `flops_blocks / six_nd`: reproduces the paper.
    pub ratio_blocks: f64,
    /// `flops_all / six_nd`.
    pub ratio_all: f64,
    /// The paper's ratio.
    pub paper_ratio: f64,
}

/// Every Table A4 row at S = 2048, V = 32 000.
pub fn table_a4() -> Vec<A4Comparison> {
    TABLE_A4
        .iter()
        .map(
            |&(paper_params, n_layers, d_model, ffw_size, n_heads, kv_size, paper_ratio)| {
                let shape = TransformerShape {
                    d_model,
                    ffw_size,
                    kv_size,
                    n_heads,
                    n_layers,
                };
                let params = estimate_params(&shape, VOCAB);
                let f = AppendixF::new(&shape, SEQ_LEN, VOCAB);
                let six_nd = 6.0 * SEQ_LEN as f64 * params as f64;
                A4Comparison {
                    paper_params,
                    shape,
                    params,
                    flops_blocks: f.training_blocks(),
                    flops_all: f.training_all(),
                    six_nd,
                    ratio_blocks: f.training_blocks() / six_nd,
                    ratio_all: f.training_all() / six_nd,
                    paper_ratio,
                }
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_a9_shapes_are_consistent() {
        for row in TABLE_A9 {
            let shape = a9_shape(&row);
            assert_eq!(shape.ffw_size, 4 * shape.d_model, "{row:?}");
        }
        assert!(TABLE_A9.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
