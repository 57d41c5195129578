//! The embedded catalog (the default): a tantivy index of every chunk (text, path, symbol, lines), of every indexed
//! file (path, content hash) and of every definition (the symbol table: name, kind, enclosing
//! type, path, lines, the chunk that holds it). It is the index's source of truth.
//!
//! - Keyword search (BM25) runs on it, with the code tokenizer and the path and symbol fields
//!   boosted, over the chunk records alone: its statistics count no file or symbol record
//!   ([`ChunkStatistics`]).
//! - It says which files are indexed at which content, so a run knows what changed.
//! - It holds the text of every chunk, so vector hits are turned into results here, and a
//!   vector whose chunk is not in the committed catalog is never shown.
//! - Its symbol records answer "where is `name` defined" exactly ([`Catalog::definitions`]);
//!   a file's records come and go with its chunks, in the same commit.
//!
//! A run's changes become visible in one tantivy commit: before it, searches see the previous
//! index whole; after it, the new one whole. What the index was built with is `meta.json`
//! beside it ([`IndexLayout::meta`]).

use std::collections::{HashMap, HashSet};

use tantivy::collector::TopDocs;
use tantivy::query::{Bm25StatisticsProvider, BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING};
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use super::{Catalog, CatalogWriter, StoredChunk, StoredSymbol, PATH_BOOST, SYMBOL_BOOST};
use crate::chunker::Chunk;
use crate::error::IndexError;
use crate::fusion::Ranked;
use crate::layout::{IndexLayout, Meta};
use crate::symbols::Definition;
use crate::tokenizer::{CodeTokenizer, CODE_TOKENIZER};
/// tantivy's writer memory budget (shared by its threads) ...
/// This catalog's layout version ([`super::format`]).
pub(crate) const FORMAT: u32 = 3;
const WRITER_MEMORY: usize = 64 * 1024 * 1024;
/// ... and at least this much for each of them (tantivy refuses under 15 MB a thread).
const WRITER_MEMORY_PER_THREAD: usize = 16 * 1024 * 1024;
/// The most threads a writer gets, whatever `index.threads` says.
const WRITER_THREADS: usize = 8;

const KIND_CHUNK: &str = "chunk";
const KIND_FILE: &str = "file";
const KIND_SYMBOL: &str = "symbol";

#[derive(Clone, Copy)]
struct Fields {
    kind: Field,
    id: Field,
    path: Field,
    path_exact: Field,
    symbol: Field,
    language: Field,
    start_line: Field,
    end_line: Field,
    file_hash: Field,
    text: Field,
    def_name: Field,
    def_kind: Field,
    def_scope: Field,
    def_chunk: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let code = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(CODE_TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let fields = Fields {
        kind: b.add_text_field("kind", STRING),
        id: b.add_u64_field("id", NumericOptions::default().set_indexed().set_stored().set_fast()),
        path: b.add_text_field("path", code.clone()),
        path_exact: b.add_text_field("path_exact", STRING | STORED),
        symbol: b.add_text_field("symbol", code.clone()),
        language: b.add_text_field("language", STRING | STORED),
        start_line: b.add_u64_field("start_line", STORED),
        end_line: b.add_u64_field("end_line", STORED),
        file_hash: b.add_text_field("file_hash", STRING | STORED),
        text: b.add_text_field("text", code),
        def_name: b.add_text_field("def_name", STRING | STORED),
        def_kind: b.add_text_field("def_kind", STRING | STORED),
        def_scope: b.add_text_field("def_scope", STRING | STORED),
        def_chunk: b.add_u64_field("def_chunk", STORED),
    };
    (b.build(), fields)
}

/// The catalog of one project's index, in its folder.
pub struct TantivyCatalog {
    layout: IndexLayout,
    index: Index,
    reader: IndexReader,
    fields: Fields,
}

impl TantivyCatalog {
    /// Opens the catalog in the index folder `layout`, creating an empty one if there is none.
    pub fn open(layout: &IndexLayout) -> Result<TantivyCatalog, IndexError> {
        let dir = layout.catalog();
        std::fs::create_dir_all(&dir).map_err(|e| IndexError::io(&dir, e))?;
        let (schema, fields) = schema();
        let directory = tantivy::directory::MmapDirectory::open(&dir).map_err(|e| IndexError::Catalog(e.to_string()))?;
        let index = Index::open_or_create(directory, schema).map_err(IndexError::catalog)?;
        index.tokenizers().register(CODE_TOKENIZER, CodeTokenizer);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(IndexError::catalog)?;
        Ok(TantivyCatalog {
            layout: layout.clone(),
            index,
            reader,
            fields,
        })
    }

