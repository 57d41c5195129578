//! Tasks made from a repository's held-out files (`graft eval build`), RepoEval and
//! CrossCodeEval style:
//!
//! - *line*: a non-trivial code line (not blank, a comment, an import, or lone punctuation);
//! - *api*: such a line using a symbol that another file of the repository defines (and that
//!   at most three files define, so the defining file means something), recorded with it;
//! - *span*: the rest of a line from a point after an identifier, the inside of a call's
//!   parentheses (the middle of a line), or a short function's body (a block);
//! - *question*: "what does `name` do?" for a documented definition, its documentation as the
//!   reference answer.
//!
//! Every choice is a seeded hash of the task's place, so the same repository, split and seed
//! give the same set; targets are unique. The context stored is at most
//! [`PREFIX_LINES`] lines before the cursor and [`SUFFIX_LINES`] after it.

use std::collections::{BTreeMap, HashSet};

use graft_index::chunker::language_of;
use graft_index::symbols::definitions;
use graft_index::walk::SourceFile;

use crate::golden::{GoldenSet, Task, TaskKind};
use crate::metrics::identifiers;
use crate::random::stable_hash;
use crate::split::Split;

/// Lines of context kept before the cursor.
pub const PREFIX_LINES: usize = 400;
/// Lines of context kept after the cursor.
pub const SUFFIX_LINES: usize = 100;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Completion tasks (line, api and span together).
    pub tasks: usize,
    /// Question tasks, at most.
    pub questions: usize,
    pub seed: u64,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            tasks: 300,
            questions: 30,
            seed: 1,
        }
    }
}

/// A task before it is chosen: its kind, the hash that orders it, the task.
struct Candidate {
    order: u64,
    task: Task,
}

/// Builds the tasks of `files` (the repository as the index walks it) that `split` holds out.
pub fn build(files: &[SourceFile], split: &Split, options: &BuildOptions) -> GoldenSet {
    let defined = definition_sites(files);
    let mut by_kind: BTreeMap<TaskKind, Vec<Candidate>> = BTreeMap::new();
    for file in files.iter().filter(|f| split.contains(&f.path) && is_code(&f.path)) {
        for candidate in candidates(file, &defined, options.seed) {
            by_kind.entry(candidate.task.kind).or_default().push(candidate);
        }
    }
    for list in by_kind.values_mut() {
        list.sort_by_key(|c| c.order);
    }
    // Quotas: 40% api, 30% span, the rest lines (which also fill what the others lack).
    let api = options.tasks * 2 / 5;
    let span = options.tasks * 3 / 10;
    let mut seen = HashSet::new();
    let mut chosen = Vec::new();
    let mut take = |kind: TaskKind, quota: usize, chosen: &mut Vec<Task>| {
        let mut taken = 0;
        for c in by_kind.remove(&kind).unwrap_or_default() {
            if taken == quota {
                break;
            }
            let key = (
                c.task.kind == TaskKind::Question,
                c.task.target.clone().or(c.task.question.clone()).unwrap_or_default(),
            );
            if seen.insert(key) {
                chosen.push(c.task);
                taken += 1;
            }
        }
        taken
    };
    let got_api = take(TaskKind::Api, api, &mut chosen);
    let got_span = take(TaskKind::Span, span, &mut chosen);
    take(TaskKind::Line, options.tasks.saturating_sub(got_api + got_span), &mut chosen);
    take(TaskKind::Question, options.questions, &mut chosen);

    let mut numbers: BTreeMap<TaskKind, usize> = BTreeMap::new();
    for task in &mut chosen {
        let n = numbers.entry(task.kind).or_default();
        *n += 1;
        task.id = format!("{}-{:04}", task.kind.as_str(), n);
    }
    GoldenSet { tasks: chosen }
}

/// Where each name is defined: name → the files that define it.
pub(crate) fn definition_sites(files: &[SourceFile]) -> BTreeMap<String, Vec<String>> {
    let mut sites: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files {
        // A module's name says little about the code that uses it.
        for d in definitions(&file.path, &file.text).into_iter().filter(|d| d.kind != "module") {
            let paths = sites.entry(d.name).or_default();
            if !paths.contains(&file.path) {
                paths.push(file.path.clone());
            }
        }
    }
    sites
}

pub(crate) fn is_code(path: &str) -> bool {
    matches!(
        language_of(path),
        "rust"
            | "python"
            | "javascript"
            | "typescript"
            | "tsx"
            | "go"
            | "java"
            | "c"
            | "cpp"
            | "ruby"
            | "kotlin"
            | "swift"
            | "csharp"
            | "php"
            | "scala"
    )
}

