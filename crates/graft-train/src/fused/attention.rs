//! Causal self-attention, `softmax(scale · q kᵀ + causal mask) v`, as one op with its own
//! backward pass. Composed (candle's matmul, a causal softmax, a matmul) it multiplied every
//! query by every key, the half a query never sees included, wrote the `[len, len]` scores and
//! probabilities of every head, and backward took four more full products. Here each task takes
//! one head's queries a block of rows at a time and multiplies them with the keys up to the
//! block's last position only (about half the arithmetic of a long example); backward works
//! the probabilities out again from `q` and `k`, a block at a time, rather than keeping them.
//!
//! Queries are `[..., g · len, hd]` (the `g` query heads that share a key and value head as
//! one block of rows, `[..., len, hd]` each), keys and values `[..., len, hd]`, for positions
//! `0..len` (training reads whole examples from their start): position `i` sees keys `0..=i`.
//! The products are the gemm crate's (candle's CPU matmul), each on one thread: the tasks are
//! what runs in parallel. This module owns the arithmetic only, never the model.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{as_cpu, backward3, contiguous, copy_of, float_dtype, max_of, on_cpu, product, sum_of, zeros, Backward3, Real};

/// Query rows a block takes: each block multiplies its rows by the keys up to its last
/// position, so smaller blocks skip more of the masked half, larger ones make longer products.
const BLOCK: usize = 64;

struct CausalAttention {
    scale: f64,
    /// The output, when a run without a graph already computed it on the same operands: the
    /// op then takes it as it is, and only its backward pass computes.
    known: Option<Tensor>,
}

/// The shapes of one call: `heads` query heads sharing each key/value head, `len` positions,
/// `hd` values per head.
#[derive(Clone, Copy, Debug)]
struct Dims {
    heads: usize,
    len: usize,
    hd: usize,
}

impl Dims {
    fn of(q: &Layout, k: &Layout, v: &Layout) -> Result<Dims> {
        let (qd, kd) = (q.dims(), k.dims());
        if kd != v.dims() || qd.len() != kd.len() || qd.len() < 2 {
            candle_core::bail!("causal attention: queries {qd:?}, keys {kd:?}, values {:?}", v.dims());
        }
        let rank = qd.len();
        let (rows, hd, len) = (qd[rank - 2], qd[rank - 1], kd[rank - 2]);
        if qd[..rank - 2] != kd[..rank - 2] || kd[rank - 1] != hd || len == 0 || hd == 0 || rows % len != 0 {
            candle_core::bail!("causal attention: queries {qd:?} must be [..., g · len, hd] for keys {kd:?}");
        }
        Ok(Dims {
            heads: rows / len,
            len,
            hd,
        })
    }
}

/// The probabilities of a block of query rows, in place of their scores (`rows × keys`, the
/// block's first row at position `first`): `softmax(scale · scores)` over the keys each row
/// sees, zero over the ones it does not.
fn softmax_rows<T: Real>(p: &mut [T], keys: usize, first: usize, scale: T) {
    for (i, row) in p.chunks_mut(keys).enumerate() {
        let (seen, unseen) = row.split_at_mut(first + i + 1);
        seen.iter_mut().for_each(|s| *s = *s * scale);
        let max = max_of(seen);
        seen.iter_mut().for_each(|s| *s = (*s - max).exp_fast());
        let inv = T::one() / sum_of(seen, |s| s);
        seen.iter_mut().for_each(|s| *s = *s * inv);
        unseen.fill(T::zero());
    }
}

/// One block's probabilities: the rows of `q_block` (positions `first..first + rows`) against
/// the keys `k` up to the block's last position, into `p` (`rows × keys`).
fn probabilities<T: Real>(p: &mut Vec<T>, q_block: &[T], k: &[T], first: usize, d: Dims, scale: T) -> usize {
    let rows = q_block.len() / d.hd;
    let keys = first + rows;
    p.resize(rows * keys, T::zero());
    product(p, (rows, keys, d.hd), q_block, false, &k[..keys * d.hd], true, false);
    softmax_rows(p, keys, first, scale);
    keys
}

