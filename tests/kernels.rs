//! The CPU kernels graft patches in its dependencies, against the ones they replace.
//!
//! candle's quantized CPU matmul (vendor/candle-core): from `gemm_min_rows` input rows on, the
//! weights are dequantized and multiplied with the gemm crate. Against the registry's kernel
//! (kept as `matmul_per_row`) the results must agree within float reordering, for every weight
//! type graft can serve on a CPU; fewer rows, a type whose input format cannot be rounded
//! back (Q4_1, Q5_1), and Q8_0 on AVX2 at any number of rows give exactly the registry
//! kernel's values. mistralrs's CPU attention (vendor/mistralrs-core): see the later tests;
//! candle's backward pass (vendor/candle-core's `backprop.rs`): the last one.

use candle_core::quantized::k_quants::{
    gemm_min_rows, matmul, matmul_per_row, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0, GgmlType, GEMM_MIN_ROWS, GEMM_MIN_ROWS_K,
};

use graft_tests::deterministic_values as values;

/// A comparison of the two kernels on one weight type: (difference between them, distance from
/// the exact product), each relative to the largest output.
type Compare = fn(usize, usize, usize) -> (f32, f32);

/// `matmul` and `matmul_per_row` on the same input; the largest difference relative to the
/// largest output, and the largest difference from the f32 product of the dequantized
/// weights (a wrong layout would be far off).
fn compare<T: GgmlType>(m: usize, k: usize, n: usize) -> (f32, f32) {
    let lhs = values(m * k, 1);
    let weights = values(n * k, 2);
    let blocks_per_row = k / T::BLCK_SIZE;
    let mut rhs = vec![T::zeros(); n * blocks_per_row];
    for (row, out) in weights.chunks(k).zip(rhs.chunks_mut(blocks_per_row)) {
        T::from_float(row, out);
    }
    let mut new = vec![0f32; m * n];
    let mut old = vec![0f32; m * n];
    matmul((m, k, n), &lhs, &rhs, &mut new).unwrap();
    matmul_per_row((m, k, n), &lhs, &rhs, &mut old).unwrap();
    let scale = old.iter().fold(0f32, |a, v| a.max(v.abs()));
    let reorder = new.iter().zip(&old).fold(0f32, |a, (x, y)| a.max((x - y).abs())) / scale;
    // The exact product of the input and the dequantized weights.
    let mut dequantized = vec![0f32; n * k];
    for (blocks, out) in rhs.chunks(blocks_per_row).zip(dequantized.chunks_mut(k)) {
        T::to_float(blocks, out);
    }
    let mut off = 0f32;
    for i in 0..m {
        for j in 0..n {
            let exact: f32 = (0..k).map(|x| lhs[i * k + x] * dequantized[j * k + x]).sum();
            off = off.max((exact - new[i * n + j]).abs() / scale);
        }
    }
    (reorder, off)
}

#[test]
fn the_gemm_path_agrees_with_the_registry_kernel_for_every_weight_type() {
    // Enough rows for the gemm path with every type.
    let (m, k, n) = (GEMM_MIN_ROWS_K + 9, 512, 300);
    let cases: [(&str, Compare); 7] = [
        ("q4_0", compare::<BlockQ4_0>),
        ("q5_0", compare::<BlockQ5_0>),
        ("q2_k", compare::<BlockQ2K>),
        ("q3_k", compare::<BlockQ3K>),
        ("q4_k", compare::<BlockQ4K>),
        ("q5_k", compare::<BlockQ5K>),
        ("q6_k", compare::<BlockQ6K>),
    ];
    for (name, case) in cases {
        let (reorder, off) = case(m, k, n);
        // Same rounded input, same weights: only the order of additions differs.
        assert!(
            reorder < 1e-5,
            "{name}: differs from the registry kernel by {reorder:e} of the largest output"
        );
        // Both round the input to 8 bits: within a couple of percent of the exact product.
        assert!(off < 0.03, "{name}: {off:e} of the largest output from the exact product");
    }
    for (name, case) in [
        ("q4_1", compare::<BlockQ4_1> as fn(usize, usize, usize) -> (f32, f32)),
        ("q5_1", compare::<BlockQ5_1>),
    ] {
        assert_eq!(case(m, k, n).0, 0.0, "{name} keeps the registry kernel");
    }
    // Q8_0 takes the gemm path only without AVX2 (its tiled integer kernel needs it).
    let (reorder, off) = compare::<BlockQ8_0>(m, k, n);
    if cfg!(target_feature = "avx2") {
        assert_eq!(gemm_min_rows::<BlockQ8_0>(), usize::MAX);
        assert_eq!(reorder, 0.0, "q8_0 on AVX2: the registry's values at {m} rows");
    } else {
        assert!(reorder < 1e-5, "q8_0: differs from the registry kernel by {reorder:e}");
    }
    assert!(off < 0.03, "q8_0: {off:e} of the largest output from the exact product");
}

