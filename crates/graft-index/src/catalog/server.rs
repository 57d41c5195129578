//! The catalog on a Qdrant server or cluster, beside the project's vectors, so that graft
//! replicas with no index folder of their own serve the project, and a re-index by one is
//! seen by the others at their next search.
//!
//! One collection, `<prefix><project>~catalog`, with no dense vectors. Its points are records:
//! - `chunk`: a chunk's payload (chunk id, path, language, lines, symbol, text) and its BM25
//!   weights as the sparse vector `keywords` ([`crate::keywords`]), whose IDF Qdrant supplies
//!   at search time (its `idf` modifier);
//! - `file`: an indexed file and its content hash;
//! - `symbol`: a file's definitions (name, kind, scope, lines, chunk), up to
//!   [`SYMBOLS_PER_RECORD`] to a record, and their names for lookups to match (a point per
//!   definition made three points in four of a large repository's catalog, and most of the
//!   server's work and memory);
//! - the meta point (id 0): the committed **generation**, the average field lengths the
//!   sparse vectors were computed with, and what the index was built with ([`Meta`]).
//!
//! Commits are generations. Every record carries `from` and `until`; at generation `G` a
//! search sees the records with `from <= G < until`. A run writes its new records with
//! `from = G+1` and marks the ones it removes `until = G+1` (both unseen at `G`) as it goes, a
//! batch at a time, then writes `G+1` into the meta point: that one write is the switch.
//! Records no search at `G+1` sees (`until <= G`) are deleted after it, and a run's records
//! that were never committed (a run killed before its switch) are removed or unmarked by the
//! next one before it writes.
//!
//! One indexing run per project at a time: the lock that guarantees it is the index folder's,
//! so run `graft index` (or `graft up`'s re-index) for a project from one machine.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use qdrant_client::qdrant::r#match::MatchValue;
use qdrant_client::qdrant::with_payload_selector::SelectorOptions;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder, FieldType, Filter,
    GetPointsBuilder, Modifier, NamedVectors, PayloadIncludeSelector, PointId, PointStruct, PointsOperationResponse, QueryPointsBuilder,
    Range, SetPayloadPointsBuilder, SparseVectorParamsBuilder, SparseVectorsConfigBuilder, UpsertPointsBuilder, Vector, VectorInput,
};
use qdrant_client::Payload;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Catalog, CatalogWriter, StoredChunk, StoredSymbol};
use crate::chunker::Chunk;
use crate::error::IndexError;
use crate::fusion::Ranked;
use crate::keywords::{self, AverageLengths, Fields};
use crate::layout::Meta;
use crate::qdrant::{Connection, Pending, ServerConfig};
use crate::symbols::Definition;

/// This catalog's layout version ([`super::format`]; 4: definitions grouped by file).
pub(crate) const FORMAT: u32 = 4;
/// The sparse vector of a chunk's BM25 weights.
const SPARSE: &str = "keywords";
/// The meta point's id (records' ids are hashes, never 0).
const META_ID: u64 = 0;
/// `until` of a record no commit has removed (2^53: exact as the float a range compares).
const LIVE: i64 = 1 << 53;
/// Records per write request.
const WRITE_BATCH: usize = 256;
/// Write requests a run keeps in flight: the server applies one batch while the next is on its
/// way and the run chunks its next files, instead of the run waiting on each in turn.
const IN_FLIGHT: usize = 4;
/// Paths per "mark these files' records removed" request.
const PATHS_PER_REQUEST: usize = 512;
/// Definitions per `symbol` record: a lookup reads the records whose names match, whole.
const SYMBOLS_PER_RECORD: usize = 64;
/// A first run's chunk text that sets BM25's average lengths for good (a repository with less:
/// all of it).
const LENGTHS_SAMPLE_BYTES: usize = 16 << 20;

const KIND_CHUNK: &str = "chunk";
const KIND_FILE: &str = "file";
const KIND_SYMBOL: &str = "symbol";
const KIND_META: &str = "meta";

#[derive(Serialize, Deserialize)]
struct ChunkRecord {
    chunk: u64,
    path: String,
    language: String,
    start_line: usize,
    end_line: usize,
    symbol: String,
    text: String,
}

/// A chunk record read for its chunk id alone.
#[derive(Deserialize)]
struct ChunkId {
    chunk: u64,
}

#[derive(Serialize, Deserialize)]
struct FileRecord {
    path: String,
    hash: String,
}

