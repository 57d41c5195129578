//! The base model's forward pass for training, from its GGUF file: every weight dequantized
//! (the served weights, as QLoRA trains against its quantized base) and frozen, adapters on
//! the chosen projections, and only ops with a backward pass (graft's fused RMS norm, rotary
//! embeddings, causal attention, MLP gate and loss, `crate::fused`; never candle's fused
//! kernels, which silently cut the gradient).
//!
//! Frozen weights multiply through [`crate::frozen`] (no weight gradient). A training step
//! ([`Model::backward`]) keeps each layer's input and, on a CPU, its frozen products and its
//! attention's output: it runs the layers without a graph, then, last layer first, runs each
//! again with one, taking those from the first run instead of multiplying again, and
//! back-propagates the gradient that reached its output (activation checkpointing: one
//! layer's graph alive at a time; what runs twice is the adapters and the elementwise steps,
//! not the products, most of the arithmetic; a GPU multiplies again and keeps less). The
//! output layer runs on a few positions at a time, so the vocabulary-wide logits of a long
//! example are never all in memory.
//!
//! Weights stay in GGUF order: llama's q and k rows are permuted by llama.cpp's converter, so
//! llama runs interleaved rotary embeddings (`rope_i`); qwen2's are not, so it runs the halves
//! form (`rope`). The q/k adapters' `B` rows are therefore in GGUF order too, and go back to
//! Hugging Face's order (`graft_gguf::unpermute_rows`) when written as a PEFT file.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use graft_core::random::Rng;
use graft_gguf::{BaseGguf, GgufError};

use crate::frozen;
use crate::fused::{attention, glu, nll, norm, rope};
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

/// How a forward pass runs: recording the adapters' graph for a backward pass or not, and with
/// the adapters' dropout drawn from a seed or without dropout.
#[derive(Debug, Clone, Copy)]
struct Pass {
    track: bool,
    dropout: Option<u64>,
}

const EVALUATE: Pass = Pass {
    track: false,
    dropout: None,
};

/// A layer's frozen products (`x Wᵀ`) by projection, and its attention's output
/// ([`ATTENTION`]).
type Products = BTreeMap<&'static str, Tensor>;

/// The key of a layer's attention output among its kept [`Products`].
const ATTENTION: &str = "attention";

