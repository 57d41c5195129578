//! Seeded sampling: the same request with the same `seed` gives the same text.
//!
//! mistralrs 0.8.1 draws every random choice from one generator per engine, seeded once, so
//! a request's sample depends on everything sampled before it. graft gives seeded requests
//! their own draw instead: mistralrs runs them greedy, and a logits processor (this module)
//! picks the token itself (temperature, then top-p) with a random number derived from the
//! seed and the position in the sequence, and leaves only that token possible.
//!
//! OpenAI's frequency and presence penalties live here too ([`Penalties`]): mistralrs's own
//! count the prompt's tokens as well, which would push a code completion away from the very
//! names its prompt uses; OpenAI counts the answer's tokens alone.
//!
//! This module decides tokens; it must not know about requests or responses.

use candle_core::{DType, Tensor};
use mistralrs::CustomLogitsProcessor;

/// Samples with temperature and top-p from a per-request seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeededSampler {
    pub seed: u64,
    pub temperature: f64,
    pub top_p: f64,
}

impl SeededSampler {
    /// The token to emit after `position` tokens of context.
    pub(crate) fn choose(&self, logits: &[f32], position: usize) -> usize {
        let temperature = self.temperature.max(1e-6);
        let max = logits.iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return 0;
        }
        // Softmax at the temperature, in f64, over the finite logits.
        let mut probs: Vec<(usize, f64)> = logits
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (i, ((f64::from(v) - f64::from(max)) / temperature).exp()))
            .collect();
        // Most likely first; ties broken by token id so the order is total and repeatable.
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: f64 = probs.iter().map(|p| p.1).sum();
        // The nucleus: the most likely tokens whose probabilities add up to top_p.
        let top_p = if self.top_p > 0.0 && self.top_p < 1.0 { self.top_p } else { 1.0 };
        let mut kept = 0.0;
        let mut end = probs.len();
        for (n, (_, p)) in probs.iter().enumerate() {
            kept += p / total;
            if kept >= top_p {
                end = n + 1;
                break;
            }
        }
        let nucleus = &probs[..end];
        let mass: f64 = nucleus.iter().map(|p| p.1).sum();
        let mut target = uniform(self.seed, position as u64) * mass;
        for &(token, p) in nucleus {
            if target < p {
                return token;
            }
            target -= p;
        }
        nucleus.last().map_or(0, |p| p.0)
    }
}

impl CustomLogitsProcessor for SeededSampler {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> candle_core::Result<Tensor> {
        only(self.choose(&values(logits)?, context.len()), logits)
    }
}

/// A step's logits as one f32 per token (what every processor here reads).
pub(crate) fn values(logits: &Tensor) -> candle_core::Result<Vec<f32>> {
    logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}

/// `values` as a tensor shaped and typed as `logits` (what every processor here returns).
fn like(values: Vec<f32>, logits: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::from_vec(values, logits.shape(), logits.device())?.to_dtype(logits.dtype())
}

/// Logits shaped as `logits` where only `token` is possible, so mistralrs's sampler can only
/// take it.
pub(crate) fn only(token: usize, logits: &Tensor) -> candle_core::Result<Tensor> {
    let mut only = vec![f32::NEG_INFINITY; logits.elem_count()];
    if let Some(slot) = only.get_mut(token) {
        *slot = 0.0;
    }
    like(only, logits)
}

/// OpenAI's frequency and presence penalties over the answer's tokens: a token's logit is
/// lowered by `frequency` for each time it appears in the answer so far, and by `presence`
/// once it appears at all. The prompt's tokens do not count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Penalties {
    pub frequency: f32,
    pub presence: f32,
    /// Tokens of the prompt: the context's first ones.
    pub prompt_tokens: usize,
}

impl Penalties {
    fn apply_to(&self, logits: &mut [f32], answer: &[u32]) {
        let mut counts = std::collections::HashMap::<u32, f32>::new();
        for &token in answer {
            *counts.entry(token).or_default() += 1.0;
        }
        for (token, count) in counts {
            if let Some(logit) = logits.get_mut(token as usize) {
                *logit -= count * self.frequency + self.presence;
            }
        }
    }
}

impl CustomLogitsProcessor for Penalties {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> candle_core::Result<Tensor> {
        let answer = context.get(self.prompt_tokens..).unwrap_or_default();
        if answer.is_empty() {
            return Ok(logits.clone());
        }
        let mut values = values(logits)?;
        self.apply_to(&mut values, answer);
        like(values, logits)
    }
}

