//! The definitions in a source file, from the same tree-sitter parse as chunking: each one's
//! name, kind, enclosing type, lines and documentation comment. The index keeps them as its
//! symbol table (the catalog's symbol records, looked up by [`crate::lookup`]); evaluation
//! reads them to make tasks whose answer uses a symbol defined elsewhere, and questions whose
//! reference is a definition's documentation. This module is pure: text in, definitions out.

use tree_sitter::{Node, Tree};

use crate::chunker::{definition_name, is_definition, language_of, parse};

/// One definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// The name it introduces (`parse_config`, `TokenVault`); a method's own name, not its
    /// type's.
    pub name: String,
    /// `function`, `type`, `class`, `trait`, `module`, `macro`, `constant`.
    pub kind: &'static str,
    /// The type, class or trait it is defined in (`Config` for `impl Config { fn port }`,
    /// generics left out), for lookups of qualified names such as `Config::port`.
    pub scope: Option<String>,
    /// First and last line, 1-based, inclusive.
    pub start_line: usize,
    pub end_line: usize,
    /// Its documentation comment (`///`, `/** */`, a Python docstring), markers stripped.
    pub doc: Option<String>,
    /// The lines its documentation takes (first and last, 1-based, inclusive), where it takes
    /// them whole: no code before or after it on them, so that they can be taken out.
    pub doc_lines: Option<(usize, usize)>,
}

/// The definitions in `text` (a file at `path`), outermost first; empty for a language
/// without a grammar or a file the grammar cannot parse.
pub fn definitions(path: &str, text: &str) -> Vec<Definition> {
    parse(path, text).map(|tree| definitions_in(&tree, path, text)).unwrap_or_default()
}

/// The definitions in `tree`, the parse of `text` at `path` (shared with chunking).
pub(crate) fn definitions_in(tree: &Tree, path: &str, text: &str) -> Vec<Definition> {
    let mut found = Vec::new();
    // Go documents with plain comments (godoc), and C and C++ code as often as not.
    let plain_docs = matches!(language_of(path), "go" | "c" | "cpp");
    collect(tree.root_node(), text.as_bytes(), plain_docs, None, true, &mut found);
    found
}

/// `plain_docs`: a plain comment right above a definition is its documentation.
fn collect(node: Node, source: &[u8], plain_docs: bool, scope: Option<&str>, top_level: bool, found: &mut Vec<Definition>) {
    let mut cursor = node.walk();
    for child in node.named_children(&mut cursor) {
        let kind = match child.kind() {
            k if is_definition(k) => kind_of(child),
            // Python's module-level `NAME = ...`.
            "expression_statement" if top_level => python_constant(child, source).map(|_| "constant"),
            k => symbol_only_kind(k),
        };
        let name = kind.and_then(|_| match child.kind() {
            "expression_statement" => python_constant(child, source),
            _ => definition_name(child, source),
        });
        let mut inner_scope = scope.map(str::to_owned);
        if let (Some(kind), Some(name)) = (kind, name.filter(|n| is_identifier(n))) {
            // A type's members belong to it; an alias (`typedef`, `type X = ...`) has none.
            let alias = symbol_only_kind(child.kind()).is_some() || child.kind() == "type_alias_declaration";
            if matches!(kind, "type" | "class" | "trait") && !alias {
                inner_scope = Some(name.clone());
            }
            let (doc, doc_lines) = doc_comment(child, source, plain_docs).map_or((None, None), |d| (Some(d.text), d.lines));
            found.push(Definition {
                name,
                kind,
                scope: scope.map(str::to_owned),
                start_line: child.start_position().row + 1,
                end_line: child.end_position().row + 1,
                doc,
                doc_lines,
            });
        } else if child.kind() == "impl_item" {
            // `impl Trait for Type`: its methods belong to the type.
            inner_scope = child
                .child_by_field_name("type")
                .and_then(|t| t.utf8_text(source).ok())
                .map(|t| t.split('<').next().unwrap_or(t).trim().to_owned());
        }
        // Methods inside impls and classes, nested modules, ...
        let nested_top = top_level && matches!(child.kind(), "decorated_definition" | "export_statement" | "module");
        collect(child, source, plain_docs, inner_scope.as_deref(), nested_top, found);
    }
}

