//! `graft eval run GOLDEN`: every task in every arm, the questions judged, one report.
//!
//! By default graft is started here, in-process, over the repository indexed without its
//! held-out files (project `eval`, and `eval-adapter` on the adapter sharing its index), so
//! every request takes the path users get. With `--endpoint` the same tasks go to another
//! server instead (a running graft, a llama.cpp server, vLLM, Ollama).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use graft_eval::arms::{chat_request, completions_request, infill_request, one_line, tabby_request, Arm, RequestOptions};
use graft_eval::compare::{golden_digest, GOLDEN_DIGEST};
use graft_eval::controls;
use graft_eval::judge::{judge_pair, Judged, Rubric};
use graft_eval::metrics::first_line;
use graft_eval::random::stable_hash;
use graft_eval::report::{report, Answer, Outcome, Results};
use graft_eval::{GoldenSet, Split, Task, TaskKind};
use graft_index::walk::SourceFile;
use graft_kit::Kit;
use serde_json::json;

use super::target::{Endpoint, Reply};
use crate::cli::EvalRunArgs;
use crate::{index, models, progress, serve};

/// The project name the evaluation's own server gives the repository.
const EVAL_PROJECT: &str = "eval";
/// The same repository on the adapter.
const EVAL_ADAPTER_PROJECT: &str = "eval-adapter";

/// Where the tasks go: another server (`--endpoint`), or graft started here on this config
/// and embedder.
enum Target {
    Remote(String),
    Local(Box<(graft_core::Config, graft_index::Embedder)>),
}

/// How completion tasks are sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Infill,
    Completions,
    Tabby,
}

/// The model names each arm asks for, and where.
struct Served {
    endpoint: Endpoint,
    plain: String,
    adapter: Option<String>,
}

impl Served {
    fn model(&self, arm: Arm) -> &str {
        match (&self.adapter, arm.on_adapter()) {
            (Some(adapter), true) => adapter,
            _ => &self.plain,
        }
    }
}

