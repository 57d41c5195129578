//! Tool calling on chat: OpenAI's `tools`, `tool_choice` and `parallel_tool_calls`, for any
//! model.
//!
//! The tools are described to the model in the system message, with the one shape its reply
//! may take, and a grammar holds the reply to that shape token by token (`graft_engine::grammar`):
//! `{"tool_calls": [{"name": ..., "arguments": {...}}]}`, each call's arguments valid under its
//! tool's JSON Schema, or, where the model may answer in words (`tool_choice: "auto"`),
//! `{"response": "..."}`. The reply is then read back into OpenAI's answer: `tool_calls` with
//! `finish_reason: "tool_calls"`, or the response as the content. Earlier turns go into the
//! prompt in the same shapes: an assistant's calls as the JSON it would have written, the
//! tools' results as a user message (`{"tool_results": [...]}`), so any chat template renders
//! them. This is llama.cpp's "generic" tool format; a model's own format (Qwen's
//! `<tool_call>`, Llama's `<|python_tag|>`) is not used.
//!
//! Streamed, the words of a `response` reply go out as the model writes them (decoded from the
//! JSON string); calls go out in one event once the reply is complete. A whole answer is those
//! same pieces gathered. The request's stop strings are matched here, on the words, and end
//! the generation; never inside the JSON, so they cannot cut a call.
//!
//! This module owns the request's tool fields, the prompt's description, the grammar and the
//! reading of replies; it must not know how the engine enforces a grammar.

use std::collections::{HashMap, VecDeque};

use graft_engine::{ChatMessage, Grammar, Role, Sampling, StopCause, StopText, StreamEvent, Usage};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::generation::Generation;
use crate::openai::{AssistantMessage, FunctionCall, ToolCall, ToolCallIn};
use crate::routes::sse::{self, Piece, Pieces};

/// Most tools one request may list.
const MAX_TOOLS: usize = 128;

/// The tools a request lets the model call, and how it must use them.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    specs: Vec<Spec>,
    choice: Choice,
    /// Several calls in one reply (`parallel_tool_calls`, true unless it says false).
    parallel: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Spec {
    name: String,
    description: Option<String>,
    /// The JSON Schema of its arguments.
    parameters: Value,
}

#[derive(Debug, Clone, PartialEq)]
enum Choice {
    /// A call or an answer in words, as the model chooses.
    Auto,
    /// At least one call.
    Required,
    /// A call of this tool.
    Named(String),
}

/// The tools of a request; `None` when it has none, or `tool_choice: "none"` (the model then
/// answers in words and the tools are not described).
pub fn read(tools: Option<Value>, tool_choice: Option<Value>, parallel: Option<bool>) -> Result<Option<Tools>, ApiError> {
    let invalid = |message: String| ApiError::invalid_param("tools", message);
    let list = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(invalid(
                "tools must be a list of {\"type\": \"function\", \"function\": {...}}".into(),
            ))
        }
    };
    if list.len() > MAX_TOOLS {
        return Err(invalid(format!("tools may list up to {MAX_TOOLS} functions, got {}", list.len())));
    }
    let specs = list
        .into_iter()
        .enumerate()
        .map(|(i, tool)| spec(i, tool))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(name) = duplicate(&specs) {
        return Err(invalid(format!("tools lists the function `{name}` twice")));
    }
    let invalid_choice = |message: String| ApiError::invalid_param("tool_choice", message);
    let choice = match tool_choice {
        None | Some(Value::Null) => Some(Choice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "none" => None,
            "auto" => Some(Choice::Auto),
            "required" => Some(Choice::Required),
            other => {
                return Err(invalid_choice(format!(
                "tool_choice `{other}` is not one of none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
            )))
            }
        },
        Some(Value::Object(o)) => match o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) if specs.iter().any(|s| s.name == name) => Some(Choice::Named(name.to_owned())),
            Some(name) => return Err(invalid_choice(format!("tool_choice names `{name}`, which tools does not list"))),
            None => {
                return Err(invalid_choice(
                    "tool_choice must name a function: {\"type\": \"function\", \"function\": {\"name\": ...}}".into(),
                ))
            }
        },
        Some(_) => return Err(invalid_choice("tool_choice must be a string or an object".into())),
    };
    match (specs.is_empty(), choice) {
        (_, None) | (true, Some(Choice::Auto)) => Ok(None),
        (true, Some(_)) => Err(invalid_choice("tool_choice needs tools to choose from".into())),
        (false, Some(choice)) => Ok(Some(Tools {
            specs,
            choice,
            parallel: parallel.unwrap_or(true),
        })),
    }
}

