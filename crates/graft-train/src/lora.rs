//! A low-rank adapter on one frozen projection: `y = x Wᵀ + s · (x Aᵀ) Bᵀ`, with `A` (rank ×
//! in) drawn small and `B` (out × rank) zero, so training starts from the base model exactly;
//! `s = alpha / rank` (or `alpha / √rank` with rsLoRA). Only `A` and `B` are trained.

use candle_core::{DType, Device, Result, Tensor, Var};

/// How adapters are shaped.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSettings {
    pub rank: usize,
    pub alpha: f64,
    /// Scale by `alpha / √rank` (rank-stabilised LoRA) instead of `alpha / rank`.
    pub rslora: bool,
    /// Share of an adapter's inputs zeroed while training (0: none).
    pub dropout: f64,
    /// PEFT names of the projections adapted (`q_proj`, ..., `down_proj`).
    pub targets: Vec<String>,
}

impl Default for LoraSettings {
    fn default() -> Self {
        LoraSettings {
            rank: 16,
            alpha: 32.0,
            rslora: false,
            dropout: 0.0,
            targets: graft_gguf::PROJECTIONS.iter().map(|p| p.to_string()).collect(),
        }
    }
}

impl LoraSettings {
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }
}

/// One adapter's trainable weights.
#[derive(Debug, Clone)]
pub struct Lora {
    /// `[rank, in]`.
    pub a: Var,
    /// `[out, rank]`, zero at the start.
    pub b: Var,
    pub scale: f64,
    /// Share of inputs zeroed while training.
    pub dropout: f64,
}

impl Lora {
    /// A fresh adapter for a `[out, in]` weight: `A` uniform in ±1/√in (PEFT's Kaiming-uniform
    /// bound with a = √5), `B` zero.
    pub fn new(out: usize, inp: usize, settings: &LoraSettings, dtype: DType, device: &Device) -> Result<Lora> {
        let bound = 1.0 / (inp as f64).sqrt();
        let a = Tensor::rand(-bound, bound, (settings.rank, inp), device)?.to_dtype(dtype)?;
        let b = Tensor::zeros((out, settings.rank), dtype, device)?;
        Ok(Lora {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scale: settings.scale(),
            dropout: settings.dropout,
        })
    }

    /// The adapter's part of the output for `x` (`[..., in]` → `[..., out]`); `training`
    /// applies dropout to its input.
    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let dropped;
        let x = if training && self.dropout > 0.0 {
            dropped = candle_nn::ops::dropout(&x.to_dtype(DType::F32)?, self.dropout as f32)?.to_dtype(x.dtype())?;
            &dropped
        } else {
            x
        };
        let down = x.broadcast_matmul(&self.a.as_tensor().t()?)?;
        down.broadcast_matmul(&self.b.as_tensor().t()?)?.affine(self.scale, 0.0)
    }
}
