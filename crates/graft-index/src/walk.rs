//! Walking a repository: which files are worth indexing, and why each other file is skipped.
//!
//! Honours `.gitignore`, `.ignore` and `.git/info/exclude` (through the `ignore` crate, as
//! ripgrep does) plus excludes from config, leaves hidden files out but for the few that say
//! how a project is built and tested (`.github/`, `.gitlab-ci.yml`, `.cargo/`, ...:
//! [`HIDDEN_KEPT`]), and filters out what would only add noise:
//! binary, generated, vendored, minified and huge files, judged by names, places and contents
//! unless the repository's attributes (its `.gitattributes` files and `info/attributes`) mark a
//! file `linguist-vendored` or `linguist-generated` (or not: [`crate::attributes`]); the files
//! of repositories inside the walked one (submodules, clones, worktrees:
//! `repository::Nested`), which git leaves out of it; and Git LFS pointers, which
//! stand for a file not checked out. Every skip is counted by reason, so a user can see why a
//! file is not in the index. This module reads files; it does not chunk them.
//! [`list`] lists the files by their names and places alone, for a reader that reads each file
//! when it needs it ([`Walk::read`]; an index run, which holds no more than a slice of a
//! repository's text at a time); [`walk`] lists and reads them all.
//!
//! Symbolic links: a link whose target lies outside the walked root is never followed, and
//! every file is read through [`graft_core::confine`], which checks where the opened file
//! really is, so no link (or a folder swapped for one) can bring a file from elsewhere on the
//! machine into an index. Links inside the root are followed (loops are detected), and a file
//! reached by several paths is kept once, under its own path when the walk saw it there. The
//! dataset built from a repository uses this same walk and so the same rule.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use graft_core::confine::{self, ConfineError};
use ignore::overrides::OverrideBuilder;
use ignore::WalkBuilder;

use crate::attributes::Attributes;
use crate::repository::{Nested, Repository};

/// Limits and excludes for a walk.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Extra excludes in gitignore syntax (`vendor/`, `*.min.js`, ...).
    pub exclude: Vec<String>,
    /// Files larger than this are skipped as huge.
    pub max_file_bytes: u64,
    /// Files whose lines longer than this hold at least half their text are skipped as
    /// minified ([`mostly_long_lines`]).
    pub max_line_chars: usize,
    /// Names of hidden files and folders walked besides [`HIDDEN_KEPT`] (`.ci`).
    pub keep_hidden: Vec<String>,
    /// Whether the files of repositories inside the walked one (git submodules, clones,
    /// worktrees) are kept as its own; by default they are left out as git leaves them out
    /// ([`SkipReason::Submodule`]).
    pub submodules: bool,
}

impl WalkOptions {
    /// Whether the walk enters or keeps a file or folder of this name: not hidden, or a hidden
    /// one it keeps.
    pub(crate) fn walks(&self, name: &str) -> bool {
        !name.starts_with('.') || HIDDEN_KEPT.contains(&name) || self.keep_hidden.iter().any(|kept| kept == name)
    }
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            exclude: Vec::new(),
            max_file_bytes: 1024 * 1024,
            max_line_chars: 1000,
            keep_hidden: Vec::new(),
            submodules: false,
        }
    }
}

/// Why a file was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// Not valid text (a NUL byte, or not UTF-8).
    Binary,
    /// Marked or named as generated (lock files, `// Code generated ... DO NOT EDIT`, ...).
    Generated,
    /// Third-party code kept in the repository (`vendor/`, `node_modules/`, ...).
    Vendored,
    /// Very long lines: minified or data, not code a person reads.
    Minified,
    /// Larger than `max_file_bytes`.
    Huge,
    /// Empty or only whitespace.
    Empty,
    /// Could not be read (permissions, broken symbolic link, symlink loop, ...).
    Unreadable,
    /// A symbolic link (or a file under one) that leads out of the repository.
    OutsideRepository,
    /// The same file reached again through a symbolic link inside the repository.
    LinkedCopy,
    /// In a repository inside the walked one (a git submodule, a clone, a worktree): git
    /// tracks none of its files in the walked repository, and it is mostly someone else's code
    /// (a library pinned as a submodule) or a second copy of this one (a worktree). Only when
    /// the walked folder is in a git repository: a folder of clones is walked whole.
    Submodule,
    /// A Git LFS pointer: the few lines git keeps in a large file's place when its content is
    /// not checked out (a clone without git-lfs, `GIT_LFS_SKIP_SMUDGE=1`); the same in every
    /// such file but the hash and the size, nothing of the file itself.
    LfsPointer,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Binary => "binary",
            SkipReason::Generated => "generated",
            SkipReason::Vendored => "vendored",
            SkipReason::Minified => "minified",
            SkipReason::Huge => "huge",
            SkipReason::Empty => "empty",
            SkipReason::Unreadable => "unreadable",
            SkipReason::OutsideRepository => "outside-repository",
            SkipReason::LinkedCopy => "linked-copy",
            SkipReason::Submodule => "submodule",
            SkipReason::LfsPointer => "lfs-pointer",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text file kept for indexing.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the walked root, with `/` separators.
    pub path: String,
    pub text: String,
}

impl SourceFile {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> SourceFile {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }
}

/// A file [`list`] kept, not read yet.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Path relative to the walked root, with `/` separators.
    pub path: String,
    /// Its size when it was listed, in bytes.
    pub bytes: u64,
    /// Where the walk found it (the root joined with `path`).
    location: PathBuf,
    /// Whether a generator's marker in its first lines marks it generated: yes, unless the
    /// repository's `.gitattributes` says it is not (`-linguist-generated`).
    judge_markers: bool,
}

/// Why a file is left out: the reason, what decided it, and for one that could not be read,
/// what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub reason: SkipReason,
    /// What decided it, for a person, where there is more to say than the reason: ``in a
    /// `vendor/` folder``, `.gitattributes:3: api/** linguist-generated`, `its first lines say
    /// "do not edit"`, `lines over 1000 characters hold 97% of its text`, what went wrong
    /// reading it (`Permission denied (os error 13)`).
    pub detail: Option<String>,
    /// For a file that could not be read (or leads out of the repository): what happened, a
    /// line for the run's warnings.
    pub problem: Option<String>,
    /// The folder that decided it, where a folder did (relative, `/`): the vendored folder,
    /// the submodule; every file under it is left out alike.
    pub folder: Option<String>,
}

