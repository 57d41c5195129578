//! Retrieval for questions in prose, on a real repository, without a model: a documented
//! definition's first sentence is the question and the definition's code its answer.
//!
//! As in CodeSearchNet, the documentation of every definition asked about is taken out of the
//! tree that is searched, so a search cannot find the answer by the question's own words: it
//! has to find code by what the code does, as a chat question about a codebase must ("where
//! do we retry failed uploads?"). At most one definition is asked about per file, so a
//! rewritten file loses one comment's lines. A question that documents two definitions is
//! left out. Questions that name their definition ("`parse_header` reads ...") are a set of
//! their own ([`Naming::Named`]): definition lookup answers them, and mixed with the others
//! they would hide how well search finds code by what it does.
//!
//! This module chooses the questions and rewrites the tree; indexing the rewritten tree and
//! searching it are the caller's (`graft bench questions`).

use std::collections::{HashMap, HashSet};

use graft_index::symbols::{definitions, Definition};
use graft_index::walk::SourceFile;
use serde::Serialize;

use crate::build::is_code;
use crate::random::stable_hash;

/// Words in a question: fewer says too little to search by, more is not a question.
pub const MIN_WORDS: usize = 5;
pub const MAX_WORDS: usize = 40;
/// Lines a definition keeps without its documentation, at least: code to find.
const MIN_CODE_LINES: usize = 3;
/// First words of documentation that points elsewhere instead of saying what the code does.
const POINTERS: [&str; 8] = ["see", "todo", "fixme", "deprecated", "alias", "same", "xxx", "@"];

/// Which questions are asked: those that do not name their definition (the default: search
/// must find the code by what it does) or those that do (what chat's definition lookup is
/// for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Naming {
    #[default]
    Unnamed,
    Named,
}

/// One question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DocQuestion {
    /// The file that defines the answer.
    pub path: String,
    pub symbol: String,
    pub kind: &'static str,
    /// The first sentence of the definition's documentation.
    pub question: String,
    /// The definition's lines in the rewritten file (1-based, inclusive).
    pub start_line: usize,
    pub end_line: usize,
}

impl DocQuestion {
    /// Whether a result (a file's lines, 1-based, inclusive) shows the definition's code.
    pub fn answered_by(&self, path: &str, start_line: usize, end_line: usize) -> bool {
        path == self.path && start_line <= self.end_line && end_line >= self.start_line
    }
}

/// The questions, and the tree to search for their answers.
#[derive(Debug, Clone)]
pub struct Questions {
    pub questions: Vec<DocQuestion>,
    /// `files` with the documentation of each asked definition taken out (the others as
    /// they were).
    pub tree: Vec<SourceFile>,
}

/// Up to `n` questions of the `naming` set from `files`, chosen by a seeded hash of their place
/// (the same files and seed give the same questions), one per file at most.
pub fn doc_questions(files: &[SourceFile], n: usize, naming: Naming, seed: u64) -> Questions {
    let mut candidates: Vec<(u64, usize, Definition, String)> = Vec::new();
    for (index, file) in files.iter().enumerate().filter(|(_, f)| is_code(&f.path)) {
        for d in definitions(&file.path, &file.text) {
            let Some(question) = askable(&d, naming) else { continue };
            let order = stable_hash(seed, &["question", &file.path, &d.name, &d.start_line.to_string()]);
            candidates.push((order, index, d, question));
        }
    }
    // A sentence that documents two definitions has no one answer.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (.., question) in &candidates {
        *seen.entry(question.to_lowercase()).or_default() += 1;
    }
    candidates.retain(|(.., question)| seen[&question.to_lowercase()] == 1);
    candidates.sort_by_key(|(order, ..)| *order);

    let mut asked_files = HashSet::new();
    let mut questions = Vec::new();
    let mut tree = files.to_vec();
    for (_, index, d, question) in candidates {
        if questions.len() == n {
            break;
        }
        let Some((first, last)) = d.doc_lines else { continue };
        if !asked_files.insert(index) {
            continue;
        }
        let (start_line, end_line) = without_doc(&d, first, last);
        tree[index].text = without_lines(&tree[index].text, first, last);
        questions.push(DocQuestion {
            path: files[index].path.clone(),
            symbol: d.name,
            kind: d.kind,
            question,
            start_line,
            end_line,
        });
    }
    Questions { questions, tree }
}

