#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use candle_core::{Context, Device, Result, Storage, Tensor, WithDType};

use half::bf16;
use half::f16;
use rayon::prelude::*;

use std::{f32, iter::Sum};

// Optional hardware prefetch for ping‑pong style scheduling.
#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::_mm_prefetch;

// --- portable wrapper around architecture‑specific prefetch -------------
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch(addr: *const u8) {
    _mm_prefetch(addr as *const i8, core::arch::x86_64::_MM_HINT_T0);
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn prefetch(addr: *const u8) {
    core::arch::asm!(
        "prfm pldl1keep, [{0}]",
        in(reg) addr,
        options(readonly, nostack, preserves_flags)
    );
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[inline(always)]
unsafe fn prefetch(_addr: *const u8) {}
// -----------------------------------------------------------------------

use crate::attention::SdpaParams;

// graft: upstream ran the two kernels below in a second rayon pool of its own (one thread per
// CPU, besides rayon's global pool). Its idle threads spin in `sched_yield` while the global
// pool's threads do the matmuls, so on a small CPU they took cores from the work (a decode
// profile on 2 cores: 18% of all samples in that pool's idle threads). The kernels now run in
// whatever pool calls them; each one's result does not depend on the pool.

const DOT_CHUNK: usize = 4;

/// Size (in KV positions) processed by each inner‑tile job.
const TILE_KV: usize = 16;

/// Unrolled dot‑product that works purely in `f32`.
#[inline]
fn vec_dot_f32<T: UpcastF32 + Copy>(a: &[T], b: &[T]) -> f32 {
    let mut sum = 0f32;
    let chunks = a.len() / DOT_CHUNK;
    for i in 0..chunks {
        let i_chunk = i * DOT_CHUNK;
        sum += a[i_chunk].to_f32() * b[i_chunk].to_f32()
            + a[i_chunk + 1].to_f32() * b[i_chunk + 1].to_f32()
            + a[i_chunk + 2].to_f32() * b[i_chunk + 2].to_f32()
            + a[i_chunk + 3].to_f32() * b[i_chunk + 3].to_f32();
    }
    for i in (chunks * DOT_CHUNK)..a.len() {
        sum += a[i].to_f32() * b[i].to_f32();
    }
    sum
}

#[inline]
fn clamp_index(idx: usize, dim: usize) -> usize {
    if dim == 0 {
        0
    } else if idx >= dim {
        dim - 1
    } else {
        idx
    }
}

#[inline]
fn mask_offset(
    dims: &[usize],
    b: usize,
    h: usize,
    b_i: usize,
    h_i: usize,
    q_pos: usize,
    kv_pos: usize,
) -> Option<usize> {
    if dims.is_empty() {
        return Some(0);
    }

    match dims.len() {
        1 => {
            let kv_dim = dims[0];
            if kv_dim == 0 {
                None
            } else {
                Some(clamp_index(kv_pos, kv_dim))
            }
        }
        2 => {
            let q_dim = dims[0];
            let kv_dim = dims[1];
            if q_dim == 0 || kv_dim == 0 {
                None
            } else {
                let q_idx = clamp_index(q_pos, q_dim);
                let kv_idx = clamp_index(kv_pos, kv_dim);
                Some(q_idx * kv_dim + kv_idx)
            }
        }
        3 => {
            let d0 = dims[0];
            let d1 = dims[1];
            let d2 = dims[2];
            if d0 == 0 || d1 == 0 || d2 == 0 {
                return None;
            }
            let q_idx = clamp_index(q_pos, d1);
            let kv_idx = clamp_index(kv_pos, d2);
            if d0 == b || d0 == 1 {
                let b_idx = if d0 == 1 { 0 } else { clamp_index(b_i, d0) };
                Some((b_idx * d1 + q_idx) * d2 + kv_idx)
            } else if d0 == h || d0 == 1 {
                let h_idx = if d0 == 1 { 0 } else { clamp_index(h_i, d0) };
                Some((h_idx * d1 + q_idx) * d2 + kv_idx)
            } else if d0 == b.saturating_mul(h) {
                let combined_idx = clamp_index(b_i * h + h_i, d0);
                Some((combined_idx * d1 + q_idx) * d2 + kv_idx)
            } else {
                Some(q_idx * d2 + kv_idx)
            }
        }
        4 => {
            let d0 = dims[0];
            let d1 = dims[1];
            let d2 = dims[2];
            let d3 = dims[3];
            if d0 == 0 || d1 == 0 || d2 == 0 || d3 == 0 {
                return None;
            }
            let b_idx = if d0 == 1 {
                0
            } else if d0 == b {
                clamp_index(b_i, d0)
            } else if d0 == b.saturating_mul(h) {
                clamp_index(b_i * h + h_i, d0)
            } else {
                clamp_index(b_i, d0)
            };
            let h_idx = if d1 == 1 {
                0
            } else if d1 == h {
                clamp_index(h_i, d1)
            } else if d1 == b {
                clamp_index(b_i, d1)
            } else {
                clamp_index(h_i, d1)
            };
            let q_idx = clamp_index(q_pos, d2);
            let kv_idx = clamp_index(kv_pos, d3);
            Some(((b_idx * d1 + h_idx) * d2 + q_idx) * d3 + kv_idx)
        }
        _ => {
            let q_dim = *dims.get(dims.len().saturating_sub(2))?;
            let kv_dim = *dims.last()?;
            if q_dim == 0 || kv_dim == 0 {
                return None;
            }
            let q_idx = clamp_index(q_pos, q_dim);
            let kv_idx = clamp_index(kv_pos, kv_dim);
            let mut prefix_dim = 1usize;
            for &dim in &dims[..dims.len() - 2] {
                if dim == 0 {
                    return None;
                }
                prefix_dim = prefix_dim.saturating_mul(dim);
            }
            let combined_idx = if prefix_dim == 0 {
                0
            } else {
                let idx_val = b_i * h + h_i;
                idx_val.min(prefix_dim - 1)
            };
            Some((combined_idx * q_dim + q_idx) * kv_dim + kv_idx)
        }
    }
}

struct MaskInfo<'a> {
    data: &'a [f32],
    dims: &'a [usize],
    b: usize,
    h: usize,
}

impl<'a> MaskInfo<'a> {
    #[inline]
    fn value(&self, b_i: usize, h_i: usize, q_pos: usize, kv_pos: usize) -> f32 {
        if let Some(idx) = mask_offset(self.dims, self.b, self.h, b_i, h_i, q_pos, kv_pos) {
            *self.data.get(idx).unwrap_or(&0.0)
        } else {
            0.0
        }
    }
}

pub trait DowncastF32 {
    fn cast(x: f32) -> Self;
}

impl DowncastF32 for f32 {
    fn cast(x: f32) -> Self {
        x
    }
}

impl DowncastF32 for f16 {
    fn cast(x: f32) -> Self {
        f16::from_f32(x)
    }
}

impl DowncastF32 for bf16 {
    fn cast(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

/// Up‑cast helper: convert any supported element type to `f32` once so that the
/// hot kernels can run entirely in `f32` and only down‑cast when writing out.
pub trait UpcastF32 {
    fn to_f32(self) -> f32;
}

impl UpcastF32 for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl UpcastF32 for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self.to_f32()
    }
}

impl UpcastF32 for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self.to_f32()
    }
}

