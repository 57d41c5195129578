//! llama.cpp's own endpoints, so that clients written for its server work against graft
//! unchanged: `POST /infill` (llama.vim, llama.vscode), `POST /completion` (Continue's
//! `llama.cpp` provider, llama.cpp's scripts) and `GET /props` (the server's description,
//! which clients read to size prompts and parallel requests).
//!
//! Shared here: llama.cpp's generation fields ([`Fields`]: `n_predict`, its samplers,
//! `n_indent`, `t_max_predict_ms`, `n_probs`, `response_fields`, ...), a generation run under
//! llama.cpp's limits piece by piece ([`Run`]), and the answer's fields (`stop_type`,
//! `timings`, `completion_probabilities`). Each endpoint builds its own prompt; this module
//! does not lay prompts out.
//!
//! llama.cpp's per-request `lora` scales (llama.vscode sends `[{id: 0, scale: 0.5}]` when one
//! is configured) are ignored, as are its other sampler knobs (`samplers`, `typical_p`,
//! `dry_*`, ...) and `cache_prompt`: the adapter is the one `model` chooses, and graft's
//! prompt cache is `model.prompt_cache`.

pub mod completion;
pub mod infill;
pub mod props;

use std::collections::HashMap;

use graft_engine::{FinishReason, Sampling, StopCause, StreamEvent, TokenLogprob};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::time::{Duration, Instant};

use crate::error::ApiError;
use crate::generation::Generation;
use crate::openai::{EndingFields, RepetitionFields, Stop, StructuredFields};
use crate::routes::params::{check_grammar, check_token_ids, structured, SamplingFields};
use crate::state::{AppState, Target};

/// llama.cpp's generation fields, as both endpoints take them.
#[derive(Debug, Default, Deserialize)]
pub struct Fields {
    /// llama.cpp's `max_tokens`; negative means "the default"; 0 reads the prompt into the
    /// prompt cache and generates nothing.
    pub n_predict: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// `repeat_penalty` over the last `repeat_last_n` tokens, as llama.cpp takes them.
    #[serde(flatten)]
    pub repetition: RepetitionFields,
    /// llama.cpp's `ignore_eos` (and vLLM's `min_tokens`).
    #[serde(flatten)]
    pub ending: EndingFields,
    /// `{"15043": 1.0}` or `[[15043, 1.0], ["Hello", -0.5], [13, false]]`: a token id or a
    /// text (each of its tokens), and a bias or `false` (never).
    pub logit_bias: Option<Value>,
    /// A JSON schema the answer follows.
    pub json_schema: Option<Value>,
    /// A GBNF grammar: not supported (`json_schema` is).
    pub grammar: Option<String>,
    /// Mirostat sampling: not supported (0, off, is accepted).
    pub mirostat: Option<i64>,
    pub stream: Option<bool>,
    pub n_indent: Option<usize>,
    pub t_max_predict_ms: Option<u64>,
    /// Each generated token's log-probability, with this many of the likeliest tokens at its
    /// place (0: none).
    pub n_probs: Option<u32>,
    /// llama.cpp's probabilities after its sampler chain; graft's are the model's own (as
    /// llama.cpp gives them without this), so `true` is refused.
    pub post_sampling_probs: Option<bool>,
    /// The answer's token ids in `tokens`.
    pub return_tokens: Option<bool>,
    pub response_fields: Option<Vec<String>>,
}

/// What a request's [`Fields`] decide besides the engine's sampling.
#[derive(Debug)]
pub struct Settings {
    /// `n_predict: 0`: the prompt is read (one token generated, left out) and nothing answered.
    pub warm_only: bool,
    pub limits: Limits,
    /// Answer `completion_probabilities` (`n_probs` > 0).
    pub probabilities: bool,
    /// Answer `tokens`.
    pub return_tokens: bool,
    pub stream: bool,
    pub response_fields: Option<Vec<String>>,
    /// llama.cpp's `generation_settings`, as the answer echoes them.
    pub generation_settings: Value,
}

/// Where a generation stops early, as llama.cpp's plugins ask.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Stop at the first generated line indented less than this.
    pub n_indent: Option<usize>,
    /// Stop once this long has passed since the first token and a line is complete.
    pub time: Option<Duration>,
}

