//! The vector store on a Qdrant server or cluster, through qdrant-client (gRPC), for teams that
//! already run Qdrant. One collection per project, named `<prefix><project>`.
//!
//! qdrant-client is async; [`VectorStore`] is not. Each call runs on a small runtime owned by
//! the store and the caller waits on a channel, so the store works from any thread, including
//! a tokio worker's blocking section, without nesting runtimes.

use std::collections::HashSet;
use std::future::Future;

use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::{
    CreateCollectionBuilder, DeletePointsBuilder, Distance, PointId, PointStruct, PointsIdsList, QueryPointsBuilder, ScrollPointsBuilder,
    UpsertPointsBuilder, VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant};

use super::{VectorStore, SCROLL_PAGE};
use crate::error::IndexError;
use crate::fusion::Ranked;

/// How long one request may take: creating a collection on a cluster waits for its consensus
/// and its replicas, and a batch of vectors for every copy to apply it (qdrant-client's
/// default, 5 s, timed out on a loaded 3-node cluster).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// gRPC URL, like `http://localhost:6334`.
    pub url: String,
    pub api_key: Option<String>,
    /// Collections are named `<prefix><project>`.
    pub collection_prefix: String,
    /// Shards of a new collection (Qdrant's default when `None`).
    pub shards: Option<u32>,
    /// Copies of each shard of a new collection on a cluster (Qdrant's default when `None`).
    pub replication_factor: Option<u32>,
}

/// A project's collection on a Qdrant server.
pub struct ServerStore {
    client: Qdrant,
    url: String,
    collection: String,
    runtime: tokio::runtime::Runtime,
}

impl ServerStore {
    /// Connects, and creates the collection (cosine, `dims`, the configured shards and
    /// replicas) if it does not exist.
    pub fn open(config: &ServerConfig, project: &str, dims: usize) -> Result<ServerStore, IndexError> {
        let store = ServerStore::connect(config, project)?;
        let (client, name) = (store.client.clone(), store.collection.clone());
        let mut create = CreateCollectionBuilder::new(&name).vectors_config(VectorParamsBuilder::new(dims as u64, Distance::Cosine));
        if let Some(shards) = config.shards {
            create = create.shard_number(shards);
        }
        if let Some(replicas) = config.replication_factor {
            create = create.replication_factor(replicas);
        }
        let version = store.run(async move {
            let version = client.health_check().await?.version;
            if !client.collection_exists(&name).await? {
                client.create_collection(create).await?;
            }
            Ok(version)
        })?;
        if !is_tested_version(&version) {
            tracing::warn!(
                "Qdrant at {url} is version {version}; graft is tested with {major}.{minor} and later {major}.x",
                url = config.url,
                major = TESTED_VERSION.0,
                minor = TESTED_VERSION.1,
            );
        }
        Ok(store)
    }

    /// Deletes the project's collection, if there is one (its vectors came from another
    /// embedding model).
    pub fn delete_collection(config: &ServerConfig, project: &str) -> Result<(), IndexError> {
        let store = ServerStore::connect(config, project)?;
        let (client, name) = (store.client.clone(), store.collection.clone());
        store.run(async move {
            if client.collection_exists(&name).await? {
                client.delete_collection(&name).await?;
            }
            Ok(())
        })
    }

    fn connect(config: &ServerConfig, project: &str) -> Result<ServerStore, IndexError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| IndexError::Vectors(format!("cannot start the Qdrant client's runtime: {e}")))?;
        // qdrant-client's own version check prints to stdout (where `--json` output goes) and
        // refuses nothing; graft checks the server's version itself in `open`.
        let client = Qdrant::from_url(&config.url)
            .api_key(config.api_key.clone())
            .timeout(REQUEST_TIMEOUT)
            .skip_compatibility_check()
            .build()
            .map_err(|e| IndexError::Vectors(format!("Qdrant at {}: {e}", config.url)))?;
        Ok(ServerStore {
            client,
            url: config.url.clone(),
            collection: format!("{}{project}", config.collection_prefix),
            runtime,
        })
    }

    /// Runs a client call on the store's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, qdrant_client::QdrantError>> + Send + 'static,
    ) -> Result<T, IndexError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(call.await);
        });
        rx.recv()
            .map_err(|_| IndexError::Vectors("the Qdrant client stopped".into()))?
            .map_err(|e| IndexError::Vectors(format!("Qdrant at {}, collection {}: {}", self.url, self.collection, reason(&e))))
    }
}