/// What a run of a layer does with its frozen products and its attention, most of its
/// arithmetic.
enum Kept<'a> {
    /// Computes them.
    Nothing,
    /// Computes them and keeps them: a training step's first run of the layer.
    Keep(&'a mut Products),
    /// Takes them from the first run, which read the same input with the same adapters and
    /// dropout: the second run (with a graph) multiplies only for the gradient.
    Reuse(&'a Products),
}

impl Kept<'_> {
    /// Layer `l`'s `name` (a projection, or [`ATTENTION`]): `compute`d, and kept when keeping;
    /// when reusing, `known` of the value the first run kept.
    fn value(
        &mut self,
        l: usize,
        name: &'static str,
        compute: impl FnOnce() -> candle_core::Result<Tensor>,
        known: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Tensor> {
        match self {
            Kept::Reuse(products) => match products.get(name) {
                Some(value) => known(value),
                None => candle_core::bail!("layer {l}'s first run kept no {name}"),
            },
            Kept::Keep(products) => {
                let value = compute()?;
                products.insert(name, value.clone());
                Ok(value)
            }
            Kept::Nothing => compute(),
        }
    }
}

/// Positions of the output layer computed at once (each `vocab` logits wide).
const HEAD_ROWS: usize = 128;

/// The per-call tables a layer reads: rotary angles.
struct Tables {
    cos: Tensor,
    sin: Tensor,
}

/// Gradients of one example, in [`Model::trainable`]'s order (`None` for a weight the loss
/// does not reach), and the summed loss they are the gradient of.
pub struct Gradients {
    /// Sum over the target tokens of `-log p(token)`.
    pub loss_sum: f64,
    /// Target tokens.
    pub tokens: usize,
    pub grads: Vec<Option<Tensor>>,
}

/// The device named `name`: `cpu`, or `cuda` / `cuda:N` (a build with the `cuda` feature).
pub fn device(name: &str) -> Result<Device, ModelError> {
    let unsupported = || ModelError::Unsupported(format!("`{name}` is not a device: use cpu, cuda or cuda:N"));
    let cuda = |n: usize| {
        // Without the libraries, candle would panic on first use: say which one is missing.
        if cfg!(feature = "cuda") {
            graft_core::cuda::check_libraries().map_err(|why| ModelError::Unsupported(format!("cannot train on {name}: {why}")))?;
        }
        Device::new_cuda(n).map_err(|e| {
            ModelError::Unsupported(format!(
                "cannot train on {name}: {e} (a GPU needs a graft built with `--features cuda`)"
            ))
        })
    };
    match name.split_once(':') {
        None if name == "cpu" => Ok(Device::Cpu),
        None if name == "cuda" => cuda(0),
        Some(("cuda", n)) => cuda(n.parse().map_err(|_| unsupported())?),
        _ => Err(unsupported()),
    }
}

/// A model ready to train adapters on.
pub struct Model {
    pub arch: Arch,
    embed: Tensor,
    output: Tensor,
    norm: Tensor,
    layers: Vec<Layer>,
    /// Query heads, and key/value heads (fewer with grouped-query attention).
    pub heads: usize,
    pub kv_heads: usize,
    head_dim: usize,
    eps: f64,
    rope_base: f64,
    dtype: DType,
    device: Device,
    /// The heads of llama.cpp's row permutation, for q and k of a llama GGUF.
    permutations: BTreeMap<&'static str, usize>,
}

/// Which positions predict a target: position `i` predicts token `i + 1`.
fn predicting(ids: &[u32], target: &[bool]) -> Vec<u32> {
    (1..ids.len())
        .filter(|&i| target.get(i) == Some(&true))
        .map(|i| i as u32 - 1)
        .collect()
}

impl Model {
    /// The model in `gguf` on the CPU, its weights as `dtype`, with fresh adapters as `lora`
    /// says (none when `None`), their `A` drawn from `seed`.
    pub fn load(gguf: &Path, dtype: DType, lora: Option<&LoraSettings>, seed: u64) -> Result<Model, ModelError> {
        Model::load_on(gguf, dtype, lora, seed, &Device::Cpu)
    }

    /// [`Model::load`] on `device` (a GPU with the `cuda` feature).
    pub fn load_on(gguf: &Path, dtype: DType, lora: Option<&LoraSettings>, seed: u64, device: &Device) -> Result<Model, ModelError> {
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
        let device = device.clone();
        let load = |name: &str| -> Result<Tensor, ModelError> { Ok(base.tensor(name)?.dequantize(&device)?.to_dtype(dtype)?) };
        let embed = load("token_embd.weight")?;
        let output = if base.has("output.weight") {
            load("output.weight")?
        } else {
            embed.clone()
        };
        let dim = embed.dim(1)?;
        let heads = base.head_count;
        if heads == 0 || dim % heads != 0 || base.head_count_kv == 0 || heads % base.head_count_kv != 0 {
            return Err(ModelError::Unsupported(format!(
                "{dim} wide with {heads} heads and {} key-value heads",
                base.head_count_kv
            )));
        }
        let mut rng = Rng::new(seed);
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
                    loras.insert(projection, Lora::new(out, inp, settings, dtype, &device, &mut rng)?);
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
        })
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

    fn linear(&self, l: usize, projection: &str, x: &Tensor, pass: Pass, kept: &mut Kept) -> candle_core::Result<Tensor> {
        let layer = &self.layers[l];
        let Some((&name, (w, bias))) = layer.weights.get_key_value(projection) else {
            candle_core::bail!("no {projection}");
        };
        let mut y = kept.value(l, name, || frozen::matmul_t(x, w), |y| frozen::known_matmul_t(x, w, y))?;
        if let Some(b) = bias {
            y = y.broadcast_add(b)?;
        }
        if let Some((p, lora)) = layer.loras.iter().find(|(p, _)| **p == projection) {
            // Each adapter's own dropout, replayed by the same seed.
            let index = graft_gguf::PROJECTIONS.iter().position(|q| q == p).unwrap_or(0);
            let seed = pass.dropout.map(|s| {
                Rng::new(s ^ ((l * graft_gguf::PROJECTIONS.len() + index) as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407)).next_u64()
            });
            y = (y + lora.forward(x, seed, pass.track)?)?;
        }
        Ok(y)
    }

    /// Rotary tables for `len` positions.
    fn tables(&self, len: usize) -> candle_core::Result<Tables> {
        let half = self.head_dim / 2;
        let inv: Vec<f64> = (0..half)
            .map(|i| 1.0 / self.rope_base.powf(2.0 * i as f64 / self.head_dim as f64))
            .collect();
        let mut angles = Vec::with_capacity(len * half);
        for p in 0..len {
            angles.extend(inv.iter().map(|f| p as f64 * f));
        }
        let angles = Tensor::from_vec(angles, (len, half), &self.device)?;
        Ok(Tables {
            cos: angles.cos()?.to_dtype(self.dtype)?,
            sin: angles.sin()?.to_dtype(self.dtype)?,
        })
    }

    fn embed(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let ids = Tensor::from_vec(ids.to_vec(), ids.len(), &self.device)?;
        self.embed.index_select(&ids, 0)?.unsqueeze(0)
    }

    /// Layer `l` on `x` (`[1, len, dim]`).
    fn layer(&self, l: usize, x: &Tensor, tables: &Tables, pass: Pass, kept: &mut Kept) -> candle_core::Result<Tensor> {
        let layer = &self.layers[l];
        let len = x.dim(1)?;
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        let n = norm::rms(x, &layer.attn_norm, self.eps)?;
        let q = self
            .linear(l, "q_proj", &n, pass, kept)?
            .reshape((1, len, h, hd))?
            .transpose(1, 2)?;
        let k = self
            .linear(l, "k_proj", &n, pass, kept)?
            .reshape((1, len, kvh, hd))?
            .transpose(1, 2)?;
        let v = self
            .linear(l, "v_proj", &n, pass, kept)?
            .reshape((1, len, kvh, hd))?
            .transpose(1, 2)?;
        let (cos, sin) = (&tables.cos, &tables.sin);
        let (q, k) = match self.arch {
            Arch::Llama => (rope::interleaved(&q, cos, sin)?, rope::interleaved(&k, cos, sin)?),
            Arch::Qwen2 => (rope::halves(&q, cos, sin)?, rope::halves(&k, cos, sin)?),
        };
        // The query heads that share a key and value head are consecutive (as `repeat_kv`
        // orders them): each key/value head's queries as one block of rows, `[1, kvh,
        // groups · len, hd]`, read its keys and values once, never copied per head.
        let q = q.reshape((1, kvh, h / kvh * len, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let attention = kept.value(
            l,
            ATTENTION,
            || attention::causal(&q, &k, &v, scale),
            |out| attention::known(&q, &k, &v, scale, out),
        )?;
        let attention = attention.reshape((1, h, len, hd))?.transpose(1, 2)?.reshape((1, len, h * hd))?;
        let x = (x + self.linear(l, "o_proj", &attention, pass, kept)?)?;
        let n = norm::rms(&x, &layer.ffn_norm, self.eps)?;
        let gate = self.linear(l, "gate_proj", &n, pass, kept)?;
        let up = self.linear(l, "up_proj", &n, pass, kept)?;
        x + self.linear(l, "down_proj", &glu::silu_mul(&gate, &up)?, pass, kept)?
    }

    /// The last layer's output for `ids`, `[len, dim]` (before the final norm).
    fn trunk(&self, ids: &[u32], pass: Pass) -> candle_core::Result<Tensor> {
        let tables = self.tables(ids.len())?;
        let mut x = self.embed(ids)?;
        for l in 0..self.layers.len() {
            x = self.layer(l, &x, &tables, pass, &mut Kept::Nothing)?;
        }
        x.squeeze(0)
    }

    /// The logits of rows of the last layer's output (`[n, dim]` → `[n, vocab]`).
    fn head(&self, rows: &Tensor) -> candle_core::Result<Tensor> {
        let normed = norm::rms(rows, &self.norm, self.eps)?;
        frozen::matmul_t(&normed, &self.output)
    }

    /// Sum of `-log p(wanted[i])` under the logits of `rows`, as a tensor with its graph.
    fn nll(&self, rows: &Tensor, wanted: &[u32]) -> candle_core::Result<Tensor> {
        nll::of(&self.head(rows)?, wanted)?.sum_all()
    }

    /// The logits of every position, `[len, vocab]`.
    pub fn logits(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        self.head(&self.trunk(ids, EVALUATE)?)
    }

    /// Mean cross-entropy of the tokens `ids[i]` with `target[i]` set, each predicted from the
    /// positions before it, as one graph from the adapters to the loss (the reference that
    /// [`Model::backward`] is checked against; it holds every activation). `None` when no token
    /// is a target. `dropout` seeds the adapters' dropout as in [`Model::backward`].
    pub fn loss(&self, ids: &[u32], target: &[bool], dropout: Option<u64>) -> candle_core::Result<Option<Tensor>> {
        let positions = predicting(ids, target);
        if positions.is_empty() {
            return Ok(None);
        }
        let wanted: Vec<u32> = positions.iter().map(|&p| ids[p as usize + 1]).collect();
        let n = positions.len();
        let at = Tensor::from_vec(positions, n, &self.device)?;
        let pass = Pass { track: true, dropout };
        let rows = self.trunk(ids, pass)?.index_select(&at, 0)?;
        Ok(Some((self.nll(&rows, &wanted)? / n as f64)?))
    }

    /// Summed cross-entropy of the target tokens and their count, without dropout and without
    /// keeping a graph (validation). `None` when no token is a target.
    pub fn loss_sum(&self, ids: &[u32], target: &[bool]) -> candle_core::Result<Option<(f64, usize)>> {
        let positions = predicting(ids, target);
        if positions.is_empty() {
            return Ok(None);
        }
        let rows = self.target_rows(&self.trunk(ids, EVALUATE)?, &positions)?;
        let mut sum = 0.0;
        for (start, chunk) in (0..positions.len()).step_by(HEAD_ROWS).zip(positions.chunks(HEAD_ROWS)) {
            let wanted: Vec<u32> = chunk.iter().map(|&p| ids[p as usize + 1]).collect();
            sum += scalar(&self.nll(&rows.narrow(0, start, chunk.len())?, &wanted)?)?;
        }
        Ok(Some((sum, positions.len())))
    }

    fn target_rows(&self, trunk: &Tensor, positions: &[u32]) -> candle_core::Result<Tensor> {
        let at = Tensor::from_vec(positions.to_vec(), positions.len(), &self.device)?;
        trunk.index_select(&at, 0)
    }

    /// One example's loss and the gradients of every adapter weight, by activation
    /// checkpointing: the layers run once without a graph keeping each one's input (and on
    /// a CPU its frozen products), the output layer's gradient is taken a few positions at a
    /// time, then each layer, last first, runs again from its input with a graph (reusing
    /// those products) and passes the gradient at its output back to its input. `dropout`
    /// seeds the adapters' dropout (the same in both runs); `None` trains without it. `None`
    /// when no token is a target.
    pub fn backward(&self, ids: &[u32], target: &[bool], dropout: Option<u64>) -> candle_core::Result<Option<Gradients>> {
        let positions = predicting(ids, target);
        if positions.is_empty() {
            return Ok(None);
        }
        let len = ids.len();
        let tables = self.tables(len)?;
        let first = Pass { track: false, dropout };
        let mut inputs = Vec::with_capacity(self.layers.len());
        // Each layer's frozen products, which its second run takes instead of multiplying
        // again (on a CPU, where the products are the time; a GPU multiplies again).
        let keep = self.device.is_cpu();
        let mut products: Vec<Products> = Vec::with_capacity(self.layers.len());
        let mut x = self.embed(ids)?;
        for l in 0..self.layers.len() {
            let mut kept = Products::new();
            let next = self.layer(l, &x, &tables, first, &mut if keep { Kept::Keep(&mut kept) } else { Kept::Nothing })?;
            inputs.push(x);
            products.push(kept);
            x = next;
        }
        let rows = self.target_rows(&x.squeeze(0)?, &positions)?;
        drop(x);
        let mut loss_sum = 0.0;
        let mut row_grads = Vec::new();
        for (start, chunk) in (0..positions.len()).step_by(HEAD_ROWS).zip(positions.chunks(HEAD_ROWS)) {
            let wanted: Vec<u32> = chunk.iter().map(|&p| ids[p as usize + 1]).collect();
            let part = Var::from_tensor(&rows.narrow(0, start, chunk.len())?)?;
            let nll = self.nll(part.as_tensor(), &wanted)?;
            loss_sum += scalar(&nll)?;
            let grads = nll.backward()?;
            row_grads.push(match grads.get(part.as_tensor()) {
                Some(g) => g.clone(),
                None => part.as_tensor().zeros_like()?,
            });
        }
        let at = Tensor::from_vec(positions.clone(), positions.len(), &self.device)?;
        let dim = rows.dim(1)?;
        let mut grad = Tensor::zeros((len, dim), self.dtype, &self.device)?
            .index_add(&at, &Tensor::cat(&row_grads, 0)?, 0)?
            .unsqueeze(0)?;
        let second = Pass { track: true, dropout };
        let mut by_layer: Vec<Vec<Option<Tensor>>> = vec![Vec::new(); self.layers.len()];
        for l in (0..self.layers.len()).rev() {
            let input = match inputs.pop() {
                Some(x) => Var::from_tensor(&x)?,
                None => candle_core::bail!("layer {l} has no saved input"),
            };
            let kept = products.pop().unwrap_or_default();
            let mut reuse = if keep { Kept::Reuse(&kept) } else { Kept::Nothing };
            let out = self.layer(l, input.as_tensor(), &tables, second, &mut reuse)?;
            let grads = (out * &grad)?.sum_all()?.backward()?;
            by_layer[l] = self.layers[l]
                .loras
                .values()
                .flat_map(|lora| [grads.get(lora.a.as_tensor()).cloned(), grads.get(lora.b.as_tensor()).cloned()])
                .collect();
            if l > 0 {
                grad = match grads.get(input.as_tensor()) {
                    Some(g) => g.clone(),
                    None => input.as_tensor().zeros_like()?,
                };
            }
        }
        Ok(Some(Gradients {
            loss_sum,
            tokens: positions.len(),
            grads: by_layer.into_iter().flatten().collect(),
        }))
    }
}

fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}