impl Skip {
    pub(crate) fn new(reason: SkipReason, detail: impl Into<Option<String>>) -> Skip {
        Skip {
            reason,
            detail: detail.into(),
            problem: None,
            folder: None,
        }
    }

    /// The file at `path` this leaves out, and the line for the run's warnings, if any.
    pub(crate) fn of(self, path: String) -> (SkippedPath, Option<String>) {
        let Skip {
            reason,
            detail,
            problem,
            folder,
        } = self;
        let skipped = SkippedPath {
            path,
            reason,
            detail,
            folder,
        };
        (skipped, problem)
    }

    /// A file left out with every other under `folder`, for the reason `detail` says.
    pub(crate) fn under(reason: SkipReason, detail: String, folder: &str) -> Skip {
        Skip {
            folder: Some(folder.to_owned()),
            ..Skip::new(reason, detail)
        }
    }

    /// A file at `path` that could not be read: `what` happened, said for the file and, with
    /// its path, among the run's warnings.
    fn problem(reason: SkipReason, path: &str, what: String) -> Skip {
        Skip {
            reason,
            problem: Some(format!("{path}: {what}")),
            detail: Some(what),
            folder: None,
        }
    }
}

/// A file left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedPath {
    /// Relative to the walked root, with `/` separators.
    pub path: String,
    pub reason: SkipReason,
    /// What decided it ([`Skip::detail`]).
    pub detail: Option<String>,
    /// The folder that decided it, where a folder did ([`Skip::folder`]).
    pub folder: Option<String>,
}

/// The result of a walk: the files kept, read ([`walk`]: [`SourceFile`]) or listed ([`list`]:
/// [`Listed`]), and those left out.
#[derive(Debug)]
pub struct Walk<F = SourceFile> {
    pub files: Vec<F>,
    /// Skipped files by reason.
    pub skipped: BTreeMap<SkipReason, usize>,
    /// Each skipped file whose path is known (relative, `/`), with its reason, those left out
    /// by their names or places first, then those left out when read, each in walk order:
    /// what a dataset's manifest lists.
    pub skipped_files: Vec<SkippedPath>,
    /// One line per file that could not be read, for the log.
    pub problems: Vec<String>,
    /// The walked root's real path.
    pub root: PathBuf,
    /// The `.gitattributes` marks the walk read and followed (a dataset's own filters follow
    /// them too).
    pub attributes: Attributes,
}

impl<F> Default for Walk<F> {
    fn default() -> Self {
        Walk {
            files: Vec::new(),
            skipped: BTreeMap::new(),
            skipped_files: Vec::new(),
            problems: Vec::new(),
            root: PathBuf::new(),
            attributes: Attributes::default(),
        }
    }
}

impl<F> Walk<F> {
    /// Its files, and the same walk holding `files` instead.
    fn holding<G>(self, files: Vec<G>) -> (Vec<F>, Walk<G>) {
        let Walk {
            files: held,
            skipped,
            skipped_files,
            problems,
            root,
            attributes,
        } = self;
        let walk = Walk {
            files,
            skipped,
            skipped_files,
            problems,
            root,
            attributes,
        };
        (held, walk)
    }

    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }

    /// Counts a file left out (`path`, where known), and what happened, where said.
    fn skip(&mut self, path: Option<String>, skip: Skip) {
        *self.skipped.entry(skip.reason).or_default() += 1;
        let problem = match path {
            Some(path) => {
                let (skipped, problem) = skip.of(path);
                self.skipped_files.push(skipped);
                problem
            }
            None => skip.problem,
        };
        self.problems.extend(problem);
    }
}

impl Walk<Listed> {
    /// Reads a file this listing kept, or says why it is left out: not text, empty, minified,
    /// marked as generated, larger than `options.max_file_bytes`, unreadable, or (a file
    /// swapped for a link since it was listed) out of the repository.
    pub fn read(&self, file: &Listed, options: &WalkOptions) -> Result<SourceFile, Skip> {
        let text = read_source(&file.location, &file.path, &self.root, file.judge_markers, options)?;
        Ok(SourceFile {
            path: file.path.clone(),
            text,
        })
    }
}

/// Errors that stop a walk before it starts.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("{} is not a folder", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot open {}: {message}", path.display())]
    Unreadable { path: PathBuf, message: String },
    #[error("bad exclude pattern `{pattern}`: {message}")]
    BadExclude { pattern: String, message: String },
}

/// Folder names of third-party code.
const VENDORED_DIRS: &[&str] = &[
    "vendor",
    "vendors",
    "node_modules",
    "third_party",
    "third-party",
    "thirdparty",
    "bower_components",
    "site-packages",
    ".venv",
    "venv",
];

/// Hidden folders and files the walk enters and keeps all the same: how a project is built,
/// tested and released (its CI, its cargo settings, its dev container, its hooks), which chat
/// over the repository is asked about (229 of a cargo registry's 820 crates ship a `.github/`
/// folder: 553 files of these in all, most of them workflows). Other hidden files (`.git`,
/// `.idea`, `.cache`, `.env`, ...) are left out, as ripgrep leaves them.
pub(crate) const HIDDEN_KEPT: &[&str] = &[
    ".github",
    ".gitlab",
    ".gitlab-ci.yml",
    ".forgejo",
    ".gitea",
    ".circleci",
    ".buildkite",
    ".travis.yml",
    ".cirrus.yml",
    ".drone.yml",
    ".woodpecker",
    ".woodpecker.yml",
    ".devcontainer",
    ".cargo",
    ".husky",
    ".pre-commit-config.yaml",
];

/// Files that are written by tools, never by people.
const GENERATED_NAMES: &[&str] = &[
    "Cargo.lock",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "poetry.lock",
    "Pipfile.lock",
    "composer.lock",
    "Gemfile.lock",
    "go.sum",
    "uv.lock",
];

