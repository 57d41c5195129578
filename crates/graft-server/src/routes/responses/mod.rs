//! `POST /v1/responses`: OpenAI's Responses API, which OpenAI's SDKs lead with
//! (`client.responses.create`) and agents such as Codex CLI speak. Stateless, as vLLM's and
//! Ollama's: each request carries its whole conversation.
//!
//! A request is translated into a chat request (`wire`) that graft's chat route checks and
//! starts, so retrieval, adapters, tools, structured output and limits mean the same as on
//! chat. The answer is a `response` object whose `output` holds a `message` item (its text as
//! one `output_text` part) or `function_call` items; streamed, the Responses events in order:
//! `response.created`, `response.in_progress`, each item's `output_item.added`, its text's
//! `content_part.added` and `output_text.delta`s (or a call's `function_call_arguments`
//! delta and done), its `done` events, then `response.completed` (or `response.incomplete`
//! when `max_output_tokens` cut it) with the whole response; each event names its `type` and
//! carries a `sequence_number`. An error while streaming is an `error` event, and the stream
//! ends. With `include: ["message.output_text.logprobs"]` (and `top_logprobs` for the
//! likeliest tokens at each place) the text's `logprobs` list each token's, in its deltas too.
//!
//! This module owns the Responses shapes; checking and generating are chat's.

mod wire;

use std::collections::VecDeque;

use crate::path::Path;
use axum::extract::State;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json as AxumJson};
use graft_engine::{TokenLogprob, Usage};
use serde_json::{json, Value};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::json::Json;
use crate::openai::{ChatLogprobs, Extras, ToolCall};
use crate::routes::chat;
use crate::routes::sse::{self, Pieces};
use crate::state::AppState;
pub use wire::ResponsesRequest;

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<ResponsesRequest>,
) -> Result<Response, ApiError> {
    let streaming = request.stream == Some(true);
    let fields = wire::chat_fields(&request)?;
    let chat_request = crate::json::parse(serde_json::Value::Object(fields).to_string().as_bytes()).map_err(wire::responses_names)?;
    let started = chat::start(&state, &caller, chat_request).await.map_err(wire::responses_names)?;
    let Some(generation) = started.generations.into_iter().next() else {
        return Err(ApiError::internal("responses", &"no generation was started"));
    };
    let pieces = chat::pieces(generation, started.tools.as_ref());
    let reply = Reply::new(request, started.model, started.extras);
    if streaming {
        return Ok(reply.stream(pieces));
    }
    reply.whole(pieces).await
}

/// `GET` or `DELETE /v1/responses/{id}`: graft keeps no responses.
pub async fn stored(Path(id): Path<String>) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        format!("No response `{id}`: graft keeps no responses (each request carries its whole conversation)"),
    )
}

/// One response: what it echoes of the request, and how its output items are written.
struct Reply {
    id: String,
    created_at: u64,
    model: String,
    request: ResponsesRequest,
    extras: Extras,
}

impl Reply {
    fn new(request: ResponsesRequest, model: String, extras: Extras) -> Reply {
        Reply {
            id: format!("resp_{}", uuid::Uuid::new_v4().simple()),
            created_at: crate::state::unix_now(),
            model,
            request,
            extras,
        }
    }

    /// The whole response once the generation has ended.
    async fn whole(self, pieces: Pieces) -> Result<Response, ApiError> {
        let gathered = sse::gather(pieces).await?;
        let end = gathered.end;
        let mut output = Vec::new();
        if !gathered.text.is_empty() || gathered.calls.is_empty() {
            let logprobs = logprobs(gathered.logprobs);
            output.push(message(&new_id("msg"), item_status(&end), Some((&gathered.text, &logprobs))));
        }
        output.extend(gathered.calls.iter().map(|call| function_call(&new_id("fc"), call, "completed")));
        Ok(AxumJson(self.response(&output, Some(&end))).into_response())
    }

    /// The response object: `in_progress` until `end`, then `completed` or `incomplete`.
    fn response(&self, output: &[Value], end: Option<&sse::End>) -> Value {
        let request = &self.request;
        let status = match end {
            None => "in_progress",
            Some(end) if end.finish_reason == "length" => "incomplete",
            Some(_) => "completed",
        };
        let mut response = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": (status == "incomplete").then(|| json!({"reason": "max_output_tokens"})),
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": request.parallel_tool_calls.unwrap_or(true),
            "previous_response_id": null,
            "store": false,
            "temperature": request.temperature,
            "text": request.text.clone().unwrap_or_else(|| json!({"format": {"type": "text"}})),
            "tool_choice": request.tool_choice.clone().unwrap_or_else(|| json!("auto")),
            "tools": request.tools.clone().unwrap_or_default(),
            "top_logprobs": request.top_logprobs.unwrap_or(0),
            "top_p": request.top_p,
            "truncation": "disabled",
            "metadata": request.metadata.clone().unwrap_or_else(|| json!({})),
            "usage": end.map(|end| usage(end.usage)),
        });
        if let Some(sources) = &self.extras.sources {
            response["sources"] = json!(sources);
        }
        if let Some(debug) = &self.extras.debug {
            response["debug"] = json!(debug);
        }
        response
    }

    /// The Responses events, as the pieces come.
    fn stream(self, pieces: Pieces) -> Response {
        let mut flow = Flow {
            reply: self,
            sequence: 0,
            output: Vec::new(),
            open: None,
            ready: VecDeque::new(),
        };
        let created = flow.reply.response(&[], None);
        flow.push("response.created", json!({"response": created.clone()}));
        flow.push("response.in_progress", json!({"response": created}));
        sse::pump_events(flow, pieces)
    }
}

