//! Definition lookup: the names the code around the cursor (or a question) uses, looked up
//! exactly in the index's symbol table, so the chunk that *defines* what the code calls comes
//! first even where the files that merely *use* it outnumber it in keyword and vector scores.
//!
//! - Names are taken nearest the cursor first; keywords, the languages' standard names,
//!   names the snippet defines itself (`let x`, `def f`, `x = ...`) and the plain words of
//!   comments and strings (`"weight"`, not `"#{render(x)}"` or `'String#strip'`) are skipped.
//! - `Type::method` and `module.func` narrow a name to definitions inside that type or in a
//!   file of that module; where none is there, a function of that name elsewhere is only a
//!   guess (`Linker.new` is not the one `new` another object defines).
//! - Where several files define a name, the one the current file imports (its `use` /
//!   `import` / `#include` lines) wins, then the one nearest the current file's path; a name
//!   defined in many files and not narrowed by either is too common to mean one place and is
//!   skipped.
//! - A module in a path (`io` of `io::Result`) is not looked up, nor what a Rust file takes
//!   from the standard library (`use std::task::{Context, Poll}`), nor a name a standard
//!   module qualifies (`mem::zeroed`) that no module of that name here defines; a module
//!   declared on one line (`mod ready;`) is no definition to show.
//! - Only definitions in the current file's family of languages are taken (C with C++,
//!   JavaScript with TypeScript, Java with Kotlin and Scala; [`chunker::family`]).
//!
//! This module only chooses chunk ids; [`crate::search`] fuses them with the ranked search.

use std::collections::{HashMap, HashSet};

use crate::catalog::{Catalog, StoredSymbol};
use crate::chunker;
use crate::error::IndexError;

/// Names looked up per query, nearest the cursor first.
const MAX_NAMES: usize = 32;
/// A name defined in more files than this, and not narrowed by an import, a qualifier or
/// the current file's folder, is skipped.
const MAX_FILES_PER_NAME: usize = 3;
/// Symbol records read per query.
const MAX_RECORDS: usize = 4096;
/// Lines before and after the cursor whose names are looked up.
const LINES_BEFORE: usize = 12;
const LINES_AFTER: usize = 4;

/// Where the names to look up come from.
#[derive(Debug, Clone, Copy)]
pub enum Names<'a> {
    /// Code around a cursor: the current file before and after it.
    Code { before: &'a str, after: &'a str },
    /// A question in prose: only words written like code (`parse_config`, `TokenVault`,
    /// `Config::port`, `` `render` ``) are looked up.
    Question(&'a str),
}

/// One name to look up, with the qualifier written before it (`Type` of `Type::method`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    name: String,
    qualifier: Option<String>,
    /// Whether the qualifier is written as a path's (`io::Result`), not a value's (`io.read`).
    path_qualified: bool,
    /// Lines between it and the cursor's line (0: on it).
    line: usize,
    /// Bytes between it and the cursor (code after the cursor counts double).
    distance: usize,
}

/// The chunk ids that define the names `names` uses, best first, at most `limit`, none from
/// `current_path` (the file being edited, already in the prompt).
pub fn definition_chunks(catalog: &dyn Catalog, names: Names, current_path: Option<&str>, limit: usize) -> Result<Vec<u64>, IndexError> {
    Ok(ranked_definitions(catalog, names, current_path, limit)?
        .into_iter()
        .map(|(chunk, _)| chunk)
        .collect())
}

/// How near the cursor, and how surely, a definition's name is: the order of
/// [`definition_chunks`], comparable between indexes (the same code's names looked up in
/// each), least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Nearness {
    /// Lines between the name and the cursor's line.
    line: usize,
    certainty: Certainty,
    /// Bytes between the name and the cursor.
    distance: usize,
}

/// [`definition_chunks`], each with its [`Nearness`].
pub fn ranked_definitions(
    catalog: &dyn Catalog,
    names: Names,
    current_path: Option<&str>,
    limit: usize,
) -> Result<Vec<(u64, Nearness)>, IndexError> {
    let wanted = match names {
        Names::Code { before, after } => code_names(before, after),
        Names::Question(text) => question_names(text),
    };
    if wanted.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let imports = match names {
        Names::Code { before, after } => imported_words(before).union(&imported_words(after)).cloned().collect(),
        Names::Question(_) => HashSet::new(),
    };
    let lookup: Vec<&str> = wanted.iter().map(|w| w.name.as_str()).collect();
    let mut by_name: HashMap<String, Vec<StoredSymbol>> = HashMap::new();
    for record in catalog.definitions(&lookup, MAX_RECORDS)? {
        if Some(record.path.as_str()) == current_path {
            continue;
        }
        by_name.entry(record.name.clone()).or_default().push(record);
    }
    // Each name's definition, then nearest line first, and on one line the surest first.
    let mut chosen: Vec<(Nearness, u64)> = wanted
        .iter()
        .filter_map(|want| {
            let records = by_name.get(&want.name)?;
            let (best, certainty) = choose(records, want, &imports, current_path)?;
            let near = Nearness {
                line: want.line,
                certainty,
                distance: want.distance,
            };
            Some((near, best.chunk))
        })
        .collect();
    chosen.sort_by_key(|(near, _)| *near);
    let mut seen = HashSet::new();
    Ok(chosen
        .into_iter()
        .filter(|(_, chunk)| seen.insert(*chunk))
        .take(limit)
        .map(|(near, chunk)| (chunk, near))
        .collect())
}

/// How surely a name means the definition chosen for it, surest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Certainty {
    /// Its qualifier (a type, a module) or an import pointed at it.
    Narrowed,
    /// One file defines the name.
    Unique,
    /// A few files define it; the nearest one was taken.
    Guessed,
}

