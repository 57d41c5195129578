//! `graft index` and `graft search` (their settings come from `graft_wiring`). When a graft at
//! the configured `server.listen` serves the project (and so holds its index open, or will at
//! its next search), both go through it ([`crate::remote`]): its re-index, its search.

use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};
use graft_core::Config;
use graft_index::{
    index_repository, Embedder, FoundBy, IndexError, IndexOptions, IndexProgress, IndexReport, Names, ProjectIndex, Query, SearchHit,
    SearchMode, SkipReason, StartOver,
};
use graft_kit::Kit;

use crate::cli::{IndexArgs, SearchArgs};
use crate::interrupt::StopFlag;
use crate::remote::{not_asked, Served};
use crate::{models, progress};

/// The graft at `server` (a URL), which must serve `project`; without one, the graft at the
/// configured `server.listen` if it serves `project`, else why not (`Ok(Err(why))`).
fn serving(config: &Config, project: &str, server: Option<&str>) -> Result<std::result::Result<Served, String>> {
    match server {
        Some(url) => Ok(Ok(Served::connect(url, project).map_err(anyhow::Error::msg)?)),
        None => Ok(Served::connect(&crate::serve::local_url(config.server.listen), project)),
    }
}

/// `e`, and when it says the index is open in another process, why the graft at
/// `server.listen` was not asked instead (`why_not`).
fn with_why_not(e: anyhow::Error, config: &Config, why_not: &str) -> anyhow::Error {
    match e.downcast_ref::<IndexError>() {
        Some(IndexError::InUse { .. }) => {
            anyhow::Error::msg(not_asked(format!("{e:#}"), &crate::serve::local_url(config.server.listen), why_not))
        }
        _ => e,
    }
}

/// `graft index --why FILE...`: what the walk of `repository` does with each file, and why;
/// and whether `project`'s index holds it (read only; a graft serving it may hold it open).
fn why(config: &Config, project: &str, repository: &Path, files: &[std::path::PathBuf], json: bool) -> Result<()> {
    use graft_index::explain::{explain, held, relative, Held, Verdict};
    let options = graft_wiring::index_options(config).walk;
    let layout = graft_wiring::layout(config, project);
    // The index's files, read once for all FILEs (`None`: no index yet).
    let indexed = graft_index::catalog::open_built(&graft_wiring::backend(config), &layout)
        .and_then(|built| built.map(|(catalog, _)| catalog.files()).transpose());
    let mut said = Vec::new();
    for file in files {
        let verdict = explain(repository, &options, file)?;
        let kept = verdict == Verdict::Kept;
        let index = match (&indexed, relative(repository, file)) {
            (Ok(None), _) => Some(Ok(Held::NoIndex)),
            (Ok(Some(files)), Some(path)) => Some(Ok(held(files, repository, &path))),
            (Err(e), _) => Some(Err(e.to_string())),
            (Ok(Some(_)), None) => None,
        };
        let in_index = match &index {
            Some(Ok(held)) => held.say(kept).map(str::to_owned),
            Some(Err(e)) => Some(format!("the index could not be read: {e}")),
            None => None,
        };
        let detail = [verdict.detail(), in_index.clone()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
        said.push(serde_json::json!({
            "path": file,
            "decision": verdict.decision(),
            "detail": verdict.detail(),
            "index": match &index {
                Some(Ok(Held::NoIndex)) => "none",
                Some(Ok(Held::Absent)) | None => "absent",
                Some(Ok(Held::Current)) => "current",
                Some(Ok(Held::Older)) => "older",
                Some(Err(_)) => "unreadable",
            },
        }));
        if !json {
            match detail.is_empty() {
                true => println!("{}: {}", file.display(), verdict.decision()),
                false => println!("{}: {} ({detail})", file.display(), verdict.decision()),
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "repository": repository, "files": said }))?
        );
    }
    Ok(())
}

/// Loads the embedding model the config names.
pub fn load_embedder(config: &Config) -> Result<Embedder> {
    let options = graft_wiring::embedder_options(config)?;
    Embedder::load(&options).context("loading the embedding model (`index.embedding_model`)")
}