/// Kinds of nodes the chunker packs as ordinary items that still define a name worth
/// looking up: constants, statics, type aliases, C's typedefs and macros, Go's constants.
fn symbol_only_kind(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "const_item" | "static_item" | "const_spec" | "var_spec" => "constant",
        // Go's `type_declaration` holds one `type_spec` or `type_alias` per name.
        "type_item" | "type_definition" | "type_spec" | "type_alias" => "type",
        "preproc_def" | "preproc_function_def" => "macro",
        _ => return None,
    })
}

/// The name a module-level Python assignment (`TIMEOUT = 30`, `Handler = Callable[...]`)
/// defines: its left side when that is one identifier.
fn python_constant(node: Node, source: &[u8]) -> Option<String> {
    let assignment = node.named_child(0).filter(|a| a.kind() == "assignment")?;
    let left = assignment.child_by_field_name("left").filter(|l| l.kind() == "identifier")?;
    left.utf8_text(source).ok().map(str::to_owned)
}

/// The kind of a definition node; `None` for nodes that name no symbol of their own (an
/// `impl` block, an `export` wrapper whose inner definition is visited on its own, Go's
/// `type_declaration` whose specs are).
fn kind_of(node: Node) -> Option<&'static str> {
    Some(match node.kind() {
        "function_item"
        | "function_signature_item"
        | "function_definition"
        | "function_declaration"
        | "generator_function_declaration"
        | "method_definition"
        | "method_declaration"
        | "constructor_declaration"
        | "method"
        | "singleton_method"
        | "protocol_function_declaration"
        | "init_declaration" => "function",
        "struct_item"
        | "enum_item"
        | "union_item"
        | "type_alias_declaration"
        | "enum_declaration"
        | "record_declaration"
        | "struct_specifier"
        | "enum_specifier"
        | "interface_declaration"
        | "struct_declaration"
        | "delegate_declaration"
        | "typealias_declaration"
        | "enum_definition" => "type",
        "class_definition"
        | "class_declaration"
        | "abstract_class_declaration"
        | "class_specifier"
        | "class"
        | "object_declaration"
        | "object_definition" => "class",
        "trait_item" | "trait_declaration" | "protocol_declaration" | "trait_definition" => "trait",
        "mod_item" | "namespace_definition" | "namespace_declaration" | "module" => "module",
        "macro_definition" => "macro",
        "lexical_declaration" => "constant",
        _ => return None,
    })
}

/// Whether `name` is one plain identifier (not `a, b` from a multi-name declaration).
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_') && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// A definition's documentation: its text, and its lines where it takes them whole.
struct Doc {
    text: String,
    lines: Option<(usize, usize)>,
}

