//! vLLM's adapter endpoints, so tools written for vLLM's LoRA serving work unchanged:
//! `POST /v1/load_lora_adapter` (`lora_name`, optional `lora_path`) and
//! `POST /v1/unload_lora_adapter` (`lora_name`). Both answer in plain text as vLLM does;
//! errors are OpenAI error JSON.
//!
//! Both need an admin key. A `lora_path` must lie inside the adapter store or a folder the
//! configuration allows; the pool checks it. An adapter that is not there (no such name in the
//! store, no such folder) is a 404 naming the field, as vLLM answers.

use std::path::Path;

use axum::extract::State;
use axum::http::StatusCode;
use graft_engine::adapter::AdapterError;
use graft_engine::pool::PoolError;

use crate::caller::Admin;
use crate::error::ApiError;
use crate::json::Json;
use crate::openai::{LoadLoraRequest, UnloadLoraRequest};
use crate::state::AppState;

pub async fn load(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Json(request): Json<LoadLoraRequest>,
) -> Result<(StatusCode, String), ApiError> {
    let name = request.lora_name;
    if state.projects().get(&name).is_some() || state.names_base(&name) {
        return Err(ApiError::invalid_param(
            "lora_name",
            format!("`{name}` already names a project or the base model (or one of its aliases); choose another name for the adapter"),
        ));
    }
    let path = request.lora_path.as_deref().map(Path::new);
    let report = state.pool().load(&name, path).await.map_err(|e| match e {
        // Named by this endpoint's own fields, 404 as vLLM answers a missing adapter.
        PoolError::Unknown(_) => ApiError {
            param: Some("lora_name"),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                format!("No adapter named '{name}' in the adapter store; give its folder as `lora_path`"),
            )
        },
        PoolError::Adapter(AdapterError::Io { ref source, .. }) if source.kind() == std::io::ErrorKind::NotFound => ApiError {
            param: Some("lora_path"),
            ..ApiError::new(StatusCode::NOT_FOUND, e.to_string())
        },
        other => state.pool_error(other, &caller),
    })?;
    let message = if report.loaded_now {
        format!("Success: LoRA adapter '{name}' added successfully.")
    } else {
        format!("Success: LoRA adapter '{name}' was already loaded.")
    };
    Ok((StatusCode::OK, message))
}

pub async fn unload(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Json(request): Json<UnloadLoraRequest>,
) -> Result<(StatusCode, String), ApiError> {
    let name = request.lora_name;
    state.pool().unload(&name).map_err(|e| match e {
        PoolError::Unknown(_) => ApiError {
            param: Some("lora_name"),
            ..ApiError::new(StatusCode::NOT_FOUND, format!("The LoRA adapter '{name}' is not loaded"))
        },
        other => state.pool_error(other, &caller),
    })?;
    Ok((StatusCode::OK, format!("Success: LoRA adapter '{name}' removed successfully.")))
}