/// `graft index [PATH] [--project NAME]`.
pub fn index(args: IndexArgs) -> Result<()> {
    let config = models::load_config(&args.config.config)?;
    let (project, path) = crate::project::with_path(&config, args.path.as_deref(), args.project.as_deref(), "index")?;
    if !args.why.is_empty() {
        return why(&config, &project, &path, &args.why, args.json);
    }
    let start_over = StartOver {
        catalog: args.rebuild,
        vectors: args.embed_again,
    };
    let (mut report, through) = match serving(&config, &project, args.server.as_deref())? {
        Ok(served) => (
            reindex_through(&served, &project, &path, start_over, args.skipped, args.json)?,
            Some(served.base().to_owned()),
        ),
        Err(why_not) => {
            if !args.replace {
                refuse_another_repository(&config, &project, &path)?;
            }
            let kit = Kit::new(&config.kit.dir);
            models::ensure(&kit, &graft_wiring::index_artifacts(&config)?, args.json)?;
            let embedder = load_embedder(&config)?;
            let report =
                run_index(&config, &project, &path, &embedder, start_over, args.json).map_err(|e| with_why_not(e, &config, &why_not))?;
            (report, None)
        }
    };
    if !args.skipped {
        report.skipped_files = Vec::new();
    }
    if args.json {
        let value = serde_json::json!({
            "project": project,
            "repository": path,
            "index": graft_wiring::layout(&config, &project).root,
            "report": report,
            "elapsed_seconds": report.elapsed.as_secs_f64(),
            "through": through,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_summary(&project, &path, &report);
    }
    Ok(())
}

/// An error when `project`'s index on this machine was built from a repository other than
/// `path`: indexing `path` into it would replace that repository's files (a mistyped path or
/// project name would throw away an index that took long to embed). An index on a Qdrant
/// server is shared by machines whose checkouts lie at paths of their own: not checked.
fn refuse_another_repository(config: &Config, project: &str, path: &Path) -> Result<()> {
    let (backend, layout) = (graft_wiring::backend(config), graft_wiring::layout(config, project));
    if !matches!(backend, graft_index::vectors::Backend::Embedded) {
        return Ok(());
    }
    // No index yet, or one that cannot be read now (the run says why): nothing to compare.
    let Ok(Some(meta)) = graft_index::catalog::read_meta(&backend, &layout) else {
        return Ok(());
    };
    if path.canonicalize().ok().as_ref() != Some(&meta.repository) {
        bail!(
            "the index of `{project}` ({}) is of {}, not {}: `--replace` indexes {} into it instead (a checkout that moved keeps its unchanged files), or name another project with --project",
            graft_index::catalog::place(&backend, &layout),
            meta.repository.display(),
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// The re-index of `project` by the graft that serves it (from `path`, checked), building
/// anew what `start_over` asks, and with each file left out where `skipped`.
fn reindex_through(served: &Served, project: &str, path: &Path, start_over: StartOver, skipped: bool, quiet: bool) -> Result<IndexReport> {
    served.check_repository(path).map_err(anyhow::Error::msg)?;
    if !quiet {
        eprintln!("`{project}` is served by the graft at {}: re-indexed there", served.base());
    }
    let answer = served.reindex(start_over, skipped).map_err(anyhow::Error::msg)?;
    let mut report: IndexReport =
        serde_json::from_value(answer["report"].clone()).context("reading the re-index's report from the running graft")?;
    report.elapsed = std::time::Duration::from_secs_f64(answer["elapsed_seconds"].as_f64().unwrap_or(0.0).max(0.0));
    // A graft older than `rebuild` reads no body: it updated the index instead.
    if start_over != StartOver::default() && !report.rebuilt {
        bail!(
            "the graft at {} re-indexed `{project}` but did not build it anew as asked (a graft older than --rebuild and --embed-again?): stop it, and run this again",
            served.base()
        );
    }
    Ok(report)
}

/// Indexes one project with a progress bar (unless `quiet`), building anew what `start_over`
/// asks. Ctrl-C stops the run at its next step: nothing is committed, and the vectors it
/// stored are there for the next run.
pub fn run_index(
    config: &Config,
    project: &str,
    path: &Path,
    embedder: &Embedder,
    start_over: StartOver,
    quiet: bool,
) -> Result<IndexReport> {
    let stop = crate::interrupt::stop_on_ctrl_c("stopping the index run at its next step ...");
    let progress = BarProgress::new(quiet, stop);
    let options = IndexOptions {
        start_over,
        ..graft_wiring::index_options(config)
    };
    let result = index_repository(path, &graft_wiring::layout(config, project), embedder, &options, &progress);
    progress.finish();
    if let Err(IndexError::Stopped) = result {
        bail!(
            "stopped: the index of `{project}` is as it was before this run; the vectors embedded so far are kept, so `graft index` goes on from there"
        );
    }
    result.with_context(|| format!("indexing project `{project}` ({})", path.display()))
}

/// How many files a run left out, with their counts by reason: `122 skipped (submodule 120,
/// vendored 2)`.
pub(crate) fn skipped_counts(r: &IndexReport) -> String {
    let skipped: usize = r.skipped.values().sum();
    let reasons: Vec<String> = r.skipped.iter().map(|(why, n)| format!("{why} {n}")).collect();
    if reasons.is_empty() {
        format!("{skipped} skipped")
    } else {
        format!("{skipped} skipped ({})", reasons.join(", "))
    }
}

fn print_summary(project: &str, path: &Path, r: &IndexReport) {
    println!("indexed `{project}` ({}) in {:.1}s", path.display(), r.elapsed.as_secs_f64());
    println!(
        "  files:  {} seen, {} indexed ({} added, {} changed, {} removed, {} unchanged), {}",
        r.files_seen,
        r.files_indexed,
        r.files_added,
        r.files_changed,
        r.files_removed,
        r.files_unchanged,
        skipped_counts(r)
    );
    println!(
        "  chunks: {} in the index, {} written, {} embedded, {} stale vectors removed",
        r.chunks, r.chunks_written, r.embeddings, r.stale_vectors_removed
    );
    if let Some(languages) = languages_line(&r.languages) {
        println!("  {languages}");
    }
    if r.rebuilt {
        match &r.rebuilt_because {
            Some(because) => println!("  rebuilt, as {because}"),
            // A report from a graft that did not say why.
            None => println!("  rebuilt"),
        }
    }
    for problem in &r.problems {
        println!("  could not read: {problem}");
    }
    if !r.skipped_files.is_empty() {
        println!("  skipped files:");
        let width = r.skipped_files.iter().map(|f| f.reason.len()).max().unwrap_or(0);
        // The files a folder left out (a vendored one, a submodule) on one line for them all.
        for group in r
            .skipped_files
            .chunk_by(|a, b| a.folder.is_some() && (&a.folder, &a.reason, &a.detail) == (&b.folder, &b.reason, &b.detail))
        {
            let file = &group[0];
            let shown = match (&file.folder, group.len()) {
                (Some(folder), n) if n > 1 => format!("{folder}/ ({n} files)"),
                _ => file.path.clone(),
            };
            match &file.detail {
                Some(detail) => println!("    {:width$}  {shown}  ({detail})", file.reason),
                None => println!("    {:width$}  {shown}", file.reason),
            }
        }
        let guessed = [SkipReason::Vendored, SkipReason::Generated].map(SkipReason::as_str);
        if r.skipped_files.iter().any(|f| guessed.contains(&f.reason.as_str())) {
            println!("  (a line of the repository's .gitattributes, or of .git/info/attributes, keeps a file of its own: `third_party/** -linguist-vendored`, `gen.rs -linguist-generated`)");
        }
        if r.skipped_files.iter().any(|f| f.reason == SkipReason::Submodule.as_str()) {
            println!("  (files of git submodules are left out as git leaves them out; `index.submodules = true` in graft.toml indexes them as the project's own, or index one as a project of its own)");
        }
        println!("  (ignored and hidden files are not listed: `graft index --why FILE` says what decides any one file)");
    }
}

/// The files a run chunked, by language, most first: those parsed (cut along their syntax,
/// their definitions listed) and those cut by lines (`parsed: rust 80, python 3; by lines:
/// markdown 4`); none when it chunked nothing.
fn languages_line(languages: &std::collections::BTreeMap<String, usize>) -> Option<String> {
    let listed = |parsed: bool| {
        let mut these: Vec<(&String, &usize)> = languages
            .iter()
            .filter(|(language, _)| graft_index::chunker::has_grammar(language) == parsed)
            .collect();
        these.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        these
            .iter()
            .map(|(language, n)| format!("{language} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let parts: Vec<String> = [("parsed", listed(true)), ("by lines", listed(false))]
        .into_iter()
        .filter(|(_, list)| !list.is_empty())
        .map(|(how, list)| format!("{how}: {list}"))
        .collect();
    (!parts.is_empty()).then(|| format!("files chunked, {}", parts.join("; ")))
}

/// `graft search QUERY [--project NAME]`.
pub fn search(args: SearchArgs) -> Result<()> {
    let config = models::load_config(&args.config.config)?;
    let mode: SearchMode = args.mode.parse().map_err(anyhow::Error::msg)?;
    let project = crate::project::name(&config, args.project.as_deref(), "search")?;
    let k = args.k.map_or(config.index.top_k, usize::from);
    let hits = match serving(&config, &project, args.server.as_deref())? {
        Ok(served) => {
            if !args.json {
                eprintln!("`{project}` is served by the graft at {}: searched there", served.base());
            }
            // `--code`: the query is code before a cursor, as a completion's search.
            let body = match args.code {
                true => serde_json::json!({"prefix": args.query, "path": args.path, "k": k, "mode": args.mode}),
                false => serde_json::json!({"query": args.query, "k": k, "mode": args.mode}),
            };
            served.search(&body).map_err(anyhow::Error::msg)?
        }
        Err(why_not) => {
            let layout = graft_wiring::layout(&config, &project);
            let index = ProjectIndex::open_with(&project, &layout, &graft_wiring::backend(&config))
                .map_err(|e| with_why_not(e.into(), &config, &why_not))?;
            let others = open_also_searched(&config, &project, args.json);
            search_here(&config, &index, &others, &args, mode, k)?
        }
    };
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
        println!("{}:{}-{}  {:.4}{symbol}", hit.shown_path(), hit.start_line, hit.end_line, hit.score);
        if args.explain {
            println!("    found by: {}", found_by(&hit.found_by));
        }
        for line in hit.text.lines().filter(|l| !l.trim().is_empty()).take(3) {
            let line: String = line.chars().take(120).collect();
            println!("    {line}");
        }
    }
    Ok(())
}

/// Which rankings found a hit, in words: `keyword #3 (BM25 12.40), vector #12 (cosine 0.412),
/// definition lookup #1`.
fn found_by(found: &FoundBy) -> String {
    let mut said = Vec::new();
    if let Some(f) = found.keyword {
        said.push(format!("keyword #{} (BM25 {:.2})", f.rank, f.score));
    }
    if let Some(f) = found.vector {
        said.push(format!("vector #{} (cosine {:.3})", f.rank, f.score));
    }
    if let Some(rank) = found.definition {
        said.push(format!("definition lookup #{rank}"));
    }
    match said.is_empty() {
        true => "(not said: a graft older than this one searched)".to_owned(),
        false => said.join(", "),
    }
}

/// The indexes of the projects `project` also searches (`also_search`), opened here, by
/// project: one that does not open is said on stderr (unless `quiet`) and left out, as a
/// server leaves it out.
pub fn open_also_searched(config: &Config, project: &str, quiet: bool) -> Vec<(String, ProjectIndex)> {
    let Some(settings) = config.project(project) else {
        return Vec::new();
    };
    let open = |name: &String| {
        let index = config.project(name).map_or(name.as_str(), |p| p.index_name());
        match ProjectIndex::open_with(index, &graft_wiring::layout(config, name), &graft_wiring::backend(config)) {
            Ok(opened) => Some((name.clone(), opened)),
            Err(e) => {
                if !quiet {
                    eprintln!("`{name}`, which `{project}` also searches, is left out: {e}");
                }
                None
            }
        }
    };
    settings.also_search.iter().filter_map(open).collect()
}

/// `others` as [`ProjectIndex::search_across`] takes them.
pub fn across(others: &[(String, ProjectIndex)]) -> Vec<(&str, &ProjectIndex)> {
    others.iter().map(|(name, index)| (name.as_str(), index)).collect()
}

/// `args`' search of the index opened here, with the others it also searches.
fn search_here(
    config: &Config,
    index: &ProjectIndex,
    others: &[(String, ProjectIndex)],
    args: &SearchArgs,
    mode: SearchMode,
    k: usize,
) -> Result<Vec<SearchHit>> {
    // Keyword search reads only the keyword index: no embedding model to load.
    let embedder = match mode {
        SearchMode::Keyword => None,
        _ => Some(load_embedder(config)?),
    };
    let options = graft_wiring::search_options(config, mode, k);
    let query = Query {
        text: &args.query,
        names: args.code.then_some(Names::Code {
            before: &args.query,
            after: "",
        }),
        current_path: args.path.as_deref(),
    };
    Ok(index.search_across(&across(others), &query, embedder.as_ref(), &options)?)
}

/// Progress over the chunks being embedded (a bar, or lines in a log: [`progress::Steps`]).
struct BarProgress {
    steps: progress::Stages,
    quiet: bool,
    /// Set by Ctrl-C.
    stop: StopFlag,
}

impl BarProgress {
    fn new(quiet: bool, stop: StopFlag) -> BarProgress {
        BarProgress {
            steps: progress::Stages::default(),
            quiet,
            stop,
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

    fn reading(&self, files: usize) {
        if self.quiet || files == 0 {
            return;
        }
        self.steps.start(progress::Steps::new(files as u64, "files", "  indexing", false));
    }

    fn read(&self, n: usize) {
        self.steps.inc(n as u64);
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

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_languages_line_says_what_was_parsed_and_what_cut_by_lines() {
        let languages = [("markdown", 4), ("python", 3), ("rust", 80), ("toml", 4), ("csharp", 3)]
            .into_iter()
            .map(|(l, n)| (l.to_owned(), n))
            .collect();
        assert_eq!(
            languages_line(&languages).as_deref(),
            Some("files chunked, parsed: rust 80, csharp 3, python 3; by lines: markdown 4, toml 4")
        );
        let text_only = [("text".to_owned(), 2)].into_iter().collect();
        assert_eq!(languages_line(&text_only).as_deref(), Some("files chunked, by lines: text 2"));
        assert_eq!(languages_line(&std::collections::BTreeMap::new()), None);
    }
}