/// Definitions of one file (all, or [`SYMBOLS_PER_RECORD`] of them).
#[derive(Serialize, Deserialize, Default)]
struct SymbolRecord {
    path: String,
    /// The definitions' names, which the keyword index matches (set from `defs` when the record
    /// is queued; a lookup does not read them).
    #[serde(default)]
    name: Vec<String>,
    defs: Vec<SymbolEntry>,
}

#[derive(Serialize, Deserialize)]
struct SymbolEntry {
    name: String,
    def_kind: String,
    scope: String,
    start_line: usize,
    end_line: usize,
    chunk: u64,
}

/// An indexing run's claim on the catalog: who, and until when (Unix seconds) unless renewed.
#[derive(Serialize, Deserialize)]
struct Claim {
    holder: String,
    expires: u64,
}

/// How long a claim lasts without renewal (an indexing run renews it after every batch it
/// embeds, a few seconds apart).
const CLAIM_MINUTES: u64 = 10;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Serialize, Deserialize, Default)]
struct MetaRecord {
    #[serde(default)]
    generation: i64,
    #[serde(default)]
    lengths: Option<AverageLengths>,
    #[serde(default)]
    built: Option<Meta>,
    #[serde(default)]
    claim: Option<Claim>,
}

/// A project's catalog on a Qdrant server.
pub struct QdrantCatalog {
    connection: Connection,
    /// The committed generation this catalog reads at (as of the last reload).
    generation: AtomicI64,
    /// Whether a search has logged an unreadable record (once at `warn`, then at `debug`).
    told_unreadable: AtomicBool,
}

fn collection(config: &ServerConfig, project: &str) -> String {
    format!("{}{project}~catalog", config.collection_prefix)
}

/// The catalog's collection and server, for messages.
pub(crate) fn describe(config: &ServerConfig, project: &str) -> String {
    format!("collection {} on Qdrant at {}", collection(config, project), config.url)
}

impl QdrantCatalog {
    /// Connects, and creates the collection (the configured shards and replicas, payload
    /// indexes, the meta point) if it does not exist.
    pub fn open(config: &ServerConfig, project: &str) -> Result<QdrantCatalog, IndexError> {
        let catalog = QdrantCatalog::connect(config, project, true)?;
        catalog.ok_or_else(|| IndexError::Invalid("the Qdrant catalog's collection was not created".into()))
    }

    /// The project's catalog if its collection exists (nothing is created).
    pub fn existing(config: &ServerConfig, project: &str) -> Result<Option<QdrantCatalog>, IndexError> {
        QdrantCatalog::connect(config, project, false)
    }

    /// Connects and reads the committed generation; a missing collection is created when
    /// `create`, else `None`.
    fn connect(config: &ServerConfig, project: &str, create: bool) -> Result<Option<QdrantCatalog>, IndexError> {
        let connection = Connection::new(config, collection(config, project))?;
        connection.check_version()?;
        if !connection.exists()? {
            if !create {
                return Ok(None);
            }
            create_collection(&connection, config)?;
        }
        let catalog = QdrantCatalog {
            connection,
            generation: AtomicI64::new(0),
            told_unreadable: AtomicBool::new(false),
        };
        catalog.reload()?;
        Ok(Some(catalog))
    }

    /// Deletes the project's catalog collection, if there is one.
    pub fn delete(config: &ServerConfig, project: &str) -> Result<(), IndexError> {
        Connection::new(config, collection(config, project))?.delete_collection()
    }

    /// The committed generation searches read at.
    pub fn generation(&self) -> i64 {
        self.generation.load(Ordering::Acquire)
    }

    fn read_meta(&self) -> Result<Option<MetaRecord>, IndexError> {
        let (client, name) = (self.connection.client.clone(), self.connection.collection.clone());
        let points = self.connection.run(async move {
            client
                .get_points(GetPointsBuilder::new(name, vec![PointId::from(META_ID)]).with_payload(true))
                .await
        })?;
        points.result.into_iter().next().map(|p| record(p.payload)).transpose()
    }

    /// A record an indexing run reads: one it cannot read fails the run, saying what rebuilds
    /// the catalog (its other records would be written around it).
    fn indexed<T: DeserializeOwned>(&self, payload: HashMap<String, qdrant_client::qdrant::Value>) -> Result<T, IndexError> {
        record(payload).map_err(|e| {
            IndexError::Catalog(format!(
                "{e}, in collection {}; `graft index --rebuild` builds the project's catalog anew from the repository \
                 (its vectors kept)",
                self.connection.collection
            ))
        })
    }