/// OpenAI's `logit_bias`: a fixed amount added to some tokens' logits at every step.
#[derive(Debug, Clone)]
pub(crate) struct Bias(pub Vec<(u32, f32)>);

impl CustomLogitsProcessor for Bias {
    fn apply(&self, logits: &Tensor, _context: &[u32]) -> candle_core::Result<Tensor> {
        let mut values = values(logits)?;
        for &(token, bias) in &self.0 {
            if let Some(logit) = values.get_mut(token as usize) {
                *logit += bias;
            }
        }
        like(values, logits)
    }
}

/// A number in [0, 1) determined by `seed` and `position` alone (SplitMix64's finaliser over
/// both), so a sequence's draws do not depend on any other request.
fn uniform(seed: u64, position: u64) -> f64 {
    let mut z = seed ^ position.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(seed: u64, temperature: f64, top_p: f64) -> SeededSampler {
        SeededSampler { seed, temperature, top_p }
    }

    #[test]
    fn the_same_seed_and_position_choose_the_same_token() {
        let logits = [1.0, 2.0, 0.5, 1.5, -1.0];
        for position in 0..50 {
            assert_eq!(
                sampler(7, 1.0, 1.0).choose(&logits, position),
                sampler(7, 1.0, 1.0).choose(&logits, position)
            );
        }
        let run = |seed| (0..64).map(|p| sampler(seed, 1.0, 1.0).choose(&logits, p)).collect::<Vec<_>>();
        assert_ne!(run(1), run(2), "different seeds must give different draws");
    }

    #[test]
    fn draws_follow_the_softmax_and_top_p_cuts_the_tail() {
        // Probabilities at temperature 1: about 0.64, 0.24, 0.09, 0.03.
        let logits = [3.0, 2.0, 1.0, 0.0];
        let mut counts = [0usize; 4];
        for position in 0..20_000 {
            counts[sampler(3, 1.0, 1.0).choose(&logits, position)] += 1;
        }
        let share = |i: usize| counts[i] as f64 / 20_000.0;
        assert!((share(0) - 0.644).abs() < 0.02, "{counts:?}");
        assert!((share(1) - 0.237).abs() < 0.02, "{counts:?}");
        assert!(counts[3] > 0);

        // top_p = 0.8 keeps the first two tokens only (0.64 + 0.24 >= 0.8).
        let kept: std::collections::BTreeSet<usize> = (0..5_000).map(|p| sampler(3, 1.0, 0.8).choose(&logits, p)).collect();
        assert_eq!(kept.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn penalties_count_the_answer_alone() {
        let penalties = Penalties {
            frequency: 0.5,
            presence: 0.25,
            prompt_tokens: 0,
        };
        let mut logits = [1.0f32; 4];
        // Token 1 twice, token 3 once, tokens 0 and 2 not at all.
        penalties.apply_to(&mut logits, &[1, 3, 1, 9]);
        assert_eq!(logits, [1.0, 1.0 - 2.0 * 0.5 - 0.25, 1.0, 1.0 - 0.5 - 0.25]);
        // Through the processor, the prompt's tokens are not counted.
        let with_prompt = Penalties {
            prompt_tokens: 2,
            ..penalties
        };
        let tensor = Tensor::new(&[1.0f32; 4], &candle_core::Device::Cpu).unwrap();
        let out: Vec<f32> = with_prompt.apply(&tensor, &[2, 2, 0]).unwrap().to_vec1().unwrap();
        assert_eq!(out, vec![1.0 - 0.75, 1.0, 1.0, 1.0]);
        let untouched: Vec<f32> = with_prompt.apply(&tensor, &[2, 2]).unwrap().to_vec1().unwrap();
        assert_eq!(untouched, vec![1.0; 4]);
    }

    #[test]
    fn a_tiny_temperature_is_greedy_and_infinite_logits_are_never_chosen() {
        let logits = [0.1, f32::NEG_INFINITY, 0.3, 0.2];
        for position in 0..100 {
            assert_eq!(sampler(9, 1e-9, 1.0).choose(&logits, position), 2);
            assert_ne!(sampler(9, 5.0, 1.0).choose(&logits, position), 1);
        }
    }
}
