//! The trainer's model (graft-train) against the truth: its gradients against finite
//! differences on the kit's toy llama model, in f64.

use candle_core::{DType, Tensor};
use graft_tests::kit_file;
use graft_train::{LoraSettings, Model};

fn loss_of(model: &Model, ids: &[u32], target: &[bool]) -> f64 {
    model.loss(ids, target).unwrap().unwrap().to_scalar::<f64>().unwrap()
}

/// Every adapter's gradient, by backpropagation, matches the loss's change when one of its
/// weights moves: the forward pass keeps the whole graph (no fused kernel cuts it).
#[test]
fn lora_gradients_match_finite_differences_on_the_toy_model() {
    let settings = LoraSettings {
        rank: 2,
        alpha: 4.0,
        ..LoraSettings::default()
    };
    let model = Model::load(&kit_file("tiny-llama"), DType::F64, Some(&settings)).unwrap();
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
    let loss = model.loss(&ids, &target).unwrap().unwrap();
    let grads = loss.backward().unwrap();
    let eps = 1e-6;
    let mut checked = 0;
    for (v, var) in vars.iter().enumerate() {
        if v % 5 != 0 {
            continue;
        }
        let grad = grads.get(var.as_tensor()).expect("every adapter weight has a gradient");
        let grad = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
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
    assert!(vars.iter().any(|var| grads.get(var.as_tensor()).is_some_and(|g| g
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        > 1e-8)));
}

/// With every B at zero the adapters change nothing: the model is the base, exactly.
#[test]
fn fresh_adapters_leave_the_base_model_unchanged() {
    let path = kit_file("tiny-llama");
    let base = Model::load(&path, DType::F64, None).unwrap();
    let adapted = Model::load(&path, DType::F64, Some(&LoraSettings::default())).unwrap();
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
    let path = kit_file("tiny-llama");
    let settings = LoraSettings {
        rank: 4,
        alpha: 8.0,
        ..LoraSettings::default()
    };
    let model = Model::load(&path, DType::F64, Some(&settings)).unwrap();
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
    let served = Model::load(&merged, DType::F64, None).unwrap();
    let ids = [1u32, 17, 300, 42, 9, 1000, 5, 77];
    let want = model.logits(&ids).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let got = served.logits(&ids).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let base_logits = Model::load(&path, DType::F64, None).unwrap().logits(&ids).unwrap();
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
/// step.
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
    let outcome = train(&model, &train_set, &validation, &settings, &AtomicBool::new(false), &mut |_, _| {
        seen += 1
    })
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

    let stopped = train(&model, &train_set, &validation, &settings, &AtomicBool::new(true), &mut |_, _| {}).unwrap();
    assert_eq!((stopped.stopped, stopped.steps.len()), ("interrupted", 0));
    let budget = TrainSettings {
        time_budget: Some(std::time::Duration::ZERO),
        ..settings
    };
    let out = train(&model, &train_set, &validation, &budget, &AtomicBool::new(false), &mut |_, _| {}).unwrap();
    assert_eq!((out.stopped, out.steps.len()), ("time-budget", 0));
}
