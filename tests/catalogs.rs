//! Both catalogs answer alike: the tantivy one in an index folder and the Qdrant one on a
//! server (issue 17's stateless replicas), fed the same runs of networkx 3.4.2's source (the
//! kit's pinned PyPI release): files, chunks, the symbol table and keyword search agree after
//! a first run and after a run that changes and removes files. Then the Qdrant catalog's
//! generations: what a run killed before its switch wrote is never seen, and the next run
//! clears it; a record it cannot read is left out of searches. Last, an index of an older catalog layout, in either, is refused until the next
//! run rebuilds it, and a run asked to build either anew does so.
//!
//! Needs a Qdrant node (`GRAFT_TEST_QDRANT_BIN`, which scripts/test sets); ignored without one,
//! except the tests of the tantivy catalog alone.

use std::collections::{BTreeSet, HashMap};

use graft_index::catalog::{Catalog, CatalogWriter, QdrantCatalog, TantivyCatalog};
use graft_index::chunker::{chunk_and_define, Chunk, ChunkOptions};
use graft_index::symbols::Definition;
use graft_index::vectors::ServerConfig;
use graft_index::walk::{walk, WalkOptions};
use graft_index::IndexLayout;
use graft_tests::{kit_file, qdrant, repo_root};
use qdrant_client::qdrant::{Condition, Filter, NamedVectors, PointStruct, SetPayloadPointsBuilder, UpsertPointsBuilder};
use qdrant_client::{Payload, Qdrant};

/// One file as a run writes it: its hash, chunks (with ids) and definitions (with the chunk
/// that holds each).
struct File {
    path: String,
    hash: String,
    chunks: Vec<(u64, Chunk)>,
    symbols: Vec<(Definition, u64)>,
}

fn files_of(repo: &std::path::Path, salt: &str) -> Vec<File> {
    walk(repo, &WalkOptions::default())
        .expect("walk")
        .files
        .into_iter()
        .map(|f| {
            let (chunks, definitions) = chunk_and_define(&f.path, &f.text, &ChunkOptions::default());
            let base = fnv(&format!("{salt}{}", f.path));
            let chunks: Vec<(u64, Chunk)> = chunks.into_iter().enumerate().map(|(i, c)| (base + i as u64, c)).collect();
            let symbols = definitions
                .into_iter()
                .filter_map(|d| {
                    let holder = chunks.iter().find(|(_, c)| (c.start_line..=c.end_line).contains(&d.start_line))?;
                    Some((d, holder.0))
                })
                .collect();
            File {
                hash: format!("{salt}{}", f.text.len()),
                path: f.path,
                chunks,
                symbols,
            }
        })
        .collect()
}

/// Chunk ids: a hash of the path, below 2^62, spaced for a file's chunks.
fn fnv(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    (h >> 2) & !0xffff
}

/// One run: `removed` paths go, `files` are (re)written.
fn run(catalog: &dyn Catalog, removed: &[&str], files: &[&File]) {
    let mut writer = catalog.writer(2).unwrap();
    for path in removed.iter().copied().chain(files.iter().map(|f| f.path.as_str())) {
        writer.remove_file(path).unwrap();
    }
    add(writer.as_mut(), files.iter().copied());
    writer.commit().unwrap();
    catalog.reload().unwrap();
}

/// Hands `files`, their chunks and their definitions to a run.
fn add<'a>(writer: &mut dyn CatalogWriter, files: impl IntoIterator<Item = &'a File>) {
    for file in files {
        writer.add_file(&file.path, &file.hash).unwrap();
        for (id, chunk) in &file.chunks {
            writer.add_chunk(*id, chunk).unwrap();
        }
        for (definition, chunk) in &file.symbols {
            writer.add_symbol(&file.path, definition, *chunk).unwrap();
        }
    }
}

/// A tantivy catalog in `folder` of `files`' chunks alone: no file or symbol records.
fn chunks_alone(folder: &std::path::Path, files: &[File]) -> TantivyCatalog {
    let catalog = TantivyCatalog::open(&IndexLayout::new(folder)).unwrap();
    let mut writer = catalog.writer(2).unwrap();
    for (id, chunk) in files.iter().flat_map(|f| &f.chunks) {
        writer.add_chunk(*id, chunk).unwrap();
    }
    writer.commit().unwrap();
    catalog.reload().unwrap();
    catalog
}

fn server_config(node: &qdrant::Node) -> ServerConfig {
    ServerConfig {
        url: node.grpc_url(),
        api_key: None,
        collection_prefix: "graft_catalogs_".into(),
        shards: None,
        replication_factor: None,
    }
}

