//! `graft train [--project NAME]`: a dataset from `graft dataset` tokenized with the served
//! model's tokenizer, graft-train's loop on the base GGUF's dequantized weights, then the
//! adapter written into the store as a PEFT folder with `train_report.json` and
//! `train_report.html` (the loss curves). Ctrl-C ends the run after the current step and
//! keeps the best adapter so far.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use graft_engine::Tokenizer;
use graft_train::train::{self, Checkpoints, Example, Outcome, TrainSettings};
use graft_train::{DType, LoraSettings, Model};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cli::TrainArgs;
use crate::{models, progress};

/// The examples of one part of a dataset folder: `text.jsonl` (every token learned) and the
/// prompt-completion records that are not FIM samples (those are in `text.jsonl` whole; a
/// retrieval-augmented sample, a history pair or an example learns its completion only), cut
/// to `max_tokens`; and how many retrieval-augmented samples were cut (losing retrieved code).
fn examples(dir: &Path, tokenizer: &Tokenizer, max_tokens: usize) -> Result<(Vec<Example>, usize)> {
    let mut out = Vec::new();
    let mut retrieved_cut = 0;
    let read = |name: &str| -> Result<Vec<(usize, Value)>> {
        let path = dir.join(name);
        if !path.exists() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut records = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line).with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))?;
            records.push((i + 1, value));
        }
        Ok(records)
    };
    let field = |value: &Value, name: &str, file: &str, line: usize| -> Result<String> {
        match value.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => bail!("{}/{file}:{line}: `{name}` is not a string", dir.display()),
            None => bail!("{}/{file}:{line}: no `{name}`", dir.display()),
        }
    };
    for (line, record) in read("text.jsonl")? {
        let ids = tokenizer.encode(&field(&record, "text", "text.jsonl", line)?)?;
        for piece in ids.chunks(max_tokens) {
            if piece.len() > 1 {
                out.push(Example {
                    ids: piece.to_vec(),
                    target: vec![true; piece.len()],
                });
            }
        }
    }
    for (line, record) in read("prompt-completion.jsonl")? {
        let kind = record.get("kind").and_then(Value::as_str);
        if kind == Some("fim") {
            continue;
        }
        let prompt = tokenizer.encode(&field(&record, "prompt", "prompt-completion.jsonl", line)?)?;
        let completion = tokenizer.encode(&field(&record, "completion", "prompt-completion.jsonl", line)?)?;
        if completion.is_empty() || completion.len() >= max_tokens {
            continue;
        }
        // The prompt's end is kept when the pair is too long.
        let keep = prompt.len().min(max_tokens - completion.len());
        if keep < prompt.len() && kind == Some("retrieved") {
            retrieved_cut += 1;
        }
        let mut ids = prompt[prompt.len() - keep..].to_vec();
        let mut target = vec![false; ids.len()];
        ids.extend(&completion);
        target.extend(std::iter::repeat_n(true, completion.len()));
        out.push(Example { ids, target });
    }
    Ok((out, retrieved_cut))
}

