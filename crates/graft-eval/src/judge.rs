//! The judge: two arms' answers to a question compared against the reference by a model,
//! the way MT-Bench and Chatbot Arena's LLM judges do it, with their position bias cancelled.
//!
//! Each pair is asked twice, once with each answer first; it counts as a win or a loss only
//! when both orders agree, and as a tie otherwise. How often the two orders disagree (the
//! flip rate) says how far the judge can be trusted. The prompt is a rubric file with four
//! placeholders, `{question}`, `{reference}`, `{answer_a}` and `{answer_b}`, that a team can
//! edit; the judge answers `Verdict: A`, `Verdict: B` or `Verdict: tie`.
//!
//! This module lays out the prompts, reads the verdicts and combines them; sending a prompt
//! to the judge's endpoint is the caller's (`ask`).

use std::future::Future;
use std::path::Path;

use serde::Serialize;

use crate::metrics::{bootstrap_mean, Difference};

/// The rubric graft ships (`graft eval rubric` prints it).
pub const DEFAULT_RUBRIC: &str = include_str!("../judge-rubric.md");

const PLACEHOLDERS: [&str; 4] = ["{question}", "{reference}", "{answer_a}", "{answer_b}"];

/// Why a rubric cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RubricError {
    #[error("cannot read the rubric {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the rubric {path} has no `{placeholder}`: it needs {{question}}, {{reference}}, {{answer_a}} and {{answer_b}}")]
    Missing { path: String, placeholder: &'static str },
}

/// The judge's prompt, with its placeholders.
#[derive(Debug, Clone)]
pub struct Rubric {
    template: String,
}

impl Default for Rubric {
    fn default() -> Self {
        Rubric {
            template: DEFAULT_RUBRIC.to_owned(),
        }
    }
}

impl Rubric {
    /// A rubric from a file; every placeholder must be in it.
    pub fn read(path: &Path) -> Result<Rubric, RubricError> {
        let shown = path.display().to_string();
        let template = std::fs::read_to_string(path).map_err(|source| RubricError::Read {
            path: shown.clone(),
            source,
        })?;
        if let Some(placeholder) = PLACEHOLDERS.into_iter().find(|p| !template.contains(p)) {
            return Err(RubricError::Missing { path: shown, placeholder });
        }
        Ok(Rubric { template })
    }

