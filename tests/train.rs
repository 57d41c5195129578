//! The trainer's model (graft-train) against the truth: its gradients against finite
//! differences on the kit's toy llama model, in f64.

use candle_core::{DType, Tensor};
use graft_tests::kit_file;
use graft_train::{LoraSettings, Model};

/// The largest absolute difference between two tensors' elements.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    diff.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn loss_of(model: &Model, ids: &[u32], target: &[bool]) -> f64 {
    model.loss(ids, target, None).unwrap().unwrap().to_scalar::<f64>().unwrap()
}

/// Every adapter's gradient, as a training step computes it (layer by layer from saved
/// inputs, the output layer in pieces), matches the loss's change when one of its weights
/// moves: no fused kernel cuts the graph and the checkpointing passes the whole gradient on.
#[test]
fn lora_gradients_match_finite_differences_on_the_toy_model() {
    gradients_match_finite_differences(&kit_file("tiny-llama"));
}

/// The check of [`lora_gradients_match_finite_differences_on_the_toy_model`] on the model in
/// `gguf`, in f64.
fn gradients_match_finite_differences(gguf: &std::path::Path) {
    let settings = LoraSettings {
        rank: 2,
        alpha: 4.0,
        ..LoraSettings::default()
    };
    let model = Model::load(gguf, DType::F64, Some(&settings), 1).unwrap();
    let vars = model.trainable();
    assert_eq!(vars.len(), 2 * 7 * model.adapters().len(), "A and B of seven projections per layer");
    // B starts at zero, which would leave A's gradient zero: give every B a value first.
    for (i, var) in vars.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        let shape = var.as_tensor().shape().clone();
        let values = Tensor::rand(-0.5f64, 0.5, shape, &candle_core::Device::Cpu).unwrap();
        var.set(&(values * (1.0 + i as f64 / 100.0)).unwrap()).unwrap();
    }
    let ids: Vec<u32> = vec![
        1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889, 13, 1576, 338,
    ];
    let vocab = model.logits(&ids[..2]).unwrap().dim(1).unwrap() as u32;
    let ids: Vec<u32> = ids.iter().map(|i| i % vocab).collect();
    // Only the second half is a target, as for a prompt and its completion.
    let target: Vec<bool> = (0..ids.len()).map(|i| i >= ids.len() / 2).collect();
    let step = model.backward(&ids, &target, None).unwrap().unwrap();
    let n = step.tokens as f64;
    assert_eq!(step.tokens, target.iter().skip(1).filter(|t| **t).count());
    assert!((step.loss_sum / n - loss_of(&model, &ids, &target)).abs() < 1e-9);
    let eps = 1e-6;
    let mut checked = 0;
    for (v, var) in vars.iter().enumerate() {
        if v % 5 != 0 {
            continue;
        }
        let grad = step.grads[v].as_ref().expect("every adapter weight has a gradient");
        // The step's gradient is of the summed loss; the finite difference of the mean.
        let grad: Vec<f64> = grad
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|g| g / n)
            .collect();
        let values = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let shape = var.as_tensor().shape().clone();
        for k in [0, values.len() / 2, values.len() - 1] {
            let moved = |delta: f64| {
                let mut w = values.clone();
                w[k] += delta;
                var.set(&Tensor::from_vec(w, shape.clone(), &candle_core::Device::Cpu).unwrap())
                    .unwrap();
                loss_of(&model, &ids, &target)
            };
            let numeric = (moved(eps) - moved(-eps)) / (2.0 * eps);
            var.set(&Tensor::from_vec(values.clone(), shape.clone(), &candle_core::Device::Cpu).unwrap())
                .unwrap();
            let analytic = grad[k];
            let tolerance = 1e-6 + 1e-4 * analytic.abs().max(numeric.abs());
            assert!(
                (analytic - numeric).abs() <= tolerance,
                "var {v} element {k}: backprop {analytic}, finite differences {numeric}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 12, "{checked}");
    // Not all zero: the check compared something.
    assert!(step
        .grads
        .iter()
        .flatten()
        .any(|g| g.abs().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap() > 1e-8));
}

/// A training step's gradients (checkpointed, with dropout replayed from its seed) are the
/// gradients of one graph from the adapters to the loss with the same dropout.
#[test]
fn a_checkpointed_step_has_the_whole_graphs_gradients() {
    let settings = LoraSettings {
        rank: 4,
        alpha: 8.0,
        dropout: 0.3,
        ..LoraSettings::default()
    };
    let model = Model::load(&kit_file("tiny-llama"), DType::F64, Some(&settings), 3).unwrap();
    for var in model.trainable().iter().skip(1).step_by(2) {
        let shape = var.as_tensor().shape().clone();
        var.set(&Tensor::rand(-0.2f64, 0.2, shape, &candle_core::Device::Cpu).unwrap())
            .unwrap();
    }
    // Longer than the output layer's pieces (128 positions), so those are joined too.
    let vocab = model.logits(&[1]).unwrap().dim(1).unwrap() as u32;
    let ids: Vec<u32> = (0..300u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let target: Vec<bool> = (0..ids.len()).map(|i| i % 5 != 0).collect();
    for dropout in [None, Some(42)] {
        let step = model.backward(&ids, &target, dropout).unwrap().unwrap();
        let whole = model.loss(&ids, &target, dropout).unwrap().unwrap();
        let whole = (whole * step.tokens as f64).unwrap();
        assert!((whole.to_scalar::<f64>().unwrap() - step.loss_sum).abs() < 1e-8 * step.loss_sum);
        let grads = whole.backward().unwrap();
        let mut worst: f64 = 0.0;
        for (var, ours) in model.trainable().iter().zip(&step.grads) {
            let (ours, theirs) = (ours.as_ref().unwrap(), grads.get(var.as_tensor()).unwrap());
            let scale = theirs.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap().max(1e-12);
            worst = worst.max(max_abs_diff(ours, theirs) / scale);
        }
        assert!(worst < 1e-9, "dropout {dropout:?}: relative difference {worst}");
    }
    let (a, b) = (
        model.backward(&ids, &target, Some(1)).unwrap().unwrap(),
        model.backward(&ids, &target, Some(2)).unwrap().unwrap(),
    );
    assert_ne!(a.loss_sum, b.loss_sum, "another seed drops other inputs");
}

/// With every B at zero the adapters change nothing: the model is the base, exactly.
#[test]
fn fresh_adapters_leave_the_base_model_unchanged() {
    let path = kit_file("tiny-llama");
    let base = Model::load(&path, DType::F64, None, 1).unwrap();
    let adapted = Model::load(&path, DType::F64, Some(&LoraSettings::default()), 1).unwrap();
    let ids = [1u32, 5, 9, 200, 7, 3];
    let a = base.logits(&ids).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let b = adapted.logits(&ids).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(a, b);
}

/// Trained adapters written as a PEFT folder, loaded and merged into the GGUF by the engine's
/// own code (as `graft serve` does), give the model the trainer computed: the merged base's
/// logits equal the adapted training model's within storage precision (the toy model's
/// weights are f16, and a merge keeps a float base's type). A q/k `B` left in GGUF row order
/// would change them by as much as the adapter does.
#[test]
fn a_written_adapter_merged_by_the_engine_is_the_trained_model() {
    written_adapter_merges_to_the_trained_model(&kit_file("tiny-llama"));
}

/// The check of [`a_written_adapter_merged_by_the_engine_is_the_trained_model`] on `path`.
fn written_adapter_merges_to_the_trained_model(path: &std::path::Path) {
    let path = path.to_owned();
    let settings = LoraSettings {
        rank: 4,
        alpha: 8.0,
        ..LoraSettings::default()
    };
    let model = Model::load(&path, DType::F64, Some(&settings), 1).unwrap();
    for var in model.trainable().iter().skip(1).step_by(2) {
        let shape = var.as_tensor().shape().clone();
        var.set(&Tensor::rand(-0.3f64, 0.3, shape, &candle_core::Device::Cpu).unwrap())
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let adapter_dir = dir.path().join("trained");
    graft_train::peft::write(&model, &settings, "tiny-llama", &adapter_dir, false).unwrap();
    let again = graft_train::peft::write(&model, &settings, "tiny-llama", &adapter_dir, false).unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");

    let adapter = graft_engine::adapter::Adapter::load("trained", &adapter_dir, 64).unwrap();
    assert_eq!(adapter.pairs.len(), 7 * model.adapters().len());
    let base = graft_engine::merge::BaseGguf::open(&path).unwrap();
    let merged = dir.path().join("merged.gguf");
    let settings_f32 = graft_engine::merge::MergeSettings {
        quantized_dtype: candle_core::quantized::GgmlDType::F32,
    };
    graft_engine::merge::merge(&base, &adapter, &settings_f32, &merged).unwrap();
    let served = Model::load(&merged, DType::F64, None, 1).unwrap();
    let ids = [1u32, 17, 300, 42, 9, 1000, 5, 77];
    let want = model.logits(&ids).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let got = served.logits(&ids).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let base_logits = Model::load(&path, DType::F64, None, 1).unwrap().logits(&ids).unwrap();
    let base_logits = base_logits.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let moved = want.iter().zip(&base_logits).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(moved > 1e-3, "the adapter changes the model ({moved})");
    assert!(
        worst < 1e-2 * moved,
        "merged differs from trained by {worst} (adapter moved {moved})"
    );
}

/// The loop learns: on the toy model a repeated pattern's validation loss falls (the toy's
/// output embeddings are tiny random numbers, so no adapter can move its logits far: from
/// ln 32000 ≈ 10.4 it reaches about 10.1) and the training loss falls with it, and the best
/// adapters are the ones kept. A stop flag or a spent time budget ends a run before its next
/// step; a run whose loss stops being a number ends there, its adapters unbroken.
#[test]
fn training_lowers_the_validation_loss_and_stops_when_told() {
    use graft_train::train::{train, Example, TrainSettings};
    use std::sync::atomic::AtomicBool;

    let model = Model::load(
        &kit_file("tiny-llama"),
        DType::F32,
        Some(&LoraSettings {
            rank: 8,
            alpha: 16.0,
            ..LoraSettings::default()
        }),
        1,
    )
    .unwrap();
    let pattern = [5u32, 17, 42, 99, 7, 230, 61];
    let example = |phase: usize| {
        let ids: Vec<u32> = (0..40).map(|i| pattern[(i + phase) % pattern.len()]).collect();
        Example {
            target: vec![true; ids.len()],
            ids,
        }
    };
    let train_set: Vec<Example> = (0..5).map(example).collect();
    let validation = vec![example(5), example(6)];
    let settings = TrainSettings {
        steps: 60,
        learning_rate: 1e-2,
        warmup_steps: 5,
        eval_every: 10,
        accumulation: 2,
        ..TrainSettings::default()
    };
    let mut seen = 0;
    let outcome = train(
        &model,
        &train_set,
        &validation,
        &settings,
        &AtomicBool::new(false),
        None,
        &mut |_, _| seen += 1,
    )
    .unwrap();
    let base = outcome.base_val_loss.unwrap();
    let best = outcome.best_val_loss.unwrap();
    assert!(best < base - 0.15, "validation loss {base} -> {best}");
    let mean = |steps: &[graft_train::train::StepLog]| steps.iter().map(|s| s.loss).sum::<f64>() / steps.len() as f64;
    let (first, last) = (mean(&outcome.steps[..10]), mean(&outcome.steps[outcome.steps.len() - 10..]));
    assert!(last < first - 0.15, "training loss {first} -> {last}");
    assert_eq!(seen, outcome.steps.len());
    assert!(outcome.steps.iter().all(|s| s.tokens > 0 && s.grad_norm.is_finite()));
    let now = graft_train::train::mean_loss(&model, &validation).unwrap().unwrap();
    assert!((now - best).abs() < 1e-4, "the best adapters are the ones kept: {now} vs {best}");

    let stopped = train(
        &model,
        &train_set,
        &validation,
        &settings,
        &AtomicBool::new(true),
        None,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((stopped.stopped, stopped.steps.len()), ("interrupted", 0));
    let budget = TrainSettings {
        time_budget: Some(std::time::Duration::ZERO),
        ..settings
    };
    let out = train(
        &model,
        &train_set,
        &validation,
        &budget,
        &AtomicBool::new(false),
        None,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((out.stopped, out.steps.len()), ("time-budget", 0));

    // A learning rate that breaks the adapters: the step after it finds its loss is no longer
    // a number, is not taken, and the run stops with the adapters it began with (no evaluation
    // found better ones), not the broken ones.
    let before = graft_train::train::mean_loss(&model, &validation).unwrap().unwrap();
    let wild = TrainSettings {
        learning_rate: f64::INFINITY,
        warmup_steps: 0,
        eval_every: 100,
        ..settings
    };
    let out = train(
        &model,
        &train_set,
        &validation,
        &wild,
        &AtomicBool::new(false),
        None,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((out.stopped, out.steps.len(), out.best_step), ("diverged", 1, 0), "{:?}", out.steps);
    let after = graft_train::train::mean_loss(&model, &validation).unwrap().unwrap();
    assert!(after.is_finite() && (after - before).abs() < 1e-6, "{before} -> {after}");
}

/// A run interrupted half way and resumed from its checkpoint (in a fresh process's model)
/// ends where the same run done in one go ends: the same losses step by step, the same
/// evaluations and the same adapters (dropout, data order and optimiser state all restored).
#[test]
fn a_resumed_run_is_the_run_done_in_one_go() {
    use graft_train::train::{train, Checkpoints, Example, TrainSettings};
    use std::sync::atomic::{AtomicBool, Ordering};

    let lora = LoraSettings {
        rank: 4,
        alpha: 8.0,
        dropout: 0.1,
        ..LoraSettings::default()
    };
    let load = || Model::load(&kit_file("tiny-llama"), DType::F32, Some(&lora), 5).unwrap();
    let pattern = [5u32, 17, 42, 99, 7, 230, 61];
    let example = |phase: usize| {
        let ids: Vec<u32> = (0..24).map(|i| pattern[(i * (phase + 1)) % pattern.len()]).collect();
        Example {
            target: vec![true; ids.len()],
            ids,
        }
    };
    let train_set: Vec<Example> = (0..5).map(example).collect();
    let validation = vec![example(5)];
    let settings = TrainSettings {
        steps: 12,
        learning_rate: 1e-2,
        warmup_steps: 2,
        eval_every: 4,
        accumulation: 2,
        patience: 0,
        ..TrainSettings::default()
    };
    let whole = load();
    let one_go = train(
        &whole,
        &train_set,
        &validation,
        &settings,
        &AtomicBool::new(false),
        None,
        &mut |_, _| {},
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("run.checkpoint");
    let run = serde_json::json!({"what": "the test's run"});
    let checkpoints = |resume| Checkpoints {
        dir: &at,
        run: run.clone(),
        resume,
    };
    let first = load();
    let stop = AtomicBool::new(false);
    let part = train(
        &first,
        &train_set,
        &validation,
        &settings,
        &stop,
        Some(checkpoints(None)),
        &mut |s, _| {
            if s.step == 6 {
                stop.store(true, Ordering::Relaxed)
            }
        },
    )
    .unwrap();
    assert_eq!((part.stopped, part.steps.len()), ("interrupted", 6));
    let (saved, saved_run) = graft_train::checkpoint::load(&at, &candle_core::Device::Cpu).unwrap();
    assert_eq!(saved_run, run);
    assert_eq!(saved.state.step, 6);

    let second = load();
    let rest = train(
        &second,
        &train_set,
        &validation,
        &settings,
        &AtomicBool::new(false),
        Some(checkpoints(Some(saved))),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(rest.resumed_from, Some(6));
    assert_eq!(rest.steps.len(), 12);
    for (a, b) in one_go.steps.iter().zip(&rest.steps) {
        assert!((a.loss - b.loss).abs() < 1e-5, "step {}: {} vs {}", a.step, a.loss, b.loss);
    }
    let evals = |o: &graft_train::train::Outcome| o.evaluations.iter().map(|e| (e.step, e.val_loss)).collect::<Vec<_>>();
    assert_eq!(evals(&one_go).len(), 3);
    for (a, b) in evals(&one_go).iter().zip(evals(&rest)) {
        assert!(a.0 == b.0 && (a.1 - b.1).abs() < 1e-5, "{a:?} vs {b:?}");
    }
    assert_eq!(one_go.best_step, rest.best_step);
    for (a, b) in whole.trainable().iter().zip(second.trainable()) {
        assert!(max_abs_diff(a.as_tensor(), b.as_tensor()) < 1e-5);
    }
    // The adapters moved: the comparison compared trained weights.
    let moved = whole.trainable()[1]
        .as_tensor()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 1e-4, "{moved}");
}

/// SmolLM2's GGUF with every tensor stored as f32: the served model's weights, dequantized,
/// which the engine multiplies in floating point (no 8-bit activations).
fn f32_copy(gguf: &std::path::Path, out: &std::path::Path) {
    rewrite_gguf(gguf, out, |_, name, t| vec![(name, t)], |k, v| (k.to_owned(), v.clone()));
}

/// Writes `source`'s model to `out` with every tensor f32: `tensor` is given each tensor's
/// index (in file order), name and dequantized weights and returns what to write in its place;
/// `key` renames or changes each metadata entry (the alignment is left to the writer).
fn rewrite_gguf(
    source: &std::path::Path,
    out: &std::path::Path,
    mut tensor: impl FnMut(usize, String, Tensor) -> Vec<(String, Tensor)>,
    key: impl Fn(&str, &candle_core::quantized::gguf_file::Value) -> (String, candle_core::quantized::gguf_file::Value),
) {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let cpu = candle_core::Device::Cpu;
    let mut reader = std::io::BufReader::new(std::fs::File::open(source).unwrap());
    let content = gguf_file::Content::read(&mut reader).unwrap();
    let mut names: Vec<_> = content.tensor_infos.iter().map(|(n, i)| (n.clone(), i.offset)).collect();
    names.sort_by_key(|(_, offset)| *offset);
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (i, (name, _)) in names.into_iter().enumerate() {
        let t = content.tensor(&mut reader, &name, &cpu).unwrap().dequantize(&cpu).unwrap();
        for (name, t) in tensor(i, name, t) {
            tensors.push((name, QTensor::quantize(&t, GgmlDType::F32).unwrap()));
        }
    }
    let metadata: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.alignment")
        .map(|(k, v)| key(k, v))
        .collect();
    let metadata: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    gguf_file::write(&mut file, &metadata, &refs).unwrap();
}

/// How often the token graft's engine generates greedily after each prefix of `ids` (on the
/// model in `gguf`) is `top[p - 1]`, the training model's most likely one; and where not.
async fn served_agreement(gguf: &std::path::Path, ids: &[u32], top: &[u32]) -> (f64, Vec<(usize, String, String)>) {
    use graft_engine::{BaseModel, CompletionRequest, Engine, Prompt, Sampling};
    use std::sync::Arc;

    let engine = Arc::new(Engine::load(&BaseModel::cpu("base", gguf, 1)).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let pool = graft_tests::pool(Arc::clone(&engine), dir.path(), 1);
    let mut differ = Vec::new();
    for p in 1..ids.len() {
        let request = CompletionRequest {
            prompt: Prompt::Tokens(ids[..p].to_vec()),
            sampling: Sampling::greedy(1),
        };
        // Texts compared as the stream delivers them: what the token adds to the prefix's text
        // (a tokenizer may drop a first token's leading space when it stands alone).
        let before = engine.detokenize(ids[..p].to_vec()).await.unwrap();
        let served = before.clone() + &pool.complete("base", request).await.unwrap().text;
        let mut with_top = ids[..p].to_vec();
        with_top.push(top[p - 1]);
        let trained = engine.detokenize(with_top).await.unwrap();
        if served != trained {
            let cut = |t: &str| t.get(before.len()..).unwrap_or(t).to_owned();
            differ.push((p, cut(&served), cut(&trained)));
        }
    }
    let positions = ids.len() - 1;
    ((positions - differ.len()) as f64 / positions as f64, differ)
}

/// The trainer's forward pass is the model graft serves. On a file nobody here wrote (candle's
/// `shape.rs`, vendored), the training model's most likely next token (SmolLM2, its weights
/// dequantized from the served Q4_1 GGUF) is the token graft's engine generates greedily from
/// the same prefix at 99% of positions or more when the engine runs those same weights in
/// floating point. On the Q4_1 file itself the engine multiplies by activations quantized to
/// 8 bits, so near ties fall either way at a few positions (measured: 95.5%).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_training_forward_predicts_what_the_served_engine_generates() {
    const POSITIONS: usize = 200;
    let gguf = kit_file("smollm2-135m-instruct");
    let tokenizer = graft_engine::Tokenizer::from_gguf(&gguf).unwrap();
    let text = std::fs::read_to_string(graft_tests::repo_root().join("vendor/candle-core/src/shape.rs")).unwrap();
    let ids = tokenizer.encode(&text).unwrap();
    let ids = &ids[..POSITIONS + 1];
    let model = Model::load(&gguf, DType::F32, None, 1).unwrap();
    let top = model
        .logits(ids)
        .unwrap()
        .argmax(candle_core::D::Minus1)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    drop(model);

    let dir = tempfile::tempdir().unwrap();
    let float = dir.path().join("smollm2-f32.gguf");
    f32_copy(&gguf, &float);
    let (agree, differ) = served_agreement(&float, ids, &top).await;
    eprintln!(
        "f32: top-1 agreement {:.1}% over {POSITIONS} positions; differing: {differ:?}",
        100.0 * agree
    );
    assert!(agree >= 0.99, "top-1 agreement {agree}: {differ:?}");

    let (agree, differ) = served_agreement(&gguf, ids, &top).await;
    eprintln!(
        "Q4_1: top-1 agreement {:.1}% over {POSITIONS} positions; differing: {differ:?}",
        100.0 * agree
    );
    assert!(agree >= 0.93, "top-1 agreement {agree}: {differ:?}");
}

/// On 60 prefixes of a fixed token sequence, the token graft's engine generates greedily from
/// the model in `gguf` is `model`'s most likely one at 99% of them or more, and the model does
/// not predict one token everywhere (the agreement compared predictions).
async fn the_engine_generates_what_the_model_predicts(gguf: &std::path::Path, model: &Model) {
    let vocab = model.logits(&[1]).unwrap().dim(1).unwrap() as u32;
    let ids: Vec<u32> = (0..61u32).map(|i| (i * 7919 + 101) % vocab).collect();
    let top = model
        .logits(&ids)
        .unwrap()
        .argmax(candle_core::D::Minus1)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    let (agree, differ) = served_agreement(gguf, &ids, &top).await;
    assert!(agree >= 0.99, "top-1 agreement {agree}: {differ:?}");
    let distinct: std::collections::HashSet<_> = top.iter().collect();
    assert!(distinct.len() > 5, "{top:?}");
}

/// The toy llama made a qwen2 model: its metadata under `qwen2.`, every tensor f32, random
/// biases on q, k and v (which qwen2 has and llama has not), and output weights scaled up so
/// the most likely token is clear (the toy's are tiny).
fn tiny_qwen2(out: &std::path::Path) {
    toy_as("qwen2", true, KvHeads::Four, out);
}

/// What the toy's key and value heads become (it has four, one per query head).
#[derive(Debug, Clone, Copy, PartialEq)]
enum KvHeads {
    Four,
    /// The first two only: grouped-query attention, each read by two query heads.
    Two,
    /// The first two, each written twice, for the two query heads that read it: the model of
    /// `Two` without grouping.
    TwoRepeated,
}

/// The toy llama's weights (f32) under another architecture's name, with q/k/v biases or not,
/// its key and value heads as `kv`.
fn toy_as(arch: &str, biases: bool, kv: KvHeads, out: &std::path::Path) {
    use candle_core::quantized::gguf_file::Value;
    let source = kit_file("tiny-llama");
    let has_output = {
        let mut reader = std::io::BufReader::new(std::fs::File::open(&source).unwrap());
        candle_core::quantized::gguf_file::Content::read(&mut reader)
            .unwrap()
            .tensor_infos
            .contains_key("output.weight")
    };
    let output = if has_output { "output.weight" } else { "token_embd.weight" };
    let cpu = candle_core::Device::Cpu;
    rewrite_gguf(
        &source,
        out,
        |i, name, mut t| {
            let mut written = Vec::new();
            if name == output {
                t = (t * 40.0).unwrap();
            }
            if kv != KvHeads::Four && (name.ends_with("attn_k.weight") || name.ends_with("attn_v.weight")) {
                // `[heads · head size, width]`, whole heads taken (llama.cpp permutes q and k
                // rows within each head); copied out, as the quantizer reads whole storage.
                let (size, width) = (t.dim(0).unwrap() / 4, t.dim(1).unwrap());
                let heads: &[usize] = if kv == KvHeads::Two { &[0, 1] } else { &[0, 0, 1, 1] };
                let mut rows = Vec::new();
                for &h in heads {
                    rows.extend(
                        t.narrow(0, h * size, size)
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1::<f32>()
                            .unwrap(),
                    );
                }
                t = Tensor::from_vec(rows, (heads.len() * size, width), &cpu).unwrap();
            }
            if biases
                && ["attn_q", "attn_k", "attn_v"]
                    .iter()
                    .any(|p| name.ends_with(&format!("{p}.weight")))
            {
                let rows = t.dim(0).unwrap();
                let bias = graft_tests::deterministic_values(rows, i as u64 + 11);
                written.push((name.replace(".weight", ".bias"), Tensor::from_vec(bias, rows, &cpu).unwrap()));
            }
            written.push((name, t));
            written
        },
        |k, v| match k.strip_prefix("llama.") {
            Some("attention.head_count_kv") if kv == KvHeads::Two => {
                let kept: u32 = 2;
                let value = match v {
                    Value::U32(_) => Value::U32(kept),
                    Value::I32(_) => Value::I32(kept as i32),
                    Value::U64(_) => Value::U64(kept.into()),
                    other => panic!("head_count_kv is {other:?}"),
                };
                (format!("{arch}.attention.head_count_kv"), value)
            }
            Some(rest) => (format!("{arch}.{rest}"), v.clone()),
            None if k == "general.architecture" => (k.to_owned(), Value::String(arch.into())),
            None => (k.to_owned(), v.clone()),
        },
    );
}

/// qwen2 (biases on q, k and v; rotary embedding by halves; weights in Hugging Face's row
/// order) trains as llama does: its adapters' gradients match finite differences, its forward
/// pass predicts the token graft's engine (mistralrs's qwen2 GGUF model) generates, and its
/// written adapter, merged by the engine's code, is the trained model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen2_trains_with_exact_gradients_and_the_engines_forward() {
    let dir = tempfile::tempdir().unwrap();
    let qwen = dir.path().join("tiny-qwen2.gguf");
    tiny_qwen2(&qwen);
    let model = Model::load(&qwen, DType::F32, None, 1).unwrap();
    assert_eq!(model.arch, graft_train::model::Arch::Qwen2);
    the_engine_generates_what_the_model_predicts(&qwen, &model).await;
    gradients_match_finite_differences(&qwen);
    written_adapter_merges_to_the_trained_model(&qwen);
}

/// Grouped-query attention, as SmolLM2 and Qwen2.5 have (fewer key and value heads than query
/// heads, each read by a block of query heads; the toy has four of each): the toy with two of
/// its key/value heads gives the logits of the same toy with those heads written once per query
/// head, predicts the token graft's engine generates, and its adapters' gradients match finite
/// differences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_query_attention_trains_with_exact_gradients_and_the_engines_forward() {
    let dir = tempfile::tempdir().unwrap();
    let (gqa, repeated) = (dir.path().join("tiny-gqa.gguf"), dir.path().join("tiny-repeated.gguf"));
    toy_as("llama", false, KvHeads::Two, &gqa);
    toy_as("llama", false, KvHeads::TwoRepeated, &repeated);
    let (grouped, apart) = (
        Model::load(&gqa, DType::F64, None, 1).unwrap(),
        Model::load(&repeated, DType::F64, None, 1).unwrap(),
    );
    assert_eq!((grouped.heads, grouped.kv_heads, apart.kv_heads), (4, 2, 4));
    let ids: Vec<u32> = (0..40u32).map(|i| (i * 7919 + 101) % 1000).collect();
    let (a, b) = (grouped.logits(&ids).unwrap(), apart.logits(&ids).unwrap());
    assert!(max_abs_diff(&a, &b) < 1e-9, "{}", max_abs_diff(&a, &b));
    assert!(max_abs_diff(&a, &a.zeros_like().unwrap()) > 1e-3);

    the_engine_generates_what_the_model_predicts(&gqa, &Model::load(&gqa, DType::F32, None, 1).unwrap()).await;
    gradients_match_finite_differences(&gqa);
}

/// A model of another family is refused by name before anything is trained.
#[test]
fn an_unsupported_architecture_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("toy-phi2.gguf");
    toy_as("phi2", false, KvHeads::Four, &path);
    let err = Model::load(&path, DType::F32, Some(&LoraSettings::default()), 1)
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("llama and qwen2") && err.to_string().contains("phi2"),
        "{err}"
    );
}
