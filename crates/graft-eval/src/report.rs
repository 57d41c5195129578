//! What an evaluation run found: each task's answer per arm with its scores, the means per
//! arm (all tasks, by kind, cross-file alone) with their intervals, each arm against the
//! first with a paired bootstrap interval (an arm "better" or "worse" only when its interval
//! excludes zero), the judged questions, and notes where the intervals are too wide to tell
//! the arms apart. When the run scored the reference answers' likelihood ([`LIKELIHOOD`]),
//! it is one more measure beside the four, over the tasks that have it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::arms::{one_line, Arm};
use crate::choice::{self, Choice};
use crate::golden::Task;
use crate::judge::{summarise, Judged, JudgedSummary};
use crate::metrics::{bootstrap_mean, first_line, paired_bootstrap, score, Difference, Scores};

/// One task answered in one arm.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub task: String,
    pub kind: &'static str,
    pub cross_file: bool,
    pub arm: &'static str,
    /// The answer as scored (its first line for one-line tasks).
    pub answer: String,
    pub exact_match: f64,
    pub edit_similarity: f64,
    pub identifier_match: f64,
    pub identifier_f1: f64,
    pub latency_ms: f64,
    /// The mean log-probability per token (natural log) the model gave the reference answer
    /// after the arm's prompt, when the run scored it (`graft eval run --likelihood`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_logprob: Option<f64>,
    /// The retrieved files the answer's prompt held.
    pub sources: Vec<String>,
    /// Why the task has no answer (it then scores 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    /// Scores `answer` (or an error) for `task` in `arm`.
    pub fn new(task: &Task, arm: Arm, answer: Result<String, String>, latency_ms: f64, sources: Vec<String>) -> Outcome {
        let target = task.target.as_deref().unwrap_or_default();
        let (answer, scores, error) = match answer {
            Ok(text) => {
                let text = if one_line(task) { first_line(&text).to_owned() } else { text };
                let scores = score(&text, target);
                (text, scores, None)
            }
            Err(e) => (String::new(), Scores::default(), Some(e)),
        };
        Outcome {
            task: task.id.clone(),
            kind: task.kind.as_str(),
            cross_file: task.cross_file(),
            arm: arm.name(),
            answer,
            exact_match: scores.exact_match,
            edit_similarity: scores.edit_similarity,
            identifier_match: scores.identifier_match,
            identifier_f1: scores.identifier_f1,
            latency_ms,
            reference_logprob: None,
            sources,
            error,
        }
    }
}

/// A question answered in one arm (judged, not scored).
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub task: String,
    pub arm: &'static str,
    pub answer: String,
    pub latency_ms: f64,
    pub sources: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    pub fn new(task: &Task, arm: Arm, answer: Result<String, String>, latency_ms: f64, sources: Vec<String>) -> Answer {
        let (answer, error) = match answer {
            Ok(text) => (text, None),
            Err(e) => (String::new(), Some(e)),
        };
        Answer {
            task: task.id.clone(),
            arm: arm.name(),
            answer,
            latency_ms,
            sources,
            error,
        }
    }
}

/// The four measures, in report order.
pub const METRICS: [&str; 4] = ["exact_match", "edit_similarity", "identifier_match", "identifier_f1"];

/// The reference answer's likelihood: a measure of the tasks whose outcomes have
/// [`Outcome::reference_logprob`], in the arms' intervals and the comparisons when the run
/// scored it. Unlike the four it does not depend on what the model wrote, so a small golden
/// set separates arms by it where exact match cannot.
pub const LIKELIHOOD: &str = "reference_logprob";

pub fn metric(o: &Outcome, name: &str) -> f64 {
    match name {
        "exact_match" => o.exact_match,
        "edit_similarity" => o.edit_similarity,
        "identifier_match" => o.identifier_match,
        _ => o.identifier_f1,
    }
}