/// The loss curves as a page: training loss per step and validation loss per evaluation.
fn chart(outcome: &Outcome, title: &str) -> String {
    let (w, h, pad) = (760.0, 320.0, 40.0);
    let steps = outcome.steps.len().max(1) as f64;
    let mut values: Vec<f64> = outcome.steps.iter().map(|s| s.loss).collect();
    values.extend(outcome.evaluations.iter().map(|e| e.val_loss));
    values.extend(outcome.base_val_loss);
    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let (lo, hi) = if lo < hi { (lo, hi) } else { (lo - 1.0, lo + 1.0) };
    let x = |step: f64| pad + (w - 2.0 * pad) * step / steps;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (v - lo) / (hi - lo);
    let line = |points: Vec<(f64, f64)>| -> String {
        points
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let train_line = line(outcome.steps.iter().map(|s| (s.step as f64, s.loss)).collect());
    let mut val_points: Vec<(f64, f64)> = outcome.base_val_loss.map(|b| vec![(0.0, b)]).unwrap_or_default();
    val_points.extend(outcome.evaluations.iter().map(|e| (e.step as f64, e.val_loss)));
    let val_line = line(val_points);
    format!(
        r##"<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}} .t{{stroke:#4477aa;fill:none}} .v{{stroke:#ee6677;fill:none;stroke-width:2}}</style></head>
<body><h1>{title}</h1>
<p>Training loss per step (blue) and validation loss (red; step 0 is the base model). Base validation loss {base}, best {best} at step {best_step}; stopped: {stopped}; {tps:.0} training tokens/s.</p>
<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">
<rect x="{pad}" y="{pad}" width="{iw}" height="{ih}" fill="none" stroke="#ccc"/>
<text x="4" y="{top}" font-size="12">{hi:.3}</text><text x="4" y="{bottom}" font-size="12">{lo:.3}</text>
<text x="{pad}" y="{axis}" font-size="12">step 0</text><text x="{right}" y="{axis}" font-size="12" text-anchor="end">step {last}</text>
<polyline class="t" points="{train_line}"/><polyline class="v" points="{val_line}"/>
</svg></body></html>
"##,
        base = outcome.base_val_loss.map_or("-".into(), |v| format!("{v:.4}")),
        best = outcome.best_val_loss.map_or("-".into(), |v| format!("{v:.4}")),
        best_step = outcome.best_step,
        stopped = outcome.stopped,
        tps = outcome.tokens_per_second,
        iw = w - 2.0 * pad,
        ih = h - 2.0 * pad,
        top = pad + 4.0,
        bottom = h - pad,
        axis = h - pad / 2.0 + 6.0,
        right = w - pad,
        last = outcome.steps.len(),
    )
}

/// What a run is: everything a resumed run must share with the one it continues. Saved in its
/// checkpoint and in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunSpec {
    project: String,
    base_model: PathBuf,
    dataset: PathBuf,
    max_tokens: usize,
    max_validation: usize,
    /// Examples and their target tokens, to notice a dataset that changed before a resume.
    train_examples: usize,
    train_targets: usize,
    validation_examples: usize,
    rank: usize,
    alpha: f64,
    rslora: bool,
    dropout: f64,
    targets: Vec<String>,
    steps: usize,
    lr: f64,
    warmup: usize,
    accumulation: usize,
    max_grad_norm: f64,
    eval_every: usize,
    patience: usize,
    seed: u64,
}

impl RunSpec {
    fn lora(&self) -> LoraSettings {
        LoraSettings {
            rank: self.rank,
            alpha: self.alpha,
            rslora: self.rslora,
            dropout: self.dropout,
            targets: self.targets.clone(),
        }
    }

    fn settings(&self, minutes: Option<f64>) -> TrainSettings {
        TrainSettings {
            steps: self.steps,
            learning_rate: self.lr,
            warmup_steps: self.warmup,
            accumulation: self.accumulation,
            max_grad_norm: self.max_grad_norm,
            eval_every: self.eval_every,
            patience: self.patience,
            time_budget: minutes.map(|m| Duration::from_secs_f64(m * 60.0)),
            seed: self.seed,
            ..TrainSettings::default()
        }
    }
}

/// Why a run stopped (the report's `stopped`), in the summary's words.
fn stop_reason(stopped: &str) -> &str {
    match stopped {
        "steps" => "all --steps done",
        "early-stopping" => "stopped early: --patience evaluations without a better validation loss",
        "time-budget" => "--minutes spent",
        "diverged" => "diverged: a step's loss was no longer a finite number",
        other => other,
    }
}

/// Whether a run that did all its steps kept its last evaluation's adapter: the validation
/// loss was still falling, so the run ended before the data stopped teaching it.
fn still_falling(outcome: &Outcome) -> bool {
    outcome.stopped == "steps" && outcome.evaluations.len() >= 2 && outcome.evaluations.last().is_some_and(|e| e.step == outcome.best_step)
}

