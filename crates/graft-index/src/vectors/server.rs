//! The vector store on a Qdrant server or cluster, for teams that already run Qdrant: one
//! collection per project, `<prefix><project>`, holding each chunk's embedding under the
//! chunk's id and nothing else (the chunks themselves are the catalog's: on a server,
//! [`crate::catalog::qdrant`]). The connection is [`crate::qdrant`]'s.

use std::collections::HashSet;

use qdrant_client::qdrant::{
    CreateCollectionBuilder, DeletePointsBuilder, Distance, PointId, PointStruct, PointsIdsList, QueryPointsBuilder, UpsertPointsBuilder,
    VectorParamsBuilder,
};
use qdrant_client::Payload;

use super::VectorStore;
use crate::error::IndexError;
use crate::fusion::Ranked;
use crate::qdrant::{num_id, Connection, ServerConfig};

/// A project's collection on a Qdrant server.
pub struct ServerStore {
    connection: Connection,
}

impl ServerStore {
    /// Connects, and creates the collection (cosine, `dims`, the configured shards and
    /// replicas) if it does not exist.
    pub fn open(config: &ServerConfig, project: &str, dims: usize) -> Result<ServerStore, IndexError> {
        let connection = Connection::new(config, collection(config, project))?;
        connection.check_version()?;
        let (client, name) = (connection.client.clone(), connection.collection.clone());
        let create =
            config.spread(CreateCollectionBuilder::new(&name).vectors_config(VectorParamsBuilder::new(dims as u64, Distance::Cosine)));
        connection.run(async move {
            if !client.collection_exists(&name).await? {
                client.create_collection(create).await?;
            }
            Ok(())
        })?;
        Ok(ServerStore { connection })
    }

    /// Deletes the project's collection, if there is one (its vectors came from another
    /// embedding model).
    pub fn delete_collection(config: &ServerConfig, project: &str) -> Result<(), IndexError> {
        Connection::new(config, collection(config, project))?.delete_collection()
    }
}

fn collection(config: &ServerConfig, project: &str) -> String {
    format!("{}{project}", config.collection_prefix)
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
        let (client, name) = (self.connection.client.clone(), self.connection.collection.clone());
        self.connection
            .run(async move { client.upsert_points(UpsertPointsBuilder::new(name, points).wait(true)).await })
            .map(|_| ())
    }

    fn delete(&self, ids: &[u64]) -> Result<(), IndexError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<PointId> = ids.iter().map(|&id| PointId::from(id)).collect();
        let (client, name) = (self.connection.client.clone(), self.connection.collection.clone());
        self.connection
            .run(async move {
                client
                    .delete_points(DeletePointsBuilder::new(name).points(PointsIdsList { ids }).wait(true))
                    .await
            })
            .map(|_| ())
    }

    fn ids(&self) -> Result<HashSet<u64>, IndexError> {
        Ok(self
            .connection
            .scroll(None, &[], None)?
            .iter()
            .filter_map(|p| num_id(p.id.as_ref()))
            .collect())
    }

    fn search(&self, vector: &[f32], limit: usize) -> Result<Vec<Ranked>, IndexError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (client, name, vector) = (self.connection.client.clone(), self.connection.collection.clone(), vector.to_vec());
        let response = self.connection.run(async move {
            client
                .query(QueryPointsBuilder::new(name).query(vector).limit(limit as u64).with_payload(false))
                .await
        })?;
        Ok(response
            .result
            .iter()
            .filter_map(|p| num_id(p.id.as_ref()).map(|id| Ranked { id, score: p.score }))
            .collect())
    }

    fn flush(&self) -> Result<(), IndexError> {
        // Every write above waits for the server to apply it.
        Ok(())
    }
}