/// The two catalogs hold the same index, and rank keyword queries alike.
fn agree(tantivy: &dyn Catalog, qdrant: &dyn Catalog, names: &[&str], queries: &[&str]) {
    assert_eq!(tantivy.files().unwrap(), qdrant.files().unwrap());
    let ids = tantivy.chunk_ids().unwrap();
    assert_eq!(ids, qdrant.chunk_ids().unwrap());
    assert_eq!(tantivy.chunk_count().unwrap(), qdrant.chunk_count().unwrap());
    let sample: Vec<u64> = ids.iter().copied().step_by(7).collect();
    assert_eq!(tantivy.chunks(&sample).unwrap(), qdrant.chunks(&sample).unwrap());
    let key = |s: &graft_index::catalog::StoredSymbol| (s.path.clone(), s.start_line, s.kind.clone(), s.scope.clone(), s.chunk);
    for name in names {
        let a: BTreeSet<_> = tantivy.definitions(&[name], 1000).unwrap().iter().map(key).collect();
        let b: BTreeSet<_> = qdrant.definitions(&[name], 1000).unwrap().iter().map(key).collect();
        assert_eq!(a, b, "definitions of {name}");
    }
    // Several names at once, and a lookup's limit.
    let several = &names[..names.len().min(12)];
    let a: BTreeSet<_> = tantivy.definitions(several, 1000).unwrap().iter().map(key).collect();
    let b: BTreeSet<_> = qdrant.definitions(several, 1000).unwrap().iter().map(key).collect();
    assert_eq!(a, b, "definitions of {several:?}");
    for limit in [1, 3] {
        let found = qdrant.definitions(several, limit).unwrap();
        assert_eq!(found.len(), a.len().min(limit), "{limit} of the definitions of {several:?}");
        assert!(found.iter().all(|s| several.contains(&s.name.as_str())));
    }
    let (first, overlap) = keyword_agreement(tantivy, qdrant, queries);
    eprintln!("keyword search, the whole catalog: the same first result {first:.3}, top-10 overlap {overlap:.3}");
    // Not exactly 1.0: tantivy quantises field lengths, and counts removed records in its
    // statistics until it merges them away.
    assert!(first >= 0.97 && overlap >= 0.97, "first {first:.3}, overlap {overlap:.3}");
}

/// The tantivy catalog's BM25 is computed over its chunk records alone: the file and symbol
/// records beside them (networkx: thousands) change no keyword result's score, which is the
/// score the same chunks get in a catalog that holds nothing else.
#[test]
fn keyword_scores_count_the_chunks_alone() {
    let dir = tempfile::tempdir().unwrap();
    let whole = TantivyCatalog::open(&IndexLayout::new(dir.path().join("whole"))).unwrap();
    let files = files_of(&kit_file("networkx-src"), "");
    let all: Vec<&File> = files.iter().collect();
    run(&whole, &[], &all);
    let symbols: usize = files.iter().map(|f| f.symbols.len()).sum();
    assert!(symbols > 1000, "{symbols} symbol records");
    let chunks_only = chunks_alone(&dir.path().join("chunks"), &files);

    let mut found = 0;
    for query in [
        "shortest path weight",
        "graph.add_edge(u, v)",
        "dijkstra",
        "is_directed",
        "nx.Graph()",
    ] {
        let a = whole.keyword_search(query, 20).unwrap();
        let b = chunks_only.keyword_search(query, 20).unwrap();
        assert_eq!(a.len(), b.len(), "{query}");
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x.score - y.score).abs() <= 1e-4 * y.score.abs().max(1.0),
                "{query}: {x:?} vs {y:?}"
            );
        }
        // The same chunks, but for ties at the cut (which a different record layout may order
        // differently).
        let cut = b.last().map_or(0.0, |r| r.score * (1.0 + 1e-4));
        let above = |r: &[graft_index::fusion::Ranked]| r.iter().filter(|r| r.score > cut).map(|r| r.id).collect::<BTreeSet<_>>();
        assert_eq!(above(&a), above(&b), "{query}");
        found += a.len();
    }
    assert!(found > 50, "{found} results");
}

/// `index.threads` is the keyword index writer's thread count: any count works (tantivy wants
/// 15 MB a thread; a fixed budget shared by 5 or more threads was refused).
#[test]
fn a_writer_takes_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let files = files_of(&repo_root().join("tests/fixtures/polyglot"), "");
    for threads in [1, 2, 4, 5, 8, 16, 1024] {
        let catalog = TantivyCatalog::open(&IndexLayout::new(dir.path().join(threads.to_string()))).unwrap();
        let mut writer = catalog.writer(threads).unwrap_or_else(|e| panic!("{threads} threads: {e}"));
        for (id, chunk) in files.iter().flat_map(|f| &f.chunks) {
            writer.add_chunk(*id, chunk).unwrap();
        }
        writer.commit().unwrap();
        catalog.reload().unwrap();
        assert!(!catalog.keyword_search("TokenVault", 5).unwrap().is_empty(), "{threads} threads");
    }
}

/// How often `other`'s first keyword result is `tantivy`'s (or ties with it within 1%: tantivy
/// quantises lengths), and the share of `tantivy`'s top 10 in `other`'s, over the queries
/// tantivy finds anything for (at least half of them).
fn keyword_agreement(tantivy: &dyn Catalog, other: &dyn Catalog, queries: &[&str]) -> (f64, f64) {
    let (mut asked, mut first, mut overlap) = (0, 0, 0.0);
    for query in queries {
        let expected = tantivy.keyword_search(query, 10).unwrap();
        let got = other.keyword_search(query, 10).unwrap();
        let Some(best) = expected.first() else {
            assert!(got.is_empty(), "{query}: {got:?}");
            continue;
        };
        asked += 1;
        overlap += expected.iter().filter(|e| got.iter().any(|g| g.id == e.id)).count() as f64 / expected.len() as f64;
        if got
            .first()
            .is_some_and(|g| expected.iter().any(|e| e.id == g.id && e.score >= best.score * 0.99))
        {
            first += 1;
        }
    }
    assert!(asked >= queries.len() / 2, "{asked} of {} queries found anything", queries.len());
    (first as f64 / asked as f64, overlap / asked as f64)
}

