//! Ollama's request bodies as its clients send them, and their translation into the OpenAI
//! requests graft's chat and completion routes check and run: one meaning for every field,
//! whichever API a client speaks. Plain data and mapping; the handlers are in `ollama`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::openai::Stop;

/// `POST /api/chat`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Ollama streams unless told `false`.
    pub stream: Option<bool>,
    pub format: Option<Value>,
    pub options: Option<Options>,
    pub tools: Option<Value>,
    pub think: Option<Value>,
    pub keep_alive: Option<Value>,
    /// Each answer token's log-probability, with `top_logprobs` likeliest tokens at its place.
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    /// graft's extension, as on `/v1/chat/completions` (checked there).
    pub retrieval: Option<Value>,
}

/// `POST /api/generate`.
#[derive(Debug, Deserialize)]
pub struct GenerateRequest {
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    /// The text after the cursor: with it, the model fills in the middle.
    pub suffix: Option<String>,
    pub system: Option<String>,
    pub template: Option<String>,
    pub context: Option<Vec<i64>>,
    pub stream: Option<bool>,
    /// The prompt as it is, no chat template around it.
    pub raw: Option<bool>,
    pub format: Option<Value>,
    pub options: Option<Options>,
    #[serde(default)]
    pub images: Vec<Value>,
    pub think: Option<Value>,
    pub keep_alive: Option<Value>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    /// graft's extensions, as on `/v1/completions` (checked there).
    pub retrieval: Option<Value>,
    pub path: Option<String>,
}

/// One message of `/api/chat`.
#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub images: Vec<Value>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message: the tool whose result it is.
    pub tool_name: Option<String>,
}

/// A tool call in an earlier assistant turn: arguments as an object.
#[derive(Debug, Deserialize)]
pub struct ToolCall {
    pub function: ToolFunction,
}

#[derive(Debug, Deserialize)]
pub struct ToolFunction {
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
}

/// The sampling options graft takes under Ollama's names. The runner's settings (`num_ctx`,
/// `num_gpu`, `num_thread`, ...) are the server's configuration here and are ignored, as
/// Ollama ignores options it does not know.
#[derive(Debug, Default, Deserialize)]
pub struct Options {
    /// Most tokens to generate; 0, -1 or -2: as many as the server allows.
    pub num_predict: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub repeat_penalty: Option<f64>,
    pub repeat_last_n: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// Mirostat sampling, which graft does not do: refused unless 0.
    pub mirostat: Option<i64>,
}

/// What `/api/chat` and `/api/generate` share, as their requests gave it.
pub struct Common {
    /// graft's id of the model ([`model_id`]).
    pub model: String,
    pub options: Option<Options>,
    pub format: Option<Value>,
    pub retrieval: Option<Value>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
}

impl Common {
    /// The OpenAI request fields for them, for `/v1/chat/completions` (`chat`) or
    /// `/v1/completions`; `unlimited`: the most tokens an answer may have.
    pub fn fields(self, unlimited: u32, chat: bool) -> Result<Map<String, Value>, ApiError> {
        let mut fields = sampling(self.options, unlimited)?;
        put_logprob_fields(&mut fields, self.logprobs, self.top_logprobs, chat)?;
        fields.insert("model".into(), json!(self.model));
        if let Some(format) = response_format(self.format)? {
            fields.insert("response_format".into(), format);
        }
        if let Some(retrieval) = self.retrieval {
            fields.insert("retrieval".into(), retrieval);
        }
        Ok(fields)
    }
}

/// Ollama's `logprobs` and `top_logprobs` as the fields of the OpenAI request (`chat`'s
/// `logprobs: true` and `top_logprobs`, or a completion's `logprobs`, a number); with
/// `logprobs` unset or false, `top_logprobs` asks for nothing, as in Ollama.
fn put_logprob_fields(fields: &mut Map<String, Value>, logprobs: Option<bool>, top: Option<u32>, chat: bool) -> Result<(), ApiError> {
    if top.is_some_and(|top| top > 20) {
        return Err(ApiError::invalid_param("top_logprobs", "top_logprobs must be between 0 and 20"));
    }
    if logprobs != Some(true) {
        return Ok(());
    }
    let top = top.unwrap_or(0);
    if chat {
        fields.insert("logprobs".into(), json!(true));
        fields.insert("top_logprobs".into(), json!(top));
    } else {
        fields.insert("logprobs".into(), json!(top));
    }
    Ok(())
}

/// An Ollama model name as graft's id: `name:latest` is `name`.
pub fn model_id(name: &str) -> &str {
    name.strip_suffix(":latest").unwrap_or(name)
}

