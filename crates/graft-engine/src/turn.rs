//! Where a chat prompt ends, and so what the model writes next: a new assistant turn (the
//! usual answer), the conversation's last message continued (an assistant prefill, as
//! Anthropic's Messages API, Ollama and vLLM's `continue_final_message` take it), or nothing
//! opened (vLLM's `add_generation_prompt: false`).
//!
//! A continued message is laid out as transformers and vLLM do it: the conversation goes
//! through the chat template whole, with no turn opened, and the text is cut right after the
//! last message's content, so whatever the template closes a message with (`<|im_end|>`,
//! `<|eot_id|>`) is left out and the model carries on from the message's last character. The
//! text is rendered by mistralrs's own template function (vendor/README.md, change 12) with
//! the template and special tokens the engine uses, then tokenized as the engine tokenizes a
//! rendered chat.
//!
//! A message that writes a special token's text (`<|im_end|>`) is read as text: the
//! conversation is rendered again with a marker in place of each such message to find where
//! its text sits, and `crate::literal` tokenizes it as text. A conversation without such
//! text is rendered and tokenized here exactly as mistralrs's engine would (graft does not wait
//! for the engine, which takes a tokenization only between two decoding steps).
//!
//! This module owns that layout; it must not know about HTTP or any API's field names.

use mistralrs::TextMessages;

use crate::engine::text_role;
use crate::error::EngineError;
use crate::literal::Marked;
use crate::types::{ChatMessage, Role};
use crate::Engine;

/// Where a chat prompt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Turn {
    /// The assistant's turn is opened after the conversation: a new answer.
    #[default]
    Open,
    /// The last message is left open and the answer continues it (its text is not repeated in
    /// the answer). An empty last assistant message opens the turn instead.
    Continue,
    /// The conversation as the template closes it, no turn opened.
    Closed,
}

impl Engine {
    /// A conversation as the base model's chat template lays it out, ending as `turn` says: the
    /// token ids a chat request feeds the model. A special token's text inside a message is
    /// read as text (`crate::literal`).
    pub async fn chat_prompt_ending(&self, messages: &[ChatMessage], turn: Turn) -> Result<Vec<u32>, EngineError> {
        let written = self.writes_special(messages)?;
        let open = match turn {
            Turn::Open => true,
            Turn::Closed => false,
            Turn::Continue => return self.continued_prompt(messages, written).await,
        };
        // Rendered and tokenized here as mistralrs's engine would (`chat_prompt_in_mistralrs`
        // is the yardstick in the tests), without waiting for it between decoding steps.
        let text = self.render(messages, open)?;
        if written {
            return self.literal_prompt(messages, text, open, None);
        }
        self.tokenize(&text, true).await
    }

    async fn continued_prompt(&self, messages: &[ChatMessage], written: bool) -> Result<Vec<u32>, EngineError> {
        let Some((last, before)) = messages.split_last() else {
            return Err(EngineError::InvalidRequest("there is no message to continue".into()));
        };
        if last.content.trim().is_empty() {
            if last.role == Role::Assistant && !before.is_empty() {
                return Box::pin(self.chat_prompt_ending(before, Turn::Open)).await;
            }
            return Err(EngineError::InvalidRequest(
                "the last message is empty: there is nothing to continue".into(),
            ));
        }
        let text = self.render(messages, false)?;
        let end = continue_point(&text, &last.content).ok_or_else(|| {
            EngineError::InvalidRequest("the chat template changes the last message's text, so an answer cannot continue it".into())
        })?;
        if written {
            return self.literal_prompt(messages, text, false, Some(end));
        }
        self.tokenize(&text[..end], true).await
    }

    /// Whether any message writes a special token's text.
    fn writes_special(&self, messages: &[ChatMessage]) -> Result<bool, EngineError> {
        let tokenizer = self.tokenizer()?;
        Ok(messages.iter().any(|m| tokenizer.writes_special(&m.content)))
    }