/// `graft eval run [GOLDEN]`.
pub fn run_golden_set(mut args: EvalRunArgs) -> Result<()> {
    let config = models::load_config(&args.config.config)?;
    let (golden_file, project) = match &args.golden {
        Some(file) => (file.clone(), None),
        None => {
            if args.project.is_none() && config.projects.is_empty() {
                bail!("give the golden set to run: graft eval run FILE, or --project NAME (the config names no project whose own to run)");
            }
            let project = crate::project::name(&config, args.project.as_deref(), "eval run")?;
            let file = super::default_golden_set(&project);
            if !file.is_file() {
                bail!(
                    "no golden set at {}: make one with `graft eval build --project {project}{}`, or give its file",
                    file.display(),
                    args.config.flag()
                );
            }
            (file, Some(project))
        }
    };
    if let Some(adapter) = project.as_deref().and_then(|p| trained_adapter(&args, &config, p)) {
        if !args.json {
            eprintln!(
                "adapter: {adapter}, the one `graft train` wrote for the project (--adapter NAME for another, --arms base,rag for none)"
            );
        }
        args.adapter = Some(adapter);
    }
    let api = match args.api.as_str() {
        "completions" => Api::Completions,
        "tabby" => Api::Tabby,
        _ => Api::Infill,
    };
    let arms = arms(&args, api)?;
    // Read once: the tasks run and the digest the report records come from the same text.
    let golden_text =
        std::fs::read_to_string(&golden_file).with_context(|| format!("cannot read the golden set {}", golden_file.display()))?;
    let golden = GoldenSet::parse(&golden_text, &golden_file)?;
    let split_file = Split::path_beside(&golden_file);
    let split = Split::read(&split_file).with_context(|| format!("the split beside the golden set ({})", split_file.display()))?;
    let tasks = pick(&golden, |t| t.kind != TaskKind::Question, args.max_tasks, args.seed);
    let questions = pick(&golden, |t| t.kind == TaskKind::Question, args.max_questions, args.seed);
    if tasks.is_empty() && questions.is_empty() {
        bail!("{} has no tasks to run", golden_file.display());
    }
    let rubric = match &args.rubric {
        Some(path) => Rubric::read(path)?,
        None => Rubric::default(),
    };
    let repo = split.repository.clone();
    // The controls draw from the repository as the index walks it; the other arms need nothing.
    let files: Vec<SourceFile> = match (&repo, arms.iter().any(|a| a.is_control())) {
        (Some(repo), true) => graft_index::walk::walk(repo, &graft_wiring::index_options(&config).walk)?.files,
        (None, true) => bail!("the controls need the repository, and {} names none", split_file.display()),
        _ => Vec::new(),
    };

    // Another server, or graft here: the repository indexed without its held-out files.
    let target = match (&args.endpoint, &repo) {
        (Some(url), _) => Target::Remote(url.clone()),
        (None, Some(repo)) => {
            // The project evaluated: named, else the first configured on the golden set's
            // repository (as `eval build` names it).
            let on_repo = || {
                let repo = std::fs::canonicalize(repo).ok()?;
                let on = |p: &&graft_core::ProjectConfig| std::fs::canonicalize(&p.path).is_ok_and(|path| path == repo);
                config.projects.iter().find(on).map(|p| p.name.clone())
            };
            let evaluated = project.clone().or_else(on_repo);
            Target::Local(Box::new(prepare_local(
                &config,
                &args,
                evaluated.as_deref(),
                &golden_file,
                repo,
                &split,
            )?))
        }
        (None, None) => bail!(
            "{} names no repository: rebuild the golden set with `graft eval build`",
            split_file.display()
        ),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let results = runtime.block_on(async {
        // The served models, and the model that judges by default (the server's base).
        let (served, base_model) = match target {
            Target::Remote(url) => {
                let endpoint = Endpoint::new(&url, args.api_key.clone())?;
                let model = args.model.clone().unwrap_or_default();
                let served = Served {
                    endpoint: endpoint.clone(),
                    plain: model.clone(),
                    adapter: args.adapter.clone(),
                };
                (served, model)
            }
            Target::Local(local) => {
                let (eval_config, embedder) = *local;
                let addr = serve::start_on_loopback(&eval_config, Some(embedder)).await?;
                let endpoint = Endpoint::new(&format!("http://{addr}"), None)?;
                let served = Served {
                    endpoint: endpoint.clone(),
                    plain: EVAL_PROJECT.to_owned(),
                    adapter: args.adapter.as_ref().map(|_| EVAL_ADAPTER_PROJECT.to_owned()),
                };
                (served, config.model.name.clone())
            }
        };
        // The judge: another server (`--judge URL --judge-model M`), or the one the tasks run
        // on with `--judge-model M` or its base model.
        let (judge, judge_about) = match (&args.judge, &args.judge_model) {
            (Some(url), Some(model)) => (
                (Endpoint::new(url, args.judge_api_key.clone())?, model.clone()),
                format!("{url}, model {model}"),
            ),
            (_, Some(model)) => (
                (served.endpoint.clone(), model.clone()),
                format!("the server the tasks ran on, model {model}"),
            ),
            (_, None) => (
                (served.endpoint.clone(), base_model),
                "the server the tasks ran on, its base model".to_owned(),
            ),
        };
        let run = Run {
            args: &args,
            api,
            arms: &arms,
            served,
            judge,
            rubric,
            files,
            split: &split,
        };
        let started = Instant::now();
        let results = run.all(&tasks, &questions).await;
        anyhow::Ok((results, started.elapsed(), judge_about))
    })?;
    let (results, elapsed, judge_about) = results;

    let held_out_retrieved = results.held_out_retrieved;
    let requests = results.outcomes.len() + results.answers.len() + 2 * results.judgements.len();
    let mut report = report(&arms, results, args.seed);
    about(&mut report.about, &args, (&golden_file, &golden_text), &config, &tasks, &questions);
    if !questions.is_empty() {
        report.about.insert("judge", judge_about);
        report.about.insert("rubric", rubric_name(&args));
    }
    let minutes = elapsed.as_secs_f64() / 60.0;
    report.about.insert(
        "throughput",
        format!(
            "{requests} requests in {minutes:.1} min ({:.1} a minute)",
            requests as f64 / minutes.max(1e-9)
        ),
    );
    if let Some(dir) = &args.report {
        write_report(dir, &report, &tasks, &questions)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} completion tasks ({} cross-file) and {} questions of {}\n",
            tasks.len(),
            tasks.iter().filter(|t| t.cross_file()).count(),
            questions.len(),
            golden_file.display()
        );
        print!("{}", report.table());
        if let Some(serve) = &report.serve {
            let place = if args.endpoint.is_some() { "on a graft server, in" } else { "in" };
            println!(
                "  ({place} the project's config: {}; a running graft takes it up when the file is saved)",
                serving_config(serve, args.adapter.as_deref())
            );
        }
        println!("\n{}", report.about["throughput"]);
        if let Some(dir) = &args.report {
            println!("\nreport: {}", dir.join("report.html").display());
            println!(
                "  against another run of this golden set: `graft eval compare {} OTHER_REPORT_DIR`",
                dir.display()
            );
        }
        if held_out_retrieved > 0 {
            println!("\nwarning: {held_out_retrieved} retrieved sources were held-out files");
        }
    }
    if held_out_retrieved > 0 {
        bail!("retrieval returned held-out files {held_out_retrieved} times: the evaluation is not valid");
    }
    Ok(())
}

