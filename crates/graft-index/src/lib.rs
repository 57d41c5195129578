//! graft-index: turns a repository into something a prompt can be augmented from.
//!
//! The flow of a run ([`indexer`]): [`walk`] (honours .gitignore, skips binary, generated,
//! vendored, minified and huge files) → [`chunker`] (tree-sitter where there is a grammar, line
//! windows elsewhere) → [`embed`] (fastembed) → [`vectors`] (Qdrant) + [`catalog`] (tantivy with
//! the code-aware [`tokenizer`]; [`keywords`]: the same BM25 as sparse vectors, for a Qdrant
//! server). [`search`] answers queries by keyword, vector or both, fused
//! in [`fusion`]. [`layout`] says where an index's files are and what it was built with; [`symbols`] lists a
//! file's definitions and their documentation.
//!
//! It knows nothing about generation or HTTP.

pub mod attributes;
pub mod catalog;
pub mod chunker;
pub mod embed;
pub mod error;
pub mod explain;
pub mod fusion;
pub mod indexer;
pub mod keywords;
pub mod layout;
pub mod lookup;
pub mod qdrant;
mod repository;
pub mod search;
pub mod space;
pub mod symbols;
pub mod tokenizer;
pub mod vectors;
pub mod walk;

pub use embed::{Embedder, EmbedderOptions, EmbeddingSource};
pub use error::IndexError;
pub use indexer::{
    embed_ahead, embed_missing, index_repository, index_repository_with, Ahead, IndexOptions, IndexProgress, IndexReport, Quiet,
    SkippedFile, StartOver,
};
pub use layout::{IndexLayout, Meta};
pub use lookup::Names;
pub use search::{Found, FoundBy, ProjectIndex, Query, SearchHit, SearchMode, SearchOptions};
pub use walk::{SkipReason, WalkOptions};