/// The OpenAI request fields for `options`: `max_tokens` from `num_predict` (0 or a negative
/// one, as Ollama's runner reads them, or none, is `unlimited`: the most the server allows for
/// an answer), the rest under the
/// names graft's routes read.
fn sampling(options: Option<Options>, unlimited: u32) -> Result<Map<String, Value>, ApiError> {
    let options = options.unwrap_or_default();
    if options.mirostat.is_some_and(|m| m != 0) {
        return Err(ApiError::unsupported(
            "mirostat",
            "mirostat sampling is not supported; use temperature, top_k, top_p or min_p",
        ));
    }
    let mut fields = Map::new();
    let max_tokens = match options.num_predict {
        Some(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
        _ => unlimited,
    };
    fields.insert("max_tokens".into(), json!(max_tokens));
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            fields.insert(key.into(), value);
        }
    };
    put("temperature", options.temperature.map(Value::from));
    put("top_p", options.top_p.map(Value::from));
    put("top_k", options.top_k.map(Value::from));
    put("min_p", options.min_p.map(Value::from));
    put("seed", options.seed.map(Value::from));
    put("stop", options.stop.map(|s| json!(s.into_vec())));
    put("repeat_penalty", options.repeat_penalty.map(Value::from));
    put("repeat_last_n", options.repeat_last_n.map(Value::from));
    put("presence_penalty", options.presence_penalty.map(Value::from));
    put("frequency_penalty", options.frequency_penalty.map(Value::from));
    Ok(fields)
}

/// OpenAI's `response_format` for Ollama's `format`: `"json"` (any JSON object) or a JSON
/// Schema; `None` for none.
fn response_format(format: Option<Value>) -> Result<Option<Value>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(json!({"type": "json_object"}))),
        Some(schema @ Value::Object(_)) => Ok(Some(json!({
            "type": "json_schema",
            "json_schema": {"name": "format", "schema": schema},
        }))),
        Some(other) => Err(ApiError::invalid_param(
            "format",
            format!("format must be \"json\" or a JSON Schema object, got {other}"),
        )),
    }
}

/// Ollama's `think` asks a thinking model to think apart from its answer; graft's answers have
/// no separate thinking, so only its "off" values are taken.
pub fn check_think(think: Option<&Value>) -> Result<(), ApiError> {
    match think {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
        Some(_) => Err(ApiError::unsupported(
            "think",
            "think is not supported: graft does not separate a model's thinking from its answer",
        )),
    }
}

/// The conversation in OpenAI's shape. Ollama's tool calls carry no ids and its tool results
/// name the tool, not the call: each call gets an id, and each result answers the first call
/// of its turn not yet answered (of that name, when it names one).
pub fn messages(messages: Vec<Message>) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(messages.len());
    // The last assistant turn's calls not answered yet: (id, function name).
    let mut open: Vec<(String, String)> = Vec::new();
    for (index, message) in messages.into_iter().enumerate() {
        if !message.images.is_empty() {
            return Err(ApiError::invalid_param(
                "messages",
                format!("messages[{index}].images: images are not supported (graft serves text models)"),
            ));
        }
        match message.role.as_str() {
            "tool" => {
                let at = match &message.tool_name {
                    Some(name) => open.iter().position(|(_, called)| called == name),
                    None => (!open.is_empty()).then_some(0),
                };
                let (id, name) = match at {
                    Some(at) => open.remove(at),
                    None => (format!("call_{index}"), message.tool_name.clone().unwrap_or_default()),
                };
                let mut result = json!({"role": "tool", "tool_call_id": id, "content": message.content});
                if !name.is_empty() {
                    result["name"] = json!(name);
                }
                out.push(result);
            }
            role => {
                open.clear();
                let mut mapped = json!({"role": role, "content": message.content});
                if !message.tool_calls.is_empty() {
                    let calls: Vec<Value> = message
                        .tool_calls
                        .into_iter()
                        .enumerate()
                        .map(|(i, call)| {
                            let id = format!("call_{index}_{i}");
                            open.push((id.clone(), call.function.name.clone()));
                            json!({
                                "id": id,
                                "type": "function",
                                "function": {"name": call.function.name, "arguments": call.function.arguments.to_string()},
                            })
                        })
                        .collect();
                    mapped["tool_calls"] = json!(calls);
                }
                out.push(mapped);
            }
        }
    }
    Ok(out)
}

/// An OpenAI request body (`fields`) as the route's request type; a field that does not fit
/// is a 400 naming it.
pub fn openai_request<T: serde::de::DeserializeOwned>(fields: Map<String, Value>) -> Result<T, ApiError> {
    crate::json::parse(Value::Object(fields).to_string().as_bytes())
}

