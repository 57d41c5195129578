//! Two runs of one golden set compared arm by arm (`graft eval compare NEW OLD`): an adapter
//! retrained on a new dataset against the one before it, one retrieval setting against
//! another. Each arm both runs have is paired over the tasks both scored, per measure (the
//! four, and the likelihood when both scored it), with the paired bootstrap `graft eval run`
//! uses within a run; over the cross-file tasks alone too. Judged questions are not compared:
//! a judgement pairs two answers of one run.
//!
//! This module reads saved reports (`report.json`) and compares them; it runs nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::report::{paired_intervals, Interval, LIKELIHOOD, METRICS};

/// The `about` entry that fingerprints the golden set a run read.
pub const GOLDEN_DIGEST: &str = "golden set digest";

/// The fingerprint of a golden set's file (its text), for [`GOLDEN_DIGEST`].
pub fn golden_digest(text: &str) -> String {
    format!("{:016x}", graft_core::random::stable_hash(0, &[text]))
}

/// What a comparison needs of a saved report.
#[derive(Debug, Clone, Deserialize)]
pub struct SavedReport {
    #[serde(default)]
    pub about: BTreeMap<String, String>,
    pub outcomes: Vec<SavedOutcome>,
}

/// One scored task of a saved report.
#[derive(Debug, Clone, Deserialize)]
pub struct SavedOutcome {
    pub task: String,
    pub cross_file: bool,
    pub arm: String,
    pub exact_match: f64,
    pub edit_similarity: f64,
    pub identifier_match: f64,
    pub identifier_f1: f64,
    pub latency_ms: f64,
    #[serde(default)]
    pub reference_logprob: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
}

impl SavedOutcome {
    fn measure(&self, name: &str) -> Option<f64> {
        match name {
            "exact_match" => Some(self.exact_match),
            "edit_similarity" => Some(self.edit_similarity),
            "identifier_match" => Some(self.identifier_match),
            "identifier_f1" => Some(self.identifier_f1),
            LIKELIHOOD => self.reference_logprob,
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CompareError {
    #[error(
        "the runs are of different golden sets (digest {new} and {old}): a comparison pairs the same tasks, so run both on one golden set"
    )]
    GoldenSets { new: String, old: String },
    #[error("no arm ran in both: the new run has {new}, the old one {old}")]
    NoCommonArm { new: String, old: String },
    #[error("arm `{arm}` is not in both runs (new: {new}; old: {old})")]
    MissingArm { arm: String, new: String, old: String },
    #[error("arm `{arm}` shares no scored task between the runs (are they of the same golden set?)")]
    NoCommonTask { arm: String },
}

/// One arm of the new run against the same arm of the old one.
#[derive(Debug, Clone, Serialize)]
pub struct ArmChange {
    pub arm: String,
    /// Tasks both runs scored in this arm, and how many of them are cross-file.
    pub tasks: usize,
    pub cross_file_tasks: usize,
    /// Each measure's mean over those tasks, new and old.
    pub new: BTreeMap<&'static str, f64>,
    pub old: BTreeMap<&'static str, f64>,
    /// new − old, paired over the tasks, with its 95% interval and verdict.
    pub metrics: BTreeMap<&'static str, Interval>,
    /// The same over the cross-file tasks alone.
    pub cross_file: BTreeMap<&'static str, Interval>,
    /// Median latency over those tasks, new and old (milliseconds; comparable only when both
    /// ran on the same machine).
    pub latency_ms_p50: (f64, f64),
    /// Tasks that failed (no answer; scored 0), new and old.
    pub errors: (usize, usize),
}

/// An entry of the runs' `about` that differs between them ("-" where a run has none).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Differs {
    pub name: String,
    pub new: String,
    pub old: String,
}

/// The comparison of two runs.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// What changed between the runs, as their `about` says (but for their throughput).
    pub differs: Vec<Differs>,
    pub arms: Vec<ArmChange>,
    /// Tasks of one run only, and anything else a reader should know.
    pub notes: Vec<String>,
}

/// Arms in a report, in the order they first appear.
fn arms_of(report: &SavedReport) -> Vec<&str> {
    let mut seen = Vec::new();
    for o in &report.outcomes {
        if !seen.contains(&o.arm.as_str()) {
            seen.push(o.arm.as_str());
        }
    }
    seen
}