/// Every task `file` could give.
fn candidates(file: &SourceFile, defined: &BTreeMap<String, Vec<String>>, seed: u64) -> Vec<Candidate> {
    let lines: Vec<&str> = file.text.split_inclusive('\n').collect();
    let mut found = Vec::new();
    let order = |parts: &[&str]| stable_hash(seed, parts);
    for (row, raw) in lines.iter().enumerate() {
        let line = raw.trim_end_matches(['\n', '\r']);
        if !is_worth_completing(line) {
            continue;
        }
        let indent = &line[..line.len() - line.trim_start().len()];
        let body = line.trim_start();
        let row_key = row.to_string();
        // A whole line.
        let task = completion(file, &lines, row, indent.len(), line.len(), TaskKind::Line);
        found.push(Candidate {
            order: order(&["line", &file.path, &row_key]),
            task,
        });
        // A line that uses a symbol from another file.
        if let Some((symbol, site)) = cross_file_symbol(body, &file.path, defined) {
            let mut task = completion(file, &lines, row, indent.len(), line.len(), TaskKind::Api);
            task.symbol = Some(symbol.to_owned());
            task.defined_in = Some(site.to_owned());
            found.push(Candidate {
                order: order(&["api", &file.path, &row_key]),
                task,
            });
        }
        // The rest of the line, from after an identifier near its middle.
        if let Some(cut) = rest_of_line_cut(line) {
            let mut task = completion(file, &lines, row, cut, line.len(), TaskKind::Span);
            task.span = Some("rest_of_line".into());
            found.push(Candidate {
                order: order(&["rest", &file.path, &row_key]),
                task,
            });
        }
        // The inside of a call's parentheses.
        if let Some((open, close)) = call_arguments(line) {
            let mut task = completion(file, &lines, row, open, close, TaskKind::Span);
            task.span = Some("middle_of_line".into());
            found.push(Candidate {
                order: order(&["middle", &file.path, &row_key]),
                task,
            });
        }
    }
    for d in definitions(&file.path, &file.text) {
        // A short function's body: the lines between its first and its last.
        let body_lines = d.end_line.saturating_sub(d.start_line + 1);
        if d.kind == "function" && (2..=8).contains(&body_lines) {
            let first = d.start_line; // 0-based row of the body's first line
            let last = d.end_line - 2; // 0-based row of the body's last line
            let prefix_end: usize = lines[..first].iter().map(|l| l.len()).sum();
            let target_end: usize = lines[..=last].iter().map(|l| l.len()).sum();
            let text = &file.text;
            let target = text[prefix_end..target_end].trim_end_matches(['\n', '\r']);
            if target.trim().is_empty() {
                continue;
            }
            let mut task = bounded_task(
                file,
                &text[..prefix_end],
                target,
                &text[prefix_end + target.len()..],
                TaskKind::Span,
            );
            task.span = Some("block".into());
            found.push(Candidate {
                order: order(&["block", &file.path, &d.start_line.to_string()]),
                task,
            });
        }
        // A question about a documented definition.
        if let Some(doc) = d.doc.filter(|doc| doc.split_whitespace().count() >= 4 && d.kind != "module") {
            let question = format!("What does the {} `{}` in `{}` do?", d.kind, d.name, file.path);
            found.push(Candidate {
                order: order(&["question", &file.path, &d.name]),
                task: Task {
                    id: String::new(),
                    kind: TaskKind::Question,
                    path: None,
                    prefix: None,
                    suffix: None,
                    target: None,
                    span: None,
                    symbol: Some(d.name.clone()),
                    defined_in: None,
                    question: Some(question),
                    reference: Some(doc),
                    files: vec![file.path.clone()],
                    origin: "repository".into(),
                },
            });
        }
    }
    found
}

/// A completion task whose target is columns `from..to` of line `row` (byte offsets).
fn completion(file: &SourceFile, lines: &[&str], row: usize, from: usize, to: usize, kind: TaskKind) -> Task {
    let line_start: usize = lines[..row].iter().map(|l| l.len()).sum();
    let (start, end) = (line_start + from, line_start + to);
    let text = &file.text;
    bounded_task(file, &text[..start], &text[start..end], &text[end..], kind)
}

/// A task from the text before, at and after the cursor, the context cut to its limits.
fn bounded_task(file: &SourceFile, before: &str, target: &str, after: &str, kind: TaskKind) -> Task {
    Task::completion(
        kind,
        &file.path,
        last_lines(before, PREFIX_LINES),
        target,
        first_lines(after, SUFFIX_LINES),
    )
}

/// The end of `text` from the start of its `n`-th line from the end (the current line's
/// start, before the cursor, counts as one).
pub(crate) fn last_lines(text: &str, n: usize) -> &str {
    let mut cut = text.len();
    for _ in 0..n {
        match text[..cut].rfind('\n') {
            Some(i) => cut = i,
            None => return text,
        }
    }
    &text[cut + 1..]
}