pub fn run_flash_attn_cpu<T>(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    sdpa_params: &SdpaParams,
) -> Result<Tensor>
where
    T: WithDType + Sum + num_traits::real::Real + DowncastF32 + UpcastF32 + Copy,
{
    // Inline CPU slice extraction for q, k, v, and optional mask
    let (q_guard, q_layout) = q.storage_and_layout();
    let q_data: &[T] = if let Storage::Cpu(cpu) = &*q_guard {
        let data = cpu.as_slice::<T>().context("Expected CPU storage for q")?;
        &data[q_layout.start_offset()..]
    } else {
        return Err(candle_core::Error::Msg("Expected CPU storage for q".into()));
    };
    let (k_guard, k_layout) = k.storage_and_layout();
    let k_data: &[T] = if let Storage::Cpu(cpu) = &*k_guard {
        let data = cpu.as_slice::<T>().context("Expected CPU storage for k")?;
        &data[k_layout.start_offset()..]
    } else {
        return Err(candle_core::Error::Msg("Expected CPU storage for k".into()));
    };
    let (v_guard, v_layout) = v.storage_and_layout();
    let v_data: &[T] = if let Storage::Cpu(cpu) = &*v_guard {
        let data = cpu.as_slice::<T>().context("Expected CPU storage for v")?;
        &data[v_layout.start_offset()..]
    } else {
        return Err(candle_core::Error::Msg("Expected CPU storage for v".into()));
    };
    let mut mask_buffer: Option<Vec<f32>> = None;
    let mut mask_dims: Option<Vec<usize>> = None;
    if let Some(mask_tensor) = mask {
        mask_dims = Some(mask_tensor.shape().dims().to_vec());
        let buffer = {
            let (guard, layout) = mask_tensor.storage_and_layout();
            if let Storage::Cpu(cpu) = &*guard {
                let data = cpu
                    .as_slice::<T>()
                    .context("Expected CPU storage for mask")?;
                data[layout.start_offset()..]
                    .iter()
                    .map(|v| (*v).to_f32())
                    .collect::<Vec<f32>>()
            } else {
                return Err(candle_core::Error::Msg(
                    "Expected CPU storage for mask".into(),
                ));
            }
        };
        mask_buffer = Some(buffer);
    }
    // q_guard, k_guard, v_guard, and m_guard (if any) are kept in scope to hold storage alive

    let q_stride = q.stride();
    let k_stride = k.stride();
    let v_stride = v.stride();

    // Fast path for decode: q_len == 1
    let mask_dims_ref = mask_dims.as_deref();
    let mask_slice = mask_buffer.as_deref();

    if q.shape().dims()[1] == 1 {
        return flash_attn_cpu_single_q(
            q_data,
            k_data,
            v_data,
            mask_slice,
            mask_dims_ref,
            q.shape().dims(),
            k.shape().dims(),
            v.shape().dims(),
            q_stride,
            k_stride,
            v_stride,
            sdpa_params.softmax_scale,
            0.0,
            sdpa_params.softcap.unwrap_or(0.0),
        );
    }

    flash_attn_cpu(
        q_data,
        k_data,
        v_data,
        mask_slice,
        mask_dims_ref,
        q.shape().dims(),
        k.shape().dims(),
        v.shape().dims(),
        q_stride,
        k_stride,
        v_stride,
        sdpa_params.softmax_scale,
        0.0,
        sdpa_params.softcap.unwrap_or(0.0),
    )
}

/// graft: whether [`run_prompt_attn_cpu`] takes this mask: none, or one `(q_len, kv_len)`
/// matrix for every batch and head (leading dimensions of 1), as causal masks are.
pub(crate) fn prompt_attn_supports(mask: Option<&Tensor>, q_len: usize, kv_len: usize) -> bool {
    let Some(mask) = mask else { return true };
    let dims = mask.dims();
    dims.len() >= 2
        && dims[..dims.len() - 2].iter().all(|&d| d == 1)
        && dims[dims.len() - 2] == q_len
        && dims[dims.len() - 1] == kv_len
}

/// graft: keys (or values) scored at once, one per vector lane.
const LANES: usize = 16;

/// graft: keys (or values) the prompt kernel converts to f32 at a time, into a tile that every
/// query of a work unit then reads.
const TILE: usize = 64;

/// graft: queries scored together by the prompt kernel's innermost loop.
const ROWS: usize = 4;

/// graft: groups of [`LANES`] keys the prompt kernel scores together, each query's scores of
/// them independent chains: [`ROWS`] × 2 chains keep a CPU's two vector multiply-add units
/// busy through each one's latency.
const KEY_GROUPS: usize = 2;
const _: () = assert!(TILE % (KEY_GROUPS * LANES) == 0, "a tile holds whole groups of keys");

/// graft: the most query rows in one work unit of the prompt kernel.
const UNIT_ROWS: usize = 64;

/// graft: attention over a prompt (more than one query) on the CPU, vectorised across keys
/// (scores) and across the head's dimensions (values), where [`run_flash_attn_cpu`] takes a
/// scalar dot product, an `expf` and a generic mask lookup per (query, key), and visits every
/// masked key. A query reads only the keys up to the last one its mask row leaves visible.
///
/// The keys and values are read where they lie (the KV cache, f16 or f32): the keys are
/// converted to f32 and transposed once per call, [`TILE`] at a time in parallel (16 × 16
/// blocks in registers where the CPU has AVX-512); a work unit holds up to [`UNIT_ROWS`] query
/// rows of one key head (the queries of every head that shares it, query by query), scores
/// them against those tiles, then converts the values [`TILE`] at a time for all its rows. No
/// f32 copy of the cache is made first, so a few new tokens after a long cached prompt (the
/// next request while the user types) cost little more than their own arithmetic. A decode
/// step is this kernel on one query ([`run_decode_attn_cpu`]).
///
/// Every query row is computed alone, in an order that depends on nothing but its own keys:
/// each score is one multiply-add chain over the head's dimensions, in order; the softmax sums
/// by key index modulo [`LANES`]; the values are summed key by key from the first. Keys past
/// the row's last visible one would only add zeros, and which unit or thread a row falls in
/// changes nothing. So a prompt read whole gives bit for bit what the same prompt read in two
/// parts gives (a cached start, then the rest), as the flash kernel did: a request served from
/// the prompt cache answers as one served cold.
///
/// Shapes as [`super::super::Sdpa::run_attention`] takes them: `q` is `(b, heads, q_len, d)`,
/// `k` and `v` are `(b, kv_heads, kv_len, d)`; the answer is `(b, heads, q_len, dv)`, in `q`'s
/// dtype; everything is computed in f32. The mask must satisfy [`prompt_attn_supports`].
pub fn run_prompt_attn_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    sdpa_params: &SdpaParams,
) -> Result<Tensor> {
    let (b, h, q_len, d) = q.dims4()?;
    let (_, kv_h, kv_len, _) = k.dims4()?;
    let dv = v.dim(3)?;
    if kv_h == 0 || h % kv_h != 0 || kv_len < q_len {
        candle_core::bail!("prompt attention: {h} heads over {kv_h} key heads, {q_len} queries over {kv_len} keys");
    }
    if !prompt_attn_supports(mask, q_len, kv_len) {
        candle_core::bail!("prompt attention: a mask of shape {:?} is not one (queries, keys) matrix", mask.map(|m| m.dims().to_vec()));
    }
    let n_rep = h / kv_h;
    let dtype = q.dtype();
    let f32 = candle_core::DType::F32;
    let softcap = sdpa_params.softcap.filter(|&c| c != 0.0);
    let scale = sdpa_params.softmax_scale;

    let q = contiguous_f32(q)?;
    let (k, v) = (cache_layout(k)?, cache_layout(v)?);
    let mask = mask
        .map(|m| m.reshape((q_len, kv_len))?.to_dtype(f32)?.contiguous())
        .transpose()?;

    let (q_guard, q_layout) = q.storage_and_layout();
    let (k_guard, k_layout) = k.storage_and_layout();
    let (v_guard, v_layout) = v.storage_and_layout();
    let mask_guard = mask.as_ref().map(|m| m.storage_and_layout());
    let q_data = cpu_f32(&q_guard, q_layout, q.elem_count())?;
    let keys = CacheRows::new(&k_guard, k_layout)?;
    let values = CacheRows::new(&v_guard, v_layout)?;
    let mask_data = match &mask_guard {
        Some((guard, layout)) => Some(cpu_f32(guard, layout, q_len * kv_len)?),
        None => None,
    };

    // Row `i` of a key head's group is query `i / n_rep` of its head `i % n_rep`: the rows of
    // one query (one mask row) lie together.
    let group_rows = n_rep * q_len;
    let unit = unit_rows(b * kv_h * group_rows);
    let units_per_group = group_rows.div_ceil(unit);
    let locate = |u: usize, r: usize| {
        let (group, row) = (u / units_per_group, u % units_per_group * unit + r);
        let (b_i, kv) = (group / kv_h, group % kv_h);
        (b_i, kv, b_i * h + kv * n_rep + row % n_rep, row / n_rep)
    };
    // The keys converted and transposed once, tile by tile in parallel, for every unit that
    // reads them: converting them in each unit cost a cold 1,500-token prompt each key some
    // 35 times, and a decode step's few units left a thread idle.
    let key_tiles = kv_len.div_ceil(TILE);
    // The last call's buffer on this thread, so that a decode step does not zero a fresh one
    // per layer (1.2 MB for SmolLM2 at 1,500 keys); only its growth is zeroed. Every key of it
    // is written below; the few past the last key in its last tile keep old values, whose
    // scores are never stored. A call on this thread while this one runs (another model's
    // forward on a thread waiting for its tasks) finds it taken and starts an empty one.
    let mut transposed = TRANSPOSED_KEYS.take();
    transposed.resize(b * kv_h * key_tiles * TILE * d, 0.0);
    transposed.par_chunks_mut(TILE * d).enumerate().for_each_init(
        || vec![0f32; d],
        |row, (i, tile)| {
            let (group, start) = (i / key_tiles, i % key_tiles * TILE);
            keys.transposed_tile(group / kv_h, group % kv_h, start, TILE.min(kv_len - start), row, tile);
        },
    );
    let units: Vec<Vec<f32>> = (0..b * kv_h * units_per_group)
        .into_par_iter()
        .map_init(PromptScratch::default, |scratch, u| {
            let rows = unit.min(group_rows - u % units_per_group * unit);
            let (b_i, kv, _, _) = locate(u, 0);
            scratch.queries.clear();
            let mut visible = [kv_len; UNIT_ROWS];
            // The rows of one query (one mask row) lie together: its last visible key is
            // looked for once.
            let mut last: Option<(usize, usize)> = None;
            for (r, visible) in visible[..rows].iter_mut().enumerate() {
                let (_, _, head, query) = locate(u, r);
                scratch.queries.extend_from_slice(&q_data[(head * q_len + query) * d..][..d]);
                if let Some(mask) = mask_data {
                    *visible = match last {
                        Some((seen, width)) if seen == query => width,
                        _ => last_visible(&mask[query * kv_len..][..kv_len]),
                    };
                    last = Some((query, *visible));
                }
            }
            let width = visible[..rows].iter().copied().max().unwrap_or(0);
            let PromptScratch { queries, scores, tile } = scratch;
            scores.resize(rows * width, 0.0);
            tile.resize(TILE * dv, 0.0);

            for start in (0..width).step_by(TILE) {
                let n = TILE.min(width - start);
                let tile = &transposed[((b_i * kv_h + kv) * key_tiles + start / TILE) * TILE * d..][..TILE * d];
                for (block, queries) in queries.chunks(ROWS * d).enumerate() {
                    let scores = &mut scores[block * ROWS * width..];
                    key_scores(queries, d, tile, n, width, &mut scores[start..]);
                }
            }
            for r in 0..rows {
                let (_, _, _, query) = locate(u, r);
                let mask_row = mask_data.map(|m| &m[query * kv_len..][..kv_len]);
                let row = &mut scores[r * width..][..visible[r]];
                // The same operations for every score, each case its own loop (vector code).
                match (softcap, mask_row) {
                    (None, Some(mask)) => {
                        for (s, &m) in row.iter_mut().zip(mask) {
                            *s = *s * scale + m;
                        }
                    }
                    (None, None) => {
                        for s in row.iter_mut() {
                            *s = *s * scale + 0.0;
                        }
                    }
                    (Some(cap), _) => {
                        for (j, s) in row.iter_mut().enumerate() {
                            let x = (*s * scale / cap).tanh() * cap;
                            *s = x + mask_row.map_or(0.0, |m| m[j]);
                        }
                    }
                }
                let max = lanes_fold(row, f32::NEG_INFINITY, f32::max);
                exp_shifted(row, max);
                let inv = 1.0 / lanes_fold(row, 0.0, |a, b| a + b);
                for s in row.iter_mut() {
                    *s *= inv;
                }
            }
            // Each row's values, summed key by key from the first.
            let mut out = vec![0f32; rows * dv];
            for start in (0..width).step_by(TILE) {
                let n = TILE.min(width - start);
                values.tile(b_i, kv, start, n, &mut tile[..n * dv]);
                let probs = |r: usize| {
                    let seen = visible[r].saturating_sub(start).min(n);
                    &scores[r * width + start..][..seen]
                };
                for (pair, outs) in out.chunks_mut(2 * dv).enumerate() {
                    let r = 2 * pair;
                    match outs.split_at_mut_checked(dv) {
                        Some((first, second)) if !second.is_empty() => {
                            add_weighted_row_pair([probs(r), probs(r + 1)], &tile[..n * dv], [first, second])
                        }
                        _ => add_weighted_rows(probs(r), &tile[..n * dv], outs),
                    }
                }
            }
            out
        })
        .collect();
    drop((q_guard, k_guard, v_guard, mask_guard));
    if transposed.capacity() <= KEPT_KEYS {
        TRANSPOSED_KEYS.set(transposed);
    }
    let mut out = vec![0f32; b * h * q_len * dv];
    for (u, rows) in units.iter().enumerate() {
        for (r, row) in rows.chunks(dv).enumerate() {
            let (_, _, head, query) = locate(u, r);
            out[(head * q_len + query) * dv..][..dv].copy_from_slice(row);
        }
    }
    Tensor::from_vec(out, (b, h, q_len, dv), &Device::Cpu)?.to_dtype(dtype)
}

