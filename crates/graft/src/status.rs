//! `graft status`: what a running graft serves, asked over HTTP (`/health`, `/v1/projects`,
//! `/metrics`, and Ollama's `/api/ps` for the adapters loaded), so that after saving its
//! config one sees the change taken up, and after `graft up` whether each index is ready. It
//! reads answers and lays them out; it changes nothing.

use anyhow::Result;
use graft_server::state::unix_seconds;
use serde_json::{json, Value};

use crate::cli::StatusArgs;
use crate::remote::Graft;
use crate::{models, serve};

pub fn run(args: StatusArgs) -> Result<()> {
    let url = match &args.server {
        Some(url) => url.clone(),
        None => serve::local_url(models::load_config(&args.config.config)?.server.listen),
    };
    let graft = Graft::at(&url).map_err(anyhow::Error::msg)?;
    let health = graft.get("/health", "its health").map_err(anyhow::Error::msg)?;
    let projects = graft.get("/v1/projects", "its projects");
    // Told apart from the projects' names only when those are known.
    let loaded = projects.as_ref().ok().and_then(|projects| {
        graft
            .get("/api/ps", "its models")
            .ok()
            .map(|ps| loaded_adapters(&ps, &health, projects))
    });
    let metrics = graft.get_text("/metrics", "its metrics");
    let figure = |name: &str| metrics.as_ref().ok().and_then(|text| metric(text, name));
    let count = |name: &str| figure(name).map(|v| v as u64);
    let (running, queued) = (count("graft_generations_in_flight"), count("graft_generations_queued"));
    let reloaded = figure("graft_config_last_reload_successful").map(|v| v == 1.0);
    if args.json {
        let answer = json!({
            "url": graft.base,
            "health": health,
            "projects": projects.as_ref().ok().map(|p| &p["data"]),
            "default_model": projects.as_ref().ok().map(|p| &p["default_model"]),
            "projects_error": projects.as_ref().err(),
            "generations": {"running": running, "queued": queued},
            "adapters_loaded": loaded,
            "last_reload_successful": reloaded,
            "metrics_error": metrics.as_ref().err(),
        });
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    println!(
        "graft at {}: {} on the {} ({}, {} threads)",
        graft.base,
        text(&health["model"]),
        text(&health["device"]),
        text(&health["cpu_info"]),
        text(&health["cpu_count"])
    );
    match (running, queued, reloaded) {
        (Some(running), Some(queued), reloaded) => println!(
            "generations: {running} running, {queued} queued; last config reload: {}",
            match reloaded {
                Some(true) => "applied",
                Some(false) => "refused (see its log)",
                None => "unknown",
            }
        ),
        _ => println!("generations: not known ({})", metrics.err().unwrap_or_default()),
    }
    if let Some(loaded) = &loaded {
        let names = if loaded.is_empty() { "none".to_owned() } else { loaded.join(", ") };
        println!("adapters loaded: {names}");
    }
    match projects {
        Ok(projects) => print!(
            "requests that name no model: {}\n{}",
            text(&projects["default_model"]),
            table(projects["data"].as_array().map(Vec::as_slice).unwrap_or_default(), unix_seconds())
        ),
        Err(e) => println!("projects: not known ({e})"),
    }
    Ok(())
}

/// The adapters among the models `/api/ps` lists as loaded: those that are neither the base
/// (`health`'s model) nor a project (each of which is listed when its model is loaded).
fn loaded_adapters(ps: &Value, health: &Value, projects: &Value) -> Vec<String> {
    let projects: Vec<&str> = projects["data"]
        .as_array()
        .map(|list| list.iter().filter_map(|p| p["project"].as_str()).collect())
        .unwrap_or_default();
    let models = ps["models"].as_array().map(Vec::as_slice).unwrap_or_default();
    models
        .iter()
        .filter_map(|m| m["name"].as_str())
        .filter(|name| Some(*name) != health["model"].as_str() && !projects.contains(name))
        .map(str::to_owned)
        .collect()
}

/// The value of an unlabelled metric in Prometheus's text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A JSON string or number as text; `?` when absent.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "?".to_owned(),
        other => other.to_string(),
    }
}

/// The projects, a line each: what serves them, their retrieval, their index (at `now`, Unix
/// seconds).
fn table(projects: &[Value], now: f64) -> String {
    let mut rows = vec![[
        "project".to_owned(),
        "served on".to_owned(),
        "retrieval".to_owned(),
        "index".to_owned(),
    ]];
    for p in projects {
        let model = match p["adapter"].as_str() {
            Some(adapter) => format!("adapter {adapter}"),
            None => "the base".to_owned(),
        };
        let mut retrieval = if p["retrieval"] == true {
            format!("top {}, {} tokens", text(&p["top_k"]), text(&p["context_tokens"]))
        } else {
            "off".to_owned()
        };
        // The other projects whose indexes its retrieval searches too.
        let also: Vec<String> = p["also_search"].as_array().into_iter().flatten().map(text).collect();
        if p["retrieval"] == true && !also.is_empty() {
            retrieval.push_str(&format!(" + {}", also.join(", ")));
        }
        rows.push([text(&p["project"]), model, retrieval, index(p, now)]);
    }
    let widths: Vec<usize> = (0..3)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for [name, model, retrieval, index] in &rows {
        out.push_str(&format!(
            "{name:<w0$}  {model:<w1$}  {retrieval:<w2$}  {index}\n",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        ));
    }
    out
}

