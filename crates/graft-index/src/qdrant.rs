//! A connection to a Qdrant server or cluster (qdrant-client over gRPC), shared by the vector
//! store ([`crate::vectors::server`]) and the catalog kept on a server
//! ([`crate::catalog::qdrant`]): how to reach it, the client, the small runtime its calls run
//! on, the server's version checked, and errors that name the server and the collection.
//! What is stored where is the callers' business.
//!
//! qdrant-client is async; graft's stores are not. Each call runs on the connection's runtime
//! and the caller waits on a channel, so it works from any thread, including a tokio worker's
//! blocking section, without nesting runtimes.

use std::future::Future;

use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::with_payload_selector::SelectorOptions;
use qdrant_client::qdrant::{CreateCollectionBuilder, Filter, PayloadIncludeSelector, PointId, RetrievedPoint, ScrollPointsBuilder};
use qdrant_client::Qdrant;

use crate::error::IndexError;
use crate::vectors::SCROLL_PAGE;

/// How long one request may take: creating a collection on a cluster waits for its consensus
/// and its replicas, and a batch of points for every copy to apply it (qdrant-client's
/// default, 5 s, timed out on a loaded 3-node cluster).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// gRPC URL, like `http://localhost:6334`.
    pub url: String,
    pub api_key: Option<String>,
    /// Collections are named `<prefix><project>` (vectors) and `<prefix><project>~catalog`.
    pub collection_prefix: String,
    /// Shards of a new collection (Qdrant's default when `None`).
    pub shards: Option<u32>,
    /// Copies of each shard of a new collection on a cluster (Qdrant's default when `None`).
    pub replication_factor: Option<u32>,
}

impl ServerConfig {
    /// `request` with the configured shards and copies (Qdrant's defaults where unset).
    pub(crate) fn spread(&self, mut request: CreateCollectionBuilder) -> CreateCollectionBuilder {
        if let Some(shards) = self.shards {
            request = request.shard_number(shards);
        }
        if let Some(replicas) = self.replication_factor {
            request = request.replication_factor(replicas);
        }
        request
    }
}

/// A client of one server, for one collection.
pub(crate) struct Connection {
    pub(crate) client: Qdrant,
    pub(crate) collection: String,
    url: String,
    /// The client's own runtime: its callers are blocking code, some of it run from inside the
    /// server's runtime. `None` once dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

/// A call [`Connection::start`]ed and not yet [`Connection::finish`]ed. Dropped, the call still
/// runs to its end; its answer is not read.
pub(crate) struct Pending<T>(std::sync::mpsc::Receiver<Result<T, qdrant_client::QdrantError>>);

impl Drop for Connection {
    /// Lets the runtime's thread go without waiting for it: tokio refuses to wait inside
    /// another runtime, where `graft up` opens and drops catalogs (it panicked there).
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Connection {
    /// A client for `collection` (nothing is sent yet).
    pub(crate) fn new(config: &ServerConfig, collection: String) -> Result<Connection, IndexError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| IndexError::Qdrant(format!("cannot start the Qdrant client's runtime: {e}")))?;
        // qdrant-client's own version check prints to stdout (where `--json` output goes) and
        // refuses nothing; graft checks the server's version itself in `check_version`.
        let client = Qdrant::from_url(&config.url)
            .api_key(config.api_key.clone())
            .timeout(REQUEST_TIMEOUT)
            .skip_compatibility_check()
            .build()
            .map_err(|e| IndexError::Qdrant(format!("Qdrant at {}: {e}", config.url)))?;
        Ok(Connection {
            client,
            collection,
            url: config.url.clone(),
            runtime: Some(runtime),
        })
    }

    /// Runs a client call on the connection's runtime and waits for it.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, qdrant_client::QdrantError>> + Send + 'static,
    ) -> Result<T, IndexError> {
        self.finish(self.start(call)?)
    }

    /// Starts a client call on the connection's runtime without waiting for it: several
    /// started calls are in flight at once, and [`Connection::finish`] waits for one.
    pub(crate) fn start<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, qdrant_client::QdrantError>> + Send + 'static,
    ) -> Result<Pending<T>, IndexError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| IndexError::Qdrant("the Qdrant client stopped".into()))?;
        runtime.spawn(async move {
            let _ = tx.send(call.await);
        });
        Ok(Pending(rx))
    }

    /// Waits for a started call's answer.
    pub(crate) fn finish<T>(&self, pending: Pending<T>) -> Result<T, IndexError> {
        pending
            .0
            .recv()
            .map_err(|_| IndexError::Qdrant("the Qdrant client stopped".into()))?
            .map_err(|e| IndexError::Qdrant(format!("Qdrant at {}, collection {}: {}", self.url, self.collection, reason(&e))))
    }

    /// Every point `filter` matches (all, without one), at most `limit`, a page per request,
    /// with the payload fields `fields` (none when empty) and no vectors.
    pub(crate) fn scroll(&self, filter: Option<Filter>, fields: &[&str], limit: Option<usize>) -> Result<Vec<RetrievedPoint>, IndexError> {
        let mut out = Vec::new();
        let mut offset: Option<PointId> = None;
        let fields: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        loop {
            let page_size = limit.map_or(SCROLL_PAGE, |l| (l - out.len()).min(SCROLL_PAGE)) as u32;
            let (client, name) = (self.client.clone(), self.collection.clone());
            let (filter, fields, page_offset) = (filter.clone(), fields.clone(), offset.take());
            let page = self.run(async move {
                let payload = if fields.is_empty() {
                    SelectorOptions::Enable(false)
                } else {
                    SelectorOptions::from(PayloadIncludeSelector { fields })
                };
                let mut request = ScrollPointsBuilder::new(name)
                    .limit(page_size)
                    .with_payload(payload)
                    .with_vectors(false);
                if let Some(filter) = filter {
                    request = request.filter(filter);
                }
                if let Some(o) = page_offset {
                    request = request.offset(o);
                }
                client.scroll(request).await
            })?;
            out.extend(page.result);
            match page.next_page_offset {
                Some(next) if limit.is_none_or(|l| out.len() < l) => offset = Some(next),
                _ => return Ok(out),
            }
        }
    }

    /// Whether the collection exists.
    pub(crate) fn exists(&self) -> Result<bool, IndexError> {
        let (client, name) = (self.client.clone(), self.collection.clone());
        self.run(async move { client.collection_exists(&name).await })
    }

    /// Deletes the collection, if there is one.
    pub(crate) fn delete_collection(&self) -> Result<(), IndexError> {
        let (client, name) = (self.client.clone(), self.collection.clone());
        self.run(async move {
            if client.collection_exists(&name).await? {
                client.delete_collection(&name).await?;
            }
            Ok(())
        })
    }

    /// Asks the server's version and warns (it refuses nothing) when graft was not tested
    /// with it.
    pub(crate) fn check_version(&self) -> Result<(), IndexError> {
        let client = self.client.clone();
        let version = self.run(async move { Ok(client.health_check().await?.version) })?;
        if !is_tested_version(&version) {
            tracing::warn!(
                "Qdrant at {url} is version {version}; graft is tested with {major}.{minor} and later {major}.x",
                url = self.url,
                major = TESTED_VERSION.0,
                minor = TESTED_VERSION.1,
            );
        }
        Ok(())
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

/// A numeric point id (graft writes no others).
pub(crate) fn num_id(id: Option<&PointId>) -> Option<u64> {
    match id?.point_id_options {
        Some(PointIdOptions::Num(n)) => Some(n),
        _ => None,
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
