//! The MLP's gate, `silu(gate) · up`, as one op with its own backward pass: one parallel pass
//! forward, one backward that gives both inputs' gradients. Composed (candle's `silu` and a
//! product) it was three passes forward and about fourteen backward over the MLP's widest
//! tensors.
//!
//! The values are candle's: `silu(g) = g / (1 + e^-g)`, and its derivative as candle's
//! backward writes it, `σ(g) · (1 - silu(g)) + silu(g)`.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous, float_dtype, on_cpu, zeros, Real, MIN_TASK};

struct SiluMul;

/// The gradients of [`SiluMul`]'s inputs from the inputs and the output's gradient, as one
/// tensor `[2, ...]`: the gate's, then up's.
struct SiluMulBackward;

fn forward<T: Real>(gate: &[T], up: &[T]) -> Vec<T> {
    let mut out = zeros(gate.len());
    out.par_chunks_mut(MIN_TASK)
        .zip(gate.par_chunks(MIN_TASK).zip(up.par_chunks(MIN_TASK)))
        .for_each(|(y, (gate, up))| {
            for ((y, &g), &u) in y.iter_mut().zip(gate).zip(up) {
                *y = g / ((-g).exp_fast() + T::one()) * u;
            }
        });
    out
}

fn backward<T: Real>(gate: &[T], up: &[T], grad: &[T]) -> Vec<T> {
    let n = gate.len();
    let mut out = zeros(2 * n);
    let (d_gate, d_up) = out.split_at_mut(n);
    d_gate
        .par_chunks_mut(MIN_TASK)
        .zip(d_up.par_chunks_mut(MIN_TASK))
        .zip(
            gate.par_chunks(MIN_TASK)
                .zip(up.par_chunks(MIN_TASK))
                .zip(grad.par_chunks(MIN_TASK)),
        )
        .for_each(|((d_gate, d_up), ((gate, up), grad))| {
            let outputs = d_gate.iter_mut().zip(d_up.iter_mut());
            for ((d_gate, d_up), ((&g, &u), &dy)) in outputs.zip(gate.iter().zip(up).zip(grad)) {
                let denominator = (-g).exp_fast() + T::one();
                let silu = g / denominator;
                let sigmoid = T::one() / denominator;
                *d_gate = dy * u * (sigmoid * (T::one() - silu) + silu);
                *d_up = dy * silu;
            }
        });
    out
}

fn same_shape(a: &Layout, b: &Layout, op: &str) -> Result<()> {
    if a.shape() != b.shape() {
        candle_core::bail!("{op}: {:?} and {:?}", a.shape(), b.shape());
    }
    Ok(())
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(&self, gate: &CpuStorage, gl: &Layout, up: &CpuStorage, ul: &Layout) -> Result<(CpuStorage, Shape)> {
        same_shape(gl, ul, "silu(gate) · up")?;
        let out = match float_dtype(gate, "silu(gate) · up")? {
            DType::F32 => CpuStorage::F32(forward::<f32>(contiguous(gate, gl, "the gate")?, contiguous(up, ul, "up")?)),
            _ => CpuStorage::F64(forward::<f64>(contiguous(gate, gl, "the gate")?, contiguous(up, ul, "up")?)),
        };
        Ok((out, gl.shape().clone()))
    }

    fn bwd(&self, gate: &Tensor, up: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let both = gate.apply_op3_no_bwd(up, &grad.contiguous()?, &SiluMulBackward)?;
        Ok((Some(both.get(0)?), Some(both.get(1)?)))
    }
}

impl CustomOp3 for SiluMulBackward {
    fn name(&self) -> &'static str {
        "silu-mul-backward"
    }

    fn cpu_fwd(
        &self,
        gate: &CpuStorage,
        gl: &Layout,
        up: &CpuStorage,
        ul: &Layout,
        grad: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = "silu(gate) · up backward";
        same_shape(gl, ul, op)?;
        same_shape(gl, dl, op)?;
        let out = match float_dtype(gate, op)? {
            DType::F32 => CpuStorage::F32(backward::<f32>(
                contiguous(gate, gl, "the gate")?,
                contiguous(up, ul, "up")?,
                contiguous(grad, dl, "the gradient")?,
            )),
            _ => CpuStorage::F64(backward::<f64>(
                contiguous(gate, gl, "the gate")?,
                contiguous(up, ul, "up")?,
                contiguous(grad, dl, "the gradient")?,
            )),
        };
        let mut dims = vec![2];
        dims.extend_from_slice(gl.dims());
        Ok((out, Shape::from(dims)))
    }
}

/// `silu(gate) · up`, elementwise, with a backward pass to both. On a GPU, candle's ops.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !on_cpu(gate) {
        return gate.silu()? * up;
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SiluMul)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::check::{agree, f32_agrees};
    use candle_core::{Device, Var};

    /// The fused op is candle's `silu(gate) * up`, forward and backward, to both inputs.
    #[test]
    fn it_is_candles_silu_times_up() {
        let device = Device::Cpu;
        let gate = Var::from_tensor(&Tensor::randn(0f64, 3.0, (2, 5, 7), &device).unwrap()).unwrap();
        let up = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 5, 7), &device).unwrap()).unwrap();
        let weights = Tensor::randn(0f64, 1.0, (2, 5, 7), &device).unwrap();

        let ours = silu_mul(gate.as_tensor(), up.as_tensor()).unwrap();
        let theirs = (gate.as_tensor().silu().unwrap() * up.as_tensor()).unwrap();
        assert_eq!(ours.dims(), &[2, 5, 7]);
        agree(&ours, &theirs, &[&gate, &up], &weights);

        f32_agrees(|t| silu_mul(t[0], t[1]), &[&gate, &up], &weights, 1e-5);
    }

    #[test]
    fn other_dtypes_and_shapes_are_errors() {
        let device = Device::Cpu;
        let a = Tensor::zeros((2, 3), DType::F16, &device).unwrap();
        assert!(silu_mul(&a, &a).unwrap_err().to_string().contains("F16"));
        let (b, c) = (
            Tensor::zeros((2, 3), DType::F32, &device).unwrap(),
            Tensor::zeros((3, 2), DType::F32, &device).unwrap(),
        );
        assert!(silu_mul(&b, &c).is_err());
    }
}
