//! Attention's causal softmax, `softmax(scale · scores + causal mask)` over the last dimension,
//! as one op with its own backward pass: a single parallel pass over the rows each way.
//! Composed from candle's elementwise ops (scale, mask add, max, subtract, exp, sum, divide,
//! each one pass on one thread, and as many again backward) it was the largest share of a
//! training step's time after the matmuls on a CPU.
//!
//! Scores are `[..., len, len]` for positions `0..len` (training reads whole examples from
//! their start): row `i` sees keys `0..=i`; the others get exactly zero. Several query heads
//! that read the same keys (grouped-query attention) may come as one block of rows,
//! `[..., heads · len, len]`: row `i` of each head sees keys `0..=i`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

use super::{contiguous, float_dtype, on_cpu};

struct CausalSoftmax {
    scale: f64,
}

/// The gradient of [`CausalSoftmax`], from its output and the output's gradient.
struct CausalSoftmaxBackward {
    scale: f64,
}

/// The length of the scores' rows, `len`, for scores `[..., n · len, len]`.
fn row_length(layout: &Layout) -> Result<usize> {
    let dims = layout.dims();
    match dims {
        [.., a, b] if *b > 0 && a % b == 0 => Ok(*b),
        _ => candle_core::bail!("causal softmax: scores must be [..., n · len, len], got {dims:?}"),
    }
}

fn forward<T: Float + Send + Sync>(scores: &[T], len: usize, scale: T) -> Vec<T> {
    let mut out = vec![T::zero(); scores.len()];
    out.par_chunks_mut(len)
        .zip(scores.par_chunks(len))
        .enumerate()
        .for_each(|(row, (y, x))| {
            let seen = row % len + 1;
            let max = x[..seen].iter().fold(T::neg_infinity(), |m, &v| m.max(v * scale));
            let mut sum = T::zero();
            for (y, &x) in y[..seen].iter_mut().zip(&x[..seen]) {
                *y = (x * scale - max).exp();
                sum = sum + *y;
            }
            let inv = T::one() / sum;
            y[..seen].iter_mut().for_each(|y| *y = *y * inv);
        });
    out
}

fn backward<T: Float + Send + Sync>(y: &[T], g: &[T], len: usize, scale: T) -> Vec<T> {
    let mut out = vec![T::zero(); y.len()];
    out.par_chunks_mut(len)
        .zip(y.par_chunks(len).zip(g.par_chunks(len)))
        .enumerate()
        .for_each(|(row, (dx, (y, g)))| {
            let seen = row % len + 1;
            let dot = y[..seen].iter().zip(&g[..seen]).fold(T::zero(), |s, (&y, &g)| s + y * g);
            for ((dx, &y), &g) in dx[..seen].iter_mut().zip(&y[..seen]).zip(&g[..seen]) {
                *dx = scale * y * (g - dot);
            }
        });
    out
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let len = row_length(layout)?;
        let out = match float_dtype(storage, "causal softmax")? {
            DType::F32 => CpuStorage::F32(forward(contiguous::<f32>(storage, layout, "the scores")?, len, self.scale as f32)),
            _ => CpuStorage::F64(forward(contiguous::<f64>(storage, layout, "the scores")?, len, self.scale)),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, _scores: &Tensor, out: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = CausalSoftmaxBackward { scale: self.scale };
        Ok(Some(out.apply_op2_no_bwd(&grad.contiguous()?, &op)?))
    }
}

impl CustomOp2 for CausalSoftmaxBackward {
    fn name(&self) -> &'static str {
        "causal-softmax-backward"
    }

    fn cpu_fwd(&self, y: &CpuStorage, yl: &Layout, g: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let len = row_length(yl)?;
        if yl.shape() != gl.shape() {
            candle_core::bail!("causal softmax backward: {:?} and {:?}", yl.shape(), gl.shape());
        }
        let (y_what, g_what) = ("the softmax", "its gradient");
        let out = match float_dtype(y, "causal softmax backward")? {
            DType::F32 => CpuStorage::F32(backward(
                contiguous(y, yl, y_what)?,
                contiguous(g, gl, g_what)?,
                len,
                self.scale as f32,
            )),
            _ => CpuStorage::F64(backward(contiguous(y, yl, y_what)?, contiguous(g, gl, g_what)?, len, self.scale)),
        };
        Ok((out, yl.shape().clone()))
    }
}

/// `softmax(scale · scores + causal mask)` over the last dimension of `scores` (`[..., n · len,
/// len]`), with a backward pass. On a GPU, candle's composed ops (the fused kernel is CPU code).
pub fn causal(scores: &Tensor, scale: f64) -> Result<Tensor> {
    if !on_cpu(scores) {
        let (rows, len) = (scores.dim(candle_core::D::Minus2)?, scores.dim(candle_core::D::Minus1)?);
        let mask: Vec<f32> = (0..rows * len)
            .map(|i| if i % len > (i / len) % len { -1e9 } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (rows, len), scores.device())?.to_dtype(scores.dtype())?;
        let masked = (scores * scale)?.broadcast_add(&mask)?;
        return candle_nn::ops::softmax(&masked, candle_core::D::Minus1);
    }
    scores.contiguous()?.apply_op1(CausalSoftmax { scale })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::check::{agree, max_diff};
    use candle_core::{Device, Var, D};

    /// The fused op is candle's composed softmax with the mask, forward and backward.
    #[test]
    fn it_is_the_composed_masked_softmax() {
        let (len, scale) = (7, 0.37);
        let device = Device::Cpu;
        let scores = Var::from_tensor(&Tensor::randn(0f64, 3.0, (1, 2, len, len), &device).unwrap()).unwrap();
        let weights = Tensor::randn(0f64, 1.0, (1, 2, len, len), &device).unwrap();
        let mask: Vec<f64> = (0..len * len).map(|i| if i % len > i / len { -1e9 } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, (len, len), &device).unwrap();

        let ours = causal(scores.as_tensor(), scale).unwrap();
        let theirs = (scores.as_tensor() * scale).unwrap().broadcast_add(&mask).unwrap();
        let theirs = candle_nn::ops::softmax(&theirs, D::Minus1).unwrap();
        let above: f64 = ours
            .get(0)
            .unwrap()
            .get(1)
            .unwrap()
            .get(2)
            .unwrap()
            .get(5)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(above, 0.0, "a query never sees a later key");

        agree(&ours, &theirs, &[&scores], &weights);

        // Two heads' rows as one block give each head's own softmax.
        let grouped = causal(&scores.as_tensor().reshape((1, 1, 2 * len, len)).unwrap(), scale).unwrap();
        let apart = causal(scores.as_tensor(), scale).unwrap();
        assert!(max_diff(&grouped.reshape((1, 2, len, len)).unwrap(), &apart) == 0.0);
        assert!(causal(&Tensor::zeros((1, 5, 3), DType::F64, &device).unwrap(), scale).is_err());

        let f32_scores = scores.as_tensor().to_dtype(DType::F32).unwrap();
        let f32_out = causal(&f32_scores, scale).unwrap().to_dtype(DType::F64).unwrap();
        assert!(max_diff(&f32_out, &causal(scores.as_tensor(), scale).unwrap()) < 1e-6);
    }
}
