//! `POST /tokenize` and `POST /detokenize`: the served model's tokenizer, in the shapes both
//! llama.cpp's server and vLLM answer, so clients that count tokens before they send a prompt
//! work unchanged. Every model graft serves (base, adapters, projects) shares the base's
//! vocabulary; a `model`, when given, is checked as for generation.
//!
//! - llama.cpp: `{"content": ..., "add_special": true, "with_pieces": false}` →
//!   `{"tokens": [...]}` (with pieces: `[{"id": ..., "piece": ...}]`, a piece that is not
//!   whole UTF-8 as its bytes); `{"tokens": [...]}` → `{"content": ...}`.
//! - vLLM: `{"model": ..., "prompt": ...}` or `{"model": ..., "messages": [...]}` (laid out by
//!   the chat template, as a chat request would be) → `{"tokens", "count", "max_model_len"}`;
//!   `{"model": ..., "tokens": [...]}` → `{"prompt": ...}`.
//!
//! The answers carry both servers' fields.
//!
//! `GET /tokenizer_info` is vLLM's description of the tokenizer (its special tokens, chat
//! template and longest sequence): lm-evaluation-harness's `local-completions` model looks for
//! it and, with the two routes above, tokenizes through the server instead of downloading the
//! model's tokenizer.

use axum::extract::State;
use axum::{Extension, Json as AxumJson};
use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::json::Json;
use crate::openai::Message;
use crate::routes::chat::{self, to_engine_messages};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    /// llama.cpp's name for the text.
    pub content: Option<String>,
    /// vLLM's name for the text.
    pub prompt: Option<String>,
    /// vLLM: a conversation, laid out by the model's chat template.
    pub messages: Option<Vec<Message>>,
    /// vLLM: `messages` laid out to continue the last message (as a chat request's field).
    pub continue_final_message: Option<bool>,
    /// vLLM: `messages` laid out without opening the assistant's turn (default true).
    pub add_generation_prompt: Option<bool>,
    /// Add the tokenizer's own special tokens (a BOS); llama.cpp's name, default true.
    pub add_special: Option<bool>,
    /// vLLM's name for `add_special`.
    pub add_special_tokens: Option<bool>,
    /// llama.cpp: each token with its text.
    pub with_pieces: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct TokenizeAnswer {
    pub tokens: Tokens,
    pub count: usize,
    /// The longest sequence the model takes, when its file says.
    pub max_model_len: Option<usize>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Tokens {
    Ids(Vec<u32>),
    Pieces(Vec<Piece>),
}

#[derive(Debug, Serialize)]
pub struct Piece {
    pub id: u32,
    pub piece: PieceText,
}

/// A token's text, or its bytes when they are not whole UTF-8 (llama.cpp's convention).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum PieceText {
    Text(String),
    Bytes(Vec<u8>),
}

#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct DetokenizeAnswer {
    /// llama.cpp's name.
    pub content: String,
    /// vLLM's name.
    pub prompt: String,
}

pub async fn tokenize(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<TokenizeRequest>,
) -> Result<AxumJson<TokenizeAnswer>, ApiError> {
    if let Some(model) = &request.model {
        state.target(model, &caller)?;
    }
    let engine = state.engine();
    let special = request.add_special.or(request.add_special_tokens).unwrap_or(true);
    let ids = match (request.content.or(request.prompt), request.messages) {
        (Some(text), None) => engine.tokenize(&text, special).await?,
        (None, Some(messages)) => {
            let turn = chat::turn(request.continue_final_message, request.add_generation_prompt)?;
            engine.chat_prompt_ending(&to_engine_messages(messages)?, turn).await?
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_param(
                "messages",
                "give the text (`content` or `prompt`) or `messages`, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::invalid_param(
                "content",
                "give the text to tokenize as `content` (or `prompt`), or a conversation as `messages`",
            ))
        }
    };
    let count = ids.len();
    let tokens = if request.with_pieces == Some(true) {
        let tokenizer = engine.tokenizer()?;
        Tokens::Pieces(
            ids.into_iter()
                .map(|id| {
                    let bytes = tokenizer.token_bytes(id).unwrap_or_default();
                    let piece = match String::from_utf8(bytes) {
                        Ok(text) => PieceText::Text(text),
                        Err(e) => PieceText::Bytes(e.into_bytes()),
                    };
                    Piece { id, piece }
                })
                .collect(),
        )
    } else {
        Tokens::Ids(ids)
    };
    Ok(AxumJson(TokenizeAnswer {
        tokens,
        count,
        max_model_len: engine.context_length(),
    }))
}

pub async fn detokenize(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<DetokenizeRequest>,
) -> Result<AxumJson<DetokenizeAnswer>, ApiError> {
    if let Some(model) = &request.model {
        state.target(model, &caller)?;
    }
    let engine = state.engine();
    engine
        .check_token_ids("tokens", &request.tokens)
        .map_err(|e| ApiError::invalid_param("tokens", e.to_string()))?;
    let text = engine.detokenize(request.tokens).await?;
    Ok(AxumJson(DetokenizeAnswer {
        content: text.clone(),
        prompt: text,
    }))
}

/// vLLM's `/tokenizer_info` answer. Absent tokens are `null`: clients look for the keys.
#[derive(Debug, Serialize)]
pub struct TokenizerInfo {
    /// What Hugging Face calls a tokenizer built on the `tokenizers` library, as graft's is
    /// (read from the GGUF file as mistralrs reads it).
    pub tokenizer_class: &'static str,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
    pub chat_template: Option<String>,
    /// The longest sequence the model takes, when its file says.
    pub model_max_length: Option<usize>,
    pub vocab_size: Option<usize>,
}

pub async fn tokenizer_info(State(state): State<AppState>) -> AxumJson<TokenizerInfo> {
    let engine = state.engine();
    let special = engine.facts().map(|f| f.special.clone()).unwrap_or_default();
    AxumJson(TokenizerInfo {
        tokenizer_class: "PreTrainedTokenizerFast",
        bos_token: special.bos,
        eos_token: special.eos,
        pad_token: special.pad,
        unk_token: special.unk,
        chat_template: engine.chat_template().map(str::to_owned),
        model_max_length: engine.context_length(),
        vocab_size: engine.vocab_size(),
    })
}
