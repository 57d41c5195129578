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
//! This module owns that layout; it must not know about HTTP or any API's field names.

use mistralrs::TextMessages;

use crate::engine::text_role;
use crate::error::EngineError;
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
    /// token ids a chat request feeds the model.
    pub async fn chat_prompt_ending(&self, messages: &[ChatMessage], turn: Turn) -> Result<Vec<u32>, EngineError> {
        let open = match turn {
            Turn::Open => true,
            Turn::Closed => false,
            Turn::Continue => return self.continued_prompt(messages).await,
        };
        self.model
            .tokenize(either::Either::Left(text_messages(messages)), None, true, open, None)
            .await
            .map_err(|e| EngineError::InvalidRequest(format!("cannot apply the chat template: {e}")))
    }

    async fn continued_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
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
        let text = self.render(messages)?;
        let end = continue_point(&text, &last.content).ok_or_else(|| {
            EngineError::InvalidRequest("the chat template changes the last message's text, so an answer cannot continue it".into())
        })?;
        self.tokenize(None, &text[..end], true).await
    }

    /// The conversation's text through the chat template, no turn opened, as mistralrs renders
    /// it before tokenizing: the same template (`model.chat_template` or the GGUF's) and the
    /// GGUF's BOS, EOS and unknown tokens.
    fn render(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        let template = self
            .chat_template()
            .ok_or_else(|| EngineError::InvalidRequest("the model has no chat template".into()))?;
        let special = self.facts().map(|f| f.special.clone()).unwrap_or_default();
        mistralrs_core::apply_chat_template_to(
            text_messages(messages).into(),
            false,
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

/// The conversation as mistralrs takes it.
fn text_messages(messages: &[ChatMessage]) -> TextMessages {
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
