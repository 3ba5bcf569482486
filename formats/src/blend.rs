//! Weighted blends of several shard sets: which set, and which row of it, sits at each
//! stream position.
//!
//! A weight is the fraction of rows drawn from its set. The stream is cut into blocks of
//! [`BLOCK`] positions; each block gives every set an exact quota (its weight × [`BLOCK`],
//! rounded by largest remainder so the quotas sum to the block), and a keyed permutation of
//! the block interleaves the quotas. So how many rows of each set come before any position is
//! `quota × whole blocks + a count within one block`: O(1) in the position, with no log.
//!
//! Each set has its own [sample stream](crate::stream::SampleStream): the `k`-th row drawn
//! from set `i` is that stream's position `k`. An epoch of a blend is therefore defined per
//! set: a set that runs out before the others restarts with a new permutation of its rows,
//! and `k / rows` counts its epochs.
//!
//! Weights can change during a run (`train --reweight`): the blend keeps a list of
//! [`BlendPhase`]s, each with the stream position it starts at. Every set continues from its
//! own count, so a weight change neither repeats nor skips a row.

use crate::error::{FormatError, Result};
use crate::permutation::{mix64, FeistelPermutation};
use crate::stream::SampleStream;
use serde::{Deserialize, Serialize};

/// Positions per block of exact quotas.
pub const BLOCK: u64 = 1000;

/// The weights from a stream position on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlendPhase {
    /// First stream position drawn with these weights.
    pub start: u64,
    /// One weight per set, normalized to sum to 1.
    pub weights: Vec<f64>,
}

/// Normalizes `weights` to sum to 1; refuses an empty list and weights that are not positive.
pub fn normalize_weights(weights: &[f64]) -> Result<Vec<f64>> {
    if weights.is_empty() {
        return Err(FormatError::Config(
            "a blend needs at least one weight".into(),
        ));
    }
    if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
        return Err(FormatError::Config(format!(
            "blend weight {w} is not a positive number"
        )));
    }
    // Scaled by the largest first, so that weights near f64::MAX do not sum to infinity.
    let max = weights.iter().copied().fold(0.0, f64::max);
    let sum: f64 = weights.iter().map(|w| w / max).sum();
    Ok(weights.iter().map(|w| w / max / sum).collect())
}

/// Per-block quotas of `weights` (summing to 1): largest remainder, ties to the first set;
/// every set gets at least one position per block.
pub fn quotas(weights: &[f64]) -> Vec<u64> {
    let exact: Vec<f64> = weights.iter().map(|w| w * BLOCK as f64).collect();
    let mut quotas: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
    let mut left = BLOCK - quotas.iter().sum::<u64>().min(BLOCK);
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        quotas[i] += 1;
        left -= 1;
    }
    // Every set is drawn: a weight below 1/BLOCK still gets one row per block.
    while let Some(empty) = quotas.iter().position(|&q| q == 0) {
        let largest = (0..quotas.len())
            .max_by_key(|&i| (quotas[i], usize::MAX - i))
            .expect("sets");
        quotas[largest] -= 1;
        quotas[empty] += 1;
    }
    quotas
}

/// One phase, ready to draw: its quotas and the per-set counts where it starts.
#[derive(Debug, Clone)]
struct Phase {
    start: u64,
    quotas: Vec<u64>,
    /// Rows of each set drawn before `start` (by the earlier phases).
    base: Vec<u64>,
    /// What [`Phase::count`] gives at `start`, per set.
    count_at_start: Vec<u64>,
}

/// One block's interleaving: the set of each slot, and its rank among that set's slots.
#[derive(Debug, Clone)]
struct BlockTable {
    set: Vec<u32>,
    rank: Vec<u32>,
}

/// A drawn position: the set, and the position in that set's own stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    /// Index of the set.
    pub set: usize,
    /// How many rows of the set were drawn before this one (its stream position).
    pub set_position: u64,
}

/// Maps stream positions to (set, row) for a blend.
#[derive(Debug, Clone)]
pub struct BlendStream {
    rows: Vec<u64>,
    seed: u64,
    phases: Vec<Phase>,
    streams: Vec<SampleStream>,
    cached: Option<(usize, u64, BlockTable)>,
}

