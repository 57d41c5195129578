//! The held-out split: the files of a repository kept out of everything a model could learn
//! or retrieve from (training data, the evaluation's index), so the golden set's tasks test
//! what the model has not seen.
//!
//! Chosen reproducibly: each file by a seeded hash of its path (adding a file never moves
//! another across the split), or the files changed since a commit, or a list. Written as JSON
//! beside the golden set (`<golden>.split.json`); dataset curation reads the same file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::random::stable_fraction;

/// How the held-out files were chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Method {
    /// Each file with probability `fraction`, by a hash of its path under `seed`.
    Fraction { fraction: f64, seed: u64 },
    /// The files changed after `commit` (git).
    Since { commit: String },
    /// Named by hand.
    List,
}

/// A held-out split of one repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    /// The repository split (absolute), when known: `graft eval run` indexes it without the
    /// held-out files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<PathBuf>,
    #[serde(flatten)]
    pub method: Method,
    /// Held-out paths, relative to the repository root with `/`, sorted.
    pub held_out: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("holdout fraction must be between 0 and 1 (exclusive), got {0}")]
    Fraction(f64),
    #[error("cannot list the files changed since {commit}: {message}")]
    Git { commit: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a split file: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl Split {
    /// Each of `paths` held out with probability `fraction` (seeded; stable per path).
    pub fn by_fraction<'a>(paths: impl IntoIterator<Item = &'a str>, fraction: f64, seed: u64) -> Result<Split, SplitError> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(SplitError::Fraction(fraction));
        }
        let held_out = paths
            .into_iter()
            .filter(|p| stable_fraction(seed, &["holdout", p]) < fraction)
            .map(str::to_owned)
            .collect();
        Ok(Split {
            repository: None,
            method: Method::Fraction { fraction, seed },
            held_out,
        })
    }

    /// The files of `repo` changed after `commit`, as git reports them (renames by their new
    /// name; deleted files left out).
    pub fn since(repo: &Path, commit: &str) -> Result<Split, SplitError> {
        let git = |message: String| SplitError::Git {
            commit: commit.to_owned(),
            message,
        };
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["diff", "--name-only", "--diff-filter=d", "--relative", commit, "--"])
            .output()
            .map_err(|e| git(format!("cannot run git: {e}")))?;
        if !output.status.success() {
            return Err(git(String::from_utf8_lossy(&output.stderr).trim().to_owned()));
        }
        let held_out = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Split {
            repository: None,
            method: Method::Since { commit: commit.to_owned() },
            held_out,
        })
    }

    /// The files named.
    pub fn listed<'a>(paths: impl IntoIterator<Item = &'a str>) -> Split {
        Split {
            repository: None,
            method: Method::List,
            held_out: paths.into_iter().map(|p| p.trim_start_matches("./").to_owned()).collect(),
        }
    }

    pub fn contains(&self, path: &str) -> bool {
        self.held_out.contains(path)
    }

    /// The split file beside a golden set: `golden.jsonl` → `golden.split.json`.
    pub fn path_beside(golden: &Path) -> PathBuf {
        let stem = golden
            .file_stem()
            .map_or_else(|| "golden".into(), |s| s.to_string_lossy().into_owned());
        golden.with_file_name(format!("{stem}.split.json"))
    }

    pub fn write(&self, path: &Path) -> Result<(), SplitError> {
        let io = |source| SplitError::Io {
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        std::fs::write(path, text + "\n").map_err(io)
    }

    pub fn read(path: &Path) -> Result<Split, SplitError> {
        let text = std::fs::read_to_string(path).map_err(|source| SplitError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| SplitError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("src/file_{i}.rs")).collect()
    }

    #[test]
    fn a_fraction_split_is_reproducible_and_stable_when_files_are_added() {
        let files = paths(400);
        let a = Split::by_fraction(files.iter().map(String::as_str), 0.2, 7).unwrap();
        let b = Split::by_fraction(files.iter().map(String::as_str), 0.2, 7).unwrap();
        assert_eq!(a, b, "same files, same seed: same split");
        let share = a.held_out.len() as f64 / files.len() as f64;
        assert!((0.14..0.26).contains(&share), "about a fifth held out: {share}");
        let other = Split::by_fraction(files.iter().map(String::as_str), 0.2, 8).unwrap();
        assert_ne!(a.held_out, other.held_out, "another seed, another split");

        let more = paths(500);
        let c = Split::by_fraction(more.iter().map(String::as_str), 0.2, 7).unwrap();
        assert!(a.held_out.iter().all(|p| c.contains(p)), "new files move no old one");
        assert!(Split::by_fraction(files.iter().map(String::as_str), 1.0, 7).is_err());
    }

    #[test]
    fn a_split_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let split = Split::listed(["./a.rs", "b/c.py"]);
        let path = Split::path_beside(&dir.path().join("golden.jsonl"));
        assert!(path.ends_with("golden.split.json"));
        split.write(&path).unwrap();
        assert_eq!(Split::read(&path).unwrap(), split);
        assert!(split.contains("a.rs") && split.contains("b/c.py"));
        std::fs::write(&path, "{}").unwrap();
        assert!(matches!(Split::read(&path), Err(SplitError::Invalid { .. })));
    }

    #[test]
    fn files_changed_since_a_commit_are_held_out() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        std::fs::write(dir.path().join("old.rs"), "fn old() {}\n").unwrap();
        git(&["add", "."]);
        git(&["commit", "-qm", "first"]);
        std::fs::write(dir.path().join("new.rs"), "fn new() {}\n").unwrap();
        std::fs::write(dir.path().join("old.rs"), "fn old() { 1; }\n").unwrap();
        git(&["add", "."]);
        git(&["commit", "-qm", "second"]);
        std::fs::write(dir.path().join("gone.rs"), "").unwrap();
        let split = Split::since(dir.path(), "HEAD~1").unwrap();
        assert_eq!(split.held_out.iter().map(String::as_str).collect::<Vec<_>>(), ["new.rs", "old.rs"]);
        assert!(matches!(Split::since(dir.path(), "no-such-commit"), Err(SplitError::Git { .. })));
    }
}
