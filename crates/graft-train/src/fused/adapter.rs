//! A LoRA adapter's part of a projection, `s · (x ∘ m) Aᵀ Bᵀ` (`m` the dropout mask, or none),
//! as one op with its own backward pass. Composed from candle's ops it was a mask tensor drawn
//! and multiplied in, two matmuls (each copying its transposed operand and zero-filling its
//! output first) and a scaling of the whole `[rows, out]` output, most of it on one thread
//! while the others waited. Here tasks take blocks of rows: each draws its rows' mask, applies
//! it, and multiplies through the rank-wide middle, scaled there (`rank` values a row, not
//! `out`); backward draws the mask again instead of keeping it, and each task's shares of
//! `dA` and `dB` are summed at the end.
//!
//! `x` is `[..., in]`, `A` `[rank, in]`, `B` `[out, rank]`. This module owns the arithmetic
//! only: the adapter's weights, scale and dropout seed are `crate::lora`'s.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{backward3, contiguous, float_dtype, product, zeros, Backward3, Real};
use crate::lora::Dropout;

/// Rows a task takes.
const BLOCK: usize = 64;

struct Adapter {
    scale: f64,
    dropout: Option<Dropout>,
}

/// The shapes of one call.
#[derive(Clone, Copy, Debug)]
struct Dims {
    inp: usize,
    rank: usize,
    out: usize,
}

impl Dims {
    fn of(x: &Layout, a: &Layout, b: &Layout) -> Result<Dims> {
        let (rank, inp) = a.shape().dims2()?;
        let (out, b_rank) = b.shape().dims2()?;
        let x_in = x.dims().last().copied().unwrap_or(0);
        if x_in != inp || b_rank != rank || inp == 0 || rank == 0 {
            candle_core::bail!("adapter: input {:?}, A {:?}, B {:?}", x.dims(), a.dims(), b.dims());
        }
        Ok(Dims { inp, rank, out })
    }
}

/// A block of rows through the adapter up to its middle: the block's dropout factors and
/// masked input (none without dropout: the input is `x` itself) and `down = s · (x ∘ m) Aᵀ`.
struct Middle<T> {
    mask: Vec<T>,
    masked: Vec<T>,
    down: Vec<T>,
}

impl<T: Real> Middle<T> {
    fn new() -> Middle<T> {
        Middle {
            mask: Vec::new(),
            masked: Vec::new(),
            down: Vec::new(),
        }
    }

    /// Fills `self` for the rows `x`, the first of them row `first` of the whole input.
    fn compute(&mut self, x: &[T], first: usize, a: &[T], d: Dims, scale: T, dropout: Option<&Dropout>) {
        let rows = x.len() / d.inp;
        if let Some(dropout) = dropout {
            self.mask.resize(x.len(), T::zero());
            dropout.fill(first * d.inp, &mut self.mask);
            self.masked.clear();
            self.masked.extend(self.mask.iter().zip(x).map(|(&m, &x)| m * x));
        }
        let masked = if dropout.is_some() { &self.masked[..] } else { x };
        self.down.resize(rows * d.rank, T::zero());
        product(&mut self.down, (rows, d.rank, d.inp), masked, false, a, true, false);
        self.down.iter_mut().for_each(|v| *v = *v * scale);
    }

    /// The block's input as the adapter reads it: masked, or `x` without dropout.
    fn input<'a>(&'a self, x: &'a [T], dropout: Option<&Dropout>) -> &'a [T] {
        if dropout.is_some() {
            &self.masked
        } else {
            x
        }
    }
}

fn forward<T: Real>(x: &[T], a: &[T], b: &[T], d: Dims, scale: T, dropout: Option<&Dropout>) -> Vec<T> {
    let rows = x.len() / d.inp;
    let mut out = zeros(rows * d.out);
    out.par_chunks_mut(BLOCK * d.out)
        .zip(x.par_chunks(BLOCK * d.inp))
        .enumerate()
        .for_each_init(Middle::new, |middle, (block, (out, x))| {
            middle.compute(x, block * BLOCK, a, d, scale, dropout);
            product(out, (x.len() / d.inp, d.out, d.rank), &middle.down, false, b, true, false);
        });
    out
}

/// One task's work backward: its blocks' shares of `dA` and `dB`, and its buffers.
struct Shares<T> {
    da: Vec<T>,
    db: Vec<T>,
    middle: Middle<T>,
    /// `s · g B` for a block.
    gb: Vec<T>,
}

