use super::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ5K, BlockQ6K, BlockQ8K, BlockQ8_0, QK8_0, QK_K,
};
use byteorder::{ByteOrder, LittleEndian};
use half::f16;
use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(target_arch = "x86")]
use core::arch::x86::*;
#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

#[inline(always)]
pub(crate) unsafe fn sum_i16_pairs_float(x: __m256i) -> __m256 {
    let ones = _mm256_set1_epi16(1);
    let summed_pairs = _mm256_madd_epi16(ones, x);
    _mm256_cvtepi32_ps(summed_pairs)
}

#[inline(always)]
pub(crate) unsafe fn mul_sum_us8_pairs_float(ax: __m256i, sy: __m256i) -> __m256 {
    let dot = _mm256_maddubs_epi16(ax, sy);
    sum_i16_pairs_float(dot)
}

#[inline(always)]
pub(crate) unsafe fn hsum_float_8(x: __m256) -> f32 {
    let res = _mm256_extractf128_ps(x, 1);
    let res = _mm_add_ps(res, _mm256_castps256_ps128(x));
    let res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    let res = _mm_add_ss(res, _mm_movehdup_ps(res));
    _mm_cvtss_f32(res)
}

#[inline(always)]
pub(crate) unsafe fn bytes_from_nibbles_32(rsi: *const u8) -> __m256i {
    let tmp = _mm_loadu_si128(rsi as *const __m128i);
    let bytes = _mm256_insertf128_si256::<1>(_mm256_castsi128_si256(tmp), _mm_srli_epi16(tmp, 4));
    let low_mask = _mm256_set1_epi8(0xF);
    _mm256_and_si256(low_mask, bytes)
}

// graft: with VNNI (AVX-512 VNNI or AVX-VNNI) the four byte products of each 32-bit lane are
// summed by one instruction instead of `maddubs` then `madd`: the same lanes, the same integer
// sums (`maddubs` cannot saturate here: quantized values lie in [-127, 127]), the same floats.
#[inline(always)]
pub(crate) unsafe fn mul_sum_i8_pairs_float(x: __m256i, y: __m256i) -> __m256 {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    #[cfg(all(target_feature = "avx512vnni", target_feature = "avx512vl"))]
    return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy));
    #[cfg(all(
        target_feature = "avxvnni",
        not(all(target_feature = "avx512vnni", target_feature = "avx512vl"))
    ))]
    return _mm256_cvtepi32_ps(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), ax, sy));
    #[allow(unreachable_code)]
    mul_sum_us8_pairs_float(ax, sy)
}

#[inline(always)]
pub(crate) fn vec_dot_q4_0_q8_0(n: usize, xs: &[BlockQ4_0], ys: &[BlockQ8_0]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK8_0),
        "vec_dot_q4_0_q8_0: {n} is not divisible by {QK8_0}"
    );
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in xs.iter().zip(ys.iter()) {
            let d = _mm256_set1_ps(f16::to_f32(x.d) * f16::to_f32(y.d));
            let bx = bytes_from_nibbles_32(x.qs.as_ptr());
            let off = _mm256_set1_epi8(8);
            let bx = _mm256_sub_epi8(bx, off);
            let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            let q = mul_sum_i8_pairs_float(bx, by);
            acc = _mm256_fmadd_ps(d, q, acc);
        }
        hsum_float_8(acc)
    }
}

#[inline(always)]
pub(crate) fn vec_dot_q8_0_q8_0(n: usize, xs: &[BlockQ8_0], ys: &[BlockQ8_0]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK8_0),
        "vec_dot_q8_0_q8_0: {n} is not divisible by {QK8_0}"
    );
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in xs.iter().zip(ys.iter()) {
            let d = _mm256_set1_ps(f16::to_f32(x.d) * f16::to_f32(y.d));
            let bx = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
            let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            let q = mul_sum_i8_pairs_float(bx, by);
            acc = _mm256_fmadd_ps(d, q, acc);
        }
        hsum_float_8(acc)
    }
}

/// graft: how far ahead [`vec_dot_q8_0_q8_0_x4`] prefetches, in weight rows.
const PREFETCH_ROWS_AHEAD: usize = 16;

/// graft: whether [`vec_dot_q8_0_q8_0_x4`] reads its four weight rows one after the other (the
/// registry's loop) rather than block by block side by side: on AMD processors. One token's
/// matrix-vector products of SmolLM2-135M (`cargo bench --workspace --bench qmatmul`): on a
/// 2-core Intel Xeon VM, side by side with the next rows prefetched 11.4 ms against 16.5 one
/// after the other; on a 2-core AMD EPYC VM (Zen 4) 10.7-13.7 ms against 7.5-10.9, whose
/// hardware prefetcher follows one sequential stream of weights better than four.
fn reads_rows_in_turn() -> bool {
    match ROWS_IN_TURN.load(Ordering::Relaxed) {
        IN_TURN => true,
        SIDE_BY_SIDE => false,
        _ => {
            // SAFETY: CPUID exists on every x86-64 processor.
            #[allow(unused_unsafe)]
            let id = unsafe { __cpuid(0) };
            // The vendor string "AuthenticAMD", in EBX, EDX, ECX.
            let amd = [id.ebx, id.edx, id.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163];
            ROWS_IN_TURN.store(if amd { IN_TURN } else { SIDE_BY_SIDE }, Ordering::Relaxed);
            amd
        }
    }
}

/// graft: [`reads_rows_in_turn`]'s answer: not chosen yet, or one of the two.
static ROWS_IN_TURN: AtomicU8 = AtomicU8::new(0);
const IN_TURN: u8 = 1;
const SIDE_BY_SIDE: u8 = 2;

