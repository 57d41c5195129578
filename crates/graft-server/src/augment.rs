//! Retrieval-augmented prompts: search hits turned into prompt context within a token budget.
//!
//! - Chat: the chunks go into a system message, each under a `path:start-end` header in a
//!   fenced block; an existing first system message keeps its text and gets the context
//!   appended.
//! - Completion: the chunks become the "other files" of the model's repo-level format
//!   (`fim`), placed before the current file so the prompt's start is stable.
//!
//! Budgets are counted with the model's own tokenizer. Chunks are kept whole or left out,
//! most relevant first, so a special token or a line of code is never cut in half. What was
//! kept is reported back as the response's `sources`.

use graft_engine::fim::ContextFile;
use graft_engine::{ChatMessage, Engine, EngineError, Role};
use graft_index::SearchHit;
use serde::Serialize;

/// A chunk a response used, reported in the `sources` extension field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    pub path: String,
    pub start_line: usize,
    pub end_line: usize,
    pub symbol: String,
    pub score: f64,
}

impl From<&SearchHit> for Source {
    fn from(h: &SearchHit) -> Source {
        Source {
            path: h.path.clone(),
            start_line: h.start_line,
            end_line: h.end_line,
            symbol: h.symbol.clone(),
            score: h.score,
        }
    }
}

/// One chunk as the chat context shows it.
fn chat_block(hit: &SearchHit) -> String {
    let fence = if hit.text.contains("```") { "````" } else { "```" };
    format!(
        "{}:{}-{}\n{fence}{}\n{}\n{fence}\n\n",
        hit.path,
        hit.start_line,
        hit.end_line,
        hit.language.to_lowercase(),
        hit.text.trim_end()
    )
}

/// The hits (in order) whose rendered blocks fit `budget` tokens together.
async fn fit(engine: &Engine, hits: Vec<SearchHit>, budget: usize, render: impl Fn(&SearchHit) -> String) -> Result<Vec<(SearchHit, String)>, EngineError> {
    let mut kept = Vec::new();
    let mut used = 0;
    for hit in hits {
        let block = render(&hit);
        let tokens = engine.tokenize(None, &block, false).await?.len();
        if used + tokens <= budget {
            used += tokens;
            kept.push((hit, block));
        }
    }
    Ok(kept)
}

/// Adds the hits that fit `budget` to a conversation as repository context; returns the
/// sources used.
pub async fn chat(engine: &Engine, project: &str, messages: &mut Vec<ChatMessage>, hits: Vec<SearchHit>, budget: usize) -> Result<Vec<Source>, EngineError> {
    let kept = fit(engine, hits, budget, chat_block).await?;
    if kept.is_empty() {
        return Ok(Vec::new());
    }
    let mut context = format!(
        "Code from the repository `{project}` that may be relevant, each under its path and line range. \
         Use it when it helps, and name the files you rely on.\n\n"
    );
    for (_, block) in &kept {
        context.push_str(block);
    }
    let context = context.trim_end().to_owned();
    match messages.first_mut() {
        Some(first) if first.role == Role::System => {
            first.content = format!("{}\n\n{context}", first.content);
        }
        _ => messages.insert(0, ChatMessage::new(Role::System, context)),
    }
    Ok(kept.iter().map(|(hit, _)| Source::from(hit)).collect())
}

/// The hits that fit `budget` as context files of a completion prompt; and the sources.
pub async fn completion(engine: &Engine, hits: Vec<SearchHit>, budget: usize) -> Result<(Vec<ContextFile>, Vec<Source>), EngineError> {
    // Each chunk is shown under its path with its line range and followed by a newline, as the
    // repo-level formats render it.
    let kept = fit(engine, hits, budget, |h| format!("{}:{}-{}\n{}\n", h.path, h.start_line, h.end_line, h.text)).await?;
    let sources = kept.iter().map(|(hit, _)| Source::from(hit)).collect();
    let files = kept
        .into_iter()
        .map(|(hit, _)| ContextFile {
            path: hit.path,
            text: if hit.text.ends_with('\n') { hit.text } else { format!("{}\n", hit.text) },
        })
        .collect();
    Ok((files, sources))
}

/// The search query for a completion: the code around the cursor (the end of the prefix and
/// the start of the suffix), at most `max_chars` characters.
pub fn completion_query(prefix: &str, suffix: Option<&str>, max_chars: usize) -> String {
    let before: Vec<&str> = prefix.lines().rev().take(12).collect();
    let mut query: String = before.into_iter().rev().collect::<Vec<_>>().join("\n");
    if let Some(suffix) = suffix {
        for line in suffix.lines().take(4) {
            query.push('\n');
            query.push_str(line);
        }
    }
    if query.len() > max_chars {
        let mut start = query.len() - max_chars;
        while !query.is_char_boundary(start) {
            start += 1;
        }
        query = query[start..].to_owned();
    }
    query
}

/// The search query for a chat: the last user message.
pub fn chat_query(messages: &[ChatMessage]) -> Option<&str> {
    messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_completion_query_is_the_code_around_the_cursor() {
        let prefix: String = (1..=20).map(|i| format!("line{i}\n")).collect();
        let q = completion_query(&prefix, Some("after1\nafter2\n"), 1000);
        assert!(q.starts_with("line9\n") && q.contains("line20\nafter1\nafter2"), "{q}");
        assert!(!q.contains("line8"));
        // Cut to the last characters that fit, never inside a character.
        assert_eq!(completion_query("abcé", None, 2), "é");
        assert_eq!(completion_query("abcé", None, 1), "");
    }

    #[test]
    fn chat_blocks_carry_path_lines_and_a_fence_that_survives_the_text() {
        let hit = SearchHit {
            path: "src/a.rs".into(),
            start_line: 3,
            end_line: 9,
            score: 1.0,
            symbol: "f".into(),
            language: "Rust".into(),
            text: "fn f() {}\n".into(),
        };
        assert_eq!(chat_block(&hit), "src/a.rs:3-9\n```rust\nfn f() {}\n```\n\n");
        let tricky = SearchHit {
            text: "/// ```\n/// x\n/// ```".into(),
            ..hit
        };
        assert!(chat_block(&tricky).contains("````rust\n"));
    }

    #[test]
    fn the_chat_query_is_the_last_user_message() {
        let messages = vec![
            ChatMessage::new(Role::User, "first"),
            ChatMessage::new(Role::Assistant, "answer"),
            ChatMessage::new(Role::User, "second"),
        ];
        assert_eq!(chat_query(&messages), Some("second"));
    }
}