/// What went wrong, for a person: the server's own message for an error it answered (not the
/// gRPC metadata qdrant-client's text appends), and a plain line when it could not be reached.
fn reason(error: &qdrant_client::QdrantError) -> String {
    match error {
        qdrant_client::QdrantError::ResponseError { status } => {
            let message = status.message();
            if message.starts_with("Failed to connect") {
                let refused = if message.contains("Connection refused") {
                    " (connection refused)"
                } else {
                    ""
                };
                format!("cannot connect{refused}: is the server running, and is the URL its gRPC port (usually 6334)?")
            } else {
                format!("{message} ({:?})", status.code())
            }
        }
        other => other.to_string(),
    }
}

/// The oldest Qdrant server version graft's tests run against (`../shared/tools/qdrant`):
/// major, minor.
const TESTED_VERSION: (u32, u32) = (1, 18);

/// Whether a server's version (`1.18.3`) is the tested major version, from its minor on.
fn is_tested_version(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    matches!((parts.next(), parts.next()), (Some(Some(major)), Some(Some(minor)))
        if major == TESTED_VERSION.0 && minor >= TESTED_VERSION.1)
}

fn num_id(id: &PointId) -> Option<u64> {
    match id.point_id_options {
        Some(PointIdOptions::Num(n)) => Some(n),
        _ => None,
    }
}

impl VectorStore for ServerStore {
    fn upsert(&self, points: &[(u64, Vec<f32>)]) -> Result<(), IndexError> {
        if points.is_empty() {
            return Ok(());
        }
        let points: Vec<PointStruct> = points
            .iter()
            .map(|(id, v)| PointStruct::new(*id, v.clone(), Payload::new()))
            .collect();
        let (client, name) = (self.client.clone(), self.collection.clone());
        self.run(async move { client.upsert_points(UpsertPointsBuilder::new(name, points).wait(true)).await })
            .map(|_| ())
    }

    fn delete(&self, ids: &[u64]) -> Result<(), IndexError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<PointId> = ids.iter().map(|&id| PointId::from(id)).collect();
        let (client, name) = (self.client.clone(), self.collection.clone());
        self.run(async move {
            client
                .delete_points(DeletePointsBuilder::new(name).points(PointsIdsList { ids }).wait(true))
                .await
        })
        .map(|_| ())
    }

    fn ids(&self) -> Result<HashSet<u64>, IndexError> {
        let mut ids = HashSet::new();
        let mut offset: Option<PointId> = None;
        loop {
            let (client, name) = (self.client.clone(), self.collection.clone());
            let page_offset = offset.take();
            let page = self.run(async move {
                let mut request = ScrollPointsBuilder::new(name)
                    .limit(SCROLL_PAGE as u32)
                    .with_payload(false)
                    .with_vectors(false);
                if let Some(o) = page_offset {
                    request = request.offset(o);
                }
                client.scroll(request).await
            })?;
            ids.extend(page.result.iter().filter_map(|p| p.id.as_ref().and_then(num_id)));
            match page.next_page_offset {
                Some(next) => offset = Some(next),
                None => return Ok(ids),
            }
        }
    }

    fn search(&self, vector: &[f32], limit: usize) -> Result<Vec<Ranked>, IndexError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (client, name, vector) = (self.client.clone(), self.collection.clone(), vector.to_vec());
        let response = self.run(async move {
            client
                .query(QueryPointsBuilder::new(name).query(vector).limit(limit as u64).with_payload(false))
                .await
        })?;
        Ok(response
            .result
            .iter()
            .filter_map(|p| p.id.as_ref().and_then(num_id).map(|id| Ranked { id, score: p.score }))
            .collect())
    }

    fn flush(&self) -> Result<(), IndexError> {
        // Every write above waits for the server to apply it.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_from_the_tested_one_on_pass() {
        assert!(is_tested_version("1.18.3"));
        assert!(is_tested_version("1.20.0"));
        assert!(!is_tested_version("1.17.9"));
        assert!(!is_tested_version("2.0.0"));
        assert!(!is_tested_version("dev"));
    }
}
