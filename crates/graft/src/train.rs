//! `graft train --project NAME`: a dataset from `graft dataset` tokenized with the served
//! model's tokenizer, graft-train's loop on the base GGUF's dequantized weights, then the
//! adapter written into the store as a PEFT folder with `train_report.json` and
//! `train_report.html` (the loss curves). Ctrl-C ends the run after the current step and
//! keeps the best adapter so far.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use graft_engine::Tokenizer;
use graft_train::train::{self, Example, Outcome, TrainSettings};
use graft_train::{DType, LoraSettings, Model};
use serde_json::{json, Value};

use crate::cli::TrainArgs;
use crate::{models, progress};

/// The examples of one part of a dataset folder: `text.jsonl` (every token learned) and the
/// prompt-completion records that are not FIM samples (those are in `text.jsonl` whole; a
/// history pair or an example learns its completion only), cut to `max_tokens`.
fn examples(dir: &Path, tokenizer: &Tokenizer, max_tokens: usize) -> Result<Vec<Example>> {
    let mut out = Vec::new();
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
        if record.get("kind").and_then(Value::as_str) == Some("fim") {
            continue;
        }
        let prompt = tokenizer.encode(&field(&record, "prompt", "prompt-completion.jsonl", line)?)?;
        let completion = tokenizer.encode(&field(&record, "completion", "prompt-completion.jsonl", line)?)?;
        if completion.is_empty() || completion.len() >= max_tokens {
            continue;
        }
        // The prompt's end is kept when the pair is too long.
        let keep = prompt.len().min(max_tokens - completion.len());
        let mut ids = prompt[prompt.len() - keep..].to_vec();
        let mut target = vec![false; ids.len()];
        ids.extend(&completion);
        target.extend(std::iter::repeat_n(true, completion.len()));
        out.push(Example { ids, target });
    }
    Ok(out)
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

pub fn run(args: TrainArgs) -> Result<()> {
    let config = models::load_config(&args.config.config)?;
    if !graft_core::is_valid_name(&args.project) {
        bail!(
            "`{}` cannot be a project or adapter name: use letters, digits, `.`, `_` or `-`",
            args.project
        );
    }
    if args.rank == 0 || args.rank > config.adapters.max_rank {
        bail!(
            "--rank {} must be between 1 and adapters.max_rank ({})",
            args.rank,
            config.adapters.max_rank
        );
    }
    if !(0.0..1.0).contains(&args.dropout) {
        bail!("--dropout must be at least 0 and below 1, got {}", args.dropout);
    }
    if args.max_tokens < 16 {
        bail!("--max-tokens must be at least 16, got {}", args.max_tokens);
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
    let data = args.data.clone().unwrap_or_else(|| PathBuf::from("datasets").join(&args.project));
    if !data.join("manifest.json").is_file() && !data.join("train").is_dir() {
        bail!(
            "{} is not a dataset folder (no train/ in it): make one with `graft dataset PATH --project {}`",
            data.display(),
            args.project
        );
    }
    let out = args.out.clone().unwrap_or_else(|| config.adapters.dir.join(&args.project));
    if out.exists() && !args.force {
        bail!("{} already exists: pass --force to replace it", out.display());
    }

    let (gguf, tokenizer) = models::served_tokenizer(&config, args.json)?;
    let train_set = examples(&data.join("train"), &tokenizer, args.max_tokens)?;
    let mut validation = examples(&data.join("validation"), &tokenizer, args.max_tokens)?;
    validation.truncate(args.max_validation);
    if train_set.is_empty() {
        bail!(
            "{} has no training examples (train/text.jsonl and train/prompt-completion.jsonl are empty)",
            data.display()
        );
    }
    let lora = LoraSettings {
        rank: args.rank,
        alpha: args.alpha,
        rslora: args.rslora,
        dropout: args.dropout,
        targets: args.targets.clone(),
    };
    let loading = Instant::now();
    let model = Model::load(&gguf, DType::F32, Some(&lora)).with_context(|| format!("loading {} for training", gguf.display()))?;
    let load_seconds = loading.elapsed().as_secs_f64();
    let settings = TrainSettings {
        steps: args.steps,
        learning_rate: args.lr,
        warmup_steps: args.warmup,
        accumulation: args.accumulation,
        max_grad_norm: args.max_grad_norm,
        eval_every: args.eval_every,
        patience: args.patience,
        time_budget: args.minutes.map(|m| Duration::from_secs_f64(m * 60.0)),
        seed: args.seed,
        ..TrainSettings::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            runtime.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    flag.store(true, Ordering::Relaxed);
                    eprintln!("\nstopping after this step; the best adapter so far will be written");
                }
            });
        }
    });
    let bar = progress::bar(settings.steps as u64, "steps", args.json);
    let outcome = train::train(&model, &train_set, &validation, &settings, &stop, &mut |step, eval| {
        let val = eval.map_or(String::new(), |e| format!(", val {:.4}", e.val_loss));
        bar.set_message(format!("loss {:.4}{val}", step.loss));
        bar.inc(1);
    })?;
    bar.finish_and_clear();

    graft_train::peft::write(&model, &lora, &config.model.name, &out, args.force)?;
    let report = json!({
        "project": args.project,
        "base_model": gguf,
        "dataset": data,
        "dataset_manifest": data.join("manifest.json"),
        "adapter": out,
        "lora": {"r": lora.rank, "lora_alpha": lora.alpha, "use_rslora": lora.rslora, "lora_dropout": lora.dropout, "target_modules": lora.targets},
        "examples": {"train": train_set.len(), "validation": validation.len(), "max_tokens": args.max_tokens},
        "load_seconds": load_seconds,
        "seconds": loading.elapsed().as_secs_f64(),
        "training": outcome,
    });
    std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    std::fs::write(
        out.join("train_report.html"),
        chart(&outcome, &format!("graft train: {}", args.project)),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("adapter `{}` written to {}", args.project, out.display());
        println!(
            "  examples:   {} train, {} validation (at most {} tokens each)",
            train_set.len(),
            validation.len(),
            args.max_tokens
        );
        println!(
            "  steps:      {} ({}), {:.0} training tokens/s",
            outcome.steps.len(),
            outcome.stopped,
            outcome.tokens_per_second
        );
        if let (Some(base), Some(best)) = (outcome.base_val_loss, outcome.best_val_loss) {
            println!(
                "  validation: {base:.4} (base) -> {best:.4} (best, step {}): {:+.1}%",
                outcome.best_step,
                100.0 * (best - base) / base
            );
        }
        println!("  report:     {} and train_report.html", out.join("train_report.json").display());
    }
    Ok(())
}
