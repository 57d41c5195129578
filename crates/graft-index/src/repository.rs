//! The git repository a folder is in, found from the folder alone (no git command): its
//! working tree's top, the folder holding its `info/` files (a linked worktree's is the main
//! repository's), and the folders between; and the repositories inside one (submodules,
//! clones, worktrees), whose files git does not track in it. Read by [`crate::attributes`],
//! [`crate::walk`] and [`crate::explain`]; it does not read git's index or objects.

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
            let git_dir = named_git_dir(&top)?;
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

/// A repository inside another one's working tree: a folder below the top holding a `.git`
/// of its own. Git tracks none of its files in the outer repository (it records a submodule
/// as one commit id, and leaves a clone or a worktree untracked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nested {
    /// A submodule: `.git` is a file naming a folder under the outer repository's
    /// `.git/modules/`.
    Submodule,
    /// A linked worktree (`git worktree add`) of some repository: a `.git` file naming a folder
    /// with a `commondir`.
    Worktree,
    /// A repository of its own: a `.git` folder (a clone, or a submodule as git wrote them
    /// before 1.7.8).
    Clone,
}

impl Nested {
    /// Whether `dir` holds a repository of its own, and of which kind.
    pub(crate) fn at(dir: &Path) -> Option<Nested> {
        let dot_git = dir.join(".git");
        let meta = std::fs::symlink_metadata(&dot_git).ok()?;
        if meta.is_dir() {
            return Some(Nested::Clone);
        }
        match named_git_dir(dir) {
            Some(git_dir) if git_dir.join("commondir").is_file() => Some(Nested::Worktree),
            _ => Some(Nested::Submodule),
        }
    }

    /// Why a file under `folder` (this repository, relative to the walked root) is not the
    /// outer repository's own code, for a person.
    pub(crate) fn detail(self, folder: &str) -> String {
        match self {
            Nested::Submodule => format!("in the git submodule `{folder}/`"),
            Nested::Worktree => format!("in `{folder}/`, a git worktree"),
            Nested::Clone => format!("in `{folder}/`, a git repository of its own"),
        }
    }
}

/// The folder a `.git` file in `dir` names (`gitdir: ../.git/modules/x`, relative to `dir`).
fn named_git_dir(dir: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(dir.join(".git")).ok()?;
    let named = text.lines().find_map(|line| line.strip_prefix("gitdir:"))?.trim();
    Some(dir.join(named))
}

/// The `info/exclude` file the walk reads for a folder holding a `.git`, as the `ignore`
/// crate finds it: the `.git` folder's, or for a `.git` file naming a folder with a
/// `commondir` (a worktree), the common folder's; none for a submodule.
pub(crate) fn exclude_file(dir: &Path) -> Option<PathBuf> {
    let dot_git = dir.join(".git");
    let meta = std::fs::metadata(&dot_git).ok()?;
    if meta.is_dir() {
        return Some(dot_git.join("info").join("exclude"));
    }
    let git_dir = named_git_dir(dir)?;
    let common = std::fs::read_to_string(git_dir.join("commondir")).ok()?;
    Some(git_dir.join(common.trim()).join("info").join("exclude"))
}