/// One entry of `tools`, checked.
fn spec(index: usize, tool: Value) -> Result<Spec, ApiError> {
    let invalid = |message: String| ApiError::invalid_param("tools", format!("tools[{index}]: {message}"));
    if tool.get("type").and_then(Value::as_str).is_some_and(|t| t != "function") {
        return Err(invalid("only tools of type `function` are supported".into()));
    }
    let Some(function) = tool.get("function").and_then(Value::as_object) else {
        return Err(invalid("needs a `function` object".into()));
    };
    let name = function.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(invalid(format!(
            "the function's name must be 1 to 64 letters, digits, `_` or `-`, got `{name}`"
        )));
    }
    let parameters = match function.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object"}),
        Some(Value::Object(schema)) => {
            let mut schema = schema.clone();
            // A call passes the arguments the function lists (OpenAI's `strict` does the same):
            // an argument the schema does not name is left out unless it says otherwise.
            if schema.contains_key("properties") && !schema.contains_key("additionalProperties") {
                schema.insert("additionalProperties".into(), json!(false));
            }
            Value::Object(schema)
        }
        Some(_) => return Err(invalid("`parameters` must be a JSON Schema object".into())),
    };
    Ok(Spec {
        name: name.to_owned(),
        description: function.get("description").and_then(Value::as_str).map(str::to_owned),
        parameters,
    })
}

fn duplicate(specs: &[Spec]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    specs.iter().map(|s| s.name.as_str()).find(|name| !seen.insert(*name))
}

