//! Why one path is or is not indexed: the walk's decisions ([`crate::walk`]) retold for a
//! single path, naming what decided it, the `.gitignore` line with its file and number, the
//! configured exclude, the hidden folder, the attributes line, the reason a file was left out
//! when read. A user asks it of a file retrieval never finds (`graft index --why`); ignored
//! files, which `--skipped` does not list, are the ones it is for.
//!
//! It follows the walk's rules, as the `ignore` crate applies them: configured excludes first,
//! then `.ignore` files (the deepest folder's first), then `.gitignore` files (likewise, not
//! above the repository's top), then the repository's `info/exclude`; a folder left out takes
//! its files with it. A test holds it to the walk on one tree. This module reads files; it
//! writes nothing and does not look in an index.

use std::path::{Component, Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::overrides::OverrideBuilder;
use ignore::Match;

use crate::attributes::Attributes;
use crate::repository::{Nested, Repository};
use crate::walk::{read_source, skipped_by_name, Skip, SkipReason, WalkError, WalkOptions};

/// What the walk does with a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A file the walk keeps: indexed at the next run.
    Kept,
    /// A folder the walk enters.
    Entered,
    /// Nothing at that path.
    Missing,
    /// Not inside the repository.
    Outside,
    /// Left out by an `index.exclude` pattern (itself, or a folder above it).
    Excluded { pattern: String, folder: Option<String> },
    /// Left out by an ignore file's line (`.gitignore:3: /target`).
    Ignored { by: String, folder: Option<String> },
    /// Hidden (its name, or a folder's above it, starts with `.`).
    Hidden { folder: Option<String> },
    /// Left out by its name, place or contents, as `graft index --skipped` lists it.
    Skipped(Skip),
}

impl Verdict {
    /// One word for scripts: `indexed`, `folder`, `missing`, `outside`, `excluded`, `ignored`,
    /// `hidden`, or a [`SkipReason`].
    pub fn decision(&self) -> &'static str {
        match self {
            Verdict::Kept => "indexed",
            Verdict::Entered => "folder",
            Verdict::Missing => "missing",
            Verdict::Outside => "outside",
            Verdict::Excluded { .. } => "excluded",
            Verdict::Ignored { .. } => "ignored",
            Verdict::Hidden { .. } => "hidden",
            Verdict::Skipped(skip) => skip.reason.as_str(),
        }
    }

    /// What decided it, for a person.
    pub fn detail(&self) -> Option<String> {
        let under = |folder: &Option<String>| folder.as_ref().map(|f| format!(", as the folder `{f}/` is")).unwrap_or_default();
        match self {
            Verdict::Kept => Some("the walk keeps it".to_owned()),
            Verdict::Entered => Some("a folder the walk enters (ask of a file in it)".to_owned()),
            Verdict::Missing => Some("no such file in the repository".to_owned()),
            Verdict::Outside => Some("not inside the repository".to_owned()),
            Verdict::Excluded { pattern, folder } => Some(format!("`index.exclude` pattern `{pattern}`{}", under(folder))),
            Verdict::Ignored { by, folder } => Some(format!("{by}{}", under(folder))),
            Verdict::Hidden { folder } => Some(format!(
                "{}; of hidden files only CI and build settings (`.github/`, `.gitlab-ci.yml`, `.cargo/`, ...) and the names in `index.keep_hidden` are indexed",
                match folder {
                    Some(folder) => format!("in the hidden folder `{folder}/`"),
                    None => "a hidden file".to_owned(),
                }
            )),
            Verdict::Skipped(skip) => skip.detail.clone(),
        }
    }
}