/// Checks what the user asked for before anything is read.
fn check_args(args: &TrainArgs, max_rank: usize) -> Result<()> {
    if args.rank == 0 || args.rank > max_rank {
        bail!("--rank {} must be between 1 and adapters.max_rank ({max_rank})", args.rank);
    }
    for (flag, n) in [
        ("--steps", args.steps),
        ("--accumulation", args.accumulation),
        ("--eval-every", args.eval_every),
    ] {
        if n == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        bail!("--lr must be a positive number, got {}", args.lr);
    }
    if !(args.alpha > 0.0 && args.alpha.is_finite()) {
        bail!("--alpha must be a positive number, got {}", args.alpha);
    }
    if !(args.max_grad_norm >= 0.0 && args.max_grad_norm.is_finite()) {
        bail!(
            "--max-grad-norm must be 0 (no clipping) or a positive number, got {}",
            args.max_grad_norm
        );
    }
    if !(0.0..1.0).contains(&args.dropout) {
        bail!("--dropout must be at least 0 and below 1, got {}", args.dropout);
    }
    if args.max_tokens < 16 {
        bail!("--max-tokens must be at least 16, got {}", args.max_tokens);
    }
    if args.minutes.is_some_and(|m| !(m > 0.0 && m.is_finite())) {
        bail!("--minutes must be a positive number");
    }
    if let Some(bad) = args
        .targets
        .iter()
        .find(|t| !graft_engine::adapter::PROJECTIONS.contains(&t.as_str()))
    {
        bail!(
            "--targets: `{bad}` is not a projection ({})",
            graft_engine::adapter::PROJECTIONS.join(", ")
        );
    }
    Ok(())
}

/// The hidden folder beside an adapter folder where its run keeps checkpoints.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    graft_train::staged::hidden_sibling(out, "checkpoint")
}

/// Loads the written adapter into the graft running at `url` (vLLM's endpoint; a changed
/// version replaces the loaded one).
fn serve(url: &str, name: &str, dir: &Path) -> Result<String> {
    let base = crate::eval::target::base_url(url).context("--serve")?;
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(600)).build()?;
        let mut request = client
            .post(format!("{base}/v1/load_lora_adapter"))
            .json(&json!({"lora_name": name, "lora_path": dir}));
        if let Ok(key) = std::env::var("GRAFT_API_KEY") {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("--serve: no graft answering at {base}"))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("--serve: {base} refused the adapter ({status}): {body}");
        }
        Ok(body)
    })
}

/// `path` with links resolved, for a path that may not exist yet: its nearest existing
/// ancestor resolved, the rest appended.
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while existing.canonicalize().is_err() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return absolute,
        }
    }
    let mut real = existing.canonicalize().unwrap_or_else(|_| existing.to_owned());
    real.extend(rest.iter().rev());
    real
}

/// The loop's next step for an adapter of the store: the `eval run` that compares it with the
/// base and retrieval on the project's held-out code (after the `eval build` that makes the
/// golden set, when there is none yet).
fn judge_command(project: &str, adapter: &str, config: &str) -> String {
    let flag = if adapter == format!("{project}-lora") {
        String::new()
    } else {
        format!(" --adapter {adapter}")
    };
    let run = format!(
        "`graft eval run --project {project}{flag}{config}` (the base, retrieval, the adapter and both on held-out code; it says which to serve)"
    );
    if crate::eval::default_golden_set(project).is_file() {
        run
    } else {
        format!("`graft eval build --project {project}{config}` (no golden set yet), then {run}")
    }
}

/// The device `graft train` and `graft bench train` train on: `--device`, else where the
/// config's model runs (`model.device`, "auto" resolved as the server resolves it).
pub fn device_name(flag: Option<&str>, config: &graft_core::Config) -> String {
    if let Some(flag) = flag {
        return flag.to_owned();
    }
    let gpu = match config.model.device {
        graft_core::Device::Cpu => false,
        graft_core::Device::Cuda => true,
        graft_core::Device::Auto => graft_engine::gpu_available(),
    };
    if gpu { "cuda" } else { "cpu" }.to_owned()
}

