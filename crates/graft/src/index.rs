//! `graft index` and `graft search`, and the translation of `[index]` settings into
//! graft-index's options (the embedding model and ONNX Runtime come from the kit).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use graft_core::{Config, EmbeddingModel};
use graft_index::{
    index_repository, Embedder, EmbedderOptions, EmbeddingSource, IndexLayout, IndexOptions, IndexProgress,
    IndexReport, ProjectIndex, SearchMode, SearchOptions, WalkOptions,
};
use graft_index::vectors::{Backend, ServerConfig};
use graft_kit::{manifest, Artifact, Kit};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{IndexArgs, SearchArgs};
use crate::models;

/// The kit artifacts indexing and search need with this config.
pub fn needed_artifacts(config: &Config) -> Result<Vec<Artifact>> {
    let mut ids = vec!["onnxruntime".to_owned()];
    match &config.index.embedding_model {
        EmbeddingModel::Kit(id) if id == "minilm-l6-v2" => {
            ids.push("minilm-l6-v2-onnx".into());
            ids.push("minilm-l6-v2-tokenizer".into());
        }
        EmbeddingModel::Kit(other) => bail!(
            "`index.embedding_model`: the kit has no embedding model `{other}`; use `kit:minilm-l6-v2`"
        ),
        EmbeddingModel::Folder(_) | EmbeddingModel::Catalog(_) => {}
    }
    ids.iter()
        .map(|id| Ok(*manifest::lookup(id)?))
        .collect()
}

/// Loads the embedding model the config names.
pub fn load_embedder(config: &Config) -> Result<Embedder> {
    let kit = Kit::new(&config.kit.dir);
    let source = match &config.index.embedding_model {
        EmbeddingModel::Kit(_) => {
            needed_artifacts(config)?;
            EmbeddingSource::Files {
                onnx: kit.resolve("minilm-l6-v2-onnx")?,
                tokenizer_dir: kit.resolve("minilm-l6-v2-tokenizer")?,
            }
        }
        EmbeddingModel::Folder(dir) => EmbeddingSource::Files {
            onnx: dir.join("model.onnx"),
            tokenizer_dir: dir.clone(),
        },
        EmbeddingModel::Catalog(name) => EmbeddingSource::Catalog(name.clone()),
    };
    let options = EmbedderOptions {
        source,
        onnxruntime: kit.resolve("onnxruntime")?,
        threads: config.index.threads,
        batch_size: config.index.batch_size,
        max_tokens: config.index.embedding_max_tokens,
        cache_dir: Some(config.index.dir.join(".models")),
    };
    Embedder::load(&options).context("loading the embedding model (`index.embedding_model`)")
}

pub fn index_options(config: &Config) -> IndexOptions {
    let ix = &config.index;
    IndexOptions {
        walk: WalkOptions {
            exclude: ix.exclude.clone(),
            max_file_bytes: ix.max_file_bytes,
            max_line_chars: ix.max_line_chars,
        },
        chunk: graft_index::chunker::ChunkOptions {
            max_chars: ix.chunk_chars,
            ..Default::default()
        },
        threads: ix.threads,
        backend: backend(config),
    }
}

/// The vector store the config chooses: a Qdrant server when `index.qdrant_url` is set.
pub fn backend(config: &Config) -> Backend {
    let ix = &config.index;
    match &ix.qdrant_url {
        None => Backend::Embedded,
        Some(url) => Backend::Server(ServerConfig {
            url: url.clone(),
            api_key: std::env::var(&ix.qdrant_api_key_env).ok().filter(|k| !k.is_empty()),
            collection_prefix: ix.qdrant_collection_prefix.clone(),
        }),
    }
}

/// The index folder of a project.
pub fn layout(config: &Config, project: &str) -> IndexLayout {
    IndexLayout::new(config.index.dir.join(project))
}

