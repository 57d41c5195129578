//! The model's steps between its frozen products fused for training on a CPU, each one op
//! with its own backward pass: causal attention ([`attention`]), the RMS norm ([`norm`]),
//! rotary embeddings ([`rope`]), the MLP's gate ([`glu`]) and the output layer's loss
//! ([`nll`]). Composed from candle's ops, each was several passes over its tensor forward and
//! more backward (candle's backward of a product also computes the gradient of its constant
//! side), most on one thread; fused, each is one parallel pass each way (attention: parallel
//! blocks of rows, multiplying only the keys each block sees).
//!
//! Each op takes f32 or f64 on a CPU; on another device the caller's composed ops run instead
//! (`on_cpu`). Constants (norm weights, rotary tables) get no gradient: the trainer adapts
//! only its LoRA matrices. This module must not know the model: it owns the arithmetic only.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor, WithDType};
use num_traits::Float;

pub mod adapter;
pub mod attention;
pub mod glu;
pub mod nll;
pub mod norm;
pub mod rope;

/// Elements a parallel task takes at least, so that small tensors are not cut into tasks that
/// cost more to hand out than to compute.
const MIN_TASK: usize = 4096;

/// The float types the kernels compute in, with the exponential each takes: f64 the library's
/// (f64 is the tests' reference against candle's ops, to 1e-12), f32 [`exp_f32`], a polynomial
/// the compiler turns into vector code where the library's `expf` is a call per element (the
/// largest share of a training step after the products).
pub(crate) trait Real: Float + Send + Sync + 'static {
    fn exp_fast(self) -> Self;
}

impl Real for f64 {
    #[inline(always)]
    fn exp_fast(self) -> f64 {
        self.exp()
    }
}

impl Real for f32 {
    #[inline(always)]
    fn exp_fast(self) -> f32 {
        exp_f32(self)
    }
}

/// `e^x` within 2 units in the last place over the range the kernels meet (Cephes' `expf`:
/// `2^n · e^r` with `r = x - n ln 2` in ±ln 2 / 2 and a degree-6 polynomial for `e^r`), in
/// arithmetic a vector unit runs 8 or 16 at a time. `x` is clamped to [-87, 88], where `e^x`
/// is a normal f32: below, `e^-87` ≈ 1.6e-38 stands for values that underflow, above, `e^88`
/// for values near f32's overflow (the kernels take `e^` of differences from a row's maximum,
/// never above 0, and of a negated gate `g`, where `g ≤ -88` gives a SiLU within 1e-35 of
/// its true value either way). NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // 2^n from its exponent bits: n is in [-126, 127] after the clamp.
    e_r * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Lanes of the reductions below: independent running values a vector unit keeps side by side.
const LANES: usize = 8;

/// `Σ f(x)` over `xs` in [`LANES`] running sums added at the end (a single running sum is one
/// long chain of dependent additions that the compiler may not reorder).
#[inline(always)]
pub(crate) fn sum_of<T: Real>(xs: &[T], f: impl Fn(T) -> T) -> T {
    let mut lanes = [T::zero(); LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder().iter().fold(T::zero(), |s, &x| s + f(x));
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = *lane + f(x);
        }
    }
    lanes.into_iter().fold(rest, |s, lane| s + lane)
}

/// The largest of `xs` (-∞ when empty), in [`LANES`] running maxima.
#[inline(always)]
pub(crate) fn max_of<T: Real>(xs: &[T]) -> T {
    let mut lanes = [T::neg_infinity(); LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder().iter().fold(T::neg_infinity(), |m, &x| m.max(x));
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(x);
        }
    }
    lanes.into_iter().fold(rest, |m, lane| m.max(lane))
}

/// `dst (m × n) = a · b` (or `dst + a · b` when `accumulate`), every matrix row-major and
/// contiguous; `a` is `m × k`, or `k × m` read transposed when `a_t`; `b` is `k × n`, or
/// `n × k` read transposed when `b_t`. One thread.
#[allow(clippy::too_many_arguments)]
pub(crate) fn product<T: Real>(dst: &mut [T], (m, n, k): (usize, usize, usize), a: &[T], a_t: bool, b: &[T], b_t: bool, accumulate: bool) {
    assert!(
        dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n,
        "product: operands too short"
    );
    // Element (i, l) of a: a[i·k + l], or a[l·m + i] transposed; of b, (l, j): b[l·n + j], or
    // b[j·k + l] transposed.
    let (a_cs, a_rs) = if a_t { (m as isize, 1) } else { (1, k as isize) };
    let (b_cs, b_rs) = if b_t { (k as isize, 1) } else { (1, n as isize) };
    // SAFETY: the strides above stay inside `m × k`, `k × n` and `m × n` elements, which the
    // assertion checked each slice holds; `dst` is borrowed mutably, so nothing else reads it;
    // T is f32 or f64 (the op's dtypes), which gemm takes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Elements a task of [`zeros`] and [`copied`] writes.
const FILL_TASK: usize = 1 << 16;

/// `n` zeros written by the thread pool: an op's fresh output. Filled on the calling thread,
/// it was a serial pass over the whole tensor (and its first touch of new pages) that the
/// other cores waited out.
pub(crate) fn zeros<T: Float + Send + Sync>(n: usize) -> Vec<T> {
    filled(n, |_, part| part.fill(std::mem::MaybeUninit::new(T::zero())))
}

/// A copy of `xs` made by the thread pool.
fn copied<T: Copy + Send + Sync>(xs: &[T]) -> Vec<T> {
    filled(xs.len(), |first, part| {
        for (to, &from) in part.iter_mut().zip(&xs[first..]) {
            to.write(from);
        }
    })
}

/// A vector of `n` elements, tasks of [`FILL_TASK`] elements each writing theirs by `fill`
/// (given its first element's index): `fill` must write every element of its part.
fn filled<T: Send>(n: usize, fill: impl Fn(usize, &mut [std::mem::MaybeUninit<T>]) + Sync) -> Vec<T> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(FILL_TASK)
        .enumerate()
        .for_each(|(task, part)| fill(task * FILL_TASK, part));
    // SAFETY: the capacity is at least n, and the tasks above wrote each of the first n
    // elements (the callers' `fill` writes all of its part).
    unsafe { v.set_len(n) };
    v
}