/// `report`'s outcomes in `arm`, by task.
fn by_task<'a>(report: &'a SavedReport, arm: &str) -> BTreeMap<&'a str, &'a SavedOutcome> {
    report
        .outcomes
        .iter()
        .filter(|o| o.arm == arm)
        .map(|o| (o.task.as_str(), o))
        .collect()
}

/// `new` against `old`: the given `arms` (default: every arm both ran, in the new run's
/// order), each paired over the tasks both scored in it; `seed` seeds the bootstrap.
pub fn compare(new: &SavedReport, old: &SavedReport, arms: &[String], seed: u64) -> Result<Comparison, CompareError> {
    if let (Some(a), Some(b)) = (new.about.get(GOLDEN_DIGEST), old.about.get(GOLDEN_DIGEST)) {
        if a != b {
            return Err(CompareError::GoldenSets {
                new: a.clone(),
                old: b.clone(),
            });
        }
    }
    let (new_arms, old_arms) = (arms_of(new), arms_of(old));
    let chosen: Vec<String> = if arms.is_empty() {
        let common: Vec<String> = new_arms.iter().filter(|a| old_arms.contains(a)).map(|a| a.to_string()).collect();
        if common.is_empty() {
            return Err(CompareError::NoCommonArm {
                new: new_arms.join(", "),
                old: old_arms.join(", "),
            });
        }
        common
    } else {
        for arm in arms {
            if !new_arms.contains(&arm.as_str()) || !old_arms.contains(&arm.as_str()) {
                return Err(CompareError::MissingArm {
                    arm: arm.clone(),
                    new: new_arms.join(", "),
                    old: old_arms.join(", "),
                });
            }
        }
        arms.to_vec()
    };

    let mut notes = Vec::new();
    if !(new.about.contains_key(GOLDEN_DIGEST) && old.about.contains_key(GOLDEN_DIGEST)) {
        notes.push(format!(
            "a run's report has no `{GOLDEN_DIGEST}` (written before graft recorded it): that both are of the same golden set is assumed from the task names"
        ));
    }
    let mut changes = Vec::new();
    for arm in &chosen {
        let (ours, theirs) = (by_task(new, arm), by_task(old, arm));
        let shared: Vec<&str> = ours.keys().copied().filter(|t| theirs.contains_key(t)).collect();
        if shared.is_empty() {
            return Err(CompareError::NoCommonTask { arm: arm.clone() });
        }
        let only: BTreeSet<&str> = ours.keys().chain(theirs.keys()).copied().filter(|t| !shared.contains(t)).collect();
        if !only.is_empty() {
            notes.push(format!(
                "{arm}: {} tasks are in one run only and left out (compared over the {} both scored)",
                only.len(),
                shared.len()
            ));
        }
        let paired = |name: &str, cross_file_only: bool| -> (Vec<f64>, Vec<f64>) {
            shared
                .iter()
                .filter(|t| !cross_file_only || ours[**t].cross_file)
                .filter_map(|t| Some((theirs[*t].measure(name)?, ours[*t].measure(name)?)))
                .unzip()
        };
        let intervals = |cross_file_only: bool| paired_intervals(|name| paired(name, cross_file_only), seed);
        let (mut new_means, mut old_means) = (BTreeMap::new(), BTreeMap::new());
        for name in METRICS.iter().chain([&LIKELIHOOD]) {
            let (old, new) = paired(name, false);
            if !new.is_empty() {
                new_means.insert(*name, new.iter().sum::<f64>() / new.len() as f64);
                old_means.insert(*name, old.iter().sum::<f64>() / old.len() as f64);
            }
        }
        let p50 = |side: &BTreeMap<&str, &SavedOutcome>| {
            let mut latencies: Vec<f64> = shared.iter().map(|t| side[t].latency_ms).collect();
            latencies.sort_by(f64::total_cmp);
            latencies[latencies.len() / 2]
        };
        let errors = |side: &BTreeMap<&str, &SavedOutcome>| shared.iter().filter(|t| side[*t].error.is_some()).count();
        let metrics = intervals(false);
        if !metrics.contains_key(LIKELIHOOD)
            && [&ours, &theirs]
                .iter()
                .any(|side| shared.iter().any(|t| side[*t].reference_logprob.is_some()))
        {
            notes.push(format!(
                "{arm}: only one run scored the reference's likelihood (`graft eval run --likelihood`), so it is not compared"
            ));
        }
        changes.push(ArmChange {
            arm: arm.clone(),
            tasks: shared.len(),
            cross_file_tasks: shared.iter().filter(|t| ours[**t].cross_file).count(),
            new: new_means,
            old: old_means,
            metrics,
            cross_file: intervals(true),
            latency_ms_p50: (p50(&ours), p50(&theirs)),
            errors: (errors(&ours), errors(&theirs)),
        });
    }
    // What the runs differ in, but for what always does (when it ran, how fast).
    let names: BTreeSet<&String> = new.about.keys().chain(old.about.keys()).collect();
    let differs = names
        .into_iter()
        .filter(|name| !["throughput"].contains(&name.as_str()))
        .filter_map(|name| {
            let (a, b) = (new.about.get(name), old.about.get(name));
            (a != b).then(|| {
                let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "-".to_owned());
                Differs {
                    name: name.clone(),
                    new: show(a),
                    old: show(b),
                }
            })
        })
        .collect();
    Ok(Comparison {
        differs,
        arms: changes,
        notes,
    })
}