impl Tools {
    /// The grammar every reply follows.
    pub fn grammar(&self) -> Grammar {
        let call = |spec: &Spec| {
            json!({
                "type": "object",
                "properties": {"name": {"const": spec.name}, "arguments": spec.parameters},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        };
        let callable: Vec<Value> = match &self.choice {
            Choice::Named(name) => self.specs.iter().filter(|s| &s.name == name).map(call).collect(),
            Choice::Auto | Choice::Required => self.specs.iter().map(call).collect(),
        };
        let mut list = json!({"type": "array", "items": {"anyOf": callable}, "minItems": 1});
        if !self.parallel {
            list["maxItems"] = json!(1);
        }
        let calls = json!({
            "type": "object",
            "properties": {"tool_calls": list},
            "required": ["tool_calls"],
            "additionalProperties": false,
        });
        let mut reply = match self.choice {
            Choice::Auto => json!({"anyOf": [calls, {
                "type": "object",
                "properties": {"response": {"type": "string"}},
                "required": ["response"],
                "additionalProperties": false,
            }]}),
            Choice::Required | Choice::Named(_) => calls,
        };
        // One line, spaced as the description's examples are: the reply spends no tokens on
        // indentation, and a small model cannot wander off into white space.
        reply["x-guidance"] = json!({"whitespace_flexible": false, "item_separator": ITEM_SEPARATOR, "key_separator": KEY_SEPARATOR});
        Grammar::JsonSchema(reply)
    }

    /// Tells the model about the tools and the reply's shape: at the end of the conversation's
    /// system message, or in a new one before the first message.
    pub fn describe(&self, messages: &mut Vec<ChatMessage>) {
        let mut text = String::from("You can call these functions. Each one, with the JSON Schema of its arguments:\n");
        for spec in &self.specs {
            let mut entry = json!({"name": spec.name});
            if let Some(description) = &spec.description {
                entry["description"] = json!(description);
            }
            entry["parameters"] = spec.parameters.clone();
            text.push_str(&entry.to_string());
            text.push('\n');
        }
        let calls = if self.parallel { "one or more functions" } else { "a function" };
        let call_shape = r#"{"tool_calls": [{"name": "<function name>", "arguments": {<its arguments>}}]}"#;
        match &self.choice {
            Choice::Auto => text.push_str(&format!(
                "\nReply with one JSON object only: {{\"response\": \"<your answer>\"}} to answer, or {call_shape} to call {calls} when the answer needs them."
            )),
            Choice::Required => text.push_str(&format!("\nReply with one JSON object only, to call {calls}: {call_shape}")),
            Choice::Named(name) => text.push_str(&format!(
                "\nReply with one JSON object only, to call `{name}`: {{\"tool_calls\": [{{\"name\": \"{name}\", \"arguments\": {{<its arguments>}}}}]}}"
            )),
        }
        text.push_str("\nThe functions' results come back as {\"tool_results\": [...]}.");
        match messages.first_mut() {
            Some(first) if first.role == Role::System => {
                first.content = format!("{}\n\n{text}", first.content.trim_end());
            }
            _ => messages.insert(0, ChatMessage::new(Role::System, text)),
        }
    }
}

/// The calls (each function's name and arguments) of a complete `{"tool_calls": [...]}` reply;
/// `None` for any other text (a `response` reply, or a reply cut by `max_tokens`).
fn read_calls(text: &str) -> Option<Vec<(String, Value)>> {
    let value: Value = serde_json::from_str(text.trim()).ok()?;
    let calls = value.get("tool_calls")?.as_array()?;
    calls
        .iter()
        .map(|call| Some((call.get("name")?.as_str()?.to_owned(), call.get("arguments")?.clone())))
        .collect()
}

/// An earlier assistant turn's calls as the model would have written them (spaced as the
/// grammar has it write them, so a call the model made comes back as its own text and tokens,
/// which the prompt cache still holds), and the text the turn said with them, if any, after
/// them as its `response` (a shape the grammar does not let a reply take, so the model reads
/// it but cannot start a reply of its own that way and lose its calls).
pub fn calls_text(calls: &[ToolCallIn], text: &str) -> String {
    let calls: Vec<Value> = calls
        .iter()
        .map(|call| json!({"name": call.function.name, "arguments": arguments_value(call.function.arguments.as_ref())}))
        .collect();
    let calls = spaced(&Value::Array(calls));
    // Written out, as the order of an object's keys depends on serde_json's features.
    match text.trim().is_empty() {
        true => format!("{{\"tool_calls\": {calls}}}"),
        false => format!("{{\"tool_calls\": {calls}, \"response\": {}}}", json!(text)),
    }
}

/// What the reply's grammar has the model write between an array's items or an object's
/// entries (`x-guidance` in [`Tools::grammar`]); [`spaced`] writes the same.
const ITEM_SEPARATOR: &str = ", ";
/// What the grammar has the model write after an object's key; [`spaced`] writes the same.
const KEY_SEPARATOR: &str = ": ";

/// JSON on one line with the separators the reply's grammar holds the model to.
fn spaced(value: &Value) -> String {
    struct Spaced;
    impl serde_json::ser::Formatter for Spaced {
        fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
            if first {
                Ok(())
            } else {
                writer.write_all(ITEM_SEPARATOR.as_bytes())
            }
        }
        fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
            self.begin_array_value(writer, first)
        }
        fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
            writer.write_all(KEY_SEPARATOR.as_bytes())
        }
    }
    let mut out = Vec::new();
    match serde::Serialize::serialize(value, &mut serde_json::Serializer::with_formatter(&mut out, Spaced)) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        // Writing into memory does not fail; the compact form if it ever did.
        Err(_) => value.to_string(),
    }
}

/// OpenAI's arguments are JSON text; the prompt shows them as the object they spell.
fn arguments_value(arguments: Option<&Value>) -> Value {
    match arguments {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(text)) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
        Some(other) => other.clone(),
    }
}

/// The results of tool calls (consecutive `tool` messages) as one user message.
#[derive(Debug, Default)]
pub struct Results {
    /// Each earlier call's id and the function it called, to name a result by.
    called: HashMap<String, String>,
    pending: Vec<Value>,
}

impl Results {
    /// Remembers the functions an assistant turn called.
    pub fn called(&mut self, calls: &[ToolCallIn]) {
        for call in calls {
            if let Some(id) = &call.id {
                self.called.insert(id.clone(), call.function.name.clone());
            }
        }
    }

