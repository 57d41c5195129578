//! The served model's tokenizer, read from its GGUF file without loading any weights.
//!
//! Dataset curation packs samples to a length in the model's tokens, and training encodes
//! them: both need the exact tokenizer the engine uses, but not the model. mistralrs builds
//! that tokenizer from the GGUF metadata when it loads a model; graft's vendored copy exposes
//! the same function (`mistralrs_core::gguf_tokenizer`, vendor/README.md), so the ids here are
//! the engine's ids (tested in `tests/tokenizer.rs` against [`crate::Engine::tokenize`]).
//!
//! Special tokens written in the text (`<|fim_prefix|>`, `<file_sep>`) become their single
//! special token, as in the engine; no BOS is added.

use std::path::Path;

use crate::error::EngineError;

/// A model's tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
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
        Ok(Tokenizer { inner })
    }

    /// A tokenizer built some other way (a Hugging Face `tokenizer.json`, or one made in a
    /// test with the special tokens of a model family).
    pub fn from_tokenizer(inner: tokenizers::Tokenizer) -> Tokenizer {
        Tokenizer { inner }
    }

    /// The ids of `text`; special-token text becomes the special token; no BOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        self.inner
            .encode_fast(text, false)
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

    /// The id of a token given by its text (a special token's, for example).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Every token's text, special tokens included (for [`crate::PromptFormat::detect`]).
    pub fn vocabulary(&self) -> Vec<String> {
        self.inner.get_vocab(true).into_keys().collect()
    }
}
