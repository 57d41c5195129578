//! graft-index: turns a repository into something a prompt can be augmented from.
//!
//! Walk (honouring .gitignore) → filter → chunk (syntax-aware) → embed (fastembed) → vectors
//! (Qdrant) + keywords (tantivy) → hybrid search. Being built under issue 3; nothing here yet.
