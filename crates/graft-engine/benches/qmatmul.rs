//! Milliseconds per quantized matmul on this machine's CPU, graft's patched candle kernel
//! (`matmul`: dequantize and gemm from `gemm_min_rows` rows on; for Q8_0 on AVX2, never) against
//! the registry's (`matmul_per_row`), and against the path `matmul` does not take at that
//! number of rows (the gemm path `matmul_dequantized` below the threshold and for Q8_0, the
//! integer kernel that tiles input rows, `matmul_few_rows`, above it; medians of alternating
//! runs with `matmul`), for the shapes that matter: SmolLM2-135M's MLP projection (Q8_0,
//! 1536×576, as graft re-stores it for the CPU) and a 7B-class tile in Q4_K. Then one token's
//! decode: every matrix-vector product of SmolLM2-135M (30 layers and the output head, 145 MB
//! of Q8_0), four weight rows per dot with the next rows prefetched (`vec_dot_x4`) against one
//! row at a time as the registry's kernel loops, and graft's kernel on the matrices stacked as
//! graft loads them (query, key and value as one; gate and up as one).
//!
//! `cargo bench --workspace --bench qmatmul` (RAYON_NUM_THREADS sets the threads).

use std::time::Instant;

use rayon::prelude::*;

use candle_core::quantized::k_quants::{
    gemm_min_rows, matmul, matmul_dequantized, matmul_few_rows, matmul_per_row, BlockQ4K, BlockQ8_0, GgmlType,
};

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// One run, in milliseconds.
fn time_once(f: impl FnOnce()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64() * 1000.0
}

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// The fastest of a few runs, in milliseconds.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    (0..5).map(|_| time_once(&mut f)).fold(f64::INFINITY, f64::min)
}

fn shape<T: GgmlType>(name: &str, k: usize, n: usize) {
    let weights = values(n * k, 2);
    let per_row = k / T::BLCK_SIZE;
    let mut rhs = vec![T::zeros(); n * per_row];
    for (row, out) in weights.chunks(k).zip(rhs.chunks_mut(per_row)) {
        T::from_float(row, out);
    }
    match gemm_min_rows::<T>() {
        usize::MAX => println!("\n{name}: weight {n}×{k}, never on the gemm path"),
        rows => println!("\n{name}: weight {n}×{k}, gemm from {rows} rows"),
    }
    println!(
        "{:>6} {:>12} {:>12} {:>8} {:>14} {:>14}",
        "rows", "registry ms", "graft ms", "speedup", "graft GFLOP/s", "other path ms"
    );
    for m in [1, 8, 16, 32, 64, 96, 128, 192, 256, 512, 1024] {
        let lhs = values(m * k, 1);
        let mut dst = vec![0f32; m * n];
        let old = time(|| matmul_per_row((m, k, n), &lhs, &rhs, &mut dst).unwrap());
        let (mut news, mut others) = (Vec::new(), Vec::new());
        for _ in 0..9 {
            news.push(time_once(|| matmul((m, k, n), &lhs, &rhs, &mut dst).unwrap()));
            others.push(time_once(|| {
                if m >= gemm_min_rows::<T>() {
                    matmul_few_rows((m, k, n), &lhs, &rhs, &mut dst).unwrap()
                } else {
                    matmul_dequantized((m, k, n), &lhs, &rhs, &mut dst).unwrap()
                }
            }));
        }
        let (new, other) = (median(news), median(others));
        let gflops = 2.0 * (m * k * n) as f64 / (new / 1000.0) / 1e9;
        println!("{m:>6} {old:>12.2} {new:>12.2} {:>7.2}× {gflops:>14.1} {other:>14.2}", old / new);
    }
}

/// SmolLM2-135M's matrices, `(outputs, inputs)`, in the order a forward multiplies by them:
/// 30 layers' attention and MLP projections, then the output head; and their Q8_0 weights.
/// `stacked`: the query, key and value matrices as one, the gate and up matrices as one, as
/// graft loads them (vendor/mistralrs-core, `models::stacked`).
fn smollm2_weights(stacked: bool) -> (Vec<(usize, usize)>, Vec<Vec<BlockQ8_0>>) {
    let layer: &[(usize, usize)] = match stacked {
        false => &[
            (576, 576),
            (192, 576),
            (192, 576),
            (576, 576),
            (1536, 576),
            (1536, 576),
            (576, 1536),
        ],
        true => &[(960, 576), (576, 576), (3072, 576), (576, 1536)],
    };
    let shapes: Vec<(usize, usize)> = (0..30)
        .flat_map(|_| layer.iter().copied())
        .chain(std::iter::once((49152, 576)))
        .collect();
    let weights = shapes
        .iter()
        .enumerate()
        .map(|(i, &(n, k))| {
            let mut blocks = vec![BlockQ8_0::zeros(); n * k / BlockQ8_0::BLCK_SIZE];
            BlockQ8_0::from_float(&values(n * k, i as u64), &mut blocks);
            blocks
        })
        .collect();
    (shapes, weights)
}

