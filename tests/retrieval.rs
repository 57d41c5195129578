//! Indexing and searching real repositories with the kit's embedding model: retrieval quality on
//! a multi-language fixture, incremental re-indexing, bad input, and a project searched while
//! the server indexes it.

use std::path::Path;

use graft_index::{
    index_repository, IndexError, IndexLayout, IndexOptions, IndexReport, Names, ProjectIndex, Query, Quiet, SearchMode, SearchOptions,
};
use graft_server::projects::{LookUp, ReindexError, Search};
use graft_tests::{copy_fixture, kit_embedder, kit_file};

fn index(repo: &Path, index_dir: &Path) -> IndexReport {
    index_repository(repo, &IndexLayout::new(index_dir), kit_embedder(), &IndexOptions::default(), &Quiet)
        .unwrap_or_else(|e| panic!("indexing {} failed: {e}", repo.display()))
}

fn search(index_dir: &Path, query: &str, k: usize, mode: SearchMode) -> Vec<graft_index::SearchHit> {
    let index = ProjectIndex::open("test", &IndexLayout::new(index_dir)).expect("index opens");
    let options = SearchOptions {
        k,
        mode,
        ..SearchOptions::default()
    };
    index.search(query, Some(kit_embedder()), &options).expect("search works")
}

/// Code that uses a symbol, and the file that defines it.
const QUERIES: &[(&str, &str)] = &[
    (
        "let mut book = LedgerBook::open_empty();\nbook.reconcile_entries()?;",
        "src/ledger.rs",
    ),
    ("let earned = book.apply_interest_rate(\"checking\", 125, 31);", "src/ledger.rs"),
    ("totals = compute_vat_breakdown(order.items)", "billing/invoice.py"),
    (
        "pdf = InvoiceRenderer(company).render_pdf_summary(customer, lines)",
        "billing/invoice.py",
    ),
    ("bs := NewBlobStore(1 << 20)", "storage/blobstore.go"),
    ("refs, err := store.PutChunked(payload)", "storage/blobstore.go"),
    (
        "TokenVault vault = new TokenVault(5);\nvault.rotateSigningKeys();",
        "auth/TokenVault.java",
    ),
    ("byte[] key = vault.currentSigningKey();", "auth/TokenVault.java"),
    ("const guard = createRouteGuard([\"editor\", \"admin\"]);", "web/routeGuard.ts"),
    (
        "const ctx: GuardContext = { userRoles: roles, path: \"/admin\" };",
        "web/routeGuard.ts",
    ),
    ("emitTelemetryBeacon(\"checkout\", { cart: cart.id });", "web/telemetry.js"),
    ("uint32_t sum = crc32_update_table(0, buf, n);", "native/crc.c"),
    ("native::LruShardCache cache(1024);\ncache.put(k, v);", "native/cache.cpp"),
    ("size_t dropped = cache.evictColdEntries();", "native/cache.cpp"),
];

/// Questions in words, as a chat user asks them, and the file that answers them. The fixture's
/// tests, docs and legacy copies use the same words, so the first place is hard; the top 5 is
/// what a prompt's context holds.
const QUESTIONS: &[(&str, &str)] = &[
    ("how are ledger entries reconciled", "src/ledger.rs"),
    ("where is interest applied to an account balance", "src/ledger.rs"),
    ("compute the tax breakdown of an order", "billing/invoice.py"),
    ("render an invoice summary as a PDF document", "billing/invoice.py"),
    ("split a large payload into chunks for storage", "storage/blobstore.go"),
    ("how do I rotate the signing keys", "auth/TokenVault.java"),
    ("which roles may open an admin page", "web/routeGuard.ts"),
    ("send usage analytics from the browser", "web/telemetry.js"),
    ("checksum table for crc32", "native/crc.c"),
    ("drop the least recently used cache entries", "native/cache.cpp"),
    ("where are sessions expired", "auth/SessionManager.java"),
    ("sync blobs between two stores", "storage/sync.go"),
];

/// The share of `queries` whose expected file is in the top 5, and the misses.
fn hit_rate(index_dir: &Path, queries: &[(&str, &str)], mode: SearchMode) -> (f64, Vec<String>) {
    let mut misses = Vec::new();
    for (query, expected) in queries {
        let hits = search(index_dir, query, 5, mode);
        if !hits.iter().any(|h| h.path == *expected) {
            let got: Vec<_> = hits.iter().map(|h| h.path.as_str()).collect();
            misses.push(format!("{query:?} -> expected {expected}, got {got:?}"));
        }
    }
    (1.0 - misses.len() as f64 / queries.len() as f64, misses)
}

/// Top-1 accuracy and mean reciprocal rank of the defining file in the top 10 (reported).
fn ranking(index_dir: &Path, queries: &[(&str, &str)], mode: SearchMode) -> (f64, f64) {
    let mut top1 = 0.0;
    let mut mrr = 0.0;
    for (query, expected) in queries {
        let hits = search(index_dir, query, 10, mode);
        if let Some(rank) = hits.iter().position(|h| h.path == *expected) {
            mrr += 1.0 / (rank as f64 + 1.0);
            if rank == 0 {
                top1 += 1.0;
            }
        }
    }
    let n = queries.len() as f64;
    (top1 / n, mrr / n)
}