/// What the walk of `root` does with `path` (relative to `root`, `/` or the platform's
/// separators; or absolute, inside `root`).
pub fn explain(root: &Path, options: &WalkOptions, path: &Path) -> Result<Verdict, WalkError> {
    let real_root = root.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => WalkError::Missing(root.to_owned()),
        _ => WalkError::Unreadable {
            path: root.to_owned(),
            message: e.to_string(),
        },
    })?;
    let Some(parts) = parts_within(&real_root, root, path) else {
        return Ok(Verdict::Outside);
    };
    let full = parts.iter().fold(real_root.clone(), |p, part| p.join(part));
    let meta = match std::fs::metadata(&full) {
        Ok(meta) => meta,
        // A link to nothing: the walk cannot read it.
        Err(e) if std::fs::symlink_metadata(&full).is_ok() => {
            let detail = format!("a symbolic link to nothing ({e})");
            return Ok(Verdict::Skipped(Skip::new(SkipReason::Unreadable, detail)));
        }
        Err(_) => return Ok(Verdict::Missing),
    };
    let excludes = excludes(&real_root, options)?;
    let rules = IgnoreRules::read(&real_root, &parts);

    // From the top down: a folder left out takes everything under it.
    for depth in 1..=parts.len() {
        let here = &parts[..depth];
        let relative = here.join("/");
        let is_dir = depth < parts.len() || meta.is_dir();
        let folder = (depth < parts.len()).then(|| relative.clone());
        let at = real_root.join(&relative);
        if let Some((pattern, _)) = excludes.iter().find(|(_, rule)| rule.matched(&at, is_dir).is_ignore()) {
            let pattern = pattern.clone();
            return Ok(Verdict::Excluded { pattern, folder });
        }
        if let Some(by) = rules.ignored(&real_root, here, is_dir) {
            return Ok(Verdict::Ignored { by, folder });
        }
        let name = &here[depth - 1];
        if !options.walks(name) {
            return Ok(Verdict::Hidden { folder });
        }
    }
    if meta.is_dir() {
        // A repository inside this one (the folder itself, or one above it): all its files
        // are left out.
        return Ok(match nested_repository(&real_root, &parts, parts.len(), options) {
            Some(skip) => Verdict::Skipped(skip),
            None => Verdict::Entered,
        });
    }
    let relative = parts.join("/");
    let skipped = |reason, what: String| Verdict::Skipped(Skip::new(reason, what));
    match full.canonicalize() {
        Ok(real) if real.starts_with(&real_root) => {}
        Ok(_) => {
            let what = "a symbolic link out of the repository, not followed".to_owned();
            return Ok(skipped(SkipReason::OutsideRepository, what));
        }
        Err(e) => return Ok(skipped(SkipReason::Unreadable, e.to_string())),
    }
    if let Some(skip) = nested_repository(&real_root, &parts, parts.len() - 1, options) {
        return Ok(Verdict::Skipped(skip));
    }
    let mut attributes = Attributes::read(root);
    for depth in 1..parts.len() {
        attributes.add_folder(root, &parts[..depth].join("/"));
    }
    let generated = attributes.generated_by(&relative);
    if let Some(skip) = skipped_by_name(&relative, attributes.vendored_by(&relative), generated) {
        return Ok(Verdict::Skipped(skip));
    }
    let judge_markers = generated.map(|(set, _)| set) != Some(false);
    match read_source(&full, &relative, &real_root, judge_markers, options) {
        Ok(_) => Ok(Verdict::Kept),
        Err(skip) => Ok(Verdict::Skipped(skip)),
    }
}

/// The repository inside the walked one that the first `folders` of `parts` lead into, when
/// the walk leaves its files out (not with `index.submodules`, nor outside a repository).
fn nested_repository(real_root: &Path, parts: &[String], folders: usize, options: &WalkOptions) -> Option<Skip> {
    if options.submodules || Repository::around(real_root).is_none() {
        return None;
    }
    (1..=folders).find_map(|depth| {
        let folder = parts[..depth].join("/");
        let kind = Nested::at(&real_root.join(&folder))?;
        Some(Skip::under(SkipReason::Submodule, kind.detail(&folder), &folder))
    })
}

/// `path` relative to the root, with `/` separators, as the index names it (read as
/// [`explain`] reads it); `None` outside the root.
pub fn relative(root: &Path, path: &Path) -> Option<String> {
    let real_root = root.canonicalize().ok()?;
    parts_within(&real_root, root, path).map(|parts| parts.join("/"))
}

