//! A Responses API request as the chat request graft's chat route runs: `instructions` and
//! `input` items as messages, function tools and `tool_choice` in chat's shapes, `text.format`
//! as `response_format`; chat's errors renamed to the fields the request used.
//!
//! graft keeps no responses: a request must carry its whole conversation (`previous_response_id`,
//! `conversation` and item references are refused with a clear error). Fields that only steer
//! OpenAI's hosted service (`store`, `reasoning`, `prompt_cache_key`, `truncation`,
//! `service_tier`, `user`, `safety_identifier`, and `include`'s entries other than
//! `message.output_text.logprobs`) are accepted and change nothing.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// The fields of `POST /v1/responses` graft reads.
#[derive(Debug, Default, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    /// A string (one user message) or a list of items.
    pub input: Option<Value>,
    /// A system message ahead of the input.
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", ...}}`.
    pub text: Option<Value>,
    pub stream: Option<bool>,
    pub metadata: Option<Value>,
    pub previous_response_id: Option<String>,
    pub conversation: Option<Value>,
    pub background: Option<bool>,
    /// What to add to the output: [`OUTPUT_LOGPROBS`] asks for the text's log-probabilities.
    pub include: Option<Vec<String>>,
    /// How many likeliest tokens to list at each place (0-20), with [`OUTPUT_LOGPROBS`].
    pub top_logprobs: Option<u32>,
    /// graft's extensions, as on chat.
    pub retrieval: Option<Value>,
    pub debug: Option<bool>,
}

/// The `include` entry that asks for each output token's log-probability.
pub const OUTPUT_LOGPROBS: &str = "message.output_text.logprobs";

/// The chat request's fields for `request`.
pub fn chat_fields(request: &ResponsesRequest) -> Result<Map<String, Value>, ApiError> {
    if request.previous_response_id.is_some() {
        return Err(ApiError::unsupported(
            "previous_response_id",
            "graft keeps no responses: send the whole conversation in `input`",
        ));
    }
    if request.conversation.is_some() {
        return Err(ApiError::unsupported(
            "conversation",
            "graft keeps no conversations: send the whole conversation in `input`",
        ));
    }
    if request.background == Some(true) {
        return Err(ApiError::unsupported(
            "background",
            "background responses are not supported: graft keeps no responses to fetch later",
        ));
    }
    let mut fields = Map::new();
    fields.insert("model".into(), json!(request.model));
    fields.insert(
        "messages".into(),
        json!(messages(request.instructions.as_deref(), request.input.as_ref())?),
    );
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            fields.insert(key.into(), value);
        }
    };
    put("max_tokens", request.max_output_tokens.map(Value::from));
    put("temperature", request.temperature.map(Value::from));
    put("top_p", request.top_p.map(Value::from));
    put("parallel_tool_calls", request.parallel_tool_calls.map(Value::from));
    put("retrieval", request.retrieval.clone());
    put("debug", request.debug.map(Value::from));
    // As OpenAI's: `top_logprobs` lists alternatives of the log-probabilities `include` asks for.
    if request.include.iter().flatten().any(|entry| entry == OUTPUT_LOGPROBS) {
        put("logprobs", Some(Value::Bool(true)));
        put("top_logprobs", request.top_logprobs.map(Value::from));
    }
    if let Some(tools) = &request.tools {
        put(
            "tools",
            Some(Value::Array(tools.iter().enumerate().map(tool).collect::<Result<_, _>>()?)),
        );
    }
    put("tool_choice", request.tool_choice.as_ref().map(tool_choice).transpose()?);
    put("response_format", request.text.as_ref().map(response_format).transpose()?.flatten());
    Ok(fields)
}