    /// The documents holding any of `terms`, at most `limit`.
    fn documents_with_any(&self, terms: impl Iterator<Item = Term>, limit: usize) -> Result<Vec<TantivyDocument>, IndexError> {
        let query = BooleanQuery::new(
            terms
                .map(|term| {
                    let q: Box<dyn Query> = Box::new(TermQuery::new(term, IndexRecordOption::Basic));
                    (Occur::Should, q)
                })
                .collect(),
        );
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(limit).order_by_score())
            .map_err(IndexError::catalog)?;
        top.into_iter()
            .map(|(_, address)| searcher.doc(address).map_err(IndexError::catalog))
            .collect()
    }
}

impl Catalog for TantivyCatalog {
    fn reload(&self) -> Result<(), IndexError> {
        self.reader.reload().map_err(IndexError::catalog)
    }

    /// Indexed files and the content hash each was indexed at.
    fn files(&self) -> Result<HashMap<String, String>, IndexError> {
        let searcher = self.reader.searcher();
        let query = TermQuery::new(Term::from_field_text(self.fields.kind, KIND_FILE), IndexRecordOption::Basic);
        let addresses = searcher
            .search(&query, &tantivy::collector::DocSetCollector)
            .map_err(IndexError::catalog)?;
        let mut files = HashMap::with_capacity(addresses.len());
        for address in addresses {
            let doc: TantivyDocument = searcher.doc(address).map_err(IndexError::catalog)?;
            let path = text_of(&doc, self.fields.path_exact);
            let hash = text_of(&doc, self.fields.file_hash);
            files.insert(path, hash);
        }
        Ok(files)
    }

    /// The ids of every committed chunk.
    fn chunk_ids(&self) -> Result<HashSet<u64>, IndexError> {
        let searcher = self.reader.searcher();
        let mut ids = HashSet::new();
        for segment in searcher.segment_readers() {
            let column = segment.fast_fields().u64("id").map_err(IndexError::catalog)?;
            for doc in segment.doc_ids_alive() {
                // File documents have no id.
                if let Some(id) = column.first(doc) {
                    ids.insert(id);
                }
            }
        }
        Ok(ids)
    }

    /// The number of committed chunks.
    fn chunk_count(&self) -> Result<usize, IndexError> {
        Ok(self.chunk_ids()?.len())
    }

    /// BM25 search over chunk text, path and symbol, best first.
    fn keyword_search(&self, query: &str, limit: usize) -> Result<Vec<Ranked>, IndexError> {
        let terms = crate::tokenizer::query_terms(query);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let f = self.fields;
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for term in &terms {
            for (field, boost) in [(f.text, 1.0), (f.path, PATH_BOOST), (f.symbol, SYMBOL_BOOST)] {
                let q = TermQuery::new(Term::from_field_text(field, term), IndexRecordOption::WithFreqs);
                should.push((Occur::Should, Box::new(BoostQuery::new(Box::new(q), boost))));
            }
        }
        let chunk_kind = Term::from_field_text(f.kind, KIND_CHUNK);
        let searcher = self.reader.searcher();
        let statistics = ChunkStatistics {
            chunks: searcher.doc_freq(&chunk_kind).map_err(IndexError::catalog)?,
            searcher: &searcher,
        };
        if statistics.chunks == 0 {
            return Ok(Vec::new());
        }
        let only_chunks = TermQuery::new(chunk_kind, IndexRecordOption::Basic);
        let query = BooleanQuery::new(vec![
            (Occur::Must, Box::new(BooleanQuery::new(should)) as Box<dyn Query>),
            (Occur::Must, Box::new(only_chunks)),
        ]);
        let top = searcher
            .search_with_statistics_provider(&query, &TopDocs::with_limit(limit).order_by_score(), &statistics)
            .map_err(IndexError::catalog)?;
        let mut out = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address).map_err(IndexError::catalog)?;
            if let Some(id) = doc.get_first(f.id).and_then(|v| v.as_u64()) {
                out.push(Ranked { id, score });
            }
        }
        Ok(out)
    }

    /// The stored chunks with these ids (those that exist in the committed catalog).
    fn chunks(&self, ids: &[u64]) -> Result<HashMap<u64, StoredChunk>, IndexError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let f = self.fields;
        let terms = ids.iter().map(|&id| Term::from_field_u64(f.id, id));
        let docs = self.documents_with_any(terms, ids.len())?;
        let mut out = HashMap::with_capacity(docs.len());
        for doc in docs {
            let Some(id) = doc.get_first(f.id).and_then(|v| v.as_u64()) else {
                continue;
            };
            out.insert(
                id,
                StoredChunk {
                    id,
                    path: text_of(&doc, f.path_exact),
                    language: text_of(&doc, f.language),
                    start_line: number_of(&doc, f.start_line),
                    end_line: number_of(&doc, f.end_line),
                    symbol: text_of(&doc, f.symbol),
                    text: text_of(&doc, f.text),
                },
            );
        }
        Ok(out)
    }

    /// The definitions of these names (exact, case-sensitive), at most `limit`, in no
    /// particular order.
    fn definitions(&self, names: &[&str], limit: usize) -> Result<Vec<StoredSymbol>, IndexError> {
        if names.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let f = self.fields;
        let terms = names.iter().map(|name| Term::from_field_text(f.def_name, name));
        let docs = self.documents_with_any(terms, limit)?;
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            let Some(chunk) = doc.get_first(f.def_chunk).and_then(|v| v.as_u64()) else {
                continue;
            };
            out.push(StoredSymbol {
                name: text_of(&doc, f.def_name),
                kind: text_of(&doc, f.def_kind),
                scope: text_of(&doc, f.def_scope),
                path: text_of(&doc, f.path_exact),
                start_line: number_of(&doc, f.start_line),
                end_line: number_of(&doc, f.end_line),
                chunk,
            });
        }
        Ok(out)
    }

    fn meta(&self) -> Result<Option<Meta>, IndexError> {
        Ok(Meta::read(&self.layout))
    }

    fn write_meta(&self, meta: &Meta) -> Result<(), IndexError> {
        meta.write(&self.layout)
    }

    fn writer(&self, threads: usize) -> Result<Box<dyn CatalogWriter + '_>, IndexError> {
        let threads = threads.clamp(1, WRITER_THREADS);
        let writer = self
            .index
            .writer_with_num_threads(threads, WRITER_MEMORY.max(threads * WRITER_MEMORY_PER_THREAD))
            .map_err(|e| match e {
                tantivy::TantivyError::LockFailure(..) => IndexError::Busy,
                other => IndexError::catalog(other),
            })?;
        Ok(Box::new(TantivyWriter {
            writer,
            fields: self.fields,
        }))
    }
}

