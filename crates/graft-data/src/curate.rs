//! The whole curation of one repository: the walked files through the filters, secrets,
//! duplicates and the split, then samples from what is kept, from history and from the
//! team's examples, and the manifest that says what happened to every file.
//!
//! Order matters and is fixed: held-out files are set aside first (they are never read for
//! training, only compared against: a kept file nearly the same as a held-out one is dropped,
//! or training would leak the evaluation), then the filters, then secrets (before anything is
//! copied), then duplicates among what is left. This module decides and makes samples; writing
//! them is [`crate::output`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use graft_core::random::stable_fraction;
use graft_core::split::Split;
use graft_core::{DatasetConfig, SecretAction};
use graft_engine::{EngineError, PromptFormat, Tokenizer};
use graft_index::walk::Walk;
use serde::Serialize;

use crate::dedup::{self, Verdict};
use crate::history::{self, HistoryError, HistoryOptions};
use crate::retrieved::{self, RetrievalSummary, Retrieve, RetrievedError};
use crate::samples::{self, Body, Kind, PackOptions, Part, Sample};
use crate::secrets;
use crate::select::{self, DropReason};
use crate::Progress;

/// Everything a curation needs.
pub struct Input<'a> {
    pub repository: &'a Path,
    pub project: &'a str,
    pub walk: &'a Walk,
    pub split: &'a Split,
    pub tokenizer: &'a Tokenizer,
    pub format: PromptFormat,
    pub config: &'a DatasetConfig,
    /// The team's own examples (always training data).
    pub gold: Vec<Body>,
    /// Seed of the validation choice and of FIM spans.
    pub seed: u64,
    /// Where retrieval-augmented samples get their code (`config.retrieval_rate` of pieces).
    pub retrieval: RetrievalSource<'a>,
}