impl Fields {
    /// The engine's sampling and the rest of what the fields ask, checked (errors name
    /// llama.cpp's fields).
    pub async fn resolve(self, state: &AppState) -> Result<(Sampling, Settings), ApiError> {
        if self.post_sampling_probs == Some(true) {
            return Err(ApiError::unsupported(
                "post_sampling_probs",
                "post_sampling_probs is not supported: n_probs gives the model's own log-probabilities",
            ));
        }
        if self.grammar.as_deref().is_some_and(|g| !g.trim().is_empty()) {
            return Err(ApiError::unsupported(
                "grammar",
                "GBNF grammars are not supported: use json_schema, or /v1/completions with structured_outputs (a Lark grammar)",
            ));
        }
        if self.mirostat.is_some_and(|m| m != 0) {
            return Err(ApiError::unsupported("mirostat", "mirostat sampling is not supported"));
        }
        let warm_only = self.n_predict == Some(0);
        let max_tokens = match self.n_predict {
            Some(0) => Some(1),
            Some(n) if n < 0 => None,
            Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            None => None,
        };
        let ignore_eos = self.ending.ignore_eos == Some(true);
        let n_probs = self.n_probs.filter(|n| *n > 0);
        let return_tokens = self.return_tokens == Some(true);
        let logit_bias = match self.logit_bias {
            None | Some(Value::Null) => None,
            Some(bias) => Some(logit_bias(state, bias).await?),
        };
        let mut sampling = SamplingFields {
            max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            stop: self.stop.map(Stop::into_vec).unwrap_or_default(),
            seed: self.seed,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            repetition: self.repetition,
            ending: self.ending,
            logprobs: n_probs.map(|n| (n, "n_probs")),
            logit_bias,
        }
        .resolve(&state.generation())
        .map_err(llama_names)?;
        check_token_ids(state, &sampling)?;
        // The answer's token ids come with their log-probabilities.
        if return_tokens {
            sampling.logprobs.get_or_insert(0);
        }
        if let Some(schema) = self.json_schema.filter(|s| !s.is_null()) {
            let fields = StructuredFields {
                response_format: None,
                structured_outputs: Some(json!({ "json": schema })),
            };
            let schema_named = |mut e: ApiError| {
                e.param = Some("json_schema");
                e.message = e.message.replace("structured_outputs.json", "json_schema");
                e
            };
            let grammar = structured(fields).map_err(schema_named)?;
            check_grammar(state, grammar.as_ref()).map_err(schema_named)?;
            sampling.grammar = grammar.map(|(grammar, _)| grammar);
        }
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
            "presence_penalty": self.presence_penalty.unwrap_or(0.0),
            "frequency_penalty": self.frequency_penalty.unwrap_or(0.0),
            "ignore_eos": ignore_eos,
            "seed": self.seed,
            "n_probs": n_probs.unwrap_or(0),
            "n_indent": self.n_indent,
            "t_max_predict_ms": self.t_max_predict_ms,
            "stop": sampling.stop,
        });
        let settings = Settings {
            warm_only,
            limits: Limits {
                n_indent: self.n_indent,
                time: self.t_max_predict_ms.filter(|ms| *ms > 0).map(Duration::from_millis),
            },
            probabilities: n_probs.is_some(),
            return_tokens,
            stream: self.stream == Some(true),
            response_fields: self.response_fields,
            generation_settings,
        };
        Ok((sampling, settings))
    }
}

/// An error of the shared sampling checks in llama.cpp's words: `max_tokens` is `n_predict`.
fn llama_names(mut error: ApiError) -> ApiError {
    if error.param == Some("max_tokens") {
        error.param = Some("n_predict");
        error.message = error.message.replace("max_tokens", "n_predict");
    }
    error
}

/// llama.cpp's `logit_bias` as OpenAI's (token id as text → bias): an object or a list of
/// `[token, bias]` pairs, a token being an id or a text (each of its tokens gets the bias), a
/// bias a number or `false` (never: -100).
async fn logit_bias(state: &AppState, bias: Value) -> Result<HashMap<String, f64>, ApiError> {
    let invalid = |message: String| ApiError::invalid_param("logit_bias", message);
    let pairs: Vec<(Value, Value)> = match bias {
        Value::Object(map) => map.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    Ok((pair.next().unwrap_or_default(), pair.next().unwrap_or_default()))
                }
                other => Err(invalid(format!("each logit_bias entry is a [token, bias] pair, got {other}"))),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(invalid(format!(
                "logit_bias is an object or a list of [token, bias] pairs, got {other}"
            )))
        }
    };
    let mut out = HashMap::new();
    for (token, value) in pairs {
        let value = match value {
            Value::Bool(false) => -100.0,
            Value::Number(n) => n.as_f64().unwrap_or_default(),
            other => return Err(invalid(format!("a logit_bias value is a number or false, got {other}"))),
        };
        let ids = match &token {
            Value::Number(n) => vec![n
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| invalid(format!("a logit_bias token id is a whole number, got {n}")))?],
            Value::String(text) => match text.parse::<u32>() {
                Ok(id) => vec![id],
                Err(_) => state.engine().tokenize(text, false).await?,
            },
            other => return Err(invalid(format!("a logit_bias token is an id or a text, got {other}"))),
        };
        for id in ids {
            out.insert(id.to_string(), value);
        }
    }
    Ok(out)
}

