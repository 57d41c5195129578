//! graft-core: what every other graft crate shares.
//!
//! - [`config`]: the one typed configuration, loaded once and validated.
//! - [`keys`]: API keys and the projects each may use.
//! - [`reload`]: what reading the config file again changes in a running server.
//! - [`confine`]: reading a file that must lie inside given folders (no link out, no FIFO).
//! - [`cpu`]: whether this processor runs the instructions graft was compiled with.
//! - [`cuda`]: whether the CUDA libraries a GPU build opens at run time are on this machine.
//! - [`split`]: a repository's held-out files, the one split the evaluation's golden set and
//!   the dataset for training both obey; [`random`]: the seeded choices behind it.
//! - [`remote`]: a repository's git remotes, and remote URLs compared as one repository's.
//! - [`memory`]: the memory a finished piece of work freed given back to the system.
//!
//! This crate holds descriptions and shared types only: no models, no network, no I/O beyond
//! reading the config file, [`confine`]'s guarded reads, and the split file (and `git` for a
//! split by commit, and for a repository's remotes); [`cuda`] opens libraries by name without
//! using them.

pub mod config;
pub mod confine;
pub mod cpu;
pub mod cuda;
pub mod keys;
pub mod memory;
pub mod random;
pub mod reload;
pub mod remote;
pub mod split;

pub use config::{
    is_valid_name, Config, ConfigError, CpuWeights, DatasetConfig, Device, EmbeddingModel, MergedType, ModelSource, ProjectConfig,
    PromptFormatChoice, SecretAction,
};
