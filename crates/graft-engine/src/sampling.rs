//! Sampling: the same request with the same `seed` gives the same text.
//!
//! mistralrs 0.8.1 draws every random choice from one generator per engine, seeded once, so
//! a request's sample depends on everything sampled before it. graft gives every sampled
//! request its own draw instead (from its `seed`, or a seed of its own): mistralrs runs it
//! greedy, and a logits processor (this module) picks the token itself (temperature, min-p,
//! top-k, top-p, in vLLM's order) with a random number derived from the seed and the
//! position in the sequence, and leaves only that token possible. One sampler for seeded and
//! unseeded requests also means one meaning for the cuts (mistralrs's own skips min-p when
//! top-p is off).
//!
//! The penalties live here too ([`Penalties`]): OpenAI's frequency and presence penalties
//! count the answer's tokens alone (mistralrs's own count the prompt's as well, which would
//! push a code completion away from the very names its prompt uses); the repetition penalty
//! of vLLM and llama.cpp counts the prompt too, as theirs does, since that is what their
//! clients ask for.
//!
//! This module decides tokens; it must not know about requests or responses.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use mistralrs::CustomLogitsProcessor;

use crate::types::Repetition;

/// Samples from a per-request seed, in vLLM's order: the softmax at `temperature`; only the
/// tokens at least `min_p` times as likely as the likeliest; of those the `top_k` likeliest;
/// of those (their probabilities renormalised) the nucleus whose probabilities add up to
/// `top_p`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeededSampler {
    pub seed: u64,
    pub temperature: f64,
    pub top_p: f64,
    /// 0: every token.
    pub top_k: usize,
    /// 0: no floor.
    pub min_p: f64,
}

/// How many of the likeliest tokens `choose` sorts first; most draws end among them.
const FIRST_SORTED: usize = 64;

impl SeededSampler {
    /// The token to emit after `position` tokens of context.
    pub(crate) fn choose(&self, logits: &[f32], position: usize) -> usize {
        let temperature = self.temperature.max(1e-6);
        let max = logits.iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return 0;
        }
        // Softmax at the temperature, in f64, over the finite logits, not yet normalised: the
        // likeliest token weighs 1, so min_p is a floor on the weights themselves.
        let mut probs: Vec<(usize, f64)> = logits
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (i, ((f64::from(v) - f64::from(max)) / temperature).exp()))
            .filter(|&(_, p)| p >= self.min_p)
            .collect();
        // Most likely first; ties broken by token id so the order is total and repeatable.
        let order = |a: &(usize, f64), b: &(usize, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if self.top_k > 0 && self.top_k < probs.len() {
            probs.select_nth_unstable_by(self.top_k - 1, order);
            probs.truncate(self.top_k);
        }
        let total: f64 = probs.iter().map(|p| p.1).sum();
        let top_p = if self.top_p > 0.0 && self.top_p < 1.0 { self.top_p } else { 1.0 };
        let draw = uniform(self.seed, position as u64);
        // Only the likeliest tokens are put in order, more of them until the draw ends among
        // them (a vocabulary of 50,000 sorted at every step cost a fifth of decoding's time).
        let mut sorted = FIRST_SORTED.min(probs.len());
        loop {
            if sorted < probs.len() {
                probs.select_nth_unstable_by(sorted - 1, order);
            }
            probs[..sorted].sort_unstable_by(order);
            // The nucleus: the most likely tokens whose probabilities add up to top_p (all of
            // them when top_p is 1), and its weight.
            let mut kept = 0.0;
            let mut nucleus = None;
            for (n, (_, p)) in probs[..sorted].iter().enumerate() {
                kept += p / total;
                if top_p < 1.0 && kept >= top_p {
                    nucleus = Some(n + 1);
                    break;
                }
            }
            let (end, mass) = match nucleus {
                Some(end) => (end, probs[..end].iter().map(|p| p.1).sum()),
                None if top_p >= 1.0 || sorted == probs.len() => (probs.len(), total),
                None => {
                    sorted = (sorted * 8).min(probs.len());
                    continue;
                }
            };
            let mut target = draw * mass;
            for &(token, p) in &probs[..end.min(sorted)] {
                if target < p {
                    return token;
                }
                target -= p;
            }
            if end <= sorted {
                // Rounding left the draw past the last token's share.
                return probs[end - 1].0;
            }
            sorted = (sorted * 8).min(probs.len());
        }
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

/// The penalties on tokens already seen, in vLLM's order: the repetition penalty over the
/// context (prompt included, or its last tokens), then OpenAI's frequency and presence
/// penalties over the answer's tokens alone: a token's logit is lowered by `frequency` for
/// each time it appears in the answer so far, and by `presence` once it appears at all.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Penalties {
    pub frequency: f32,
    pub presence: f32,
    pub repetition: Option<Repetition>,
    /// Tokens of the prompt: the context's first ones.
    pub prompt_tokens: usize,
}