/// The one definition `want` most likely means among `records` (all of its name), or `None`
/// when it is too common to tell.
fn choose<'r>(
    records: &'r [StoredSymbol],
    want: &Wanted,
    imports: &HashSet<String>,
    current_path: Option<&str>,
) -> Option<(&'r StoredSymbol, Certainty)> {
    // Code calls what its own family of languages defines: a C file's `result` is not a Ruby
    // method of that name. Another language's definition is taken only where the family has
    // none and the name is one no plain word would be (a build script's `MRB_INT64`, a
    // template's `lower_type_name`), and never surely (a file of no known language takes any).
    let family = current_path.and_then(|path| chunker::family(chunker::language_of(path)));
    let of_family = |r: &StoredSymbol| family.is_none() || chunker::family(chunker::language_of(&r.path)) == family;
    // A module declared on one line (Rust's `mod ready;`) shows nothing of the module (its file
    // does): the macro or function of that name is meant (`ready!`), or nothing here.
    let records: Vec<&StoredSymbol> = records
        .iter()
        .filter(|r| !(r.kind == "module" && r.start_line == r.end_line))
        .collect();
    let mut candidates: Vec<&StoredSymbol> = records.iter().copied().filter(|r| of_family(r)).collect();
    let across_languages = candidates.is_empty();
    if across_languages {
        if !is_distinctive(&want.name) {
            return None;
        }
        candidates = records;
    }
    let mut narrowed = false;
    // `Linker.new`, `Vec::new`: a type's name (`CamelCase`) before a name that no definition
    // inside that type, or in a file of that module, has. A function or constant of that name
    // elsewhere is then only a guess (a type may still be meant: `Kind::Variant` often wraps a
    // type `Variant`).
    let mut other_type = want.qualifier.as_deref().is_some_and(is_type_name);
    if let Some(qualifier) = &want.qualifier {
        let in_type: Vec<&StoredSymbol> = candidates.iter().copied().filter(|r| &r.scope == qualifier).collect();
        let in_module: Vec<&StoredSymbol> = candidates
            .iter()
            .copied()
            .filter(|r| path_words(&r.path).any(|w| w == qualifier))
            .collect();
        other_type &= in_module.is_empty();
        // `io::Result`, `mem::replace`, `fmt::Display`: a standard library's module before a
        // name that no definition inside a module (or type) of that name here has means the
        // standard library's, not a `Result` the repository defines elsewhere (tokio's task
        // `Result`).
        if want.path_qualified && in_type.is_empty() && in_module.is_empty() && is_standard_module(qualifier) {
            return None;
        }
        if !in_type.is_empty() {
            candidates = in_type;
            narrowed = true;
        } else if !in_module.is_empty() && in_module.len() < candidates.len() {
            candidates = in_module;
            narrowed = true;
        }
        other_type &= !narrowed;
    }
    let import_score = |r: &StoredSymbol| path_words(&r.path).filter(|w| imports.contains(*w)).count();
    let best_import = candidates.iter().map(|r| import_score(r)).max().unwrap_or(0);
    let before = candidates.len();
    candidates.retain(|r| import_score(r) == best_import);
    narrowed |= candidates.len() < before;

    let near = |r: &StoredSymbol| current_path.map_or(0, |c| shared_folders(c, &r.path));
    let mut files: HashSet<&str> = candidates.iter().map(|r| r.path.as_str()).collect();
    if files.len() > MAX_FILES_PER_NAME {
        // Too common to mean one place, unless the current folder narrows it enough.
        let best_near = candidates.iter().map(|r| near(r)).max().unwrap_or(0);
        candidates.retain(|r| best_near > 0 && near(r) == best_near);
        files = candidates.iter().map(|r| r.path.as_str()).collect();
        if files.is_empty() || files.len() > MAX_FILES_PER_NAME {
            return None;
        }
    }
    let best = candidates.into_iter().min_by(|a, b| {
        near(b)
            .cmp(&near(a))
            .then(kind_rank(&a.kind).cmp(&kind_rank(&b.kind)))
            .then(a.path.len().cmp(&b.path.len()))
            .then(a.path.cmp(&b.path))
            .then(a.start_line.cmp(&b.start_line))
    })?;
    let certainty = match (files.len(), narrowed) {
        _ if across_languages || (other_type && matches!(best.kind.as_str(), "function" | "constant")) => Certainty::Guessed,
        (1, true) => Certainty::Narrowed,
        (1, false) => Certainty::Unique,
        _ => Certainty::Guessed,
    };
    Some((best, certainty))
}

/// Whether a module name is one of a standard library's, as written before `::` (Rust's
/// `std`, `core` and `alloc` and their modules, C++'s `std`): the repository's own modules of
/// those names narrow a name first.
fn is_standard_module(name: &str) -> bool {
    matches!(
        name,
        "std"
            | "core"
            | "alloc"
            | "any"
            | "array"
            | "borrow"
            | "boxed"
            | "cell"
            | "char"
            | "cmp"
            | "collections"
            | "convert"
            | "env"
            | "error"
            | "ffi"
            | "fmt"
            | "fs"
            | "future"
            | "hash"
            | "hint"
            | "io"
            | "iter"
            | "marker"
            | "mem"
            | "net"
            | "num"
            | "ops"
            | "option"
            | "os"
            | "panic"
            | "path"
            | "pin"
            | "process"
            | "ptr"
            | "rc"
            | "result"
            | "slice"
            | "str"
            | "string"
            | "sync"
            | "task"
            | "thread"
            | "time"
            | "vec"
    )
}

/// Whether a name is written as a type's is (`Linker`, `HashMap`), not as a value's (`config`)
/// or a constant's (`EXPOSE_IO`).
fn is_type_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase()) && name.chars().any(|c| c.is_ascii_lowercase())
}

/// Whether a name is one no plain word would be: written with `_` or a capital after its first
/// letter (`MRB_INT64`, `lower_rb`, `hasRemaining`), unlike `result` or `round`.
fn is_distinctive(name: &str) -> bool {
    name.contains('_') || name.chars().skip(1).any(|c| c.is_ascii_uppercase())
}

/// Types and functions before constants and modules: what code most often needs to see.
fn kind_rank(kind: &str) -> u8 {
    match kind {
        "type" | "class" | "trait" => 0,
        "function" | "macro" => 1,
        "constant" => 2,
        _ => 3,
    }
}