/// A copy of a contiguous f32 or f64 `storage` laid out by `layout`, made by the thread pool:
/// a value already computed that an op gives as its output. `op` and `what` name the op and
/// the tensor in errors.
pub(crate) fn copy_of(storage: &CpuStorage, layout: &Layout, op: &str, what: &str) -> Result<CpuStorage> {
    Ok(match float_dtype(storage, op)? {
        DType::F32 => CpuStorage::F32(copied(contiguous::<f32>(storage, layout, what)?)),
        _ => CpuStorage::F64(copied(contiguous::<f64>(storage, layout, what)?)),
    })
}

/// A fused op with three operands, as its backward pass sees it: [`backward3`] reads the
/// operands and the output's gradient, this gives the shapes and computes.
pub(crate) trait Backward3 {
    /// The op's shapes.
    type Dims: Copy;
    /// The op in errors (`"causal attention backward"`).
    const NAME: &'static str;
    /// The operands in errors (`"the queries"`, ...).
    const OPERANDS: [&'static str; 3];
    /// The shapes, from the operands' layouts and the gradient's (the fourth); an error when
    /// they do not fit.
    fn dims(&self, layouts: [&Layout; 4]) -> Result<Self::Dims>;
    /// The three operands' gradients from their elements and the gradient's (the fourth).
    fn kernel<T: Real>(&self, d: Self::Dims, elements: [&[T]; 4]) -> [Vec<T>; 3];
}

/// `op`'s backward pass on a CPU: `inputs` and the output's gradient `grad` read as
/// contiguous f32 or f64 elements, the gradients shaped as the inputs.
pub(crate) fn backward3<B: Backward3>(
    op: &B,
    inputs: [&Tensor; 3],
    grad: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    let tensors = [inputs[0], inputs[1], inputs[2], &grad];
    let read = tensors.map(|t| t.storage_and_layout());
    let layouts = [read[0].1, read[1].1, read[2].1, read[3].1];
    let d = op.dims(layouts)?;
    let cpu = |i: usize| as_cpu(&read[i].0, B::NAME);
    let storages = [cpu(0)?, cpu(1)?, cpu(2)?, cpu(3)?];
    let names = [B::OPERANDS[0], B::OPERANDS[1], B::OPERANDS[2], "the gradient"];
    let [a, b, c] = match float_dtype(storages[0], B::NAME)? {
        DType::F32 => shaped(op.kernel(d, elements::<f32>(storages, layouts, names)?), inputs)?,
        _ => shaped(op.kernel(d, elements::<f64>(storages, layouts, names)?), inputs)?,
    };
    Ok((Some(a), Some(b), Some(c)))
}

/// The contiguous elements of four storages.
fn elements<'a, T: WithDType>(storages: [&'a CpuStorage; 4], layouts: [&Layout; 4], names: [&str; 4]) -> Result<[&'a [T]; 4]> {
    let one = |i: usize| contiguous::<T>(storages[i], layouts[i], names[i]);
    Ok([one(0)?, one(1)?, one(2)?, one(3)?])
}

/// Three gradients as tensors shaped as `like`'s.
fn shaped<T: WithDType>(grads: [Vec<T>; 3], like: [&Tensor; 3]) -> Result<[Tensor; 3]> {
    let [a, b, c] = grads;
    let tensor = |data: Vec<T>, like: &Tensor| Tensor::from_vec(data, like.shape(), like.device());
    Ok([tensor(a, like[0])?, tensor(b, like[1])?, tensor(c, like[2])?])
}

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

/// A tensor's storage as a CPU one (a backward pass reads its operands' directly); `op` names
/// the op in the error.
fn as_cpu<'a>(storage: &'a candle_core::Storage, op: &str) -> Result<&'a CpuStorage> {
    match storage {
        candle_core::Storage::Cpu(s) => Ok(s),
        _ => candle_core::bail!("{op}: a CPU op was given a tensor on another device"),
    }
}

