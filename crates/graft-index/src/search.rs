//! Searching a project's index: keyword (BM25 on the catalog), vector (nearest chunks by
//! embedding), or hybrid (both, fused by reciprocal rank), always with a per-file cap. A hybrid
//! search for code also looks the names around the cursor up in the symbol table
//! ([`crate::lookup`]): their definitions come first. The file being edited is never returned.
//! Other projects' indexes may be searched with it as one (`search_across`): each ranking is
//! merged across them by its own scores before the fusion.
//!
//! Vector hits are resolved through the committed catalog, so a vector left behind by an
//! interrupted run is never returned.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::catalog::{self, Catalog, StoredChunk};
use crate::embed::Embedder;
use crate::error::IndexError;
use crate::fusion::{cap_per_file, reciprocal_rank_fusion, Ranked};
use crate::indexer;
use crate::layout::{IndexLayout, Meta};
use crate::lookup::{self, Names, Nearness};
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
    /// How much the vector ranking counts against the keyword ranking (1.0) in hybrid fusion;
    /// 0: not at all, and vectors are not searched (keyword search and definition lookup).
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

/// A hit's place in one ranking: 1 for the first, and the ranking's own score (BM25 for
/// keyword search, cosine similarity for vector search).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Found {
    pub rank: usize,
    pub score: f32,
}

/// Which rankings found a hit, and where: what a hybrid search fused (`graft search
/// --explain`). Empty for a hit made otherwise.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct FoundBy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<Found>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Found>,
    /// Definition lookup's rank: the definitions of the names the code around a cursor (or a
    /// question) uses, nearest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<usize>,
}

impl FoundBy {
    pub fn is_empty(&self) -> bool {
        self.keyword.is_none() && self.vector.is_none() && self.definition.is_none()
    }
}

/// One result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchHit {
    /// The other project whose index held it, when a search spans other projects' indexes
    /// ([`ProjectIndex::search_across`]); none for the searched project's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Relative to the root of the repository indexed (the other project's, with `project`).
    pub path: String,
    pub start_line: usize,
    pub end_line: usize,
    /// Fused reciprocal-rank score (hybrid), BM25 (keyword) or cosine similarity (vector).
    pub score: f64,
    pub symbol: String,
    pub language: String,
    pub text: String,
    /// Which rankings found it, and where.
    #[serde(default, skip_serializing_if = "FoundBy::is_empty")]
    pub found_by: FoundBy,
}

impl SearchHit {
    /// Its file as a prompt names it ([`shown_path`]).
    pub fn shown_path(&self) -> String {
        shown_path(self.project.as_deref(), &self.path)
    }
}

/// A file as a prompt names it: `path`, under the other project's name for a file of another
/// project's index (`shared-lib/src/x.py`).
pub fn shown_path(project: Option<&str>, path: &str) -> String {
    match project {
        Some(project) => format!("{project}/{path}"),
        None => path.to_owned(),
    }
}

/// What to search for.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Matched by keyword and by meaning.
    pub text: &'a str,
    /// Names whose definitions a hybrid search puts first (code around a cursor) or favours
    /// (a question).
    pub names: Option<Names<'a>>,
    /// The file being edited (relative to the repository's root): none of its chunks is
    /// returned, it is in the prompt already.
    pub current_path: Option<&'a str>,
}

impl<'a> Query<'a> {
    /// Text alone, as `graft search` and the search endpoint take it.
    pub fn text(text: &'a str) -> Query<'a> {
        Query {
            text,
            names: None,
            current_path: None,
        }
    }
}

/// How much definition lookup counts in hybrid fusion. For code, enough that the definitions
/// found (up to [`MAX_DEFINITIONS`]) come first in lookup's order, nearest name first: a
/// step between two of its ranks (1000/61 - 1000/62 at least 0.05 for ranks below 60)
/// outweighs all the keyword and vector searches can add (1/61 + 0.5/61); for a question,
/// one vote like keyword search's.
const CODE_DEFINITION_WEIGHT: f64 = 1000.0;
const QUESTION_DEFINITION_WEIGHT: f64 = 1.0;
/// Definition chunks taken per search.
const MAX_DEFINITIONS: usize = 8;

/// An opened project index, ready to search.
pub struct ProjectIndex {
    catalog: Box<dyn Catalog>,
    store: Box<dyn VectorStore>,
    meta: Meta,
    /// Whether a hybrid search has said that it leaves out vectors made otherwise.
    told_other_vectors: AtomicBool,
}

impl ProjectIndex {
    /// Opens the index in `layout` with the embedded vector store; fails with
    /// [`IndexError::NoIndex`] if it was never built.
    pub fn open(project: &str, layout: &IndexLayout) -> Result<ProjectIndex, IndexError> {
        ProjectIndex::open_with(project, layout, &Backend::Embedded)
    }

