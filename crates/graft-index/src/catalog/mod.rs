//! The catalog: the index's source of truth. Every chunk (text, path, symbol, lines), every
//! indexed file (path, content hash), every definition (the symbol table), and what the index
//! was built with ([`Meta`]). One [`Catalog`] trait, two backends, chosen with the vector
//! store ([`Backend`]):
//!
//! - [`embedded::TantivyCatalog`] (default): tantivy in the project's index folder.
//! - [`server::QdrantCatalog`]: a collection on the Qdrant server that holds the vectors, so
//!   graft replicas on other machines serve the project with no index folder of their own.
//!
//! What both promise:
//! - keyword search is BM25 over the chunk's text, path ([`PATH_BOOST`]) and symbol
//!   ([`SYMBOL_BOOST`]), with the code [`tokenizer`](crate::tokenizer);
//! - a run's changes ([`CatalogWriter`]) become visible at once on commit: before it, searches
//!   see the previous index whole, after it the new one whole; a run killed before its
//!   commit changes nothing anyone sees;
//! - vector hits are resolved here, so a vector whose chunk is not committed is never shown.
//!
//! It does no chunking or embedding: the [`indexer`](crate::indexer) hands it what to store.

pub mod embedded;
pub mod server;

use std::collections::{HashMap, HashSet};

use crate::chunker::Chunk;
use crate::error::IndexError;
use crate::fusion::Ranked;
use crate::layout::{IndexLayout, Meta};
use crate::symbols::Definition;
use crate::vectors::Backend;

pub use embedded::TantivyCatalog;
pub use server::QdrantCatalog;

/// How much a match in each field counts, relative to the chunk's text (also the weights of
/// [`crate::keywords`]' sparse vectors).
pub(crate) const PATH_BOOST: f32 = 2.0;
pub(crate) const SYMBOL_BOOST: f32 = 3.0;

/// A chunk as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    pub id: u64,
    pub path: String,
    pub language: String,
    pub start_line: usize,
    pub end_line: usize,
    pub symbol: String,
    pub text: String,
}

/// A definition as stored in the catalog's symbol table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSymbol {
    pub name: String,
    /// `function`, `type`, `class`, `trait`, `module`, `macro`, `constant`.
    pub kind: String,
    /// The type, class or trait it is defined in; empty at the top level.
    pub scope: String,
    pub path: String,
    pub start_line: usize,
    pub end_line: usize,
    /// The chunk that holds its first line.
    pub chunk: u64,
}

/// One project's catalog: what is committed, searched by keyword and looked up by id or name.
pub trait Catalog: Send + Sync {
    /// Sees the latest commit (of this or another process).
    fn reload(&self) -> Result<(), IndexError>;
    /// Called before each search: a catalog shared by several processes (on a server) sees
    /// the latest commit here; one in an index folder is reloaded by whoever re-indexes.
    fn refresh(&self) -> Result<(), IndexError> {
        Ok(())
    }
    /// Indexed files and the content hash each was indexed at.
    fn files(&self) -> Result<HashMap<String, String>, IndexError>;
    /// The ids of every committed chunk.
    fn chunk_ids(&self) -> Result<HashSet<u64>, IndexError>;
    /// The number of committed chunks.
    fn chunk_count(&self) -> Result<usize, IndexError>;
    /// BM25 search over chunk text, path and symbol, best first.
    ///
    /// This and the two reads below answer with the records they can read: one that is not
    /// graft's (a hand-edited server collection) is left out and logged, not an error that
    /// would fail every search.
    fn keyword_search(&self, query: &str, limit: usize) -> Result<Vec<Ranked>, IndexError>;
    /// The stored chunks with these ids (those that exist in the committed catalog).
    fn chunks(&self, ids: &[u64]) -> Result<HashMap<u64, StoredChunk>, IndexError>;
    /// The definitions of these names (exact, case-sensitive), at most `limit`, in no
    /// particular order.
    fn definitions(&self, names: &[&str], limit: usize) -> Result<Vec<StoredSymbol>, IndexError>;
    /// What the index was built with; `None` before its first run finished.
    fn meta(&self) -> Result<Option<Meta>, IndexError>;
    /// Records what the index was built with (after a run).
    fn write_meta(&self, meta: &Meta) -> Result<(), IndexError>;
    /// Claims the catalog for `holder`'s indexing run, or renews its claim; fails with
    /// [`IndexError::Claimed`] while another run's claim lasts. A catalog shared on a server
    /// needs this; one in an index folder is claimed by the folder's lock instead.
    fn claim(&self, _holder: &str) -> Result<(), IndexError> {
        Ok(())
    }
    /// Gives `holder`'s claim up (another's is left alone).
    fn release(&self, _holder: &str) -> Result<(), IndexError> {
        Ok(())
    }
    /// Starts a batch of changes; nothing is visible until [`CatalogWriter::commit`].
    fn writer(&self, threads: usize) -> Result<Box<dyn CatalogWriter + '_>, IndexError>;
}

