//! The `linguist-vendored` and `linguist-generated` attributes of a repository's
//! `.gitattributes` files, read as GitHub's linguist reads them, so that a team's own marks decide
//! what the walk's guesses cannot: code of its own under a `third_party/` folder
//! (`third_party/** -linguist-vendored`), a folder of generated clients
//! (`api/gen/** linguist-generated`), a file whose header only talks about generated code
//! (`macros.rs -linguist-generated`).
//!
//! Patterns follow gitattributes (gitignore's globs relative to the file's folder, no `!`
//! patterns, a pattern for a folder does not reach the files in it: `dir/**` does); a deeper
//! folder's file decides before a shallower one's, and in one file, of the lines whose pattern
//! matches a path, the last that names an attribute decides it: set (`linguist-vendored`,
//! `=true`), unset (`-linguist-vendored`, `=false`) or back to the walk's own judgement
//! (`!linguist-vendored`).
//!
//! As in git, the repository's `info/attributes` (marks of one clone, not committed: the place
//! for a team that cannot change the repository it indexes) decides before every
//! `.gitattributes`, and when the indexed folder is inside a repository, the `.gitattributes` of
//! the folders above it, up to the repository's top, count too (after its own). A user's global
//! and the system's attributes files are not read: an index must not depend on whose machine
//! built it.
//! This module only reads the files and answers for paths; the walk decides what to skip.

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::repository::Repository;

/// What one line says of an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Set,
    Unset,
    /// `!attr`: as if no line named it.
    Unspecified,
}

/// One line: its pattern, and what it says of the two attributes (`None`: nothing).
#[derive(Debug)]
struct Rule {
    /// Where it is, as a person finds it: `third_party/.gitattributes:3: *.c -linguist-vendored`.
    source: String,
    pattern: Gitignore,
    vendored: Option<Mark>,
    generated: Option<Mark>,
}

/// The rules of one attributes file, and where the paths they match are.
#[derive(Debug)]
struct Folder {
    /// For a folder inside the root: the folder, relative to the root, with a trailing `/`
    /// (the root: empty); only the paths under it are its own.
    prefix: String,
    /// For a folder above the root (or the repository's `info/attributes`): the root relative
    /// to it, with a trailing `/`, put before a path to match its patterns.
    lead: String,
    rules: Vec<Rule>,
}

impl Folder {
    /// `path` (relative to the root) as this file's patterns see it; `None` outside its folder.
    fn relative<'p>(&self, path: &'p str) -> Option<std::borrow::Cow<'p, str>> {
        if self.lead.is_empty() {
            path.strip_prefix(self.prefix.as_str()).map(Into::into)
        } else {
            Some(format!("{}{path}", self.lead).into())
        }
    }
}

/// The attributes of a repository's files, from the attributes files read so far: the
/// repository's `info/attributes`, the `.gitattributes` of the folders above the root within the
/// repository, the root's own, and those of the folders the walk entered
/// ([`Attributes::add_folder`]).
#[derive(Debug, Default)]
pub struct Attributes {
    /// Files whose lines name either attribute, in the order they lose: folders above the root
    /// (the repository's top first), then the root and its subfolders (parents before their
    /// subfolders), then `info/attributes`.
    folders: Vec<Folder>,
    /// How many of `folders`, at the end, come after the folders the walk enters: the
    /// repository's `info/attributes` (0 or 1).
    last: usize,
}

impl Attributes {
    /// The rules that reach the files under `root`: its repository's `info/attributes`, the
    /// `.gitattributes` of the folders from the repository's top down to `root`, and `root`'s
    /// own; none when there are no such files or they cannot be read. A line whose pattern is
    /// not a valid glob is left out, as git leaves it.
    pub fn read(root: &Path) -> Attributes {
        let mut attributes = Attributes::default();
        let repository = Repository::around(root);
        if let Some(repository) = &repository {
            for (dir, lead) in &repository.above {
                let file = dir.join(".gitattributes");
                attributes.push(dir, &file, file.display().to_string(), String::new(), lead.clone());
            }
        }
        attributes.add_folder(root, "");
        if let Some(repository) = repository {
            let info = repository.git_dir.join("info");
            let lead = repository.above.first().map(|(_, lead)| lead.clone()).unwrap_or_default();
            let file = info.join("attributes");
            let shown = file.display().to_string();
            if let Some(folder) = folder_of(&repository.top, &file, shown, String::new(), lead) {
                attributes.folders.push(folder);
                attributes.last = 1;
            }
        }
        attributes
    }

