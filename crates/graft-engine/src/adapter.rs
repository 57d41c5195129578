//! A LoRA adapter in PEFT's format (`adapter_config.json` + `adapter_model.safetensors`, as
//! PEFT, Axolotl and Unsloth write it): reading it, and checking it against a base model
//! before anything is merged.
//!
//! Every problem is an [`AdapterError`] that names the adapter and says what is wrong. This
//! module reads files; it does not merge (see `merge`).
//!
//! The files are read once, through [`graft_core::confine`]: each must be a regular file whose
//! real location (after every link, checked on the opened file) lies inside the folders the
//! adapter may come from; the bytes read are the bytes checked, hashed for the merge cache and
//! merged, so a folder swapped for a link later cannot change what is served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use graft_core::confine::{read_confined, ConfineError};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The largest `adapter_config.json` read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The largest `adapter_model.safetensors` read: a rank-64 adapter of every projection of a
/// 70B model is about 1.7 GB.
const MAX_WEIGHTS_BYTES: u64 = 8 << 30;

/// The projections a LoRA adapter may target, by their PEFT (Hugging Face) names.
pub use graft_gguf::PROJECTIONS;

/// What can be wrong with an adapter.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("adapter `{name}`: {message}")]
    Invalid { name: String, message: String },
    #[error("adapter `{name}`: {}: {source}", path.display())]
    Io {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The parts of `adapter_config.json` graft uses. Other keys are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct AdapterConfig {
    #[serde(default = "lora")]
    pub peft_type: String,
    /// The rank.
    pub r: usize,
    pub lora_alpha: f64,
    /// Module names (`q_proj`) or a single regular expression string, as PEFT allows; graft
    /// reads the modules actually present in the weights, so this is only cross-checked.
    #[serde(default)]
    pub target_modules: TargetModules,
    /// Scale by `alpha / sqrt(r)` instead of `alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Weights stored transposed (GPT-2 style); not supported for llama-family bases.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// `none` is the only kind a merge can apply without extra tensors.
    #[serde(default = "none")]
    pub bias: String,
    /// Free text; informative only (a Hugging Face id, usually).
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
}

fn lora() -> String {
    "LORA".to_owned()
}

fn none() -> String {
    "none".to_owned()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    #[default]
    Unspecified,
    List(Vec<String>),
    Pattern(String),
}

/// One adapted weight: `delta = scale * B @ A`, with `A: [r, in]` and `B: [out, r]` (f32, CPU).
#[derive(Debug, Clone)]
pub struct LoraPair {
    pub a: Tensor,
    pub b: Tensor,
}

/// A loaded adapter.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub name: String,
    pub dir: PathBuf,
    pub config: AdapterConfig,
    /// By (layer, projection).
    pub pairs: BTreeMap<(usize, String), LoraPair>,
    /// sha256 (hex) of the `adapter_config.json` and `adapter_model.safetensors` bytes read.
    pub sha256: [String; 2],
}

impl Adapter {
    /// The factor B @ A is multiplied by.
    pub fn scale(&self) -> f64 {
        graft_gguf::lora_scale(self.config.lora_alpha, self.config.r, self.config.use_rslora)
    }

    /// Reads `dir`, checking the format, the rank against `max_rank`, and that every A/B pair
    /// is complete, of matching shapes and finite. The files must really lie inside `dir`.
    pub fn load(name: &str, dir: &Path, max_rank: usize) -> Result<Adapter, AdapterError> {
        Adapter::load_confined(name, dir, max_rank, &[dir])
    }

    /// Like [`Adapter::load`], with the files allowed anywhere inside `roots` (the adapter
    /// store and the folders adapters may be loaded from).
    pub fn load_confined(name: &str, dir: &Path, max_rank: usize, roots: &[&Path]) -> Result<Adapter, AdapterError> {
        let invalid = |message: String| AdapterError::Invalid {
            name: name.to_owned(),
            message,
        };
        let read = |file: &str, max: u64| -> Result<Vec<u8>, AdapterError> {
            let path = dir.join(file);
            read_confined(&path, roots, max).map(|f| f.bytes).map_err(|e| match e {
                ConfineError::Io { path, source } => AdapterError::Io {
                    name: name.to_owned(),
                    path,
                    source,
                },
                ConfineError::Outside { .. } => invalid(format!("{file} lies outside the adapter folders graft may read")),
                other => invalid(other.to_string()),
            })
        };
        let config_bytes = read("adapter_config.json", MAX_CONFIG_BYTES)?;
        let config: AdapterConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| invalid(format!("adapter_config.json is not a PEFT LoRA config: {e}")))?;
        if !config.peft_type.eq_ignore_ascii_case("LORA") {
            return Err(invalid(format!(
                "peft_type is {}, only LORA adapters can be merged",
                config.peft_type
            )));
        }
        if config.r == 0 || config.r > max_rank {
            return Err(invalid(format!(
                "rank r = {} is outside 1..={max_rank} (adapters.max_rank)",
                config.r
            )));
        }
        if !(config.lora_alpha.is_finite() && config.lora_alpha > 0.0) {
            return Err(invalid(format!("lora_alpha must be a positive number, got {}", config.lora_alpha)));
        }
        if config.fan_in_fan_out {
            return Err(invalid("fan_in_fan_out adapters (GPT-2 style) are not supported".into()));
        }
        if config.bias != "none" {
            return Err(invalid(format!(
                "bias = \"{}\" is not supported; train with bias = \"none\"",
                config.bias
            )));
        }