#[test]
fn hybrid_search_finds_the_defining_file_for_code_and_the_answering_file_for_questions() {
    let repo = copy_fixture("polyglot");
    let index_dir = tempfile::tempdir().unwrap();
    let report = index(repo.path(), index_dir.path());
    assert_eq!(report.files_indexed, 22, "{report:?}");
    assert!(report.chunks >= 22, "{report:?}");

    for (set, queries) in [("code that uses a symbol", QUERIES), ("questions in words", QUESTIONS)] {
        let (hybrid, hybrid_misses) = hit_rate(index_dir.path(), queries, SearchMode::Hybrid);
        let (keyword, keyword_misses) = hit_rate(index_dir.path(), queries, SearchMode::Keyword);
        let (vector, vector_misses) = hit_rate(index_dir.path(), queries, SearchMode::Vector);
        println!("{set}: top-5 hit rate: hybrid {hybrid:.2}, keyword {keyword:.2}, vector {vector:.2}");
        for mode in [SearchMode::Hybrid, SearchMode::Keyword, SearchMode::Vector] {
            let (top1, mrr) = ranking(index_dir.path(), queries, mode);
            println!("{set}: {mode:?}: top-1 {top1:.2}, MRR@10 {mrr:.2}");
        }
        assert!(hybrid >= 0.9, "{set}: hybrid hit rate {hybrid:.2}; misses: {hybrid_misses:#?}");
        assert!(
            hybrid >= keyword,
            "{set}: hybrid {hybrid:.2} < keyword {keyword:.2}; keyword misses {keyword_misses:#?}"
        );
        assert!(
            hybrid >= vector,
            "{set}: hybrid {hybrid:.2} < vector {vector:.2}; vector misses {vector_misses:#?}"
        );
    }
}

#[test]
fn results_carry_location_symbol_and_text_and_respect_the_per_file_cap() {
    let repo = copy_fixture("polyglot");
    let index_dir = tempfile::tempdir().unwrap();
    index(repo.path(), index_dir.path());
    let hits = search(
        index_dir.path(),
        "reconcile_entries apply_interest_rate LedgerBook",
        10,
        SearchMode::Hybrid,
    );
    let ledger = hits.iter().find(|h| h.path == "src/ledger.rs").expect("ledger.rs is found");
    let source = std::fs::read_to_string(repo.path().join("src/ledger.rs")).unwrap();
    let lines: Vec<&str> = source.lines().collect();
    assert_eq!(ledger.text, lines[ledger.start_line - 1..ledger.end_line].join("\n"));
    assert_eq!(ledger.language, "rust");
    assert!(!ledger.symbol.is_empty(), "{ledger:?}");
    for path in hits.iter().map(|h| &h.path) {
        assert!(hits.iter().filter(|h| &h.path == path).count() <= 2, "per-file cap: {hits:#?}");
    }
    let scores: Vec<f64> = hits.iter().map(|h| h.score).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");

    // A hybrid search whose vectors count for nothing is keyword search and definition lookup
    // alone: it needs no embedding model, and ranks as the keywords and definitions do.
    let index = ProjectIndex::open("test", &IndexLayout::new(index_dir.path())).expect("index opens");
    let code = "let mut book = LedgerBook::open_empty();\nbook.reconcile_entries()?;";
    let query = Query {
        text: code,
        names: Some(Names::Code { before: code, after: "" }),
        current_path: Some("src/main.rs"),
    };
    let without_vectors = SearchOptions {
        vector_weight: 0.0,
        ..SearchOptions::default()
    };
    let hits = index.search_for(&query, None, &without_vectors).expect("no embedding model needed");
    assert_eq!(hits.first().map(|h| h.path.as_str()), Some("src/ledger.rs"), "{hits:#?}");
    let refused = index.search_for(&query, None, &SearchOptions::default());
    assert!(refused.is_err(), "vectors that count need the model");
}

/// Edits one file of the polyglot fixture (storage/sync.go gains `MirrorQuota`), adds one
/// (web/featureFlags.ts, `isFeatureEnabled`) and deletes one (auth/SessionManager.java).
fn edit_add_delete(repo: &Path) {
    let sync = repo.join("storage/sync.go");
    let edited = std::fs::read_to_string(&sync).unwrap()
        + "\n// MirrorQuota caps how many chunks one mirror may use.\nconst MirrorQuota = 1 << 16\n";
    std::fs::write(&sync, edited).unwrap();
    std::fs::write(
        repo.join("web/featureFlags.ts"),
        "export function isFeatureEnabled(flag: string, flags: Set<string>): boolean {\n  return flags.has(flag);\n}\n",
    )
    .unwrap();
    std::fs::remove_file(repo.join("auth/SessionManager.java")).unwrap();
}

#[test]
fn a_second_run_redoes_only_what_changed() {
    let repo = copy_fixture("polyglot");
    let index_dir = tempfile::tempdir().unwrap();
    let first = index(repo.path(), index_dir.path());
    assert_eq!(first.files_added, 22);
    assert_eq!(first.embeddings, first.chunks, "a new index embeds every chunk once");
    assert_eq!(first.languages.values().sum::<usize>(), 22, "{:?}", first.languages);
    assert_eq!(
        (first.languages["rust"], first.languages["c"], first.languages["markdown"]),
        (3, 3, 3)
    );

    let unchanged = index(repo.path(), index_dir.path());
    assert_eq!((unchanged.files_added, unchanged.files_changed, unchanged.files_removed), (0, 0, 0));
    assert_eq!(unchanged.files_unchanged, 22);
    assert_eq!(unchanged.embeddings, 0, "nothing is embedded again: {unchanged:?}");
    assert_eq!(unchanged.chunks, first.chunks);

    edit_add_delete(repo.path());

    let second = index(repo.path(), index_dir.path());
    assert_eq!(
        (second.files_added, second.files_changed, second.files_removed),
        (1, 1, 1),
        "{second:?}"
    );
    assert_eq!(second.files_unchanged, 20);
    let chunked: Vec<(&str, usize)> = second.languages.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    assert_eq!(chunked, [("go", 1), ("typescript", 1)], "only the files chunked now");
    assert!(second.embeddings > 0 && second.embeddings <= second.chunks_written, "{second:?}");
    assert!(
        second.embeddings < first.embeddings / 4,
        "only the changed files' chunks are embedded: {second:?}"
    );
    assert!(second.stale_vectors_removed >= 1, "the deleted file's vectors go: {second:?}");

    let hits = search(index_dir.path(), "isFeatureEnabled(flag, flags)", 5, SearchMode::Hybrid);
    assert_eq!(hits.first().map(|h| h.path.as_str()), Some("web/featureFlags.ts"), "{hits:#?}");
    let hits = search(index_dir.path(), "MirrorQuota", 5, SearchMode::Keyword);
    assert_eq!(hits.first().map(|h| h.path.as_str()), Some("storage/sync.go"), "{hits:#?}");
    for mode in [SearchMode::Keyword, SearchMode::Vector, SearchMode::Hybrid] {
        let hits = search(index_dir.path(), "SessionManager nightly keyForNewSession", 20, mode);
        assert!(hits.iter().all(|h| h.path != "auth/SessionManager.java"), "{mode:?}: {hits:#?}");
    }
}

