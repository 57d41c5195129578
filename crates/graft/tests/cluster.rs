//! graft on a real three-node Qdrant cluster on loopback: a project's collections (vectors and
//! catalog) with 2 shards and 2 copies of each, indexed by one graft process through one node
//! and searched through a different node by replicas that have no index folder of their own
//! (other `graft` processes, and an index kept open across re-indexes), while nodes are killed
//! (`kill -9`) and restarted.
//!
//! Needs the Qdrant server binary (`GRAFT_TEST_QDRANT_BIN`, which scripts/test sets from
//! `../shared/tools/qdrant`); without it the test is ignored with that reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{copy_tree, repo_root};
use graft_index::vectors::{Backend, ServerConfig};
use graft_index::{IndexLayout, ProjectIndex, SearchMode, SearchOptions};
use graft_tests::qdrant::{self, Cluster, Node};
use serde_json::Value;

const PROJECT: &str = "poly";
/// A query whose answer, in the fixture, is storage/blobstore.go.
const QUERY: &str = "NewBlobStore(4096)";

/// A config whose index lives in `index_dir` and whose vectors live on `node`, in collections
/// named `<prefix><project>` with 2 shards of 2 copies.
fn write_config(dir: &Path, name: &str, index_dir: &Path, node: &Node, prefix: &str) -> PathBuf {
    let kit = common::kit_dir();
    let config = dir.join(name);
    std::fs::write(
        &config,
        format!(
            "[kit]\ndir = {:?}\n[index]\ndir = {:?}\nqdrant_url = {:?}\nqdrant_collection_prefix = {prefix:?}\n\
             qdrant_shards = 2\nqdrant_replication_factor = 2\n",
            kit.display().to_string(),
            index_dir.display().to_string(),
            node.grpc_url(),
        ),
    )
    .unwrap();
    config
}

