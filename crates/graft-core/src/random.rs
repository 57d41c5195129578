//! A small seeded generator (SplitMix64) for choices that must be the same on every machine
//! and every run: which tasks a golden set draws, which samples a bootstrap takes. Not for
//! anything that needs unpredictability.

use sha2::{Digest, Sha256};

/// SplitMix64: tiny, fast, and well mixed for sampling.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
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
