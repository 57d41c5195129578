//! graft-core: what every other graft crate shares.
//!
//! - [`config`]: the one typed configuration, loaded once and validated.
//! - [`keys`]: API keys and the projects each may use.
//! - [`confine`]: reading a file that must lie inside given folders (no link out, no FIFO).
//!
//! This crate holds descriptions and shared types only: no models, no I/O beyond reading the
//! config file and [`confine`]'s guarded reads, no network.

pub mod config;
pub mod confine;
pub mod keys;

pub use config::{
    is_valid_name, Config, ConfigError, CpuWeights, Device, EmbeddingModel, MergedType, ModelSource, ProjectConfig, PromptFormatChoice,
};
