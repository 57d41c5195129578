//! graft-core: what every other graft crate shares.
//!
//! - [`config`]: the one typed configuration, loaded once and validated.
//! - [`keys`]: API keys and the projects each may use.
//!
//! This crate holds descriptions and shared types only: no models, no I/O beyond reading the
//! config file, no network.

pub mod config;
pub mod keys;

pub use config::{Config, ConfigError, CpuWeights, Device, EmbeddingModel, MergedType, ModelSource, ProjectConfig, PromptFormatChoice};
