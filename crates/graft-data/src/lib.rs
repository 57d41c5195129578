//! graft-data: a repository (and its history) turned into clean training data.
//!
//! - [`select`]: the filters code datasets use (line lengths, alphanumeric share, generated
//!   markers, data-like files, languages), each with its reason.
//! - [`secrets`]: keys, tokens, passwords and high-entropy strings found, to drop or redact.
//! - [`dedup`]: exact (content hash) and near (MinHash, LSH, Jaccard) duplicates collapsed.
//! - [`samples`]: files packed in the model's repo-level layout, FIM samples, instruction pairs,
//!   every one within the token limit.
//! - [`retrieved`]: retrieval-augmented samples: a file after the code the project's index
//!   finds for a cursor in it, as the server lays out a completion with retrieval.
//! - [`history`]: before → after pairs mined from git commits.
//! - [`gold`]: the team's own examples, read from JSONL.
//! - [`curate`]: all of it in order, and the manifest; [`output`]: the files on disk.
//!
//! The walk (what is skipped, and why) is `graft_index::walk`'s, the held-out split is
//! `graft_core::split` (the evaluation's), prompt layouts are `graft_engine::fim`'s and token
//! counts the served model's tokenizer (`graft_engine::Tokenizer`): nothing here repeats them.

pub mod curate;
pub mod dedup;
pub mod gold;
pub mod history;
pub mod output;
pub mod retrieved;
pub mod samples;
pub mod secrets;
pub mod select;

pub use curate::{curate, CurateError, Dataset, Input, Manifest, RetrievalSource};

/// Reports progress of the long stages (a bar in the CLI); every method has a default that
/// does nothing, and `()` reports nothing.
pub trait Progress: Sync {
    fn stage(&self, _name: &str, _total: usize) {}
    fn advance(&self, _n: usize) {}
}

impl Progress for () {}