    /// The attributes files outside `root` that [`Attributes::read`] reads (whether they exist
    /// or not): the `.gitattributes` of the folders above it and `info/attributes`, what beside
    /// the files under `root` changes which of them are vendored or generated.
    pub fn files_outside(root: &Path) -> Vec<PathBuf> {
        let Some(repository) = Repository::around(root) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = repository.above.iter().map(|(dir, _)| dir.join(".gitattributes")).collect();
        files.push(repository.git_dir.join("info").join("attributes"));
        files
    }

    /// Adds the rules of `file`, patterns relative to `dir`, if any, before those that decide
    /// after the walk's folders.
    fn push(&mut self, dir: &Path, file: &Path, shown: String, prefix: String, lead: String) {
        if let Some(folder) = folder_of(dir, file, shown, prefix, lead) {
            let at = self.folders.len() - self.last;
            self.folders.insert(at, folder);
        }
    }

    /// Adds the rules of `root/folder/.gitattributes` (`folder` relative to `root`, without a
    /// trailing `/`; empty: the root), if there is such a file. Folders are added parents
    /// first, as a walk enters them.
    pub fn add_folder(&mut self, root: &Path, folder: &str) {
        let prefix = if folder.is_empty() { String::new() } else { format!("{folder}/") };
        let dir = root.join(folder);
        let shown = format!("{prefix}.gitattributes");
        self.push(&dir, &dir.join(".gitattributes"), shown, prefix, String::new());
    }

    /// The rules of `text`, a `.gitattributes` at `root`.
    pub fn parse(root: &Path, text: &str) -> Attributes {
        let rules = rules(root, ".gitattributes", text);
        Attributes {
            folders: vec![Folder {
                prefix: String::new(),
                lead: String::new(),
                rules,
            }],
            last: 0,
        }
    }

    /// Whether the file at `path` (relative to the root, `/` separators) is marked as
    /// vendored (`Some(true)`), as not vendored (`Some(false)`), or not at all.
    pub fn vendored(&self, path: &str) -> Option<bool> {
        self.vendored_by(path).map(|(set, _)| set)
    }

    /// The same for `linguist-generated`.
    pub fn generated(&self, path: &str) -> Option<bool> {
        self.generated_by(path).map(|(set, _)| set)
    }

    /// [`Attributes::vendored`], with the line that decides it, where it is
    /// (`.gitattributes:3: third_party/** linguist-vendored`).
    pub fn vendored_by(&self, path: &str) -> Option<(bool, &str)> {
        self.decide(path, |rule| rule.vendored)
    }

    /// [`Attributes::generated`], with the line that decides it.
    pub fn generated_by(&self, path: &str) -> Option<(bool, &str)> {
        self.decide(path, |rule| rule.generated)
    }

    fn decide(&self, path: &str, says: impl Fn(&Rule) -> Option<Mark>) -> Option<(bool, &str)> {
        // Backwards: `info/attributes`, then the deepest folder holding `path` first.
        let mark = self.folders.iter().rev().find_map(|folder| {
            let within = folder.relative(path)?;
            folder
                .rules
                .iter()
                .rev()
                .filter_map(|rule| says(rule).map(|mark| (rule, mark)))
                .find(|(rule, _)| rule.pattern.matched(within.as_ref(), false).is_ignore())
        })?;
        match mark {
            (rule, Mark::Set) => Some((true, rule.source.as_str())),
            (rule, Mark::Unset) => Some((false, rule.source.as_str())),
            (_, Mark::Unspecified) => None,
        }
    }
}

/// The rules of the attributes file at `file`, its patterns relative to `dir`; `None` when it
/// cannot be read or names neither attribute.
fn folder_of(dir: &Path, file: &Path, shown: String, prefix: String, lead: String) -> Option<Folder> {
    let text = std::fs::read_to_string(file).ok()?;
    let rules = rules(dir, &shown, &text);
    (!rules.is_empty()).then_some(Folder { prefix, lead, rules })
}

/// The rules of an attributes file's `text`, patterns relative to `dir`; `shown`: the file's
/// name for a person.
fn rules(dir: &Path, shown: &str, text: &str) -> Vec<Rule> {
    text.lines()
        .enumerate()
        .filter_map(|(at, line)| rule(dir, line, || format!("{shown}:{}: {}", at + 1, line.trim())))
        .collect()
}