#[test]
#[ignore = "needs the Qdrant server binary: GRAFT_TEST_QDRANT_BIN (scripts/test sets it from ../shared/tools/qdrant)"]
fn the_qdrant_catalog_answers_as_the_tantivy_one() {
    let node = qdrant::Node::single(&qdrant::binary().unwrap_or_else(|why| panic!("{why}")));
    let dir = tempfile::tempdir().unwrap();
    let tantivy = TantivyCatalog::open(&IndexLayout::new(dir.path().join("nx"))).unwrap();
    let qdrant = QdrantCatalog::open(&server_config(&node), "nx").unwrap();

    let repo = kit_file("networkx-src");
    let files = files_of(&repo, "");
    assert!(files.len() > 200, "{} files", files.len());
    let all: Vec<&File> = files.iter().collect();
    run(&tantivy, &[], &all);
    run(&qdrant, &[], &all);

    let mut names: Vec<&str> = files.iter().flat_map(|f| f.symbols.iter().map(|(d, _)| d.name.as_str())).collect();
    names.sort_unstable();
    names.dedup();
    let mut names: Vec<&str> = names.iter().copied().step_by((names.len() / 150).max(1)).collect();
    // The last definitions of the file with the most: on the server, its third record of them.
    let crowded = files.iter().max_by_key(|f| f.symbols.len()).expect("files");
    assert!(
        crowded.symbols.len() > 128,
        "{}: {} definitions",
        crowded.path,
        crowded.symbols.len()
    );
    let last = crowded.symbols.iter().rev().take(3).map(|(d, _)| d.name.as_str());
    names.splice(0..0, last);
    let queries: Vec<&str> = names
        .iter()
        .copied()
        .step_by(2)
        .chain(["shortest path weight", "graph.add_edge(u, v)"])
        .collect();
    agree(&tantivy, &qdrant, &names, &queries);
    // BM25 itself: Qdrant's ranking is tantivy's over the same chunks.
    let chunks_only = chunks_alone(&dir.path().join("chunks"), &files);
    let (first, overlap) = keyword_agreement(&chunks_only, &qdrant, &queries);
    eprintln!("keyword search, tantivy with chunks alone: the same first result {first:.3}, top-10 overlap {overlap:.3}");
    assert!(first >= 0.97 && overlap >= 0.97, "first {first:.3}, overlap {overlap:.3}");

    // A second run: 40 files change, 30 go; a catalog opened before it sees it after.
    let other = QdrantCatalog::existing(&server_config(&node), "nx")
        .unwrap()
        .expect("the collection exists");
    let before = other.chunk_count().unwrap();
    let changed = files_of(&repo, "v2");
    let changed: Vec<&File> = changed.iter().step_by(9).take(40).collect();
    let removed: Vec<&str> = files
        .iter()
        .rev()
        .step_by(11)
        .map(|f| f.path.as_str())
        .filter(|p| changed.iter().all(|c| c.path != *p))
        .take(30)
        .collect();
    run(&tantivy, &removed, &changed);
    run(&qdrant, &removed, &changed);
    agree(&tantivy, &qdrant, &names, &queries);
    assert_eq!(other.chunk_count().unwrap(), before, "a catalog sees the generation it last read");
    other.refresh().unwrap();
    assert_eq!(other.chunk_count().unwrap(), tantivy.chunk_count().unwrap());
    assert!(other.chunk_count().unwrap() < before);
}

#[test]
#[ignore = "needs the Qdrant server binary: GRAFT_TEST_QDRANT_BIN (scripts/test sets it from ../shared/tools/qdrant)"]
fn what_a_killed_run_wrote_is_never_seen_and_the_next_run_clears_it() {
    let node = qdrant::Node::single(&qdrant::binary().unwrap_or_else(|why| panic!("{why}")));
    let config = server_config(&node);
    let catalog = QdrantCatalog::open(&config, "killed").unwrap();
    let file = |path: &str, word: &str, id: u64| File {
        path: path.into(),
        hash: word.into(),
        chunks: chunk_and_define(path, &format!("def {word}():\n    return 1\n"), &ChunkOptions::default())
            .0
            .into_iter()
            .map(|c| (id, c))
            .collect(),
        symbols: Vec::new(),
    };
    run(&catalog, &[], &[&file("a.py", "alpha", 1)]);
    assert_eq!(catalog.generation(), 1);

    // What a run killed between its writes and its switch leaves (the layout the module
    // documents): a record of the next generation, and a live record marked as ending there.
    let collection = "graft_catalogs_killed~catalog";
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = Qdrant::from_url(&node.grpc_url()).skip_compatibility_check().build().unwrap();
    runtime.block_on(async {
        let payload: Payload = serde_json::json!({
            "kind": "chunk", "from": 2, "until": 1i64 << 53, "chunk": 99, "path": "z.py", "language": "python",
            "start_line": 1, "end_line": 1, "symbol": "", "text": "zebra"
        })
        .try_into()
        .unwrap();
        client
            .upsert_points(UpsertPointsBuilder::new(collection, vec![PointStruct::new(77u64, NamedVectors::default(), payload)]).wait(true))
            .await
            .unwrap();
        let until: Payload = serde_json::json!({ "until": 2 }).try_into().unwrap();
        client
            .set_payload(
                SetPayloadPointsBuilder::new(collection, until)
                    .points_selector(Filter::must([Condition::matches("path", "a.py".to_string())]))
                    .wait(true),
            )
            .await
            .unwrap();
    });
    catalog.refresh().unwrap();
    assert_eq!(catalog.chunks(&[1, 99]).unwrap().keys().copied().collect::<Vec<_>>(), vec![1]);
    assert_eq!(catalog.files().unwrap(), HashMap::from([("a.py".to_owned(), "alpha".to_owned())]));

    // The next run undoes both before it writes, and commits its own change only.
    run(&catalog, &[], &[&file("b.py", "beta", 2)]);
    assert_eq!(catalog.generation(), 2);
    let mut ids: Vec<u64> = catalog.chunk_ids().unwrap().into_iter().collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2], "a.py survives the killed run's mark; z.py never existed");
    let points = node.count(collection).expect("a count");
    assert_eq!(points, 5, "meta, two files, two chunks: nothing of the killed run is left");

    // Removing a file: its records end with the next generation and go one run later.
    run(&catalog, &["a.py"], &[]);
    assert_eq!(catalog.files().unwrap().keys().collect::<Vec<_>>(), vec!["b.py"]);
    assert_eq!(node.count(collection), Some(5), "ended records wait a generation");
    run(&catalog, &[], &[]);
    assert_eq!(node.count(collection), Some(3));
}