/// Whether the index holds a file, and as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The project has no index yet.
    NoIndex,
    /// Not in the index.
    Absent,
    /// In the index, with the text the file has now.
    Current,
    /// In the index, with an older text.
    Older,
}

impl Held {
    /// In words, after a verdict on whether the walk keeps the file (`kept`).
    pub fn say(self, kept: bool) -> Option<&'static str> {
        match (self, kept) {
            (Held::NoIndex, _) => Some("the project has no index yet"),
            (Held::Current, true) => Some("in the index as it is now"),
            (Held::Older, true) => Some("in the index as it was: the next `graft index` reads it again"),
            (Held::Absent, true) => Some("not in the index yet: the next `graft index` adds it"),
            (Held::Current | Held::Older, false) => Some("still in the index: the next `graft index` removes it"),
            (Held::Absent, false) => None,
        }
    }
}

/// Whether an index whose files are `files` (path → hash, `Catalog::files`) holds the file
/// at `relative` under `root`, and with its text now.
pub fn held(files: &std::collections::HashMap<String, String>, root: &Path, relative: &str) -> Held {
    let Some(hash) = files.get(relative) else {
        return Held::Absent;
    };
    match std::fs::read(root.join(relative)) {
        Ok(now) if crate::indexer::file_hash(crate::walk::without_bom(&now)) == *hash => Held::Current,
        _ => Held::Older,
    }
}

/// `path`'s components below the root, from a path relative to the current folder (when that
/// is inside the repository), to the root, or absolute; `None` when it is outside.
fn parts_within(real_root: &Path, root: &Path, path: &Path) -> Option<Vec<String>> {
    let candidates: Vec<PathBuf> = if path.is_absolute() {
        vec![path.to_owned()]
    } else {
        let mut candidates = vec![root.join(path)];
        if let Ok(here) = std::env::current_dir() {
            if here.canonicalize().is_ok_and(|h| h.starts_with(real_root) && h != real_root) {
                candidates.insert(0, here.join(path));
            }
        }
        candidates
    };
    let candidate = candidates.iter().find(|c| c.exists()).unwrap_or(&candidates[0]);
    // Lexically: a link inside the repository is judged as the walk sees it, by its own path.
    let absolute = if candidate.is_absolute() {
        candidate.clone()
    } else {
        std::env::current_dir().ok()?.join(candidate)
    };
    let normal = normalize(&absolute);
    // The root as written and as it really is (a link to it, `/tmp` on macOS).
    let lexical_root = std::env::current_dir().ok()?.join(root);
    let below = normal
        .strip_prefix(real_root)
        .ok()
        .map(Path::to_owned)
        .or_else(|| normal.strip_prefix(normalize(&lexical_root)).ok().map(Path::to_owned))?;
    below
        .components()
        .map(|c| c.as_os_str().to_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
        .filter(|parts| !parts.is_empty())
}

/// `path` without `.` and `..` components, lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    normal
}

/// Each configured exclude, as the walk's overrides (one each, to name the one that matches).
fn excludes(real_root: &Path, options: &WalkOptions) -> Result<Vec<(String, ignore::overrides::Override)>, WalkError> {
    let bad = |pattern: &String, e: ignore::Error| WalkError::BadExclude {
        pattern: pattern.clone(),
        message: e.to_string(),
    };
    options
        .exclude
        .iter()
        .map(|pattern| {
            let mut builder = OverrideBuilder::new(real_root);
            builder.add(&format!("!{pattern}")).map_err(|e| bad(pattern, e))?;
            Ok((pattern.clone(), builder.build().map_err(|e| bad(pattern, e))?))
        })
        .collect()
}

/// The ignore files that reach a path: each folder's `.ignore` and `.gitignore`, from the
/// repository's top (or the file system's root, outside a repository) down to the path's
/// folder, and the `info/exclude` of the repository and of those inside it on the way.
struct IgnoreRules {
    /// Deepest folder first: its `.ignore` and its `.gitignore`.
    folders: Vec<(Option<Gitignore>, Option<Gitignore>)>,
    /// Deepest repository first.
    excludes: Vec<Gitignore>,
}

