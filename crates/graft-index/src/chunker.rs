//! Splitting a source file into chunks a retriever can rank and a prompt can hold.
//!
//! Code in a language with a tree-sitter grammar is split along its syntax tree: top-level
//! items are packed together while they fit, an item too big to fit is split along its own
//! children, and every chunk remembers the definitions that enclose it (`Engine::chat`).
//! Everything else (Markdown, TOML, YAML, unknown languages, files that fail to parse) is cut
//! into windows of whole lines, at Markdown headings where there are some. Chunks are always
//! whole lines. This module is pure: text in, chunks out.

use sha2::{Digest, Sha256};
use tree_sitter::{Node, Parser, Tree};

use crate::symbols::{definitions_in, Definition};

/// Size limits for chunks.
#[derive(Debug, Clone)]
pub struct ChunkOptions {
    /// A chunk holds at most this many characters, unless one line alone is longer.
    pub max_chars: usize,
    /// A fallback (line-window) chunk holds at most this many lines.
    pub max_lines: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            max_chars: 1500,
            max_lines: 60,
        }
    }
}

/// A piece of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Path relative to the repository root.
    pub path: String,
    pub language: &'static str,
    /// First line, 1-based.
    pub start_line: usize,
    /// Last line, 1-based, inclusive.
    pub end_line: usize,
    /// The enclosing definitions (`Engine::chat`), or the definitions it holds (`add, sub`);
    /// empty when there are none.
    pub symbol: String,
    pub text: String,
    /// Hex sha256 of `text`.
    pub hash: String,
}

/// The language of a file, from its name: a grammar name for code, a plain label otherwise.
pub fn language_of(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "rs" => "rust",
        "py" | "pyi" => "python",
        "js" | "mjs" | "cjs" | "jsx" => "javascript",
        "ts" | "mts" | "cts" => "typescript",
        "tsx" => "tsx",
        "go" => "go",
        "java" => "java",
        "c" | "h" => "c",
        "cc" | "cpp" | "cxx" | "hpp" | "hh" | "hxx" | "ipp" => "cpp",
        "md" | "markdown" => "markdown",
        "toml" => "toml",
        "yaml" | "yml" => "yaml",
        "json" => "json",
        "sh" | "bash" => "shell",
        "html" | "htm" => "html",
        "css" => "css",
        "sql" => "sql",
        "rb" | "rake" | "gemspec" => "ruby",
        "kt" | "kts" => "kotlin",
        "swift" => "swift",
        "scala" | "sc" => "scala",
        "cs" => "csharp",
        "php" => "php",
        _ if matches!(name, "Rakefile" | "Gemfile") => "ruby",
        _ if name == "Dockerfile" => "dockerfile",
        _ if name == "Makefile" => "make",
        _ => "text",
    }
}