/// What an index holds, to compare two: each file's hash, each chunk (id, place, symbol,
/// text), the definitions of every name a chunk's symbol holds, and the ids with a vector.
type Contents = (
    std::collections::BTreeMap<String, String>,
    Vec<(u64, String, usize, usize, String, String)>,
    Vec<(String, String, usize, u64)>,
    std::collections::BTreeSet<u64>,
);

fn contents(index_dir: &Path) -> Contents {
    use graft_index::catalog::{Catalog, TantivyCatalog};
    let layout = IndexLayout::new(index_dir);
    let catalog = TantivyCatalog::open(&layout).expect("the catalog opens");
    let files = catalog.files().unwrap().into_iter().collect();
    let ids: Vec<u64> = catalog.chunk_ids().unwrap().into_iter().collect();
    let mut chunks: Vec<_> = catalog
        .chunks(&ids)
        .unwrap()
        .into_values()
        .map(|c| (c.id, c.path, c.start_line, c.end_line, c.symbol, c.text))
        .collect();
    chunks.sort();
    let names: std::collections::BTreeSet<&str> = chunks
        .iter()
        .flat_map(|c| c.4.split(|ch: char| !ch.is_alphanumeric() && ch != '_'))
        .filter(|name| !name.is_empty())
        .collect();
    let names: Vec<&str> = names.into_iter().collect();
    let mut definitions: Vec<_> = catalog
        .definitions(&names, 10_000)
        .unwrap()
        .into_iter()
        .map(|d| (d.name, d.path, d.start_line, d.chunk))
        .collect();
    definitions.sort();
    let store = graft_index::vectors::EdgeStore::open(&layout.vectors(), kit_embedder().dims()).expect("the vectors open");
    let vectors = graft_index::vectors::VectorStore::ids(&store).unwrap().into_iter().collect();
    (files, chunks, definitions, vectors)
}

/// Asks a run to stop once it has read `after` files.
struct StopAfter {
    after: usize,
    read: std::sync::atomic::AtomicUsize,
}

