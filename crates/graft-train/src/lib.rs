//! graft-train: LoRA adapters trained against exactly the weights graft serves.
//!
//! - [`lora`]: a low-rank adapter on one frozen projection (rank, alpha, rsLoRA, B from zero).
//! - [`model`]: the base model's forward pass (llama and qwen2) from its GGUF file, dequantized,
//!   with adapters on the chosen projections, built only from candle ops that have a backward
//!   pass; the loss only where a token is a target.
//! - [`peft`]: the adapters written as a PEFT folder (Hugging Face names and row order).
//! - [`train`]: the loop (AdamW, warmup and cosine decay, accumulation, clipping, validation
//!   with the best adapters kept, early stopping, a time budget, a stop flag).
//!
//! Still to come (issue 15): `graft train` (data from `graft dataset`, the report, resume) and
//! the frozen-weight matmul without a weight gradient. This crate uses candle, never
//! mistralrs: editing it does not rebuild the engine.

pub mod lora;
pub mod model;
pub mod peft;
pub mod train;

pub use candle_core::DType;
pub use lora::{Lora, LoraSettings};
pub use model::{Model, ModelError};
