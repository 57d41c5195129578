//! `graft eval build` (a golden set from a repository, here), `graft eval run` ([`run`]: its
//! tasks in each arm, through a graft server started here over the repository indexed without
//! its held-out files, or through another server, [`target`]) and `graft eval compare`
//! ([`compare`]: two saved runs). graft-eval does the work; these modules read the flags,
//! send the requests, and report.

pub mod compare;
pub mod run;
pub mod target;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use graft_eval::build::{build, BuildOptions};
use graft_eval::{GoldenSet, Split, TaskKind};
use serde_json::json;

use crate::cli::EvalBuildArgs;
use crate::models;

/// Where `graft eval build` writes a project's golden set unless told (`graft dataset` looks
/// for its split beside it).
pub fn default_golden_set(project: &str) -> PathBuf {
    PathBuf::from("eval").join(format!("{project}.golden.jsonl"))
}

/// `graft eval build [PATH] [--project NAME]`.
pub fn build_golden_set(args: EvalBuildArgs) -> Result<()> {
    let config = models::load_config(&args.config.config)?;
    let (project, path) = crate::project::with_path(&config, args.path.as_deref(), args.project.as_deref(), "eval build")?;
    let walked = graft_index::walk::walk(&path, &graft_wiring::index_options(&config).walk)
        .with_context(|| format!("reading the repository {}", path.display()))?;
    if walked.files.is_empty() {
        bail!(
            "{} has no files to make tasks from (see `graft index` for what is skipped and why)",
            path.display()
        );
    }
    let split = if let Some(commit) = &args.holdout_since {
        Split::since(&path, commit)?
    } else if !args.holdout.is_empty() {
        let split = Split::listed(args.holdout.iter().map(String::as_str));
        if let Some(missing) = split.held_out.iter().find(|p| !walked.files.iter().any(|f| &f.path == *p)) {
            bail!("--holdout {missing}: no such file among the repository's indexed files");
        }
        split
    } else {
        Split::by_fraction(walked.files.iter().map(|f| f.path.as_str()), args.holdout_fraction, args.seed)?
    };
    let mut split = split;
    split.repository = std::fs::canonicalize(&path).ok();
    let held_out_files = walked.files.iter().filter(|f| split.contains(&f.path)).count();
    if held_out_files == 0 {
        bail!("no file of {} is held out, so there is nothing to make tasks from", path.display());
    }
    let options = BuildOptions {
        tasks: args.tasks,
        questions: args.questions,
        seed: args.seed,
    };
    let mut set = build(&walked.files, &split, &options);
    if let Some(gold) = &args.gold {
        let own = GoldenSet::read(gold)?;
        set.tasks.extend(own.tasks);
    }
    let output = args.output.clone().unwrap_or_else(|| default_golden_set(&project));
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    set.write(&output)?;
    let split_file = Split::path_beside(&output);
    split.write(&split_file)?;

    let counts = set.counts();
    let count = |k: TaskKind| counts.get(&k).copied().unwrap_or(0);
    let cross_file = set.tasks.iter().filter(|t| t.cross_file()).count();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "project": project,
                "golden_set": output,
                "split": split_file,
                "files": walked.files.len(),
                "held_out": held_out_files,
                "tasks": set.tasks.len(),
                "line": count(TaskKind::Line),
                "api": count(TaskKind::Api),
                "span": count(TaskKind::Span),
                "question": count(TaskKind::Question),
                "cross_file": cross_file,
            }))?
        );
    } else {
        println!("golden set for `{}`: {}", project, output.display());
        println!(
            "  files:  {} read, {} held out (split: {})",
            walked.files.len(),
            held_out_files,
            split_file.display()
        );
        println!(
            "  tasks:  {} ({} line, {} api, {} span, {} question; {} cross-file)",
            set.tasks.len(),
            count(TaskKind::Line),
            count(TaskKind::Api),
            count(TaskKind::Span),
            count(TaskKind::Question),
            cross_file
        );
        if set.tasks.len() < args.tasks {
            println!(
                "  fewer tasks than asked ({}): hold out more files (--holdout-fraction) for more",
                args.tasks
            );
        }
        if args.questions > 0 && count(TaskKind::Question) == 0 {
            println!(
                "  no questions: no held-out file documents a definition (a doc comment of four words or more); write your own in a --gold file"
            );
        }
    }
    Ok(())
}
