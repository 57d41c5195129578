//! The base model's forward pass for training, from its GGUF file: every weight dequantized
//! (the served weights, as QLoRA trains against its quantized base) and frozen, adapters on
//! the chosen projections, and only ops candle can differentiate (`softmax` and `log_softmax`
//! composed of primitive ops, `rms_norm_slow`, `rope_i_slow` / `rope_slow`; never the fused
//! kernels, which silently cut the gradient).
//!
//! Weights stay in GGUF order: llama's q and k rows are permuted by llama.cpp's converter, so
//! llama runs interleaved rotary embeddings (`rope_i`); qwen2's are not, so it runs the halves
//! form (`rope`). The q/k adapters' `B` rows are therefore in GGUF order too, and go back to
//! Hugging Face's order (`graft_gguf::unpermute_rows`) when written as a PEFT file.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use graft_gguf::{BaseGguf, GgufError};

use crate::lora::{Lora, LoraSettings};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{0}")]
    Unsupported(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Architectures the trainer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
}

struct Layer {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    /// Frozen projections by PEFT name, with a bias where the model has one (qwen2's q, k, v).
    weights: BTreeMap<&'static str, (Tensor, Option<Tensor>)>,
    loras: BTreeMap<&'static str, Lora>,
}

/// A model ready to train adapters on.
pub struct Model {
    pub arch: Arch,
    embed: Tensor,
    output: Tensor,
    norm: Tensor,
    layers: Vec<Layer>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
    rope_base: f64,
    dtype: DType,
    device: Device,
    /// The heads of llama.cpp's row permutation, for q and k of a llama GGUF.
    permutations: BTreeMap<&'static str, usize>,
    /// Whether adapters apply dropout (while training, not while evaluating).
    training: std::cell::Cell<bool>,
}

impl Model {
    /// The model in `gguf`, its weights as `dtype`, with fresh adapters as `lora` says (none
    /// when `None`).
    pub fn load(gguf: &Path, dtype: DType, lora: Option<&LoraSettings>) -> Result<Model, ModelError> {
        let base = BaseGguf::open(gguf)?;
        let arch = match base.architecture.as_str() {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(ModelError::Unsupported(format!(
                    "training supports llama and qwen2 models; this one is `{other}`"
                )))
            }
        };
        let device = Device::Cpu;
        let load = |name: &str| -> Result<Tensor, ModelError> { Ok(base.tensor(name)?.dequantize(&device)?.to_dtype(dtype)?) };
        let embed = load("token_embd.weight")?;
        let output = if base.has("output.weight") {
            load("output.weight")?
        } else {
            embed.clone()
        };
        let dim = embed.dim(1)?;
        let heads = base.head_count;
        if heads == 0 || dim % heads != 0 {
            return Err(ModelError::Unsupported(format!("{dim} wide with {heads} heads")));
        }
        let mut layers = Vec::with_capacity(base.block_count);
        for l in 0..base.block_count {
            let mut weights = BTreeMap::new();
            let mut loras = BTreeMap::new();
            for &projection in graft_gguf::PROJECTIONS {
                let name = graft_gguf::tensor_name(l, projection).unwrap_or_default();
                let weight = load(&name)?;
                let bias_name = name.replace(".weight", ".bias");
                let bias = if base.has(&bias_name) { Some(load(&bias_name)?) } else { None };
                if let Some(settings) = lora.filter(|s| s.targets.iter().any(|t| t == projection)) {
                    let (out, inp) = weight.dims2()?;
                    loras.insert(projection, Lora::new(out, inp, settings, dtype, &device)?);
                }
                weights.insert(projection, (weight, bias));
            }
            layers.push(Layer {
                attn_norm: load(&format!("blk.{l}.attn_norm.weight"))?,
                ffn_norm: load(&format!("blk.{l}.ffn_norm.weight"))?,
                weights,
                loras,
            });
        }
        Ok(Model {
            arch,
            norm: load("output_norm.weight")?,
            embed,
            output,
            layers,
            heads,
            kv_heads: base.head_count_kv,
            head_dim: dim / heads,
            eps: base.number("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_base: base.number("rope.freq_base").unwrap_or(10_000.0),
            dtype,
            device,
            permutations: graft_gguf::PROJECTIONS
                .iter()
                .filter_map(|&p| Some((p, base.permutation(p)?)))
                .collect(),
            training: std::cell::Cell::new(false),
        })
    }

    /// Training mode (adapter dropout on) or evaluation (off, the default).
    pub fn set_training(&self, training: bool) {
        self.training.set(training);
    }

    /// The head count of the GGUF's row permutation of `projection`'s weight, if permuted.
    pub fn permutation(&self, projection: &str) -> Option<usize> {
        self.permutations.get(projection).copied()
    }

