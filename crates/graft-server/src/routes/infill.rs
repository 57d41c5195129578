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
//! graft's own `model` (a project, an adapter or the base; absent: `server.infill_model`),
//! `retrieval` and `path` (the current file, left out of retrieval). Other sampler knobs
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
use graft_engine::{CompletionRequest, FinishReason, Prompt, StopCause, StreamEvent, TokenLogprob};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::time::{Duration, Instant};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::generation::{admit, Generation};
use crate::json::Json;
use crate::openai::{EndingFields, RepetitionFields, RetrievalField, Stop};
use crate::prompt::completion::{self, TooLong};
use crate::routes::params::{check_token_ids, SamplingFields};
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
    /// llama.cpp's `max_tokens`; negative means "the default".
    pub n_predict: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    /// `repeat_penalty` over the last `repeat_last_n` tokens, as llama.cpp takes them.
    #[serde(flatten)]
    pub repetition: RepetitionFields,
    /// llama.cpp's `ignore_eos` (and vLLM's `min_tokens`).
    #[serde(flatten)]
    pub ending: EndingFields,
    pub stream: Option<bool>,
    pub n_indent: Option<usize>,
    pub t_max_predict_ms: Option<u64>,
    /// Each generated token's log-probability, with this many of the likeliest tokens at its
    /// place (0: none).
    pub n_probs: Option<u32>,
    /// llama.cpp's probabilities after its sampler chain; graft's are the model's own (as
    /// llama.cpp gives them without this), so `true` is refused.
    pub post_sampling_probs: Option<bool>,
    pub response_fields: Option<Vec<String>>,
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

/// Why generation stopped, in llama.cpp's words.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StopType {
    /// The model ended (or a stop token, graft's extension, was met).
    Eos,
    /// `n_predict`, `n_indent` or `t_max_predict_ms`.
    Limit,
    /// This stop string was met (`stopping_word`).
    Word(String),
}

pub async fn infill(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<InfillRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    if request.stream == Some(true) {
        return Err(ApiError::invalid_param(
            "stream",
            "/infill answers whole; stream with POST /v1/completions and `suffix`",
        ));
    }
    let name = match request.model.as_deref() {
        Some(model) => model.to_owned(),
        None => state.infill_model().to_owned(),
    };
    if request.post_sampling_probs == Some(true) {
        return Err(ApiError::unsupported(
            "post_sampling_probs",
            "post_sampling_probs is not supported: n_probs gives the model's own log-probabilities",
        ));
    }
    let target = state.target(&name, &caller)?;
    // llama.vim and llama.vscode send `n_predict: 0` with their extra context alone, to have it
    // read into the prompt cache before the next completion needs it: graft reads the prompt
    // (generating one token, left out) and answers with no content.
    let warm_only = request.n_predict == Some(0);
    let max_tokens = match request.n_predict {
        Some(0) => Some(1),
        Some(n) if n < 0 => None,
        Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        None => None,
    };
    let ignore_eos = request.ending.ignore_eos == Some(true);
    let mut sampling = SamplingFields {
        max_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        min_p: request.min_p,
        stop: request.stop.map(Stop::into_vec).unwrap_or_default(),
        seed: request.seed,
        repetition: request.repetition,
        ending: request.ending,
        logprobs: request.n_probs.filter(|n| *n > 0).map(|n| (n, "n_probs")),
        ..SamplingFields::default()
    }
    .resolve(state.generation())
    .map_err(|mut e| {
        // llama.cpp calls it n_predict.
        if e.param == Some("max_tokens") {
            e.param = Some("n_predict");
            e.message = e.message.replace("max_tokens", "n_predict");
        }
        e
    })?;
    check_token_ids(&state, &sampling)?;
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
    let generation_settings = json!({
        "n_predict": if warm_only { 0 } else { sampling.max_tokens },
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "min_p": sampling.min_p,
        // llama.cpp's spelling of the penalty used: -1 tokens for the whole context, 0 for
        // none.
        "repeat_penalty": sampling.repetition.map_or(1.0, |r| r.penalty),
        "repeat_last_n": sampling.repetition.map_or(0, |r| r.window.map_or(-1, |n| n as i64)),
        "ignore_eos": ignore_eos,
        "seed": request.seed,
        "n_indent": request.n_indent,
        "t_max_predict_ms": request.t_max_predict_ms,
    });

    let admitted = admit(&state).await?;
    let prompt = completion::lay_out(&state, &target, input, extra, request.retrieval, &mut sampling, TooLong::Trim).await?;
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
        .map_err(|e| state.pool_error(e, &caller))?;
    let generation = admitted.start(stream, &state, &target.name);
    let started = Instant::now();
    let time_limit = request.t_max_predict_ms.filter(|ms| *ms > 0).map(Duration::from_millis);
    let mut outcome = generate(generation, request.n_indent, time_limit).await?;
    if warm_only {
        outcome = Outcome {
            content: String::new(),
            probabilities: None,
            stop_type: StopType::Limit,
            predicted_n: 0,
            ..outcome
        };
    }
    let Outcome {
        content,
        probabilities,
        stop_type,
        predicted_n,
        cached_n,
        first_at,
        early,
    } = outcome;
    let finished = Instant::now();
    if early {
        let usage = graft_engine::Usage {
            prompt_tokens: prompt_n,
            cached_tokens: cached_n,
            completion_tokens: predicted_n,
        };
        state.metrics().tokens(&target.name, usage);
    }

    let first_at = first_at.unwrap_or(finished);
    let prompt_ms = (first_at - started).as_secs_f64() * 1000.0;
    // As llama.cpp counts them: `prompt_n` the tokens read now, `cache_n` those reused.
    let read_n = prompt_n - cached_n.min(prompt_n);
    let predicted_ms = (finished - first_at).as_secs_f64() * 1000.0;
    let per = |n: usize, ms: f64| if n == 0 { 0.0 } else { ms / n as f64 };
    let rate = |n: usize, ms: f64| if ms <= 0.0 { 0.0 } else { n as f64 * 1000.0 / ms };
    let mut answer = json!({
        "index": 0,
        "content": content,
        "stop": true,
        "stop_type": match stop_type { StopType::Eos => "eos", StopType::Limit => "limit", StopType::Word(_) => "word" },
        "stopping_word": match &stop_type { StopType::Word(word) => word.as_str(), _ => "" },
        "model": target.name,
        "tokens_predicted": predicted_n,
        "tokens_evaluated": prompt_n,
        "tokens_cached": cached_n,
        "has_new_line": content.contains('\n'),
        "truncated": prompt.extra_dropped > 0 || prompt.trimmed,
        "prompt": prompt.text,
        "generation_settings": generation_settings,
        "timings": {
            "cache_n": cached_n,
            "prompt_n": read_n,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": per(read_n, prompt_ms),
            "prompt_per_second": rate(read_n, prompt_ms),
            "predicted_n": predicted_n,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": per(predicted_n, predicted_ms),
            "predicted_per_second": rate(predicted_n, predicted_ms),
        },
        "sources": prompt.sources,
    });
    if let Some(tokens) = probabilities {
        answer["completion_probabilities"] = completion_probabilities(tokens);
    }
    Ok(axum::Json(match request.response_fields {
        Some(fields) if !fields.is_empty() => only_fields(&answer, &fields),
        _ => answer,
    }))
}