/// graft: sets how [`vec_dot_q8_0_q8_0_x4`] reads its weight rows (`Some(true)`: one after the
/// other; `Some(false)`: side by side; `None`: by the processor, as by default). Both give
/// the registry's bits; the tests take each way on any machine.
pub fn read_weight_rows_in_turn(choice: Option<bool>) {
    let value = match choice {
        Some(true) => IN_TURN,
        Some(false) => SIDE_BY_SIDE,
        None => 0,
    };
    ROWS_IN_TURN.store(value, Ordering::Relaxed);
}

/// graft: [`vec_dot_q8_0_q8_0`] of four weight rows against one input row, each result bit for
/// bit what that function gives (the same lanes summed in the same order), with each input
/// block loaded once for the four, four independent sums in flight, and the weight rows it
/// will read next prefetched: a matrix-vector product (one token's decode) streams its
/// weights faster.
#[inline(always)]
pub(crate) fn vec_dot_q8_0_q8_0_x4(n: usize, xs: [&[BlockQ8_0]; 4], ys: &[BlockQ8_0]) -> [f32; 4] {
    debug_assert!(
        n.is_multiple_of(QK8_0),
        "vec_dot_q8_0_q8_0_x4: {n} is not divisible by {QK8_0}"
    );
    if reads_rows_in_turn() {
        return xs.map(|x| vec_dot_q8_0_q8_0(n, x, ys));
    }
    let blocks = n / QK8_0;
    let [x0, x1, x2, x3] = xs;
    let (x0, x1, x2, x3, ys) = (
        &x0[..blocks],
        &x1[..blocks],
        &x2[..blocks],
        &x3[..blocks],
        &ys[..blocks],
    );
    // The weight rows a matrix-vector product reads next are asked for 16 rows (four calls)
    // ahead, from each of the four rows read now. Without it the loads wait on memory: one
    // token's matrix-vector products of SmolLM2-135M took 17.7 ms on a 2-core machine here,
    // 11-13 ms with it (vendor/README.md).
    let ahead = PREFETCH_ROWS_AHEAD * blocks * std::mem::size_of::<BlockQ8_0>();
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (i, y) in ys.iter().enumerate() {
            let yd = f16::to_f32(y.d);
            let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            for (acc, x) in acc.iter_mut().zip([&x0[i], &x1[i], &x2[i], &x3[i]]) {
                // (Past the last row this names no memory of ours; a prefetch never faults.)
                _mm_prefetch::<_MM_HINT_T0>((x as *const BlockQ8_0 as *const i8).wrapping_add(ahead));
                let d = _mm256_set1_ps(f16::to_f32(x.d) * yd);
                let bx = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
                let q = mul_sum_i8_pairs_float(bx, by);
                *acc = _mm256_fmadd_ps(d, q, *acc);
            }
        }
        acc.map(|acc| hsum_float_8(acc))
    }
}

/// graft: VNNI's `dpbusd`: `acc` plus, in each 32-bit lane, the sum of its four products of
/// an unsigned byte of `u` and a signed byte of `s`.
#[cfg(all(
    target_feature = "avxvnni",
    not(all(
        target_feature = "avx512vnni",
        target_feature = "avx512bw",
        target_feature = "avx512dq",
        target_feature = "avx512vl"
    ))
))]
#[inline(always)]
unsafe fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    #[cfg(all(target_feature = "avx512vnni", target_feature = "avx512vl"))]
    return _mm256_dpbusd_epi32(acc, u, s);
    #[cfg(not(all(target_feature = "avx512vnni", target_feature = "avx512vl")))]
    return _mm256_dpbusd_avx_epi32(acc, u, s);
}

/// graft: [`vec_dot_q8_0_q8_0_x4`] of four weight rows against each of several input rows
/// (`out[r]` for `ys[r]`), each result bit for bit what [`vec_dot_q8_0_q8_0`] gives: the
/// same integer lane sums, scaled and added in the same order. Several input rows share each
/// weight block's loads: up to eight with AVX-512 VNNI ([`x8_tile`]), four with AVX-VNNI
/// ([`x4_tile`]), two without VNNI ([`x4_tile_signs`]).
#[inline(always)]
pub(crate) fn vec_dot_q8_0_q8_0_x4_rows(
    n: usize,
    xs: [&[BlockQ8_0]; 4],
    ys: &[&[BlockQ8_0]],
    out: &mut [[f32; 4]],
) {
    debug_assert!(
        n.is_multiple_of(QK8_0),
        "vec_dot_q8_0_q8_0_x4_rows: {n} is not divisible by {QK8_0}"
    );
    let mut ys = ys;
    let mut out = out;
    while !ys.is_empty() && !out.is_empty() {
        // SAFETY: the blocks read are bounded by the slices; the CPU has AVX2 (and AVX-512
        // VNNI or AVX-VNNI where `x8_tile` or `x4_tile` is compiled).
        let done = unsafe {
            #[cfg(all(
                target_feature = "avx512vnni",
                target_feature = "avx512bw",
                target_feature = "avx512dq",
                target_feature = "avx512vl"
            ))]
            match ys.len() {
                1 => {
                    out[0] = vec_dot_q8_0_q8_0_x4(n, xs, ys[0]);
                    1
                }
                2 => x8_tile::<2>(n, xs, ys, out),
                3 => x8_tile::<3>(n, xs, ys, out),
                4..=7 => x8_tile::<4>(n, xs, ys, out),
                _ => x8_tile::<8>(n, xs, ys, out),
            }
            #[cfg(all(
                target_feature = "avxvnni",
                not(all(
                    target_feature = "avx512vnni",
                    target_feature = "avx512bw",
                    target_feature = "avx512dq",
                    target_feature = "avx512vl"
                ))
            ))]
            match ys.len() {
                1 => {
                    out[0] = vec_dot_q8_0_q8_0_x4(n, xs, ys[0]);
                    1
                }
                2 => x4_tile::<2>(n, xs, ys, out),
                3 => x4_tile::<3>(n, xs, ys, out),
                _ => x4_tile::<4>(n, xs, ys, out),
            }
            #[cfg(not(any(
                all(
                    target_feature = "avx512vnni",
                    target_feature = "avx512bw",
                    target_feature = "avx512dq",
                    target_feature = "avx512vl"
                ),
                target_feature = "avxvnni"
            )))]
            match ys.len() {
                1 => {
                    out[0] = vec_dot_q8_0_q8_0_x4(n, xs, ys[0]);
                    1
                }
                _ => x4_tile_signs::<TILE_ROWS_SIGNS>(n, xs, ys, out),
            }
        };
        ys = &ys[done..];
        out = &mut out[done..];
    }
}

