//! LSH banding of MinHash signatures, and the union-find that turns confirmed links into
//! clusters.
//!
//! A signature of `b × r` values is cut into `b` bands of `r` rows; two documents become a
//! candidate pair when all `r` rows of at least one band agree, which for Jaccard `s` happens
//! with probability `P(s) = 1 − (1 − s^r)^b` (the S-curve). [`Banding::optimal`] picks `b` and
//! `r` as datasketch's `MinHashLSH` does: the pair that minimises the false-positive area
//! `∫₀ᵗ P(s) ds` plus the false-negative area `∫ₜ¹ 1 − P(s) ds` for threshold `t`, weighted
//! equally, over all `b · r ≤ perm`. Candidates are then confirmed by their estimated Jaccard.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Bands × rows of an LSH index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Banding {
    /// Bands.
    pub bands: usize,
    /// Rows (signature values) per band.
    pub rows: usize,
}

/// Midpoint-rule integral of `f` over `[a, b]` in steps of 0.001 (datasketch's fallback).
fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    let steps = ((b - a) / 1e-3).round().max(1.0) as usize;
    let h = (b - a) / steps as f64;
    (0..steps).map(|i| f(a + (i as f64 + 0.5) * h)).sum::<f64>() * h
}

impl Banding {
    /// The banding for Jaccard `threshold` with `perm` permutations (see the module).
    pub fn optimal(threshold: f64, perm: usize) -> Banding {
        let mut best = (f64::INFINITY, Banding { bands: 1, rows: 1 });
        for bands in 1..=perm {
            for rows in 1..=perm / bands {
                let banding = Banding { bands, rows };
                let fp = integrate(|s| banding.probability(s), 0.0, threshold);
                let fnr = integrate(|s| 1.0 - banding.probability(s), threshold, 1.0);
                let error = 0.5 * fp + 0.5 * fnr;
                if error < best.0 {
                    best = (error, banding);
                }
            }
        }
        best.1
    }

    /// The chance that two documents of Jaccard `s` share a band: `1 − (1 − s^r)^b`.
    pub fn probability(&self, s: f64) -> f64 {
        1.0 - (1.0 - s.powi(self.rows as i32)).powi(self.bands as i32)
    }

    /// The S-curve's 50% point: `(1 − 0.5^(1/b))^(1/r)`.
    pub fn half_point(&self) -> f64 {
        (1.0 - 0.5f64.powf(1.0 / self.bands as f64)).powf(1.0 / self.rows as f64)
    }

    /// The key of each band of `signature` (band `i` hashed with seed `i`, so equal rows in
    /// different bands do not collide).
    pub fn keys(&self, signature: &[u32]) -> Vec<u64> {
        (0..self.bands)
            .map(|i| {
                let rows = &signature[i * self.rows..(i + 1) * self.rows];
                let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
                xxh3_64_with_seed(&bytes, i as u64)
            })
            .collect()
    }
}

/// Union-find over documents `0..n` whose root is always the cluster's least index: the first
/// document in input order, the one kept.
#[derive(Debug, Default)]
pub struct UnionFind {
    parent: Vec<u32>,
}

impl UnionFind {
    /// Adds the next document as its own cluster; returns its index.
    pub fn push(&mut self) -> u32 {
        let id = self.parent.len() as u32;
        self.parent.push(id);
        id
    }

    /// The cluster's first document.
    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    /// Joins the clusters of `a` and `b`; the lesser root stays root.
    pub fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        let (keep, join) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[join as usize] = keep;
    }

    /// Documents so far.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banding_matches_datasketch() {
        // datasketch 2.0.0 (scipy quad): `l = MinHashLSH(threshold=t, num_perm=128); l.b, l.r`
        // gives 9, 13 for t = 0.8; 25, 5 for 0.5; 5, 25 for 0.9.
        let banding = |t| Banding::optimal(t, 128);
        assert_eq!(banding(0.8), Banding { bands: 9, rows: 13 });
        assert_eq!(banding(0.5), Banding { bands: 25, rows: 5 });
        assert_eq!(banding(0.9), Banding { bands: 5, rows: 25 });
        let b = Banding { bands: 9, rows: 13 };
        assert!((b.half_point() - 0.8).abs() < 0.05);
        // P(s) = 1 − (1 − s^13)^9: 0.9286 at 0.9, 1.43e-6 at 0.3 (docs/dedup.md's table).
        assert!((b.probability(0.9) - 0.9286).abs() < 1e-4);
        assert!((b.probability(0.3) - 1.435e-6).abs() < 1e-8);
    }

    #[test]
    fn the_root_is_the_first_document() {
        let mut uf = UnionFind::default();
        for _ in 0..5 {
            uf.push();
        }
        uf.union(4, 3);
        uf.union(1, 4);
        assert_eq!(uf.find(3), 1);
        uf.union(3, 0);
        assert_eq!((uf.find(4), uf.find(1), uf.find(2)), (0, 0, 2));
    }
}