/// One of the four measures, or the likelihood ([`LIKELIHOOD`]) when the outcome has it.
fn measure(o: &Outcome, name: &str) -> Option<f64> {
    match name {
        LIKELIHOOD => o.reference_logprob,
        _ => Some(metric(o, name)),
    }
}

/// Means of the four measures over some tasks.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Means {
    pub tasks: usize,
    pub exact_match: f64,
    pub edit_similarity: f64,
    pub identifier_match: f64,
    pub identifier_f1: f64,
}

fn means<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> Means {
    let list: Vec<&Outcome> = outcomes.collect();
    let n = list.len().max(1) as f64;
    // (An empty sum of floats is -0.0.)
    let mean = |name: &str| list.iter().map(|o| metric(o, name)).fold(0.0, |a, b| a + b) / n;
    Means {
        tasks: list.len(),
        exact_match: mean("exact_match"),
        edit_similarity: mean("edit_similarity"),
        identifier_match: mean("identifier_match"),
        identifier_f1: mean("identifier_f1"),
    }
}

/// One arm's results.
#[derive(Debug, Clone, Serialize)]
pub struct ArmSummary {
    pub arm: &'static str,
    pub all: Means,
    /// Each measure's mean over all tasks with its 95% bootstrap interval.
    pub intervals: BTreeMap<&'static str, Interval>,
    pub cross_file: Means,
    pub by_kind: BTreeMap<&'static str, Means>,
    pub latency_ms_p50: f64,
    pub errors: usize,
}

/// An arm against `base`, per measure.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub arm: &'static str,
    pub against: &'static str,
    pub metrics: BTreeMap<&'static str, Interval>,
    /// The same over the cross-file tasks alone (where retrieval has something to find).
    pub cross_file: BTreeMap<&'static str, Interval>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    pub difference: f64,
    pub low: f64,
    pub high: f64,
    pub verdict: &'static str,
}

