//! `POST /infill`: llama.cpp's fill-in-the-middle endpoint, as llama.vim and llama.vscode
//! speak it, so those plugins work against graft unchanged (point their endpoint at
//! `http://HOST:PORT/infill`).
//!
//! Request: `input_prefix`, `input_suffix`, `input_extra` (`[{filename, text}]`, files the
//! plugin gathered), `prompt` (the start of the current line, after the prefix), `n_predict`,
//! (0: the prompt is read into the prompt cache and nothing is generated, as llama.vim's and
//! llama.vscode's cache-warming requests ask), `temperature`, `top_p`, `top_k`, `min_p`,
//! `stop`, `repeat_penalty`, `repeat_last_n`, `ignore_eos`, `seed`, `n_indent` (stop at the first
//! generated line that is indented less), `t_max_predict_ms` (stop once this long has passed since the first
//! token and a line is complete), `n_probs` (each token's log-probability and the likeliest
//! tokens at its place), `response_fields` (answer only these, as `a/b` paths), and
//! graft's own `model` (a project, an adapter or the base; absent: `server.default_model`),
//! `retrieval` and `path` (the current file, left out of retrieval); the rest of llama.cpp's
//! generation fields as `/completion` takes them ([`super::Fields`]). Other sampler knobs
//! (`samplers`, `typical_p`, ...) and `cache_prompt` (graft's prompt cache is the server's
//! `model.prompt_cache`) are ignored. Streaming is not offered here: `/v1/completions` streams.
//!
//! Answer: `content`, `stop`, `stop_type` (`eos`, `limit`, or `word` with the
//! `stopping_word` that ended it), `model`, `tokens_predicted`, `tokens_evaluated`,
//! `prompt` (the exact prompt graft built), `truncated` (extra files left out), `timings`,
//! `completion_probabilities` (with `n_probs`), and graft's `sources`.

use axum::extract::State;
use axum::Extension;
use graft_engine::fim::{ContextFile, FimInput};
use graft_engine::{CompletionRequest, Prompt};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::{finished_fields, only_fields, put_tokens, warmed, Fields, Run};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::generation::admit;
use crate::json::Json;
use crate::openai::RetrievalField;
use crate::prompt::augment::Source;
use crate::prompt::completion::{self, TooLong};
use crate::state::AppState;

/// The request as llama.cpp's plugins send it.
#[derive(Debug, Deserialize)]
pub struct InfillRequest {
    pub model: Option<String>,
    #[serde(default)]
    pub input_prefix: String,
    #[serde(default)]
    pub input_suffix: String,
    #[serde(default)]
    pub input_extra: Vec<ExtraFile>,
    #[serde(default)]
    pub prompt: String,
    #[serde(flatten)]
    pub fields: Fields,
    pub retrieval: Option<RetrievalField>,
    /// graft's extension: the current file's path (see `/v1/completions`).
    pub path: Option<String>,
}

/// One `input_extra` entry.
#[derive(Debug, Deserialize)]
pub struct ExtraFile {
    #[serde(default)]
    pub filename: String,
    pub text: String,
}

pub async fn infill(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<InfillRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let response_fields = request.fields.response_fields.clone();
    let infilled = run(&state, &caller, request).await?;
    Ok(axum::Json(only_fields(infilled.answer, response_fields.as_deref())))
}

/// An infill request's whole answer, every field, and the retrieved code its prompt holds.
pub struct Infilled {
    pub answer: Value,
    /// The chunks retrieval put in the prompt, as `sources` lists them, with their code.
    pub sources: Vec<Source>,
}

/// Answers an infill request (Tabby's completions come this way too, `routes::tabby`).
pub async fn run(state: &AppState, caller: &Caller, request: InfillRequest) -> Result<Infilled, ApiError> {
    if request.fields.stream == Some(true) {
        return Err(ApiError::invalid_param(
            "stream",
            "/infill answers whole; stream with POST /v1/completions and `suffix`",
        ));
    }
    let target = state.target(request.model.as_deref().unwrap_or_default(), caller)?;
    // llama.vim and llama.vscode send `n_predict: 0` with their extra context alone, to have it
    // read into the prompt cache before the next completion needs it: graft reads the prompt
    // (generating one token, left out) and answers with no content.
    let (mut sampling, settings) = request.fields.resolve(state).await?;
    let prefix = format!("{}{}", request.input_prefix, request.prompt);
    // Extra files alone are a cache-warming request (see `warm_only`).
    if prefix.is_empty() && request.input_suffix.is_empty() && request.input_extra.iter().all(|f| f.text.is_empty()) {
        return Err(ApiError::invalid_param(
            "input_prefix",
            "`input_prefix`, `prompt`, `input_suffix` and `input_extra` are all empty",
        ));
    }
    let extra = request
        .input_extra
        .into_iter()
        .filter(|f| !f.text.is_empty())
        .map(|f| ContextFile {
            path: f.filename,
            text: f.text,
        })
        .collect();
    let input = FimInput {
        prefix,
        suffix: Some(request.input_suffix),
        path: request.path.filter(|p| !p.is_empty()),
        ..FimInput::default()
    };

    let admitted = admit(state).await?;
    let prompt = completion::lay_out(state, &target, input, extra, request.retrieval, &mut sampling, TooLong::Trim).await?;
    let prompt_n = prompt.tokens.len();
    let stream = state
        .pool()
        .complete_stream(
            &target.model,
            CompletionRequest {
                prompt: Prompt::Tokens(prompt.tokens),
                sampling,
            },
        )
        .await
        .map_err(|e| state.pool_error(e, caller))?;
    let generation = admitted.start(stream, state, &target.name);
    let started = Instant::now();
    let mut outcome = Run::new(generation, settings.limits).finish(state, &target, prompt_n).await?;
    if settings.warm_only {
        outcome = warmed(outcome);
    }
    let mut answer = Value::Object(finished_fields(&outcome, prompt_n, started));
    answer["index"] = 0.into();
    answer["model"] = target.name.into();
    answer["truncated"] = (prompt.extra_dropped > 0 || prompt.trimmed).into();
    answer["prompt"] = prompt.text.into();
    answer["generation_settings"] = settings.generation_settings.clone();
    answer["sources"] = serde_json::to_value(&prompt.sources).unwrap_or_default();
    put_tokens(&mut answer, outcome.probabilities.as_deref(), &settings);
    answer["content"] = outcome.content.into();
    Ok(Infilled {
        answer,
        sources: prompt.sources.unwrap_or_default(),
    })
}
