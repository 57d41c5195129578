//! The served model's tokenizer, read from its GGUF file without loading any weights.
//!
//! Dataset curation packs samples to a length in the model's tokens, and training encodes
//! them: both need the exact tokenizer the engine uses, but not the model. mistralrs builds
//! that tokenizer from the GGUF metadata when it loads a model; graft's vendored copy exposes
//! the same function (`mistralrs_core::gguf_tokenizer`, vendor/README.md), so the ids here are
//! the engine's ids (tested in `tests/tokenizer.rs` against [`crate::Engine::tokenize`]).
//!
//! Special tokens written in the text (`<|fim_prefix|>`, `<file_sep>`) become their single
//! special token, as in the engine; no BOS is added. (`crate::literal` adds
//! [`Tokenizer::encode_marked`], which keeps the text of a prompt's written parts as text.)

use std::path::Path;
use std::sync::OnceLock;

use tokenizers::decoders::DecoderWrapper;

use crate::error::EngineError;
use crate::literal::Specials;

/// A model's tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// For keeping literal text literal (`crate::literal`), built on first use.
    specials: OnceLock<Specials>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocabulary", &self.inner.get_vocab_size(true))
            .finish()
    }
}

impl Tokenizer {
    /// The tokenizer of the GGUF model at `path`.
    pub fn from_gguf(path: &Path) -> Result<Tokenizer, EngineError> {
        let load = |message: String| EngineError::Load {
            path: path.to_owned(),
            message,
        };
        let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => EngineError::ModelMissing { path: path.to_owned() },
            _ => load(e.to_string()),
        })?;
        let inner = mistralrs_core::gguf_tokenizer(&mut file).map_err(|e| load(format!("cannot read its tokenizer: {e:#}")))?;
        Ok(Tokenizer::from_tokenizer(inner))
    }

    /// A tokenizer built some other way (a Hugging Face `tokenizer.json`, or one made in a
    /// test with the special tokens of a model family).
    pub fn from_tokenizer(inner: tokenizers::Tokenizer) -> Tokenizer {
        Tokenizer {
            inner,
            specials: OnceLock::new(),
        }
    }

    pub(crate) fn specials(&self) -> &Specials {
        self.specials.get_or_init(|| Specials::of(&self.inner))
    }

    /// The Hugging Face tokenizer underneath (what mistralrs builds its grammar factory from).
    pub(crate) fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The ids of `text`; special-token text becomes the special token; no BOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        self.encode_with(text, false)
    }

    /// The ids of `text`, special-token text read as the special token; with the tokenizer's
    /// own special tokens (BOS) when `add_special` is set.
    pub fn encode_with(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError> {
        self.inner
            .encode_fast(text, add_special)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(|e| EngineError::InvalidRequest(format!("cannot tokenize: {e}")))
    }

    /// How many tokens `text` is.
    pub fn count(&self, text: &str) -> Result<usize, EngineError> {
        self.encode(text).map(|ids| ids.len())
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| EngineError::InvalidRequest(format!("cannot detokenize: {e}")))
    }

    /// The bytes one token stands for: a piece of a character that takes several tokens
    /// gives its own bytes, where [`Tokenizer::decode`] would give U+FFFD. Byte-level
    /// vocabularies (GPT-2's kind: Qwen, StarCoder, SmolLM) spell bytes as characters;
    /// SentencePiece ones (Llama's kind) write a byte as `<0xNN>` and a space as `▁`.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let piece = self.inner.id_to_token(id)?;
        if let Some(DecoderWrapper::ByteLevel(_)) = self.inner.get_decoder() {
            if let Some(bytes) = piece.chars().map(byte_level_byte).collect::<Option<Vec<u8>>>() {
                return Some(bytes);
            }
        }
        let hex = piece.strip_prefix("<0x").and_then(|h| h.strip_suffix('>'));
        if let Some(byte) = hex.filter(|h| h.len() == 2).and_then(|h| u8::from_str_radix(h, 16).ok()) {
            return Some(vec![byte]);
        }
        Some(piece.replace('\u{2581}', " ").into_bytes())
    }

    /// The id of a token given by its text (a special token's, for example).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Every token's text, special tokens included (for [`crate::PromptFormat::detect`]).
    pub fn vocabulary(&self) -> Vec<String> {
        self.inner.get_vocab(true).into_keys().collect()
    }
}

/// The byte a character of a byte-level vocabulary stands for (GPT-2's table: printable
/// Latin-1 characters stand for themselves, the other bytes for U+0100 onwards in order).
fn byte_level_byte(c: char) -> Option<u8> {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let c = u32::from(c);
    if c < 0x100 {
        return printable(c).then_some(c as u8);
    }
    (0u32..0x100).filter(|&b| !printable(b)).nth((c - 0x100) as usize).map(|b| b as u8)
}

#[cfg(test)]
mod tests {
    use super::byte_level_byte;

    #[test]
    fn the_byte_level_table_is_gpt2s() {
        assert_eq!(byte_level_byte('a'), Some(b'a'));
        assert_eq!(byte_level_byte('\u{120}'), Some(b' '), "Ġ is a space");
        assert_eq!(byte_level_byte('\u{10A}'), Some(b'\n'), "Ċ is a newline");
        assert_eq!(byte_level_byte('\u{100}'), Some(0));
        assert_eq!(byte_level_byte('\u{143}'), Some(0xAD), "the last one");
        assert_eq!(byte_level_byte('\u{144}'), None);
        assert_eq!(byte_level_byte(' '), None, "a plain space is not in the table");
        // Every byte has exactly one character.
        let mut seen: Vec<u8> = (0u32..0x200).filter_map(|c| char::from_u32(c).and_then(byte_level_byte)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..=255).collect::<Vec<u8>>());
    }
}
