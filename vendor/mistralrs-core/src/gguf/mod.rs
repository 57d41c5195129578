mod chat_template;
mod content;
mod gguf_tokenizer;
use strum::EnumString;

use anyhow::{Context, Result};
pub(crate) use chat_template::get_gguf_chat_template;
pub(crate) use content::Content;
pub(crate) use gguf_tokenizer::{convert_gguf_to_hf_tokenizer, GgufTokenizerConversion};
use std::str::FromStr;

pub const GGUF_MULTI_FILE_DELIMITER: &str = ";";

/// graft: the tokenizer of a GGUF file, built exactly as the GGUF pipeline builds it when it
/// loads the model, without loading any weights (dataset packing and training count and
/// encode text in the served model's tokens).
/// Only the metadata is read, so a file of an architecture mistralrs does not run (a
/// vocabulary-only GGUF, say) has its tokenizer too.
pub fn gguf_tokenizer<R: std::io::Seek + std::io::Read>(reader: &mut R) -> Result<tokenizers::Tokenizer> {
    let content = candle_core::quantized::gguf_file::Content::read(reader)?;
    Ok(gguf_tokenizer::convert_gguf_metadata_to_hf_tokenizer(&content.metadata)?.tokenizer)
}

#[derive(Debug, EnumString, Clone, Copy, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum GGUFArchitecture {
    Llama,
    Mpt,
    Gptneox,
    Gptj,
    Gpt2,
    Bloom,
    Falcon,
    Mamba,
    Rwkv,
    Phi2,
    Phi3,
    Starcoder2,
    Qwen2,
    Qwen3,
    Qwen3MoE,
    Mistral3,
}

// Wraps from_str() for some convenience:
// - Case-insensitive variant matching (TODO: is this desirable?)
// - Customized error until potential upstream support: https://github.com/Peternator7/strum/issues/332
impl GGUFArchitecture {
    pub fn from_value<T: AsRef<str> + std::fmt::Display>(value: T) -> Result<Self> {
        Self::from_str(&value.as_ref().to_ascii_lowercase())
            .with_context(|| format!("Unknown GGUF architecture `{value}`"))
            .map_err(anyhow::Error::msg)
    }
}