const GENERATED_SUFFIXES: &[&str] = &[".min.js", ".min.css", ".pb.go", "_pb2.py", ".map", ".snap"];

/// Markers tools put near the top of generated files. Not "code generated" alone: Go's
/// header (`// Code generated by X. DO NOT EDIT.`) says "do not edit" too, and the words alone
/// are prose about macros in handwritten files (darling's `tests/lints.rs`, bon's and
/// bitflags' sources: all 5 files of a cargo registry of 820 crates where they matched and no
/// other marker did).
const GENERATED_MARKERS: &[&str] = &[
    "do not edit",
    "@generated",
    "autogenerated",
    "auto-generated",
    "this file was generated",
    "this file is generated",
];

/// Walks `root` and reads every file worth indexing.
pub fn walk(root: &Path, options: &WalkOptions) -> Result<Walk, WalkError> {
    let (listed, mut result) = list(root, options)?.holding(Vec::new());
    for file in listed {
        match read_source(&file.location, &file.path, &result.root, file.judge_markers, options) {
            Ok(text) => result.files.push(SourceFile { path: file.path, text }),
            Err(skip) => result.skip(Some(file.path), skip),
        }
    }
    Ok(result)
}

/// Walks `root` and lists every file worth looking at, by its name and place alone: ignored,
/// hidden, vendored and generated-by-name files, links out of the repository and second paths
/// to one file are left out; what each kept file holds is for [`Walk::read`] to judge. In
/// path order.
pub fn list(root: &Path, options: &WalkOptions) -> Result<Walk<Listed>, WalkError> {
    let Walker {
        entries: walker,
        real_root,
        links_out,
    } = walker(root, options)?;
    let mut result = Walk {
        root: real_root.clone(),
        // The marks that reach the root (its repository's info/attributes, the .gitattributes
        // above it and its own), then each folder's as the walk enters it.
        attributes: Attributes::read(root),
        ..Walk::default()
    };
    // Each kept file's real path, to keep a file reached through several paths once.
    let mut kept: Vec<(PathBuf, bool)> = Vec::new();
    // The repositories inside the walked one whose files are left out (relative folder, why).
    let judge_nested = !options.submodules && Repository::around(root).is_some();
    let mut nested: Vec<(String, String)> = Vec::new();
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                // Symlink loops, permission errors, broken links.
                let skip = Skip {
                    problem: Some(e.to_string()),
                    ..Skip::new(SkipReason::Unreadable, None)
                };
                result.skip(None, skip);
                continue;
            }
        };
        if entry.depth() > 0 && entry.file_type().is_some_and(|t| t.is_dir()) {
            let folder = relative_path(root, entry.path());
            if judge_nested {
                if let Some(kind) = Nested::at(entry.path()) {
                    nested.push((folder.clone(), kind.detail(&folder)));
                }
            }
            result.attributes.add_folder(root, &folder);
        }
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let relative = relative_path(root, path);
        if let Some((folder, why)) = nested.iter().find(|(folder, _)| is_under(&relative, folder)) {
            let skip = Skip::under(SkipReason::Submodule, why.clone(), folder);
            result.skip(Some(relative), skip);
            continue;
        }
        let generated = result.attributes.generated_by(&relative);
        if let Some(skip) = skipped_by_name(&relative, result.attributes.vendored_by(&relative), generated) {
            result.skip(Some(relative), skip);
            continue;
        }
        let real = match path.canonicalize() {
            Ok(real) => real,
            Err(e) => {
                let skip = Skip::problem(SkipReason::Unreadable, &relative, e.to_string());
                result.skip(Some(relative), skip);
                continue;
            }
        };
        // Seen at its own path (no link on the way) or through a link.
        let direct = real == real_root.join(&relative);
        result.files.push(Listed {
            bytes: entry.metadata().map_or(0, |m| m.len()),
            judge_markers: generated.map(|(set, _)| set) != Some(false),
            path: relative,
            location: path.to_owned(),
        });
        kept.push((real, direct));
    }
    for link in links_out.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        let relative = relative_path(root, &link);
        let what = "a symbolic link out of the repository, not followed".to_owned();
        let skip = Skip::problem(SkipReason::OutsideRepository, &relative, what);
        result.skip(Some(relative), skip);
    }
    result.drop_linked_copies(kept);
    result.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(result)
}

/// A stamp of what [`walk`] would read under `root`: the path, size and modification time of
/// every file it lists, in one number, read without opening a file. It changes when a file is
/// added, removed, renamed or written (a server compares stamps to know when to re-index). Files
/// under any of `skip` (an index kept inside the repository) do not count. Only comparable
/// within one process.
pub fn stamp(root: &Path, options: &WalkOptions, skip: &[PathBuf]) -> Result<u64, WalkError> {
    use std::hash::{Hash, Hasher};
    let Walker { entries, real_root, .. } = walker(root, options)?;
    // The skipped folders inside the root, relative to it.
    let skip: Vec<PathBuf> = skip
        .iter()
        .filter_map(|p| p.canonicalize().ok()?.strip_prefix(&real_root).ok().map(Path::to_owned))
        .collect();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut files = 0u64;
    for file in Attributes::files_outside(root) {
        if let Ok(meta) = std::fs::metadata(&file) {
            file.hash(&mut hasher);
            (meta.len(), meta.modified().ok()).hash(&mut hasher);
        }
    }
    for entry in entries.flatten() {
        // Which files are vendored or generated may change with a folder's .gitattributes.
        if entry.file_type().is_some_and(|t| t.is_dir()) {
            if let Ok(meta) = std::fs::metadata(entry.path().join(".gitattributes")) {
                entry.path().hash(&mut hasher);
                (meta.len(), meta.modified().ok()).hash(&mut hasher);
            }
        }
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let relative = path.strip_prefix(root).unwrap_or(path);
        if skip.iter().any(|s| relative.starts_with(s)) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        path.hash(&mut hasher);
        meta.len().hash(&mut hasher);
        meta.modified().ok().hash(&mut hasher);
        files += 1;
    }
    files.hash(&mut hasher);
    Ok(hasher.finish())
}