/// One line of a `.gitattributes`, if it says anything of the two attributes; `source` says
/// where it is.
fn rule(root: &Path, line: &str, source: impl FnOnce() -> String) -> Option<Rule> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    // A pattern with spaces is written in double quotes, with C-style escapes.
    let (pattern, rest) = match line.strip_prefix('"') {
        Some(quoted) => unquote(quoted)?,
        None => {
            let (pattern, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            (pattern.to_owned(), rest)
        }
    };
    let words = rest.split_whitespace();
    // Negative patterns are forbidden in gitattributes (git warns and ignores the line).
    if pattern.starts_with('!') {
        return None;
    }
    let (mut vendored, mut generated) = (None, None);
    for word in words {
        let (name, mark) = match word.split_once('=') {
            Some((name, "true")) => (name, Mark::Set),
            Some((name, "false")) => (name, Mark::Unset),
            Some(_) => continue,
            None => match word.as_bytes().first() {
                Some(b'-') => (&word[1..], Mark::Unset),
                Some(b'!') => (&word[1..], Mark::Unspecified),
                _ => (word, Mark::Set),
            },
        };
        match name {
            "linguist-vendored" => vendored = Some(mark),
            "linguist-generated" => generated = Some(mark),
            _ => {}
        }
    }
    if vendored.is_none() && generated.is_none() {
        return None;
    }
    let mut builder = GitignoreBuilder::new(root);
    builder.add_line(None, &pattern).ok()?;
    let pattern = builder.build().ok()?;
    Some(Rule {
        source: source(),
        pattern,
        vendored,
        generated,
    })
}

