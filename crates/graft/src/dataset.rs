//! `graft dataset [PATH] [--project NAME]`: the repository walked as indexing walks it, the
//! evaluation's held-out split obeyed, the served model's tokenizer and prompt format read
//! from its GGUF file (no weights loaded), the project's index asked for retrieval-augmented
//! samples as the server asks it (`IndexRetriever`: opened here, or through the graft serving
//! it), then graft-data's curation, written or (with `--dry-run`) only summarised.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use graft_core::split::Split;
use graft_core::{Config, ProjectConfig, SecretAction};
use graft_data::retrieved::{Retrieve, RetrieveError};
use graft_data::{curate, output, Input, Progress, RetrievalSource};
use graft_engine::fim::{ContextFile, FimInput};
use graft_engine::{PromptFormat, Tokenizer};
use graft_index::{Embedder, IndexError, ProjectIndex, SearchHit, SearchMode, SearchOptions};
use graft_server::prompt::{augment, completion};

use crate::cli::DatasetArgs;
use crate::remote::{not_asked, Served};
use crate::{models, progress};

/// One bar per stage of the curation, and when each stage began.
struct Bars {
    quiet: bool,
    bar: progress::Stages,
    stages: Mutex<Vec<(String, Instant)>>,
}

impl Progress for Bars {
    fn stage(&self, name: &str, total: usize) {
        if let Ok(mut stages) = self.stages.lock() {
            stages.push((name.to_owned(), Instant::now()));
        }
        self.bar
            .start(progress::Steps::new(total as u64, "", &format!("dataset {name}"), self.quiet));
    }

    fn advance(&self, n: usize) {
        self.bar.inc(n as u64);
    }
}

impl Bars {
    /// Clears the bar; each stage's seconds, in order.
    fn finish(&self, start: Instant) -> Vec<(String, f64)> {
        self.bar.finish();
        let end = Instant::now();
        let stages = self.stages.lock().map(|s| s.clone()).unwrap_or_default();
        let mut out = vec![(
            "walk".to_owned(),
            stages.first().map_or(end, |s| s.1).duration_since(start).as_secs_f64(),
        )];
        for (i, (name, began)) in stages.iter().enumerate() {
            let ended = stages.get(i + 1).map_or(end, |next| next.1);
            out.push((name.clone(), ended.duration_since(*began).as_secs_f64()));
        }
        out
    }
}

/// The project's index asked for the code around a cursor as the server asks it for a
/// completion (`completion::cursor_search`, then `augment::completion` to fit the budget),
/// each hit's lines cut from the curated file it names.
struct IndexRetriever<'a> {
    searcher: Searcher,
    /// The project's `top_k`: hits kept (twice as many asked for, as some name files a
    /// sample may not see).
    top_k: usize,
    /// The project's `context_tokens`.
    budget: usize,
    tokenizer: &'a Tokenizer,
}

/// Where the index is searched.
enum Searcher {
    /// Opened here.
    Local(Box<LocalSearch>),
    /// Through the graft that holds it open, which searches as it does for `/infill`.
    Server(ServerSearch),
}

/// The project's index opened here, with the indexes of the projects it also searches.
struct LocalSearch {
    index: ProjectIndex,
    others: Vec<(String, ProjectIndex)>,
    embedder: Embedder,
    options: SearchOptions,
}

impl Searcher {
    fn search(&self, input: &FimInput, k: usize) -> Result<Vec<SearchHit>, RetrieveError> {
        match self {
            Searcher::Local(local) => {
                let search = completion::cursor_search(input);
                let options = SearchOptions { k, ..local.options };
                let others = crate::index::across(&local.others);
                Ok(local
                    .index
                    .search_across(&others, &search.as_query(), Some(&local.embedder), &options)?)
            }
            Searcher::Server(server) => server.search(input, k),
        }
    }
}

impl IndexRetriever<'_> {
    /// The base URL of the graft searched through, if one is.
    fn through(&self) -> Option<&str> {
        match &self.searcher {
            Searcher::Local(_) => None,
            Searcher::Server(server) => Some(server.0.base()),
        }
    }
}

impl Retrieve for IndexRetriever<'_> {
    fn budget(&self) -> usize {
        self.budget
    }

    fn context(&self, input: &FimInput, budget: usize, visible: &BTreeMap<&str, &str>) -> Result<Vec<ContextFile>, RetrieveError> {
        let hits: Vec<SearchHit> = self
            .searcher
            .search(input, self.top_k * 2)?
            .into_iter()
            .filter_map(|hit| {
                // Another project's code (`also_search`) is none of this repository's files,
                // held out or not: as the index holds it.
                if hit.project.is_some() {
                    return Some(hit);
                }
                let text = visible.get(hit.path.as_str())?;
                let first = hit.start_line.max(1);
                let lines: String = text
                    .split_inclusive('\n')
                    .skip(first - 1)
                    .take((hit.end_line + 1).saturating_sub(first))
                    .collect();
                (!lines.trim().is_empty()).then_some(SearchHit { text: lines, ..hit })
            })
            .take(self.top_k)
            .collect();
        let (files, _) = futures::executor::block_on(augment::completion(self.tokenizer, hits, budget))?;
        Ok(files)
    }
}

