//! The training loop: AdamW on the adapters, linear warmup then cosine decay, gradient
//! accumulation and clipping by global norm, validation loss every few steps with the best
//! adapters kept, early stopping, a time budget, and a stop flag (Ctrl-C) honoured between
//! steps, and checkpoints of the whole state that a later run resumes exactly. The model's own
//! loss counts only target tokens; each step's gradients come from [`Model::backward`].
//!
//! It trains and reports; reading data and writing the adapter are the caller's (the `graft
//! train` command, with [`crate::peft`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::{Tensor, Var};
use graft_core::random::Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Checkpoint, CheckpointError, RunState};
use crate::model::Model;
use crate::optim::{AdamSettings, AdamW};

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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLog {
    pub step: usize,
    pub loss: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    /// Since this process began the run (validation included).
    pub seconds: f64,
    /// The run's training tokens per second so far: its steps' tokens over their time,
    /// validation left out, earlier sessions of a resumed run counted.
    #[serde(default)]
    pub tokens_per_second: f64,
}

/// One evaluation's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Why it stopped: `steps`, `early-stopping`, `time-budget`, `interrupted` or `diverged`
    /// (a step's loss or gradient norm was no longer a finite number: the step was not taken,
    /// and the adapters are the best validated ones, or the run's start: `best_step` 0).
    pub stopped: &'static str,
    pub tokens_per_second: f64,
    /// The step a resumed run started after.
    pub resumed_from: Option<usize>,
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

/// Mean loss per target token over `examples` (no graph kept, no dropout).
pub fn mean_loss(model: &Model, examples: &[Example]) -> candle_core::Result<Option<f64>> {
    let (mut sum, mut count) = (0.0, 0usize);
    for example in examples {
        if let Some((s, n)) = model.loss_sum(&example.ids, &example.target)? {
            sum += s;
            count += n;
        }
    }
    Ok((count > 0).then(|| sum / count as f64))
}

fn snapshot(vars: &[Var]) -> candle_core::Result<Vec<Tensor>> {
    vars.iter().map(|v| v.as_tensor().copy()).collect()
}

/// A deterministic order of the examples for each pass, drawn from `seed` and the pass.
fn order(n: usize, seed: u64, pass: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed ^ pass.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for i in (1..n).rev() {
        idx.swap(i, rng.below(i + 1));
    }
    idx
}

