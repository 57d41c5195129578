//! The keyword side of an index in Qdrant (issue 17), measured against the catalog's BM25
//! (tantivy) on the same chunks and queries: BM25 as sparse vectors with Qdrant's IDF modifier
//! (`graft_index::keywords`), and, for comparison, Qdrant's full-text payload index (which
//! filters but does not rank). On networkx 3.4.2's source (the kit's pinned PyPI release: code
//! nobody here wrote): cross-file queries (five lines of code) and identifier queries, as
//! completions and questions send them.
//!
//! Needs a Qdrant node (`GRAFT_TEST_QDRANT_BIN`, which scripts/test sets); ignored without one.

use graft_eval::retrieval::cross_file_queries;
use graft_index::catalog::{Catalog, TantivyCatalog};
use graft_index::chunker::{chunk_and_define, Chunk, ChunkOptions};
use graft_index::fusion::Ranked;
use graft_index::keywords::{self, AverageLengths, Fields};
use graft_index::walk::{walk, WalkOptions};
use graft_index::IndexLayout;
use graft_tests::{kit_file, qdrant};
use qdrant_client::qdrant::{
    Condition, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, FieldType, Filter, Modifier, NamedVectors, PointStruct,
    QueryPointsBuilder, ScrollPointsBuilder, SparseVectorParamsBuilder, SparseVectorsConfigBuilder, TextIndexParamsBuilder, TokenizerType,
    UpsertPointsBuilder, Vector, VectorInput,
};
use qdrant_client::{Payload, Qdrant};

const COLLECTION: &str = "keywords";
const SPARSE: &str = "keywords";
const TOP: usize = 10;

/// How one way of searching agrees with tantivy's ranking.
#[derive(Debug, Default)]
struct Agreement {
    queries: usize,
    /// Its first result is one tantivy ranks first (or ties with it, within 1%).
    first: usize,
    /// Summed over queries: the share of tantivy's top 10 it also returns in its top 10.
    overlap: f64,
}

impl Agreement {
    fn add(&mut self, tantivy: &[Ranked], other: &[u64]) {
        self.queries += 1;
        let best = tantivy[0].score;
        if other
            .first()
            .is_some_and(|id| tantivy.iter().any(|r| r.id == *id && r.score >= best * 0.99))
        {
            self.first += 1;
        }
        let found = tantivy.iter().filter(|r| other.contains(&r.id)).count();
        self.overlap += found as f64 / tantivy.len() as f64;
    }

    fn first_rate(&self) -> f64 {
        self.first as f64 / self.queries.max(1) as f64
    }

    fn overlap_rate(&self) -> f64 {
        self.overlap / self.queries.max(1) as f64
    }
}