/// Fewer rows than the gemm path takes (any number for Q8_0 on AVX2) run one parallel loop over
/// blocks of 64 outputs (one row: the registry's kernel): every output is the registry's dot
/// product, bit for bit, including a last block of 6 outputs.
#[test]
fn few_rows_give_the_registry_kernels_values_and_odd_sizes_work() {
    for m in [1, 2, 7, GEMM_MIN_ROWS - 1] {
        assert_eq!(compare::<BlockQ4_0>(m, 256, 70).0, 0.0, "{m} rows: the registry's values");
    }
    assert_eq!(compare::<BlockQ4K>(GEMM_MIN_ROWS_K - 1, 256, 40).0, 0.0, "k-quants switch later");
    // Tile boundaries that do not divide the outputs, and one output row: on the gemm path
    // (Q4_0), and on Q8_0's integer kernel at every row count (groups of 64 rows and the rest).
    for (m, n) in [(GEMM_MIN_ROWS, 257), (GEMM_MIN_ROWS + 1, 1), (2 * GEMM_MIN_ROWS, 513)] {
        let (reorder, _) = compare::<BlockQ4_0>(m, 256, n);
        assert!(reorder < 1e-5, "({m}, {n}): {reorder:e}");
        let q8_0 = compare::<BlockQ8_0>(m, 256, n).0;
        if cfg!(target_feature = "avx2") {
            assert_eq!(q8_0, 0.0, "q8_0 ({m}, {n}): the registry's values");
        } else {
            assert!(q8_0 < 1e-5, "q8_0 ({m}, {n}): {q8_0:e}");
        }
    }
}

