//! The default vector store: Qdrant Edge, an embedded, in-process Qdrant shard kept in the
//! project's index folder (`index/<project>/vectors/`).
//!
//! A shard is open in one place at a time: the store holds an exclusive lock on
//! `vectors.lock` beside the folder while open, so a second opener (a CLI run beside a
//! server) gets [`IndexError::InUse`] instead of Qdrant's own WAL-lock error.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use qdrant_edge::{
    Distance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder, PointId, PointInsertOperations, PointOperations, PointStruct,
    QueryEnum, ScrollRequest, SearchRequest, UpdateOperation, WithPayloadInterface, WithVector,
};

use super::{VectorStore, SCROLL_PAGE};
use crate::error::IndexError;
use crate::fusion::Ranked;

/// Qdrant Edge: an embedded, in-process Qdrant shard in a folder.
pub struct EdgeStore {
    shard: EdgeShard,
    /// The shard's folder, whose disk's free space each write checks first ([`crate::space`]).
    dir: PathBuf,
    /// Held while the shard is open; released on drop.
    _lock: File,
}

/// Takes the exclusive lock that guards the shard in `dir`.
pub(crate) fn lock(dir: &Path) -> Result<File, IndexError> {
    let path = dir.with_extension("lock");
    let file = File::create(&path).map_err(|e| IndexError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(IndexError::InUse { dir: dir.to_owned() }),
        Err(std::fs::TryLockError::Error(e)) => Err(IndexError::io(&path, e)),
    }
}

impl EdgeStore {
    /// Opens the shard in `dir`, or creates one for vectors of `dims` dimensions.
    pub fn open(dir: &Path, dims: usize) -> Result<EdgeStore, IndexError> {
        std::fs::create_dir_all(dir).map_err(|e| IndexError::io(dir, e))?;
        let lock = lock(dir)?;
        let config = EdgeConfigBuilder::new()
            .on_disk_payload(true)
            .vector(
                qdrant_edge::DEFAULT_VECTOR_NAME,
                EdgeVectorParamsBuilder::new(dims, Distance::Cosine).on_disk(true).build(),
            )
            .build();
        let has_data = dir.join("edge_config.json").exists();
        let shard = if has_data {
            EdgeShard::load(dir, Some(config))
        } else {
            EdgeShard::new(dir, config)
        }
        .map_err(IndexError::vectors)?;
        Ok(EdgeStore {
            shard,
            dir: dir.to_owned(),
            _lock: lock,
        })
    }
}

fn point_id(id: u64) -> PointId {
    PointId::NumId(id)
}

impl VectorStore for EdgeStore {
    fn upsert(&self, points: &[(u64, Vec<f32>)]) -> Result<(), IndexError> {
        if points.is_empty() {
            return Ok(());
        }
        crate::space::ensure_free(&self.dir)?;
        let points = points
            .iter()
            .map(|(id, vector)| PointStruct::new(point_id(*id), vector.as_slice(), serde_json::json!({})).into())
            .collect();
        self.shard
            .update(UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                PointInsertOperations::PointsList(points),
            )))
            .map_err(IndexError::vectors)
    }

    fn delete(&self, ids: &[u64]) -> Result<(), IndexError> {
        if ids.is_empty() {
            return Ok(());
        }
        crate::space::ensure_free(&self.dir)?;
        let ids = ids.iter().copied().map(point_id).collect();
        self.shard
            .update(UpdateOperation::PointOperation(PointOperations::DeletePoints { ids }))
            .map_err(IndexError::vectors)
    }

    fn ids(&self) -> Result<HashSet<u64>, IndexError> {
        let mut ids = HashSet::new();
        let mut offset = None;
        loop {
            let (records, next) = self
                .shard
                .scroll(ScrollRequest {
                    offset,
                    limit: Some(SCROLL_PAGE),
                    filter: None,
                    with_payload: Some(WithPayloadInterface::Bool(false)),
                    with_vector: WithVector::Bool(false),
                    order_by: None,
                })
                .map_err(IndexError::vectors)?;
            for record in records {
                if let PointId::NumId(id) = record.id {
                    ids.insert(id);
                }
            }
            match next {
                Some(n) => offset = Some(n),
                None => return Ok(ids),
            }
        }
    }

    fn search(&self, vector: &[f32], limit: usize) -> Result<Vec<Ranked>, IndexError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let hits = self
            .shard
            .search(SearchRequest {
                query: QueryEnum::from(vector.to_vec()),
                filter: None,
                params: None,
                limit,
                offset: 0,
                with_payload: Some(WithPayloadInterface::Bool(false)),
                with_vector: Some(WithVector::Bool(false)),
                score_threshold: None,
            })
            .map_err(IndexError::vectors)?;
        Ok(hits
            .into_iter()
            .filter_map(|hit| match hit.id {
                PointId::NumId(id) => Some(Ranked { id, score: hit.score }),
                PointId::Uuid(_) => None,
            })
            .collect())
    }

    fn flush(&self) -> Result<(), IndexError> {
        self.shard.flush();
        Ok(())
    }
}
