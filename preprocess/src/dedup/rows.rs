//! `inspect --duplicates`: duplicates among the rows of a shard set, after the fact (documents
//! cannot be rebuilt from every shard set, rows can).
//!
//! A row is its `input_ids` where the attention mask is 1. Exact: rows whose ids are equal (a
//! 128-bit hash). Near: MinHash over token n-grams ([`ROW_NGRAM`] ids) with the defaults of
//! `preprocess --dedup near` (128 permutations, threshold 0.8, the same banding and union-find).
//! Counted as duplicates: every row but the first of each cluster, in row order, which is what a
//! dedup would drop.

use super::minhash::MinHasher;
use super::pass::Index;
use super::{DedupMode, DedupSettings};
use anyhow::Result;
use h5gpt_formats::permutation::mix64;
use h5gpt_formats::spec::{ROWS_PER_EXAMPLE, ROW_ATTENTION_MASK, ROW_INPUT_IDS};
use h5gpt_formats::ShardSet;
use rayon::prelude::*;
use serde::Serialize;

/// Token ids per n-gram of the near-duplicate check.
pub const ROW_NGRAM: usize = 5;

/// What `inspect --duplicates` found.
#[derive(Debug, Clone, Serialize)]
pub struct RowDuplicates {
    /// Rows read.
    pub rows: u64,
    /// Rows equal to an earlier row.
    pub exact: u64,
    /// Rows that are no exact copy but whose token n-grams MinHash finds at an estimated
    /// Jaccard of at least `threshold` with an earlier row (through the cluster).
    pub near: u64,
    /// `exact / rows`.
    pub exact_share: f64,
    /// `(exact + near) / rows`.
    pub near_share: f64,
    /// Token n-gram.
    pub ngram: usize,
    /// Jaccard threshold.
    pub threshold: f64,
    /// Bands × rows of the LSH index.
    pub banding: (usize, usize),
}

/// Finds the duplicate rows of `set`.
pub fn duplicate_rows(set: &ShardSet) -> Result<RowDuplicates> {
    let settings = DedupSettings {
        mode: DedupMode::Near,
        ngram: ROW_NGRAM,
        ..DedupSettings::default()
    };
    let banding = settings.banding().expect("near mode bands");
    let hasher = MinHasher::new(settings.perm, settings.ngram, settings.seed);
    let seq = set.seq_len();
    let mut index = Index::new(&settings);
    let mut signatures: Vec<Vec<u32>> = Vec::new();
    for shard in set.shards() {
        const CHUNK: usize = 1024;
        let mut start = 0;
        while start < shard.n_examples() {
            let count = CHUNK.min(shard.n_examples() - start);
            let block = shard.read_examples(start, count)?;
            let prints: Vec<(u128, Vec<u32>)> = block
                .par_chunks(ROWS_PER_EXAMPLE * seq)
                .map(|example| {
                    let ids = &example[ROW_INPUT_IDS * seq..(ROW_INPUT_IDS + 1) * seq];
                    let mask = &example[ROW_ATTENTION_MASK * seq..(ROW_ATTENTION_MASK + 1) * seq];
                    let kept: Vec<i32> = ids
                        .iter()
                        .zip(mask)
                        .filter(|(_, m)| **m != 0)
                        .map(|(t, _)| *t)
                        .collect();
                    let bytes: Vec<u8> = kept.iter().flat_map(|t| t.to_le_bytes()).collect();
                    let hashes: Vec<u64> = kept.iter().map(|&t| mix64(t as u32 as u64)).collect();
                    (
                        xxhash_rust::xxh3::xxh3_128(&bytes),
                        hasher.signature_of_hashes(&hashes).unwrap_or_default(),
                    )
                })
                .collect();
            for (exact, signature) in prints {
                index.add(exact, Some(&signature), &mut |id| {
                    Ok(signatures[id as usize].clone())
                })?;
                signatures.push(signature);
            }
            start += count;
        }
    }
    let rows = index.clusters.len() as u64;
    let (mut exact, mut near) = (0, 0);
    for id in 0..rows as u32 {
        if index.clusters.find(id) != id {
            if index.exact_linked[id as usize] {
                exact += 1;
            } else {
                near += 1;
            }
        }
    }
    let share = |n: u64| n as f64 / rows.max(1) as f64;
    Ok(RowDuplicates {
        rows,
        exact,
        near,
        exact_share: share(exact),
        near_share: share(exact + near),
        ngram: settings.ngram,
        threshold: settings.threshold,
        banding: (banding.bands, banding.rows),
    })
}