/// `(1, heads, rows, d)` values of `dtype`.
fn heads(n_heads: usize, rows: usize, d: usize, dtype: candle_core::DType, seed: u64) -> candle_core::Tensor {
    candle_core::Tensor::from_vec(values(n_heads * rows * d, seed), (1, n_heads, rows, d), &candle_core::Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .unwrap()
}

/// Attention parameters for `h` heads over `kv_h` key heads of size `d`.
fn attention_params(h: usize, kv_h: usize, d: usize, softcap: Option<f32>) -> mistralrs_core::cpu_kernels::SdpaParams {
    mistralrs_core::cpu_kernels::SdpaParams {
        n_kv_groups: h / kv_h,
        softcap,
        softmax_scale: 1.0 / (d as f32).sqrt(),
        sliding_window: None,
        sinks: None,
    }
}

/// Upstream's flash kernel on `(1, heads, tokens, size)` inputs (it takes them transposed, as
/// mistralrs hands them over; its output is `(1, heads, tokens, size)`).
fn flash_attention(
    q: &candle_core::Tensor,
    k: &candle_core::Tensor,
    v: &candle_core::Tensor,
    mask: Option<&candle_core::Tensor>,
    params: &mistralrs_core::cpu_kernels::SdpaParams,
) -> candle_core::Tensor {
    use mistralrs_core::cpu_kernels::run_flash_attn_cpu;
    let t = |x: &candle_core::Tensor| x.transpose(1, 2).unwrap();
    match q.dtype() {
        candle_core::DType::F16 => run_flash_attn_cpu::<half::f16>(&t(q), &t(k), &t(v), mask, params),
        _ => run_flash_attn_cpu::<f32>(&t(q), &t(k), &t(v), mask, params),
    }
    .unwrap()
}

/// A tensor's values as f32.
fn floats(t: &candle_core::Tensor) -> Vec<f32> {
    t.to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// mistralrs's CPU attention as graft patches it (vendor/mistralrs-core): a prompt (more than
/// one query) is read as vector code over tiles of keys, reading only the keys a causal mask
/// leaves visible, instead of the flash kernel's scalar loop. Against that kernel the answers
/// must agree within float reordering: with and without earlier tokens in the cache, grouped
/// key heads, softcapping, no mask, a head size the vector chunks do not divide, and a model
/// running in f16.
#[test]
fn prompt_attention_agrees_with_the_flash_kernel_it_replaces() {
    use candle_core::{DType, Device, Tensor};
    use mistralrs_core::cpu_kernels::run_prompt_attn_cpu;

    // (heads, key heads, new tokens, earlier tokens, head size, softcap, causal mask, dtype)
    let cases = [
        (9, 3, 300, 0, 64, None, true, DType::F32),
        (9, 3, 20, 1270, 64, None, true, DType::F32),
        (4, 4, 37, 5, 32, Some(30.0), true, DType::F32),
        (2, 1, 17, 0, 16, None, false, DType::F32),
        (9, 3, 40, 60, 64, None, true, DType::F16),
        // A head size the vector chunks do not divide (64 + 8), over more than one key tile.
        (2, 2, 33, 90, 72, None, true, DType::F32),
        // 64 + 16 (every chunk width of the value sums), an odd number of rows per key head.
        (3, 1, 29, 40, 80, None, true, DType::F32),
    ];
    for (h, kv_h, q_len, past, d, softcap, causal, dtype) in cases {
        let kv_len = past + q_len;
        let (q, k, v) = (
            heads(h, q_len, d, dtype, 3),
            heads(kv_h, kv_len, d, dtype, 4),
            heads(kv_h, kv_len, d, dtype, 5),
        );
        // mistralrs's causal mask: row i sees keys 0..=past + i.
        let mask = causal.then(|| {
            let m: Vec<f32> = (0..q_len)
                .flat_map(|i| (0..kv_len).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
                .collect();
            Tensor::from_vec(m, (q_len, kv_len), &Device::Cpu)
                .and_then(|m| m.to_dtype(dtype))
                .unwrap()
        });
        let params = attention_params(h, kv_h, d, softcap);
        let new = run_prompt_attn_cpu(&q, &k, &v, mask.as_ref(), &params).unwrap();
        let old = flash_attention(&q, &k, &v, mask.as_ref(), &params);
        assert_eq!(new.dims(), old.dims(), "{h} heads, {q_len} queries");
        assert_eq!(new.dtype(), dtype);
        let (new, old) = (floats(&new), floats(&old));
        let worst = new.iter().zip(&old).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        // f16 keeps about three decimal digits of each answer.
        let allowed = if dtype == DType::F16 { 2e-3 } else { 1e-5 };
        assert!(
            worst < allowed,
            "{h} heads over {kv_h}, {q_len} queries after {past}: off by {worst}"
        );
        // Not trivially equal: the outputs vary (an all-zero answer would agree too).
        assert!(old.iter().any(|&x| x.abs() > 0.05), "{old:?}");
    }
}

/// The prompt kernel computes each query alone: the last rows of a prompt read whole equal,
/// bit for bit, the same rows read after a cached start (what makes an answer served from the
/// prompt cache the answer served cold), with the cache in f32 or f16, read in place through a
/// narrowed view as the model's cache is, on one thread or two.
#[test]
fn prompt_attention_reads_a_prompt_in_parts_as_it_reads_it_whole() {
    use candle_core::{DType, Device, Tensor};
    use mistralrs_core::cpu_kernels::run_prompt_attn_cpu;

    let (h, kv_h, d, n) = (9, 3, 64, 300);
    let causal = |rows: usize, past: usize| {
        let m: Vec<f32> = (0..rows)
            .flat_map(|i| (0..past + rows).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        Tensor::from_vec(m, (rows, past + rows), &Device::Cpu).unwrap()
    };
    let bits = |t: &Tensor| floats(t).iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let params = attention_params(h, kv_h, d, None);
    let on_threads =
        |threads: usize, f: &(dyn Fn() -> Tensor + Sync)| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f);
    for (dtype, cached) in [(DType::F32, 283), (DType::F16, 283), (DType::F16, 150)] {
        // The cache has room for more tokens than it holds.
        let cache = |seed: u64| heads(kv_h, n + 50, d, dtype, seed).narrow(2, 0, n).unwrap();
        let (q, k, v) = (heads(h, n, d, dtype, 6), cache(7), cache(8));
        let whole = on_threads(2, &|| run_prompt_attn_cpu(&q, &k, &v, Some(&causal(n, 0)), &params).unwrap());
        let rest = q.narrow(2, cached, n - cached).unwrap();
        let parts = |threads| {
            on_threads(threads, &|| {
                run_prompt_attn_cpu(&rest, &k, &v, Some(&causal(n - cached, cached)), &params).unwrap()
            })
        };
        let tail = whole.narrow(2, cached, n - cached).unwrap();
        assert_eq!(bits(&tail), bits(&parts(2)), "{dtype:?}, {cached} cached");
        assert_eq!(bits(&tail), bits(&parts(1)), "{dtype:?}, {cached} cached, one thread");
    }
}

/// The softmax's exponential (vector code in place of libm's `expf` per score) against
/// `f32::exp`: within a few units in the last place over the range that matters, exactly 1 at
/// 0, exactly 0 for a masked key (-inf) and far below, NaN kept.
#[test]
fn the_softmax_exponential_agrees_with_libm() {
    use mistralrs_core::cpu_kernels::exp_shifted;

    let xs: Vec<f32> = (0..=200_000).map(|i| -87.0 * i as f32 / 200_000.0).collect();
    let mut ys = xs.clone();
    exp_shifted(&mut ys, 0.0);
    let worst = xs
        .iter()
        .zip(&ys)
        .map(|(&x, &y)| ((y as f64 - (x as f64).exp()) / (x as f64).exp()).abs())
        .fold(0f64, f64::max);
    assert!(worst < 5e-7, "relative error {worst:e}");
    // Shifted by the maximum, as the softmax calls it; and the edges.
    let mut edges = [3.5, 2.0, f32::NEG_INFINITY, -1000.0, f32::NAN];
    exp_shifted(&mut edges, 3.5);
    assert_eq!(edges[0], 1.0);
    assert!((edges[1] - (-1.5f32).exp()).abs() < 1e-7, "{}", edges[1]);
    assert_eq!((edges[2], edges[3]), (0.0, 0.0));
    assert!(edges[4].is_nan());
}

/// The MLP's SiLU gate on the CPU (`silu(a) * b`, vector code in place of mistralrs-quant's
/// closure and libm `expf` per element) against the formula computed in f64: within a few
/// units in the last place over f32's range, with the edges (zeros, infinities, NaN, values
/// past ±87 where `e^x` leaves f32's normal range), over more elements than one chunk and a
/// length that sixteen does not divide, and a transposed view read as its contiguous copy.
#[test]
fn the_silu_gate_agrees_with_the_formula() {
    use candle_core::{Device, Tensor};
    use mistralrs_core::cpu_kernels::silu_mul_cpu;

    let n = 3 * 8192 + 37;
    let mut xs: Vec<f32> = values(n, 11).iter().map(|v| v * 90.0).collect();
    let ys: Vec<f32> = values(n, 12).iter().map(|v| v * 2.0).collect();
    let edges = [
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        87.5,
        -87.5,
        100.0,
        -100.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    xs[n - edges.len()..].copy_from_slice(&edges);
    let a = Tensor::from_vec(xs.clone(), n, &Device::Cpu).unwrap();
    let b = Tensor::from_vec(ys.clone(), n, &Device::Cpu).unwrap();
    let got = silu_mul_cpu(&a, &b).unwrap().to_vec1::<f32>().unwrap();
    for ((&x, &y), &got) in xs.iter().zip(&ys).zip(&got) {
        let want = (x as f64 / (1.0 + (-x as f64).exp()) * y as f64) as f32;
        if want.is_nan() {
            assert!(got.is_nan(), "silu({x}) * {y}: {got}, not NaN");
        } else if x.abs() <= 87.0 {
            let error = ((got as f64 - want as f64) / want as f64).abs();
            assert!(got == want || error < 1e-6, "silu({x}) * {y}: {got}, want {want}");
        } else {
            // e^x below f32's normal range reads as 0: at most a tiny difference.
            assert!(got == want || (got - want).abs() < 1e-30, "silu({x}) * {y}: {got}, want {want}");
        }
    }
    assert_eq!(got[n - edges.len()], 0.0);
    assert_eq!(got[n - 3], f32::INFINITY * ys[n - 3].signum());
    // A transposed view: the same values as its contiguous copy.
    let a = Tensor::from_vec(xs[..64 * 40].to_vec(), (64, 40), &Device::Cpu)
        .unwrap()
        .t()
        .unwrap();
    let b = Tensor::from_vec(ys[..64 * 40].to_vec(), (64, 40), &Device::Cpu)
        .unwrap()
        .t()
        .unwrap();
    let viewed = silu_mul_cpu(&a, &b).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let copied = silu_mul_cpu(&a.contiguous().unwrap(), &b.contiguous().unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(viewed, copied);
    // The gate and up halves of one stacked product (views of its columns, read in place):
    // the values of their contiguous copies, over several rows and over one.
    for rows in [5, 1] {
        let width = 1536 + 5;
        let product = Tensor::from_vec(xs[..rows * 2 * width].to_vec(), (1, rows, 2 * width), &Device::Cpu).unwrap();
        let gate = product.narrow(2, 0, width).unwrap();
        let up = product.narrow(2, width, width).unwrap();
        let viewed = floats(&silu_mul_cpu(&gate, &up).unwrap());
        let copied = floats(&silu_mul_cpu(&gate.contiguous().unwrap(), &up.contiguous().unwrap()).unwrap());
        assert_eq!(viewed, copied, "{rows} rows");
    }
}

/// The products of one input by several weight matrices stacked into one (the attention's
/// query, key and value, the MLP's gate and up; vendor/mistralrs-core `models::stacked`):
/// every part's output is its own product's, bit for bit, for one input row (a decode step),
/// a few (the next request while typing) and a prompt's worth (the gemm path for K-quants).
/// Parts of different types are not stacked, and still give their products; parts with
/// biases stack with them, unless only some have one.
#[test]
fn stacked_weights_give_each_parts_product_bit_for_bit() {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    use mistralrs_core::cpu_kernels::Stacked;

    let same_bits = |a: &Tensor, b: &Tensor| floats(a).iter().map(|v| v.to_bits()).eq(floats(b).iter().map(|v| v.to_bits()));
    let parts = |k: usize, widths: &[(usize, GgmlDType)]| -> Vec<QTensor> {
        widths
            .iter()
            .enumerate()
            .map(|(i, &(width, dtype))| {
                let weights = Tensor::from_vec(values(width * k, 40 + i as u64), (width, k), &Device::Cpu).unwrap();
                QTensor::quantize(&weights, dtype).unwrap()
            })
            .collect()
    };
    // (input width, each part's rows and type, whether they stack)
    let cases = [
        // SmolLM2's query, key and value.
        (
            576,
            vec![(576, GgmlDType::Q8_0), (192, GgmlDType::Q8_0), (192, GgmlDType::Q8_0)],
            true,
        ),
        (512, vec![(320, GgmlDType::Q4K), (320, GgmlDType::Q4K)], true),
        // A Q4_K_M file's value matrix is Q6_K.
        (512, vec![(256, GgmlDType::Q4K), (64, GgmlDType::Q4K), (64, GgmlDType::Q6K)], false),
    ];
    for (k, widths, one) in cases {
        let stacked = Stacked::new(parts(k, &widths)).unwrap();
        let apart = Stacked::apart(parts(k, &widths)).unwrap();
        assert_eq!(stacked.is_one(), one, "{widths:?}");
        for rows in [1, 7, GEMM_MIN_ROWS_K + 3] {
            let x = Tensor::from_vec(values(rows * k, 50), (1, rows, k), &Device::Cpu).unwrap();
            let got = stacked.forward(&x).unwrap();
            let want = apart.forward(&x).unwrap();
            assert_eq!(got.len(), widths.len());
            for (i, (got, want)) in got.iter().zip(&want).enumerate() {
                assert_eq!(got.dims(), want.dims(), "part {i} of {widths:?}, {rows} rows");
                assert!(same_bits(got, want), "part {i} of {widths:?}, {rows} rows: values differ");
            }
        }
    }
    // With a bias per part (a Qwen2 layer's query, key and value): stacked, biases and all.
    let k = 576;
    let widths = [(576, GgmlDType::Q8_0), (192, GgmlDType::Q8_0), (192, GgmlDType::Q8_0)];
    let with_biases = |biased: &[bool]| -> Vec<(QTensor, Option<Tensor>)> {
        parts(k, &widths)
            .into_iter()
            .zip(biased)
            .enumerate()
            .map(|(i, (part, &biased))| {
                let width = part.shape().dims()[0];
                let bias = biased.then(|| Tensor::from_vec(values(width, 60 + i as u64), width, &Device::Cpu).unwrap());
                (part, bias)
            })
            .collect()
    };
    for (biased, one) in [([true; 3], true), ([true, true, false], false)] {
        let stacked = Stacked::with_biases(with_biases(&biased)).unwrap();
        let apart = Stacked::apart_with_biases(with_biases(&biased)).unwrap();
        assert_eq!(stacked.is_one(), one, "biases {biased:?}");
        for rows in [1, 7] {
            let x = Tensor::from_vec(values(rows * k, 51), (1, rows, k), &Device::Cpu).unwrap();
            for (i, (got, want)) in stacked.forward(&x).unwrap().iter().zip(&apart.forward(&x).unwrap()).enumerate() {
                assert!(same_bits(got, want), "part {i}, biases {biased:?}, {rows} rows: values differ");
            }
        }
    }
    // A bias moves the output: the biased product is not the plain one.
    let plain = Stacked::new(parts(k, &widths)).unwrap();
    let x = Tensor::from_vec(values(k, 52), (1, 1, k), &Device::Cpu).unwrap();
    let biased = Stacked::with_biases(with_biases(&[true; 3])).unwrap().forward(&x).unwrap();
    let plain = plain.forward(&x).unwrap();
    assert_ne!(floats(&biased[2]), floats(&plain[2]));
}

/// Top-1 sampling at a temperature (every greedy request graft sends mistralrs) takes the
/// argmax without the softmax, sort and weighted draw over the vocabulary: the same token
/// and log-probability as that draw (asked for two log-probabilities, the sampler still
/// draws), at a few temperatures, with masked (-inf) tokens; NaN, +inf and a fully masked
/// vocabulary are refused as the draw refuses them.
#[test]
fn top_one_sampling_gives_the_draws_token_and_log_probability() {
    use candle_core::{Device, Tensor};
    use mistralrs_core::cpu_kernels::Sampler;
    use rand_core::SeedableRng;
    use std::sync::{Arc, Mutex};

    let rng = Arc::new(Mutex::new(rand_isaac::Isaac64Rng::seed_from_u64(7)));
    let sampler = |temperature: f64, top_n: usize| {
        Sampler::new(Some(temperature), top_n, None, None, None, None, None, 1, 1.0, 0.0, Vec::new()).unwrap()
    };
    let n = 49_152;
    let sample = |sampler: &Sampler, logits: &[f32]| {
        let logits = Tensor::from_vec(logits.to_vec(), n, &Device::Cpu).unwrap();
        sampler.sample(logits, &[1, 2, 3], true, Arc::clone(&rng), false, false)
    };
    for seed in [60, 61] {
        let mut logits: Vec<f32> = values(n, seed).iter().map(|v| v * 12.0).collect();
        logits[..100].fill(f32::NEG_INFINITY);
        for temperature in [1.0, 0.7, 1.6] {
            let fast = sample(&sampler(temperature, 1), &logits).unwrap();
            let drawn = sample(&sampler(temperature, 2), &logits).unwrap();
            assert_eq!(fast.token, drawn.token, "seed {seed}, temperature {temperature}");
            assert!(
                (fast.logprob - drawn.logprob).abs() < 1e-4,
                "log-probability {} against the draw's {}",
                fast.logprob,
                drawn.logprob
            );
            let top = fast.top_logprobs.expect("asked for");
            assert_eq!(top.len(), 1);
            assert_eq!((top[0].token, top[0].logprob), (fast.token, fast.logprob));
        }
    }
    let mut logits = vec![0.5f32; n];
    for bad in [f32::NAN, f32::INFINITY] {
        logits[9] = bad;
        assert!(sample(&sampler(1.0, 1), &logits).is_err(), "{bad}");
        assert!(sample(&sampler(1.0, 2), &logits).is_err(), "{bad}");
    }
    let masked = vec![f32::NEG_INFINITY; n];
    assert!(sample(&sampler(1.0, 1), &masked).is_err());
    assert!(sample(&sampler(1.0, 2), &masked).is_err());
}

#[test]
fn a_decode_step_agrees_with_the_flash_kernel_and_reads_the_cache_in_place() {
    use candle_core::DType;
    use mistralrs_core::cpu_kernels::{run_decode_attn_cpu, run_prompt_attn_cpu};

    // (heads, key heads, keys, head size, softcap, dtype); key counts that 16 does not divide.
    let cases = [
        (9, 3, 700, 64, None, DType::F32),
        (9, 3, 333, 64, None, DType::F16),
        (4, 4, 1, 32, Some(30.0), DType::F32),
        (2, 1, 17, 16, None, DType::F16),
    ];
    for (h, kv_h, kv_len, d, softcap, dtype) in cases {
        // The model's cache: room for more keys than it holds, read through a narrowed view.
        let cache = |seed: u64| heads(kv_h, kv_len + 40, d, dtype, seed).narrow(2, 0, kv_len).unwrap();
        let (q, k, v) = (heads(h, 1, d, dtype, 3), cache(4), cache(5));
        let params = attention_params(h, kv_h, d, softcap);
        let decoded = run_decode_attn_cpu(&q, &k, &v, &params).unwrap();
        let case = format!("({h}, {kv_h}, {kv_len}, {d}, {dtype:?})");
        // Read in place or from contiguous copies, again: the same bits.
        let (kc, vc) = (k.contiguous().unwrap(), v.contiguous().unwrap());
        let bits = |t: &candle_core::Tensor| floats(t).iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&decoded), bits(&run_decode_attn_cpu(&q, &kc, &vc, &params).unwrap()), "{case}");
        // The same query as the last of a prompt read (three queries before it): the same bits,
        // so a token decoded and a token read in a prompt see the same attention.
        let before = kv_len.min(4) - 1;
        let prompt = candle_core::Tensor::cat(&[&heads(h, before, d, dtype, 6), &q], 2).unwrap();
        let mask: Vec<f32> = (0..=before)
            .flat_map(|i| (0..kv_len).map(move |j| if j + before > kv_len - 1 + i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = candle_core::Tensor::from_vec(mask, (before + 1, kv_len), &candle_core::Device::Cpu).unwrap();
        let read = run_prompt_attn_cpu(&prompt, &k, &v, Some(&mask), &params).unwrap();
        assert_eq!(
            bits(&decoded),
            bits(&read.narrow(2, before, 1).unwrap()),
            "{case}: as the last of a prompt"
        );
        // Upstream's single-query flash kernel, within float rounding.
        let flash = floats(&flash_attention(&q, &kc, &vc, None, &params));
        let decoded = floats(&decoded);
        let allowed = if dtype == DType::F16 { 2e-3 } else { 1e-5 };
        let worst = decoded.iter().zip(&flash).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < allowed, "{case}: {worst:e} from the flash kernel");
        assert!(flash.iter().any(|&x| x.abs() > 0.05), "{case}: the outputs vary");
    }
}

/// The registry's AVX2 Q8_0 dot product (candle 0.10.2, `avx::vec_dot_q8_0_q8_0`, with
/// `maddubs` and `madd`), kept here as the oracle for the patched one (VNNI, four rows at once).
#[cfg(target_feature = "avx2")]
fn registry_q8_0_dot(xs: &[BlockQ8_0], ys: &[BlockQ8_0]) -> f32 {
    use std::arch::x86_64::*;
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in xs.iter().zip(ys) {
            // A block is `#[repr(C)]`: its f16 scale, then its 32 values.
            let (x, y) = (x as *const BlockQ8_0 as *const u8, y as *const BlockQ8_0 as *const u8);
            let scale = |b: *const u8| half::f16::from_le_bytes([*b, *b.add(1)]).to_f32();
            let d = _mm256_set1_ps(scale(x) * scale(y));
            let bx = _mm256_loadu_si256(x.add(2) as *const __m256i);
            let by = _mm256_loadu_si256(y.add(2) as *const __m256i);
            let ax = _mm256_sign_epi8(bx, bx);
            let sy = _mm256_sign_epi8(by, bx);
            let pairs = _mm256_maddubs_epi16(ax, sy);
            let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), pairs));
            acc = _mm256_fmadd_ps(d, q, acc);
        }
        let hi = _mm256_extractf128_ps(acc, 1);
        let r = _mm_add_ps(hi, _mm256_castps256_ps128(acc));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        let r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r)
    }
}

