//! *Before → after* pairs mined from git history: a commit that changes one or a few source
//! files with a real message becomes "the message and the code before" → "the code after".
//!
//! A commit is a pair only when it has one parent (no merges, no root commit), renames no
//! file, changes at most `max_files` files and each of them is a file the dataset keeps
//! (so never a held-out, vendored or generated one), has a message that says something
//! (not "wip", "fmt", "bump version", ...), and changes more than white space (git's
//! `--ignore-all-space`). Each changed file gives the changed lines with `context` lines
//! around them, before and after. This module runs `git` and reads its output; what a kept
//! file is, and what happens to secrets, the caller decides.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// One changed file of a commit, before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub commit: String,
    /// The commit message (subject and body), trimmed.
    pub message: String,
    pub path: String,
    /// The changed region of the file before the commit, with context lines.
    pub before: String,
    /// The same region after it.
    pub after: String,
    /// Unchanged lines at the start and the end of `before`, and of `after`.
    pub context: [(usize, usize); 2],
}

impl Pair {
    /// The pair with at most `n` unchanged lines around the change (on each side), for a
    /// pair too long with all of them.
    pub fn with_context(&self, n: usize) -> Pair {
        let cut = |text: &str, (top, bottom): (usize, usize)| -> (String, (usize, usize)) {
            let lines: Vec<&str> = text.lines().collect();
            let (drop_top, drop_bottom) = (top.saturating_sub(n), bottom.saturating_sub(n));
            if drop_top + drop_bottom >= lines.len() {
                return (String::new(), (0, 0));
            }
            let mut out = lines[drop_top..lines.len() - drop_bottom].join("\n");
            out.push('\n');
            (out, (top.min(n), bottom.min(n)))
        };
        let (before, b) = cut(&self.before, self.context[0]);
        let (after, a) = cut(&self.after, self.context[1]);
        Pair {
            before,
            after,
            context: [b, a],
            ..self.clone()
        }
    }
}

/// Why a commit gave no pair; counts go into the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skip {
    RootCommit,
    Rename,
    TooManyFiles,
    /// A file the dataset does not keep (held out, vendored, generated, dropped, deleted).
    FileNotKept,
    Message,
    FormattingOnly,
    Binary,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::RootCommit => "root-commit",
            Skip::Rename => "rename",
            Skip::TooManyFiles => "too-many-files",
            Skip::FileNotKept => "file-not-kept",
            Skip::Message => "message",
            Skip::FormattingOnly => "formatting-only",
            Skip::Binary => "binary",
        }
    }
}

/// What mining found.
#[derive(Debug, Default)]
pub struct Mined {
    /// Whether the repository has a history here (sources from a registry have none).
    pub available: bool,
    pub pairs: Vec<Pair>,
    /// Commits read (merges are not read at all).
    pub commits: usize,
    pub skipped: BTreeMap<Skip, usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot run git: {0}")]
    Spawn(std::io::Error),
    #[error("git {args}: {message}")]
    Git { args: String, message: String },
}

/// How commits are chosen.
#[derive(Debug, Clone)]
pub struct HistoryOptions {
    pub max_files: usize,
    pub max_commits: usize,
    pub context: usize,
}