/// Where retrieval-augmented samples ([`crate::retrieved`]) get their code.
pub enum RetrievalSource<'a> {
    /// The project's index, asked as the server asks it.
    Index(&'a dyn Retrieve),
    /// None, and why (no index yet, ...): the dataset is made without them.
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CurateError {
    #[error(transparent)]
    Tokenizer(#[from] EngineError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Retrieved(#[from] RetrievedError),
}

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileEntry {
    pub path: String,
    /// `train`, `validation`, `held-out` or `dropped`.
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Rules of secrets replaced by placeholders (`--redact`); never the secrets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
}

/// Samples and tokens of one part and kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Count {
    pub samples: usize,
    pub tokens: usize,
}

/// Everything the manifest says.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub project: String,
    pub repository: PathBuf,
    /// The prompt format samples are laid out in.
    pub format: String,
    pub max_sample_tokens: usize,
    pub files: Vec<FileEntry>,
    /// Files dropped, by reason group.
    pub dropped: BTreeMap<String, usize>,
    pub secrets: SecretsSummary,
    pub history: HistorySummary,
    /// Retrieval-augmented samples: how many pieces were chosen and what they gave.
    pub retrieval: RetrievalSummary,
    /// Samples and tokens per part and kind.
    pub samples: BTreeMap<&'static str, BTreeMap<&'static str, Count>>,
    pub gold: usize,
    pub split: Split,
    /// Files used for validation.
    pub validation: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SecretsSummary {
    /// `drop` or `redact`.
    pub action: &'static str,
    /// Files in which a secret was found.
    pub files: usize,
    /// Findings by rule, in files, history pairs and examples together.
    pub by_rule: BTreeMap<&'static str, usize>,
    /// History pairs and examples left out for a secret.
    pub samples_dropped: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HistorySummary {
    /// Whether the repository has a git history here.
    pub available: bool,
    pub commits: usize,
    pub pairs: usize,
    /// Pairs kept with fewer unchanged lines around the change, to fit `max_sample_tokens`.
    pub shortened: usize,
    pub skipped: BTreeMap<&'static str, usize>,
}

/// The curated samples and their manifest.
#[derive(Debug)]
pub struct Dataset {
    pub samples: Vec<Sample>,
    pub manifest: Manifest,
}

fn part_of(path: &str, seed: u64, fraction: f64) -> Part {
    if stable_fraction(seed, &["validation", path]) < fraction {
        Part::Validation
    } else {
        Part::Train
    }
}

/// Secrets in `text` handled by `action`: `None` when the text must be dropped.
fn clean(text: &str, action: SecretAction, summary: &mut SecretsSummary) -> (Option<String>, Vec<&'static str>) {
    let found = secrets::scan(text);
    if found.is_empty() {
        return (Some(text.to_owned()), Vec::new());
    }
    for f in &found {
        *summary.by_rule.entry(f.rule).or_default() += 1;
    }
    // Each rule once, whatever the order the secrets were found in.
    let mut rules: Vec<&'static str> = found.iter().map(|f| f.rule).collect();
    rules.sort_unstable();
    rules.dedup();
    match action {
        SecretAction::Drop => (None, rules),
        SecretAction::Redact => (Some(secrets::redact(text, &found)), rules),
    }
}

/// Runs the curation.
pub fn curate(input: Input<'_>, progress: &dyn Progress) -> Result<Dataset, CurateError> {
    let config = input.config;
    let mut files: Vec<FileEntry> = Vec::new();
    let mut secrets_summary = SecretsSummary {
        action: match config.secrets {
            SecretAction::Drop => "drop",
            SecretAction::Redact => "redact",
        },
        ..SecretsSummary::default()
    };
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    let mut drop = |files: &mut Vec<FileEntry>, path: &str, reason: DropReason| {
        *dropped.entry(reason.group()).or_default() += 1;
        files.push(FileEntry {
            path: path.to_owned(),
            decision: "dropped",
            reason: Some(reason.describe()),
            redacted: Vec::new(),
        })
    };
    for skipped in &input.walk.skipped_files {
        let reason = DropReason::Walk(skipped.reason.as_str().to_owned(), skipped.detail.clone());
        drop(&mut files, &skipped.path, reason);
    }

    // Held out first, then the filters and secrets.
    progress.stage("filter", input.walk.files.len());
    let mut held_out: Vec<(&str, &str)> = Vec::new();
    let mut candidates: Vec<(String, String, Vec<&'static str>)> = Vec::new();
    for file in &input.walk.files {
        progress.advance(1);
        if input.split.contains(&file.path) {
            held_out.push((&file.path, &file.text));
            files.push(FileEntry {
                path: file.path.clone(),
                decision: "held-out",
                reason: None,
                redacted: Vec::new(),
            });
            continue;
        }
        match select::check(&file.path, &file.text, config) {
            // A file the repository's .gitattributes marks `-linguist-generated` is its own
            // code, whatever its first lines say (the walk followed the same marks).
            Err(DropReason::AutoGenerated) if input.walk.attributes.generated(&file.path) == Some(false) => {}
            Err(reason) => {
                drop(&mut files, &file.path, reason);
                continue;
            }
            Ok(()) => {}
        }
        if let Some(token) = input.tokenizer.special_written(&file.text) {
            drop(&mut files, &file.path, DropReason::SpecialToken(token.to_owned()));
            continue;
        }
        match clean(&file.text, config.secrets, &mut secrets_summary) {
            (None, rules) => {
                secrets_summary.files += 1;
                drop(&mut files, &file.path, DropReason::Secret(rules.join(", ")));
            }
            (Some(text), rules) => {
                if !rules.is_empty() {
                    secrets_summary.files += 1;
                }
                candidates.push((file.path.clone(), text, rules));
            }
        }
    }

    // Duplicates: held-out files first, so a cluster with one of them is rooted there.
    progress.stage("deduplicate", 1);
    let texts: Vec<&str> = held_out
        .iter()
        .map(|(_, t)| *t)
        .chain(candidates.iter().map(|(_, t, _)| t.as_str()))
        .collect();
    let verdicts = dedup::deduplicate(&texts, config.near_duplicate_threshold, config.shingle_tokens);
    progress.advance(1);
    let path_of = |i: usize| -> String {
        if i < held_out.len() {
            held_out[i].0.to_owned()
        } else {
            candidates[i - held_out.len()].0.clone()
        }
    };
    let mut kept: Vec<(String, String, Part)> = Vec::new();
    let mut validation = BTreeSet::new();
    for (k, (path, text, rules)) in candidates.iter().enumerate() {
        let reason = match verdicts[held_out.len() + k] {
            Verdict::Kept => None,
            Verdict::ExactOf(i) | Verdict::NearOf(i) if i < held_out.len() => Some(DropReason::NearHeldOut(path_of(i))),
            Verdict::ExactOf(i) => Some(DropReason::ExactDuplicate(path_of(i))),
            Verdict::NearOf(i) => Some(DropReason::NearDuplicate(path_of(i))),
        };
        if let Some(reason) = reason {
            drop(&mut files, path, reason);
            continue;
        }
        let part = part_of(path, input.seed, config.validation_fraction);
        if part == Part::Validation {
            validation.insert(path.clone());
        }
        files.push(FileEntry {
            path: path.clone(),
            decision: part.as_str(),
            reason: None,
            redacted: rules.iter().map(|r| r.to_string()).collect(),
        });
        kept.push((path.clone(), text.clone(), part));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));

    // Files packed, per part, in path order.
    let options = PackOptions {
        repo: input.project.to_owned(),
        format: input.format,
        max_tokens: config.max_sample_tokens,
        fim_rate: config.fim_rate,
        spm_rate: config.fim_spm_rate,
        retrieval_rate: config.retrieval_rate,
        seed: input.seed,
    };
    // Each part's files (path, text), in path order: related files next to each other.
    let of_part = |part: Part| -> Vec<(&str, &str)> {
        let mut files: Vec<(&str, &str)> = kept
            .iter()
            .filter(|(_, _, p)| *p == part)
            .map(|(path, text, _)| (path.as_str(), text.as_str()))
            .collect();
        files.sort();
        files
    };
    let parts = [(Part::Train, of_part(Part::Train)), (Part::Validation, of_part(Part::Validation))];
    let mut samples = Vec::new();
    progress.stage("pack", kept.len());
    for (part, files) in &parts {
        samples.extend(samples::pack(files, *part, input.tokenizer, &options, progress)?);
    }

    // Retrieval-augmented samples: a training sample sees training files only, a validation
    // sample training and validation files; neither a held-out or dropped one.
    let mut retrieval = RetrievalSummary {
        rate: config.retrieval_rate,
        ..RetrievalSummary::default()
    };
    if config.retrieval_rate > 0.0 {
        match input.retrieval {
            RetrievalSource::Index(retriever) => {
                let training = &parts[0].1;
                for (part, files) in &parts {
                    let mut visible: BTreeMap<&str, &str> = training.iter().copied().collect();
                    visible.extend(files.iter().copied());
                    let (made, summary) = retrieved::make(files, *part, &visible, input.tokenizer, &options, retriever, progress)?;
                    samples.extend(made);
                    retrieval.add(&summary);
                }
            }
            RetrievalSource::Unavailable(why) => retrieval.unused = Some(why),
        }
    }

    // History.
    let mut history_summary = HistorySummary::default();
    if config.history {
        progress.stage("history", 1);
        let parts: BTreeMap<&str, Part> = kept.iter().map(|(p, _, part)| (p.as_str(), *part)).collect();
        let options = HistoryOptions {
            max_files: config.history_max_files,
            max_commits: config.history_max_commits,
            context: config.history_context_lines,
        };
        let mined = history::mine(input.repository, &options, &|path| parts.contains_key(path))?;
        progress.advance(1);
        history_summary.available = mined.available;
        history_summary.commits = mined.commits;
        history_summary.skipped = mined.skipped.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        for pair in mined.pairs {
            // A pair too long keeps its change whole with fewer unchanged lines around it.
            let mut context = config.history_context_lines;
            let (prompt, completion) = loop {
                let (prompt, completion) = instruction(&pair.with_context(context));
                let tokens = input.tokenizer.count(&prompt)? + input.tokenizer.count(&completion)?;
                if tokens <= config.max_sample_tokens || context == 0 {
                    break (prompt, completion);
                }
                context /= 2;
            };
            let (Some(prompt), _) = clean(&prompt, config.secrets, &mut secrets_summary) else {
                secrets_summary.samples_dropped += 1;
                continue;
            };
            let (Some(completion), _) = clean(&completion, config.secrets, &mut secrets_summary) else {
                secrets_summary.samples_dropped += 1;
                continue;
            };
            let tokens = input.tokenizer.count(&prompt)? + input.tokenizer.count(&completion)?;
            if tokens > config.max_sample_tokens {
                *history_summary.skipped.entry("too-long").or_default() += 1;
                continue;
            }
            history_summary.pairs += 1;
            if context < config.history_context_lines {
                history_summary.shortened += 1;
            }
            samples.push(Sample {
                kind: Kind::History,
                part: parts.get(pair.path.as_str()).copied().unwrap_or(Part::Train),
                sources: vec![pair.path.clone(), format!("commit {}", pair.commit)],
                body: Body::Completion { prompt, completion },
                tokens,
            });
        }
    }

    // The team's examples, as they are (secrets aside).
    let mut gold = 0;
    for body in input.gold {
        let Some(body) = clean_body(body, config.secrets, &mut secrets_summary) else {
            secrets_summary.samples_dropped += 1;
            continue;
        };
        let tokens = body_tokens(&body, input.tokenizer)?;
        gold += 1;
        samples.push(Sample {
            kind: Kind::Gold,
            part: Part::Train,
            sources: vec!["gold".into()],
            body,
            tokens,
        });
    }

    let mut counts: BTreeMap<&'static str, BTreeMap<&'static str, Count>> = BTreeMap::new();
    for s in &samples {
        let c = counts.entry(s.part.as_str()).or_default().entry(s.kind.as_str()).or_default();
        c.samples += 1;
        c.tokens += s.tokens;
    }
    Ok(Dataset {
        samples,
        manifest: Manifest {
            project: input.project.to_owned(),
            repository: input.repository.to_owned(),
            format: input.format.name().to_owned(),
            max_sample_tokens: config.max_sample_tokens,
            files,
            dropped,
            secrets: secrets_summary,
            history: history_summary,
            retrieval,
            samples: counts,
            gold,
            split: input.split.clone(),
            validation,
        },
    })
}

/// A commit as an instruction pair: the message and the code before → the code after.
pub fn instruction(pair: &history::Pair) -> (String, String) {
    let fence = fence_language(&pair.path);
    let before = if pair.before.is_empty() {
        format!("`{}` is a new file.", pair.path)
    } else {
        format!("The code in `{}`:\n\n```{fence}\n{}```", pair.path, pair.before)
    };
    let prompt = format!("{}\n\n{before}\n\nRewrite it to make this change.", pair.message);
    let completion = format!("```{fence}\n{}```", pair.after);
    (prompt, completion)
}

fn fence_language(path: &str) -> &'static str {
    match graft_index::chunker::language_of(path) {
        "text" => "",
        other => other,
    }
}

fn clean_body(body: Body, action: SecretAction, summary: &mut SecretsSummary) -> Option<Body> {
    let mut one = |text: &str| clean(text, action, summary).0;
    Some(match body {
        Body::Text(t) => Body::Text(one(&t)?),
        Body::Completion { prompt, completion } => Body::Completion {
            prompt: one(&prompt)?,
            completion: one(&completion)?,
        },
        Body::Chat(messages) => {
            let mut out = Vec::new();
            for m in messages {
                out.push(samples::Message {
                    role: m.role,
                    content: one(&m.content)?,
                });
            }
            Body::Chat(out)
        }
    })
}

fn body_tokens(body: &Body, tokenizer: &Tokenizer) -> Result<usize, EngineError> {
    Ok(match body {
        Body::Text(t) => tokenizer.count(t)?,
        Body::Completion { prompt, completion } => tokenizer.count(prompt)? + tokenizer.count(completion)?,
        Body::Chat(messages) => {
            let mut n = 0;
            for m in messages {
                n += tokenizer.count(&m.content)?;
            }
            n
        }
    })
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use graft_index::walk::{walk, WalkOptions};

    use super::*;
    use crate::output;
    use crate::samples::tests::starcoder_like;
    use crate::secrets::tests::planted;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=Test",
                "-c",
                "user.email=test@example.com",
                "-c",
                "init.defaultBranch=main",
            ])
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn write(dir: &Path, path: &str, text: &str) {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn commit(dir: &Path, message: &str) -> String {
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "-m", message]);
        git(dir, &["rev-parse", "HEAD"])
    }

    fn module(name: &str, lines: usize) -> String {
        (0..lines)
            .map(|i| {
                format!(
                    "pub fn {name}_{i}(value: u64) -> u64 {{\n    value * {} + {}\n}}\n\n",
                    i + 2,
                    i * 7 + 1
                )
            })
            .collect()
    }

    struct Repo {
        dir: tempfile::TempDir,
        pair_commit: String,
        branch_commit: String,
        merge_commit: String,
    }

    /// A repository with every case: duplicates, a held-out file and its near copy, one file
    /// per kind of secret, a generated file, and a history of a real change, a formatting-only
    /// one, a rename, a merge and a change to the held-out file.
    fn repository() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q"]);
        write(d, "src/alpha.rs", &module("alpha", 30));
        write(d, "src/beta.rs", &module("beta", 30));
        write(d, "src/alpha_copy.rs", &module("alpha", 30));
        write(d, "src/delta.rs", &module("delta", 20));
        write(d, "lib/delta.rs", &module("delta", 20));
        write(
            d,
            "src/alpha_near.rs",
            &module("alpha", 30).replacen("value * 2 + 1", "value * 200 + 9", 1),
        );
        write(d, "src/held.rs", &format!("// HELD-OUT-MARKER\n{}", module("held", 30)));
        write(d, "src/held_copy.rs", &format!("// HELD-OUT-MARKER copy\n{}", module("held", 30)));
        write(d, "src/old_name.rs", &module("gamma", 10));
        for (i, (rule, secret, before)) in planted().into_iter().enumerate() {
            let after = if rule == "url-credentials" { "@db.internal/app\"" } else { "\"" };
            write(
                d,
                &format!("src/secret_{i}.rs"),
                &format!(
                    "{}\nconst CONFIG: &str = r#\"\n{before}{secret}{after}\n\"#;\n",
                    module(&format!("s{i}"), 3)
                ),
            );
        }
        write(
            d,
            "src/prompts.rs",
            &format!("{}\nconst FILE_SEP: &str = \"<file_sep>\";\n", module("prompts", 12)),
        );
        write(
            d,
            "src/generated.rs",
            &format!("// This file is automatically generated by a tool.\n{}", module("g", 3)),
        );
        // The same header, on a file the repository marks as its own.
        write(
            d,
            "src/generated_ours.rs",
            &format!("// This file is automatically generated by a tool.\n{}", module("ours", 3)),
        );
        write(d, ".gitattributes", "src/generated_ours.rs -linguist-generated\n");
        commit(d, "Start the project with its modules");
        // A real change: a pair.
        write(
            d,
            "src/alpha.rs",
            &module("alpha", 30).replacen("value * 5 + 22", "value.saturating_mul(5) + 22", 1),
        );
        let pair_commit = commit(d, "Saturate the multiplication in alpha_3 instead of overflowing");
        // White space only.
        write(d, "src/beta.rs", &module("beta", 30).replace("    value", "        value"));
        commit(d, "Indent the bodies of the beta functions by eight spaces");
        // A rename.
        git(d, &["mv", "src/old_name.rs", "src/new_name.rs"]);
        commit(d, "Move the gamma helpers to a better named module");
        // A branch and its merge.
        git(d, &["checkout", "-q", "-b", "feature"]);
        write(
            d,
            "src/beta.rs",
            &module("beta", 30)
                .replace("    value", "        value")
                .replacen("value * 3 + 8", "value.pow(3) + 8", 1),
        );
        let branch_commit = commit(d, "Cube the argument of beta_1 on the feature branch");
        git(d, &["checkout", "-q", "main"]);
        write(
            d,
            "src/alpha.rs",
            &module("alpha", 30).replacen("value * 5 + 22", "value.saturating_mul(5) + 23", 1),
        );
        commit(d, "Add one more to the saturated product in alpha_3");
        git(
            d,
            &["merge", "-q", "--no-ff", "-m", "Merge the feature branch with its cube", "feature"],
        );
        let merge_commit = git(d, &["rev-parse", "HEAD"]);
        // A change to the held-out file: never a pair.
        write(d, "src/held.rs", &format!("// HELD-OUT-MARKER\n{}", module("held", 31)));
        commit(d, "Add one more held function to the held module");
        Repo {
            dir,
            pair_commit,
            branch_commit,
            merge_commit,
        }
    }

    fn run(repo: &Path, config: &DatasetConfig, tokenizer: &Tokenizer) -> Dataset {
        let walked = walk(repo, &WalkOptions::default()).unwrap();
        let split = Split::listed(["src/held.rs"]);
        curate(
            Input {
                repository: repo,
                project: "acme",
                walk: &walked,
                split: &split,
                tokenizer,
                format: PromptFormat::StarCoder,
                config,
                gold: crate::gold::parse("{\"prompt\": \"How do we add?\", \"completion\": \"With alpha_0.\"}\n").unwrap(),
                seed: 3,
                retrieval: RetrievalSource::Unavailable("no index in this test".into()),
            },
            &(),
        )
        .unwrap()
    }

    fn all_output(dir: &Path) -> String {
        let mut all = String::new();
        for part in ["train", "validation"] {
            for name in output::FILES {
                all.push_str(&std::fs::read_to_string(dir.join(part).join(name)).unwrap());
            }
        }
        for name in ["manifest.json", "summary.txt", "split.json"] {
            all.push_str(&std::fs::read_to_string(dir.join(name)).unwrap());
        }
        all
    }

    #[test]
    fn a_repository_with_history_becomes_clean_data() {
        let repo = repository();
        let tokenizer = starcoder_like();
        let mut config = DatasetConfig {
            validation_fraction: 0.0,
            max_sample_tokens: 400,
            ..DatasetConfig::default()
        };
        let dataset = run(repo.dir.path(), &config, &tokenizer);
        let m = &dataset.manifest;
        let reason = |path: &str| m.files.iter().find(|f| f.path == path).and_then(|f| f.reason.clone());
        let decision = |path: &str| m.files.iter().find(|f| f.path == path).map(|f| f.decision);

        // Filters, duplicates and the split.
        assert_eq!(decision("src/alpha.rs"), Some("train"));
        assert_eq!(decision("src/beta.rs"), Some("train"));
        assert_eq!(decision("src/held.rs"), Some("held-out"));
        assert_eq!(decision("lib/delta.rs"), Some("train"));
        assert_eq!(reason("src/delta.rs").as_deref(), Some("exact-duplicate (lib/delta.rs)"));
        // alpha.rs changed since its copies were made: they are near it, not equal.
        for copy in ["src/alpha_copy.rs", "src/alpha_near.rs"] {
            assert_eq!(reason(copy).as_deref(), Some("near-duplicate (src/alpha.rs)"), "{copy}");
        }
        assert_eq!(reason("src/held_copy.rs").as_deref(), Some("near-held-out (src/held.rs)"));
        assert!(
            reason("src/generated.rs").is_some_and(|r| r.contains("generated")),
            "{:?}",
            reason("src/generated.rs")
        );
        assert_eq!(
            decision("src/generated_ours.rs"),
            Some("train"),
            ".gitattributes: -linguist-generated"
        );
        for (i, (rule, _, _)) in planted().iter().enumerate() {
            assert_eq!(reason(&format!("src/secret_{i}.rs")), Some(format!("secret ({rule})")), "{rule}");
        }
        assert_eq!(m.secrets.files, planted().len());
        // A trainer would read `<file_sep>` in the file's text as the format's token.
        assert_eq!(reason("src/prompts.rs").as_deref(), Some("special-token (<file_sep>)"));

        // History: the real change and the branch's commit; never the merge, the rename, the
        // white-space change or the held-out file's change.
        let commits: Vec<&str> = dataset
            .samples
            .iter()
            .filter(|s| s.kind == Kind::History)
            .flat_map(|s| s.sources.iter().filter_map(|x| x.strip_prefix("commit ")))
            .collect();
        assert!(commits.contains(&repo.pair_commit.as_str()), "{commits:?}");
        assert!(commits.contains(&repo.branch_commit.as_str()), "{commits:?}");
        assert!(!commits.contains(&repo.merge_commit.as_str()));
        assert_eq!(m.history.skipped.get("formatting-only"), Some(&1), "{:?}", m.history.skipped);
        assert_eq!(m.history.skipped.get("rename"), Some(&1), "{:?}", m.history.skipped);
        assert_eq!(m.history.skipped.get("root-commit"), Some(&1), "{:?}", m.history.skipped);
        assert!(
            m.history.skipped.get("file-not-kept").is_some_and(|n| *n >= 1),
            "{:?}",
            m.history.skipped
        );
        let pair = dataset
            .samples
            .iter()
            .find(|s| s.sources.iter().any(|x| x.ends_with(&repo.pair_commit)))
            .unwrap();
        let Body::Completion { prompt, completion } = &pair.body else {
            panic!("a pair is a prompt and a completion")
        };
        assert!(prompt.starts_with("Saturate the multiplication in alpha_3"));
        assert!(prompt.contains("value * 5 + 22") && completion.contains("value.saturating_mul(5) + 22"));
        // Too long with all its unchanged lines around the change: kept with fewer, the change
        // whole.
        let tight = DatasetConfig {
            max_sample_tokens: pair.tokens - 20,
            ..config.clone()
        };
        let shortened = run(repo.dir.path(), &tight, &tokenizer);
        let short = shortened
            .samples
            .iter()
            .find(|s| s.sources.iter().any(|x| x.ends_with(&repo.pair_commit)))
            .expect("the pair, shortened");
        assert!(shortened.manifest.history.shortened >= 1);
        assert!(short.tokens <= tight.max_sample_tokens);
        let Body::Completion { prompt: p, completion: c } = &short.body else {
            panic!("a pair is a prompt and a completion")
        };
        assert!(p.starts_with("Saturate the multiplication") && p.contains("value * 5 + 22"));
        assert!(c.contains("value.saturating_mul(5) + 22") && c.len() < completion.len());
        assert_eq!(m.history.shortened, 0, "at 400 tokens the pair fits with all its lines");

        // Every sample within the limit; gold kept; written files hold no secret and no
        // held-out code.
        assert!(dataset.samples.iter().all(|s| s.tokens <= 400));
        assert_eq!(m.gold, 1);
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("data");
        output::write(&target, &dataset).unwrap();
        let all = all_output(&target);
        for (rule, secret, _) in planted() {
            assert!(!all.contains(&secret[..secret.len().min(24)]), "{rule} leaked");
        }
        assert!(!all.contains("HELD-OUT-MARKER"));
        assert!(!all.contains("held_3(value"));
        for part in ["train", "validation"] {
            for name in output::FILES {
                let text = std::fs::read_to_string(target.join(part).join(name)).unwrap();
                for line in text.lines() {
                    let record: serde_json::Value = serde_json::from_str(line).unwrap();
                    let fields: &[&str] = match *name {
                        "text.jsonl" => &["text"],
                        "prompt-completion.jsonl" => &["prompt", "completion"],
                        _ => &["messages"],
                    };
                    for field in fields.iter().chain(&["kind", "sources", "tokens"]) {
                        assert!(record.get(field).is_some(), "{name}: no {field} in {line}");
                    }
                }
            }
        }
        let text = std::fs::read_to_string(target.join("train/text.jsonl")).unwrap();
        assert!(text.contains("<repo_name>acme<file_sep>src/"));

        // Redacting keeps the files, without their secrets.
        config.secrets = SecretAction::Redact;
        let redacted = run(repo.dir.path(), &config, &tokenizer);
        for i in 0..planted().len() {
            let entry = redacted
                .manifest
                .files
                .iter()
                .find(|f| f.path == format!("src/secret_{i}.rs"))
                .unwrap();
            assert_eq!(entry.decision, "train");
            assert_eq!(entry.redacted.len(), 1, "{entry:?}");
        }
        output::write(&target, &redacted).unwrap();
        let all = all_output(&target);
        for (rule, secret, _) in planted() {
            assert!(!all.contains(&secret[..secret.len().min(24)]), "{rule} leaked");
            assert!(all.contains(&format!("<secret:{rule}>")), "{rule}");
        }
    }

    #[test]
    fn a_folder_that_is_not_a_dataset_is_not_overwritten() {
        let repo = repository();
        let dataset = run(repo.dir.path(), &DatasetConfig::default(), &starcoder_like());
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("notes.txt"), "mine").unwrap();
        let err = output::write(out.path(), &dataset).unwrap_err();
        assert!(err.to_string().contains("holds no graft dataset"), "{err}");
        assert_eq!(std::fs::read_to_string(out.path().join("notes.txt")).unwrap(), "mine");
    }
}
