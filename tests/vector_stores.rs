//! Both vector stores behave the same: upsert, nearest-neighbour search, listing and deleting.

use graft_index::vectors::{EdgeStore, ServerConfig, ServerStore, VectorStore};
use graft_index::IndexError;
use graft_tests::qdrant;

/// Cosines with the x axis: id 1 → 1, id 4 → 0.71, id 2 → 0.1, the others → 0.
fn points() -> Vec<(u64, Vec<f32>)> {
    let s = std::f32::consts::FRAC_1_SQRT_2;
    vec![
        (1, vec![1.0, 0.0, 0.0, 0.0]),
        (2, vec![0.1, 1.0, 0.0, 0.0]),
        (3, vec![0.0, 0.0, 1.0, 0.0]),
        (4, vec![s, s, 0.0, 0.0]),
        (u64::MAX >> 1, vec![0.0, 0.0, 0.0, 1.0]),
    ]
}

fn exercise(store: &dyn VectorStore) {
    store.upsert(&points()).unwrap();
    store.flush().unwrap();
    let ids = store.ids().unwrap();
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert!(ids.contains(&(u64::MAX >> 1)), "large ids survive");

    let hits = store.search(&[1.0, 0.0, 0.0, 0.0], 3).unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [1, 4, 2]);
    assert!((hits[0].score - 1.0).abs() < 1e-4, "cosine of identical vectors: {hits:?}");
    assert!((hits[1].score - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-3, "{hits:?}");

    // Replacing a vector moves it.
    store.upsert(&[(3, vec![0.9, 0.1, 0.0, 0.0])]).unwrap();
    let hits = store.search(&[1.0, 0.0, 0.0, 0.0], 2).unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [1, 3]);

    store.delete(&[1, 3, 999]).unwrap();
    store.flush().unwrap();
    let hits = store.search(&[1.0, 0.0, 0.0, 0.0], 10).unwrap();
    assert_eq!(hits.first().map(|h| h.id), Some(4));
    assert!(hits.iter().all(|h| h.id != 1 && h.id != 3));
    assert_eq!(store.ids().unwrap().len(), 3);
    assert!(store.search(&[1.0, 0.0, 0.0, 0.0], 0).unwrap().is_empty());
}

#[test]
fn the_embedded_store_works_and_persists() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("vectors");
    {
        let store = EdgeStore::open(&dir, 4).unwrap();
        exercise(&store);
    }
    // Reopened from disk: the same three vectors.
    let store = EdgeStore::open(&dir, 4).unwrap();
    assert_eq!(store.ids().unwrap().len(), 3);
    assert_eq!(store.search(&[0.0, 1.0, 0.0, 0.0], 1).unwrap()[0].id, 2);

    // While it is open, a second opener (another process, or this one) is told so plainly.
    match EdgeStore::open(&dir, 4) {
        Err(e @ IndexError::InUse { .. }) => assert!(e.to_string().contains("open in another process"), "{e}"),
        Err(e) => panic!("expected InUse, got {e}"),
        Ok(_) => panic!("the shard was opened twice"),
    }
    drop(store);
    assert!(EdgeStore::open(&dir, 4).is_ok(), "closing the store releases it");
}

/// The Qdrant server the server-backend tests use: `GRAFT_TEST_QDRANT_URL` when it names one
/// already running, otherwise a node started from `GRAFT_TEST_QDRANT_BIN` (held until the
/// test ends).
fn qdrant_server() -> (String, Option<qdrant::Node>) {
    if let Ok(url) = std::env::var("GRAFT_TEST_QDRANT_URL") {
        return (url, None);
    }
    let bin = qdrant::binary().unwrap_or_else(|why| panic!("no Qdrant server to test against: {why}"));
    let node = qdrant::Node::single(&bin);
    (node.grpc_url(), Some(node))
}

#[test]
#[ignore = "needs a Qdrant server: GRAFT_TEST_QDRANT_BIN (scripts/test sets it from ../shared/tools/qdrant) or GRAFT_TEST_QDRANT_URL"]
fn the_server_store_behaves_like_the_embedded_one() {
    let (url, _node) = qdrant_server();
    let config = ServerConfig {
        url,
        api_key: std::env::var("GRAFT_TEST_QDRANT_API_KEY").ok(),
        collection_prefix: format!("graft_test_{}_", std::process::id()),
        shards: None,
        replication_factor: None,
    };
    let store = ServerStore::open(&config, "stores", 4).unwrap();
    exercise(&store);

    // A new embedding model: the collection goes, and comes back empty with the new size.
    ServerStore::delete_collection(&config, "stores").unwrap();
    let store = ServerStore::open(&config, "stores", 8).unwrap();
    assert!(store.ids().unwrap().is_empty());
    store.upsert(&[(1, vec![1.0; 8])]).unwrap();
    assert_eq!(store.search(&[1.0; 8], 1).unwrap()[0].id, 1);
    ServerStore::delete_collection(&config, "stores").unwrap();
}
