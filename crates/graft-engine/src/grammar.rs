//! Grammars a generation must follow (structured output): a JSON Schema, a regular expression
//! or a Lark grammar.
//!
//! mistralrs enforces a request's grammar token by token with llguidance: it samples as usual,
//! and when the token is one the grammar does not allow there, it samples again among the
//! allowed ones only; once the grammar is complete, only the end of the answer is allowed.
//! So an answer that ends by itself is text of the grammar, and one cut by `max_tokens` is a
//! beginning of such text. graft's own logits processors run again on that second draw, which
//! is why they keep their state by position in the answer, not by call.
//!
//! A grammar is compiled against the model's vocabulary when its request is added, inside the
//! engine's loop, where a bad one can only end the request's stream. [`Grammars::check`]
//! compiles it first with the same factory mistralrs builds (vendor/README.md, change 7), so
//! a schema llguidance cannot use is the caller's error before anything starts.
//!
//! This module owns the grammar type and its check; it must not know about request fields.

use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::ParserFactory;
use mistralrs::Constraint;

use crate::error::EngineError;
use crate::tokenizer::Tokenizer;

/// What a generation's text must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// A JSON value valid under this JSON Schema (`{"type": "object"}`: any object).
    JsonSchema(serde_json::Value),
    /// The whole answer matches this regular expression.
    Regex(String),
    /// A grammar in llguidance's Lark syntax.
    Lark(String),
}

impl Grammar {
    /// Exactly one of `choices`, written as given.
    pub fn choice<S: AsRef<str>>(choices: &[S]) -> Grammar {
        let alternatives: Vec<String> = choices.iter().map(|c| regex_syntax::escape(c.as_ref())).collect();
        Grammar::Regex(format!("(?:{})", alternatives.join("|")))
    }

    /// The grammar as mistralrs takes it with a request.
    pub(crate) fn constraint(&self) -> Constraint {
        match self {
            Grammar::JsonSchema(schema) => Constraint::JsonSchema(schema.clone()),
            Grammar::Regex(regex) => Constraint::Regex(regex.clone()),
            Grammar::Lark(lark) => Constraint::Lark(lark.clone()),
        }
    }

    /// The grammar as llguidance compiles it (what mistralrs makes of [`Grammar::constraint`]).
    fn top_level(&self) -> TopLevelGrammar {
        match self {
            Grammar::JsonSchema(schema) => TopLevelGrammar::from_json_schema(schema.clone()),
            Grammar::Regex(regex) => TopLevelGrammar::from_regex(regex),
            Grammar::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Grammar::JsonSchema(_) => "JSON schema",
            Grammar::Regex(_) => "regular expression",
            Grammar::Lark(_) => "Lark grammar",
        }
    }
}

/// Compiles grammars against the base model's vocabulary, to check them before a request is
/// sent. The factory (a token trie of the vocabulary) is built on the first check; adapters
/// share the base's vocabulary.
#[derive(Default)]
pub(crate) struct Grammars {
    factory: OnceLock<Result<Arc<ParserFactory>, String>>,
}

impl Grammars {
    /// Whether llguidance can use `grammar` with this vocabulary; the error says why not.
    pub(crate) fn check(
        &self,
        grammar: &Grammar,
        tokenizer: impl FnOnce() -> Result<Arc<Tokenizer>, EngineError>,
    ) -> Result<(), EngineError> {
        let factory = self
            .factory
            .get_or_init(|| {
                let tokenizer = tokenizer().map_err(|e| e.to_string())?;
                mistralrs_core::build_llg_factory(tokenizer.inner().clone(), &[]).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| EngineError::Generation(format!("cannot prepare grammars for this model: {e}")))?;
        factory
            .create_parser(grammar.top_level())
            .map(drop)
            .map_err(|e| EngineError::InvalidRequest(format!("the {} cannot be used: {}", grammar.kind(), one_line(&e.to_string()))))
    }
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars").field("ready", &self.factory.get().is_some()).finish()
    }
}

/// llguidance's message on one line (a regex error points at the spot over three lines),
/// cut short where it runs on.
fn one_line(message: &str) -> String {
    const MOST: usize = 400;
    let line = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match line.char_indices().nth(MOST) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line,
    }
}