/// A stream's state between events.
struct Flow {
    reply: Reply,
    sequence: u64,
    /// The items written whole so far.
    output: Vec<Value>,
    /// The message item being written.
    open: Option<Open>,
    ready: VecDeque<Event>,
}

/// A message item being written: its id, its text and its tokens' log-probabilities so far.
struct Open {
    id: String,
    text: String,
    logprobs: Vec<Value>,
}

impl Flow {
    /// Queues an event of `kind` with `body`, numbered.
    fn push(&mut self, kind: &'static str, mut body: Value) {
        body["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        self.ready.push_back(sse::named_event(kind, body));
    }

    /// Opens a message item.
    fn open_message(&mut self) {
        let id = new_id("msg");
        let index = self.output.len();
        self.push(
            "response.output_item.added",
            json!({"output_index": index, "item": message(&id, "in_progress", None)}),
        );
        self.push(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": output_text("", &[])}),
        );
        self.open = Some(Open {
            id,
            text: String::new(),
            logprobs: Vec::new(),
        });
    }

    /// Ends the message item being written, if one is.
    fn close_message(&mut self, status: &str) {
        let Some(Open { id, text, logprobs }) = self.open.take() else {
            return;
        };
        let index = self.output.len();
        self.push(
            "response.output_text.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": logprobs}),
        );
        self.push(
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": output_text(&text, &logprobs)}),
        );
        let item = message(&id, status, Some((&text, &logprobs)));
        self.push("response.output_item.done", json!({"output_index": index, "item": item.clone()}));
        self.output.push(item);
    }
}

impl sse::Writer for Flow {
    type Item = Event;

    fn ready(&mut self) -> &mut VecDeque<Event> {
        &mut self.ready
    }

    fn text(&mut self, text: String, token_logprobs: Option<Vec<TokenLogprob>>) {
        if self.open.is_none() {
            self.open_message();
        }
        let index = self.output.len();
        let logprobs = logprobs(token_logprobs);
        let Some(open) = &mut self.open else { return };
        open.text.push_str(&text);
        open.logprobs.extend(logprobs.iter().cloned());
        let item_id = open.id.clone();
        self.push(
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "delta": text, "logprobs": logprobs}),
        );
    }

    fn calls(&mut self, calls: Vec<ToolCall>) {
        self.close_message("completed");
        for call in &calls {
            let id = new_id("fc");
            let index = self.output.len();
            let mut started = function_call(&id, call, "in_progress");
            started["arguments"] = json!("");
            self.push("response.output_item.added", json!({"output_index": index, "item": started}));
            let arguments = &call.function.arguments;
            self.push(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": arguments}),
            );
            self.push(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "arguments": arguments}),
            );
            let item = function_call(&id, call, "completed");
            self.push("response.output_item.done", json!({"output_index": index, "item": item.clone()}));
            self.output.push(item);
        }
    }

    fn end(&mut self, end: sse::End) {
        // An answer of no text and no calls is an empty message, as the whole response has.
        if self.open.is_none() && self.output.is_empty() {
            self.open_message();
        }
        self.close_message(item_status(&end));
        let response = self.reply.response(&self.output, Some(&end));
        let kind = match response["status"].as_str() {
            Some("incomplete") => "response.incomplete",
            _ => "response.completed",
        };
        self.push(kind, json!({"response": response}));
    }

    fn error(&mut self, e: &ApiError) {
        tracing::error!(status = e.status.as_u16(), error = %e.message, "response failed while streaming");
        self.push("error", json!({"code": e.code, "message": e.message, "param": e.param}));
    }
}

/// A new item id: `prefix_` and 24 hex digits.
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..24])
}

/// An item's status once the generation has ended.
fn item_status(end: &sse::End) -> &'static str {
    if end.finish_reason == "length" {
        "incomplete"
    } else {
        "completed"
    }
}

/// A message item of a text and its tokens' log-probabilities; `None`: no content yet (just
/// added to a stream).
fn message(id: &str, status: &str, text: Option<(&str, &[Value])>) -> Value {
    let content: Vec<Value> = text.map(|(text, logprobs)| output_text(text, logprobs)).into_iter().collect();
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn output_text(text: &str, logprobs: &[Value]) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs})
}

/// Tokens' log-probabilities as the Responses API lists them (`token`, `logprob`, `bytes`,
/// `top_logprobs`, as chat's); none when the request did not ask.
fn logprobs(tokens: Option<Vec<TokenLogprob>>) -> Vec<Value> {
    let Some(tokens) = tokens else { return Vec::new() };
    ChatLogprobs::new(tokens)
        .content
        .iter()
        .map(|token| serde_json::to_value(token).unwrap_or_default())
        .collect()
}

/// A function call item: its own id, the call's id (`call_id`, which the result answers),
/// the function and its arguments as JSON text.
fn function_call(id: &str, call: &ToolCall, status: &str) -> Value {
    json!({
        "type": "function_call",
        "id": id,
        "call_id": call.id,
        "name": call.function.name,
        "arguments": call.function.arguments,
        "status": status,
    })
}

fn usage(usage: Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    })
}
