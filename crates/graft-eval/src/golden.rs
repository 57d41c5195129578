//! The golden set: the tasks an evaluation runs, one JSON object a line (JSONL), so a team
//! can read, diff and extend it by hand.
//!
//! A completion task (`kind`: `line`, `api`, `span`) gives the code before the cursor
//! (`prefix`) and after it (`suffix`) in one file, and the `target` that belongs at the cursor;
//! an `api` task's target uses `symbol`, defined in `defined_in` (another file). A question
//! task (`kind`: `question`) gives a `question`, a `reference` answer and the `files` that
//! answer it; it is judged, not matched. The team's own examples are question tasks too:
//! `{"question": "...", "reference": "...", "files": ["..."]}` (the other fields may be left
//! out). Reading reports the first bad line by number and field.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a task asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Complete a whole code line.
    Line,
    /// Complete a line that uses a symbol defined in another file of the repository.
    Api,
    /// Fill in part of a line, the rest of a line, or a block (fill-in-the-middle).
    Span,
    /// Answer a question about the code (judged).
    Question,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Line => "line",
            TaskKind::Api => "api",
            TaskKind::Span => "span",
            TaskKind::Question => "question",
        }
    }
}

/// One task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Unique within the set (`line-0007`).
    #[serde(default)]
    pub id: String,
    #[serde(default = "question")]
    pub kind: TaskKind,
    /// The file the task comes from (completion tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Code before the cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Code after the cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// What belongs at the cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `rest_of_line`, `middle_of_line` or `block`, for span tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<String>,
    /// The symbol from another file that the target uses (api tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// The file that defines `symbol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defined_in: Option<String>,
    /// The question (question tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    /// The reference answer (question tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The files that answer the question.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// `repository` (made by `graft eval build`) or `gold` (written by a person).
    #[serde(default = "gold")]
    pub origin: String,
}

fn question() -> TaskKind {
    TaskKind::Question
}

fn gold() -> String {
    "gold".to_owned()
}

impl Task {
    /// A completion task of `kind` in `path`: `target` between `prefix` and `suffix`, made
    /// from the repository (no id yet).
    pub fn completion(kind: TaskKind, path: &str, prefix: &str, target: &str, suffix: &str) -> Task {
        Task {
            id: String::new(),
            kind,
            path: Some(path.to_owned()),
            prefix: Some(prefix.to_owned()),
            suffix: Some(suffix.to_owned()),
            target: Some(target.to_owned()),
            span: None,
            symbol: None,
            defined_in: None,
            question: None,
            reference: None,
            files: Vec::new(),
            origin: "repository".to_owned(),
        }
    }

    /// Whether the target uses a symbol defined in another file.
    pub fn cross_file(&self) -> bool {
        self.defined_in.is_some()
    }

    /// The fields a task of its kind must have, named when missing.
    fn check(&self) -> Result<(), &'static str> {
        let present = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        match self.kind {
            TaskKind::Question => {
                if !present(&self.question) {
                    return Err("question");
                }
                if !present(&self.reference) {
                    return Err("reference");
                }
            }
            _ => {
                if !present(&self.path) {
                    return Err("path");
                }
                if self.prefix.is_none() {
                    return Err("prefix");
                }
                if !present(&self.target) {
                    return Err("target");
                }
            }
        }
        Ok(())
    }
}

/// A golden set: its tasks, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GoldenSet {
    pub tasks: Vec<Task>,
}

#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line that is not a task: its number (1-based), the field at fault, what is wrong.
    #[error("{}: line {line}: `{field}`: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
}

impl GoldenSet {
    /// Reads a JSONL golden set (blank lines and lines starting with `#` are skipped). Tasks
    /// without an id get `gold-<line>`.
    pub fn read(path: &Path) -> Result<GoldenSet, GoldenError> {
        let text = std::fs::read_to_string(path).map_err(|source| GoldenError::Io {
            path: path.to_owned(),
            source,
        })?;
        GoldenSet::parse(&text, path)
    }