/// graft: input rows per [`x4_tile_signs`]: with four weight rows, their accumulators and
/// blocks fill AVX2's sixteen vector registers.
#[cfg(not(any(
    all(
        target_feature = "avx512vnni",
        target_feature = "avx512bw",
        target_feature = "avx512dq",
        target_feature = "avx512vl"
    ),
    target_feature = "avxvnni"
)))]
const TILE_ROWS_SIGNS: usize = 2;

/// graft: [`vec_dot_q8_0_q8_0_x4_rows`] for its first `R` input rows without VNNI; returns
/// `R`. The registry's `mul_sum_i8_pairs_float` multiplies |weight| by the input with the
/// weight's signs; here each input block's absolute value is taken once, and `maddubs`
/// multiplies it by each weight with the input's signs: the same byte products, so the same
/// pair sums (no saturation: both lie in [-127, 127]), the same `madd` lanes and the same
/// scaling and additions, bit for bit.
#[cfg(not(any(
    all(
        target_feature = "avx512vnni",
        target_feature = "avx512bw",
        target_feature = "avx512dq",
        target_feature = "avx512vl"
    ),
    target_feature = "avxvnni"
)))]
#[inline(always)]
unsafe fn x4_tile_signs<const R: usize>(
    n: usize,
    xs: [&[BlockQ8_0]; 4],
    ys: &[&[BlockQ8_0]],
    out: &mut [[f32; 4]],
) -> usize {
    let blocks = n / QK8_0;
    let xs = xs.map(|x| &x[..blocks]);
    let ys: [&[BlockQ8_0]; R] = std::array::from_fn(|r| &ys[r][..blocks]);
    let ones = _mm256_set1_epi16(1);
    let ahead = PREFETCH_ROWS_AHEAD * blocks * std::mem::size_of::<BlockQ8_0>();
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    // Each pair's scale, the registry's product of the two f32 scales, four at a time.
    let mut scales = [[0f32; 4]; R];
    for i in 0..blocks {
        let x: [&BlockQ8_0; 4] = std::array::from_fn(|c| xs[c].get_unchecked(i));
        for x in x {
            // As in `vec_dot_q8_0_q8_0_x4`: the weight rows read next, from memory meanwhile
            // (a few new tokens read every weight from memory, as a decode step does).
            _mm_prefetch::<_MM_HINT_T0>((x as *const BlockQ8_0 as *const i8).wrapping_add(ahead));
        }
        let xd = _mm_setr_ps(
            f16::to_f32(x[0].d),
            f16::to_f32(x[1].d),
            f16::to_f32(x[2].d),
            f16::to_f32(x[3].d),
        );
        let mut by = [_mm256_setzero_si256(); R];
        let mut ay = [_mm256_setzero_si256(); R];
        for r in 0..R {
            let y = ys[r].get_unchecked(i);
            by[r] = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            ay[r] = _mm256_sign_epi8(by[r], by[r]);
            _mm_storeu_ps(scales[r].as_mut_ptr(), _mm_mul_ps(xd, _mm_set1_ps(f16::to_f32(y.d))));
        }
        for c in 0..4 {
            let bx = _mm256_loadu_si256(x[c].qs.as_ptr() as *const __m256i);
            for r in 0..R {
                let products = _mm256_maddubs_epi16(ay[r], _mm256_sign_epi8(bx, by[r]));
                let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(ones, products));
                let d = _mm256_broadcast_ss(scales[r].get_unchecked(c));
                acc[r][c] = _mm256_fmadd_ps(d, q, acc[r][c]);
            }
        }
    }
    for (out, acc) in out.iter_mut().zip(acc) {
        *out = acc.map(|acc| hsum_float_8(acc));
    }
    R
}