    /// The adapters' weights, layer by layer: what an optimiser updates.
    pub fn trainable(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|l| l.loras.values().flat_map(|lora| [lora.a.clone(), lora.b.clone()]))
            .collect()
    }

    /// Each layer's adapters by projection.
    pub fn adapters(&self) -> Vec<&BTreeMap<&'static str, Lora>> {
        self.layers.iter().map(|l| &l.loras).collect()
    }

    fn linear(&self, layer: &Layer, projection: &str, x: &Tensor) -> candle_core::Result<Tensor> {
        let Some((w, bias)) = layer.weights.get(projection) else {
            candle_core::bail!("no {projection}");
        };
        let mut y = x.broadcast_matmul(&w.t()?)?;
        if let Some(b) = bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(lora) = layer.loras.get(projection) {
            y = (y + lora.forward(x, self.training.get())?)?;
        }
        Ok(y)
    }

    /// Rotary tables for `len` positions: `[len, head_dim / 2]` each.
    fn rotary(&self, len: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.head_dim / 2;
        let inv: Vec<f64> = (0..half)
            .map(|i| 1.0 / self.rope_base.powf(2.0 * i as f64 / self.head_dim as f64))
            .collect();
        let mut angles = Vec::with_capacity(len * half);
        for p in 0..len {
            angles.extend(inv.iter().map(|f| p as f64 * f));
        }
        let angles = Tensor::from_vec(angles, (len, half), &self.device)?;
        Ok((angles.cos()?.to_dtype(self.dtype)?, angles.sin()?.to_dtype(self.dtype)?))
    }

    /// The final hidden states of `ids`, `[len, dim]`.
    pub fn hidden(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let len = ids.len();
        let ids = Tensor::from_vec(ids.to_vec(), len, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?.unsqueeze(0)?;
        let (cos, sin) = self.rotary(len)?;
        let mask: Vec<f64> = (0..len * len).map(|i| if i % len > i / len { -1e9 } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, (len, len), &self.device)?.to_dtype(self.dtype)?;
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        for layer in &self.layers {
            let n = candle_nn::ops::rms_norm_slow(&x, &layer.attn_norm, self.eps as f32)?;
            let q = self.linear(layer, "q_proj", &n)?.reshape((1, len, h, hd))?.transpose(1, 2)?;
            let k = self.linear(layer, "k_proj", &n)?.reshape((1, len, kvh, hd))?.transpose(1, 2)?;
            let v = self.linear(layer, "v_proj", &n)?.reshape((1, len, kvh, hd))?.transpose(1, 2)?;
            let (q, k) = match self.arch {
                Arch::Llama => (
                    candle_nn::rotary_emb::rope_i_slow(&q.contiguous()?, &cos, &sin)?,
                    candle_nn::rotary_emb::rope_i_slow(&k.contiguous()?, &cos, &sin)?,
                ),
                Arch::Qwen2 => (
                    candle_nn::rotary_emb::rope_slow(&q.contiguous()?, &cos, &sin)?,
                    candle_nn::rotary_emb::rope_slow(&k.contiguous()?, &cos, &sin)?,
                ),
            };
            let (k, v) = if kvh == h {
                (k, v)
            } else {
                let repeat = |t: Tensor| -> candle_core::Result<Tensor> {
                    t.unsqueeze(2)?
                        .broadcast_as((1, kvh, h / kvh, len, hd))?
                        .contiguous()?
                        .reshape((1, h, len, hd))
                };
                (repeat(k)?, repeat(v)?)
            };
            let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&mask)?;
            let attention = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&v.contiguous()?)?;
            let attention = attention.transpose(1, 2)?.reshape((1, len, h * hd))?;
            x = (x + self.linear(layer, "o_proj", &attention)?)?;
            let n = candle_nn::ops::rms_norm_slow(&x, &layer.ffn_norm, self.eps as f32)?;
            let gate = self.linear(layer, "gate_proj", &n)?.silu()?;
            let up = self.linear(layer, "up_proj", &n)?;
            x = (x + self.linear(layer, "down_proj", &(gate * up)?)?)?;
        }
        candle_nn::ops::rms_norm_slow(&x, &self.norm, self.eps as f32)?.squeeze(0)
    }

    /// The logits of every position, `[len, vocab]`.
    pub fn logits(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        self.hidden(ids)?.matmul(&self.output.t()?)
    }

    /// Mean cross-entropy of the tokens `ids[i]` with `target[i]` set, each predicted from the
    /// positions before it; logits are computed only where they are needed. `None` when no
    /// token is a target.
    pub fn loss(&self, ids: &[u32], target: &[bool]) -> candle_core::Result<Option<Tensor>> {
        let positions: Vec<u32> = (1..ids.len())
            .filter(|&i| target.get(i) == Some(&true))
            .map(|i| i as u32 - 1)
            .collect();
        if positions.is_empty() {
            return Ok(None);
        }
        let wanted: Vec<u32> = positions.iter().map(|&p| ids[p as usize + 1]).collect();
        let n = positions.len();
        let at = Tensor::from_vec(positions, n, &self.device)?;
        let hidden = self.hidden(ids)?.index_select(&at, 0)?;
        let logits = hidden.matmul(&self.output.t()?)?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let wanted = Tensor::from_vec(wanted, (n, 1), &self.device)?;
        let picked = log_probs.gather(&wanted, 1)?;
        Ok(Some((picked.sum_all()? / -(n as f64))?))
    }
}
