//! Where a project's index lives and what it was built with: [`IndexLayout`] (the folders and
//! files under `index.dir/<project>`) and [`Meta`] (`meta.json`). Read by indexing, search and
//! the vector stores alike; this module does no indexing or searching itself.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::IndexError;

/// The folders and files of one project's index.
#[derive(Debug, Clone)]
pub struct IndexLayout {
    pub root: PathBuf,
}

impl IndexLayout {
    pub fn new(root: impl Into<PathBuf>) -> IndexLayout {
        IndexLayout { root: root.into() }
    }
    pub fn catalog(&self) -> PathBuf {
        self.root.join("catalog")
    }
    pub fn vectors(&self) -> PathBuf {
        self.root.join("vectors")
    }
    pub fn meta(&self) -> PathBuf {
        self.root.join("meta.json")
    }
    /// The project's name: the index folder's name (it names the collection on a server).
    pub fn project(&self) -> String {
        self.root
            .file_name()
            .map_or_else(|| "default".to_owned(), |n| n.to_string_lossy().into_owned())
    }
    /// Held by an indexing run.
    pub(crate) fn lock(&self) -> PathBuf {
        self.root.join(".lock")
    }
}

/// What an index was built with; written after each successful run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// The indexed repository (absolute).
    pub repository: PathBuf,
    /// [`Embedder::id`] of the model the vectors come from.
    pub embedding_model: String,
    pub dims: usize,
    /// The layout version of the catalog the run wrote ([`crate::catalog::format`]; absent, 1,
    /// before the symbol table).
    #[serde(default = "first_format")]
    pub format: u32,
}

fn first_format() -> u32 {
    1
}

impl Meta {
    pub fn read(layout: &IndexLayout) -> Option<Meta> {
        let text = std::fs::read_to_string(layout.meta()).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub(crate) fn write(&self, layout: &IndexLayout) -> Result<(), IndexError> {
        let path = layout.meta();
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| IndexError::Invalid(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| IndexError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| IndexError::io(&path, e))
    }
}
