//! The team's own examples: a JSONL file written by hand, merged into the training data as is
//! (never deduplicated away).
//!
//! Each line is one object in one of the three shapes trainers read:
//! `{"text": "..."}`, `{"prompt": "...", "completion": "..."}`, or
//! `{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}`.
//! Blank lines and lines starting with `//` or `#` are skipped. Errors name the line and the
//! field.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::samples::{Body, Message};

#[derive(Debug, thiserror::Error)]
pub enum GoldError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Line { path: PathBuf, line: usize, message: String },
}

const ROLES: &[&str] = &["system", "user", "assistant"];

/// One line's example.
fn example(value: &Value) -> Result<Body, String> {
    let Value::Object(map) = value else {
        return Err("expected an object with `text`, `prompt` and `completion`, or `messages`".into());
    };
    let text = |field: &str| -> Result<String, String> {
        match map.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(format!("field `{field}`: is empty")),
            Some(other) => Err(format!("field `{field}`: expected a string, found {}", kind(other))),
            None => Err(format!("field `{field}`: missing")),
        }
    };
    if map.contains_key("messages") {
        let Some(Value::Array(items)) = map.get("messages") else {
            return Err("field `messages`: expected an array of {\"role\", \"content\"}".into());
        };
        let mut messages = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let role = item.get("role").and_then(Value::as_str);
            let content = item.get("content").and_then(Value::as_str);
            match (role, content) {
                (Some(role), Some(content)) if ROLES.contains(&role) => messages.push(Message {
                    role: role.to_owned(),
                    content: content.to_owned(),
                }),
                (Some(role), Some(_)) => {
                    return Err(format!(
                        "field `messages[{i}].role`: expected system, user or assistant, found {role:?}"
                    ))
                }
                (None, _) => return Err(format!("field `messages[{i}].role`: missing or not a string")),
                (_, None) => return Err(format!("field `messages[{i}].content`: missing or not a string")),
            }
        }
        if !messages.iter().any(|m| m.role == "assistant") {
            return Err("field `messages`: no assistant turn to learn".into());
        }
        return Ok(Body::Chat(messages));
    }
    if map.contains_key("prompt") || map.contains_key("completion") {
        return Ok(Body::Completion {
            prompt: text("prompt")?,
            completion: text("completion")?,
        });
    }
    if map.contains_key("text") {
        return Ok(Body::Text(text("text")?));
    }
    Err("expected `text`, `prompt` and `completion`, or `messages`".into())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The examples of a gold file, in order.
pub fn read(path: &Path) -> Result<Vec<Body>, GoldError> {
    let text = std::fs::read_to_string(path).map_err(|source| GoldError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|(line, message)| GoldError::Line {
        path: path.to_owned(),
        line,
        message,
    })
}

/// The examples of a gold file's text; an error gives the 1-based line and what is wrong.
pub fn parse(text: &str) -> Result<Vec<Body>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("//") || trimmed.starts_with('#') {
            continue;
        }
        let value: Value = serde_json::from_str(trimmed).map_err(|e| (i + 1, format!("not JSON: {e}")))?;
        out.push(example(&value).map_err(|m| (i + 1, m))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_shapes_are_read() {
        let text = r#"
# our examples
{"text": "fn main() {}\n"}
{"prompt": "Write a retry loop", "completion": "for attempt in 0..3 {}"}
{"messages": [{"role": "user", "content": "How do we log?"}, {"role": "assistant", "content": "With tracing."}]}
"#;
        let examples = parse(text).unwrap();
        assert_eq!(examples.len(), 3);
        assert!(matches!(&examples[0], Body::Text(t) if t.starts_with("fn main")));
        assert!(matches!(&examples[1], Body::Completion { prompt, .. } if prompt == "Write a retry loop"));
        assert!(matches!(&examples[2], Body::Chat(m) if m.len() == 2 && m[1].role == "assistant"));
    }

    #[test]
    fn bad_lines_name_the_line_and_field() {
        let cases = [
            ("{\"prompt\": \"a\"}", 1, "field `completion`: missing"),
            ("\n{\"text\": 3}", 2, "field `text`: expected a string, found a number"),
            ("{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}", 1, "messages[0].role"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", 1, "no assistant turn"),
            ("{\"question\": \"x\"}", 1, "expected `text`"),
            ("{not json", 1, "not JSON"),
        ];
        for (text, line, message) in cases {
            let (l, m) = parse(text).unwrap_err();
            assert_eq!(l, line, "{text}");
            assert!(m.contains(message), "{text}: {m}");
        }
    }
}
