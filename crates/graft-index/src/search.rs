//! Searching one project's index: keyword (BM25 on the catalog), vector (nearest chunks by
//! embedding), or hybrid (both, fused by reciprocal rank), always with a per-file cap.
//!
//! Vector hits are resolved through the committed catalog, so a vector left behind by an
//! interrupted run is never returned.

use std::str::FromStr;

use serde::Serialize;

use crate::catalog::{Catalog, StoredChunk};
use crate::embed::Embedder;
use crate::error::IndexError;
use crate::fusion::{cap_per_file, reciprocal_rank_fusion, Ranked};
use crate::layout::{IndexLayout, Meta};
use crate::vectors::{self, Backend, VectorStore};

/// Which retrievers a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Hybrid,
    Keyword,
    Vector,
}

impl FromStr for SearchMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hybrid" => Ok(SearchMode::Hybrid),
            "keyword" => Ok(SearchMode::Keyword),
            "vector" => Ok(SearchMode::Vector),
            other => Err(format!("unknown search mode `{other}`: use hybrid, keyword or vector")),
        }
    }
}

/// How many results and how they are spread.
#[derive(Debug, Clone, Copy)]
pub struct SearchOptions {
    pub k: usize,
    pub mode: SearchMode,
    /// At most this many results from one file.
    pub per_file: usize,
    /// How much the vector ranking counts against the keyword ranking (1.0) in hybrid fusion.
    pub vector_weight: f64,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            k: 10,
            mode: SearchMode::Hybrid,
            per_file: 2,
            vector_weight: 0.5,
        }
    }
}

/// One result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchHit {
    /// Relative to the indexed repository's root.
    pub path: String,
    pub start_line: usize,
    pub end_line: usize,
    /// Fused reciprocal-rank score (hybrid), BM25 (keyword) or cosine similarity (vector).
    pub score: f64,
    pub symbol: String,
    pub language: String,
    pub text: String,
}

/// An opened project index, ready to search.
pub struct ProjectIndex {
    catalog: Catalog,
    store: Box<dyn VectorStore>,
    meta: Meta,
}

impl ProjectIndex {
    /// Opens the index in `layout` with the embedded vector store; fails with
    /// [`IndexError::NoIndex`] if it was never built.
    pub fn open(project: &str, layout: &IndexLayout) -> Result<ProjectIndex, IndexError> {
        ProjectIndex::open_with(project, layout, &Backend::Embedded)
    }

    /// Opens the index in `layout`, its vectors in `backend`.
    pub fn open_with(project: &str, layout: &IndexLayout, backend: &Backend) -> Result<ProjectIndex, IndexError> {
        let meta = Meta::read(layout).ok_or_else(|| IndexError::NoIndex {
            project: project.to_owned(),
            dir: layout.root.clone(),
        })?;
        let catalog = Catalog::open(&layout.catalog())?;
        let store = vectors::open(backend, layout, &layout.project(), meta.dims)?;
        Ok(ProjectIndex { catalog, store, meta })
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Chunks in the committed index.
    pub fn chunk_count(&self) -> Result<usize, IndexError> {
        self.catalog.chunk_count()
    }

    /// Searches for `query`. Vector and hybrid searches need `embedder`, the model the index
    /// was built with (checked); keyword search needs none.
    pub fn search(&self, query: &str, embedder: Option<&Embedder>, options: &SearchOptions) -> Result<Vec<SearchHit>, IndexError> {
        if options.k == 0 || query.trim().is_empty() {
            return Ok(Vec::new());
        }
        // Enough candidates that the per-file cap and the fusion have room to work.
        let depth = (options.k * 4).max(40);
        let keyword = match options.mode {
            SearchMode::Vector => Vec::new(),
            _ => self.catalog.keyword_search(query, depth)?,
        };
        let vector = match options.mode {
            SearchMode::Keyword => Vec::new(),
            _ => {
                let embedder = embedder.ok_or_else(|| {
                    IndexError::Invalid("vector and hybrid search need the embedding model; keyword search does not".into())
                })?;
                if embedder.id() != self.meta.embedding_model {
                    return Err(IndexError::Invalid(format!(
                        "this index was built with embedding model {}, not {}; re-run `graft index`",
                        self.meta.embedding_model,
                        embedder.id()
                    )));
                }
                let v = embedder
                    .embed(&[query.to_owned()])?
                    .pop()
                    .ok_or_else(|| IndexError::Embedding("no vector for the query".into()))?;
                self.store.search(&v, depth)?
            }
        };

        // Every candidate's chunk, from the committed catalog (stale vectors drop out here).
        let mut ids: Vec<u64> = keyword.iter().chain(&vector).map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let chunks = self.catalog.chunks(&ids)?;
        let live = |list: Vec<Ranked>| -> Vec<Ranked> { list.into_iter().filter(|r| chunks.contains_key(&r.id)).collect() };
        let (keyword, vector) = (live(keyword), live(vector));

        let ranked: Vec<(u64, f64)> = match options.mode {
            SearchMode::Hybrid => reciprocal_rank_fusion(&[(&keyword, 1.0), (&vector, options.vector_weight)]),
            SearchMode::Keyword => keyword.iter().map(|r| (r.id, f64::from(r.score))).collect(),
            SearchMode::Vector => vector.iter().map(|r| (r.id, f64::from(r.score))).collect(),
        };
        let hits: Vec<SearchHit> = ranked
            .into_iter()
            .filter_map(|(id, score)| chunks.get(&id).map(|c| hit(c, score)))
            .collect();
        Ok(cap_per_file(hits, options.k, options.per_file.max(1), |h| &h.path))
    }
}

fn hit(chunk: &StoredChunk, score: f64) -> SearchHit {
    SearchHit {
        path: chunk.path.clone(),
        start_line: chunk.start_line,
        end_line: chunk.end_line,
        score,
        symbol: chunk.symbol.clone(),
        language: chunk.language.clone(),
        text: chunk.text.clone(),
    }
}