/// Where the adapter written to `out` stands with a server of this config: a project can name
/// it only in `adapters.dir` itself, and `POST /v1/load_lora_adapter` (what `--serve` sends)
/// loads it only from inside `adapters.dir` or `adapters.allowed_dirs`.
struct Placement {
    /// Its folder's name is an adapter name (`graft_core::is_valid_name`).
    valid_name: bool,
    /// It lies directly in `adapters.dir`.
    in_store: bool,
    /// It lies inside `adapters.dir` or one of `adapters.allowed_dirs`.
    loadable: bool,
}

impl Placement {
    fn of(out: &Path, adapters: &graft_core::config::AdaptersConfig) -> Placement {
        let out = resolved(out);
        let store = resolved(&adapters.dir);
        let inside = |root: &Path| out.starts_with(root) && out != root;
        Placement {
            valid_name: out.file_name().and_then(|n| n.to_str()).is_some_and(graft_core::is_valid_name),
            in_store: out.parent() == Some(store.as_path()),
            loadable: inside(&store) || adapters.allowed_dirs.iter().any(|dir| inside(&resolved(dir))),
        }
    }
}

/// `--serve` refused before training rather than after it: a server with this config would
/// not load an adapter from `out`.
fn check_servable(out: &Path, adapters: &graft_core::config::AdaptersConfig) -> Result<()> {
    let placement = Placement::of(out, adapters);
    if !placement.valid_name {
        bail!(
            "--serve: the adapter would be served under its folder's name, and `{}` is not an adapter name (letters, digits, `.`, `_` or `-`): choose another --out",
            out.file_name().map_or_else(|| out.display().to_string(), |n| n.to_string_lossy().into_owned())
        );
    }
    if !placement.loadable {
        bail!(
            "--serve: a server loads adapters only from adapters.dir ({}) or adapters.allowed_dirs, and --out {} lies outside them: leave --out out (it defaults to adapters.dir), or add its folder to adapters.allowed_dirs in the server's config",
            adapters.dir.display(),
            out.display()
        );
    }
    Ok(())
}