/// The languages whose code can call what files of `language` define, named by one of them:
/// C with C++ (their headers are shared), JavaScript with TypeScript, Java with Kotlin and
/// Scala (one virtual machine), each other parsed language alone ([`has_grammar`]). `None`
/// for a language graft lists no definitions of (markdown, text, configuration).
pub fn family(language: &'static str) -> Option<&'static str> {
    match language {
        "cpp" => Some("c"),
        "typescript" | "tsx" => Some("javascript"),
        "kotlin" | "scala" => Some("java"),
        _ => has_grammar(language).then_some(language),
    }
}

/// Whether graft parses files of `language` (from [`language_of`]): chunked along their syntax
/// tree, their definitions listed; other files are cut by lines.
pub fn has_grammar(language: &str) -> bool {
    grammar(language).is_some()
}

/// The tree-sitter grammar of a language from [`language_of`], if graft has one.
pub(crate) fn grammar(language: &str) -> Option<tree_sitter::Language> {
    Some(match language {
        "rust" => tree_sitter_rust::LANGUAGE.into(),
        "python" => tree_sitter_python::LANGUAGE.into(),
        "javascript" => tree_sitter_javascript::LANGUAGE.into(),
        "typescript" => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
        "tsx" => tree_sitter_typescript::LANGUAGE_TSX.into(),
        "go" => tree_sitter_go::LANGUAGE.into(),
        "java" => tree_sitter_java::LANGUAGE.into(),
        "c" => tree_sitter_c::LANGUAGE.into(),
        "cpp" => tree_sitter_cpp::LANGUAGE.into(),
        "csharp" => tree_sitter_c_sharp::LANGUAGE.into(),
        "ruby" => tree_sitter_ruby::LANGUAGE.into(),
        // PHP files as they are written: HTML around `<?php ... ?>`.
        "php" => tree_sitter_php::LANGUAGE_PHP.into(),
        "kotlin" => tree_sitter_kotlin_ng::LANGUAGE.into(),
        "swift" => tree_sitter_swift::LANGUAGE.into(),
        "scala" => tree_sitter_scala::LANGUAGE.into(),
        _ => return None,
    })
}

/// Node kinds that define a named thing, across the supported grammars.
pub(crate) fn is_definition(kind: &str) -> bool {
    matches!(
        kind,
        // Rust
        "function_item" | "impl_item" | "struct_item" | "enum_item" | "trait_item" | "mod_item"
            | "macro_definition" | "union_item" | "function_signature_item"
            // Python
            | "function_definition" | "class_definition" | "decorated_definition"
            // JavaScript / TypeScript
            | "function_declaration" | "generator_function_declaration" | "class_declaration"
            | "method_definition" | "interface_declaration" | "type_alias_declaration"
            | "enum_declaration" | "abstract_class_declaration" | "lexical_declaration"
            | "export_statement"
            // Go
            | "method_declaration" | "type_declaration"
            // Java (and C#'s of the same names)
            | "record_declaration" | "constructor_declaration"
            // C / C++
            | "struct_specifier" | "class_specifier" | "namespace_definition" | "enum_specifier"
            | "template_declaration"
            // C#
            | "struct_declaration" | "namespace_declaration" | "delegate_declaration"
            // Ruby
            | "class" | "module" | "method" | "singleton_method"
            // PHP (its classes, functions and methods have the names above)
            | "trait_declaration"
            // Kotlin (classes and functions as above), Swift, Scala
            | "object_declaration" | "protocol_declaration" | "protocol_function_declaration"
            | "init_declaration" | "typealias_declaration" | "object_definition" | "trait_definition"
            | "enum_definition"
    )
}

/// The name a definition node introduces, if it has one.
pub(crate) fn definition_name(node: Node, source: &[u8]) -> Option<String> {
    let text = |n: Node| n.utf8_text(source).ok().map(str::to_owned);
    match node.kind() {
        "impl_item" => {
            let ty = node.child_by_field_name("type").and_then(text)?;
            match node.child_by_field_name("trait").and_then(text) {
                Some(tr) => Some(format!("{tr} for {ty}")),
                None => Some(ty),
            }
        }
        "decorated_definition" | "template_declaration" | "export_statement" => {
            let inner = node
                .child_by_field_name("definition")
                .or_else(|| node.child_by_field_name("declaration"))
                .or_else(|| {
                    let mut cursor = node.walk();
                    let found = node.named_children(&mut cursor).find(|c| is_definition(c.kind()));
                    found
                })?;
            definition_name(inner, source)
        }
        "lexical_declaration" | "type_declaration" => {
            let mut cursor = node.walk();
            let names: Vec<String> = node
                .named_children(&mut cursor)
                .filter_map(|c| c.child_by_field_name("name").and_then(text))
                .collect();
            (!names.is_empty()).then(|| names.join(", "))
        }
        _ => {
            if let Some(name) = node.child_by_field_name("name") {
                // Ruby's `class Billing::Invoice`: the name it introduces is the last part.
                if name.kind() == "scope_resolution" {
                    return name.child_by_field_name("name").and_then(text);
                }
                return text(name);
            }
            // C and C++ functions: the name sits inside nested declarators.
            let mut declarator = node.child_by_field_name("declarator")?;
            while let Some(inner) = declarator.child_by_field_name("declarator") {
                declarator = inner;
            }
            text(declarator)
        }
    }
}

/// Splits one file into chunks.
pub fn chunk_file(path: &str, text: &str, options: &ChunkOptions) -> Vec<Chunk> {
    chunk_parsed(path, text, parse(path, text).as_ref(), options)
}

/// Splits one file into chunks and lists its definitions ([`crate::symbols`]), from one parse.
pub fn chunk_and_define(path: &str, text: &str, options: &ChunkOptions) -> (Vec<Chunk>, Vec<Definition>) {
    let tree = parse(path, text);
    let definitions = tree.as_ref().map(|t| definitions_in(t, path, text)).unwrap_or_default();
    (chunk_parsed(path, text, tree.as_ref(), options), definitions)
}

/// The syntax tree of a file in a language graft has a grammar for.
pub(crate) fn parse(path: &str, text: &str) -> Option<Tree> {
    let mut parser = Parser::new();
    parser.set_language(&grammar(language_of(path))?).ok()?;
    parser.parse(text, None)
}

fn chunk_parsed(path: &str, text: &str, tree: Option<&Tree>, options: &ChunkOptions) -> Vec<Chunk> {
    let language = language_of(path);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return Vec::new();
    }
    let spans = tree
        .and_then(|t| syntax_spans(t, text, &lines, options))
        .unwrap_or_else(|| window_spans(language, &lines, options));
    spans
        .into_iter()
        .filter_map(|span| {
            let body = lines[span.start..=span.end].join("\n");
            (!body.trim().is_empty()).then(|| Chunk {
                path: path.to_owned(),
                language,
                start_line: span.start + 1,
                end_line: span.end + 1,
                symbol: span.symbol,
                hash: hex::encode(Sha256::digest(body.as_bytes())),
                text: body,
            })
        })
        .collect()
}

