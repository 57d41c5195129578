//! Milliseconds per quantized matmul on this machine's CPU, graft's patched candle kernel
//! (`matmul`: dequantize and gemm from `gemm_min_rows` rows on) against the registry's
//! (`matmul_per_row`), for the shapes that matter: SmolLM2-135M's MLP projection (Q8_0,
//! 1536×576, as graft re-stores it for the CPU) and a 7B-class tile in Q4_K.
//!
//! `cargo bench --workspace --bench qmatmul` (RAYON_NUM_THREADS sets the threads).

use std::time::Instant;

use candle_core::quantized::k_quants::{gemm_min_rows, matmul, matmul_per_row, BlockQ4K, BlockQ8_0, GgmlType};

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The fastest of a few runs, in milliseconds.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1000.0
        })
        .fold(f64::INFINITY, f64::min)
}

fn shape<T: GgmlType>(name: &str, k: usize, n: usize) {
    let weights = values(n * k, 2);
    let per_row = k / T::BLCK_SIZE;
    let mut rhs = vec![T::zeros(); n * per_row];
    for (row, out) in weights.chunks(k).zip(rhs.chunks_mut(per_row)) {
        T::from_float(row, out);
    }
    println!("\n{name}: weight {n}×{k}, gemm from {} rows", gemm_min_rows::<T>());
    println!(
        "{:>6} {:>12} {:>12} {:>8} {:>14}",
        "rows", "registry ms", "graft ms", "speedup", "graft GFLOP/s"
    );
    for m in [1, 8, 16, 32, 64, 96, 128, 192, 256, 512, 1024] {
        let lhs = values(m * k, 1);
        let mut dst = vec![0f32; m * n];
        let old = time(|| matmul_per_row((m, k, n), &lhs, &rhs, &mut dst).unwrap());
        let new = time(|| matmul((m, k, n), &lhs, &rhs, &mut dst).unwrap());
        let gflops = 2.0 * (m * k * n) as f64 / (new / 1000.0) / 1e9;
        println!("{m:>6} {old:>12.2} {new:>12.2} {:>7.2}× {gflops:>14.1}", old / new);
    }
}

fn main() {
    println!(
        "quantized matmul, {} threads",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    shape::<BlockQ8_0>("Q8_0, SmolLM2-135M MLP up", 576, 1536);
    shape::<BlockQ8_0>("Q8_0, SmolLM2-135M attention q", 576, 576);
    shape::<BlockQ4K>("Q4_K, 7B-class tile", 4096, 1024);
}
