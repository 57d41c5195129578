//! Anthropic's Messages API, for the tools that speak only it (Anthropic's SDKs, agents that
//! take an Anthropic base URL): `POST /v1/messages` and `POST /v1/messages/count_tokens`. The
//! key may come as `x-api-key`, as Anthropic's SDKs send it (`auth`).
//!
//! A request is translated into a chat request (`wire`) that graft's chat route checks and
//! starts, so retrieval, adapters, tool calling and limits mean the same as on chat. The
//! answer is a `message` whose `content` holds a `text` block and `tool_use` blocks, with
//! Anthropic's `stop_reason` (`end_turn`, `max_tokens`, `stop_sequence` with the
//! `stop_sequence` that ended it, `tool_use`) and `usage` (`input_tokens` counts the prompt
//! tokens the prompt cache did not supply; those it did are `cache_read_input_tokens`).
//! Streamed: `message_start`, each block's `content_block_start`, its deltas (`text_delta`,
//! or a call's whole `input_json_delta`) and `content_block_stop`, then `message_delta` with
//! the stop reason and usage, and `message_stop`. Errors are Anthropic's
//! `{"type": "error", "error": {"type": ..., "message": ...}}`, with graft's status.
//!
//! This module owns Anthropic's shapes; checking and generating are chat's.

mod wire;

use std::collections::VecDeque;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json as AxumJson};
use graft_engine::{StopCause, TokenLogprob, Usage};
use serde_json::{json, Value};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::json::Json;
use crate::openai::{ChatCompletionRequest, Extras, ToolCall};
use crate::routes::chat;
use crate::routes::sse::{self, Pieces};
use crate::state::AppState;
pub use wire::MessagesRequest;

/// An error in Anthropic's shape, with graft's status.
pub struct AnthropicError(ApiError);

impl From<ApiError> for AnthropicError {
    fn from(e: ApiError) -> AnthropicError {
        AnthropicError(e)
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let e = self.0;
        let body = json!({"type": "error", "error": {"type": error_type(e.status), "message": e.message}});
        let mut response = (e.status, AxumJson(body)).into_response();
        if let Some(seconds) = e.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Anthropic's name for the kind of error a status is.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 408 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        _ => "api_error",
    }
}

/// `POST /v1/messages`.
pub async fn messages(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<MessagesRequest>,
) -> Result<Response, AnthropicError> {
    if request.max_tokens.is_none() {
        return Err(ApiError::invalid_param("max_tokens", "max_tokens: Field required").into());
    }
    let streaming = request.stream == Some(true);
    let started = chat::start(&state, &caller, chat_request(&request)?)
        .await
        .map_err(wire::anthropic_names)?;
    let Some(generation) = started.generations.into_iter().next() else {
        return Err(ApiError::internal("messages", &"no generation was started").into());
    };
    let pieces = chat::pieces(generation, started.tools.as_ref());
    let reply = Reply {
        id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
        model: started.model,
        extras: started.extras,
    };
    if streaming {
        return Ok(reply.stream(pieces));
    }
    let gathered = sse::gather(pieces).await?;
    let mut content = Vec::new();
    if !gathered.text.is_empty() {
        content.push(json!({"type": "text", "text": gathered.text}));
    }
    content.extend(gathered.calls.iter().map(tool_use));
    let end = End::new(gathered.end);
    let mut message = reply.message(content, Some(&end));
    reply.extend(&mut message);
    Ok(AxumJson(message).into_response())
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as the chat template lays the
/// conversation out, with the tools' description (retrieval left out).
pub async fn count_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<MessagesRequest>,
) -> Result<Response, AnthropicError> {
    let tokens = chat::count_prompt(&state, &caller, chat_request(&request)?)
        .await
        .map_err(wire::anthropic_names)?;
    Ok(AxumJson(json!({"input_tokens": tokens})).into_response())
}

/// The chat request for `request`.
fn chat_request(request: &MessagesRequest) -> Result<ChatCompletionRequest, ApiError> {
    let fields = wire::chat_fields(request)?;
    crate::json::parse(Value::Object(fields).to_string().as_bytes()).map_err(wire::anthropic_names)
}

/// One message being answered.
struct Reply {
    id: String,
    model: String,
    extras: Extras,
}

/// How the generation ended, in Anthropic's words.
struct End {
    stop_reason: &'static str,
    stop_sequence: Option<String>,
    usage: Usage,
}

