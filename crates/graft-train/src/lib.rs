//! graft-train: LoRA adapters trained against exactly the weights graft serves.
//!
//! - [`lora`]: a low-rank adapter on one frozen projection (rank, alpha, rsLoRA, B from zero).
//! - [`model`]: the base model's forward pass (llama and qwen2) from its GGUF file, dequantized,
//!   with adapters on the chosen projections, built only from candle ops that have a backward
//!   pass; the loss only where a token is a target.
//!   A training step keeps one layer's graph at a time (activation checkpointing), and on a
//!   CPU each layer's frozen products from its first run for its second.
//! - [`frozen`]: the product with a frozen weight, whose backward gives the input's gradient
//!   only (no weight-sized gradient per projection); a known one is taken as it is.
//! - [`fused`]: the model's steps between its frozen products (causal attention, RMS norm,
//!   rotary embeddings, the MLP's gate, the loss) as single ops with their own backward passes.
//! - [`optim`]: AdamW with its moments in the open.
//! - [`peft`]: the adapters written as a PEFT folder (Hugging Face names and row order).
//! - [`train`]: the loop (warmup and cosine decay, accumulation, clipping, validation with the
//!   best adapters kept, early stopping, a time budget, a stop flag).
//! - [`checkpoint`]: a run's whole state on disk, which a later run resumes exactly.
//! - [`staged`]: folders (adapters, checkpoints) written whole, beside and renamed.
//! - [`threads`]: the training's main thread made one of rayon's pool, so it computes too.
//!
//! This crate uses candle, never mistralrs: editing it does not rebuild the engine.

pub mod checkpoint;
pub mod frozen;
pub mod fused;
pub mod lora;
pub mod model;
pub mod optim;
pub mod peft;
pub mod staged;
pub mod threads;
pub mod train;

pub use candle_core::{DType, Device};
pub use lora::{Lora, LoraSettings};
pub use model::{Model, ModelError};