/// graft: [`vec_dot_q8_0_q8_0_x4_rows`] for its first `R` input rows with AVX-VNNI (256-bit
/// registers only); returns `R`.
/// The sign trick `vec_dot_q8_0_q8_0` applies per (weight, input) pair is replaced by one per
/// input block and one per weight block: the input's bytes plus 128 are unsigned, `dpbusd`
/// takes them as such, and each lane starts from -128 times the sum of its four weights, which
/// the +128 added; the integer sum is the same.
#[cfg(all(
    target_feature = "avxvnni",
    not(all(
        target_feature = "avx512vnni",
        target_feature = "avx512bw",
        target_feature = "avx512dq",
        target_feature = "avx512vl"
    ))
))]
#[inline(always)]
unsafe fn x4_tile<const R: usize>(
    n: usize,
    xs: [&[BlockQ8_0]; 4],
    ys: &[&[BlockQ8_0]],
    out: &mut [[f32; 4]],
) -> usize {
    let blocks = n / QK8_0;
    let xs = xs.map(|x| &x[..blocks]);
    let ys: [&[BlockQ8_0]; R] = std::array::from_fn(|r| &ys[r][..blocks]);
    let high = _mm256_set1_epi8(i8::MIN);
    let ahead = PREFETCH_ROWS_AHEAD * blocks * std::mem::size_of::<BlockQ8_0>();
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    for i in 0..blocks {
        let mut bx = [_mm256_setzero_si256(); 4];
        let mut start = [_mm256_setzero_si256(); 4];
        let mut xd = [0f32; 4];
        for c in 0..4 {
            let x = &xs[c][i];
            // As in `vec_dot_q8_0_q8_0_x4`: the weight rows read next, from memory meanwhile.
            _mm_prefetch::<_MM_HINT_T0>((x as *const BlockQ8_0 as *const i8).wrapping_add(ahead));
            bx[c] = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
            // -128 × each lane's four weights.
            start[c] = _mm256_sub_epi32(
                _mm256_setzero_si256(),
                dpbusd(_mm256_setzero_si256(), high, bx[c]),
            );
            xd[c] = f16::to_f32(x.d);
        }
        for r in 0..R {
            let y = &ys[r][i];
            // The input's bytes plus 128, as unsigned bytes.
            let by = _mm256_xor_si256(_mm256_loadu_si256(y.qs.as_ptr() as *const __m256i), high);
            let yd = f16::to_f32(y.d);
            for c in 0..4 {
                let q = _mm256_cvtepi32_ps(dpbusd(start[c], by, bx[c]));
                let d = _mm256_set1_ps(xd[c] * yd);
                acc[r][c] = _mm256_fmadd_ps(d, q, acc[r][c]);
            }
        }
    }
    for (out, acc) in out.iter_mut().zip(acc) {
        *out = acc.map(|acc| hsum_float_8(acc));
    }
    R
}

/// graft: [`vec_dot_q8_0_q8_0_x4_rows`] for its first `R` input rows (up to eight) with
/// AVX-512 VNNI; returns `R`. [`x4_tile`]'s arithmetic with two weight rows to a 512-bit
/// register (the first in the low eight lanes, the second in the high eight): each lane sums,
/// scales and adds what a lane of [`vec_dot_q8_0_q8_0`] does, in the same order, so the same
/// bits; each instruction does two weight rows' work, and the 32 vector registers hold eight
/// input rows' sums, so the weights' blocks are loaded once per eight input rows.
#[cfg(all(
    target_feature = "avx512vnni",
    target_feature = "avx512bw",
    target_feature = "avx512dq",
    target_feature = "avx512vl"
))]
#[inline(always)]
unsafe fn x8_tile<const R: usize>(
    n: usize,
    xs: [&[BlockQ8_0]; 4],
    ys: &[&[BlockQ8_0]],
    out: &mut [[f32; 4]],
) -> usize {
    let blocks = n / QK8_0;
    let xs = xs.map(|x| &x[..blocks]);
    let ys: [&[BlockQ8_0]; R] = std::array::from_fn(|r| &ys[r][..blocks]);
    let high = _mm512_set1_epi8(i8::MIN);
    let zero = _mm512_setzero_si512();
    let ahead = PREFETCH_ROWS_AHEAD * blocks * std::mem::size_of::<BlockQ8_0>();
    // The scale of each lane's pair (of the four, one per weight row): lanes 0-7 take pair
    // 2p's, lanes 8-15 pair 2p+1's.
    let halves = [
        _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
        _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3),
    ];
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for i in 0..blocks {
        let mut bx = [zero; 2];
        let mut start = [zero; 2];
        for p in 0..2 {
            let (a, b) = (&xs[2 * p][i], &xs[2 * p + 1][i]);
            // As in `vec_dot_q8_0_q8_0_x4`: the weight rows read next, from memory meanwhile.
            _mm_prefetch::<_MM_HINT_T0>((a as *const BlockQ8_0 as *const i8).wrapping_add(ahead));
            _mm_prefetch::<_MM_HINT_T0>((b as *const BlockQ8_0 as *const i8).wrapping_add(ahead));
            bx[p] = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_loadu_si256(a.qs.as_ptr() as *const __m256i)),
                _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i),
            );
            // -128 × each lane's four weights.
            start[p] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, high, bx[p]));
        }
        let xd = _mm_cvtph_ps(_mm_setr_epi16(
            xs[0][i].d.to_bits() as i16,
            xs[1][i].d.to_bits() as i16,
            xs[2][i].d.to_bits() as i16,
            xs[3][i].d.to_bits() as i16,
            0,
            0,
            0,
            0,
        ));
        for r in 0..R {
            let y = &ys[r][i];
            // The input's bytes plus 128, as unsigned bytes, in both halves.
            let by = _mm512_xor_si512(
                _mm512_broadcast_i64x4(_mm256_loadu_si256(y.qs.as_ptr() as *const __m256i)),
                high,
            );
            // The four pairs' scales (each weight row's times the input's) in one 128-bit
            // product, each pair's then spread over its half.
            let yd = _mm_cvtph_ps(_mm_set1_epi16(y.d.to_bits() as i16));
            let d = _mm512_castps128_ps512(_mm_mul_ps(xd, yd));
            for p in 0..2 {
                let q = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start[p], by, bx[p]));
                acc[r][p] = _mm512_fmadd_ps(_mm512_permutexvar_ps(halves[p], d), q, acc[r][p]);
            }
        }
    }
    for (out, acc) in out.iter_mut().zip(acc) {
        for (p, acc) in acc.into_iter().enumerate() {
            out[2 * p] = hsum_float_8(_mm512_castps512_ps256(acc));
            out[2 * p + 1] = hsum_float_8(_mm512_extractf32x8_ps::<1>(acc));
        }
    }
    R
}

