//! Ollama's native API, for the tools that speak only it (Ollama providers of editors and chat
//! front ends): `POST /api/chat`, `POST /api/generate` (with `suffix`: fill in the middle, as
//! code-completion plugins send it), `POST /api/embed` and `/api/embeddings`, `GET /api/tags`
//! and `/api/ps` (the models), `POST /api/show` (one model: its details, context length and
//! capabilities), `GET /api/version`.
//!
//! Requests are translated into the OpenAI requests of graft's own routes (`wire`), so a
//! field means the same whichever API a client speaks, and retrieval, adapters and limits
//! apply alike. Answers are Ollama's: newline-delimited JSON objects while streaming (the
//! default), the last one `done: true` with the counts and durations (nanoseconds), or one
//! object with `"stream": false`; errors are `{"error": "..."}` with the HTTP status of
//! graft's other routes. Model names may carry `:latest`. With `logprobs` (and
//! `top_logprobs`), each line carries its tokens' log-probabilities, a whole answer all of
//! them, as Ollama 0.12.11 added.
//!
//! This module owns Ollama's shapes; checking and generating are the OpenAI routes'.

mod wire;

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json as AxumJson};
use chrono::{DateTime, SecondsFormat, Utc};
use graft_engine::facts::ModelFacts;
use graft_engine::TokenLogprob;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::json::Json;
use crate::openai::{self, Source};
use crate::routes::sse::{self, Pieces};
use crate::routes::{chat, completions, embeddings};
use crate::state::AppState;

/// The Ollama release whose API this module follows: `/api/version` answers it, since clients
/// check a minimum before they talk to a server.
const OLLAMA_API_VERSION: &str = "0.12.11";

/// An error in Ollama's shape: `{"error": "..."}`, with graft's status.
pub struct OllamaError(ApiError);