/// The conversation: `instructions` as a system message, then the input's items.
fn messages(instructions: Option<&str>, input: Option<&Value>) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    if let Some(instructions) = instructions.filter(|i| !i.is_empty()) {
        out.push(json!({"role": "system", "content": instructions}));
    }
    let items = match input {
        None | Some(Value::Null) => return Err(ApiError::invalid_param("input", "`input` is required")),
        Some(Value::String(text)) => {
            out.push(json!({"role": "user", "content": text}));
            return Ok(out);
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::invalid_param("input", "`input` must be a string or a list of items")),
    };
    for (index, item) in items.iter().enumerate() {
        let invalid = |message: String| ApiError::invalid_param("input", format!("input[{index}]: {message}"));
        let kind = match item.get("type").and_then(Value::as_str) {
            Some(kind) => kind,
            None if item.get("role").is_some() => "message",
            None => return Err(invalid("an item needs a `type` (or a `role` for a message)".into())),
        };
        match kind {
            "message" => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or_default();
                if !["user", "system", "developer", "assistant"].contains(&role) {
                    return Err(invalid(format!("role `{role}` is not one of user, system, developer or assistant")));
                }
                let content = content_text(item.get("content")).map_err(invalid)?;
                out.push(json!({"role": role, "content": content}));
            }
            "function_call" => {
                let field = |name: &str| item.get(name).and_then(Value::as_str);
                let (Some(call_id), Some(name)) = (field("call_id"), field("name")) else {
                    return Err(invalid("a function_call needs `call_id` and `name`".into()));
                };
                let call = json!({
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": field("arguments").unwrap_or("{}")},
                });
                // Calls in a row, and the assistant's words before them, are one assistant turn.
                match out.last_mut() {
                    Some(last) if last["role"] == "assistant" => match last["tool_calls"].as_array_mut() {
                        Some(calls) => calls.push(call),
                        None => last["tool_calls"] = json!([call]),
                    },
                    _ => out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let Some(call_id) = item.get("call_id").and_then(Value::as_str) else {
                    return Err(invalid("a function_call_output needs the `call_id` it answers".into()));
                };
                let output = content_text(item.get("output")).map_err(invalid)?;
                out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
            // A reasoning model's earlier thoughts: nothing a served model can read.
            "reasoning" => {}
            "item_reference" => return Err(invalid("graft keeps no items to refer to: send the item itself".into())),
            other => return Err(invalid(format!("items of type `{other}` are not supported"))),
        }
    }
    Ok(out)
}

/// A message's content (a string, or parts) as text: text parts joined by newlines.
fn content_text(content: Option<&Value>) -> Result<String, String> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(String::new()),
        Some(Value::String(text)) => return Ok(text.clone()),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err("content must be a string or a list of parts".into()),
    };
    let mut texts = Vec::with_capacity(parts.len());
    for part in parts {
        let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
        match (kind, part.get("text").and_then(Value::as_str)) {
            ("input_text" | "output_text" | "text", Some(text)) => texts.push(text),
            ("refusal", _) => texts.push(part.get("refusal").and_then(Value::as_str).unwrap_or_default()),
            ("input_image" | "input_file" | "input_audio", _) => {
                return Err(format!("content of type `{kind}` is not supported (graft serves text models)"))
            }
            _ => return Err(format!("content parts of type `{kind}` with a `text` are supported, not this one")),
        }
    }
    Ok(texts.join("\n"))
}

