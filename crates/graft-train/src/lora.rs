//! A low-rank adapter on one frozen projection: `y = x Wᵀ + s · (x Aᵀ) Bᵀ`, with `A` (rank ×
//! in) drawn small and `B` (out × rank) zero, so training starts from the base model exactly;
//! `s = alpha / rank` (or `alpha / √rank` with rsLoRA). Only `A` and `B` are trained; dropout
//! on the adapter's input is drawn from a seed, so it can be replayed.

use candle_core::{DType, Device, Result, Tensor, Var};
use graft_core::random::Rng;

/// How adapters are shaped.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSettings {
    pub rank: usize,
    pub alpha: f64,
    /// Scale by `alpha / √rank` (rank-stabilised LoRA) instead of `alpha / rank`.
    pub rslora: bool,
    /// Share of an adapter's inputs zeroed while training (0: none).
    pub dropout: f64,
    /// PEFT names of the projections adapted (`q_proj`, ..., `down_proj`).
    pub targets: Vec<String>,
}

impl Default for LoraSettings {
    fn default() -> Self {
        LoraSettings {
            rank: 16,
            alpha: 32.0,
            rslora: false,
            dropout: 0.0,
            targets: graft_gguf::PROJECTIONS.iter().map(|p| p.to_string()).collect(),
        }
    }
}

impl LoraSettings {
    pub fn scale(&self) -> f64 {
        graft_gguf::lora_scale(self.alpha, self.rank, self.rslora)
    }
}

/// One adapter's trainable weights.
#[derive(Debug, Clone)]
pub struct Lora {
    /// `[rank, in]`.
    pub a: Var,
    /// `[out, rank]`, zero at the start.
    pub b: Var,
    pub scale: f64,
    /// Share of inputs zeroed while training.
    pub dropout: f64,
}

/// A number in [0, 1) from `rng`.
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Elements of an input that one stream of draws covers (four 16-bit draws a number).
const DROPOUT_BLOCK: usize = 4096;

/// Dropout on an adapter's input: each element zeroed with probability `p`, else scaled by
/// `1 / (1 - p)`. Element `i`'s draw depends on the seed and `i` only (blocks of
/// [`DROPOUT_BLOCK`] elements, each a stream of its own seed, four 16-bit draws from each
/// number), so a pass run again drops the same elements however its work is cut into tasks.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    seed: u64,
    /// Draws below it drop their element.
    threshold: u64,
    /// In f32 whatever the input's type (the mask's values as a tensor were f32).
    keep: f32,
}

impl Dropout {
    pub fn new(p: f64, seed: u64) -> Dropout {
        Dropout {
            seed,
            threshold: (p * 65536.0).round() as u64,
            keep: (1.0 / (1.0 - p)) as f32,
        }
    }

    /// The factors (0 or `1 / (1 - p)`) of elements `start..start + out.len()`.
    pub(crate) fn fill<T: num_traits::Float>(&self, start: usize, out: &mut [T]) {
        let keep = T::from(self.keep).unwrap_or_else(T::one);
        let factor = |draw: u64, k: usize| {
            if (draw >> (16 * k)) & 0xFFFF < self.threshold {
                T::zero()
            } else {
                keep
            }
        };
        let mut i = start;
        let mut rest = out;
        while !rest.is_empty() {
            let (block, within) = (i / DROPOUT_BLOCK, i % DROPOUT_BLOCK);
            let stream = self.seed ^ (block as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let one = |e: usize| factor(Rng::nth(stream, (e / 4) as u64), e % 4);
            let (now, later) = rest.split_at_mut((DROPOUT_BLOCK - within).min(rest.len()));
            // Up to a draw's first element one at a time, then 8 draws (32 elements) at a
            // time, which the compiler turns into vector code, then the rest.
            let (head, aligned) = now.split_at_mut(((4 - within % 4) % 4).min(now.len()));
            head.iter_mut().enumerate().for_each(|(j, v)| *v = one(within + j));
            let mut e = within + head.len();
            let mut groups = aligned.chunks_exact_mut(32);
            for group in &mut groups {
                // Element j's 16 bits: draw j / 4's (j % 4)-th from the lowest.
                let mut bits = [0u16; 32];
                for (k, four) in bits.chunks_exact_mut(4).enumerate() {
                    let bytes = Rng::nth(stream, (e / 4 + k) as u64).to_le_bytes();
                    for (m, b) in four.iter_mut().enumerate() {
                        *b = u16::from_le_bytes([bytes[2 * m], bytes[2 * m + 1]]);
                    }
                }
                for (v, &b) in group.iter_mut().zip(&bits) {
                    *v = if u64::from(b) < self.threshold { T::zero() } else { keep };
                }
                e += 32;
            }
            let tail = groups.into_remainder();
            tail.iter_mut().enumerate().for_each(|(j, v)| *v = one(e + j));
            (i, rest) = (i + now.len(), later);
        }
    }

    /// The factors of an input of `n` elements, blocks drawn in parallel.
    pub(crate) fn mask(&self, n: usize) -> Vec<f32> {
        use rayon::prelude::*;
        let mut mask = vec![0f32; n];
        mask.par_chunks_mut(DROPOUT_BLOCK)
            .enumerate()
            .for_each(|(block, values)| self.fill(block * DROPOUT_BLOCK, values));
        mask
    }
}

impl Lora {
    /// A fresh adapter for a `[out, in]` weight: `A` uniform in ±1/√in (PEFT's Kaiming-uniform
    /// bound with a = √5) drawn from `rng` (a seed gives the same adapter everywhere), `B` zero.
    pub fn new(out: usize, inp: usize, settings: &LoraSettings, dtype: DType, device: &Device, rng: &mut Rng) -> Result<Lora> {
        let bound = 1.0 / (inp as f64).sqrt();
        let values: Vec<f64> = (0..settings.rank * inp).map(|_| (2.0 * unit(rng) - 1.0) * bound).collect();
        let a = Tensor::from_vec(values, (settings.rank, inp), device)?.to_dtype(dtype)?;
        let b = Tensor::zeros((out, settings.rank), dtype, device)?;
        Ok(Lora {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scale: settings.scale(),
            dropout: settings.dropout,
        })
    }