    /// A record a search reads, or `None` (logged) when it is not one graft wrote: a search
    /// answers with the records it can read, as the embedded catalog does, instead of failing
    /// every completion's retrieval over one point. An indexing run's reads stay strict.
    fn searchable<T: DeserializeOwned>(&self, payload: HashMap<String, qdrant_client::qdrant::Value>) -> Option<T> {
        match record(payload) {
            Ok(found) => Some(found),
            Err(e) if !self.told_unreadable.swap(true, Ordering::Relaxed) => {
                tracing::warn!(collection = %self.connection.collection, "{e}: searches leave it out (logged once)");
                None
            }
            Err(e) => {
                tracing::debug!(collection = %self.connection.collection, "{e}: left out");
                None
            }
        }
    }

    /// `kind` records visible at the committed generation, and `more`.
    fn visible(&self, kind: &str, more: impl IntoIterator<Item = Condition>) -> Filter {
        let mut must = vec![Condition::matches("kind", MatchValue::Keyword(kind.to_owned()))];
        must.extend(visible_at(self.generation()));
        must.extend(more);
        Filter::must(must)
    }

    /// Writes points, a batch per request.
    fn upsert(&self, points: Vec<PointStruct>) -> Result<(), IndexError> {
        let mut points = points.into_iter().peekable();
        while points.peek().is_some() {
            let batch: Vec<PointStruct> = points.by_ref().take(WRITE_BATCH).collect();
            self.connection.finish(self.start_upsert(batch)?)?;
        }
        Ok(())
    }

    /// Sends one write request (answered once the server has applied it) without waiting.
    fn start_upsert(&self, batch: Vec<PointStruct>) -> Result<Pending<PointsOperationResponse>, IndexError> {
        let (client, name) = (self.connection.client.clone(), self.connection.collection.clone());
        self.connection
            .start(async move { client.upsert_points(UpsertPointsBuilder::new(name, batch).wait(true)).await })
    }

    /// Sets payload fields on the points `filter` matches.
    fn set_payload(&self, payload: Payload, filter: Filter) -> Result<(), IndexError> {
        let (client, name) = (self.connection.client.clone(), self.connection.collection.clone());
        self.connection
            .run(async move {
                client
                    .set_payload(SetPayloadPointsBuilder::new(name, payload).points_selector(filter).wait(true))
                    .await
            })
            .map(|_| ())
    }

    /// Writes the meta point whole, `change` applied to what it holds. Never a partial payload
    /// update: on Qdrant 1.18.3 the meta point, updated so while the server merged segments
    /// under a large first run, lost every field but the one set (its generation, and so the
    /// whole index with it, seen in two of three runs over 30,000 files).
    fn update_meta(&self, change: impl FnOnce(&mut MetaRecord)) -> Result<(), IndexError> {
        let mut meta = self.read_meta()?.unwrap_or_default();
        change(&mut meta);
        self.write_meta_record(&meta)
    }

    /// Writes the meta point whole ([`QdrantCatalog::update_meta`] says why).
    fn write_meta_record(&self, meta: &MetaRecord) -> Result<(), IndexError> {
        self.upsert(vec![meta_point(meta)?])
    }

    fn delete_where(&self, filter: Filter) -> Result<(), IndexError> {
        let (client, name) = (self.connection.client.clone(), self.connection.collection.clone());
        self.connection
            .run(async move { client.delete_points(DeletePointsBuilder::new(name).points(filter).wait(true)).await })
            .map(|_| ())
    }
}

/// Creates the collection: the sparse vector with Qdrant's IDF, keyword and integer indexes on
/// the fields filters use, and the meta point at generation 0.
fn create_collection(connection: &Connection, config: &ServerConfig) -> Result<(), IndexError> {
    let (client, name) = (connection.client.clone(), connection.collection.clone());
    let mut sparse = SparseVectorsConfigBuilder::default();
    sparse.add_named_vector_params(SPARSE, SparseVectorParamsBuilder::default().modifier(Modifier::Idf));
    let request = config.spread(CreateCollectionBuilder::new(&name).sparse_vectors_config(sparse));
    let indexes = [
        ("kind", FieldType::Keyword),
        ("path", FieldType::Keyword),
        ("name", FieldType::Keyword),
        ("chunk", FieldType::Integer),
        ("from", FieldType::Integer),
        ("until", FieldType::Integer),
    ];
    let meta = meta_point(&MetaRecord::default())?;
    connection.run(async move {
        if let Err(e) = client.create_collection(request).await {
            // Another process may have created it in the meantime.
            if !client.collection_exists(&name).await? {
                return Err(e);
            }
        }
        for (field, kind) in indexes {
            client
                .create_field_index(CreateFieldIndexCollectionBuilder::new(&name, field, kind).wait(true))
                .await?;
        }
        client.upsert_points(UpsertPointsBuilder::new(&name, vec![meta]).wait(true)).await?;
        Ok(())
    })
}