impl From<ApiError> for OllamaError {
    fn from(e: ApiError) -> OllamaError {
        OllamaError(e)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let mut response = (self.0.status, AxumJson(json!({"error": self.0.message}))).into_response();
        if let Some(seconds) = self.0.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

type Answer = Result<Response, OllamaError>;

/// `GET /api/version`.
pub async fn version() -> AxumJson<Value> {
    AxumJson(json!({ "version": OLLAMA_API_VERSION }))
}

/// `GET /api/tags`: every model the caller may use, as Ollama lists what it has pulled.
pub async fn tags(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> AxumJson<Value> {
    AxumJson(json!({ "models": listing(&state, &caller, false) }))
}

/// `GET /api/ps`: the models loaded now (the base, the adapters in memory, the projects on
/// them); graft keeps them until it needs the room, so none expires.
pub async fn ps(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> AxumJson<Value> {
    AxumJson(json!({ "models": listing(&state, &caller, true) }))
}

/// `POST /api/show`: one model's details, context length and capabilities.
pub async fn show(State(state): State<AppState>, Extension(caller): Extension<Caller>, body: Result<Json<Value>, ApiError>) -> Answer {
    let Json(body) = body?;
    let name = body
        .get("model")
        .or_else(|| body.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_param("model", "`model` is required"))?;
    let id = wire::model_id(name);
    if state.projects().embedding_name() == Some(id) {
        return Ok(AxumJson(json!({
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": {"format": "onnx", "family": "bert", "families": ["bert"]},
            "model_info": {},
            "capabilities": ["embedding"],
        }))
        .into_response());
    }
    let target = state.target(id, &caller)?;
    let engine = state.engine();
    let facts = engine.facts();
    let architecture = facts.map_or("", |f| f.architecture.as_str());
    let context = state.context_window();
    let mut model_info = Map::new();
    model_info.insert("general.architecture".into(), json!(architecture));
    model_info.insert("general.parameter_count".into(), json!(facts.map_or(0, |f| f.parameters)));
    model_info.insert(format!("{architecture}.context_length"), json!(context));
    if let Some(width) = facts.and_then(|f| f.embedding_length) {
        model_info.insert(format!("{architecture}.embedding_length"), json!(width));
    }
    let mut capabilities = vec!["completion", "tools"];
    if engine.prompt_format().has_fim() {
        capabilities.push("insert");
    }
    // What it is built on, as `/api/tags` lists it: a project's model, an adapter's base.
    let base = state.pool().base_name();
    let parent = if target.project.is_some() {
        Some(target.model.clone())
    } else {
        (target.model != base).then(|| base.to_owned())
    };
    Ok(AxumJson(json!({
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": details(facts, parent.as_deref()),
        "model_info": model_info,
        "capabilities": capabilities,
        "modified_at": timestamp(facts.and_then(|f| f.modified).unwrap_or_else(SystemTime::now)),
    }))
    .into_response())
}

/// `POST /api/chat`.
pub async fn chat(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<wire::ChatRequest>, ApiError>,
) -> Answer {
    let started = Instant::now();
    let Json(request) = body?;
    wire::check_think(request.think.as_ref())?;
    let streaming = request.stream != Some(false);
    let id = wire::model_id(&request.model).to_owned();
    if request.messages.is_empty() {
        state.target(&id, &caller)?;
        return Ok(loaded(&request.model, Shape::Chat, request.keep_alive.as_ref()));
    }
    let common = wire::Common {
        model: id,
        options: request.options,
        format: request.format,
        retrieval: request.retrieval,
        logprobs: request.logprobs,
        top_logprobs: request.top_logprobs,
    };
    let mut fields = common.fields(state.generation().chat_max_tokens(), true)?;
    let messages = wire::messages(request.messages)?;
    // As Ollama does, a last assistant message is the start of the answer, which goes on from it.
    if chat::ends_in_prefill(&messages) {
        fields.insert("continue_final_message".into(), json!(true));
    }
    fields.insert("messages".into(), json!(messages));
    if let Some(tools) = request.tools.filter(|t| !t.is_null()) {
        fields.insert("tools".into(), tools);
    }
    let openai = wire::openai_request(fields).map_err(wire::ollama_names)?;
    let started_chat = chat::start(&state, &caller, openai).await.map_err(wire::ollama_names)?;
    let tools = started_chat.tools;
    let Some(generation) = started_chat.generations.into_iter().next() else {
        return Err(ApiError::internal("ollama chat", &"no generation was started").into());
    };
    let reply = Reply::new(request.model, Shape::Chat, started, started_chat.extras.sources);
    Ok(reply.answer(chat::pieces(generation, tools.as_ref()), streaming).await?)
}

/// `POST /api/generate`: the prompt in the model's chat template (as one user turn, after
/// `system`), or as it is with `raw`; with `suffix`, filled in the middle as
/// `/v1/completions` does.
pub async fn generate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<wire::GenerateRequest>, ApiError>,
) -> Answer {
    let started = Instant::now();
    let Json(request) = body?;
    wire::check_think(request.think.as_ref())?;
    if !request.images.is_empty() {
        return Err(ApiError::invalid_param("images", "images are not supported (graft serves text models)").into());
    }
    if request.template.as_deref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::unsupported(
            "template",
            "template is not supported: graft lays out prompts with the model's own template",
        )
        .into());
    }
    if request.context.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(ApiError::unsupported(
            "context",
            "context (the deprecated conversation memory) is not supported; use /api/chat",
        )
        .into());
    }
    let streaming = request.stream != Some(false);
    let id = wire::model_id(&request.model).to_owned();
    let suffix = request.suffix.filter(|s| !s.is_empty());
    if request.prompt.is_empty() && suffix.is_none() {
        state.target(&id, &caller)?;
        return Ok(loaded(&request.model, Shape::Generate, request.keep_alive.as_ref()));
    }
    // Raw, or filled in the middle: `/v1/completions`; else chat.
    let completion = request.raw == Some(true) || suffix.is_some();
    let common = wire::Common {
        model: id,
        options: request.options,
        format: request.format,
        retrieval: request.retrieval,
        logprobs: request.logprobs,
        top_logprobs: request.top_logprobs,
    };
    let mut fields = common.fields(state.generation().chat_max_tokens(), !completion)?;
    let (generation, sources) = if completion {
        fields.insert("prompt".into(), json!(request.prompt));
        if let Some(suffix) = suffix {
            fields.insert("suffix".into(), json!(suffix));
        }
        if let Some(path) = request.path {
            fields.insert("path".into(), json!(path));
        }
        let openai = wire::openai_request(fields).map_err(wire::ollama_names)?;
        let started = completions::start(&state, &caller, openai).await.map_err(wire::ollama_names)?;
        (started.generations.into_iter().next().map(sse::pieces), started.extras.sources)
    } else {
        let mut messages = Vec::new();
        if let Some(system) = request.system.filter(|s| !s.is_empty()) {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": request.prompt}));
        fields.insert("messages".into(), json!(messages));
        let openai = wire::openai_request(fields).map_err(wire::ollama_names)?;
        let started = chat::start(&state, &caller, openai).await.map_err(wire::ollama_names)?;
        (
            started.generations.into_iter().next().map(|g| chat::pieces(g, None)),
            started.extras.sources,
        )
    };
    let Some(pieces) = generation else {
        return Err(ApiError::internal("ollama generate", &"no generation was started").into());
    };
    let reply = Reply::new(request.model, Shape::Generate, started, sources);
    Ok(reply.answer(pieces, streaming).await?)
}

/// `POST /api/embed`: `input` (a string or a list of them) → `embeddings`.
pub async fn embed(State(state): State<AppState>, Extension(caller): Extension<Caller>, body: Result<Json<Value>, ApiError>) -> Answer {
    let started = Instant::now();
    let Json(body) = body?;
    let name = body.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut fields = Map::new();
    fields.insert("model".into(), json!(wire::model_id(&name)));
    fields.insert("input".into(), body.get("input").cloned().unwrap_or(Value::Null));
    if let Some(dimensions) = body.get("dimensions") {
        fields.insert("dimensions".into(), dimensions.clone());
    }
    let (vectors, tokens) = embed_texts(state, caller, fields).await?;
    Ok(AxumJson(json!({
        "model": name,
        "embeddings": vectors,
        "total_duration": nanos(started.elapsed()),
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }))
    .into_response())
}

/// `POST /api/embeddings`, Ollama's older endpoint: one `prompt` → one `embedding`.
pub async fn embeddings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<Value>, ApiError>,
) -> Answer {
    let Json(body) = body?;
    let mut fields = Map::new();
    let name = body.get("model").and_then(Value::as_str).unwrap_or_default();
    fields.insert("model".into(), json!(wire::model_id(name)));
    fields.insert("input".into(), body.get("prompt").cloned().unwrap_or(Value::Null));
    let (mut vectors, _) = embed_texts(state, caller, fields).await?;
    Ok(AxumJson(json!({ "embedding": vectors.pop().unwrap_or_default() })).into_response())
}

