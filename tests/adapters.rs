//! LoRA adapters merged into GGUF base models from the kit: the merged weights are checked
//! against an independent computation, and the merged models are run.
//!
//! Test adapters are generated here from fixed seeds, never downloaded.

use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use graft_engine::adapter::{gguf_tensor_name, Adapter, PROJECTIONS};
use graft_engine::cache::MergeCache;
use graft_engine::merge::{merge, BaseGguf, MergeSettings};
use graft_engine::pool::AdapterStore;
use graft_engine::requantize::{tensors_to_convert, Restore, SLOW_ON_CPU};
use graft_engine::{BaseModel, ChatMessage, ChatRequest, Engine, Pool, PoolLimits, Role, Sampling};
use graft_tests::{kit_file, write_adapter};

const MAX_RANK: usize = 64;

fn floats(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The merged weights of `projection`, computed without graft's merge code: plain loops for
/// B @ A and llama.cpp's row permutation by index arithmetic.
fn expected(base: &BaseGguf, adapter: &Adapter, layer: usize, projection: &str) -> Vec<f32> {
    let name = gguf_tensor_name(layer, projection).unwrap();
    let (out, inp) = base.shape(&name).unwrap();
    let mut w = floats(&base.tensor(&name).unwrap().dequantize(&Device::Cpu).unwrap());
    let pair = &adapter.pairs[&(layer, projection.to_owned())];
    let (a, b, r) = (floats(&pair.a), floats(&pair.b), adapter.config.r);
    let mut delta = vec![0f32; out * inp];
    for i in 0..out {
        for j in 0..inp {
            delta[i * inp + j] = (0..r).map(|k| b[i * r + k] * a[k * inp + j]).sum::<f32>() * adapter.scale() as f32;
        }
    }
    let heads = match (base.architecture.as_str(), projection) {
        ("llama", "q_proj") => Some(base.head_count),
        ("llama", "k_proj") => Some(base.head_count_kv),
        _ => None,
    };
    if let Some(heads) = heads {
        let (head_dim, half) = (out / heads, out / heads / 2);
        let original = delta.clone();
        for h in 0..heads {
            for j in 0..half {
                for t in 0..2 {
                    let to = h * head_dim + 2 * j + t;
                    let from = h * head_dim + t * half + j;
                    delta[to * inp..(to + 1) * inp].copy_from_slice(&original[from * inp..(from + 1) * inp]);
                }
            }
        }
    }
    w.iter_mut().zip(&delta).for_each(|(w, d)| *w += d);
    w
}

/// Largest error storage at `dtype` may add to each value of `values`.
fn tolerance(values: &[f32], dtype: GgmlDType) -> Vec<f32> {
    match dtype {
        GgmlDType::F32 => vec![1e-6; values.len()],
        GgmlDType::F16 => values.iter().map(|v| v.abs() / 1024.0 + 1e-6).collect(),
        // Q8_0: per block of 32, d = amax / 127 stored as f16; rounding to the grid costs up to
        // d / 2, and the f16 scale up to 127 * d * 2^-11 more: 0.56 d in all.
        GgmlDType::Q8_0 => values
            .chunks(32)
            .flat_map(|block| {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                vec![amax / 127.0 * 0.6 + 1e-6; block.len()]
            })
            .collect(),
        other => panic!("unexpected storage type {other:?}"),
    }
}

fn check_merge(kit_id: &str, projections: &[&str]) {
    let base_path = kit_file(kit_id);
    let base = BaseGguf::open(&base_path).unwrap();
    let work = tempfile::tempdir().unwrap();
    write_adapter(&work.path().join("a"), &base, projections, 8, 16.0, 0.05, false, 7);
    let adapter = Adapter::load("a", &work.path().join("a"), MAX_RANK).unwrap();
    let out = work.path().join("merged.gguf");
    let report = merge(&base, &adapter, &MergeSettings::default(), &out).unwrap();
    assert_eq!(report.merged, base.block_count * projections.len());

    let merged = BaseGguf::open(&out).unwrap();
    for layer in 0..base.block_count {
        for p in projections {
            let name = gguf_tensor_name(layer, p).unwrap();
            let stored = merged.tensor(&name).unwrap();
            let got = floats(&stored.dequantize(&Device::Cpu).unwrap());
            let want = expected(&base, &adapter, layer, p);
            let tol = tolerance(&want, stored.dtype());
            let worst = got
                .iter()
                .zip(&want)
                .zip(&tol)
                .map(|((g, w), t)| (g - w).abs() / t)
                .fold(0f32, f32::max);
            assert!(
                worst <= 1.0,
                "{kit_id} {name} ({:?}): error {worst:.2}x the storage tolerance",
                stored.dtype()
            );
        }
    }
    // Untouched tensors are copied byte for byte.
    let embd = "token_embd.weight";
    assert_eq!(
        base.tensor(embd).unwrap().data().unwrap(),
        merged.tensor(embd).unwrap().data().unwrap()
    );
}

#[test]
fn merged_weights_equal_base_plus_scaled_lora_delta_on_the_toy_model() {
    check_merge("tiny-llama", PROJECTIONS);
}

#[test]
fn merged_weights_equal_base_plus_scaled_lora_delta_on_smollm2() {
    check_merge("smollm2-135m-instruct", &["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]);
}

fn greedy(engine: &Engine, prompt: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let request = ChatRequest {
        messages: vec![ChatMessage::new(Role::User, prompt)],
        sampling: Sampling::greedy(24),
    };
    runtime.block_on(engine.chat(request)).unwrap().text
}

fn load(path: &Path) -> Engine {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let base = BaseModel::cpu("m", path, 1);
    runtime.block_on(Engine::load(&base)).unwrap()
}

#[test]
fn a_zero_adapter_keeps_the_output_and_a_real_one_changes_it() {
    let base_path = kit_file("smollm2-135m-instruct");
    let base = BaseGguf::open(&base_path).unwrap();
    let work = tempfile::tempdir().unwrap();
    let prompt = "Write a Python function that reverses a string.";
    let original = greedy(&load(&base_path), prompt);

    write_adapter(&work.path().join("zero"), &base, PROJECTIONS, 8, 16.0, 0.05, true, 1);
    let zero = Adapter::load("zero", &work.path().join("zero"), MAX_RANK).unwrap();
    merge(&base, &zero, &MergeSettings::default(), &work.path().join("zero.gguf")).unwrap();
    assert_eq!(greedy(&load(&work.path().join("zero.gguf")), prompt), original);

    // Deltas of about 0.5 against weights of about 0.1: strong enough that greedy decoding must
    // notice (at amplitude 0.05 the deltas are ~0.01 and the same tokens win).
    write_adapter(
        &work.path().join("real"),
        &base,
        &["q_proj", "v_proj", "down_proj"],
        8,
        16.0,
        0.3,
        false,
        2,
    );
    let real = Adapter::load("real", &work.path().join("real"), MAX_RANK).unwrap();
    merge(&base, &real, &MergeSettings::default(), &work.path().join("real.gguf")).unwrap();
    let changed = greedy(&load(&work.path().join("real.gguf")), prompt);
    assert_ne!(changed, original, "a non-trivial adapter changes greedy output");
}

#[test]
fn each_invalid_adapter_is_refused_with_its_name_and_the_problem() {
    let tiny = BaseGguf::open(&kit_file("tiny-llama")).unwrap();
    let smol = BaseGguf::open(&kit_file("smollm2-135m-instruct")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = |n: &str| work.path().join(n);
    let message = |e: &dyn std::fmt::Display| e.to_string();

    // Made for another base: shapes do not match.
    write_adapter(&dir("other-base"), &smol, &["q_proj"], 4, 8.0, 0.1, false, 3);
    let a = Adapter::load("other-base", &dir("other-base"), MAX_RANK).unwrap();
    let err = message(&graft_engine::merge::check(&tiny, &a).unwrap_err());
    assert!(err.contains("other-base") && err.contains("wrong base model"), "{err}");

    // Rank over the limit.
    write_adapter(&dir("big"), &tiny, &["q_proj"], 16, 8.0, 0.1, false, 4);
    let err = message(&Adapter::load("big", &dir("big"), 8).unwrap_err());
    assert!(err.contains("big") && err.contains("rank"), "{err}");

    // Not LoRA; bias; missing weights file; a lone lora_A; a weight that is not LoRA.
    write_adapter(&dir("x"), &tiny, &["q_proj"], 4, 8.0, 0.1, false, 5);
    let config_path = dir("x").join("adapter_config.json");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, config.replace("\"LORA\"", "\"IA3\"")).unwrap();
    assert!(message(&Adapter::load("x", &dir("x"), MAX_RANK).unwrap_err()).contains("IA3"));
    std::fs::write(&config_path, config.replace("\"none\"", "\"all\"")).unwrap();
    assert!(message(&Adapter::load("x", &dir("x"), MAX_RANK).unwrap_err()).contains("bias"));
    std::fs::write(&config_path, &config).unwrap();
    let weights = dir("x").join("adapter_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    let b_name = tensors.keys().find(|k| k.contains("lora_B")).unwrap().clone();
    let b = tensors.remove(&b_name).unwrap();
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    let err = message(&Adapter::load("x", &dir("x"), MAX_RANK).unwrap_err());
    assert!(err.contains("lora_B"), "{err}");
    tensors.insert(b_name.clone(), b);
    tensors.insert(
        "base_model.model.lm_head.weight".into(),
        Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    let err = message(&Adapter::load("x", &dir("x"), MAX_RANK).unwrap_err());
    assert!(err.contains("lm_head"), "{err}");
    std::fs::remove_file(&weights).unwrap();
    let err = message(&Adapter::load("x", &dir("x"), MAX_RANK).unwrap_err());
    assert!(err.contains("adapter_model.safetensors is missing"), "{err}");
    let err = message(&Adapter::load("nowhere", &dir("nowhere"), MAX_RANK).unwrap_err());
    assert!(err.contains("nowhere") && err.contains("adapter_config.json"), "{err}");
}

/// The toy model, an empty merge cache in a scratch folder, and an adapter `a` for it there.
fn toy_cache_and_adapter() -> (BaseGguf, tempfile::TempDir, MergeCache, Adapter) {
    let base = BaseGguf::open(&kit_file("tiny-llama")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let cache = MergeCache::new(work.path().join("cache"));
    write_adapter(&work.path().join("a"), &base, &["q_proj", "v_proj"], 4, 8.0, 0.1, false, 11);
    let adapter = Adapter::load("a", &work.path().join("a"), MAX_RANK).unwrap();
    (base, work, cache, adapter)
}

#[test]
fn the_merge_cache_merges_once_per_base_adapter_and_settings() {
    let (base, work, cache, adapter) = toy_cache_and_adapter();
    let settings = MergeSettings::default();

    let first = cache.get_or_merge(&base, &adapter, &settings).unwrap();
    assert!(first.fresh && first.path.is_file());
    let again = cache.get_or_merge(&base, &adapter, &settings).unwrap();
    assert_eq!(again.path, first.path);
    assert!(!again.fresh, "the second activation reuses the merged file");

    let f16 = MergeSettings {
        quantized_dtype: GgmlDType::F16,
    };
    assert_ne!(
        cache.key(&base.path, &adapter, &f16).unwrap(),
        cache.key(&base.path, &adapter, &settings).unwrap()
    );

    // New adapter weights under the same name: a new merge.
    write_adapter(&work.path().join("a"), &base, &["q_proj", "v_proj"], 4, 8.0, 0.1, false, 12);
    let replaced = Adapter::load("a", &work.path().join("a"), MAX_RANK).unwrap();
    let third = cache.get_or_merge(&base, &replaced, &settings).unwrap();
    assert!(third.fresh);
    assert_ne!(third.path, first.path);
}

/// Two graft processes starting on one cache (the CI's flake: a second server's start had its
/// temporary file renamed from under it), or two requests for one adapter, want the same file
/// at once: one writes it, the others wait and reuse it, and every path they get holds a whole
/// model.
#[test]
fn callers_wanting_one_cached_file_at_once_take_turns() {
    let (base, work, cache, adapter) = toy_cache_and_adapter();
    let settings = MergeSettings::default();

    const EACH: usize = 4;
    let at_once = std::sync::Barrier::new(2 * EACH);
    let (restored, merged): (Vec<_>, Vec<_>) = std::thread::scope(|s| {
        let calls: Vec<_> = (0..2 * EACH)
            .map(|i| {
                let (at_once, cache, base, adapter, settings) = (&at_once, &cache, &base, &adapter, &settings);
                s.spawn(move || {
                    at_once.wait();
                    let got = if i % 2 == 0 {
                        cache.get_or_requantize(base, Restore::Q8_0)
                    } else {
                        cache.get_or_merge(base, adapter, settings)
                    };
                    (i % 2 == 0, got.unwrap_or_else(|e| panic!("call {i}: {e}")))
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).partition(|(restore, _)| *restore)
    });
    for (kind, results) in [("re-stored base", restored), ("merge", merged)] {
        let fresh = results.iter().filter(|(_, m)| m.fresh).count();
        assert_eq!(fresh, 1, "{kind}: written once, reused by the rest");
        let path = &results[0].1.path;
        assert!(results.iter().all(|(_, m)| m.path == *path), "{kind}");
        let file = BaseGguf::open(path).unwrap();
        assert_eq!(file.content().tensor_infos.len(), base.content().tensor_infos.len(), "{kind}");
    }
    let leftovers: Vec<String> = std::fs::read_dir(work.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_adapter_served_by_the_pool_answers_as_the_merged_model_does() {
    let base_path = kit_file("smollm2-135m-instruct");
    let base = BaseGguf::open(&base_path).unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("adapters");
    let prompt = "Write a Python function that reverses a string.";
    write_adapter(
        &store.join("real"),
        &base,
        &["q_proj", "v_proj", "down_proj"],
        8,
        16.0,
        0.3,
        false,
        2,
    );
    let adapter = Adapter::load("real", &store.join("real"), MAX_RANK).unwrap();
    let merged = MergeCache::new(work.path().join("other-cache"))
        .get_or_merge(&base, &adapter, &MergeSettings::default())
        .unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store_settings = AdapterStore {
        dir: store.clone(),
        max_rank: MAX_RANK,
        merge: MergeSettings::default(),
        cache_dir: work.path().join("cache"),
        allowed_dirs: Vec::new(),
    };
    let limits = PoolLimits {
        max_adapters: 2,
        max_bytes: None,
    };
    let pool = Pool::new(std::sync::Arc::new(load(&base_path)), store_settings, limits).unwrap();
    let ask = |model: &str| {
        let request = ChatRequest {
            messages: vec![ChatMessage::new(Role::User, prompt)],
            sampling: Sampling::greedy(24),
        };
        runtime.block_on(pool.chat(model, request)).map(|c| c.text)
    };
    let from_base = ask("m").unwrap();
    let from_adapter = ask("real").unwrap();
    assert_eq!(
        from_adapter,
        greedy(&load(&merged.path), prompt),
        "same as the merged model on its own"
    );
    assert_eq!(from_base, greedy(&load(&base_path), prompt), "the base is unaffected");
    assert_ne!(from_adapter, from_base);

    pool.unload("real").unwrap();
    let err = ask("real").unwrap_err();
    assert!(matches!(err, graft_engine::pool::PoolError::Unknown(_)), "{err:?}");
    assert_eq!(ask("m").unwrap(), from_base, "the base keeps serving");
}

#[test]
fn a_base_restored_for_the_cpu_keeps_its_weights_within_q8_0_rounding_and_runs() {
    let base_path = kit_file("smollm2-135m-instruct");
    let base = BaseGguf::open(&base_path).unwrap();
    let slow = tensors_to_convert(&base, Restore::Q8_0);
    assert!(slow.len() > 100, "the kit's SmolLM2 is Q4_1: {slow:?}");

    let cache_dir = tempfile::tempdir().unwrap();
    let cache = MergeCache::new(cache_dir.path());
    let first = cache.get_or_requantize(&base, Restore::Q8_0).unwrap();
    assert!(first.fresh);
    let again = cache.get_or_requantize(&base, Restore::Q8_0).unwrap();
    assert_eq!(
        (again.path.clone(), again.fresh),
        (first.path.clone(), false),
        "converted once, then reused"
    );

    let restored = BaseGguf::open(&first.path).unwrap();
    assert!(tensors_to_convert(&restored, Restore::Q8_0).is_empty());
    for name in &slow {
        let original = floats(&base.tensor(name).unwrap().dequantize(&Device::Cpu).unwrap());
        let stored = restored.tensor(name).unwrap();
        assert_eq!(stored.dtype(), GgmlDType::Q8_0, "{name}");
        let got = floats(&stored.dequantize(&Device::Cpu).unwrap());
        let tol = tolerance(&original, GgmlDType::Q8_0);
        let worst = got
            .iter()
            .zip(&original)
            .zip(&tol)
            .map(|((g, w), t)| (g - w).abs() / t)
            .fold(0f32, f32::max);
        assert!(worst <= 1.0, "{name}: error {worst:.2}x Q8_0's rounding");
    }
    // Tensors of other types are copied byte for byte.
    let kept = base
        .dtypes()
        .find(|(_, t)| !SLOW_ON_CPU.contains(t))
        .map(|(n, _)| n.to_owned())
        .unwrap();
    assert_eq!(
        base.tensor(&kept).unwrap().data().unwrap(),
        restored.tensor(&kept).unwrap().data().unwrap()
    );

    // The file is a working model, chat template included.
    let engine = load(&first.path);
    assert!(!greedy(&engine, "Write a Rust function that adds two numbers").trim().is_empty());
}

#[test]
fn a_base_restored_as_f16_keeps_every_weight_to_f16_precision_and_runs() {
    let base_path = kit_file("smollm2-135m-instruct");
    let base = BaseGguf::open(&base_path).unwrap();
    let quantized = tensors_to_convert(&base, Restore::F16);
    assert!(quantized.len() > 100, "every quantized tensor of the kit's SmolLM2: {quantized:?}");
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = MergeCache::new(cache_dir.path());
    let stored = cache.get_or_requantize(&base, Restore::F16).unwrap();
    let q8 = cache.get_or_requantize(&base, Restore::Q8_0).unwrap();
    assert_ne!(stored.path, q8.path, "each way of storing has its own cache entry");

    let restored = BaseGguf::open(&stored.path).unwrap();
    assert!(tensors_to_convert(&restored, Restore::F16).is_empty());
    for name in &quantized {
        let original = floats(&base.tensor(name).unwrap().dequantize(&Device::Cpu).unwrap());
        let tensor = restored.tensor(name).unwrap();
        assert_eq!(tensor.dtype(), GgmlDType::F16, "{name}");
        let got = floats(&tensor.dequantize(&Device::Cpu).unwrap());
        // F16 keeps 11 significant bits: relative error at most 2^-11 (plus subnormals).
        let worst = got
            .iter()
            .zip(&original)
            .map(|(g, w)| (g - w).abs() - w.abs() / 2048.0)
            .fold(f32::MIN, f32::max);
        assert!(worst <= 1e-7, "{name}: off by {worst:e} beyond F16's rounding");
    }
    let engine = load(&stored.path);
    assert!(!greedy(&engine, "Write a Rust function that adds two numbers").trim().is_empty());
}
