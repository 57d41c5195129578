//! An Anthropic Messages request as the chat request graft's chat route runs: `system` and
//! the messages' content blocks as messages (`tool_use` blocks as an assistant's tool calls,
//! `tool_result` blocks as `tool` messages), tools with their `input_schema` as functions,
//! `tool_choice` and `stop_sequences` in chat's names; chat's errors renamed back.
//!
//! Blocks a text model cannot read (images, documents) and Anthropic's server tools (web
//! search, code execution, computer use) are refused with a clear error; `thinking` blocks and
//! settings, `cache_control` and `metadata` change nothing.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// The fields of `POST /v1/messages` (and `/v1/messages/count_tokens`) graft reads.
#[derive(Debug, Default, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    /// Required for messages; not for counting.
    pub max_tokens: Option<u32>,
    pub messages: Vec<Value>,
    /// A string or text blocks.
    pub system: Option<Value>,
    pub stop_sequences: Option<Vec<String>>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub stream: Option<bool>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    /// `{"format": {"type": "json_schema", "schema": ...}}`: structured output (`effort` is
    /// a reasoning model's, and changes nothing).
    pub output_config: Option<Value>,
    /// graft's extensions, as on chat.
    pub retrieval: Option<Value>,
    pub debug: Option<bool>,
}

/// The chat request's fields for `request`.
pub fn chat_fields(request: &MessagesRequest) -> Result<Map<String, Value>, ApiError> {
    let mut fields = Map::new();
    fields.insert("model".into(), json!(request.model));
    let messages = messages(request.system.as_ref(), &request.messages)?;
    // A last assistant message is the start of the answer (a prefill), which goes on from it.
    if crate::routes::chat::ends_in_prefill(&messages) {
        fields.insert("continue_final_message".into(), json!(true));
    }
    fields.insert("messages".into(), json!(messages));
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            fields.insert(key.into(), value);
        }
    };
    put("max_tokens", request.max_tokens.map(Value::from));
    put("temperature", request.temperature.map(Value::from));
    put("top_p", request.top_p.map(Value::from));
    put("top_k", request.top_k.map(Value::from));
    put("stop", request.stop_sequences.clone().map(Value::from));
    put("retrieval", request.retrieval.clone());
    put("debug", request.debug.map(Value::from));
    if let Some(tools) = &request.tools {
        put(
            "tools",
            Some(Value::Array(tools.iter().enumerate().map(tool).collect::<Result<_, _>>()?)),
        );
    }
    if let Some(format) = request
        .output_config
        .as_ref()
        .and_then(|c| c.get("format"))
        .filter(|f| !f.is_null())
    {
        if format.get("type").and_then(Value::as_str) != Some("json_schema") {
            return Err(ApiError::invalid_param(
                "output_config.format",
                "output_config.format.type must be json_schema",
            ));
        }
        let schema = format.get("schema").cloned().unwrap_or_else(|| json!({}));
        put(
            "response_format",
            Some(json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}})),
        );
    }
    if let Some(choice) = &request.tool_choice {
        let (choice, parallel) = tool_choice(choice)?;
        put("tool_choice", Some(choice));
        put("parallel_tool_calls", parallel.then_some(json!(false)));
    }
    Ok(fields)
}

/// The conversation: `system` as a system message, then each message's blocks.
fn messages(system: Option<&Value>, messages: &[Value]) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    if let Some(system) = system {
        let (text, _, _) = blocks(system, "system").map_err(|e| ApiError::invalid_param("system", e))?;
        if !text.is_empty() {
            out.push(json!({"role": "system", "content": text}));
        }
    }
    for (index, message) in messages.iter().enumerate() {
        let invalid = |message: String| ApiError::invalid_param("messages", format!("messages[{index}]: {message}"));
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(invalid(format!("role `{role}` is not one of user or assistant")));
        }
        let content = message.get("content").unwrap_or(&Value::Null);
        let (text, calls, results) = blocks(content, role).map_err(invalid)?;
        // Results answer the calls of the assistant turn before; the user's words follow.
        out.extend(results);
        match role {
            "assistant" if !calls.is_empty() => out.push(json!({"role": "assistant", "content": text, "tool_calls": calls})),
            _ if !text.is_empty() => out.push(json!({"role": role, "content": text})),
            _ => {}
        }
    }
    Ok(out)
}