/// A chunk before its text is cut out: 0-based inclusive rows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    symbol: String,
}

fn syntax_spans(tree: &Tree, text: &str, lines: &[&str], options: &ChunkOptions) -> Option<Vec<Span>> {
    let root = tree.root_node();
    // A file the grammar mostly cannot parse is better cut by lines.
    if root.has_error() && error_share(root) > 0.3 {
        return None;
    }
    let mut packer = Packer {
        lines,
        source: text.as_bytes(),
        options,
        spans: Vec::new(),
    };
    packer.pack_children(root, &[]);
    Some(packer.spans)
}

/// The share of the file's bytes under ERROR nodes at the top level.
fn error_share(root: Node) -> f64 {
    let mut cursor = root.walk();
    let bad: usize = root
        .children(&mut cursor)
        .filter(|c| c.is_error())
        .map(|c| c.end_byte() - c.start_byte())
        .sum();
    bad as f64 / root.end_byte().max(1) as f64
}

struct Packer<'a> {
    lines: &'a [&'a str],
    source: &'a [u8],
    options: &'a ChunkOptions,
    spans: Vec<Span>,
}

/// Consecutive nodes gathered into one chunk.
struct Group {
    start: usize,
    end: usize,
    names: Vec<String>,
    /// True while the group holds only comments (they then travel with the next item).
    only_comments: bool,
}