/// The files [`walk`] looks at, as the `ignore` crate lists them, and what it needs beside.
struct Walker {
    entries: ignore::Walk,
    /// The root's real path.
    real_root: PathBuf,
    /// Links out of the root that the listing left out (the filter cannot report them).
    links_out: Arc<Mutex<Vec<PathBuf>>>,
}

/// Lists `root` with `.gitignore` rules, hidden files left out (but [`HIDDEN_KEPT`]),
/// `options.exclude` applied, and
/// links inside the root followed (see the module's comment).
fn walker(root: &Path, options: &WalkOptions) -> Result<Walker, WalkError> {
    let meta = std::fs::metadata(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => WalkError::Missing(root.to_owned()),
        _ => WalkError::Unreadable {
            path: root.to_owned(),
            message: e.to_string(),
        },
    })?;
    if !meta.is_dir() {
        return Err(WalkError::NotADirectory(root.to_owned()));
    }
    let mut overrides = OverrideBuilder::new(root);
    for pattern in &options.exclude {
        // An override glob selects files; a leading `!` turns it into an exclude.
        overrides.add(&format!("!{pattern}")).map_err(|e| WalkError::BadExclude {
            pattern: pattern.clone(),
            message: e.to_string(),
        })?;
    }
    let overrides = overrides.build().map_err(|e| WalkError::BadExclude {
        pattern: options.exclude.join(", "),
        message: e.to_string(),
    })?;

    let real_root = root.canonicalize().map_err(|e| WalkError::Unreadable {
        path: root.to_owned(),
        message: e.to_string(),
    })?;
    // Links that lead out of the repository are not descended into; they are counted here,
    // since the filter cannot reach the result.
    let links_out = Arc::new(Mutex::new(Vec::new()));
    let walker = {
        let links_out = Arc::clone(&links_out);
        let real_root = real_root.clone();
        let options = options.clone();
        WalkBuilder::new(root)
            .hidden(false)
            .git_ignore(true)
            .git_exclude(true)
            .git_global(false)
            .ignore(true)
            .require_git(false)
            .follow_links(true)
            .overrides(overrides)
            .filter_entry(move |entry| {
                if entry.depth() > 0 && !options.walks(&entry.file_name().to_string_lossy()) {
                    return false;
                }
                if !entry.path_is_symlink() {
                    return true;
                }
                match entry.path().canonicalize() {
                    Ok(real) if !real.starts_with(&real_root) => {
                        links_out.lock().unwrap_or_else(|p| p.into_inner()).push(entry.path().to_owned());
                        false
                    }
                    // Inside the root, or dangling (the walk reports that as unreadable).
                    _ => true,
                }
            })
            .build()
    };
    Ok(Walker {
        entries: walker,
        real_root,
        links_out,
    })
}

impl Walk<Listed> {
    /// Keeps one path per real file: the direct one if the walk saw it, else the first in
    /// path order. `kept[i]` is `files[i]`'s real path and whether it was reached directly.
    fn drop_linked_copies(&mut self, kept: Vec<(PathBuf, bool)>) {
        let mut order: Vec<usize> = (0..self.files.len()).collect();
        // Direct paths first, then by path: the first of each real file is the one kept.
        order.sort_by(|&a, &b| kept[b].1.cmp(&kept[a].1).then_with(|| self.files[a].path.cmp(&self.files[b].path)));
        // Of each file reached again, the index of the one kept for its real file.
        let mut first: std::collections::HashMap<&PathBuf, usize> = std::collections::HashMap::new();
        let mut copy_of: Vec<Option<usize>> = vec![None; self.files.len()];
        for i in order {
            match first.get(&kept[i].0) {
                Some(&original) => copy_of[i] = Some(original),
                None => {
                    first.insert(&kept[i].0, i);
                }
            }
        }
        let said: Vec<(String, String)> = copy_of
            .iter()
            .enumerate()
            .filter_map(|(i, original)| {
                let original = &self.files[(*original)?].path;
                Some((self.files[i].path.clone(), format!("the same file as `{original}`")))
            })
            .collect();
        let mut copy = copy_of.iter();
        self.files.retain(|_| copy.next().is_some_and(Option::is_none));
        for (path, detail) in said {
            self.skip(Some(path), Skip::new(SkipReason::LinkedCopy, detail));
        }
    }
}