/// The dtype of `storage` if the fused ops take it, else an error naming the op.
fn float_dtype(storage: &CpuStorage, op: &str) -> Result<DType> {
    match storage.dtype() {
        d @ (candle_core::DType::F32 | candle_core::DType::F64) => Ok(d),
        other => candle_core::bail!("{op}: {other:?} (f32 and f64 are supported)"),
    }
}

/// Checks the ops' tests share (and the frozen product's, `crate::frozen`).
#[cfg(test)]
pub(crate) mod check {
    use candle_core::{Tensor, Var};

    /// A variable of standard normal f64 values.
    pub fn random(dims: &[usize], device: &candle_core::Device) -> Var {
        Var::from_tensor(&Tensor::randn(0f64, 1.0, dims, device).unwrap()).unwrap()
    }

    /// The largest absolute difference between two f64 tensors.
    pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap()
    }

    /// `op` run in f32 gives its f64 output and gradients (of `Σ weights · output` with
    /// respect to each input) within `tolerance`: the f32 kernels, whose exponential is
    /// [`super::exp_f32`], against the f64 ones.
    pub fn f32_agrees(op: impl Fn(&[&Tensor]) -> candle_core::Result<Tensor>, inputs: &[&Var], weights: &Tensor, tolerance: f64) {
        use candle_core::DType;
        let singles: Vec<Var> = inputs
            .iter()
            .map(|v| Var::from_tensor(&v.as_tensor().to_dtype(DType::F32).unwrap()).unwrap())
            .collect();
        let run = |vars: Vec<&Tensor>, weights: &Tensor| {
            let out = op(&vars).unwrap();
            let grads = (&out * weights).unwrap().sum_all().unwrap().backward().unwrap();
            let grads: Vec<Tensor> = vars.iter().map(|v| grads.get(v).unwrap().to_dtype(DType::F64).unwrap()).collect();
            (out.to_dtype(DType::F64).unwrap(), grads)
        };
        let (double, double_grads) = run(inputs.iter().map(|v| v.as_tensor()).collect(), weights);
        let (single, single_grads) = run(
            singles.iter().map(|v| v.as_tensor()).collect(),
            &weights.to_dtype(DType::F32).unwrap(),
        );
        assert!(max_diff(&single, &double) < tolerance, "{}", max_diff(&single, &double));
        for (a, b) in single_grads.iter().zip(&double_grads) {
            assert!(max_diff(a, b) < tolerance, "{}", max_diff(a, b));
        }
    }

    /// A fused op's output `ours` and candle's composed `theirs`, both computed from `inputs` in
    /// f64, agree within 1e-12 (of their size, above 1), and so do the gradients of
    /// `Σ weights · output` with respect to each input, which are not all zero.
    pub fn agree(ours: &Tensor, theirs: &Tensor, inputs: &[&Var], weights: &Tensor) {
        let largest = |t: &Tensor| t.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        // 1e-12 of the values' size, when they are larger than 1 (a random row of small values
        // gives the norm's gradient values in the thousands).
        let close = |a: &Tensor, b: &Tensor| {
            let diff = max_diff(a, b);
            assert!(diff < 1e-12 * largest(b).max(1.0), "{diff} (values up to {})", largest(b));
        };
        close(ours, theirs);
        let ours = (ours * weights).unwrap().sum_all().unwrap().backward().unwrap();
        let theirs = (theirs * weights).unwrap().sum_all().unwrap().backward().unwrap();
        for input in inputs {
            let (a, b) = (ours.get(input.as_tensor()).unwrap(), theirs.get(input.as_tensor()).unwrap());
            assert_eq!(a.dims(), input.as_tensor().dims());
            close(a, b);
            assert!(largest(a) > 1e-3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 exponential is the library's within 2 units in the last place wherever the
    /// result is a normal f32, is exact at 0, saturates at the clamp and keeps NaN.
    #[test]
    fn the_f32_exponential_is_the_librarys() {
        let mut worst = 0f64;
        for i in 0..=2_000_000 {
            let x = -87.0 + 175.0 * i as f64 / 2_000_000.0;
            let want = (x as f32 as f64).exp();
            let got = exp_f32(x as f32) as f64;
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1000.0), exp_f32(-87.0));
        assert!(exp_f32(-1000.0) > 0.0 && exp_f32(1000.0).is_finite());
        assert!(exp_f32(f32::NAN).is_nan());
    }

    /// The lane reductions give the plain sum and maximum, whatever the length's remainder.
    #[test]
    fn the_lane_reductions_are_the_plain_ones() {
        for n in 0..40 {
            let xs: Vec<f64> = (0..n).map(|i| ((i * 37 % 11) as f64 - 5.0) * 0.25).collect();
            let sum: f64 = xs.iter().map(|x| x * x).sum();
            assert!((sum_of(&xs, |x| x * x) - sum).abs() < 1e-12);
            assert_eq!(max_of(&xs), xs.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        }
    }
}
