//! `GET /`, `GET /health` (`/v1/health`), `GET /metrics`, and the answers for unknown routes
//! and methods.

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Json;
use graft_core::Device;
use serde_json::{json, Value};

use crate::caller::Admin;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /` (and `HEAD /`): a line of text, as Ollama answers there. Ollama's clients (its own
/// CLI's heartbeat, editor plugins, chat front ends) and people with a browser check that a
/// server is up this way; it needs no key, like `/health`.
pub async fn root() -> &'static str {
    "graft is running\n"
}

/// `GET /health` (and `/v1/health`, llama.cpp's and Tabby's): 200 once the base model is
/// loaded (the server only listens after that). Besides `status` and the base `model`, the
/// fields Tabby's plugins read when they connect: `chat_model` (chat is served), `device`,
/// `arch`, `cpu_info`, `cpu_count` and `version.git_describe`.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    let engine = state.engine();
    let gpu = match engine.base().device {
        Device::Cpu => false,
        Device::Cuda => true,
        Device::Auto => graft_engine::gpu_available(),
    };
    Json(json!({
        "status": "ok",
        "model": engine.name(),
        "chat_model": engine.name(),
        "device": if gpu { "cuda" } else { "cpu" },
        "arch": std::env::consts::ARCH,
        "cpu_info": cpu_name(),
        "cpu_count": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "version": {"git_describe": env!("CARGO_PKG_VERSION")},
    }))
}

/// The processor's name, read once: health checks come every few seconds.
fn cpu_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(graft_core::cpu::model_name)
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("No route for {}", uri.path()))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Method {method} is not allowed on {}", uri.path()),
    )
}

/// `GET /metrics`: Prometheus text format. Needs an admin key when keys are configured.
pub async fn metrics(State(state): State<AppState>, _admin: Admin) -> Result<impl IntoResponse, ApiError> {
    let text = state.metrics().render(
        state.pool().stats(),
        state.gate().in_flight(),
        state.gate().queued(),
        &state.projects().index_runs(),
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text))
}