#[test]
#[ignore = "needs the Qdrant server binary: GRAFT_TEST_QDRANT_BIN (scripts/test sets it from ../shared/tools/qdrant)"]
fn sparse_bm25_in_qdrant_ranks_as_the_catalog_does() {
    let node = qdrant::Node::single(&qdrant::binary().unwrap_or_else(|why| panic!("{why}")));
    let repo = kit_file("networkx-src");
    let files = walk(&repo, &WalkOptions::default()).expect("walk").files;
    let chunks: Vec<Chunk> = files
        .iter()
        .flat_map(|f| chunk_and_define(&f.path, &f.text, &ChunkOptions::default()).0)
        .collect();
    assert!(chunks.len() > 3000, "{} chunks", chunks.len());
    let id = |i: usize| i as u64 + 1;

    // The catalog, as an index run writes it.
    let dir = tempfile::tempdir().unwrap();
    let catalog = TantivyCatalog::open(&IndexLayout::new(dir.path())).unwrap();
    let mut writer = catalog.writer(2).unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        writer.add_chunk(id(i), chunk).unwrap();
    }
    writer.commit().unwrap();
    catalog.reload().unwrap();

    // The same chunks in Qdrant: a sparse BM25 vector and the text under a full-text index.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = Qdrant::from_url(&node.grpc_url()).skip_compatibility_check().build().unwrap();
    let lengths = AverageLengths::of(chunks.iter().map(fields));
    runtime.block_on(async {
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(SPARSE, SparseVectorParamsBuilder::default().modifier(Modifier::Idf));
        client
            .create_collection(CreateCollectionBuilder::new(COLLECTION).sparse_vectors_config(sparse))
            .await
            .unwrap();
        client
            .create_field_index(
                CreateFieldIndexCollectionBuilder::new(COLLECTION, "words", FieldType::Text)
                    .field_index_params(TextIndexParamsBuilder::new(TokenizerType::Word).lowercase(true))
                    .wait(true),
            )
            .await
            .unwrap();
        for (n, batch) in chunks.chunks(512).enumerate() {
            let points: Vec<PointStruct> = batch
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    let v = keywords::document(fields(c), &lengths);
                    let words = format!("{} {} {}", c.path, c.symbol, c.text);
                    let mut payload = Payload::new();
                    payload.insert("words", words);
                    PointStruct::new(
                        id(n * 512 + k),
                        NamedVectors::default().add_vector(SPARSE, Vector::new_sparse(v.indices, v.values)),
                        payload,
                    )
                })
                .collect();
            client
                .upsert_points(UpsertPointsBuilder::new(COLLECTION, points).wait(true))
                .await
                .unwrap();
        }
    });

    // Queries: five lines of code ending in a use of another file's name, and identifiers.
    let mut queries: Vec<String> = cross_file_queries(&files, 200, 0).into_iter().map(|q| q.code).collect();
    let mut symbols: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c.symbol.split([',', ' ']).find(|s| s.len() > 3))
        .collect();
    symbols.sort_unstable();
    symbols.dedup();
    queries.extend(symbols.iter().step_by((symbols.len() / 100).max(1)).map(|s| s.to_string()));
    assert!(queries.len() >= 250, "{} queries", queries.len());

    let (mut sparse, mut full_text) = (Agreement::default(), Agreement::default());
    runtime.block_on(async {
        for query in &queries {
            let tantivy = catalog.keyword_search(query, TOP).unwrap();
            if tantivy.is_empty() {
                continue;
            }
            let v = keywords::query(query);
            let hits = client
                .query(
                    QueryPointsBuilder::new(COLLECTION)
                        .query(VectorInput::new_sparse(v.indices, v.values))
                        .using(SPARSE)
                        .limit(TOP as u64),
                )
                .await
                .unwrap();
            let ids: Vec<u64> = hits.result.iter().filter_map(|p| num_id(p.id.as_ref())).collect();
            sparse.add(&tantivy, &ids);

            let filtered = client
                .scroll(
                    ScrollPointsBuilder::new(COLLECTION)
                        .filter(Filter::must([Condition::matches_text_any("words", query.as_str())]))
                        .limit(TOP as u32),
                )
                .await
                .unwrap();
            let ids: Vec<u64> = filtered.result.iter().filter_map(|p| num_id(p.id.as_ref())).collect();
            full_text.add(&tantivy, &ids);
        }
    });
    eprintln!(
        "networkx, {} chunks, {} queries: sparse BM25 first {:.3}, top-{TOP} overlap {:.3}; \
         full-text index first {:.3}, overlap {:.3}",
        chunks.len(),
        sparse.queries,
        sparse.first_rate(),
        sparse.overlap_rate(),
        full_text.first_rate(),
        full_text.overlap_rate(),
    );
    assert!(sparse.first_rate() >= 0.95, "{sparse:?}");
    assert!(sparse.overlap_rate() >= 0.97, "{sparse:?}");
    assert!(
        sparse.overlap_rate() > full_text.overlap_rate() + 0.3,
        "{sparse:?} vs {full_text:?}"
    );
}

fn num_id(id: Option<&qdrant_client::qdrant::PointId>) -> Option<u64> {
    match id?.point_id_options {
        Some(qdrant_client::qdrant::point_id::PointIdOptions::Num(n)) => Some(n),
        _ => None,
    }
}

fn fields(c: &Chunk) -> Fields<'_> {
    Fields {
        text: &c.text,
        path: &c.path,
        symbol: &c.symbol,
    }
}