/// The arms asked for (or the default), checked against what the target can do.
fn arms(args: &EvalRunArgs, api: Api) -> Result<Vec<Arm>> {
    let default = if args.adapter.is_some() {
        "base,rag,adapter,adapter+rag"
    } else {
        "base,rag"
    };
    let arms = Arm::parse_list(args.arms.as_deref().unwrap_or(default)).map_err(anyhow::Error::msg)?;
    if arms.iter().any(|a| a.on_adapter()) && args.adapter.is_none() {
        bail!("the adapter arms need the adapter: --adapter NAME");
    }
    if api != Api::Infill && args.likelihood {
        bail!("--likelihood scores the reference after the prompt the server built, which only --api infill reports");
    }
    if api == Api::Completions {
        if let Some(arm) = arms.iter().find(|a| a.retrieves() || a.is_control()) {
            bail!(
                "--api completions sends the prompt as it is, so the `{}` arm cannot be run that way: use base and adapter, or --api infill",
                arm.name()
            );
        }
    }
    Ok(arms)
}

/// The golden set's tasks that `keep` selects, at most `max` of them: those with the lowest
/// seeded hash of their id (an even draw over kinds and files), in the set's order.
fn pick(golden: &GoldenSet, keep: impl Fn(&Task) -> bool, max: Option<usize>, seed: u64) -> Vec<&Task> {
    let tasks: Vec<&Task> = golden.tasks.iter().filter(|t| keep(t)).collect();
    let Some(max) = max.filter(|m| *m < tasks.len()) else {
        return tasks;
    };
    let mut order: Vec<(u64, usize)> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (stable_hash(seed, &["run", &t.id]), i))
        .collect();
    order.sort();
    let mut keep: Vec<usize> = order.into_iter().take(max).map(|(_, i)| i).collect();
    keep.sort();
    keep.into_iter().map(|i| tasks[i]).collect()
}

/// The adapter `graft train --project PROJECT` writes (`<project>-lora`) when the store holds
/// it and the run would use it: no `--adapter` given, no other server, and the arms left to
/// their default or asking for the adapter. The loop's next step after training is to judge
/// the adapter, as `dataset` and `train` find what the step before them wrote.
fn trained_adapter(args: &EvalRunArgs, config: &graft_core::Config, project: &str) -> Option<String> {
    if args.adapter.is_some() || args.endpoint.is_some() {
        return None;
    }
    if let Some(arms) = &args.arms {
        if !Arm::parse_list(arms).is_ok_and(|arms| arms.iter().any(|a| a.on_adapter())) {
            return None;
        }
    }
    let name = format!("{project}-lora");
    graft_engine::pool::store_names(&config.adapters.dir)
        .contains(&name)
        .then_some(name)
}