/// A quoted pattern as git reads it (`quoted`: what follows the opening `"`): the pattern with
/// its C-style escapes (`\"`, `\\`, `\t`, octal bytes such as `\303\251` for `é`) read,
/// and the rest of the line. `None` for a pattern without its closing quote, with an unknown
/// escape or bytes that are not UTF-8: git leaves such a line out too.
fn unquote(quoted: &str) -> Option<(String, &str)> {
    let bytes = quoted.as_bytes();
    let mut pattern = Vec::new();
    let mut at = 0;
    loop {
        match *bytes.get(at)? {
            b'"' => return Some((String::from_utf8(pattern).ok()?, &quoted[at + 1..])),
            b'\\' => {
                let escaped = *bytes.get(at + 1)?;
                at += 2;
                pattern.push(match escaped {
                    b'a' => 0x07,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'v' => 0x0b,
                    b'"' | b'\\' => escaped,
                    b'0'..=b'3' => {
                        let digits = bytes.get(at..at + 2)?;
                        if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                            return None;
                        }
                        at += 2;
                        (escaped - b'0') * 64 + (digits[0] - b'0') * 8 + (digits[1] - b'0')
                    }
                    _ => return None,
                });
            }
            byte => {
                pattern.push(byte);
                at += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_that_names_an_attribute_decides_it() {
        let root = Path::new("/repo");
        let attributes = Attributes::parse(
            root,
            "# ours, though under third_party/\n\
             third_party/** -linguist-vendored\n\
             third_party/zlib/** linguist-vendored\n\
             api/gen/** linguist-generated=true\n\
             api/gen/handwritten.rs linguist-generated=false\n\
             *.pb.rs linguist-generated\n\
             docs/** !linguist-vendored\n\
             !negated linguist-vendored\n\
             \"docs/our vendor/**\" -linguist-vendored\n\
             \"docs/caf\\303\\251 \\\"menu\\\"/**\" -linguist-vendored\n\
             \"unclosed/** linguist-vendored\n\
             *.rs text eol=lf\n",
        );
        assert_eq!(attributes.vendored("third_party/glam/conv.rs"), Some(false));
        assert_eq!(attributes.vendored("third_party/zlib/inflate.c"), Some(true));
        assert_eq!(attributes.vendored("src/lib.rs"), None);
        assert_eq!(attributes.vendored("docs/guide.md"), None, "`!attr`: the walk judges");
        assert_eq!(attributes.vendored("negated"), None, "a negative pattern is left out");
        assert_eq!(attributes.vendored("docs/our vendor/a.md"), Some(false), "a quoted pattern");
        assert_eq!(
            attributes.vendored("docs/caf\u{e9} \"menu\"/a.md"),
            Some(false),
            "escapes in a quoted pattern: octal UTF-8, a quote"
        );
        assert_eq!(attributes.vendored("unclosed/a.md"), None, "no closing quote: left out");
        assert_eq!(attributes.generated("api/gen/client.rs"), Some(true));
        assert_eq!(attributes.generated("api/gen/handwritten.rs"), Some(false));
        assert_eq!(
            attributes.generated("src/proto/msg.pb.rs"),
            Some(true),
            "a name matches at any depth"
        );
        assert_eq!(attributes.generated("third_party/glam/conv.rs"), None);
        assert_eq!(attributes.folders[0].rules.len(), 8, "lines naming neither attribute are not kept");
    }

    #[test]
    fn a_pattern_for_a_folder_does_not_reach_its_files() {
        let attributes = Attributes::parse(Path::new("/repo"), "vendor -linguist-vendored\nlib/* linguist-generated\n");
        assert_eq!(attributes.vendored("vendor/dep.rs"), None);
        assert_eq!(attributes.generated("lib/a.rs"), Some(true));
        assert_eq!(attributes.generated("lib/deep/a.rs"), None, "`*` stops at a `/`");
    }

    /// A subfolder's `.gitattributes` decides for its files before the top-level one, its
    /// patterns relative to it.
    #[test]
    fn a_deeper_folders_file_decides_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("libs/geo/third_party")).unwrap();
        std::fs::write(
            root.join(".gitattributes"),
            "**/third_party/** linguist-vendored\nlibs/**/*.gen.rs linguist-generated\n",
        )
        .unwrap();
        std::fs::write(
            root.join("libs/geo/.gitattributes"),
            "third_party/** -linguist-vendored\n*.gen.rs !linguist-generated\n",
        )
        .unwrap();
        // Parents first, as a walk enters them (a folder without a file adds nothing).
        let mut attributes = Attributes::read(root);
        for folder in ["libs", "libs/geo", "libs/geo/third_party", "libs/web"] {
            attributes.add_folder(root, folder);
        }
        assert_eq!(attributes.vendored("libs/geo/third_party/conv.rs"), Some(false));
        assert_eq!(attributes.vendored("libs/web/third_party/x.js"), Some(true));
        assert_eq!(
            attributes.generated("libs/geo/src/a.gen.rs"),
            None,
            "`!attr` below, the walk judges"
        );
        assert_eq!(attributes.generated("libs/web/b.gen.rs"), Some(true));
        assert_eq!(
            Attributes::read(root).vendored("libs/geo/third_party/conv.rs"),
            Some(true),
            "the top-level file alone"
        );
    }

    /// Indexing a folder inside a repository: the `.gitattributes` above it count after its
    /// own, their patterns relative to their folders; the repository's `info/attributes`
    /// decides before all of them, even a subfolder's.
    #[test]
    fn files_above_the_root_and_info_attributes_count_as_in_git() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path();
        let root = top.join("services/api");
        std::fs::create_dir_all(root.join("gen")).unwrap();
        std::fs::create_dir_all(top.join(".git/info")).unwrap();
        std::fs::write(
            top.join(".gitattributes"),
            "services/api/third_party/** -linguist-vendored\n**/gen/** linguist-generated\n",
        )
        .unwrap();
        std::fs::write(top.join("services/.gitattributes"), "api/vendor/** !linguist-vendored\n").unwrap();
        std::fs::write(root.join(".gitattributes"), "gen/** -linguist-generated\n").unwrap();
        std::fs::write(root.join("gen/.gitattributes"), "keep.rs linguist-generated\n").unwrap();
        std::fs::write(top.join(".git/info/attributes"), "services/api/gen/keep.rs -linguist-generated\n").unwrap();

        let mut attributes = Attributes::read(&root);
        attributes.add_folder(&root, "gen");
        assert_eq!(attributes.vendored("third_party/glam.rs"), Some(false), "the top's file");
        assert_eq!(attributes.vendored("vendor/dep.rs"), None, "a folder's file between");
        assert_eq!(attributes.generated("gen/a.rs"), Some(false), "the root's file before the top's");
        assert_eq!(
            attributes.generated("gen/keep.rs"),
            Some(false),
            "info/attributes before the folder's own"
        );
        assert_eq!(
            Attributes::files_outside(&root),
            [
                top.canonicalize().unwrap().join(".gitattributes"),
                top.canonicalize().unwrap().join("services/.gitattributes"),
                top.canonicalize().unwrap().join(".git/info/attributes"),
            ]
        );

        // A linked worktree's `.git` is a file; `info/attributes` is the main repository's.
        let worktree = top.join("wt");
        std::fs::create_dir_all(top.join(".git/worktrees/wt")).unwrap();
        std::fs::create_dir_all(&worktree).unwrap();
        std::fs::write(worktree.join(".git"), "gitdir: ../.git/worktrees/wt\n").unwrap();
        std::fs::write(top.join(".git/worktrees/wt/commondir"), "../..\n").unwrap();
        std::fs::write(top.join(".git/info/attributes"), "*.rs linguist-generated\n").unwrap();
        assert_eq!(Attributes::read(&worktree).generated("src/lib.rs"), Some(true));
        assert_eq!(Attributes::read(&worktree).generated("README.md"), None);
    }

    #[test]
    fn no_file_no_rules() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Attributes::read(dir.path()).vendored("vendor/x.rs"), None);
    }
}
