//! The training loop: AdamW on the adapters, linear warmup then cosine decay, gradient
//! accumulation and clipping by global norm, validation loss every few steps with the best
//! adapters kept, early stopping, a time budget, and a stop flag (Ctrl-C) honoured between
//! steps. The model's own loss counts only target tokens.
//!
//! It trains and reports; reading data and writing the adapter are the caller's (the `graft
//! train` command, with [`crate::peft`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::Serialize;

use crate::model::Model;

/// One training example: token ids and which of them are targets (predicted and learned).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub target: Vec<bool>,
}

impl Example {
    /// Tokens that count in the loss.
    pub fn targets(&self) -> usize {
        self.target.iter().skip(1).filter(|t| **t).count()
    }
}

/// How to train.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSettings {
    /// Optimiser steps, at most.
    pub steps: usize,
    pub learning_rate: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    /// Gradients of this many examples are summed into one step.
    pub accumulation: usize,
    /// The gradients' global norm is scaled down to this (0: no clipping).
    pub max_grad_norm: f64,
    /// Validation loss every this many steps.
    pub eval_every: usize,
    /// Stop after this many evaluations without a better validation loss (0: never).
    pub patience: usize,
    /// Stop when this much time has passed (the step in flight ends first).
    pub time_budget: Option<Duration>,
    pub seed: u64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            steps: 250,
            learning_rate: 3e-4,
            warmup_steps: 20,
            weight_decay: 0.0,
            accumulation: 1,
            max_grad_norm: 0.5,
            eval_every: 25,
            patience: 4,
            time_budget: None,
            seed: 1,
        }
    }
}

/// One step's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StepLog {
    pub step: usize,
    pub loss: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub seconds: f64,
}

/// One evaluation's figures.
#[derive(Debug, Clone, Serialize)]
pub struct EvalLog {
    pub step: usize,
    pub val_loss: f64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub settings: TrainSettings,
    pub steps: Vec<StepLog>,
    pub evaluations: Vec<EvalLog>,
    /// Validation loss of the base model (before the first step).
    pub base_val_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
    /// The step whose adapters were kept (the best validation loss; the last without one).
    pub best_step: usize,
    /// Why it stopped: `steps`, `early-stopping`, `time-budget` or `interrupted`.
    pub stopped: &'static str,
    pub tokens_per_second: f64,
}

