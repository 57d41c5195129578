//! `graft bench index PATH`: how fast indexing and search are on a real source tree.
//!
//! Indexes PATH into a fresh temporary index with the configured embedding model, runs it
//! again unchanged (the incremental no-op cost), times the look for changes `graft up` takes
//! every `index.refresh_secs`, then times searches in each mode with queries drawn from the
//! tree's own identifiers, and measures retrieval quality: cross-file queries
//! (`graft_eval::retrieval`) in each mode and with definition lookup (by keyword alone, as
//! while a first index's vectors are embedded, and hybrid), recall@1/@5 and MRR of the
//! defining file (hybrid lookup's by the language queries come from, in a tree of several).
//! Prints throughput, the resident memory before and at the peak of the first index, latency
//! percentiles and quality; it asserts nothing (targets live in the figures, not in tests).
//!
//! The vectors go where the config says: the embedded engine, or a Qdrant server or cluster
//! (`index.qdrant_url`), in a collection named for `bench` that is emptied before and removed
//! after the run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Result;
use graft_eval::retrieval::{cross_file_queries, CrossFileQuery, Ranks, Recall};
use graft_index::chunker::{family, language_of};
use graft_index::walk::SourceFile;
use graft_index::{index_repository, Embedder, IndexLayout, IndexOptions, IndexReport, Names, ProjectIndex, Query, Quiet, SearchMode};
use serde_json::json;

use super::{megabytes, ms, percentile, ScratchIndex};
use crate::cli::BenchIndexArgs;
use crate::{index, models};

/// Times [`graft_index::walk::stamp`] is run; the median is reported.
const LOOKS: usize = 5;