    /// A `tool` message at `index`: its result waits for the next message that is not one.
    pub fn push(&mut self, index: usize, call_id: Option<String>, name: Option<String>, content: String) -> Result<(), ApiError> {
        let Some(id) = call_id else {
            return Err(ApiError::invalid_param(
                "messages",
                format!("messages[{index}]: a tool message needs the `tool_call_id` of the call it answers"),
            ));
        };
        let name = name.or_else(|| self.called.get(&id).cloned());
        let mut result = json!({"tool_call_id": id});
        if let Some(name) = name {
            result["name"] = json!(name);
        }
        result["content"] = json!(content);
        self.pending.push(result);
        Ok(())
    }

    /// The results that wait, as one user message.
    pub fn take(&mut self) -> Option<ChatMessage> {
        if self.pending.is_empty() {
            return None;
        }
        let results = std::mem::take(&mut self.pending);
        Some(ChatMessage::new(Role::User, spaced(&json!({ "tool_results": results }))))
    }
}

/// How each choice's reply is read: the request's stop strings, matched on the words of a
/// `response` reply, never inside the reply's JSON (a stop string cannot cut a call, nor the
/// `{"response": "` that opens the words). They are taken out of the engine's sampling, which
/// would match them on the raw reply.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    stops: Vec<String>,
    include_stop: bool,
}

impl Reading {
    /// Takes the stop strings out of `sampling` (its stop tokens stay: they are matched on
    /// the chosen tokens, which a caller names on purpose).
    pub fn take_stops(sampling: &mut Sampling) -> Reading {
        Reading {
            stops: std::mem::take(&mut sampling.stop),
            include_stop: sampling.include_stop,
        }
    }
}

/// A choice's whole answer: its message (its calls, its words, or, cut short in a call, its
/// text as it is), finish reason, the request's stop that ended it, and its usage, gathered
/// from its [`pieces`] as the stream sends them.
pub async fn answer(pieces: Pieces) -> Result<(AssistantMessage, &'static str, Option<StopCause>, Usage), ApiError> {
    let gathered = sse::gather(pieces).await?;
    let message = AssistantMessage {
        role: "assistant",
        content: gathered.calls.is_empty().then_some(gathered.text),
        tool_calls: (!gathered.calls.is_empty()).then_some(gathered.calls),
    };
    Ok((message, gathered.end.finish_reason, gathered.end.stopped_by, gathered.end.usage))
}

/// A choice's stream with tools: the words of a `{"response": ...}` reply as the model writes
/// them (up to a stop string, which ends the generation there), or the calls once the reply is
/// complete.
pub fn pieces(generation: Generation, reading: &Reading) -> Pieces {
    use futures::StreamExt;
    let state = (generation, Reader::new(reading), VecDeque::new());
    futures::stream::unfold(state, |(mut generation, mut reader, mut ready)| async move {
        loop {
            if let Some(piece) = ready.pop_front() {
                return Some((Ok(piece), (generation, reader, ready)));
            }
            let event = match generation.next().await? {
                Err(e) => return Some((Err(e), (generation, reader, ready))),
                Ok(event) => event,
            };
            let (text, end) = match event {
                StreamEvent::Text { text, .. } => {
                    let (words, stop) = reader.push(&text);
                    // A stop string in the words: the answer ends before it, here.
                    (words, stop.map(|stop| generation.stop(StopCause::Text(stop))))
                }
                end => (String::new(), Some(end)),
            };
            if !text.is_empty() {
                ready.push_back(Piece::Text(text, None));
            }
            if let Some(StreamEvent::End {
                finish_reason,
                stopped_by,
                usage,
            }) = end
            {
                let end = sse::End {
                    finish_reason: finish_reason.as_str(),
                    stopped_by,
                    usage,
                    first_token: generation.first_token(),
                };
                ready.extend(reader.finish(end));
            }
        }
    })
    .boxed()
}

/// Reads a reply as it is generated.
#[derive(Debug, Default)]
struct Reader {
    /// The reply's text so far.
    raw: String,
    state: State,
    /// The request's stop strings, matched on the words.
    stops: Option<StopText>,
}

#[derive(Debug, Default, PartialEq)]
enum State {
    /// The reply's key is not written yet.
    #[default]
    Undecided,
    /// `{"response": "`: the words from byte `at` of the text on are still to decode; `over`
    /// once the string has closed or a stop string has ended them.
    Words { at: usize, over: bool },
    /// `{"tool_calls"`: read when the reply is complete.
    Calls,
}