/// The matrix products of a forward over a few new tokens (the next request while the user
/// types, after a cached prompt): every layer's with all the rows, the output head's with the
/// last one.
fn few_tokens() {
    let (shapes, weights) = smollm2_weights(true);
    let pool = rayon::ThreadPoolBuilder::new().build().expect("a thread pool");
    println!(
        "
a forward's matrix products over a few new tokens, SmolLM2-135M Q8_0, medians of 9"
    );
    println!("{:>6} {:>12} {:>14}", "tokens", "graft ms", "ms per token");
    for m in [2, 4, 8, 16, 32] {
        let inputs: Vec<Vec<f32>> = shapes.iter().map(|&(_, k)| values(m * k, 9)).collect();
        let mut runs: Vec<f64> = pool.install(|| {
            (0..9)
                .map(|_| {
                    let started = Instant::now();
                    for (i, ((&(n, k), rhs), lhs)) in shapes.iter().zip(&weights).zip(&inputs).enumerate() {
                        let rows = if i + 1 == shapes.len() { 1 } else { m };
                        let mut dst = vec![0f32; rows * n];
                        matmul((rows, k, n), &lhs[..rows * k], rhs, &mut dst).unwrap();
                    }
                    started.elapsed().as_secs_f64() * 1000.0
                })
                .collect()
        });
        runs.sort_by(f64::total_cmp);
        let ms = runs[runs.len() / 2];
        println!("{m:>6} {ms:>12.2} {:>14.2}", ms / m as f64);
    }
}

/// One token's matrix-vector products of SmolLM2-135M, medians of alternating runs: the
/// registry's loop, graft's kernel, and graft's kernel on the stacked matrices.
fn decode_token() {
    let (shapes, weights) = smollm2_weights(false);
    let (stacked_shapes, stacked_weights) = smollm2_weights(true);
    let inputs = |shapes: &[(usize, usize)]| -> Vec<Vec<f32>> { shapes.iter().map(|&(_, k)| values(k, 9)).collect() };
    let (inputs, stacked_inputs) = (inputs(&shapes), inputs(&stacked_shapes));
    // The registry's loop: the input quantized, then one `vec_dot` per output column.
    let one_by_one = |k: usize, lhs: &[f32], rhs: &[BlockQ8_0], dst: &mut [f32]| {
        let per_row = k / BlockQ8_0::BLCK_SIZE;
        let mut input = vec![BlockQ8_0::zeros(); per_row];
        BlockQ8_0::from_float(lhs, &mut input);
        dst.par_iter_mut()
            .enumerate()
            .with_min_len(128)
            .with_max_len(512)
            .for_each(|(col, d)| {
                *d = BlockQ8_0::vec_dot(k, &rhs[col * per_row..(col + 1) * per_row], &input);
            });
    };
    // As graft runs a forward (vendor/mistralrs-core, `on_cpu_workers`): on a thread of the
    // pool, so each product's parallel loop is split there rather than handed over and waited
    // for from outside.
    let pool = rayon::ThreadPoolBuilder::new().build().expect("a thread pool");
    let mut runs = [Vec::new(), Vec::new(), Vec::new()];
    pool.install(|| {
        for _ in 0..15 {
            for (way, runs) in runs.iter_mut().enumerate() {
                let (shapes, weights, inputs) = match way {
                    2 => (&stacked_shapes, &stacked_weights, &stacked_inputs),
                    _ => (&shapes, &weights, &inputs),
                };
                let started = Instant::now();
                for ((&(n, k), rhs), lhs) in shapes.iter().zip(weights).zip(inputs) {
                    let mut dst = vec![0f32; n];
                    match way {
                        0 => one_by_one(k, lhs, rhs, &mut dst),
                        _ => matmul((1, k, n), lhs, rhs, &mut dst).unwrap(),
                    }
                }
                runs.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
    });
    let [old, new, stacked] = runs.map(median);
    println!(
        "\none token's decode, SmolLM2-135M Q8_0 ({} matrix-vector products; {} stacked), medians of 15",
        shapes.len(),
        stacked_shapes.len()
    );
    println!(
        "{:>22} {:>12} {:>8} {:>17} {:>8}",
        "one row at a time ms", "graft ms", "speedup", "graft stacked ms", "speedup"
    );
    println!(
        "{old:>22.2} {new:>12.2} {:>7.2}× {stacked:>17.2} {:>7.2}×",
        old / new,
        old / stacked
    );
}

fn main() {
    println!(
        "quantized matmul, {} threads",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    shape::<BlockQ8_0>("Q8_0, SmolLM2-135M MLP up", 576, 1536);
    shape::<BlockQ8_0>("Q8_0, SmolLM2-135M attention q", 576, 576);
    shape::<BlockQ4K>("Q4_K, 7B-class tile", 4096, 1024);
    decode_token();
    few_tokens();
}