fn text_of(doc: &TantivyDocument, field: Field) -> String {
    doc.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_owned()
}

fn number_of(doc: &TantivyDocument, field: Field) -> usize {
    doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0) as usize
}

/// Pending changes to the catalog: one tantivy commit.
struct TantivyWriter {
    writer: IndexWriter,
    fields: Fields,
}

impl CatalogWriter for TantivyWriter {
    fn remove_file(&mut self, path: &str) -> Result<(), IndexError> {
        self.writer.delete_term(Term::from_field_text(self.fields.path_exact, path));
        Ok(())
    }

    fn add_file(&mut self, path: &str, file_hash: &str) -> Result<(), IndexError> {
        let f = self.fields;
        self.writer
            .add_document(doc!(f.kind => KIND_FILE, f.path_exact => path, f.file_hash => file_hash))
            .map_err(IndexError::catalog)?;
        Ok(())
    }

    fn add_chunk(&mut self, id: u64, chunk: &Chunk) -> Result<(), IndexError> {
        let f = self.fields;
        self.writer
            .add_document(doc!(
                f.kind => KIND_CHUNK,
                f.id => id,
                f.path => chunk.path.as_str(),
                f.path_exact => chunk.path.as_str(),
                f.symbol => chunk.symbol.as_str(),
                f.language => chunk.language,
                f.start_line => chunk.start_line as u64,
                f.end_line => chunk.end_line as u64,
                f.text => chunk.text.as_str(),
            ))
            .map_err(IndexError::catalog)?;
        Ok(())
    }

    fn add_symbol(&mut self, path: &str, definition: &Definition, chunk: u64) -> Result<(), IndexError> {
        let f = self.fields;
        self.writer
            .add_document(doc!(
                f.kind => KIND_SYMBOL,
                f.path_exact => path,
                f.def_name => definition.name.as_str(),
                f.def_kind => definition.kind,
                f.def_scope => definition.scope.as_deref().unwrap_or_default(),
                f.def_chunk => chunk,
                f.start_line => definition.start_line as u64,
                f.end_line => definition.end_line as u64,
            ))
            .map_err(IndexError::catalog)?;
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<(), IndexError> {
        self.writer.commit().map_err(IndexError::catalog)?;
        self.writer.wait_merging_threads().map_err(IndexError::catalog)
    }
}

/// BM25's statistics over the catalog's chunk records alone. The searched fields (text, path,
/// symbol) are only in chunk records, so their token totals and term counts are already the
/// chunks'; but tantivy counts every record as a document, file and symbol records too, which
/// raised every term's IDF and shortened the average field length BM25 compares each chunk's
/// with (ranking other than a catalog of chunks alone, and Qdrant's, would). Records deleted
/// and not yet merged away are counted in all three, as tantivy does.
struct ChunkStatistics<'a> {
    searcher: &'a Searcher,
    chunks: u64,
}

impl Bm25StatisticsProvider for ChunkStatistics<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        self.searcher.total_num_tokens(field)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.chunks)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        self.searcher.doc_freq(term)
    }
}
