//! `graft bench questions PATH`: how well search finds code for questions in prose, as chat
//! over a codebase asks them.
//!
//! Chooses documented definitions of the tree (`graft_eval::questions`), writes the tree with
//! their documentation taken out into a scratch folder, indexes it with the configured
//! embedding model, then asks each definition's first sentence by keyword, by vector, hybrid,
//! hybrid with definition lookup (the way chat searches) and that at other vector weights.
//! Prints recall@1/@5 and MRR of the chunk that holds the definition and of its file, and
//! search latency; it asserts nothing.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use graft_eval::questions::{doc_questions, DocQuestion, Naming};
use graft_eval::retrieval::{Ranks, Recall};
use graft_index::{index_repository, Embedder, IndexReport, Names, ProjectIndex, Query, Quiet, SearchHit, SearchMode};
use serde::Serialize;

use super::{ms, percentile, ScratchIndex};
use crate::cli::BenchQuestionsArgs;
use crate::{index, models};

/// Results asked for per question.
const K: usize = 10;

/// One way of searching and how it did.
#[derive(Serialize)]
struct Way {
    name: String,
    vector_weight: f64,
    /// The chunk holding the definition's code.
    chunk: Recall,
    /// The definition's file.
    file: Recall,
    p50_ms: f64,
    p99_ms: f64,
}

pub fn run(args: BenchQuestionsArgs) -> Result<()> {
    if args.questions == 0 {
        anyhow::bail!("--questions must be at least 1");
    }
    if let Some(bad) = args.vector_weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
        anyhow::bail!("--vector-weights: {bad} is no weight (give numbers of 0 or more, such as 1,2,4)");
    }
    let config = models::load_config(&args.config.config)?;
    let scratch = ScratchIndex::new(&config)?;
    let files = graft_index::walk::walk(&args.path, &scratch.options.walk)?.files;
    let naming = if args.naming { Naming::Named } else { Naming::Unnamed };
    let asked = doc_questions(&files, args.questions, naming, 0);
    if asked.questions.is_empty() {
        let naming = if args.naming { " and whose first sentence names it" } else { "" };
        anyhow::bail!(
            "no question to ask in {}: no documented function, type or class whose documentation could be taken out{naming}",
            args.path.display()
        );
    }
    let tree = scratch.folder().join("tree");
    for file in &asked.tree {
        let to = tree.join(&file.path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&to, &file.text).with_context(|| format!("writing {}", to.display()))?;
    }
    drop(files);

    let (report, ways) = scratch.measure(|| {
        let embedder = index::load_embedder(&config)?;
        eprintln!(
            "indexing {} with the documentation of {} definitions taken out ...",
            args.path.display(),
            asked.questions.len()
        );
        let report = index_repository(&tree, &scratch.layout, &embedder, &scratch.options, &Quiet)?;
        let project = ProjectIndex::open_with("bench", &scratch.layout, &scratch.options.backend)?;
        eprintln!("asking {} questions ...", asked.questions.len());
        // Each way: its name, mode, whether names are looked up, the vector weight, and
        // whether it is the way chat searches (whose misses `--misses` prints).
        let configured = config.index.vector_weight;
        let mut plan: Vec<(String, SearchMode, bool, f64, bool)> = vec![
            ("keyword".into(), SearchMode::Keyword, false, 0.0, false),
            ("vector".into(), SearchMode::Vector, false, configured, false),
            ("hybrid".into(), SearchMode::Hybrid, false, configured, false),
            ("hybrid + lookup (chat)".into(), SearchMode::Hybrid, true, configured, true),
        ];
        for &weight in args.vector_weights.iter().filter(|&&w| w != configured) {
            plan.push((format!("hybrid + lookup at {weight}"), SearchMode::Hybrid, true, weight, false));
        }
        let mut ways = Vec::new();
        for (name, mode, lookup, vector_weight, chat) in plan {
            let mut search = graft_wiring::search_options(&config, mode, K);
            search.vector_weight = vector_weight;
            let query = |question| Query {
                text: question,
                names: lookup.then_some(Names::Question(question)),
                current_path: None,
            };
            ways.push(ask(
                name,
                &project,
                &embedder,
                &asked.questions,
                query,
                &search,
                chat && args.misses,
            )?);
        }
        Ok((report, ways))
    })?;
    print(&args, &scratch.backend, &report, &asked.questions, &ways)
}

/// Asks every question one way, the way `name`; `misses`: prints those whose definition was
/// not first.
fn ask<'q>(
    name: String,
    project: &ProjectIndex,
    embedder: &Embedder,
    questions: &'q [DocQuestion],
    query: impl Fn(&'q str) -> Query<'q>,
    search: &graft_index::SearchOptions,
    misses: bool,
) -> Result<Way> {
    let (mut chunk, mut file) = (Ranks::default(), Ranks::default());
    let mut times = Vec::with_capacity(questions.len());
    for q in questions {
        let started = Instant::now();
        let hits: Vec<SearchHit> = project.search_for(&query(&q.question), Some(embedder), search)?;
        times.push(started.elapsed());
        chunk.push_found(hits.iter().map(|h| q.answered_by(&h.path, h.start_line, h.end_line)));
        file.push(hits.iter().map(|h| h.path.as_str()), &q.path);
        if misses && hits.first().is_none_or(|h| !q.answered_by(&h.path, h.start_line, h.end_line)) {
            let first: Vec<String> = hits.iter().take(3).map(|h| format!("{}:{}", h.path, h.start_line)).collect();
            eprintln!(
                "miss: \"{}\" is the {} `{}` at {}:{}\n  first: {}\n",
                q.question,
                q.kind,
                q.symbol,
                q.path,
                q.start_line,
                first.join(", ")
            );
        }
    }
    times.sort();
    let p = |at: f64| -> Duration { percentile(&times, at) };
    Ok(Way {
        name,
        vector_weight: search.vector_weight,
        chunk: chunk.recall(),
        file: file.recall(),
        p50_ms: ms(p(0.50)),
        p99_ms: ms(p(0.99)),
    })
}

fn print(args: &BenchQuestionsArgs, backend: &str, report: &IndexReport, questions: &[DocQuestion], ways: &[Way]) -> Result<()> {
    if args.json {
        let value = serde_json::json!({
            "path": args.path,
            "vectors": backend,
            "files_indexed": report.files_indexed,
            "chunks": report.chunks,
            "questions": questions.len(),
            "naming": args.naming,
            "ways": ways,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "{} questions in prose about {} ({} files, {} chunks; vectors: {backend})",
        questions.len(),
        args.path.display(),
        report.files_indexed,
        report.chunks
    );
    let which = if args.naming { ", naming the definition" } else { "" };
    println!(
        "each a definition's first sentence{which}, its documentation taken out of the index; found: the chunk holding the definition (its file)"
    );
    for way in ways {
        println!(
            "  {:<24} recall@1 {:>5.3} ({:>5.3})   recall@5 {:>5.3} ({:>5.3})   MRR {:>5.3} ({:>5.3})   p50 {:>6.2} ms   p99 {:>6.2} ms",
            way.name, way.chunk.at_1, way.file.at_1, way.chunk.at_5, way.file.at_5, way.chunk.mrr, way.file.mrr, way.p50_ms, way.p99_ms
        );
    }
    Ok(())
}