    /// The adapter's part of the output for `x` (`[..., in]` → `[..., out]`). `dropout` (a
    /// seed) zeroes a share of its input, the same inputs for the same seed, so a pass run
    /// again for its gradient (the trainer's checkpointing) drops what the first one dropped.
    /// `track` records the graph for a backward pass; without it the weights are read as
    /// constants and nothing is kept.
    pub fn forward(&self, x: &Tensor, dropout: Option<u64>, track: bool) -> Result<Tensor> {
        let (a, b) = if track {
            (self.a.as_tensor().clone(), self.b.as_tensor().clone())
        } else {
            (self.a.as_tensor().detach(), self.b.as_tensor().detach())
        };
        let dropout = dropout.filter(|_| self.dropout > 0.0).map(|seed| Dropout::new(self.dropout, seed));
        crate::fused::adapter::apply(x, &a, &b, self.scale, dropout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_adapter_and_the_same_dropout() {
        let settings = LoraSettings {
            rank: 4,
            dropout: 0.5,
            ..LoraSettings::default()
        };
        let make = |seed| Lora::new(6, 8, &settings, DType::F32, &Device::Cpu, &mut Rng::new(seed)).unwrap();
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (one, two, other) = (make(1), make(1), make(2));
        assert_eq!(values(one.a.as_tensor()), values(two.a.as_tensor()));
        assert_ne!(values(one.a.as_tensor()), values(other.a.as_tensor()));
        assert!(values(one.a.as_tensor()).iter().all(|v| v.abs() <= 1.0 / 8f32.sqrt()));
        one.b.set(&Tensor::ones((6, 4), DType::F32, &Device::Cpu).unwrap()).unwrap();
        let x = Tensor::ones((3, 8), DType::F32, &Device::Cpu).unwrap();
        let run = |seed| values(&one.forward(&x, seed, false).unwrap());
        assert_eq!(run(Some(7)), run(Some(7)));
        assert_ne!(run(Some(7)), run(Some(8)));
        assert_ne!(run(Some(7)), run(None));
    }

    #[test]
    fn the_dropout_mask_drops_its_share_and_keeps_the_mean() {
        let mask = Dropout::new(0.05, 3).mask(100_003);
        assert_eq!(mask.len(), 100_003);
        let zeros = mask.iter().filter(|v| **v == 0.0).count() as f64 / mask.len() as f64;
        assert!((zeros - 0.05).abs() < 0.005, "{zeros}");
        let mean = mask.iter().map(|v| *v as f64).sum::<f64>() / mask.len() as f64;
        assert!((mean - 1.0).abs() < 0.01, "{mean}");
        assert_eq!(mask, Dropout::new(0.05, 3).mask(100_003));
        assert_ne!(mask, Dropout::new(0.05, 4).mask(100_003));
        // The elements dropped are the ones earlier versions dropped (a run resumed from a
        // checkpoint replays them): the first of the first block and of the third.
        let dropped = |from: usize| mask.iter().enumerate().skip(from).filter(|(_, v)| **v == 0.0).map(|(i, _)| i);
        assert_eq!(
            dropped(0).take(12).collect::<Vec<_>>(),
            [16, 18, 37, 60, 88, 94, 99, 111, 142, 145, 196, 206]
        );
        assert_eq!(dropped(8192).take(6).collect::<Vec<_>>(), [8193, 8203, 8265, 8281, 8301, 8316]);
        // Any stretch drawn alone is the whole mask's, across blocks and inside a draw's four.
        let dropout = Dropout::new(0.05, 3);
        for (start, len) in [(0, 1), (3, 2), (4093, 10), (8190, 4097), (5, 70), (100_000, 3)] {
            let mut part = vec![0f32; len];
            dropout.fill(start, &mut part);
            assert_eq!(part, mask[start..start + len], "{start}");
        }
    }
}