impl Penalties {
    /// Whether `apply_to` would change anything for this `context`.
    fn applies(&self, context: &[u32]) -> bool {
        let repeats = self.repetition.is_some_and(|r| r.window != Some(0)) && !context.is_empty();
        let counts = (self.frequency != 0.0 || self.presence != 0.0) && context.len() > self.prompt_tokens;
        repeats || counts
    }

    fn apply_to(&self, logits: &mut [f32], context: &[u32]) {
        if let Some(Repetition { penalty, window }) = self.repetition {
            let start = window.map_or(0, |n| context.len().saturating_sub(n));
            let seen: std::collections::HashSet<u32> = context[start..].iter().copied().collect();
            for token in seen {
                if let Some(logit) = logits.get_mut(token as usize) {
                    *logit = if *logit > 0.0 { *logit / penalty } else { *logit * penalty };
                }
            }
        }
        if self.frequency == 0.0 && self.presence == 0.0 {
            return;
        }
        let mut counts = std::collections::HashMap::<u32, f32>::new();
        for &token in context.get(self.prompt_tokens..).unwrap_or_default() {
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
        if !self.applies(context) {
            return Ok(logits.clone());
        }
        let mut values = values(logits)?;
        self.apply_to(&mut values, context);
        like(values, logits)
    }
}

/// vLLM's `min_tokens` (and, to the last token, `ignore_eos`): the model's end-of-text tokens
/// cannot be chosen before the answer has `min_tokens` tokens.
#[derive(Debug, Clone)]
pub(crate) struct NoEndBefore {
    pub min_tokens: usize,
    pub ends: Arc<[u32]>,
    /// Tokens of the prompt: the context's first ones.
    pub prompt_tokens: usize,
}

impl CustomLogitsProcessor for NoEndBefore {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> candle_core::Result<Tensor> {
        if context.len().saturating_sub(self.prompt_tokens) >= self.min_tokens {
            return Ok(logits.clone());
        }
        let mut values = values(logits)?;
        for &token in self.ends.iter() {
            if let Some(logit) = values.get_mut(token as usize) {
                *logit = f32::NEG_INFINITY;
            }
        }
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
        SeededSampler {
            seed,
            temperature,
            top_p,
            top_k: 0,
            min_p: 0.0,
        }
    }

    fn drawn(sampler: SeededSampler, logits: &[f32]) -> std::collections::BTreeSet<usize> {
        (0..5_000).map(|p| sampler.choose(logits, p)).collect()
    }

    #[test]
    fn top_k_keeps_the_k_likeliest_and_renormalises_them() {
        // Probabilities at temperature 1: about 0.64, 0.24, 0.09, 0.03 (in a shuffled order).
        let logits = [1.0, 3.0, 0.0, 2.0];
        let top = |k| SeededSampler {
            top_k: k,
            ..sampler(5, 1.0, 1.0)
        };
        assert_eq!(drawn(top(1), &logits), [1].into());
        assert_eq!(drawn(top(2), &logits), [1, 3].into());
        assert_eq!(drawn(top(4), &logits), [0, 1, 2, 3].into());
        assert_eq!(drawn(top(100), &logits), [0, 1, 2, 3].into(), "more than the vocabulary: all");
        // Of the two kept, the second is drawn about 0.24 / (0.64 + 0.24) of the time.
        let second = (0..20_000).filter(|&p| top(2).choose(&logits, p) == 3).count() as f64 / 20_000.0;
        assert!((second - 0.269).abs() < 0.02, "{second}");
        // top_p then counts within the k: 0.64 / 0.88 = 0.73 reaches 0.7 alone (of the whole
        // distribution, 0.64 would not).
        assert_eq!(
            drawn(
                SeededSampler {
                    top_k: 2,
                    ..sampler(5, 1.0, 0.7)
                },
                &logits
            ),
            [1].into()
        );
        assert_eq!(drawn(sampler(5, 1.0, 0.7), &logits), [1, 3].into());
    }

    /// `choose` written plainly: every token sorted, then the same cuts and walk.
    fn choose_plainly(s: &SeededSampler, logits: &[f32], position: usize) -> usize {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(usize, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &v)| (i, ((f64::from(v) - f64::from(max)) / s.temperature).exp()))
            .filter(|&(_, p)| p >= s.min_p)
            .collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if s.top_k > 0 {
            probs.truncate(s.top_k);
        }
        let total: f64 = probs.iter().map(|p| p.1).sum::<f64>();
        let mut kept = 0.0;
        let mut end = probs.len();
        for (n, (_, p)) in probs.iter().enumerate() {
            kept += p / total;
            if s.top_p < 1.0 && kept >= s.top_p {
                end = n + 1;
                break;
            }
        }
        let mass: f64 = probs[..end].iter().map(|p| p.1).sum();
        let mut target = uniform(s.seed, position as u64) * mass;
        for &(token, p) in &probs[..end] {
            if target < p {
                return token;
            }
            target -= p;
        }
        probs[end - 1].0
    }