pub fn run(args: BenchIndexArgs) -> Result<()> {
    let config = models::load_config(&args.config.config)?;
    let scratch = ScratchIndex::new(&config)?;
    let (layout, options, backend) = (&scratch.layout, &scratch.options, &scratch.backend);
    let figures = scratch.measure(|| measure(&args, &config, layout, options))?;
    let Figures {
        load,
        memory,
        first,
        again,
        latencies,
        queries,
        quality,
        across_languages,
    } = figures;

    // What `graft up` pays every `index.refresh_secs` to know whether to re-index.
    let mut looks = Vec::with_capacity(LOOKS);
    for _ in 0..LOOKS {
        let started = Instant::now();
        graft_index::walk::stamp(&args.path, &options.walk, &[])?;
        looks.push(started.elapsed());
    }
    looks.sort();
    let look = looks[LOOKS / 2];

    let secs = first.elapsed.as_secs_f64().max(1e-9);
    let per_sec = |n: usize| n as f64 / secs;
    if args.json {
        let searches: Vec<_> = latencies
            .iter()
            .map(|(mode, p50, p99)| json!({ "mode": mode, "p50_ms": ms(*p50), "p99_ms": ms(*p99) }))
            .collect();
        let value = json!({
            "path": args.path,
            "vectors": backend,
            "model_load_seconds": load.as_secs_f64(),
            "resident_mb_before_index": memory.before.map(megabytes),
            "peak_resident_mb_first_index": memory.peak.map(megabytes),
            "files_indexed": first.files_indexed,
            "files_skipped": first.skipped.values().sum::<usize>(),
            "chunks": first.chunks,
            "embeddings": first.embeddings,
            "index_seconds": secs,
            "phase_seconds": first.seconds,
            "files_per_second": per_sec(first.files_indexed),
            "chunks_per_second": per_sec(first.chunks),
            "embeddings_per_second": per_sec(first.embeddings),
            "vectors_written_per_second": first.embeddings as f64 / first.seconds.vectors.max(1e-9),
            "unchanged_reindex_seconds": again.elapsed.as_secs_f64(),
            "change_look_ms": ms(look),
            "queries": queries,
            "search": searches,
            "quality": quality.iter().map(|q| json!({
                "mode": q.mode,
                "queries": q.recall.queries,
                "recall_at_1": q.recall.at_1,
                "recall_at_5": q.recall.at_5,
                "mrr": q.recall.mrr,
                "p50_ms": ms(q.p50),
                "p99_ms": ms(q.p99),
                "by_language": q.by_language.iter().map(|(language, r)| json!({
                    "language": language,
                    "queries": r.queries,
                    "recall_at_1": r.at_1,
                    "recall_at_5": r.at_5,
                    "mrr": r.mrr,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "quality_queries_across_languages": across_languages,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("index of {} (vectors: {backend})", args.path.display());
    println!("  embedding model load   {:>10.2} s", load.as_secs_f64());
    println!(
        "  files                  {:>10} indexed, {} skipped",
        first.files_indexed,
        first.skipped.values().sum::<usize>()
    );
    println!("  chunks / embeddings    {:>10} / {}", first.chunks, first.embeddings);
    println!("  full index             {:>10.2} s", secs);
    if let (Some(before), Some(peak)) = (memory.before, memory.peak) {
        println!(
            "  resident memory        {:>10.0} MB before it, {:.0} MB at its peak",
            megabytes(before),
            megabytes(peak)
        );
    }
    println!(
        "    of which embedding   {:>10.2} s, vectors stored {:.2} s, keyword index {:.2} s",
        first.seconds.embed, first.seconds.vectors, first.seconds.catalog
    );
    println!("  files/s                {:>10.1}", per_sec(first.files_indexed));
    println!("  chunks/s               {:>10.1}", per_sec(first.chunks));
    println!("  embeddings/s           {:>10.1}", per_sec(first.embeddings));
    println!("  re-index, no change    {:>10.2} s", again.elapsed.as_secs_f64());
    println!(
        "  look for changes       {:>10.2} ms (graft up, every index.refresh_secs)",
        ms(look)
    );
    println!("search latency over {queries} queries (k = {})", config.index.top_k);
    for (mode, p50, p99) in latencies {
        println!(
            "  {:<8} p50 {:>8.2} ms   p99 {:>8.2} ms",
            format!("{mode:?}").to_lowercase(),
            ms(p50),
            ms(p99)
        );
    }
    if let Some(q) = quality.first() {
        println!(
            "retrieval quality over {} cross-file queries (the defining file; the query's own file left out)",
            q.recall.queries
        );
        for q in &quality {
            println!(
                "  {:<18} recall@1 {:>5.3}   recall@5 {:>5.3}   MRR {:>5.3}   p50 {:>6.2} ms   p99 {:>6.2} ms",
                q.mode,
                q.recall.at_1,
                q.recall.at_5,
                q.recall.mrr,
                ms(q.p50),
                ms(q.p99)
            );
            for (language, r) in &q.by_language {
                println!(
                    "    {:<16} recall@1 {:>5.3}   recall@5 {:>5.3}   MRR {:>5.3}   ({} queries from its files)",
                    language, r.at_1, r.at_5, r.mrr, r.queries
                );
            }
        }
        if across_languages > 0 {
            println!(
                "  {across_languages} of the queries ask for a definition in another language's file (a name both happen to use, or a real use across them)"
            );
        }
    }
    Ok(())
}

/// What [`measure`] found.
struct Figures {
    /// The embedding model's load time.
    load: Duration,
    memory: Memory,
    /// The first run, and the second over the unchanged tree.
    first: IndexReport,
    again: IndexReport,
    /// Per search mode: p50 and p99.
    latencies: Vec<(SearchMode, Duration, Duration)>,
    /// Timed queries per mode.
    queries: usize,
    quality: Vec<Quality>,
    /// Cross-file queries whose answer is in another family of languages.
    across_languages: usize,
}

/// The process's resident memory around the first index (none where the system does not say).
struct Memory {
    /// Before it (the embedding model loaded).
    before: Option<u64>,
    /// At its peak during it.
    peak: Option<u64>,
}

/// Indexes twice, then times searches and measures retrieval quality.
fn measure(args: &BenchIndexArgs, config: &graft_core::Config, layout: &IndexLayout, options: &IndexOptions) -> Result<Figures> {
    let started = Instant::now();
    let embedder = index::load_embedder(config)?;
    let load = started.elapsed();
    eprintln!("indexing {} ...", args.path.display());
    let before = graft_core::memory::resident_bytes();
    let peak_known = graft_core::memory::reset_peak();
    let first = index_repository(&args.path, layout, &embedder, options, &Quiet)?;
    let memory = Memory {
        before,
        peak: graft_core::memory::peak_bytes().filter(|_| peak_known),
    };
    let again = index_repository(&args.path, layout, &embedder, options, &Quiet)?;

    let project = ProjectIndex::open_with("bench", layout, &options.backend)?;
    // The tree as indexing saw it, for both kinds of queries.
    let files = graft_index::walk::walk(&args.path, &options.walk)?.files;
    let queries = sample_queries(&files, args.queries);
    eprintln!("searching with {} queries ...", queries.len());
    let mut latencies = Vec::new();
    for mode in [SearchMode::Keyword, SearchMode::Vector, SearchMode::Hybrid] {
        let search = graft_wiring::search_options(config, mode, config.index.top_k);
        let mut times = Vec::with_capacity(queries.len());
        for q in &queries {
            let t = Instant::now();
            project.search(q, Some(&embedder), &search)?;
            times.push(t.elapsed());
        }
        times.sort();
        latencies.push((mode, percentile(&times, 0.50), percentile(&times, 0.99)));
    }

    let (quality, across_languages) = quality(args, config, &files, &project, &embedder)?;
    Ok(Figures {
        load,
        memory,
        first,
        again,
        latencies,
        queries: queries.len(),
        quality,
        across_languages,
    })
}

/// Retrieval quality of one way of searching.
struct Quality {
    mode: &'static str,
    recall: Recall,
    p50: Duration,
    p99: Duration,
    /// Hybrid with definition lookup, in a tree of several languages: the recall of the
    /// queries asked from each language's files.
    by_language: Vec<(&'static str, Recall)>,
}

/// Of cross-file queries, those asked for a definition in a file of another family of
/// languages (`graft_index::chunker::family`): a build script naming a C macro, or, as often,
/// a word two languages happen to define.
fn across_languages(queries: &[CrossFileQuery]) -> usize {
    queries
        .iter()
        .filter(|q| family(language_of(&q.path)) != family(language_of(&q.defined_in)))
        .count()
}

/// Cross-file queries from the tree, searched by keyword, by vector, hybrid, and with
/// definition lookup by keyword alone (what completions use while a first index's vectors are
/// embedded) and hybrid (what they use then): where the defining file lands in the top 10.
fn quality(
    args: &BenchIndexArgs,
    config: &graft_core::Config,
    files: &[SourceFile],
    project: &ProjectIndex,
    embedder: &Embedder,
) -> Result<(Vec<Quality>, usize)> {
    let queries = cross_file_queries(files, args.quality_queries, 0);
    if queries.is_empty() {
        return Ok((Vec::new(), 0));
    }
    eprintln!("measuring retrieval with {} cross-file queries ...", queries.len());
    // Each way: its name, mode, whether names are looked up, whether vectors count. Keyword
    // with lookup is what a completion gets while `graft up` embeds a first index's vectors.
    let ways: [(&str, SearchMode, bool, bool); 5] = [
        ("keyword", SearchMode::Keyword, false, false),
        ("vector", SearchMode::Vector, false, true),
        ("hybrid", SearchMode::Hybrid, false, true),
        ("keyword + lookup", SearchMode::Hybrid, true, false),
        ("hybrid + lookup", SearchMode::Hybrid, true, true),
    ];
    let mut out = Vec::new();
    for (name, mode, lookup, vectors) in ways {
        let mut search = graft_wiring::search_options(config, mode, 10);
        if !vectors {
            search.vector_weight = 0.0;
        }
        let mut ranks = Ranks::default();
        let mut by_language: BTreeMap<&'static str, Ranks> = BTreeMap::new();
        let mut times = Vec::with_capacity(queries.len());
        for q in &queries {
            let query = Query {
                text: &q.code,
                names: lookup.then_some(Names::Code {
                    before: &q.code,
                    after: "",
                }),
                current_path: Some(&q.path),
            };
            let t = Instant::now();
            let hits = project.search_for(&query, Some(embedder), &search)?;
            times.push(t.elapsed());
            ranks.push(hits.iter().map(|h| h.path.as_str()), &q.defined_in);
            // Of the way completions search, by language, and the misses.
            let completions = lookup && vectors;
            if completions {
                let language = by_language.entry(language_of(&q.path)).or_default();
                language.push(hits.iter().map(|h| h.path.as_str()), &q.defined_in);
            }
            if completions && args.misses && hits.first().is_none_or(|h| h.path != q.defined_in) {
                let first: Vec<String> = hits.iter().take(3).map(|h| format!("{}:{}", h.path, h.start_line)).collect();
                eprintln!(
                    "miss: `{}` is defined in {}; asked from {}:\n{}\n  first: {}\n",
                    q.symbol,
                    q.defined_in,
                    q.path,
                    q.code,
                    first.join(", ")
                );
            }
        }
        times.sort();
        out.push(Quality {
            mode: name,
            recall: ranks.recall(),
            p50: percentile(&times, 0.50),
            p99: percentile(&times, 0.99),
            by_language: if by_language.len() > 1 {
                by_language
                    .into_iter()
                    .map(|(language, ranks)| (language, ranks.recall()))
                    .collect()
            } else {
                Vec::new()
            },
        });
    }
    Ok((out, across_languages(&queries)))
}

/// Up to `n` distinct identifiers of 8 or more characters from the tree, spread evenly.
fn sample_queries(files: &[SourceFile], n: usize) -> Vec<String> {
    let mut identifiers = BTreeSet::new();
    for file in files {
        for word in file.text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if word.len() >= 8 && word.chars().next().is_some_and(char::is_alphabetic) {
                identifiers.insert(word.to_owned());
            }
        }
    }
    let all: Vec<String> = identifiers.into_iter().collect();
    let step = (all.len() / n.max(1)).max(1);
    all.into_iter().step_by(step).take(n).collect()
}
