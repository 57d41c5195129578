//! `POST /v1/embeddings`: vectors from the embedding model the indexes use (the kit's
//! all-MiniLM-L6-v2 by default), so clients can embed with the same model graft retrieves
//! with. `model` is its name as `GET /v1/models` lists it, or left out.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json as AxumJson};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::json::Json;
use crate::openai::{EmbeddingData, EmbeddingInput, EmbeddingList, EmbeddingRequest, EmbeddingUsage};
use crate::state::AppState;

/// Most inputs in one request.
const MAX_INPUTS: usize = 2048;

pub async fn embeddings(
    State(state): State<AppState>,
    Extension(_caller): Extension<Caller>,
    Json(request): Json<EmbeddingRequest>,
) -> Result<AxumJson<EmbeddingList>, ApiError> {
    let projects = state.projects();
    let (Some(name), Some(embedder)) = (projects.embedding_name(), projects.embedder()) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "No embedding model is loaded: configure a project, whose index needs one",
        ));
    };
    if !request.model.is_empty() && request.model != name {
        return Err(ApiError::model_not_found(&request.model, &[name]));
    }
    let inputs = match request.input {
        EmbeddingInput::One(text) => vec![text],
        EmbeddingInput::Many(texts) => texts,
        EmbeddingInput::Tokens(_) => {
            return Err(ApiError::invalid_param(
                "input",
                "`input` must be a string or a list of strings: token ids are not supported (they would be another \
                 tokenizer's; LangChain's OpenAIEmbeddings sends tiktoken's unless given check_embedding_ctx_length=False)",
            ))
        }
    };
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(ApiError::invalid_param(
            "input",
            format!("`input` must hold 1 to {MAX_INPUTS} strings"),
        ));
    }
    if inputs.iter().any(String::is_empty) {
        return Err(ApiError::invalid_param("input", "`input` must not contain empty strings"));
    }
    if request.dimensions.is_some_and(|d| d != embedder.dims()) {
        return Err(ApiError::invalid_param(
            "dimensions",
            format!("this model's vectors have {} dimensions", embedder.dims()),
        ));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("`{other}` is not `float` or `base64`"),
            ))
        }
    };
    let embedder = std::sync::Arc::clone(embedder);
    let (vectors, tokens) = tokio::task::spawn_blocking(move || -> Result<_, graft_index::IndexError> {
        Ok((embedder.embed(&inputs)?, embedder.token_count(&inputs)?))
    })
    .await
    .map_err(|e| ApiError::internal("the embedding task failed", &e))?
    .map_err(|e| ApiError::internal("embedding failed", &e))?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding",
            index,
            embedding: if base64 {
                serde_json::Value::String(encode_base64(&v))
            } else {
                serde_json::json!(v)
            },
        })
        .collect();
    Ok(AxumJson(EmbeddingList {
        object: "list",
        data,
        model: name.to_owned(),
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

/// Little-endian f32 bytes in standard base64, as OpenAI's `encoding_format: "base64"`.
fn encode_base64(v: &[f32]) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        // 1.0f32 is 00 00 80 3f.
        assert_eq!(super::encode_base64(&[1.0]), "AACAPw==");
        assert_eq!(super::encode_base64(&[]), "");
    }
}