fn forward<T: Real>(q: &[T], k: &[T], v: &[T], d: Dims, scale: T) -> Vec<T> {
    let head = d.len * d.hd;
    let mut out = zeros(q.len());
    out.par_chunks_mut(head)
        .zip(q.par_chunks(head))
        .enumerate()
        .for_each(|(h, (out, q))| {
            let group = h / d.heads;
            let (k, v) = (&k[group * head..][..head], &v[group * head..][..head]);
            out.par_chunks_mut(BLOCK * d.hd)
                .zip(q.par_chunks(BLOCK * d.hd))
                .enumerate()
                .for_each_init(Vec::new, |p, (b, (out, q))| {
                    let keys = probabilities(p, q, k, b * BLOCK, d, scale);
                    product(out, (q.len() / d.hd, d.hd, keys), p, false, v, false, false);
                });
        });
    out
}

/// The gradients of `q`, `k` and `v` from the output's gradient `g`. Each query head runs its
/// blocks in turn: its rows of `dq` are its own, and its shares of its group's `dk` and `dv`
/// are summed over the group's heads afterwards.
fn backward<T: Real>(q: &[T], k: &[T], v: &[T], g: &[T], d: Dims, scale: T) -> [Vec<T>; 3] {
    let head = d.len * d.hd;
    let mut dq = zeros(q.len());
    let shares: Vec<(Vec<T>, Vec<T>)> = dq
        .par_chunks_mut(head)
        .zip(q.par_chunks(head).zip(g.par_chunks(head)))
        .enumerate()
        .map(|(h, (dq, (q, g)))| {
            let group = h / d.heads;
            let (k, v) = (&k[group * head..][..head], &v[group * head..][..head]);
            let (mut dk, mut dv) = (vec![T::zero(); head], vec![T::zero(); head]);
            let (mut p, mut dp) = (Vec::new(), Vec::new());
            for (b, ((dq, q), g)) in dq
                .chunks_mut(BLOCK * d.hd)
                .zip(q.chunks(BLOCK * d.hd))
                .zip(g.chunks(BLOCK * d.hd))
                .enumerate()
            {
                let rows = q.len() / d.hd;
                let keys = probabilities(&mut p, q, k, b * BLOCK, d, scale);
                // dv += pᵀ g
                product(&mut dv, (keys, d.hd, rows), &p, true, g, false, true);
                // dp = g vᵀ, then ds = scale · p ∘ (dp - Σ p ∘ dp) row by row, in place.
                dp.resize(rows * keys, T::zero());
                product(&mut dp, (rows, keys, d.hd), g, false, &v[..keys * d.hd], true, false);
                for (ds, p) in dp.chunks_mut(keys).zip(p.chunks(keys)) {
                    let dot = ds.iter().zip(p).fold(T::zero(), |s, (&ds, &p)| s + ds * p);
                    ds.iter_mut().zip(p).for_each(|(ds, &p)| *ds = scale * p * (*ds - dot));
                }
                // dq = ds k, dk += dsᵀ q
                product(dq, (rows, d.hd, keys), &dp, false, &k[..keys * d.hd], false, false);
                product(&mut dk, (keys, d.hd, rows), &dp, true, q, false, true);
            }
            (dk, dv)
        })
        .collect();
    let mut dk = zeros(k.len());
    let mut dv = zeros(v.len());
    dk.par_chunks_mut(head)
        .zip(dv.par_chunks_mut(head))
        .zip(shares.par_chunks(d.heads))
        .for_each(|((dk, dv), shares)| {
            for (share_k, share_v) in shares {
                dk.iter_mut().zip(share_k).for_each(|(a, &b)| *a = *a + b);
                dv.iter_mut().zip(share_v).for_each(|(a, &b)| *a = *a + b);
            }
        });
    [dq, dk, dv]
}