/// Why generation stopped, in llama.cpp's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopType {
    /// The model ended (or a stop token, graft's extension, was met).
    Eos,
    /// `n_predict`, `n_indent` or `t_max_predict_ms`.
    Limit,
    /// This stop string was met (`stopping_word`).
    Word(String),
}

/// What a generation under llama.cpp's limits gave.
#[derive(Debug)]
pub struct Outcome {
    pub content: String,
    /// The content's tokens with their log-probabilities, when asked for.
    pub probabilities: Option<Vec<TokenLogprob>>,
    pub stop_type: StopType,
    /// Tokens generated (text pieces, when stopped early).
    pub predicted_n: usize,
    /// Prompt tokens the prompt cache supplied.
    pub cached_n: usize,
    /// When the first text arrived.
    pub first_at: Option<Instant>,
}

/// One step of a [`Run`].
pub enum Step {
    /// New text (empty when a limit cut it away, or it had been sent already), with its
    /// tokens' log-probabilities when asked for.
    Text(String, Option<Vec<TokenLogprob>>),
    /// The generation is over; [`Run::outcome`] tells how.
    End,
}

/// A generation read piece by piece under llama.cpp's [`Limits`]. A limit that is met ends
/// the run; dropping the run drops the token stream, which stops the engine.
pub struct Run {
    generation: Generation,
    limits: Limits,
    content: String,
    /// How much of `content` a [`Step`] has given out.
    given: usize,
    probabilities: Option<Vec<TokenLogprob>>,
    first_at: Option<Instant>,
    pieces: usize,
    /// How it ended, and whether a limit ended it before the engine did.
    end: Option<(StopType, usize, bool)>,
}

impl Run {
    pub fn new(generation: Generation, limits: Limits) -> Run {
        Run {
            generation,
            limits,
            content: String::new(),
            given: 0,
            probabilities: None,
            first_at: None,
            pieces: 0,
            end: None,
        }
    }

    pub async fn step(&mut self) -> Result<Step, ApiError> {
        if self.end.is_some() {
            return Ok(Step::End);
        }
        match self.generation.next().await {
            Some(Ok(StreamEvent::Text { text, logprobs })) => {
                let first = *self.first_at.get_or_insert_with(Instant::now);
                self.pieces += 1;
                self.content.push_str(&text);
                if let Some(tokens) = &logprobs {
                    self.probabilities.get_or_insert_with(Vec::new).extend(tokens.iter().cloned());
                }
                if let Some(cut) = self.limits.n_indent.and_then(|n| dedent_cut(&self.content, n)) {
                    self.content.truncate(cut);
                    if let Some(tokens) = &mut self.probabilities {
                        keep_within(tokens, cut);
                    }
                    self.end = Some((StopType::Limit, self.pieces, true));
                } else if self.limits.time.is_some_and(|limit| first.elapsed() >= limit) && self.content.contains('\n') {
                    self.end = Some((StopType::Limit, self.pieces, true));
                }
                let from = self.given.min(self.content.len());
                let new = self.content[from..].to_owned();
                self.given = self.given.max(self.content.len());
                Ok(Step::Text(new, logprobs))
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
                self.end = Some((stop_type, usage.completion_tokens, false));
                Ok(Step::End)
            }
            Some(Err(e)) => Err(e),
            None => Err(ApiError::from(graft_engine::engine::Collector::unfinished())),
        }
    }

    /// Text pieces generated so far.
    pub fn pieces(&self) -> usize {
        self.pieces
    }

    /// Steps to the end.
    pub async fn finish(mut self, state: &AppState, target: &Target, prompt_n: usize) -> Result<Outcome, ApiError> {
        while let Step::Text(..) = self.step().await? {}
        Ok(self.outcome(state, target, prompt_n))
    }