/// The folders and the file stem of a path (`src/runtime/task/mod.rs` → src, runtime, task).
fn path_words(path: &str) -> impl Iterator<Item = &str> {
    let file = path.rsplit_once('/').map_or(path, |(_, file)| file);
    let stem = file.split('.').next().unwrap_or(file);
    folders(path)
        .chain(std::iter::once(stem))
        .filter(|word| !matches!(*word, "mod" | "lib" | "index" | "__init__" | "main" | ""))
}

/// How many leading folders two paths share.
fn shared_folders(a: &str, b: &str) -> usize {
    folders(a).zip(folders(b)).take_while(|(x, y)| x == y).count()
}

/// The folders of a path, outermost first.
fn folders(path: &str) -> impl Iterator<Item = &str> {
    path.rsplit_once('/')
        .map_or("", |(dir, _)| dir)
        .split('/')
        .filter(|f| !f.is_empty())
}

/// Words on the import lines of a file (`use a::b::{C, D}`, `from a.b import c`,
/// `import "x/y"`, `#include "a/b.h"`, `using A.B;`, `require 'a/b'`).
fn imported_words(code: &str) -> HashSet<String> {
    const IMPORTS: [&str; 12] = [
        "use ",
        "from ",
        "import ",
        "#include",
        "require(",
        "extern crate ",
        "using ",
        "require ",
        "require_relative ",
        "require_once",
        "include_once",
        "include ",
    ];
    let mut words = HashSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        let line = line.strip_prefix("pub ").unwrap_or(line);
        // C#'s `using (var x = ...)` and `using var x = ...` dispose; they import nothing.
        let disposes = line.starts_with("using (") || line.starts_with("using var ");
        let is_import =
            (IMPORTS.iter().any(|p| line.starts_with(p)) && !disposes) || (line.starts_with("const ") && line.contains("require("));
        if is_import {
            for word in identifiers(line).map(|(_, w)| w) {
                if !is_keyword(word) && !matches!(word, "crate" | "super" | "self" | "std" | "h" | "js" | "ts") {
                    words.insert(word.to_owned());
                }
            }
        }
    }
    words
}

/// The names a file's `use` lines take from Rust's standard library (`Context` and `Poll` of
/// `use std::task::{Context, Poll};`, `Display` of `use core::fmt::{self, Display}`): a
/// definition of one of those names here (a library's own `Poll`) is not the one the file
/// means.
fn standard_imports(code: &str) -> impl Iterator<Item = &str> {
    code.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            ["use std::", "use core::", "use alloc::", "use ::std::"]
                .iter()
                .find_map(|p| line.strip_prefix(p))
        })
        .flat_map(|path| {
            identifiers(path)
                .filter(|&(offset, name)| !is_module_segment(path, offset, name) && !matches!(name, "self" | "as" | "_"))
                .map(|(_, name)| name)
        })
}

/// The identifiers of `text` (ASCII names: a letter or `_`, then letters, digits or `_`;
/// a number with letters stuck to it, `0x1f`, is none) with their byte offsets.
pub fn identifiers(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let c = bytes[i];
            if c.is_ascii_alphabetic() || c == b'_' {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                return Some((start, &text[start..i]));
            }
            if c.is_ascii_digit() {
                // A number's digits and suffix (`0x1f`, `10u32`) are not a name.
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                continue;
            }
            i += 1;
        }
        None
    })
}

/// The qualifier written right before the identifier at `start` (`A` in `A::b` or `A.b`),
/// unless it is `self`-like.
fn qualifier_of(text: &str, start: usize) -> Option<String> {
    let head = &text[..start];
    let head = head.strip_suffix("::").or_else(|| head.strip_suffix('.'))?;
    let begin = head.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    let word = &head[begin..];
    (!word.is_empty() && !matches!(word, "self" | "Self" | "this" | "super" | "crate" | "cls")).then(|| word.to_owned())
}

/// Names in the code around a cursor, nearest first: the last lines before it, then the
/// first lines after it, each name once.
fn code_names(before: &str, after: &str) -> Vec<Wanted> {
    let start = nth_line_start_from_end(before, LINES_BEFORE);
    let end = nth_line_end(after, LINES_AFTER);
    let mut locals: HashSet<&str> = local_names(&before[start..]).chain(local_names(&after[..end])).collect();
    // What the file takes from the standard library is not the repository's to look up.
    locals.extend(standard_imports(before).chain(standard_imports(after)));
    let (window_before, window_after) = (mask_prose(&before[start..]), mask_prose(&after[..end]));
    let (window_before, window_after) = (window_before.as_str(), window_after.as_str());
    let mut found: Vec<Wanted> = Vec::new();
    for (offset, name) in identifiers(window_before) {
        if !is_named_argument(window_before, offset + name.len()) && !is_module_segment(window_before, offset, name) {
            let line = window_before[offset..].matches('\n').count();
            found.push(wanted(window_before, offset, name, line, window_before.len() - offset));
        }
    }
    for (offset, name) in identifiers(window_after) {
        if !is_named_argument(window_after, offset + name.len()) && !is_module_segment(window_after, offset, name) {
            // Code after the cursor counts half as near.
            let line = window_after[..offset].matches('\n').count();
            found.push(wanted(window_after, offset, name, line, 2 * offset + 1));
        }
    }
    found.sort_by_key(|w| w.distance);
    let mut seen = HashSet::new();
    found
        .into_iter()
        .filter(|w| {
            w.name.len() > 1
                && !is_keyword(&w.name)
                && (w.qualifier.is_some() || !is_standard(&w.name))
                && !locals.contains(w.name.as_str())
        })
        .filter(|w| seen.insert((w.name.clone(), w.qualifier.clone())))
        .take(MAX_NAMES)
        .collect()
}

/// Whether the name ending at `end` is followed by `=` or `:` (a named argument, a field, a
/// parameter, a dictionary key: `f(weight="w")`, `Self { permits: n }`, `x: int`), not a use
/// of a definition. `==`, `=>` and `::` are uses.
fn is_named_argument(text: &str, end: usize) -> bool {
    let rest = text[end..].trim_start_matches([' ', '\t']);
    (rest.starts_with('=') && !rest.starts_with("==") && !rest.starts_with("=>")) || (rest.starts_with(':') && !rest.starts_with("::"))
}

