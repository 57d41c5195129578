//! Scores of a completion against its target, as CrossCodeEval defines them, and the paired
//! bootstrap that says whether one arm beats another.
//!
//! - exact match: equal once white space at both ends is removed;
//! - edit similarity: 1 − Levenshtein distance / the longer length, in characters (1 is equal);
//! - identifier exact match and F1: the identifiers of each (keywords left out), in order for
//!   the match, as multisets for F1.
//!
//! A completion is cut to its first line for line tasks before scoring ([`first_line`]).

use std::collections::HashMap;

use crate::random::Rng;

/// The scores of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scores {
    pub exact_match: f64,
    pub edit_similarity: f64,
    pub identifier_match: f64,
    pub identifier_f1: f64,
}

/// Scores `answer` against `target`.
pub fn score(answer: &str, target: &str) -> Scores {
    let (a, t) = (identifiers(answer), identifiers(target));
    Scores {
        exact_match: f64::from(u8::from(exact_match(answer, target))),
        edit_similarity: edit_similarity(answer.trim(), target.trim()),
        identifier_match: f64::from(u8::from(a == t)),
        identifier_f1: f1(&a, &t),
    }
}

/// Equal once white space at both ends is removed.
pub fn exact_match(answer: &str, target: &str) -> bool {
    answer.trim() == target.trim()
}

/// 1 − Levenshtein distance over the longer length, in characters.
pub fn edit_similarity(a: &str, b: &str) -> f64 {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    1.0 - levenshtein(&a, &b) as f64 / longest as f64
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// Words common languages reserve: not identifiers for scoring.
const KEYWORDS: &[&str] = &[
    "as",
    "async",
    "await",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "def",
    "default",
    "do",
    "elif",
    "else",
    "enum",
    "except",
    "export",
    "extends",
    "false",
    "False",
    "finally",
    "fn",
    "for",
    "from",
    "func",
    "function",
    "if",
    "impl",
    "import",
    "in",
    "interface",
    "is",
    "lambda",
    "let",
    "loop",
    "match",
    "mod",
    "mut",
    "new",
    "nil",
    "None",
    "not",
    "null",
    "or",
    "and",
    "package",
    "pass",
    "private",
    "protected",
    "pub",
    "public",
    "raise",
    "ref",
    "return",
    "self",
    "Self",
    "static",
    "struct",
    "super",
    "switch",
    "this",
    "throw",
    "trait",
    "true",
    "True",
    "try",
    "type",
    "typeof",
    "use",
    "var",
    "void",
    "where",
    "while",
    "with",
    "yield",
];

/// The identifiers of `code`, in order, keywords left out.
pub fn identifiers(code: &str) -> Vec<&str> {
    graft_index::lookup::identifiers(code)
        .map(|(_, word)| word)
        .filter(|word| !KEYWORDS.contains(word))
        .collect()
}

/// F1 of two multisets of identifiers (1 when both are empty).
fn f1(answer: &[&str], target: &[&str]) -> f64 {
    if answer.is_empty() && target.is_empty() {
        return 1.0;
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in target {
        *counts.entry(t).or_default() += 1;
    }
    let mut common = 0;
    for a in answer {
        if let Some(n) = counts.get_mut(a).filter(|n| **n > 0) {
            *n -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / answer.len() as f64;
    let recall = common as f64 / target.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// The first line of a completion (a line task's answer).
pub fn first_line(text: &str) -> &str {
    text.split('\n').next().unwrap_or_default()
}

/// The mean difference of paired scores (`b − a`) with its 95% bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl Difference {
    /// `b` beats `a` (or loses to it) only when the interval excludes zero.
    pub fn verdict(&self) -> &'static str {
        if self.low > 0.0 {
            "better"
        } else if self.high < 0.0 {
            "worse"
        } else {
            "no clear difference"
        }
    }
}

/// Paired bootstrap over tasks: `resamples` draws of the tasks with replacement (seeded), the
/// 2.5th and 97.5th percentiles of the mean difference `b − a`.
pub fn paired_bootstrap(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Difference {
    let n = a.len().min(b.len());
    let diffs: Vec<f64> = (0..n).map(|i| b[i] - a[i]).collect();
    bootstrap_mean(&diffs, resamples, seed)
}

/// The mean of `values` with its 95% bootstrap interval (`resamples` seeded draws with
/// replacement; 2.5th and 97.5th percentiles of their means).
pub fn bootstrap_mean(values: &[f64], resamples: usize, seed: u64) -> Difference {
    let n = values.len();
    if n == 0 {
        return Difference {
            mean: 0.0,
            low: 0.0,
            high: 0.0,
        };
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut rng = Rng::new(seed);
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    Difference {
        mean,
        low: at(0.025),
        high: at(0.975),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_hand_computed_values() {
        // Equal but for white space at the ends.
        let s = score("  let x = vault.rotate();\n", "let x = vault.rotate();");
        assert_eq!(
            s,
            Scores {
                exact_match: 1.0,
                edit_similarity: 1.0,
                identifier_match: 1.0,
                identifier_f1: 1.0
            }
        );

        // kitten → sitting: distance 3 over 7 characters.
        assert!((edit_similarity("kitten", "sitting") - (1.0 - 3.0 / 7.0)).abs() < 1e-12);
        assert_eq!(edit_similarity("", ""), 1.0);
        assert_eq!(edit_similarity("abc", ""), 0.0);

        // Identifiers: `let` is a keyword, numbers are not identifiers.
        assert_eq!(identifiers("let total = add(a, b_2) + 10u64;"), ["total", "add", "a", "b_2"]);
        // answer [x, foo, y] vs target [x, foo, z, w]: 2 in common; p = 2/3, r = 2/4, F1 = 4/7.
        let s = score("x = foo(y)", "x = foo(z, w)");
        assert_eq!((s.exact_match, s.identifier_match), (0.0, 0.0));
        assert!((s.identifier_f1 - 4.0 / 7.0).abs() < 1e-12, "{s:?}");
        // Same identifiers in another order: F1 1, no identifier match.
        let s = score("b + a", "a + b");
        assert_eq!((s.identifier_match, s.identifier_f1), (0.0, 1.0));
        assert_eq!(first_line("a\nb"), "a");
    }

    #[test]
    fn the_bootstrap_separates_a_real_gain_from_noise() {
        // b is right on 30 more tasks of 200: a clear gain.
        let a: Vec<f64> = (0..200).map(|i| f64::from(u8::from(i % 4 == 0))).collect();
        let b: Vec<f64> = (0..200).map(|i| f64::from(u8::from(i % 4 == 0 || i % 20 < 3))).collect();
        let d = paired_bootstrap(&a, &b, 2000, 1);
        assert!((d.mean - (b.iter().sum::<f64>() - a.iter().sum::<f64>()) / 200.0).abs() < 1e-12);
        assert!(d.low > 0.0 && d.high > d.low, "{d:?}");
        assert_eq!(d.verdict(), "better");

        // One task apart in 200: no clear difference.
        let mut c = a.clone();
        c[1] = 1.0;
        let d = paired_bootstrap(&a, &c, 2000, 1);
        assert_eq!(d.verdict(), "no clear difference", "{d:?}");
        assert_eq!(paired_bootstrap(&a, &c, 2000, 1), d, "seeded: the same interval every run");
    }
}
