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

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// gRPC URL, like `http://localhost:6334`.
    pub url: String,
    pub api_key: Option<String>,
    /// Collections are named `<prefix><project>`.
    pub collection_prefix: String,
}

/// A project's collection on a Qdrant server.
pub struct ServerStore {
    client: Qdrant,
    collection: String,
    runtime: tokio::runtime::Runtime,
}

impl ServerStore {
    /// Connects, and creates the collection (cosine, `dims`) if it does not exist.
    pub fn open(config: &ServerConfig, project: &str, dims: usize) -> Result<ServerStore, IndexError> {
        let store = ServerStore::connect(config, project)?;
        let (client, name) = (store.client.clone(), store.collection.clone());
        store.run(async move {
            if !client.collection_exists(&name).await? {
                client
                    .create_collection(
                        CreateCollectionBuilder::new(&name).vectors_config(VectorParamsBuilder::new(dims as u64, Distance::Cosine)),
                    )
                    .await?;
            }
            Ok(())
        })?;
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
        let client = Qdrant::from_url(&config.url)
            .api_key(config.api_key.clone())
            .build()
            .map_err(|e| IndexError::Vectors(format!("Qdrant at {}: {e}", config.url)))?;
        Ok(ServerStore {
            client,
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
            .map_err(|e| IndexError::Vectors(format!("collection {}: {e}", self.collection)))
    }
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
