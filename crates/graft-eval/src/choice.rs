//! Which arm to serve, read from a report's comparisons: of the arms that no other arm beats,
//! the cheapest to serve. The order of cost is fixed by what each arm does at serving time:
//! the base; the adapter (merged ahead of serving, it costs a request nothing); retrieval
//! (every prompt lengthened by the retrieved code); the adapter with retrieval.
//!
//! An arm beats another when some measure of its answers (exact match, edit similarity,
//! identifier match or F1) or the judge calls it better and no measure calls it worse (the
//! 95% intervals of [`crate::report`]). The reference's likelihood can make an arm worse but
//! never, alone, better: it moves before the answers do, and an arm that costs more to serve
//! should earn it in what the user gets; where it alone separates two arms, the reasons say
//! so. Arms that nothing separates, or that win on some measures and lose on others, are
//! level, and of level arms the cheaper is chosen. It owns that reading alone: it runs and
//! measures nothing, and the controls (oracle, random) are not candidates.

use serde::Serialize;

use crate::arms::Arm;
use crate::judge::JudgedSummary;
use crate::report::{Comparison, LIKELIHOOD};

/// What a report says to serve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// The arm to serve.
    pub arm: &'static str,
    /// Whether it runs on the adapter (a project's `adapter`) ...
    pub adapter: bool,
    /// ... and retrieves code (a project's `retrieval`).
    pub retrieval: bool,
    /// Why, a line per serving arm: what the chosen arm beat, what beat each other one, and
    /// which were level with it.
    pub reasons: Vec<String>,
    /// Dearer arms that nothing beats either: level with the chosen one, better on some
    /// measures and worse on others, or not compared with it (more tasks might tell).
    pub level: Vec<&'static str>,
}

