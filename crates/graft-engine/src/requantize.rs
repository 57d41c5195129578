//! A base model re-stored for CPU speed.
//!
//! candle 0.10.2, which mistralrs 0.8.1 computes with, has SIMD (AVX/NEON) dot products for
//! Q4_0, Q8_0 and the K-quants, but not for Q4_1, Q5_0 and Q5_1: those run a scalar loop (with
//! SmolLM2-135M Q4_1, 38% of a long prompt's time). Two ways out, by what the work needs:
//!
//! - [`Restore::Q8_0`]: those tensors stored as Q8_0 use the fast dot product; the cost is
//!   Q8_0's rounding (under 1% of each block's largest weight) and about 1.7 times the bytes
//!   for those tensors. Best decoding speed.
//! - [`Restore::F16`]: every quantized matrix stored as F16, which candle multiplies with a
//!   GEMM kernel that reads a long prompt far faster than the quantized dot products, while
//!   decoding (one token at a time, bound by memory) gets slower. Exact to F16's precision.
//!
//! Other tensors are copied as they are. This module decides which tensors to convert and
//! writes the file; the cache ([`crate::cache::MergeCache::get_or_requantize`]) keeps it.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use crate::merge::{rewrite, BaseGguf, MergeError};

/// Types candle has only a scalar CPU kernel for.
pub const SLOW_ON_CPU: [GgmlDType; 3] = [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1];

/// Which tensors are re-stored, and as what (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// [`SLOW_ON_CPU`] tensors as Q8_0.
    Q8_0,
    /// Every quantized tensor as F16.
    F16,
}

impl Restore {
    /// The type converted tensors are stored as.
    pub fn target(self) -> GgmlDType {
        match self {
            Restore::Q8_0 => GgmlDType::Q8_0,
            Restore::F16 => GgmlDType::F16,
        }
    }

    /// Whether a tensor of `dtype` whose rows hold `row` values is converted.
    fn converts(self, dtype: GgmlDType, row: usize) -> bool {
        match self {
            Restore::Q8_0 => SLOW_ON_CPU.contains(&dtype) && row.is_multiple_of(GgmlDType::Q8_0.block_size()),
            Restore::F16 => !matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16),
        }
    }
}

/// Names of the tensors of `base` that [`requantize`] converts with `restore`.
pub fn tensors_to_convert(base: &BaseGguf, restore: Restore) -> Vec<String> {
    base.tensor_infos()
        .filter(|(_, dtype, row)| restore.converts(*dtype, *row))
        .map(|(name, _, _)| name.to_owned())
        .collect()
}

/// Writes `base` to `out` with the tensors `restore` names stored as its target type; returns
/// how many were converted.
pub fn requantize(base: &BaseGguf, out: &Path, restore: Restore) -> Result<usize, MergeError> {
    let target = restore.target();
    let mut converted = 0;
    let extra = vec![("graft.requantized".to_owned(), Value::String(format!("{target:?}")))];
    rewrite(base, out, extra, |name, tensor| {
        let row = tensor.shape().dims().last().copied().unwrap_or(0);
        if !restore.converts(tensor.dtype(), row) {
            return Ok(tensor);
        }
        converted += 1;
        let storing = |e: candle_core::Error| MergeError::Gguf {
            path: base.path.clone(),
            message: format!("re-storing {name} as {target:?}: {e}"),
        };
        let weights = tensor.dequantize(&Device::Cpu).map_err(storing)?;
        QTensor::quantize(&weights, target).map_err(storing)
    })?;
    Ok(converted)
}
