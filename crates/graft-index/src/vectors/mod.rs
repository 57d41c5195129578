//! Where chunk embeddings live: one [`VectorStore`] trait, two backends.
//!
//! - [`edge::EdgeStore`] (default): Qdrant Edge, embedded, on disk in the project's index folder.
//! - [`server::ServerStore`]: a Qdrant server or cluster through qdrant-client, when the config
//!   gives a URL.
//!
//! A store holds vectors keyed by chunk id and nothing else: which chunks are current is the
//! catalog's business. A store may hold vectors of chunks the catalog no longer has (an
//! interrupted run); searches drop those, and the next run deletes them.

pub mod edge;
pub mod server;

use std::collections::HashSet;

use crate::error::IndexError;
use crate::fusion::Ranked;

pub use crate::qdrant::ServerConfig;
pub use edge::EdgeStore;
pub use server::ServerStore;

/// Points per page when listing ids (and reading many points from a Qdrant server).
pub(crate) const SCROLL_PAGE: usize = 10_000;

/// Storage and nearest-neighbour search of chunk embeddings (cosine similarity).
pub trait VectorStore: Send + Sync {
    /// Inserts or replaces vectors.
    fn upsert(&self, points: &[(u64, Vec<f32>)]) -> Result<(), IndexError>;
    /// Removes vectors; unknown ids are ignored.
    fn delete(&self, ids: &[u64]) -> Result<(), IndexError>;
    /// Every stored id.
    fn ids(&self) -> Result<HashSet<u64>, IndexError>;
    /// The `limit` nearest vectors, best first.
    fn search(&self, vector: &[f32], limit: usize) -> Result<Vec<Ranked>, IndexError>;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), IndexError>;
}
/// Which backend an index uses.
#[derive(Debug, Clone, Default)]
pub enum Backend {
    /// Qdrant Edge in `<index>/vectors/`.
    #[default]
    Embedded,
    /// A Qdrant server; the collection is named after the project.
    Server(ServerConfig),
}

/// Opens the store of a project's index with the chosen backend.
pub fn open(
    backend: &Backend,
    layout: &crate::layout::IndexLayout,
    project: &str,
    dims: usize,
) -> Result<Box<dyn VectorStore>, IndexError> {
    Ok(match backend {
        Backend::Embedded => Box::new(EdgeStore::open(&layout.vectors(), dims)?),
        Backend::Server(config) => Box::new(ServerStore::open(config, project, dims)?),
    })
}

/// Removes every vector of a project's index: the embedded store's folder, or the collection
/// on the server (used when the embedding model changes, so the dimensions may too).
pub fn reset(backend: &Backend, layout: &crate::layout::IndexLayout, project: &str) -> Result<(), IndexError> {
    match backend {
        Backend::Embedded => {
            let dir = layout.vectors();
            if dir.exists() {
                let _lock = edge::lock(&dir)?;
                std::fs::remove_dir_all(&dir).map_err(|e| IndexError::io(&dir, e))?;
            }
            Ok(())
        }
        Backend::Server(config) => ServerStore::delete_collection(config, project),
    }
}
