//! Retrieval quality on a real repository, without a model: cross-file queries made from its
//! definitions and their uses, and how high the search ranks the one file that answers each.
//!
//! A query is the five lines of code that end with a use of a name defined in exactly one
//! other file of the repository (as a completion near that use would search); its answer is
//! the defining file, and the query's own file is left out of the results, as the server
//! leaves out the file being edited. [`Ranks`] turns where the answer landed into recall@1,
//! recall@5 and the mean reciprocal rank. This module chooses and scores; searching is the
//! caller's (`graft bench index`, the retrieval tests).

use std::collections::{BTreeMap, HashMap, HashSet};

use graft_index::lookup::{is_common_name, local_names};
use graft_index::walk::SourceFile;
use serde::Serialize;

use crate::build::{definition_sites, is_code, is_worth_completing, without_strings, EVERYWHERE};
use crate::metrics::identifiers;
use crate::random::stable_hash;

/// Lines in a query, the use included.
pub const QUERY_LINES: usize = 5;
/// Queries taken from one file at most, so a few big files do not decide the figures.
const PER_FILE: usize = 3;

/// One cross-file query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrossFileQuery {
    /// The file the code comes from (left out of the results).
    pub path: String,
    /// The code before the cursor: [`QUERY_LINES`] lines, the last one using `symbol`.
    pub code: String,
    pub symbol: String,
    /// The only file that defines `symbol`: the answer.
    pub defined_in: String,
}

/// Up to `n` queries from `files`, chosen by a seeded hash of their place (the same files and
/// seed give the same queries), each symbol asked once.
pub fn cross_file_queries(files: &[SourceFile], n: usize, seed: u64) -> Vec<CrossFileQuery> {
    let sites = definition_sites(files);
    // Defined in exactly one file.
    let once: BTreeMap<String, Vec<String>> = sites.into_iter().filter(|(_, paths)| paths.len() == 1).collect();
    let mut candidates: Vec<(u64, CrossFileQuery)> = Vec::new();
    for file in files.iter().filter(|f| is_code(&f.path)) {
        let lines: Vec<&str> = file.text.lines().collect();
        for (row, line) in lines.iter().enumerate() {
            if row + 1 < QUERY_LINES || !is_worth_completing(line) {
                continue;
            }
            let code = lines[row + 1 - QUERY_LINES..=row].join("\n");
            let Some((symbol, site)) = used_symbol(line, &code, &file.path, &once) else {
                continue;
            };
            let order = stable_hash(seed, &["retrieval", &file.path, &row.to_string()]);
            candidates.push((
                order,
                CrossFileQuery {
                    path: file.path.clone(),
                    code,
                    symbol: symbol.to_owned(),
                    defined_in: site.to_owned(),
                },
            ));
        }
    }
    candidates.sort_by_key(|(order, _)| *order);
    let mut per_symbol: HashMap<String, usize> = HashMap::new();
    let mut per_file: HashMap<String, usize> = HashMap::new();
    let mut chosen = Vec::new();
    for (_, query) in candidates {
        if chosen.len() == n {
            break;
        }
        let asked = per_symbol.entry(query.symbol.clone()).or_default();
        let from_file = per_file.entry(query.path.clone()).or_default();
        if *asked == 0 && *from_file < PER_FILE {
            *asked += 1;
            *from_file += 1;
            chosen.push(query);
        }
    }
    chosen
}

/// The longest name `line` uses as a symbol (called, a type, a macro, a path) that exactly
/// one other file defines, with that file; not a local of `code` (`let limit = ...`), a field
/// (`self.waker`), a word in a string or a standard name.
fn used_symbol<'a>(line: &str, code: &str, path: &str, once: &'a BTreeMap<String, Vec<String>>) -> Option<(&'a str, &'a str)> {
    let bare = without_strings(line);
    let locals: HashSet<&str> = local_names(code).collect();
    let mut best: Option<(&str, &str)> = None;
    let mut offset = 0;
    for name in identifiers(&bare) {
        let at = offset + bare[offset..].find(name).unwrap_or(0);
        offset = at + name.len();
        let Some((name, sites)) = once.get_key_value(name) else {
            continue;
        };
        let site = &sites[0];
        if site == path || name.len() < 4 || EVERYWHERE.contains(&name.as_str()) || locals.contains(name.as_str()) || is_common_name(name) {
            continue;
        }
        let before = &bare[..at];
        let after = &bare[at + name.len()..];
        let called = after.starts_with('(') || after.starts_with('!') || after.starts_with("::") || after.starts_with('<');
        let pathed = before.ends_with("::");
        let typed = name.starts_with(|c: char| c.is_ascii_uppercase());
        if (called || pathed || typed) && best.is_none_or(|(b, _)| name.len() > b.len()) {
            best = Some((name.as_str(), site.as_str()));
        }
    }
    best
}