/// The meta point holding `meta`.
fn meta_point(meta: &MetaRecord) -> Result<PointStruct, IndexError> {
    Ok(PointStruct::new(
        META_ID,
        NamedVectors::default(),
        with_kind(meta, KIND_META, None)?,
    ))
}

/// A record's payload: its fields, its kind and, for all but the meta point, `from` and
/// `until`.
fn with_kind<T: Serialize>(fields: &T, kind: &str, from: Option<i64>) -> Result<Payload, IndexError> {
    let value = serde_json::to_value(fields).map_err(|e| IndexError::Invalid(e.to_string()))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(IndexError::Invalid("a catalog record is not an object".into()));
    };
    map.insert("kind".into(), kind.into());
    if let Some(from) = from {
        map.insert("from".into(), from.into());
        map.insert("until".into(), LIVE.into());
    }
    Ok(Payload::from(map))
}

fn record<T: DeserializeOwned>(payload: HashMap<String, qdrant_client::qdrant::Value>) -> Result<T, IndexError> {
    Payload::from(payload)
        .deserialize()
        .map_err(|e| IndexError::Catalog(format!("an unreadable record in the Qdrant catalog: {e}")))
}

/// A record is visible at generation `g` when `from <= g < until`.
fn visible_at(g: i64) -> [Condition; 2] {
    let g = g as f64;
    [
        Condition::range(
            "from",
            Range {
                lte: Some(g),
                ..Default::default()
            },
        ),
        Condition::range(
            "until",
            Range {
                gt: Some(g),
                ..Default::default()
            },
        ),
    ]
}

/// A record's point id: a hash of what it is and the generation it was written for.
fn record_id(kind: &str, key: &[u8], generation: i64) -> u64 {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(key);
    h.update(generation.to_le_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&h.finalize()[..8]);
    (u64::from_le_bytes(bytes) >> 1).max(1)
}

impl Catalog for QdrantCatalog {
    fn reload(&self) -> Result<(), IndexError> {
        let generation = self.read_meta()?.map_or(0, |m| m.generation);
        self.generation.store(generation, Ordering::Release);
        Ok(())
    }

    fn refresh(&self) -> Result<(), IndexError> {
        self.reload()
    }

    fn files(&self) -> Result<HashMap<String, String>, IndexError> {
        self.connection
            .scroll(Some(self.visible(KIND_FILE, [])), &["path", "hash"], None)?
            .into_iter()
            .map(|p| self.indexed::<FileRecord>(p.payload).map(|f| (f.path, f.hash)))
            .collect()
    }

    fn chunk_ids(&self) -> Result<HashSet<u64>, IndexError> {
        self.connection
            .scroll(Some(self.visible(KIND_CHUNK, [])), &["chunk"], None)?
            .into_iter()
            .map(|p| self.indexed::<ChunkId>(p.payload).map(|r| r.chunk))
            .collect()
    }

    fn chunk_count(&self) -> Result<usize, IndexError> {
        let (client, name, filter) = (
            self.connection.client.clone(),
            self.connection.collection.clone(),
            self.visible(KIND_CHUNK, []),
        );
        let count = self
            .connection
            .run(async move { client.count(CountPointsBuilder::new(name).filter(filter).exact(true)).await })?;
        Ok(count.result.map_or(0, |r| r.count as usize))
    }

