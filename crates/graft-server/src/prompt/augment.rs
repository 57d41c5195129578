//! Retrieval-augmented prompts: search hits turned into prompt context within a token budget.
//!
//! - Chat: the chunks go into a system message, each under a `path:start-end` header in a
//!   fenced block; an existing first system message keeps its text and gets the context
//!   appended.
//! - Completion: the chunks become the "other files" of the model's repo-level format
//!   (`fim`), placed before the current file so the prompt's start is stable.
//!
//! Budgets are counted with the model's own tokenizer, most relevant chunk first. A chunk
//! that does not fit whole is cut to its leading whole lines when a fair share of the budget
//! is left (its source then reports the shorter line range), and left out otherwise; a line,
//! and so a special token, is never cut in half. What was kept is reported back as the
//! response's `sources`.

use graft_engine::fim::ContextFile;
use graft_engine::{ChatMessage, Engine, EngineError, Role, Tokenizer};
use graft_index::SearchHit;
use serde::Serialize;

/// A chunk a response used, reported in the `sources` extension field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    /// The other project whose index held the chunk (`also_search`); none for the project's
    /// own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Relative to its repository's root (the other project's, with `project`).
    pub path: String,
    pub start_line: usize,
    pub end_line: usize,
    pub symbol: String,
    pub score: f64,
    /// Which rankings found it, and where ([`graft_index::FoundBy`]).
    #[serde(skip_serializing_if = "graft_index::FoundBy::is_empty")]
    pub found_by: graft_index::FoundBy,
    /// The chunk's code as the prompt holds it (cut when it was cut to fit). Not in `sources`;
    /// Tabby's `debug_data.snippets` shows it.
    #[serde(skip)]
    pub text: String,
}

impl From<&SearchHit> for Source {
    fn from(h: &SearchHit) -> Source {
        Source {
            project: h.project.clone(),
            path: h.path.clone(),
            start_line: h.start_line,
            end_line: h.end_line,
            symbol: h.symbol.clone(),
            score: h.score,
            found_by: h.found_by,
            text: h.text.clone(),
        }
    }
}

impl Source {
    /// Its file as the prompt named it ([`graft_index::search::shown_path`]).
    pub fn shown_path(&self) -> String {
        graft_index::search::shown_path(self.project.as_deref(), &self.path)
    }
}

/// One chunk as the chat context shows it.
fn chat_block(hit: &SearchHit) -> String {
    let fence = if hit.text.contains("```") { "````" } else { "```" };
    format!(
        "{}:{}-{}\n{fence}{}\n{}\n{fence}\n\n",
        hit.shown_path(),
        hit.start_line,
        hit.end_line,
        hit.language.to_lowercase(),
        hit.text.trim_end()
    )
}

/// How many tokens a text takes with the model that will read it: the loaded engine's count,
/// or its tokenizer's alone (read from the GGUF file, as `graft dataset` does, no weights).
#[allow(async_fn_in_trait)] // used with concrete types only; no caller needs `Send` bounds.
pub trait CountTokens {
    async fn count(&self, text: &str) -> Result<usize, EngineError>;
}

impl CountTokens for Engine {
    async fn count(&self, text: &str) -> Result<usize, EngineError> {
        Ok(self.tokenize(text, false).await?.len())
    }
}

impl CountTokens for Tokenizer {
    async fn count(&self, text: &str) -> Result<usize, EngineError> {
        Tokenizer::count(self, text)
    }
}

/// The smallest share of the budget (1/TRIM_SHARE) worth filling with the head of a chunk
/// that does not fit whole; with less left, only whole chunks that fit are taken.
const TRIM_SHARE: usize = 4;

/// The hits (in order) whose rendered blocks fit `budget` tokens together, an oversized one
/// cut to its leading whole lines (see the module comment).
async fn fit(
    counter: &impl CountTokens,
    hits: Vec<SearchHit>,
    budget: usize,
    render: impl Fn(&SearchHit) -> String,
) -> Result<Vec<(SearchHit, String)>, EngineError> {
    let mut kept = Vec::new();
    let mut used = 0;
    for hit in hits {
        let left = budget - used;
        let block = render(&hit);
        let tokens = counter.count(&block).await?;
        if tokens <= left {
            used += tokens;
            kept.push((hit, block));
        } else if left * TRIM_SHARE >= budget {
            if let Some((head, block, tokens)) = leading_lines(counter, &hit, left, &render).await? {
                used += tokens;
                kept.push((head, block));
            }
        }
    }
    Ok(kept)
}