/// What a generation under llama.cpp's FIM limits gave.
struct Outcome {
    content: String,
    /// The content's tokens with their log-probabilities, when `n_probs` asked for them.
    probabilities: Option<Vec<TokenLogprob>>,
    stop_type: StopType,
    /// Tokens generated (text pieces, when stopped early).
    predicted_n: usize,
    /// Prompt tokens the prompt cache supplied.
    cached_n: usize,
    /// When the first text arrived.
    first_at: Option<Instant>,
    /// Stopped by `n_indent` or `t_max_predict_ms` before the engine's end (which is what
    /// counts tokens for the metrics).
    early: bool,
}

/// Runs `generation` to its end, or until a line is indented less than `n_indent` or
/// `time_limit` has passed since the first token with a line complete. Returning drops the
/// token stream, which stops the engine.
async fn generate(mut generation: Generation, n_indent: Option<usize>, time_limit: Option<Duration>) -> Result<Outcome, ApiError> {
    let mut content = String::new();
    let mut probabilities: Option<Vec<TokenLogprob>> = None;
    let mut first_at = None;
    let mut pieces = 0;
    let (stop_type, predicted_n, early) = loop {
        match generation.next().await {
            Some(Ok(StreamEvent::Text { text: delta, logprobs })) => {
                let first = *first_at.get_or_insert_with(Instant::now);
                pieces += 1;
                content.push_str(&delta);
                if let Some(tokens) = logprobs {
                    probabilities.get_or_insert_with(Vec::new).extend(tokens);
                }
                if let Some(cut) = n_indent.and_then(|n| dedent_cut(&content, n)) {
                    content.truncate(cut);
                    if let Some(tokens) = &mut probabilities {
                        keep_within(tokens, cut);
                    }
                    break (StopType::Limit, pieces, true);
                }
                if time_limit.is_some_and(|limit| first.elapsed() >= limit) && content.contains('\n') {
                    break (StopType::Limit, pieces, true);
                }
            }
            Some(Ok(StreamEvent::End {
                finish_reason,
                stopped_by,
                usage,
            })) => {
                let stop_type = match (finish_reason, stopped_by) {
                    (FinishReason::Stop, Some(StopCause::Text(word))) => StopType::Word(word),
                    (FinishReason::Stop, _) => StopType::Eos,
                    (FinishReason::Length, _) => StopType::Limit,
                };
                break (stop_type, usage.completion_tokens, false);
            }
            Some(Err(e)) => return Err(e),
            None => return Err(ApiError::from(graft_engine::engine::Collector::unfinished())),
        }
    };
    Ok(Outcome {
        content,
        probabilities,
        stop_type,
        predicted_n,
        cached_n: generation.cached_tokens(),
        first_at,
        early,
    })
}