/// Pending changes to a catalog.
pub trait CatalogWriter {
    /// Removes a file, its chunks and its definitions.
    fn remove_file(&mut self, path: &str) -> Result<(), IndexError>;
    /// Adds a file (its chunks are added with [`CatalogWriter::add_chunk`]).
    fn add_file(&mut self, path: &str, file_hash: &str) -> Result<(), IndexError>;
    /// Adds a chunk of a file added in this batch, under `id`.
    fn add_chunk(&mut self, id: u64, chunk: &Chunk) -> Result<(), IndexError>;
    /// Adds a definition of a file added in this batch; `chunk` is the id of the chunk that
    /// holds its first line.
    fn add_symbol(&mut self, path: &str, definition: &Definition, chunk: u64) -> Result<(), IndexError>;
    /// Makes every change visible at once.
    fn commit(self: Box<Self>) -> Result<(), IndexError>;
}

/// Opens (creating if needed) the catalog of the project whose index folder is `layout`.
pub fn open(backend: &Backend, layout: &IndexLayout) -> Result<Box<dyn Catalog>, IndexError> {
    Ok(match backend {
        Backend::Embedded => Box::new(TantivyCatalog::open(layout)?),
        Backend::Server(config) => Box::new(QdrantCatalog::open(config, &layout.project())?),
    })
}

/// A built index's catalog and what it was built with.
pub type Built = (Box<dyn Catalog>, Meta);

/// The catalog of a project whose index was built, with what it was built with; `None`
/// (nothing created) when it never was.
pub fn open_built(backend: &Backend, layout: &IndexLayout) -> Result<Option<Built>, IndexError> {
    let catalog: Box<dyn Catalog> = match backend {
        Backend::Embedded if Meta::read(layout).is_none() => return Ok(None),
        Backend::Embedded => Box::new(TantivyCatalog::open(layout)?),
        Backend::Server(config) => match QdrantCatalog::existing(config, &layout.project())? {
            Some(catalog) => Box::new(catalog),
            None => return Ok(None),
        },
    };
    Ok(catalog.meta()?.map(|meta| (catalog, meta)))
}

/// What the project's index was built with, without creating anything; `None` when it was
/// never built.
pub fn read_meta(backend: &Backend, layout: &IndexLayout) -> Result<Option<Meta>, IndexError> {
    match backend {
        Backend::Embedded => Ok(Meta::read(layout)),
        Backend::Server(_) => Ok(open_built(backend, layout)?.map(|(_, meta)| meta)),
    }
}

/// Where the project's index is, for messages: its folder, or its catalog on the server.
pub fn place(backend: &Backend, layout: &IndexLayout) -> String {
    match backend {
        Backend::Embedded => layout.root.display().to_string(),
        Backend::Server(config) => server::describe(config, &layout.project()),
    }
}

/// The layout version of `backend`'s catalog, which [`Meta::format`] records: an index of
/// another one is refused until the next run rebuilds its catalog (its vectors, under the same
/// chunk ids, are kept). Both: 2, the symbol table; 3, keywords by their stems. A Qdrant
/// server's: 4, definitions grouped by file.
pub fn format(backend: &Backend) -> u32 {
    match backend {
        Backend::Embedded => embedded::FORMAT,
        Backend::Server(_) => server::FORMAT,
    }
}

/// Removes the catalog (to be rebuilt from the repository by the next run).
pub fn reset(backend: &Backend, layout: &IndexLayout) -> Result<(), IndexError> {
    match backend {
        Backend::Embedded => {
            let dir = layout.catalog();
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| IndexError::io(&dir, e))?;
            }
            Ok(())
        }
        Backend::Server(config) => QdrantCatalog::delete(config, &layout.project()),
    }
}
