//! `graft adapters list | merge`: the adapter store, checked against the configured base model.
//!
//! `merge` prepares an adapter ahead of time: it validates it and writes the merged model into
//! the content-addressed cache, where serving will find it.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use graft_core::Config;
use graft_engine::adapter::Adapter;
use graft_engine::cache::MergeCache;
use graft_engine::merge::{BaseGguf, MergeSettings};
use serde_json::json;

use crate::models;

/// The base model's GGUF header, from the config.
fn base(config: &Config) -> Result<BaseGguf> {
    let gguf = graft_wiring::base_gguf(config)?;
    Ok(BaseGguf::open(&gguf)?)
}

/// Loads an adapter from the store and checks it against `base`.
fn checked(config: &Config, base: &BaseGguf, name: &str) -> Result<Adapter, graft_engine::adapter::AdapterError> {
    let store = config.adapters.dir.as_path();
    let adapter = Adapter::load_confined(name, &store.join(name), config.adapters.max_rank, &[store])?;
    graft_engine::merge::check(base, &adapter)?;
    Ok(adapter)
}

/// What `graft train` wrote of the run that made an adapter (its `train_report.json`), when it
/// made it: the project, the steps, and the validation loss before and after; `null` for an
/// adapter from elsewhere or a report that cannot be read.
fn training(dir: &Path) -> serde_json::Value {
    let Some(report) = std::fs::read(dir.join("train_report.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
    else {
        return serde_json::Value::Null;
    };
    let training = &report["training"];
    json!({
        "project": report["project"],
        "steps": training["steps"].as_array().map(Vec::len),
        "stopped": training["stopped"],
        "best_step": training["best_step"],
        "base_val_loss": training["base_val_loss"],
        "best_val_loss": training["best_val_loss"],
    })
}

/// One line of what [`training`] found.
fn training_line(t: &serde_json::Value) -> Option<String> {
    let project = t["project"].as_str()?;
    let mut line = format!("trained on `{project}`");
    if let Some(steps) = t["steps"].as_u64() {
        line.push_str(&format!(", {steps} steps"));
    }
    if let (Some(base), Some(best)) = (t["base_val_loss"].as_f64(), t["best_val_loss"].as_f64()) {
        line.push_str(&format!(
            ", validation {base:.3} -> {best:.3} ({:+.1}%, step {})",
            100.0 * (best - base) / base,
            t["best_step"]
        ));
    }
    Some(line)
}

/// `graft adapters list`.
pub fn list(config_path: &Path, json: bool) -> Result<()> {
    let config = models::load_config(config_path)?;
    let base = base(&config)?;
    let rows: Vec<_> = graft_engine::pool::store_names(&config.adapters.dir)
        .into_iter()
        .map(|name| match checked(&config, &base, &name) {
            Ok(a) => json!({
                "name": name, "valid": true, "rank": a.config.r, "alpha": a.config.lora_alpha,
                "scale": a.scale(), "weights": a.pairs.len(), "error": null,
                "training": training(&config.adapters.dir.join(&name)),
            }),
            Err(e) => json!({ "name": name, "valid": false, "error": e.to_string() }),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("adapters in {} (base: {})", config.adapters.dir.display(), base.path.display());
    if rows.is_empty() {
        println!("  none: put PEFT adapter folders (adapter_config.json + adapter_model.safetensors) there");
    }
    for row in rows {
        if row["valid"] == true {
            println!(
                "  ok       {:<24} r={} alpha={} ({} weights)",
                row["name"].as_str().unwrap_or(""),
                row["rank"],
                row["alpha"],
                row["weights"]
            );
            if let Some(line) = training_line(&row["training"]) {
                println!("           {line}");
            }
        } else {
            println!("  invalid  {}", row["error"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}

/// `graft adapters merge NAME`.
pub fn merge(config_path: &Path, name: &str, json: bool) -> Result<()> {
    let config = models::load_config(config_path)?;
    let base = base(&config)?;
    let adapter = checked(&config, &base, name)?;
    let started = Instant::now();
    let merged =
        MergeCache::new(&config.adapters.cache_dir).get_or_merge(&base, &adapter, &MergeSettings::from(config.adapters.merged_type))?;
    let seconds = started.elapsed().as_secs_f64();
    if json {
        let value = json!({ "name": name, "path": merged.path, "merged_now": merged.fresh, "seconds": seconds });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else if merged.fresh {
        println!("merged `{name}` into {} in {seconds:.1}s", merged.path.display());
    } else {
        println!("`{name}` was already merged: {} ({seconds:.1}s to check)", merged.path.display());
    }
    Ok(())
}