/// A record that is not one graft wrote (here: a chunk id and a definition list rewritten by
/// hand on the server) is left out of searches, which answer with the rest, instead of failing
/// every completion's retrieval; an indexing run's reads still refuse it.
#[test]
#[ignore = "needs the Qdrant server binary: GRAFT_TEST_QDRANT_BIN (scripts/test sets it from ../shared/tools/qdrant)"]
fn a_search_leaves_out_a_record_it_cannot_read_and_answers_with_the_rest() {
    let node = qdrant::Node::single(&qdrant::binary().unwrap_or_else(|why| panic!("{why}")));
    let catalog = QdrantCatalog::open(&server_config(&node), "unreadable").unwrap();
    let file = |path: &str, word: &str, id: u64| {
        let (chunks, definitions) = chunk_and_define(path, &format!("def {word}():\n    return quokka_total\n"), &ChunkOptions::default());
        File {
            path: path.into(),
            hash: word.into(),
            chunks: chunks.into_iter().map(|c| (id, c)).collect(),
            symbols: definitions.into_iter().map(|d| (d, id)).collect(),
        }
    };
    run(&catalog, &[], &[&file("a.py", "alpha", 1), &file("b.py", "beta", 2)]);
    let ids = |ranked: Vec<graft_index::fusion::Ranked>| ranked.into_iter().map(|r| r.id).collect::<BTreeSet<_>>();
    let names = |found: Vec<graft_index::catalog::StoredSymbol>| found.into_iter().map(|s| s.name).collect::<BTreeSet<_>>();
    assert_eq!(ids(catalog.keyword_search("quokka_total", 5).unwrap()), BTreeSet::from([1, 2]));
    assert_eq!(
        names(catalog.definitions(&["alpha", "beta"], 10).unwrap()),
        BTreeSet::from(["alpha".to_owned(), "beta".to_owned()])
    );

    let collection = "graft_catalogs_unreadable~catalog";
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = Qdrant::from_url(&node.grpc_url()).skip_compatibility_check().build().unwrap();
    let break_field = |kind: &str, field: serde_json::Value| {
        let payload: Payload = field.try_into().unwrap();
        let only = Filter::must([
            Condition::matches("kind", kind.to_string()),
            Condition::matches("path", "b.py".to_string()),
        ]);
        runtime
            .block_on(client.set_payload(SetPayloadPointsBuilder::new(collection, payload).points_selector(only).wait(true)))
            .unwrap();
    };
    break_field("chunk", serde_json::json!({ "chunk": "not a number" }));
    break_field("symbol", serde_json::json!({ "defs": "not a list" }));

    assert_eq!(ids(catalog.keyword_search("quokka_total", 5).unwrap()), BTreeSet::from([1]));
    assert_eq!(catalog.chunks(&[1, 2]).unwrap().keys().copied().collect::<Vec<_>>(), vec![1]);
    assert_eq!(
        names(catalog.definitions(&["alpha", "beta"], 10).unwrap()),
        BTreeSet::from(["alpha".to_owned()])
    );
    let refused = catalog
        .chunk_ids()
        .expect_err("an indexing run's read of chunk ids is strict")
        .to_string();
    assert!(refused.contains("an unreadable record in the Qdrant catalog"), "{refused}");
    assert!(
        refused.contains(&format!("in collection {collection}; `graft index --rebuild` builds")),
        "{refused}"
    );
}