/// How `arm` fared against `other`, over every measure the comparisons and judgements hold.
#[derive(Debug, Clone, PartialEq)]
enum Against {
    /// Better on these measures (one of them of the answers), worse on none.
    Beats(Vec<&'static str>),
    /// Worse on these measures (one of them of the answers), better on none.
    Loses(Vec<&'static str>),
    /// Better on the first, worse on the second.
    Mixed(Vec<&'static str>, Vec<&'static str>),
    /// The reference's likelihood alone separates them: `true` when it favours the arm.
    Likelier(bool),
    /// No measure separates them.
    Level,
    /// No comparison holds the two.
    Unmeasured,
}

/// The choice among the serving arms of `arms` (at least two must have run), from the
/// comparisons and judged questions of their report; `p50` gives an arm's median latency in
/// milliseconds, where known, for the reasons to say what a dearer arm costs.
pub fn choose(arms: &[Arm], comparisons: &[Comparison], judged: &[JudgedSummary], p50: &dyn Fn(Arm) -> Option<f64>) -> Option<Choice> {
    let mut serving: Vec<Arm> = arms.iter().copied().filter(|a| cost(*a).is_some()).collect();
    serving.sort_by_key(|a| cost(*a));
    serving.dedup();
    if serving.len() < 2 {
        return None;
    }
    let beaten_by = |arm: Arm| -> Vec<(Arm, Vec<&'static str>)> {
        serving
            .iter()
            .filter_map(|&other| match against(other, arm, comparisons, judged) {
                Against::Beats(measures) => Some((other, measures)),
                _ => None,
            })
            .collect()
    };
    let beaten: Vec<Vec<(Arm, Vec<&'static str>)>> = serving.iter().map(|&a| beaten_by(a)).collect();
    // The unbeaten; where every arm is beaten (a cycle, which the intervals allow), those
    // beaten by the fewest.
    let fewest = beaten.iter().map(Vec::len).min()?;
    let candidates: Vec<Arm> = serving
        .iter()
        .zip(&beaten)
        .filter(|(_, by)| by.len() == fewest)
        .map(|(&arm, _)| arm)
        .collect();
    let chosen = *candidates.first()?;

    let mut reasons = Vec::new();
    let mut level = Vec::new();
    for (&other, beaters) in serving.iter().zip(&beaten) {
        if other == chosen {
            continue;
        }
        let line = match against(chosen, other, comparisons, judged) {
            Against::Beats(measures) => format!("better than {} on {}", other.name(), words(&measures)),
            Against::Loses(measures) => format!("worse than {} on {}", other.name(), words(&measures)),
            Against::Mixed(better, worse) => format!("against {}: better on {}, worse on {}", other.name(), words(&better), words(&worse)),
            Against::Likelier(true) => format!(
                "level with {} on the answers; the reference's likelihood favours {}",
                other.name(),
                chosen.name()
            ),
            Against::Likelier(false) => format!(
                "level with {} on the answers{}; the reference's likelihood favours it (more tasks might show that in the answers)",
                other.name(),
                if cost(other) > cost(chosen) {
                    ", which its extra cost must earn"
                } else {
                    ""
                }
            ),
            Against::Level => format!("level with {} (no measure separates them)", other.name()),
            Against::Unmeasured => format!("not compared with {}", other.name()),
        };
        let line = match (p50(chosen), p50(other)) {
            (Some(mine), Some(theirs)) if cost(other) > cost(chosen) => {
                format!(
                    "{line}; {} costs {:+.2} s a completion (p50)",
                    other.name(),
                    (theirs - mine) / 1000.0
                )
            }
            _ => line,
        };
        let line = match beaters.first() {
            Some((winner, measures)) if *winner != chosen => {
                format!("{line}; {} is beaten by {} on {}", other.name(), winner.name(), words(measures))
            }
            _ => line,
        };
        if candidates.contains(&other) {
            level.push(other.name());
        }
        reasons.push(line);
    }
    Some(Choice {
        arm: chosen.name(),
        adapter: chosen.on_adapter(),
        retrieval: chosen.retrieves(),
        reasons,
        level,
    })
}

/// The serving arms' order of cost; `None` for the controls.
fn cost(arm: Arm) -> Option<u8> {
    match arm {
        Arm::Base => Some(0),
        Arm::Adapter => Some(1),
        Arm::Rag => Some(2),
        Arm::AdapterRag => Some(3),
        Arm::Oracle | Arm::Random => None,
    }
}

/// `arm` against `other`: the measures each is better on, read from whichever of the two
/// was compared against the other.
fn against(arm: Arm, other: Arm, comparisons: &[Comparison], judged: &[JudgedSummary]) -> Against {
    let mut better = Vec::new();
    let mut worse = Vec::new();
    let mut measured = false;
    let mut read = |verdict: &str, measure: &'static str, flipped: bool| {
        measured = true;
        match (verdict, flipped) {
            ("better", false) | ("worse", true) => better.push(measure),
            ("worse", false) | ("better", true) => worse.push(measure),
            _ => {}
        }
    };
    for c in comparisons {
        let flipped = match (
            c.arm == arm.name(),
            c.against == other.name(),
            c.arm == other.name(),
            c.against == arm.name(),
        ) {
            (true, true, _, _) => false,
            (_, _, true, true) => true,
            _ => continue,
        };
        for (measure, interval) in &c.metrics {
            read(interval.verdict, measure, flipped);
        }
    }
    for j in judged {
        if j.arm == arm.name() && j.against == other.name() {
            read(j.verdict, "judge", false);
        } else if j.arm == other.name() && j.against == arm.name() {
            read(j.verdict, "judge", true);
        }
    }
    let of_answers = |measures: &[&str]| measures.iter().any(|m| *m != LIKELIHOOD);
    match (measured, better.is_empty(), worse.is_empty()) {
        (false, _, _) => Against::Unmeasured,
        (true, true, true) => Against::Level,
        (true, false, false) => Against::Mixed(better, worse),
        (true, false, true) if of_answers(&better) => Against::Beats(better),
        (true, true, false) if of_answers(&worse) => Against::Loses(worse),
        (true, false, true) => Against::Likelier(true),
        (true, true, false) => Against::Likelier(false),
    }
}

/// The measures in words, as the README's tables name them.
fn words(measures: &[&str]) -> String {
    measures
        .iter()
        .map(|m| match *m {
            "exact_match" => "exact match",
            "edit_similarity" => "edit similarity",
            "identifier_match" => "identifier EM",
            "identifier_f1" => "identifier F1",
            LIKELIHOOD => "the reference's likelihood",
            "judge" => "the judge's verdicts",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::Interval;

    /// A comparison of `arm` against `against` with these verdicts, by measure.
    fn compared(arm: Arm, against: Arm, verdicts: &[(&'static str, &'static str)]) -> Comparison {
        let metrics: BTreeMap<&'static str, Interval> = verdicts
            .iter()
            .map(|&(measure, verdict)| {
                let (low, high) = match verdict {
                    "better" => (0.01, 0.1),
                    "worse" => (-0.1, -0.01),
                    _ => (-0.05, 0.05),
                };
                (
                    measure,
                    Interval {
                        difference: (low + high) / 2.0,
                        low,
                        high,
                        verdict,
                    },
                )
            })
            .collect();
        Comparison {
            arm: arm.name(),
            against: against.name(),
            metrics,
            cross_file: BTreeMap::new(),
        }
    }

    const LEVEL: &str = "no clear difference";
    const ALL4: [Arm; 4] = [Arm::Base, Arm::Adapter, Arm::Rag, Arm::AdapterRag];

    #[test]
    fn the_adapter_alone_is_served_when_retrieval_on_top_of_it_costs_matches() {
        // tokio's run (README): the adapter beats the base; retrieval helps only the
        // likelihood; on top of the adapter it loses identifier matches.
        let comparisons = [
            compared(Arm::Adapter, Arm::Base, &[("edit_similarity", "better"), ("exact_match", LEVEL)]),
            compared(Arm::Rag, Arm::Base, &[(LIKELIHOOD, "better"), ("exact_match", LEVEL)]),
            compared(Arm::AdapterRag, Arm::Base, &[("edit_similarity", "better")]),
            compared(Arm::AdapterRag, Arm::Adapter, &[("identifier_match", "worse"), (LIKELIHOOD, LEVEL)]),
            compared(Arm::AdapterRag, Arm::Rag, &[("edit_similarity", "better")]),
            compared(Arm::Adapter, Arm::Rag, &[("edit_similarity", "better"), (LIKELIHOOD, "better")]),
        ];
        let choice = choose(&ALL4, &comparisons, &[], &|_| None).unwrap();
        assert_eq!((choice.arm, choice.adapter, choice.retrieval), ("adapter", true, false));
        assert!(choice.level.is_empty(), "{choice:?}");
        assert_eq!(choice.reasons.len(), 3, "{choice:?}");
        assert!(choice.reasons[0].starts_with("better than base on edit similarity"), "{choice:?}");
        assert!(
            choice.reasons[2].starts_with("better than adapter+rag on identifier EM"),
            "{choice:?}"
        );
    }

    #[test]
    fn the_reasons_say_what_a_dearer_arm_costs_a_completion() {
        let comparisons = [compared(Arm::Rag, Arm::Base, &[("exact_match", LEVEL)])];
        let p50 = |arm: Arm| match arm {
            Arm::Base => Some(640.0),
            Arm::Rag => Some(1500.0),
            _ => None,
        };
        let choice = choose(&[Arm::Base, Arm::Rag], &comparisons, &[], &p50).unwrap();
        assert_eq!(
            choice.reasons,
            ["level with rag (no measure separates them); rag costs +0.86 s a completion (p50)"]
        );
    }

    #[test]
    fn of_level_arms_the_cheaper_is_served_and_the_dearer_named() {
        // networkx's run: the adapter and the adapter with retrieval each beat the base, and
        // nothing separates the two.
        let comparisons = [
            compared(Arm::Adapter, Arm::Base, &[("edit_similarity", "better")]),
            compared(Arm::AdapterRag, Arm::Base, &[("exact_match", "better")]),
            compared(Arm::AdapterRag, Arm::Adapter, &[("exact_match", LEVEL)]),
        ];
        let arms = [Arm::Base, Arm::Adapter, Arm::AdapterRag];
        let choice = choose(&arms, &comparisons, &[], &|_| None).unwrap();
        assert_eq!(choice.arm, "adapter");
        assert_eq!(choice.level, ["adapter+rag"]);
        assert!(choice.reasons[1].contains("level with adapter+rag"), "{choice:?}");
        // Once more tasks separate them, retrieval on the adapter is served.
        let comparisons = [
            compared(Arm::Adapter, Arm::Base, &[("edit_similarity", "better")]),
            compared(Arm::AdapterRag, Arm::Base, &[("exact_match", "better")]),
            compared(Arm::AdapterRag, Arm::Adapter, &[("exact_match", "better"), (LIKELIHOOD, LEVEL)]),
        ];
        let choice = choose(&arms, &comparisons, &[], &|_| None).unwrap();
        assert_eq!((choice.arm, choice.adapter, choice.retrieval), ("adapter+rag", true, true));
        assert!(choice.level.is_empty(), "{choice:?}");
    }

    #[test]
    fn the_likelihood_alone_does_not_pay_for_a_dearer_arm() {
        // networkx's run of 250 tasks: retrieval on the adapter made the reference likelier,
        // and no measure of the answers moved.
        let comparisons = [compared(
            Arm::AdapterRag,
            Arm::Adapter,
            &[("exact_match", LEVEL), ("edit_similarity", LEVEL), (LIKELIHOOD, "better")],
        )];
        let choice = choose(&[Arm::Adapter, Arm::AdapterRag], &comparisons, &[], &|_| None).unwrap();
        assert_eq!((choice.arm, choice.retrieval), ("adapter", false));
        assert_eq!(choice.level, ["adapter+rag"]);
        assert!(
            choice.reasons[0].starts_with("level with adapter+rag on the answers")
                && choice.reasons[0].contains("the reference's likelihood favours it"),
            "{choice:?}"
        );
        // It still makes an arm worse: a dearer arm that lowers it is not level.
        let comparisons = [compared(
            Arm::AdapterRag,
            Arm::Adapter,
            &[("edit_similarity", "better"), (LIKELIHOOD, "worse")],
        )];
        let choice = choose(&[Arm::Adapter, Arm::AdapterRag], &comparisons, &[], &|_| None).unwrap();
        assert_eq!(choice.arm, "adapter");
        assert!(
            choice.reasons[0].contains("better on the reference's likelihood, worse on edit similarity"),
            "{choice:?}"
        );
    }

    #[test]
    fn a_cheaper_arm_that_the_likelihood_favours_is_not_said_to_cost_more() {
        // The base makes the reference likelier than the adapter does, with the answers level,
        // and retrieval beats the base: the adapter is served, and the base is not described
        // as the dearer arm.
        let comparisons = [
            compared(Arm::Adapter, Arm::Base, &[("exact_match", LEVEL), (LIKELIHOOD, "worse")]),
            compared(Arm::Rag, Arm::Base, &[("edit_similarity", "better")]),
            compared(Arm::Adapter, Arm::Rag, &[("edit_similarity", LEVEL)]),
        ];
        let choice = choose(&[Arm::Base, Arm::Adapter, Arm::Rag], &comparisons, &[], &|_| None).unwrap();
        assert_eq!(choice.arm, "adapter");
        assert_eq!(
            choice.reasons[0],
            "level with base on the answers; the reference's likelihood favours it (more tasks might show that in the answers); base is beaten by rag on edit similarity"
        );
    }

    #[test]
    fn an_arm_that_wins_on_one_measure_and_loses_on_another_does_not_beat_the_base() {
        let comparisons = [compared(
            Arm::Rag,
            Arm::Base,
            &[("exact_match", "better"), ("edit_similarity", "worse")],
        )];
        let choice = choose(&[Arm::Base, Arm::Rag], &comparisons, &[], &|_| None).unwrap();
        assert_eq!(choice.arm, "base");
        assert_eq!(choice.level, ["rag"]);
        assert!(
            choice.reasons[0].contains("better on edit similarity, worse on exact match"),
            "{choice:?}"
        );
    }

    #[test]
    fn the_judge_counts_as_a_measure_and_the_controls_are_never_chosen() {
        let judged = JudgedSummary {
            arm: "rag",
            against: "base",
            pairs: 20,
            wins: 12,
            losses: 2,
            ties: 6,
            unreadable: 0,
            flip_rate: 0.1,
            score: 0.5,
            low: 0.2,
            high: 0.8,
            verdict: "better",
        };
        let comparisons = [
            compared(Arm::Rag, Arm::Base, &[("exact_match", LEVEL)]),
            compared(Arm::Oracle, Arm::Base, &[("exact_match", "better")]),
        ];
        let choice = choose(&[Arm::Base, Arm::Rag, Arm::Oracle], &comparisons, &[judged], &|_| None).unwrap();
        assert_eq!((choice.arm, choice.retrieval), ("rag", true));
        assert_eq!(choice.reasons, ["better than base on the judge's verdicts"]);
        // One serving arm alone: nothing to choose between.
        assert_eq!(choose(&[Arm::Base, Arm::Oracle], &comparisons, &[], &|_| None), None);
    }
}
