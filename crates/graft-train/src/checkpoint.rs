//! A training run's whole state on disk, so an interrupted run (Ctrl-C, a time budget, a
//! crash) continues where it stopped: the adapters now and at their best, the optimiser's
//! moments, the data order, the logs, and what the run is (`run.json`: settings and data, for
//! the caller to compare before resuming).
//!
//! A folder of three files: `state.json`, `tensors.safetensors`, `run.json`, written whole
//! ([`crate::staged`]): a crash mid-write leaves the last complete checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::staged::{io, IoError, Staged};
use crate::train::{EvalLog, StepLog};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("checkpoint tensors: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The loop's counters and logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    /// Steps done.
    pub step: usize,
    /// Passes over the data begun.
    pub pass: u64,
    /// The current pass's examples still to come (taken from the end).
    pub queue: Vec<usize>,
    /// Evaluations since the best one.
    pub stale: usize,
    pub best_step: usize,
    pub best_val_loss: Option<f64>,
    pub base_val_loss: Option<f64>,
    pub steps: Vec<StepLog>,
    pub evaluations: Vec<EvalLog>,
    pub trained_tokens: usize,
    pub training_seconds: f64,
    /// The optimiser's step count.
    pub adam_t: usize,
}

/// Everything a run needs to continue.
pub struct Checkpoint {
    pub state: RunState,
    /// The adapters' weights now, in the model's trainable order.
    pub current: Vec<Tensor>,
    /// At the best validation loss so far.
    pub best: Vec<Tensor>,
    /// The optimiser's first and second moments.
    pub first: Vec<Tensor>,
    pub second: Vec<Tensor>,
}

const PARTS: [&str; 4] = ["current", "best", "first", "second"];

/// Saves `checkpoint` (and `run`, what the run is) as the folder `dir`, replacing it whole.
pub fn save(dir: &Path, checkpoint: &Checkpoint, run: &serde_json::Value) -> Result<(), CheckpointError> {
    let staged = Staged::begin(dir)?;
    let staging = &staged.path;
    let mut tensors = HashMap::new();
    for (part, list) in PARTS
        .iter()
        .zip([&checkpoint.current, &checkpoint.best, &checkpoint.first, &checkpoint.second])
    {
        for (i, t) in list.iter().enumerate() {
            tensors.insert(format!("{part}.{i}"), t.clone());
        }
    }
    candle_core::safetensors::save(&tensors, staging.join("tensors.safetensors"))?;
    let json = |value: serde_json::Result<String>| value.unwrap_or_default() + "\n";
    let state_path = staging.join("state.json");
    std::fs::write(&state_path, json(serde_json::to_string(&checkpoint.state))).map_err(io(&state_path))?;
    let run_path = staging.join("run.json");
    std::fs::write(&run_path, json(serde_json::to_string_pretty(run))).map_err(io(&run_path))?;
    Ok(staged.finish()?)
}

/// Reads the checkpoint folder `dir`: the checkpoint and what its run was.
pub fn load(dir: &Path, device: &Device) -> Result<(Checkpoint, serde_json::Value), CheckpointError> {
    let invalid = |message: String| CheckpointError::Invalid {
        path: dir.to_owned(),
        message,
    };
    let read = |name: &str| -> Result<String, CheckpointError> {
        let path = dir.join(name);
        Ok(std::fs::read_to_string(&path).map_err(io(&path))?)
    };
    let state: RunState =
        serde_json::from_str(&read("state.json")?).map_err(|e| invalid(format!("state.json is not a checkpoint's state: {e}")))?;
    let run: serde_json::Value = serde_json::from_str(&read("run.json")?).map_err(|e| invalid(format!("run.json: {e}")))?;
    let mut tensors = candle_core::safetensors::load(dir.join("tensors.safetensors"), device)?;
    let mut take = |part: &str| -> Result<Vec<Tensor>, CheckpointError> {
        let mut list = Vec::new();
        while let Some(t) = tensors.remove(&format!("{part}.{}", list.len())) {
            list.push(t);
        }
        Ok(list)
    };
    let (current, best, first, second) = (take("current")?, take("best")?, take("first")?, take("second")?);
    if [best.len(), first.len(), second.len()].iter().any(|&n| n != current.len()) {
        return Err(invalid("tensors.safetensors is incomplete".into()));
    }
    Ok((
        Checkpoint {
            state,
            current,
            best,
            first,
            second,
        },
        run,
    ))
}