/// Makes this thread, which runs the training, one of rayon's (`graft_train::threads`), so it
/// computes with the pool instead of waiting on it. `graft train` and `graft bench train`.
pub(crate) fn join_rayons_pool() {
    if !graft_train::threads::join_global_pool() {
        tracing::debug!("rayon's global pool existed already: training computes on its threads alone");
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    join_rayons_pool();
    let config = models::load_config(&args.config.config)?;
    let project = crate::project::name(&config, args.project.as_deref(), "train")?;
    check_args(&args, config.adapters.max_rank)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| config.adapters.dir.join(format!("{}-lora", project)));
    if let Some(url) = args.serve.as_deref().filter(|u| !u.is_empty()) {
        // A URL that cannot be one is refused before training, not after.
        crate::eval::target::base_url(url).context("--serve")?;
    }
    if args.serve.is_some() {
        check_servable(&out, &config.adapters)?;
    }
    let checkpoints_at = checkpoint_dir(&out);
    if out.exists() && !args.force && !args.resume {
        bail!("{} already exists: pass --force to replace it", out.display());
    }
    let resume = if args.resume {
        if !checkpoints_at.join("run.json").is_file() {
            bail!(
                "--resume: no checkpoint at {} (a run keeps one when it is interrupted or runs out of --minutes)",
                checkpoints_at.display()
            );
        }
        let (checkpoint, run) = graft_train::checkpoint::load(&checkpoints_at, &graft_train::Device::Cpu)
            .with_context(|| format!("reading the checkpoint {}", checkpoints_at.display()))?;
        let spec: RunSpec = serde_json::from_value(run)
            .with_context(|| format!("{}: not a checkpoint of `graft train`", checkpoints_at.join("run.json").display()))?;
        Some((checkpoint, spec))
    } else {
        None
    };
    let data = match &resume {
        Some((_, spec)) => spec.dataset.clone(),
        None => args.data.clone().unwrap_or_else(|| PathBuf::from("datasets").join(&project)),
    };
    if !data.join("manifest.json").is_file() && !data.join("train").is_dir() {
        bail!(
            "{} is not a dataset folder (no train/ in it): make one with `graft dataset PATH --project {}`",
            data.display(),
            project
        );
    }

    let (gguf, tokenizer) = models::served_tokenizer(&config, args.json)?;
    let (max_tokens, max_validation) = match &resume {
        Some((_, spec)) => (spec.max_tokens, spec.max_validation),
        None => (args.max_tokens, args.max_validation),
    };
    let (train_set, retrieved_cut) = examples(&data.join("train"), &tokenizer, max_tokens)?;
    let (mut validation, _) = examples(&data.join("validation"), &tokenizer, max_tokens)?;
    if retrieved_cut > 0 && !args.json {
        eprintln!(
            "note: {retrieved_cut} retrieval-augmented samples are longer than --max-tokens {max_tokens} and lose their \
             retrieved code when cut; make the dataset with `dataset.max_sample_tokens = {max_tokens}` to keep it"
        );
    }
    validation.truncate(max_validation);
    if train_set.is_empty() {
        bail!(
            "{} has no training examples (train/text.jsonl and train/prompt-completion.jsonl are empty)",
            data.display()
        );
    }
    let spec = RunSpec {
        project: project.clone(),
        base_model: gguf.clone(),
        dataset: data.clone(),
        max_tokens,
        max_validation,
        train_examples: train_set.len(),
        train_targets: train_set.iter().map(Example::targets).sum(),
        validation_examples: validation.len(),
        rank: args.rank,
        alpha: args.alpha,
        rslora: args.rslora,
        dropout: args.dropout,
        targets: args.targets.clone(),
        steps: args.steps,
        lr: args.lr,
        warmup: args.warmup,
        accumulation: args.accumulation,
        max_grad_norm: args.max_grad_norm,
        eval_every: args.eval_every,
        patience: args.patience,
        seed: args.seed,
    };
    let (spec, checkpoint) = match resume {
        Some((checkpoint, saved)) => {
            let now = RunSpec {
                rank: saved.rank,
                alpha: saved.alpha,
                rslora: saved.rslora,
                dropout: saved.dropout,
                targets: saved.targets.clone(),
                steps: saved.steps,
                lr: saved.lr,
                warmup: saved.warmup,
                accumulation: saved.accumulation,
                max_grad_norm: saved.max_grad_norm,
                eval_every: saved.eval_every,
                patience: saved.patience,
                seed: saved.seed,
                ..spec
            };
            if now != saved {
                bail!(
                    "--resume: the run's base model or data changed since its checkpoint (then: {} with {} training examples, {} target tokens; now: {} with {}, {})",
                    saved.base_model.display(),
                    saved.train_examples,
                    saved.train_targets,
                    now.base_model.display(),
                    now.train_examples,
                    now.train_targets
                );
            }
            (saved, Some(checkpoint))
        }
        None => (spec, None),
    };
    let lora = spec.lora();
    let settings = spec.settings(args.minutes);
    let loading = Instant::now();
    let device_name = device_name(args.device.as_deref(), &config);
    let device = graft_train::model::device(&device_name)?;
    let model = Model::load_on(&gguf, DType::F32, Some(&lora), spec.seed, &device)
        .with_context(|| format!("loading {} for training", gguf.display()))?;
    let load_seconds = loading.elapsed().as_secs_f64();
    let stop = crate::interrupt::stop_on_ctrl_c("stopping after this step; the best adapter so far and a checkpoint will be written");
    let done = checkpoint.as_ref().map_or(0, |c| c.state.step);
    let bar = progress::Steps::new(settings.steps as u64, "steps", "train", args.json);
    bar.set_position(done as u64);
    let checkpoints = Checkpoints {
        dir: &checkpoints_at,
        run: serde_json::to_value(&spec)?,
        resume: checkpoint,
    };
    // The latest validation loss stays in the message until the next, so that a log's line,
    // which shows whatever step it falls on, has it too.
    let mut last_val = String::new();
    let outcome = train::train(
        &model,
        &train_set,
        &validation,
        &settings,
        &stop,
        Some(checkpoints),
        &mut |step, eval| {
            if let Some(e) = eval {
                last_val = format!(", val {:.4} (step {})", e.val_loss, e.step);
            }
            bar.set_message(format!("loss {:.4}{last_val}, {:.0} tokens/s", step.loss, step.tokens_per_second));
            bar.inc(1);
        },
    )?;
    bar.finish();
    let diverged_at = (outcome.stopped == "diverged").then(|| outcome.steps.last().map_or(1, |s| s.step + 1));
    if let (Some(step), 0) = (diverged_at, outcome.best_step) {
        // Its checkpoint would only diverge again.
        let _ = std::fs::remove_dir_all(&checkpoints_at);
        bail!(
            "training diverged at step {step}: its loss or gradient was no longer a finite number, so the step \
             was not taken, and no validated adapter came before it: nothing written (--lr {:e} is likely too \
             high; the default is 3e-4)",
            settings.learning_rate
        );
    }

    graft_train::peft::write(&model, &lora, &config.model.name, &out, true)?;
    let finished = matches!(outcome.stopped, "steps" | "early-stopping" | "diverged");
    if finished {
        std::fs::remove_dir_all(&checkpoints_at).with_context(|| format!("removing {}", checkpoints_at.display()))?;
    }
    let name = out.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let report = json!({
        "project": project,
        "adapter": out,
        "run": spec,
        "dataset_manifest": data.join("manifest.json"),
        "device": device_name,
        "load_seconds": load_seconds,
        "seconds": loading.elapsed().as_secs_f64(),
        "checkpoint": (!finished).then_some(&checkpoints_at),
        "training": outcome,
    });
    std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    std::fs::write(out.join("train_report.html"), chart(&outcome, &format!("graft train: {}", project)))?;
    let served = match &args.serve {
        Some(url) => {
            let url = if url.is_empty() {
                crate::serve::local_url(config.server.listen)
            } else {
                url.clone()
            };
            Some(serve(&url, &name, &out)?)
        }
        None => None,
    };
    if args.json {
        let mut report = report;
        report["served"] = json!(served);
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("adapter `{name}` written to {}", out.display());
    let seen = outcome.steps.len() * outcome.settings.accumulation.max(1);
    println!(
        "  examples:   {} train, {} validation (at most {} tokens each); {seen} trained on, {:.2} passes",
        train_set.len(),
        validation.len(),
        spec.max_tokens,
        seen as f64 / train_set.len().max(1) as f64
    );
    let resumed = outcome.resumed_from.map_or(String::new(), |s| format!(", resumed after step {s}"));
    println!(
        "  steps:      {} ({}{resumed}), {:.0} training tokens/s",
        outcome.steps.len(),
        stop_reason(outcome.stopped),
        outcome.tokens_per_second
    );
    if let (Some(base), Some(best)) = (outcome.base_val_loss, outcome.best_val_loss) {
        println!(
            "  validation: {base:.4} (base) -> {best:.4} (best, step {}): {:+.1}%",
            outcome.best_step,
            100.0 * (best - base) / base
        );
    }
    if let Some(step) = diverged_at {
        println!(
            "  note:       training diverged at step {step}; the adapter is the best validated before it \
             (step {}); a lower --lr would likely train further",
            outcome.best_step
        );
    }
    if still_falling(&outcome) {
        println!(
            "  note:       the validation loss still fell at its last evaluation: a longer run \
             (more --steps; --force replaces this adapter) would likely lower it further"
        );
    }
    println!("  report:     {} and train_report.html", out.join("train_report.json").display());
    if !finished {
        println!(
            "  checkpoint: {} (continue with `graft train --project {} --resume`{}{})",
            checkpoints_at.display(),
            project,
            args.out.as_ref().map_or(String::new(), |o| format!(" --out {}", o.display())),
            args.config.flag()
        );
    }
    let placement = Placement::of(&out, &config.adapters);
    if placement.in_store && placement.valid_name {
        println!("  judge it:   {}", judge_command(&project, &name, &args.config.flag()));
    }
    match served {
        Some(answer) => println!("  served:     {}", answer.trim()),
        None if placement.in_store && placement.valid_name => println!(
            "  serve it:   a running graft loads it with `graft train ... --serve`, or name it in a project (`adapter = \"{name}\"`; a running graft takes that up when the config is saved)"
        ),
        None if placement.loadable && placement.valid_name => println!(
            "  serve it:   a running graft loads it with `graft train ... --serve` (or POST /v1/load_lora_adapter); to name it in a project, move it into adapters.dir ({})",
            config.adapters.dir.display()
        ),
        None => println!(
            "  serve it:   move it into adapters.dir ({}) under a name of letters, digits, `.`, `_` or `-`, then name it in a project or load it with POST /v1/load_lora_adapter",
            config.adapters.dir.display()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use graft_train::train::{EvalLog, Outcome, TrainSettings};

    use super::{device_name, judge_command, still_falling};

    #[test]
    fn the_summary_names_the_evaluation_that_judges_the_adapter() {
        // No golden set for this project (eval/ holds none here): build one first.
        let first = judge_command("no-such-project", "no-such-project-lora", "");
        assert!(
            first.starts_with(
                "`graft eval build --project no-such-project` (no golden set yet), then `graft eval run --project no-such-project` ("
            ),
            "{first}"
        );
        // An adapter under another name than train's default is named.
        assert!(judge_command("no-such-project", "tuned", "").contains("`graft eval run --project no-such-project --adapter tuned`"));
        assert!(judge_command("no-such-project", "tuned", " --config my.toml")
            .contains("`graft eval run --project no-such-project --adapter tuned --config my.toml`"));
    }

    #[test]
    fn training_goes_where_the_config_runs_the_model_unless_told() {
        let config = |device: &str| {
            graft_core::Config::from_toml(
                &format!("[model]\ndevice = \"{device}\"\n"),
                std::path::Path::new("/etc/graft/graft.toml"),
            )
            .unwrap()
        };
        assert_eq!(device_name(None, &config("cpu")), "cpu");
        assert_eq!(device_name(None, &config("cuda")), "cuda");
        let auto = if graft_engine::gpu_available() { "cuda" } else { "cpu" };
        assert_eq!(device_name(None, &config("auto")), auto);
        assert_eq!(device_name(Some("cuda:1"), &config("cpu")), "cuda:1");
        assert_eq!(device_name(Some("cpu"), &config("cuda")), "cpu");
    }

    fn outcome(stopped: &'static str, losses: &[f64]) -> Outcome {
        let evaluations: Vec<EvalLog> = losses
            .iter()
            .enumerate()
            .map(|(i, &val_loss)| EvalLog {
                step: 25 * (i + 1),
                val_loss,
            })
            .collect();
        let best = evaluations.iter().min_by(|a, b| a.val_loss.total_cmp(&b.val_loss));
        Outcome {
            settings: TrainSettings::default(),
            steps: Vec::new(),
            base_val_loss: Some(3.0),
            best_val_loss: best.map(|e| e.val_loss),
            best_step: best.map_or(0, |e| e.step),
            evaluations,
            stopped,
            tokens_per_second: 0.0,
            resumed_from: None,
        }
    }

    #[test]
    fn a_run_whose_last_evaluation_was_its_best_was_still_learning() {
        assert!(still_falling(&outcome("steps", &[2.5, 2.3, 2.2])));
        // It had levelled off: the best came before the end.
        assert!(!still_falling(&outcome("steps", &[2.5, 2.2, 2.3])));
        // One evaluation says nothing of a trend; a run cut short says so in its own line.
        assert!(!still_falling(&outcome("steps", &[2.5])));
        assert!(!still_falling(&outcome("time-budget", &[2.5, 2.3, 2.2])));
        assert!(!still_falling(&outcome("steps", &[])));
    }
}