#[test]
#[ignore = "needs the Qdrant server binary: GRAFT_TEST_QDRANT_BIN (scripts/test sets it from ../shared/tools/qdrant)"]
fn a_run_writes_its_records_as_it_goes_unseen_until_its_commit() {
    let node = qdrant::Node::single(&qdrant::binary().unwrap_or_else(|why| panic!("{why}")));
    let catalog = QdrantCatalog::open(&server_config(&node), "stream").unwrap();
    let collection = "graft_catalogs_stream~catalog";
    let kind = |kind: &str| node.count_where(collection, "kind", kind).expect("a count");
    let files = files_of(&kit_file("networkx-src"), "");
    let (first, rest) = files.split_at(files.len() / 2);
    let chunks_of = |files: &[File]| files.iter().map(|f| f.chunks.len()).sum::<usize>();

    // What a writer sent reaches the server as the answers come: soon, all but the batch it
    // is filling (256 records).
    let soon = |what: &dyn Fn() -> usize, sent: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while what() + 256 < sent && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        what()
    };

    // A first run writes files and definitions as they come, a record per file's definitions
    // (per 64 of them in a file with more); its chunks wait for their text to set BM25's
    // average lengths (here: all of it, far under the sample's size).
    let mut writer = catalog.writer(2).unwrap();
    add(writer.as_mut(), first);
    let definitions: usize = first.iter().map(|f| f.symbols.len()).sum();
    let records = first.len() + first.iter().map(|f| f.symbols.len().div_ceil(64)).sum::<usize>();
    let written = soon(&|| (kind("file") + kind("symbol")) as usize, records);
    assert!(
        written + 256 >= records && written <= records,
        "{written} of {records} file and definition records written"
    );
    assert!(definitions > 3 * records, "{definitions} definitions in {records} records");
    assert_eq!(kind("chunk"), 0);
    assert!(catalog.files().unwrap().is_empty(), "nothing is seen before the commit");
    writer.commit().unwrap();
    catalog.reload().unwrap();
    assert_eq!(catalog.chunk_count().unwrap(), chunks_of(first));
    assert_eq!(kind("symbol") as usize, records - first.len());

    // The next run writes its chunks as they come too, unseen until its switch.
    let mut writer = catalog.writer(2).unwrap();
    add(writer.as_mut(), rest);
    let written = soon(&|| kind("chunk") as usize - chunks_of(first), chunks_of(rest));
    assert!(
        written + 256 >= chunks_of(rest) && written > 0,
        "{written} of {} chunks written",
        chunks_of(rest)
    );
    assert_eq!(catalog.chunk_count().unwrap(), chunks_of(first), "unseen before the commit");
    assert_eq!(catalog.files().unwrap().len(), first.len());
    writer.commit().unwrap();
    catalog.reload().unwrap();
    assert_eq!(catalog.chunk_count().unwrap(), chunks_of(&files));
    assert_eq!(catalog.files().unwrap().len(), files.len());
    assert!(!catalog.keyword_search("shortest path", 5).unwrap().is_empty());
}

#[test]
#[ignore = "needs the Qdrant server binary: GRAFT_TEST_QDRANT_BIN (scripts/test sets it from ../shared/tools/qdrant)"]
fn a_server_with_an_api_key_serves_graft_with_it_and_refuses_it_without() {
    let bin = qdrant::binary().unwrap_or_else(|why| panic!("{why}"));
    let node = qdrant::Node::single_with_api_key(&bin, "s3cret-key");
    let mut config = server_config(&node);
    let refused = QdrantCatalog::open(&config, "keyed").err().expect("no key, no catalog");
    let message = refused.to_string();
    assert!(message.starts_with(&format!("Qdrant at {}", node.grpc_url())), "{message}");
    assert!(message.to_lowercase().contains("api key"), "{message}");
    config.api_key = Some("wrong".into());
    assert!(QdrantCatalog::open(&config, "keyed").is_err(), "a wrong key is refused");

    config.api_key = Some("s3cret-key".into());
    let catalog = QdrantCatalog::open(&config, "keyed").expect("the key opens it");
    let chunks = chunk_and_define("k.py", "def keyed():\n    return 1\n", &ChunkOptions::default()).0;
    let file = File {
        path: "k.py".into(),
        hash: "h".into(),
        chunks: chunks.into_iter().map(|c| (7, c)).collect(),
        symbols: Vec::new(),
    };
    run(&catalog, &[], &[&file]);
    assert_eq!(catalog.keyword_search("keyed", 5).unwrap()[0].id, 7);
}

#[test]
#[ignore = "needs the Qdrant server binary: GRAFT_TEST_QDRANT_BIN (scripts/test sets it from ../shared/tools/qdrant)"]
fn one_indexing_run_claims_the_catalog_at_a_time() {
    let node = qdrant::Node::single(&qdrant::binary().unwrap_or_else(|why| panic!("{why}")));
    let catalog = QdrantCatalog::open(&server_config(&node), "claimed").unwrap();
    // Another replica, with its own connection.
    let other = QdrantCatalog::open(&server_config(&node), "claimed").unwrap();
    catalog.claim("run A").unwrap();
    catalog.claim("run A").expect("a run renews its own claim");
    let refused = other.claim("run B").unwrap_err().to_string();
    assert!(refused.contains("another graft (run A) is indexing this project"), "{refused}");
    other.release("run B").unwrap();
    assert!(other.claim("run B").is_err(), "releasing someone else's claim does nothing");
    catalog.release("run A").unwrap();
    other.claim("run B").expect("a released claim is free");
}

/// An index written by a graft whose catalog had another layout (here: an older one's number
/// in its meta) is refused by a server opening it, with a clear error, until the next run
/// rebuilds its catalog; the vectors, under the same chunk ids, are kept, not embedded again.
fn an_older_catalog_layout(backend: graft_index::vectors::Backend) {
    use graft_index::{index_repository, IndexError, IndexOptions, ProjectIndex, Quiet};
    let repo = graft_tests::copy_fixture("polyglot");
    let folder = tempfile::tempdir().unwrap();
    let layout = IndexLayout::new(folder.path().join("poly"));
    let options = IndexOptions {
        backend: backend.clone(),
        ..IndexOptions::default()
    };
    let first = index_repository(repo.path(), &layout, graft_tests::kit_embedder(), &options, &Quiet).unwrap();
    assert!(!first.rebuilt && first.embeddings > 10, "{first:?}");

    let current = graft_index::catalog::format(&backend);
    graft_tests::change_meta(&backend, &layout, |meta| {
        assert_eq!(meta.format, current);
        meta.format = current - 1;
    });
    match ProjectIndex::open_with("poly", &layout, &backend) {
        Err(e @ IndexError::Outdated { .. }) => assert!(e.to_string().contains("poly"), "{e}"),
        other => panic!("an outdated catalog opened: {:?}", other.err()),
    }

    let again = index_repository(repo.path(), &layout, graft_tests::kit_embedder(), &options, &Quiet).unwrap();
    assert!(again.rebuilt, "{again:?}");
    assert_eq!(again.embeddings, 0, "its vectors are kept: {again:?}");
    assert_eq!(again.chunks, first.chunks);
    let index = ProjectIndex::open_with("poly", &layout, &backend).expect("rebuilt, it opens");
    assert_eq!(index.chunk_count().unwrap(), first.chunks);
    drop(index);
    let catalog = graft_index::catalog::open(&backend, &layout).unwrap();
    let found = catalog.definitions(&["compute_vat_breakdown"], 5).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "billing/invoice.py");
}