impl Comparison {
    /// The table a person reads in the terminal (`new` and `old` name the runs).
    pub fn table(&self, new: &str, old: &str) -> String {
        let mut out = format!("new: {new}\nold: {old}\n");
        if !self.differs.is_empty() {
            out.push_str("\nthe runs differ in:\n");
            for d in &self.differs {
                out.push_str(&format!("  {}: {}  (old: {})\n", d.name, d.new, d.old));
            }
        }
        for arm in &self.arms {
            out.push_str(&format!(
                "\n{}: new − old over {} tasks ({} cross-file), paired bootstrap, 95%:\n",
                arm.arm, arm.tasks, arm.cross_file_tasks
            ));
            out.push_str(&format!(
                "  {:<17} {:>8} {:>8}  {:>7}  {:<18} {:<20} {}\n",
                "measure", "new", "old", "new−old", "interval", "verdict", "cross-file tasks alone"
            ));
            for name in METRICS.iter().chain([&LIKELIHOOD]) {
                let (Some(i), Some(a), Some(b)) = (arm.metrics.get(name), arm.new.get(name), arm.old.get(name)) else {
                    continue;
                };
                let cross = arm.cross_file.get(name).map_or("-".to_owned(), |c| {
                    format!("{:+.3} [{:+.3}, {:+.3}] {}", c.difference, c.low, c.high, c.verdict)
                });
                out.push_str(&format!(
                    "  {:<17} {:>8.3} {:>8.3}  {:>+7.3}  {:<18} {:<20} {cross}\n",
                    name,
                    a,
                    b,
                    i.difference,
                    format!("[{:+.3}, {:+.3}]", i.low, i.high),
                    i.verdict
                ));
            }
            out.push_str(&format!(
                "  latency p50 {:.0} ms (old {:.0} ms); failed tasks {} (old {})\n",
                arm.latency_ms_p50.0, arm.latency_ms_p50.1, arm.errors.0, arm.errors.1
            ));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                out.push_str(&format!("note: {note}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(task: &str, arm: &str, em: f64, cross_file: bool, logprob: Option<f64>) -> SavedOutcome {
        SavedOutcome {
            task: task.into(),
            cross_file,
            arm: arm.into(),
            exact_match: em,
            edit_similarity: em,
            identifier_match: em,
            identifier_f1: em,
            latency_ms: 100.0,
            reference_logprob: logprob,
            error: None,
        }
    }

    fn report(digest: &str, outcomes: Vec<SavedOutcome>) -> SavedReport {
        SavedReport {
            about: [
                (GOLDEN_DIGEST.to_owned(), digest.to_owned()),
                ("adapter".into(), format!("lora-{digest}")),
            ]
            .into_iter()
            .collect(),
            outcomes,
        }
    }

    #[test]
    fn an_arm_is_paired_over_the_tasks_both_runs_scored() {
        // 60 tasks, the even ones cross-file. The old adapter is right on the first 20 tasks;
        // the new one on those and on the cross-file tasks of the rest. A task only the new
        // run has is left out.
        let mut new = Vec::new();
        let mut old = Vec::new();
        for i in 0..60 {
            let t = format!("t{i}");
            let cross = i % 2 == 0;
            let old_em = if i < 20 { 1.0 } else { 0.0 };
            let new_em = if i < 20 || cross { 1.0 } else { 0.0 };
            old.push(outcome(&t, "adapter", old_em, cross, Some(-2.0)));
            new.push(outcome(&t, "adapter", new_em, cross, Some(-1.5)));
            old.push(outcome(&t, "base", 0.5, cross, None));
        }
        new.push(outcome("extra", "adapter", 1.0, false, None));
        let (new, old) = (report("d1", new), report("d1", old));

        let c = compare(&new, &old, &[], 1).unwrap();
        assert_eq!(c.arms.len(), 1, "base ran in the old run only");
        let arm = &c.arms[0];
        assert_eq!((arm.arm.as_str(), arm.tasks, arm.cross_file_tasks), ("adapter", 60, 30));
        let em = &arm.metrics["exact_match"];
        // The new one is right on 20 more of the 60 tasks.
        assert!((em.difference - 20.0 / 60.0).abs() < 1e-12, "{em:?}");
        assert_eq!(em.verdict, "better");
        assert!((arm.new["exact_match"] - 40.0 / 60.0).abs() < 1e-12);
        assert!((arm.old["exact_match"] - 20.0 / 60.0).abs() < 1e-12);
        // Cross-file alone: 20 of the 30 more.
        assert!((arm.cross_file["exact_match"].difference - 20.0 / 30.0).abs() < 1e-12);
        assert!((arm.metrics[LIKELIHOOD].difference - 0.5).abs() < 1e-12);
        assert!(c.notes.iter().any(|n| n.contains("1 tasks are in one run only")), "{:?}", c.notes);
        assert!(c.differs.is_empty(), "{:?}", c.differs);
        let table = c.table("new.json", "old.json");
        assert!(table.contains("adapter: new − old over 60 tasks (30 cross-file)"), "{table}");
        assert!(table.contains("better"), "{table}");

        // Swapped, the verdict turns.
        let back = compare(&old, &new, &[], 1).unwrap();
        assert_eq!(back.arms[0].metrics["exact_match"].verdict, "worse");
    }

    #[test]
    fn runs_of_different_golden_sets_or_without_a_common_arm_are_refused() {
        let new = report("d1", vec![outcome("t0", "adapter", 1.0, false, None)]);
        let other = report("d2", vec![outcome("t0", "adapter", 0.0, false, None)]);
        assert!(matches!(compare(&new, &other, &[], 1), Err(CompareError::GoldenSets { .. })));
        let base_only = report("d1", vec![outcome("t0", "base", 0.0, false, None)]);
        assert!(matches!(compare(&new, &base_only, &[], 1), Err(CompareError::NoCommonArm { .. })));
        assert!(matches!(
            compare(&new, &base_only, &["base".into()], 1),
            Err(CompareError::MissingArm { .. })
        ));
        let elsewhere = report("d1", vec![outcome("t9", "adapter", 0.0, false, None)]);
        assert!(matches!(compare(&new, &elsewhere, &[], 1), Err(CompareError::NoCommonTask { .. })));
    }

    #[test]
    fn what_the_runs_differ_in_is_listed() {
        let new = report("d1", vec![outcome("t0", "adapter", 1.0, false, None)]);
        let mut old = report("d1", vec![outcome("t0", "adapter", 1.0, false, None)]);
        old.about.insert("adapter".into(), "lora-before".into());
        let c = compare(&new, &old, &[], 1).unwrap();
        assert_eq!(
            c.differs,
            [Differs {
                name: "adapter".into(),
                new: "lora-d1".into(),
                old: "lora-before".into()
            }]
        );
        assert!(c.table("a", "b").contains("adapter: lora-d1  (old: lora-before)"));
    }
}