    fn keyword_search(&self, query: &str, limit: usize) -> Result<Vec<Ranked>, IndexError> {
        let v = keywords::query(query);
        if v.indices.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let (client, name, filter) = (
            self.connection.client.clone(),
            self.connection.collection.clone(),
            self.visible(KIND_CHUNK, []),
        );
        let response = self.connection.run(async move {
            client
                .query(
                    QueryPointsBuilder::new(name)
                        .query(VectorInput::new_sparse(v.indices, v.values))
                        .using(SPARSE)
                        .filter(filter)
                        .limit(limit as u64)
                        .with_payload(SelectorOptions::from(PayloadIncludeSelector {
                            fields: vec!["chunk".into()],
                        })),
                )
                .await
        })?;
        let ranked = response.result.into_iter().filter_map(|p| {
            let score = p.score;
            self.searchable::<ChunkId>(p.payload).map(|r| Ranked { id: r.chunk, score })
        });
        Ok(ranked.collect())
    }

    fn chunks(&self, ids: &[u64]) -> Result<HashMap<u64, StoredChunk>, IndexError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let wanted: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
        let filter = self.visible(KIND_CHUNK, [Condition::matches("chunk", wanted)]);
        let fields = ["chunk", "path", "language", "start_line", "end_line", "symbol", "text"];
        let mut out = HashMap::with_capacity(ids.len());
        for point in self.connection.scroll(Some(filter), &fields, Some(ids.len()))? {
            let Some(c) = self.searchable::<ChunkRecord>(point.payload) else {
                continue;
            };
            out.insert(
                c.chunk,
                StoredChunk {
                    id: c.chunk,
                    path: c.path,
                    language: c.language,
                    start_line: c.start_line,
                    end_line: c.end_line,
                    symbol: c.symbol,
                    text: c.text,
                },
            );
        }
        Ok(out)
    }

    fn definitions(&self, names: &[&str], limit: usize) -> Result<Vec<StoredSymbol>, IndexError> {
        if names.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let wanted: HashSet<&str> = names.iter().copied().collect();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let filter = self.visible(KIND_SYMBOL, [Condition::matches("name", names)]);
        // Each record matched holds one of the names at least: `limit` records are enough.
        let mut found = Vec::new();
        for point in self.connection.scroll(Some(filter), &["path", "defs"], Some(limit))? {
            let Some(record) = self.searchable::<SymbolRecord>(point.payload) else {
                continue;
            };
            for def in record.defs.into_iter().filter(|d| wanted.contains(d.name.as_str())) {
                found.push(StoredSymbol {
                    name: def.name,
                    kind: def.def_kind,
                    scope: def.scope,
                    path: record.path.clone(),
                    start_line: def.start_line,
                    end_line: def.end_line,
                    chunk: def.chunk,
                });
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    fn meta(&self) -> Result<Option<Meta>, IndexError> {
        Ok(self.read_meta()?.and_then(|m| m.built))
    }

    fn write_meta(&self, meta: &Meta) -> Result<(), IndexError> {
        self.update_meta(|m| m.built = Some(meta.clone()))
    }

    fn claim(&self, holder: &str) -> Result<(), IndexError> {
        let now = unix_now();
        // Best effort: Qdrant has no compare-and-set, so two runs that start within the same
        // moment could both pass; runs that start apart cannot.
        let mut meta = self.read_meta()?.unwrap_or_default();
        if let Some(claim) = meta.claim.take() {
            if claim.holder != holder && claim.expires > now {
                return Err(IndexError::Claimed {
                    holder: claim.holder,
                    minutes: CLAIM_MINUTES,
                });
            }
        }
        meta.claim = Some(Claim {
            holder: holder.to_owned(),
            expires: now + CLAIM_MINUTES * 60,
        });
        self.write_meta_record(&meta)
    }

    fn release(&self, holder: &str) -> Result<(), IndexError> {
        let mut meta = self.read_meta()?.unwrap_or_default();
        if meta.claim.as_ref().is_some_and(|c| c.holder == holder) {
            meta.claim = None;
            self.write_meta_record(&meta)?;
        }
        Ok(())
    }

    fn writer(&self, _threads: usize) -> Result<Box<dyn CatalogWriter + '_>, IndexError> {
        let meta = self.read_meta()?;
        self.generation.store(meta.as_ref().map_or(0, |m| m.generation), Ordering::Release);
        if meta.is_none() {
            // A collection whose creation was cut short before its meta point.
            self.write_meta_record(&MetaRecord::default())?;
        }
        // What a run killed before its switch left: its records go, its marks are undone.
        let g = self.generation() as f64;
        self.delete_where(Filter::must([Condition::range(
            "from",
            Range {
                gt: Some(g),
                ..Default::default()
            },
        )]))?;
        let mut live = Payload::new();
        live.insert("until", LIVE);
        self.set_payload(
            live,
            Filter::must([Condition::range(
                "until",
                Range {
                    gt: Some(g),
                    lt: Some(LIVE as f64),
                    ..Default::default()
                },
            )]),
        )?;
        let old = self.generation();
        Ok(Box::new(QdrantWriter {
            catalog: self,
            old,
            new: old + 1,
            lengths: meta.and_then(|m| m.lengths),
            sample: Vec::new(),
            sample_bytes: 0,
            points: Vec::new(),
            in_flight: VecDeque::new(),
            removed: Vec::new(),
            symbols: SymbolRecord::default(),
            symbol_records: 0,
        }))
    }
}

/// A run's changes, written as they come (unseen until the commit's switch), so that a run
/// holds a few batches of records at a time ([`IN_FLIGHT`] requests and the one it fills),
/// whatever the repository's size. A first run alone holds its chunks until
/// [`LENGTHS_SAMPLE_BYTES`] of their text (or the commit) sets BM25's average lengths, which
/// every chunk's sparse vector needs. The switch waits for every request's answer.
struct QdrantWriter<'a> {
    catalog: &'a QdrantCatalog,
    /// The committed generation the run started from, and the one it writes.
    old: i64,
    new: i64,
    /// The average field lengths the stored sparse vectors were computed with.
    lengths: Option<AverageLengths>,
    /// A first run's chunks, until their text sets `lengths`.
    sample: Vec<(u64, Chunk)>,
    sample_bytes: usize,
    /// Records not yet sent.
    points: Vec<PointStruct>,
    /// Write requests sent and not yet answered, oldest first.
    in_flight: VecDeque<Pending<PointsOperationResponse>>,
    /// Paths whose records are not yet marked as ending.
    removed: Vec<String>,
    /// The definitions of the file being written, not yet queued.
    symbols: SymbolRecord,
    /// `symbol` records queued, for their ids.
    symbol_records: u64,
}

