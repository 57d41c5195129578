//! `graft bench index PATH`: how fast indexing and search are on a real source tree.
//!
//! Indexes PATH into a fresh temporary index with the configured embedding model, runs it
//! again unchanged (the incremental no-op cost), then times searches in each mode with queries
//! drawn from the tree's own identifiers. Prints throughput and latency percentiles; it
//! asserts nothing (targets live in the figures, not in tests).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use graft_index::{index_repository, IndexLayout, ProjectIndex, Quiet, SearchMode};
use serde_json::json;

use super::{ms, percentile};
use crate::cli::BenchIndexArgs;
use crate::{index, models};

pub fn run(args: BenchIndexArgs) -> Result<()> {
    let config = models::load_config(&args.config.config)?;
    let kit = graft_kit::Kit::new(&config.kit.dir);
    models::ensure(&kit, &graft_wiring::index_artifacts(&config)?, true)?;
    let scratch = tempfile::tempdir().context("creating a scratch folder for the index")?;
    let layout = IndexLayout::new(scratch.path().join("bench"));
    let options = graft_wiring::index_options(&config);

    let started = Instant::now();
    let embedder = index::load_embedder(&config)?;
    let load = started.elapsed();
    eprintln!("indexing {} ...", args.path.display());
    let first = index_repository(&args.path, &layout, &embedder, &options, &Quiet)?;
    let again = index_repository(&args.path, &layout, &embedder, &options, &Quiet)?;

    let project = ProjectIndex::open_with("bench", &layout, &options.backend)?;
    let queries = sample_queries(&args.path, &config, args.queries);
    eprintln!("searching with {} queries ...", queries.len());
    let mut latencies = Vec::new();
    for mode in [SearchMode::Keyword, SearchMode::Vector, SearchMode::Hybrid] {
        let search = graft_wiring::search_options(&config, mode, config.index.top_k);
        let mut times = Vec::with_capacity(queries.len());
        for q in &queries {
            let t = Instant::now();
            project.search(q, Some(&embedder), &search)?;
            times.push(t.elapsed());
        }
        times.sort();
        latencies.push((mode, percentile(&times, 0.50), percentile(&times, 0.99)));
    }

    let secs = first.elapsed.as_secs_f64().max(1e-9);
    let per_sec = |n: usize| n as f64 / secs;
    if args.json {
        let searches: Vec<_> = latencies
            .iter()
            .map(|(mode, p50, p99)| json!({ "mode": mode, "p50_ms": ms(*p50), "p99_ms": ms(*p99) }))
            .collect();
        let value = json!({
            "path": args.path,
            "model_load_seconds": load.as_secs_f64(),
            "files_indexed": first.files_indexed,
            "files_skipped": first.skipped.values().sum::<usize>(),
            "chunks": first.chunks,
            "embeddings": first.embeddings,
            "index_seconds": secs,
            "files_per_second": per_sec(first.files_indexed),
            "chunks_per_second": per_sec(first.chunks),
            "embeddings_per_second": per_sec(first.embeddings),
            "unchanged_reindex_seconds": again.elapsed.as_secs_f64(),
            "queries": queries.len(),
            "search": searches,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("index of {}", args.path.display());
    println!("  embedding model load   {:>10.2} s", load.as_secs_f64());
    println!(
        "  files                  {:>10} indexed, {} skipped",
        first.files_indexed,
        first.skipped.values().sum::<usize>()
    );
    println!("  chunks / embeddings    {:>10} / {}", first.chunks, first.embeddings);
    println!("  full index             {:>10.2} s", secs);
    println!("  files/s                {:>10.1}", per_sec(first.files_indexed));
    println!("  chunks/s               {:>10.1}", per_sec(first.chunks));
    println!("  embeddings/s           {:>10.1}", per_sec(first.embeddings));
    println!("  re-index, no change    {:>10.2} s", again.elapsed.as_secs_f64());
    println!("search latency over {} queries (k = {})", queries.len(), config.index.top_k);
    for (mode, p50, p99) in latencies {
        println!(
            "  {:<8} p50 {:>8.2} ms   p99 {:>8.2} ms",
            format!("{mode:?}").to_lowercase(),
            ms(p50),
            ms(p99)
        );
    }
    Ok(())
}

/// Up to `n` distinct identifiers of 8 or more characters from the tree, spread evenly.
fn sample_queries(root: &Path, config: &graft_core::Config, n: usize) -> Vec<String> {
    let walk_options = graft_wiring::index_options(config).walk;
    let Ok(walked) = graft_index::walk::walk(root, &walk_options) else {
        return Vec::new();
    };
    let mut identifiers = BTreeSet::new();
    for file in &walked.files {
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
