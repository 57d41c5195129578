//! Synthetic LoRA adapters: PEFT folders filled with deterministic pseudo-random weights for a
//! given base model. Tests and benchmarks use them so that no adapter is ever downloaded.
//!
//! They are valid adapters in every respect (shapes, names, config) but carry no learned
//! behaviour. This module writes files only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::adapter::gguf_tensor_name;
use crate::merge::{BaseGguf, MergeError};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SyntheticAdapter<'a> {
    /// PEFT projection names (`q_proj`, ...), adapted in every layer.
    pub projections: &'a [&'a str],
    pub rank: usize,
    pub alpha: f64,
    /// A and B are uniform in [-amplitude, amplitude].
    pub amplitude: f32,
    /// B all zeros, as PEFT initialises it: merging changes nothing.
    pub zero_b: bool,
    pub seed: u64,
}

impl SyntheticAdapter<'_> {
    /// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir` (created if
    /// needed). The weights are written under a temporary name and renamed into place.
    pub fn write(&self, dir: &Path, base: &BaseGguf) -> Result<(), MergeError> {
        let io = |path: PathBuf| move |source| MergeError::Io { path, source };
        let gguf = |message: String| MergeError::Gguf {
            path: base.path.clone(),
            message,
        };
        let mut rng = Lcg(self.seed);
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        let (r, amplitude) = (self.rank, self.amplitude);
        for layer in 0..base.block_count {
            for p in self.projections {
                let name = gguf_tensor_name(layer, p).ok_or_else(|| gguf(format!("`{p}` is not a known projection")))?;
                let (out, inp) = base.shape(&name).ok_or_else(|| gguf(format!("no 2-d tensor {name}")))?;
                let a: Vec<f32> = (0..r * inp).map(|_| rng.next() * amplitude).collect();
                let b: Vec<f32> = (0..out * r)
                    .map(|_| if self.zero_b { 0.0 } else { rng.next() * amplitude })
                    .collect();
                let prefix = graft_gguf::peft_prefix(layer, p).unwrap_or_default();
                let a = Tensor::from_vec(a, (r, inp), &Device::Cpu).map_err(|e| gguf(e.to_string()))?;
                let b = Tensor::from_vec(b, (out, r), &Device::Cpu).map_err(|e| gguf(e.to_string()))?;
                tensors.insert(format!("{prefix}.lora_A.weight"), a);
                tensors.insert(format!("{prefix}.lora_B.weight"), b);
            }
        }
        std::fs::create_dir_all(dir).map_err(io(dir.to_owned()))?;
        let weights = dir.join("adapter_model.safetensors");
        let partial = dir.join("adapter_model.safetensors.partial");
        candle_core::safetensors::save(&tensors, &partial).map_err(|e| MergeError::Gguf {
            path: partial.clone(),
            message: e.to_string(),
        })?;
        std::fs::rename(&partial, &weights).map_err(io(weights.clone()))?;
        let config = serde_json::json!({
            "peft_type": "LORA", "r": r, "lora_alpha": self.alpha, "target_modules": self.projections,
            "bias": "none", "fan_in_fan_out": false, "base_model_name_or_path": "synthetic",
        });
        let config_path = dir.join("adapter_config.json");
        std::fs::write(&config_path, config.to_string()).map_err(io(config_path.clone()))
    }
}

/// A small deterministic generator (64-bit LCG), so an adapter is the same on every run.
struct Lcg(u64);

impl Lcg {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}