/// Where the answer of each query landed: its 1-based rank, or `None` when it was not among
/// the results.
#[derive(Debug, Clone, Default)]
pub struct Ranks(pub Vec<Option<usize>>);

/// Recall and MRR over a set of queries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Recall {
    pub queries: usize,
    /// Share of queries answered first.
    pub at_1: f64,
    /// Share answered within the first five.
    pub at_5: f64,
    /// Mean of 1 / rank (0 where not found).
    pub mrr: f64,
}

impl Ranks {
    /// Adds a query's result: the paths in ranked order and the answer.
    pub fn push<'a>(&mut self, paths: impl IntoIterator<Item = &'a str>, answer: &str) {
        self.push_found(paths.into_iter().map(|p| p == answer));
    }

    /// Adds a query's result: whether each result, in ranked order, answers it.
    pub fn push_found(&mut self, answers: impl IntoIterator<Item = bool>) {
        self.0.push(answers.into_iter().position(|a| a).map(|i| i + 1));
    }

    pub fn recall(&self) -> Recall {
        let n = self.0.len();
        let share = |f: &dyn Fn(usize) -> bool| self.0.iter().filter(|r| r.is_some_and(f)).count() as f64 / n.max(1) as f64;
        Recall {
            queries: n,
            at_1: share(&|r| r == 1),
            at_5: share(&|r| r <= 5),
            mrr: self.0.iter().map(|r| r.map_or(0.0, |r| 1.0 / r as f64)).sum::<f64>() / n.max(1) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile::new(path, text)
    }

    #[test]
    fn a_query_ends_with_a_use_of_a_name_defined_once_elsewhere() {
        let files = vec![
            file("src/vault.rs", "pub struct TokenVault;\nimpl TokenVault {\n    pub fn rotate_signing_keys(&self) {}\n}\npub fn helper() {}\n"),
            file("src/other.rs", "pub fn helper() {}\n"),
            file(
                "src/app.rs",
                "use crate::vault::TokenVault;\n\nfn start(vault: &TokenVault) {\n    let a = 1;\n    let b = 2;\n    vault.rotate_signing_keys();\n    helper();\n}\n",
            ),
        ];
        let queries = cross_file_queries(&files, 10, 7);
        assert!(!queries.is_empty());
        let rotate = queries
            .iter()
            .find(|q| q.symbol == "rotate_signing_keys")
            .expect("the method's use");
        assert_eq!(rotate.defined_in, "src/vault.rs");
        assert_eq!(rotate.path, "src/app.rs");
        assert_eq!(rotate.code.lines().count(), QUERY_LINES);
        assert!(rotate.code.ends_with("vault.rotate_signing_keys();"));
        assert!(queries.iter().all(|q| q.symbol != "helper"), "defined in two files: not asked");
        assert_eq!(queries, cross_file_queries(&files, 10, 7), "reproducible");
    }

    #[test]
    fn recall_and_mrr_by_hand() {
        let mut ranks = Ranks::default();
        ranks.push(["a.rs", "b.rs"], "a.rs"); // 1
        ranks.push(["x.rs", "y.rs", "b.rs"], "b.rs"); // 3
        ranks.push(["x.rs"], "c.rs"); // missed
        ranks.push(["1", "2", "3", "4", "5", "6", "c.rs"], "c.rs"); // 7
        let r = ranks.recall();
        assert_eq!(r.queries, 4);
        assert_eq!(r.at_1, 0.25);
        assert_eq!(r.at_5, 0.5);
        assert!((r.mrr - (1.0 + 1.0 / 3.0 + 1.0 / 7.0) / 4.0).abs() < 1e-12);
    }
}