/// A project's index in words: its state, its size, its last run and how long ago it ended.
fn index(p: &Value, now: f64) -> String {
    let pending = p["vectors_pending"].as_u64().unwrap_or(0);
    let mut words = if p["reindexing"] == true && p["indexed"] == true && pending > 0 {
        // A run's catalog is committed and serves; its vectors are being embedded.
        format!("{} chunks, {pending} vectors still to embed", text(&p["chunks"]))
    } else if p["reindexing"] == true {
        "re-indexing".to_owned()
    } else if let Some(error) = p["error"].as_str() {
        format!("not usable: {error}")
    } else if p["indexed"] == true && p["vectors_outdated"] == true {
        format!(
            "{} chunks, its vectors from another embedding model or graft version: searched without them until it is indexed again",
            text(&p["chunks"])
        )
    } else if p["indexed"] == true {
        format!("{} chunks", text(&p["chunks"]))
    } else {
        "no index".to_owned()
    };
    if p["index_of"] != p["project"] {
        words.push_str(&format!(" (`{}`'s)", text(&p["index_of"])));
    }
    let last = &p["last_run"];
    if let Some(at) = last["finished_at"].as_f64() {
        let outcome = match last["error"].as_str() {
            Some(error) => format!("failed: {error}"),
            None => format!("ok in {:.1} s", last["seconds"].as_f64().unwrap_or(0.0)),
        };
        words.push_str(&format!("; last run {} ago, {outcome}", ago(now - at)));
    }
    words
}

/// A duration in seconds as a person reads it: `42 s`, `3 min`, `2 h`, `5 d`.
fn ago(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=99 => format!("{s} s"),
        100..=5999 => format!("{} min", s / 60),
        6000..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adapters_loaded_are_the_models_loaded_but_the_base_and_projects() {
        let ps = json!({"models": [{"name": "smollm2"}, {"name": "api-lora"}, {"name": "api-tuned"}]});
        let projects = json!({"data": [{"project": "api"}, {"project": "api-tuned"}]});
        let health = json!({"model": "smollm2"});
        assert_eq!(loaded_adapters(&ps, &health, &projects), ["api-lora"]);
    }

    #[test]
    fn a_metric_is_read_by_its_whole_name() {
        let text = "# HELP graft_generations_queued x\ngraft_generations_queued_total 9\ngraft_generations_queued 2\n";
        assert_eq!(metric(text, "graft_generations_queued"), Some(2.0));
        assert_eq!(metric(text, "graft_generations"), None);
    }

    #[test]
    fn projects_are_laid_out_a_line_each_with_their_index_in_words() {
        let projects = [
            json!({"project": "api", "adapter": null, "retrieval": true, "top_k": 5, "context_tokens": 512,
                   "index_of": "api", "indexed": true, "reindexing": false, "chunks": 2482, "error": null,
                   "last_run": {"finished_at": 1000.0, "seconds": 54.04, "error": null}}),
            json!({"project": "api-tuned", "adapter": "api-lora", "retrieval": false, "top_k": 5, "context_tokens": 512,
                   "index_of": "api", "indexed": false, "reindexing": true, "chunks": null, "error": null, "last_run": null}),
            json!({"project": "web", "adapter": null, "retrieval": true, "top_k": 3, "context_tokens": 900,
                   "also_search": ["api", "nx"], "index_of": "web", "indexed": false, "reindexing": false, "chunks": null, "error": null,
                   "last_run": {"finished_at": 1000.0, "seconds": 0.2, "error": "no such folder"}}),
            json!({"project": "nx", "adapter": null, "retrieval": true, "top_k": 5, "context_tokens": 512,
                   "index_of": "nx", "indexed": true, "reindexing": true, "vectors_pending": 4928, "chunks": 6184,
                   "error": null, "last_run": null}),
            json!({"project": "old", "adapter": null, "retrieval": true, "top_k": 5, "context_tokens": 512,
                   "index_of": "old", "indexed": true, "reindexing": false, "vectors_outdated": true, "chunks": 25,
                   "error": null, "last_run": null}),
        ];
        let table = table(&projects, 1000.0 + 7200.0);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "project    served on         retrieval                    index");
        assert_eq!(
            lines[1],
            "api        the base          top 5, 512 tokens            2482 chunks; last run 2 h ago, ok in 54.0 s"
        );
        assert_eq!(
            lines[2],
            "api-tuned  adapter api-lora  off                          re-indexing (`api`'s)"
        );
        assert_eq!(
            lines[3],
            "web        the base          top 3, 900 tokens + api, nx  no index; last run 2 h ago, failed: no such folder"
        );
        assert_eq!(
            lines[4],
            "nx         the base          top 5, 512 tokens            6184 chunks, 4928 vectors still to embed"
        );
        assert_eq!(
            lines[5],
            "old        the base          top 5, 512 tokens            25 chunks, its vectors from another embedding model \
             or graft version: searched without them until it is indexed again"
        );
        assert_eq!(
            (ago(42.0), ago(180.0), ago(7200.0), ago(400_000.0)),
            ("42 s".into(), "3 min".into(), "2 h".into(), "4 d".into())
        );
    }
}