#[inline(always)]
unsafe fn get_scale_shuffle(i: usize) -> __m128i {
    const K_SHUFFLE: [u8; 128] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7,
        7, 7, 7, 7, 8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10, 10,
        11, 11, 11, 11, 11, 11, 11, 11, 12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13,
        13, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15,
    ];
    _mm_loadu_si128((K_SHUFFLE.as_ptr() as *const __m128i).add(i))
}

#[inline(always)]
unsafe fn get_scale_shuffle_k4(i: usize) -> __m256i {
    const K_SHUFFLE: [u8; 256] = [
        0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
        0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
        2, 3, 2, 3, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5,
        4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7,
        6, 7, 6, 7, 6, 7, 6, 7, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9,
        8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10,
        11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 12, 13, 12, 13, 12, 13,
        12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12,
        13, 12, 13, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15,
        14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15,
    ];
    _mm256_loadu_si256((K_SHUFFLE.as_ptr() as *const __m256i).add(i))
}

#[inline(always)]
unsafe fn get_scale_shuffle_q3k(i: usize) -> __m256i {
    const K_SHUFFLE: [u8; 128] = [
        0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
        2, 3, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7,
        6, 7, 6, 7, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11,
        10, 11, 10, 11, 10, 11, 10, 11, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12,
        13, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15,
    ];
    _mm256_loadu_si256((K_SHUFFLE.as_ptr() as *const __m256i).add(i))
}

#[inline(always)]
pub(crate) fn vec_dot_q6k_q8k(n: usize, xs: &[BlockQ6K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q6k_8k: {n} is not divisible by {QK_K}"
    );

    unsafe {
        let m4 = _mm256_set1_epi8(0xF);
        let m2 = _mm256_set1_epi8(3);
        let m32s = _mm256_set1_epi8(32);
        let mut acc = _mm256_setzero_ps();
        for (x, y) in xs.iter().zip(ys.iter()) {
            let d = y.d * x.d.to_f32();
            let mut q4 = x.ql.as_ptr();
            let mut qh = x.qh.as_ptr();
            let mut q8 = y.qs.as_ptr();

            let scales = _mm_loadu_si128(x.scales.as_ptr() as *const __m128i);
            let mut sumi = _mm256_setzero_si256();

            for j in 0..QK_K / 128 {
                let is = j * 4;
                let scale_0 = _mm_shuffle_epi8(scales, get_scale_shuffle(is));
                let scale_1 = _mm_shuffle_epi8(scales, get_scale_shuffle(is + 1));
                let scale_2 = _mm_shuffle_epi8(scales, get_scale_shuffle(is + 2));
                let scale_3 = _mm_shuffle_epi8(scales, get_scale_shuffle(is + 3));

                let q4bits1 = _mm256_loadu_si256(q4 as *const __m256i);
                q4 = q4.add(32);
                let q4bits2 = _mm256_loadu_si256(q4 as *const __m256i);
                q4 = q4.add(32);
                let q4bits_h = _mm256_loadu_si256(qh as *const __m256i);
                qh = qh.add(32);

                let q4h_0 = _mm256_slli_epi16(_mm256_and_si256(q4bits_h, m2), 4);
                let q4h_1 =
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bits_h, 2), m2), 4);
                let q4h_2 =
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bits_h, 4), m2), 4);
                let q4h_3 =
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bits_h, 6), m2), 4);

                let q4_0 = _mm256_or_si256(_mm256_and_si256(q4bits1, m4), q4h_0);
                let q4_1 = _mm256_or_si256(_mm256_and_si256(q4bits2, m4), q4h_1);
                let q4_2 =
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits1, 4), m4), q4h_2);
                let q4_3 =
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits2, 4), m4), q4h_3);

                let q8_0 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_1 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_2 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_3 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);

                let q8s_0 = _mm256_maddubs_epi16(m32s, q8_0);
                let q8s_1 = _mm256_maddubs_epi16(m32s, q8_1);
                let q8s_2 = _mm256_maddubs_epi16(m32s, q8_2);
                let q8s_3 = _mm256_maddubs_epi16(m32s, q8_3);

                let p16_0 = _mm256_maddubs_epi16(q4_0, q8_0);
                let p16_1 = _mm256_maddubs_epi16(q4_1, q8_1);
                let p16_2 = _mm256_maddubs_epi16(q4_2, q8_2);
                let p16_3 = _mm256_maddubs_epi16(q4_3, q8_3);

                let p16_0 = _mm256_sub_epi16(p16_0, q8s_0);
                let p16_1 = _mm256_sub_epi16(p16_1, q8s_1);
                let p16_2 = _mm256_sub_epi16(p16_2, q8s_2);
                let p16_3 = _mm256_sub_epi16(p16_3, q8s_3);

                let p16_0 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_0), p16_0);
                let p16_1 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_1), p16_1);
                let p16_2 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_2), p16_2);
                let p16_3 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_3), p16_3);

                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_1));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_2, p16_3));
            }
            acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_float_8(acc)
    }
}

#[inline(always)]
unsafe fn mm256_set_m128i(a: __m128i, b: __m128i) -> __m256i {
    _mm256_insertf128_si256(_mm256_castsi128_si256(b), a, 1)
}