fn git(repo: &Path, args: &[&str]) -> Result<String, HistoryError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(HistoryError::Spawn)?;
    if !output.status.success() {
        return Err(HistoryError::Git {
            args: args.join(" "),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether `repo` is the top of a git work tree with at least one commit (sources from a
/// package registry have no history: then there are no pairs, and that is not an error).
pub fn has_history(repo: &Path) -> bool {
    let top = git(repo, &["rev-parse", "--show-toplevel"]);
    let same = match (top, std::fs::canonicalize(repo)) {
        (Ok(top), Ok(repo)) => std::fs::canonicalize(top.trim()).is_ok_and(|t| t == repo),
        _ => false,
    };
    same && git(repo, &["rev-parse", "--verify", "-q", "HEAD"]).is_ok()
}

/// Whether a message says what changed: not empty, not a stock phrase of tools or of
/// formatting and housekeeping.
pub fn meaningful_message(message: &str) -> bool {
    let subject = message.lines().next().unwrap_or("").trim().to_lowercase();
    let words = subject.split_whitespace().count();
    if subject.chars().filter(|c| c.is_alphabetic()).count() < 8 || words < 2 {
        return false;
    }
    const STOCK: &[&str] = &[
        "wip",
        "fixup!",
        "squash!",
        "amend!",
        "merge ",
        "revert \"",
        "initial commit",
        "bump ",
        "release ",
        "version ",
        "update changelog",
        "update readme",
        "cargo fmt",
        "rustfmt",
        "run black",
        "black ",
        "prettier",
        "gofmt",
        "reformat",
        "format ",
        "formatting",
        "fmt",
        "lint",
        "typo",
        "auto-generated",
    ];
    !STOCK.iter().any(|s| subject.starts_with(s))
}

/// The changed line ranges of a `git diff -U0` (1-based, inclusive; an empty side is a
/// position between lines), as (old, new) spans of the whole file.
fn changed_span(diff: &str) -> Option<((usize, usize), (usize, usize))> {
    let mut old: Option<(usize, usize)> = None;
    let mut new: Option<(usize, usize)> = None;
    let widen = |span: &mut Option<(usize, usize)>, start: usize, count: usize| {
        let (a, b) = (start.max(1), (start + count.max(1) - 1).max(start.max(1)));
        *span = Some(span.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
    };
    for line in diff.lines().filter(|l| l.starts_with("@@ ")) {
        let mut parts = line.split_whitespace().skip(1);
        let (Some(o), Some(n)) = (parts.next(), parts.next()) else {
            continue;
        };
        let range = |s: &str| -> Option<(usize, usize)> {
            let s = &s[1..];
            let (start, count) = s.split_once(',').unwrap_or((s, "1"));
            Some((start.parse().ok()?, count.parse().ok()?))
        };
        let (Some((os, oc)), Some((ns, nc))) = (range(o), range(n)) else {
            continue;
        };
        widen(&mut old, os, oc);
        widen(&mut new, ns, nc);
    }
    Some((old?, new?))
}

/// Lines `span` of `text` with `context` lines on each side, and how many unchanged lines it
/// has at its start and its end.
fn region(text: &str, span: (usize, usize), context: usize) -> (String, (usize, usize)) {
    let lines: Vec<&str> = text.lines().collect();
    let start = span.0.saturating_sub(context + 1);
    let end = (span.1 + context).min(lines.len());
    if start >= end {
        return (String::new(), (0, 0));
    }
    let mut out = lines[start..end].join("\n");
    out.push('\n');
    let top = (span.0.saturating_sub(1)).saturating_sub(start).min(end - start);
    let bottom = end.saturating_sub(span.1.max(start)).min(end - start - top);
    (out, (top, bottom))
}

/// Mines `repo`'s history (newest first). `kept` says whether a path (as the dataset names it)
/// is a file the dataset keeps.
pub fn mine(repo: &Path, options: &HistoryOptions, kept: &dyn Fn(&str) -> bool) -> Result<Mined, HistoryError> {
    let mut mined = Mined::default();
    if !has_history(repo) {
        return Ok(mined);
    }
    mined.available = true;
    let max = format!("-n{}", options.max_commits);
    let log = git(
        repo,
        &[
            "log",
            "--no-merges",
            "-M",
            "--numstat",
            "--format=%x1e%H%x1f%P%x1f%B%x1f",
            &max,
            "HEAD",
            "--",
        ],
    )?;
    for record in log.split('\u{1e}').filter(|r| !r.trim().is_empty()) {
        mined.commits += 1;
        let mut fields = record.splitn(4, '\u{1f}');
        let (Some(hash), Some(parents), Some(message), Some(stats)) = (fields.next(), fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let skip = |mined: &mut Mined, why: Skip| *mined.skipped.entry(why).or_default() += 1;
        let parents: Vec<&str> = parents.split_whitespace().collect();
        let [parent] = parents[..] else {
            skip(&mut mined, Skip::RootCommit);
            continue;
        };
        let files: Vec<(&str, &str, &str)> = stats
            .lines()
            .filter_map(|l| {
                let mut p = l.splitn(3, '\t');
                Some((p.next()?, p.next()?, p.next()?))
            })
            .collect();
        if files.is_empty() {
            continue;
        }
        if files.iter().any(|(_, _, path)| path.contains(" => ")) {
            skip(&mut mined, Skip::Rename);
            continue;
        }
        if files.iter().any(|(a, _, _)| *a == "-") {
            skip(&mut mined, Skip::Binary);
            continue;
        }
        if files.len() > options.max_files {
            skip(&mut mined, Skip::TooManyFiles);
            continue;
        }
        if !files.iter().all(|(_, _, path)| kept(path)) {
            skip(&mut mined, Skip::FileNotKept);
            continue;
        }
        let message = message.trim();
        if !meaningful_message(message) {
            skip(&mut mined, Skip::Message);
            continue;
        }
        let paths: Vec<&str> = files.iter().map(|(_, _, p)| *p).collect();
        let mut args = vec![
            "diff",
            "--numstat",
            "--ignore-all-space",
            "--ignore-blank-lines",
            parent,
            hash,
            "--",
        ];
        args.extend(&paths);
        let real = git(repo, &args)?;
        let changed = real.lines().any(|l| {
            let mut p = l.split('\t');
            matches!((p.next(), p.next()), (Some(a), Some(d)) if a != "0" || d != "0")
        });
        if !changed {
            skip(&mut mined, Skip::FormattingOnly);
            continue;
        }
        for path in paths {
            let diff = git(repo, &["diff", "-U0", parent, hash, "--", path])?;
            let Some((old_span, new_span)) = changed_span(&diff) else {
                continue;
            };
            // A file the commit adds has no "before"; it is still a pair (write this file).
            let before = git(repo, &["show", &format!("{parent}:{path}")]).unwrap_or_default();
            let after = git(repo, &["show", &format!("{hash}:{path}")])?;
            let (before, before_context) = region(&before, old_span, options.context);
            let (after, after_context) = region(&after, new_span, options.context);
            mined.pairs.push(Pair {
                commit: hash.to_owned(),
                message: message.to_owned(),
                path: path.to_owned(),
                before,
                after,
                context: [before_context, after_context],
            });
        }
    }
    Ok(mined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_messages_are_not_instructions() {
        for m in [
            "wip",
            "fmt",
            "cargo fmt",
            "Bump version to 1.2",
            "Merge branch 'x'",
            "typo",
            "fix",
            "Update README.md",
        ] {
            assert!(!meaningful_message(m), "{m}");
        }
        for m in ["Retry the upload when the server answers 503", "Parse dates in the local time zone"] {
            assert!(meaningful_message(m), "{m}");
        }
    }

    #[test]
    fn the_changed_span_covers_every_hunk() {
        let diff = "@@ -3,2 +3,3 @@\n-a\n-b\n+a\n+b\n+c\n@@ -10 +11,0 @@\n-x\n";
        assert_eq!(changed_span(diff), Some(((3, 10), (3, 11))));
        let text: String = (1..=20).map(|i| format!("l{i}\n")).collect();
        assert_eq!(region(&text, (5, 6), 2), ("l3\nl4\nl5\nl6\nl7\nl8\n".to_owned(), (2, 2)));
        assert_eq!(region(&text, (1, 1), 3), ("l1\nl2\nl3\nl4\n".to_owned(), (0, 3)));
        assert_eq!(region(&text, (19, 20), 3), ("l16\nl17\nl18\nl19\nl20\n".to_owned(), (3, 0)));
    }

    #[test]
    fn a_pair_keeps_its_change_whole_with_less_context() {
        let text: String = (1..=30).map(|i| format!("l{i}\n")).collect();
        let changed = text.replace("l15\n", "l15 changed\nl15b\n");
        let (before, b) = region(&text, (15, 15), 5);
        let (after, a) = region(&changed, (15, 16), 5);
        let pair = Pair {
            commit: "c".into(),
            message: "m".into(),
            path: "p".into(),
            before,
            after,
            context: [b, a],
        };
        let two = pair.with_context(2);
        assert_eq!(two.before, "l13\nl14\nl15\nl16\nl17\n");
        assert_eq!(two.after, "l13\nl14\nl15 changed\nl15b\nl16\nl17\n");
        assert_eq!(two.context, [(2, 2), (2, 2)]);
        let none = pair.with_context(0);
        assert_eq!((none.before.as_str(), none.after.as_str()), ("l15\n", "l15 changed\nl15b\n"));
        // More context than the pair has changes nothing.
        assert_eq!(pair.with_context(9), pair);
        // A new file: nothing before, the whole file after.
        let (after, a) = region("x\ny\n", (1, 2), 5);
        let added = Pair {
            before: String::new(),
            after,
            context: [(0, 0), a],
            ..pair
        };
        assert_eq!(added.with_context(0).after, "x\ny\n");
    }
}