fn graft(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graft"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn ok_json(out: &Output) -> Value {
    assert!(out.status.success(), "graft failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// `graft index` of `repo`: the report's chunk count.
fn index(config: &Path, repo: &Path) -> u64 {
    let out = graft(config, &["index", "--project", PROJECT, "--json", &repo.display().to_string()]);
    ok_json(&out)["report"]["chunks"].as_u64().expect("a chunk count")
}

/// A vector search's hits as (path, start line), best first.
fn search(config: &Path) -> Result<Vec<(String, u64)>, String> {
    search_for(config, QUERY, "vector")
}

/// A search's hits as (path, start line), best first.
fn search_for(config: &Path, query: &str, mode: &str) -> Result<Vec<(String, u64)>, String> {
    let out = graft(
        config,
        &["search", query, "--project", PROJECT, "--mode", mode, "-k", "5", "--json"],
    );
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let hits: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(hits
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| (h["path"].as_str().unwrap_or("").to_owned(), h["start_line"].as_u64().unwrap_or(0)))
        .collect())
}

/// Waits until `node` counts `expected` points in `collection` (its replicas catching up).
fn await_count(node: &Node, collection: &str, expected: u64) {
    let started = Instant::now();
    loop {
        let count = node.count(collection);
        if count == Some(expected) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the node counts {count:?} points in {collection}, not {expected}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn add_file(repo: &Path, name: &str, function: &str) {
    std::fs::write(
        repo.join(name),
        format!("def {function}(rows):\n    \"\"\"Totals the rows of a ledger.\"\"\"\n    return sum(r.amount for r in rows)\n"),
    )
    .unwrap();
}

#[test]
#[ignore = "needs the Qdrant server binary: GRAFT_TEST_QDRANT_BIN (scripts/test sets it from ../shared/tools/qdrant)"]
fn a_project_on_a_qdrant_cluster_keeps_serving_while_nodes_die() {
    let bin = qdrant::binary().unwrap_or_else(|why| panic!("{why}"));
    let mut cluster = Cluster::start(&bin, 3);
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    copy_tree(&repo_root().join("tests/fixtures/polyglot"), &repo);
    // One graft indexes through node 0; others search through node 2, each with an index
    // folder of its own that nothing is ever written to: the cluster holds the whole index.
    let indexer = write_config(
        work.path(),
        "indexer.toml",
        &work.path().join("index"),
        &cluster.nodes[0],
        "graft_cluster_",
    );
    let replica_dir = work.path().join("replica");
    let searcher = write_config(work.path(), "searcher.toml", &replica_dir, &cluster.nodes[2], "graft_cluster_");
    let collection = format!("graft_cluster_{PROJECT}");
    let never_built = search_for(&searcher, QUERY, "keyword").unwrap_err();
    assert!(never_built.contains("no index for project `poly`"), "{never_built}");

    let chunks = index(&indexer, &repo);
    for name in [collection.clone(), format!("{collection}~catalog")] {
        let (_, info) = cluster.nodes[1].get(&format!("/collections/{name}")).unwrap();
        let info: Value = serde_json::from_str(&info).unwrap();
        assert_eq!(info["result"]["config"]["params"]["shard_number"], 2, "{name}: {info}");
        assert_eq!(info["result"]["config"]["params"]["replication_factor"], 2, "{name}: {info}");
    }
    await_count(&cluster.nodes[1], &collection, chunks);
    let expected = search(&searcher).unwrap();
    assert!(expected.iter().any(|h| h.0 == "storage/blobstore.go"), "{expected:?}");
    for mode in ["keyword", "hybrid"] {
        let hits = search_for(&searcher, QUERY, mode).unwrap();
        assert_eq!(hits.first().map(|h| h.0.as_str()), Some("storage/blobstore.go"), "{mode}: {hits:?}");
    }
    // A replica that keeps the project open (as `graft serve` does) through node 2.
    let replica = ProjectIndex::open_with(
        PROJECT,
        &IndexLayout::new(work.path().join("open-replica").join(PROJECT)),
        &Backend::Server(ServerConfig {
            url: cluster.nodes[2].grpc_url(),
            api_key: None,
            collection_prefix: "graft_cluster_".into(),
            shards: None,
            replication_factor: None,
        }),
    )
    .expect("the project opens from the cluster alone");
    assert_eq!(replica.chunk_count().unwrap() as u64, chunks);
    let keyword = SearchOptions {
        mode: SearchMode::Keyword,
        ..SearchOptions::default()
    };
    let paths = |query: &str| -> Vec<String> {
        replica
            .search(query, None, &keyword)
            .expect("a keyword search on the open replica")
            .into_iter()
            .map(|h| h.path)
            .collect()
    };
    assert!(!paths("ledger_total").contains(&"ledger.py".to_owned()));

    // Searches go on through node 2 while node 1 dies under them: every shard has a copy
    // elsewhere. Each search is a whole `graft search` process.
    let answers = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let answer = search(&searcher);
                answers.lock().unwrap().push(answer);
            }
        });
        let wait_for = |n: usize| {
            let started = Instant::now();
            while answers.lock().unwrap().len() < n && started.elapsed() < Duration::from_secs(120) {
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        wait_for(2);
        cluster.nodes[1].kill();
        wait_for(6);
        stop.store(true, Ordering::SeqCst);
    });
    let answers = answers.into_inner().unwrap();
    assert!(answers.len() >= 6, "{} searches", answers.len());
    for answer in &answers {
        assert_eq!(answer.as_ref(), Ok(&expected), "a search while node 1 was killed");
    }

    // Writes go on too: a new file indexed through node 0 while node 1 is down ...
    add_file(&repo, "ledger.py", "ledger_total");
    let chunks = index(&indexer, &repo);
    let expected = search(&searcher).unwrap();
    // The re-index is seen at once, by a new process and by the replica kept open.
    let hits = search_for(&searcher, "ledger_total", "keyword").unwrap();
    assert_eq!(hits.first().map(|h| h.0.as_str()), Some("ledger.py"), "{hits:?}");
    assert_eq!(paths("ledger_total").first().map(String::as_str), Some("ledger.py"));
    assert_eq!(replica.chunk_count().unwrap() as u64, chunks);
    // ... and node 1, back on its storage, catches up on what it missed.
    cluster.nodes[1].start();
    cluster.await_consensus();
    await_count(&cluster.nodes[1], &collection, chunks);

    // The indexer's own node dies: indexing says where it failed and changes nothing ...
    cluster.nodes[0].kill();
    add_file(&repo, "payroll.py", "payroll_total");
    let failed = graft(&indexer, &["index", "--project", PROJECT, &repo.display().to_string()]);
    assert!(!failed.status.success());
    let message = String::from_utf8_lossy(&failed.stderr);
    assert!(message.contains(&format!("Qdrant at {}", cluster.nodes[0].grpc_url())), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    assert_eq!(search(&searcher).unwrap(), expected, "the failed run left the index as it was");
    assert!(!paths("payroll_total").contains(&"payroll.py".to_owned()));
    // ... and the next run, with the node back, finishes the job; a changed file's old
    // definitions are gone from every replica the moment it commits.
    cluster.nodes[0].start();
    cluster.await_consensus();
    add_file(&repo, "ledger.py", "ledger_sum");
    let chunks = index(&indexer, &repo);
    await_count(&cluster.nodes[2], &collection, chunks);
    assert_eq!(paths("payroll_total").first().map(String::as_str), Some("payroll.py"));
    assert_eq!(paths("ledger_sum").first().map(String::as_str), Some("ledger.py"));
    let old = replica.search("ledger_total", None, &keyword).unwrap();
    assert!(!old.iter().any(|h| h.text.contains("def ledger_total")), "{old:?}");
    assert_eq!(replica.chunk_count().unwrap() as u64, chunks);
    assert!(
        !replica_dir.exists() && !work.path().join("open-replica").exists(),
        "replicas keep nothing on their own disk"
    );

    // Nothing lost: a clean run over the same files, into a new collection and index folder,
    // has as many chunks, and both collections hold one vector per chunk.
    let clean = write_config(
        work.path(),
        "clean.toml",
        &work.path().join("clean-index"),
        &cluster.nodes[2],
        "graft_clean_",
    );
    assert_eq!(index(&clean, &repo), chunks);
    for node in &cluster.nodes {
        await_count(node, &format!("graft_clean_{PROJECT}"), chunks);
        await_count(node, &collection, chunks);
    }
}

/// `graft up` with its index on a Qdrant server that has none yet: it builds the first one and
/// serves from it, and a restart serves the one on the server (it panicked at its start, where
/// it looked for the project's catalog from inside its runtime).
#[test]
#[ignore = "needs the Qdrant server binary: GRAFT_TEST_QDRANT_BIN (scripts/test sets it from ../shared/tools/qdrant)"]
fn up_builds_and_serves_a_first_index_on_a_qdrant_server_and_restarts_on_it() {
    let node = Node::single(&qdrant::binary().unwrap_or_else(|why| panic!("{why}")));
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    copy_tree(&repo_root().join("tests/fixtures/polyglot"), &repo);
    let config = work.path().join("graft.toml");
    std::fs::write(
        &config,
        format!(
            "[kit]\ndir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[index]\ndir = {:?}\nqdrant_url = {:?}\n\
             qdrant_collection_prefix = \"graft_up_\"\n[[projects]]\nname = {PROJECT:?}\npath = {:?}\n",
            common::kit_dir().display().to_string(),
            work.path().join("index").display().to_string(),
            node.grpc_url(),
            repo.display().to_string(),
        ),
    )
    .unwrap();
    let status = |addr: &str| common::json_body(&common::http_get(addr, &format!("/v1/projects/{PROJECT}")));
    let first_hit = |addr: &str| -> Value {
        let body = format!(r#"{{"query": {QUERY:?}, "k": 3}}"#);
        let answer = common::json_body(&common::http_post(addr, &format!("/v1/projects/{PROJECT}/search"), &body));
        answer["data"][0]["path"].clone()
    };

    // The project's chunks once no run is writing or embedding.
    let indexed = |addr: &str| -> u64 {
        let started = Instant::now();
        loop {
            let now = status(addr);
            if let (Some(chunks), Some(0), Some(false)) =
                (now["chunks"].as_u64(), now["vectors_pending"].as_u64(), now["reindexing"].as_bool())
            {
                if chunks > 0 {
                    return chunks;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(180), "no index after 180 s: {now}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };

    let serving = common::graft_up(&config);
    let chunks = indexed(&serving.addr);
    assert_eq!(first_hit(&serving.addr), "storage/blobstore.go");
    assert_eq!(
        node.count(&format!("graft_up_{PROJECT}")),
        Some(chunks),
        "the vectors are on the server"
    );
    let (mut process, lines) = (serving.process, serving.lines);
    assert!(Command::new("kill")
        .args(["-TERM", &process.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    let exit = process.0.wait().unwrap();
    let said: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(exit.success(), "graft exits 0 on SIGTERM, got {exit}: {said:#?}");

    // A restart finds the index on the server and serves it at once.
    let serving = common::graft_up(&config);
    assert_eq!(indexed(&serving.addr), chunks);
    assert_eq!(first_hit(&serving.addr), "storage/blobstore.go");
}
