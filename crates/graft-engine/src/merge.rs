//! Merging a LoRA adapter into a GGUF base model, producing a new GGUF file.
//!
//! mistralrs 0.8.1 cannot apply LoRA adapters to a GGUF model (see shared notes), so graft
//! does it: for each targeted weight, dequantize it, add `scale * B @ A`, and store it again at
//! a type that keeps small deltas (the base's own type when it is a float type, else Q8_0 by
//! default). Untouched tensors are copied as they are. llama.cpp's converter permutes the rows
//! of llama's q and k projections, so their deltas get the same permutation first.
//!
//! This module reads and writes GGUF files; it does not load models or cache results.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::adapter::{gguf_tensor_name, Adapter, AdapterError};
use graft_gguf::GgufError;
pub use graft_gguf::{permute_rows, BaseGguf};

/// Architectures whose GGUF tensor names graft maps PEFT projections to.
const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "mistral3"];

/// Errors while reading, merging or writing GGUF files.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    #[error("{}: {message}", path.display())]
    Gguf { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<GgufError> for MergeError {
    fn from(e: GgufError) -> MergeError {
        MergeError::Gguf {
            path: e.path,
            message: e.message,
        }
    }
}

/// How merged tensors are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeSettings {
    /// The type of a merged tensor whose base tensor is quantized. Float base tensors keep
    /// their type. Rows too short for the type's blocks fall back to F16.
    pub quantized_dtype: GgmlDType,
}

impl Default for MergeSettings {
    fn default() -> Self {
        MergeSettings {
            quantized_dtype: GgmlDType::Q8_0,
        }
    }
}

impl From<graft_core::MergedType> for MergeSettings {
    fn from(t: graft_core::MergedType) -> MergeSettings {
        MergeSettings {
            quantized_dtype: match t {
                graft_core::MergedType::Q8_0 => GgmlDType::Q8_0,
                graft_core::MergedType::F16 => GgmlDType::F16,
                graft_core::MergedType::F32 => GgmlDType::F32,
            },
        }
    }
}

/// Checks that every weight the adapter changes exists in `base` with matching shapes.
pub fn check(base: &BaseGguf, adapter: &Adapter) -> Result<(), AdapterError> {
    let invalid = |message: String| AdapterError::Invalid {
        name: adapter.name.clone(),
        message,
    };
    if !SUPPORTED_ARCHITECTURES.contains(&base.architecture.as_str()) {
        return Err(invalid(format!(
            "the base model's architecture `{}` is not supported for merging ({})",
            base.architecture,
            SUPPORTED_ARCHITECTURES.join(", ")
        )));
    }
    for ((layer, projection), pair) in &adapter.pairs {
        let name = gguf_tensor_name(*layer, projection).unwrap_or_default();
        let Some((out, inp)) = base.shape(&name) else {
            return Err(invalid(format!(
                "layer {layer} {projection}: the base model has no tensor {name} (wrong base model?)"
            )));
        };
        let (a_in, b_out) = (pair.a.dims()[1], pair.b.dims()[0]);
        if a_in != inp || b_out != out {
            return Err(invalid(format!(
                "layer {layer} {projection}: the adapter is [{b_out} x {a_in}] but the base weight {name} is [{out} x {inp}] (wrong base model?)"
            )));
        }
    }
    Ok(())
}

/// What a merge did.
#[derive(Debug, Clone, Default)]
pub struct MergeReport {
    /// Tensors changed by the adapter.
    pub merged: usize,
    /// Tensors copied unchanged.
    pub copied: usize,
}