thread_local! {
    /// graft: the prompt kernel's transposed keys, kept on a thread from one call to the next.
    static TRANSPOSED_KEYS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// graft: the most f32 values of transposed keys a thread keeps between calls (64 MB); a
/// longer context's buffer is freed after its call.
const KEPT_KEYS: usize = 16 << 20;

/// graft: a prompt kernel thread's buffers, kept from one work unit to the next.
#[derive(Default)]
struct PromptScratch {
    /// The unit's query rows, `d` each.
    queries: Vec<f32>,
    /// `rows × width` scores, then probabilities.
    scores: Vec<f32>,
    /// [`TILE`] values (`TILE × dv`).
    tile: Vec<f32>,
}

/// graft: how many of a mask row's keys a query reads: up to its last one not masked (-inf).
/// Looked for [`LANES`] at a time from the end (a causal row's masked end is long).
fn last_visible(mask_row: &[f32]) -> usize {
    let (chunks, rest) = mask_row.as_chunks::<LANES>();
    if let Some(p) = rest.iter().rposition(|&x| x != f32::NEG_INFINITY) {
        return chunks.len() * LANES + p + 1;
    }
    let Some(c) = chunks.iter().rposition(|c| c.iter().fold(false, |any, &x| any | (x != f32::NEG_INFINITY))) else {
        return 0;
    };
    c * LANES + chunks[c].iter().rposition(|&x| x != f32::NEG_INFINITY).map_or(0, |p| p + 1)
}

/// graft: query rows per work unit of the prompt kernel for `total` rows in all: about two
/// units per thread, so that the threads finish together, and at most [`UNIT_ROWS`], so that
/// a unit's scores stay in cache; a multiple of [`ROWS`].
fn unit_rows(total: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    total.div_ceil(2 * threads).next_multiple_of(ROWS).clamp(ROWS, UNIT_ROWS)
}

/// graft: `scores[r * width + j] = q_r · k_j` for the (at most [`ROWS`]) queries `queries`,
/// each `d` long, and the first `n` keys of `tile` (keys transposed: `tile[dd * TILE + j]`).
/// Each score is its own multiply-add chain over `d`, in order, whichever other queries and
/// keys share the call.
// Not inlined: the loops below stay a small function of their own, compiled to vector code
// with their sums in registers, whatever the caller around them.
#[inline(never)]
fn key_scores(queries: &[f32], d: usize, tile: &[f32], n: usize, width: usize, scores: &mut [f32]) {
    // A loop per number of queries, so that every count below is known when compiled.
    match queries.len() / d {
        4 => key_scores_of::<4>(queries, d, tile, n, width, scores),
        3 => key_scores_of::<3>(queries, d, tile, n, width, scores),
        2 => key_scores_of::<2>(queries, d, tile, n, width, scores),
        _ => key_scores_of::<1>(queries, d, tile, n, width, scores),
    }
}

/// graft: [`key_scores`] for `R` queries, [`KEY_GROUPS`] groups of [`LANES`] keys at a time
/// (as many independent multiply-add chains as the CPU keeps in flight), then the groups
/// left one at a time; each score's chain is the same whichever keys share its pass.
#[inline(always)]
fn key_scores_of<const R: usize>(queries: &[f32], d: usize, tile: &[f32], n: usize, width: usize, scores: &mut [f32]) {
    let groups = n.div_ceil(LANES);
    let mut group = 0;
    while group + KEY_GROUPS <= groups {
        key_block::<R, KEY_GROUPS>(queries, d, tile, n, width, scores, group);
        group += KEY_GROUPS;
    }
    while group < groups {
        key_block::<R, 1>(queries, d, tile, n, width, scores, group);
        group += 1;
    }
}

/// graft: the scores of `R` queries for the `G` groups of keys from group `group` on.
#[inline(always)]
fn key_block<const R: usize, const G: usize>(
    queries: &[f32],
    d: usize,
    tile: &[f32],
    n: usize,
    width: usize,
    scores: &mut [f32],
    group: usize,
) {
    let acc = key_sums::<R, G>(queries, d, tile, group);
    for (r, acc) in acc.iter().enumerate() {
        for (g, acc) in acc.iter().enumerate() {
            let first = (group + g) * LANES;
            let m = LANES.min(n - first);
            if m == LANES {
                // A copy of a known size: a move, not a `memcpy` call.
                let Ok(to) = <&mut [f32; LANES]>::try_from(&mut scores[r * width + first..][..LANES]) else {
                    unreachable!("a group of scores")
                };
                *to = *acc;
            } else {
                scores[r * width + first..][..m].copy_from_slice(&acc[..m]);
            }
        }
    }
}

/// graft: the sums of [`key_block`]: `acc[r][g][l]` is query `r`'s score of key
/// `(group + g) × LANES + l` of `tile`, one multiply-add chain over the dimensions in order.
#[inline(always)]
fn key_sums<const R: usize, const G: usize>(queries: &[f32], d: usize, tile: &[f32], group: usize) -> [[[f32; LANES]; G]; R] {
    assert!(queries.len() >= R * d && tile.len() >= d * TILE && (group + G) * LANES <= TILE, "a block of scores within its tile");
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    // SAFETY: the CPU has AVX-512F; the bounds the function reads within were checked above.
    return unsafe { avx512::key_sums::<R, G>(queries, d, tile, group) };
    #[allow(unreachable_code)]
    {
        let q: [&[f32]; R] = std::array::from_fn(|r| &queries[r * d..][..d]);
        let mut acc = [[[0f32; LANES]; G]; R];
        for dd in 0..d {
            let (keys, _) = tile[dd * TILE + group * LANES..][..G * LANES].as_chunks::<LANES>();
            for r in 0..R {
                let qd = q[r][dd];
                for g in 0..G {
                    for l in 0..LANES {
                        acc[r][g][l] = mul_add(acc[r][g][l], qd, keys[g][l]);
                    }
                }
            }
        }
        acc
    }
}

/// graft: [`add_weighted_rows`] for two rows of probabilities over the same value rows, each
/// row's sums as that function makes them; the values read once for both while both see them.
#[inline]
fn add_weighted_row_pair(probs: [&[f32]; 2], rows: &[f32], out: [&mut [f32]; 2]) {
    let [first, second] = out;
    let dv = first.len();
    let mut done = add_weighted_pair_chunks::<{ 4 * LANES }>(probs, rows, dv, [&mut first[..], &mut second[..]]);
    done += add_weighted_pair_chunks::<LANES>(probs, rows, dv, [&mut first[done..], &mut second[done..]]);
    for (probs, out) in probs.into_iter().zip([first, second]) {
        add_weighted_tail(probs, rows, dv, &mut out[done..]);
    }
}

/// graft: [`add_weighted_chunks`] for two rows of probabilities: the keys both rows see are
/// summed for both from the same loads, then the rest of the longer row alone.
#[inline]
fn add_weighted_pair_chunks<const N: usize>(probs: [&[f32]; 2], rows: &[f32], dv: usize, out: [&mut [f32]; 2]) -> usize {
    let [first, second] = out;
    let offset = dv - first.len();
    let both = probs[0].len().min(probs[1].len());
    let value = |j: usize, done: usize| -> &[f32; N] {
        let Ok(x) = <&[f32; N]>::try_from(&rows[j * dv + offset + done..][..N]) else {
            unreachable!("a row holds dv values")
        };
        x
    };
    let mut done = 0;
    for (a, b) in first.chunks_exact_mut(N).zip(second.chunks_exact_mut(N)) {
        let (mut acc_a, mut acc_b) = ([0f32; N], [0f32; N]);
        acc_a.copy_from_slice(a);
        acc_b.copy_from_slice(b);
        for j in 0..both {
            let (pa, pb, x) = (probs[0][j], probs[1][j], value(j, done));
            for ((a, b), &x) in acc_a.iter_mut().zip(acc_b.iter_mut()).zip(x) {
                *a = mul_add(*a, pa, x);
                *b = mul_add(*b, pb, x);
            }
        }
        for (acc, probs) in [(&mut acc_a, probs[0]), (&mut acc_b, probs[1])] {
            for (j, &p) in probs.iter().enumerate().skip(both) {
                for (a, &x) in acc.iter_mut().zip(value(j, done)) {
                    *a = mul_add(*a, p, x);
                }
            }
        }
        a.copy_from_slice(&acc_a);
        b.copy_from_slice(&acc_b);
        done += N;
    }
    done
}

/// graft: `out += Σ_j probs[j] · rows[j]` (rows of `out.len()` values), summed key by key
/// in order for every element; vector code over [`LANES`] and wider chunks of the row, with
/// each chunk's sums kept in registers across the keys.
#[inline]
fn add_weighted_rows(probs: &[f32], rows: &[f32], out: &mut [f32]) {
    let dv = out.len();
    let mut done = 0;
    done += add_weighted_chunks::<{ 4 * LANES }>(probs, rows, dv, &mut out[done..]);
    done += add_weighted_chunks::<LANES>(probs, rows, dv, &mut out[done..]);
    add_weighted_tail(probs, rows, dv, &mut out[done..]);
}

/// graft: [`add_weighted_rows`] for the columns no whole chunk covers, element by element:
/// `out` is the end of a row, from column `dv - out.len()`.
#[inline]
fn add_weighted_tail(probs: &[f32], rows: &[f32], dv: usize, out: &mut [f32]) {
    // Nothing left (`dv` a multiple of [`LANES`], the usual case): not even a pass over the
    // keys, whose slicing the compiler cannot drop (a sixth of the kernel's time in perf).
    if out.is_empty() {
        return;
    }
    let done = dv - out.len();
    for (j, &p) in probs.iter().enumerate() {
        for (o, &x) in out.iter_mut().zip(&rows[j * dv + done..(j + 1) * dv]) {
            *o = mul_add(*o, p, x);
        }
    }
}

/// graft: [`add_weighted_rows`] for the whole `N`-wide chunks of `out` (which starts at
/// column `dv - out.len()` of each row); returns the columns done.
#[inline]
fn add_weighted_chunks<const N: usize>(probs: &[f32], rows: &[f32], dv: usize, out: &mut [f32]) -> usize {
    let offset = dv - out.len();
    let mut done = 0;
    for chunk in out.chunks_exact_mut(N) {
        let mut acc = [0f32; N];
        acc.copy_from_slice(chunk);
        for (j, &p) in probs.iter().enumerate() {
            let Ok(x) = <&[f32; N]>::try_from(&rows[j * dv + offset + done..][..N]) else {
                unreachable!("a row holds dv values")
            };
            for (a, &x) in acc.iter_mut().zip(x) {
                *a = mul_add(*a, p, x);
            }
        }
        chunk.copy_from_slice(&acc);
        done += N;
    }
    done
}

/// graft: attention of one query per head (a decode step) on the CPU: the prompt kernel
/// ([`run_prompt_attn_cpu`]) with no mask, so a step's answer has the bits the same query gets
/// as the last of a prompt read. Upstream's single-query kernel multiplied each key element by
/// element; a kernel of graft's own that took each key's dot product across the head's
/// dimensions (a horizontal sum per key) and converted the keys once per head took three
/// times as long on 1,500 keys (`cargo bench --bench attention`). Takes f32 or f16 tensors,
/// no mask, rows of `k` and `v` contiguous (the cache's layout); see [`decode_attn_supports`].
pub fn run_decode_attn_cpu(q: &Tensor, k: &Tensor, v: &Tensor, sdpa_params: &SdpaParams) -> Result<Tensor> {
    let (_, h, q_len, _) = q.dims4()?;
    let (_, kv_h, _, _) = k.dims4()?;
    if q_len != 1 || kv_h == 0 || h % kv_h != 0 || !decode_attn_supports(q, k, v, None) {
        candle_core::bail!("decode attention: {q_len} queries, {h} heads over {kv_h} key heads, {:?}", k.dtype());
    }
    run_prompt_attn_cpu(q, k, v, None, sdpa_params)
}

/// graft: whether [`run_decode_attn_cpu`] takes these tensors: one query, no mask, f32 or
/// f16 on the CPU, keys and values with contiguous rows.
pub(crate) fn decode_attn_supports(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> bool {
    mask.is_none() && q.dims().get(2) == Some(&1) && q.device().is_cpu() && k.dtype() == v.dtype() && readable_in_place(k) && readable_in_place(v)
}

/// graft: whether [`CacheRows`] reads `t` where it lies: an f32 or f16 `(b, heads, len, d)`
/// CPU tensor whose rows are contiguous (the KV cache's layout, narrowed or not).
fn readable_in_place(t: &Tensor) -> bool {
    let stride = t.stride();
    t.device().is_cpu()
        && matches!(t.dtype(), candle_core::DType::F32 | candle_core::DType::F16)
        && t.rank() == 4
        && stride[3] == 1
        && (t.dim(2).unwrap_or(0) <= 1 || stride[2] == t.dims()[3])
}

/// graft: `t` itself where [`CacheRows`] can read it in place, else a contiguous f32 copy.
fn cache_layout(t: &Tensor) -> Result<Tensor> {
    if readable_in_place(t) {
        Ok(t.clone())
    } else {
        t.to_dtype(candle_core::DType::F32)?.contiguous()
    }
}

/// graft: the rows of a `(b, heads, len, d)` cache tensor, read as f32 where they lie.
struct CacheRows<'a> {
    data: CacheData<'a>,
    strides: [usize; 3],
    d: usize,
}

enum CacheData<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl<'a> CacheRows<'a> {
    fn new(storage: &'a Storage, layout: &candle_core::Layout) -> Result<Self> {
        let Storage::Cpu(cpu) = storage else {
            candle_core::bail!("decode attention: a tensor not on the CPU")
        };
        let start = layout.start_offset();
        let data = match cpu {
            candle_core::CpuStorage::F32(xs) => CacheData::F32(&xs[start..]),
            candle_core::CpuStorage::F16(xs) => CacheData::F16(&xs[start..]),
            _ => candle_core::bail!("decode attention: tensors neither f32 nor f16"),
        };
        let stride = layout.stride();
        Ok(Self { data, strides: [stride[0], stride[1], stride[2]], d: layout.dims()[3] })
    }

    /// Row `j` of head `head` of batch `b`, as f32, into `out` (`d` long).
    fn read(&self, b: usize, head: usize, j: usize, out: &mut [f32]) {
        let at = b * self.strides[0] + head * self.strides[1] + j * self.strides[2];
        match self.data {
            CacheData::F32(xs) => out.copy_from_slice(&xs[at..][..self.d]),
            CacheData::F16(xs) => halves_to_f32(&xs[at..][..self.d], out),
        }
    }

    /// Rows `first..first + n` as f32, one after another, into `out` (`n × d` long).
    fn tile(&self, b: usize, head: usize, first: usize, n: usize, out: &mut [f32]) {
        for (j, out) in out.chunks_exact_mut(self.d).take(n).enumerate() {
            self.read(b, head, first + j, out);
        }
    }

    /// Rows `first..first + n` (at most [`TILE`]) transposed, as f32: `tile[dd * TILE + j]` is
    /// element `dd` of row `first + j`. `row` is scratch space of at least `d`.
    fn transposed_tile(&self, b: usize, head: usize, first: usize, n: usize, row: &mut [f32], tile: &mut [f32]) {
        #[allow(unused_mut)]
        let mut done = 0;
        #[cfg(all(target_arch = "x86_64", target_feature = "avx512f", target_feature = "f16c"))]
        if self.d.is_multiple_of(16) {
            while done + 16 <= n {
                for c in (0..self.d).step_by(16) {
                    // SAFETY: the CPU has AVX-512F and F16C; `sixteen` reads in bounds.
                    let columns = unsafe {
                        let rows = std::array::from_fn(|r| self.sixteen(b, head, first + done + r, c));
                        avx512::transpose16(rows)
                    };
                    for (dd, column) in columns.into_iter().enumerate() {
                        let out: &mut [f32; 16] = (&mut tile[(c + dd) * TILE + done..][..16])
                            .try_into()
                            .expect("sixteen places");
                        // SAFETY: the CPU has AVX-512F; `out` holds sixteen floats.
                        unsafe { std::arch::x86_64::_mm512_storeu_ps(out.as_mut_ptr(), column) };
                    }
                }
                done += 16;
            }
        }
        let row = &mut row[..self.d];
        for j in done..n {
            self.read(b, head, first + j, row);
            for (dd, &x) in row.iter().enumerate() {
                tile[dd * TILE + j] = x;
            }
        }
    }

    /// Elements `c..c + 16` of row `j` of head `head` of batch `b`, as f32 in a vector.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f", target_feature = "f16c"))]
    #[inline(always)]
    unsafe fn sixteen(&self, b: usize, head: usize, j: usize, c: usize) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm512_cvtph_ps, _mm512_loadu_ps};
        let at = b * self.strides[0] + head * self.strides[1] + j * self.strides[2] + c;
        match self.data {
            CacheData::F32(xs) => _mm512_loadu_ps(xs[at..][..16].as_ptr()),
            CacheData::F16(xs) => _mm512_cvtph_ps(_mm256_loadu_si256(xs[at..][..16].as_ptr() as *const __m256i)),
        }
    }
}