/// The question a definition's documentation asks, if it is one worth asking in the `naming`
/// set.
fn askable(d: &Definition, naming: Naming) -> Option<String> {
    if !matches!(d.kind, "function" | "type" | "class" | "trait") {
        return None;
    }
    let (first, last) = d.doc_lines?;
    // A docstring that is all of the body leaves no code.
    if first > d.start_line && last >= d.end_line {
        return None;
    }
    let (start, end) = without_doc(d, first, last);
    if end + 1 - start < MIN_CODE_LINES {
        return None;
    }
    let question = first_sentence(d.doc.as_deref()?);
    let words: Vec<&str> = question.split_whitespace().collect();
    let first_word = words.first()?.to_lowercase();
    let wordy = words.iter().filter(|w| w.starts_with(char::is_alphabetic)).count();
    let names_it = words
        .iter()
        .any(|w| w.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|part| part == d.name));
    let points_away = POINTERS.iter().any(|p| first_word.starts_with(p)) || question.to_lowercase().contains("inheritdoc");
    let in_set = names_it == (naming == Naming::Named);
    (wordy >= MIN_WORDS && words.len() <= MAX_WORDS && in_set && !points_away).then_some(question)
}

/// The lines of `d` (1-based, inclusive) once its documentation, lines `first..=last`, is
/// taken out: documentation above it moves it up, a docstring inside shortens it.
fn without_doc(d: &Definition, first: usize, last: usize) -> (usize, usize) {
    let taken = last + 1 - first;
    if last < d.start_line {
        (d.start_line - taken, d.end_line - taken)
    } else {
        (d.start_line, d.end_line - taken)
    }
}