#[test]
#[cfg(target_feature = "avx2")]
fn decoding_gives_the_registry_kernels_values_bit_for_bit() {
    // Decode shapes of SmolLM2 and odd ones: column counts that four does not divide.
    for (k, n) in [(32, 1), (576, 3), (576, 70), (1536, 257), (576, 192)] {
        let blocks = k / 32;
        let mut weights = values(n * k, 3);
        // The extremes a Q8_0 block holds.
        weights[0] = 1.0;
        weights[1] = -1.0;
        let mut rhs = vec![BlockQ8_0::zeros(); n * blocks];
        for (row, out) in weights.chunks(k).zip(rhs.chunks_mut(blocks)) {
            BlockQ8_0::from_float(row, out);
        }
        // One row (decode), and a few (new tokens after a cached prompt): tiles of input rows
        // (eight or four with AVX-512 VNNI, four with AVX-VNNI, two without VNNI) and the rest.
        // And a prompt's rows, in groups of 64 (on AVX2 Q8_0 never takes the gemm path).
        for m in [1, 2, 3, 4, 7, 8, 13, 16, 130] {
            let mut lhs = values(m * k, 4);
            lhs[0] = 1.0;
            lhs[1] = -1.0;
            let mut got = vec![0f32; m * n];
            // A decode step reads four weight rows side by side, or one after the other (AMD
            // processors): both ways on any machine, each with the registry's bits. (Other
            // tests running meanwhile get the same bits whichever way is set.)
            if m == 1 {
                let mut side_by_side = vec![0f32; n];
                candle_core::quantized::avx::read_weight_rows_in_turn(Some(false));
                matmul((m, k, n), &lhs, &rhs, &mut side_by_side).unwrap();
                candle_core::quantized::avx::read_weight_rows_in_turn(Some(true));
                matmul((m, k, n), &lhs, &rhs, &mut got).unwrap();
                candle_core::quantized::avx::read_weight_rows_in_turn(None);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&side_by_side), bits(&got), "({m}, {k}, {n})");
            }
            matmul((m, k, n), &lhs, &rhs, &mut got).unwrap();
            for (row, got) in lhs.chunks(k).zip(got.chunks(n)) {
                let mut input = vec![BlockQ8_0::zeros(); blocks];
                BlockQ8_0::from_float(row, &mut input);
                for (col, got) in got.iter().enumerate() {
                    let want = registry_q8_0_dot(&rhs[col * blocks..(col + 1) * blocks], &input);
                    assert_eq!(got.to_bits(), want.to_bits(), "({m}, {k}, {n}) column {col}");
                }
            }
        }
    }
}

