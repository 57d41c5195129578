//! `POST /completion` (and `/completions`): llama.cpp's own text completion, as Continue's
//! `llama.cpp` provider and llama.cpp's scripts send it (point them at `http://HOST:PORT`).
//!
//! The prompt is read as given, as llama.cpp reads it: no chat template, no retrieved code, no
//! prompt format; a text gets the model's BOS and its special tokens are read as such. It is a
//! text, token ids, a mix of both (`[12, " world", 13]`: the texts after the first without
//! BOS), or a list of such prompts, each answered in turn (`index`). `model` is graft's
//! extension: a project (its adapter), an adapter or the base (absent: `server.default_model`,
//! as on `/infill`). The generation fields are llama.cpp's ([`super::Fields`]).
//!
//! Answer: `content`, `stop`, `stop_type`, `stopping_word`, `model`, `tokens_predicted`,
//! `tokens_evaluated`, `tokens_cached`, `prompt` (the tokens' text), `generation_settings`,
//! `timings`, `tokens` (with `return_tokens`), `completion_probabilities` (with `n_probs`);
//! a list of answers for a list of prompts. With `stream`, server-sent events, each
//! `data: {"index", "content", "stop": false, ...}` as text comes, then one with `stop: true`,
//! empty content and the rest of the fields; no `[DONE]`, as llama.cpp ends it.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{finished_fields, only_fields, put_tokens, warmed, Fields, Outcome, Run, Settings, Step};
use crate::caller::Caller;
use crate::error::{stream_error_event, ApiError};
use crate::generation::{admit, start_choices};
use crate::json::Json;
use crate::prompt::check_length;
use crate::state::{AppState, Target};

/// Most prompts one request may send.
const MAX_PROMPTS: usize = 32;

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Option<Value>,
    #[serde(flatten)]
    pub fields: Fields,
}

/// A part of a prompt: text, or a token id.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Id(u32),
}

pub async fn completion(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<CompletionRequest>,
) -> Result<Response, ApiError> {
    let prompts = prompts(request.prompt.unwrap_or_default())?;
    let target = state.target(request.model.as_deref().unwrap_or_default(), &caller)?;
    let (sampling, settings) = request.fields.resolve(&state).await?;
    let mut laid_out = Vec::with_capacity(prompts.len());
    for parts in prompts {
        let tokens = tokens(&state, parts).await?;
        check_length(&state, tokens.len(), "prompt", "The prompt")?;
        state
            .engine()
            .check_token_ids("prompt", &tokens)
            .map_err(|e| ApiError::invalid_param("prompt", e.to_string()))?;
        laid_out.push(tokens);
    }
    let mut answers = Vec::with_capacity(laid_out.len());
    for tokens in &laid_out {
        answers.push(Answer {
            index: answers.len(),
            prompt: state.engine().detokenize(tokens.clone()).await?,
            prompt_n: tokens.len(),
        });
    }
    let admitted = admit(&state).await?;
    let generations = start_choices(&state, &caller, admitted, &target, laid_out, sampling, 1).await?;
    let started = Instant::now();
    let limits = settings.limits;
    let runs = generations.into_iter().map(move |g| Run::new(g, limits));
    let done = Done {
        state,
        target,
        settings,
        started,
    };
    if done.settings.stream {
        return Ok(streamed(done, runs.zip(answers).collect()).into_response());
    }
    // All at once: the engine decodes the prompts together.
    let outcomes = futures::future::try_join_all(
        runs.zip(&answers)
            .map(|(run, answer)| run.finish(&done.state, &done.target, answer.prompt_n)),
    )
    .await?;
    let mut whole: Vec<Value> = answers
        .iter()
        .zip(outcomes)
        .map(|(answer, outcome)| done.answer(answer, outcome, false))
        .collect();
    Ok(match whole.len() {
        1 => axum::Json(whole.pop().unwrap_or_default()).into_response(),
        _ => axum::Json(whole).into_response(),
    })
}

/// What one prompt's answer says of its prompt.
struct Answer {
    index: usize,
    /// The prompt's tokens as text.
    prompt: String,
    prompt_n: usize,
}

/// What every answer of a request shares.
struct Done {
    state: AppState,
    target: Target,
    settings: Settings,
    /// When the generations started.
    started: Instant,
}

impl Done {
    /// A finished answer; a stream's last event leaves the text out (it has been sent).
    fn answer(&self, answer: &Answer, outcome: Outcome, streamed: bool) -> Value {
        let outcome = if self.settings.warm_only { warmed(outcome) } else { outcome };
        let mut out = Value::Object(finished_fields(&outcome, answer.prompt_n, self.started));
        out["index"] = answer.index.into();
        out["model"] = self.target.name.clone().into();
        out["prompt"] = answer.prompt.clone().into();
        out["truncated"] = false.into();
        out["generation_settings"] = self.settings.generation_settings.clone();
        match streamed {
            true => out["content"] = "".into(),
            false => {
                put_tokens(&mut out, outcome.probabilities.as_deref(), &self.settings);
                out["content"] = outcome.content.into();
            }
        }
        only_fields(out, self.settings.response_fields.as_deref())
    }

    /// A stream event of new text.
    fn partial(&self, answer: &Answer, run: &Run, text: String, tokens: Option<Vec<graft_engine::TokenLogprob>>) -> Event {
        let mut out = json!({
            "index": answer.index,
            "content": text,
            "stop": false,
            "tokens_predicted": run.pieces(),
            "tokens_evaluated": answer.prompt_n,
        });
        put_tokens(&mut out, tokens.as_deref(), &self.settings);
        crate::routes::sse::json_event(&out)
    }
}