/// An error of the OpenAI routes in Ollama's words: `max_tokens` is `num_predict`.
pub fn ollama_names(mut error: ApiError) -> ApiError {
    if error.param == Some("max_tokens") {
        error.param = Some("num_predict");
        error.message = error.message.replace("max_tokens", "num_predict");
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_messages(body: Value) -> Vec<Value> {
        let given: Vec<Message> = serde_json::from_value(body).unwrap();
        messages(given).unwrap()
    }

    #[test]
    fn logprobs_become_chats_or_a_completions_fields() {
        let put = |logprobs, top, chat| {
            let mut fields = Map::new();
            put_logprob_fields(&mut fields, logprobs, top, chat).map(|()| Value::Object(fields))
        };
        assert_eq!(
            put(Some(true), Some(3), true).unwrap(),
            json!({"logprobs": true, "top_logprobs": 3})
        );
        assert_eq!(put(Some(true), None, true).unwrap(), json!({"logprobs": true, "top_logprobs": 0}));
        assert_eq!(put(Some(true), Some(2), false).unwrap(), json!({"logprobs": 2}));
        assert_eq!(put(Some(false), Some(2), true).unwrap(), json!({}));
        assert_eq!(put(None, Some(2), false).unwrap(), json!({}));
        assert_eq!(put(Some(true), Some(21), true).unwrap_err().param, Some("top_logprobs"));
    }

    #[test]
    fn tool_results_answer_their_calls_by_name_or_in_order() {
        let out = parse_messages(json!([
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "time", "arguments": {}}},
                {"function": {"name": "weather", "arguments": {"city": "Rome"}}},
            ]},
            {"role": "tool", "content": "12:00", "tool_name": "time"},
            {"role": "tool", "content": "18C"},
            {"role": "tool", "content": "21C", "tool_name": "weather"},
        ]));
        let calls = out[1]["tool_calls"].as_array().unwrap();
        assert_eq!(calls[0]["function"]["arguments"], r#"{"city":"Paris"}"#, "arguments as JSON text");
        let ids: Vec<&str> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(out[2]["tool_call_id"], ids[1], "by name");
        assert_eq!(out[3]["tool_call_id"], ids[0], "in order");
        assert_eq!(out[4]["tool_call_id"], ids[2], "by name, the one left");
        assert_eq!(out[4]["name"], "weather");
        // A result with no call to answer keeps its name and gets an id of its own.
        let out = parse_messages(json!([{"role": "tool", "content": "x", "tool_name": "f"}]));
        assert_eq!((&out[0]["tool_call_id"], &out[0]["name"]), (&json!("call_0"), &json!("f")));
    }

    #[test]
    fn options_map_to_openai_fields_and_num_predict_is_bounded() {
        let options: Options = serde_json::from_value(json!({
            "num_predict": -1, "temperature": 0.2, "top_k": 40, "stop": ["\n\n"], "repeat_penalty": 1.1,
            "num_ctx": 8192, "num_thread": 4,
        }))
        .unwrap();
        let fields = sampling(Some(options), 4096).unwrap();
        assert_eq!(fields["max_tokens"], 4096, "unlimited is the server's most");
        assert_eq!(fields["top_k"], 40);
        assert_eq!(fields["stop"], json!(["\n\n"]));
        assert_eq!(fields["repeat_penalty"], 1.1);
        assert!(!fields.contains_key("num_ctx"), "runner settings are the server's");
        let fields = sampling(Some(serde_json::from_value(json!({"num_predict": 12})).unwrap()), 4096).unwrap();
        assert_eq!(fields["max_tokens"], 12);
        let fields = sampling(Some(serde_json::from_value(json!({"num_predict": 0})).unwrap()), 4096).unwrap();
        assert_eq!(fields["max_tokens"], 4096, "0 is no limit, as Ollama's runner reads it");
        let mirostat = serde_json::from_value(json!({"mirostat": 2})).unwrap();
        assert_eq!(sampling(Some(mirostat), 4096).unwrap_err().param, Some("mirostat"));
    }

    #[test]
    fn format_is_json_mode_or_a_schema() {
        assert_eq!(response_format(Some(json!("json"))).unwrap(), Some(json!({"type": "json_object"})));
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            response_format(Some(schema.clone())).unwrap().unwrap()["json_schema"]["schema"],
            schema
        );
        assert_eq!(response_format(Some(json!(""))).unwrap(), None);
        assert!(response_format(Some(json!("yaml"))).is_err());
        assert!(check_think(Some(&json!(true))).is_err());
        assert!(check_think(Some(&json!(false))).is_ok());
    }

    #[test]
    fn ollama_names_replace_openai_names() {
        assert_eq!(model_id("qwen:latest"), "qwen");
        assert_eq!(model_id("qwen:7b"), "qwen:7b");
        let e = ollama_names(ApiError::invalid_param(
            "max_tokens",
            "max_tokens must be between 1 and 4096, got 0",
        ));
        assert_eq!(
            (e.param, e.message.as_str()),
            (Some("num_predict"), "num_predict must be between 1 and 4096, got 0")
        );
    }
}
