//! A base model re-stored for CPU speed.
//!
//! candle 0.10.2, which mistralrs 0.8.1 computes with, has SIMD (AVX/NEON) dot products for
//! Q4_0, Q8_0 and the K-quants, but not for Q4_1, Q5_0 and Q5_1: those run a scalar loop (with
//! SmolLM2-135M Q4_1, 38% of a long prompt's time). Stored as Q8_0 instead, the same weights
//! use the fast kernel; the cost is Q8_0's rounding (under 1% of each block's largest weight)
//! and about 1.7 times the bytes for those tensors. Other tensors are copied as they are.
//!
//! This module decides which tensors to convert and writes the file; the cache
//! ([`crate::cache::MergeCache::get_or_requantize`]) keeps the result.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use crate::merge::{rewrite, BaseGguf, MergeError};

/// Types candle has only a scalar CPU kernel for.
pub const SLOW_ON_CPU: [GgmlDType; 3] = [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1];

/// The type they are stored as instead.
pub const TARGET: GgmlDType = GgmlDType::Q8_0;

/// Names of the tensors of `base` that [`requantize`] converts.
pub fn slow_tensors(base: &BaseGguf) -> Vec<String> {
    base.dtypes()
        .filter(|(_, dtype)| SLOW_ON_CPU.contains(dtype))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Writes `base` to `out` with every [`SLOW_ON_CPU`] tensor stored as [`TARGET`]; returns
/// how many were converted.
pub fn requantize(base: &BaseGguf, out: &Path) -> Result<usize, MergeError> {
    let mut converted = 0;
    let extra = vec![("graft.requantized".to_owned(), Value::String(format!("{TARGET:?}")))];
    rewrite(base, out, extra, |name, tensor| {
        let row = tensor.shape().dims().last().copied().unwrap_or(0);
        if !SLOW_ON_CPU.contains(&tensor.dtype()) || row % TARGET.block_size() != 0 {
            return Ok(tensor);
        }
        converted += 1;
        let storing = |e: candle_core::Error| MergeError::Gguf {
            path: base.path.clone(),
            message: format!("re-storing {name} as {TARGET:?}: {e}"),
        };
        let weights = tensor.dequantize(&Device::Cpu).map_err(storing)?;
        QTensor::quantize(&weights, TARGET).map_err(storing)
    })?;
    Ok(converted)
}