    /// Parses JSONL text read from `origin` (named in errors).
    pub fn parse(text: &str, origin: &Path) -> Result<GoldenSet, GoldenError> {
        let mut tasks = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let bad = |field: String, message: String| GoldenError::Line {
                path: origin.to_owned(),
                line: number,
                field,
                message,
            };
            let mut de = serde_json::Deserializer::from_str(trimmed);
            let mut task: Task = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let field = e.path().to_string();
                let field = if field == "." { "(the line)".to_owned() } else { field };
                // serde's position is within the line; the line number is ours.
                let message = e.into_inner().to_string();
                let message = message.split(" at line ").next().unwrap_or_default().to_owned();
                bad(field, message)
            })?;
            task.check()
                .map_err(|field| bad(field.to_owned(), format!("a {} task needs `{field}`", task.kind.as_str())))?;
            if task.id.is_empty() {
                task.id = format!("gold-{number}");
            }
            tasks.push(task);
        }
        Ok(GoldenSet { tasks })
    }

    /// Writes the set as JSONL.
    pub fn write(&self, path: &Path) -> Result<(), GoldenError> {
        let io = |source| GoldenError::Io {
            path: path.to_owned(),
            source,
        };
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
        for task in &self.tasks {
            let line = serde_json::to_string(task).map_err(|e| io(std::io::Error::other(e)))?;
            writeln!(out, "{line}").map_err(io)?;
        }
        out.flush().map_err(io)
    }

    /// How many tasks of each kind.
    pub fn counts(&self) -> std::collections::BTreeMap<TaskKind, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for task in &self.tasks {
            *counts.entry(task.kind).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GoldenSet, GoldenError> {
        GoldenSet::parse(text, Path::new("gold.jsonl"))
    }

    #[test]
    fn a_hand_written_example_needs_only_question_and_reference() {
        let set = parse(
            "# our own\n\n{\"question\": \"How are keys rotated?\", \"reference\": \"rotateSigningKeys\", \"files\": [\"a.java\"]}\n",
        )
        .unwrap();
        assert_eq!(set.tasks.len(), 1);
        let task = &set.tasks[0];
        assert_eq!(
            (task.kind, task.id.as_str(), task.origin.as_str()),
            (TaskKind::Question, "gold-3", "gold")
        );
        assert_eq!(task.files, ["a.java"]);
    }

    #[test]
    fn a_bad_line_is_named_with_its_field() {
        let good = "{\"question\": \"q\", \"reference\": \"r\"}";
        let cases = [
            ("{\"question\": \"q\"}", 2, "reference"),
            ("{\"question\": 3, \"reference\": \"r\"}", 2, "question"),
            ("{\"kind\": \"line\", \"path\": \"a.rs\", \"prefix\": \"\"}", 2, "target"),
            ("{\"kind\": \"guess\", \"question\": \"q\", \"reference\": \"r\"}", 2, "kind"),
            ("{\"question\": \"q\", \"reference\": \"r\", \"extra\": 1}", 2, "extra"),
            ("not json", 2, "(the line)"),
            ("{\"question\": \"q\", \"reference\": \"r\", \"files\": \"a.rs\"}", 2, "files"),
        ];
        for (bad, line, field) in cases {
            let err = parse(&format!("{good}\n{bad}\n")).unwrap_err();
            match &err {
                GoldenError::Line { line: l, field: f, .. } => {
                    assert_eq!((*l, f.as_str()), (line, field), "{bad}: {err}");
                }
                other => panic!("{bad}: {other}"),
            }
            assert!(err.to_string().starts_with(&format!("gold.jsonl: line {line}: `{field}`")), "{err}");
        }
    }

    #[test]
    fn a_set_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let task = Task {
            id: "api-0001".into(),
            kind: TaskKind::Api,
            path: Some("src/a.rs".into()),
            prefix: Some("fn main() {\n    ".into()),
            suffix: Some("\n}\n".into()),
            target: Some("let v = TokenVault::open(path);".into()),
            span: None,
            symbol: Some("TokenVault".into()),
            defined_in: Some("src/vault.rs".into()),
            question: None,
            reference: None,
            files: Vec::new(),
            origin: "repository".into(),
        };
        let set = GoldenSet { tasks: vec![task] };
        let path = dir.path().join("golden.jsonl");
        set.write(&path).unwrap();
        assert_eq!(GoldenSet::read(&path).unwrap(), set);
        assert!(set.tasks[0].cross_file());
    }
}