/// Where a completion should be cut because a line after its first one is indented less than
/// `n_indent` columns (spaces and tabs): the start of that line. Blank lines do not count, and
/// a line counts once it shows its first other character.
fn dedent_cut(text: &str, n_indent: usize) -> Option<usize> {
    let mut start = text.find('\n')? + 1;
    loop {
        let line = &text[start..];
        let end = line.find('\n');
        let line = end.map_or(line, |e| &line[..e]);
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        if indent < line.len() && indent < n_indent {
            return Some(start);
        }
        start += end? + 1;
    }
}

/// Keeps the tokens that lie wholly within the content's first `len` bytes (the content cut
/// by `n_indent`).
fn keep_within(tokens: &mut Vec<TokenLogprob>, len: usize) {
    let mut end = 0;
    tokens.retain(|token| {
        end += token.bytes.len();
        end <= len
    });
}

/// llama.cpp's `completion_probabilities`: each token with its id, text, bytes and
/// log-probability, and the likeliest tokens at its place in the same shape.
fn completion_probabilities(tokens: Vec<TokenLogprob>) -> Value {
    let entry =
        |id: u32, token: String, bytes: Vec<u8>, logprob: f32| json!({"id": id, "token": token, "bytes": bytes, "logprob": logprob});
    tokens
        .into_iter()
        .map(|t| {
            let mut out = entry(t.id, t.token, t.bytes, t.logprob);
            out["top_logprobs"] = t
                .top
                .into_iter()
                .map(|top| entry(top.id, top.token, top.bytes, top.logprob))
                .collect();
            out
        })
        .collect()
}

/// `answer` reduced to `fields`, each a `/`-separated path, keyed by the path as given
/// (llama.cpp's `response_fields`); paths that name nothing are left out.
fn only_fields(answer: &Value, fields: &[String]) -> Value {
    let mut out = Map::new();
    for field in fields {
        let pointer = format!("/{}", field.trim_start_matches('/'));
        if let Some(value) = answer.pointer(&pointer) {
            out.insert(field.clone(), value.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_indented_less_than_n_indent_ends_the_completion() {
        let text = "x + 1\n    y\n\n  z\nw";
        // The first line is the cursor's own: never cut there.
        assert_eq!(dedent_cut("a", 4), None);
        // `    y` keeps 4; the blank line does not count; `  z` (2) is cut at its start.
        assert_eq!(dedent_cut(text, 4), Some(text.find("  z").unwrap()));
        assert_eq!(dedent_cut(text, 2), Some(text.find('w').unwrap()));
        assert_eq!(dedent_cut(text, 0), None);
        // A line of whitespace so far is not judged yet.
        assert_eq!(dedent_cut("x\n  ", 4), None);
        assert_eq!(dedent_cut("x\n\tq", 2), Some(2));
    }

    #[test]
    fn a_cut_keeps_the_tokens_that_lie_within_it() {
        let token = |text: &str| TokenLogprob {
            id: 0,
            token: text.into(),
            bytes: text.as_bytes().to_vec(),
            logprob: -1.0,
            rank: 1,
            top: Vec::new(),
        };
        let mut tokens = vec![token("x"), token(" +"), token(" 1\n"), token("w")];
        keep_within(&mut tokens, "x + 1\n".len());
        let kept: Vec<&str> = tokens.iter().map(|t| t.token.as_str()).collect();
        assert_eq!(kept, ["x", " +", " 1\n"]);
    }

    #[test]
    fn response_fields_pick_paths_and_name_them_as_asked() {
        let answer = json!({"content": "c", "timings": {"prompt_n": 3}, "stop": true});
        let picked = only_fields(&answer, &["content".into(), "timings/prompt_n".into(), "missing".into()]);
        assert_eq!(picked, json!({"content": "c", "timings/prompt_n": 3}));
    }
}