impl QdrantWriter<'_> {
    /// Queues a record of the new generation; a full batch is sent.
    fn push(&mut self, id: u64, vectors: NamedVectors, payload: Payload) -> Result<(), IndexError> {
        self.points.push(PointStruct::new(id, vectors, payload));
        if self.points.len() >= WRITE_BATCH {
            self.send()?;
        }
        Ok(())
    }

    /// Queues the record of the definitions taken so far.
    fn push_symbols(&mut self) -> Result<(), IndexError> {
        if self.symbols.defs.is_empty() {
            return Ok(());
        }
        let mut record = std::mem::take(&mut self.symbols);
        record.name = record.defs.iter().map(|d| d.name.clone()).collect();
        let id = record_id(KIND_SYMBOL, &self.symbol_records.to_le_bytes(), self.new);
        self.symbol_records += 1;
        let payload = with_kind(&record, KIND_SYMBOL, Some(self.new))?;
        self.push(id, NamedVectors::default(), payload)
    }

    /// Sends the queued records, once fewer than [`IN_FLIGHT`] requests are unanswered.
    fn send(&mut self) -> Result<(), IndexError> {
        if self.points.is_empty() {
            return Ok(());
        }
        while self.in_flight.len() >= IN_FLIGHT {
            self.answer_oldest()?;
        }
        let batch = std::mem::take(&mut self.points);
        self.in_flight.push_back(self.catalog.start_upsert(batch)?);
        Ok(())
    }

    /// Waits for the oldest unanswered request; a refused one fails the run.
    fn answer_oldest(&mut self) -> Result<(), IndexError> {
        match self.in_flight.pop_front() {
            Some(pending) => self.catalog.connection.finish(pending).map(|_| ()),
            None => Ok(()),
        }
    }

    fn push_chunk(&mut self, id: u64, chunk: &Chunk, lengths: &AverageLengths) -> Result<(), IndexError> {
        let v = keywords::document(
            Fields {
                text: &chunk.text,
                path: &chunk.path,
                symbol: &chunk.symbol,
            },
            lengths,
        );
        let fields = ChunkRecord {
            chunk: id,
            path: chunk.path.clone(),
            language: chunk.language.to_owned(),
            start_line: chunk.start_line,
            end_line: chunk.end_line,
            symbol: chunk.symbol.clone(),
            text: chunk.text.clone(),
        };
        let vectors = NamedVectors::default().add_vector(SPARSE, Vector::new_sparse(v.indices, v.values));
        let payload = with_kind(&fields, KIND_CHUNK, Some(self.new))?;
        self.push(record_id(KIND_CHUNK, &id.to_le_bytes(), self.new), vectors, payload)
    }

    /// Sets the average lengths from the chunks held so far, and writes them.
    fn settle_lengths(&mut self) -> Result<AverageLengths, IndexError> {
        let lengths = AverageLengths::of(self.sample.iter().map(|(_, c)| Fields {
            text: &c.text,
            path: &c.path,
            symbol: &c.symbol,
        }));
        for (id, chunk) in std::mem::take(&mut self.sample) {
            self.push_chunk(id, &chunk, &lengths)?;
        }
        self.sample_bytes = 0;
        self.lengths = Some(lengths);
        Ok(lengths)
    }

    /// Marks the records of the queued removed paths as ending with the new generation (still
    /// seen at the old one).
    fn mark_removed(&mut self) -> Result<(), IndexError> {
        let paths = std::mem::take(&mut self.removed);
        for paths in paths.chunks(PATHS_PER_REQUEST) {
            let mut until = Payload::new();
            until.insert("until", self.new);
            let mut must = vec![Condition::matches("path", paths.to_vec())];
            must.extend(visible_at(self.old));
            self.catalog.set_payload(until, Filter::must(must))?;
        }
        Ok(())
    }
}