    /// Opens the index of `layout`'s project in `backend`: the index folder, or (with a
    /// Qdrant server) the server alone.
    pub fn open_with(project: &str, layout: &IndexLayout, backend: &Backend) -> Result<ProjectIndex, IndexError> {
        // An index folder's files that cannot be read say what rebuilds them (an index run
        // does: `indexer::open_catalog`); a server's errors are the server's.
        let unreadable = |e: IndexError| match e {
            IndexError::Catalog(why) | IndexError::Vectors(why) if matches!(backend, Backend::Embedded) => IndexError::Unreadable {
                project: project.to_owned(),
                place: catalog::place(backend, layout),
                why,
            },
            e => e,
        };
        let (catalog, meta) = catalog::open_built(backend, layout)
            .map_err(unreadable)?
            .ok_or_else(|| IndexError::NoIndex {
                project: project.to_owned(),
                place: catalog::place(backend, layout),
            })?;
        if meta.format != catalog::format(backend) {
            return Err(IndexError::Outdated {
                project: project.to_owned(),
                place: catalog::place(backend, layout),
            });
        }
        let store = vectors::open(backend, layout, &layout.project(), meta.dims).map_err(unreadable)?;
        Ok(ProjectIndex {
            catalog,
            store,
            meta,
            told_other_vectors: AtomicBool::new(false),
        })
    }

    /// `path` as the index names files: relative to the repository's root with `/`
    /// separators (an editor may send it absolute, or with `./` or `\\`).
    pub fn relative_path(&self, path: &str) -> String {
        let path = path.replace('\\', "/");
        let root = self.meta.repository.to_string_lossy().replace('\\', "/");
        let relative = path
            .strip_prefix(root.trim_end_matches('/'))
            .map_or(path.as_str(), |rest| rest.trim_start_matches('/'));
        relative.trim_start_matches("./").to_owned()
    }

    pub(crate) fn catalog(&self) -> &dyn Catalog {
        self.catalog.as_ref()
    }

