//! `graft bench train`: LoRA training steps on the served base model (the GGUF `graft train`
//! trains against), on real code nobody here wrote (candle's source, vendored in this
//! repository, by default). It prints the training tokens/s of full-length examples (forward,
//! backward and the optimiser's update; the first step is a warm-up and is not counted), the
//! forward-only tokens/s of a validation pass, the model's load time, and resident memory after
//! loading and at its peak (on a GPU, memory is the host's). It writes nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use graft_train::train::{self, Example, TrainSettings};
use graft_train::{DType, LoraSettings, Model};
use serde_json::json;

use super::{median, peak_rss_mb, rss_mb};
use crate::cli::BenchTrainArgs;
use crate::{models, progress};

/// Text files under `dir` in path order (hidden folders and `target` skipped).
fn text_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        let kind = std::fs::symlink_metadata(&path)?;
        if kind.is_dir() {
            text_files(&path, out)?;
        } else if kind.is_file() && kind.len() < 1 << 20 {
            out.push(path);
        }
    }
    Ok(())
}

pub fn run(args: BenchTrainArgs) -> Result<()> {
    crate::train::join_rayons_pool();
    let config = models::load_config(&args.config.config)?;
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if args.max_tokens < 16 {
        bail!("--max-tokens must be at least 16, got {}", args.max_tokens);
    }
    if args.rank == 0 || args.rank > config.adapters.max_rank {
        bail!(
            "--rank {} must be between 1 and adapters.max_rank ({})",
            args.rank,
            config.adapters.max_rank
        );
    }
    let (gguf, tokenizer) = models::served_tokenizer(&config, args.json)?;
    let mut files = Vec::new();
    text_files(&args.source, &mut files).with_context(|| format!("reading {}", args.source.display()))?;
    // Two validation examples, a warm-up step, then the timed steps.
    let wanted = (args.steps + 3) * args.max_tokens;
    let mut ids = Vec::with_capacity(wanted);
    for file in &files {
        if ids.len() >= wanted {
            break;
        }
        if let Ok(text) = std::fs::read_to_string(file) {
            ids.extend(tokenizer.encode(&text)?);
        }
    }
    if ids.len() < wanted {
        bail!(
            "{} holds {} tokens of text; {} steps of {} tokens need {wanted}",
            args.source.display(),
            ids.len(),
            args.steps,
            args.max_tokens
        );
    }
    let examples: Vec<Example> = ids
        .chunks_exact(args.max_tokens)
        .take(args.steps + 3)
        .map(|piece| Example {
            ids: piece.to_vec(),
            target: vec![true; piece.len()],
        })
        .collect();
    let (validation, training) = examples.split_at(2);

    let rss_start = rss_mb();
    let loading = Instant::now();
    // `graft train`'s defaults: alpha twice the rank, dropout 0.05.
    let lora = LoraSettings {
        rank: args.rank,
        alpha: 2.0 * args.rank as f64,
        dropout: 0.05,
        ..LoraSettings::default()
    };
    let device_name = crate::train::device_name(args.device.as_deref(), &config);
    let device = graft_train::model::device(&device_name)?;
    let model = Model::load_on(&gguf, DType::F32, Some(&lora), 1, &device).with_context(|| format!("loading {}", gguf.display()))?;
    let load_seconds = loading.elapsed().as_secs_f64();
    let rss_loaded = rss_mb();

    let forward = Instant::now();
    train::mean_loss(&model, validation)?;
    let forward_tps = (2 * args.max_tokens) as f64 / forward.elapsed().as_secs_f64();

    let settings = TrainSettings {
        steps: args.steps + 1,
        warmup_steps: 1,
        eval_every: usize::MAX,
        patience: 0,
        ..TrainSettings::default()
    };
    let bar = progress::Steps::new(settings.steps as u64, "steps", "bench train", args.json);
    let outcome = train::train(&model, training, &[], &settings, &AtomicBool::new(false), None, &mut |_, _| {
        bar.inc(1)
    })?;
    bar.finish();
    let ends: Vec<f64> = outcome.steps.iter().map(|s| s.seconds).collect();
    let durations: Vec<f64> = ends.windows(2).map(|w| w[1] - w[0]).collect();
    let step_seconds = median(durations.clone());
    let tokens = outcome.steps.last().map_or(0, |s| s.tokens);
    let figures = json!({
        "model": gguf,
        "source": args.source,
        "machine": {"cpu": graft_core::cpu::model_name(), "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()), "device": device_name},
        "rank": args.rank,
        "dropout": lora.dropout,
        "targets": lora.targets,
        "tokens_per_example": args.max_tokens,
        "timed_steps": durations.len(),
        "load_seconds": load_seconds,
        "step_seconds_median": step_seconds,
        "step_seconds": durations,
        "training_tokens_per_second": tokens as f64 / step_seconds.max(1e-9),
        "forward_tokens_per_second": forward_tps,
        "rss_start_mb": rss_start,
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": peak_rss_mb(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
        return Ok(());
    }
    println!(
        "graft bench train: {} on {} ({}; {} CPUs), rank {}, dropout 0.05, all 7 projections, {}-token examples",
        gguf.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        device_name,
        figures["machine"]["cpu"].as_str().unwrap_or(""),
        figures["machine"]["cpus"],
        args.rank,
        args.max_tokens
    );
    println!("  model load (dequantized)     {load_seconds:>9.1} s");
    println!("  training step (median of {})  {step_seconds:>9.2} s", figures["timed_steps"]);
    println!(
        "  training tokens/s            {:>9.1}",
        figures["training_tokens_per_second"].as_f64().unwrap_or(0.0)
    );
    println!("  forward-only tokens/s        {forward_tps:>9.1}");
    println!("  resident memory, loaded      {rss_loaded:>9.0} MB");
    println!(
        "  resident memory, peak        {:>9.0} MB",
        figures["peak_rss_mb"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}