impl Packer<'_> {
    /// The first and last rows a node occupies, within the file. A node that ends at column 0
    /// (C's `#include` takes its newline) ends on the row before.
    fn rows(&self, node: Node) -> (usize, usize) {
        let last = self.lines.len() - 1;
        let start = node.start_position().row.min(last);
        let end = node.end_position();
        let end_row = if end.column == 0 && end.row > start { end.row - 1 } else { end.row };
        (start, end_row.clamp(start, last))
    }

    fn chars(&self, start: usize, end: usize) -> usize {
        self.lines[start..=end].iter().map(|l| l.chars().count() + 1).sum()
    }

    /// Packs the named children of `node` into chunks; `context` names the enclosing
    /// definitions.
    fn pack_children(&mut self, node: Node, context: &[String]) {
        let mut cursor = node.walk();
        let children: Vec<Node> = node.named_children(&mut cursor).collect();
        let mut group: Option<Group> = None;
        for child in children {
            let (start, end) = self.rows(child);
            if let Some(g) = group.as_mut().filter(|g| start <= g.end) {
                // Same line as the previous node (a trailing comment, say): keep together.
                g.end = g.end.max(end);
                continue;
            }
            let is_comment = child.kind().contains("comment");
            let name = is_definition(child.kind()).then(|| definition_name(child, self.source)).flatten();
            if self.chars(start, end) > self.options.max_chars {
                // Too big alone: leading comments stay with it, then it is split by its own
                // children (a definition) or by lines (anything else).
                let lead = match group.take() {
                    Some(g) if g.only_comments => Some(g.start),
                    Some(g) => {
                        self.flush(g, context);
                        None
                    }
                    None => None,
                };
                self.split_large(child, lead.unwrap_or(start), name, context);
                continue;
            }
            match group.as_mut() {
                Some(g) if self.chars(g.start, end) <= self.options.max_chars => {
                    g.end = end;
                    g.names.extend(name);
                    g.only_comments &= is_comment;
                }
                _ => {
                    let mut next_start = start;
                    if let Some(g) = group.take() {
                        if g.only_comments {
                            next_start = g.start;
                        } else {
                            self.flush(g, context);
                        }
                    }
                    group = Some(Group {
                        start: next_start,
                        end,
                        names: name.into_iter().collect(),
                        only_comments: is_comment,
                    });
                }
            }
        }
        if let Some(g) = group {
            self.flush(g, context);
        }
    }

    fn flush(&mut self, group: Group, context: &[String]) {
        let symbol = if context.is_empty() {
            group.names.join(", ")
        } else if group.names.len() == 1 {
            format!("{}::{}", context.join("::"), group.names[0])
        } else {
            context.join("::")
        };
        self.spans.push(Span {
            start: group.start,
            end: group.end,
            symbol,
        });
    }

    /// A node larger than a chunk: split along its children when it has a body, else by lines.
    fn split_large(&mut self, node: Node, start: usize, name: Option<String>, context: &[String]) {
        let mut inner: Vec<String> = context.to_vec();
        inner.extend(name);
        let body = node
            .child_by_field_name("body")
            .or_else(|| {
                ["definition", "declaration"]
                    .iter()
                    .find_map(|f| node.child_by_field_name(f))
                    .and_then(|d| d.child_by_field_name("body"))
            })
            .filter(|b| b.named_child_count() > 1);
        match body {
            Some(body) => {
                // The header (signature, doc comments) goes with the first part of the body.
                let before = self.spans.len();
                self.pack_children(body, &inner);
                if let Some(first) = self.spans.get_mut(before) {
                    first.start = first.start.min(start);
                }
                let end = self.rows(node).1;
                if let Some(last) = self.spans.last_mut() {
                    last.end = last.end.max(end);
                }
            }
            None => {
                let symbol = inner.join("::");
                for (s, e) in self.line_windows(start, self.rows(node).1) {
                    self.spans.push(Span {
                        start: s,
                        end: e,
                        symbol: symbol.clone(),
                    });
                }
            }
        }
    }

    fn line_windows(&self, start: usize, end: usize) -> Vec<(usize, usize)> {
        windows(self.lines, start, end, self.options, |_| false)
    }
}

/// Cuts rows `start..=end` into windows within the size limits; `breaks_before(row)` marks rows
/// a new window should start at when the current one is not tiny.
fn windows(lines: &[&str], start: usize, end: usize, options: &ChunkOptions, breaks_before: impl Fn(usize) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if start > end {
        return out;
    }
    let mut window_start = start;
    let mut chars = 0;
    for (row, line) in lines.iter().enumerate().take(end + 1).skip(start) {
        let len = line.chars().count() + 1;
        let rows = row - window_start;
        let full = rows > 0 && (chars + len > options.max_chars || rows >= options.max_lines);
        let soft_break = rows >= 3 && breaks_before(row);
        if full || soft_break {
            out.push((window_start, row - 1));
            window_start = row;
            chars = 0;
        }
        chars += len;
    }
    out.push((window_start, end));
    out
}

