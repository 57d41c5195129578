//! Request fields shared by the generation endpoints (chat and completions): sampling settings
//! checked against the configured limits and filled with the configured defaults, structured
//! output's grammar, and the `debug` extension's answer.

use std::collections::HashMap;

use graft_core::config::GenerationConfig;
use graft_engine::logprobs::MAX_TOP_LOGPROBS;
use graft_engine::{Grammar, Repetition, Sampling};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::openai::{DebugInfo, EndingFields, RepetitionFields, StructuredFields};
use crate::state::AppState;

/// Most stop strings a request may give. OpenAI takes four; editor plugins send more (Continue:
/// its template's, blank lines, code fences and a language's top-level keywords), and vLLM and
/// llama.cpp take any number.
const MAX_STOP_SEQUENCES: usize = 64;

/// Longest stop string, in characters (each answer's text is matched against every one).
const MAX_STOP_CHARS: usize = 500;

/// The sampling fields as a request gave them.
#[derive(Debug, Default)]
pub struct SamplingFields {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// vLLM's and llama.cpp's: -1 or 0 for every token.
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub repetition: RepetitionFields,
    pub ending: EndingFields,
    /// How many alternatives to list with each token's log-probability (`None`: no
    /// log-probabilities), and the request field that asked, for its errors.
    pub logprobs: Option<(u32, &'static str)>,
    /// Token id (as text) → bias, as OpenAI takes it.
    pub logit_bias: Option<HashMap<String, f64>>,
}

/// Most tokens one `logit_bias` may name.
const MAX_LOGIT_BIAS: usize = 1024;

impl SamplingFields {
    /// The engine's sampling settings, with defaults filled in; out-of-range values are a 400
    /// naming the field.
    pub fn resolve(self, limits: &GenerationConfig) -> Result<Sampling, ApiError> {
        let max_tokens = self.max_tokens.unwrap_or(limits.default_max_tokens);
        if max_tokens == 0 || max_tokens > limits.max_tokens_limit {
            return Err(ApiError::invalid_param(
                "max_tokens",
                format!("max_tokens must be between 1 and {}, got {max_tokens}", limits.max_tokens_limit),
            ));
        }
        let temperature = self.temperature.unwrap_or(limits.default_temperature);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid_param(
                "temperature",
                format!("temperature must be between 0 and 2, got {temperature}"),
            ));
        }
        let top_p = self.top_p.unwrap_or(limits.default_top_p);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid_param("top_p", format!("top_p must be in (0, 1], got {top_p}")));
        }
        let top_k = match self.top_k {
            None => limits.default_top_k,
            Some(-1 | 0) => 0,
            Some(k) => usize::try_from(k)
                .map_err(|_| ApiError::invalid_param("top_k", format!("top_k must be -1 or 0 (every token) or at least 1, got {k}")))?,
        };
        let min_p = self.min_p.unwrap_or(limits.default_min_p);
        if !(0.0..=1.0).contains(&min_p) {
            return Err(ApiError::invalid_param(
                "min_p",
                format!("min_p must be between 0 and 1, got {min_p}"),
            ));
        }
        if self.stop.len() > MAX_STOP_SEQUENCES || self.stop.iter().any(|s| s.is_empty() || s.chars().count() > MAX_STOP_CHARS) {
            return Err(ApiError::invalid_param(
                "stop",
                format!("stop takes up to {MAX_STOP_SEQUENCES} non-empty strings of up to {MAX_STOP_CHARS} characters"),
            ));
        }
        let penalty = |value: Option<f64>, param: &'static str| match value.unwrap_or(0.0) {
            p if (-2.0..=2.0).contains(&p) => Ok(p),
            p => Err(ApiError::invalid_param(param, format!("{param} must be between -2 and 2, got {p}"))),
        };
        let frequency_penalty = penalty(self.frequency_penalty, "frequency_penalty")?;
        let presence_penalty = penalty(self.presence_penalty, "presence_penalty")?;
        let repetition = repetition(self.repetition)?;
        let include_stop = self.ending.include_stop_str_in_output == Some(true);
        let mut stop_token_ids = self.ending.stop_token_ids.clone().unwrap_or_default();
        if stop_token_ids.len() > MAX_STOP_SEQUENCES {
            return Err(ApiError::invalid_param(
                "stop_token_ids",
                format!(
                    "stop_token_ids takes up to {MAX_STOP_SEQUENCES} token ids, got {}",
                    stop_token_ids.len()
                ),
            ));
        }
        stop_token_ids.sort_unstable();
        stop_token_ids.dedup();
        let min_tokens = min_tokens(self.ending, max_tokens, !self.stop.is_empty())?;
        let logprobs = match self.logprobs {
            Some((top, param)) if top as usize > MAX_TOP_LOGPROBS => {
                return Err(ApiError::invalid_param(
                    param,
                    format!("{param} must be between 0 and {MAX_TOP_LOGPROBS}, got {top}"),
                ))
            }
            other => other.map(|(top, _)| top as usize),
        };
        let logit_bias = logit_bias(self.logit_bias.unwrap_or_default())?;
        Ok(Sampling {
            max_tokens: max_tokens as usize,
            temperature,
            top_p,
            top_k,
            min_p,
            stop: self.stop,
            stop_token_ids,
            include_stop,
            // OpenAI's seed is a signed integer; its bits seed the draw.
            seed: self.seed.map(|s| s as u64),
            frequency_penalty,
            presence_penalty,
            repetition,
            min_tokens,
            logprobs,
            logit_bias,
            grammar: None,
        })
    }
}