    /// The conversation's tokens with each message's text read as text: `text` is the
    /// conversation rendered (`open` as rendered), cut to its first `end` bytes when given. A
    /// message whose text the template changes in a way graft cannot trace (so that where it
    /// sits is unknown: a reasoning model's template drops the thinking of earlier answers) is
    /// tokenized plainly, the others still as text, with a warning in the log (once).
    fn literal_prompt(&self, messages: &[ChatMessage], text: String, open: bool, end: Option<usize>) -> Result<Vec<u32>, EngineError> {
        let tokenizer = self.tokenizer()?;
        let (mut marked, untraced) = match self.marked(messages, open, &text)? {
            Some(found) => found,
            None => (Marked::format(text), 1),
        };
        if untraced > 0 {
            // Said once: the template does it to every such conversation.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    "the chat template changes message text, so special tokens' text in such a message is read as special tokens"
                )
            });
        }
        if let Some(end) = end {
            marked.truncate(end);
        }
        tokenizer.encode_marked(&marked, true)
    }

    /// `text` (the conversation rendered) with the content of each message that writes a
    /// special token's text marked literal (the others tokenize alike either way), and how
    /// many such messages could not be traced and are left plain; `None` when none could.
    /// Where the template writes them all unchanged (or trimmed), one more rendering finds
    /// them; otherwise each is tried alone, and those found are marked together.
    fn marked(&self, messages: &[ChatMessage], open: bool, text: &str) -> Result<Option<(Marked, usize)>, EngineError> {
        let tokenizer = self.tokenizer()?;
        let writing: Vec<usize> = (0..messages.len())
            .filter(|&i| tokenizer.writes_special(&messages[i].content))
            .collect();
        if let Some(marked) = self.marked_at(messages, &writing, open, text) {
            return Ok(Some((marked, 0)));
        }
        let traced: Vec<usize> = writing
            .iter()
            .copied()
            .filter(|&i| self.marked_at(messages, &[i], open, text).is_some())
            .collect();
        if traced.is_empty() || traced.len() == writing.len() {
            return Ok(None);
        }
        Ok(self
            .marked_at(messages, &traced, open, text)
            .map(|marked| (marked, writing.len() - traced.len())))
    }

    /// `text` with the contents of the messages `at` marked literal, found by rendering the
    /// conversation again with a marker in place of each of them and putting the contents (as
    /// written, or trimmed for a template that trims) back in its place; `None` when neither
    /// gives `text` back, or the template refuses the markers.
    fn marked_at(&self, messages: &[ChatMessage], at: &[usize], open: bool, text: &str) -> Option<Marked> {
        let stand_ins: Vec<ChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| match at.contains(&i) {
                true => ChatMessage::new(m.role, format!("{MARK_OPEN}{i}{MARK_CLOSE}")),
                false => m.clone(),
            })
            .collect();
        let skeleton = self.render(&stand_ins, open).ok()?;
        [false, true].into_iter().find_map(|trim| {
            fill(&skeleton, |i| {
                messages.get(i).filter(|_| at.contains(&i)).map(|m| match trim {
                    true => m.content.trim(),
                    false => m.content.as_str(),
                })
            })
            .filter(|marked| marked.text == text)
        })
    }

    /// The conversation's text through the chat template, the assistant's turn opened when
    /// `open` is set, as mistralrs renders it before tokenizing: the same template
    /// (`model.chat_template` or the GGUF's) and the GGUF's BOS, EOS and unknown tokens.
    fn render(&self, messages: &[ChatMessage], open: bool) -> Result<String, EngineError> {
        let template = self
            .chat_template()
            .ok_or_else(|| EngineError::InvalidRequest("the model has no chat template".into()))?;
        let special = self.facts().map(|f| f.special.clone()).unwrap_or_default();
        mistralrs_core::apply_chat_template_to(
            text_messages(messages).into(),
            open,
            None,
            None,
            &mistralrs_core::ChatTemplateValue(either::Either::Left(template.to_owned())),
            special.bos,
            special.eos,
            special.unk,
            Vec::new(),
        )
        .map_err(|e| EngineError::InvalidRequest(format!("cannot apply the chat template: {e}")))
    }
}

/// What a message's content is replaced with to find where the template puts it: characters
/// of Unicode's supplementary private-use plane around the message's index.
const MARK_OPEN: char = '\u{F0000}';
const MARK_CLOSE: char = '\u{F0001}';

/// `skeleton` with each marker replaced by `content(index)`, marked literal; `None` when a
/// marker is malformed or names no message.
fn fill<'a>(skeleton: &str, content: impl Fn(usize) -> Option<&'a str>) -> Option<Marked> {
    let mut marked = Marked::default();
    let mut rest = skeleton;
    while let Some(at) = rest.find(MARK_OPEN) {
        marked.push_format(&rest[..at]);
        let after = &rest[at + MARK_OPEN.len_utf8()..];
        let close = after.find(MARK_CLOSE)?;
        let index = after[..close].parse().ok()?;
        marked.push_literal(content(index)?);
        rest = &after[close + MARK_CLOSE.len_utf8()..];
    }
    marked.push_format(rest);
    Some(marked)
}

/// The conversation as mistralrs takes it.
pub(crate) fn text_messages(messages: &[ChatMessage]) -> TextMessages {
    messages.iter().fold(TextMessages::new(), |text, message| {
        text.add_message(text_role(message.role), &message.content)
    })
}

/// Where the rendered `text` is cut so that the model continues `content`, the last message:
/// right after its last occurrence, or after that of its trimmed text for a template that trims
/// messages; `None` when the template does not write it at all.
fn continue_point(text: &str, content: &str) -> Option<usize> {
    let end = |needle: &str| text.rfind(needle).map(|at| at + needle.len());
    end(content).or_else(|| end(content.trim()))
}

#[cfg(test)]
mod tests {
    use super::continue_point;

    #[test]
    fn the_cut_follows_the_last_messages_text() {
        let chatml = "<|im_start|>user\nCount.<|im_end|>\n<|im_start|>assistant\n1, 2,<|im_end|>\n";
        let at = continue_point(chatml, "1, 2,").unwrap();
        assert_eq!(&chatml[..at], "<|im_start|>user\nCount.<|im_end|>\n<|im_start|>assistant\n1, 2,");
        // White space the message ends with is kept for the model to go on from.
        let spaced = chatml.replace("1, 2,", "1, 2, ");
        assert!(spaced[..continue_point(&spaced, "1, 2, ").unwrap()].ends_with("1, 2, "));
        // The last occurrence: an earlier message with the same words is not the one continued.
        let twice = "<u>Say 1, 2,</u><a>1, 2,</a>";
        assert_eq!(&twice[..continue_point(twice, "1, 2,").unwrap()], "<u>Say 1, 2,</u><a>1, 2,");
        // A template that trims messages writes the trimmed text.
        let trimmed = "<a>1, 2,</a>";
        assert_eq!(&trimmed[..continue_point(trimmed, "  1, 2,\n").unwrap()], "<a>1, 2,");
        assert_eq!(continue_point(trimmed, "three"), None);
    }
}
