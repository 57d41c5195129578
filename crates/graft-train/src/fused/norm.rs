//! The RMS norm, `x / √(mean(x²) + ε) · w` over the last dimension, as one op with its own
//! backward pass (to `x`; the weight `w` is a frozen constant and gets no gradient). candle's
//! `rms_norm_slow`, which it replaces, is eight ops forward and more backward; candle's fused
//! `rms_norm` has no backward pass at all.
//!
//! The values are `rms_norm_slow`'s: the mean is the sum of squares times `1/d`, ε added,
//! the root taken, `x` divided by it and multiplied by `w`.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

use super::{contiguous, float_dtype, on_cpu, zeros};

struct RmsNorm {
    eps: f64,
}

/// The gradient of [`RmsNorm`]'s input from the input, the weight and the output's gradient.
struct RmsNormBackward {
    eps: f64,
}

/// `√(mean(x²) + ε)` of one row.
fn root<T: Float>(x: &[T], eps: f64) -> T {
    let sum = x.iter().fold(T::zero(), |s, &v| s + v * v);
    let inverse_width = T::from(1.0 / x.len() as f64).unwrap_or_else(T::zero);
    (sum * inverse_width + T::from(eps).unwrap_or_else(T::zero)).sqrt()
}

fn forward<T: Float + Send + Sync>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut out = zeros(x.len());
    out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(y, x)| {
        let r = root(x, eps);
        for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
            *y = x / r * w;
        }
    });
    out
}

/// With `gw = g · w` and `r` the row's root: `dx = gw / r - x · Σ(gw · x) / (d · r³)`.
fn backward<T: Float + Send + Sync>(x: &[T], w: &[T], g: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut out = zeros(x.len());
    let width = T::from(d).unwrap_or_else(T::one);
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d).zip(g.par_chunks(d)))
        .for_each(|(dx, (x, g))| {
            let r = root(x, eps);
            let dot = x.iter().zip(g).zip(w).fold(T::zero(), |s, ((&x, &g), &w)| s + g * w * x);
            let along = dot / (width * r * r * r);
            for (((dx, &x), &g), &w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                *dx = g * w / r - x * along;
            }
        });
    out
}

/// The row width, checking that `w` is one row's weights for `x`.
fn width(x: &Layout, w: &Layout) -> Result<usize> {
    match (x.dims().last(), w.dims()) {
        (Some(&d), &[wd]) if d == wd && d > 0 => Ok(d),
        _ => candle_core::bail!("rms norm: input {:?} and weight {:?}", x.dims(), w.dims()),
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        width(xl, wl)?;
        let out = match float_dtype(x, "rms norm")? {
            DType::F32 => CpuStorage::F32(forward::<f32>(
                contiguous(x, xl, "the input")?,
                contiguous(w, wl, "the weight")?,
                self.eps,
            )),
            _ => CpuStorage::F64(forward::<f64>(
                contiguous(x, xl, "the input")?,
                contiguous(w, wl, "the weight")?,
                self.eps,
            )),
        };
        Ok((out, xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = x.apply_op3_no_bwd(w, &grad.contiguous()?, &RmsNormBackward { eps: self.eps })?;
        Ok((Some(dx), None))
    }
}

impl CustomOp3 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "rms-norm-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        width(xl, wl)?;
        if xl.shape() != gl.shape() {
            candle_core::bail!("rms norm backward: {:?} and {:?}", xl.shape(), gl.shape());
        }
        let (xs, ws, gs) = ("the input", "the weight", "the gradient");
        let out = match float_dtype(x, "rms norm backward")? {
            DType::F32 => CpuStorage::F32(backward::<f32>(
                contiguous(x, xl, xs)?,
                contiguous(w, wl, ws)?,
                contiguous(g, gl, gs)?,
                self.eps,
            )),
            _ => CpuStorage::F64(backward::<f64>(
                contiguous(x, xl, xs)?,
                contiguous(w, wl, ws)?,
                contiguous(g, gl, gs)?,
                self.eps,
            )),
        };
        Ok((out, xl.shape().clone()))
    }
}

/// `x / √(mean(x²) + eps) · w` over the last dimension, with a backward pass to `x` only (`w`
/// is frozen). On a GPU, candle's `rms_norm_slow`.
pub fn rms(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if !on_cpu(x) {
        return candle_nn::ops::rms_norm_slow(x, w, eps as f32);
    }
    x.contiguous()?.apply_op2(&w.detach().contiguous()?, RmsNorm { eps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::check::{agree, max_diff};
    use candle_core::{Device, Var};

    /// The fused op is candle's `rms_norm_slow`, forward and backward (to the input).
    #[test]
    fn it_is_candles_rms_norm_slow() {
        let device = Device::Cpu;
        let eps = 1e-5;
        let x = Var::from_tensor(&Tensor::randn(0f64, 2.0, (1, 6, 9), &device).unwrap()).unwrap();
        let w = Tensor::randn(1f64, 0.3, 9, &device).unwrap();
        let weights = Tensor::randn(0f64, 1.0, (1, 6, 9), &device).unwrap();

        let ours = rms(x.as_tensor(), &w, eps).unwrap();
        let theirs = candle_nn::ops::rms_norm_slow(x.as_tensor(), &w, eps as f32).unwrap();
        agree(&ours, &theirs, &[&x], &weights);

        let (x32, w32) = (x.as_tensor().to_dtype(DType::F32).unwrap(), w.to_dtype(DType::F32).unwrap());
        let ours = rms(&x32, &w32, eps).unwrap();
        let theirs = candle_nn::ops::rms_norm_slow(&x32, &w32, eps as f32).unwrap();
        let diff = max_diff(&ours.to_dtype(DType::F64).unwrap(), &theirs.to_dtype(DType::F64).unwrap());
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn a_weight_of_another_width_is_an_error() {
        let device = Device::Cpu;
        let x = Tensor::zeros((2, 4), DType::F32, &device).unwrap();
        let w = Tensor::ones(3, DType::F32, &device).unwrap();
        assert!(rms(&x, &w, 1e-5).unwrap_err().to_string().contains("rms norm"));
    }
}
