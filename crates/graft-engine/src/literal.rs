//! Prompts whose written parts stay text: a special token's text (`<|im_end|>`,
//! `<|fim_middle|>`, `<file_sep>`) inside a message, a retrieved file or the code around the
//! cursor is tokenized as the characters it is, not as the control token, while the special
//! tokens the chat template or completion format writes stay special.
//!
//! Read as special tokens, such text would end a turn or a file early: retrieved code from a
//! repository that builds prompts (graft's own, any LLM tool's) would close the system
//! message mid-file, and a message could open a turn of its own (a `system` one) that the
//! client never sent. OpenAI's API reads message text as text; llama.cpp's server, vLLM and
//! Tabby tokenize the rendered prompt whole, so there it becomes control tokens.
//!
//! A [`Marked`] prompt is its text and the byte ranges of it that are literal (written by a
//! user or read from a file). [`Tokenizer::encode_marked`] tokenizes the text as the model's
//! tokenizer does, then re-tokenizes, with special tokens read as text, each run of text
//! between two of the format's special tokens that holds a special token inside a literal
//! range. The tokenizer itself splits text at special tokens and tokenizes each run on its own,
//! so every other token is the one the plain tokenization gives, and a prompt whose literal
//! parts write no special token is tokenized exactly as before.
//!
//! This module owns that rule; it must not know how a chat template or a completion format
//! lays a prompt out (`turn` and `fim` mark their own parts).

use std::collections::HashSet;
use std::ops::Range;

use aho_corasick::AhoCorasick;

use crate::error::EngineError;
use crate::tokenizer::Tokenizer;
use crate::Engine;

/// A prompt's text and the byte ranges of it that are literal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marked {
    pub text: String,
    /// Ascending, not overlapping, on character boundaries.
    pub literal: Vec<Range<usize>>,
}

impl Marked {
    /// A prompt with no literal part (all of it the format's own).
    pub fn format(text: impl Into<String>) -> Marked {
        Marked {
            text: text.into(),
            literal: Vec::new(),
        }
    }

    /// Appends text the format writes (its special tokens among it).
    pub fn push_format(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// Appends text a user wrote or a file holds.
    pub fn push_literal(&mut self, text: &str) {
        let start = self.text.len();
        self.text.push_str(text);
        match self.literal.last_mut() {
            Some(last) if last.end == start => last.end = self.text.len(),
            _ if text.is_empty() => {}
            _ => self.literal.push(start..self.text.len()),
        }
    }

    /// The literal parts' text.
    pub fn literal_parts(&self) -> impl Iterator<Item = &str> {
        self.literal.iter().map(|r| &self.text[r.clone()])
    }

    /// The prompt cut to its first `end` bytes (a character boundary).
    pub fn truncate(&mut self, end: usize) {
        self.text.truncate(end);
        self.literal.retain(|r| r.start < end);
        if let Some(last) = self.literal.last_mut() {
            last.end = last.end.min(end);
        }
    }
}

/// What a tokenizer needs to keep literal text literal, built on first use.
pub(crate) struct Specials {
    /// The ids of the special tokens.
    ids: HashSet<u32>,
    /// The ids of every added token (special or not): those the tokenizer matches in text
    /// and splits it at before tokenizing the runs between them.
    added: HashSet<u32>,
    /// Finds any special token's text; `None` when the vocabulary has none.
    finder: Option<AhoCorasick>,
    /// The special tokens' text, in the finder's pattern order.
    texts: Vec<String>,
    /// The same tokenizer with special tokens' text read as text.
    plain: tokenizers::Tokenizer,
}

impl Specials {
    pub(crate) fn of(inner: &tokenizers::Tokenizer) -> Specials {
        let added = inner.get_added_tokens_decoder();
        let special: Vec<(u32, &str)> = added
            .iter()
            .filter(|(_, token)| token.special && !token.content.is_empty())
            .map(|(id, token)| (*id, token.content.as_str()))
            .collect();
        let finder = match special.is_empty() {
            true => None,
            false => AhoCorasick::new(special.iter().map(|(_, text)| text)).ok(),
        };
        let mut plain = inner.clone();
        plain.set_encode_special_tokens(true);
        Specials {
            ids: special.iter().map(|(id, _)| *id).collect(),
            added: added.keys().copied().collect(),
            finder,
            texts: special.iter().map(|(_, text)| (*text).to_owned()).collect(),
            plain,
        }
    }
}

impl Engine {
    /// The token ids of `marked` in the base model's tokenizer (adapters share it), with its
    /// special tokens (BOS): as [`Engine::tokenize`] gives them, except that special tokens'
    /// text in the literal parts is read as text.
    pub async fn tokenize_marked(&self, marked: &Marked) -> Result<Vec<u32>, EngineError> {
        let tokenizer = self.tokenizer()?;
        if !marked.literal_parts().any(|part| tokenizer.writes_special(part)) {
            return self.tokenize(&marked.text, true).await;
        }
        tokenizer.encode_marked(marked, true)
    }
}

impl Tokenizer {
    /// Whether `text` holds a special token's text (which plain tokenization would read as
    /// the special token).
    pub fn writes_special(&self, text: &str) -> bool {
        self.specials().finder.as_ref().is_some_and(|f| f.is_match(text))
    }