/// graft: AVX-512 helpers of the prompt kernel.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4,
        _mm512_shuffle_ps, _mm512_unpackhi_ps, _mm512_unpacklo_ps,
    };

    use super::{LANES, TILE};

    const _: () = assert!(LANES == 16, "a group of keys is one 512-bit register");

    /// [`super::key_sums`] with the sums in registers (the portable loop kept them in memory,
    /// stored at every step): `fmadd(q, key, acc)` rounds once, as `mul_add(acc, q, key)`
    /// does, so every score has the same bits.
    ///
    /// Safety: the CPU has AVX-512F; `queries` holds `R` rows of `d`, `tile` `d` rows of
    /// [`TILE`] keys, and `(group + G) × LANES <= TILE`.
    #[inline(always)]
    pub(super) unsafe fn key_sums<const R: usize, const G: usize>(
        queries: &[f32],
        d: usize,
        tile: &[f32],
        group: usize,
    ) -> [[[f32; LANES]; G]; R] {
        let mut acc = [[_mm512_setzero_ps(); G]; R];
        let (q, keys) = (queries.as_ptr(), tile.as_ptr().add(group * LANES));
        for dd in 0..d {
            let k: [__m512; G] = std::array::from_fn(|g| _mm512_loadu_ps(keys.add(dd * TILE + g * LANES)));
            for r in 0..R {
                let qd = _mm512_set1_ps(*q.add(r * d + dd));
                for g in 0..G {
                    acc[r][g] = _mm512_fmadd_ps(qd, k[g], acc[r][g]);
                }
            }
        }
        acc.map(|row| row.map(|sums| std::mem::transmute::<__m512, [f32; LANES]>(sums)))
    }

    /// A 16 × 16 block transposed in registers: `out[j]` holds element `j` of every row,
    /// `rows[i]` in lane `i` (values moved, never computed: the same bits). Three rounds of
    /// shuffles where the one-by-one copy stored each element on its own.
    #[inline(always)]
    pub(super) unsafe fn transpose16(rows: [__m512; 16]) -> [__m512; 16] {
        // Within each 128-bit lane L: pairs of rows interleaved.
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (a, b) = (rows[i & !1], rows[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        // u[4m + c], lane L: rows 4m..4m + 4 at column 4L + c.
        let u: [__m512; 16] = std::array::from_fn(|i| {
            let (m, c) = (i / 4, i % 4);
            let (a, b) = (t[4 * m + c / 2], t[4 * m + 2 + c / 2]);
            if c % 2 == 0 {
                _mm512_shuffle_ps::<0x44>(a, b)
            } else {
                _mm512_shuffle_ps::<0xEE>(a, b)
            }
        });
        // v[4c + k]: lanes of u[c], u[4 + c] (k = 0, 1) or u[8 + c], u[12 + c] (k = 2, 3),
        // the even lanes (k even) or the odd ones.
        let v: [__m512; 16] = std::array::from_fn(|i| {
            let (c, k) = (i / 4, i % 4);
            let (a, b) = (u[8 * (k / 2) + c], u[8 * (k / 2) + 4 + c]);
            if k % 2 == 0 {
                _mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_f32x4::<0xDD>(a, b)
            }
        });
        // Column 4L + c: lane L of u[c], u[4 + c], u[8 + c], u[12 + c].
        std::array::from_fn(|j| {
            let (l, c) = (j / 4, j % 4);
            let (a, b) = (v[4 * c + l % 2], v[4 * c + 2 + l % 2]);
            if l < 2 {
                _mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_f32x4::<0xDD>(a, b)
            }
        })
    }
}

/// graft: `halves` as f32 into `out` (the same length), eight at a time where the CPU
/// converts in hardware (F16C), one by one elsewhere. A conversion is exact either way.
/// (Measured against `half`'s slice conversion in graft's former decode kernel: no faster; kept for the
/// explicit eight-wide path.)
#[inline]
fn halves_to_f32(halves: &[f16], out: &mut [f32]) {
    let mut done = 0;
    #[cfg(all(target_arch = "x86_64", target_feature = "f16c"))]
    {
        use core::arch::x86_64::{__m128i, _mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
        let n = halves.len().min(out.len());
        while done + 8 <= n {
            // SAFETY: `done + 8 <= n` elements lie in both slices; the CPU has F16C.
            unsafe {
                let eight = _mm_loadu_si128(halves.as_ptr().add(done) as *const __m128i);
                _mm256_storeu_ps(out.as_mut_ptr().add(done), _mm256_cvtph_ps(eight));
            }
            done += 8;
        }
    }
    for (o, x) in out[done..].iter_mut().zip(&halves[done..]) {
        *o = x.to_f32();
    }
}

/// graft: a CPU tensor's f32 values.
pub(crate) fn cpu_f32<'a>(storage: &'a Storage, layout: &candle_core::Layout, len: usize) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => Ok(&cpu.as_slice::<f32>()?[layout.start_offset()..][..len]),
        _ => candle_core::bail!("a CPU kernel given a tensor not on the CPU"),
    }
}