#[test]
fn an_index_folder_of_an_older_catalog_layout_is_refused_then_rebuilt_keeping_its_vectors() {
    an_older_catalog_layout(graft_index::vectors::Backend::Embedded);
}

/// An index folder whose files cannot be read (cut short, as a full disk or an interrupted copy
/// leaves them): a server opening it is told which project and what rebuilds it, and the next
/// run rebuilds what cannot be read: the keyword index with its vectors kept, the vectors by
/// embedding every chunk again. Before, every run failed until someone deleted the folder.
#[test]
fn an_index_folder_that_cannot_be_read_is_rebuilt_by_the_next_run() {
    use graft_index::{index_repository, IndexError, IndexOptions, ProjectIndex, Query, Quiet, SearchMode, SearchOptions};
    let embedder = graft_tests::kit_embedder();
    let repo = graft_tests::copy_fixture("polyglot");
    let folder = tempfile::tempdir().unwrap();
    let layout = IndexLayout::new(folder.path().join("poly"));
    let options = IndexOptions::default();
    let backend = graft_index::vectors::Backend::Embedded;
    let first = index_repository(repo.path(), &layout, embedder, &options, &Quiet).unwrap();
    let files_under = |dir: std::path::PathBuf, name: &dyn Fn(&str) -> bool| -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        let mut dirs = vec![dir];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
                if entry.file_type().unwrap().is_dir() {
                    dirs.push(entry.path());
                } else if name(&entry.file_name().to_string_lossy()) {
                    found.push(entry.path());
                }
            }
        }
        found
    };
    let refused = |what: &str| match ProjectIndex::open_with("poly", &layout, &backend) {
        Err(e @ IndexError::Unreadable { .. }) => {
            let said = e.to_string();
            assert!(said.contains("project `poly`") && said.contains("graft index"), "{said}");
        }
        other => panic!("an index with {what} cut short opened: {:?}", other.err()),
    };
    let vector_hit = || {
        let index = ProjectIndex::open_with("poly", &layout, &backend).expect("rebuilt, it opens");
        let vector = SearchOptions {
            mode: SearchMode::Vector,
            ..SearchOptions::default()
        };
        let hits = index
            .search_for(
                &Query::text("compute the VAT breakdown of an invoice"),
                Some(embedder.as_ref()),
                &vector,
            )
            .unwrap();
        assert_eq!(index.chunk_count().unwrap(), first.chunks);
        hits.first().map(|h| h.path.clone())
    };
    assert_eq!(vector_hit().as_deref(), Some("billing/invoice.py"));

    // The keyword index's stored documents, cut short.
    let stores = files_under(layout.catalog(), &|name| name.ends_with(".store"));
    assert!(!stores.is_empty());
    for store in &stores {
        std::fs::OpenOptions::new().write(true).open(store).unwrap().set_len(10).unwrap();
    }
    refused("its keyword index");
    let again = index_repository(repo.path(), &layout, embedder, &options, &Quiet).unwrap();
    let because = again.rebuilt_because.clone().unwrap_or_default();
    assert!(again.rebuilt && because.contains("keyword index could not be read"), "{again:?}");
    assert_eq!(
        (again.chunks, again.embeddings),
        (first.chunks, 0),
        "its vectors are kept: {again:?}"
    );
    assert_eq!(vector_hit().as_deref(), Some("billing/invoice.py"));
    let catalog = graft_index::catalog::open(&backend, &layout).unwrap();
    assert_eq!(
        catalog.definitions(&["compute_vat_breakdown"], 5).unwrap()[0].path,
        "billing/invoice.py"
    );
    drop(catalog);

    // The vector store's segment descriptions, cut short.
    let segments = files_under(layout.vectors(), &|name| name == "segment.json");
    assert!(!segments.is_empty());
    for segment in &segments {
        std::fs::write(segment, "{").unwrap();
    }
    refused("its vectors");
    let again = index_repository(repo.path(), &layout, embedder, &options, &Quiet).unwrap();
    let because = again.rebuilt_because.clone().unwrap_or_default();
    assert!(again.rebuilt && because.contains("vectors could not be read"), "{again:?}");
    assert_eq!(
        (again.chunks, again.embeddings),
        (first.chunks, first.chunks),
        "every chunk embedded again: {again:?}"
    );
    assert_eq!(vector_hit().as_deref(), Some("billing/invoice.py"));

    let last = index_repository(repo.path(), &layout, embedder, &options, &Quiet).unwrap();
    assert!(!last.rebuilt && last.embeddings == 0, "{last:?}");
}

