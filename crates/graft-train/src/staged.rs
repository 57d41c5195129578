//! A folder written whole: its files go into a fresh folder beside the target under a hidden
//! temporary name, and the finished folder takes the target's place by renames, so a crash
//! leaves the old folder or the new one, never half of one. Used for adapters and checkpoints.

use std::path::{Path, PathBuf};

/// A file operation that failed, and on what.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct IoError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Wraps an I/O error with the path it concerns (for `map_err`).
pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IoError {
    let path = path.to_owned();
    move |source| IoError { path, source }
}

/// The hidden sibling of `folder` with `suffix`: `dir/.NAME.suffix` (the staging folder
/// `partial`, the replaced one `old`; a training run's `checkpoint`).
pub fn hidden_sibling(folder: &Path, suffix: &str) -> PathBuf {
    let name = folder
        .file_name()
        .map_or_else(|| "folder".into(), |n| n.to_string_lossy().into_owned());
    folder.with_file_name(format!(".{name}.{suffix}"))
}

/// A folder being written in place of `target`.
pub struct Staged {
    /// Where to write the files.
    pub path: PathBuf,
    target: PathBuf,
}

impl Staged {
    /// An empty folder beside `target` (`.NAME.partial`; a leftover one is removed).
    pub fn begin(target: &Path) -> Result<Staged, IoError> {
        let path = hidden_sibling(target, "partial");
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        }
        std::fs::create_dir_all(&path).map_err(io(&path))?;
        Ok(Staged {
            path,
            target: target.to_owned(),
        })
    }

    /// Puts the written folder in the target's place (an old one is moved aside first, then
    /// removed).
    pub fn finish(self) -> Result<(), IoError> {
        let old = hidden_sibling(&self.target, "old");
        if self.target.exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(io(&old))?;
            }
            std::fs::rename(&self.target, &old).map_err(io(&self.target))?;
        }
        std::fs::rename(&self.path, &self.target).map_err(io(&self.target))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_folder_replaces_the_old_one_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("adapter");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("old.txt"), "old").unwrap();
        let staged = Staged::begin(&target).unwrap();
        std::fs::write(staged.path.join("new.txt"), "new").unwrap();
        assert!(target.join("old.txt").exists(), "the old folder stands until the new one is done");
        staged.finish().unwrap();
        assert!(!target.join("old.txt").exists());
        assert_eq!(std::fs::read_to_string(target.join("new.txt")).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("adapter")], "nothing left beside it");
    }
}
