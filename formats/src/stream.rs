//! The sample stream: which example sits at each position of training.
//!
//! Epoch `e` visits all `N` examples in the order of a permutation `P_e`, a pure function of
//! `(seed, e)`; training walks `P_0 ++ P_1 ++ …`. Global batch `b` of `G` samples is stream
//! positions `[b·G, (b+1)·G)`, and data-parallel rank `r` of `W` takes the contiguous slice
//! `[b·G + r·G/W, b·G + (r+1)·G/W)`. So every example is seen exactly once per epoch, epochs
//! are reshuffled, the global order does not depend on `W`, and the whole sampling state is
//! one integer (the stream position at an optimizer-step boundary) plus the seed.

use crate::error::{FormatError, Result};
use crate::permutation::{mix64, FeistelPermutation};

/// Maps stream positions to example ids.
#[derive(Debug, Clone)]
pub struct SampleStream {
    n: u64,
    seed: u64,
    cached: Option<(u64, FeistelPermutation)>,
    /// `false`: every epoch reads the rows in order (Cerebras' `shuffle: false`).
    shuffle: bool,
}

impl SampleStream {
    /// The stream over `n` examples for `seed`.
    pub fn new(n: u64, seed: u64) -> Self {
        SampleStream {
            n,
            seed,
            cached: None,
            shuffle: true,
        }
    }

    /// The stream over `n` examples in order: position `p` reads example `p mod n`.
    pub fn sequential(n: u64) -> Self {
        SampleStream {
            shuffle: false,
            ..SampleStream::new(n, 0)
        }
    }

    /// Examples per epoch.
    pub fn epoch_len(&self) -> u64 {
        self.n
    }

    /// The epoch that `position` falls in.
    pub fn epoch_of(&self, position: u64) -> u64 {
        position / self.n
    }

    /// The permutation of epoch `epoch`.
    pub fn epoch_permutation(&self, epoch: u64) -> FeistelPermutation {
        FeistelPermutation::new(self.n, mix64(self.seed) ^ mix64(epoch.wrapping_add(1)))
    }

    /// The example at stream position `position`.
    pub fn sample_at(&mut self, position: u64) -> u64 {
        assert!(self.n > 0, "empty stream");
        if !self.shuffle {
            return position % self.n;
        }
        let epoch = position / self.n;
        if self.cached.as_ref().map(|(e, _)| *e) != Some(epoch) {
            self.cached = Some((epoch, self.epoch_permutation(epoch)));
        }
        let (_, perm) = self.cached.as_ref().expect("cached permutation");
        perm.apply(position % self.n)
    }
}

/// How global batches are cut into ranks and micro-batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLayout {
    /// Samples per optimizer step, over all ranks.
    pub global_batch: usize,
    /// Samples per forward/backward pass on one rank.
    pub micro_batch: usize,
    /// Data-parallel ranks.
    pub world_size: usize,
    /// This rank, `0..world_size`.
    pub rank: usize,
}

impl BatchLayout {
    /// Checks that the numbers divide evenly.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(FormatError::Config(what));
        if self.world_size == 0 || self.micro_batch == 0 || self.global_batch == 0 {
            return bad("global batch, micro-batch and world size must be at least 1".into());
        }
        if self.rank >= self.world_size {
            return bad(format!(
                "rank {} is not below world size {}",
                self.rank, self.world_size
            ));
        }
        if self.global_batch % self.world_size != 0 {
            return bad(format!(
                "global batch {} is not divisible by world size {}",
                self.global_batch, self.world_size
            ));
        }
        if self.per_rank() % self.micro_batch != 0 {
            return bad(format!(
                "per-rank batch {} is not divisible by micro-batch {}",
                self.per_rank(),
                self.micro_batch
            ));
        }
        Ok(())
    }

    /// Samples per step on one rank.
    pub fn per_rank(&self) -> usize {
        self.global_batch / self.world_size
    }

    /// Micro-batches per step on one rank (gradient accumulation steps).
    pub fn micro_steps(&self) -> usize {
        self.per_rank() / self.micro_batch
    }

    /// Stream positions of micro-batch `micro` of the step that starts at `step_start`.
    pub fn micro_range(&self, step_start: u64, micro: usize) -> std::ops::Range<u64> {
        let start =
            step_start + (self.rank * self.per_rank()) as u64 + (micro * self.micro_batch) as u64;
        start..start + self.micro_batch as u64
    }
}

#[cfg(test)]
mod sequential_tests {
    use super::SampleStream;

    #[test]
    fn a_sequential_stream_reads_the_rows_in_order_every_epoch() {
        let mut s = SampleStream::sequential(5);
        let ids: Vec<u64> = (0..12).map(|p| s.sample_at(p)).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]);
        let mut shuffled = SampleStream::new(5, 0);
        let ids: Vec<u64> = (0..5).map(|p| shuffled.sample_at(p)).collect();
        assert_ne!(ids, [0, 1, 2, 3, 4], "the default stream is shuffled");
    }
}