/// The lines of a project's config (`[[projects]]`) that serve the chosen arm.
fn serving_config(serve: &graft_eval::choice::Choice, adapter: Option<&str>) -> String {
    let adapter = match (serve.adapter, adapter) {
        (true, Some(name)) => format!("adapter = {name:?}, "),
        (true, None) => "adapter = \"<the adapter>\", ".to_owned(),
        (false, _) => "no adapter, ".to_owned(),
    };
    format!("{adapter}retrieval = {}", serve.retrieval)
}

/// The evaluation's config (project `eval` on the repository without its held-out files, and
/// `eval-adapter` on the adapter sharing its index), its index built and checked. The projects
/// the evaluated one also searches (`also_search`) are indexed beside it, whole, and searched
/// with it as the server searches them.
fn prepare_local(
    config: &graft_core::Config,
    args: &EvalRunArgs,
    evaluated: Option<&str>,
    golden: &Path,
    repo: &Path,
    split: &Split,
) -> Result<(graft_core::Config, graft_index::Embedder)> {
    let mut eval_config = config.clone();
    eval_config.index.dir = golden.with_extension("index");
    eval_config.index.exclude.extend(split.held_out.iter().map(|p| format!("/{p}")));
    let also: Vec<graft_core::ProjectConfig> = evaluated
        .and_then(|name| config.project(name))
        .map(|p| p.also_search.iter().filter_map(|name| config.project(name).cloned()).collect())
        .unwrap_or_default();
    if let Some(clash) = also
        .iter()
        .find(|p| [EVAL_PROJECT, EVAL_ADAPTER_PROJECT].contains(&p.name.as_str()))
    {
        bail!(
            "the evaluation serves its own projects `{EVAL_PROJECT}` and `{EVAL_ADAPTER_PROJECT}`: rename the project `{}`",
            clash.name
        );
    }
    let project = graft_core::ProjectConfig {
        top_k: config.index.top_k,
        context_tokens: args.context_tokens,
        also_search: also.iter().map(|p| p.name.clone()).collect(),
        ..graft_core::ProjectConfig::new(EVAL_PROJECT, repo)
    };
    let mut projects = vec![project.clone()];
    if let Some(adapter) = &args.adapter {
        let store = graft_engine::pool::store_names(&config.adapters.dir);
        if !store.contains(adapter) {
            bail!(
                "no adapter `{adapter}` in the adapter store {} (it holds: {})",
                config.adapters.dir.display(),
                if store.is_empty() {
                    "nothing".to_owned()
                } else {
                    store.to_vec().join(", ")
                }
            );
        }
        projects.push(graft_core::ProjectConfig {
            name: EVAL_ADAPTER_PROJECT.to_owned(),
            adapter: Some(adapter.clone()),
            index: Some(EVAL_PROJECT.to_owned()),
            ..project
        });
    }
    projects.extend(also.iter().map(|p| graft_core::ProjectConfig {
        retrieval: false,
        adapter: None,
        index: None,
        also_search: Vec::new(),
        ..p.clone()
    }));
    eval_config.projects = projects;
    eval_config.server.default_model = Some(EVAL_PROJECT.to_owned());
    let kit = Kit::new(&eval_config.kit.dir);
    let mut needed = graft_wiring::model_artifacts(&eval_config)?;
    needed.extend(graft_wiring::index_artifacts(&eval_config)?);
    models::ensure(&kit, &needed, args.json)?;
    let embedder = index::load_embedder(&eval_config)?;
    let index_with = |config: &graft_core::Config, project: &str, path: &Path| {
        index::run_index(config, project, path, &embedder, graft_index::StartOver::default(), args.json)
    };
    let indexed = index_with(&eval_config, EVAL_PROJECT, repo)?;
    if !args.json {
        eprintln!(
            "indexed {} without its {} held-out files: {} files, {} chunks",
            repo.display(),
            split.held_out.len(),
            indexed.files_indexed,
            indexed.chunks
        );
    }
    // The others with their own excludes: the held-out files are this repository's.
    let beside = graft_core::Config {
        index: graft_core::config::IndexConfig {
            dir: eval_config.index.dir.clone(),
            ..config.index.clone()
        },
        projects: eval_config.projects.clone(),
        ..config.clone()
    };
    for other in &also {
        let indexed = index_with(&beside, &other.name, &other.path)?;
        if !args.json {
            eprintln!(
                "indexed {} for `{}`, which the project also searches: {} files, {} chunks",
                other.path.display(),
                other.name,
                indexed.files_indexed,
                indexed.chunks
            );
        }
    }
    check_held_out_unreachable(&eval_config, repo, split, &embedder)?;
    Ok((eval_config, embedder))
}