/// The documentation of a definition: the doc comments right above it (above its Rust
/// attributes, if any; above its `export`, if any; any comment where `plain_docs`), or a
/// Python docstring (the first statement of its body).
fn doc_comment(node: Node, source: &[u8], plain_docs: bool) -> Option<Doc> {
    let text = |n: Node| n.utf8_text(source).ok().unwrap_or_default().to_owned();
    // Python: a string as the body's first statement.
    if let Some(body) = node.child_by_field_name("body") {
        let first = body.named_child(0);
        if let Some(first) = first {
            if first.kind() == "expression_statement" && first.named_child(0).is_some_and(|s| s.kind() == "string") {
                let raw = text(first);
                let doc = without_string_prefix(raw.trim()).trim_matches(|c| c == '"' || c == '\'').trim();
                return (!doc.is_empty()).then(|| Doc {
                    text: dedent(doc),
                    lines: whole_lines(first, first, source),
                });
            }
        }
    }
    // Comments directly above (no blank line between), innermost last. JavaScript and
    // TypeScript document `export function f` above its `export`, C++ a template above its
    // `template <...>`.
    let node = node
        .parent()
        .filter(|p| matches!(p.kind(), "export_statement" | "template_declaration"))
        .unwrap_or(node);
    let mut lines = Vec::new();
    let mut expected_end = node.start_position().row;
    // Ruby: the comments above a body's first statement lie before the body itself.
    let mut sibling = node
        .prev_sibling()
        .or_else(|| node.parent().filter(|p| p.kind() == "body_statement")?.prev_sibling());
    let (mut top, mut bottom) = (None, None);
    while let Some(above) = sibling {
        if above.end_position().row + 1 < expected_end {
            break;
        }
        // Rust's `#[derive(..)]` and the like, between the documentation and the item.
        if above.kind() == "attribute_item" && bottom.is_none() {
            expected_end = above.start_position().row;
            sibling = above.prev_sibling();
            continue;
        }
        if !above.kind().contains("comment") {
            break;
        }
        let raw = text(above);
        let is_doc = raw.starts_with("///") || raw.starts_with("/**") || raw.starts_with("//!") || raw.starts_with('#');
        let is_doc = is_doc || (plain_docs && (raw.starts_with("//") || raw.starts_with("/*")));
        if !is_doc {
            break;
        }
        lines.push(strip_comment(&raw));
        bottom = bottom.or(Some(above));
        top = Some(above);
        expected_end = above.start_position().row;
        sibling = above.prev_sibling();
    }
    lines.reverse();
    let doc = lines.join("\n").trim().to_owned();
    (!doc.is_empty()).then(|| Doc {
        text: doc,
        lines: top.zip(bottom).and_then(|(top, bottom)| whole_lines(top, bottom, source)),
    })
}

/// The lines from `first`'s to `last`'s (1-based, inclusive) when nothing but blanks shares
/// them.
fn whole_lines(first: Node, last: Node, source: &[u8]) -> Option<(usize, usize)> {
    let line_start = source[..first.start_byte()].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    // A line comment may hold its line's end (Rust's do): then it ends on the row before.
    let with_newline = last.end_byte() > last.start_byte() && source.get(last.end_byte() - 1) == Some(&b'\n');
    let end = last.end_byte() - usize::from(with_newline);
    let line_end = source[end..].iter().position(|&b| b == b'\n').map_or(source.len(), |i| end + i);
    let last_row = last.end_position().row - usize::from(with_newline);
    let blank = |bytes: &[u8]| bytes.iter().all(u8::is_ascii_whitespace);
    (blank(&source[line_start..first.start_byte()]) && blank(&source[end..line_end]))
        .then(|| (first.start_position().row + 1, last_row + 1))
}

