//! `graft eval build` (a golden set from a repository) and `graft eval run` (its tasks in each
//! arm, through a graft server started here over the repository indexed without its held-out
//! files). graft-eval does the work; this module reads the flags, runs, and reports.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use graft_eval::arms::{infill_request, Arm, RequestOptions};
use graft_eval::build::{build, BuildOptions};
use graft_eval::controls;
use graft_eval::random::stable_hash;
use graft_eval::report::{report, Outcome};
use graft_eval::{GoldenSet, Split, Task, TaskKind};
use graft_kit::Kit;
use serde_json::json;

use crate::cli::{EvalBuildArgs, EvalRunArgs};
use crate::{index, models, progress, serve};

/// `graft eval build PATH --project NAME`.
pub fn build_golden_set(args: EvalBuildArgs) -> Result<()> {
    let config = models::load_config(&args.config.config)?;
    if !graft_core::is_valid_name(&args.project) {
        bail!("`{}` cannot be a project name: use letters, digits, `.`, `_` or `-`", args.project);
    }
    let walked = graft_index::walk::walk(&args.path, &graft_wiring::index_options(&config).walk)
        .with_context(|| format!("reading the repository {}", args.path.display()))?;
    if walked.files.is_empty() {
        bail!(
            "{} has no files to make tasks from (see `graft index` for what is skipped and why)",
            args.path.display()
        );
    }
    let split = if let Some(commit) = &args.holdout_since {
        Split::since(&args.path, commit)?
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
    split.repository = std::fs::canonicalize(&args.path).ok();
    let held_out_files = walked.files.iter().filter(|f| split.contains(&f.path)).count();
    if held_out_files == 0 {
        bail!(
            "no file of {} is held out, so there is nothing to make tasks from",
            args.path.display()
        );
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
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from("eval").join(format!("{}.golden.jsonl", args.project)));
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
                "project": args.project,
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
        println!("golden set for `{}`: {}", args.project, output.display());
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
    }
    Ok(())
}