/// The answers as server-sent events, the prompts' interleaved as their text comes; an error
/// ends the stream with its event.
fn streamed(done: Done, runs: Vec<(Run, Answer)>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let done = std::sync::Arc::new(done);
    let each = runs.into_iter().map(|(run, answer)| {
        let done = std::sync::Arc::clone(&done);
        stream::unfold(Some((run, answer)), move |held| {
            let done = std::sync::Arc::clone(&done);
            async move {
                let (mut run, answer) = held?;
                loop {
                    match run.step().await {
                        Ok(Step::Text(text, tokens)) => {
                            if done.settings.warm_only || (text.is_empty() && tokens.is_none()) {
                                continue;
                            }
                            let event = done.partial(&answer, &run, text, tokens);
                            return Some(((event, false), Some((run, answer))));
                        }
                        Ok(Step::End) => {
                            let outcome = run.outcome(&done.state, &done.target, answer.prompt_n);
                            let last = crate::routes::sse::json_event(&done.answer(&answer, outcome, true));
                            return Some(((last, false), None));
                        }
                        Err(e) => return Some(((stream_error_event(&e), true), None)),
                    }
                }
            }
        })
        .boxed()
    });
    // Nothing after an error: the other prompts' generations are dropped, which stops them.
    let events = stream::unfold((stream::select_all(each), false), |(mut merged, failed)| async move {
        if failed {
            return None;
        }
        let (event, error) = merged.next().await?;
        Some((Ok(event), (merged, error)))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// The request's prompts: one (a text, token ids, or a mix of both) or a list of them.
fn prompts(value: Value) -> Result<Vec<Vec<Part>>, ApiError> {
    let invalid = |message: String| ApiError::invalid_param("prompt", message);
    // A list holding lists, or of texts alone, is a list of prompts; ids with or without
    // texts are one prompt.
    let many = |items: &[Value]| items.iter().any(Value::is_array) || (items.len() > 1 && items.iter().all(Value::is_string));
    let prompts = match value {
        Value::Null => return Err(invalid("prompt is required".into())),
        Value::Array(items) if many(&items) => {
            if items.len() > MAX_PROMPTS {
                return Err(invalid(format!("at most {MAX_PROMPTS} prompts per request, got {}", items.len())));
            }
            items
                .into_iter()
                .map(|item| one_prompt(item).map_err(invalid))
                .collect::<Result<_, _>>()?
        }
        one => vec![one_prompt(one).map_err(invalid)?],
    };
    if prompts
        .iter()
        .any(|parts| parts.iter().all(|p| matches!(p, Part::Text(t) if t.is_empty())))
    {
        return Err(invalid("a prompt is empty".into()));
    }
    Ok(prompts)
}

/// One prompt: a text, or a list of token ids and texts.
fn one_prompt(value: Value) -> Result<Vec<Part>, String> {
    let part = |value: Value| match value {
        Value::String(text) => Ok(Part::Text(text)),
        Value::Number(n) => n
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .map(Part::Id)
            .ok_or_else(|| format!("a token id is a whole number, got {n}")),
        other => Err(format!("a prompt is a text, token ids, or a list of both, got {other}")),
    };
    match value {
        Value::Array(items) => items.into_iter().map(part).collect(),
        one => Ok(vec![part(one)?]),
    }
}

/// A prompt's token ids: each text tokenized (special tokens read as such), the first with
/// the model's BOS when the prompt starts with a text, as llama.cpp tokenizes a mixed prompt.
async fn tokens(state: &AppState, parts: Vec<Part>) -> Result<Vec<u32>, ApiError> {
    let mut tokens = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        match part {
            Part::Id(id) => tokens.push(id),
            Part::Text(text) => tokens.extend(state.engine().tokenize(&text, i == 0).await?),
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(value: Value) -> Result<Vec<Vec<Part>>, String> {
        prompts(value).map_err(|e| e.message)
    }

    #[test]
    fn prompts_are_read_as_llama_cpp_reads_them() {
        let text = |t: &str| Part::Text(t.into());
        assert_eq!(parsed(json!("def f")).unwrap(), [vec![text("def f")]]);
        assert_eq!(parsed(json!([1, 2, 3])).unwrap(), [vec![Part::Id(1), Part::Id(2), Part::Id(3)]]);
        // Texts and ids together: one mixed prompt.
        assert_eq!(parsed(json!([1, "a", 2])).unwrap(), [vec![Part::Id(1), text("a"), Part::Id(2)]]);
        assert_eq!(parsed(json!(["a", 2])).unwrap(), [vec![text("a"), Part::Id(2)]]);
        // Texts alone, or lists: a prompt each.
        assert_eq!(parsed(json!(["a", "b"])).unwrap(), [vec![text("a")], vec![text("b")]]);
        assert_eq!(
            parsed(json!([[1, 2], "b"])).unwrap(),
            [vec![Part::Id(1), Part::Id(2)], vec![text("b")]]
        );
        assert_eq!(parsed(json!(["a"])).unwrap(), [vec![text("a")]]);

        assert!(parsed(Value::Null).unwrap_err().contains("required"));
        assert!(parsed(json!("")).unwrap_err().contains("empty"));
        assert!(parsed(json!([1.5])).unwrap_err().contains("whole number"));
        assert!(parsed(json!([-1])).unwrap_err().contains("whole number"));
        assert!(parsed(json!({"text": "a"})).unwrap_err().contains("a prompt is a text"));
        assert!(parsed(json!([[{"a": 1}]])).unwrap_err().contains("a prompt is a text"));
        assert!(parsed(Value::Array(vec![json!("a"); 33])).unwrap_err().contains("at most 32"));
    }
}