/// graft: `t` as a contiguous f32 tensor (the kernels' queries); f16 is converted eight values
/// at a time by [`halves_to_f32`], not candle's one value at a time.
fn contiguous_f32(t: &Tensor) -> Result<Tensor> {
    match t.dtype() {
        candle_core::DType::F32 => t.contiguous(),
        candle_core::DType::F16 => {
            let t = t.contiguous()?;
            let (guard, layout) = t.storage_and_layout();
            let Storage::Cpu(cpu) = &*guard else {
                candle_core::bail!("attention: a tensor not on the CPU")
            };
            let halves = &cpu.as_slice::<f16>()?[layout.start_offset()..][..t.elem_count()];
            let mut out = vec![0f32; halves.len()];
            halves_to_f32(halves, &mut out);
            drop(guard);
            Tensor::from_vec(out, t.shape(), &Device::Cpu)
        }
        _ => t.to_dtype(candle_core::DType::F32)?.contiguous(),
    }
}

/// graft: `a + b × c`, with one rounding (a fused multiply-add) where the build targets a
/// CPU that has the instruction, else two. The kernels' sums are chains of these.
#[inline(always)]
fn mul_add(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(any(target_feature = "fma", target_arch = "aarch64"))]
    {
        b.mul_add(c, a)
    }
    #[cfg(not(any(target_feature = "fma", target_arch = "aarch64")))]
    {
        a + b * c
    }
}

