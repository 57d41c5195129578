//! Errors of indexing and search. Each names what failed and, where it helps, what to do.

use std::path::{Path, PathBuf};

use crate::walk::WalkError;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Walk(#[from] WalkError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("keyword index: {0}")]
    Catalog(String),
    #[error("vector store: {0}")]
    Vectors(String),
    /// A Qdrant server's answer or silence; the message names the server and collection.
    #[error("{0}")]
    Qdrant(String),
    #[error("embedding model: {0}")]
    Embedding(String),
    #[error("another `graft index` run is updating this index; wait for it to finish")]
    Busy,
    #[error(
        "another graft ({holder}) is indexing this project on the Qdrant server; wait for it to finish \
         (a killed run's claim lapses {minutes} minutes after its last sign of life)"
    )]
    Claimed { holder: String, minutes: u64 },
    #[error(
        "the index {} is open in another process, most likely a running graft server: search or \
         re-index it through that server (POST /v1/projects/<name>/search or /reindex), or stop it first",
        dir.display()
    )]
    InUse { dir: PathBuf },
    /// `place`: the index folder, or the Qdrant collection.
    #[error("no index for project `{project}` in {place}; run `graft index PATH --project {project}` first")]
    NoIndex { project: String, place: String },
    #[error(
        "the index of project `{project}` in {place} was built by an older graft; run `graft index PATH --project {project}` \
         (or `graft up`) to update it"
    )]
    Outdated { project: String, place: String },
    /// An index folder whose keyword index or vectors cannot be read (`why`); the next run
    /// rebuilds what cannot be read.
    #[error(
        "the index of project `{project}` in {place} cannot be read ({why}); run `graft index PATH --project {project}` \
         (or `graft up`) to rebuild it"
    )]
    Unreadable { project: String, place: String, why: String },
    /// The disk holding an index folder has less free than graft keeps ([`crate::space`]).
    #[error(
        "the disk holding {} has {free_mb} MB free, under the {min_mb} MB graft keeps free while it writes an index \
         (the vector store's memory-mapped files would crash graft when the disk fills): free some space and run again \
         (index.min_free_mb, or GRAFT_INDEX_MIN_FREE_MB, sets the margin)",
        dir.display()
    )]
    DiskFull { dir: PathBuf, free_mb: u64, min_mb: u64 },
    /// The run's [`crate::IndexProgress::should_stop`] said to stop (graft shutting down);
    /// the index is as a kill at that moment would leave it: searchable, and finished by the
    /// next run.
    #[error("the index run stopped before it was done (graft is shutting down); the next run finishes it")]
    Stopped,
    #[error("{0}")]
    Invalid(String),
}

impl IndexError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> IndexError {
        IndexError::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn catalog(e: impl std::fmt::Display) -> IndexError {
        IndexError::Catalog(e.to_string())
    }

    pub(crate) fn vectors(e: impl std::fmt::Display) -> IndexError {
        IndexError::Vectors(e.to_string())
    }
}
