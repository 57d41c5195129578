//! graft-eval: the golden-set evaluation that judges retrieval, prompts and adapters by a
//! number.
//!
//! - `split`: which files are held out (reproducibly), written down so that dataset
//!   curation and training read the same split and never see those files; it is
//!   [`graft_core::split`], the one type `graft dataset` uses too (re-exported here).
//! - [`golden`]: the golden set's tasks and its JSONL file (errors name the line and field).
//! - [`build`]: tasks made from a repository's held-out files: *line*, *api* (a line that uses
//!   a symbol defined in another file), *span* (rest of a line, middle of a line, a block) and
//!   *question* (a documented definition; judged, not matched), plus a team's own examples.
//! - [`metrics`]: exact match, edit similarity, identifier match and F1 (CrossCodeEval's
//!   measures), and paired bootstrap intervals for the difference between two arms.
//! - [`arms`]: what each arm asks the server for a task (`/infill` or chat, greedy, with or
//!   without retrieval, on the base or the adapter); [`controls`]: the oracle and random
//!   contexts; [`judge`]: questions judged pairwise by a model in both orders; [`report`]:
//!   the outcomes scored, summarised per arm and compared; [`choice`]: which arm the
//!   comparisons say to serve; [`html`]: the report as a page; [`compare`]: two saved
//!   reports of one golden set, arm by arm.
//! - [`retrieval`]: retrieval alone, without a model: cross-file queries from a repository's
//!   definitions and uses, recall@1/@5 and MRR of the file that defines the symbol.
//! - [`questions`]: retrieval for questions in prose: a documented definition's first
//!   sentence asks for its code, in a tree with that documentation taken out.
//!
//! This crate reads repositories, says what to ask and scores the answers; sending the
//! requests is the `graft eval run` command's, to a graft server, so every prompt is laid out
//! by the server's own code.

pub mod arms;
pub mod build;
pub mod choice;
pub mod compare;
pub mod controls;
pub mod golden;
pub mod html;
pub mod judge;
pub mod metrics;
pub mod questions;
pub mod report;
pub mod retrieval;

pub use golden::{GoldenError, GoldenSet, Task, TaskKind};
pub use graft_core::random;
pub use graft_core::split::{self, Split, SplitError};