/// The start of `text` up to the end of its `n`-th line.
pub(crate) fn first_lines(text: &str, n: usize) -> &str {
    let mut end = 0;
    for _ in 0..n {
        match text[end..].find('\n') {
            Some(i) => end += i + 1,
            None => return text,
        }
    }
    &text[..end]
}

/// A line a completion task can ask for: code with some substance.
pub(crate) fn is_worth_completing(line: &str) -> bool {
    let body = line.trim();
    if body.len() < 6 || body.len() > 200 {
        return false;
    }
    const COMMENTS: &[&str] = &["//", "#", "/*", "*", "--", "\"\"\"", "'''"];
    const IMPORTS: &[&str] = &[
        "use ",
        "import ",
        "from ",
        "#include",
        "package ",
        "extern crate",
        "require(",
        "using ",
    ];
    if COMMENTS.iter().chain(IMPORTS).any(|p| body.starts_with(p)) {
        return false;
    }
    identifiers(body).iter().any(|i| i.len() >= 2) && body.chars().filter(|c| c.is_alphanumeric()).count() >= 4
}

/// Names the standard libraries of graft's languages use so widely (`iter().collect()`,
/// `dict.items()`, `list.append`) that a line using one rarely means a repository's own
/// definition of the same name: never an api task's symbol.
pub(crate) const EVERYWHERE: &[&str] = &[
    "append", "apply", "build", "call", "clear", "clone", "close", "collect", "contains", "default", "extend", "filter", "flush", "format",
    "from", "into", "items", "iter", "join", "keys", "load", "lock", "main", "next", "open", "parse", "print", "push", "read", "remove",
    "send", "spawn", "split", "start", "stop", "take", "then", "update", "values", "wait", "with", "write",
];

/// A name in `line` that other files define (one to three of them) and `path` does not:
/// the longest such name, with the first file that defines it.
fn cross_file_symbol<'a>(line: &str, path: &str, defined: &'a BTreeMap<String, Vec<String>>) -> Option<(&'a str, &'a str)> {
    let code = without_strings(line);
    identifiers(&code)
        .into_iter()
        .filter(|name| name.len() >= 4 && !EVERYWHERE.contains(name))
        .filter_map(|name| {
            let (name, sites) = defined.get_key_value(name)?;
            let elsewhere = !sites.iter().any(|s| s == path) && (1..=3).contains(&sites.len());
            elsewhere.then(|| (name.as_str(), sites[0].as_str()))
        })
        .max_by_key(|(name, _)| name.len())
}

/// `line` with the insides of its string literals blanked: a word in a message is not a use
/// of a symbol.
pub(crate) fn without_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in line.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    out.push(c);
                    continue;
                }
                out.push(' ');
            }
            None => {
                // Double quotes only: a single quote is a Rust lifetime as often as a string.
                if c == '"' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

/// Where to cut a line for a rest-of-line task: right after the identifier nearest its middle
/// that leaves at least 3 characters of code after it.
fn rest_of_line_cut(line: &str) -> Option<usize> {
    let indent = line.len() - line.trim_start().len();
    let middle = indent + (line.len() - indent) / 2;
    let bytes = line.as_bytes();
    let mut best: Option<usize> = None;
    let mut i = indent;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let rest = line[i..].trim();
            if rest.len() >= 3 && i > indent && best.is_none_or(|b| b.abs_diff(middle) > i.abs_diff(middle)) {
                best = Some(i);
            }
        } else {
            i += 1;
        }
    }
    best
}

