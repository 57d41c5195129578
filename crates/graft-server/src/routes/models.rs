//! `GET /v1/models`: what clients may put in the `model` field.

use axum::extract::State;
use axum::Json;

use crate::openai::{ModelCard, ModelList};
use crate::state::AppState;

pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: state.engine().name().to_owned(),
            object: "model",
            created: state.started(),
            owned_by: "graft",
        }],
    })
}
