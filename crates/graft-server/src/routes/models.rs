//! `GET /v1/models`: what the caller may put in the `model` field: the base model and its
//! aliases; each adapter (loaded or in the store) with the base as its `parent`; each project
//! with its adapter or the base as `parent`; and the embedding model, if one is loaded.
//! `GET /v1/models/{model}`: one of them, or 404. Each generating model's card carries the
//! longest prompt graft takes (vLLM's `max_model_len`) and the base's file facts (llama.cpp's
//! `meta`), which clients read to size requests.

use crate::path::Path;
use axum::extract::State;
use axum::{Extension, Json};
use serde_json::json;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::openai::{ModelCard, ModelList};
use crate::state::AppState;

pub async fn list(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: cards(&state, &caller),
    })
}

pub async fn retrieve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(model): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    let mut cards = cards(&state, &caller);
    match cards.iter().position(|c| c.id == model) {
        Some(i) => Ok(Json(cards.swap_remove(i))),
        None => {
            let ids: Vec<&str> = cards.iter().map(|c| c.id.as_str()).collect();
            Err(ApiError::model_not_found(&model, &ids))
        }
    }
}

/// The models `caller` may use, base first.
fn cards(state: &AppState, caller: &Caller) -> Vec<ModelCard> {
    let base = state.pool().base_name().to_owned();
    // Every generating model shares the base's context and vocabulary.
    let engine = state.engine();
    let facts = engine.facts();
    let meta = json!({
        "n_ctx_train": facts.and_then(|f| f.context_length),
        "n_vocab": engine.vocab_size(),
        "n_embd": facts.and_then(|f| f.embedding_length),
        "n_params": facts.map(|f| f.parameters),
        "size": facts.map(|f| f.file_size),
    });
    let window = state.context_window();
    let card = |id: String, parent: Option<String>, root: String, created: u64| ModelCard {
        id,
        object: "model",
        created,
        owned_by: "graft",
        parent,
        root,
        max_model_len: Some(window),
        meta: Some(meta.clone()),
    };
    let mut data = vec![card(base.clone(), None, base.clone(), state.started())];
    // The base model's other names: vLLM lists each served name so.
    data.extend(
        state
            .aliases()
            .iter()
            .map(|alias| card(alias.clone(), None, base.clone(), state.started())),
    );
    for adapter in state.adapters() {
        let created = adapter.loaded_at.unwrap_or(state.started());
        data.push(card(adapter.name, Some(base.clone()), adapter.dir.display().to_string(), created));
    }
    for project in state.projects().all() {
        let parent = project.config.adapter.clone().unwrap_or_else(|| base.clone());
        data.push(card(
            project.name().to_owned(),
            Some(parent),
            project.config.path.display().to_string(),
            state.started(),
        ));
    }
    data.retain(|c| state.may_use(caller, &c.id));
    if let Some(name) = state.projects().embedding_name() {
        data.push(ModelCard {
            max_model_len: None,
            meta: None,
            ..card(name.to_owned(), None, name.to_owned(), state.started())
        });
    }
    data
}
