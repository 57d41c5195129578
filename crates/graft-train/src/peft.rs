//! A trained model's adapters written as a PEFT LoRA adapter folder, the format graft's pool
//! (and Hugging Face PEFT) loads: `adapter_config.json` and `adapter_model.safetensors` with
//! PEFT's tensor names, in Hugging Face's row order (q and k `B` rows of a llama GGUF
//! inverse-permuted, since the trainer works in GGUF order).
//!
//! The folder is written whole ([`crate::staged`]): an interrupted write leaves no half
//! adapter; an existing target is replaced only when the caller says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::lora::LoraSettings;
use crate::model::Model;
use crate::staged::{io, IoError, Staged};

#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    #[error("{} already exists (pass --force to replace it)", .0.display())]
    Exists(PathBuf),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("writing the adapter: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The PEFT tensors of `model`'s adapters: name → f32 tensor.
pub fn tensors(model: &Model) -> Result<HashMap<String, Tensor>, candle_core::Error> {
    let mut out = HashMap::new();
    for (layer, adapters) in model.adapters().into_iter().enumerate() {
        for (projection, lora) in adapters {
            let Some(prefix) = graft_gguf::peft_prefix(layer, projection) else {
                continue;
            };
            let mut b = lora.b.as_tensor().to_dtype(DType::F32)?;
            if let Some(heads) = model.permutation(projection) {
                b = graft_gguf::unpermute_rows(&b, heads)?;
            }
            out.insert(format!("{prefix}.lora_A.weight"), lora.a.as_tensor().to_dtype(DType::F32)?);
            out.insert(format!("{prefix}.lora_B.weight"), b);
        }
    }
    Ok(out)
}

/// Writes `model`'s adapters to the folder `dir`; `base` names the base model in the config.
pub fn write(model: &Model, settings: &LoraSettings, base: &str, dir: &Path, replace: bool) -> Result<(), PeftError> {
    if dir.exists() && !replace {
        return Err(PeftError::Exists(dir.to_owned()));
    }
    let staged = Staged::begin(dir)?;
    let staging = &staged.path;
    candle_core::safetensors::save(&tensors(model)?, staging.join("adapter_model.safetensors"))?;
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": settings.rank,
        "lora_alpha": settings.alpha,
        "use_rslora": settings.rslora,
        "lora_dropout": settings.dropout,
        "target_modules": settings.targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
    });
    let config_path = staging.join("adapter_config.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap_or_default() + "\n").map_err(io(&config_path))?;
    Ok(staged.finish()?)
}
