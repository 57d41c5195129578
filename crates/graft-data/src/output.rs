//! A curated dataset on disk: JSONL in the shapes the usual trainers read, the manifest, a
//! readable summary and the split.
//!
//! ```text
//! DIR/train/text.jsonl               {"text"}: packed files and FIM samples, whole
//! DIR/train/prompt-completion.jsonl  {"prompt", "completion"}: FIM and retrieval-augmented
//!                                    samples, history pairs, examples
//! DIR/train/chat.jsonl               {"messages"}: history pairs and examples as conversations
//! DIR/validation/...                 the same for the validation files
//! DIR/manifest.json                  every file's decision and reason, counts, the split
//! DIR/summary.txt                    the same counts for a person
//! DIR/split.json                     the held-out split (the evaluation's)
//! ```
//!
//! Each record also has `kind` (`file`, `fim`, `retrieved`, `history`, `gold`), `sources` (a
//! retrieval-augmented sample's file first, then those its retrieved code came from) and
//! `tokens`.
//! Files are written beside their final name and renamed, so a reader never sees half a file;
//! a folder that is not empty and holds no graft dataset is refused rather than overwritten.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::curate::{Dataset, Manifest};
use crate::samples::{Body, Kind, Part, Sample};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not empty and holds no graft dataset (no manifest.json); choose another folder with -o", .0.display())]
    NotADataset(PathBuf),
}

/// The three JSONL files of a part.
pub const FILES: &[&str] = &["text.jsonl", "prompt-completion.jsonl", "chat.jsonl"];

fn record(sample: &Sample, fields: Value) -> Value {
    let mut value = fields;
    value["kind"] = json!(sample.kind.as_str());
    value["sources"] = json!(sample.sources);
    value["tokens"] = json!(sample.tokens);
    value
}

fn conversation(prompt: &str, completion: &str) -> Value {
    json!([{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}])
}

/// The records of one sample for each of [`FILES`] (none, one or two of them).
pub fn records(sample: &Sample) -> [Option<Value>; 3] {
    match &sample.body {
        Body::Text(text) => [Some(record(sample, json!({"text": text}))), None, None],
        Body::Completion { prompt, completion } => {
            let text = (sample.kind == Kind::Fim).then(|| record(sample, json!({"text": format!("{prompt}{completion}")})));
            // A completion prompt (FIM or retrieval-augmented) is no conversation.
            let chat = (!matches!(sample.kind, Kind::Fim | Kind::Retrieved))
                .then(|| record(sample, json!({"messages": conversation(prompt, completion)})));
            [
                text,
                Some(record(sample, json!({"prompt": prompt, "completion": completion}))),
                chat,
            ]
        }
        Body::Chat(messages) => [None, None, Some(record(sample, json!({"messages": messages})))],
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file beside it.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let tmp = path.with_extension("partial");
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Writes the dataset into `dir`; returns the files written.
pub fn write(dir: &Path, dataset: &Dataset) -> Result<Vec<PathBuf>, OutputError> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io(dir))?;
        if entries.next().is_some() && !dir.join("manifest.json").exists() {
            return Err(OutputError::NotADataset(dir.to_owned()));
        }
    }
    let mut written = Vec::new();
    for part in [Part::Train, Part::Validation] {
        let folder = dir.join(part.as_str());
        std::fs::create_dir_all(&folder).map_err(io(&folder))?;
        let mut contents = [String::new(), String::new(), String::new()];
        for sample in dataset.samples.iter().filter(|s| s.part == part) {
            for (slot, value) in contents.iter_mut().zip(records(sample)) {
                if let Some(value) = value {
                    slot.push_str(&value.to_string());
                    slot.push('\n');
                }
            }
        }
        for (name, content) in FILES.iter().zip(contents) {
            let path = folder.join(name);
            replace(&path, content.as_bytes())?;
            written.push(path);
        }
    }
    let manifest = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(&dataset.manifest).map_err(|e| io(&manifest)(std::io::Error::other(e)))?;
    replace(&manifest, (text + "\n").as_bytes())?;
    written.push(manifest);
    let summary_path = dir.join("summary.txt");
    replace(&summary_path, summary(&dataset.manifest).as_bytes())?;
    written.push(summary_path);
    let split = dir.join("split.json");
    let text = serde_json::to_string_pretty(&dataset.manifest.split).map_err(|e| io(&split)(std::io::Error::other(e)))?;
    replace(&split, (text + "\n").as_bytes())?;
    written.push(split);
    Ok(written)
}

/// `label` and `name count` pairs, or nothing for no counts.
fn listed(label: &str, counts: &std::collections::BTreeMap<&'static str, usize>) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let items: Vec<String> = counts.iter().map(|(name, n)| format!("{name} {n}")).collect();
    format!("{label}{}", items.join(", "))
}

/// The manifest's counts for a person.
pub fn summary(m: &Manifest) -> String {
    let mut out = String::new();
    let count = |d: &str| m.files.iter().filter(|f| f.decision == d).count();
    let _ = writeln!(out, "dataset for `{}` from {}", m.project, m.repository.display());
    let _ = writeln!(
        out,
        "  files:      {} train, {} validation, {} held out, {} dropped",
        count("train"),
        count("validation"),
        count("held-out"),
        count("dropped")
    );
    for (reason, n) in &m.dropped {
        let _ = writeln!(out, "    dropped {reason}: {n}");
    }
    let _ = writeln!(
        out,
        "  secrets:    {} files with findings ({}), {} samples left out{}",
        m.secrets.files,
        m.secrets.action,
        m.secrets.samples_dropped,
        listed("; by rule: ", &m.secrets.by_rule)
    );
    if m.history.available {
        let _ = writeln!(
            out,
            "  history:    {} commits read, {} pairs ({} with fewer lines around the change, to fit){}",
            m.history.commits,
            m.history.pairs,
            m.history.shortened,
            listed("; commits skipped: ", &m.history.skipped)
        );
    } else {
        let _ = writeln!(out, "  history:    none (not a git repository, or history = false)");
    }
    let r = &m.retrieval;
    match &r.unused {
        _ if r.rate == 0.0 => {
            let _ = writeln!(out, "  retrieval:  none (dataset.retrieval_rate = 0)");
        }
        Some(why) => {
            let _ = writeln!(out, "  retrieval:  none: {why}");
        }
        None => {
            let _ = writeln!(
                out,
                "  retrieval:  {} of {} pieces chosen made samples ({} with no code found, {} blank, {} too long)",
                r.samples, r.pieces, r.no_code, r.no_cursor, r.too_long
            );
        }
    }
    let _ = writeln!(out, "  samples ({}, at most {} tokens):", m.format, m.max_sample_tokens);
    for (part, kinds) in &m.samples {
        for (kind, c) in kinds {
            let _ = writeln!(out, "    {part:<10} {kind:<9} {:>6} samples {:>10} tokens", c.samples, c.tokens);
        }
    }
    if m.gold > 0 {
        let _ = writeln!(out, "  examples:   {} of the team's own (train)", m.gold);
    }
    out
}