    pub(crate) fn store(&self) -> &dyn VectorStore {
        self.store.as_ref()
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Whether this index's vectors were made as `embedder` makes them ([`indexer::vectors_id`]):
    /// otherwise vector search refuses the index and hybrid search leaves its vectors out.
    pub fn vectors_made_by(&self, embedder: &Embedder) -> bool {
        self.meta.embedding_model == indexer::vectors_id(embedder)
    }

    /// Chunks in the committed index.
    pub fn chunk_count(&self) -> Result<usize, IndexError> {
        self.catalog.chunk_count()
    }

    /// Searches for `query`. Vector and hybrid searches need `embedder`, the model the index
    /// was built with (checked); keyword search needs none.
    pub fn search(&self, query: &str, embedder: Option<&Embedder>, options: &SearchOptions) -> Result<Vec<SearchHit>, IndexError> {
        self.search_for(&Query::text(query), embedder, options)
    }

    /// Searches for `query`: [`ProjectIndex::search`] with definition lookup and the current
    /// file left out.
    pub fn search_for(&self, query: &Query, embedder: Option<&Embedder>, options: &SearchOptions) -> Result<Vec<SearchHit>, IndexError> {
        self.search_across(&[], query, embedder, options)
    }

    /// Searches this index and `others`, other projects' indexes named by their projects
    /// (a shared library's, say), as one: each ranking (keyword, vector, definitions) is
    /// merged across the indexes before the fusion (keyword hits by BM25, vector hits by
    /// cosine similarity, definitions by how near the cursor their names are, this index's
    /// first on a tie: [`lookup::Nearness`]), so an index's hits rank by how well they match,
    /// not by being its best. Another index's hits carry its
    /// name ([`SearchHit::project`]); the current file is this index's alone. An index whose
    /// vectors another embedding model made gives its keyword hits and definitions only.
    pub fn search_across(
        &self,
        others: &[(&str, &ProjectIndex)],
        query: &Query,
        embedder: Option<&Embedder>,
        options: &SearchOptions,
    ) -> Result<Vec<SearchHit>, IndexError> {
        if options.k == 0 || query.text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let definition_weight = match query.names {
            Some(Names::Question(_)) => QUESTION_DEFINITION_WEIGHT,
            _ => CODE_DEFINITION_WEIGHT,
        };
        // The query's embedding, made once for every index that wants it.
        let mut vector = None;
        let mut found = vec![(None, self.candidates(query, embedder, &mut vector, options)?)];
        let elsewhere = Query {
            current_path: None,
            ..*query
        };
        for &(project, index) in others {
            found.push((Some(project), index.candidates(&elsewhere, embedder, &mut vector, options)?));
        }

        // One key per chunk found, in whichever index: its place in `chunks`.
        let mut chunks: Vec<(Option<&str>, StoredChunk)> = Vec::new();
        let (mut keyword, mut vector, mut definitions) = (Vec::new(), Vec::new(), Vec::new());
        for (project, mut candidates) in found {
            let mut key = HashMap::new();
            // The chunk's key, its chunk moved into `chunks` when first seen.
            let mut keyed = |id: u64| -> Option<u64> {
                if let Some(&at) = key.get(&id) {
                    return Some(at);
                }
                chunks.push((project, candidates.chunks.remove(&id)?));
                let at = chunks.len() as u64 - 1;
                key.insert(id, at);
                Some(at)
            };
            let mut rekeyed = |list: Vec<Ranked>| -> Vec<Ranked> {
                list.into_iter()
                    .filter_map(|r| {
                        Some(Ranked {
                            id: keyed(r.id)?,
                            score: r.score,
                        })
                    })
                    .collect()
            };
            keyword.push(rekeyed(candidates.keyword));
            vector.push(rekeyed(candidates.vector));
            let defined: Vec<(u64, Nearness)> = candidates
                .definitions
                .into_iter()
                .filter_map(|(id, near)| Some((keyed(id)?, near)))
                .collect();
            definitions.push(defined);
        }
        let by_score = |a: &Ranked, b: &Ranked| a.score > b.score;
        let (keyword, vector) = (merge(keyword, by_score), merge(vector, by_score));
        // The definitions of the names nearest the cursor first, whichever index holds them.
        let definitions: Vec<Ranked> = merge(definitions, |a, b| a.1 < b.1)
            .into_iter()
            .take(MAX_DEFINITIONS.min(options.k))
            .map(|(id, _)| Ranked { id, score: 1.0 })
            .collect();

        let ranked: Vec<(u64, f64)> = match options.mode {
            SearchMode::Hybrid => {
                reciprocal_rank_fusion(&[(&keyword, 1.0), (&vector, options.vector_weight), (&definitions, definition_weight)])
            }
            SearchMode::Keyword => keyword.iter().map(|r| (r.id, f64::from(r.score))).collect(),
            SearchMode::Vector => vector.iter().map(|r| (r.id, f64::from(r.score))).collect(),
        };
        let place = |list: &[Ranked], id: u64| {
            list.iter().position(|r| r.id == id).map(|at| Found {
                rank: at + 1,
                score: list[at].score,
            })
        };
        let hits: Vec<SearchHit> = ranked
            .into_iter()
            .filter_map(|(id, score)| {
                let found_by = FoundBy {
                    keyword: place(&keyword, id),
                    vector: place(&vector, id),
                    definition: place(&definitions, id).map(|found| found.rank),
                };
                let (project, chunk) = chunks.get(usize::try_from(id).ok()?)?;
                Some(hit(*project, chunk, score, found_by))
            })
            .collect();
        Ok(cap_per_file(hits, options.k, options.per_file.max(1), |h| {
            (h.project.clone(), h.path.clone())
        }))
    }

    /// This index's candidates for `query`: each ranking's, with their chunks from the
    /// committed catalog (stale vectors drop out here), none of the current file's. `vector`
    /// is the query's embedding, made here if none is yet and one is wanted.
    fn candidates(
        &self,
        query: &Query,
        embedder: Option<&Embedder>,
        vector: &mut Option<Vec<f32>>,
        options: &SearchOptions,
    ) -> Result<Candidates, IndexError> {
        let current_path = query.current_path.map(|p| self.relative_path(p));
        let current_path = current_path.as_deref();
        self.catalog.refresh()?;
        let definitions: Vec<(u64, Nearness)> = match query.names {
            Some(names) if options.mode == SearchMode::Hybrid => {
                let limit = MAX_DEFINITIONS.min(options.k);
                lookup::ranked_definitions(self.catalog.as_ref(), names, current_path, limit)?
            }
            _ => Vec::new(),
        };
        // Enough candidates that the per-file cap and the fusion have room to work.
        let depth = (options.k * 4).max(40);
        let keyword = match options.mode {
            SearchMode::Vector => Vec::new(),
            _ => self.catalog.keyword_search(query.text, depth)?,
        };
        // A hybrid search whose vector ranking counts for nothing does not embed the query.
        let nearest = match options.mode {
            SearchMode::Keyword => Vec::new(),
            SearchMode::Hybrid if options.vector_weight <= 0.0 => Vec::new(),
            _ => {
                let embedder = embedder.ok_or_else(|| {
                    IndexError::Invalid("vector and hybrid search need the embedding model; keyword search does not".into())
                })?;
                if self.vectors_made_by(embedder) {
                    let v = match vector {
                        Some(v) => v,
                        None => vector.insert(
                            embedder
                                .embed(&[indexer::embedding_words(query.text)])?
                                .pop()
                                .ok_or_else(|| IndexError::Embedding("no vector for the query".into()))?,
                        ),
                    };
                    self.store.search(v, depth)?
                } else {
                    let other = IndexError::Invalid(format!(
                        "this index's vectors were made with embedding model {}, not {}; re-run `graft index`",
                        self.meta.embedding_model,
                        indexer::vectors_id(embedder),
                    ));
                    if options.mode == SearchMode::Vector {
                        return Err(other);
                    }
                    // Hybrid: keyword search and definition lookup go on without them until the
                    // next run embeds the index anew (`graft up` runs it at start).
                    if !self.told_other_vectors.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %other, "hybrid search leaves the vectors out");
                    }
                    Vec::new()
                }
            }
        };