/// `graft index [PATH] [--project NAME]`.
pub fn index(args: IndexArgs) -> Result<()> {
    let config = models::load_config(&args.config.config)?;
    let (project, path) = project_and_path(&config, args.path.as_deref(), args.project.as_deref())?;
    let kit = Kit::new(&config.kit.dir);
    models::ensure(&kit, &needed_artifacts(&config)?, args.json)?;
    let embedder = load_embedder(&config)?;
    let report = run_index(&config, &project, &path, &embedder, args.json)?;
    if args.json {
        let value = serde_json::json!({
            "project": project,
            "repository": path,
            "index": layout(&config, &project).root,
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
    let progress = BarProgress::new(quiet || !std::io::stderr().is_terminal());
    let result = index_repository(path, &layout(config, project), embedder, &index_options(config), &progress);
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
        if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) }
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

/// Search settings from `[index]`, for `mode` and `k` results.
pub fn search_options(config: &Config, mode: SearchMode, k: usize) -> SearchOptions {
    SearchOptions {
        k,
        mode,
        per_file: config.index.per_file,
        vector_weight: config.index.vector_weight,
    }
}

/// `graft search QUERY --project NAME`.
pub fn search(args: SearchArgs) -> Result<()> {
    let config = models::load_config(&args.config.config)?;
    let mode: SearchMode = args.mode.parse().map_err(anyhow::Error::msg)?;
    let index = ProjectIndex::open_with(&args.project, &layout(&config, &args.project), &backend(&config))?;
    // Keyword search reads only the keyword index: no embedding model to load.
    let embedder = match mode {
        SearchMode::Keyword => None,
        _ => Some(load_embedder(&config)?),
    };
    let options = search_options(&config, mode, args.k.map_or(config.index.top_k, usize::from));
    let hits = index.search(&args.query, embedder.as_ref(), &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(());
    }
    if hits.is_empty() {
        println!("no results");
    }
    for hit in hits {
        let symbol = if hit.symbol.is_empty() { String::new() } else { format!("  {}", hit.symbol) };
        println!("{}:{}-{}  {:.4}{symbol}", hit.path, hit.start_line, hit.end_line, hit.score);
        for line in hit.text.lines().filter(|l| !l.trim().is_empty()).take(3) {
            let line: String = line.chars().take(120).collect();
            println!("    {line}");
        }
    }
    Ok(())
}

/// Works out which project and repository `graft index` means.
fn project_and_path(config: &Config, path: Option<&Path>, project: Option<&str>) -> Result<(String, PathBuf)> {
    let configured = project.and_then(|p| config.project(p));
    let path = match (path, configured) {
        (Some(p), _) => p.to_owned(),
        (None, Some(c)) => c.path.clone(),
        (None, None) => match project {
            Some(p) => bail!("project `{p}` is not in the config; give the repository's path: graft index PATH --project {p}"),
            None => bail!("give the repository to index: graft index PATH [--project NAME]"),
        },
    };
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    let canonical = std::fs::canonicalize(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let name = match project {
        Some(p) => p.to_owned(),
        None => config
            .projects
            .iter()
            .find(|c| std::fs::canonicalize(&c.path).is_ok_and(|cp| cp == canonical))
            .map(|c| c.name.clone())
            .or_else(|| canonical.file_name().map(|n| n.to_string_lossy().into_owned()))
            .context("cannot name the project from its path; pass --project NAME")?,
    };
    if !graft_core::config::is_valid_project_name(&name) {
        bail!("`{name}` cannot be a project name: use letters, digits, `.`, `_` or `-` (pass --project NAME)");
    }
    Ok((name, path))
}

/// A progress bar over the chunks being embedded.
struct BarProgress {
    bar: Mutex<Option<ProgressBar>>,
    hidden: bool,
}

impl BarProgress {
    fn new(hidden: bool) -> BarProgress {
        BarProgress {
            bar: Mutex::new(None),
            hidden,
        }
    }

    fn finish(&self) {
        if let Ok(mut bar) = self.bar.lock() {
            if let Some(bar) = bar.take() {
                bar.finish_and_clear();
            }
        }
    }
}

impl IndexProgress for BarProgress {
    fn walked(&self, files: usize) {
        if !self.hidden {
            eprintln!("  {files} files found");
        }
    }

    fn embedding(&self, chunks: usize) {
        if self.hidden || chunks == 0 {
            return;
        }
        let bar = ProgressBar::new(chunks as u64);
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("  embedding [{bar:30}] {pos}/{len} chunks {per_sec} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn embedded(&self, n: usize) {
        if let Ok(slot) = self.bar.lock() {
            if let Some(bar) = slot.as_ref() {
                bar.inc(n as u64);
            }
        }
    }
}