/// llama.cpp's `repeat_last_n` when a request gives `repeat_penalty` without it.
const LLAMA_CPP_REPEAT_LAST_N: usize = 64;

/// The repetition penalty a request asks for; `None` when it asks for none (a penalty of 1,
/// or a window of 0 tokens). The two names are one setting: given both, they must agree.
fn repetition(fields: RepetitionFields) -> Result<Option<Repetition>, ApiError> {
    let (penalty, param, default_window) = match (fields.repetition_penalty, fields.repeat_penalty) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid_param(
                "repeat_penalty",
                format!("repetition_penalty ({a}, vLLM's name) and repeat_penalty ({b}, llama.cpp's) are one setting; give one of them"),
            ))
        }
        (Some(p), _) => (p, "repetition_penalty", None),
        (None, Some(p)) => (p, "repeat_penalty", Some(LLAMA_CPP_REPEAT_LAST_N)),
        (None, None) => (1.0, "repetition_penalty", None),
    };
    // Bounded so that dividing and multiplying a logit by it stays finite in f32.
    if !(0.01..=100.0).contains(&penalty) {
        return Err(ApiError::invalid_param(
            param,
            format!("{param} must be between 0.01 and 100 (1: no penalty; above 1 repeats less), got {penalty}"),
        ));
    }
    let window = match fields.repeat_last_n {
        None => default_window,
        Some(-1) => None,
        Some(n) => Some(usize::try_from(n).map_err(|_| {
            ApiError::invalid_param(
                "repeat_last_n",
                format!("repeat_last_n must be -1 (the whole context), 0 (no penalty) or a number of tokens, got {n}"),
            )
        })?),
    };
    if penalty == 1.0 || window == Some(0) {
        return Ok(None);
    }
    Ok(Some(Repetition {
        penalty: penalty as f32,
        window,
    }))
}

/// How many answer tokens come before the model may end: `ignore_eos` holds its end back to
/// `max_tokens`; `min_tokens` must not exceed it, and is not taken with `stop` (vLLM's
/// min_tokens holds stop strings back too, which graft's engine cannot).
fn min_tokens(fields: EndingFields, max_tokens: u32, has_stop: bool) -> Result<usize, ApiError> {
    if fields.ignore_eos == Some(true) {
        return Ok(max_tokens as usize);
    }
    match fields.min_tokens.unwrap_or(0) {
        0 => Ok(0),
        n if n > max_tokens => Err(ApiError::invalid_param(
            "min_tokens",
            format!("min_tokens ({n}) must not exceed max_tokens ({max_tokens})"),
        )),
        _ if has_stop => Err(ApiError::invalid_param(
            "min_tokens",
            "min_tokens cannot be used together with stop (stop strings would still end the answer sooner); use ignore_eos, which keeps them",
        )),
        n => Ok(n as usize),
    }
}