/// `graft eval run GOLDEN`.
pub fn run_golden_set(args: EvalRunArgs) -> Result<()> {
    let config = models::load_config(&args.config.config)?;
    let arms = Arm::parse_list(&args.arms).map_err(anyhow::Error::msg)?;
    let golden = GoldenSet::read(&args.golden)?;
    let split_file = Split::path_beside(&args.golden);
    let split = Split::read(&split_file).with_context(|| format!("the split beside the golden set ({})", split_file.display()))?;
    let Some(repo) = split.repository.clone() else {
        bail!(
            "{} names no repository: rebuild the golden set with `graft eval build`",
            split_file.display()
        );
    };
    let mut tasks: Vec<&Task> = golden.tasks.iter().filter(|t| t.kind != TaskKind::Question).collect();
    if let Some(max) = args.max_tasks {
        // An even draw over kinds and files: the tasks with the lowest seeded hash of their id.
        let mut order: Vec<(u64, usize)> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (stable_hash(args.seed, &["run", &t.id]), i))
            .collect();
        order.sort();
        let mut keep: Vec<usize> = order.into_iter().take(max).map(|(_, i)| i).collect();
        keep.sort();
        tasks = keep.into_iter().map(|i| tasks[i]).collect();
    }
    if tasks.is_empty() {
        bail!("{} has no completion tasks to run", args.golden.display());
    }

    // The evaluation's own project: the repository indexed without its held-out files.
    let mut eval_config = config.clone();
    eval_config.index.dir = args.golden.with_extension("index");
    eval_config.index.exclude.extend(split.held_out.iter().map(|p| format!("/{p}")));
    eval_config.projects = vec![graft_core::ProjectConfig {
        name: EVAL_PROJECT.to_owned(),
        path: repo.clone(),
        adapter: None,
        retrieval: true,
        top_k: config.index.top_k,
        context_tokens: args.context_tokens,
    }];
    eval_config.server.infill_model = Some(EVAL_PROJECT.to_owned());
    let kit = Kit::new(&eval_config.kit.dir);
    let mut needed = graft_wiring::model_artifacts(&eval_config)?;
    needed.extend(graft_wiring::index_artifacts(&eval_config)?);
    models::ensure(&kit, &needed, args.json)?;
    let embedder = index::load_embedder(&eval_config)?;
    let indexed = index::run_index(&eval_config, EVAL_PROJECT, &repo, &embedder, true)?;
    if !args.json {
        eprintln!(
            "indexed {} without its {} held-out files: {} files, {} chunks",
            repo.display(),
            split.held_out.len(),
            indexed.files_indexed,
            indexed.chunks
        );
    }

    check_held_out_unreachable(&eval_config, &repo, &split, &embedder)?;
    // The controls draw from the repository as the index walks it; the other arms need nothing.
    let files = if arms.iter().any(|a| matches!(a, Arm::Oracle | Arm::Random)) {
        graft_index::walk::walk(&repo, &graft_wiring::index_options(&eval_config).walk)?.files
    } else {
        Vec::new()
    };

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcomes = runtime.block_on(async {
        let addr = serve::start_on_loopback(&eval_config, Some(embedder)).await?;
        let url = format!("http://{addr}/infill");
        let client = reqwest::Client::new();
        let bar = progress::bar((tasks.len() * arms.len()) as u64, "tasks", args.json);
        let options = RequestOptions {
            context_lines: args.context_lines,
            ..RequestOptions::default()
        };
        let mut outcomes = Vec::new();
        let started_all = Instant::now();
        for task in &tasks {
            for &arm in &arms {
                let extra = match arm {
                    Arm::Oracle => controls::oracle(task, &files),
                    Arm::Random => controls::random(task, &files, &split, args.seed),
                    Arm::Base | Arm::Rag => None,
                };
                let body = infill_request(task, arm, EVAL_PROJECT, options, extra.as_ref());
                let started = Instant::now();
                let answer = ask(&client, &url, &body).await;
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                let (text, sources) = match answer {
                    Ok((text, sources)) => (Ok(text), sources),
                    Err(e) => (Err(e), Vec::new()),
                };
                outcomes.push(Outcome::new(task, arm, text, latency_ms, sources));
                bar.inc(1);
                // Without a terminal (a log, CI) a line every tenth of the way instead of the bar.
                let total = tasks.len() * arms.len();
                if bar.is_hidden() && !args.json && (outcomes.len() * 10 / total) != ((outcomes.len() - 1) * 10 / total) {
                    eprintln!(
                        "eval: {}/{total} requests, {:.0} s",
                        outcomes.len(),
                        started_all.elapsed().as_secs_f64()
                    );
                }
            }
        }
        bar.finish_and_clear();
        anyhow::Ok(outcomes)
    })?;
    let held_out_retrieved = outcomes.iter().flat_map(|o| &o.sources).filter(|p| split.contains(p)).count();
    let report = report(&arms, outcomes, held_out_retrieved, args.seed);
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} completion tasks of {} ({} cross-file)\n",
            tasks.len(),
            args.golden.display(),
            tasks.iter().filter(|t| t.cross_file()).count()
        );
        print!("{}", report.table());
        if held_out_retrieved > 0 {
            println!("\nwarning: {held_out_retrieved} retrieved sources were held-out files");
        }
    }
    if held_out_retrieved > 0 {
        bail!("retrieval returned held-out files {held_out_retrieved} times: the evaluation is not valid");
    }
    Ok(())
}

/// Searches the evaluation's index with each held-out file's own text (its first lines, up to
/// 20 files): none may come back, or retrieval could hand the model an answer.
fn check_held_out_unreachable(
    config: &graft_core::Config,
    repo: &std::path::Path,
    split: &Split,
    embedder: &graft_index::Embedder,
) -> Result<()> {
    let index = graft_index::ProjectIndex::open_with(
        EVAL_PROJECT,
        &graft_wiring::layout(config, EVAL_PROJECT),
        &graft_wiring::backend(config),
    )?;
    let options = graft_wiring::search_options(config, graft_index::SearchMode::Hybrid, 10);
    for path in split.held_out.iter().take(20) {
        let Ok(text) = std::fs::read_to_string(repo.join(path)) else {
            continue;
        };
        let query: String = text.lines().take(30).collect::<Vec<_>>().join("\n");
        if query.trim().is_empty() {
            continue;
        }
        let hits = index.search(&query, Some(embedder), &options)?;
        if let Some(hit) = hits.iter().find(|h| split.contains(&h.path)) {
            bail!(
                "the evaluation's index returned the held-out file {} for a query made of {path}: it must not hold held-out files",
                hit.path
            );
        }
    }
    Ok(())
}

/// The project name the evaluation's server gives the repository.
const EVAL_PROJECT: &str = "eval";

/// One `/infill` request: the text and the paths of the retrieved sources, or why not.
async fn ask(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> Result<(String, Vec<String>), String> {
    let response = client.post(url).json(body).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(answer["error"]["message"].as_str().unwrap_or("error").to_owned());
    }
    let text = answer["content"].as_str().unwrap_or_default().to_owned();
    let sources = answer["sources"]
        .as_array()
        .map(|s| s.iter().filter_map(|h| h["path"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    Ok((text, sources))
}