/// The first sentence of `doc`'s first paragraph (all of it when no full stop ends one
/// before), on one line, markup tags such as C#'s `<summary>` left out.
pub fn first_sentence(doc: &str) -> String {
    let mut lines = doc.lines().map(str::trim).peekable();
    // RDoc's `call-seq:` paragraph shows calls; the prose comes after it.
    if lines.peek().is_some_and(|l| l.starts_with("call-seq:")) {
        lines.by_ref().take_while(|l| !l.is_empty()).for_each(drop);
    }
    let paragraph: Vec<&str> = lines.skip_while(|l| l.is_empty()).take_while(|l| !l.is_empty()).collect();
    let joined = without_tags(&paragraph.join(" "));
    let mut end = joined.len();
    for (at, _) in joined.match_indices('.') {
        let next = joined[at + 1..].chars().next();
        if next.is_none_or(char::is_whitespace) && !abbreviation(&joined[..at]) {
            end = at + 1;
            break;
        }
    }
    joined[..end].split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether the text before a full stop ends with an abbreviation ("e.g", "i.e", "etc").
fn abbreviation(before: &str) -> bool {
    let word = before.rsplit(char::is_whitespace).next().unwrap_or("").to_lowercase();
    matches!(word.as_str(), "e.g" | "i.e" | "etc" | "vs" | "cf" | "approx")
}

/// `text` without `<...>` tags.
fn without_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        match rest[open..].find('>') {
            Some(close) if rest[open + 1..open + close].starts_with(|c: char| c.is_ascii_alphabetic() || c == '/') => {
                out.push_str(&rest[..open]);
                rest = &rest[open + close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `text` without lines `first..=last` (1-based), every other line as it was.
fn without_lines(text: &str, first: usize, last: usize) -> String {
    text.split_inclusive('\n')
        .enumerate()
        .filter(|(i, _)| !(first..=last).contains(&(i + 1)))
        .map(|(_, line)| line)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile::new(path, text)
    }

    #[test]
    fn a_question_is_a_definitions_first_sentence_and_its_documentation_leaves_the_tree() {
        let vault = "import os\n\nclass Vault:\n    def rotate(self, tenant):\n        \"\"\"Replace the signing key of a tenant and keep the old one.\n\n        Returns the old key.\n        \"\"\"\n        old = self.key\n        self.key = derive(tenant)\n        return old\n";
        let keys = "/// Derives a fresh key from the tenant name e.g. for tests. Fast.\n#[inline]\npub fn derive(tenant: &str) -> Vec<u8> {\n    let mut k = tenant.as_bytes().to_vec();\n    k.reverse();\n    k\n}\n";
        let files = vec![
            file("vault.py", vault),
            file("keys.rs", keys),
            file("README.md", "# Vault\n\nRotates keys.\n"),
        ];
        let asked = doc_questions(&files, 10, Naming::Unnamed, 3);
        let by_symbol = |name: &str| asked.questions.iter().find(|q| q.symbol == name).expect(name).clone();

        let rotate = by_symbol("rotate");
        assert_eq!(rotate.question, "Replace the signing key of a tenant and keep the old one.");
        assert_eq!(rotate.path, "vault.py");
        let vault_now = &asked.tree[0].text;
        assert!(!vault_now.contains("signing key") && !vault_now.contains("Returns the old key"));
        assert_eq!(vault_now.lines().nth(rotate.start_line - 1), Some("    def rotate(self, tenant):"));
        assert_eq!(vault_now.lines().nth(rotate.end_line - 1), Some("        return old"));

        let derive = by_symbol("derive");
        assert_eq!(
            derive.question, "Derives a fresh key from the tenant name e.g. for tests.",
            "an abbreviation ends no sentence"
        );
        let keys_now = &asked.tree[1].text;
        assert!(keys_now.starts_with("#[inline]\npub fn derive"), "the attribute stays: {keys_now}");
        assert_eq!((derive.start_line, derive.end_line), (2, 6), "the item below its attribute");
        assert!(derive.answered_by("keys.rs", 4, 9) && !derive.answered_by("keys.rs", 7, 9) && !derive.answered_by("vault.py", 1, 6));

        assert_eq!(asked.tree[2].text, files[2].text, "a file not asked about is as it was");
        assert_eq!(
            asked.questions,
            doc_questions(&files, 10, Naming::Unnamed, 3).questions,
            "reproducible"
        );
    }

    #[test]
    fn questions_that_name_their_answer_point_elsewhere_or_answer_twice_are_not_asked() {
        let text = "/// Rotates the keys held by the vault every hour.\nfn rotate() {\n    a();\n    b();\n}\n\
                    /// The rotate_all function rotates every key at once.\nfn rotate_all() {\n    a();\n    b();\n}\n\
                    /// See the rotate function above for what this does.\nfn rotate_later() {\n    a();\n    b();\n}\n\
                    /// Too short a sentence.\nfn short() {\n    a();\n    b();\n}\n\
                    /// Rotates the keys held by the vault every hour.\nfn rotate_again() {\n    a();\n    b();\n}\n\
                    /// Opens the vault file and reads every key in it.\nfn one_line() {}\n";
        let asked = doc_questions(&[file("src/vault.rs", text)], 10, Naming::Unnamed, 1);
        assert!(asked.questions.is_empty(), "{:?}", asked.questions);
        let once = "/// Opens the vault file and reads every key in it.\nfn open() {\n    a();\n    b();\n}\n\
                    /// Seals the vault file so that nothing reads it again.\nfn seal() {\n    a();\n    b();\n}\n";
        let asked = doc_questions(&[file("src/vault.rs", once)], 10, Naming::Unnamed, 1);
        assert_eq!(asked.questions.len(), 1, "one question per file");
    }

    #[test]
    fn questions_that_name_their_definition_are_a_set_of_their_own() {
        let text = "/// Rotates the keys held by the vault every hour.\nfn rotate() {\n    a();\n    b();\n}\n";
        let named = "/// The rotate_all function rotates every key at once.\nfn rotate_all() {\n    a();\n    b();\n}\n";
        let files = [file("src/vault.rs", text), file("src/all.rs", named)];
        let symbols = |naming| {
            doc_questions(&files, 10, naming, 1)
                .questions
                .into_iter()
                .map(|q| q.symbol)
                .collect::<Vec<_>>()
        };
        assert_eq!(symbols(Naming::Unnamed), ["rotate"]);
        assert_eq!(symbols(Naming::Named), ["rotate_all"]);
        let asked = doc_questions(&files, 10, Naming::Named, 1);
        assert!(
            !asked.tree[1].text.contains("rotates every key"),
            "its documentation leaves the tree too"
        );
        assert_eq!(asked.tree[0].text, text);
    }

    #[test]
    fn first_sentences() {
        assert_eq!(first_sentence("Reads the config.\nMissing file: defaults."), "Reads the config.");
        assert_eq!(first_sentence("Reads the\nconfig file\n\nMore."), "Reads the config file");
        assert_eq!(first_sentence("<summary>Rotates the keys.</summary>"), "Rotates the keys.");
        assert_eq!(first_sentence("Version 1.2 of the format. Old."), "Version 1.2 of the format.");
        assert_eq!(first_sentence("Returns a < b."), "Returns a < b.");
        assert_eq!(
            first_sentence("call-seq:\nhsh.reject {|key, value| block} -> a_hash\n\nReturns a new hash. More."),
            "Returns a new hash."
        );
    }
}