impl graft_index::IndexProgress for StopAfter {
    fn read(&self, n: usize) {
        self.read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn should_stop(&self) -> bool {
        self.read.load(std::sync::atomic::Ordering::Relaxed) >= self.after
    }
}

#[test]
fn a_run_file_by_file_writes_what_a_run_in_one_slice_does_and_a_stop_between_slices_commits_nothing() {
    let repo = copy_fixture("polyglot");
    let (whole, sliced) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // One file a slice: every file's records handed to the writer before the next is read.
    let file_by_file = IndexOptions {
        slice_bytes: 1,
        ..IndexOptions::default()
    };
    let run = |index_dir: &Path, options: &IndexOptions, progress: &dyn graft_index::IndexProgress| {
        index_repository(repo.path(), &IndexLayout::new(index_dir), kit_embedder(), options, progress)
    };
    let one = run(whole.path(), &IndexOptions::default(), &Quiet).unwrap();
    let many = run(sliced.path(), &file_by_file, &Quiet).unwrap();
    let counts = |r: &IndexReport| (r.files_added, r.chunks, r.chunks_written, r.symbols_written, r.embeddings);
    assert_eq!(counts(&one), counts(&many));
    assert_eq!((many.files_added, many.embeddings), (22, many.chunks), "{many:?}");
    assert!(many.symbols_written > 50, "{many:?}");
    let first = contents(whole.path());
    assert_eq!(first.1.len(), one.chunks);
    assert!(first.2.len() > 20, "definitions found: {}", first.2.len());
    assert_eq!(first.3.len(), one.chunks, "every chunk has its vector");
    assert_eq!(contents(sliced.path()), first);

    // A run stopped after three files commits nothing.
    edit_add_delete(repo.path());
    let stop = StopAfter {
        after: 3,
        read: Default::default(),
    };
    let err = run(sliced.path(), &file_by_file, &stop).unwrap_err();
    assert!(matches!(err, IndexError::Stopped), "{err:?}");
    assert_eq!(stop.read.load(std::sync::atomic::Ordering::Relaxed), 3);
    let stopped = contents(sliced.path());
    assert_eq!(
        (&stopped.0, &stopped.1, &stopped.2),
        (&first.0, &first.1, &first.2),
        "the catalog is as it was"
    );
    let hits = search(sliced.path(), "MirrorQuota", 5, SearchMode::Keyword);
    assert!(hits.iter().all(|h| !h.text.contains("MirrorQuota")), "{hits:#?}");

    let again = run(sliced.path(), &file_by_file, &Quiet).unwrap();
    assert_eq!(
        (again.files_added, again.files_changed, again.files_removed),
        (1, 1, 1),
        "{again:?}"
    );
    run(whole.path(), &IndexOptions::default(), &Quiet).unwrap();
    let second = contents(whole.path());
    assert_ne!(second.0, first.0);
    assert_eq!(contents(sliced.path()), second);
    let hits = search(sliced.path(), "MirrorQuota", 5, SearchMode::Keyword);
    assert!(hits.iter().any(|h| h.text.contains("MirrorQuota")), "{hits:#?}");
}

#[test]
fn bad_input_is_reported_and_the_rest_is_indexed() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    std::fs::write(root.join("good.py"), "def well_named_function():\n    return 42\n").unwrap();
    std::fs::write(root.join("latin1.txt"), [0x63, 0x61, 0x66, 0xe9, 0x0a, 0xff, 0xfe]).unwrap();
    std::fs::write(root.join("image.png"), [0x89, b'P', b'N', b'G', 0, 0, 0, 13]).unwrap();
    let huge = std::fs::File::create(root.join("huge.log")).unwrap();
    huge.set_len(50 * 1024 * 1024).unwrap();
    std::fs::write(root.join("bundle.js"), format!("var a={};\n", "1+".repeat(5000) + "1")).unwrap();
    std::fs::write(root.join("Cargo.lock"), "# This file is automatically @generated by Cargo.\n").unwrap();
    std::fs::create_dir(root.join("vendor")).unwrap();
    std::fs::write(root.join("vendor/lib.py"), "def vendored():\n    pass\n").unwrap();
    std::fs::create_dir(root.join("loop")).unwrap();
    std::os::unix::fs::symlink("..", root.join("loop/again")).unwrap();
    std::os::unix::fs::symlink("does-not-exist.rs", root.join("dangling.rs")).unwrap();
    // A link out of the repository (the server's files) is never followed.
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir(outside.path().join("etc")).unwrap();
    std::fs::write(
        outside.path().join("etc/shadow"),
        "root:x:0:0:hashed_password_here:19000:0:99999:7:::\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path().join("etc"), root.join("etc_link")).unwrap();
    std::fs::write(root.join(".gitignore"), "ignored.py\n").unwrap();
    std::fs::write(root.join("ignored.py"), "def ignored():\n    pass\n").unwrap();

    let index_dir = tempfile::tempdir().unwrap();
    let report = index(root, index_dir.path());
    let skipped = |reason: &str| report.skipped.get(reason).copied().unwrap_or(0);
    assert_eq!(skipped("binary"), 2, "non-UTF-8 and binary files: {report:?}");
    assert_eq!(skipped("huge"), 1, "{report:?}");
    assert_eq!(skipped("minified"), 1, "{report:?}");
    assert_eq!(skipped("generated"), 1, "{report:?}");
    assert_eq!(skipped("vendored"), 1, "{report:?}");
    assert!(skipped("unreadable") >= 2, "the symlink loop and the dangling link: {report:?}");
    assert_eq!(skipped("outside-repository"), 1, "the link to a folder outside: {report:?}");
    assert_eq!(
        report.problems.len(),
        skipped("unreadable") + skipped("outside-repository"),
        "each unreadable file and each link out is described: {report:?}"
    );
    // Only good.py is indexed: ignored.py is never seen, and hidden files (.gitignore) are left out.
    assert_eq!(report.files_indexed, 1, "{report:?}");
    let hits = search(index_dir.path(), "well_named_function", 5, SearchMode::Hybrid);
    assert_eq!(hits.first().map(|h| h.path.as_str()), Some("good.py"));
    assert!(search(index_dir.path(), "ignored", 5, SearchMode::Keyword)
        .iter()
        .all(|h| h.path != "ignored.py"));
    for mode in [SearchMode::Keyword, SearchMode::Hybrid] {
        let hits = search(index_dir.path(), "root:x:0:0 hashed_password_here", 5, mode);
        assert!(
            hits.iter()
                .all(|h| !h.path.contains("shadow") && !h.text.contains("hashed_password")),
            "{mode:?}: {hits:#?}"
        );
    }
}

#[test]
fn an_empty_repository_gives_an_empty_index_and_a_missing_one_a_clear_error() {
    let repo = tempfile::tempdir().unwrap();
    let index_dir = tempfile::tempdir().unwrap();
    let report = index(repo.path(), index_dir.path());
    assert_eq!((report.files_indexed, report.chunks), (0, 0));
    assert!(search(index_dir.path(), "anything at all", 5, SearchMode::Hybrid).is_empty());

    let missing = repo.path().join("no-such-folder");
    let err = index_repository(
        &missing,
        &IndexLayout::new(index_dir.path()),
        kit_embedder(),
        &IndexOptions::default(),
        &Quiet,
    )
    .unwrap_err();
    assert!(matches!(err, IndexError::Walk(_)), "{err:?}");
    assert!(
        err.to_string().contains("no-such-folder") && err.to_string().contains("does not exist"),
        "{err}"
    );

    let never_built = tempfile::tempdir().unwrap();
    let err = ProjectIndex::open("nothing", &IndexLayout::new(never_built.path()))
        .err()
        .expect("no index");
    assert!(err.to_string().contains("graft index"), "says what to do: {err}");
}

/// The polyglot fixture as the server's one project `polyglot`, not indexed yet; the
/// temporary folders (repository, index) live as long as the first two values.
fn polyglot_project() -> (
    tempfile::TempDir,
    tempfile::TempDir,
    graft_server::projects::Projects,
    std::sync::Arc<graft_server::projects::Project>,
) {
    let repo = copy_fixture("polyglot");
    let index_dir = tempfile::tempdir().unwrap();
    let (projects, project) = serve_polyglot(repo.path(), index_dir.path());
    (repo, index_dir, projects, project)
}

/// A server's projects with the repository `repo` as its one project `polyglot`, indexed into
/// `index_dir` (as a process starting on them finds them).
fn serve_polyglot(repo: &Path, index_dir: &Path) -> (graft_server::projects::Projects, std::sync::Arc<graft_server::projects::Project>) {
    use graft_server::projects::{Project, Projects};
    let config = graft_core::ProjectConfig::new("polyglot", repo);
    let project = Project::new(config, IndexLayout::new(index_dir.join("polyglot")), IndexOptions::default());
    let embedder = Some(("minilm-l6-v2".to_owned(), std::sync::Arc::clone(kit_embedder())));
    let projects = Projects::new(vec![project], embedder, SearchOptions::default());
    let project = projects.get("polyglot").unwrap();
    (projects, project)
}

/// Copies networkx's shortest-path modules (a few hundred chunks) into `repo`; how many.
fn bring_shortest_paths(repo: &Path) -> usize {
    let source = kit_file("networkx-src").join("algorithms/shortest_paths");
    let mut brought = 0;
    for entry in std::fs::read_dir(&source).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, repo.join(entry.file_name())).unwrap();
            brought += 1;
        }
    }
    assert!(brought >= 5, "{brought} files");
    brought
}