        let weights_path = dir.join("adapter_model.safetensors");
        if std::fs::symlink_metadata(&weights_path).is_err() {
            let hint = if dir.join("adapter_model.bin").is_file() {
                " (adapter_model.bin is a pickle file: save with safe_serialization=True)"
            } else {
                ""
            };
            return Err(invalid(format!("adapter_model.safetensors is missing{hint}")));
        }
        let weights_bytes = read("adapter_model.safetensors", MAX_WEIGHTS_BYTES)?;
        let sha256 = [
            hex::encode(Sha256::digest(&config_bytes)),
            hex::encode(Sha256::digest(&weights_bytes)),
        ];
        let tensors = candle_core::safetensors::load_buffer(&weights_bytes, &Device::Cpu)
            .map_err(|e| invalid(format!("cannot read adapter_model.safetensors: {e}")))?;
        drop(weights_bytes);

        let mut halves: BTreeMap<(usize, String), (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
        for (tensor_name, tensor) in tensors {
            let Some((layer, projection, half)) = parse_name(&tensor_name) else {
                return Err(invalid(format!(
                    "tensor `{tensor_name}` is not a LoRA weight of a llama-style projection ({})",
                    PROJECTIONS.join(", ")
                )));
            };
            if !matches!(tensor.dtype(), DType::F32 | DType::F16 | DType::BF16) {
                return Err(invalid(format!(
                    "tensor `{tensor_name}` has dtype {:?}; expected f32, f16 or bf16",
                    tensor.dtype()
                )));
            }
            let tensor = tensor
                .to_dtype(DType::F32)
                .map_err(|e| invalid(format!("tensor `{tensor_name}`: {e}")))?;
            let values = tensor
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| invalid(format!("tensor `{tensor_name}`: {e}")))?;
            if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                return Err(invalid(format!(
                    "tensor `{tensor_name}` holds {bad}: every weight must be a finite number"
                )));
            }
            let slot = halves.entry((layer, projection)).or_default();
            if half == 'A' {
                slot.0 = Some(tensor);
            } else {
                slot.1 = Some(tensor);
            }
        }
        if halves.is_empty() {
            return Err(invalid("adapter_model.safetensors holds no LoRA weights".into()));
        }

        let mut pairs = BTreeMap::new();
        for ((layer, projection), (a, b)) in halves {
            let where_ = format!("layer {layer} {projection}");
            let (Some(a), Some(b)) = (a, b) else {
                return Err(invalid(format!("{where_}: lora_A and lora_B must both be present")));
            };
            let (a_dims, b_dims) = (a.dims().to_vec(), b.dims().to_vec());
            if a_dims.len() != 2 || b_dims.len() != 2 || a_dims[0] != config.r || b_dims[1] != config.r {
                return Err(invalid(format!(
                    "{where_}: expected lora_A [r, in] and lora_B [out, r] with r = {}, got {a_dims:?} and {b_dims:?}",
                    config.r
                )));
            }
            pairs.insert((layer, projection), LoraPair { a, b });
        }
        if let TargetModules::List(listed) = &config.target_modules {
            for (_, projection) in pairs.keys() {
                if !listed.iter().any(|m| m == projection) {
                    return Err(invalid(format!(
                        "weights for {projection} are present but target_modules lists only {listed:?}"
                    )));
                }
            }
        }
        Ok(Adapter {
            name: name.to_owned(),
            dir: dir.to_owned(),
            config,
            pairs,
            sha256,
        })
    }
}

/// `(layer, projection, 'A' | 'B')` from a PEFT tensor name such as
/// `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`.
pub fn parse_name(name: &str) -> Option<(usize, String, char)> {
    let (rest, half) = if let Some(rest) = name.strip_suffix(".lora_A.weight") {
        (rest, 'A')
    } else if let Some(rest) = name.strip_suffix(".lora_B.weight") {
        (rest, 'B')
    } else {
        return None;
    };
    let projection = rest.rsplit('.').next()?;
    if !PROJECTIONS.contains(&projection) {
        return None;
    }
    let after_layers = rest.split(".layers.").nth(1)?;
    let layer = after_layers.split('.').next()?.parse().ok()?;
    Some((layer, projection.to_owned(), half))
}

/// The GGUF tensor a PEFT projection of a layer changes (graft-gguf's naming).
pub use graft_gguf::tensor_name as gguf_tensor_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_names_parse_into_layer_projection_and_half() {
        assert_eq!(
            parse_name("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"),
            Some((3, "q_proj".into(), 'A'))
        );
        assert_eq!(
            parse_name("base_model.model.model.layers.12.mlp.down_proj.lora_B.weight"),
            Some((12, "down_proj".into(), 'B'))
        );
        assert_eq!(parse_name("base_model.model.lm_head.lora_A.weight"), None);
        assert_eq!(parse_name("base_model.model.model.layers.1.self_attn.q_proj.weight"), None);
        assert_eq!(gguf_tensor_name(2, "o_proj").as_deref(), Some("blk.2.attn_output.weight"));
    }
}