    /// The first special token whose text `text` writes, if any.
    pub fn special_written(&self, text: &str) -> Option<&str> {
        let specials = self.specials();
        let found = specials.finder.as_ref()?.find(text)?;
        specials.texts.get(found.pattern().as_usize()).map(String::as_str)
    }

    /// The ids of `marked`'s text, special tokens' text inside its literal ranges read as
    /// text (see the module docs); with the tokenizer's own special tokens (BOS) when
    /// `add_special` is set.
    pub fn encode_marked(&self, marked: &Marked, add_special: bool) -> Result<Vec<u32>, EngineError> {
        let fail = |e: tokenizers::Error| EngineError::InvalidRequest(format!("cannot tokenize: {e}"));
        let encoding = self.inner().encode(marked.text.as_str(), add_special).map_err(fail)?;
        let (ids, offsets) = (encoding.get_ids(), encoding.get_offsets());
        let specials = self.specials();
        let inside = |(start, end): (usize, usize)| start < end && marked.literal.iter().any(|r| r.start <= start && end <= r.end);
        let written: Vec<bool> = ids
            .iter()
            .zip(offsets)
            .map(|(id, &offset)| specials.ids.contains(id) && inside(offset))
            .collect();
        if !written.contains(&true) {
            return Ok(ids.to_vec());
        }
        // The format's special tokens (and any other added token) split the text into runs the
        // tokenizer handles one by one; a run with a written special token is tokenized again
        // whole, its special tokens' text read as text.
        let added = |k: usize| !written[k] && specials.added.contains(&ids[k]);
        let mut out = Vec::with_capacity(ids.len() + 16);
        let mut k = 0;
        while k < ids.len() {
            if added(k) {
                out.push(ids[k]);
                k += 1;
                continue;
            }
            let run = k..(k..ids.len()).find(|&j| added(j)).unwrap_or(ids.len());
            if written[run.clone()].contains(&true) {
                let start = offsets[run.clone()].iter().map(|o| o.0).min().unwrap_or(0);
                let end = offsets[run.clone()].iter().map(|o| o.1).max().unwrap_or(start);
                let run_text = &marked.text[start..end];
                let again = specials.plain.encode(run_text, false).map_err(fail)?;
                for (&id, &(from, to)) in again.get_ids().iter().zip(again.get_offsets()) {
                    match self.spelled_out(id, &run_text[from..to]) {
                        Some(bytes) => out.extend(bytes),
                        None => out.push(id),
                    }
                }
            } else {
                out.extend_from_slice(&ids[run.clone()]);
            }
            k = run.end;
        }
        Ok(out)
    }

    /// A special token that a SentencePiece vocabulary's model picked for the text it stands
    /// for (mistralrs builds such vocabularies from a GGUF with the special tokens among the
    /// pieces, `</s>` scored like any other), spelled out in the vocabulary's byte tokens
    /// (`<0x3C>` ...) instead; `None` for any other token (a byte token standing for a piece of
    /// a character is kept) or a vocabulary without byte tokens.
    fn spelled_out(&self, id: u32, text: &str) -> Option<Vec<u32>> {
        if !self.specials().ids.contains(&id) || self.inner().id_to_token(id).as_deref() != Some(text) {
            return None;
        }
        text.bytes().map(|b| self.token_id(&format!("<0x{b:02X}>"))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Marked;

    #[test]
    fn marking_keeps_the_ranges_of_literal_text() {
        let mut m = Marked::default();
        m.push_format("<|im_start|>user\n");
        m.push_literal("say <|im_end|>");
        m.push_literal("");
        m.push_literal("!");
        m.push_format("<|im_end|>\n");
        m.push_literal("");
        assert_eq!(
            m.literal,
            std::slice::from_ref(&(17..32)),
            "touching literal parts merge, empty ones leave no range"
        );
        assert_eq!(m.literal_parts().collect::<Vec<_>>(), ["say <|im_end|>!"]);
        m.truncate(20);
        assert_eq!(m.text, "<|im_start|>user\nsay");
        assert_eq!(m.literal, std::slice::from_ref(&(17..20)));
        m.truncate(10);
        assert!(m.literal.is_empty());
    }
}