/// The registry's `BlockQ8_0::from_float` for one block (candle 0.10.2, `quantize_row_q8_0`),
/// kept here as the oracle for the patched one: the block's bytes (`#[repr(C)]`: its f16
/// scale, little-endian, then its 32 values).
fn registry_q8_0_block(xs: &[f32]) -> [u8; 34] {
    let mut amax = 0f32;
    for &x in xs {
        amax = amax.max(x.abs())
    }
    let d = amax / ((1 << 7) - 1) as f32;
    let id = if d != 0f32 { 1. / d } else { 0. };
    let mut bytes = [0u8; 34];
    bytes[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    for (b, &x) in bytes[2..].iter_mut().zip(xs) {
        *b = (f32::round(x * id) as i8) as u8;
    }
    bytes
}

/// Every matmul's input is rounded to Q8_0 first (`from_float`), now as vector code: the same
/// bytes as the registry's scalar loop, on values of every scale, on exact halves (rounded
/// away from zero, where a vector `round` rounds to even), and on zeros, infinities, NaN and
/// the smallest floats.
#[test]
fn quantizing_to_q8_0_gives_the_registry_bytes() {
    let mut blocks: Vec<Vec<f32>> = Vec::new();
    for (i, scale) in [1e-30f32, 1e-3, 0.7, 1.0, 300.0, 6e4, 1e30].into_iter().enumerate() {
        for seed in 0..40 {
            blocks.push(values(32, 100 * i as u64 + seed).iter().map(|x| x * scale).collect());
        }
    }
    // A largest magnitude of 127 makes the scale 1, so x.5 values are exact halves.
    let halves: Vec<f32> = (0..31).map(|i| (i as f32 - 15.0) + 0.5).chain([127.0]).collect();
    blocks.push(halves.clone());
    blocks.push(halves.iter().map(|x| -x).collect());
    // Halves again after the scale: 254 makes it 2, so odd numbers land on x.5.
    blocks.push((0..32).map(|i| if i == 0 { 254.0 } else { 2.0 * i as f32 - 31.0 }).collect());
    let mut edges = vec![0.0f32; 32];
    edges[3] = -0.0;
    blocks.push(edges.clone());
    edges[5] = f32::NAN;
    edges[6] = 0.25;
    blocks.push(edges.clone());
    edges[7] = f32::INFINITY;
    blocks.push(edges.clone());
    edges[7] = f32::NEG_INFINITY;
    blocks.push(edges);
    blocks.push(
        (0..32)
            .map(|i| f32::from_bits(i + 1) * if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect(),
    );
    blocks.push((0..32).map(|i| f32::MAX / (i + 1) as f32).collect());

    let all: Vec<f32> = blocks.concat();
    let mut quantized = vec![BlockQ8_0::zeros(); blocks.len()];
    BlockQ8_0::from_float(&all, &mut quantized);
    for (i, (block, xs)) in quantized.iter().zip(&blocks).enumerate() {
        // SAFETY: a block is `#[repr(C)]`, 34 bytes with no padding.
        let bytes = unsafe { std::slice::from_raw_parts(block as *const BlockQ8_0 as *const u8, 34) };
        assert_eq!(bytes, registry_q8_0_block(xs), "block {i}: {xs:?}");
    }
}

/// candle's elementwise CPU ops on long inputs run over rayon's threads (vendor/candle-core,
/// `par_unary_map` and `par_binary_map`): every element must be what the one-thread loop
/// computes, with both sides contiguous, a row broadcast over rows on either side, a column
/// broadcast (each value repeated along a row), a transposed input (the one-thread path), and
/// sizes that the tasks' chunks do not divide, in f32 and f16.
#[test]
fn elementwise_ops_on_long_inputs_give_each_elements_value() {
    use candle_core::{DType, Device, Tensor};
    use half::f16;

    let (rows, cols) = (37, 1001); // 37,037 values: past the parallel threshold, odd chunks
    let a = values(rows * cols, 11);
    let b = values(rows * cols, 12);
    let row = values(cols, 13);
    let col = values(rows, 14);
    let t = |v: &[f32], shape: (usize, usize)| Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap();
    let (ta, tb, trow, tcol) = (t(&a, (rows, cols)), t(&b, (rows, cols)), t(&row, (1, cols)), t(&col, (rows, 1)));
    let flat = |x: Tensor| x.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let each = |f: &dyn Fn(usize, usize) -> f32| (0..rows * cols).map(|i| f(i / cols, i % cols)).collect::<Vec<f32>>();

    let cases: Vec<(&str, Tensor, Vec<f32>)> = vec![
        ("a + b", (&ta + &tb).unwrap(), each(&|i, j| a[i * cols + j] + b[i * cols + j])),
        ("a * row", ta.broadcast_mul(&trow).unwrap(), each(&|i, j| a[i * cols + j] * row[j])),
        ("row - a", trow.broadcast_sub(&ta).unwrap(), each(&|i, j| row[j] - a[i * cols + j])),
        ("a / col", ta.broadcast_div(&tcol).unwrap(), each(&|i, j| a[i * cols + j] / col[i])),
        ("col * a", tcol.broadcast_mul(&ta).unwrap(), each(&|i, j| col[i] * a[i * cols + j])),
        ("exp(a)", ta.exp().unwrap(), each(&|i, j| a[i * cols + j].exp())),
        (
            "a * b (b transposed twice)",
            (&ta * &tb.t().unwrap().contiguous().unwrap().t().unwrap()).unwrap(),
            each(&|i, j| a[i * cols + j] * b[i * cols + j]),
        ),
        (
            "exp(aᵀ)ᵀ (strided)",
            (ta.t().unwrap().exp().unwrap()).t().unwrap(),
            each(&|i, j| a[i * cols + j].exp()),
        ),
    ];
    for (name, got, want) in cases {
        assert_eq!(bits(&flat(got)), bits(&want), "{name}");
    }
    // f16: each value rounded as the one-thread loop rounds it.
    let (ha, hb) = (ta.to_dtype(DType::F16).unwrap(), tb.to_dtype(DType::F16).unwrap());
    let got = flat((&ha * &hb).unwrap());
    let want = each(&|i, j| (f16::from_f32(a[i * cols + j]) * f16::from_f32(b[i * cols + j])).to_f32());
    assert_eq!(bits(&got), bits(&want), "f16 a * b");
}

/// An f64 tensor of deterministic values in [-1, 1).
fn tensor64(dims: &[usize], seed: u64) -> candle_core::Tensor {
    let n = dims.iter().product();
    let v: Vec<f64> = values(n, seed).into_iter().map(f64::from).collect();
    candle_core::Tensor::from_vec(v, dims, &candle_core::Device::Cpu).unwrap()
}

/// candle's backward pass (vendor/candle-core, `GradStore::accumulate`): the first gradient to
/// reach a tensor is stored as it is instead of being added to zeros, and a tensor that leads
/// to no variable keeps no gradient. The gradients are the closed-form ones through fan-in,
/// subtraction's right side (first and again), negation, broadcast and a transpose, and each
/// is contiguous, as the registry's sums are; constants and weights keep none (the registry
/// kept one for each).
#[test]
fn backward_gives_the_closed_form_gradients_and_keeps_none_it_need_not() {
    use candle_core::{Tensor, Var};
    let var = |dims: &[usize], seed| Var::from_tensor(&tensor64(dims, seed)).unwrap();
    let (x, y, z, u) = (var(&[3, 4], 1), var(&[4], 2), var(&[3, 4], 3), var(&[4, 3], 4));
    let (x_, y_, z_, u_) = (x.as_tensor(), y.as_tensor(), z.as_tensor(), u.as_tensor());
    let c = tensor64(&[3, 4], 5);
    let w: Vec<Tensor> = (0..6).map(|i| tensor64(&[3, 4], 10 + i)).collect();
    // f = Σ w0·(x − y) + Σ w1·x² + Σ w2·(c − z) + Σ w3·(x − z) + Σ w4·(−x) + Σ w5·uᵀ
    let terms = [
        (x_.broadcast_sub(y_).unwrap() * &w[0]).unwrap(),
        (x_.sqr().unwrap() * &w[1]).unwrap(),
        ((&c - z_).unwrap() * &w[2]).unwrap(),
        ((x_ - z_).unwrap() * &w[3]).unwrap(),
        (x_.neg().unwrap() * &w[4]).unwrap(),
        (u_.t().unwrap() * &w[5]).unwrap(),
    ];
    let f = Tensor::stack(&terms, 0).unwrap().sum_all().unwrap();
    let grads = f.backward().unwrap();

    let two_x_w1 = (x_ * &w[1]).unwrap().affine(2.0, 0.0).unwrap();
    let dx = (((&w[0] + two_x_w1).unwrap() + &w[3]).unwrap() - &w[4]).unwrap();
    let dy = w[0].sum(0).unwrap().neg().unwrap();
    let dz = (&w[2] + &w[3]).unwrap().neg().unwrap();
    let du = w[5].t().unwrap();
    for (name, var, want) in [("x", x_, dx), ("y", y_, dy), ("z", z_, dz), ("u", u_, du)] {
        let got = grads.get(var).unwrap_or_else(|| panic!("no gradient for {name}"));
        assert_eq!(got.dims(), var.dims(), "{name}");
        assert!(got.is_contiguous(), "{name}");
        let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(diff < 1e-12, "{name}: {diff}");
    }
    assert!(grads.get(&c).is_none());
    assert!(w.iter().all(|w| grads.get(w).is_none()));
    assert!(terms.iter().all(|t| grads.get(t).is_none()));
}