/// Whether the name at `offset` is a module's in a path (`io` of `io::Result`, `mem` of
/// `std::mem::zeroed`): written in lower case before `::`, it names no definition the code
/// needs to see (a `mod` line at best, or another crate's module, or a function of that name
/// elsewhere: tokio's `SignalKind::io`); what the path leads to is looked up instead.
fn is_module_segment(text: &str, offset: usize, name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase()) && text[offset + name.len()..].starts_with("::")
}

fn wanted(text: &str, offset: usize, name: &str, line: usize, distance: usize) -> Wanted {
    Wanted {
        name: name.to_owned(),
        qualifier: qualifier_of(text, offset),
        path_qualified: text[..offset].ends_with("::"),
        line,
        distance,
    }
}

/// Names in a question written like code: with `_`, a capital after the first letter, a
/// qualifier, call parentheses or backquotes.
fn question_names(text: &str) -> Vec<Wanted> {
    let mut seen = HashSet::new();
    identifiers(text)
        .filter(|(offset, name)| {
            let after = &text[offset + name.len()..];
            let quoted = text[..*offset].ends_with('`');
            let called = after.starts_with('(');
            let qualified = qualifier_of(text, *offset).is_some();
            let shaped = name.contains('_') || name.chars().skip(1).any(|c| c.is_ascii_uppercase());
            (quoted || called || qualified || shaped) && name.len() > 2 && !is_keyword(name) && !is_standard(name)
        })
        .map(|(offset, name)| wanted(text, offset, name, 0, offset))
        .filter(|w| seen.insert(w.name.clone()))
        .take(MAX_NAMES)
        .collect()
}

/// Names a snippet defines itself (`let x`, `fn f`, `def f`, `for x in`, `x = ...`,
/// `public void Run(`): they are local, not the repository's.
pub fn local_names(code: &str) -> impl Iterator<Item = &str> {
    const INTRODUCERS: &[&str] = &[
        "let",
        "mut",
        "fn",
        "def",
        "class",
        "struct",
        "enum",
        "trait",
        "type",
        "const",
        "static",
        "var",
        "for",
        "function",
        "interface",
        "as",
        "in",
        "lambda",
        "ref",
        "func",
        "fun",
        "val",
        "object",
        "protocol",
    ];
    let words: Vec<(usize, &str)> = identifiers(code).collect();
    let mut locals = Vec::new();
    for (i, &(offset, word)) in words.iter().enumerate() {
        let introduced = i > 0 && INTRODUCERS.contains(&words[i - 1].1) && words[i - 1].1 != "in";
        let rest = code[offset + word.len()..].trim_start();
        let line_start = code[..offset].rfind('\n').map_or(0, |n| n + 1);
        let first_on_line = code[line_start..offset].trim().is_empty();
        let assigned = first_on_line && rest.starts_with('=') && !rest.starts_with("==") && !rest.starts_with("=>");
        let annotated_param = rest.starts_with(':') && !rest.starts_with("::") && code[line_start..offset].contains('(');
        // Java's and C#'s `public Result Run(` (a method or constructor declared): the first
        // name called on a line that starts with an access modifier.
        let before = &code[line_start..offset];
        let declared = rest.starts_with('(')
            && !before.contains('(')
            && ["public ", "private ", "protected ", "internal "]
                .iter()
                .any(|m| before.trim_start().starts_with(m));
        if introduced || assigned || annotated_param || declared {
            locals.push(word);
        }
    }
    locals.into_iter()
}

