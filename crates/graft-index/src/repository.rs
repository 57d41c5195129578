//! The git repository a folder is in, found from the folder alone (no git command): its
//! working tree's top, the folder holding its `info/` files (a linked worktree's is the main
//! repository's), and the folders between. Read by [`crate::attributes`] and
//! [`crate::explain`]; it does not read git's index or objects.

use std::path::{Path, PathBuf};

/// The git repository a folder is in.
pub(crate) struct Repository {
    /// The working tree's top folder.
    pub(crate) top: PathBuf,
    /// Where `info/attributes` and `info/exclude` are: the `.git` folder, or for a linked worktree the main
    /// repository's (its common folder).
    pub(crate) git_dir: PathBuf,
    /// The folders above the root up to `top`, `top` first, each with the root's path relative
    /// to it (with a trailing `/`).
    pub(crate) above: Vec<(PathBuf, String)>,
}

impl Repository {
    /// The repository holding `root` (its top may be `root` itself); `None` outside one.
    pub(crate) fn around(root: &Path) -> Option<Repository> {
        let root = root.canonicalize().ok()?;
        let top = root.ancestors().find(|dir| dir.join(".git").exists())?.to_owned();
        let dot_git = top.join(".git");
        let git_dir = if dot_git.is_dir() {
            dot_git
        } else {
            // A linked worktree or a submodule: `.git` is a file naming the repository's folder.
            let text = std::fs::read_to_string(&dot_git).ok()?;
            let named = text.lines().find_map(|line| line.strip_prefix("gitdir:"))?.trim();
            let git_dir = top.join(named);
            match std::fs::read_to_string(git_dir.join("commondir")) {
                Ok(common) => git_dir.join(common.trim()),
                Err(_) => git_dir,
            }
        };
        let mut above: Vec<(PathBuf, String)> = root
            .ancestors()
            .skip(1)
            .take_while(|dir| dir.starts_with(&top))
            .filter_map(|dir| {
                let lead = root.strip_prefix(dir).ok()?.to_str()?.replace('\\', "/");
                Some((dir.to_owned(), format!("{lead}/")))
            })
            .collect();
        above.reverse();
        Some(Repository { top, git_dir, above })
    }
}
