//! Project administration (admin key): `GET /v1/projects` (every project and its index),
//! `GET /v1/projects/{name}` (one), `POST /v1/projects/{name}/reindex` (incremental
//! re-index from the repository, answered with the run's report; an optional body asks to
//! build the keyword index anew, `rebuild`, or to embed every chunk again, `embed_again`, and
//! for each file the run left out with the reason, `skipped_files`) and
//! `POST /v1/projects/{name}/search` (`query`, or a cursor's `prefix` with optional `suffix`
//! and `path` for the search a completion there makes; optional `k` and `mode`: the hits as
//! `graft search --json` prints them).

use crate::path::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json as AxumJson;
use graft_engine::fim::FimInput;
use graft_index::{IndexError, StartOver};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::caller::Admin;
use crate::error::ApiError;
use crate::json::{parse, Body, Json};
use crate::projects::{Project, ReindexError, Search};
use crate::prompt::completion;
use crate::state::AppState;

fn project(state: &AppState, name: &str) -> Result<std::sync::Arc<Project>, ApiError> {
    state
        .projects()
        .get(name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No project named `{name}`")))
}

pub async fn list(State(state): State<AppState>, _admin: Admin) -> Result<AxumJson<Value>, ApiError> {
    let data: Vec<Value> = state.projects().all().iter().map(|p| state.projects().status(p)).collect();
    // Which model requests naming none go to (a reload of the config may change it).
    let default = state.default_model();
    Ok(AxumJson(json!({ "object": "list", "data": data, "default_model": &*default })))
}

pub async fn status(State(state): State<AppState>, _admin: Admin, Path(name): Path<String>) -> Result<AxumJson<Value>, ApiError> {
    let project = project(&state, &name)?;
    Ok(AxumJson(state.projects().status(&project)))
}

/// What `POST .../reindex` may ask besides an incremental run (no body: nothing).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReindexRequest {
    /// Build the keyword index (files, chunks, symbol table) anew from the repository; the
    /// vectors of chunks already embedded are kept.
    #[serde(default)]
    pub rebuild: bool,
    /// Throw the vectors away and embed every chunk again.
    #[serde(default)]
    pub embed_again: bool,
    /// Answer with each file the run left out and why (`report.skipped_files`; otherwise
    /// only their count by reason, `report.skipped`).
    #[serde(default)]
    pub skipped_files: bool,
}

pub async fn reindex(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    Body(body): Body,
) -> Result<AxumJson<Value>, ApiError> {
    let asked: ReindexRequest = if body.trim_ascii().is_empty() {
        ReindexRequest::default()
    } else {
        parse(&body)?
    };
    let project = project(&state, &name)?;
    let start_over = StartOver {
        catalog: asked.rebuild,
        vectors: asked.embed_again,
    };
    // On a task of its own: a client that stops waiting (a webhook's short timeout) does not
    // cancel the run; its outcome is then in the project's status (`last_run`).
    let run = tokio::spawn(async move { state.projects().reindex_anew(&project, start_over).await });
    let mut report = run
        .await
        .map_err(|e| ApiError::internal("re-index failed", &format!("the re-index task failed: {e}")))?
        .map_err(|e| {
            let message = format!("Re-indexing `{name}` failed: {e}");
            match e {
                ReindexError::Running | ReindexError::Index(IndexError::Busy | IndexError::Claimed { .. } | IndexError::InUse { .. }) => {
                    ApiError::new(StatusCode::CONFLICT, message)
                }
                ReindexError::Index(IndexError::Stopped) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message),
                ReindexError::Index(IndexError::DiskFull { .. }) => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, message),
                ReindexError::Index(_) => ApiError::internal("re-index failed", &message),
            }
        })?;
    if !asked.skipped_files {
        report.skipped_files = Vec::new();
    }
    Ok(AxumJson(json!({
        "project": name,
        "elapsed_seconds": report.elapsed.as_secs_f64(),
        "report": report,
    })))
}

