//! Self-checking synthetic shard sets, for tests, benchmarks and demos.
//!
//! The stream is the integers: the token at stream position `p` is `p`, so example `r` holds
//! `input_ids[j] = r·seq_len + j` and `labels[j] = r·seq_len + j + 1`. Any row therefore tells
//! which example it is and every token its position; order and coverage are provable. The
//! rows satisfy the stream invariants (consecutive rows overlap by one token). The pad/EOS id is
//! the largest id, above every data token, and the vocabulary just covers it.

use crate::error::Result;
use crate::manifest::{DataParams, ManifestCore};
use crate::spec::{Compression, Packing};
use crate::writer::ShardSetWriter;
use std::path::Path;

/// The tokenizer name of generated test data.
pub const SYNTHETIC_TOKENIZER: &str = "synthetic";

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticSpec {
    /// Full examples.
    pub examples: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Examples per shard (the last shard may hold fewer).
    pub examples_per_shard: usize,
    /// On-disk layout.
    pub compression: Compression,
    /// If set, one more, partial example at the end, holding this many stream tokens (2..=seq_len).
    pub partial_tokens: Option<usize>,
}

impl SyntheticSpec {
    /// Total examples including the partial one.
    pub fn total_examples(&self) -> usize {
        self.examples + usize::from(self.partial_tokens.is_some())
    }

    /// The pad/EOS id: one above the largest data token.
    pub fn pad_id(&self) -> u32 {
        (self.total_examples() * self.seq_len + 1) as u32
    }

    /// The example a synthetic row came from, read off its first token.
    pub fn example_of(&self, input_ids: &[i32]) -> usize {
        input_ids[0] as usize / self.seq_len
    }
}

/// Writes a synthetic shard set with its `data_params.json` into `dir`.
pub fn write_synthetic(dir: &Path, spec: SyntheticSpec) -> Result<DataParams> {
    let seq = spec.seq_len;
    let pad = spec.pad_id() as i32;
    let mut writer = ShardSetWriter::new(dir, seq, spec.compression, spec.examples_per_shard)?;
    let mut ids = vec![0i32; seq];
    let mut mask = vec![0i32; seq];
    let mut labels = vec![0i32; seq];
    for r in 0..spec.total_examples() {
        let valid = if r < spec.examples {
            seq
        } else {
            let tokens = spec.partial_tokens.expect("partial example requested");
            assert!(
                (2..=seq).contains(&tokens),
                "partial example needs 2..=seq_len tokens"
            );
            tokens - 1
        };
        for j in 0..seq {
            let p = (r * seq + j) as i32;
            let inside = j < valid;
            ids[j] = if inside { p } else { pad };
            labels[j] = if inside { p + 1 } else { pad };
            mask[j] = i32::from(inside);
        }
        writer.push(&ids, &mask, &labels)?;
    }
    let (shards, stats) = writer.finish()?;
    let params = DataParams::from_core(ManifestCore {
        tokenizer: SYNTHETIC_TOKENIZER.into(),
        tokenizer_file: None,
        packing: Packing::Stream,
        seq_len: seq,
        compression: spec.compression,
        eos_id: spec.pad_id(),
        pad_id: spec.pad_id(),
        vocab_size: spec.pad_id() + 1,
        shards,
        stats,
    });
    params.write_to_dir(dir)?;
    Ok(params)
}