/// graft: `x = e^(x - max)` for every `x` of `xs` (none above `max`: the softmax's shift), as
/// vector code: [`exp_nonpositive`] on [`LANES`] values at a time, where a libm `expf` call
/// per score took a third of the attention kernels' time.
pub fn exp_shifted(xs: &mut [f32], max: f32) {
    // Whole chunks in place; the last few through a chunk-sized copy.
    let (chunks, rest) = xs.as_chunks_mut::<LANES>();
    for chunk in chunks {
        for x in chunk.iter_mut() {
            *x = exp_nonpositive(*x - max);
        }
    }
    let mut lanes = [0f32; LANES];
    lanes[..rest.len()].copy_from_slice(rest);
    for x in lanes.iter_mut() {
        *x = exp_nonpositive(*x - max);
    }
    let n = rest.len();
    rest.copy_from_slice(&lanes[..n]);
}

/// graft: `e^x` for `x ≤ 0`, in plain f32 arithmetic that the compiler vectorises: Cephes's
/// `expf` (the argument reduced by the nearest multiple of ln 2, a degree-5 polynomial, the
/// power of two put into the exponent bits), within a few units in the last place of the
/// true value. Below -87 (where `e^x` leaves f32's normal range), and for a masked key's
/// -inf, the answer is 0; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    // 1.5 × 2^23: adding it rounds to an integer, held in the low bits of the sum.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let clamped = if x < -87.0 { -87.0 } else { x };
    let sum = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = sum - ROUND;
    let power = (sum.to_bits() as i32 - ROUND.to_bits() as i32 + 127) as u32;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let y = (p * (r * r) + r + 1.0) * f32::from_bits(power << 23);
    if x < -87.0 {
        0.0
    } else {
        y
    }
}

/// graft: a reduction over [`LANES`] lanes by index (lane `j % LANES` takes element `j`,
/// whatever the length), so that the compiler can vectorise it and appending elements that
/// leave a lane unchanged (zeros to a sum) leaves the result unchanged.
#[inline]
pub(crate) fn lanes_fold(xs: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; LANES];
    // Whole chunks first, then the rest: one loop over both kept the lanes in memory, a
    // store and a load per chunk on the chain's path.
    let (chunks, rest) = xs.as_chunks::<LANES>();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = f(*lane, x);
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(rest) {
        *lane = f(*lane, x);
    }
    lanes.into_iter().fold(init, f)
}

/// Optimised path for the common decode case: q_len == 1 but kv_len ≫ 1.
/// All intermediate maths is done in `f32`; we down‑cast to `T` exactly once
/// when writing the output buffer.
#[allow(clippy::too_many_arguments)]
fn flash_attn_cpu_single_q<T>(
    q_data: &[T],
    k_data: &[T],
    v_data: &[T],
    mask_vec: Option<&[f32]>,
    mask_dims: Option<&[usize]>,
    qshape: &[usize],
    kshape: &[usize],
    vshape: &[usize],
    qstride: &[usize],
    kstride: &[usize],
    vstride: &[usize],
    scale: f32,
    max_bias: f32,
    logit_softcap: f32,
) -> Result<Tensor>
where
    T: WithDType + Copy + UpcastF32 + DowncastF32,
{
    let (b, _q_len, h, d) = (qshape[0], qshape[1], qshape[2], qshape[3]);
    let kv_len = kshape[1];
    let kv_tiles = kv_len.div_ceil(TILE_KV);
    let dv = d;

    // --- head tiling factors and softmax helper -----------------------
    let k_h = kshape[2];
    let v_h = vshape[2];
    let rk2 = h / k_h;
    let rv2 = h / v_h;
    let n2 = 2_usize.pow((h as f32).log2().ceil() as u32);

    // final output
    let mut out = vec![T::cast(0.0); b * h * dv];
    // scratch: one tile  ×  heads ×  dv  (flattened)
    let mut scratch = vec![0f32; kv_tiles * h * dv];
    let mut scratch_s = vec![0f32; kv_tiles * h]; // softmax S per tile
    let mut scratch_m = vec![f32::NEG_INFINITY; kv_tiles * h];

    // Store as plain usize so the capture is Sync (raw *mut T is not Sync)
    let scratch_ptr = scratch.as_mut_ptr() as usize;
    let scratch_s_ptr = scratch_s.as_mut_ptr() as usize;
    let scratch_m_ptr = scratch_m.as_mut_ptr() as usize;

    let mask_info = match (mask_vec, mask_dims) {
        (Some(data), Some(dims)) => Some(MaskInfo { data, dims, b, h }),
        _ => None,
    };

    {
        (0..kv_tiles).into_par_iter().for_each(|tile_idx| {
            let start = tile_idx * TILE_KV;
            let end = (start + TILE_KV).min(kv_len);

            for b_i in 0..b {
                for h_i in 0..h {
                    // Per‑head slope for ALiBi / NTK bias.
                    let slope = if max_bias > 0.0 {
                        2.0f32.powf(-max_bias * ((h_i + 1) as f32) / n2 as f32)
                    } else {
                        1.0
                    };
                    let k_head = h_i / rk2;
                    let v_head = h_i / rv2;

                    // pointers into scratch
                    let base_vk = ((tile_idx * h + h_i) * dv) as isize;
                    let base_s = (tile_idx * h + h_i) as isize;

                    let q_base = b_i * qstride[0] + h_i * qstride[2];
                    let q_row = &q_data[q_base..q_base + d];

                    // Re‑materialise the pointer from the captured usize.
                    let vkq: &mut [f32] = unsafe {
                        std::slice::from_raw_parts_mut(
                            (scratch_ptr as *mut f32).add(base_vk as usize),
                            dv,
                        )
                    };
                    let mut s = 0f32;
                    let mut m = f32::NEG_INFINITY;

                    for kv_pos in start..end {
                        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
                        {
                            // One‑step look‑ahead prefetch of the next K and V rows.
                            let next_pos = kv_pos + 1;
                            if next_pos < end {
                                let next_k_base =
                                    b_i * kstride[0] + next_pos * kstride[1] + k_head * kstride[2];
                                let next_v_base =
                                    b_i * vstride[0] + next_pos * vstride[1] + v_head * vstride[2];
                                unsafe {
                                    prefetch(k_data.as_ptr().add(next_k_base) as *const u8);
                                    prefetch(v_data.as_ptr().add(next_v_base) as *const u8);
                                }
                            }
                        }
                        // ---------- dot(Q,K) ----------
                        let k_base = b_i * kstride[0] + kv_pos * kstride[1] + k_head * kstride[2];
                        let k_row = &k_data[k_base..k_base + d];

                        let mut s_val = vec_dot_f32(q_row, k_row) * scale;

                        if logit_softcap != 0.0 {
                            s_val = logit_softcap * (s_val / logit_softcap).tanh();
                        }
                        let mask_delta = mask_info
                            .as_ref()
                            .map(|mask| slope * mask.value(b_i, h_i, 0, kv_pos))
                            .unwrap_or(0.0);
                        s_val += mask_delta;

                        // -------- tile-local softmax ----------
                        let m_old = m;
                        let mut ms = 1.0;
                        let mut vs = 1.0;
                        if s_val > m {
                            m = s_val;
                            ms = (m_old - m).exp();
                            for v in vkq.iter_mut() {
                                *v *= ms;
                            }
                        } else {
                            vs = (s_val - m).exp();
                        }

                        // -------- add V ----------
                        let v_base = b_i * vstride[0] + kv_pos * vstride[1] + v_head * vstride[2];
                        for d_i in 0..dv {
                            vkq[d_i] += v_data[v_base + d_i].to_f32() * vs;
                        }

                        s = s * ms + vs;
                    }

                    unsafe {
                        *((scratch_s_ptr as *mut f32).add(base_s as usize)) = s;
                        *((scratch_m_ptr as *mut f32).add(base_s as usize)) = m;
                    }
                }
            }
        });
    }

    // -------- serial reduction over tiles (per head) --------
    for b_i in 0..b {
        for h_i in 0..h {
            let out_off = (b_i * h + h_i) * dv;

            // start with tile 0
            let mut vkq = vec![0f32; dv];
            vkq.copy_from_slice(&scratch[(h_i * dv)..(h_i * dv + dv)]);
            let mut s = scratch_s[h_i];
            let mut m = scratch_m[h_i];

            for tile_idx in 1..kv_tiles {
                let base = (tile_idx * h + h_i) * dv;
                let base_s = tile_idx * h + h_i;

                let m_b = scratch_m[base_s];
                let s_b = scratch_s[base_s];
                let vkq_b = &scratch[base..base + dv];

                if m >= m_b {
                    let factor = (m_b - m).exp();
                    for (v, v_b) in vkq.iter_mut().zip(vkq_b) {
                        *v += v_b * factor;
                    }
                    s += s_b * factor;
                } else {
                    let factor = (m - m_b).exp();
                    for (v, v_a) in vkq.iter_mut().zip(vkq_b) {
                        *v = v_a + *v * factor;
                    }
                    s = s_b + s * factor;
                    m = m_b;
                }
            }

            let inv_s = 1.0 / s;
            for (o, v) in out[out_off..][..dv].iter_mut().zip(vkq.iter()) {
                *o = T::cast(*v * inv_s);
            }
        }
    }

    Tensor::from_vec(out, (b, h, 1, dv), &Device::Cpu)
}