impl From<Difference> for Interval {
    fn from(d: Difference) -> Interval {
        Interval {
            difference: d.mean,
            low: d.low,
            high: d.high,
            verdict: d.verdict(),
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was run: the golden set, the model, the endpoint, the judge (set by the caller).
    pub about: BTreeMap<&'static str, String>,
    pub arms: Vec<ArmSummary>,
    pub comparisons: Vec<Comparison>,
    /// Judged questions, each arm against the first.
    pub judged: Vec<JudgedSummary>,
    /// Where the intervals cannot tell the arms apart, and how many tasks might.
    pub notes: Vec<String>,
    /// Which arm to serve, when two or more of base, rag, adapter and adapter+rag ran.
    pub serve: Option<Choice>,
    /// Retrieved sources that were held-out files (must be 0).
    pub held_out_retrieved: usize,
    pub outcomes: Vec<Outcome>,
    /// Each question's answer per arm.
    pub answers: Vec<Answer>,
    /// Each question's judgement per pair of arms.
    pub judgements: Vec<Judged>,
}

/// What a run produced, to be reported.
#[derive(Debug, Default)]
pub struct Results {
    pub outcomes: Vec<Outcome>,
    pub answers: Vec<Answer>,
    pub judgements: Vec<Judged>,
    /// Retrieved sources that were held-out files.
    pub held_out_retrieved: usize,
}

/// The report of `results` over `arms` (compared as [`pairs`] says: each with the first, and
/// `adapter+rag` with its parts).
pub fn report(arms: &[Arm], results: Results, seed: u64) -> Report {
    let Results {
        outcomes,
        answers,
        judgements,
        held_out_retrieved,
    } = results;
    let summaries: Vec<ArmSummary> = arms
        .iter()
        .map(|arm| {
            let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.arm == arm.name()).collect();
            let mut by_kind = BTreeMap::new();
            for kind in ["line", "api", "span"] {
                let of_kind: Vec<&Outcome> = mine.iter().copied().filter(|o| o.kind == kind).collect();
                if !of_kind.is_empty() {
                    by_kind.insert(kind, means(of_kind.into_iter()));
                }
            }
            let mut latencies: Vec<f64> = mine.iter().map(|o| o.latency_ms).collect();
            latencies.sort_by(f64::total_cmp);
            let mut intervals: BTreeMap<&'static str, Interval> = METRICS
                .iter()
                .map(|name| {
                    let values: Vec<f64> = mine.iter().map(|o| metric(o, name)).collect();
                    (*name, bootstrap_mean(&values, 2000, seed).into())
                })
                .collect();
            let likelihoods: Vec<f64> = mine.iter().filter_map(|o| o.reference_logprob).collect();
            if !likelihoods.is_empty() {
                intervals.insert(LIKELIHOOD, bootstrap_mean(&likelihoods, 2000, seed).into());
            }
            ArmSummary {
                arm: arm.name(),
                all: means(mine.iter().copied()),
                intervals,
                cross_file: means(mine.iter().copied().filter(|o| o.cross_file)),
                by_kind,
                latency_ms_p50: latencies.get(latencies.len() / 2).copied().unwrap_or(0.0),
                errors: mine.iter().filter(|o| o.error.is_some()).count(),
            }
        })
        .collect();
    let mut comparisons = Vec::new();
    for (arm, against) in pairs(arms) {
        // A measure paired over the tasks both arms have it for (the likelihood may be
        // missing; the four never are).
        let paired = |name: &str, cross_file_only: bool| -> (Vec<f64>, Vec<f64>) {
            let theirs: BTreeMap<&str, f64> = outcomes
                .iter()
                .filter(|o| o.arm == against.name())
                .filter_map(|o| Some((o.task.as_str(), measure(o, name)?)))
                .collect();
            outcomes
                .iter()
                .filter(|o| o.arm == arm.name() && (o.cross_file || !cross_file_only))
                .filter_map(|o| Some((*theirs.get(o.task.as_str())?, measure(o, name)?)))
                .unzip()
        };
        let intervals = |cross_file_only: bool| paired_intervals(|name| paired(name, cross_file_only), seed);
        let metrics = intervals(false);
        if metrics.is_empty() {
            continue;
        }
        comparisons.push(Comparison {
            arm: arm.name(),
            against: against.name(),
            metrics,
            cross_file: intervals(true),
        });
    }
    let judged: Vec<JudgedSummary> = match arms.split_first() {
        Some((first, rest)) => rest
            .iter()
            .map(|arm| summarise(&judgements, arm.name(), first.name(), seed))
            .filter(|s| s.pairs > 0)
            .collect(),
        None => Vec::new(),
    };
    let notes = notes(
        &comparisons,
        &judged,
        outcomes.iter().filter(|o| Some(o.arm) == arms.first().map(|a| a.name())).count(),
    );
    let p50 = |arm: Arm| {
        summaries
            .iter()
            .find(|s| s.arm == arm.name() && s.all.tasks > 0)
            .map(|s| s.latency_ms_p50)
    };
    let serve = choice::choose(arms, &comparisons, &judged, &p50);
    Report {
        about: BTreeMap::new(),
        arms: summaries,
        comparisons,
        judged,
        notes,
        serve,
        held_out_retrieved,
        outcomes,
        answers,
        judgements,
    }
}

/// Each measure (the four, then the likelihood) that `paired` gives values for, as (against,
/// arm) over the same tasks: the paired bootstrap interval of arm − against.
pub(crate) fn paired_intervals(paired: impl Fn(&str) -> (Vec<f64>, Vec<f64>), seed: u64) -> BTreeMap<&'static str, Interval> {
    METRICS
        .iter()
        .chain([&LIKELIHOOD])
        .filter_map(|name| {
            let (against, arm) = paired(name);
            (!arm.is_empty()).then(|| (*name, paired_bootstrap(&against, &arm, 2000, seed).into()))
        })
        .collect()
}