/// A completion's search for the code `before` a cursor at the end of the file `path`.
fn cursor_at_end(before: &str, path: &str) -> Search {
    Search {
        text: before.to_owned(),
        look_up: LookUp::Cursor {
            before: before.to_owned(),
            after: String::new(),
        },
        current_path: Some(path.to_owned()),
    }
}

/// A completion's search for code that calls networkx's `bellman_ford_predecessor_and_distance`.
fn bellman_ford_use() -> Search {
    cursor_at_end(
        "def relax(G, source):\n    pred, dist = bellman_ford_predecessor_and_distance(G, source)\n",
        "relax.py",
    )
}

/// A completion's search for code whose words neither the keyword index nor the symbol table
/// has: only the vectors find anything for it.
fn unmatched_cursor() -> Search {
    cursor_at_end("    qzxv = wvbj(kqpz)\n", "other.py")
}

/// A server opening an index whose vectors an older graft made (its meta names the model
/// alone, not the text form this one embeds) says so in the project's status, and its
/// completions still get what keyword search and definition lookup find (they failed with a
/// 503 before); a re-index embeds it anew, and the vectors answer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_an_older_graft_keeps_serving_and_is_embedded_anew() {
    let repo = copy_fixture("polyglot");
    let index_dir = tempfile::tempdir().unwrap();
    let layout = IndexLayout::new(index_dir.path().join("polyglot"));
    index_repository(repo.path(), &layout, kit_embedder(), &IndexOptions::default(), &Quiet).unwrap();
    graft_tests::change_meta(&graft_index::vectors::Backend::Embedded, &layout, |meta| {
        meta.embedding_model = kit_embedder().id().to_owned();
    });

    let (projects, project) = serve_polyglot(repo.path(), index_dir.path());
    let status = projects.status(&project);
    assert_eq!(status["vectors_outdated"], true, "{status}");
    let vat_use = cursor_at_end("def report(items):\n    totals = compute_vat_breakdown(items)\n", "report.py");
    let hits = projects
        .search(&project, vat_use, 5, SearchMode::Hybrid)
        .await
        .unwrap()
        .expect("served");
    assert_eq!(hits.first().map(|h| h.path.as_str()), Some("billing/invoice.py"), "{hits:?}");
    let by_meaning = projects.search(&project, unmatched_cursor(), 5, SearchMode::Hybrid).await.unwrap();
    assert!(by_meaning.is_some_and(|h| h.is_empty()), "the vectors are left out");

    let guard = projects.start_reindex(&project).expect("no re-index is running");
    let report = projects.reindex_with(&project, guard).await.unwrap();
    assert!(report.rebuilt && report.embeddings > 0, "{report:?}");
    assert_eq!(projects.status(&project)["vectors_outdated"], false);
    let by_meaning = projects.search(&project, unmatched_cursor(), 5, SearchMode::Hybrid).await.unwrap();
    assert!(by_meaning.is_some_and(|h| !h.is_empty()), "the vectors answer again");
}

/// A project with no index yet, as `graft up` builds it: marked as re-indexing (its requests
/// get nothing, not an error) until the catalog is committed; from then on keyword search and
/// definition lookup answer while the chunks' vectors are embedded, each joining the searches
/// as it is stored; the run ends when every chunk has its vector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_index_answers_by_keyword_and_definitions_while_its_vectors_are_embedded() {
    let (repo, _index_dir, projects, project) = polyglot_project();
    bring_shortest_paths(repo.path());
    assert!(!project.has_index());

    let guard = projects.start_reindex(&project).expect("no re-index is running");
    assert!(projects.start_reindex(&project).is_none(), "one re-index at a time");
    let before = projects.search(&project, bellman_ford_use(), 5, SearchMode::Hybrid).await;
    assert!(matches!(before, Ok(None)), "nothing (not an error) before the catalog: {before:?}");

    let done = std::sync::atomic::AtomicBool::new(false);
    let run = async {
        let report = projects.reindex_with(&project, guard).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        report
    };
    let watch = async {
        // (searches while vectors were pending, of those that found the defining file first,
        //  the pending counts seen)
        // (... and of those searches, the hits by meaning alone a completion got)
        let (mut during, mut found, mut pending_seen, mut by_meaning) = (0, 0, Vec::new(), 0);
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let pending = projects.status(&project)["vectors_pending"].as_u64().unwrap();
            let hits = projects.search(&project, bellman_ford_use(), 5, SearchMode::Hybrid).await.unwrap();
            let meaning = projects.search(&project, unmatched_cursor(), 5, SearchMode::Hybrid).await.unwrap();
            if pending > 0 && projects.status(&project)["vectors_pending"].as_u64().unwrap() > 0 {
                during += 1;
                found += usize::from(hits.is_some_and(|h| h.first().is_some_and(|h| h.path == "weighted.py")));
                pending_seen.push(pending);
                by_meaning += meaning.map_or(0, |h| h.len());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        (during, found, pending_seen, by_meaning)
    };
    let (report, (during, found, pending_seen, by_meaning)) = tokio::join!(run, watch);
    let report = report.expect("indexing works");
    assert!(report.chunks > 150 && project.has_index(), "{report:?}");
    assert_eq!((report.embeddings, report.vectors_pending), (report.chunks, 0), "{report:?}");
    assert!(
        during >= 3 && found == during,
        "{found} of {during} searches while embedding found the definition first"
    );
    assert!(
        pending_seen.windows(2).all(|w| w[1] <= w[0]) && pending_seen.first() > pending_seen.last(),
        "{pending_seen:?}"
    );
    assert_eq!(projects.status(&project)["vectors_pending"], 0);
    // While the run embedded, a completion's search left the vectors out (its query would have
    // waited at the embedding model): code no keyword or definition matches got nothing; now
    // the vectors give it their nearest chunks.
    assert_eq!(by_meaning, 0, "completions searched the vectors while the run embedded");
    let now = projects.search(&project, unmatched_cursor(), 5, SearchMode::Hybrid).await.unwrap();
    assert!(now.is_some_and(|h| !h.is_empty()), "the vectors answer once embedded");
    // Every chunk has its vector now: a search by meaning alone finds them.
    let by_meaning = projects
        .search(
            &project,
            Search::text("shortest path lengths with negative edge weights"),
            5,
            SearchMode::Vector,
        )
        .await
        .unwrap()
        .expect("searchable");
    assert!(by_meaning.iter().any(|h| h.path.ends_with(".py")), "{by_meaning:#?}");
    let hits = projects
        .search(&project, Search::text("vault.rotateSigningKeys()"), 5, SearchMode::Hybrid)
        .await
        .unwrap()
        .expect("searchable once indexed");
    assert!(hits.iter().any(|h| h.path == "auth/TokenVault.java"), "{hits:#?}");
}

