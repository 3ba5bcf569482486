//! MinHash signatures over word n-grams, and the 128-bit hash of exact duplicates.
//!
//! Each n-gram of consecutive words (a document with fewer than n words is one n-gram of all of
//! them) hashes to 64 bits (xxh3 over its words' own xxh3 hashes, so every word is hashed
//! once). Permutation `i` is the multiply-shift hash `(a_i · x + b_i) >> 32` over 64-bit
//! integers with odd `a_i` and `b_i` drawn from the seed; the signature keeps, per permutation,
//! the least value over the document's n-grams (32 bits, as datasketch keeps). Two signatures
//! agree at a position with probability about the n-gram sets' Jaccard similarity.

use h5gpt_formats::permutation::mix64;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64, xxh3_64_with_seed};

/// The permutations of one `--dedup-perm` / `--dedup-seed`.
#[derive(Debug, Clone)]
pub struct MinHasher {
    a: Vec<u64>,
    b: Vec<u64>,
    ngram: usize,
    seed: u64,
}

impl MinHasher {
    /// `perm` permutations over `ngram`-word shingles, drawn from `seed`.
    pub fn new(perm: usize, ngram: usize, seed: u64) -> MinHasher {
        let draw = |i: u64| mix64(seed ^ mix64(i)) | 1;
        MinHasher {
            a: (0..perm as u64).map(|i| draw(2 * i)).collect(),
            b: (0..perm as u64).map(|i| draw(2 * i + 1)).collect(),
            ngram: ngram.max(1),
            seed,
        }
    }

    /// Permutations per signature.
    pub fn perm(&self) -> usize {
        self.a.len()
    }

    /// The signature of the words of a normalised document (`None` when it has no words).
    pub fn signature<'a>(&self, words: impl Iterator<Item = &'a str>) -> Option<Vec<u32>> {
        let word_hashes: Vec<u64> = words
            .map(|w| xxh3_64_with_seed(w.as_bytes(), self.seed))
            .collect();
        self.signature_of_hashes(&word_hashes)
    }

    /// The signature of a sequence of items given by their 64-bit hashes (words, or token
    /// ids for `inspect --duplicates`).
    pub fn signature_of_hashes(&self, word_hashes: &[u64]) -> Option<Vec<u32>> {
        if word_hashes.is_empty() {
            return None;
        }
        let n = self.ngram.min(word_hashes.len());
        let mut mins = vec![u64::MAX; self.a.len()];
        let mut bytes = Vec::with_capacity(8 * n);
        for window in word_hashes.windows(n) {
            bytes.clear();
            for h in window {
                bytes.extend_from_slice(&h.to_le_bytes());
            }
            let x = xxh3_64(&bytes);
            update_mins(&mut mins, &self.a, &self.b, x);
        }
        Some(mins.into_iter().map(|m| m as u32).collect())
    }
}

/// `mins[i] = min(mins[i], (a[i]·x + b[i]) >> 32)` for every permutation: the inner loop of
/// MinHash. Compiled three times, for AVX-512 (8 lanes of 64-bit multiply and min), AVX2 and
/// the baseline, and picked at run time; integer arithmetic, so every path gives the same
/// values.
fn update_mins(mins: &mut [u64], a: &[u64], b: &[u64], x: u64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512dq") {
            // SAFETY: the CPU has the features the function is compiled for.
            unsafe { update_mins_avx512(mins, a, b, x) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            unsafe { update_mins_avx2(mins, a, b, x) };
            return;
        }
    }
    update_mins_portable(mins, a, b, x);
}

#[inline(always)]
fn update_mins_portable(mins: &mut [u64], a: &[u64], b: &[u64], x: u64) {
    for ((m, a), b) in mins.iter_mut().zip(a).zip(b) {
        let v = a.wrapping_mul(x).wrapping_add(*b) >> 32;
        *m = (*m).min(v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn update_mins_avx512(mins: &mut [u64], a: &[u64], b: &[u64], x: u64) {
    update_mins_portable(mins, a, b, x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn update_mins_avx2(mins: &mut [u64], a: &[u64], b: &[u64], x: u64) {
    update_mins_portable(mins, a, b, x);
}

/// The share of positions at which two signatures agree: the estimated Jaccard similarity.
pub fn estimated_jaccard(a: &[u32], b: &[u32]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

/// The 128-bit hash of a normalised text (exact duplicates hash alike).
pub fn exact_hash(normalised: &str) -> u128 {
    xxh3_128(normalised.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shingle_set(words: &[String], n: usize) -> std::collections::HashSet<Vec<String>> {
        words.windows(n).map(|w| w.to_vec()).collect()
    }

    #[test]
    fn every_update_path_gives_the_portable_mins() {
        let hasher = MinHasher::new(128, 5, 7);
        let xs: Vec<u64> = (0..200u64).map(|i| mix64(i ^ 0xdead_beef)).collect();
        let mut want = vec![u64::MAX; 128];
        for &x in &xs {
            update_mins_portable(&mut want, &hasher.a, &hasher.b, x);
        }
        let mut got = vec![u64::MAX; 128];
        for &x in &xs {
            update_mins(&mut got, &hasher.a, &hasher.b, x);
        }
        assert_eq!(got, want);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let mut avx2 = vec![u64::MAX; 128];
            for &x in &xs {
                // SAFETY: checked just above.
                unsafe { update_mins_avx2(&mut avx2, &hasher.a, &hasher.b, x) };
            }
            assert_eq!(avx2, want);
        }
    }

    #[test]
    fn agreement_estimates_jaccard() {
        // Two 400-word documents sharing a long middle: the estimate lies within 4 standard
        // errors (sqrt(J(1-J)/perm)) of the true 5-gram Jaccard.
        let hasher = MinHasher::new(256, 5, 7);
        let base: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
        let mut other = base.clone();
        for i in (0..400).step_by(40) {
            other[i] = format!("x{i}");
        }
        let (sa, sb) = (shingle_set(&base, 5), shingle_set(&other, 5));
        let truth = sa.intersection(&sb).count() as f64 / sa.union(&sb).count() as f64;
        let sig = |w: &[String]| hasher.signature(w.iter().map(String::as_str)).unwrap();
        let estimate = estimated_jaccard(&sig(&base), &sig(&other));
        let error = (truth * (1.0 - truth) / 256.0).sqrt();
        assert!(
            (estimate - truth).abs() < 4.0 * error,
            "{estimate} vs {truth}"
        );
        assert_eq!(estimated_jaccard(&sig(&base), &sig(&base)), 1.0);
        assert!(hasher.signature(std::iter::empty()).is_none());
    }
}