/// The comparisons a run reports, as (arm, against): each arm against the first;
/// `adapter+rag` against each of its parts that ran (unless it is the first): what retrieval
/// adds to the adapter, and what the adapter adds to retrieval; and `adapter` against `rag`
/// when both ran and neither is the first (the two ways to teach the model a repository).
/// With base first, every two of the serving arms are compared, as [`choice`] needs.
fn pairs(arms: &[Arm]) -> Vec<(Arm, Arm)> {
    let Some((&first, rest)) = arms.split_first() else {
        return Vec::new();
    };
    let mut pairs: Vec<(Arm, Arm)> = rest.iter().map(|&arm| (arm, first)).collect();
    if arms.contains(&Arm::AdapterRag) {
        for part in [Arm::Adapter, Arm::Rag] {
            if part != first && arms.contains(&part) {
                pairs.push((Arm::AdapterRag, part));
            }
        }
    }
    if arms.contains(&Arm::Adapter) && arms.contains(&Arm::Rag) && ![Arm::Adapter, Arm::Rag].contains(&first) {
        pairs.push((Arm::Adapter, Arm::Rag));
    }
    pairs
}

/// A note for each comparison that no measure separates: how wide its interval is, and
/// about how many tasks would tell apart a difference as large as the one seen (the
/// interval narrows as one over the square root of the number of tasks).
fn notes(comparisons: &[Comparison], judged: &[JudgedSummary], tasks: usize) -> Vec<String> {
    let mut notes = Vec::new();
    for c in comparisons {
        if c.metrics.values().any(|i| i.verdict != "no clear difference") {
            continue;
        }
        let Some(em) = c.metrics.get("exact_match") else { continue };
        let half = (em.high - em.low) / 2.0;
        if half < 1e-9 && em.difference.abs() < 1e-9 {
            notes.push(format!(
                "{} − {}: no measure separates the arms; they matched exactly on the same tasks, all {tasks} of them",
                c.arm, c.against
            ));
            continue;
        }
        let seen = em.difference.abs();
        let more = if seen > 1e-9 {
            let needed = (tasks as f64 * (half / seen).powi(2)).ceil();
            format!(
                "a difference as large as the one seen ({:+.3}) would need about {needed:.0} tasks",
                em.difference
            )
        } else {
            "the arms scored alike".to_owned()
        };
        // Over all tasks none does; the cross-file tasks alone may still.
        let cross_file: Vec<String> = c
            .cross_file
            .iter()
            .filter(|(_, i)| i.verdict != "no clear difference")
            .map(|(name, i)| format!("{name} {} ({:+.3})", i.verdict, i.difference))
            .collect();
        let cross_file = match cross_file.is_empty() {
            true => String::new(),
            false => format!("; on the cross-file tasks alone: {}", cross_file.join(", ")),
        };
        notes.push(format!(
            "{} − {}: no measure separates the arms over all {tasks} tasks; exact match's interval is ±{half:.3} wide, so smaller differences cannot be seen ({more}){cross_file}",
            c.arm, c.against
        ));
    }
    for j in judged {
        if j.verdict == "no clear difference" {
            notes.push(format!(
                "judged {} vs {}: {} questions do not separate the arms (score {:+.3} in [{:+.3}, {:+.3}]; flip rate {:.2})",
                j.arm, j.against, j.pairs, j.score, j.low, j.high, j.flip_rate
            ));
        }
    }
    notes
}

