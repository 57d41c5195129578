//! Microseconds per layer of mistralrs's CPU attention as graft patches it
//! (vendor/mistralrs-core `attention/backends/cpu.rs`) against upstream's flash kernel, for
//! SmolLM2-135M's shapes (9 query heads over 3 key heads of 64, an f16 KV cache read through a
//! narrowed view, as the model hands it over): a cold prompt, a few new tokens after a long
//! cached prompt (the next request while the user types), and one decode step. Each case
//! also prints a digest of its answer's bits: a change to the kernel meant to keep every
//! answer the same bits must print the same digests.
//!
//! `cargo bench --workspace --bench attention` (RAYON_NUM_THREADS sets the threads).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use graft_tests::deterministic_values as values;
use mistralrs_core::cpu_kernels::{run_decode_attn_cpu, run_flash_attn_cpu, run_prompt_attn_cpu, SdpaParams};

const HEADS: usize = 9;
const KV_HEADS: usize = 3;
const D: usize = 64;

/// `(1, heads, rows, D)` f16 values; a cache has room for more rows than it holds, and is
/// read through a narrowed view, as the model's cache is.
fn tensor(heads: usize, rows: usize, room: usize, seed: u64) -> Tensor {
    Tensor::from_vec(values(heads * room * D, seed), (1, heads, room, D), &Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F16))
        .and_then(|t| t.narrow(2, 0, rows))
        .expect("a tensor")
}

/// mistralrs's causal mask for `rows` new tokens after `past` cached ones.
fn causal(rows: usize, past: usize) -> Tensor {
    let m: Vec<f32> = (0..rows)
        .flat_map(|i| (0..past + rows).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(m, (rows, past + rows), &Device::Cpu)
        .and_then(|m| m.to_dtype(DType::F16))
        .expect("a mask")
}

/// A digest of a tensor's bits (FNV-1a over its f32 values): a change to the kernel that
/// keeps every answer bit for bit keeps it.
fn bits_digest(t: &Tensor) -> u64 {
    let values: Vec<f32> = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("values");
    values.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ u64::from(x.to_bits())).wrapping_mul(0x100_0000_01b3)
    })
}

/// The median of a few runs, in microseconds.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let mut runs: Vec<f64> = (0..15)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn main() {
    let params = SdpaParams {
        n_kv_groups: HEADS / KV_HEADS,
        softcap: None,
        softmax_scale: 1.0 / (D as f32).sqrt(),
        sliding_window: None,
        sinks: None,
    };
    let flash = |q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>| {
        let t = |x: &Tensor| x.transpose(1, 2).expect("a view");
        run_flash_attn_cpu::<half::f16>(&t(q), &t(k), &t(v), mask, &params).expect("flash attention")
    };
    println!(
        "CPU attention per layer, SmolLM2-135M shapes (9 heads over 3, d 64, f16 cache), {} threads, medians of 15",
        rayon::current_num_threads()
    );
    println!("{:<44} {:>10} {:>10} {:>8}", "", "flash µs", "graft µs", "speedup");
    // (label, new tokens, cached tokens)
    for (label, rows, past) in [
        ("cold prompt, 512 tokens", 512, 0),
        ("cold prompt, 1500 tokens", 1500, 0),
        ("typing: 20 new tokens after 1500 cached", 20, 1500),
        ("typing: 3 new tokens after 1500 cached", 3, 1500),
    ] {
        let (q, k, v) = (
            tensor(HEADS, rows, rows, 1),
            tensor(KV_HEADS, past + rows, past + rows + 256, 2),
            tensor(KV_HEADS, past + rows, past + rows + 256, 3),
        );
        let mask = causal(rows, past);
        let old = time(|| {
            flash(&q, &k, &v, Some(&mask));
        });
        let new = time(|| {
            run_prompt_attn_cpu(&q, &k, &v, Some(&mask), &params).expect("prompt attention");
        });
        let answer = run_prompt_attn_cpu(&q, &k, &v, Some(&mask), &params).expect("prompt attention");
        println!(
            "{label:<44} {old:>10.0} {new:>10.0} {:>7.2}×   (answer's bits: {:016x})",
            old / new,
            bits_digest(&answer)
        );
    }
    for keys in [700, 1500] {
        let (q, k, v) = (
            tensor(HEADS, 1, 1, 1),
            tensor(KV_HEADS, keys, keys + 256, 2),
            tensor(KV_HEADS, keys, keys + 256, 3),
        );
        let old = time(|| {
            flash(&q, &k, &v, None);
        });
        let new = time(|| {
            run_decode_attn_cpu(&q, &k, &v, &params).expect("decode attention");
        });
        let answer = run_decode_attn_cpu(&q, &k, &v, &params).expect("decode attention");
        let label = format!("decode step, {keys} keys");
        println!(
            "{label:<44} {old:>10.0} {new:>10.0} {:>7.2}×   (answer's bits: {:016x})",
            old / new,
            bits_digest(&answer)
        );
    }
}