impl BlendStream {
    /// The blend of sets of `rows` rows each, drawn with `phases` (the first starting at 0,
    /// starts increasing), for `seed`.
    pub fn new(rows: &[u64], phases: &[BlendPhase], seed: u64) -> Result<BlendStream> {
        if let Some(i) = rows.iter().position(|&n| n == 0) {
            return Err(FormatError::Config(format!("blend set {i} holds no rows")));
        }
        if phases.first().map(|p| p.start) != Some(0) {
            return Err(FormatError::Config(
                "the first blend phase must start at position 0".into(),
            ));
        }
        let mut built: Vec<Phase> = Vec::new();
        for (j, phase) in phases.iter().enumerate() {
            if phase.weights.len() != rows.len() {
                return Err(FormatError::Config(format!(
                    "blend phase {j} has {} weights for {} sets",
                    phase.weights.len(),
                    rows.len()
                )));
            }
            let weights = normalize_weights(&phase.weights)?;
            let base = match built.last() {
                None => vec![0; rows.len()],
                Some(prev) if phase.start < prev.start => {
                    return Err(FormatError::Config(format!(
                        "blend phase {j} starts at {} before the one before it ({})",
                        phase.start, prev.start
                    )))
                }
                Some(_) => Self::counts_with(&built, seed, phase.start, rows.len()),
            };
            let mut next = Phase {
                start: phase.start,
                quotas: quotas(&weights),
                base,
                count_at_start: Vec::new(),
            };
            next.count_at_start = (0..rows.len())
                .map(|i| count(&next.quotas, seed, built.len(), phase.start, i))
                .collect();
            built.push(next);
        }
        Ok(BlendStream {
            rows: rows.to_vec(),
            seed,
            streams: rows
                .iter()
                .enumerate()
                .map(|(i, &n)| SampleStream::new(n, set_seed(seed, i)))
                .collect(),
            phases: built,
            cached: None,
        })
    }

    /// Rows of each set drawn before `position`, given the phases built so far.
    fn counts_with(phases: &[Phase], seed: u64, position: u64, sets: usize) -> Vec<u64> {
        let j = phases.partition_point(|p| p.start <= position) - 1;
        let p = &phases[j];
        (0..sets)
            .map(|i| p.base[i] + count(&p.quotas, seed, j, position, i) - p.count_at_start[i])
            .collect()
    }

    /// Rows of each set drawn before stream position `position`.
    pub fn counts(&self, position: u64) -> Vec<u64> {
        Self::counts_with(&self.phases, self.seed, position, self.rows.len())
    }

    /// Rows per set.
    pub fn rows(&self) -> &[u64] {
        &self.rows
    }

    /// The set, and the position in its own stream, of stream position `position`.
    pub fn draw(&mut self, position: u64) -> Draw {
        let j = self.phases.partition_point(|p| p.start <= position) - 1;
        let block = position / BLOCK;
        if self.cached.as_ref().map(|(cj, b, _)| (*cj, *b)) != Some((j, block)) {
            let table = block_table(&self.phases[j].quotas, self.seed, j, block);
            self.cached = Some((j, block, table));
        }
        let (_, _, table) = self.cached.as_ref().expect("cached block");
        let slot = (position % BLOCK) as usize;
        let set = table.set[slot] as usize;
        let p = &self.phases[j];
        let within = block * p.quotas[set] + u64::from(table.rank[slot]);
        Draw {
            set,
            set_position: p.base[set] + within - p.count_at_start[set],
        }
    }

    /// The set and its row at stream position `position`.
    pub fn sample_at(&mut self, position: u64) -> (usize, u64) {
        let draw = self.draw(position);
        (
            draw.set,
            self.streams[draw.set].sample_at(draw.set_position),
        )
    }
}

/// The seed of set `i`'s own sample stream.
pub fn set_seed(seed: u64, set: usize) -> u64 {
    mix64(seed ^ 0xb1e4_d5e7_0000_0000 ^ mix64(set as u64 + 1))
}

/// The interleaving of block `block` of phase `phase`.
fn block_table(quotas: &[u64], seed: u64, phase: usize, block: u64) -> BlockTable {
    let key = mix64(seed ^ 0x0b1e_4d00) ^ mix64(block.wrapping_add(1)) ^ mix64(phase as u64);
    let perm = FeistelPermutation::new(BLOCK, key);
    let mut bounds = Vec::with_capacity(quotas.len());
    let mut total = 0;
    for q in quotas {
        total += q;
        bounds.push(total);
    }
    let mut seen = vec![0u32; quotas.len()];
    let mut table = BlockTable {
        set: Vec::with_capacity(BLOCK as usize),
        rank: Vec::with_capacity(BLOCK as usize),
    };
    for slot in 0..BLOCK {
        let v = perm.apply(slot);
        let set = bounds.partition_point(|&b| b <= v);
        table.set.push(set as u32);
        table.rank.push(seen[set]);
        seen[set] += 1;
    }
    table
}