fn relative_path(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Why a file is left out for its path alone (vendored, or generated by its name), if it is:
/// as the repository's attributes mark it (`vendored`, `generated`: its marks with the lines
/// that made them, [`Attributes::vendored_by`]), else as its folders and name suggest.
pub(crate) fn skipped_by_name(relative: &str, vendored: Option<(bool, &str)>, generated: Option<(bool, &str)>) -> Option<Skip> {
    let folders: Vec<&str> = relative.split('/').collect();
    let name = folders.last().copied().unwrap_or(relative);
    match vendored {
        Some((true, line)) => return Some(Skip::new(SkipReason::Vendored, line.to_owned())),
        Some((false, _)) => {}
        None => {
            // The outermost such folder (`vendor/` of `vendor/x/node_modules/y.js`).
            let folders = &folders[..folders.len().saturating_sub(1)];
            if let Some(at) = folders.iter().position(|dir| VENDORED_DIRS.contains(dir)) {
                let detail = format!("in a `{}/` folder", folders[at]);
                return Some(Skip::under(SkipReason::Vendored, detail, &folders[..=at].join("/")));
            }
        }
    }
    match generated {
        Some((true, line)) => Some(Skip::new(SkipReason::Generated, line.to_owned())),
        Some((false, _)) => None,
        None if GENERATED_NAMES.contains(&name) => Some(Skip::new(SkipReason::Generated, "a lock file".to_owned())),
        None => GENERATED_SUFFIXES
            .iter()
            .find(|suffix| name.ends_with(*suffix))
            .map(|suffix| Skip::new(SkipReason::Generated, format!("a `{suffix}` file"))),
    }
}

/// The size of the file a Git LFS pointer stands for, when `text` is one: under 1024 bytes, its
/// first line the spec's `version` (or the spec's first name, `hawser`), with an `oid` line and
/// a `size` line (git-lfs's `docs/spec.md`).
fn lfs_pointer(text: &str) -> Option<u64> {
    const VERSIONS: [&str; 2] = ["https://git-lfs.github.com/spec/v1", "https://hawser.github.com/spec/v1"];
    if text.len() >= 1024 {
        return None;
    }
    let mut lines = text.lines();
    let version = lines.next()?.strip_prefix("version ")?;
    if !VERSIONS.contains(&version) {
        return None;
    }
    let mut oid = false;
    let mut size = None;
    for line in lines {
        oid |= line.starts_with("oid sha256:");
        if let Some(bytes) = line.strip_prefix("size ") {
            size = bytes.parse().ok();
        }
    }
    size.filter(|_| oid)
}

/// A file's bytes as the index reads them: without a UTF-8 byte order mark (which Visual
/// Studio wrote at the start of C# files for years), so that it reaches neither a prompt nor
/// a training sample.
pub(crate) fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Whether the relative path `path` lies under the relative folder `folder`.
fn is_under(path: &str, folder: &str) -> bool {
    path.strip_prefix(folder).is_some_and(|rest| rest.starts_with('/'))
}

/// The percentage of `text` held by lines longer than `max` characters, when it is at least
/// half: minified code or data, not code a person reads. A file of code with a long line or
/// two (a table, a test vector, a generated constant) is kept, each such line a chunk of its
/// own: of the 22,496 sources in a cargo registry of 820 crates, 31 have a line over 1,000
/// characters, and 26 of them are such files (tantivy's `term_query/mod.rs`, prettyplease's
/// `lib.rs`), which a rule of "any long line" left out whole.
fn mostly_long_lines(text: &str, max: usize) -> Option<usize> {
    let (mut long, mut all) = (0usize, 0usize);
    for line in text.lines() {
        let chars = line.chars().count();
        all += chars + 1;
        if chars > max {
            long += chars;
        }
    }
    (long > 0 && long * 2 >= all).then(|| long * 100 / all)
}

/// Reads one file, or says why it is skipped (and, for a read failure, what happened).
pub(crate) fn read_source(path: &Path, relative: &str, root: &Path, judge_markers: bool, options: &WalkOptions) -> Result<String, Skip> {
    let file = confine::read_confined(path, &[root], options.max_file_bytes).map_err(|e| match e {
        ConfineError::TooLarge { size, max, .. } => {
            Skip::new(SkipReason::Huge, format!("{size} bytes, over `index.max_file_bytes` ({max})"))
        }
        ConfineError::Outside { .. } => Skip::problem(
            SkipReason::OutsideRepository,
            relative,
            "leads out of the repository, not read".to_owned(),
        ),
        ConfineError::NotAFile { kind, .. } => Skip::problem(SkipReason::Unreadable, relative, format!("{kind}, not read")),
        ConfineError::Io { source, .. } => Skip::problem(SkipReason::Unreadable, relative, source.to_string()),
    })?;
    let mut bytes = file.bytes;
    if bytes.contains(&0) {
        return Err(Skip::new(SkipReason::Binary, "a NUL byte".to_owned()));
    }
    // The byte order mark dropped in place: the file's bytes become its text uncopied.
    let bom = bytes.len() - without_bom(&bytes).len();
    bytes.drain(..bom);
    let text = String::from_utf8(bytes).map_err(|_| Skip::new(SkipReason::Binary, "not UTF-8".to_owned()))?;
    if text.trim().is_empty() {
        return Err(Skip::new(SkipReason::Empty, None));
    }
    if let Some(size) = lfs_pointer(&text) {
        let detail = format!("a Git LFS pointer to {size} bytes not checked out (`git lfs pull` fetches them)");
        return Err(Skip::new(SkipReason::LfsPointer, detail));
    }
    if let Some(percent) = mostly_long_lines(&text, options.max_line_chars) {
        let detail = format!("lines over {} characters hold {percent}% of its text", options.max_line_chars);
        return Err(Skip::new(SkipReason::Minified, detail));
    }
    let head: String = text.lines().take(5).collect::<Vec<_>>().join("\n").to_lowercase();
    if let Some(marker) = GENERATED_MARKERS.iter().find(|m| judge_markers && head.contains(*m)) {
        return Err(Skip::new(SkipReason::Generated, format!("its first lines say \"{marker}\"")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, format!("content of {f}\n")).unwrap();
        }
        dir
    }

    fn paths(walk: &Walk) -> Vec<&str> {
        walk.files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn a_stamp_changes_when_a_walked_file_does_and_only_then() {
        let dir = tree(&["src/main.rs", "src/lib.rs", ".gitignore", "index/graft/meta.json"]);
        std::fs::write(dir.path().join(".gitignore"), "/target\n").unwrap();
        let root = dir.path();
        let options = WalkOptions::default();
        let skip = [root.join("index")];
        let stamp = || super::stamp(root, &options, &skip).unwrap();
        let first = stamp();
        assert_eq!(stamp(), first, "nothing changed");
        // Ignored, hidden and skipped files do not count.
        for ignored in ["target/debug/out.rs", ".cache/x.rs", "index/graft/new.json"] {
            std::fs::create_dir_all(root.join(ignored).parent().unwrap()).unwrap();
            std::fs::write(root.join(ignored), "x").unwrap();
        }
        std::fs::write(root.join("index/graft/meta.json"), "rewritten by the indexer").unwrap();
        assert_eq!(stamp(), first, "only files the walk reads count");
        // A file written (same size: its time changes), added, renamed or removed does.
        let main = root.join("src/main.rs");
        let file = std::fs::File::options().write(true).open(&main).unwrap();
        let later = std::fs::metadata(&main).unwrap().modified().unwrap() + std::time::Duration::from_secs(5);
        file.set_modified(later).unwrap();
        let touched = stamp();
        assert_ne!(touched, first);
        std::fs::write(root.join("src/new.rs"), "fn new() {}\n").unwrap();
        let added = stamp();
        assert_ne!(added, touched);
        std::fs::rename(root.join("src/new.rs"), root.join("src/renamed.rs")).unwrap();
        let renamed = stamp();
        assert_ne!(renamed, added);
        std::fs::remove_file(root.join("src/renamed.rs")).unwrap();
        assert_eq!(stamp(), touched, "back to the files it had");
    }

    /// A file of code with one long line (here, as in mruby's `test/t/array.rb`, a literal of
    /// 2,188 characters among 393 short lines) is kept; one whose long lines are most of it
    /// (minified, or data on a line) is not.
    #[test]
    fn a_long_line_in_code_keeps_the_file_and_long_lines_that_are_most_of_it_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut code = String::new();
        for i in 0..393 {
            code.push_str(&format!("assert_equal(ary[{i}], [{i}, {i}])\n"));
        }
        let literal: Vec<String> = (0..200).map(|i| format!("[{i}, {i}]")).collect();
        code.push_str(&format!("ary = [{}]\n", literal.join(", ")));
        assert!(code.lines().last().unwrap().len() > 1000);
        std::fs::write(root.join("array.rb"), &code).unwrap();
        let mut data = String::from("# a table\n");
        data.push_str(&format!("TABLE = [{}]\n", literal.join(", ")));
        std::fs::write(root.join("table.rb"), &data).unwrap();

        let walked = walk(root, &WalkOptions::default()).unwrap();
        assert_eq!(paths(&walked), ["array.rb"]);
        assert_eq!(
            walked.skipped_files,
            [SkippedPath {
                path: "table.rb".to_owned(),
                reason: SkipReason::Minified,
                detail: Some("lines over 1000 characters hold 99% of its text".to_owned()),
                folder: None,
            }]
        );
        assert_eq!(mostly_long_lines("short\n", 5), None);
        assert_eq!(mostly_long_lines("a long line\nshort\n", 5), Some(61), "11 of 18 characters");
        assert_eq!(mostly_long_lines("", 0), None, "no line, nothing long");
    }

    /// The repository's `.gitattributes` decides what the walk would guess: code of its own
    /// under `third_party/` is kept, a folder of generated code is left out, a header's marker
    /// is overruled; and writing it changes the stamp a server re-indexes by.
    #[test]
    fn gitattributes_marks_decide_over_names_places_and_markers() {
        let dir = tree(&[
            "third_party/glam/conv.rs",
            "third_party/zlib/inflate.c",
            "api/gen/client.rs",
            "src/lib.rs",
        ]);
        let root = dir.path();
        std::fs::write(root.join("gen.rs"), "// Code generated by a tool. DO NOT EDIT.\nfn x() {}\n").unwrap();
        std::fs::write(root.join("Cargo.lock"), "version = 3\n").unwrap();
        let options = WalkOptions::default();
        let before = stamp(root, &options, &[]).unwrap();
        let judged = |attributes: &str| {
            std::fs::write(root.join(".gitattributes"), attributes).unwrap();
            let walked = walk(root, &options).unwrap();
            let mut skipped: Vec<(String, SkipReason, String)> = walked
                .skipped_files
                .iter()
                .map(|s| (s.path.clone(), s.reason, s.detail.clone().unwrap_or_default()))
                .collect();
            skipped.sort();
            let kept: Vec<String> = paths(&walked).iter().map(|p| p.to_string()).collect();
            (kept, skipped)
        };

        let (kept, skipped) = judged("");
        assert_eq!(kept, ["api/gen/client.rs", "src/lib.rs"]);
        let said = |path: &str, reason: SkipReason, detail: &str| (path.to_owned(), reason, detail.to_owned());
        assert_eq!(
            skipped,
            [
                said("Cargo.lock", SkipReason::Generated, "a lock file"),
                said("gen.rs", SkipReason::Generated, "its first lines say \"do not edit\""),
                said("third_party/glam/conv.rs", SkipReason::Vendored, "in a `third_party/` folder"),
                said("third_party/zlib/inflate.c", SkipReason::Vendored, "in a `third_party/` folder"),
            ]
        );
        let (kept, skipped) = judged(
            "third_party/** -linguist-vendored\nthird_party/zlib/** linguist-vendored\n\
             api/gen/** linguist-generated\ngen.rs -linguist-generated\nCargo.lock linguist-generated=false\n",
        );
        assert_eq!(kept, ["Cargo.lock", "gen.rs", "src/lib.rs", "third_party/glam/conv.rs"]);
        assert_eq!(
            skipped,
            [
                said(
                    "api/gen/client.rs",
                    SkipReason::Generated,
                    ".gitattributes:3: api/gen/** linguist-generated"
                ),
                said(
                    "third_party/zlib/inflate.c",
                    SkipReason::Vendored,
                    ".gitattributes:2: third_party/zlib/** linguist-vendored"
                ),
            ]
        );
        let marked = stamp(root, &options, &[]).unwrap();
        assert_ne!(marked, before);

        // A subfolder's own .gitattributes decides for its files first.
        std::fs::write(root.join("third_party/zlib/.gitattributes"), "*.c -linguist-vendored\n").unwrap();
        assert_ne!(stamp(root, &options, &[]).unwrap(), marked);
        let walked = walk(root, &options).unwrap();
        assert!(paths(&walked).contains(&"third_party/zlib/inflate.c"), "{:?}", walked.skipped_files);
    }

    /// Walking a folder inside a repository, the marks of the repository's `info/attributes`
    /// and of the `.gitattributes` above the folder count, and changing them changes the stamp.
    #[test]
    fn attributes_outside_the_walked_folder_count_and_change_the_stamp() {
        let dir = tree(&["services/api/third_party/geo/conv.rs", "services/api/src/lib.rs"]);
        let top = dir.path();
        let root = top.join("services/api");
        std::fs::create_dir_all(top.join(".git/info")).unwrap();
        let options = WalkOptions::default();
        let before = stamp(&root, &options, &[]).unwrap();
        assert_eq!(paths(&walk(&root, &options).unwrap()), ["src/lib.rs"]);

        std::fs::write(top.join(".git/info/attributes"), "services/api/third_party/** -linguist-vendored\n").unwrap();
        let ours = stamp(&root, &options, &[]).unwrap();
        assert_ne!(ours, before);
        assert_eq!(paths(&walk(&root, &options).unwrap()), ["src/lib.rs", "third_party/geo/conv.rs"]);

        std::fs::write(top.join("services/.gitattributes"), "api/src/** linguist-generated\n").unwrap();
        assert_ne!(stamp(&root, &options, &[]).unwrap(), ours);
        assert_eq!(paths(&walk(&root, &options).unwrap()), ["third_party/geo/conv.rs"]);
    }

    /// Hidden files are left out, but for those that say how the project is built, tested and
    /// released (its CI, its cargo settings), which are walked and stamped as the rest.
    #[test]
    fn hidden_files_are_left_out_but_ci_and_build_settings() {
        let dir = tree(&[
            ".github/workflows/ci.yml",
            ".github/.secret.yml",
            ".gitlab-ci.yml",
            ".cargo/config.toml",
            ".git/config",
            ".idea/workspace.xml",
            ".cache/x.rs",
            ".env",
            "src/.hidden.rs",
            "src/lib.rs",
        ]);
        let root = dir.path();
        let options = WalkOptions::default();
        let walked = walk(root, &options).unwrap();
        assert_eq!(
            paths(&walked),
            [".cargo/config.toml", ".github/workflows/ci.yml", ".gitlab-ci.yml", "src/lib.rs"]
        );
        assert!(
            walked.skipped_files.is_empty(),
            "left out as ignored files are: {:?}",
            walked.skipped_files
        );
        let before = stamp(root, &options, &[]).unwrap();
        std::fs::write(root.join(".idea/workspace.xml"), "changed").unwrap();
        assert_eq!(stamp(root, &options, &[]).unwrap(), before);
        std::fs::write(root.join(".github/workflows/ci.yml"), "on: push\n").unwrap();
        assert_ne!(stamp(root, &options, &[]).unwrap(), before);

        // `index.keep_hidden` names more.
        let options = WalkOptions {
            keep_hidden: vec![".idea".to_owned(), ".env".to_owned()],
            ..WalkOptions::default()
        };
        let walked = walk(root, &options).unwrap();
        assert_eq!(
            paths(&walked),
            [
                ".cargo/config.toml",
                ".env",
                ".github/workflows/ci.yml",
                ".gitlab-ci.yml",
                ".idea/workspace.xml",
                "src/lib.rs"
            ]
        );
    }

    /// A generator's header marks a file generated; prose about generated code does not.
    #[test]
    fn a_generators_header_marks_a_file_generated_and_prose_about_generated_code_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let files = [
            ("go.go", "// Code generated by protoc-gen-go. DO NOT EDIT.\npackage x\n"),
            ("xtask.rs", "//! DO NOT EDIT! This file is generated by `xtask`.\nfn t() {}\n"),
            ("fb.rs", "// @generated by tonic-prost-build.\nfn u() {}\n"),
            (
                "lints.rs",
                "//! Code generated by the derive macros used to trip a lint.\nfn v() {}\n",
            ),
            (
                "config.rs",
                "// This lint occurs in code generated by `darling::FromAttributes`.\nfn w() {}\n",
            ),
        ];
        for (name, text) in files {
            std::fs::write(root.join(name), text).unwrap();
        }
        let walked = walk(root, &WalkOptions::default()).unwrap();
        assert_eq!(paths(&walked), ["config.rs", "lints.rs"]);
        assert_eq!(walked.skipped.get(&SkipReason::Generated), Some(&3));
    }

    /// A UTF-8 byte order mark is not part of a file's text.
    #[test]
    fn a_byte_order_mark_is_left_out_of_the_text() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("A.cs"), b"\xEF\xBB\xBFusing System;\nclass A {}\n").unwrap();
        let walked = walk(dir.path(), &WalkOptions::default()).unwrap();
        assert_eq!(walked.files[0].text, "using System;\nclass A {}\n");
    }

    /// A Git LFS pointer (a large file not checked out) is left out with the size it stands
    /// for; a file that only talks about pointers, or one too long to be one, is kept.
    #[test]
    fn git_lfs_pointers_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let oid = "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";
        let files = [
            (
                "weights.bin",
                format!("version https://git-lfs.github.com/spec/v1\n{oid}\nsize 12345\n"),
            ),
            (
                "data/train.csv",
                format!("version https://hawser.github.com/spec/v1\n{oid}\nsize 7\n"),
            ),
            (
                "docs/lfs.md",
                format!("Pointers look like this:\n\nversion https://git-lfs.github.com/spec/v1\n{oid}\nsize 1\n"),
            ),
            ("no_size.txt", format!("version https://git-lfs.github.com/spec/v1\n{oid}\n")),
            (
                "long.txt",
                format!("version https://git-lfs.github.com/spec/v1\n{oid}\nsize 1\n{}", "x\n".repeat(600)),
            ),
        ];
        for (name, text) in &files {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let walked = walk(root, &WalkOptions::default()).unwrap();
        assert_eq!(paths(&walked), ["docs/lfs.md", "long.txt", "no_size.txt"]);
        let mut skipped: Vec<(&str, SkipReason, &str)> = walked
            .skipped_files
            .iter()
            .map(|s| (s.path.as_str(), s.reason, s.detail.as_deref().unwrap_or_default()))
            .collect();
        skipped.sort();
        assert_eq!(
            skipped,
            [
                (
                    "data/train.csv",
                    SkipReason::LfsPointer,
                    "a Git LFS pointer to 7 bytes not checked out (`git lfs pull` fetches them)"
                ),
                (
                    "weights.bin",
                    SkipReason::LfsPointer,
                    "a Git LFS pointer to 12345 bytes not checked out (`git lfs pull` fetches them)"
                ),
            ]
        );
    }

    #[test]
    fn a_listing_judges_names_at_once_and_contents_when_each_file_is_read() {
        let dir = tree(&["src/main.rs", "vendor/dep.rs", "Cargo.lock", "web/app.min.js"]);
        let root = dir.path();
        std::fs::write(root.join("logo.rs"), [0x89, b'P', b'N', b'G', 0, 1]).unwrap();
        std::fs::write(root.join("bundle.js"), format!("var a={};\n", "1+".repeat(2000))).unwrap();
        std::fs::write(root.join("gen.rs"), "// Code generated by a tool. DO NOT EDIT.\nfn x() {}\n").unwrap();
        let options = WalkOptions::default();

        let listing = list(root, &options).unwrap();
        let listed: Vec<(&str, u64)> = listing.files.iter().map(|f| (f.path.as_str(), f.bytes)).collect();
        assert_eq!(
            listed,
            [("bundle.js", 4008), ("gen.rs", 52), ("logo.rs", 6), ("src/main.rs", 23)],
            "only names and places judged: {listing:?}"
        );
        assert_eq!(listing.skipped.get(&SkipReason::Vendored), Some(&1));
        assert_eq!(listing.skipped.get(&SkipReason::Generated), Some(&2), "Cargo.lock, *.min.js");
        let read: Vec<Result<String, SkipReason>> = listing
            .files
            .iter()
            .map(|f| listing.read(f, &options).map(|f| f.text).map_err(|skip| skip.reason))
            .collect();
        assert_eq!(
            read,
            [
                Err(SkipReason::Minified),
                Err(SkipReason::Generated),
                Err(SkipReason::Binary),
                Ok("content of src/main.rs\n".to_owned())
            ]
        );

        // A walk is the listing with every file read.
        let walk = walk(root, &options).unwrap();
        assert_eq!(paths(&walk), ["src/main.rs"]);
        let counts: Vec<(SkipReason, usize)> = walk.skipped.into_iter().collect();
        assert_eq!(
            counts,
            [
                (SkipReason::Binary, 1),
                (SkipReason::Generated, 3),
                (SkipReason::Vendored, 1),
                (SkipReason::Minified, 1)
            ]
        );
        // A file changed after the listing is judged as it is when read.
        std::fs::write(root.join("logo.rs"), "fn logo() {}\n").unwrap();
        let logo = listing.files.iter().find(|f| f.path == "logo.rs").unwrap();
        assert_eq!(listing.read(logo, &options).unwrap().text, "fn logo() {}\n");
    }

    #[test]
    fn configured_excludes_leave_out_files_and_folders() {
        let dir = tree(&["src/main.rs", "docs/guide.md", "README.md", "gen/out.rs", "gen/keep.txt"]);
        let options = WalkOptions {
            exclude: vec!["docs/".into(), "*.md".into(), "gen/*.rs".into()],
            ..WalkOptions::default()
        };
        let walk = walk(dir.path(), &options).unwrap();
        assert_eq!(paths(&walk), ["gen/keep.txt", "src/main.rs"]);
    }

    #[test]
    fn a_bad_exclude_pattern_is_named() {
        let dir = tree(&["a.rs"]);
        let options = WalkOptions {
            exclude: vec!["src/[".into()],
            ..WalkOptions::default()
        };
        let err = walk(dir.path(), &options).unwrap_err();
        assert!(err.to_string().contains("src/["), "{err}");
    }

    #[test]
    fn the_root_must_be_an_existing_folder() {
        let dir = tree(&["a.rs"]);
        assert!(matches!(
            walk(&dir.path().join("nope"), &WalkOptions::default()),
            Err(WalkError::Missing(_))
        ));
        assert!(matches!(
            walk(&dir.path().join("a.rs"), &WalkOptions::default()),
            Err(WalkError::NotADirectory(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn links_out_of_the_repository_are_skipped_and_links_inside_kept_once() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("etc")).unwrap();
        std::fs::write(outside.path().join("etc/shadow"), "root:x:0:0:secret\n").unwrap();
        std::fs::write(outside.path().join("passwd"), "root:x:0:0:secret\n").unwrap();
        let dir = tree(&["src/a.rs", "src/lib/b.rs"]);
        let root = dir.path();
        symlink(outside.path().join("etc"), root.join("etc_link")).unwrap();
        symlink(outside.path().join("passwd"), root.join("src/passwd.rs")).unwrap();
        symlink(root.join("src/lib"), root.join("lib_alias")).unwrap();
        symlink("a.rs", root.join("src/z_alias.rs")).unwrap();

        let walk = walk(root, &WalkOptions::default()).unwrap();
        assert_eq!(paths(&walk), ["src/a.rs", "src/lib/b.rs"], "{walk:?}");
        assert!(walk.files.iter().all(|f| !f.text.contains("secret")));
        assert_eq!(walk.skipped.get(&SkipReason::OutsideRepository), Some(&2), "{walk:?}");
        assert_eq!(walk.skipped.get(&SkipReason::LinkedCopy), Some(&2), "{walk:?}");
        let copies: Vec<(&str, Option<&str>)> = walk
            .skipped_files
            .iter()
            .filter(|s| s.reason == SkipReason::LinkedCopy)
            .map(|s| (s.path.as_str(), s.detail.as_deref()))
            .collect();
        assert_eq!(
            copies,
            [
                ("src/z_alias.rs", Some("the same file as `src/a.rs`")),
                ("lib_alias/b.rs", Some("the same file as `src/lib/b.rs`"))
            ]
        );
        assert!(walk.problems.iter().any(|p| p.contains("etc_link")), "{:?}", walk.problems);
        assert!(
            walk.skipped_files.iter().any(|s| s.path == "etc_link"
                && s.reason == SkipReason::OutsideRepository
                && s.detail.as_deref() == Some("a symbolic link out of the repository, not followed")),
            "{:?}",
            walk.skipped_files
        );
        assert!(walk.problems.iter().all(|p| !p.contains("secret")));
    }

    #[cfg(unix)]
    #[test]
    fn a_file_reached_only_through_an_inside_link_is_kept_under_the_link() {
        let dir = tree(&["docs/guide.md"]);
        std::fs::write(dir.path().join(".ignore"), "docs/\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("docs"), dir.path().join("manual")).unwrap();
        let walk = walk(dir.path(), &WalkOptions::default()).unwrap();
        assert_eq!(paths(&walk), ["manual/guide.md"], "{walk:?}");
    }
}