/// The gradients of `x`, `A` and `B` from the output's gradient `g`: `dx = (s · g B) A ∘ m` row
/// by row; `dA = (s · g B)ᵀ (x ∘ m)` and `dB = gᵀ (s · (x ∘ m) Aᵀ)`, sums over the rows, each
/// task's share summed at the end.
fn backward<T: Real>(x: &[T], a: &[T], b: &[T], g: &[T], d: Dims, scale: T, dropout: Option<&Dropout>) -> [Vec<T>; 3] {
    let rows = x.len() / d.inp;
    let mut dx = zeros(rows * d.inp);
    let task = || Shares {
        da: vec![T::zero(); d.rank * d.inp],
        db: vec![T::zero(); d.out * d.rank],
        middle: Middle::new(),
        gb: Vec::new(),
    };
    let sum = dx
        .par_chunks_mut(BLOCK * d.inp)
        .zip(x.par_chunks(BLOCK * d.inp).zip(g.par_chunks(BLOCK * d.out)))
        .enumerate()
        .fold(task, |mut s, (block, (dx, (x, g)))| {
            let rows = x.len() / d.inp;
            s.middle.compute(x, block * BLOCK, a, d, scale, dropout);
            let input = s.middle.input(x, dropout);
            product(&mut s.db, (d.out, d.rank, rows), g, true, &s.middle.down, false, true);
            s.gb.resize(rows * d.rank, T::zero());
            product(&mut s.gb, (rows, d.rank, d.out), g, false, b, false, false);
            s.gb.iter_mut().for_each(|v| *v = *v * scale);
            product(&mut s.da, (d.rank, d.inp, rows), &s.gb, true, input, false, true);
            product(dx, (rows, d.inp, d.rank), &s.gb, false, a, false, false);
            if dropout.is_some() {
                dx.iter_mut().zip(&s.middle.mask).for_each(|(dx, &m)| *dx = *dx * m);
            }
            s
        })
        .map(|s| (s.da, s.db))
        .reduce_with(|(mut da, mut db), (da2, db2)| {
            da.iter_mut().zip(&da2).for_each(|(a, &b)| *a = *a + b);
            db.iter_mut().zip(&db2).for_each(|(a, &b)| *a = *a + b);
            (da, db)
        });
    let (da, db) = sum.unwrap_or_else(|| (vec![T::zero(); d.rank * d.inp], vec![T::zero(); d.out * d.rank]));
    [dx, da, db]
}

impl Backward3 for Adapter {
    type Dims = Dims;
    const NAME: &'static str = "adapter backward";
    const OPERANDS: [&'static str; 3] = ["the input", "A", "B"];

    fn dims(&self, [xl, al, bl, gl]: [&Layout; 4]) -> Result<Dims> {
        let d = Dims::of(xl, al, bl)?;
        if gl.shape().elem_count() != xl.shape().elem_count() / d.inp * d.out {
            candle_core::bail!("adapter backward: gradient {:?} for input {:?}", gl.dims(), xl.dims());
        }
        Ok(d)
    }

    fn kernel<T: Real>(&self, d: Dims, [x, a, b, g]: [&[T]; 4]) -> [Vec<T>; 3] {
        backward(x, a, b, g, d, T::from(self.scale).unwrap_or_else(T::one), self.dropout.as_ref())
    }
}

impl CustomOp3 for Adapter {
    fn name(&self) -> &'static str {
        "lora-adapter"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(xl, al, bl)?;
        let out = match float_dtype(x, "adapter")? {
            DType::F32 => CpuStorage::F32(forward(
                contiguous(x, xl, "the input")?,
                contiguous(a, al, "A")?,
                contiguous(b, bl, "B")?,
                d,
                self.scale as f32,
                self.dropout.as_ref(),
            )),
            _ => CpuStorage::F64(forward(
                contiguous(x, xl, "the input")?,
                contiguous(a, al, "A")?,
                contiguous(b, bl, "B")?,
                d,
                self.scale,
                self.dropout.as_ref(),
            )),
        };
        let mut dims = xl.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = d.out;
        }
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        backward3(self, [x, a, b], grad)
    }
}