/// The longest head of `hit` (whole lines, at least one) whose rendered block fits `left`
/// tokens, with its block and size.
async fn leading_lines(
    counter: &impl CountTokens,
    hit: &SearchHit,
    left: usize,
    render: &impl Fn(&SearchHit) -> String,
) -> Result<Option<(SearchHit, String, usize)>, EngineError> {
    let lines: Vec<&str> = hit.text.split_inclusive('\n').collect();
    let (_, best) = most_that_fit(lines.len(), |n| {
        let head = SearchHit {
            text: lines[..n].concat(),
            end_line: hit.start_line + n - 1,
            ..hit.clone()
        };
        let block = render(&head);
        async move {
            let tokens = counter.count(&block).await?;
            Ok((tokens <= left).then_some((head, block, tokens)))
        }
    })
    .await?;
    Ok(best)
}

/// The largest `n` below `total` for which `fits(n)` gives a value, and that value (`None`
/// when no `n` from 1 on does), by bisection. `fits` must hold for every `n` below one it
/// holds for; `total` itself is taken not to fit (callers have just seen it not fit).
pub(crate) async fn most_that_fit<T, F>(total: usize, mut fits: impl FnMut(usize) -> F) -> Result<(usize, Option<T>), EngineError>
where
    F: std::future::Future<Output = Result<Option<T>, EngineError>>,
{
    // Invariant: `lo` fits (or is 0), `hi` does not.
    let (mut lo, mut hi) = (0, total);
    let mut best = None;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match fits(mid).await? {
            Some(value) => {
                lo = mid;
                best = Some(value);
            }
            None => hi = mid,
        }
    }
    Ok((lo, best))
}