/// A Responses function tool (`{"type": "function", "name": ...}`) in chat's shape.
fn tool((index, tool): (usize, &Value)) -> Result<Value, ApiError> {
    let kind = tool.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind != "function" {
        return Err(ApiError::unsupported(
            "tools",
            format!("tools[{index}]: only function tools are supported, not `{kind}` (OpenAI's hosted tools run on OpenAI's servers)"),
        ));
    }
    let mut function = Map::new();
    for key in ["name", "description", "parameters"] {
        if let Some(value) = tool.get(key).filter(|v| !v.is_null()) {
            function.insert(key.into(), value.clone());
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

/// `tool_choice`: `none`, `auto`, `required`, or `{"type": "function", "name": ...}`.
fn tool_choice(choice: &Value) -> Result<Value, ApiError> {
    match choice {
        Value::String(_) => Ok(choice.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => match o.get("name") {
            Some(name) => Ok(json!({"type": "function", "function": {"name": name}})),
            None => Err(ApiError::invalid_param("tool_choice", "a function tool_choice needs its `name`")),
        },
        _ => Err(ApiError::unsupported(
            "tool_choice",
            "tool_choice must be none, auto, required or {\"type\": \"function\", \"name\": ...}",
        )),
    }
}

/// `text.format` as chat's `response_format` (`None` for plain text).
fn response_format(text: &Value) -> Result<Option<Value>, ApiError> {
    if !text.is_object() && !text.is_null() {
        return Err(ApiError::invalid_param(
            "text",
            "text must be an object: {\"format\": {\"type\": ...}}",
        ));
    }
    let Some(format) = text.get("format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for key in ["name", "schema", "description", "strict"] {
                if let Some(value) = format.get(key) {
                    schema.insert(key.into(), value.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        _ => Err(ApiError::invalid_param(
            "text.format",
            "text.format.type must be text, json_object or json_schema",
        )),
    }
}

/// An error of the chat route in the words of the request: `max_tokens` is
/// `max_output_tokens`, `messages` is `input`, `response_format` is `text.format`.
pub fn responses_names(mut error: ApiError) -> ApiError {
    if error.param == Some("logprobs") {
        error.param = Some("include");
        return error;
    }
    let renamed = match error.param {
        Some("max_tokens") => Some(("max_tokens", "max_output_tokens")),
        Some("messages") => Some(("messages", "input")),
        Some("response_format") => Some(("response_format", "text.format")),
        _ => None,
    };
    if let Some((chat, responses)) = renamed {
        error.param = Some(responses);
        error.message = error.message.replace(chat, responses);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(request: Value) -> Result<Map<String, Value>, ApiError> {
        chat_fields(&serde_json::from_value(request).unwrap())
    }

    #[test]
    fn input_items_become_the_conversation() {
        let f = fields(json!({"model": "m", "instructions": "Be brief.", "input": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking the time."}]},
            {"type": "function_call", "call_id": "call_3", "name": "get_time", "arguments": "{}"},
        ]}))
        .unwrap();
        assert_eq!(
            f["messages"],
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
                {"role": "assistant", "content": "It is sunny."},
                {"role": "developer", "content": "a\nb"},
                {"role": "assistant", "content": "Checking the time.", "tool_calls": [
                    {"id": "call_3", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
            ])
        );
        let f = fields(json!({"model": "m", "input": "hi", "max_output_tokens": 9, "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": true}},
            "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "f"}, "store": false, "reasoning": {"effort": "low"}, "include": []}))
        .unwrap();
        assert_eq!(f["messages"], json!([{"role": "user", "content": "hi"}]));
        assert_eq!(f["max_tokens"], 9);
        assert_eq!(
            f["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}})
        );
        assert_eq!(
            f["tools"],
            json!([{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}])
        );
        assert_eq!(f["tool_choice"], json!({"type": "function", "function": {"name": "f"}}));
        assert!(f.get("logprobs").is_none() && f.get("top_logprobs").is_none());
    }

    #[test]
    fn include_asks_for_the_texts_logprobs_and_top_logprobs_for_alternatives() {
        let f = fields(json!({"model": "m", "input": "hi", "include": [OUTPUT_LOGPROBS], "top_logprobs": 3})).unwrap();
        assert_eq!((&f["logprobs"], &f["top_logprobs"]), (&json!(true), &json!(3)));
        let f = fields(json!({"model": "m", "input": "hi", "include": ["reasoning.encrypted_content", OUTPUT_LOGPROBS]})).unwrap();
        assert_eq!(f["logprobs"], json!(true));
        assert!(f.get("top_logprobs").is_none());
        // Alternatives of log-probabilities nobody asked for: nothing, as OpenAI's.
        let f = fields(json!({"model": "m", "input": "hi", "top_logprobs": 3})).unwrap();
        assert!(f.get("logprobs").is_none() && f.get("top_logprobs").is_none());
        let e = responses_names(ApiError::unsupported("logprobs", "logprobs together with tools is not supported"));
        assert_eq!(e.param, Some("include"));
    }

    #[test]
    fn what_graft_cannot_do_is_a_400_naming_the_field() {
        let param = |request: Value| fields(request).unwrap_err().param;
        assert_eq!(param(json!({"model": "m"})), Some("input"));
        assert_eq!(param(json!({"model": "m", "input": 3})), Some("input"));
        assert_eq!(
            param(json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"})),
            Some("previous_response_id")
        );
        assert_eq!(param(json!({"model": "m", "input": "hi", "background": true})), Some("background"));
        assert_eq!(
            param(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]})),
            Some("input")
        );
        assert_eq!(
            param(json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]})),
            Some("input")
        );
        assert_eq!(
            param(json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]})),
            Some("tools")
        );
        assert_eq!(
            param(json!({"model": "m", "input": "hi", "text": {"format": {"type": "yaml"}}})),
            Some("text.format")
        );
        assert_eq!(param(json!({"model": "m", "input": "hi", "text": "json"})), Some("text"));
        assert_eq!(param(json!({"model": "m", "input": "hi", "text": [1]})), Some("text"));
        let e = responses_names(ApiError::invalid_param(
            "max_tokens",
            "max_tokens must be between 1 and 4096, got 0",
        ));
        assert_eq!(
            (e.param, e.message.as_str()),
            (Some("max_output_tokens"), "max_output_tokens must be between 1 and 4096, got 0")
        );
    }
}