/// `logit_bias` as the engine takes it: each key a token id, each bias within [-100, 100].
fn logit_bias(map: HashMap<String, f64>) -> Result<Vec<(u32, f32)>, ApiError> {
    let invalid = |message: String| ApiError::invalid_param("logit_bias", message);
    if map.len() > MAX_LOGIT_BIAS {
        return Err(invalid(format!(
            "logit_bias may name up to {MAX_LOGIT_BIAS} tokens, got {}",
            map.len()
        )));
    }
    let mut bias = Vec::with_capacity(map.len());
    for (key, value) in map {
        let id = key
            .trim()
            .parse::<u32>()
            .map_err(|_| invalid(format!("logit_bias keys are token ids, got `{key}`")))?;
        if !(-100.0..=100.0).contains(&value) {
            return Err(invalid(format!(
                "logit_bias values must be between -100 and 100, got {value} for {id}"
            )));
        }
        bias.push((id, value as f32));
    }
    bias.sort_by_key(|&(id, _)| id);
    Ok(bias)
}

/// `logit_bias` and `stop_token_ids` may only name tokens of the model's vocabulary.
pub fn check_token_ids(state: &AppState, sampling: &Sampling) -> Result<(), ApiError> {
    let Some(size) = state.engine().vocab_size() else {
        return Ok(());
    };
    let outside = sampling
        .logit_bias
        .iter()
        .map(|&(id, _)| ("logit_bias", id))
        .chain(sampling.stop_token_ids.iter().map(|&id| ("stop_token_ids", id)))
        .find(|&(_, id)| id as usize >= size);
    match outside {
        None => Ok(()),
        Some((param, id)) => Err(ApiError::invalid_param(
            param,
            format!(
                "{param} names token id {id}, outside the model's vocabulary of {size} tokens (ids 0 to {})",
                size - 1
            ),
        )),
    }
}

/// The `debug` answer for a prompt of `tokens`: its text with special tokens spelled out.
pub async fn debug_info(state: &AppState, tokens: &[u32]) -> Result<DebugInfo, ApiError> {
    Ok(DebugInfo {
        prompt: state.engine().detokenize(tokens.to_vec()).await?,
        prompt_tokens: tokens.len(),
    })
}

/// The grammar a request's structured-output fields ask for, with the field that asked (for
/// its errors); `None` for plain text. OpenAI's `response_format` (`text`; `json_object`, any
/// object, or llama.cpp's `schema` beside it; `json_schema` with its `schema`) and vLLM's
/// `structured_outputs` (one of `json`, `regex`, `choice`, `grammar` in Lark); at most one
/// of the two.
pub fn structured(fields: StructuredFields) -> Result<Option<(Grammar, &'static str)>, ApiError> {
    let format = fields.response_format.map(response_format).transpose()?.flatten();
    let outputs = fields.structured_outputs.map(structured_outputs).transpose()?.flatten();
    match (format, outputs) {
        (Some(_), Some(_)) => Err(ApiError::invalid_param(
            "structured_outputs",
            "give either response_format or structured_outputs, not both",
        )),
        (Some(grammar), None) => Ok(Some((grammar, "response_format"))),
        (None, Some(grammar)) => Ok(Some((grammar, "structured_outputs"))),
        (None, None) => Ok(None),
    }
}

/// OpenAI's `response_format`.
fn response_format(value: Value) -> Result<Option<Grammar>, ApiError> {
    let invalid = |message: String| ApiError::invalid_param("response_format", message);
    let Value::Object(format) = value else {
        return match value {
            Value::Null => Ok(None),
            _ => Err(invalid("response_format must be an object with a `type`".into())),
        };
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => match format.get("schema") {
            None | Some(Value::Null) => Ok(Some(json_grammar(json!({"type": "object"})))),
            Some(schema) => json_schema(schema, "response_format", "response_format.schema").map(Some),
        },
        Some("json_schema") => {
            let Some(Value::Object(spec)) = format.get("json_schema") else {
                return Err(invalid("`json_schema` response format needs a `json_schema` object".into()));
            };
            match spec.get("schema") {
                // OpenAI's schema is optional: any JSON value.
                None | Some(Value::Null) => Ok(Some(json_grammar(json!({})))),
                Some(schema) => json_schema(schema, "response_format", "response_format.json_schema.schema").map(Some),
            }
        }
        Some(other) => Err(invalid(format!(
            "response_format type `{other}` is not supported; use text, json_object or json_schema"
        ))),
        None => Err(invalid("response_format needs a `type`: text, json_object or json_schema".into())),
    }
}

