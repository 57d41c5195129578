//! graft-gguf: a GGUF base model's header and tensors, read the way both of graft's users of
//! raw weights need them: the engine's adapter merge (`graft-engine`) and the trainer
//! (`graft-train`), so neither copies the other.
//!
//! It owns the file's header (architecture, head and layer counts, hyperparameters, tensor
//! shapes and types), reading one tensor, the names GGUF gives the projections a LoRA adapter
//! targets, the LoRA scale, and llama.cpp's row permutation of llama's q and k projections (and its inverse).
//! It does not load models, merge or train.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// The projections a LoRA adapter can target, by their PEFT names.
pub const PROJECTIONS: &[&str] = &["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct GgufError {
    pub path: PathBuf,
    pub message: String,
}

/// A base model's GGUF header: architecture, head counts and tensor shapes.
pub struct BaseGguf {
    pub path: PathBuf,
    content: gguf_file::Content,
    pub architecture: String,
    pub head_count: usize,
    pub head_count_kv: usize,
    /// Number of transformer layers.
    pub block_count: usize,
}

impl BaseGguf {
    pub fn open(path: &Path) -> Result<BaseGguf, GgufError> {
        let gguf_err = |message: String| GgufError {
            path: path.to_owned(),
            message,
        };
        let mut file = BufReader::new(File::open(path).map_err(|e| gguf_err(e.to_string()))?);
        let content = gguf_file::Content::read(&mut file).map_err(|e| gguf_err(format!("not a readable GGUF file: {e}")))?;
        let architecture = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| gguf_err("no general.architecture in the metadata".into()))?;
        let mut base = BaseGguf {
            path: path.to_owned(),
            content,
            architecture,
            head_count: 0,
            head_count_kv: 0,
            block_count: 0,
        };
        base.head_count = base
            .count("attention.head_count")
            .ok_or_else(|| gguf_err("no attention.head_count".into()))?;
        base.head_count_kv = base.count("attention.head_count_kv").unwrap_or(base.head_count);
        base.block_count = base.count("block_count").ok_or_else(|| gguf_err("no block_count".into()))?;
        Ok(base)
    }

    /// An integer of the architecture's metadata (`embedding_length` reads
    /// `llama.embedding_length`).
    pub fn count(&self, key: &str) -> Option<usize> {
        let v = self.content.metadata.get(&format!("{}.{key}", self.architecture))?;
        v.to_u32().map(|n| n as usize).or_else(|_| v.to_u64().map(|n| n as usize)).ok()
    }

    /// A number of the architecture's metadata (`rope.freq_base`).
    pub fn number(&self, key: &str) -> Option<f64> {
        let v = self.content.metadata.get(&format!("{}.{key}", self.architecture))?;
        v.to_f32().map(f64::from).or_else(|_| v.to_f64()).ok()
    }

    /// Each tensor's name and storage type.
    pub fn dtypes(&self) -> impl Iterator<Item = (&str, GgmlDType)> {
        self.content
            .tensor_infos
            .iter()
            .map(|(name, info)| (name.as_str(), info.ggml_dtype))
    }

    /// Each tensor's name, storage type and row length (its last dimension).
    pub fn tensor_infos(&self) -> impl Iterator<Item = (&str, GgmlDType, usize)> {
        self.content
            .tensor_infos
            .iter()
            .map(|(name, info)| (name.as_str(), info.ggml_dtype, info.shape.dims().last().copied().unwrap_or(0)))
    }

    /// Whether the file has a tensor of that name.
    pub fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// `[out, in]` of a 2-d tensor.
    pub fn shape(&self, name: &str) -> Option<(usize, usize)> {
        match self.content.tensor_infos.get(name)?.shape.dims() {
            [out, inp] => Some((*out, *inp)),
            _ => None,
        }
    }

    /// Reads one tensor as stored.
    pub fn tensor(&self, name: &str) -> Result<QTensor, GgufError> {
        let gguf_err = |message: String| GgufError {
            path: self.path.clone(),
            message,
        };
        let mut reader = BufReader::new(File::open(&self.path).map_err(|e| gguf_err(e.to_string()))?);
        self.content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| gguf_err(format!("tensor {name}: {e}")))
    }

    /// The row permutation llama.cpp's converter applied to this projection, as a head count
    /// (`None`: the rows are in Hugging Face's order).
    pub fn permutation(&self, projection: &str) -> Option<usize> {
        if self.architecture != "llama" {
            return None;
        }
        match projection {
            "q_proj" => Some(self.head_count),
            "k_proj" => Some(self.head_count_kv),
            _ => None,
        }
    }

    /// The header as read (metadata and tensor infos).
    pub fn content(&self) -> &gguf_file::Content {
        &self.content
    }
}