/// A project that also searches another project's index (a library it calls) gets the
/// library's definitions for code that calls them, named as the library's, with its own code
/// still first where its own code answers; each ranking is merged across both by its scores;
/// the file being edited is the project's own alone; a library not searchable now is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_searches_the_projects_it_also_searches_with_its_own() {
    use graft_server::projects::{Project, Projects};
    let app_repo = copy_fixture("polyglot");
    let lib = tempfile::tempdir().unwrap();
    bring_shortest_paths(lib.path());
    let index_dir = tempfile::tempdir().unwrap();
    let project = |config: graft_core::ProjectConfig| {
        let layout = IndexLayout::new(index_dir.path().join(&config.name));
        Project::new(config, layout, IndexOptions::default())
    };
    let app_config = graft_core::ProjectConfig {
        also_search: vec!["paths".into()],
        ..graft_core::ProjectConfig::new("app", app_repo.path())
    };
    let embedder = Some(("minilm-l6-v2".to_owned(), std::sync::Arc::clone(kit_embedder())));
    let app = project(app_config);
    // The same code served plain, searching the app's index alone.
    let plain = Project::sharing(
        graft_core::ProjectConfig {
            index: Some("app".into()),
            ..graft_core::ProjectConfig::new("plain", app_repo.path())
        },
        &app,
    );
    let projects = Projects::new(
        vec![app, plain, project(graft_core::ProjectConfig::new("paths", lib.path()))],
        embedder,
        SearchOptions::default(),
    );
    let (app, paths) = (projects.get("app").unwrap(), projects.get("paths").unwrap());
    projects.reindex(&app).await.expect("indexing works");
    assert_eq!(projects.status(&app)["also_search"], serde_json::json!(["paths"]));

    // The library never indexed (a `graft serve` before its `graft index`), then being indexed
    // for the first time: the app is searched alone meanwhile.
    let searched_alone = || async {
        let alone = projects
            .search(&app, bellman_ford_use(), 5, SearchMode::Hybrid)
            .await
            .unwrap()
            .expect("the app's index serves");
        assert!(!alone.is_empty() && alone.iter().all(|h| h.project.is_none()), "{alone:#?}");
    };
    searched_alone().await;
    let guard = projects.start_reindex(&paths).expect("no re-index is running");
    searched_alone().await;
    projects.reindex_with(&paths, guard).await.expect("indexing works");

    // Code calling the library: its definition first, the library's, found by lookup.
    let hits = projects
        .search(&app, bellman_ford_use(), 5, SearchMode::Hybrid)
        .await
        .unwrap()
        .unwrap();
    let first = &hits[0];
    assert_eq!(
        (first.project.as_deref(), first.path.as_str()),
        (Some("paths"), "weighted.py"),
        "{hits:#?}"
    );
    assert!(first.text.contains("def bellman_ford_predecessor_and_distance"), "{first:#?}");
    assert_eq!(first.found_by.definition, Some(1));
    assert_eq!(first.shown_path(), "paths/weighted.py");
    // The file being edited is the app's: a library file of the same name is still found.
    let same_name = cursor_at_end(
        "def relax(G, source):\n    pred, dist = bellman_ford_predecessor_and_distance(G, source)\n",
        "weighted.py",
    );
    let hits = projects.search(&app, same_name, 5, SearchMode::Hybrid).await.unwrap().unwrap();
    assert_eq!((hits[0].project.as_deref(), hits[0].path.as_str()), (Some("paths"), "weighted.py"));

    // A completion's hits are kept for the next one near it, but not for the project that
    // shares the app's index and searches it alone; a re-index of the library forgets them.
    let spot = graft_server::sticky::Spot::of(Some("relax.py"), "def relax(G, source):\n");
    let plain = projects.get("plain").unwrap();
    let with = projects.search_at(&app, spot, bellman_ford_use(), 5).await.unwrap().unwrap();
    assert_eq!(with[0].project.as_deref(), Some("paths"));
    let without = projects.search_at(&plain, spot, bellman_ford_use(), 5).await.unwrap().unwrap();
    assert!(without.iter().all(|h| h.project.is_none()), "{without:#?}");
    std::fs::write(lib.path().join("weighted.py"), "def unrelated():\n    return 1\n").unwrap();
    projects.reindex(&paths).await.expect("indexing works");
    let after = projects.search_at(&app, spot, bellman_ford_use(), 5).await.unwrap().unwrap();
    let gone = "def bellman_ford_predecessor_and_distance";
    assert!(
        !after.iter().any(|h| h.text.contains(gone)),
        "the library's old code was kept: {after:#?}"
    );

    // The app's own question: its own code answers it.
    let hits = projects
        .search(&app, Search::text("vault.rotateSigningKeys()"), 5, SearchMode::Hybrid)
        .await
        .unwrap()
        .unwrap();
    assert!(hits.iter().all(|h| h.project.is_none()), "{hits:#?}");
    assert!(hits.iter().any(|h| h.path == "auth/TokenVault.java"), "{hits:#?}");

    // Words of both: one keyword ranking, by BM25 across the two indexes.
    let hits = projects
        .search(
            &app,
            Search::text("rotate signing keys dijkstra path length"),
            10,
            SearchMode::Keyword,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        hits.iter().any(|h| h.project.is_none()) && hits.iter().any(|h| h.project.is_some()),
        "{hits:#?}"
    );
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "{hits:#?}");
    let ranks: Vec<usize> = hits.iter().filter_map(|h| h.found_by.keyword.map(|f| f.rank)).collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]) && ranks[0] == 1, "{ranks:?}");

    // The library's own searches are its own: a project searches what it names, not the reverse.
    let theirs = projects
        .search(&paths, Search::text("vault.rotateSigningKeys()"), 5, SearchMode::Hybrid)
        .await
        .unwrap()
        .unwrap();
    assert!(theirs.iter().all(|h| h.project.is_none() && h.path.ends_with(".py")), "{theirs:#?}");

    // The library removed from the server: the app searches its own index again.
    projects.remove("paths");
    let hits = projects
        .search(&app, bellman_ford_use(), 5, SearchMode::Hybrid)
        .await
        .unwrap()
        .unwrap();
    assert!(hits.iter().all(|h| h.project.is_none()), "{hits:#?}");
}