/// A copy of `known`, the output already computed for queries laid out as `ql`.
fn known_output(known: &Tensor, ql: &Layout) -> Result<(CpuStorage, Shape)> {
    if known.shape() != ql.shape() {
        candle_core::bail!("causal attention: a known output {:?} for queries {:?}", known.dims(), ql.dims());
    }
    let (storage, layout) = known.storage_and_layout();
    let out = copy_of(
        as_cpu(&storage, "causal attention")?,
        layout,
        "causal attention",
        "the known output",
    )?;
    Ok((out, ql.shape().clone()))
}

impl Backward3 for CausalAttention {
    type Dims = Dims;
    const NAME: &'static str = "causal attention backward";
    const OPERANDS: [&'static str; 3] = ["the queries", "the keys", "the values"];

    fn dims(&self, [ql, kl, vl, gl]: [&Layout; 4]) -> Result<Dims> {
        if gl.shape() != ql.shape() {
            candle_core::bail!("causal attention backward: gradient {:?} for queries {:?}", gl.dims(), ql.dims());
        }
        Dims::of(ql, kl, vl)
    }

    fn kernel<T: Real>(&self, d: Dims, [q, k, v, g]: [&[T]; 4]) -> [Vec<T>; 3] {
        backward(q, k, v, g, d, T::from(self.scale).unwrap_or_else(T::one))
    }
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        ql: &Layout,
        k: &CpuStorage,
        kl: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(ql, kl, vl)?;
        if let Some(known) = &self.known {
            return known_output(known, ql);
        }
        let out = match float_dtype(q, "causal attention")? {
            DType::F32 => CpuStorage::F32(forward(
                contiguous(q, ql, "the queries")?,
                contiguous(k, kl, "the keys")?,
                contiguous(v, vl, "the values")?,
                d,
                self.scale as f32,
            )),
            _ => CpuStorage::F64(forward(
                contiguous(q, ql, "the queries")?,
                contiguous(k, kl, "the keys")?,
                contiguous(v, vl, "the values")?,
                d,
                self.scale,
            )),
        };
        Ok((out, ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        backward3(self, [q, k, v], grad)
    }
}

/// `softmax(scale · q kᵀ + causal mask) v` for queries `[..., g · len, hd]` (the `g` query
/// heads that share a key and value head, as one block of rows) and keys and values
/// `[..., len, hd]`, with a backward pass to all three. On a GPU, candle's composed ops (the
/// fused kernel is CPU code).
pub fn causal(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    if !on_cpu(q) {
        return composed(q, k, v, scale);
    }
    let op = CausalAttention { scale, known: None };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// [`causal`] of `q`, `k` and `v` when its value is known: `out`, computed by `causal` on the
/// same operands (a training step's first run of a layer, without a graph). The value is
/// `out`'s, the backward pass `causal`'s, so the second run (with a graph) does not multiply
/// again. On a GPU, where nothing is kept, [`causal`].
pub fn known(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, out: &Tensor) -> Result<Tensor> {
    if !on_cpu(q) {
        return causal(q, k, v, scale);
    }
    let op = CausalAttention {
        scale,
        known: Some(out.detach().contiguous()?),
    };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// [`causal`] from candle's ops: the scores, a masked softmax, the product with the values.
fn composed(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    use candle_core::D;
    let scores = q.contiguous()?.matmul(&k.contiguous()?.t()?)?;
    let (rows, len) = (scores.dim(D::Minus2)?, scores.dim(D::Minus1)?);
    let mask: Vec<f32> = (0..rows * len)
        .map(|i| if i % len > (i / len) % len { f32::NEG_INFINITY } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, (rows, len), scores.device())?.to_dtype(scores.dtype())?;
    let masked = (scores * scale)?.broadcast_add(&mask)?;
    candle_nn::ops::softmax(&masked, D::Minus1)?.matmul(&v.contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::check::{agree, f32_agrees, max_diff, random};
    use candle_core::Device;

    /// The fused op is candle's composed attention, forward and backward, with grouped query
    /// heads and lengths that end inside a block and on its edge; so is its known form.
    #[test]
    fn it_is_the_composed_masked_attention() {
        let device = Device::Cpu;
        for (groups, heads, len, hd) in [(2, 3, 7, 8), (1, 2, BLOCK * 2 + 5, 16), (3, 1, BLOCK, 4)] {
            let q = random(&[1, groups, heads * len, hd], &device);
            let k = random(&[1, groups, len, hd], &device);
            let v = random(&[1, groups, len, hd], &device);
            let weights = Tensor::randn(0f64, 1.0, (1, groups, heads * len, hd), &device).unwrap();
            let ours = causal(q.as_tensor(), k.as_tensor(), v.as_tensor(), 0.37).unwrap();
            let theirs = composed(q.as_tensor(), k.as_tensor(), v.as_tensor(), 0.37).unwrap();
            agree(&ours, &theirs, &[&q, &k, &v], &weights);
            // Its value known, the op gives it and the same gradients.
            let known = known(q.as_tensor(), k.as_tensor(), v.as_tensor(), 0.37, &ours.detach()).unwrap();
            assert_eq!(max_diff(&known, &ours), 0.0);
            agree(&known, &theirs, &[&q, &k, &v], &weights);
            f32_agrees(|t| causal(t[0], t[1], t[2], 0.37), &[&q, &k, &v], &weights, 1e-5);
        }
    }

    /// A query never reads a later key: changing the last key and value moves only the last
    /// position's output (of each head), and f32 gives f64's values.
    #[test]
    fn a_query_sees_no_later_key() {
        let device = Device::Cpu;
        let (heads, len, hd) = (2, BLOCK + 3, 8);
        let q = Tensor::randn(0f64, 1.0, (1, 1, heads * len, hd), &device).unwrap();
        let k = Tensor::randn(0f64, 1.0, (1, 1, len, hd), &device).unwrap();
        let v = Tensor::randn(0f64, 1.0, (1, 1, len, hd), &device).unwrap();
        let bump = |t: &Tensor| t.narrow(2, 0, len - 1).unwrap().contiguous().unwrap();
        let last = Tensor::ones((1, 1, 1, hd), DType::F64, &device).unwrap();
        let k2 = Tensor::cat(&[&bump(&k), &last], 2).unwrap();
        let v2 = Tensor::cat(&[&bump(&v), &last], 2).unwrap();
        let before = causal(&q, &k, &v, 0.5).unwrap().reshape((heads, len, hd)).unwrap();
        let after = causal(&q, &k2, &v2, 0.5).unwrap().reshape((heads, len, hd)).unwrap();
        let earlier = |t: &Tensor| t.narrow(1, 0, len - 1).unwrap();
        assert_eq!(max_diff(&earlier(&before), &earlier(&after)), 0.0);
        assert!(max_diff(&before, &after) > 1e-3, "the last position reads the last key");

        let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let single = causal(&f32(&q), &f32(&k), &f32(&v), 0.5).unwrap().to_dtype(DType::F64).unwrap();
        assert!(max_diff(&single.reshape((heads, len, hd)).unwrap(), &before) < 1e-5);

        // A single position reads its own value alone.
        let (q1, k1, v1) = (q.narrow(2, 0, 1).unwrap(), k.narrow(2, 0, 1).unwrap(), v.narrow(2, 0, 1).unwrap());
        assert!(max_diff(&causal(&q1, &k1, &v1, 0.5).unwrap(), &v1) < 1e-15);
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let device = Device::Cpu;
        let zeros = |dims: &[usize]| Tensor::zeros(dims, DType::F32, &device).unwrap();
        let message = causal(&zeros(&[1, 2, 7, 4]), &zeros(&[1, 2, 3, 4]), &zeros(&[1, 2, 3, 4]), 1.0)
            .unwrap_err()
            .to_string();
        assert!(message.contains("g · len"), "{message}");
        assert!(causal(&zeros(&[1, 2, 6, 4]), &zeros(&[1, 2, 3, 4]), &zeros(&[1, 2, 3, 8]), 1.0).is_err());
        assert!(causal(&zeros(&[1, 2, 6, 0]), &zeros(&[1, 2, 3, 0]), &zeros(&[1, 2, 3, 0]), 1.0).is_err());
    }
}