    #[test]
    fn sorting_only_the_likeliest_draws_what_sorting_all_draws() {
        // A vocabulary of 5,000 with a long flat tail, where draws often pass the first 64.
        let logits: Vec<f32> = seeded_logits(5_000);
        for (temperature, top_p, top_k, min_p) in [
            (1.0, 1.0, 0, 0.0),
            (2.0, 1.0, 0, 0.0),
            (1.0, 0.95, 0, 0.0),
            (1.5, 0.99, 0, 0.0),
            (0.7, 0.9, 40, 0.0),
            (1.0, 1.0, 1_000, 0.0),
            (1.0, 1.0, 0, 0.05),
            (2.0, 0.98, 200, 0.01),
        ] {
            let s = SeededSampler {
                seed: 17,
                temperature,
                top_p,
                top_k,
                min_p,
            };
            for position in 0..300 {
                assert_eq!(
                    s.choose(&logits, position),
                    choose_plainly(&s, &logits, position),
                    "{s:?} at {position}"
                );
            }
        }
    }

    /// Seeded logits in [-4, 4), as many as asked.
    fn seeded_logits(n: usize) -> Vec<f32> {
        (0..n as u64).map(|i| (uniform(99, i) * 8.0 - 4.0) as f32).collect()
    }

    #[test]
    fn min_p_drops_tokens_far_less_likely_than_the_likeliest() {
        // 0.64, 0.24, 0.09, 0.03: relative to the likeliest 1, 0.37, 0.14, 0.05.
        let logits = [3.0, 2.0, 1.0, 0.0];
        let floor = |min_p| SeededSampler {
            min_p,
            ..sampler(11, 1.0, 1.0)
        };
        assert_eq!(drawn(floor(0.3), &logits), [0, 1].into());
        assert_eq!(drawn(floor(0.1), &logits), [0, 1, 2].into());
        assert_eq!(drawn(floor(1.0), &logits), [0].into(), "the likeliest always stays");
        assert_eq!(drawn(floor(0.0), &logits), [0, 1, 2, 3].into());
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
            repetition: None,
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
    fn the_repetition_penalty_counts_the_prompt_once_per_token_within_its_window() {
        let repeat = |penalty, window| Penalties {
            frequency: 0.0,
            presence: 0.0,
            repetition: Some(Repetition { penalty, window }),
            prompt_tokens: 3,
        };
        let tensor = Tensor::new(&[2.0f32, -2.0, 2.0, 0.0, 4.0], &candle_core::Device::Cpu).unwrap();
        let run = |p: Penalties, context: &[u32]| -> Vec<f32> { p.apply(&tensor, context).unwrap().to_vec1().unwrap() };
        // Prompt tokens count: a positive logit divided, a negative one multiplied, however
        // often the token appears; a logit of 0 stays 0; token 4 is not in the context.
        assert_eq!(run(repeat(2.0, None), &[0, 0, 1, 3]), vec![1.0, -4.0, 2.0, 0.0, 4.0]);
        // Below 1 the seen tokens become likelier.
        assert_eq!(run(repeat(0.5, None), &[0, 1]), vec![4.0, -1.0, 2.0, 0.0, 4.0]);
        // A window: only the last two tokens of the context count.
        assert_eq!(run(repeat(2.0, Some(2)), &[0, 1, 2, 4]), vec![2.0, -2.0, 1.0, 0.0, 2.0]);
        // A window of 0, and an empty context, change nothing.
        assert_eq!(run(repeat(2.0, Some(0)), &[0, 1]), vec![2.0, -2.0, 2.0, 0.0, 4.0]);
        assert_eq!(run(repeat(2.0, None), &[]), vec![2.0, -2.0, 2.0, 0.0, 4.0]);
        // With the frequency penalty after it, on the answer's tokens alone (the fourth on).
        let both = Penalties {
            frequency: 1.0,
            ..repeat(2.0, None)
        };
        assert_eq!(run(both, &[0, 1, 2, 0, 0]), vec![1.0 - 2.0, -4.0, 1.0, 0.0, 4.0]);
    }

    #[test]
    fn end_tokens_wait_for_min_tokens_answer_tokens() {
        let ban = NoEndBefore {
            min_tokens: 2,
            ends: vec![1, 3, 99].into(),
            prompt_tokens: 3,
        };
        let tensor = Tensor::new(&[1.0f32, 2.0, 3.0, 4.0], &candle_core::Device::Cpu).unwrap();
        let run = |context: &[u32]| -> Vec<f32> { ban.apply(&tensor, context).unwrap().to_vec1().unwrap() };
        let banned = vec![1.0, f32::NEG_INFINITY, 3.0, f32::NEG_INFINITY];
        // The prompt's tokens do not count; an id outside the vocabulary is passed over.
        assert_eq!(run(&[0, 0, 0]), banned);
        assert_eq!(run(&[0, 0, 0, 2]), banned);
        assert_eq!(run(&[0, 0, 0, 2, 2]), vec![1.0, 2.0, 3.0, 4.0]);
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