/// Writes `base` with `adapter` merged in to `out` (through a temporary file beside it, renamed
/// when complete).
pub fn merge(base: &BaseGguf, adapter: &Adapter, settings: &MergeSettings, out: &Path) -> Result<MergeReport, MergeError> {
    check(base, adapter)?;
    let src = &base.path;
    let targets: HashMap<String, (&str, &crate::adapter::LoraPair)> = adapter
        .pairs
        .iter()
        .filter_map(|((layer, projection), pair)| Some((gguf_tensor_name(*layer, projection)?, (projection.as_str(), pair))))
        .collect();
    let scale = adapter.scale();
    let mut report = MergeReport::default();
    let extra = vec![
        ("graft.lora.adapter".to_owned(), Value::String(adapter.name.clone())),
        ("graft.lora.scale".to_owned(), Value::F64(scale)),
    ];
    rewrite(base, out, extra, |name, tensor| {
        // A delta of exact zeros changes nothing: those bytes stay as they were too
        // (re-quantizing would not be exact).
        let target = match targets.get(name) {
            Some(t) if !is_all_zero(&t.1.b).map_err(|e| gguf_err(src, &e))? => Some(t),
            _ => None,
        };
        let Some((projection, pair)) = target else {
            report.copied += 1;
            return Ok(tensor);
        };
        report.merged += 1;
        let merged = merged_weight(&tensor, pair, scale, base.permutation(projection))
            .map_err(|e| gguf_err(src, &format!("merging {name}: {e}")))?;
        let dtype = storage_dtype(tensor.dtype(), settings, merged.dims());
        QTensor::quantize(&merged, dtype).map_err(|e| gguf_err(src, &format!("storing {name}: {e}")))
    })?;
    Ok(report)
}

/// Writes every tensor of `base`, in its original order and passed through `transform`, with
/// `base`'s metadata plus `extra`, to `out` (through [`temporary_beside`] it, renamed when complete).
pub(crate) fn rewrite(
    base: &BaseGguf,
    out: &Path,
    extra: Vec<(String, Value)>,
    mut transform: impl FnMut(&str, QTensor) -> Result<QTensor, MergeError>,
) -> Result<(), MergeError> {
    let src = &base.path;
    let mut reader = BufReader::new(File::open(src).map_err(|e| gguf_err(src, &e))?);
    let mut names: Vec<(&String, u64)> = base.content().tensor_infos.iter().map(|(n, i)| (n, i.offset)).collect();
    names.sort_by_key(|(_, offset)| *offset);
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    for (name, _) in names {
        let tensor = base
            .content()
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| gguf_err(src, &format!("tensor {name}: {e}")))?;
        tensors.push((name.clone(), transform(name, tensor)?));
    }

    let mut metadata: Vec<(String, Value)> = base
        .content()
        .metadata
        .iter()
        // The writer aligns to 32 bytes; a different alignment key would mislead readers.
        .filter(|(k, _)| k.as_str() != "general.alignment")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    metadata.extend(extra);

    let tmp = temporary_beside(out);
    let result = (|| -> candle_core::Result<()> {
        let mut writer = BufWriter::new(File::create(&tmp)?);
        let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        gguf_file::write(&mut writer, &meta, &refs)?;
        writer.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(gguf_err(out, &e));
    }
    std::fs::rename(&tmp, out).map_err(|e| gguf_err(out, &e))
}

/// A name beside `path` for writing it in full before a rename: `<path>.<pid>-<n>.tmp`, its own
/// for each writer (process and call), so two writing the same file never share one.
pub(crate) fn temporary_beside(path: &Path) -> PathBuf {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}-{n}.tmp", std::process::id()));
    path.with_file_name(name)
}

fn gguf_err(path: &Path, e: &dyn std::fmt::Display) -> MergeError {
    MergeError::Gguf {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn is_all_zero(t: &Tensor) -> candle_core::Result<bool> {
    Ok(t.abs()?.max_all()?.to_scalar::<f32>()? == 0.0)
}

/// `dequant(base) + scale * permute(B @ A)`, as f32 `[out, in]`.
fn merged_weight(base: &QTensor, pair: &crate::adapter::LoraPair, scale: f64, permute_heads: Option<usize>) -> candle_core::Result<Tensor> {
    let weight = base.dequantize(&Device::Cpu)?;
    let mut delta = pair.b.matmul(&pair.a)?.affine(scale, 0.0)?;
    if let Some(heads) = permute_heads {
        delta = permute_rows(&delta, heads)?;
    }
    weight.add(&delta)
}

/// The type a merged tensor is stored at.
fn storage_dtype(base: GgmlDType, settings: &MergeSettings, dims: &[usize]) -> GgmlDType {
    match base {
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => base,
        _ => {
            let row = dims.last().copied().unwrap_or(0);
            if row % settings.quantized_dtype.block_size() == 0 {
                settings.quantized_dtype
            } else {
                GgmlDType::F16
            }
        }
    }
}