impl IgnoreRules {
    fn read(real_root: &Path, parts: &[String]) -> IgnoreRules {
        let repository = Repository::around(real_root);
        let top = repository.as_ref().map(|r| r.top.clone());
        // The folders above the root (the walk reads their ignore files too), the root, and
        // those below it on the way to the path.
        let mut dirs: Vec<PathBuf> = real_root.ancestors().map(Path::to_owned).collect();
        dirs.reverse();
        let mut below = real_root.to_owned();
        for part in &parts[..parts.len().saturating_sub(1)] {
            below.push(part);
            dirs.push(below.clone());
        }
        let folders = dirs
            .iter()
            .rev()
            .map(|dir| {
                // `.gitignore` files above the repository's top do not count.
                let git = top.as_ref().is_none_or(|top| dir.starts_with(top));
                (
                    matcher(dir, &dir.join(".ignore")),
                    git.then(|| matcher(dir, &dir.join(".gitignore"))).flatten(),
                )
            })
            .collect();
        // Repositories inside this one (a clone, a worktree) bring their own info/exclude.
        let below_root = dirs.iter().rev().take(parts.len().saturating_sub(1));
        let mut excludes: Vec<Gitignore> = below_root
            .filter_map(|dir| matcher(dir, &crate::repository::exclude_file(dir)?))
            .collect();
        excludes.extend(repository.and_then(|r| matcher(&r.top, &r.git_dir.join("info").join("exclude"))));
        IgnoreRules { folders, excludes }
    }

    /// The line that leaves `here` (the components below the root) out, if one does.
    fn ignored(&self, real_root: &Path, here: &[String], is_dir: bool) -> Option<String> {
        let path = here.iter().fold(real_root.to_owned(), |p, part| p.join(part));
        // `.ignore` files first, the deepest first; then `.gitignore` files; then info/exclude.
        let kinds = [
            self.folders.iter().filter_map(|(ignore, _)| ignore.as_ref()).collect::<Vec<_>>(),
            self.folders.iter().filter_map(|(_, git)| git.as_ref()).collect(),
            self.excludes.iter().collect(),
        ];
        for matchers in kinds {
            for matcher in matchers {
                // A matcher reaches only the paths under its own folder.
                if !path.starts_with(matcher.path()) {
                    continue;
                }
                match matcher.matched(&path, is_dir) {
                    Match::None => continue,
                    Match::Whitelist(_) => return None,
                    Match::Ignore(glob) => return Some(source_of(glob)),
                }
            }
        }
        None
    }
}

/// The rules of the ignore file `file`, patterns relative to `dir`; `None` without one.
fn matcher(dir: &Path, file: &Path) -> Option<Gitignore> {
    if !file.is_file() {
        return None;
    }
    let mut builder = GitignoreBuilder::new(dir);
    builder.add(file);
    builder.build().ok().filter(|m| !m.is_empty())
}

