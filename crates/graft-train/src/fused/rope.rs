//! Rotary position embeddings as one op with its own backward pass, in both layouts: pairs of
//! neighbours (`interleaved`, candle's `rope_i`: llama's q and k rows as llama.cpp's converter
//! permutes them) and the two halves of a head (`halves`, candle's `rope`: qwen2's). The
//! backward pass rotates the gradient back (the same rotation by minus the angle). candle's
//! `rope_i_slow` / `rope_slow`, which it replaces, are a dozen ops each way (narrows, broadcast
//! products, a concatenation); candle's fused `rope_i` / `rope` have no backward pass.
//!
//! The values are candle's: `y₀ = x₀ cos − x₁ sin`, `y₁ = x₀ sin + x₁ cos`.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

use super::{contiguous, float_dtype, on_cpu, zeros};

#[derive(Clone, Copy)]
struct Rope {
    /// Pairs of neighbours, else a head's two halves.
    interleaved: bool,
    /// Rotate by minus the angle (the backward pass).
    inverse: bool,
}

/// `x` (`[b, h, t, d]`) rotated by the tables `cos` and `sin` (`[≥ t, d / 2]`, position by
/// position).
fn rotate<T: Float + Send + Sync>(x: &[T], cos: &[T], sin: &[T], t: usize, d: usize, rope: Rope) -> Vec<T> {
    let half = d / 2;
    let mut out = zeros(x.len());
    out.par_chunks_mut(t * d).zip(x.par_chunks(t * d)).for_each(|(y, x)| {
        for p in 0..t {
            let (y, x) = (&mut y[p * d..(p + 1) * d], &x[p * d..(p + 1) * d]);
            let (cos, sin) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
            for i in 0..half {
                let (c, s) = (cos[i], if rope.inverse { -sin[i] } else { sin[i] });
                let (a, b) = if rope.interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
                let (x0, x1) = (x[a], x[b]);
                y[a] = x0 * c - x1 * s;
                y[b] = x0 * s + x1 * c;
            }
        }
    });
    out
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "rope-with-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        cos: &CpuStorage,
        cl: &Layout,
        sin: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, _, t, d) = xl.shape().dims4()?;
        let table = |l: &Layout| matches!(l.dims(), &[rows, width] if rows >= t && 2 * width == d);
        if d % 2 != 0 || !table(cl) || !table(sl) {
            candle_core::bail!("rope: input {:?}, tables {:?} and {:?}", xl.dims(), cl.dims(), sl.dims());
        }
        let (xs, cs, ss) = ("the input", "the cosines", "the sines");
        let out = match float_dtype(x, "rope")? {
            DType::F32 => {
                let (x, cos, sin) = (contiguous::<f32>(x, xl, xs)?, contiguous(cos, cl, cs)?, contiguous(sin, sl, ss)?);
                CpuStorage::F32(rotate(x, cos, sin, t, d, *self))
            }
            _ => {
                let (x, cos, sin) = (contiguous::<f64>(x, xl, xs)?, contiguous(cos, cl, cs)?, contiguous(sin, sl, ss)?);
                CpuStorage::F64(rotate(x, cos, sin, t, d, *self))
            }
        };
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let back = Rope {
            inverse: !self.inverse,
            ..*self
        };
        Ok((Some(grad.contiguous()?.apply_op3_no_bwd(cos, sin, &back)?), None, None))
    }
}

fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    let rope = Rope {
        interleaved,
        inverse: false,
    };
    x.contiguous()?
        .apply_op3(&cos.detach().contiguous()?, &sin.detach().contiguous()?, rope)
}

/// `x` (`[b, h, t, d]`) rotated by pairs of neighbours (candle's `rope_i`), with a backward
/// pass to `x`; `cos` and `sin` are `[≥ t, d / 2]` constants. On a GPU, `rope_i_slow`.
pub fn interleaved(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !on_cpu(x) {
        return candle_nn::rotary_emb::rope_i_slow(&x.contiguous()?, cos, sin);
    }
    apply(x, cos, sin, true)
}

/// `x` (`[b, h, t, d]`) rotated by a head's two halves (candle's `rope`), with a backward pass
/// to `x`; `cos` and `sin` are `[≥ t, d / 2]` constants. On a GPU, `rope_slow`.
pub fn halves(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !on_cpu(x) {
        return candle_nn::rotary_emb::rope_slow(&x.contiguous()?, cos, sin);
    }
    apply(x, cos, sin, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::check::{agree, max_diff};
    use candle_core::{Device, Var};

    /// Both layouts are candle's composed ones, forward and backward, with tables longer than
    /// the input as the model's may be.
    #[test]
    fn both_layouts_are_candles_composed_rope() {
        let device = Device::Cpu;
        let (b, h, t, d) = (1, 3, 5, 8);
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (b, h, t, d), &device).unwrap()).unwrap();
        let angles = Tensor::randn(0f64, 2.0, (t + 2, d / 2), &device).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let weights = Tensor::randn(0f64, 1.0, (b, h, t, d), &device).unwrap();
        type Rotation = fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>;
        let pairs: [(Rotation, Rotation); 2] = [
            (interleaved, candle_nn::rotary_emb::rope_i_slow),
            (halves, candle_nn::rotary_emb::rope_slow),
        ];
        for (ours, theirs) in pairs {
            let ours = ours(x.as_tensor(), &cos, &sin).unwrap();
            let theirs = theirs(x.as_tensor(), &cos, &sin).unwrap();
            assert!(max_diff(&ours, x.as_tensor()) > 1e-3, "the input is rotated");
            agree(&ours, &theirs, &[&x], &weights);
        }
        assert!(
            max_diff(
                &interleaved(x.as_tensor(), &cos, &sin).unwrap(),
                &halves(x.as_tensor(), &cos, &sin).unwrap()
            ) > 1e-3
        );
    }

    #[test]
    fn short_tables_are_an_error() {
        let device = Device::Cpu;
        let x = Tensor::zeros((1, 2, 6, 4), DType::F32, &device).unwrap();
        let table = Tensor::zeros((5, 2), DType::F32, &device).unwrap();
        assert!(interleaved(&x, &table, &table).unwrap_err().to_string().contains("rope"));
    }
}
