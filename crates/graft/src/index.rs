//! `graft index` and `graft search` (their settings come from `graft_wiring`).

use std::path::Path;

use anyhow::{Context, Result};
use graft_core::Config;
use graft_index::{index_repository, Embedder, IndexProgress, IndexReport, Names, ProjectIndex, Query, SearchMode};
use graft_kit::Kit;

use crate::cli::{IndexArgs, SearchArgs};
use crate::{models, progress};

/// Loads the embedding model the config names.
pub fn load_embedder(config: &Config) -> Result<Embedder> {
    let options = graft_wiring::embedder_options(config)?;
    Embedder::load(&options).context("loading the embedding model (`index.embedding_model`)")
}

/// `graft index [PATH] [--project NAME]`.
pub fn index(args: IndexArgs) -> Result<()> {
    let config = models::load_config(&args.config.config)?;
    let (project, path) = crate::project::with_path(&config, args.path.as_deref(), args.project.as_deref(), "index")?;
    let kit = Kit::new(&config.kit.dir);
    models::ensure(&kit, &graft_wiring::index_artifacts(&config)?, args.json)?;
    let embedder = load_embedder(&config)?;
    let report = run_index(&config, &project, &path, &embedder, args.json)?;
    if args.json {
        let value = serde_json::json!({
            "project": project,
            "repository": path,
            "index": graft_wiring::layout(&config, &project).root,
            "report": report,
            "elapsed_seconds": report.elapsed.as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_summary(&project, &path, &report);
    }
    Ok(())
}

/// Indexes one project with a progress bar (unless `quiet`).
pub fn run_index(config: &Config, project: &str, path: &Path, embedder: &Embedder, quiet: bool) -> Result<IndexReport> {
    let progress = BarProgress::new(quiet);
    let result = index_repository(
        path,
        &graft_wiring::layout(config, project),
        embedder,
        &graft_wiring::index_options(config),
        &progress,
    );
    progress.finish();
    result.with_context(|| format!("indexing project `{project}` ({})", path.display()))
}

fn print_summary(project: &str, path: &Path, r: &IndexReport) {
    println!("indexed `{project}` ({}) in {:.1}s", path.display(), r.elapsed.as_secs_f64());
    let skipped: usize = r.skipped.values().sum();
    let reasons: Vec<String> = r.skipped.iter().map(|(why, n)| format!("{why} {n}")).collect();
    println!(
        "  files:  {} seen, {} indexed ({} added, {} changed, {} removed, {} unchanged), {skipped} skipped{}",
        r.files_seen,
        r.files_indexed,
        r.files_added,
        r.files_changed,
        r.files_removed,
        r.files_unchanged,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        }
    );
    println!(
        "  chunks: {} in the index, {} written, {} embedded, {} stale vectors removed",
        r.chunks, r.chunks_written, r.embeddings, r.stale_vectors_removed
    );
    if r.rebuilt {
        println!("  the embedding model changed: the index was rebuilt");
    }
    for problem in &r.problems {
        println!("  could not read: {problem}");
    }
}

/// `graft search QUERY [--project NAME]`.
pub fn search(args: SearchArgs) -> Result<()> {
    let config = models::load_config(&args.config.config)?;
    let mode: SearchMode = args.mode.parse().map_err(anyhow::Error::msg)?;
    let project = crate::project::name(&config, args.project.as_deref(), "search")?;
    let index = ProjectIndex::open_with(&project, &graft_wiring::layout(&config, &project), &graft_wiring::backend(&config))?;
    // Keyword search reads only the keyword index: no embedding model to load.
    let embedder = match mode {
        SearchMode::Keyword => None,
        _ => Some(load_embedder(&config)?),
    };
    let options = graft_wiring::search_options(&config, mode, args.k.map_or(config.index.top_k, usize::from));
    let query = Query {
        text: &args.query,
        names: args.code.then_some(Names::Code {
            before: &args.query,
            after: "",
        }),
        current_path: args.path.as_deref(),
    };
    let hits = index.search_for(&query, embedder.as_ref(), &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(());
    }
    if hits.is_empty() {
        println!("no results");
    }
    for hit in hits {
        let symbol = if hit.symbol.is_empty() {
            String::new()
        } else {
            format!("  {}", hit.symbol)
        };
        println!("{}:{}-{}  {:.4}{symbol}", hit.path, hit.start_line, hit.end_line, hit.score);
        for line in hit.text.lines().filter(|l| !l.trim().is_empty()).take(3) {
            let line: String = line.chars().take(120).collect();
            println!("    {line}");
        }
    }
    Ok(())
}

/// Progress over the chunks being embedded (a bar, or lines in a log: [`progress::Steps`]).
struct BarProgress {
    steps: progress::Stages,
    quiet: bool,
}

impl BarProgress {
    fn new(quiet: bool) -> BarProgress {
        BarProgress {
            steps: progress::Stages::default(),
            quiet,
        }
    }

    fn finish(&self) {
        self.steps.finish();
    }
}

impl IndexProgress for BarProgress {
    fn walked(&self, files: usize) {
        if !self.quiet {
            eprintln!("  {files} files found");
        }
    }

    fn embedding(&self, chunks: usize) {
        if self.quiet || chunks == 0 {
            return;
        }
        self.steps
            .start(progress::Steps::new(chunks as u64, "chunks", "  embedding", false));
    }

    fn embedded(&self, n: usize) {
        self.steps.inc(n as u64);
    }
}