/// The dropout seed of one example of one step: the same on a resumed run.
fn dropout_seed(seed: u64, step: usize, micro: usize) -> u64 {
    Rng::new(seed ^ ((step as u64) << 20 | micro as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// Where a run saves its checkpoints, what it is (settings, data: saved with each, for a later
/// run to compare), and the saved state it resumes, if it does.
pub struct Checkpoints<'a> {
    pub dir: &'a Path,
    pub run: serde_json::Value,
    pub resume: Option<Checkpoint>,
}

/// What can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// Trains `model`'s adapters on `train`, validating on `validation`; `on_step` sees each
/// step's figures (a progress bar); `stop` ends the run after the current step. The best
/// adapters (by validation loss) are in the model when it returns. With `checkpoints`, the
/// run's whole state (adapters, best adapters, optimiser moments, data order, logs) is saved
/// after every evaluation and when the run ends, and a saved state in them is continued.
pub fn train(
    model: &Model,
    train: &[Example],
    validation: &[Example],
    settings: &TrainSettings,
    stop: &AtomicBool,
    mut checkpoints: Option<Checkpoints>,
    on_step: &mut dyn FnMut(&StepLog, Option<&EvalLog>),
) -> Result<Outcome, TrainError> {
    let vars = model.trainable();
    let mut optimizer = AdamW::new(
        vars.clone(),
        AdamSettings {
            weight_decay: settings.weight_decay,
            ..AdamSettings::default()
        },
    )?;
    let started = Instant::now();
    let resume = checkpoints.as_mut().and_then(|c| c.resume.take());
    let (mut state, mut best) = match resume {
        Some(saved) => {
            let device = vars.first().map(|v| v.device().clone()).unwrap_or(candle_core::Device::Cpu);
            let on = |list: Vec<Tensor>| list.iter().map(|t| t.to_device(&device)).collect::<candle_core::Result<Vec<_>>>();
            for (var, value) in vars.iter().zip(on(saved.current)?) {
                var.set(&value)?;
            }
            optimizer.restore(on(saved.first)?, on(saved.second)?, saved.state.adam_t)?;
            (saved.state, on(saved.best)?)
        }
        None => {
            let base_val_loss = mean_loss(model, validation)?;
            let state = RunState {
                step: 0,
                pass: 0,
                queue: Vec::new(),
                stale: 0,
                best_step: 0,
                best_val_loss: base_val_loss,
                base_val_loss,
                steps: Vec::new(),
                evaluations: Vec::new(),
                trained_tokens: 0,
                training_seconds: 0.0,
                adam_t: 0,
            };
            (state, snapshot(&vars)?)
        }
    };
    let resumed_from = (state.step > 0).then_some(state.step);
    let save = |state: &RunState, best: &[Tensor], optimizer: &AdamW| -> Result<(), TrainError> {
        if let Some(c) = &checkpoints {
            let checkpoint = Checkpoint {
                state: state.clone(),
                current: snapshot(&vars)?,
                best: best.to_vec(),
                first: optimizer.first.clone(),
                second: optimizer.second.clone(),
            };
            checkpoint::save(c.dir, &checkpoint, &c.run)?;
        }
        Ok(())
    };
    let mut stopped = "steps";
    if !train.is_empty() {
        while state.step < settings.steps {
            if stop.load(Ordering::Relaxed) {
                stopped = "interrupted";
                break;
            }
            if settings.time_budget.is_some_and(|b| started.elapsed() >= b) {
                stopped = "time-budget";
                break;
            }
            let step = state.step + 1;
            let step_started = Instant::now();
            let mut summed: Vec<Option<Tensor>> = vec![None; vars.len()];
            let (mut loss_sum, mut tokens) = (0.0, 0usize);
            for micro in 0..settings.accumulation.max(1) {
                if state.queue.is_empty() {
                    state.queue = order(train.len(), settings.seed, state.pass);
                    state.pass += 1;
                }
                let example = &train[state.queue.pop().unwrap_or(0)];
                let seed = dropout_seed(settings.seed, step, micro);
                let Some(g) = model.backward(&example.ids, &example.target, Some(seed))? else {
                    continue;
                };
                loss_sum += g.loss_sum;
                tokens += g.tokens;
                for (slot, grad) in summed.iter_mut().zip(g.grads) {
                    if let Some(grad) = grad {
                        *slot = Some(match slot.take() {
                            Some(sum) => (sum + grad)?,
                            None => grad,
                        });
                    }
                }
            }
            state.step = step;
            if tokens == 0 {
                continue;
            }
            // Mean per target token over the accumulated examples, then clipped.
            let mut norm_sq = 0.0;
            let mut means = Vec::with_capacity(vars.len());
            for g in summed {
                let g = g.map(|g| g / tokens as f64).transpose()?;
                if let Some(g) = &g {
                    norm_sq += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
                }
                means.push(g);
            }
            let grad_norm = norm_sq.sqrt();
            if !(loss_sum.is_finite() && grad_norm.is_finite()) {
                // Nothing after this step could recover; it is not taken.
                state.step = step - 1;
                stopped = "diverged";
                break;
            }
            let clip = if settings.max_grad_norm > 0.0 && grad_norm > settings.max_grad_norm {
                settings.max_grad_norm / grad_norm
            } else {
                1.0
            };
            let means = means
                .into_iter()
                .map(|g| g.map(|g| g * clip).transpose())
                .collect::<candle_core::Result<Vec<_>>>()?;
            let lr = learning_rate(settings, step);
            optimizer.step(&means, lr)?;
            state.adam_t = optimizer.t;
            state.trained_tokens += tokens;
            state.training_seconds += step_started.elapsed().as_secs_f64();
            let log = StepLog {
                step,
                loss: loss_sum / tokens as f64,
                learning_rate: lr,
                grad_norm,
                tokens,
                seconds: started.elapsed().as_secs_f64(),
                tokens_per_second: state.trained_tokens as f64 / state.training_seconds.max(1e-9),
            };
            let mut evaluation = None;
            if step % settings.eval_every.max(1) == 0 || step == settings.steps {
                if let Some(val_loss) = mean_loss(model, validation)? {
                    let eval = EvalLog { step, val_loss };
                    if state.best_val_loss.is_none_or(|b| val_loss < b) {
                        (state.best_val_loss, state.best_step, best) = (Some(val_loss), step, snapshot(&vars)?);
                        state.stale = 0;
                    } else {
                        state.stale += 1;
                    }
                    state.evaluations.push(eval.clone());
                    evaluation = Some(eval);
                }
            }
            on_step(&log, evaluation.as_ref());
            state.steps.push(log);
            if evaluation.is_some() {
                save(&state, &best, &optimizer)?;
            }
            if settings.patience > 0 && state.stale >= settings.patience {
                stopped = "early-stopping";
                break;
            }
        }
    }
    save(&state, &best, &optimizer)?;
    if stopped != "diverged" && (validation.is_empty() || state.best_val_loss.is_none()) {
        state.best_step = state.steps.last().map_or(0, |s| s.step);
    } else {
        for (var, kept) in vars.iter().zip(&best) {
            var.set(kept)?;
        }
    }
    Ok(Outcome {
        settings: settings.clone(),
        tokens_per_second: state.trained_tokens as f64 / state.training_seconds.max(1e-9),
        steps: state.steps,
        evaluations: state.evaluations,
        base_val_loss: state.base_val_loss,
        best_val_loss: state.best_val_loss,
        best_step: state.best_step,
        stopped,
        resumed_from,
    })
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