/// Searches the evaluation's index with each held-out file's own text (its first lines, up to
/// 20 files): none may come back, or retrieval could hand the model an answer.
fn check_held_out_unreachable(config: &graft_core::Config, repo: &Path, split: &Split, embedder: &graft_index::Embedder) -> Result<()> {
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

/// One run's settings and targets.
struct Run<'a> {
    args: &'a EvalRunArgs,
    api: Api,
    arms: &'a [Arm],
    served: Served,
    /// The judge's endpoint and model.
    judge: (Endpoint, String),
    rubric: Rubric,
    files: Vec<SourceFile>,
    split: &'a Split,
}

impl Run<'_> {
    /// Every completion task in every arm, every question in every arm that is not a
    /// control, then each question's answers judged against the first arm's; `--concurrency`
    /// tasks (and then questions) at a time, each one's requests in turn, the results in the
    /// golden set's order whatever order they finish in.
    async fn all(&self, tasks: &[&Task], questions: &[&Task]) -> Results {
        let question_arms: Vec<Arm> = self.arms.iter().copied().filter(|a| !a.is_control()).collect();
        // Questions are judged against the first arm, so only when it is not a control.
        let judged_arms = match self.arms.first() {
            Some(first) if !first.is_control() => question_arms.len().saturating_sub(1),
            _ => 0,
        };
        let total = tasks.len() * self.arms.len() + questions.len() * (question_arms.len() + 2 * judged_arms);
        let progress = progress::Steps::new(total as u64, "requests", "eval", self.args.json);
        let options = RequestOptions {
            context_lines: self.args.context_lines,
            answer_tokens: self.args.answer_tokens,
            ..RequestOptions::default()
        };
        let at_once = usize::from(self.args.concurrency.max(1));
        let mut results = Results::default();
        let outcomes: Vec<Vec<Outcome>> = stream::iter(tasks)
            .map(|task| self.task(task, options, &progress))
            .buffered(at_once)
            .collect()
            .await;
        results.outcomes = outcomes.into_iter().flatten().collect();
        let asked: Vec<(Vec<Answer>, Vec<Judged>)> = stream::iter(questions)
            .map(|question| self.question(question, &question_arms, judged_arms > 0, options, &progress))
            .buffered(at_once)
            .collect()
            .await;
        for (answers, judgements) in asked {
            results.answers.extend(answers);
            results.judgements.extend(judgements);
        }
        progress.finish();
        results.held_out_retrieved = results
            .outcomes
            .iter()
            .flat_map(|o| &o.sources)
            .chain(results.answers.iter().flat_map(|a| &a.sources))
            .filter(|p| self.split.contains(p))
            .count();
        results
    }

    /// One completion task in every arm, one arm after another.
    async fn task(&self, task: &Task, options: RequestOptions, progress: &progress::Steps) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(self.arms.len());
        for &arm in self.arms {
            let started = Instant::now();
            let reply = self.complete(task, arm, options).await;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let prompt = reply.as_ref().ok().and_then(|r| r.prompt.clone());
            let (text, sources) = split_reply(reply);
            let mut outcome = Outcome::new(task, arm, text, latency_ms, sources);
            if self.args.likelihood {
                outcome.reference_logprob = self.reference_logprob(task, arm, prompt.as_deref()).await;
            }
            outcomes.push(outcome);
            progress.inc(1);
        }
        outcomes
    }

    /// One question asked in each of `arms` (not the controls), then, when `judge`, each
    /// arm's answer judged against the first's.
    async fn question(
        &self,
        question: &Task,
        arms: &[Arm],
        judge: bool,
        options: RequestOptions,
        progress: &progress::Steps,
    ) -> (Vec<Answer>, Vec<Judged>) {
        // Graft's extension field goes only to a server asked for retrieval (so graft).
        let retrieval_field = self.arms.iter().any(|a| a.retrieves());
        let mut answers = Vec::with_capacity(arms.len());
        for &arm in arms {
            let body = chat_request(
                question,
                self.served.model(arm),
                retrieval_field.then_some(arm.retrieves()),
                options,
            );
            let started = Instant::now();
            let reply = self.served.endpoint.chat(&body).await;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let (text, sources) = split_reply(reply);
            answers.push(Answer::new(question, arm, text, latency_ms, sources));
            progress.inc(1);
        }
        let mut judgements = Vec::new();
        let (Some(&first), true) = (arms.first(), judge) else {
            return (answers, judgements);
        };
        let answer_of = |arm: Arm| {
            answers
                .iter()
                .find(|a| a.arm == arm.name() && a.error.is_none())
                .map(|a| a.answer.clone())
        };
        for &arm in &arms[1..] {
            if let (Some(theirs), Some(mine)) = (answer_of(first), answer_of(arm)) {
                let judged = judge_pair(
                    |prompt| self.ask_judge(prompt),
                    &self.rubric,
                    &question.id,
                    question.question.as_deref().unwrap_or_default(),
                    question.reference.as_deref().unwrap_or_default(),
                    (arm.name(), &mine),
                    (first.name(), &theirs),
                )
                .await;
                match judged {
                    Ok(judged) => judgements.push(judged),
                    Err(e) => tracing::warn!(task = %question.id, error = %e, "the judge gave no answer"),
                }
            }
            // The pair in both orders, as `total` counts it.
            progress.inc(2);
        }
        (answers, judgements)
    }

    /// One completion task in one arm.
    async fn complete(&self, task: &Task, arm: Arm, options: RequestOptions) -> Result<Reply, String> {
        let model = self.served.model(arm);
        match self.api {
            Api::Completions => self.served.endpoint.completion(&completions_request(task, model, options)).await,
            Api::Infill | Api::Tabby => {
                let extra = match arm {
                    Arm::Oracle => controls::oracle(task, &self.files),
                    Arm::Random => controls::random(task, &self.files, self.split, self.args.seed),
                    _ => None,
                };
                if self.api == Api::Tabby {
                    let body = tabby_request(task, arm, model, options, extra.as_ref());
                    return self.served.endpoint.tabby(&body).await;
                }
                let body = infill_request(task, arm, model, options, extra.as_ref());
                self.served.endpoint.infill(&body).await
            }
        }
    }

    /// The mean log-probability per token of `task`'s reference after the prompt its `arm`
    /// request was given (`--likelihood`); `None`, with a warning, when it cannot be had.
    async fn reference_logprob(&self, task: &Task, arm: Arm, prompt: Option<&str>) -> Option<f64> {
        let target = task.target.as_deref().unwrap_or_default();
        // What a one-line task is scored on: the reference's first line.
        let reference = if one_line(task) { first_line(target) } else { target };
        let scored = match prompt {
            Some(prompt) => {
                self.served
                    .endpoint
                    .reference_logprob(self.served.model(arm), prompt, reference)
                    .await
            }
            None => Err("the server did not say what prompt it built (/infill's `prompt`)".to_owned()),
        };
        scored
            .inspect_err(|e| tracing::warn!(task = %task.id, arm = arm.name(), error = %e, "no likelihood of the reference"))
            .ok()
            .flatten()
    }

    /// The judge's reply to one prompt: greedy, short.
    async fn ask_judge(&self, prompt: String) -> Result<String, String> {
        let (endpoint, model) = &self.judge;
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 64,
            "temperature": 0,
        });
        endpoint.chat(&body).await.map(|r| r.text)
    }
}