/// `text` with the plain words of its comments and string literals blanked out (offsets
/// kept): a line comment (`//`, or `#` and a space) and a string's text between its quotes,
/// but not what a string interpolates (`{...}`, `#{...}`, `${...}`, `\(...)`), nor words
/// written as code is in prose (`parse_config`, `MRB_INT64`, `String#rstrip`, `os.path`):
/// `"weight"` is a dictionary's key, not the function `weight`. A Rust lifetime (`&'a`,
/// `<'a>`) is no quote.
fn mask_prose(text: &str) -> String {
    let bytes = text.as_bytes();
    // The spans of prose: comments and strings' text, interpolations left out.
    let mut prose: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    // Inside a string: where its current run of text began, and how deep in an
    // interpolation's braces or parentheses.
    let mut string: Option<(u8, usize)> = None;
    let mut depth = 0usize;
    while i < bytes.len() {
        let c = bytes[i];
        match string {
            _ if c == b'\n' => {
                if let Some((_, from)) = string.take() {
                    prose.push((from, i));
                }
                depth = 0;
            }
            Some((q, _)) if depth > 0 => match c {
                b'{' | b'(' => depth += 1,
                b'}' | b')' => {
                    depth -= 1;
                    if depth == 0 {
                        string = Some((q, i + 1));
                    }
                }
                _ => {}
            },
            Some((q, from)) => {
                if c == b'{' || (c == b'\\' && bytes.get(i + 1) == Some(&b'(')) {
                    prose.push((from, i));
                    depth = 1;
                    i += usize::from(c == b'\\');
                } else if c == b'\\' {
                    // An escape: the next character is the string's, whatever it is.
                    i += usize::from(bytes.get(i + 1).is_some_and(|b| *b != b'\n'));
                } else if c == q {
                    prose.push((from, i));
                    string = None;
                }
            }
            None => {
                let comment = (c == b'/' && bytes.get(i + 1) == Some(&b'/'))
                    || (c == b'#' && bytes.get(i + 1) == Some(&b' ') && (i == 0 || bytes[i - 1].is_ascii_whitespace()));
                if comment {
                    let end = bytes[i..].iter().position(|b| *b == b'\n').map_or(bytes.len(), |n| i + n);
                    prose.push((i, end));
                    i = end;
                    continue;
                }
                // `&'a`, `<'a>`, or a quote that no other closes on its line (`T: 'static`).
                let lifetime = c == b'\'' && {
                    let closed = bytes[i + 1..].iter().take_while(|b| **b != b'\n').any(|b| *b == b'\'');
                    (i > 0 && matches!(bytes[i - 1], b'&' | b'<')) || !closed
                };
                // An apostrophe in a word (`don't`), not a prefixed string (`f'{x}'`, `b"..."`).
                let glued = c == b'\'' && i > 1 && bytes[i - 1].is_ascii_alphanumeric() && bytes[i - 2].is_ascii_alphanumeric();
                if (c == b'"' || c == b'\'') && !lifetime && !glued {
                    string = Some((c, i + 1));
                }
            }
        }
        i += 1;
    }
    if let Some((_, from)) = string {
        prose.push((from, bytes.len()));
    }
    let mut out = bytes.to_vec();
    for (from, to) in prose {
        let span = &bytes[from..to];
        let mark = |at: usize| matches!(span.get(at), Some(b'#' | b'.' | b':'));
        // A word and another joined by one mark or two (`A::b`) at `at` (after the first), or
        // a Ruby class and its operator method (`Integer#<<`, `Array#[]`).
        let joined_after = |at: usize| {
            let marks = (0..2).take_while(|k| mark(at + k)).count();
            let operator = |b: &u8| span[at] == b'#' && b"<>=+-*/%[]!&|^~".contains(b);
            marks > 0
                && span
                    .get(at + marks)
                    .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_' || operator(b))
        };
        let joined_before = |at: usize| {
            let marks = (1..=2).take_while(|k| at >= *k && mark(at - k)).count();
            marks > 0 && at > marks && span[at - marks - 1].is_ascii_alphanumeric()
        };
        let mut at = 0;
        while at < span.len() {
            let word = span[at..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
            if word == 0 {
                // Blank what is no word, but the marks that join words (`a.b`, `A#b`, `A::b`).
                if !(mark(at) || span[at].is_ascii_whitespace()) || span[at] >= 0x80 {
                    out[from + at] = b' ';
                }
                at += 1;
                continue;
            }
            let name = std::str::from_utf8(&span[at..at + word]).unwrap_or("");
            let code_like = is_distinctive(name) || joined_before(at) || joined_after(at + word);
            if !code_like {
                out[from + at..from + at + word].fill(b' ');
            }
            at += word;
        }
    }
    // A character is blanked whole (a non-ASCII one byte by byte), so what was UTF-8 still is.
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

fn nth_line_start_from_end(text: &str, lines: usize) -> usize {
    let mut seen = 0;
    for (i, c) in text.char_indices().rev() {
        if c == '\n' && i + 1 < text.len() {
            seen += 1;
            if seen == lines {
                return i + 1;
            }
        }
    }
    0
}

fn nth_line_end(text: &str, lines: usize) -> usize {
    text.match_indices('\n').nth(lines.saturating_sub(1)).map_or(text.len(), |(i, _)| i)
}

/// A keyword of one of the chunker's languages, or a standard name ([`is_standard`]): never
/// a repository's own definition when code uses it unqualified.
pub fn is_common_name(word: &str) -> bool {
    is_keyword(word) || is_standard(word)
}

/// Keywords of the chunker's languages.
fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "as" | "async"
            | "await"
            | "break"
            | "case"
            | "catch"
            | "class"
            | "const"
            | "continue"
            | "crate"
            | "def"
            | "default"
            | "del"
            | "do"
            | "dyn"
            | "elif"
            | "else"
            | "enum"
            | "except"
            | "export"
            | "extends"
            | "extern"
            | "false"
            | "False"
            | "final"
            | "finally"
            | "fn"
            | "for"
            | "from"
            | "func"
            | "function"
            | "global"
            | "go"
            | "if"
            | "impl"
            | "implements"
            | "import"
            | "in"
            | "instanceof"
            | "interface"
            | "is"
            | "lambda"
            | "let"
            | "loop"
            | "match"
            | "mod"
            | "move"
            | "mut"
            | "nil"
            | "None"
            | "nonlocal"
            | "not"
            | "null"
            | "or"
            | "and"
            | "package"
            | "pass"
            | "private"
            | "protected"
            | "pub"
            | "public"
            | "raise"
            | "ref"
            | "return"
            | "self"
            | "Self"
            | "static"
            | "struct"
            | "super"
            | "switch"
            | "this"
            | "throw"
            | "throws"
            | "trait"
            | "true"
            | "True"
            | "try"
            | "type"
            | "typeof"
            | "unsafe"
            | "use"
            | "var"
            | "void"
            | "where"
            | "while"
            | "with"
            | "yield"
            | "typedef"
            | "sizeof"
            | "namespace"
            | "template"
            | "typename"
            | "unsigned"
            | "signed"
            | "int"
            | "char"
            | "long"
            | "short"
            | "double"
            | "float"
            | "bool"
            | "auto"
            | "undefined"
            | "of"
            | "chan"
            | "defer"
            | "range"
            | "select"
            | "assert"
            | "u8"
            | "u16"
            | "u32"
            | "u64"
            | "u128"
            | "usize"
            | "i8"
            | "i16"
            | "i32"
            | "i64"
            | "i128"
            | "isize"
            | "f32"
            | "f64"
            // C#, Ruby, PHP, Kotlin, Swift, Scala (not `new`, `get`, `lock`...: names a
            // repository defines too)
            | "fun"
            | "val"
            | "companion"
            | "when"
            | "guard"
            | "protocol"
            | "extension"
            | "implicit"
            | "lazy"
            | "fileprivate"
            | "lateinit"
            | "typealias"
            | "using"
            | "elsif"
            | "unless"
            | "until"
            | "rescue"
            | "ensure"
            | "require"
            | "require_relative"
            | "require_once"
            | "include_once"
            | "attr_reader"
            | "attr_writer"
            | "attr_accessor"
            | "puts"
            | "echo"
            | "foreach"
            | "elseif"
            | "readonly"
            | "override"
            | "virtual"
            | "internal"
            | "sealed"
            | "abstract"
            | "decimal"
            | "byte"
            | "isset"
            | "unset"
            | "insteadof"
    )
}