/// The learning rate at `step` (1-based): linear warmup, then cosine down to a tenth.
pub fn learning_rate(settings: &TrainSettings, step: usize) -> f64 {
    let peak = settings.learning_rate;
    if step <= settings.warmup_steps {
        return peak * step as f64 / settings.warmup_steps.max(1) as f64;
    }
    let span = settings.steps.saturating_sub(settings.warmup_steps).max(1) as f64;
    let progress = ((step - settings.warmup_steps) as f64 / span).min(1.0);
    let floor = peak * 0.1;
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Mean loss per target token over `examples` (no gradient kept).
pub fn mean_loss(model: &Model, examples: &[Example]) -> candle_core::Result<Option<f64>> {
    let (mut sum, mut count) = (0.0, 0usize);
    for example in examples {
        let n = example.targets();
        if let Some(loss) = model.loss(&example.ids, &example.target)? {
            sum += loss.detach().to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? * n as f64;
            count += n;
        }
    }
    Ok((count > 0).then(|| sum / count as f64))
}

fn snapshot(vars: &[Var]) -> candle_core::Result<Vec<Tensor>> {
    vars.iter().map(|v| v.as_tensor().copy()).collect()
}

/// A deterministic order of the examples for each pass.
fn order(n: usize, seed: u64, pass: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut state = seed ^ pass.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for i in (1..n).rev() {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        idx.swap(i, (state >> 33) as usize % (i + 1));
    }
    idx
}

/// Trains `model`'s adapters on `train`, validating on `validation`; `on_step` sees each
/// step's figures (a progress bar); `stop` ends the run after the current step. The best
/// adapters (by validation loss) are in the model when it returns.
pub fn train(
    model: &Model,
    train: &[Example],
    validation: &[Example],
    settings: &TrainSettings,
    stop: &AtomicBool,
    on_step: &mut dyn FnMut(&StepLog, Option<&EvalLog>),
) -> candle_core::Result<Outcome> {
    let vars = model.trainable();
    let mut optimizer = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: settings.learning_rate,
            weight_decay: settings.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let started = Instant::now();
    let base_val_loss = mean_loss(model, validation)?;
    let mut best = (base_val_loss, 0usize, snapshot(&vars)?);
    let mut outcome = Outcome {
        settings: settings.clone(),
        steps: Vec::new(),
        evaluations: Vec::new(),
        base_val_loss,
        best_val_loss: base_val_loss,
        best_step: 0,
        stopped: "steps",
        tokens_per_second: 0.0,
    };
    if train.is_empty() {
        return Ok(outcome);
    }
    let mut queue: Vec<usize> = Vec::new();
    let mut pass = 0u64;
    let mut stale = 0usize;
    let mut trained_tokens = 0usize;
    let mut training_time = Duration::ZERO;
    model.set_training(true);
    for step in 1..=settings.steps {
        if stop.load(Ordering::Relaxed) {
            outcome.stopped = "interrupted";
            break;
        }
        if settings.time_budget.is_some_and(|b| started.elapsed() >= b) {
            outcome.stopped = "time-budget";
            break;
        }
        let step_started = Instant::now();
        let mut summed: Vec<Option<Tensor>> = vec![None; vars.len()];
        let (mut loss_sum, mut tokens, mut last_store) = (0.0, 0usize, None);
        for _ in 0..settings.accumulation.max(1) {
            if queue.is_empty() {
                queue = order(train.len(), settings.seed, pass);
                pass += 1;
            }
            let example = &train[queue.pop().unwrap_or(0)];
            let Some(loss) = model.loss(&example.ids, &example.target)? else {
                continue;
            };
            let n = example.targets();
            loss_sum += loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? * n as f64;
            tokens += n;
            let grads = (loss * n as f64)?.backward()?;
            for (slot, var) in summed.iter_mut().zip(&vars) {
                if let Some(g) = grads.get(var.as_tensor()) {
                    *slot = Some(match slot.take() {
                        Some(sum) => (sum + g)?,
                        None => g.clone(),
                    });
                }
            }
            last_store = Some(grads);
        }
        let Some(mut store) = last_store.filter(|_| tokens > 0) else {
            continue;
        };
        // Mean per target token over the accumulated examples, then clipped.
        let mut norm_sq = 0.0;
        let mut means = Vec::with_capacity(vars.len());
        for g in summed.into_iter() {
            let g = g.map(|g| g / tokens as f64).transpose()?;
            if let Some(g) = &g {
                norm_sq += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            }
            means.push(g);
        }
        let grad_norm = norm_sq.sqrt();
        let clip = if settings.max_grad_norm > 0.0 && grad_norm > settings.max_grad_norm {
            settings.max_grad_norm / grad_norm
        } else {
            1.0
        };
        for (var, g) in vars.iter().zip(means) {
            match g {
                Some(g) => {
                    store.insert(var.as_tensor(), (g * clip)?);
                }
                None => {
                    store.remove(var.as_tensor());
                }
            }
        }
        let lr = learning_rate(settings, step);
        optimizer.set_learning_rate(lr);
        optimizer.step(&store)?;
        trained_tokens += tokens;
        training_time += step_started.elapsed();
        let log = StepLog {
            step,
            loss: loss_sum / tokens as f64,
            learning_rate: lr,
            grad_norm,
            tokens,
            seconds: started.elapsed().as_secs_f64(),
        };
        let mut evaluation = None;
        if step % settings.eval_every.max(1) == 0 || step == settings.steps {
            model.set_training(false);
            if let Some(val_loss) = mean_loss(model, validation)? {
                let eval = EvalLog { step, val_loss };
                if best.0.is_none_or(|b| val_loss < b) {
                    best = (Some(val_loss), step, snapshot(&vars)?);
                    stale = 0;
                } else {
                    stale += 1;
                }
                outcome.evaluations.push(eval.clone());
                evaluation = Some(eval);
            }
            model.set_training(true);
        }
        on_step(&log, evaluation.as_ref());
        outcome.steps.push(log);
        if settings.patience > 0 && stale >= settings.patience {
            outcome.stopped = "early-stopping";
            break;
        }
    }
    model.set_training(false);
    if validation.is_empty() || best.0.is_none() {
        best.1 = outcome.steps.last().map_or(0, |s| s.step);
    } else {
        for (var, kept) in vars.iter().zip(&best.2) {
            var.set(kept)?;
        }
    }
    outcome.best_val_loss = best.0;
    outcome.best_step = best.1;
    outcome.tokens_per_second = trained_tokens as f64 / training_time.as_secs_f64().max(1e-9);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_warms_up_then_decays_to_a_tenth() {
        let s = TrainSettings {
            steps: 100,
            warmup_steps: 10,
            learning_rate: 1e-3,
            ..TrainSettings::default()
        };
        assert!((learning_rate(&s, 1) - 1e-4).abs() < 1e-12);
        assert!((learning_rate(&s, 10) - 1e-3).abs() < 1e-12);
        assert!(learning_rate(&s, 50) < 1e-3 && learning_rate(&s, 50) > 1e-4);
        assert!((learning_rate(&s, 100) - 1e-4).abs() < 1e-12);
    }

    #[test]
    fn every_pass_visits_every_example_once() {
        let mut o = order(10, 3, 0);
        o.sort();
        assert_eq!(o, (0..10).collect::<Vec<_>>());
        assert_ne!(order(10, 3, 0), order(10, 3, 1));
    }
}