/// The vectors of `/v1/embeddings` for an OpenAI request body, and the tokens it read.
async fn embed_texts(state: AppState, caller: Caller, fields: Map<String, Value>) -> Result<(Vec<Value>, usize), ApiError> {
    let request = wire::openai_request(fields)?;
    let AxumJson(list) = embeddings::embeddings(State(state), Extension(caller), Json(request)).await?;
    let tokens = list.usage.prompt_tokens;
    Ok((list.data.into_iter().map(|d| d.embedding).collect(), tokens))
}

/// Where an answer's text goes: chat's `message.content`, or generate's `response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Chat,
    Generate,
}

/// The answer to a request with nothing to generate (no messages, no prompt): Ollama loads
/// the model, or with `keep_alive: 0` unloads it. graft's base model stays loaded.
fn loaded(model: &str, shape: Shape, keep_alive: Option<&Value>) -> Response {
    // `0`, or a duration of none (`"0"`, `"0s"`, `"0m"`).
    let unload = keep_alive.is_some_and(|k| {
        k.as_f64() == Some(0.0)
            || k.as_str()
                .is_some_and(|s| s.trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0")
    });
    let mut line = head(model);
    match shape {
        Shape::Chat => line.insert("message".into(), json!({"role": "assistant", "content": ""})),
        Shape::Generate => line.insert("response".into(), json!("")),
    };
    line.insert("done".into(), json!(true));
    line.insert("done_reason".into(), json!(if unload { "unload" } else { "load" }));
    AxumJson(Value::Object(line)).into_response()
}

/// One answer in Ollama's shape, as its pieces come.
struct Reply {
    model: String,
    shape: Shape,
    started: Instant,
    sources: Option<Vec<Source>>,
}

impl Reply {
    fn new(model: String, shape: Shape, started: Instant, sources: Option<Vec<Source>>) -> Reply {
        Reply {
            model,
            shape,
            started,
            sources,
        }
    }

    /// Streamed: a line per piece, then the end's line (or an error's). Whole: one object.
    async fn answer(self, pieces: Pieces, streaming: bool) -> Result<Response, ApiError> {
        if streaming {
            return Ok(self.stream(pieces));
        }
        let gathered = sse::gather(pieces).await?;
        let mut whole = self.last(gathered.text, gathered.calls, gathered.end);
        add_logprobs(&mut whole, gathered.logprobs);
        Ok(AxumJson(Value::Object(whole)).into_response())
    }

    fn stream(self, pieces: Pieces) -> Response {
        let lines = Lines {
            reply: self,
            ready: VecDeque::new(),
        };
        let mut response = Body::from_stream(sse::pump(lines, pieces)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        response
    }

    /// A line of the stream: text, or calls of tools.
    fn piece(&self, text: String, calls: Vec<openai::ToolCall>) -> Map<String, Value> {
        let mut line = head(&self.model);
        self.put_text(&mut line, text, calls);
        line.insert("done".into(), json!(false));
        line
    }

    /// The last line (or the whole answer): the rest of the text, `done`, why, the counts and
    /// the durations (nanoseconds), and the sources retrieval used (graft's extension).
    fn last(&self, text: String, calls: Vec<openai::ToolCall>, end: sse::End) -> Map<String, Value> {
        let sse::End {
            finish_reason,
            usage,
            first_token,
            ..
        } = end;
        let now = Instant::now();
        // Reading the prompt lasts until the first token (or the end, when none came).
        let first = first_token.unwrap_or(now).max(self.started);
        let mut line = head(&self.model);
        self.put_text(&mut line, text, calls);
        line.insert("done".into(), json!(true));
        // Ollama says "stop" for an answer of tool calls too.
        let reason = if finish_reason == "length" { "length" } else { "stop" };
        line.insert("done_reason".into(), json!(reason));
        line.insert("total_duration".into(), json!(nanos(now - self.started)));
        line.insert("load_duration".into(), json!(0));
        // Ollama's counts: the whole prompt, and of it the tokens read from the cache.
        line.insert("prompt_eval_count".into(), json!(usage.prompt_tokens));
        line.insert("prompt_eval_cached_count".into(), json!(usage.cached_tokens));
        line.insert("prompt_eval_duration".into(), json!(nanos(first - self.started)));
        line.insert("eval_count".into(), json!(usage.completion_tokens));
        line.insert("eval_duration".into(), json!(nanos(now - first)));
        if let Some(sources) = &self.sources {
            line.insert("sources".into(), json!(sources));
        }
        line
    }

    fn put_text(&self, line: &mut Map<String, Value>, text: String, calls: Vec<openai::ToolCall>) {
        match self.shape {
            Shape::Generate => {
                line.insert("response".into(), json!(text));
            }
            Shape::Chat => {
                let mut message = json!({"role": "assistant", "content": text});
                if !calls.is_empty() {
                    message["tool_calls"] = json!(calls
                        .into_iter()
                        .enumerate()
                        .map(|(i, call)| tool_call(i, call))
                        .collect::<Vec<_>>());
                }
                line.insert("message".into(), message);
            }
        }
    }
}

/// A streamed answer's lines as its pieces come.
struct Lines {
    reply: Reply,
    ready: VecDeque<Bytes>,
}

impl Lines {
    fn push(&mut self, line: Map<String, Value>) {
        self.ready.push_back(Bytes::from(format!("{}\n", Value::Object(line))));
    }
}

impl sse::Writer for Lines {
    type Item = Bytes;

    fn ready(&mut self) -> &mut VecDeque<Bytes> {
        &mut self.ready
    }

    fn text(&mut self, text: String, logprobs: Option<Vec<TokenLogprob>>) {
        let mut line = self.reply.piece(text, Vec::new());
        add_logprobs(&mut line, logprobs);
        self.push(line);
    }

    fn calls(&mut self, calls: Vec<openai::ToolCall>) {
        let line = self.reply.piece(String::new(), calls);
        self.push(line);
    }

    fn end(&mut self, end: sse::End) {
        let line = self.reply.last(String::new(), Vec::new(), end);
        self.push(line);
    }

    /// Ollama ends a stream that failed with the error's line.
    fn error(&mut self, e: &ApiError) {
        self.push(Map::from_iter([("error".to_owned(), json!(e.message))]));
    }
}

/// The tokens' log-probabilities, when the request asked for them: Ollama's `logprobs`, each
/// token's `token`, `logprob`, `bytes` and `top_logprobs`, as OpenAI's chat lists them.
fn add_logprobs(line: &mut Map<String, Value>, logprobs: Option<Vec<TokenLogprob>>) {
    if let Some(tokens) = logprobs {
        line.insert("logprobs".into(), json!(openai::ChatLogprobs::new(tokens).content));
    }
}

/// A call in Ollama's shape: its arguments as an object, not JSON text.
fn tool_call(index: usize, call: openai::ToolCall) -> Value {
    let arguments = serde_json::from_str::<Value>(&call.function.arguments).unwrap_or(Value::String(call.function.arguments));
    json!({"function": {"index": index, "name": call.function.name, "arguments": arguments}})
}

/// The fields every line starts with.
fn head(model: &str) -> Map<String, Value> {
    Map::from_iter([
        ("model".to_owned(), json!(model)),
        ("created_at".to_owned(), json!(timestamp(SystemTime::now()))),
    ])
}

/// Ollama's timestamps: RFC 3339 in UTC, to the microsecond.
fn timestamp(time: SystemTime) -> String {
    DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The models `/api/tags` lists (all of them, `loaded_only` false) or `/api/ps` (the loaded
/// ones): the base, adapters, projects and the embedding model, as the caller may use them.
fn listing(state: &AppState, caller: &Caller, loaded_only: bool) -> Vec<Value> {
    let base = state.pool().base_name().to_owned();
    let facts = state.engine().facts();
    let on_gpu = state.engine().base().device != graft_core::Device::Cpu;
    let entry = |name: &str, parent: Option<&str>| {
        let size = facts.map_or(0, |f| f.file_size);
        let modified = facts.and_then(|f| f.modified).unwrap_or_else(SystemTime::now);
        let mut entry = json!({
            "name": name,
            "model": name,
            "modified_at": timestamp(modified),
            "size": size,
            "digest": digest(name, facts),
            "details": details(facts, parent),
        });
        if loaded_only {
            // Kept loaded until the room is needed: no time at which it expires.
            entry["expires_at"] = json!(timestamp(SystemTime::now() + Duration::from_secs(10 * 365 * 86_400)));
            entry["size_vram"] = json!(if on_gpu { size } else { 0 });
        }
        entry
    };
    let adapters = state.adapters();
    let loaded = |model: &str| model == base || adapters.iter().any(|a| a.name == model && a.loaded.is_some());
    let mut models = vec![entry(&base, None)];
    if !loaded_only {
        // The base model's other names (loaded as the base, so not listed as loaded).
        models.extend(state.aliases().iter().map(|alias| entry(alias, None)));
    }
    for adapter in &adapters {
        if !loaded_only || adapter.loaded.is_some() {
            models.push(entry(&adapter.name, Some(&base)));
        }
    }
    for project in state.projects().all() {
        let model = project.config.adapter.clone().unwrap_or_else(|| base.clone());
        if !loaded_only || loaded(&model) {
            models.push(entry(project.name(), Some(&model)));
        }
    }
    models.retain(|m| m["name"].as_str().is_some_and(|name| state.may_use(caller, name)));
    if let (false, Some(name)) = (loaded_only, state.projects().embedding_name()) {
        models.push(json!({
            "name": name,
            "model": name,
            "modified_at": timestamp(SystemTime::now()),
            "size": 0,
            "digest": digest(name, None),
            "details": {"parent_model": "", "format": "onnx", "family": "bert", "families": ["bert"], "parameter_size": "", "quantization_level": ""},
        }));
    }
    models
}

/// Ollama's `details` of a model served from the base's file (`parent`: what it is built on).
fn details(facts: Option<&ModelFacts>, parent: Option<&str>) -> Value {
    let family = facts.map_or("", |f| f.architecture.as_str());
    json!({
        "parent_model": parent.unwrap_or(""),
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": facts.map(ModelFacts::parameter_size).unwrap_or_default(),
        "quantization_level": facts.map_or("", |f| f.storage.as_str()),
    })
}

/// A model's `digest`: it names the served file's version (the name, the file's size and
/// time), not a hash of its bytes, which would mean reading gigabytes for a listing.
fn digest(name: &str, facts: Option<&ModelFacts>) -> String {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    if let Some(facts) = facts {
        h.update(facts.file_size.to_le_bytes());
        let modified = facts
            .modified
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        h.update(modified.to_le_bytes());
    }
    hex::encode(h.finalize())
}
