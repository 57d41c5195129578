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
//! This module only reads the file and answers for paths; the walk decides what to skip.

use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

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
    pattern: Gitignore,
    vendored: Option<Mark>,
    generated: Option<Mark>,
}

/// The rules of one folder's `.gitattributes`.
#[derive(Debug)]
struct Folder {
    /// The folder, relative to the root, with a trailing `/` (the root: empty).
    prefix: String,
    rules: Vec<Rule>,
}

/// The attributes of a repository's files, from the `.gitattributes` files read so far
/// ([`Attributes::add_folder`]): its top-level one, and those of the folders the walk entered.
#[derive(Debug, Default)]
pub struct Attributes {
    /// Folders whose file names either attribute, parents before their subfolders.
    folders: Vec<Folder>,
}

impl Attributes {
    /// The rules of `root/.gitattributes`; none when there is no such file or it cannot be
    /// read. A line whose pattern is not a valid glob is left out, as git leaves it.
    pub fn read(root: &Path) -> Attributes {
        let mut attributes = Attributes::default();
        attributes.add_folder(root, "");
        attributes
    }

    /// Adds the rules of `root/folder/.gitattributes` (`folder` relative to `root`, without a
    /// trailing `/`; empty: the root), if there is such a file. Folders are added parents
    /// first, as a walk enters them.
    pub fn add_folder(&mut self, root: &Path, folder: &str) {
        let dir = root.join(folder);
        let Ok(text) = std::fs::read_to_string(dir.join(".gitattributes")) else {
            return;
        };
        let rules: Vec<Rule> = text.lines().filter_map(|line| rule(&dir, line)).collect();
        if !rules.is_empty() {
            let prefix = if folder.is_empty() { String::new() } else { format!("{folder}/") };
            self.folders.push(Folder { prefix, rules });
        }
    }

    /// The rules of `text`, a `.gitattributes` at `root`.
    pub fn parse(root: &Path, text: &str) -> Attributes {
        let rules = text.lines().filter_map(|line| rule(root, line)).collect();
        Attributes {
            folders: vec![Folder {
                prefix: String::new(),
                rules,
            }],
        }
    }

    /// Whether the file at `path` (relative to the root, `/` separators) is marked as
    /// vendored (`Some(true)`), as not vendored (`Some(false)`), or not at all.
    pub fn vendored(&self, path: &str) -> Option<bool> {
        self.decide(path, |rule| rule.vendored)
    }

    /// The same for `linguist-generated`.
    pub fn generated(&self, path: &str) -> Option<bool> {
        self.decide(path, |rule| rule.generated)
    }

    fn decide(&self, path: &str, says: impl Fn(&Rule) -> Option<Mark>) -> Option<bool> {
        // Parents come before their subfolders: backwards, the deepest folder holding `path`
        // comes first.
        let mark = self.folders.iter().rev().find_map(|folder| {
            let within = path.strip_prefix(folder.prefix.as_str())?;
            folder
                .rules
                .iter()
                .rev()
                .filter_map(|rule| says(rule).map(|mark| (rule, mark)))
                .find(|(rule, _)| rule.pattern.matched(within, false).is_ignore())
                .map(|(_, mark)| mark)
        })?;
        match mark {
            Mark::Set => Some(true),
            Mark::Unset => Some(false),
            Mark::Unspecified => None,
        }
    }
}

/// One line of a `.gitattributes`, if it says anything of the two attributes.
fn rule(root: &Path, line: &str) -> Option<Rule> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    // A pattern with spaces is written in double quotes; one with C-style escapes in them is
    // left out (rare in paths: git's unquoting is not repeated here).
    let (pattern, rest) = match line.strip_prefix('"') {
        Some(quoted) => {
            let (pattern, rest) = quoted.split_once('"')?;
            if pattern.contains('\\') {
                return None;
            }
            (pattern, rest)
        }
        None => line.split_once(char::is_whitespace).unwrap_or((line, "")),
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
    builder.add_line(None, pattern).ok()?;
    let pattern = builder.build().ok()?;
    Some(Rule {
        pattern,
        vendored,
        generated,
    })
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
             *.rs text eol=lf\n",
        );
        assert_eq!(attributes.vendored("third_party/glam/conv.rs"), Some(false));
        assert_eq!(attributes.vendored("third_party/zlib/inflate.c"), Some(true));
        assert_eq!(attributes.vendored("src/lib.rs"), None);
        assert_eq!(attributes.vendored("docs/guide.md"), None, "`!attr`: the walk judges");
        assert_eq!(attributes.vendored("negated"), None, "a negative pattern is left out");
        assert_eq!(attributes.vendored("docs/our vendor/a.md"), Some(false), "a quoted pattern");
        assert_eq!(attributes.generated("api/gen/client.rs"), Some(true));
        assert_eq!(attributes.generated("api/gen/handwritten.rs"), Some(false));
        assert_eq!(
            attributes.generated("src/proto/msg.pb.rs"),
            Some(true),
            "a name matches at any depth"
        );
        assert_eq!(attributes.generated("third_party/glam/conv.rs"), None);
        assert_eq!(attributes.folders[0].rules.len(), 7, "lines naming neither attribute are not kept");
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

    #[test]
    fn no_file_no_rules() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Attributes::read(dir.path()).vendored("vendor/x.rs"), None);
    }
}