/// Main forward flash-attention CPU routine.
/// Shapes follow Candle convention: (B, S, H, D)
#[allow(clippy::too_many_arguments)]
fn flash_attn_cpu<T>(
    q_data: &[T],
    k_data: &[T],
    v_data: &[T],
    mask_vec: Option<&[f32]>,
    mask_dims: Option<&[usize]>,
    qshape: &[usize],
    kshape: &[usize],
    vshape: &[usize],
    qstride: &[usize],
    kstride: &[usize],
    vstride: &[usize],
    scale: f32,
    max_bias: f32,
    logit_softcap: f32,
) -> Result<Tensor>
where
    T: WithDType + Copy + UpcastF32 + DowncastF32,
{
    let (b, q_len, h, d) = (qshape[0], qshape[1], qshape[2], qshape[3]);
    let kv_len = kshape[1];
    let k_h = kshape[2];
    let v_h = vshape[2];
    let rk2 = h / k_h;
    let rv2 = h / v_h;
    let dv = d;

    let n2 = 2_usize.pow((h as f32).log2().ceil() as u32);

    let mut out = vec![T::cast(0.0); b * q_len * h * dv];

    assert_eq!(qstride[3], 1, "q must have contiguous rows");
    assert_eq!(kstride[3], 1, "k must have contiguous rows");
    assert_eq!(vstride[3], 1, "v must have contiguous rows");

    let mask_info = match (mask_vec, mask_dims) {
        (Some(data), Some(dims)) => Some(MaskInfo { data, dims, b, h }),
        _ => None,
    };

    {
        out.par_chunks_mut(dv)
            .with_min_len(64)
            .enumerate()
            .for_each(|(row_idx, out_chunk)| {
                // Decode flat index back to (batch, head, q_pos)
                let rows_per_batch = h * q_len;
                let b_i = row_idx / rows_per_batch;
                let rem = row_idx % rows_per_batch;
                let h_i = rem / q_len;
                let q_pos = rem % q_len;

                let slope = if max_bias > 0.0 {
                    2.0f32.powf(-max_bias * ((h_i + 1) as f32) / n2 as f32)
                } else {
                    1.0
                };

                let k_head = h_i / rk2;
                let v_head = h_i / rv2;

                let mut vkq = vec![0f32; dv];
                let mut s = 0.0f32;
                let mut m = f32::NEG_INFINITY;

                // Q row
                let q_base = b_i * qstride[0] + q_pos * qstride[1] + h_i * qstride[2];
                let q_row = &q_data[q_base..q_base + d];

                for kv_pos in 0..kv_len {
                    // -------- ping‑pong prefetch of next KV row --------
                    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
                    {
                        let next_pos = kv_pos + 1;
                        if next_pos < kv_len {
                            let next_k_base =
                                b_i * kstride[0] + next_pos * kstride[1] + k_head * kstride[2];
                            let next_v_base =
                                b_i * vstride[0] + next_pos * vstride[1] + v_head * vstride[2];
                            unsafe {
                                prefetch(k_data.as_ptr().add(next_k_base) as *const u8);
                                prefetch(v_data.as_ptr().add(next_v_base) as *const u8);
                            }
                        }
                    }
                    // ----------------------------------------------------
                    // Mask (optional)
                    let mv = mask_info
                        .as_ref()
                        .map(|mask| slope * mask.value(b_i, h_i, q_pos, kv_pos))
                        .unwrap_or(0.0);
                    if mv == f32::NEG_INFINITY {
                        continue;
                    }

                    // K row
                    let k_base = b_i * kstride[0] + kv_pos * kstride[1] + k_head * kstride[2];
                    let k_row = &k_data[k_base..k_base + d];

                    // dot(Q, K)
                    let mut s_val = vec_dot_f32(q_row, k_row);
                    let mut scale_applied = scale;
                    if logit_softcap != 0.0 {
                        scale_applied /= logit_softcap;
                    }
                    s_val *= scale_applied;
                    if logit_softcap != 0.0 {
                        s_val = logit_softcap * s_val.tanh();
                    }
                    s_val += mv;

                    // online softmax
                    let m_old = m;
                    let mut ms = 1.0f32;
                    let mut vs = 1.0f32;
                    if s_val > m {
                        m = s_val;
                        ms = (m_old - m).exp();
                        for v in vkq.iter_mut() {
                            *v *= ms;
                        }
                    } else {
                        vs = (s_val - m).exp();
                    }

                    // V row (strided) as f32
                    let v_base = b_i * vstride[0] + kv_pos * vstride[1] + v_head * vstride[2];
                    for d_i in 0..dv {
                        vkq[d_i] += v_data[v_base + d_i].to_f32() * vs;
                    }

                    s = s * ms + vs;
                }

                // final normalisation + downcast
                let inv_s = 1.0 / s;
                for (o, v) in out_chunk.iter_mut().zip(vkq.iter()) {
                    *o = T::cast(*v * inv_s);
                }
            });
    }

    let out_shape = (b, h, q_len, dv);
    Tensor::from_vec(out, out_shape, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::SdpaParams;
    use candle_core::{Device, Tensor, D};
    use candle_nn::ops::softmax;

    use candle_core::Result as CandleResult;

    const EPS: f32 = 1e-4;

    #[test]
    fn test_flash_attn_cpu_single_q() -> CandleResult<()> {
        // Test for q_len == 1 (single Q)
        let b = 1;
        let h = 2;
        let d = 4;
        let kv_len = 2;

        // Create q with shape (b, 1, h, d) filled with ones
        let q_vec = vec![1.0f32; b * h * d];
        let q = Tensor::from_vec(q_vec.clone(), (b, 1, h, d), &Device::Cpu)?;

        // Create k and v with shape (b, kv_len, h, d) filled with ones
        let k_vec = vec![1.0f32; b * kv_len * h * d];
        let v_vec = vec![1.0f32; b * kv_len * h * d];
        let k = Tensor::from_vec(k_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;
        let v = Tensor::from_vec(v_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;

        // SDPA parameters: scale = 1.0, no softcap
        let sdpa = SdpaParams {
            softmax_scale: 1.0,
            softcap: None,
            n_kv_groups: 1,
            sliding_window: None,
            sinks: None,
        };
        let scale = sdpa.softmax_scale;

        // Run the flash attention CPU function
        let out = run_flash_attn_cpu::<f32>(&q, &k, &v, None, &sdpa)?;
        // Expect output shape (b, h, 1, d)
        assert_eq!(out.shape().dims(), &[b, h, 1, d]);

        // Naive attention
        let q_perm = q.clone().permute((0, 2, 1, 3))?;
        let k_perm = k.clone().permute((0, 2, 1, 3))?;
        let v_perm = v.clone().permute((0, 2, 1, 3))?;

        let q_resh = q_perm.reshape(&[b * h, 1, d])?;
        let k_resh = k_perm.reshape(&[b * h, kv_len, d])?;
        let v_resh = v_perm.reshape(&[b * h, kv_len, d])?;

        let logits = (q_resh.matmul(&k_resh.transpose(1, 2)?)? * scale as f64)?;
        let weights = softmax(&logits, D::Minus1)?;

        let attn_out = weights.matmul(&v_resh)?;

        let naive_out = attn_out.reshape(&[b, h, 1, d])?;

        let flash_data = out.flatten_all()?.to_vec1::<f32>()?;
        let naive_data = naive_out.flatten_all()?.to_vec1::<f32>()?;
        for (f_val, n_val) in flash_data.iter().zip(naive_data.iter()) {
            assert!((f_val - n_val).abs() < EPS);
        }

        Ok(())
    }

    #[test]
    fn test_flash_attn_cpu_full_q() -> CandleResult<()> {
        // Test for q_len > 1 (full Q)
        let b = 1;
        let q_len = 2;
        let h = 2;
        let d = 4;
        let kv_len = 2;

        // Create q with shape (b, q_len, h, d) filled with ones
        let q_vec = vec![1.0f32; b * q_len * h * d];
        let q = Tensor::from_vec(q_vec.clone(), (b, q_len, h, d), &Device::Cpu)?;

        // Create k and v with shape (b, kv_len, h, d) filled with ones
        let k_vec = vec![1.0f32; b * kv_len * h * d];
        let v_vec = vec![1.0f32; b * kv_len * h * d];
        let k = Tensor::from_vec(k_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;
        let v = Tensor::from_vec(v_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;

        // SDPA parameters: scale = 1.0, no softcap
        let sdpa = SdpaParams {
            softmax_scale: 1.0,
            softcap: None,
            n_kv_groups: 1,
            sliding_window: None,
            sinks: None,
        };
        let scale = sdpa.softmax_scale;

        // Run the flash attention CPU function
        let out = run_flash_attn_cpu::<f32>(&q, &k, &v, None, &sdpa)?;
        // Expect output shape (b, h, q_len, d)
        assert_eq!(out.shape().dims(), &[b, h, q_len, d]);

        // Naive attention
        let q_perm = q.clone().permute((0, 2, 1, 3))?;
        let k_perm = k.clone().permute((0, 2, 1, 3))?;
        let v_perm = v.clone().permute((0, 2, 1, 3))?;

        let q_resh = q_perm.reshape(&[b * h, q_len, d])?;
        let k_resh = k_perm.reshape(&[b * h, kv_len, d])?;
        let v_resh = v_perm.reshape(&[b * h, kv_len, d])?;

        let logits = (q_resh.matmul(&k_resh.transpose(1, 2)?)? * scale as f64)?;
        let weights = softmax(&logits, D::Minus1)?;

        let attn_out = weights.matmul(&v_resh)?;

        let naive_out = attn_out.reshape(&[b, h, q_len, d])?;

        // 7) Compare element‐by‐element
        let flash_data = out.flatten_all()?.to_vec1::<f32>()?;
        let naive_data = naive_out.flatten_all()?.to_vec1::<f32>()?;
        for (f_val, n_val) in flash_data.iter().zip(naive_data.iter()) {
            assert!((f_val - n_val).abs() < EPS);
        }

        Ok(())
    }

    #[test]
    fn test_flash_attn_cpu_single_q_softcap() -> CandleResult<()> {
        // Test for q_len == 1 (single Q) with softcap
        let b = 1;
        let h = 2;
        let d = 4;
        let kv_len = 2;

        // Create q with shape (b, 1, h, d) filled with ones
        let q_vec = vec![1.0f32; b * h * d];
        let q = Tensor::from_vec(q_vec.clone(), (b, 1, h, d), &Device::Cpu)?;

        // Create k and v with shape (b, kv_len, h, d) filled with ones
        let k_vec = vec![1.0f32; b * kv_len * h * d];
        let v_vec = vec![1.0f32; b * kv_len * h * d];
        let k = Tensor::from_vec(k_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;
        let v = Tensor::from_vec(v_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;

        // SDPA parameters: scale = 1.0, softcap = Some(0.5)
        let sdpa = SdpaParams {
            softmax_scale: 1.0,
            softcap: Some(0.5),
            n_kv_groups: 1,
            sliding_window: None,
            sinks: None,
        };
        let scale = sdpa.softmax_scale;
        let sc = sdpa.softcap.unwrap();

        // Run the flash attention CPU function
        let out = run_flash_attn_cpu::<f32>(&q, &k, &v, None, &sdpa)?;
        // Expect output shape (b, h, 1, d)
        assert_eq!(out.shape().dims(), &[b, h, 1, d]);

        // Naive attention with softcap
        let q_perm = q.clone().permute((0, 2, 1, 3))?;
        let k_perm = k.clone().permute((0, 2, 1, 3))?;
        let v_perm = v.clone().permute((0, 2, 1, 3))?;

        let q_resh = q_perm.reshape(&[b * h, 1, d])?;
        let k_resh = k_perm.reshape(&[b * h, kv_len, d])?;
        let v_resh = v_perm.reshape(&[b * h, kv_len, d])?;

        let logits = (q_resh.matmul(&k_resh.transpose(1, 2)?)? * scale as f64)?;

        let logits = (logits / sc as f64)?;
        let logits = logits.tanh()?;
        let logits = (logits * sc as f64)?;

        let weights = softmax(&logits, D::Minus1)?;
        let attn_out = weights.matmul(&v_resh)?;
        let naive_out = attn_out.reshape(&[b, h, 1, d])?;

        let flash_data = out.flatten_all()?.to_vec1::<f32>()?;
        let naive_data = naive_out.flatten_all()?.to_vec1::<f32>()?;
        for (f_val, n_val) in flash_data.iter().zip(naive_data.iter()) {
            assert!((f_val - n_val).abs() < EPS);
        }
        Ok(())
    }

    #[test]
    fn test_flash_attn_cpu_full_q_softcap() -> CandleResult<()> {
        // Test for q_len > 1 (full Q) with softcap
        let b = 1;
        let q_len = 2;
        let h = 2;
        let d = 4;
        let kv_len = 2;

        // Create q with shape (b, q_len, h, d) filled with ones
        let q_vec = vec![1.0f32; b * q_len * h * d];
        let q = Tensor::from_vec(q_vec.clone(), (b, q_len, h, d), &Device::Cpu)?;

        // Create k and v with shape (b, kv_len, h, d) filled with ones
        let k_vec = vec![1.0f32; b * kv_len * h * d];
        let v_vec = vec![1.0f32; b * kv_len * h * d];
        let k = Tensor::from_vec(k_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;
        let v = Tensor::from_vec(v_vec.clone(), (b, kv_len, h, d), &Device::Cpu)?;

        // SDPA parameters: scale = 1.0, softcap = Some(0.5)
        let sdpa = SdpaParams {
            softmax_scale: 1.0,
            softcap: Some(0.5),
            n_kv_groups: 1,
            sliding_window: None,
            sinks: None,
        };
        let scale = sdpa.softmax_scale;
        let sc = sdpa.softcap.unwrap();

        // Run the flash attention CPU function
        let out = run_flash_attn_cpu::<f32>(&q, &k, &v, None, &sdpa)?;
        // Expect output shape (b, h, q_len, d)
        assert_eq!(out.shape().dims(), &[b, h, q_len, d]);

        // Naive attention with softcap
        let q_perm = q.clone().permute((0, 2, 1, 3))?;
        let k_perm = k.clone().permute((0, 2, 1, 3))?;
        let v_perm = v.clone().permute((0, 2, 1, 3))?;

        let q_resh = q_perm.reshape(&[b * h, q_len, d])?;
        let k_resh = k_perm.reshape(&[b * h, kv_len, d])?;
        let v_resh = v_perm.reshape(&[b * h, kv_len, d])?;

        let logits = (q_resh.matmul(&k_resh.transpose(1, 2)?)? * scale as f64)?;

        let logits = (logits / sc as f64)?;
        let logits = logits.tanh()?;
        let logits = (logits * sc as f64)?;

        let weights = softmax(&logits, D::Minus1)?;
        let attn_out = weights.matmul(&v_resh)?;
        let naive_out = attn_out.reshape(&[b, h, q_len, d])?;

        let flash_data = out.flatten_all()?.to_vec1::<f32>()?;
        let naive_data = naive_out.flatten_all()?.to_vec1::<f32>()?;
        for (f_val, n_val) in flash_data.iter().zip(naive_data.iter()) {
            assert!((f_val - n_val).abs() < EPS);
        }
        Ok(())
    }
}