#[derive(Debug, Deserialize)]
pub struct SearchRequest {
    /// The text searched for; or, instead, a cursor:
    pub query: Option<String>,
    /// the file up to the cursor,
    pub prefix: Option<String>,
    /// the file after it,
    pub suffix: Option<String>,
    /// and the file's path relative to the repository (its chunks are left out), searched
    /// for as a completion there is (`graft dataset` asks so through a running graft).
    pub path: Option<String>,
    pub k: Option<usize>,
    pub mode: Option<String>,
}

impl SearchRequest {
    /// The search asked for: a query's text, or a completion's at a cursor.
    fn search(self) -> Result<Search, ApiError> {
        match (self.query, self.prefix) {
            (Some(query), None) => {
                if self.suffix.is_some() || self.path.is_some() {
                    let field = if self.suffix.is_some() { "suffix" } else { "path" };
                    return Err(ApiError::invalid_param(field, format!("`{field}` goes with `prefix`, not `query`")));
                }
                Ok(Search::text(query))
            }
            (None, Some(prefix)) => Ok(completion::cursor_search(&FimInput {
                prefix,
                suffix: self.suffix,
                path: self.path,
                ..FimInput::default()
            })),
            (Some(_), Some(_)) => Err(ApiError::invalid_param("prefix", "give `query` or `prefix`, not both")),
            (None, None) => Err(ApiError::invalid_param(
                "query",
                "`query` (text to search for) or `prefix` (code before a cursor) is required",
            )),
        }
    }
}

pub async fn search(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    Json(request): Json<SearchRequest>,
) -> Result<AxumJson<Value>, ApiError> {
    let project = project(&state, &name)?;
    let mode = match request.mode.as_deref() {
        None => graft_index::SearchMode::Hybrid,
        Some(m) => m.parse().map_err(|e: String| ApiError::invalid_param("mode", e))?,
    };
    let k = request.k.unwrap_or(project.config.top_k);
    if !(1..=100).contains(&k) {
        return Err(ApiError::invalid_param("k", format!("k must be between 1 and 100, got {k}")));
    }
    let search = request.search()?;
    let hits = state
        .projects()
        .search(&project, search, k, mode)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("Searching `{name}` failed: {e}")))?
        .ok_or_else(|| {
            ApiError::busy(
                format!("Project `{name}`'s index is being re-indexed, here or by another graft process"),
                5,
            )
        })?;
    Ok(AxumJson(json!({ "object": "list", "data": hits })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> SearchRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_query_is_searched_as_text_and_a_prefix_as_a_completion_there() {
        let text = request(json!({"query": "parse config"})).search().unwrap();
        assert_eq!(text.text, "parse config");
        assert!(matches!(text.look_up, crate::projects::LookUp::Nothing) && text.current_path.is_none());

        let cursor = request(json!({"prefix": "def load(path):\n    cfg = parse_", "suffix": "\n", "path": "app/io.py"}))
            .search()
            .unwrap();
        let expected = completion::cursor_search(&FimInput {
            prefix: "def load(path):\n    cfg = parse_".into(),
            suffix: Some("\n".into()),
            path: Some("app/io.py".into()),
            ..FimInput::default()
        });
        assert_eq!(format!("{cursor:?}"), format!("{expected:?}"));
        assert!(matches!(cursor.look_up, crate::projects::LookUp::Cursor { .. }));
        assert_eq!(cursor.current_path.as_deref(), Some("app/io.py"));
    }

    #[test]
    fn a_search_needs_one_of_query_and_prefix() {
        let refused = |body: Value| {
            let e = request(body).search().unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            (e.param, e.message)
        };
        assert_eq!(refused(json!({})).0, Some("query"));
        assert_eq!(refused(json!({"query": "a", "prefix": "b"})).0, Some("prefix"));
        let (param, message) = refused(json!({"query": "a", "path": "x.py"}));
        assert_eq!(param, Some("path"));
        assert!(message.contains("goes with `prefix`"), "{message}");
    }
}
