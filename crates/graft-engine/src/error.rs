//! Errors of the engine, split by who can fix them: the caller (a bad request) or the operator
//! (a model that does not load, an engine failure).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model file is not there; nothing was loaded.
    #[error("model file {} does not exist", path.display())]
    ModelMissing { path: PathBuf },
    /// The file is there but could not be loaded as a model.
    #[error("cannot load model {}: {message}", path.display())]
    Load { path: PathBuf, message: String },
    /// The configured device is not available in this build or on this machine.
    #[error("{0}")]
    Device(String),
    /// No model of that id is loaded in the engine.
    #[error("no such model loaded: {0}")]
    UnknownModel(String),
    /// The request cannot be served as asked (for example, a prompt longer than the context).
    #[error("{0}")]
    InvalidRequest(String),
    /// Generation failed inside the engine.
    #[error("generation failed: {0}")]
    Generation(String),
}