/// Standard names that a repository rarely defines and does not mean when it uses them
/// unqualified: Rust's prelude, common std types and methods, Python's builtins,
/// JavaScript's globals. `Type::new` is still looked up.
fn is_standard(word: &str) -> bool {
    matches!(
        word,
        "Some"
            | "Ok"
            | "Err"
            | "Option"
            | "Result"
            | "Vec"
            | "String"
            | "Box"
            | "Rc"
            | "Arc"
            | "HashMap"
            | "HashSet"
            | "BTreeMap"
            | "BTreeSet"
            | "VecDeque"
            | "Mutex"
            | "RwLock"
            | "Cell"
            | "RefCell"
            | "Default"
            | "Clone"
            | "Copy"
            | "Debug"
            | "Display"
            | "From"
            | "Into"
            | "Iterator"
            | "IntoIterator"
            | "Send"
            | "Sync"
            | "Sized"
            | "PhantomData"
            | "Pin"
            | "Future"
            | "Drop"
            | "Fn"
            | "FnMut"
            | "FnOnce"
            | "PartialEq"
            | "Eq"
            | "PartialOrd"
            | "Ord"
            | "Hash"
            | "AsRef"
            | "ToString"
            | "println"
            | "format"
            | "vec"
            | "panic"
            | "unreachable"
            | "todo"
            | "assert_eq"
            | "assert_ne"
            | "debug_assert"
            | "write"
            | "writeln"
            | "matches"
            | "unwrap"
            | "expect"
            | "clone"
            | "to_owned"
            | "to_string"
            | "into"
            | "iter"
            | "push"
            | "insert"
            | "get"
            | "is_empty"
            | "new"
            | "len"
            | "print"
            | "str"
            | "dict"
            | "list"
            | "tuple"
            | "set"
            | "map"
            | "object"
            | "bytes"
            | "isinstance"
            | "enumerate"
            | "zip"
            | "sorted"
            | "reversed"
            | "open"
            | "getattr"
            | "setattr"
            | "hasattr"
            | "Exception"
            | "ValueError"
            | "TypeError"
            | "KeyError"
            | "RuntimeError"
            | "console"
            | "Promise"
            | "Array"
            | "Object"
            | "JSON"
            | "Math"
            | "Error"
            | "Map"
            | "Set"
            | "Number"
            | "Symbol"
            | "window"
            | "document"
            | "require"
            | "module"
            | "exports"
            | "std"
            | "core"
            | "alloc"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(before: &str, after: &str) -> Vec<String> {
        code_names(before, after).into_iter().map(|w| w.name).collect()
    }

    #[test]
    fn names_come_nearest_the_cursor_first_without_keywords_locals_or_standard_names() {
        let before = "use crate::config::Loader;\nfn run(path: &str) -> Result<Settings, Error> {\n    let loaded = Loader::read(path)?;\n    let x = ";
        let found = names(before, "apply_defaults(loaded);\n}\n");
        // Right after the cursor, then back from it.
        assert_eq!(found[..2], ["apply_defaults", "read"], "{found:?}");
        assert!(found.contains(&"Loader".to_owned()) && found.contains(&"Settings".to_owned()));
        assert!(found.contains(&"apply_defaults".to_owned()));
        for skipped in ["let", "fn", "Result", "loaded", "x", "path", "run"] {
            assert!(!found.contains(&skipped.to_owned()), "{skipped} in {found:?}");
        }
        let read = code_names(before, "").into_iter().find(|w| w.name == "read").unwrap();
        assert_eq!(read.qualifier.as_deref(), Some("Loader"));
    }

    #[test]
    fn plain_words_of_comments_and_strings_are_not_looked_up_but_code_in_them_is() {
        let looked_up = |code: &str| names(code, "");
        // A string that is a key or an option is not the function `weight`.
        let found = looked_up("nd = nx.average_neighbor_degree(D, \"in\", \"out\", \"weight\")");
        assert!(found.contains(&"average_neighbor_degree".to_owned()), "{found:?}");
        assert!(!found.iter().any(|n| ["in", "out", "weight"].contains(&n.as_str())), "{found:?}");
        assert_eq!(looked_up("assert_true(m, 'Method should be defined')"), ["assert_true"]);
        assert_eq!(looked_up("x = scale(y)  # render it later"), ["scale"]);
        // Prose that names code keeps those names: a qualified or a code-like one.
        assert_eq!(looked_up("check('Ledger#post!') do"), ["post", "Ledger", "check"]);
        assert_eq!(looked_up("check('Ledger#<<', '15.2.8.3.12') do"), ["Ledger", "check"]);
        assert_eq!(looked_up("// see parse_config and the docs"), ["parse_config"]);
        assert_eq!(
            looked_up("conf.cc.defines << %w(MRB_INT64) if ['', 'MRB_INT16'].any?"),
            ["any", "MRB_INT16", "MRB_INT64", "defines", "cc", "conf"]
        );
        // What a string interpolates is code.
        assert_eq!(looked_up("s = f\"{render(page)} pages done\""), ["page", "render"]);
        assert_eq!(looked_up("puts \"#{format_name(x)} is done\""), ["format_name"]);
        assert_eq!(looked_up("let s = \"\\(title(of: x)) is done\""), ["title"]);
        // Escaped quotes, characters beyond ASCII and Rust's lifetimes end no string early.
        assert_eq!(looked_up("let s = \"a \\\" weight\" + render(y)"), ["render"]);
        assert_eq!(looked_up("let s = \"héllo wörld\" + render(z)"), ["render"]);
        let found = looked_up("fn parse<'a>(input: &'a str) -> Token<'a> {");
        assert!(found.contains(&"Token".to_owned()), "{found:?}");
        // `#include` is no comment.
        assert_eq!(
            looked_up("#include \"conf.h\"\nint n = ary_join(items);"),
            ["items", "ary_join", "conf", "include"]
        );
    }

    #[test]
    fn python_assignments_and_parameters_are_local() {
        let found = names(
            "def handle(request: Request):\n    session = make_session(request)\n    return ",
            "session.flush()\n",
        );
        assert!(
            found.contains(&"make_session".to_owned()) && found.contains(&"Request".to_owned()),
            "{found:?}"
        );
        assert!(
            !found.contains(&"session".to_owned()) && !found.contains(&"request".to_owned()),
            "{found:?}"
        );
        assert!(found.contains(&"flush".to_owned()));
    }

    #[test]
    fn a_method_or_constructor_declared_is_local_and_what_it_calls_is_not() {
        let found = names(
            "    public virtual NewReference Invoke(BorrowedReference args)\n    {\n",
            "    public PyList() : base(Runtime.PyList_New(0).StealOrThrow())\n",
        );
        for used in ["NewReference", "BorrowedReference", "PyList_New", "StealOrThrow"] {
            assert!(found.contains(&used.to_owned()), "{used}: {found:?}");
        }
        assert!(
            !found.contains(&"Invoke".to_owned()) && !found.contains(&"PyList".to_owned()),
            "{found:?}"
        );
        // Kotlin's `fun`, Swift's `func`, Scala's `val` define what follows.
        let found = names("fun openLedger(): Ledger {\n    val entries = Journal.read()\n    ", "");
        assert!(
            found.contains(&"Ledger".to_owned()) && found.contains(&"Journal".to_owned()),
            "{found:?}"
        );
        assert!(
            !found.contains(&"openLedger".to_owned()) && !found.contains(&"entries".to_owned()),
            "{found:?}"
        );
    }

    #[test]
    fn questions_look_up_only_words_written_like_code() {
        let found: Vec<String> = question_names("What does `parse` return, and how does TokenVault::rotate use load_keys()?")
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(found, ["parse", "TokenVault", "rotate", "load_keys"]);
        assert!(question_names("How are requests retried when the server is down?").is_empty());
    }

    #[test]
    fn import_lines_name_modules_and_items() {
        let words = imported_words(
            "use crate::runtime::task::{self, JoinHandle};\nfrom pkg.util import slugify\n#include \"net/socket.h\"\nlet x = 1;\n",
        );
        for w in ["runtime", "task", "JoinHandle", "pkg", "util", "slugify", "net", "socket"] {
            assert!(words.contains(w), "{w} missing from {words:?}");
        }
        assert!(!words.contains("x") && !words.contains("crate"));
        let words = imported_words(
            "using Python.Runtime.Codecs;\nusing (var scope = Py.CreateScope()) {}\nrequire 'billing/ledger'\n\
             require_relative \"../audit\"\nuse App\\Billing\\Invoice;\nrequire_once 'lib/tax.php';\n",
        );
        for w in [
            "Python", "Runtime", "Codecs", "billing", "ledger", "audit", "App", "Billing", "Invoice", "lib", "tax",
        ] {
            assert!(words.contains(w), "{w} missing from {words:?}");
        }
        assert!(!words.contains("scope") && !words.contains("CreateScope"), "{words:?}");
    }

    #[test]
    fn paths_share_folders_and_name_their_modules() {
        assert_eq!(shared_folders("src/a/b/x.rs", "src/a/c/y.rs"), 2);
        assert_eq!(shared_folders("x.rs", "src/y.rs"), 0);
        assert_eq!(
            path_words("src/runtime/task/mod.rs").collect::<Vec<_>>(),
            ["src", "runtime", "task"]
        );
        assert_eq!(path_words("pkg/util.py").collect::<Vec<_>>(), ["pkg", "util"]);
    }

    fn record(name: &str, path: &str, scope: &str) -> StoredSymbol {
        StoredSymbol {
            name: name.into(),
            kind: "function".into(),
            scope: scope.into(),
            path: path.into(),
            start_line: 1,
            end_line: 2,
            chunk: path.len() as u64,
        }
    }

    #[test]
    fn a_path_names_modules_and_a_standard_modules_items_are_not_the_repositorys() {
        let found = code_names(
            "fn is_pipe(fd: Fd) -> io::Result<bool> {\n    let s = unsafe { std::mem::zeroed(",
            "",
        );
        let seen: Vec<(&str, Option<&str>, bool)> = found
            .iter()
            .map(|w| (w.name.as_str(), w.qualifier.as_deref(), w.path_qualified))
            .collect();
        assert_eq!(
            seen,
            [
                ("zeroed", Some("mem"), true),
                ("unsafe", None, false),
                ("Result", Some("io"), true),
                ("Fd", None, false)
            ]
            .into_iter()
            .filter(|(name, ..)| !is_keyword(name))
            .collect::<Vec<_>>()
        );
        // A value's field before `.`, and a type before `::`, are looked up.
        assert_eq!(names("self.io.poll_read(cx)", ""), ["cx", "poll_read", "io"]);
        assert_eq!(names("Linker::build(", ""), ["build", "Linker"]);

        let result = |qualifier: &str, path_qualified: bool| Wanted {
            name: "Result".into(),
            qualifier: Some(qualifier.into()),
            path_qualified,
            line: 0,
            distance: 0,
        };
        let elsewhere = vec![record("Result", "src/runtime/task/mod.rs", "")];
        let none = HashSet::new();
        assert!(choose(&elsewhere, &result("io", true), &none, Some("src/net/pipe.rs")).is_none());
        // The repository's own module of that name, or a value's field, still finds it.
        let own = vec![record("Result", "src/io/mod.rs", "")];
        assert_eq!(choose(&own, &result("io", true), &none, None).unwrap().0.path, "src/io/mod.rs");
        assert!(choose(&elsewhere, &result("io", false), &none, None).is_some());
        assert!(choose(&elsewhere, &result("task", true), &none, None).is_some(), "a module here");
        assert!(
            choose(&elsewhere, &result("parser", true), &none, None).is_some(),
            "not a standard module"
        );
    }

    #[test]
    fn a_module_declared_on_one_line_is_not_a_definition_to_show() {
        let ready = Wanted {
            name: "ready".into(),
            qualifier: None,
            path_qualified: false,
            line: 0,
            distance: 0,
        };
        let declared = StoredSymbol {
            kind: "module".into(),
            start_line: 7,
            end_line: 7,
            ..record("ready", "src/macros/mod.rs", "")
        };
        let none = HashSet::new();
        assert!(choose(std::slice::from_ref(&declared), &ready, &none, Some("src/io/x.rs")).is_none());
        let defined = StoredSymbol {
            kind: "macro".into(),
            ..record("ready", "src/macros/ready.rs", "")
        };
        let both = [declared.clone(), defined];
        assert_eq!(
            choose(&both, &ready, &none, Some("src/io/x.rs")).unwrap().0.path,
            "src/macros/ready.rs"
        );
        // A module with its body is one.
        let inline = StoredSymbol { end_line: 30, ..declared };
        assert!(choose(&[inline], &ready, &none, Some("src/io/x.rs")).is_some());
    }

    #[test]
    fn what_a_file_takes_from_the_standard_library_is_not_looked_up() {
        let file = "use std::task::{Context, Poll};\nuse core::fmt::{self, Display};\nuse mio::{Interest, Token};\n\n\
                    fn poll_ready(cx: &mut Context<'_>) -> Poll<Token> {\n    let i = Interest::READABLE;\n    ";
        let found = names(file, "");
        assert!(
            found.iter().all(|n| !["Context", "Poll", "Display", "fmt"].contains(&n.as_str())),
            "{found:?}"
        );
        assert!(
            found.contains(&"Token".to_owned()) && found.contains(&"Interest".to_owned()),
            "{found:?}"
        );
        assert_eq!(
            standard_imports("pub use std::io::Result as IoResult;").collect::<Vec<_>>(),
            ["Result", "IoResult"]
        );
    }

    #[test]
    fn imports_then_qualifiers_then_nearness_decide_between_files() {
        let records = vec![
            record("spawn", "src/runtime/spawn.rs", ""),
            record("spawn", "src/task/spawn.rs", ""),
            record("spawn", "src/blocking/pool.rs", "Pool"),
        ];
        let plain = Wanted {
            name: "spawn".into(),
            qualifier: None,
            path_qualified: false,
            line: 0,
            distance: 0,
        };
        let imports: HashSet<String> = ["task".to_owned()].into();
        assert_eq!(
            choose(&records, &plain, &imports, Some("src/x.rs")).unwrap().0.path,
            "src/task/spawn.rs"
        );
        let qualified = Wanted {
            name: "spawn".into(),
            qualifier: Some("Pool".into()),
            path_qualified: false,
            line: 0,
            distance: 0,
        };
        assert_eq!(
            choose(&records, &qualified, &HashSet::new(), None).unwrap().0.path,
            "src/blocking/pool.rs"
        );
        assert_eq!(
            choose(&records, &plain, &HashSet::new(), Some("src/runtime/builder.rs"))
                .unwrap()
                .0
                .path,
            "src/runtime/spawn.rs"
        );
        let many: Vec<StoredSymbol> = (0..6).map(|i| record("new", &format!("src/m{i}/x.rs"), "")).collect();
        let new = Wanted {
            name: "new".into(),
            qualifier: None,
            path_qualified: false,
            line: 0,
            distance: 0,
        };
        assert!(
            choose(&many, &new, &HashSet::new(), Some("other/y.rs")).is_none(),
            "too common to mean one place"
        );
        // A C file's name means a C or C++ definition, never a Ruby method of that name; in a
        // file of no known language any definition will do.
        let result = Wanted {
            name: "result".into(),
            qualifier: None,
            path_qualified: false,
            line: 0,
            distance: 0,
        };
        let mixed = vec![
            record("result", "test/t/class.rb", "TestClass"),
            record("result", "src/parse.h", ""),
        ];
        assert_eq!(
            choose(&mixed, &result, &HashSet::new(), Some("src/array.c")).unwrap().0.path,
            "src/parse.h"
        );
        assert_eq!(
            choose(&mixed, &result, &HashSet::new(), Some("lib/build.rb")).unwrap().0.path,
            "test/t/class.rb"
        );
        assert!(choose(&mixed[..1], &result, &HashSet::new(), Some("src/array.c")).is_none());
        // ... unless no plain word is written so, as a build script's name of a C macro.
        let int64 = Wanted {
            name: "MRB_INT64".into(),
            qualifier: None,
            path_qualified: false,
            line: 0,
            distance: 0,
        };
        let header = vec![record("MRB_INT64", "include/mrbconf.h", "")];
        let (found, certainty) = choose(&header, &int64, &HashSet::new(), Some("build_config.rb")).unwrap();
        assert_eq!((found.path.as_str(), certainty), ("include/mrbconf.h", Certainty::Guessed));
        assert!(choose(&mixed[..1], &result, &HashSet::new(), Some("notes.md")).is_some());
        assert!(choose(&mixed[..1], &result, &HashSet::new(), None).is_some());
        // `Linker.new` is not the one `new` a file defines for another object: a guess at most,
        // as a value's (`gem.new`) or a constant's (`EXPOSE_IO.new`) qualifier leaves it sure;
        // `Kind::Variant` may still mean a type `Variant`.
        let new = vec![record("new", "lib/gem.rb", "")];
        let certainty = |qualifier: &str, records: &[StoredSymbol]| {
            let want = Wanted {
                name: records[0].name.clone(),
                qualifier: Some(qualifier.into()),
                path_qualified: false,
                line: 0,
                distance: 0,
            };
            // Asked from another file of the same language.
            let current = records[0].path.replace('/', "/other_");
            choose(records, &want, &HashSet::new(), Some(&current)).unwrap().1
        };
        assert_eq!(certainty("Linker", &new), Certainty::Guessed);
        assert_eq!(certainty("gem", &new), Certainty::Unique);
        assert_eq!(certainty("EXPOSE_IO", &new), Certainty::Unique);
        let mut variant = record("CurrentThread", "src/current_thread.rs", "");
        variant.kind = "type".into();
        assert_eq!(certainty("Context", &[variant]), Certainty::Unique);
        // Kotlin calls Java: a family of languages shares its definitions.
        let ledger = vec![record("Ledger", "src/Ledger.java", "")];
        let want = Wanted {
            name: "Ledger".into(),
            qualifier: None,
            path_qualified: false,
            line: 0,
            distance: 0,
        };
        assert!(choose(&ledger, &want, &HashSet::new(), Some("app/Main.kt")).is_some());
    }
}