#[inline(always)]
pub(crate) fn vec_dot_q2k_q8k(n: usize, xs: &[BlockQ2K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q2k_q8k: {n} is not divisible by {QK_K}"
    );

    unsafe {
        let m3 = _mm256_set1_epi8(3);
        let m4 = _mm_set1_epi8(0xF);

        let mut acc = _mm256_setzero_ps();

        for (x, y) in xs.iter().zip(ys.iter()) {
            let d = y.d * x.d.to_f32();
            let dmin = -y.d * x.dmin.to_f32();

            let mut q2 = x.qs.as_ptr();
            let mut q8 = y.qs.as_ptr();

            let mins_and_scales = _mm_loadu_si128(x.scales.as_ptr() as *const __m128i);
            let scales8 = _mm_and_si128(mins_and_scales, m4);
            let mins8 = _mm_and_si128(_mm_srli_epi16(mins_and_scales, 4), m4);
            let mins = _mm256_cvtepi8_epi16(mins8);
            let prod =
                _mm256_madd_epi16(mins, _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i));

            acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&dmin), _mm256_cvtepi32_ps(prod), acc);

            let all_scales = _mm256_cvtepi8_epi16(scales8);
            let l_scales = _mm256_extracti128_si256(all_scales, 0);
            let h_scales = _mm256_extracti128_si256(all_scales, 1);
            let scales = [
                mm256_set_m128i(l_scales, l_scales),
                mm256_set_m128i(h_scales, h_scales),
            ];

            let mut sumi = _mm256_setzero_si256();

            for scale in scales {
                let q2bits = _mm256_loadu_si256(q2 as *const __m256i);
                q2 = q2.add(32);

                let q8_0 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_1 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_2 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_3 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);

                let q2_0 = _mm256_and_si256(q2bits, m3);
                let q2_1 = _mm256_and_si256(_mm256_srli_epi16(q2bits, 2), m3);
                let q2_2 = _mm256_and_si256(_mm256_srli_epi16(q2bits, 4), m3);
                let q2_3 = _mm256_and_si256(_mm256_srli_epi16(q2bits, 6), m3);

                let p0 = _mm256_maddubs_epi16(q2_0, q8_0);
                let p1 = _mm256_maddubs_epi16(q2_1, q8_1);
                let p2 = _mm256_maddubs_epi16(q2_2, q8_2);
                let p3 = _mm256_maddubs_epi16(q2_3, q8_3);

                let p0 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(scale, get_scale_shuffle_q3k(0)), p0);
                let p1 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(scale, get_scale_shuffle_q3k(1)), p1);
                let p2 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(scale, get_scale_shuffle_q3k(2)), p2);
                let p3 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(scale, get_scale_shuffle_q3k(3)), p3);

                let p0 = _mm256_add_epi32(p0, p1);
                let p2 = _mm256_add_epi32(p2, p3);

                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p2));
            }
            acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&d), _mm256_cvtepi32_ps(sumi), acc);
        }

        hsum_float_8(acc)
    }
}

