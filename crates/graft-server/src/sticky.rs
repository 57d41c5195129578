//! Retrieved code that stays put while the user types.
//!
//! A completion's search query is the code around the cursor, so every keystroke would search
//! again and could reorder the hits. Retrieved code comes first in a completion prompt: a new
//! order is a new prompt start, and the model reads the whole prompt again instead of reusing
//! it from its prompt cache. So a completion request in the same file, within
//! [`REGION_LINES`] lines of the last search there and with the same options (how many hits,
//! which other indexes searched with it: [`Scope`]), reuses that search's hits. Moving away,
//! another file, other options, [`KEEP_FOR`] passing, or a re-index of the project or of an
//! index searched with it searches again. This module only remembers hits; it does not search.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use graft_index::SearchHit;

/// How far (in lines) the cursor may move from the last search and keep its hits.
pub const REGION_LINES: usize = 24;
/// How long hits are reused at most.
pub const KEEP_FOR: Duration = Duration::from_secs(300);
/// Places remembered per index (editors, files); the oldest goes first.
const PLACES: usize = 32;
/// Without a path, the file is told by this many bytes of its start.
const FILE_START_BYTES: usize = 256;

/// Where a completion is asked for: which file, and the cursor's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spot {
    file: u64,
    line: usize,
}

impl Spot {
    /// The file is its path when the client sent one, else the first bytes of its text (which
    /// typing further down leaves alone); the line is the prefix's line count.
    pub fn of(path: Option<&str>, prefix: &str) -> Spot {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        match path {
            Some(path) => ("path", path).hash(&mut hasher),
            None => {
                let mut end = prefix.len().min(FILE_START_BYTES);
                while !prefix.is_char_boundary(end) {
                    end -= 1;
                }
                ("start", &prefix[..end], prefix.len() >= FILE_START_BYTES).hash(&mut hasher);
            }
        }
        Spot {
            file: hasher.finish(),
            line: prefix.matches('\n').count(),
        }
    }
}

/// What a search looked for besides the place: how many hits, in which other indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub top_k: usize,
    /// The other indexes searched with the project's own, by their owners' names
    /// (`also_search`), in order.
    pub across: Vec<String>,
}

struct Place {
    spot: Spot,
    scope: Scope,
    hits: Vec<SearchHit>,
    at: Instant,
}

/// The last searches' hits by place, for one index.
#[derive(Default)]
pub struct Sticky {
    places: Mutex<VecDeque<Place>>,
}

impl Sticky {
    /// The hits of the last search near `spot` in its file with `scope`, if still fresh.
    pub fn near(&self, spot: Spot, scope: &Scope) -> Option<Vec<SearchHit>> {
        let places = self.places.lock().unwrap_or_else(|p| p.into_inner());
        places
            .iter()
            .rev()
            .find(|p| {
                p.spot.file == spot.file
                    && p.scope == *scope
                    && p.spot.line.abs_diff(spot.line) <= REGION_LINES
                    && p.at.elapsed() <= KEEP_FOR
            })
            .map(|p| p.hits.clone())
    }

    /// Remembers a search's hits at `spot`, in place of any earlier search in that file
    /// with the same `scope`.
    pub fn keep(&self, spot: Spot, scope: Scope, hits: Vec<SearchHit>) {
        let mut places = self.places.lock().unwrap_or_else(|p| p.into_inner());
        places.retain(|p| !(p.spot.file == spot.file && p.scope == scope));
        if places.len() >= PLACES {
            places.pop_front();
        }
        places.push_back(Place {
            spot,
            scope,
            hits,
            at: Instant::now(),
        });
    }

    /// Forgets everything (the index changed).
    pub fn clear(&self) {
        self.places.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Forgets the searches that spanned the index of `owner` too (it changed).
    pub fn forget_across(&self, owner: &str) {
        let mut places = self.places.lock().unwrap_or_else(|p| p.into_inner());
        places.retain(|p| !p.scope.across.iter().any(|a| a == owner));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(path: &str) -> SearchHit {
        SearchHit {
            project: None,
            path: path.into(),
            start_line: 1,
            end_line: 2,
            score: 1.0,
            symbol: String::new(),
            language: "rust".into(),
            text: "x".into(),
            found_by: Default::default(),
        }
    }

    fn scope(top_k: usize, across: &[&str]) -> Scope {
        Scope {
            top_k,
            across: across.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn hits_are_reused_near_the_same_place_only() {
        let sticky = Sticky::default();
        let file = "fn main() {\n".repeat(40);
        let here = Spot::of(Some("src/main.rs"), &file);
        sticky.keep(here, scope(5, &[]), vec![hit("a.rs")]);
        // One line typed further: the same hits.
        let typed = format!("{file}    let x = 1;\n");
        let near = sticky.near(Spot::of(Some("src/main.rs"), &typed), &scope(5, &[])).unwrap();
        assert_eq!(near[0].path, "a.rs");
        // Another file, other options, or the cursor far away: search again.
        assert!(sticky.near(Spot::of(Some("src/lib.rs"), &typed), &scope(5, &[])).is_none());
        assert!(sticky.near(Spot::of(Some("src/main.rs"), &typed), &scope(6, &[])).is_none());
        assert!(sticky.near(Spot::of(Some("src/main.rs"), &typed), &scope(5, &["lib"])).is_none());
        let far = format!("{file}{}", "\n".repeat(REGION_LINES + 1));
        assert!(sticky.near(Spot::of(Some("src/main.rs"), &far), &scope(5, &[])).is_none());
        // A new search in the file replaces the old one; a re-index forgets all.
        sticky.keep(Spot::of(Some("src/main.rs"), &far), scope(5, &[]), vec![hit("b.rs")]);
        assert_eq!(
            sticky.near(Spot::of(Some("src/main.rs"), &far), &scope(5, &[])).unwrap()[0].path,
            "b.rs"
        );
        assert!(sticky.near(here, &scope(5, &[])).is_none(), "the old place was replaced");
        sticky.clear();
        assert!(sticky.near(Spot::of(Some("src/main.rs"), &far), &scope(5, &[])).is_none());
    }

    #[test]
    fn a_reindex_of_an_index_searched_too_forgets_the_searches_across_it() {
        let sticky = Sticky::default();
        let (main, lib) = (Spot::of(Some("src/main.rs"), "x\n"), Spot::of(Some("src/lib.rs"), "x\n"));
        sticky.keep(main, scope(5, &["shared", "util"]), vec![hit("a.rs")]);
        sticky.keep(lib, scope(5, &[]), vec![hit("b.rs")]);
        sticky.forget_across("other");
        assert!(sticky.near(main, &scope(5, &["shared", "util"])).is_some());
        sticky.forget_across("util");
        assert!(sticky.near(main, &scope(5, &["shared", "util"])).is_none());
        assert!(sticky.near(lib, &scope(5, &[])).is_some(), "a search of the own index alone stays");
    }

    #[test]
    fn without_a_path_the_file_is_told_by_its_start() {
        let file = format!("// the top of a file\n{}", "let a = 1;\n".repeat(40));
        let typed = format!("{file}let b = 2;\n");
        assert_eq!(Spot::of(None, &file).file, Spot::of(None, &typed).file);
        let other = format!("// another file\n{}", "let a = 1;\n".repeat(40));
        assert_ne!(Spot::of(None, &file).file, Spot::of(None, &other).file);
        assert_eq!(Spot::of(None, &typed).line, Spot::of(None, &file).line + 1);
    }
}