/// An index whose vectors were made from another form of the text (here: what graft wrote
/// before names were spaced into words, the model's id alone in its meta) is refused by vector
/// search, which names both; hybrid search goes on without its vectors (a server upgraded
/// keeps its retrieval), and the next run embeds it anew.
#[test]
fn an_index_of_vectors_made_from_another_text_form_is_embedded_anew() {
    use graft_index::indexer::{embedding_text, embedding_words, vectors_id};
    use graft_index::{index_repository, IndexOptions, ProjectIndex, Query, Quiet, SearchMode, SearchOptions};
    let embedder = graft_tests::kit_embedder();
    assert_eq!(
        embedding_words("fn computeVatBreakdown(line_items)"),
        "fn compute Vat Breakdown(line items)"
    );
    assert_eq!(
        embedding_text(
            "billing/invoice.py",
            "compute_vat_breakdown",
            "def compute_vat_breakdown(lineItems):"
        ),
        "billing/invoice.py\ncompute vat breakdown\ndef compute vat breakdown(line Items):"
    );
    assert_eq!(vectors_id(embedder), format!("{}:words", embedder.id()));

    let repo = graft_tests::copy_fixture("polyglot");
    let folder = tempfile::tempdir().unwrap();
    let layout = IndexLayout::new(folder.path().join("poly"));
    let options = IndexOptions::default();
    let first = index_repository(repo.path(), &layout, embedder, &options, &Quiet).unwrap();
    assert!(!first.rebuilt && first.embeddings > 10, "{first:?}");

    let backend = graft_index::vectors::Backend::Embedded;
    graft_tests::change_meta(&backend, &layout, |meta| {
        assert_eq!(meta.embedding_model, vectors_id(embedder));
        meta.embedding_model = embedder.id().to_owned();
    });
    let index = ProjectIndex::open_with("poly", &layout, &backend).expect("it opens");
    let query = Query::text("compute the VAT breakdown of an invoice");
    let vector = SearchOptions {
        mode: SearchMode::Vector,
        ..SearchOptions::default()
    };
    let refused = index.search_for(&query, Some(embedder.as_ref()), &vector).unwrap_err().to_string();
    assert!(
        refused.contains(embedder.id()) && refused.contains(&vectors_id(embedder)),
        "{refused}"
    );
    let hybrid = SearchOptions {
        mode: SearchMode::Hybrid,
        ..SearchOptions::default()
    };
    let hits = index.search_for(&query, Some(embedder.as_ref()), &hybrid).unwrap();
    assert_eq!(hits.first().map(|h| h.path.as_str()), Some("billing/invoice.py"), "{hits:?}");
    drop(index);

    let again = index_repository(repo.path(), &layout, embedder, &options, &Quiet).unwrap();
    assert!(again.rebuilt, "{again:?}");
    assert_eq!(again.embeddings, first.chunks, "every chunk embedded anew: {again:?}");
    let index = ProjectIndex::open_with("poly", &layout, &backend).unwrap();
    let hits = index.search_for(&query, Some(embedder.as_ref()), &vector).unwrap();
    assert!(!hits.is_empty());
}

/// Asked to (`graft index --rebuild`, `--embed-again`, or both), a run builds the keyword index
/// anew from the repository, the vectors of the chunks already embedded kept; or embeds every
/// chunk again, the keyword index kept; and the index answers as before. `first` is told of
/// the index built and may break it or hold it open, as each backend's test wants, before.
fn a_run_starts_over_as_asked(backend: graft_index::vectors::Backend, first: impl FnOnce(&IndexLayout, &graft_index::IndexOptions)) {
    use graft_index::{index_repository, IndexOptions, ProjectIndex, Query, Quiet, SearchMode, SearchOptions, StartOver};
    let embedder = graft_tests::kit_embedder();
    let repo = graft_tests::copy_fixture("polyglot");
    let folder = tempfile::tempdir().unwrap();
    let layout = IndexLayout::new(folder.path().join("poly"));
    let options = IndexOptions {
        backend: backend.clone(),
        ..IndexOptions::default()
    };
    let built = index_repository(repo.path(), &layout, embedder, &options, &Quiet).unwrap();
    assert!(built.files_added > 3 && built.embeddings == built.chunks, "{built:?}");
    first(&layout, &options);

    let asked = |catalog: bool, vectors: bool| IndexOptions {
        start_over: StartOver { catalog, vectors },
        ..options.clone()
    };
    let answers_as_before = || {
        let index = ProjectIndex::open_with("poly", &layout, &backend).expect("the index opens");
        assert_eq!(index.chunk_count().unwrap(), built.chunks);
        let vector = SearchOptions {
            mode: SearchMode::Vector,
            ..SearchOptions::default()
        };
        let query = Query::text("compute the VAT breakdown of an invoice");
        let hits = index.search_for(&query, Some(embedder.as_ref()), &vector).unwrap();
        assert_eq!(hits.first().map(|h| h.path.as_str()), Some("billing/invoice.py"));
        drop(index);
        let catalog = graft_index::catalog::open(&backend, &layout).unwrap();
        let found = catalog.definitions(&["compute_vat_breakdown"], 5).unwrap();
        assert_eq!(found.first().map(|d| d.path.as_str()), Some("billing/invoice.py"), "{found:?}");
    };
    let because = |report: &graft_index::IndexReport| {
        assert!(report.rebuilt, "{report:?}");
        report.rebuilt_because.clone().unwrap_or_default()
    };

    let rebuilt = index_repository(repo.path(), &layout, embedder, &asked(true, false), &Quiet).unwrap();
    assert!(because(&rebuilt).contains("asked to build the keyword index anew"), "{rebuilt:?}");
    assert_eq!(
        (rebuilt.files_added, rebuilt.files_unchanged, rebuilt.chunks, rebuilt.embeddings),
        (built.files_added, 0, built.chunks, 0),
        "every file read again, no chunk embedded again: {rebuilt:?}"
    );
    answers_as_before();

    let embedded = index_repository(repo.path(), &layout, embedder, &asked(false, true), &Quiet).unwrap();
    assert!(because(&embedded).contains("asked to embed every chunk again"), "{embedded:?}");
    assert_eq!(
        (embedded.files_added, embedded.files_unchanged, embedded.embeddings),
        (0, built.files_added, built.chunks),
        "the keyword index kept, every chunk embedded again: {embedded:?}"
    );
    answers_as_before();

    let both = index_repository(repo.path(), &layout, embedder, &asked(true, true), &Quiet).unwrap();
    assert!(because(&both).contains("anew and embed every chunk again"), "{both:?}");
    assert_eq!((both.files_added, both.embeddings), (built.files_added, built.chunks), "{both:?}");
    answers_as_before();

    let last = index_repository(repo.path(), &layout, embedder, &options, &Quiet).unwrap();
    assert!(
        !last.rebuilt && last.embeddings == 0 && last.files_unchanged == built.files_added,
        "{last:?}"
    );
}

