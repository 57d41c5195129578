//! candle's quantized CPU matmul as graft patches it (vendor/candle-core): from
//! `gemm_min_rows` input rows on, the weights are dequantized and multiplied with the gemm
//! crate. Against the registry's kernel (kept as `matmul_per_row`) the results must agree
//! within float reordering, for every weight type graft can serve on a CPU; a type whose
//! input format cannot be rounded back (Q4_1, Q5_1) keeps the registry's kernel exactly.

use candle_core::quantized::k_quants::{
    gemm_min_rows, matmul, matmul_per_row, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0, GgmlType, GEMM_MIN_ROWS_K,
};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

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
    let cases: [(&str, Compare); 8] = [
        ("q8_0", compare::<BlockQ8_0>),
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
}

#[test]
fn few_rows_keep_the_registry_kernel_and_odd_sizes_work() {
    let q8 = gemm_min_rows::<BlockQ8_0>();
    for m in [1, 2, q8 - 1] {
        assert_eq!(compare::<BlockQ8_0>(m, 256, 70).0, 0.0, "{m} rows: the per-row kernel");
    }
    assert_eq!(compare::<BlockQ4K>(GEMM_MIN_ROWS_K - 1, 256, 40).0, 0.0, "k-quants switch later");
    // A tile boundary that does not divide the outputs, and one output row.
    for (m, n) in [(q8, 257), (q8 + 1, 1), (2 * q8, 513)] {
        let (reorder, _) = compare::<BlockQ8_0>(m, 256, n);
        assert!(reorder < 1e-5, "({m}, {n}): {reorder:e}");
    }
}