    /// How the run ended (call after [`Step::End`]). A run a limit ended is counted in the
    /// metrics here (the engine counts those that reach its end).
    pub fn outcome(&mut self, state: &AppState, target: &Target, prompt_n: usize) -> Outcome {
        let (stop_type, predicted_n, early) = self.end.clone().unwrap_or((StopType::Limit, self.pieces, true));
        let cached_n = self.generation.cached_tokens();
        if early {
            let usage = graft_engine::Usage {
                prompt_tokens: prompt_n,
                cached_tokens: cached_n,
                completion_tokens: predicted_n,
            };
            state.metrics().tokens(&target.name, usage);
        }
        Outcome {
            content: std::mem::take(&mut self.content),
            probabilities: self.probabilities.take(),
            stop_type,
            predicted_n,
            cached_n,
            first_at: self.first_at,
        }
    }
}

/// The fields of a finished answer that do not depend on the endpoint: `stop`, `stop_type`,
/// `stopping_word`, the token counts, `has_new_line` and `timings` (as llama.cpp counts them:
/// `prompt_n` the tokens read now, `cache_n` those reused), the prompt read from `started`.
pub fn finished_fields(outcome: &Outcome, prompt_n: usize, started: Instant) -> Map<String, Value> {
    let finished = Instant::now();
    let first_at = outcome.first_at.unwrap_or(finished);
    let prompt_ms = (first_at.max(started) - started).as_secs_f64() * 1000.0;
    let cached_n = outcome.cached_n;
    let read_n = prompt_n - cached_n.min(prompt_n);
    let predicted_n = outcome.predicted_n;
    let predicted_ms = (finished - first_at).as_secs_f64() * 1000.0;
    let per = |n: usize, ms: f64| if n == 0 { 0.0 } else { ms / n as f64 };
    let rate = |n: usize, ms: f64| if ms <= 0.0 { 0.0 } else { n as f64 * 1000.0 / ms };
    let stop_type = &outcome.stop_type;
    let fields = json!({
        "stop": true,
        "stop_type": match stop_type { StopType::Eos => "eos", StopType::Limit => "limit", StopType::Word(_) => "word" },
        "stopping_word": match stop_type { StopType::Word(word) => word.as_str(), _ => "" },
        "tokens_predicted": predicted_n,
        "tokens_evaluated": prompt_n,
        "tokens_cached": cached_n,
        "has_new_line": outcome.content.contains('\n'),
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
    });
    match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// An outcome of `n_predict: 0` (the prompt read, nothing answered).
pub fn warmed(outcome: Outcome) -> Outcome {
    Outcome {
        content: String::new(),
        probabilities: None,
        stop_type: StopType::Limit,
        predicted_n: 0,
        ..outcome
    }
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
pub fn completion_probabilities(tokens: &[TokenLogprob]) -> Value {
    let entry = |id: u32, token: &str, bytes: &[u8], logprob: f32| json!({"id": id, "token": token, "bytes": bytes, "logprob": logprob});
    tokens
        .iter()
        .map(|t| {
            let mut out = entry(t.id, &t.token, &t.bytes, t.logprob);
            out["top_logprobs"] = t.top.iter().map(|top| entry(top.id, &top.token, &top.bytes, top.logprob)).collect();
            out
        })
        .collect()
}

/// The answer's probabilities and token ids, as `settings` asks.
pub fn put_tokens(answer: &mut Value, tokens: Option<&[TokenLogprob]>, settings: &Settings) {
    let tokens = tokens.unwrap_or_default();
    if settings.probabilities {
        answer["completion_probabilities"] = completion_probabilities(tokens);
    }
    answer["tokens"] = match settings.return_tokens {
        true => tokens.iter().map(|t| t.id).collect(),
        false => json!([]),
    };
}

/// `answer` reduced to `fields`, each a `/`-separated path, keyed by the path as given
/// (llama.cpp's `response_fields`); paths that name nothing are left out. No fields (none
/// given, or an empty list): all.
pub fn only_fields(answer: Value, fields: Option<&[String]>) -> Value {
    let Some(fields) = fields.filter(|f| !f.is_empty()) else {
        return answer;
    };
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
        let fields = ["content".into(), "timings/prompt_n".into(), "missing".into()];
        let picked = only_fields(answer.clone(), Some(&fields));
        assert_eq!(picked, json!({"content": "c", "timings/prompt_n": 3}));
        assert_eq!(only_fields(answer.clone(), None), answer);
        assert_eq!(only_fields(answer.clone(), Some(&[])), answer, "an empty list: all");
    }
}