#[inline(always)]
pub(crate) fn vec_dot_q3k_q8k(n: usize, xs: &[BlockQ3K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q3k_q8k: {n} is not divisible by {QK_K}"
    );

    const KMASK1: u32 = 0x03030303;
    const KMASK2: u32 = 0x0f0f0f0f;

    let mut aux = [0u32; 3];

    unsafe {
        let m3 = _mm256_set1_epi8(3);
        let mone = _mm256_set1_epi8(1);
        let m32 = _mm_set1_epi8(32);

        let mut acc = _mm256_setzero_ps();
        for (x, y) in xs.iter().zip(ys.iter()) {
            let d = y.d * x.d.to_f32();

            let mut q3 = x.qs.as_ptr();
            let mut q8 = y.qs.as_ptr();

            LittleEndian::read_u32_into(&x.scales, &mut aux);
            let scales128 = _mm_set_epi32(
                (((aux[1] >> 4) & KMASK2) | (((aux[2] >> 6) & KMASK1) << 4)) as i32,
                (((aux[0] >> 4) & KMASK2) | (((aux[2] >> 4) & KMASK1) << 4)) as i32,
                ((aux[1] & KMASK2) | (((aux[2] >> 2) & KMASK1) << 4)) as i32,
                ((aux[0] & KMASK2) | (((aux[2]) & KMASK1) << 4)) as i32,
            );
            let scales128 = _mm_sub_epi8(scales128, m32);
            let all_scales = _mm256_cvtepi8_epi16(scales128);
            let l_scales = _mm256_extracti128_si256(all_scales, 0);
            let h_scales = _mm256_extracti128_si256(all_scales, 1);
            let scales = [
                mm256_set_m128i(l_scales, l_scales),
                mm256_set_m128i(h_scales, h_scales),
            ];

            // high bit
            let hbits = _mm256_loadu_si256(x.hmask.as_ptr() as *const __m256i);

            let mut sumi = _mm256_setzero_si256();

            for (j, scale) in scales.iter().enumerate() {
                // load low 2 bits
                let q3bits = _mm256_loadu_si256(q3 as *const __m256i);
                q3 = q3.add(32);

                // Prepare low and high bits
                // We hardcode the shifts here to avoid loading them into a separate register
                let q3l_0 = _mm256_and_si256(q3bits, m3);
                let q3h_0 = if j == 0 {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 0)), 0)
                } else {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 4)), 4)
                };
                let q3h_0 = _mm256_slli_epi16(q3h_0, 2);

                let q3l_1 = _mm256_and_si256(_mm256_srli_epi16(q3bits, 2), m3);
                let q3h_1 = if j == 0 {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 1)), 1)
                } else {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 5)), 5)
                };
                let q3h_1 = _mm256_slli_epi16(q3h_1, 2);

                let q3l_2 = _mm256_and_si256(_mm256_srli_epi16(q3bits, 4), m3);
                let q3h_2 = if j == 0 {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 2)), 2)
                } else {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 6)), 6)
                };
                let q3h_2 = _mm256_slli_epi16(q3h_2, 2);

                let q3l_3 = _mm256_and_si256(_mm256_srli_epi16(q3bits, 6), m3);
                let q3h_3 = if j == 0 {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 3)), 3)
                } else {
                    _mm256_srli_epi16(_mm256_andnot_si256(hbits, _mm256_slli_epi16(mone, 7)), 7)
                };
                let q3h_3 = _mm256_slli_epi16(q3h_3, 2);

                // load Q8 quants
                let q8_0 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_1 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_2 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_3 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);

                // Dot product: we multiply the 2 low bits and 1 high bit part separately, so we
                // can use _mm256_maddubs_epi16, and then subtract. The high bit part has the 2
                // already subtracted (and so, it is zero if the high bit was not set, and 2 if the
                // high bit was set)
                let q8s_0 = _mm256_maddubs_epi16(q3h_0, q8_0);
                let q8s_1 = _mm256_maddubs_epi16(q3h_1, q8_1);
                let q8s_2 = _mm256_maddubs_epi16(q3h_2, q8_2);
                let q8s_3 = _mm256_maddubs_epi16(q3h_3, q8_3);

                let p16_0 = _mm256_maddubs_epi16(q3l_0, q8_0);
                let p16_1 = _mm256_maddubs_epi16(q3l_1, q8_1);
                let p16_2 = _mm256_maddubs_epi16(q3l_2, q8_2);
                let p16_3 = _mm256_maddubs_epi16(q3l_3, q8_3);

                let p16_0 = _mm256_sub_epi16(p16_0, q8s_0);
                let p16_1 = _mm256_sub_epi16(p16_1, q8s_1);
                let p16_2 = _mm256_sub_epi16(p16_2, q8s_2);
                let p16_3 = _mm256_sub_epi16(p16_3, q8s_3);

                // multiply with scales
                let p16_0 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(*scale, get_scale_shuffle_q3k(0)), p16_0);
                let p16_1 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(*scale, get_scale_shuffle_q3k(1)), p16_1);
                let p16_2 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(*scale, get_scale_shuffle_q3k(2)), p16_2);
                let p16_3 =
                    _mm256_madd_epi16(_mm256_shuffle_epi8(*scale, get_scale_shuffle_q3k(3)), p16_3);

                // accumulate
                let p16_0 = _mm256_add_epi32(p16_0, p16_1);
                let p16_2 = _mm256_add_epi32(p16_2, p16_3);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_2));
            }

            // multiply with block scale and accumulate
            acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_float_8(acc)
    }
}

#[inline(always)]
pub(crate) fn vec_dot_q4k_q8k(n: usize, xs: &[BlockQ4K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q4k_q8k: {n} is not divisible by {QK_K}"
    );
    let mut utmp = [0u32; 4];
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;

    unsafe {
        let m4 = _mm256_set1_epi8(0xF);

        let mut acc = _mm256_setzero_ps();
        let mut acc_m = _mm_setzero_ps();

        for (x, y) in xs.iter().zip(ys.iter()) {
            let d = y.d * x.d.to_f32();
            let dmin = -y.d * x.dmin.to_f32();

            LittleEndian::read_u32_into(&x.scales, &mut utmp[0..3]);

            utmp[3] = ((utmp[2] >> 4) & KMASK2) | (((utmp[1] >> 6) & KMASK3) << 4);
            let uaux = utmp[1] & KMASK1;
            utmp[1] = (utmp[2] & KMASK2) | (((utmp[0] >> 6) & KMASK3) << 4);
            utmp[2] = uaux;
            utmp[0] &= KMASK1;

            let mut q4 = x.qs.as_ptr();
            let mut q8 = y.qs.as_ptr();

            let mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32(
                utmp[3] as i32,
                utmp[2] as i32,
                utmp[1] as i32,
                utmp[0] as i32,
            ));

            let q8sums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
            let q8s = _mm_hadd_epi16(
                _mm256_extracti128_si256(q8sums, 0),
                _mm256_extracti128_si256(q8sums, 1),
            );
            let prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
            acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);

            let sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
            let scales = mm256_set_m128i(sc128, sc128);

            let mut sumi = _mm256_setzero_si256();

            for j in 0..QK_K / 64 {
                let scale_l = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j));
                let scale_h = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j + 1));

                let q4bits = _mm256_loadu_si256(q4 as *const __m256i);
                q4 = q4.add(32);
                let q4l = _mm256_and_si256(q4bits, m4);
                let q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);

                let q8l = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let p16l = _mm256_maddubs_epi16(q4l, q8l);
                let p16l = _mm256_madd_epi16(scale_l, p16l);
                sumi = _mm256_add_epi32(sumi, p16l);

                let q8h = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let p16h = _mm256_maddubs_epi16(q4h, q8h);
                let p16h = _mm256_madd_epi16(scale_h, p16h);
                sumi = _mm256_add_epi32(sumi, p16h);
            }

            let vd = _mm256_set1_ps(d);
            acc = _mm256_fmadd_ps(vd, _mm256_cvtepi32_ps(sumi), acc);
        }

        let acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
        let acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));

        hsum_float_8(acc) + _mm_cvtss_f32(acc_m)
    }
}