/// The byte range inside the first call's parentheses on `line` that holds an argument:
/// `(` right after a name, its matching `)` on the same line, something other than spaces
/// between.
fn call_arguments(line: &str) -> Option<(usize, usize)> {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'(' || i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
            continue;
        }
        let mut depth = 0;
        for (j, &c) in bytes.iter().enumerate().skip(i) {
            match c {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        let inside = &line[i + 1..j];
                        if inside.trim().len() >= 2 && !inside.contains('"') {
                            return Some((i + 1, j));
                        }
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile::new(path, text)
    }

    fn repo() -> Vec<SourceFile> {
        vec![
            file(
                "src/vault.rs",
                "/// Holds the signing keys of a tenant and rotates them.\npub struct TokenVault { keys: Vec<u8> }\n\nimpl TokenVault {\n    /// Replaces the signing key and returns the old one.\n    pub fn rotate_signing_keys(&mut self, tenant: &str) -> Vec<u8> {\n        let old = self.keys.clone();\n        self.keys = derive(tenant);\n        old\n    }\n}\n",
            ),
            file(
                "src/app.rs",
                "use crate::vault::TokenVault;\n\n// Starts the app.\nfn start(vault: &mut TokenVault, tenant: &str) {\n    let previous = vault.rotate_signing_keys(tenant);\n    println!(\"{}\", previous.len());\n    record_rotation(tenant, previous.len());\n}\n",
            ),
        ]
    }

    #[test]
    fn tasks_come_from_held_out_files_only_and_are_reproducible() {
        let files = repo();
        let split = Split::listed(["src/app.rs"]);
        let options = BuildOptions {
            tasks: 20,
            questions: 5,
            seed: 3,
        };
        let set = build(&files, &split, &options);
        assert_eq!(set, build(&files, &split, &options), "same inputs, same set");
        assert!(!set.tasks.is_empty());
        for task in &set.tasks {
            if task.kind != TaskKind::Question {
                assert_eq!(task.path.as_deref(), Some("src/app.rs"), "{task:?}");
                // The cursor splits the file exactly: prefix + target + suffix is the file.
                let whole = format!(
                    "{}{}{}",
                    task.prefix.as_deref().unwrap(),
                    task.target.as_deref().unwrap(),
                    task.suffix.as_deref().unwrap()
                );
                assert_eq!(whole, files[1].text, "{}", task.id);
            }
        }
        let targets: HashSet<_> = set.tasks.iter().map(|t| (t.kind == TaskKind::Question, t.target.clone())).collect();
        assert_eq!(targets.len(), set.tasks.len(), "targets are unique");
        // No comment or import lines.
        assert!(set
            .tasks
            .iter()
            .all(|t| !t.target.as_deref().unwrap_or("x").trim_start().starts_with("//")));
        assert!(set
            .tasks
            .iter()
            .all(|t| t.target.as_deref() != Some("use crate::vault::TokenVault;")));
    }

    #[test]
    fn an_api_task_names_the_symbol_and_the_file_that_defines_it() {
        let set = build(&repo(), &Split::listed(["src/app.rs"]), &BuildOptions::default());
        let api: Vec<&Task> = set.tasks.iter().filter(|t| t.kind == TaskKind::Api).collect();
        assert!(!api.is_empty(), "{set:#?}");
        let rotate = api
            .iter()
            .find(|t| t.symbol.as_deref() == Some("rotate_signing_keys"))
            .expect("the rotate call");
        assert_eq!(rotate.defined_in.as_deref(), Some("src/vault.rs"));
        assert_eq!(rotate.target.as_deref(), Some("let previous = vault.rotate_signing_keys(tenant);"));
        assert!(rotate.prefix.as_deref().unwrap().ends_with("\n    "), "the indentation is context");
        assert!(
            api.iter().all(|t| t.symbol.as_deref() != Some("record_rotation")),
            "defined nowhere: not cross-file"
        );
    }

    #[test]
    fn words_inside_strings_are_not_symbol_uses() {
        assert_eq!(
            without_strings(r#"log("TokenVault \"x\" failed", vault)"#),
            r#"log("                       ", vault)"#
        );
    }

    #[test]
    fn a_standard_library_name_is_not_taken_for_another_file_s_definition() {
        let defined: BTreeMap<String, Vec<String>> = [("collect", "src/engine.rs"), ("rotate_keys", "src/vault.rs")]
            .into_iter()
            .map(|(name, file)| (name.to_owned(), vec![file.to_owned()]))
            .collect();
        let line = "let ids: Vec<_> = items.iter().collect();";
        assert_eq!(
            cross_file_symbol(line, "src/app.rs", &defined),
            None,
            "`.collect()` is the iterator's"
        );
        let line = "let keys = rotate_keys(items.iter().collect());";
        assert_eq!(
            cross_file_symbol(line, "src/app.rs", &defined),
            Some(("rotate_keys", "src/vault.rs"))
        );
    }

    #[test]
    fn spans_and_questions() {
        let set = build(&repo(), &Split::listed(["src/app.rs", "src/vault.rs"]), &BuildOptions::default());
        let spans: Vec<&str> = set.tasks.iter().filter_map(|t| t.span.as_deref()).collect();
        for kind in ["rest_of_line", "middle_of_line", "block"] {
            assert!(spans.contains(&kind), "{kind}: {spans:?}");
        }
        let block = set.tasks.iter().find(|t| t.span.as_deref() == Some("block")).unwrap();
        assert!(
            block.target.as_deref().unwrap().contains("let old = self.keys.clone();"),
            "{block:?}"
        );
        let question = set
            .tasks
            .iter()
            .find(|t| t.symbol.as_deref() == Some("rotate_signing_keys") && t.kind == TaskKind::Question)
            .unwrap();
        assert_eq!(
            question.reference.as_deref(),
            Some("Replaces the signing key and returns the old one.")
        );
        assert_eq!(question.files, ["src/vault.rs"]);
        assert!(question.question.as_deref().unwrap().contains("`rotate_signing_keys`"));
    }
}