/// Adds the hits that fit `budget` to a conversation as repository context; returns the
/// sources used.
pub async fn chat(
    engine: &Engine,
    project: &str,
    messages: &mut Vec<ChatMessage>,
    hits: Vec<SearchHit>,
    budget: usize,
) -> Result<Vec<Source>, EngineError> {
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
pub async fn completion(
    counter: &impl CountTokens,
    hits: Vec<SearchHit>,
    budget: usize,
) -> Result<(Vec<ContextFile>, Vec<Source>), EngineError> {
    // Each chunk is shown under its path with its line range and followed by a newline, as the
    // repo-level formats render it.
    let kept = fit(counter, hits, budget, |h| {
        format!("{}:{}-{}\n{}\n", h.shown_path(), h.start_line, h.end_line, h.text)
    })
    .await?;
    let sources = kept.iter().map(|(hit, _)| Source::from(hit)).collect();
    let files = kept
        .into_iter()
        .map(|(hit, _)| ContextFile {
            path: hit.shown_path(),
            text: if hit.text.ends_with('\n') {
                hit.text
            } else {
                format!("{}\n", hit.text)
            },
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

/// A last question shorter than this many words is taken as a follow-up.
const FOLLOW_UP_WORDS: usize = 8;

/// The search query for a chat: the last user message; a short one ("and where is it
/// tested?") is a follow-up, so the user message before it comes first in the query.
pub fn chat_query(messages: &[ChatMessage]) -> String {
    let mut asked = messages.iter().rev().filter(|m| m.role == Role::User).map(|m| m.content.trim());
    let Some(last) = asked.next() else {
        return String::new();
    };
    match asked.next() {
        Some(before) if last.split_whitespace().count() < FOLLOW_UP_WORDS => format!("{before}\n{last}"),
        _ => last.to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
            project: None,
            path: "src/a.rs".into(),
            start_line: 3,
            end_line: 9,
            score: 1.0,
            symbol: "f".into(),
            language: "Rust".into(),
            text: "fn f() {}\n".into(),
            found_by: Default::default(),
        };
        assert_eq!(chat_block(&hit), "src/a.rs:3-9\n```rust\nfn f() {}\n```\n\n");
        let tricky = SearchHit {
            text: "/// ```\n/// x\n/// ```".into(),
            ..hit
        };
        assert!(chat_block(&tricky).contains("````rust\n"));
    }

    #[test]
    fn another_projects_code_is_named_under_its_project_and_said_to_be_its() {
        let theirs = SearchHit {
            project: Some("shared-lib".into()),
            ..hit("src/x.py", 4, 2)
        };
        let ours = hit("src/x.py", 1, 1);
        assert!(chat_block(&theirs).starts_with("shared-lib/src/x.py:4-5\n"));
        assert!(chat_block(&ours).starts_with("src/x.py:1-1\n"));

        let (files, sources) = block_on(completion(&Words, vec![theirs, ours], 100)).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["shared-lib/src/x.py", "src/x.py"]);
        let shown: Vec<serde_json::Value> = sources.iter().map(|s| serde_json::to_value(s).unwrap()).collect();
        assert_eq!(
            (&shown[0]["project"], &shown[0]["path"]),
            (&"shared-lib".into(), &"src/x.py".into())
        );
        assert!(shown[1].get("project").is_none(), "{}", shown[1]);
        assert_eq!(sources[0].shown_path(), "shared-lib/src/x.py");
        assert_eq!(sources[1].shown_path(), "src/x.py");
    }

    /// Counts a token per whitespace-separated word.
    pub(crate) struct Words;

    impl CountTokens for Words {
        async fn count(&self, text: &str) -> Result<usize, EngineError> {
            Ok(text.split_whitespace().count())
        }
    }

    fn hit(path: &str, start_line: usize, lines: usize) -> SearchHit {
        SearchHit {
            project: None,
            path: path.into(),
            start_line,
            end_line: start_line + lines - 1,
            score: 1.0,
            symbol: String::new(),
            language: "Rust".into(),
            text: (0..lines).map(|i| format!("w{i} w{i}\n")).collect(),
            found_by: Default::default(),
        }
    }

    /// Renders a hit as its text alone, so a block of n lines costs 2n words.
    fn text_only(h: &SearchHit) -> String {
        h.text.clone()
    }

    pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn whole_chunks_are_kept_in_order_while_they_fit() {
        let hits = vec![hit("a", 1, 10), hit("b", 1, 30), hit("c", 5, 5)];
        // a (20 words) fits in 40. b (60 words) does not; with half the budget left it is cut
        // to its first 10 lines (20 words). Nothing is left for c.
        let kept = block_on(fit(&Words, hits, 40, text_only)).expect("fit");
        let got: Vec<(&str, usize, usize)> = kept.iter().map(|(h, _)| (h.path.as_str(), h.start_line, h.end_line)).collect();
        assert_eq!(got, [("a", 1, 10), ("b", 1, 10)]);
        assert_eq!(kept[1].1, kept[1].0.text);
        assert!(kept[1].0.text.starts_with("w0 w0\n") && kept[1].0.text.ends_with("w9 w9\n"));
    }

    #[test]
    fn an_oversized_first_chunk_is_cut_to_its_leading_lines() {
        // The top hit alone is larger than the whole budget: its first 12 lines (24 words) go in.
        let kept = block_on(fit(&Words, vec![hit("big.rs", 100, 50)], 25, text_only)).expect("fit");
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].0.start_line, kept[0].0.end_line), (100, 111));
        assert_eq!(kept[0].0.text.lines().count(), 12);
    }

    #[test]
    fn with_little_budget_left_only_whole_chunks_are_taken() {
        // After a (16 words of 20), 4 words are left: less than a quarter, so b is skipped
        // rather than cut, and the small c that fits whole still goes in.
        let hits = vec![hit("a", 1, 8), hit("b", 1, 40), hit("c", 1, 2)];
        let kept = block_on(fit(&Words, hits, 20, text_only)).expect("fit");
        let got: Vec<(&str, usize)> = kept.iter().map(|(h, _)| (h.path.as_str(), h.end_line)).collect();
        assert_eq!(got, [("a", 8), ("c", 2)]);
        // A budget too small for even one line keeps nothing.
        assert!(block_on(fit(&Words, vec![hit("d", 1, 3)], 1, text_only)).expect("fit").is_empty());
    }

    #[test]
    fn the_chat_query_is_the_last_question_with_the_one_before_for_a_follow_up() {
        let first = "How does the pool evict adapters when it is full?";
        let mut messages = vec![
            ChatMessage::new(Role::System, "You are helpful."),
            ChatMessage::new(Role::User, first),
            ChatMessage::new(Role::Assistant, "It unloads the least recently used one."),
        ];
        assert_eq!(chat_query(&messages), first);
        messages.push(ChatMessage::new(Role::User, "And where is that tested?"));
        assert_eq!(chat_query(&messages), format!("{first}\nAnd where is that tested?"));
        let full = "Which function parses the listen address from the configuration file?";
        messages.push(ChatMessage::new(Role::User, full));
        assert_eq!(chat_query(&messages), full, "a full question stands alone");
        assert_eq!(chat_query(&[ChatMessage::new(Role::System, "x")]), "");
    }
}