/// What a reply turned out to be once it ended.
enum Ending {
    /// Words, and the last of them a stop string's start held back.
    Words(String),
    Calls(Vec<ToolCall>),
    /// Neither, cut before its shape was clear or inside a call: its text is the answer.
    Unread,
}

impl Reader {
    fn new(reading: &Reading) -> Reader {
        Reader {
            stops: StopText::new(&reading.stops, reading.include_stop),
            ..Reader::default()
        }
    }

    /// Adds generated text; returns the words of a response it completes (decoded from the
    /// JSON string), empty when none, and the stop string that ended them if one did.
    fn push(&mut self, text: &str) -> (String, Option<String>) {
        self.raw.push_str(text);
        if self.state == State::Undecided {
            self.state = decide(&self.raw);
        }
        let State::Words { at, over } = &mut self.state else {
            return (String::new(), None);
        };
        if *over {
            return (String::new(), None);
        }
        let (words, used, closed) = decode_string(&self.raw[*at..]);
        *at += used;
        *over = closed;
        let Some(stops) = &mut self.stops else {
            return (words, None);
        };
        let (mut words, stop) = stops.push(&words);
        if stop.is_some() {
            *over = true;
        } else if closed {
            words.push_str(&stops.flush());
        }
        (words, stop)
    }

    /// The pieces that end the reply, given the generation's `end`: the calls, the words a
    /// stop string's start held back, or the unread text; then the end (a reply of calls ends
    /// with `tool_calls`).
    fn finish(&mut self, mut end: sse::End) -> Vec<Piece> {
        let mut pieces = Vec::new();
        match self.end() {
            Ending::Words(rest) if rest.is_empty() => {}
            Ending::Words(rest) => pieces.push(Piece::Text(rest, None)),
            Ending::Calls(calls) => {
                pieces.push(Piece::Calls(calls));
                (end.finish_reason, end.stopped_by) = ("tool_calls", None);
            }
            Ending::Unread => pieces.push(Piece::Text(std::mem::take(&mut self.raw), None)),
        }
        pieces.push(Piece::End(end));
        pieces
    }

    /// How the reply ended.
    fn end(&mut self) -> Ending {
        match self.state {
            State::Words { .. } => Ending::Words(self.stops.as_mut().map(StopText::flush).unwrap_or_default()),
            State::Undecided | State::Calls => match read_calls(&self.raw) {
                Some(calls) => Ending::Calls(
                    calls
                        .into_iter()
                        .map(|(name, arguments)| ToolCall {
                            index: None,
                            id: format!("call_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]),
                            kind: "function",
                            function: FunctionCall {
                                name,
                                arguments: arguments.to_string(),
                            },
                        })
                        .collect(),
                ),
                None => Ending::Unread,
            },
        }
    }
}

/// Which shape a reply's beginning shows: `{`, then the key of `response` or of `tool_calls`
/// (with the white space JSON allows).
fn decide(raw: &str) -> State {
    let Some(rest) = raw.trim_start().strip_prefix('{').map(str::trim_start) else {
        return State::Undecided;
    };
    if rest.starts_with("\"tool_calls\"") {
        return State::Calls;
    }
    let value = rest
        .strip_prefix("\"response\"")
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix(':'))
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix('"'));
    match value {
        Some(words) => State::Words {
            at: raw.len() - words.len(),
            over: false,
        },
        None => State::Undecided,
    }
}

/// The characters of a JSON string's body at the start of `text`, as far as they are
/// complete: the decoded text, the bytes read, and whether the closing quote was among them.
fn decode_string(text: &str) -> (String, usize, bool) {
    let mut out = String::new();
    let mut used = 0;
    let mut rest = text;
    loop {
        let Some(c) = rest.chars().next() else {
            return (out, used, false);
        };
        let (decoded, len) = match c {
            '"' => return (out, used + 1, true),
            '\\' => match escape(rest) {
                Some(escaped) => escaped,
                // Its escape is not all written yet.
                None => return (out, used, false),
            },
            c => (c, c.len_utf8()),
        };
        out.push(decoded);
        used += len;
        rest = &rest[len..];
    }
}