/// The GGUF tensor of a layer's projection (PEFT's name: `q_proj`, `down_proj`, ...).
pub fn tensor_name(layer: usize, projection: &str) -> Option<String> {
    let short = match projection {
        "q_proj" => "attn_q",
        "k_proj" => "attn_k",
        "v_proj" => "attn_v",
        "o_proj" => "attn_output",
        "gate_proj" => "ffn_gate",
        "up_proj" => "ffn_up",
        "down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}.weight"))
}

/// The prefix of a layer's projection's tensors in a PEFT adapter file (Hugging Face's module
/// path): `base_model.model.model.layers.3.self_attn.q_proj`, then `.lora_A.weight`.
pub fn peft_prefix(layer: usize, projection: &str) -> Option<String> {
    let module = match projection {
        "q_proj" | "k_proj" | "v_proj" | "o_proj" => "self_attn",
        "gate_proj" | "up_proj" | "down_proj" => "mlp",
        _ => return None,
    };
    Some(format!("base_model.model.model.layers.{layer}.{module}.{projection}"))
}

/// The factor a LoRA update `B @ A` is multiplied by: `alpha / rank`, or `alpha / √rank` with
/// rank-stabilised LoRA (PEFT's `use_rslora`).
pub fn lora_scale(alpha: f64, rank: usize, rslora: bool) -> f64 {
    if rslora {
        alpha / (rank as f64).sqrt()
    } else {
        alpha / rank as f64
    }
}

/// llama.cpp's q/k permutation: rows viewed as `(heads, 2, head_dim / 2)`, the last two axes
/// swapped (interleaved rotary halves become contiguous).
pub fn permute_rows(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    if heads == 0 || out % (heads * 2) != 0 {
        candle_core::bail!("cannot permute {out} rows for {heads} heads");
    }
    w.reshape((heads, 2, out / heads / 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))
}

/// The inverse of [`permute_rows`]: GGUF's row order back to Hugging Face's (what a PEFT file
/// trained on GGUF weights must hold for q and k).
pub fn unpermute_rows(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    if heads == 0 || out % (heads * 2) != 0 {
        candle_core::bail!("cannot permute {out} rows for {heads} heads");
    }
    w.reshape((heads, out / heads / 2, 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_undoes_permute() {
        let w = Tensor::arange(0f32, 48.0, &Device::Cpu).unwrap().reshape((12, 4)).unwrap();
        let p = permute_rows(&w, 3).unwrap();
        assert_ne!(p.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        assert_eq!(
            unpermute_rows(&p, 3).unwrap().to_vec2::<f32>().unwrap(),
            w.to_vec2::<f32>().unwrap()
        );
        // Rows of one head, (0 1 2 3) as two interleaved halves, become (0 2 1 3).
        let rows: Vec<f32> = permute_rows(&w, 3)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .map(|r| r[0] / 4.0)
            .collect();
        assert_eq!(&rows[..4], &[0.0, 2.0, 1.0, 3.0]);
        assert!(permute_rows(&w, 5).is_err());
    }

    #[test]
    fn projections_have_gguf_names() {
        assert_eq!(tensor_name(3, "q_proj").as_deref(), Some("blk.3.attn_q.weight"));
        assert_eq!(tensor_name(0, "down_proj").as_deref(), Some("blk.0.ffn_down.weight"));
        assert_eq!(tensor_name(0, "lm_head"), None);
        assert!(PROJECTIONS
            .iter()
            .all(|p| tensor_name(1, p).is_some() && peft_prefix(1, p).is_some()));
        assert_eq!(
            peft_prefix(2, "up_proj").as_deref(),
            Some("base_model.model.model.layers.2.mlp.up_proj")
        );
    }
}