/// A server shutting down stops its index run at the next step instead of holding the process
/// until a first index is done; the index serves keyword searches, and the next run (another
/// process) embeds only what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_stops_an_index_run_and_the_next_run_finishes_it() {
    let (repo, index_dir, projects, project) = polyglot_project();
    bring_shortest_paths(repo.path());
    let run = projects.reindex(&project);
    let stop = async {
        while projects.status(&project)["vectors_pending"].as_u64().unwrap() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        projects.stop_indexing();
        std::time::Instant::now()
    };
    let (stopped, asked) = tokio::join!(run, stop);
    assert!(matches!(stopped, Err(ReindexError::Index(IndexError::Stopped))), "{stopped:?}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(3),
        "stopped {:?} after it was asked",
        asked.elapsed()
    );
    assert!(projects.reindex(&project).await.is_err(), "no run starts once stopping");
    let hits = projects
        .search(&project, bellman_ford_use(), 5, SearchMode::Hybrid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hits.first().map(|h| h.path.as_str()), Some("weighted.py"), "{hits:#?}");
    let chunks = projects.status(&project)["chunks"].as_u64().unwrap() as usize;
    // The process ends: its index closes.
    drop((projects, project));

    // The next start: nothing changed in the repository, only the missing vectors are embedded.
    let (again, project) = serve_polyglot(repo.path(), index_dir.path());
    let report = again.reindex(&project).await.expect("the next run works");
    assert_eq!(report.files_unchanged, report.files_indexed, "{report:?}");
    assert!(report.embeddings > 0 && report.embeddings < chunks, "{report:?}");
    assert_eq!(report.vectors_pending, 0, "{report:?}");
    let finished = again.reindex(&project).await.expect("and the one after");
    assert_eq!(finished.embeddings, 0, "{finished:?}");
}