#[inline(always)]
pub(crate) fn vec_dot_q5k_q8k(n: usize, xs: &[BlockQ5K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q5k_q8k: {n} is not divisible by {QK_K}"
    );
    let mut utmp = [0u32; 4];
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;

    unsafe {
        let m4 = _mm256_set1_epi8(0xF);
        let mzero = _mm_setzero_si128();
        let mone = _mm256_set1_epi8(1);

        let mut acc = _mm256_setzero_ps();
        let mut summs = 0.0;

        for (x, y) in xs.iter().zip(ys.iter()) {
            let d = y.d * x.d.to_f32();
            let dmin = -y.d * x.dmin.to_f32();

            LittleEndian::read_u32_into(&x.scales, &mut utmp[0..3]);

            utmp[3] = ((utmp[2] >> 4) & KMASK2) | (((utmp[1] >> 6) & KMASK3) << 4);
            let uaux = utmp[1] & KMASK1;
            utmp[1] = (utmp[2] & KMASK2) | (((utmp[0] >> 6) & KMASK3) << 4);
            utmp[2] = uaux;
            utmp[0] &= KMASK1;

            let mut q5 = x.qs.as_ptr();
            let mut q8 = y.qs.as_ptr();

            let mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32(
                utmp[3] as i32,
                utmp[2] as i32,
                utmp[1] as i32,
                utmp[0] as i32,
            ));

            let q8sums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
            let q8s = _mm_hadd_epi16(
                _mm256_extracti128_si256(q8sums, 0),
                _mm256_extracti128_si256(q8sums, 1),
            );
            let prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
            let hsum = _mm_hadd_epi32(_mm_hadd_epi32(prod, mzero), mzero);
            summs += dmin * _mm_extract_epi32(hsum, 0) as f32;

            let sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
            let scales = mm256_set_m128i(sc128, sc128);

            let hbits = _mm256_loadu_si256(x.qh.as_ptr() as *const __m256i);
            let mut hmask = mone;

            let mut sumi = _mm256_setzero_si256();

            for j in 0..QK_K / 64 {
                let scale_0 = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j));
                let scale_1 = _mm256_shuffle_epi8(scales, get_scale_shuffle_k4(2 * j + 1));

                let q5bits = _mm256_loadu_si256(q5 as *const __m256i);
                q5 = q5.add(32);

                //Similar to q3k we hardcode the shifts here to avoid loading them into a separate register
                let q5l_0 = _mm256_and_si256(q5bits, m4);
                let q5l_0_shift_input = _mm256_and_si256(hbits, hmask);
                let q5l_0_right_shift = match j {
                    0 => _mm256_srli_epi16(q5l_0_shift_input, 0),
                    1 => _mm256_srli_epi16(q5l_0_shift_input, 2),
                    2 => _mm256_srli_epi16(q5l_0_shift_input, 4),
                    3 => _mm256_srli_epi16(q5l_0_shift_input, 6),
                    _ => unreachable!(),
                };
                let q5h_0 = _mm256_slli_epi16(q5l_0_right_shift, 4);
                let q5_0 = _mm256_add_epi8(q5l_0, q5h_0);
                hmask = _mm256_slli_epi16(hmask, 1);

                let q5l_1 = _mm256_and_si256(_mm256_srli_epi16(q5bits, 4), m4);
                let q5l_1_shift_input = _mm256_and_si256(hbits, hmask);
                let q5l_1_right_shift = match j {
                    0 => _mm256_srli_epi16(q5l_1_shift_input, 1),
                    1 => _mm256_srli_epi16(q5l_1_shift_input, 3),
                    2 => _mm256_srli_epi16(q5l_1_shift_input, 5),
                    3 => _mm256_srli_epi16(q5l_1_shift_input, 7),
                    _ => unreachable!(),
                };

                let q5h_1 = _mm256_slli_epi16(q5l_1_right_shift, 4);
                let q5_1 = _mm256_add_epi8(q5l_1, q5h_1);
                hmask = _mm256_slli_epi16(hmask, 1);

                let q8_0 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);
                let q8_1 = _mm256_loadu_si256(q8 as *const __m256i);
                q8 = q8.add(32);

                let p16_0 = _mm256_maddubs_epi16(q5_0, q8_0);
                let p16_1 = _mm256_maddubs_epi16(q5_1, q8_1);

                let p16_0 = _mm256_madd_epi16(scale_0, p16_0);
                let p16_1 = _mm256_madd_epi16(scale_1, p16_1);

                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_1));
            }
            let vd = _mm256_set1_ps(d);
            acc = _mm256_fmadd_ps(vd, _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_float_8(acc) + summs
    }
}

#[inline(always)]
pub(crate) fn vec_dot_q8k_q8k(n: usize, xs: &[BlockQ8K], ys: &[BlockQ8K]) -> f32 {
    debug_assert!(
        n.is_multiple_of(QK_K),
        "vec_dot_q8k_8k: {n} is not divisible by {QK_K}"
    );
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (xs, ys) in xs.iter().zip(ys.iter()) {
            let mut sumi = _mm256_setzero_si256();
            let x_qs = xs.qs.as_ptr();
            let y_qs = ys.qs.as_ptr();
            for j in (0..QK_K).step_by(32) {
                let xs = _mm256_loadu_si256(x_qs.add(j) as *const __m256i);
                let ys = _mm256_loadu_si256(y_qs.add(j) as *const __m256i);

                let xs0 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(xs, 0));
                let ys0 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(ys, 0));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(xs0, ys0));

                let xs1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(xs, 1));
                let ys1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(ys, 1));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(xs1, ys1));
            }
            let d = _mm256_set1_ps(xs.d * ys.d);
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_float_8(acc)
    }
}