impl Drop for QdrantWriter<'_> {
    /// A run that failed still waits for its requests: the next run clears what this one
    /// wrote, and a write arriving after that would join the next run's generation.
    fn drop(&mut self) {
        while let Some(pending) = self.in_flight.pop_front() {
            let _ = self.catalog.connection.finish(pending);
        }
    }
}

impl CatalogWriter for QdrantWriter<'_> {
    fn remove_file(&mut self, path: &str) -> Result<(), IndexError> {
        self.removed.push(path.to_owned());
        if self.removed.len() >= PATHS_PER_REQUEST {
            self.mark_removed()?;
        }
        Ok(())
    }

    fn add_file(&mut self, path: &str, file_hash: &str) -> Result<(), IndexError> {
        let fields = FileRecord {
            path: path.to_owned(),
            hash: file_hash.to_owned(),
        };
        let payload = with_kind(&fields, KIND_FILE, Some(self.new))?;
        self.push(record_id(KIND_FILE, path.as_bytes(), self.new), NamedVectors::default(), payload)
    }

    fn add_chunk(&mut self, id: u64, chunk: &Chunk) -> Result<(), IndexError> {
        match self.lengths {
            Some(lengths) => self.push_chunk(id, chunk, &lengths),
            None => {
                self.sample_bytes += chunk.text.len();
                self.sample.push((id, chunk.clone()));
                if self.sample_bytes >= LENGTHS_SAMPLE_BYTES {
                    self.settle_lengths()?;
                }
                Ok(())
            }
        }
    }

    fn add_symbol(&mut self, path: &str, definition: &Definition, chunk: u64) -> Result<(), IndexError> {
        if self.symbols.path != path || self.symbols.defs.len() >= SYMBOLS_PER_RECORD {
            self.push_symbols()?;
            self.symbols.path = path.to_owned();
        }
        self.symbols.defs.push(SymbolEntry {
            name: definition.name.clone(),
            def_kind: definition.kind.to_owned(),
            scope: definition.scope.clone().unwrap_or_default(),
            start_line: definition.start_line,
            end_line: definition.end_line,
            chunk,
        });
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<(), IndexError> {
        // 1. The rest of the new records, and of the removed (and replaced) files' marks: all
        //    unseen at the old generation.
        let lengths = match self.lengths {
            Some(lengths) => lengths,
            None => self.settle_lengths()?,
        };
        self.push_symbols()?;
        self.send()?;
        self.mark_removed()?;
        while !self.in_flight.is_empty() {
            self.answer_oldest()?;
        }

        // 2. The switch.
        let catalog = self.catalog;
        let new = self.new;
        catalog.update_meta(|m| {
            m.generation = new;
            m.lengths = Some(lengths);
        })?;
        catalog.generation.store(self.new, Ordering::Release);

        // 3. Records no search sees any more; those that ended with this generation are still
        //    read by searches that began before the switch, and go with the next run.
        catalog.delete_where(Filter::must([Condition::range(
            "until",
            Range {
                lte: Some(self.old as f64),
                ..Default::default()
            },
        )]))
    }
}