/// A re-index embeds the code a change brings while the index still serves, and holds the
/// index only to write: searches during the slow part are answered from the index as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reindex_embeds_what_changed_while_the_index_still_serves() {
    let (repo, _index_dir, projects, project) = polyglot_project();
    projects.reindex(&project).await.expect("indexing works");
    // A pull brings a few hundred chunks: networkx's shortest-path modules.
    let brought = bring_shortest_paths(repo.path());

    let done = std::sync::atomic::AtomicBool::new(false);
    let run = async {
        let report = projects.reindex(&project).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        report
    };
    let watch = async {
        let (mut during, mut served) = (0, 0);
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let reindexing = || projects.status(&project)["reindexing"] == true;
            let before = reindexing();
            let hits = projects
                .search(&project, Search::text("rotateSigningKeys"), 5, SearchMode::Keyword)
                .await
                .unwrap();
            if before && reindexing() {
                during += 1;
                served += usize::from(hits.is_some_and(|h| h.iter().any(|h| h.path == "auth/TokenVault.java")));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        (during, served)
    };
    let (report, (during, served)) = tokio::join!(run, watch);
    let report = report.expect("re-indexing works");
    assert_eq!(report.files_added, brought, "{report:?}");
    assert!(report.embeddings > 100, "{report:?}");
    assert_eq!(
        report.embedded_ahead, report.embeddings,
        "every new chunk was embedded ahead: {report:?}"
    );
    // The report's time is the whole run's, the embedding done ahead (most of it) included.
    let (embed, whole) = (report.seconds.embed, report.elapsed.as_secs_f64());
    assert!(embed * 2.0 > whole && whole >= embed, "{report:?}");
    assert!(
        served > 0 && served * 2 > during,
        "{served} of {during} searches during the run were answered"
    );
    let hits = projects
        .search(
            &project,
            Search::text("bellman_ford_predecessor_and_distance"),
            5,
            SearchMode::Keyword,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(hits.iter().any(|h| h.path == "weighted.py"), "{hits:#?}");
}

#[tokio::test]
async fn two_projects_on_one_repository_search_one_index_opened_once() {
    use graft_server::projects::{Project, Projects};
    let repo = copy_fixture("polyglot");
    let index_dir = tempfile::tempdir().unwrap();
    let owner = Project::new(
        graft_core::ProjectConfig::new("polyglot", repo.path()),
        IndexLayout::new(index_dir.path().join("polyglot")),
        IndexOptions::default(),
    );
    let tuned_config = graft_core::ProjectConfig {
        adapter: Some("tuned".into()),
        index: Some("polyglot".into()),
        ..graft_core::ProjectConfig::new("polyglot-tuned", repo.path())
    };
    let tuned = Project::sharing(tuned_config, &owner);
    let embedder = Some(("minilm-l6-v2".to_owned(), std::sync::Arc::clone(kit_embedder())));
    let projects = Projects::new(vec![owner, tuned], embedder, SearchOptions::default());
    let owner = projects.get("polyglot").unwrap();
    let tuned = projects.get("polyglot-tuned").unwrap();
    assert_eq!(tuned.index_owner(), "polyglot");

    // A re-index through either marks both: the index is one.
    let guard = projects.start_reindex(&tuned).expect("no re-index is running");
    assert!(projects.start_reindex(&owner).is_none(), "the owner's index is being re-indexed");
    assert!(matches!(
        projects
            .search(&owner, Search::text("rotateSigningKeys"), 5, SearchMode::Hybrid)
            .await,
        Ok(None)
    ));
    projects.reindex_with(&tuned, guard).await.expect("indexing works");
    assert!(owner.has_index() && tuned.has_index());
    assert!(!index_dir.path().join("polyglot-tuned").exists(), "no second index is written");

    // Both search the same open index (a second open in this process would find it locked).
    let mine = projects
        .search(&owner, Search::text("vault.rotateSigningKeys()"), 5, SearchMode::Hybrid)
        .await
        .unwrap()
        .unwrap();
    let theirs = projects
        .search(&tuned, Search::text("vault.rotateSigningKeys()"), 5, SearchMode::Hybrid)
        .await
        .unwrap()
        .unwrap();
    let paths = |hits: &[graft_index::SearchHit]| hits.iter().map(|h| h.path.clone()).collect::<Vec<_>>();
    assert_eq!(paths(&mine), paths(&theirs));
    assert!(paths(&mine).contains(&"auth/TokenVault.java".to_owned()), "{mine:#?}");
    assert_eq!(projects.status(&tuned)["index_of"], "polyglot");

    // The tuned project's config replaced (a reload of the config file; here its repository
    // moved too): the index it searches stays, the request that holds the project as it was
    // keeps its settings.
    let reloaded = graft_core::ProjectConfig {
        adapter: None,
        retrieval: false,
        top_k: 2,
        index: Some("polyglot".into()),
        ..graft_core::ProjectConfig::new("polyglot-tuned", "/elsewhere")
    };
    let now = projects.replace_settings(reloaded).expect("a project of that name");
    assert_eq!(
        (now.config.adapter.as_deref(), now.config.retrieval, now.config.top_k),
        (None, false, 2)
    );
    let moved = std::path::Path::new("/elsewhere");
    assert_eq!((now.config.path.as_path(), now.index_owner()), (moved, "polyglot"));
    assert_eq!(tuned.config.adapter.as_deref(), Some("tuned"), "the project as it was is unchanged");
    assert!(std::sync::Arc::ptr_eq(&projects.get("polyglot-tuned").unwrap(), &now));
    let after = projects
        .search(&now, Search::text("vault.rotateSigningKeys()"), 5, SearchMode::Hybrid)
        .await
        .unwrap()
        .expect("the same open index");
    assert_eq!(paths(&after), paths(&mine));
    assert_eq!(projects.status(&now)["retrieval"], false);
    assert!(projects.replace_settings(graft_core::ProjectConfig::new("nobody", "x")).is_none());
}

#[tokio::test]
async fn a_completion_near_the_last_one_reuses_its_hits_until_the_cursor_moves_away_or_a_reindex() {
    use graft_server::sticky::{Spot, REGION_LINES};
    let (_repo, _index_dir, projects, project) = polyglot_project();
    projects.reindex(&project).await.expect("indexing works");
    let paths = |hits: Option<Vec<graft_index::SearchHit>>| hits.unwrap().into_iter().map(|h| h.path).collect::<Vec<_>>();

    // The user types in one file; the code around the cursor (the query) changes.
    let file = "// the file being edited\n".repeat(30);
    let here = Spot::of(Some("web/app.ts"), &file);
    let (vault, invoice) = ("vault.rotateSigningKeys()", "invoice total with tax per line item");
    let first = paths(projects.search_at(&project, here, Search::text(vault), 3).await.unwrap());
    assert!(first.contains(&"auth/TokenVault.java".to_owned()), "{first:?}");
    let fresh = paths(
        projects
            .search(&project, Search::text(invoice), 3, SearchMode::Hybrid)
            .await
            .unwrap(),
    );
    assert_ne!(fresh, first, "the two queries find different code");

    // Two lines further: the same hits, so the prompt keeps its start.
    let typed = format!("{file}let a = 1;\nlet b = 2;\n");
    let near = paths(
        projects
            .search_at(&project, Spot::of(Some("web/app.ts"), &typed), Search::text(invoice), 3)
            .await
            .unwrap(),
    );
    assert_eq!(near, first);
    // Another file, or the cursor moved away: searched afresh.
    let other = paths(
        projects
            .search_at(&project, Spot::of(Some("web/other.ts"), &typed), Search::text(invoice), 3)
            .await
            .unwrap(),
    );
    assert_eq!(other, fresh);
    let away = format!("{typed}{}", "\n".repeat(REGION_LINES + 1));
    let moved = paths(
        projects
            .search_at(&project, Spot::of(Some("web/app.ts"), &away), Search::text(invoice), 3)
            .await
            .unwrap(),
    );
    assert_eq!(moved, fresh);

    // After a re-index nothing remembered from the old index is reused.
    assert_eq!(
        paths(projects.search_at(&project, here, Search::text(vault), 3).await.unwrap()),
        first
    );
    projects.reindex(&project).await.expect("re-indexing works");
    let after = paths(
        projects
            .search_at(&project, Spot::of(Some("web/app.ts"), &typed), Search::text(invoice), 3)
            .await
            .unwrap(),
    );
    assert_eq!(after, fresh);
}