/// `s · (x ∘ m) Aᵀ Bᵀ` for `x` `[..., in]`, `A` `[rank, in]` and `B` `[out, rank]`, `m` drawn by
/// `dropout` (none: `x` as it is), with a backward pass to all three. On a GPU, candle's
/// composed ops (the fused kernel is CPU code).
pub fn apply(x: &Tensor, a: &Tensor, b: &Tensor, scale: f64, dropout: Option<Dropout>) -> Result<Tensor> {
    if !super::on_cpu(x) {
        return composed(x, a, b, scale, dropout);
    }
    let op = Adapter { scale, dropout };
    x.contiguous()?.apply_op3(&a.contiguous()?, &b.contiguous()?, op)
}

/// [`apply`] from candle's ops: the mask as a tensor, two products, the scaling.
fn composed(x: &Tensor, a: &Tensor, b: &Tensor, scale: f64, dropout: Option<Dropout>) -> Result<Tensor> {
    let dropped;
    let x = match dropout {
        Some(dropout) => {
            let mask = Tensor::from_vec(dropout.mask(x.elem_count()), x.shape(), x.device())?.to_dtype(x.dtype())?;
            dropped = (x * mask)?;
            &dropped
        }
        None => x,
    };
    let down = x.broadcast_matmul(&a.t()?)?;
    down.broadcast_matmul(&b.t()?)?.affine(scale, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::check::{agree, f32_agrees, random};
    use candle_core::Device;

    /// The fused op is candle's composed adapter, forward and backward, with and without
    /// dropout, for inputs that end inside a block of rows and on its edge.
    #[test]
    fn it_is_the_composed_adapter() {
        let device = Device::Cpu;
        for (rows, inp, rank, out) in [(5, 12, 4, 7), (BLOCK * 2 + 3, 40, 8, 24), (BLOCK, 16, 1, 3)] {
            let x = random(&[1, rows, inp], &device);
            let a = random(&[rank, inp], &device);
            let b = random(&[out, rank], &device);
            let weights = Tensor::randn(0f64, 1.0, (1, rows, out), &device).unwrap();
            for dropout in [None, Some(Dropout::new(0.3, 11))] {
                let ours = apply(x.as_tensor(), a.as_tensor(), b.as_tensor(), 0.7, dropout).unwrap();
                let theirs = composed(x.as_tensor(), a.as_tensor(), b.as_tensor(), 0.7, dropout).unwrap();
                assert_eq!(ours.dims(), &[1, rows, out]);
                agree(&ours, &theirs, &[&x, &a, &b], &weights);
                f32_agrees(|t| apply(t[0], t[1], t[2], 0.7, dropout), &[&x, &a, &b], &weights, 1e-4);
            }
        }
    }

    /// Dropout zeroes whole inputs: a dropped element's gradient is zero, and the same seed
    /// drops the same elements.
    #[test]
    fn a_dropped_input_gets_no_gradient() {
        let device = Device::Cpu;
        let (rows, inp) = (BLOCK + 9, 20);
        let x = random(&[rows, inp], &device);
        let (a, b) = (random(&[4, inp], &device), random(&[6, 4], &device));
        let dropout = Dropout::new(0.5, 5);
        let out = apply(x.as_tensor(), a.as_tensor(), b.as_tensor(), 1.0, Some(dropout)).unwrap();
        let again = apply(x.as_tensor(), a.as_tensor(), b.as_tensor(), 1.0, Some(dropout)).unwrap();
        assert_eq!(crate::fused::check::max_diff(&out, &again), 0.0);
        let grads = out.sum_all().unwrap().backward().unwrap();
        let dx = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let mask = dropout.mask(rows * inp);
        let dropped = mask.iter().filter(|m| **m == 0.0).count();
        assert!(dropped > rows * inp / 4 && dropped < rows * inp * 3 / 4, "{dropped}");
        for (g, m) in dx.iter().zip(&mask) {
            assert_eq!(*g == 0.0, *m == 0.0);
        }
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let device = Device::Cpu;
        let zeros = |dims: &[usize]| Tensor::zeros(dims, DType::F32, &device).unwrap();
        let message = apply(&zeros(&[2, 5]), &zeros(&[3, 4]), &zeros(&[6, 3]), 1.0, None)
            .unwrap_err()
            .to_string();
        assert!(message.contains("adapter"), "{message}");
        assert!(apply(&zeros(&[2, 4]), &zeros(&[3, 4]), &zeros(&[6, 2]), 1.0, None).is_err());
        assert!(apply(&zeros(&[2, 0]), &zeros(&[3, 0]), &zeros(&[6, 3]), 1.0, None).is_err());
    }
}
