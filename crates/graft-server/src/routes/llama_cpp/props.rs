//! `GET /props`: llama.cpp's description of its server. Clients written for llama.cpp read it
//! to size prompts and parallel requests (`default_generation_settings.n_ctx`,
//! `total_slots`), to name the model (`model_alias`, `model_path`) and to lay out prompts
//! themselves (`chat_template`, `bos_token`, `eos_token`).
//!
//! graft answers for the base model: every model it serves (adapters, projects) shares its
//! context, vocabulary and template. `n_ctx` is the longest prompt graft takes
//! ([`AppState::context_window`]); `params` are the settings a `/completion` request without
//! fields gets, as its answer's `generation_settings` shows them. llama.cpp's `POST /props`
//! (its `--props` flag) is not offered, and `/props` needs a key where keys are configured.

use axum::extract::State;
use axum::Json as AxumJson;
use serde_json::{json, Value};

use super::Fields;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn props(State(state): State<AppState>) -> Result<AxumJson<Value>, ApiError> {
    let (_, defaults) = Fields::default().resolve(&state).await?;
    let engine = state.engine();
    let special = engine.facts().map(|f| f.special.clone()).unwrap_or_default();
    // The configured file's name (not a re-stored copy's), not its folder: a key's holder has
    // no need of the server's layout.
    let file = engine
        .model_file()
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(AxumJson(json!({
        "default_generation_settings": {
            "id": 0,
            "id_task": -1,
            "n_ctx": state.context_window(),
            "speculative": false,
            "is_processing": state.gate().in_flight() > 0,
            "params": defaults.generation_settings,
        },
        "total_slots": state.gate().capacity(),
        "model_alias": engine.name(),
        "model_path": file,
        "modalities": {"vision": false, "audio": false},
        // llama.cpp's are text, empty where the model has none.
        "chat_template": engine.chat_template().unwrap_or_default(),
        "bos_token": special.bos.unwrap_or_default(),
        "eos_token": special.eos.unwrap_or_default(),
        "build_info": format!("graft {}", env!("CARGO_PKG_VERSION")),
        "endpoint_slots": false,
        "endpoint_props": false,
        "endpoint_metrics": true,
        "is_sleeping": false,
    })))
}