fn split_reply(reply: Result<Reply, String>) -> (Result<String, String>, Vec<String>) {
    match reply {
        Ok(r) => (Ok(r.text), r.sources),
        Err(e) => (Err(e), Vec::new()),
    }
}

fn rubric_name(args: &EvalRunArgs) -> String {
    args.rubric
        .as_ref()
        .map_or("graft's default (`graft eval rubric`)".to_owned(), |p| p.display().to_string())
}

/// What was run, for the report's head.
fn about(
    about: &mut std::collections::BTreeMap<&'static str, String>,
    args: &EvalRunArgs,
    (golden, text): (&Path, &str),
    config: &graft_core::Config,
    tasks: &[&Task],
    questions: &[&Task],
) {
    about.insert("golden set", golden.display().to_string());
    about.insert(GOLDEN_DIGEST, golden_digest(text));
    about.insert(
        "tasks",
        format!(
            "{} completion ({} cross-file), {} questions",
            tasks.len(),
            tasks.iter().filter(|t| t.cross_file()).count(),
            questions.len()
        ),
    );
    match &args.endpoint {
        Some(url) => {
            about.insert(
                "served by",
                format!("{url} ({}, model {})", args.api, args.model.as_deref().unwrap_or("")),
            );
        }
        None => {
            about.insert("served by", format!("graft, in-process ({})", config.model.name));
        }
    }
    if let Some(adapter) = &args.adapter {
        about.insert("adapter", adapter.clone());
    }
    about.insert(
        "prompt",
        format!(
            "{} lines before the cursor; retrieval up to {} tokens",
            args.context_lines, args.context_tokens
        ),
    );
    about.insert("seed", args.seed.to_string());
    about.insert(
        "concurrency",
        match args.concurrency {
            1 => "one task at a time".to_owned(),
            n => format!("{n} tasks at a time (latencies include waiting on each other)"),
        },
    );
}