/// The character an escape at the start of `text` stands for, and its length; `None` until
/// it is complete. A lone surrogate becomes U+FFFD.
fn escape(text: &str) -> Option<(char, usize)> {
    // Four hex digits at `at`: `None` while they are not all written, U+FFFD's code when
    // they are not hex (the grammar does not allow that; the reading must not stall on it).
    let hex = |at: usize| {
        let digits = text.as_bytes().get(at..at + 4)?;
        let code = std::str::from_utf8(digits).ok().and_then(|h| u32::from_str_radix(h, 16).ok());
        Some(code.unwrap_or(0xFFFD))
    };
    let simple = match text.as_bytes().get(1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let unit = hex(2)?;
            if (0xD800..0xDC00).contains(&unit) {
                // A high surrogate: with the low one after it, one character.
                if text.as_bytes().get(6..8)? != b"\\u" {
                    return Some(('\u{FFFD}', 6));
                }
                return Some(match hex(8)? {
                    low @ 0xDC00..=0xDFFF => {
                        let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        (char::from_u32(code).unwrap_or('\u{FFFD}'), 12)
                    }
                    _ => ('\u{FFFD}', 6),
                });
            }
            return Some((char::from_u32(unit).unwrap_or('\u{FFFD}'), 6));
        }
        _ => '\u{FFFD}',
    };
    Some((simple, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    }

    #[test]
    fn tool_choice_none_and_no_tools_mean_plain_chat() {
        assert_eq!(read(None, None, None).unwrap(), None);
        assert_eq!(read(Some(json!([])), Some(json!("auto")), None).unwrap(), None);
        assert_eq!(read(Some(weather()), Some(json!("none")), None).unwrap(), None);
        let tools = read(Some(weather()), None, None).unwrap().unwrap();
        assert_eq!(tools.choice, Choice::Auto);
        assert!(tools.parallel);
    }

    #[test]
    fn bad_tools_and_choices_are_400_naming_the_field() {
        let param = |r: Result<Option<Tools>, ApiError>| r.unwrap_err().param;
        assert_eq!(param(read(Some(json!({"a": 1})), None, None)), Some("tools"));
        assert_eq!(param(read(Some(json!([{"type": "function"}])), None, None)), Some("tools"));
        assert_eq!(param(read(Some(json!([{"function": {"name": "a b"}}])), None, None)), Some("tools"));
        assert_eq!(
            param(read(Some(json!([{"function": {"name": "f", "parameters": "x"}}])), None, None)),
            Some("tools")
        );
        assert_eq!(
            param(read(
                Some(json!([{"function": {"name": "f"}}, {"function": {"name": "f"}}])),
                None,
                None
            )),
            Some("tools")
        );
        assert_eq!(
            param(read(Some(json!([{"type": "retrieval", "function": {"name": "f"}}])), None, None)),
            Some("tools")
        );
        assert_eq!(param(read(Some(weather()), Some(json!("sometimes")), None)), Some("tool_choice"));
        assert_eq!(
            param(read(
                Some(weather()),
                Some(json!({"type": "function", "function": {"name": "other"}})),
                None
            )),
            Some("tool_choice")
        );
        assert_eq!(param(read(None, Some(json!("required")), None)), Some("tool_choice"));
    }

    #[test]
    fn only_a_complete_calls_reply_is_read_as_calls() {
        assert_eq!(
            read_calls(r#" {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]} "#),
            Some(vec![("get_weather".into(), json!({"city": "Oslo"}))])
        );
        assert_eq!(read_calls(r#"{"response": "It is sunny."}"#), None);
        assert_eq!(read_calls(r#"{"tool_calls": [{"name": "get_wea"#), None);
        assert_eq!(read_calls(r#"{"tool_calls": [{"arguments": {}}]}"#), None);
    }

    #[test]
    fn the_grammar_allows_only_the_named_tool_and_one_call_when_not_parallel() {
        let two = json!([{"function": {"name": "a"}}, {"function": {"name": "b"}}]);
        let tools = read(Some(two), Some(json!({"type": "function", "function": {"name": "b"}})), Some(false))
            .unwrap()
            .unwrap();
        let Grammar::JsonSchema(schema) = tools.grammar() else {
            panic!("a JSON schema")
        };
        let list = &schema["properties"]["tool_calls"];
        assert_eq!(list["maxItems"], 1);
        assert_eq!(list["items"]["anyOf"].as_array().unwrap().len(), 1);
        assert_eq!(list["items"]["anyOf"][0]["properties"]["name"]["const"], "b");
    }

    /// A reply written in `texts` read as the stream reads it, and gathered as the whole
    /// answer is: its message, finish reason and stop. The generation ended with `reason`
    /// unless a stop string ended it.
    fn read_reply(reading: &Reading, texts: &[&str], reason: &'static str) -> (AssistantMessage, &'static str, Option<StopCause>) {
        use futures::StreamExt;
        let mut reader = Reader::new(reading);
        let mut pieces = Vec::new();
        let mut stopped_by = None;
        for text in texts {
            let (words, stop) = reader.push(text);
            if !words.is_empty() {
                pieces.push(Piece::Text(words, None));
            }
            if let Some(stop) = stop {
                stopped_by = Some(StopCause::Text(stop));
                break;
            }
        }
        let end = sse::End {
            finish_reason: if stopped_by.is_some() { "stop" } else { reason },
            stopped_by,
            usage: Usage::default(),
            first_token: None,
        };
        pieces.extend(reader.finish(end));
        let pieces = futures::stream::iter(pieces.into_iter().map(Ok)).boxed();
        let (message, reason, stopped_by, _) = futures::executor::block_on(answer(pieces)).unwrap();
        (message, reason, stopped_by)
    }

    fn stops(stops: &[&str], include_stop: bool) -> Reading {
        Reading {
            stops: stops.iter().map(|s| s.to_string()).collect(),
            include_stop,
        }
    }

    #[test]
    fn an_answer_is_calls_words_or_the_text_as_it_was_cut() {
        let none = Reading::default();
        let (message, reason, _) = read_reply(&none, &[r#"{"tool_calls": [{"name": "f", "arguments": {"x": 1}}]}"#], "stop");
        assert_eq!(reason, "tool_calls");
        assert_eq!(message.content, None);
        let calls = message.tool_calls.unwrap();
        assert_eq!(
            (calls[0].function.name.as_str(), calls[0].function.arguments.as_str()),
            ("f", r#"{"x":1}"#)
        );
        assert!(calls[0].id.starts_with("call_") && calls[0].id.len() == 29, "{}", calls[0].id);
        let (message, reason, _) = read_reply(&none, &[r#"{"response": "Hi."}"#], "stop");
        assert_eq!(
            (message.content.as_deref(), reason, message.tool_calls.is_none()),
            (Some("Hi."), "stop", true)
        );
        let (message, reason, _) = read_reply(&none, &[r#"{"tool_calls": [{"na"#], "length");
        assert_eq!((message.content.as_deref(), reason), (Some(r#"{"tool_calls": [{"na"#), "length"));
        // Words cut by max_tokens: the words so far, as the stream sent them.
        let (message, reason, _) = read_reply(&none, &[r#"{"response": "Hello, wor"#], "length");
        assert_eq!((message.content.as_deref(), reason), (Some("Hello, wor"), "length"));
    }

    #[test]
    fn stop_strings_end_the_words_and_never_cut_a_call() {
        // A stop string spelled across pieces, and escaped in the JSON: matched on the words.
        let quote = stops(&["\"world"], false);
        let (message, reason, stop) = read_reply(&quote, &[r#"{"response": "Hello, \"wo"#, r#"rld\" and more"}"#], "stop");
        assert_eq!(
            (message.content.as_deref(), reason, stop),
            (Some("Hello, "), "stop", Some(StopCause::Text("\"world".into())))
        );
        let (message, _, stop) = read_reply(
            &stops(&["\"world"], true),
            &[r#"{"response": "Hello, \"world\" and more"}"#],
            "stop",
        );
        assert_eq!((message.content.as_deref(), stop.is_some()), (Some("Hello, \"world"), true));
        // A stop string in the JSON around the words, or in a call, ends nothing.
        let brace = stops(&["}", "\"", "response", "city"], false);
        let call = r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}"#;
        let (message, reason, stop) = read_reply(&brace, &[call], "stop");
        assert_eq!((reason, stop, message.tool_calls.map(|c| c.len())), ("tool_calls", None, Some(1)));
        let (message, reason, stop) = read_reply(&brace, &[r#"{"response": "Sunny."}"#], "stop");
        assert_eq!((message.content.as_deref(), reason, stop), (Some("Sunny."), "stop", None));
        // A stop string's start held back at the words' end comes out when they close or are cut.
        let held = stops(&["ny and warm"], false);
        let (message, _, stop) = read_reply(&held, &[r#"{"response": "Sun"#, r#"ny"}"#], "stop");
        assert_eq!((message.content.as_deref(), stop), (Some("Sunny"), None));
        let (message, reason, _) = read_reply(&held, &[r#"{"response": "Sunny"#], "length");
        assert_eq!((message.content.as_deref(), reason), (Some("Sunny"), "length"));
    }

    #[test]
    fn earlier_calls_and_results_become_the_shapes_the_model_writes_and_reads() {
        let calls: Vec<ToolCallIn> = serde_json::from_value(json!([
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}
        ]))
        .unwrap();
        assert_eq!(
            calls_text(&calls, ""),
            r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}"#
        );
        // What the turn said with its calls stays in the conversation, after them.
        assert_eq!(
            calls_text(&calls, "Let me look."),
            r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}], "response": "Let me look."}"#
        );
        let mut results = Results::default();
        results.called(&calls);
        results.push(3, Some("call_1".into()), None, "Sunny".into()).unwrap();
        results.push(4, Some("call_9".into()), Some("other".into()), "42".into()).unwrap();
        assert_eq!(results.push(5, None, None, "x".into()).unwrap_err().param, Some("messages"));
        let message = results.take().unwrap();
        assert_eq!(message.role, Role::User);
        assert_eq!(
            message.content,
            r#"{"tool_results": [{"tool_call_id": "call_1", "name": "get_weather", "content": "Sunny"}, {"tool_call_id": "call_9", "name": "other", "content": "42"}]}"#
        );
        assert!(results.take().is_none());
    }

    #[test]
    fn words_are_decoded_as_they_come_whatever_the_pieces() {
        let reply = r#"  {"response": "Tab\tquote \" slash \\ e\u0301 \ud83d\ude00 done"}"#;
        let whole: Value = serde_json::from_str(reply).unwrap();
        let expected = whole["response"].as_str().unwrap();
        // Every way of cutting the reply in two, and one character at a time.
        for cut in (0..=reply.len()).filter(|&i| reply.is_char_boundary(i)) {
            let mut reader = Reader::default();
            let words = reader.push(&reply[..cut]).0 + &reader.push(&reply[cut..]).0;
            assert_eq!(words, expected, "cut at {cut}");
            assert!(matches!(reader.end(), Ending::Words(_)));
        }
        let mut reader = Reader::default();
        let words: String = reply.chars().map(|c| reader.push(&c.to_string()).0).collect();
        assert_eq!(words, expected);
        // A lone surrogate is the replacement character; the words go on after it.
        let mut reader = Reader::default();
        assert_eq!(reader.push(r#"{"response": "a\ud83d b"}"#).0, "a\u{FFFD} b");
        // So is an escape that is not hex, and the reading does not stall on it.
        let mut reader = Reader::default();
        assert_eq!(reader.push(r#"{"response": "a\uzzzz b"#).0, "a\u{FFFD} b");
        assert_eq!(reader.push(r#"c"}"#).0, "c");
    }

    #[test]
    fn calls_are_read_when_the_reply_ends() {
        let mut reader = Reader::default();
        assert_eq!(reader.push(r#"{"tool_calls": [{"name": "f", "#).0, "");
        assert_eq!(reader.push(r#""arguments": {}}]}"#).0, "");
        let Ending::Calls(calls) = reader.end() else { panic!("calls") };
        assert_eq!((calls[0].function.name.as_str(), calls[0].function.arguments.as_str()), ("f", "{}"));
        let mut cut = Reader::default();
        cut.push(r#"{"tool_calls": [{"na"#);
        assert!(matches!(cut.end(), Ending::Unread));
    }

    #[test]
    fn the_description_joins_the_system_message() {
        let tools = read(Some(weather()), None, None).unwrap().unwrap();
        let mut messages = vec![
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, "Weather in Oslo?"),
        ];
        tools.describe(&mut messages);
        assert_eq!(messages.len(), 2);
        assert!(messages[0].content.starts_with("Be brief.\n\nYou can call"));
        assert!(messages[0].content.contains(r#""name":"get_weather""#), "{}", messages[0].content);
        let mut messages = vec![ChatMessage::new(Role::User, "Weather in Oslo?")];
        tools.describe(&mut messages);
        assert_eq!(messages[0].role, Role::System);
    }
}