        let mut ids: Vec<u64> = keyword
            .iter()
            .chain(&nearest)
            .map(|r| r.id)
            .chain(definitions.iter().map(|d| d.0))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut chunks = self.catalog.chunks(&ids)?;
        if let Some(current) = current_path {
            chunks.retain(|_, c| c.path != current);
        }
        let live = |list: Vec<Ranked>| -> Vec<Ranked> { list.into_iter().filter(|r| chunks.contains_key(&r.id)).collect() };
        Ok(Candidates {
            keyword: live(keyword),
            vector: live(nearest),
            definitions: definitions.into_iter().filter(|(id, _)| chunks.contains_key(id)).collect(),
            chunks,
        })
    }
}

/// One index's candidates for a search, before the fusion.
struct Candidates {
    keyword: Vec<Ranked>,
    vector: Vec<Ranked>,
    /// Best first, each with the order it has among other indexes' definitions.
    definitions: Vec<(u64, Nearness)>,
    chunks: HashMap<u64, StoredChunk>,
}

/// The rankings of several indexes (each best first) as one: at each step the best of the
/// lists' heads (`better`), the earlier list's on a tie, so each list keeps its own order and
/// one list comes back as it was.
fn merge<T>(lists: Vec<Vec<T>>, better: impl Fn(&T, &T) -> bool) -> Vec<T> {
    // Each list backwards: its head is its last item.
    let mut lists: Vec<Vec<T>> = lists
        .into_iter()
        .map(|mut l| {
            l.reverse();
            l
        })
        .collect();
    let mut merged = Vec::new();
    loop {
        let mut best: Option<usize> = None;
        for (i, list) in lists.iter().enumerate() {
            let Some(head) = list.last() else {
                continue;
            };
            if best.and_then(|b| lists[b].last()).is_none_or(|leader| better(head, leader)) {
                best = Some(i);
            }
        }
        let Some(next) = best.and_then(|i| lists[i].pop()) else {
            return merged;
        };
        merged.push(next);
    }
}

fn hit(project: Option<&str>, chunk: &StoredChunk, score: f64, found_by: FoundBy) -> SearchHit {
    SearchHit {
        project: project.map(str::to_owned),
        path: chunk.path.clone(),
        start_line: chunk.start_line,
        end_line: chunk.end_line,
        score,
        symbol: chunk.symbol.clone(),
        language: chunk.language.clone(),
        text: chunk.text.clone(),
        found_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rankings_merge_by_their_scores_each_keeping_its_order() {
        let ranked = |ids: &[(u64, f32)]| ids.iter().map(|&(id, score)| Ranked { id, score }).collect::<Vec<_>>();
        let ids = |list: Vec<Ranked>| list.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let by_score = |a: &Ranked, b: &Ranked| a.score > b.score;
        // One list comes back as it was, in order or not.
        let alone = ranked(&[(1, 0.2), (2, 0.9), (3, 0.5)]);
        assert_eq!(ids(merge(vec![alone], by_score)), [1, 2, 3]);
        // Two: the better head each time, the first list's on a tie.
        let own = ranked(&[(1, 9.0), (2, 4.0), (3, 1.0)]);
        let other = ranked(&[(10, 12.0), (11, 4.0), (12, 0.5)]);
        assert_eq!(ids(merge(vec![own, other], by_score)), [10, 1, 2, 11, 3, 12]);
        assert!(merge(Vec::<Vec<Ranked>>::new(), by_score).is_empty());
        assert_eq!(ids(merge(vec![Vec::new(), ranked(&[(5, 1.0)])], by_score)), [5]);
    }
}