fn strip_comment(raw: &str) -> String {
    raw.lines()
        .map(|l| {
            let l = l.trim();
            let l = ["///", "//!", "//"].iter().find_map(|p| l.strip_prefix(p)).unwrap_or(l);
            let l = ["/**", "/*"].iter().find_map(|p| l.strip_prefix(p)).unwrap_or(l);
            let l = l.strip_suffix("*/").unwrap_or(l);
            let l = l.strip_prefix('*').unwrap_or(l);
            // Ruby's RDoc opens a block with `##`.
            let l = l.trim_start_matches('#');
            l.trim().to_owned()
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A Python string literal without its prefix (`r"""`, `u'`, `Rb"`): what follows is quotes.
fn without_string_prefix(literal: &str) -> &str {
    let prefix = literal.find(['"', '\'']).unwrap_or(0);
    if prefix <= 2 && literal[..prefix].chars().all(|c| "rRuUbBfF".contains(c)) {
        &literal[prefix..]
    } else {
        literal
    }
}

fn dedent(doc: &str) -> String {
    doc.lines().map(str::trim).collect::<Vec<_>>().join("\n").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_definitions_with_their_doc_comments() {
        let text = "/// Reads the config.\n/// Missing file: defaults.\npub fn parse_config(p: &str) -> Config { todo!() }\n\n\
                    // not a doc\nstruct Config { port: u16 }\n\nimpl Config {\n    /// The port.\n    fn port(&self) -> u16 { self.port }\n}\n";
        let defs = definitions("src/config.rs", text);
        let names: Vec<(&str, &str)> = defs.iter().map(|d| (d.name.as_str(), d.kind)).collect();
        assert_eq!(names, [("parse_config", "function"), ("Config", "type"), ("port", "function")]);
        assert_eq!(defs[0].doc.as_deref(), Some("Reads the config.\nMissing file: defaults."));
        assert_eq!(defs[0].start_line, 3);
        assert_eq!(defs[1].doc, None, "a plain comment is not documentation");
        assert_eq!(defs[2].doc.as_deref(), Some("The port."));
        assert_eq!(defs[2].start_line, 10);
    }

    /// (name, kind, scope) of each definition in `text`.
    fn defined(path: &str, text: &str) -> Vec<(String, &'static str, String)> {
        definitions(path, text)
            .into_iter()
            .map(|d| (d.name, d.kind, d.scope.unwrap_or_default()))
            .collect()
    }

    fn has(found: &[(String, &'static str, String)], name: &str, kind: &str, scope: &str) -> bool {
        found.iter().any(|(n, k, s)| n == name && *k == kind && s == scope)
    }

    /// A definition a case must list: name, kind, enclosing type.
    type Expected = (&'static str, &'static str, &'static str);

    #[test]
    fn every_chunker_language_names_its_definitions_kinds_and_scopes() {
        let cases: &[(&str, &str, &[Expected])] = &[
            (
                "src/lib.rs",
                "pub const LIMIT: usize = 3;\nstatic NAME: &str = \"x\";\ntype Id = u64;\nmacro_rules! m { () => {} }\n\
                 pub trait Store { fn get(&self) -> Id; }\nmod inner { pub fn helper() {} }\n\
                 impl<T> Store for Vault<T> { fn get(&self) -> Id { 1 } }\n",
                &[
                    ("LIMIT", "constant", ""),
                    ("NAME", "constant", ""),
                    ("Id", "type", ""),
                    ("m", "macro", ""),
                    ("Store", "trait", ""),
                    ("get", "function", "Store"),
                    ("inner", "module", ""),
                    ("helper", "function", ""),
                    ("get", "function", "Vault"),
                ],
            ),
            (
                "pkg/app.py",
                "TIMEOUT = 30\n\n@cached\ndef load(path):\n    x = 1\n    return x\n\nclass Vault(Base):\n    KEY = 1\n    def rotate(self):\n        pass\n",
                &[("TIMEOUT", "constant", ""), ("load", "function", ""), ("Vault", "class", ""), ("rotate", "function", "Vault")],
            ),
            (
                "web/app.js",
                "export function render(el) {}\nconst LIMIT = 3;\nclass Widget { draw() {} }\n",
                &[("render", "function", ""), ("LIMIT", "constant", ""), ("Widget", "class", ""), ("draw", "function", "Widget")],
            ),
            (
                "web/types.ts",
                "export interface Invoice { total: number }\ntype Id = string;\nenum Color { Red }\nexport class Billing { charge(): void {} }\n",
                &[
                    ("Invoice", "type", ""),
                    ("Id", "type", ""),
                    ("Color", "type", ""),
                    ("Billing", "class", ""),
                    ("charge", "function", "Billing"),
                ],
            ),
            (
                "web/view.tsx",
                "export function Panel(props: Props) { return <div/>; }\n",
                &[("Panel", "function", "")],
            ),
            (
                "storage/blob.go",
                "package storage\n\nconst MaxSize = 10\n\ntype (\n\tBlobStore struct{}\n\tKey = string\n)\n\nfunc NewBlobStore() *BlobStore { return nil }\n\nfunc (b *BlobStore) Put(k Key) {}\n",
                &[
                    ("MaxSize", "constant", ""),
                    ("BlobStore", "type", ""),
                    ("Key", "type", ""),
                    ("NewBlobStore", "function", ""),
                    ("Put", "function", ""),
                ],
            ),
            (
                "src/Ledger.java",
                "public class Ledger {\n  public Ledger() {}\n  void post(int amount) {}\n}\ninterface Book {}\nrecord Entry(int a) {}\n",
                &[
                    ("Ledger", "class", ""),
                    ("Ledger", "function", "Ledger"),
                    ("post", "function", "Ledger"),
                    ("Book", "type", ""),
                    ("Entry", "type", ""),
                ],
            ),
            (
                "src/ring.c",
                "#define RING_SIZE 64\ntypedef struct ring { int head; } ring_t;\nint ring_push(ring_t *r, int v) { return 0; }\n",
                &[("RING_SIZE", "macro", ""), ("ring", "type", ""), ("ring_t", "type", ""), ("ring_push", "function", "")],
            ),
            (
                "src/pool.cpp",
                "namespace net {\nclass Pool {\n public:\n  int size() { return 0; }\n};\n}\nint drain(Pool& p) { return 0; }\n",
                &[("net", "module", ""), ("Pool", "class", ""), ("size", "function", "Pool"), ("drain", "function", "")],
            ),
            (
                "src/Billing/Invoice.cs",
                "namespace Acme.Billing {\n  public class Invoice {\n    public Invoice() {}\n    public decimal Total() { return 0; }\n  }\n\
                 public interface IBook {}\n  public struct Money {}\n  public enum Color { Red }\n  public record Entry(int A);\n\
                 public delegate void Posted(int a);\n}\nnamespace Acme { class Util {} }\n",
                &[
                    ("Invoice", "class", ""),
                    ("Invoice", "function", "Invoice"),
                    ("Total", "function", "Invoice"),
                    ("IBook", "type", ""),
                    ("Money", "type", ""),
                    ("Color", "type", ""),
                    ("Entry", "type", ""),
                    ("Posted", "type", ""),
                    ("Acme", "module", ""),
                    ("Util", "class", ""),
                ],
            ),
            (
                "lib/billing/invoice.rb",
                "module Billing\n  class Invoice < Base\n    def total(lines)\n      lines.sum\n    end\n\n    def self.open(id)\n      new\n    end\n  end\nend\n\n\
                 class Billing::Ledger\nend\n",
                &[
                    ("Billing", "module", ""),
                    ("Invoice", "class", ""),
                    ("total", "function", "Invoice"),
                    ("open", "function", "Invoice"),
                    ("Ledger", "class", ""),
                ],
            ),
            (
                "src/Invoice.php",
                "<?php\nnamespace App\\Billing;\n\ninterface Book {}\ntrait Posts {}\nclass Invoice {\n    public function total(): int { return 0; }\n}\n\
                 function helper() {}\n",
                &[
                    ("Book", "type", ""),
                    ("Posts", "trait", ""),
                    ("Invoice", "class", ""),
                    ("total", "function", "Invoice"),
                    ("helper", "function", ""),
                ],
            ),
            (
                "app/src/main/kotlin/Ledger.kt",
                "package acme.books\n\nclass Ledger(val name: String) {\n    fun post(amount: Int): Int = amount\n}\n\
                 interface Book\nobject Registry { fun lookup(id: String) = id }\nfun openLedger(): Ledger = Ledger(\"x\")\n",
                &[
                    ("Ledger", "class", ""),
                    ("post", "function", "Ledger"),
                    ("Book", "class", ""),
                    ("Registry", "class", ""),
                    ("lookup", "function", "Registry"),
                    ("openLedger", "function", ""),
                ],
            ),
            (
                "Sources/Books/Ledger.swift",
                "protocol Book { func balance() -> Int }\nstruct Ledger: Book {\n    init() {}\n    func balance() -> Int { 0 }\n}\n\
                 typealias Amount = Int\nfunc openLedger() -> Ledger { Ledger() }\n",
                &[
                    ("Book", "trait", ""),
                    ("balance", "function", "Book"),
                    ("Ledger", "class", ""),
                    ("balance", "function", "Ledger"),
                    ("Amount", "type", ""),
                    ("openLedger", "function", ""),
                ],
            ),
            (
                "src/main/scala/Ledger.scala",
                "package acme\n\ntrait Book { def balance: Int }\nclass Ledger extends Book {\n  def balance: Int = 0\n  def post(a: Int): Unit = ()\n}\n\
                 object Ledger { def open(): Ledger = new Ledger }\ntype Amount = Int\n",
                &[
                    ("Book", "trait", ""),
                    ("Ledger", "class", ""),
                    ("post", "function", "Ledger"),
                    ("open", "function", "Ledger"),
                    ("Amount", "type", ""),
                ],
            ),
        ];
        for (path, text, expected) in cases {
            let found = defined(path, text);
            for (name, kind, scope) in *expected {
                assert!(
                    has(&found, name, kind, scope),
                    "{path}: no {kind} {name} in `{scope}`; found {found:?}"
                );
            }
        }
        let locals = defined("pkg/app.py", cases[1].1);
        assert!(
            !locals.iter().any(|(n, ..)| n == "x"),
            "a function's local is no definition: {locals:?}"
        );
    }

    #[test]
    fn csharp_ruby_and_php_doc_comments() {
        let doc_of = |path: &str, text: &str, name: &str| {
            let defs = definitions(path, text);
            defs.into_iter().find(|d| d.name == name).and_then(|d| d.doc)
        };
        let cs = "class Vault {\n  /// <summary>Rotates the keys.</summary>\n  public void Rotate() {}\n}\n";
        assert_eq!(
            doc_of("Vault.cs", cs, "Rotate").as_deref(),
            Some("<summary>Rotates the keys.</summary>")
        );
        let rb = "class Vault\n  # Rotates the keys.\n  # Every hour.\n  def rotate\n  end\nend\n";
        assert_eq!(doc_of("vault.rb", rb, "rotate").as_deref(), Some("Rotates the keys.\nEvery hour."));
        let rdoc =
            "class Vault\n  ##\n  #  call-seq:\n  #     vault.rotate -> key\n  #\n  #  Rotates the keys.\n  def rotate\n  end\nend\n";
        assert_eq!(
            doc_of("vault.rb", rdoc, "rotate").as_deref(),
            Some("call-seq:\nvault.rotate -> key\n\nRotates the keys."),
            "RDoc's `##` opens the block and says nothing"
        );
        let php = "<?php\nclass Vault {\n    /**\n     * Rotates the keys.\n     */\n    public function rotate() {}\n}\n";
        assert_eq!(doc_of("Vault.php", php, "rotate").as_deref(), Some("Rotates the keys."));
    }

    #[test]
    fn python_docstrings_and_methods() {
        let text = "class Vault:\n    \"\"\"Holds keys.\"\"\"\n\n    def rotate(self):\n        '''Replaces the signing key.\n\n        Returns the old one.'''\n        return 1\n";
        let defs = definitions("vault.py", text);
        let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["Vault", "rotate"]);
        assert_eq!(defs[0].doc.as_deref(), Some("Holds keys."));
        assert_eq!(defs[1].doc.as_deref(), Some("Replaces the signing key.\n\nReturns the old one."));
        assert!(definitions("notes.md", "# hi").is_empty());
        let raw = "def escape(text):\n    r\"\"\"Escapes a \\n in text.\"\"\"\n    return text\n\ndef b():\n    u'Says b.'\n    return 1\n";
        let docs: Vec<Option<String>> = definitions("raw.py", raw).into_iter().map(|d| d.doc).collect();
        assert_eq!(
            docs,
            [Some("Escapes a \\n in text.".to_owned()), Some("Says b.".to_owned())],
            "a string prefix is no text"
        );
    }

    /// The documentation of the definition `name` in `text`, and its lines.
    fn doc(path: &str, text: &str, name: &str) -> (Option<String>, Option<(usize, usize)>) {
        let d = definitions(path, text).into_iter().find(|d| d.name == name).expect(name);
        (d.doc, d.doc_lines)
    }

    #[test]
    fn go_and_c_document_with_plain_comments_right_above() {
        let go = "package vault\n\n// Rotate replaces the signing keys.\n// It runs every hour.\nfunc Rotate() {}\n\n// Apart.\n\nfunc Seal() {}\n";
        assert_eq!(
            doc("vault.go", go, "Rotate"),
            (
                Some("Rotate replaces the signing keys.\nIt runs every hour.".to_owned()),
                Some((3, 4))
            )
        );
        assert_eq!(doc("vault.go", go, "Seal"), (None, None), "a blank line between");
        let c = "#include <x.h>\n\n/* Rotates the keys\n * every hour. */\nvoid rotate(void) {}\n// Seals.\nstatic int seal(void) { return 0; }\n";
        assert_eq!(
            doc("vault.c", c, "rotate"),
            (Some("Rotates the keys\nevery hour.".to_owned()), Some((3, 4)))
        );
        assert_eq!(doc("vault.c", c, "seal"), (Some("Seals.".to_owned()), Some((6, 6))));
    }

    #[test]
    fn documentation_lines_are_known_where_the_documentation_takes_them_whole() {
        let rs = "use x;\n\n/// Rotates the keys.\n/// Every hour.\n#[derive(Debug)]\n#[must_use]\npub struct Vault;\n\nfn f() {} /// not above\nfn g() {}\n";
        assert_eq!(
            doc("src/v.rs", rs, "Vault"),
            (Some("Rotates the keys.\nEvery hour.".to_owned()), Some((3, 4))),
            "above the attributes"
        );
        assert_eq!(doc("src/v.rs", rs, "g").1, None, "code shares the comment's line");
        let py = "def rotate(self):\n    '''Replaces the key.\n\n    Returns the old one.'''\n    return 1\n\ndef one(): '''Inline.'''\n";
        assert_eq!(doc("v.py", py, "rotate").1, Some((2, 4)));
        assert_eq!(doc("v.py", py, "one"), (Some("Inline.".to_owned()), None));
        let java = "class V {\n  /**\n   * Rotates.\n   */\n  @Override\n  public void rotate() {}\n}\n";
        assert_eq!(doc("V.java", java, "rotate"), (Some("Rotates.".to_owned()), Some((2, 4))));
    }

    #[test]
    fn exports_and_templates_keep_the_documentation_above_them() {
        let ts = "/** Rotates the keys. */\nexport function rotate(): void {}\n\n/**\n * Holds keys.\n */\nexport default class Vault {}\n\n/** Not above. */\n\nexport function seal() {}\n";
        assert_eq!(doc("v.ts", ts, "rotate"), (Some("Rotates the keys.".to_owned()), Some((1, 1))));
        assert_eq!(doc("v.ts", ts, "Vault"), (Some("Holds keys.".to_owned()), Some((4, 6))));
        assert_eq!(doc("v.ts", ts, "seal"), (None, None), "a blank line between");
        let js = "// plain\n/** Opens it. */\nexport function open(path) {}\nfunction close() {}\n";
        assert_eq!(doc("v.js", js, "open"), (Some("Opens it.".to_owned()), Some((2, 2))));
        assert_eq!(doc("v.js", js, "close"), (None, None), "code right above is no documentation");
        let cpp = "/// Holds one value.\ntemplate <typename T>\nclass Box {};\n// Wraps it.\ntemplate <typename T>\nBox<T> wrap(T v) { return {}; }\n";
        assert_eq!(doc("box.hpp", cpp, "Box"), (Some("Holds one value.".to_owned()), Some((1, 1))));
        assert_eq!(doc("box.hpp", cpp, "wrap"), (Some("Wraps it.".to_owned()), Some((4, 4))));
    }
}