/// In an index folder, a run asked to start over while another process holds the index open
/// (a graft serving it) is refused before it throws anything away.
#[test]
fn an_index_folder_is_built_anew_as_asked_but_not_under_a_graft_serving_it() {
    a_run_starts_over_as_asked(graft_index::vectors::Backend::Embedded, |layout, options| {
        use graft_index::{index_repository, IndexError, IndexOptions, ProjectIndex, Quiet, StartOver};
        let serving = ProjectIndex::open_with("poly", layout, &options.backend).unwrap();
        let chunks = serving.chunk_count().unwrap();
        let repo = graft_index::catalog::read_meta(&options.backend, layout)
            .unwrap()
            .unwrap()
            .repository;
        let asked = IndexOptions {
            start_over: StartOver {
                catalog: true,
                vectors: true,
            },
            ..options.clone()
        };
        match index_repository(&repo, layout, graft_tests::kit_embedder(), &asked, &Quiet) {
            Err(IndexError::InUse { .. }) => {}
            other => panic!("a rebuild under a serving index was not refused: {other:?}"),
        }
        assert_eq!(serving.chunk_count().unwrap(), chunks);
        drop(serving);
        let reopened = ProjectIndex::open_with("poly", layout, &options.backend).unwrap();
        assert_eq!(reopened.chunk_count().unwrap(), chunks, "nothing was thrown away");
    });
}

/// On a Qdrant server, a catalog record no run can read (here: a chunk id rewritten by hand)
/// fails every run, saying to rebuild; the rebuild waits for another machine's run to end,
/// then mends it with its vectors kept.
#[test]
#[ignore = "needs the Qdrant server binary: GRAFT_TEST_QDRANT_BIN (scripts/test sets it from ../shared/tools/qdrant)"]
fn a_server_index_is_built_anew_as_asked_mending_a_record_no_run_can_read() {
    let node = qdrant::Node::single(&qdrant::binary().unwrap_or_else(|why| panic!("{why}")));
    a_run_starts_over_as_asked(graft_index::vectors::Backend::Server(server_config(&node)), |layout, options| {
        use graft_index::{index_repository, IndexError, IndexOptions, Quiet, StartOver};
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = Qdrant::from_url(&node.grpc_url()).skip_compatibility_check().build().unwrap();
        let payload: Payload = serde_json::json!({ "chunk": "not a number" }).try_into().unwrap();
        let only = Filter::must([
            Condition::matches("kind", "chunk".to_string()),
            Condition::matches("path", "billing/invoice.py".to_string()),
        ]);
        let set = SetPayloadPointsBuilder::new("graft_catalogs_poly~catalog", payload)
            .points_selector(only)
            .wait(true);
        runtime.block_on(client.set_payload(set)).unwrap();

        let repo = graft_index::catalog::read_meta(&options.backend, layout)
            .unwrap()
            .unwrap()
            .repository;
        let embedder = graft_tests::kit_embedder();
        let refused = index_repository(&repo, layout, embedder, options, &Quiet).expect_err("a run cannot read the record");
        assert!(refused.to_string().contains("`graft index --rebuild` builds"), "{refused}");

        let catalog = graft_index::catalog::open(&options.backend, layout).unwrap();
        catalog.claim("a run on another machine").unwrap();
        let asked = IndexOptions {
            start_over: StartOver {
                catalog: true,
                vectors: false,
            },
            ..options.clone()
        };
        match index_repository(&repo, layout, embedder, &asked, &Quiet) {
            Err(IndexError::Claimed { holder, .. }) => assert_eq!(holder, "a run on another machine"),
            other => panic!("a rebuild during another machine's run was not refused: {other:?}"),
        }
        assert!(
            index_repository(&repo, layout, embedder, options, &Quiet).is_err(),
            "the refused rebuild threw nothing away and mended nothing"
        );
        catalog.release("a run on another machine").unwrap();
    });
}

#[test]
#[ignore = "needs the Qdrant server binary: GRAFT_TEST_QDRANT_BIN (scripts/test sets it from ../shared/tools/qdrant)"]
fn a_server_catalog_of_an_older_layout_is_refused_then_rebuilt_keeping_its_vectors() {
    let node = qdrant::Node::single(&qdrant::binary().unwrap_or_else(|why| panic!("{why}")));
    an_older_catalog_layout(graft_index::vectors::Backend::Server(server_config(&node)));
}