/// vLLM's `structured_outputs`: exactly one of its kinds.
fn structured_outputs(value: Value) -> Result<Option<Grammar>, ApiError> {
    let invalid = |message: String| ApiError::invalid_param("structured_outputs", message);
    let Value::Object(outputs) = value else {
        return match value {
            Value::Null => Ok(None),
            _ => Err(invalid("structured_outputs must be an object".into())),
        };
    };
    let given: Vec<(&String, &Value)> = outputs.iter().filter(|(_, v)| !v.is_null()).collect();
    let [(kind, value)] = given.as_slice() else {
        return match given.len() {
            0 => Ok(None),
            _ => Err(invalid("structured_outputs takes one of json, regex, choice or grammar".into())),
        };
    };
    let text = |what: &str| match value {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        _ => Err(invalid(format!("structured_outputs.{kind} must be a non-empty string ({what})"))),
    };
    match kind.as_str() {
        // vLLM takes the schema as an object or as its JSON text.
        "json" => match value {
            Value::String(s) => {
                let schema: Value = serde_json::from_str(s).map_err(|e| invalid(format!("structured_outputs.json is not JSON: {e}")))?;
                json_schema(&schema, "structured_outputs", "structured_outputs.json").map(Some)
            }
            schema => json_schema(schema, "structured_outputs", "structured_outputs.json").map(Some),
        },
        "regex" => text("a regular expression").map(|r| Some(Grammar::Regex(r))),
        "grammar" => text("a grammar in Lark syntax").map(|g| Some(Grammar::Lark(g))),
        "choice" => match value {
            Value::Array(items) if !items.is_empty() => {
                let choices = items
                    .iter()
                    .map(|c| {
                        c.as_str()
                            .ok_or_else(|| invalid("structured_outputs.choice must list strings".into()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Some(Grammar::choice(&choices)))
            }
            _ => Err(invalid("structured_outputs.choice must be a non-empty list of strings".into())),
        },
        other => Err(ApiError::unsupported(
            "structured_outputs",
            format!("structured_outputs.{other} is not supported; use json, regex, choice or grammar"),
        )),
    }
}

/// A JSON Schema is an object (or `true`/`false`).
fn json_schema(schema: &Value, param: &'static str, path: &str) -> Result<Grammar, ApiError> {
    match schema {
        Value::Object(_) | Value::Bool(_) => Ok(json_grammar(schema.clone())),
        _ => Err(ApiError::invalid_param(param, format!("{path} must be a JSON Schema object"))),
    }
}

/// Most white space between two parts of a JSON answer: enough for a newline and nested
/// indentation, too little for the endless white space a small model can fall into (OpenAI
/// warns of it in JSON mode; llama.cpp bounds it likewise).
const JSON_WHITESPACE: &str = r"[\x20\x0A\x0D\x09]{1,20}";

/// A JSON answer under `schema`, its white space bounded ([`JSON_WHITESPACE`]) unless the
/// schema sets llguidance's own options (`x-guidance`).
fn json_grammar(schema: Value) -> Grammar {
    let mut schema = match schema {
        Value::Bool(true) => json!({}),
        other => other,
    };
    if let Value::Object(object) = &mut schema {
        if !object.contains_key("x-guidance") {
            object.insert("x-guidance".into(), json!({"whitespace_pattern": JSON_WHITESPACE}));
        }
    }
    Grammar::JsonSchema(schema)
}

/// The model can follow the grammar: llguidance compiles it against the vocabulary before
/// anything starts; an error names the field that gave it.
pub fn check_grammar(state: &AppState, requested: Option<&(Grammar, &'static str)>) -> Result<(), ApiError> {
    let Some((grammar, field)) = requested else {
        return Ok(());
    };
    state.engine().check_grammar(grammar).map_err(|e| match e {
        graft_engine::EngineError::InvalidRequest(message) => ApiError::invalid_param(field, message),
        other => ApiError::from(other),
    })
}