/// Slots of set `set` before `position` under `quotas` (phase `phase`'s interleaving).
fn count(quotas: &[u64], seed: u64, phase: usize, position: u64, set: usize) -> u64 {
    let block = position / BLOCK;
    let slot = position % BLOCK;
    let within = if slot == 0 {
        0
    } else {
        let table = block_table(quotas, seed, phase, block);
        table.set[..slot as usize]
            .iter()
            .filter(|&&s| s as usize == set)
            .count() as u64
    };
    block * quotas[set] + within
}

/// One set of a blend, as a run records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlendSet {
    /// The shard directory as given (plain, or with `train/` and `val/`).
    pub path: std::path::PathBuf,
    /// Its training directories, absolute.
    pub train_dirs: Vec<std::path::PathBuf>,
    /// Rows it contributes to the stream (held-out rows excluded).
    pub rows: u64,
    /// Rows at its end held out for evaluation.
    #[serde(default)]
    pub held_out: usize,
}

/// A blend as a run records it (in `state.json` and `segments.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlendRecord {
    /// The sets, in order.
    pub sets: Vec<BlendSet>,
    /// The weights over the run, oldest first (more than one after `--reweight`).
    pub phases: Vec<BlendPhase>,
}

impl BlendRecord {
    /// The weights in force now (the last phase's).
    pub fn weights(&self) -> &[f64] {
        &self.phases.last().expect("a blend has a phase").weights
    }

    /// The sampler of this blend for `seed`.
    pub fn sampler(&self, seed: u64) -> Result<Sampler> {
        let rows: Vec<u64> = self.sets.iter().map(|s| s.rows).collect();
        Sampler::new(&rows, &self.phases, seed)
    }
}

/// The sampler of a training run: a plain [`SampleStream`] over one set, or a blend of
/// several. Row ids are global: set `i`'s rows come after those of the sets before it.
#[derive(Debug, Clone)]
pub enum Sampler {
    /// One set, read as one.
    Plain(SampleStream),
    /// A weighted blend; `offsets[i]` is the global id of set `i`'s first row.
    Blend {
        /// The blend.
        stream: BlendStream,
        /// Global id of each set's first row.
        offsets: Vec<u64>,
    },
}

/// What a stream position reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Global row id.
    pub id: u64,
    /// The set (0 for a plain stream).
    pub set: usize,
    /// The row within its set.
    pub row: u64,
    /// The position in the set's own stream (the stream position, for a plain stream).
    pub set_position: u64,
}

impl Sampler {
    /// The plain stream over `rows` rows, or the blend of sets of `set_rows` rows when
    /// `phases` is not empty.
    pub fn new(set_rows: &[u64], phases: &[BlendPhase], seed: u64) -> Result<Sampler> {
        if phases.is_empty() {
            return Ok(Sampler::Plain(SampleStream::new(
                set_rows.iter().sum(),
                seed,
            )));
        }
        let mut offsets = Vec::with_capacity(set_rows.len());
        let mut total = 0;
        for n in set_rows {
            offsets.push(total);
            total += n;
        }
        Ok(Sampler::Blend {
            stream: BlendStream::new(set_rows, phases, seed)?,
            offsets,
        })
    }

    /// Rows of each set.
    pub fn set_rows(&self) -> Vec<u64> {
        match self {
            Sampler::Plain(s) => vec![s.epoch_len()],
            Sampler::Blend { stream, .. } => stream.rows().to_vec(),
        }
    }