/// A message's content (a string, or blocks) as its text (text blocks joined by newlines),
/// its tool calls (`tool_use`, an assistant's) and its tools' results as `tool` messages
/// (`tool_result`, a user's).
fn blocks(content: &Value, role: &str) -> Result<(String, Vec<Value>, Vec<Value>), String> {
    let list = match content {
        Value::String(text) => return Ok((text.clone(), Vec::new(), Vec::new())),
        Value::Array(list) => list,
        _ => return Err("content must be a string or a list of content blocks".into()),
    };
    let (mut texts, mut calls, mut results) = (Vec::new(), Vec::new(), Vec::new());
    for block in list {
        let kind = block.get("type").and_then(Value::as_str).unwrap_or_default();
        let field = |name: &str| block.get(name).and_then(Value::as_str);
        match kind {
            "text" => texts.push(field("text").unwrap_or_default().to_owned()),
            "tool_use" if role == "assistant" => {
                let (Some(id), Some(name)) = (field("id"), field("name")) else {
                    return Err("a tool_use block needs its `id` and `name`".into());
                };
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": input}}));
            }
            "tool_result" if role == "user" => {
                let Some(id) = field("tool_use_id") else {
                    return Err("a tool_result block needs the `tool_use_id` it answers".into());
                };
                let (mut output, _, _) = match block.get("content") {
                    None | Some(Value::Null) => (String::new(), Vec::new(), Vec::new()),
                    Some(content) => blocks(content, "tool_result")?,
                };
                if block.get("is_error") == Some(&Value::Bool(true)) {
                    output = format!("Error: {output}");
                }
                results.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
            }
            // A model's earlier thinking: nothing a served model reads back.
            "thinking" | "redacted_thinking" => {}
            "image" | "document" => return Err(format!("{kind} blocks are not supported (graft serves text models)")),
            "tool_use" | "tool_result" => {
                return Err(format!(
                    "{kind} blocks belong in {} messages",
                    if kind == "tool_use" { "assistant" } else { "user" }
                ))
            }
            other => return Err(format!("content blocks of type `{other}` are not supported")),
        }
    }
    Ok((texts.join("\n"), calls, results))
}

/// A tool (`name`, `description`, `input_schema`) as a chat function; Anthropic's server
/// tools (a `type` such as `web_search_20250305`) are refused.
fn tool((index, tool): (usize, &Value)) -> Result<Value, ApiError> {
    if let Some(kind) = tool.get("type").and_then(Value::as_str).filter(|k| *k != "custom") {
        return Err(ApiError::unsupported(
            "tools",
            format!("tools[{index}]: `{kind}` is one of Anthropic's server tools; graft runs tools you define (name, description, input_schema)"),
        ));
    }
    let mut function = Map::new();
    for (from, to) in [("name", "name"), ("description", "description"), ("input_schema", "parameters")] {
        if let Some(value) = tool.get(from).filter(|v| !v.is_null()) {
            function.insert(to.into(), value.clone());
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

/// `tool_choice` in chat's shape, and whether it turns parallel calls off
/// (`disable_parallel_tool_use`).
fn tool_choice(choice: &Value) -> Result<(Value, bool), ApiError> {
    let single = choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true));
    let mapped = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => match choice.get("name").and_then(Value::as_str) {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => {
                return Err(ApiError::invalid_param(
                    "tool_choice",
                    "a tool_choice of type `tool` needs its `name`",
                ))
            }
        },
        _ => {
            return Err(ApiError::invalid_param(
                "tool_choice",
                "tool_choice.type must be auto, any, tool or none",
            ))
        }
    };
    Ok((mapped, single))
}

/// An error of the chat route in the words of the request: `stop` is `stop_sequences`,
/// `response_format` is `output_config.format`.
pub fn anthropic_names(mut error: ApiError) -> ApiError {
    let renamed = match error.param {
        Some("stop") => Some(("stop", "stop_sequences")),
        Some("response_format") => Some(("response_format", "output_config.format")),
        _ => None,
    };
    if let Some((chat, anthropic)) = renamed {
        error.param = Some(anthropic);
        error.message = error.message.replace(chat, anthropic);
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
    fn blocks_become_the_conversation() {
        let f = fields(
            json!({"model": "m", "max_tokens": 9, "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "...", "signature": "x"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "Sunny"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such city", "is_error": true},
                    {"type": "text", "text": "And tomorrow?"}]},
            ],
            "stop_sequences": ["\n\n"], "top_k": 5,
            "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true}, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "output_config": {"effort": "low", "format": {"type": "json_schema", "schema": {"type": "object"}}}}),
        )
        .unwrap();
        assert_eq!(
            f["messages"],
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": "Let me look.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such city"},
                {"role": "user", "content": "And tomorrow?"},
            ])
        );
        assert_eq!(
            (&f["max_tokens"], &f["stop"], &f["top_k"]),
            (&json!(9), &json!(["\n\n"]), &json!(5))
        );
        assert_eq!(
            f["tools"],
            json!([{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object"}}}])
        );
        assert_eq!((&f["tool_choice"], &f["parallel_tool_calls"]), (&json!("required"), &json!(false)));
        assert_eq!(
            f["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}}})
        );
    }

    #[test]
    fn what_graft_cannot_do_is_a_400_naming_the_field() {
        let param = |request: Value| fields(request).unwrap_err().param;
        let user = |content: Value| json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": content}]});
        assert_eq!(
            param(user(
                json!([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x"}}])
            )),
            Some("messages")
        );
        assert_eq!(
            param(user(json!([{"type": "tool_use", "id": "t", "name": "f", "input": {}}]))),
            Some("messages")
        );
        assert_eq!(
            param(json!({"model": "m", "messages": [{"role": "system", "content": "x"}]})),
            Some("messages")
        );
        let mut tools = user(json!("hi"));
        tools["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
        assert_eq!(param(tools), Some("tools"));
        let mut choice = user(json!("hi"));
        choice["tool_choice"] = json!({"type": "sometimes"});
        assert_eq!(param(choice), Some("tool_choice"));
    }
}
