//! The model's elementwise steps fused for training on a CPU, each one op with its own
//! backward pass: attention's causal softmax ([`softmax`]), the RMS norm ([`norm`]), rotary
//! embeddings ([`rope`]), the MLP's gate ([`glu`]) and the output layer's loss ([`nll`]).
//! Composed from candle's elementwise ops, each was several passes over its tensor forward and
//! more backward (candle's backward of a product also computes the gradient of its constant
//! side), most on one thread; fused, each is one parallel pass each way.
//!
//! Each op takes f32 or f64 on a CPU; on another device the caller's composed ops run instead
//! (`on_cpu`). Constants (norm weights, rotary tables) get no gradient: the trainer adapts
//! only its LoRA matrices. This module must not know the model: it owns the arithmetic only.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Tensor, WithDType};

pub mod glu;
pub mod nll;
pub mod norm;
pub mod rope;
pub mod softmax;

/// Elements a parallel task takes at least, so that small tensors are not cut into tasks that
/// cost more to hand out than to compute.
const MIN_TASK: usize = 4096;

/// Whether the fused ops run on `t`'s device (their kernels are CPU code).
pub(crate) fn on_cpu(t: &Tensor) -> bool {
    t.device().is_cpu()
}

/// The elements of a contiguous `storage` laid out by `layout`; `what` names the operand in the
/// error.
fn contiguous<'a, T: WithDType>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&storage.as_slice::<T>()?[start..end]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// The dtype of `storage` if the fused ops take it, else an error naming the op.
fn float_dtype(storage: &CpuStorage, op: &str) -> Result<candle_core::DType> {
    match storage.dtype() {
        d @ (candle_core::DType::F32 | candle_core::DType::F64) => Ok(d),
        other => candle_core::bail!("{op}: {other:?} (f32 and f64 are supported)"),
    }
}

/// Checks the ops' tests share (and the frozen product's, `crate::frozen`).
#[cfg(test)]
pub(crate) mod check {
    use candle_core::{Tensor, Var};

    /// The largest absolute difference between two f64 tensors.
    pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap()
    }

    /// A fused op's output `ours` and candle's composed `theirs`, both computed from `inputs` in
    /// f64, agree within 1e-12, and so do the gradients of `Σ weights · output` with respect to
    /// each input, which are not all zero.
    pub fn agree(ours: &Tensor, theirs: &Tensor, inputs: &[&Var], weights: &Tensor) {
        assert!(max_diff(ours, theirs) < 1e-12, "{}", max_diff(ours, theirs));
        let ours = (ours * weights).unwrap().sum_all().unwrap().backward().unwrap();
        let theirs = (theirs * weights).unwrap().sum_all().unwrap().backward().unwrap();
        for input in inputs {
            let (a, b) = (ours.get(input.as_tensor()).unwrap(), theirs.get(input.as_tensor()).unwrap());
            assert_eq!(a.dims(), input.as_tensor().dims());
            assert!(max_diff(a, b) < 1e-12, "{}", max_diff(a, b));
            assert!(a.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() > 1e-3);
        }
    }
}