impl End {
    fn new(end: sse::End) -> End {
        let sse::End {
            finish_reason,
            stopped_by,
            usage,
            ..
        } = end;
        let (stop_reason, stop_sequence) = match (finish_reason, stopped_by) {
            ("tool_calls", _) => ("tool_use", None),
            ("length", _) => ("max_tokens", None),
            (_, Some(StopCause::Text(text))) => ("stop_sequence", Some(text)),
            _ => ("end_turn", None),
        };
        End {
            stop_reason,
            stop_sequence,
            usage,
        }
    }
}

impl Reply {
    /// The message: its content so far and, once it has ended, why and its usage.
    fn message(&self, content: Vec<Value>, end: Option<&End>) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": end.map(|e| e.stop_reason),
            "stop_sequence": end.and_then(|e| e.stop_sequence.clone()),
            "usage": usage(end.map(|e| e.usage).unwrap_or_default()),
        })
    }

    /// graft's extension fields (the sources retrieval used, the debug prompt).
    fn extend(&self, message: &mut Value) {
        if let Some(sources) = &self.extras.sources {
            message["sources"] = json!(sources);
        }
        if let Some(debug) = &self.extras.debug {
            message["debug"] = json!(debug);
        }
    }

    fn stream(self, pieces: Pieces) -> Response {
        let mut flow = Flow {
            blocks: 0,
            text_open: false,
            ready: VecDeque::new(),
        };
        let mut start = self.message(Vec::new(), None);
        self.extend(&mut start);
        flow.push("message_start", json!({"message": start}));
        sse::pump_events(flow, pieces)
    }
}

/// A stream's state between events.
struct Flow {
    /// Content blocks started so far (the next one's index).
    blocks: usize,
    /// The last block started is a text block still open.
    text_open: bool,
    ready: VecDeque<Event>,
}

impl Flow {
    /// Queues an event of `kind` with `body`.
    fn push(&mut self, kind: &'static str, body: Value) {
        self.ready.push_back(sse::named_event(kind, body));
    }

    fn close_text(&mut self) {
        if std::mem::take(&mut self.text_open) {
            self.push("content_block_stop", json!({"index": self.blocks - 1}));
        }
    }
}

impl sse::Writer for Flow {
    type Item = Event;

    fn ready(&mut self) -> &mut VecDeque<Event> {
        &mut self.ready
    }

    fn text(&mut self, text: String, _: Option<Vec<TokenLogprob>>) {
        if !self.text_open {
            self.push(
                "content_block_start",
                json!({"index": self.blocks, "content_block": {"type": "text", "text": ""}}),
            );
            self.blocks += 1;
            self.text_open = true;
        }
        self.push(
            "content_block_delta",
            json!({"index": self.blocks - 1, "delta": {"type": "text_delta", "text": text}}),
        );
    }

    fn calls(&mut self, calls: Vec<ToolCall>) {
        self.close_text();
        for call in &calls {
            let mut started = tool_use(call);
            started["input"] = json!({});
            let index = self.blocks;
            self.blocks += 1;
            self.push("content_block_start", json!({"index": index, "content_block": started}));
            self.push(
                "content_block_delta",
                json!({"index": index, "delta": {"type": "input_json_delta", "partial_json": call.function.arguments}}),
            );
            self.push("content_block_stop", json!({"index": index}));
        }
    }

    fn end(&mut self, end: sse::End) {
        let end = End::new(end);
        self.close_text();
        self.push(
            "message_delta",
            json!({"delta": {"stop_reason": end.stop_reason, "stop_sequence": end.stop_sequence}, "usage": usage(end.usage)}),
        );
        self.push("message_stop", json!({}));
    }

    fn error(&mut self, e: &ApiError) {
        tracing::error!(status = e.status.as_u16(), error = %e.message, "message failed while streaming");
        self.push("error", json!({"error": {"type": error_type(e.status), "message": e.message}}));
    }
}

/// A call as a `tool_use` block: Anthropic's id form, the input as an object.
fn tool_use(call: &ToolCall) -> Value {
    let input: Value = serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| json!({}));
    let id = call.id.strip_prefix("call_").unwrap_or(&call.id);
    json!({"type": "tool_use", "id": format!("toolu_{id}"), "name": call.function.name, "input": input})
}

/// Anthropic's usage: the prompt tokens read, those the cache supplied apart.
fn usage(usage: Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(usage.cached_tokens),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    })
}
