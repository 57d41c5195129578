//! Project administration (admin key): `GET /v1/projects` (every project and its index),
//! `GET /v1/projects/{name}` (one), `POST /v1/projects/{name}/reindex` (incremental
//! re-index from the repository, answered with the run's report) and
//! `POST /v1/projects/{name}/search` (`query`, optional `k` and `mode`: the hits as
//! `graft search --json` prints them).

use crate::path::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json as AxumJson;
use graft_index::IndexError;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::caller::Admin;
use crate::error::ApiError;
use crate::json::Json;
use crate::projects::{Project, ReindexError, Search};
use crate::state::AppState;

fn project(state: &AppState, name: &str) -> Result<std::sync::Arc<Project>, ApiError> {
    state
        .projects()
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No project named `{name}`")))
}

pub async fn list(State(state): State<AppState>, _admin: Admin) -> Result<AxumJson<Value>, ApiError> {
    let data: Vec<Value> = state.projects().all().map(|p| state.projects().status(p)).collect();
    Ok(AxumJson(json!({ "object": "list", "data": data })))
}

pub async fn status(State(state): State<AppState>, _admin: Admin, Path(name): Path<String>) -> Result<AxumJson<Value>, ApiError> {
    let project = project(&state, &name)?;
    Ok(AxumJson(state.projects().status(&project)))
}

pub async fn reindex(State(state): State<AppState>, _admin: Admin, Path(name): Path<String>) -> Result<AxumJson<Value>, ApiError> {
    let project = project(&state, &name)?;
    // On a task of its own: a client that stops waiting (a webhook's short timeout) does not
    // cancel the run; its outcome is then in the project's status (`last_run`).
    let run = tokio::spawn(async move { state.projects().reindex(&project).await });
    let report = run
        .await
        .map_err(|e| ApiError::internal("re-index failed", &format!("the re-index task failed: {e}")))?
        .map_err(|e| {
            let message = format!("Re-indexing `{name}` failed: {e}");
            match e {
                ReindexError::Running | ReindexError::Index(IndexError::Busy | IndexError::Claimed { .. } | IndexError::InUse { .. }) => {
                    ApiError::new(StatusCode::CONFLICT, message)
                }
                ReindexError::Index(_) => ApiError::internal("re-index failed", &message),
            }
        })?;
    Ok(AxumJson(json!({
        "project": name,
        "elapsed_seconds": report.elapsed.as_secs_f64(),
        "report": report,
    })))
}

#[derive(Debug, Deserialize)]
pub struct SearchRequest {
    pub query: String,
    pub k: Option<usize>,
    pub mode: Option<String>,
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
    let hits = state
        .projects()
        .search(&project, Search::text(request.query), k, mode)
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
