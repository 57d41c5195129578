//! Log-probabilities of the tokens a generation chooses, and of the most likely alternatives.
//!
//! When a request asks for them, graft chooses every token itself in a logits processor
//! ([`Chooser`]: greedy, or seeded sampling from `sampling`) and leaves mistralrs only that one
//! token to take. The processor sees the model's logits after the penalties and the logit
//! bias, and before temperature and top-p, so it writes down each chosen token's
//! log-probability under that distribution and the most likely tokens at its place, by
//! position in the answer ([`Record`]). The token stream hands each entry out with the text it belongs to: mistralrs
//! sends a token's text once it ends a whole character, naming the token it sent it for, and
//! everything written down up to that token goes with that text ([`Record::through`]). The
//! same record names every chosen token for a request's stop tokens (vLLM's
//! `stop_token_ids`, `stop`), which a chunk's text alone cannot tell.
//!
//! This module owns the arithmetic and the record; it must not know about requests or HTTP.

use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use mistralrs::CustomLogitsProcessor;

use crate::sampling::{only, values, SeededSampler};
use crate::tokenizer::Tokenizer;
use crate::types::{TokenLogprob, TopLogprob};

/// Most alternatives a request may ask for per token (OpenAI's limit for chat).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// The entries a generation's [`Chooser`] wrote, one per generated token, in order.
#[derive(Debug, Default)]
pub(crate) struct Record {
    entries: Mutex<Vec<TokenLogprob>>,
}

impl Record {
    /// Writes the entry of the token at `position` in the answer (a step sampled again
    /// replaces its entry).
    fn put(&self, position: usize, entry: TokenLogprob) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if position < entries.len() {
            entries[position] = entry;
            entries.truncate(position + 1);
        } else if position == entries.len() {
            entries.push(entry);
        }
    }

    /// The entries from `from` up to and including the first one for token `id`, and the
    /// position after it; `None` when no entry from `from` on is that token.
    pub(crate) fn through(&self, from: usize, id: u32) -> Option<(Vec<TokenLogprob>, usize)> {
        let entries = self.entries.lock().ok()?;
        let end = entries.get(from..)?.iter().position(|e| e.id == id)? + from + 1;
        Some((entries[from..end].to_vec(), end))
    }
}

/// Chooses each token (greedy, or from `sampler`) and writes down its log-probability and the
/// `top` most likely tokens.
pub(crate) struct Chooser {
    pub sampler: Option<SeededSampler>,
    pub top: usize,
    /// Tokens of the prompt: the context's first ones, which are not part of the answer.
    pub prompt_tokens: usize,
    pub record: Arc<Record>,
    pub tokenizer: Arc<Tokenizer>,
}

/// The entry of token `chosen` at a place whose logits are `logits`: its log-probability
/// (log-softmax) and the `top` likeliest tokens.
pub(crate) fn entry(logits: &[f32], chosen: usize, top: usize, tokenizer: &Tokenizer) -> TokenLogprob {
    let normaliser = log_sum_exp(logits);
    let logprob = |i: usize| logits.get(i).map_or(f32::NEG_INFINITY, |&v| (f64::from(v) - normaliser) as f32);
    let text = |id: u32| tokenizer.decode(&[id]).unwrap_or_default();
    let bytes = |id: u32| tokenizer.token_bytes(id).unwrap_or_default();
    TokenLogprob {
        id: chosen as u32,
        token: text(chosen as u32),
        bytes: bytes(chosen as u32),
        logprob: logprob(chosen),
        rank: rank(logits, chosen),
        top: most_likely(logits, top)
            .into_iter()
            .map(|i| TopLogprob {
                id: i as u32,
                token: text(i as u32),
                bytes: bytes(i as u32),
                logprob: logprob(i),
            })
            .collect(),
    }
}

impl CustomLogitsProcessor for Chooser {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> candle_core::Result<Tensor> {
        let values = values(logits)?;
        let chosen = match &self.sampler {
            Some(sampler) => sampler.choose(&values, context.len()),
            None => most_likely(&values, 1).first().copied().unwrap_or(0),
        };
        if chosen < values.len() {
            let position = context.len().saturating_sub(self.prompt_tokens);
            self.record.put(position, entry(&values, chosen, self.top, &self.tokenizer));
        }
        only(chosen, logits)
    }
}

