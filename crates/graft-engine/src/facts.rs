//! What a GGUF file says about the model it holds, for the listings clients read (Ollama's
//! `/api/tags` and `/api/show`, vLLM's `/tokenizer_info`): its architecture, how many
//! parameters it has, the storage type most of them are in, the file's size and time, and its
//! tokenizer's special tokens and chat template.
//!
//! This module reads a parsed GGUF header; it must not load weights or know about requests.

use std::path::Path;
use std::time::SystemTime;

use candle_core::quantized::{gguf_file, GgmlDType};

/// A served model file, described.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFacts {
    /// `general.architecture` (`llama`, `qwen2`, ...).
    pub architecture: String,
    /// Weights in all its tensors.
    pub parameters: u64,
    /// The storage type holding most of the weights, as llama.cpp names it (`Q8_0`, `Q4_K`,
    /// `F16`): what graft serves, which for a re-stored CPU copy is not the downloaded file's.
    pub storage: String,
    /// `<architecture>.context_length`: the longest sequence the model was trained for.
    pub context_length: Option<usize>,
    /// `<architecture>.embedding_length`.
    pub embedding_length: Option<usize>,
    /// The file's size in bytes and when it was last written.
    pub file_size: u64,
    pub modified: Option<SystemTime>,
    /// The tokenizer's special tokens, as text, those the file names.
    pub special: SpecialTokens,
    /// `tokenizer.chat_template`: the Jinja template the file's makers wrote for chats.
    pub chat_template: Option<String>,
}

/// The text of the tokens a GGUF file names `tokenizer.ggml.<name>_token_id`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub pad: Option<String>,
    pub unk: Option<String>,
}

impl ModelFacts {
    /// The facts of the file at `path`, whose header is `content`.
    pub(crate) fn read(content: &gguf_file::Content, path: &Path) -> ModelFacts {
        let architecture = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let count = |key: &str| {
            let v = content.metadata.get(&format!("{architecture}.{key}"))?;
            v.to_u32().map(|n| n as usize).or_else(|_| v.to_u64().map(|n| n as usize)).ok()
        };
        let mut by_type: Vec<(GgmlDType, u64)> = Vec::new();
        for info in content.tensor_infos.values() {
            let elements = info.shape.elem_count() as u64;
            match by_type.iter_mut().find(|(dtype, _)| *dtype == info.ggml_dtype) {
                Some((_, n)) => *n += elements,
                None => by_type.push((info.ggml_dtype, elements)),
            }
        }
        let parameters = by_type.iter().map(|(_, n)| n).sum();
        let storage = by_type
            .iter()
            .max_by_key(|(_, n)| *n)
            .map_or_else(String::new, |(dtype, _)| dtype_name(*dtype));
        let meta = std::fs::metadata(path).ok();
        let tokens = match content.metadata.get("tokenizer.ggml.tokens") {
            Some(gguf_file::Value::Array(tokens)) => tokens.as_slice(),
            _ => &[],
        };
        let token = |name: &str| tokens.get(token_id(content, name)? as usize)?.to_string().ok().cloned();
        ModelFacts {
            context_length: count("context_length"),
            embedding_length: count("embedding_length"),
            architecture,
            parameters,
            storage,
            file_size: meta.as_ref().map_or(0, std::fs::Metadata::len),
            modified: meta.and_then(|m| m.modified().ok()),
            special: SpecialTokens {
                bos: token("bos"),
                eos: token("eos"),
                pad: token("padding"),
                unk: token("unknown"),
            },
            chat_template: content
                .metadata
                .get("tokenizer.chat_template")
                .and_then(|v| v.to_string().ok())
                .cloned(),
        }
    }

    /// The parameter count as Ollama writes it: `134.52M`, `7.62B`.
    pub fn parameter_size(&self) -> String {
        let p = self.parameters as f64;
        match p {
            p if p >= 1e9 => format!("{:.2}B", p / 1e9),
            p if p >= 1e6 => format!("{:.2}M", p / 1e6),
            p => format!("{:.2}K", p / 1e3),
        }
    }
}

/// The id a GGUF header gives as `tokenizer.ggml.<name>_token_id` (`bos`, `eos`, `padding`, ...).
pub(crate) fn token_id(content: &gguf_file::Content, name: &str) -> Option<u32> {
    content.metadata.get(&format!("tokenizer.ggml.{name}_token_id"))?.to_u32().ok()
}

/// llama.cpp's name of a storage type (candle's debug names drop the underscore of the
/// k-quants: `Q4K` is `Q4_K`).
fn dtype_name(dtype: GgmlDType) -> String {
    let name = format!("{dtype:?}");
    match name.strip_suffix('K') {
        Some(stem) if stem.starts_with('Q') => format!("{stem}_K"),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_types_are_named_as_llama_cpp_names_them() {
        assert_eq!(dtype_name(GgmlDType::Q8_0), "Q8_0");
        assert_eq!(dtype_name(GgmlDType::Q4K), "Q4_K");
        assert_eq!(dtype_name(GgmlDType::Q6K), "Q6_K");
        assert_eq!(dtype_name(GgmlDType::F16), "F16");
    }

    #[test]
    fn parameter_counts_read_as_ollama_writes_them() {
        let facts = |parameters| ModelFacts {
            architecture: "llama".into(),
            parameters,
            storage: "Q8_0".into(),
            context_length: None,
            embedding_length: None,
            file_size: 0,
            modified: None,
            special: SpecialTokens::default(),
            chat_template: None,
        };
        assert_eq!(facts(134_515_008).parameter_size(), "134.52M");
        assert_eq!(facts(7_615_616_512).parameter_size(), "7.62B");
        assert_eq!(facts(2_048).parameter_size(), "2.05K");
    }
}