    /// What stream position `position` reads.
    pub fn sample(&mut self, position: u64) -> Sample {
        match self {
            Sampler::Plain(s) => {
                let id = s.sample_at(position);
                Sample {
                    id,
                    set: 0,
                    row: id,
                    set_position: position,
                }
            }
            Sampler::Blend { stream, offsets } => {
                let draw = stream.draw(position);
                let (set, row) = stream.sample_at(position);
                Sample {
                    id: offsets[set] + row,
                    set,
                    row,
                    set_position: draw.set_position,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 24 item 15: `--weights 1e308 1e308` summed to infinity and normalized to 0.
    #[test]
    fn huge_weights_normalize_without_overflow() {
        assert_eq!(normalize_weights(&[1e308, 1e308]).unwrap(), [0.5, 0.5]);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(
            normalize_weights(&[f64::MAX, f64::MAX / 3.0]).unwrap()[0],
            0.75
        ));
        let w = normalize_weights(&[0.7, 0.3]).unwrap();
        assert!(close(w[0], 0.7) && close(w[1], 0.3), "{w:?}");
    }

    fn phase(start: u64, weights: &[f64]) -> BlendPhase {
        BlendPhase {
            start,
            weights: weights.to_vec(),
        }
    }

    #[test]
    fn quotas_sum_to_the_block() {
        assert_eq!(quotas(&[0.7, 0.3]), vec![700, 300]);
        assert_eq!(quotas(&[1.0 / 3.0; 3]).iter().sum::<u64>(), BLOCK);
        assert_eq!(quotas(&[0.9995, 0.0005]), vec![999, 1]);
    }

    /// Issue 13: the realised fractions over 10,000 rows are within 1% of the weights.
    #[test]
    fn realised_fractions_over_ten_thousand_rows_match_the_weights() {
        for weights in [
            vec![0.7, 0.3],
            vec![0.5, 0.25, 0.125, 0.125],
            vec![0.9, 0.1],
        ] {
            let rows: Vec<u64> = (0..weights.len() as u64).map(|i| 37 + 100 * i).collect();
            let mut blend = BlendStream::new(&rows, &[phase(0, &weights)], 5).unwrap();
            let mut drawn = vec![0u64; weights.len()];
            for pos in 0..10_000 {
                drawn[blend.draw(pos).set] += 1;
            }
            for (i, w) in weights.iter().enumerate() {
                let got = drawn[i] as f64 / 10_000.0;
                assert!((got - w).abs() <= 0.01 * w, "set {i}: {got} vs {w}");
            }
            assert_eq!(blend.counts(10_000), drawn);
        }
    }

    /// The O(1) counts agree with counting draw by draw, across a weight change, and every
    /// set's positions are 0, 1, 2, … in stream order: nothing repeated, nothing skipped.
    #[test]
    fn counts_are_consistent_and_each_set_continues_across_a_reweight() {
        let phases = [phase(0, &[0.7, 0.3]), phase(2_345, &[0.2, 0.8])];
        let mut blend = BlendStream::new(&[50, 70], &phases, 9).unwrap();
        let mut next = [0u64; 2];
        for pos in 0..6_000 {
            if pos % 97 == 0 {
                assert_eq!(blend.counts(pos), next.to_vec(), "position {pos}");
            }
            let d = blend.draw(pos);
            assert_eq!(d.set_position, next[d.set], "position {pos}");
            next[d.set] += 1;
        }
        // The new weights hold after the change.
        let before = blend.counts(3_000);
        let after = blend.counts(5_000);
        assert_eq!(after[1] - before[1], 1_600);
    }

    #[test]
    fn each_set_sees_each_row_once_per_own_epoch() {
        let rows = [13u64, 101];
        let mut blend = BlendStream::new(&rows, &[phase(0, &[0.5, 0.5])], 3).unwrap();
        let mut seen: Vec<Vec<Vec<u32>>> = vec![Vec::new(); 2];
        for pos in 0..2_000 {
            let d = blend.draw(pos);
            let (set, row) = blend.sample_at(pos);
            assert_eq!(set, d.set);
            let epoch = (d.set_position / rows[set]) as usize;
            if seen[set].len() <= epoch {
                seen[set].resize(epoch + 1, vec![0; rows[set] as usize]);
            }
            seen[set][epoch][row as usize] += 1;
        }
        for (set, epochs) in seen.iter().enumerate() {
            // The small set restarted many times, the large one a few.
            assert!(epochs.len() >= if set == 0 { 70 } else { 9 }, "set {set}");
            for (e, counts) in epochs.iter().enumerate() {
                let full = e + 1 < epochs.len();
                assert!(
                    counts.iter().all(|&c| if full { c == 1 } else { c <= 1 }),
                    "set {set} epoch {e}"
                );
            }
        }
    }

    #[test]
    fn bad_weights_are_refused() {
        assert!(normalize_weights(&[0.5, 0.0]).is_err());
        assert!(normalize_weights(&[-1.0, 2.0]).is_err());
        assert!(BlendStream::new(&[10, 10], &[phase(0, &[1.0])], 0).is_err());
    }
}