/// `DIR/report.json` and `DIR/report.html`.
fn write_report(dir: &Path, report: &graft_eval::report::Report, tasks: &[&Task], questions: &[&Task]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(report)?).with_context(|| format!("writing {}", json.display()))?;
    let all: Vec<&Task> = tasks.iter().chain(questions).copied().collect();
    let html = dir.join("report.html");
    std::fs::write(&html, graft_eval::html::page(report, &all)).with_context(|| format!("writing {}", html.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_lines_name_the_adapter_and_retrieval_the_choice_needs() {
        let choice = |arm: &'static str, adapter, retrieval| graft_eval::choice::Choice {
            arm,
            adapter,
            retrieval,
            reasons: Vec::new(),
            level: Vec::new(),
        };
        assert_eq!(
            serving_config(&choice("adapter+rag", true, true), Some("tokio-lora")),
            "adapter = \"tokio-lora\", retrieval = true"
        );
        assert_eq!(
            serving_config(&choice("adapter", true, false), Some("tokio-lora")),
            "adapter = \"tokio-lora\", retrieval = false"
        );
        assert_eq!(
            serving_config(&choice("base", false, false), Some("tokio-lora")),
            "no adapter, retrieval = false"
        );
        assert_eq!(serving_config(&choice("rag", false, true), None), "no adapter, retrieval = true");
    }
}