    /// The prompt for one order of one pair.
    pub fn prompt(&self, question: &str, reference: &str, answer_a: &str, answer_b: &str) -> String {
        // One pass, so that an answer holding a placeholder's text is not filled in again.
        let mut out = String::with_capacity(self.template.len() + answer_a.len() + answer_b.len());
        let mut rest = self.template.as_str();
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let tail = &rest[start..];
            let filled = [
                ("{question}", question),
                ("{reference}", reference),
                ("{answer_a}", answer_a),
                ("{answer_b}", answer_b),
            ]
            .into_iter()
            .find(|(p, _)| tail.starts_with(p));
            match filled {
                Some((placeholder, value)) => {
                    out.push_str(value);
                    rest = &tail[placeholder.len()..];
                }
                None => {
                    out.push('{');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// What the judge said of one order: the answer shown first (A), second (B), or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    A,
    B,
    Tie,
}

/// The judge's reply read as a verdict: the word after the last `verdict`, or else a reply
/// that starts with `A`, `B`, `tie` (or `Answer A` / `Answer B`). `None` when neither.
pub fn parse_verdict(reply: &str) -> Option<Verdict> {
    let word = |w: &str| match w.to_ascii_lowercase().as_str() {
        "a" => Some(Verdict::A),
        "b" => Some(Verdict::B),
        "tie" => Some(Verdict::Tie),
        _ => None,
    };
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let lower = reply.to_ascii_lowercase();
    if let Some(at) = lower.rfind("verdict") {
        if let Some(v) = words(&reply[at + "verdict".len()..]).first().and_then(|w| word(w)) {
            return Some(v);
        }
    }
    let first = words(reply);
    match first.as_slice() {
        [w, ..] if word(w).is_some() => word(w),
        [answer, w, ..] if answer.eq_ignore_ascii_case("answer") => word(w).filter(|v| *v != Verdict::Tie),
        _ => None,
    }
}

/// An arm's answer against the other's, both orders combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairOutcome {
    Win,
    Loss,
    Tie,
}

impl PairOutcome {
    fn score(self) -> f64 {
        match self {
            PairOutcome::Win => 1.0,
            PairOutcome::Loss => -1.0,
            PairOutcome::Tie => 0.0,
        }
    }
}

/// One question judged: `arm`'s answer against `against`'s.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    pub task: String,
    pub arm: &'static str,
    pub against: &'static str,
    /// Verdict with `arm`'s answer shown first (as A); `None`: no verdict could be read.
    pub arm_first: Option<Verdict>,
    /// Verdict with `against`'s answer shown first.
    pub arm_second: Option<Verdict>,
    pub outcome: PairOutcome,
    /// Both orders gave a verdict, and they disagree.
    pub flipped: bool,
    /// The judge's replies, in order (arm first, arm second).
    pub replies: [String; 2],
}

/// Combines the two orders' verdicts: a win or a loss only when both agree, a tie otherwise.
/// Returns the outcome and whether the orders flipped.
pub fn combine(arm_first: Option<Verdict>, arm_second: Option<Verdict>) -> (PairOutcome, bool) {
    let seen_first = arm_first.map(|v| match v {
        Verdict::A => PairOutcome::Win,
        Verdict::B => PairOutcome::Loss,
        Verdict::Tie => PairOutcome::Tie,
    });
    let seen_second = arm_second.map(|v| match v {
        Verdict::A => PairOutcome::Loss,
        Verdict::B => PairOutcome::Win,
        Verdict::Tie => PairOutcome::Tie,
    });
    match (seen_first, seen_second) {
        (Some(one), Some(two)) if one == two => (one, false),
        (Some(_), Some(_)) => (PairOutcome::Tie, true),
        _ => (PairOutcome::Tie, false),
    }
}

/// Judges `arm`'s answer against `against`'s for one question, asking in both orders
/// through `ask` (the judge's reply to a prompt, or why none came).
#[allow(clippy::too_many_arguments)]
pub async fn judge_pair<F, Fut>(
    ask: F,
    rubric: &Rubric,
    task: &str,
    question: &str,
    reference: &str,
    (arm, arm_answer): (&'static str, &str),
    (against, against_answer): (&'static str, &str),
) -> Result<Judged, String>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let first = ask(rubric.prompt(question, reference, arm_answer, against_answer)).await?;
    let second = ask(rubric.prompt(question, reference, against_answer, arm_answer)).await?;
    let (arm_first, arm_second) = (parse_verdict(&first), parse_verdict(&second));
    let (outcome, flipped) = combine(arm_first, arm_second);
    Ok(Judged {
        task: task.to_owned(),
        arm,
        against,
        arm_first,
        arm_second,
        outcome,
        flipped,
        replies: [first, second],
    })
}

/// The judged questions of one arm against another.
#[derive(Debug, Clone, Serialize)]
pub struct JudgedSummary {
    pub arm: &'static str,
    pub against: &'static str,
    pub pairs: usize,
    pub wins: usize,
    pub losses: usize,
    pub ties: usize,
    /// Pairs where either order gave no readable verdict (counted as ties).
    pub unreadable: usize,
    /// Of the pairs with two verdicts, the share whose verdict changed with the order.
    pub flip_rate: f64,
    /// Mean of win = +1, tie = 0, loss = −1 with its 95% bootstrap interval.
    pub score: f64,
    pub low: f64,
    pub high: f64,
    pub verdict: &'static str,
}

/// Summarises the judgements of `arm` against `against`.
pub fn summarise(judged: &[Judged], arm: &'static str, against: &'static str, seed: u64) -> JudgedSummary {
    let mine: Vec<&Judged> = judged.iter().filter(|j| j.arm == arm && j.against == against).collect();
    let count = |o: PairOutcome| mine.iter().filter(|j| j.outcome == o).count();
    let unreadable = mine.iter().filter(|j| j.arm_first.is_none() || j.arm_second.is_none()).count();
    let read = mine.len() - unreadable;
    let flips = mine.iter().filter(|j| j.flipped).count();
    let scores: Vec<f64> = mine.iter().map(|j| j.outcome.score()).collect();
    let interval: Difference = bootstrap_mean(&scores, 2000, seed);
    JudgedSummary {
        arm,
        against,
        pairs: mine.len(),
        wins: count(PairOutcome::Win),
        losses: count(PairOutcome::Loss),
        ties: count(PairOutcome::Tie),
        unreadable,
        flip_rate: if read == 0 { 0.0 } else { flips as f64 / read as f64 },
        score: interval.mean,
        low: interval.low,
        high: interval.high,
        verdict: interval.verdict(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_from_the_last_verdict_or_the_first_word() {
        assert_eq!(parse_verdict("Verdict: A"), Some(Verdict::A));
        assert_eq!(parse_verdict("B is closer.\nVerdict: b"), Some(Verdict::B));
        assert_eq!(parse_verdict("verdict - TIE"), Some(Verdict::Tie));
        assert_eq!(parse_verdict("A. It matches the reference."), Some(Verdict::A));
        assert_eq!(parse_verdict("Answer B is better"), Some(Verdict::B));
        assert_eq!(parse_verdict("The verdict: A, not B"), Some(Verdict::A));
        assert_eq!(parse_verdict("Both answers are fine."), None);
        assert_eq!(parse_verdict(""), None);
    }

    #[test]
    fn a_pair_wins_only_when_both_orders_agree() {
        use PairOutcome::*;
        // Arm first: A is the arm; arm second: B is the arm.
        assert_eq!(combine(Some(Verdict::A), Some(Verdict::B)), (Win, false));
        assert_eq!(combine(Some(Verdict::B), Some(Verdict::A)), (Loss, false));
        assert_eq!(combine(Some(Verdict::A), Some(Verdict::A)), (Tie, true), "position bias: a tie");
        assert_eq!(combine(Some(Verdict::Tie), Some(Verdict::Tie)), (Tie, false));
        assert_eq!(combine(Some(Verdict::A), Some(Verdict::Tie)), (Tie, true));
        assert_eq!(combine(None, Some(Verdict::B)), (Tie, false));
    }

    #[test]
    fn the_rubric_fills_each_placeholder_once() {
        let rubric = Rubric::default();
        let prompt = rubric.prompt("Q?", "ref", "says {answer_b}", "second");
        assert!(prompt.contains("Q?") && prompt.contains("ref") && prompt.contains("second"));
        assert!(prompt.contains("says {answer_b}"), "an answer's own braces stay as written");
        assert!(!prompt.contains("{question}"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rubric.md");
        std::fs::write(&path, "Q {question} R {reference} A {answer_a}").unwrap();
        let err = Rubric::read(&path).unwrap_err().to_string();
        assert!(err.contains("{answer_b}"), "{err}");
        std::fs::write(&path, "{question}{reference}{answer_a}|{answer_b}").unwrap();
        assert_eq!(Rubric::read(&path).unwrap().prompt("q", "r", "a", "b"), "qra|b");
    }

    #[test]
    fn the_protocol_asks_both_orders_and_summarises() {
        // A judge that always prefers the answer shown first: every pair flips to a tie.
        let biased = |prompt: String| async move {
            let _ = prompt;
            Ok::<_, String>("Verdict: A".to_owned())
        };
        // A judge that prefers the answer holding "right".
        let fair = |prompt: String| async move {
            let a = prompt.find("Answer A:").unwrap_or(0);
            let b = prompt.find("Answer B:").unwrap_or(0);
            let right = prompt.rfind("right").unwrap_or(0);
            Ok::<_, String>(if (right > a) == (right > b) { "Verdict: B" } else { "Verdict: A" }.to_owned())
        };
        let rubric = Rubric::default();
        let run = |answer: &'static str, judge: bool| {
            let rubric = rubric.clone();
            async move {
                let arm = ("rag", answer);
                let against = ("base", "wrong");
                if judge {
                    judge_pair(fair, &rubric, "q1", "Q", "R", arm, against).await
                } else {
                    judge_pair(biased, &rubric, "q1", "Q", "R", arm, against).await
                }
            }
        };
        let block = |f| block_on_ready(f);
        let fair_win = block(run("right", true)).unwrap();
        assert_eq!((fair_win.outcome, fair_win.flipped), (PairOutcome::Win, false));
        let biased_pair = block(run("right", false)).unwrap();
        assert_eq!((biased_pair.outcome, biased_pair.flipped), (PairOutcome::Tie, true));
        let judged = vec![fair_win.clone(), fair_win, biased_pair];
        let s = summarise(&judged, "rag", "base", 1);
        assert_eq!((s.pairs, s.wins, s.ties, s.losses, s.unreadable), (3, 2, 1, 0, 0));
        assert!((s.flip_rate - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.score - 2.0 / 3.0).abs() < 1e-12);
    }

    /// Runs a future that never waits (the judges above answer at once).
    fn block_on_ready<F: Future>(future: F) -> F::Output {
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        let mut future = std::pin::pin!(future);
        loop {
            if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut context) {
                return out;
            }
        }
    }
}