impl Report {
    /// The measures this report has, in order: the four, then the likelihood when the run
    /// scored it.
    pub fn measures(&self) -> Vec<&'static str> {
        let mut measures = METRICS.to_vec();
        if self.arms.iter().any(|a| a.intervals.contains_key(LIKELIHOOD)) {
            measures.push(LIKELIHOOD);
        }
        measures
    }

    /// The table a person reads in the terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let likelihood = self.measures().contains(&LIKELIHOOD);
        let w = self.arms.iter().map(|a| a.arm.len()).max().unwrap_or(0).max(8);
        out.push_str(&format!(
            "{:<w$} {:>6} {:>8} {:>8} {:>8} {:>8}   {:>9} {:>8}{}\n",
            "arm",
            "tasks",
            "EM",
            "ES",
            "ID-EM",
            "ID-F1",
            "x-file EM",
            "p50 ms",
            if likelihood { "   logprob/token" } else { "" }
        ));
        for a in &self.arms {
            let cross_file = if a.cross_file.tasks == 0 {
                "-".to_owned()
            } else {
                format!("{:.3}", a.cross_file.exact_match)
            };
            let all = &a.all;
            let reference = match a.intervals.get(LIKELIHOOD) {
                Some(i) if likelihood => format!("   {:>13.3}", i.difference),
                _ if likelihood => format!("   {:>13}", "-"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "{:<w$} {:>6} {:>8.3} {:>8.3} {:>8.3} {:>8.3}   {:>9} {:>8.0}{reference}\n",
                a.arm,
                all.tasks,
                all.exact_match,
                all.edit_similarity,
                all.identifier_match,
                all.identifier_f1,
                cross_file,
                a.latency_ms_p50
            ));
        }
        for c in &self.comparisons {
            for (title, intervals) in [("", &c.metrics), (", cross-file tasks", &c.cross_file)] {
                if intervals.is_empty() {
                    continue;
                }
                out.push_str(&format!("\n{} − {}{title} (paired bootstrap, 95%):\n", c.arm, c.against));
                for name in self.measures() {
                    if let Some(i) = intervals.get(name) {
                        out.push_str(&format!(
                            "  {:<17} {:+.3}  [{:+.3}, {:+.3}]  {}\n",
                            name, i.difference, i.low, i.high, i.verdict
                        ));
                    }
                }
            }
        }
        for j in &self.judged {
            out.push_str(&format!(
                "\njudged {} vs {} ({} questions, both orders): {} wins, {} losses, {} ties ({} without a verdict); flip rate {:.2}\n  score {:+.3}  [{:+.3}, {:+.3}]  {}\n",
                j.arm, j.against, j.pairs, j.wins, j.losses, j.ties, j.unreadable, j.flip_rate, j.score, j.low, j.high, j.verdict
            ));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                out.push_str(&format!("note: {note}\n"));
            }
        }
        if let Some(serve) = &self.serve {
            out.push_str(&format!("\nto serve: {}\n", serve.arm));
            for reason in &serve.reasons {
                out.push_str(&format!("  {reason}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::TaskKind;

    fn task(id: &str, target: &str) -> Task {
        let mut task = Task::completion(TaskKind::Line, "a.rs", "", target, "");
        task.id = id.to_owned();
        task
    }

    #[test]
    fn arms_are_summarised_and_compared_task_by_task() {
        let tasks: Vec<Task> = (0..40).map(|i| task(&format!("t{i}"), &format!("let v{i} = f();"))).collect();
        let mut outcomes = Vec::new();
        for (i, t) in tasks.iter().enumerate() {
            let target = t.target.clone().unwrap();
            // base is right on a quarter of the tasks, rag on all of them.
            let base = if i % 4 == 0 { target.clone() } else { "nothing".into() };
            outcomes.push(Outcome::new(t, Arm::Base, Ok(format!("{base}\nmore lines")), 10.0, vec![]));
            outcomes.push(Outcome::new(t, Arm::Rag, Ok(target), 20.0, vec!["b.rs".into()]));
        }
        let r = report(
            &[Arm::Base, Arm::Rag],
            Results {
                outcomes,
                ..Results::default()
            },
            1,
        );
        assert_eq!(r.arms[0].all.tasks, 40);
        assert!((r.arms[0].all.exact_match - 0.25).abs() < 1e-12, "only the first line is scored");
        assert_eq!(r.arms[1].all.exact_match, 1.0);
        let em = &r.comparisons[0].metrics["exact_match"];
        assert!((em.difference - 0.75).abs() < 1e-12 && em.low > 0.0, "{em:?}");
        assert_eq!(em.verdict, "better");
        assert!(r.table().contains("rag − base"));
        let failed = Outcome::new(&tasks[0], Arm::Base, Err("timeout".into()), 0.0, vec![]);
        assert_eq!((failed.exact_match, failed.error.as_deref()), (0.0, Some("timeout")));
        assert!(r.notes.is_empty(), "rag is separated: {:?}", r.notes);
    }

    #[test]
    fn cross_file_tasks_are_compared_alone_too() {
        // 40 tasks, the even ones cross-file; rag is right on every cross-file task and wrong
        // on the rest, base the other way round.
        let mut outcomes = Vec::new();
        for i in 0..40 {
            let mut t = task(&format!("t{i}"), &format!("let v{i} = f();"));
            if i % 2 == 0 {
                t.defined_in = Some("b.rs".into());
            }
            let target = t.target.clone().unwrap();
            let (base, rag) = if i % 2 == 0 { ("x".into(), target) } else { (target, "x".into()) };
            outcomes.push(Outcome::new(&t, Arm::Base, Ok(base), 1.0, vec![]));
            outcomes.push(Outcome::new(&t, Arm::Rag, Ok(rag), 1.0, vec![]));
        }
        let results = Results {
            outcomes,
            ..Results::default()
        };
        let r = report(&[Arm::Base, Arm::Rag], results, 1);
        let all = &r.comparisons[0].metrics["exact_match"];
        let cross = &r.comparisons[0].cross_file["exact_match"];
        assert!(all.difference.abs() < 1e-12, "even overall: {all:?}");
        assert!((cross.difference - 1.0).abs() < 1e-12 && cross.verdict == "better", "{cross:?}");
        assert!(r.table().contains("rag − base, cross-file tasks"));
        // Level over all tasks, the note says so, and what the cross-file tasks alone separate.
        assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
        assert!(
            r.notes[0].contains("no measure separates the arms over all 40 tasks")
                && r.notes[0].contains("on the cross-file tasks alone: edit_similarity better")
                && r.notes[0].contains("exact_match better (+1.000)"),
            "{}",
            r.notes[0]
        );
    }

    #[test]
    fn the_report_says_when_its_intervals_cannot_separate_the_arms() {
        let tasks: Vec<Task> = (0..20).map(|i| task(&format!("t{i}"), &format!("let v{i} = f();"))).collect();
        let mut outcomes = Vec::new();
        for (i, t) in tasks.iter().enumerate() {
            let target = t.target.clone().unwrap();
            let hit = |yes: bool| if yes { target.clone() } else { "x".to_owned() };
            // oracle answers as base does; rag is right on one task more than base.
            outcomes.push(Outcome::new(t, Arm::Base, Ok(hit(i < 2)), 1.0, vec![]));
            outcomes.push(Outcome::new(t, Arm::Rag, Ok(hit(i < 3)), 1.0, vec![]));
            outcomes.push(Outcome::new(t, Arm::Oracle, Ok(hit(i < 2)), 1.0, vec![]));
        }
        let results = Results {
            outcomes,
            ..Results::default()
        };
        let r = report(&[Arm::Base, Arm::Rag, Arm::Oracle], results, 1);
        assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
        assert!(
            r.notes[0].starts_with("rag − base") && r.notes[0].contains("would need about"),
            "{}",
            r.notes[0]
        );
        assert!(
            r.notes[1].contains("matched exactly") && r.notes[1].contains("20"),
            "{}",
            r.notes[1]
        );
        assert!(r.table().contains("note: rag − base"));
    }

    #[test]
    fn the_reference_likelihood_separates_arms_that_answer_alike() {
        // Both arms answer every task alike (wrong), but the adapter finds each reference
        // likelier by 0.2 to 0.4 nats a token; a task the adapter has no likelihood for is
        // left out of the pairs, and the base's summary counts only its own values.
        let tasks: Vec<Task> = (0..20).map(|i| task(&format!("t{i}"), &format!("let v{i} = f();"))).collect();
        let mut outcomes = Vec::new();
        for (i, t) in tasks.iter().enumerate() {
            let base = -2.0 - (i % 5) as f64 * 0.1;
            let mut mine = Outcome::new(t, Arm::Base, Ok("x".into()), 1.0, vec![]);
            mine.reference_logprob = Some(base);
            outcomes.push(mine);
            let mut theirs = Outcome::new(t, Arm::Adapter, Ok("x".into()), 1.0, vec![]);
            theirs.reference_logprob = (i != 0).then_some(base + 0.2 + (i % 3) as f64 * 0.1);
            outcomes.push(theirs);
        }
        let results = Results {
            outcomes,
            ..Results::default()
        };
        let r = report(&[Arm::Base, Arm::Adapter], results, 1);
        assert_eq!(r.measures().last(), Some(&LIKELIHOOD));
        let base = &r.arms[0].intervals[LIKELIHOOD];
        assert!((base.difference - -2.2).abs() < 1e-9, "{base:?}");
        let difference = &r.comparisons[0].metrics[LIKELIHOOD];
        let expected = (1..20).map(|i| 0.2 + (i % 3) as f64 * 0.1).sum::<f64>() / 19.0;
        assert!((difference.difference - expected).abs() < 1e-9, "{difference:?}");
        assert_eq!(difference.verdict, "better");
        assert_eq!(r.comparisons[0].metrics["exact_match"].verdict, "no clear difference");
        assert!(r.notes.is_empty(), "a measure separates the arms: {:?}", r.notes);
        let table = r.table();
        assert!(table.contains("logprob/token") && table.contains("reference_logprob"), "{table}");

        // Without likelihoods, nothing of it shows.
        let plain = report(&[Arm::Base], Results::default(), 1);
        assert!(!plain.measures().contains(&LIKELIHOOD) && !plain.table().contains("logprob"));
    }

    #[test]
    fn the_tables_columns_line_up_whatever_the_arms_are_called() {
        let r = report(&[Arm::Base, Arm::AdapterRag, Arm::Oracle], Results::default(), 1);
        let table = r.table();
        // Where each of the first three lines' second column ends.
        let ends: Vec<usize> = table
            .lines()
            .take(4)
            .map(|line| {
                let name = line.find(' ').unwrap_or(0);
                let start = name + line[name..].find(|c: char| c != ' ').unwrap_or(0);
                start + line[start..].find(' ').unwrap_or(0)
            })
            .collect();
        assert!(table.lines().nth(2).is_some_and(|l| l.starts_with("adapter+rag ")), "{table}");
        assert!(ends.iter().all(|&e| e == ends[0] && e > 0), "{ends:?}\n{table}");
    }

    #[test]
    fn adapter_and_retrieval_together_are_compared_with_each_alone() {
        use Arm::{Adapter, AdapterRag, Base, Rag};
        let names = |arms: &[Arm]| -> Vec<String> { pairs(arms).iter().map(|(a, b)| format!("{} − {}", a.name(), b.name())).collect() };
        assert_eq!(
            names(&[Base, Adapter, Rag, AdapterRag]),
            [
                "adapter − base",
                "rag − base",
                "adapter+rag − base",
                "adapter+rag − adapter",
                "adapter+rag − rag",
                "adapter − rag"
            ]
        );
        assert_eq!(names(&[Base, Rag, Adapter]), ["rag − base", "adapter − base", "adapter − rag"]);
        assert_eq!(
            names(&[Adapter, AdapterRag, Rag]),
            ["adapter+rag − adapter", "rag − adapter", "adapter+rag − rag"]
        );
        assert_eq!(names(&[Base, Rag]), ["rag − base"]);
        assert_eq!(names(&[Base, AdapterRag]), ["adapter+rag − base"]);
        assert!(names(&[]).is_empty());
    }
}
