//! A small seeded generator (SplitMix64) for choices that must be the same on every machine
//! and every run: which tasks a golden set draws, which samples a bootstrap takes. Not for
//! anything that needs unpredictability.

use sha2::{Digest, Sha256};

/// SplitMix64: tiny, fast, and well mixed for sampling.
#[derive(Debug, Clone)]
pub struct Rng(u64);

/// What SplitMix64 adds to its state each draw.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl Rng {
    #[inline]
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The `n`-th number (from 0) that `Rng::new(seed)` gives, computed directly: the state
    /// is a counter, so a draw far into a stream costs no more than the first.
    #[inline]
    pub fn nth(seed: u64, n: u64) -> u64 {
        Rng::new(seed.wrapping_add(n.wrapping_mul(GAMMA))).next_u64()
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Whether a draw falls under `probability` (in millionths: one draw of `below`).
    pub fn chance(&mut self, probability: f64) -> bool {
        (self.below(1_000_000) as f64 / 1_000_000.0) < probability
    }
}

/// A stable number for `parts` under `seed`: the same inputs give the same number everywhere,
/// and a new file or task does not change the numbers of the others.
pub fn stable_hash(seed: u64, parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

/// A stable number in [0, 1) for `parts` under `seed`.
pub fn stable_fraction(seed: u64, parts: &[&str]) -> f64 {
    (stable_hash(seed, parts) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draw_taken_directly_is_the_streams() {
        for seed in [0, 7, u64::MAX] {
            let mut rng = Rng::new(seed);
            let stream: Vec<u64> = (0..100).map(|_| rng.next_u64()).collect();
            let direct: Vec<u64> = (0..100).map(|n| Rng::nth(seed, n)).collect();
            assert_eq!(stream, direct);
        }
    }
}