/// A running graft's `POST /v1/projects/<name>/search`, asked with a cursor (`prefix`,
/// `suffix`, `path`), as `/infill` searches.
struct ServerSearch(Served);

impl ServerSearch {
    /// The graft at `base` serving `project`, checked to serve it with retrieval from an
    /// index of `repository`; its `top_k` and `context_tokens`.
    fn connect(base: &str, project: &str, repository: &Path) -> std::result::Result<(ServerSearch, usize, usize), String> {
        let served = Served::connect(base, project)?;
        let (base, status) = (served.base(), &served.status);
        if status["retrieval"] == false {
            return Err(format!("the graft at {base} serves `{project}` without retrieval"));
        }
        if status["meta"]["repository"].is_null() {
            let why = status["error"].as_str().unwrap_or("it is not indexed yet");
            return Err(format!("the graft at {base} has no usable index of `{project}`: {why}"));
        }
        served.check_repository(repository)?;
        let setting = |name: &str| {
            status[name]
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| format!("the graft at {base} did not say `{project}`'s {name}"))
        };
        let (top_k, budget) = (setting("top_k")?, setting("context_tokens")?);
        Ok((ServerSearch(served), top_k, budget))
    }

    fn search(&self, input: &FimInput, k: usize) -> Result<Vec<SearchHit>, RetrieveError> {
        let body = serde_json::json!({
            "prefix": input.prefix,
            "suffix": input.suffix,
            "path": input.path,
            "k": k,
            "mode": "hybrid",
        });
        Ok(self.0.search(&body)?)
    }
}

/// The retriever for `project`'s samples, or why there is none. With `server` (a URL), the
/// index is searched through the graft there; otherwise through the graft at the configured
/// `server.listen` when it serves the project, else opened here.
fn index_retriever<'a>(
    config: &Config,
    project: &str,
    repository: &Path,
    server: Option<&str>,
    quiet: bool,
    tokenizer: &'a Tokenizer,
) -> std::result::Result<IndexRetriever<'a>, String> {
    let settings = config
        .project(project)
        .cloned()
        .unwrap_or_else(|| ProjectConfig::new(project, repository));
    let through = |url: &str| {
        let (server, top_k, budget) = ServerSearch::connect(url, project, repository)?;
        Ok(IndexRetriever {
            searcher: Searcher::Server(server),
            top_k,
            budget,
            tokenizer,
        })
    };
    if let Some(url) = server {
        return through(url);
    }
    if !settings.retrieval {
        return Err(format!("project `{project}` is served without retrieval (retrieval = false)"));
    }
    // A graft serving the project holds its index open, or will at its next search (opened
    // here, it would serve without retrieval meanwhile): searched through it.
    let url = crate::serve::local_url(config.server.listen);
    let served = match through(&url) {
        Ok(retriever) => {
            if !quiet {
                eprintln!("the index of `{project}` is searched through the graft serving it at {url}");
            }
            return Ok(retriever);
        }
        Err(why) => why,
    };
    let layout = graft_wiring::layout(config, project);
    let index = match ProjectIndex::open_with(project, &layout, &graft_wiring::backend(config)) {
        Ok(index) => index,
        Err(in_use @ IndexError::InUse { .. }) => return Err(not_asked(in_use, &url, &served)),
        Err(e) => return Err(e.to_string()),
    };
    let here = std::fs::canonicalize(repository).ok();
    let indexed = std::fs::canonicalize(&index.meta().repository).ok();
    if here != indexed {
        return Err(format!(
            "the index of `{project}` is of {}, not {}",
            index.meta().repository.display(),
            repository.display()
        ));
    }
    let embedder = crate::index::load_embedder(config).map_err(|e| format!("{e:#}"))?;
    Ok(IndexRetriever {
        searcher: Searcher::Local(Box::new(LocalSearch {
            index,
            others: crate::index::open_also_searched(config, project, quiet),
            embedder,
            options: graft_wiring::search_options(config, SearchMode::Hybrid, settings.top_k * 2),
        })),
        top_k: settings.top_k,
        budget: settings.context_tokens,
        tokenizer,
    })
}

/// The split the evaluation wrote for `project`, if `graft eval build` wrote one where it
/// writes by default.
fn default_split(project: &str) -> PathBuf {
    Split::path_beside(&crate::eval::default_golden_set(project))
}

fn split_for(args: &DatasetArgs, project: &str, repository: &Path, paths: &[&str]) -> Result<(Split, String)> {
    let file = args.split.clone().or_else(|| Some(default_split(project)).filter(|p| p.is_file()));
    let mut split = match &file {
        Some(file) => Split::read(file)?,
        None => Split::by_fraction(paths.iter().copied(), args.holdout_fraction, args.seed)?,
    };
    let here = std::fs::canonicalize(repository).ok();
    if let (Some(theirs), Some(here)) = (&split.repository, &here) {
        if theirs != here {
            bail!(
                "the split {} is for the repository {}, not {}",
                file.as_deref().map(Path::display).map(|d| d.to_string()).unwrap_or_default(),
                theirs.display(),
                here.display()
            );
        }
    }
    split.repository = here;
    let origin = match file {
        Some(file) => format!("read from {}", file.display()),
        None => format!("new: {} of the files by a seeded hash (seed {})", args.holdout_fraction, args.seed),
    };
    Ok((split, origin))
}