/// ln Σ exp(v) over the finite logits, in f64.
fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return 0.0;
    }
    let max = f64::from(max);
    let sum: f64 = logits.iter().filter(|v| v.is_finite()).map(|&v| (f64::from(v) - max).exp()).sum();
    max + sum.ln()
}

/// Whether token `a` ranks above token `b`: a higher logit, or the same and a lower id.
fn ranks_above(logits: &[f32], a: usize, b: usize) -> bool {
    logits[a] > logits[b] || (logits[a] == logits[b] && a < b)
}

/// Token `chosen`'s place in [`most_likely`]'s order, 1 for the first (past the end of the
/// finite logits for one that is not finite).
fn rank(logits: &[f32], chosen: usize) -> u32 {
    let Some(&value) = logits.get(chosen) else { return 0 };
    let above = match value.is_finite() {
        true => logits
            .iter()
            .enumerate()
            .filter(|&(i, v)| v.is_finite() && ranks_above(logits, i, chosen))
            .count(),
        false => logits.iter().filter(|v| v.is_finite()).count(),
    };
    above as u32 + 1
}

/// The `k` tokens with the highest finite logits, highest first; ties go to the lower id.
fn most_likely(logits: &[f32], k: usize) -> Vec<usize> {
    let mut best: Vec<usize> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    let better = |a: usize, b: usize| ranks_above(logits, a, b);
    for (i, v) in logits.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        if best.len() == k && !better(i, best[k - 1]) {
            continue;
        }
        let at = best.partition_point(|&b| better(b, i));
        best.insert(at, i);
        best.truncate(k);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u32) -> TokenLogprob {
        TokenLogprob {
            id,
            token: format!("t{id}"),
            bytes: Vec::new(),
            logprob: -1.0,
            rank: 1,
            top: Vec::new(),
        }
    }

    #[test]
    fn the_most_likely_come_first_and_ties_go_to_the_lower_id() {
        let logits = [0.5, 2.0, f32::NAN, 2.0, f32::NEG_INFINITY, 1.0, 3.0];
        assert_eq!(most_likely(&logits, 3), vec![6, 1, 3]);
        assert_eq!(
            most_likely(&logits, 10),
            vec![6, 1, 3, 5, 0],
            "infinite and NaN logits are never listed"
        );
        assert!(most_likely(&logits, 0).is_empty());
        // Each token's rank is its place in that order.
        for (place, &token) in most_likely(&logits, 10).iter().enumerate() {
            assert_eq!(rank(&logits, token), place as u32 + 1, "token {token}");
        }
        assert_eq!(rank(&logits, 4), 6, "a token that cannot be chosen comes after every one that can");
    }

    #[test]
    fn log_probabilities_are_a_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0, f32::NEG_INFINITY];
        let normaliser = log_sum_exp(&logits);
        let total: f64 = logits.iter().map(|&v| (f64::from(v) - normaliser).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        // ln(e^3 / (e + e^2 + e^3))
        let expected = 3.0 - (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        assert!((3.0 - normaliser - expected).abs() < 1e-12);
        // Large logits do not overflow.
        assert!(log_sum_exp(&[1e30, 1e30]).is_finite());
    }

    #[test]
    fn entries_go_out_through_the_token_a_text_was_sent_for() {
        let record = Record::default();
        for (position, id) in [7, 8, 8, 9].into_iter().enumerate() {
            record.put(position, entry(id));
        }
        // Text for token 8: the entries of tokens 7 and 8.
        let (out, next) = record.through(0, 8).unwrap();
        assert_eq!(out.iter().map(|e| e.id).collect::<Vec<_>>(), vec![7, 8]);
        assert_eq!(next, 2);
        let (out, next) = record.through(next, 8).unwrap();
        assert_eq!(out.iter().map(|e| e.id).collect::<Vec<_>>(), vec![8]);
        assert!(record.through(next, 5).is_none(), "a token never written hands out nothing");
        assert!(record.through(99, 9).is_none());
        // A step sampled again rewrites its place and drops what followed it.
        record.put(1, entry(4));
        assert_eq!(record.through(0, 4).unwrap().1, 2);
        assert!(record.through(2, 9).is_none());
    }
}