/// Line windows for files without a grammar; Markdown breaks at headings and names each chunk
/// by the heading above it.
fn window_spans(language: &str, lines: &[&str], options: &ChunkOptions) -> Vec<Span> {
    let markdown = language == "markdown";
    let is_heading = |row: usize| markdown && lines[row].starts_with('#');
    windows(lines, 0, lines.len() - 1, options, is_heading)
        .into_iter()
        .map(|(start, end)| {
            let symbol = if markdown {
                (0..=start)
                    .rev()
                    .find(|&r| lines[r].starts_with('#'))
                    .map(|r| lines[r].trim_start_matches('#').trim().to_owned())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            Span { start, end, symbol }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ChunkOptions {
        ChunkOptions {
            max_chars: 200,
            max_lines: 10,
        }
    }

    #[test]
    fn rust_items_are_named_and_large_impls_split_by_method() {
        let mut src = String::from("use std::fmt;\n\n/// Adds.\nfn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\nimpl Engine {\n");
        for i in 0..6 {
            src.push_str(&format!(
                "    /// Method {i}.\n    pub fn method_{i}(&self) -> usize {{\n        {i} * 1000 + 7\n    }}\n\n"
            ));
        }
        src.push_str("}\n");
        let chunks = chunk_file("src/engine.rs", &src, &small());
        assert_eq!(chunks[0].language, "rust");
        let add = chunks.iter().find(|c| c.text.contains("fn add")).unwrap();
        assert!(add.symbol.contains("add"), "{add:?}");
        assert!(add.text.contains("/// Adds."), "doc comments travel with their item: {add:?}");
        let m5 = chunks.iter().find(|c| c.text.contains("fn method_5")).unwrap();
        assert!(m5.symbol.starts_with("Engine"), "{m5:?}");
        assert!(chunks.iter().all(|c| c.text.chars().count() <= 200 || c.start_line == c.end_line));
        // Lines are 1-based and match the text.
        let lines: Vec<&str> = src.lines().collect();
        for c in &chunks {
            assert_eq!(c.text, lines[c.start_line - 1..c.end_line].join("\n"));
        }
    }

    #[test]
    fn every_supported_language_yields_a_named_definition() {
        let cases = [
            (
                "a.py",
                "import os\n\nclass Store:\n    def get(self, key):\n        return key\n",
                "Store",
            ),
            ("a.js", "const x = 1;\nfunction renderPage(req) {\n  return req;\n}\n", "renderPage"),
            (
                "a.ts",
                "export interface Shape { area(): number }\nexport function makeShape(): Shape { return null as any; }\n",
                "makeShape",
            ),
            (
                "a.go",
                "package main\n\nfunc ParseConfig(path string) error {\n\treturn nil\n}\n",
                "ParseConfig",
            ),
            ("A.java", "public class Ledger {\n  public int total() { return 0; }\n}\n", "Ledger"),
            (
                "a.c",
                "#include <stdio.h>\nint checksum(const char *s) {\n  return 0;\n}\n",
                "checksum",
            ),
            (
                "a.cpp",
                "namespace store {\nclass Cache {\n public:\n  int size() const { return 0; }\n};\n}\n",
                "store",
            ),
            (
                "Ledger.cs",
                "using System;\n\npublic class Ledger {\n  public int Total() { return 0; }\n}\n",
                "Ledger",
            ),
            (
                "ledger.rb",
                "require 'json'\n\nmodule Books\n  def self.balance(rows)\n    rows.sum\n  end\nend\n",
                "Books",
            ),
            (
                "Rakefile",
                "task :default do\n  puts 1\nend\n\ndef release_notes\n  'x'\nend\n",
                "release_notes",
            ),
            (
                "ledger.php",
                "<html><?php\nfunction post_entry($amount) {\n    return $amount;\n}\n?></html>\n",
                "post_entry",
            ),
            (
                "Ledger.kt",
                "import java.io.File\n\nfun postEntry(amount: Int): Int {\n    return amount\n}\n",
                "postEntry",
            ),
            (
                "Ledger.swift",
                "import Foundation\n\nfunc postEntry(_ amount: Int) -> Int {\n    amount\n}\n",
                "postEntry",
            ),
            (
                "Ledger.scala",
                "import scala.util.Try\n\nobject Books {\n  def postEntry(a: Int): Int = a\n}\n",
                "Books",
            ),
        ];
        for (path, src, name) in cases {
            let chunks = chunk_file(path, src, &ChunkOptions::default());
            assert!(!chunks.is_empty(), "{path}");
            assert!(chunks.iter().any(|c| c.symbol.contains(name)), "{path}: {chunks:?}");
            assert_ne!(chunks[0].language, "text", "{path}");
            // Definition lookup takes only definitions of the same family of languages.
            assert!(family(chunks[0].language).is_some(), "{path}: a parsed language has a family");
        }
        assert_eq!(family("cpp"), family("c"));
        assert_eq!(family("tsx"), family("javascript"));
        assert_eq!(family("kotlin"), family("java"));
        assert_ne!(family("ruby"), family("c"));
        assert_eq!(family("markdown"), None);
    }

    #[test]
    fn markdown_breaks_at_headings_and_names_chunks_by_them() {
        let mut src = String::from("# Title\nintro\n");
        for i in 0..3 {
            src.push_str(&format!("## Part {i}\nline a\nline b\nline c\n"));
        }
        let chunks = chunk_file("README.md", &src, &small());
        assert!(
            chunks.iter().any(|c| c.symbol == "Part 2" && c.text.starts_with("## Part 2")),
            "{chunks:?}"
        );
    }

    #[test]
    fn unknown_text_is_cut_into_bounded_windows() {
        let src: String = (0..100).map(|i| format!("key_{i} = {i}\n")).collect();
        let chunks = chunk_file("settings.conf", &src, &small());
        assert!(chunks.len() >= 10);
        assert!(chunks.iter().all(|c| c.end_line - c.start_line < 10));
        assert_eq!(chunks.first().unwrap().start_line, 1);
        assert_eq!(chunks.last().unwrap().end_line, 100);
        for pair in chunks.windows(2) {
            assert_eq!(pair[0].end_line + 1, pair[1].start_line, "no line is lost or repeated");
        }
    }

    #[test]
    fn a_file_that_does_not_parse_still_yields_its_lines() {
        let src = "fn (((( {{{{ \n".repeat(20);
        let chunks = chunk_file("broken.rs", &src, &small());
        assert!(!chunks.is_empty());
        assert_eq!(chunks.last().unwrap().end_line, 20);
    }

    #[test]
    fn nodes_ending_at_the_next_line_start_stay_inside_the_file() {
        // `#include` lines and comments end at column 0 of the following row.
        for src in [
            "#include <stdio.h>\n",
            "#include <a.h>\n#include <b.h>\n",
            "// only a comment\n",
            "int x;\n#define Y 1\n",
        ] {
            for path in ["a.c", "a.cpp", "a.rs", "a.py", "a.go"] {
                let chunks = chunk_file(path, src, &ChunkOptions::default());
                let lines = src.lines().count();
                assert!(chunks.iter().all(|c| c.end_line <= lines), "{path} {src:?}: {chunks:?}");
                assert!(!chunks.is_empty(), "{path} {src:?}");
            }
        }
    }

    #[test]
    fn the_hash_is_of_the_text() {
        let chunks = chunk_file("a.txt", "hello\n", &ChunkOptions::default());
        assert_eq!(chunks[0].hash, hex::encode(Sha256::digest(b"hello")));
    }
}