pub fn run(args: DatasetArgs) -> Result<()> {
    let mut config = models::load_config(&args.config.config)?;
    let (project, path) = crate::project::with_path(&config, args.path.as_deref(), args.project.as_deref(), "dataset")?;
    if args.redact {
        config.dataset.secrets = SecretAction::Redact;
    }
    if args.no_history {
        config.dataset.history = false;
    }
    if let Some(rate) = args.retrieval_rate {
        if !(0.0..=1.0).contains(&rate) {
            bail!("--retrieval-rate must be between 0 and 1, got {rate}");
        }
        config.dataset.retrieval_rate = rate;
    }
    let started = Instant::now();
    let walked = graft_index::walk::walk(&path, &graft_wiring::index_options(&config).walk)
        .with_context(|| format!("reading the repository {}", path.display()))?;
    if walked.files.is_empty() {
        bail!(
            "{} has no files to make a dataset from (see `graft index` for what is skipped and why)",
            path.display()
        );
    }
    let paths: Vec<&str> = walked.files.iter().map(|f| f.path.as_str()).collect();
    let (split, split_origin) = split_for(&args, &project, &path, &paths)?;

    // The served model's tokenizer and layout, from its file.
    let (gguf, tokenizer) = models::served_tokenizer(&config, args.json)?;
    let format = graft_wiring::base_model(&config, gguf.clone())
        .prompt_format
        .unwrap_or_else(|| PromptFormat::detect(tokenizer.vocabulary().iter().map(String::as_str)));
    let gold = match &args.gold {
        Some(file) => graft_data::gold::read(file)?,
        None => Vec::new(),
    };

    let retriever = match config.dataset.retrieval_rate > 0.0 {
        true => index_retriever(&config, &project, &path, args.server.as_deref(), args.json, &tokenizer),
        false => Err("dataset.retrieval_rate is 0".to_owned()),
    };
    let retrieval = match &retriever {
        Ok(retriever) => RetrievalSource::Index(retriever),
        Err(why) if args.retrieval_rate.is_some_and(|r| r > 0.0) => {
            bail!("--retrieval-rate asks for retrieval-augmented samples, but {why}")
        }
        Err(why) => {
            if config.dataset.retrieval_rate > 0.0 && !args.json {
                eprintln!("no retrieval-augmented samples: {why}");
            }
            RetrievalSource::Unavailable(why.clone())
        }
    };
    let bars = Bars {
        quiet: args.json,
        bar: progress::Stages::default(),
        stages: Mutex::new(Vec::new()),
    };
    let dataset = curate(
        Input {
            repository: &path,
            project: &project,
            walk: &walked,
            split: &split,
            tokenizer: &tokenizer,
            format,
            config: &config.dataset,
            gold,
            seed: args.seed,
            retrieval,
        },
        &bars,
    )?;
    let stages = bars.finish(started);
    let seconds = started.elapsed().as_secs_f64();
    let out_dir = args.output.clone().unwrap_or_else(|| PathBuf::from("datasets").join(&project));
    let written = if args.dry_run {
        Vec::new()
    } else {
        output::write(&out_dir, &dataset)?
    };
    let files_read = walked.files.len() + walked.skipped_total();
    if args.json {
        let m = &dataset.manifest;
        let decision = |d: &str| m.files.iter().filter(|f| f.decision == d).count();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "project": m.project,
                "output": (!args.dry_run).then_some(&out_dir),
                "format": m.format,
                "model": gguf,
                "files": {"train": decision("train"), "validation": decision("validation"),
                          "held_out": decision("held-out"), "dropped": decision("dropped")},
                "dropped": m.dropped,
                "secrets": m.secrets,
                "history": m.history,
                "retrieval": m.retrieval,
                "retrieved_through": retriever.as_ref().ok().and_then(IndexRetriever::through),
                "samples": m.samples,
                "gold": m.gold,
                "seconds": seconds,
                "stages": stages.iter().map(|(name, s)| serde_json::json!({"stage": name, "seconds": s})).collect::<Vec<_>>(),
            }))?
        );
    } else {
        print!("{}", output::summary(&dataset.manifest));
        println!("  split:      {split_origin}");
        println!(
            "  took:       {seconds:.1} s ({:.0} files/s, {:.0} samples/s)",
            files_read as f64 / seconds.max(1e-9),
            dataset.samples.len() as f64 / seconds.max(1e-9)
        );
        let stages: Vec<String> = stages.iter().map(|(name, s)| format!("{name} {s:.1} s")).collect();
        println!("  stages:     {} (walk includes reading the tokenizer)", stages.join(", "));
        if args.dry_run {
            println!("  dry run:    nothing written");
        } else {
            println!(
                "  written:    {} ({} files; manifest.json lists every decision)",
                out_dir.display(),
                written.len()
            );
        }
    }
    Ok(())
}