/// `file:line: pattern` for a glob of an ignore file.
fn source_of(glob: &ignore::gitignore::Glob) -> String {
    let original = glob.original();
    let Some(file) = glob.from() else {
        return format!("`{original}`");
    };
    let line = std::fs::read_to_string(file).ok().and_then(|text| {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.trim_end() == original)
            .map(|(at, _)| at + 1)
            .last()
    });
    match line {
        Some(line) => format!("{}:{line}: {original}", file.display()),
        None => format!("{}: {original}", file.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::walk;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// The walk of `root`, once `explain` has called kept exactly the files of `files` the
    /// walk keeps.
    fn walk_as_explained(root: &Path, options: &WalkOptions, files: &[&str]) -> crate::walk::Walk {
        let walked = walk(root, options).unwrap();
        let kept: Vec<&str> = walked.files.iter().map(|f| f.path.as_str()).collect();
        let mut explained: Vec<&str> = files
            .iter()
            .copied()
            .filter(|file| explain(root, options, Path::new(file)).unwrap() == Verdict::Kept)
            .collect();
        explained.sort();
        assert_eq!(explained, kept);
        walked
    }

    /// Every file of a tree with ignore files at several levels, a whitelist line, the
    /// repository's `info/exclude`, a configured exclude, hidden folders and skipped files: the
    /// walk keeps exactly those `explain` calls kept, and each other says what left it out.
    #[test]
    fn each_path_is_explained_as_the_walk_decides_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let files = [
            ".gitignore",
            "src/.gitignore",
            ".ignore",
            ".git/info/exclude",
            ".git/config",
            "src/lib.rs",
            "src/generated_a.rs",
            "target/debug/x.rs",
            "app.log",
            "keep.log",
            "build/out.rs",
            "scratch/t.rs",
            "local.rs",
            "docs/guide.md",
            "docs/private/secret.md",
            ".idea/ws.xml",
            ".github/workflows/ci.yml",
            "vendor/dep.rs",
            "bundle.min.js",
        ];
        for file in files {
            write(root, file, &format!("// {file}\nfn f() {{}}\n"));
        }
        write(root, ".gitignore", "/target\n*.log\n!keep.log\nbuild/\n");
        write(root, "src/.gitignore", "generated_*.rs\n");
        write(root, ".ignore", "scratch/\n");
        write(root, ".git/info/exclude", "# mine\nlocal.rs\n");
        write(root, "empty.rs", "\n");
        write(root, ".env", "TOKEN=x\n");
        let options = WalkOptions {
            exclude: vec!["docs/private/**".to_owned()],
            ..WalkOptions::default()
        };

        let walked = walk_as_explained(root, &options, &[files.as_slice(), &["empty.rs"]].concat());
        let kept: Vec<&str> = walked.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(kept, [".github/workflows/ci.yml", "docs/guide.md", "keep.log", "src/lib.rs"]);

        let said = |path: &str| {
            let verdict = explain(root, &options, Path::new(path)).unwrap();
            (verdict.decision(), verdict.detail().unwrap_or_default())
        };
        let root_shown = root.canonicalize().unwrap();
        let at = |file: &str| root_shown.join(file).display().to_string();
        assert_eq!(
            said("target/debug/x.rs"),
            ("ignored", format!("{}:1: /target, as the folder `target/` is", at(".gitignore")))
        );
        assert_eq!(said("app.log"), ("ignored", format!("{}:2: *.log", at(".gitignore"))));
        assert_eq!(
            said("build/out.rs"),
            ("ignored", format!("{}:4: build/, as the folder `build/` is", at(".gitignore")))
        );
        assert_eq!(
            said("src/generated_a.rs"),
            ("ignored", format!("{}:1: generated_*.rs", at("src/.gitignore")))
        );
        assert_eq!(
            said("scratch/t.rs"),
            ("ignored", format!("{}:1: scratch/, as the folder `scratch/` is", at(".ignore")))
        );
        assert_eq!(said("local.rs"), ("ignored", format!("{}:2: local.rs", at(".git/info/exclude"))));
        assert_eq!(
            said("docs/private/secret.md"),
            ("excluded", "`index.exclude` pattern `docs/private/**`".to_owned())
        );
        assert_eq!(said(".idea/ws.xml").0, "hidden");
        assert!(
            said(".idea/ws.xml").1.starts_with("in the hidden folder `.idea/`;"),
            "{:?}",
            said(".idea/ws.xml")
        );
        assert!(said(".env").1.starts_with("a hidden file;"), "{:?}", said(".env"));
        assert_eq!(said("vendor/dep.rs"), ("vendored", "in a `vendor/` folder".to_owned()));
        assert_eq!(said("bundle.min.js"), ("generated", "a `.min.js` file".to_owned()));
        assert_eq!(said("empty.rs"), ("empty", String::new()));
        assert_eq!(said("docs").0, "folder");
        assert_eq!(said("nope.rs").0, "missing");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("gone.rs"), root.join("dangling.rs")).unwrap();
            let (decision, detail) = said("dangling.rs");
            assert_eq!(decision, "unreadable");
            assert!(detail.starts_with("a symbolic link to nothing"), "{detail}");
            assert!(!walk(root, &options).unwrap().files.iter().any(|f| f.path == "dangling.rs"));
        }
        assert_eq!(said("../elsewhere.rs").0, "outside");
        assert_eq!(
            explain(root, &options, &root.join("src/lib.rs")).unwrap(),
            Verdict::Kept,
            "an absolute path"
        );
        let keeping = WalkOptions {
            keep_hidden: vec![".idea".to_owned()],
            ..options.clone()
        };
        assert_eq!(
            explain(root, &keeping, Path::new(".idea/ws.xml")).unwrap(),
            Verdict::Kept,
            "index.keep_hidden"
        );
    }

    /// Repositories inside the walked one (a submodule, a clone with its own `info/exclude`,
    /// a worktree) are left out with what each is, unless `index.submodules` keeps them; a
    /// folder outside any repository is walked whole, clones and all. `explain` agrees with
    /// the walk on every file, either way.
    #[test]
    fn repositories_inside_the_repository_are_left_out_as_git_leaves_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let files = [
            "src/lib.rs",
            "libs/common/src/lib.rs",
            "tools/clone/main.rs",
            "tools/clone/local.rs",
            "wt/src/lib.rs",
        ];
        for file in files {
            write(root, file, &format!("// {file}\nfn f() {{}}\n"));
        }
        write(root, ".git/config", "[core]\n");
        write(root, ".git/modules/libs/common/config", "[core]\n");
        write(root, "libs/common/.git", "gitdir: ../../.git/modules/libs/common\n");
        write(root, "tools/clone/.git/info/exclude", "local.rs\n");
        write(root, ".git/worktrees/wt/commondir", "../..\n");
        let worktree = root.join(".git/worktrees/wt").canonicalize().unwrap();
        write(root, "wt/.git", &format!("gitdir: {}\n", worktree.display()));

        let agree = |options: &WalkOptions| {
            let walked = walk_as_explained(root, options, &files);
            let kept: Vec<String> = walked.files.iter().map(|f| f.path.clone()).collect();
            (kept, walked.skipped_files)
        };
        let options = WalkOptions::default();
        let (kept, skipped) = agree(&options);
        assert_eq!(kept, ["src/lib.rs"]);
        let mut skipped: Vec<(&str, &str)> = skipped
            .iter()
            .map(|s| (s.path.as_str(), s.detail.as_deref().unwrap_or_default()))
            .collect();
        skipped.sort();
        assert!(
            skipped.iter().all(|(path, _)| *path != "tools/clone/local.rs"),
            "the clone's info/exclude ignores it, so it is not listed: {skipped:?}"
        );
        assert_eq!(
            skipped,
            [
                ("libs/common/src/lib.rs", "in the git submodule `libs/common/`"),
                ("tools/clone/main.rs", "in `tools/clone/`, a git repository of its own"),
                ("wt/src/lib.rs", "in `wt/`, a git worktree"),
            ]
        );
        let said = |path: &str| {
            let verdict = explain(root, &options, Path::new(path)).unwrap();
            (verdict.decision(), verdict.detail().unwrap_or_default())
        };
        assert_eq!(
            said("libs/common/src/lib.rs"),
            ("submodule", "in the git submodule `libs/common/`".to_owned())
        );
        assert_eq!(said("libs/common"), ("submodule", "in the git submodule `libs/common/`".to_owned()));
        assert_eq!(said("libs").0, "folder");
        let exclude = root.join("tools/clone/.git/info/exclude").canonicalize().unwrap();
        assert_eq!(
            said("tools/clone/local.rs"),
            ("ignored", format!("{}:1: local.rs", exclude.display()))
        );

        let keeping = WalkOptions {
            submodules: true,
            ..WalkOptions::default()
        };
        let (kept, skipped) = agree(&keeping);
        assert_eq!(
            kept,
            ["libs/common/src/lib.rs", "src/lib.rs", "tools/clone/main.rs", "wt/src/lib.rs"]
        );
        assert!(skipped.is_empty(), "{skipped:?}");

        // Not in a repository: a folder of clones is walked whole.
        std::fs::remove_dir_all(root.join(".git")).unwrap();
        let (kept, _) = agree(&options);
        assert_eq!(kept.len(), 4, "{kept:?}");
    }
}
