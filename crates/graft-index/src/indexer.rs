//! One indexing run: walk → then a slice of files at a time ([`SLICE_BYTES`] of text): diff
//! against the catalog → chunk the changed files → embed the chunks that have no vector yet →
//! store vectors → hand the records to the catalog's writer → then one commit of the catalog →
//! drop stale vectors. The walk only lists the files ([`crate::walk::list`]); each slice reads
//! its own. So a run holds one slice's text and chunks, never the repository's, whatever its
//! size (the catalog's writer holds no more: tantivy's flushes past its memory budget, a Qdrant
//! server's writes a batch of records at a time).
//!
//! The order is what makes a run safe to kill at any moment (`kill -9` included):
//! 1. new vectors are written first, under ids derived from the chunk's content, so they can
//!    sit in the store unseen: searches only show vectors whose chunk is in the committed
//!    catalog;
//! 2. the catalog commit switches the whole index from the previous state to the new one;
//! 3. vectors no committed chunk refers to are deleted last, and again by the next run if this
//!    one did not get there.
//!
//! A second run therefore re-chunks only files whose content changed, re-embeds only chunks
//! whose text (or path) changed, and finishes whatever an interrupted run left.
//!
//! A server re-indexing an index it has open walks and embeds first, reading the open index
//! while it still serves ([`embed_ahead`]), and hands the files it listed and the vectors to the
//! run ([`index_repository_with`]), which then reads, diffs and writes. What was not embedded
//! ahead (a first index: everything) it leaves for after the commit
//! ([`IndexOptions::embed_after_commit`]), and [`embed_missing`] embeds it with the index
//! serving: keyword search and definition lookup work from the commit on, and each vector
//! joins the searches as it is stored. Either way a run asked to stop
//! ([`IndexProgress::should_stop`]) stops between two steps, as safely as a kill.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{self, Catalog, CatalogWriter};
use crate::chunker::{chunk_and_define, language_of, Chunk, ChunkOptions};
use crate::embed::Embedder;
use crate::error::IndexError;
use crate::layout::{IndexLayout, Meta};
use crate::search::ProjectIndex;
use crate::symbols::Definition;
use crate::tokenizer;
use crate::vectors::{self, Backend, VectorStore};
use crate::walk::{list, Listed, Skip, SkipReason, SkippedPath, Walk, WalkOptions};

/// Chunks embedded and stored per step (bounds memory and makes progress visible).
const EMBED_STEP: usize = 256;

/// Texts per call of the embedding model within a step of a run: a stop (Ctrl-C, a server
/// shutting down) waits for one call at most.
const EMBED_CALL: usize = 32;

/// Text a run reads, chunks (and embeds, where it embeds before its commit) before it writes
/// those files' records and lets them go: a run holds about this much of the repository, not
/// all of it, whatever its size.
pub const SLICE_BYTES: usize = 4 * 1024 * 1024;

/// The most files in one slice (so that the progress of many small files moves too).
const SLICE_FILES: usize = 1024;

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub walk: WalkOptions,
    pub chunk: ChunkOptions,
    /// Threads for the keyword index writer.
    pub threads: usize,
    /// Where vectors are stored.
    pub backend: Backend,
    /// Commit the catalog before embedding the chunks that have no vector yet, and leave
    /// embedding them to the caller ([`embed_missing`], with the index open and serving):
    /// keyword search and definition lookup, which find the defining file as often as hybrid
    /// search does for code, work as soon as the catalog is written, minutes or hours before a
    /// large repository's vectors are done. Only the vectors computed ahead ([`embed_ahead`])
    /// are stored before the commit. Off (`graft index`): the commit switches to an index
    /// whose every chunk has its vector.
    pub embed_after_commit: bool,
    /// The text of the files read, chunked (and embedded) before they are written to the
    /// catalog's writer and let go ([`SLICE_BYTES`]; tests make it small). Every slice goes
    /// into the same commit.
    pub slice_bytes: usize,
    /// What this run throws away and builds anew instead of updating (`graft index --rebuild`,
    /// `--embed-again`); nothing by default.
    pub start_over: StartOver,
}

/// What a run is asked to build anew. The two are independent: a keyword index built anew
/// keeps the vectors of the chunks already embedded (a chunk's id is derived from its path and
/// text, so the same chunk finds its vector), and vectors thrown away are made again from the
/// keyword index's chunks (a run embeds every committed chunk that has no vector).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartOver {
    /// The catalog (files, chunks, keyword index, symbol table), read again from the repository.
    pub catalog: bool,
    /// The vectors: every chunk embedded again.
    pub vectors: bool,
}

impl StartOver {
    /// Why a run rebuilt, when it was asked to.
    fn because(self) -> Option<&'static str> {
        match (self.catalog, self.vectors) {
            (false, false) => None,
            (true, false) => Some("it was asked to build the keyword index anew (the vectors of chunks already embedded kept)"),
            (false, true) => Some("it was asked to embed every chunk again"),
            (true, true) => Some("it was asked to build the keyword index anew and embed every chunk again"),
        }
    }
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            walk: WalkOptions::default(),
            chunk: ChunkOptions::default(),
            threads: 0,
            backend: Backend::default(),
            embed_after_commit: false,
            slice_bytes: SLICE_BYTES,
            start_over: StartOver::default(),
        }
    }
}

/// Told about a run's progress (the CLI draws a bar).
pub trait IndexProgress: Sync {
    /// The walk found `files` files to look at.
    fn walked(&self, _files: usize) {}
    /// `files` of them (those kept) are read against the index: hashed, those added or
    /// changed chunked and, where the run embeds before its commit, embedded.
    fn reading(&self, _files: usize) {}
    /// `n` more of them were read (and embedded, where the run embeds before its commit).
    fn read(&self, _n: usize) {}
    /// `chunks` chunks need embedding.
    fn embedding(&self, _chunks: usize) {}
    /// `n` more chunks were embedded.
    fn embedded(&self, _n: usize) {}
    /// Whether the run should stop now (a server shutting down): asked between steps of its
    /// slow parts, and the run then ends with [`IndexError::Stopped`], leaving the index as a
    /// kill at that moment would.
    fn should_stop(&self) -> bool {
        false
    }
    /// Called on the run's thread before each batch of chunks goes to the embedding model (the
    /// slow part of a run): a server that generates on the same CPU waits here while it
    /// generates, for a while, so that its answers are not slowed by the run's embedding.
    fn make_way(&self) {}
}

/// Reports nothing.
pub struct Quiet;
impl IndexProgress for Quiet {}

/// A slice's progress told as files ([`IndexProgress::read`]): the chunks it embeds before
/// the commit move it on by the files whose chunks are all embedded.
struct SliceProgress<'a> {
    progress: &'a dyn IndexProgress,
    /// For each file of the slice, in order, how many of the slice's chunks to embed end
    /// with it.
    ends: Vec<usize>,
    embedded: AtomicUsize,
    /// The files told so far.
    told: AtomicUsize,
}

impl SliceProgress<'_> {
    fn tell(&self, files: usize) {
        let before = self.told.fetch_max(files, Ordering::Relaxed);
        if files > before {
            self.progress.read(files - before);
        }
    }

    /// Tells the slice's files not told yet.
    fn finish(self) {
        self.tell(self.ends.len());
    }
}

impl IndexProgress for SliceProgress<'_> {
    fn embedded(&self, n: usize) {
        let embedded = self.embedded.fetch_add(n, Ordering::Relaxed) + n;
        self.tell(self.ends.partition_point(|&end| end <= embedded));
    }

    fn should_stop(&self) -> bool {
        self.progress.should_stop()
    }

    fn make_way(&self) {
        self.progress.make_way()
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndexReport {
    /// Files the walk looked at (kept and skipped).
    pub files_seen: usize,
    /// Files in the index after the run.
    pub files_indexed: usize,
    pub files_added: usize,
    pub files_changed: usize,
    pub files_removed: usize,
    pub files_unchanged: usize,
    /// Skipped files by reason.
    pub skipped: BTreeMap<String, usize>,
    /// Each skipped file whose path is known, with its reason, by path (`graft index
    /// --skipped` prints them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_files: Vec<SkippedFile>,
    /// Chunks in the index after the run.
    pub chunks: usize,
    /// Chunks of added or changed files.
    pub chunks_written: usize,
    /// Definitions written to the symbol table (of the files chunked).
    pub symbols_written: usize,
    /// Files chunked in this run (added or changed), by language
    /// ([`crate::chunker::language_of`]): those graft has a grammar for
    /// ([`crate::chunker::has_grammar`]) are cut along their syntax and list their definitions,
    /// the rest are cut by lines.
    #[serde(default)]
    pub languages: BTreeMap<String, usize>,
    /// Chunks embedded in this run (the rest reused a stored vector).
    pub embeddings: usize,
    /// Of those, the chunks embedded ahead of the run while the index still served
    /// ([`embed_ahead`]).
    pub embedded_ahead: usize,
    /// Vectors deleted because no chunk refers to them any more.
    pub stale_vectors_removed: usize,
    /// Committed chunks left without a vector for the caller to embed
    /// ([`IndexOptions::embed_after_commit`]; none otherwise).
    #[serde(default)]
    pub vectors_pending: usize,
    /// Files that could not be read, one line each.
    pub problems: Vec<String>,
    #[serde(skip)]
    pub elapsed: Duration,
    /// Seconds spent in each phase.
    pub seconds: PhaseSeconds,
    /// True when the run rebuilt the index instead of updating it ...
    pub rebuilt: bool,
    /// ... and why: the embedding model changed (everything embedded again), the catalog was
    /// of an older layout, or it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuilt_because: Option<String>,
}

/// A file a run left out, and why ([`SkipReason::as_str`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SkippedFile {
    pub path: String,
    pub reason: String,
    /// What decided it, where there is more to say than the reason ([`Skip::detail`]: the
    /// attributes line, the folder, the generator's words, the share of long lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The folder that decided it, where a folder did: the vendored folder, the submodule
    /// ([`Skip::folder`]); every file under it is left out alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
}

impl From<&SkippedPath> for SkippedFile {
    fn from(skipped: &SkippedPath) -> SkippedFile {
        SkippedFile {
            path: skipped.path.clone(),
            reason: skipped.reason.as_str().to_owned(),
            detail: skipped.detail.clone(),
            folder: skipped.folder.clone(),
        }
    }
}

impl IndexReport {
    fn rebuilt(&mut self, because: &str) {
        self.rebuilt = true;
        self.rebuilt_because = Some(match self.rebuilt_because.take() {
            Some(before) => format!("{before}, and {because}"),
            None => because.to_owned(),
        });
    }
}

/// Where a run's time went, in seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseSeconds {
    /// Walking the tree: listing its files.
    pub walk: f64,
    /// Reading and hashing the files, and chunking the changed ones.
    pub chunk: f64,
    /// Running the embedding model.
    pub embed: f64,
    /// Writing, listing and deleting vectors.
    pub vectors: f64,
    /// Writing and committing the keyword index.
    pub catalog: f64,
    pub total: f64,
}

/// Indexed files and the content hash of each ([`Catalog::files`]).
type FileHashes = HashMap<String, String>;

/// Opens the project's catalog for a run, and reads which files it holds. An index folder's
/// catalog that cannot be read (a file cut short by a full disk or an interrupted copy) is
/// rebuilt from the repository, with a warning, its vectors kept: it is derived data, and
/// left as it is it would fail every run, and every search, until someone deleted it. A
/// catalog on a Qdrant server is not rebuilt: its errors are most often the server's or the
/// network's.
fn open_catalog(backend: &Backend, layout: &IndexLayout, report: &mut IndexReport) -> Result<(Box<dyn Catalog>, FileHashes), IndexError> {
    let open = || -> Result<_, IndexError> {
        let catalog = catalog::open(backend, layout)?;
        let files = catalog.files()?;
        Ok((catalog, files))
    };
    match open() {
        Err(IndexError::Catalog(why)) if matches!(backend, Backend::Embedded) => {
            tracing::warn!(
                catalog = %layout.catalog().display(),
                "the keyword index cannot be read ({why}): rebuilding it from the repository"
            );
            // Only while no other process has the index open (a graft serving it).
            let _lock = vectors::edge::lock(&layout.vectors())?;
            catalog::reset(backend, layout)?;
            report.rebuilt(&format!("its keyword index could not be read ({why})"));
            open()
        }
        opened => opened,
    }
}

/// Opens the project's vector store for a run, and reads which chunks it holds. An index
/// folder's store that cannot be read is emptied, with a warning, as [`open_catalog`] does:
/// the run embeds every chunk again.
fn open_store(
    backend: &Backend,
    layout: &IndexLayout,
    dims: usize,
    report: &mut IndexReport,
) -> Result<(Box<dyn VectorStore>, HashSet<u64>), IndexError> {
    let open = || -> Result<_, IndexError> {
        let store = vectors::open(backend, layout, &layout.project(), dims)?;
        let ids = store.ids()?;
        Ok((store, ids))
    };
    match open() {
        Err(IndexError::Vectors(why)) if matches!(backend, Backend::Embedded) => {
            tracing::warn!(
                vectors = %layout.vectors().display(),
                "the vector store cannot be read ({why}): embedding the index anew"
            );
            vectors::reset(backend, layout, &layout.project())?;
            report.rebuilt(&format!("its vectors could not be read ({why})"));
            open()
        }
        opened => opened,
    }
}

/// Throws away what the run was asked to build anew ([`StartOver`]). A run killed half-way
/// leaves an index the next one completes, as any run does: a catalog gone is read again from
/// the repository, vectors gone are embedded again from the catalog. In an index folder only
/// while no other process holds the index open (a graft serving it: the run goes through that
/// graft); on a Qdrant server not while another machine's run holds the catalog.
fn start_over(backend: &Backend, layout: &IndexLayout, what: StartOver, report: &mut IndexReport) -> Result<(), IndexError> {
    let Some(because) = what.because() else {
        return Ok(());
    };
    // In an index folder each reset below takes the vector store's lock first and fails
    // (InUse) before it deletes anything while another process holds it. On a Qdrant server,
    // a catalog that cannot be read is what a rebuild is for: only a claim stops it.
    if let Backend::Server(_) = backend {
        if let Ok(catalog) = catalog::open(backend, layout) {
            if let Err(e @ IndexError::Claimed { .. }) = Claim::take(catalog.as_ref()) {
                return Err(e);
            }
        }
    }
    tracing::info!(catalog = what.catalog, vectors = what.vectors, "building the index anew, as asked");
    if what.vectors {
        vectors::reset(backend, layout, &layout.project())?;
    }
    if what.catalog {
        let _lock = match backend {
            Backend::Embedded => Some(vectors::edge::lock(&layout.vectors())?),
            Backend::Server(_) => None,
        };
        catalog::reset(backend, layout)?;
    }
    report.rebuilt(because);
    Ok(())
}

/// Indexes `repo` into `layout`, incrementally.
pub fn index_repository(
    repo: &Path,
    layout: &IndexLayout,
    embedder: &Embedder,
    options: &IndexOptions,
    progress: &dyn IndexProgress,
) -> Result<IndexReport, IndexError> {
    index_repository_with(repo, layout, embedder, options, progress, Ahead::default())
}

/// [`index_repository`] with what [`embed_ahead`] did: the repository's files as it listed
/// them (not walked again; each is read again as its slice comes) and the vectors it
/// computed (stored, not embedded again).
pub fn index_repository_with(
    repo: &Path,
    layout: &IndexLayout,
    embedder: &Embedder,
    options: &IndexOptions,
    progress: &dyn IndexProgress,
    ahead: Ahead,
) -> Result<IndexReport, IndexError> {
    let Ahead {
        vectors: ahead,
        walked,
        seconds: ahead_seconds,
    } = ahead;
    let started = Instant::now();
    let repo = std::fs::canonicalize(repo).map_err(|_| IndexError::Walk(crate::walk::WalkError::Missing(repo.to_owned())))?;
    std::fs::create_dir_all(&layout.root).map_err(|e| IndexError::io(&layout.root, e))?;
    let lock_path = layout.lock();
    let lock = File::create(&lock_path).map_err(|e| IndexError::io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(IndexError::Busy),
        Err(std::fs::TryLockError::Error(e)) => return Err(IndexError::io(&lock_path, e)),
    }

    // A run on a disk about to fill would end in a crash (`space`), after a rebuild below might
    // have emptied what it cannot open for want of space: refuse it first.
    if matches!(options.backend, Backend::Embedded) {
        crate::space::ensure_free(&layout.root)?;
    }
    let meta = Meta {
        repository: repo.clone(),
        embedding_model: vectors_id(embedder),
        dims: embedder.dims(),
        format: catalog::format(&options.backend),
    };
    let mut report = IndexReport::default();
    start_over(&options.backend, layout, options.start_over, &mut report)?;
    let old_meta = catalog::read_meta(&options.backend, layout)?;
    let new_model = old_meta
        .as_ref()
        .is_some_and(|old| old.embedding_model != meta.embedding_model || old.dims != meta.dims);
    if new_model || old_meta.as_ref().is_some_and(|old| old.format != meta.format) {
        // Vectors of another model cannot be compared with this one's: start over. A catalog
        // of an older layout is rebuilt; its vectors (same chunk ids) are kept.
        // The vectors go first: until the catalog goes too, its meta says to rebuild.
        tracing::info!(new_model, "rebuilding the index");
        if new_model {
            vectors::reset(&options.backend, layout, &layout.project())?;
        }
        catalog::reset(&options.backend, layout)?;
        report.rebuilt(if new_model {
            "the embedding model changed"
        } else {
            "it was built by an older graft"
        });
    }

    let mut watch = Stopwatch(Instant::now());
    // Time spent ahead counts as the run's.
    let ahead_elapsed = Duration::from_secs_f64(ahead_seconds.total);
    let mut seconds = ahead_seconds;
    let walked = match walked {
        Some(walked) => walked,
        None => list(&repo, &options.walk)?,
    };
    seconds.walk += watch.lap();
    report.files_seen = walked.files.len() + walked.skipped_total();
    report.skipped = walked
        .skipped
        .iter()
        .map(|(r, n)| (SkipReason::as_str(*r).to_owned(), *n))
        .collect();
    report.skipped_files = walked.skipped_files.iter().map(SkippedFile::from).collect();
    report.problems = walked.problems.clone();
    progress.walked(report.files_seen);

    let (catalog, old_files) = open_catalog(&options.backend, layout, &mut report)?;
    let claim = Claim::take(catalog.as_ref())?;
    let (store, stored) = open_store(&options.backend, layout, embedder.dims(), &mut report)?;
    seconds.vectors += watch.lap();

    // 1. A slice of files at a time: each file hashed against the catalog's record of it, an
    //    added or changed one chunked; their chunks that have no vector yet embedded and
    //    stored (after the commit by the caller, where it asked, but for those embedded
    //    ahead); their records handed to the catalog's writer; then all of it let go.
    let reader = Reader::new(&old_files, options)?;
    let mut writer = None;
    let mut seen = HashSet::with_capacity(walked.files.len());
    progress.reading(walked.files.len());
    for slice in slices(&walked.files, options.slice_bytes) {
        if progress.should_stop() {
            // The vectors stored so far are kept for the next run.
            store.flush()?;
            return Err(IndexError::Stopped);
        }
        let mut changed = Changed::default();
        for file in reader.read(slice, &walked) {
            if let ReadFile::Unchanged { path } | ReadFile::Changed { path, .. } = &file {
                seen.insert(path.clone());
            }
            changed.take(file, &old_files, &mut report);
        }
        seconds.chunk += watch.lap();

        let mut to_embed: Vec<(u64, String)> = Vec::new();
        let mut ends = Vec::with_capacity(changed.chunk_counts.len());
        let mut chunks = changed.chunks.iter();
        for &n in &changed.chunk_counts {
            let wanted = |(id, _): &&(u64, Chunk)| !stored.contains(id) && (!options.embed_after_commit || ahead.contains_key(id));
            to_embed.extend(
                chunks
                    .by_ref()
                    .take(n)
                    .filter(wanted)
                    .map(|(id, c)| (*id, embedding_text(&c.path, &c.symbol, &c.text))),
            );
            ends.push(to_embed.len());
        }
        report.embedded_ahead += to_embed.iter().filter(|(id, _)| ahead.contains_key(id)).count();
        let slice_progress = SliceProgress {
            progress,
            ends,
            embedded: AtomicUsize::new(0),
            told: AtomicUsize::new(0),
        };
        report.embeddings += embed_and_store(&to_embed, embedder, store.as_ref(), &claim, &slice_progress, &mut seconds, &ahead)?;
        watch.lap(); // embed_and_store timed its own work

        if !changed.files.is_empty() {
            claim.renew()?;
            let writer = match &mut writer {
                Some(writer) => writer,
                None => writer.insert(catalog.writer(options.threads.max(1))?),
            };
            changed.write(writer.as_mut())?;
        }
        seconds.catalog += watch.lap();
        slice_progress.finish();
    }
    drop(reader);

    // 2. The files gone, and the catalog switches to the new state in one commit (the vectors
    //    stored durably first).
    let removed: Vec<&String> = old_files.keys().filter(|p| !seen.contains(p.as_str())).collect();
    report.files_removed = removed.len();
    report.files_indexed = report.files_unchanged + report.files_changed + report.files_added;
    store.flush()?;
    seconds.vectors += watch.lap();
    if !removed.is_empty() && writer.is_none() {
        writer = Some(catalog.writer(options.threads.max(1))?);
    }
    if let Some(mut writer) = writer {
        for path in removed {
            writer.remove_file(path)?;
        }
        claim.renew()?;
        writer.commit()?;
    }
    // The index is built from here on (what a killed run leaves, the next one finishes).
    catalog.write_meta(&meta)?;
    seconds.catalog += watch.lap();

    // 3. Vectors no committed chunk refers to go; committed chunks without a vector (a wiped
    //    or switched vector store) get one from the catalog's copy of their text.
    catalog.reload()?;
    let live = catalog.chunk_ids()?;
    let stored = store.ids()?;
    let stale: Vec<u64> = stored.difference(&live).copied().collect();
    store.delete(&stale)?;
    report.stale_vectors_removed = stale.len();
    let missing: Vec<u64> = live.difference(&stored).copied().collect();
    if options.embed_after_commit {
        report.vectors_pending = missing.len();
    } else if !missing.is_empty() {
        tracing::info!(chunks = missing.len(), "embedding indexed chunks that have no vector");
        let mut repair = Vec::with_capacity(missing.len());
        for ids in missing.chunks(EMBED_STEP) {
            repair.extend(embedding_texts(catalog.as_ref(), ids)?);
        }
        progress.embedding(repair.len());
        seconds.catalog += watch.lap();
        report.embeddings += embed_and_store(&repair, embedder, store.as_ref(), &claim, progress, &mut seconds, &ahead)?;
        watch.lap(); // embed_and_store timed its own work
    }
    store.flush()?;
    seconds.vectors += watch.lap();
    report.chunks = live.len();
    report.skipped_files.sort();

    report.elapsed = started.elapsed() + ahead_elapsed;
    seconds.total = report.elapsed.as_secs_f64();
    report.seconds = seconds;
    Ok(report)
}

/// This run's claim on the catalog (see [`Catalog::claim`]), renewed while it works and given
/// up when it ends, however it ends.
struct Claim<'a> {
    catalog: &'a dyn Catalog,
    holder: String,
}

impl<'a> Claim<'a> {
    fn take(catalog: &'a dyn Catalog) -> Result<Claim<'a>, IndexError> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map_or_else(|| "unknown host".to_owned(), |h| h.trim().to_owned());
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let holder = format!("a run on {host}, process {}, started {since:x}", std::process::id());
        catalog.claim(&holder)?;
        Ok(Claim { catalog, holder })
    }

    fn renew(&self) -> Result<(), IndexError> {
        self.catalog.claim(&self.holder)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.catalog.release(&self.holder) {
            tracing::warn!("could not give up the index's claim (it lapses by itself): {e}");
        }
    }
}

/// Seconds since the previous lap.
struct Stopwatch(Instant);

impl Stopwatch {
    fn lap(&mut self) -> f64 {
        let now = Instant::now();
        let seconds = (now - self.0).as_secs_f64();
        self.0 = now;
        seconds
    }
}

/// Reads a run's files against the catalog's record of them (path to content hash), a slice
/// at a time: each file hashed, and one added or changed chunked and its definitions listed.
/// Files are read on `options.threads` threads (at most the machine's cores; parsing is most
/// of a large first index's time before its commit), their results taken in the walk's order.
struct Reader<'a> {
    old_files: &'a HashMap<String, String>,
    options: &'a IndexOptions,
    pool: rayon::ThreadPool,
}

/// One file as [`Reader`] found it.
enum ReadFile {
    /// Left out once read (not text, minified, ...: [`Walk::read`]).
    Skipped { path: String, skip: Skip },
    /// As the catalog has it.
    Unchanged { path: String },
    /// Added or changed: its new content hash, chunks and definitions.
    Changed { path: String, hash: String, parsed: Parsed },
}

/// An added or changed file's chunks, with their ids, and its definitions, each with its path
/// and the chunk that holds it.
struct Parsed {
    chunks: Vec<(u64, Chunk)>,
    symbols: Vec<(String, Definition, u64)>,
}

impl<'a> Reader<'a> {
    fn new(old_files: &'a HashMap<String, String>, options: &'a IndexOptions) -> Result<Reader<'a>, IndexError> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads.clamp(1, cores))
            .thread_name(|i| format!("graft-chunk-{i}"))
            .build()
            .map_err(|e| IndexError::Invalid(format!("cannot start the chunking threads: {e}")))?;
        Ok(Reader { old_files, options, pool })
    }

    /// Reads `files` of `listing`; each file's text is let go once it is chunked.
    fn read(&self, files: &[Listed], listing: &Walk<Listed>) -> Vec<ReadFile> {
        let read = |listed: &Listed| {
            let file = match listing.read(listed, &self.options.walk) {
                Ok(file) => file,
                Err(skip) => {
                    return ReadFile::Skipped {
                        path: listed.path.clone(),
                        skip,
                    }
                }
            };
            let hash = file_hash(file.text.as_bytes());
            if self.old_files.get(&file.path) == Some(&hash) {
                return ReadFile::Unchanged { path: file.path };
            }
            let (chunks, definitions) = chunk_and_define(&file.path, &file.text, &self.options.chunk);
            let chunks = with_ids(chunks);
            let symbols = holding_chunks(&chunks, definitions);
            ReadFile::Changed {
                path: file.path,
                hash,
                parsed: Parsed { chunks, symbols },
            }
        };
        self.pool.install(|| files.par_iter().map(read).collect())
    }
}

/// A listing's files in slices of about `bytes` each (and at most [`SLICE_FILES`]), in its
/// order.
fn slices(files: &[Listed], bytes: usize) -> impl Iterator<Item = &[Listed]> {
    let mut rest = files;
    std::iter::from_fn(move || {
        let (mut n, mut size) = (0, 0);
        while n < rest.len() && n < SLICE_FILES && size < bytes.max(1) as u64 {
            size += rest[n].bytes;
            n += 1;
        }
        let (slice, after) = rest.split_at(n);
        rest = after;
        (!slice.is_empty()).then_some(slice)
    })
}

/// The files of one slice that were added or changed, with their chunks and definitions, as
/// the catalog's writer takes them.
#[derive(Default)]
struct Changed {
    /// Path and new content hash.
    files: Vec<(String, String)>,
    chunks: Vec<(u64, Chunk)>,
    symbols: Vec<(String, Definition, u64)>,
    /// How many of `chunks` each file of the slice gave, in order (none, unchanged).
    chunk_counts: Vec<usize>,
}

impl Changed {
    /// Takes `file` if it was added or changed, and counts it in `report` whatever it was.
    fn take(&mut self, file: ReadFile, old_files: &HashMap<String, String>, report: &mut IndexReport) {
        let (path, hash, Parsed { chunks, symbols }) = match file {
            ReadFile::Changed { path, hash, parsed } => (path, hash, parsed),
            ReadFile::Unchanged { .. } => {
                report.files_unchanged += 1;
                self.chunk_counts.push(0);
                return;
            }
            ReadFile::Skipped { path, skip } => {
                *report.skipped.entry(skip.reason.as_str().to_owned()).or_default() += 1;
                let (skipped, problem) = skip.of(path);
                report.skipped_files.push(SkippedFile::from(&skipped));
                report.problems.extend(problem);
                self.chunk_counts.push(0);
                return;
            }
        };
        if old_files.contains_key(&path) {
            report.files_changed += 1;
        } else {
            report.files_added += 1;
        }
        *report.languages.entry(language_of(&path).to_owned()).or_default() += 1;
        report.chunks_written += chunks.len();
        report.symbols_written += symbols.len();
        self.chunk_counts.push(chunks.len());
        self.chunks.extend(chunks);
        self.symbols.extend(symbols);
        self.files.push((path, hash));
    }

    /// Replaces each file's old records with its new ones.
    fn write(&self, writer: &mut dyn CatalogWriter) -> Result<(), IndexError> {
        for (path, hash) in &self.files {
            writer.remove_file(path)?;
            writer.add_file(path, hash)?;
        }
        for (id, chunk) in &self.chunks {
            writer.add_chunk(*id, chunk)?;
        }
        for (path, definition, chunk) in &self.symbols {
            writer.add_symbol(path, definition, *chunk)?;
        }
        Ok(())
    }
}

/// What [`embed_ahead`] did while the index still served, for the run to reuse: the vectors
/// it computed, by chunk id (stored instead of embedding those chunks again), and the
/// repository's files as it listed them (not walked again while the index is closed: a file
/// added since is the next run's; one changed since the run reads as it is then).
#[derive(Debug, Default)]
pub struct Ahead {
    vectors: HashMap<u64, Vec<f32>>,
    walked: Option<Walk<Listed>>,
    /// Where its time went (`total`: all of it), added to the run's.
    seconds: PhaseSeconds,
}

/// Chunks embedded per step ahead of a run: few, so that a search's query, which needs the
/// same embedding model, waits little.
const AHEAD_STEP: usize = 8;

/// The most chunks embedded ahead of one run (about 150 MB of vectors with a 384-dimension
/// model); a larger change's other chunks are embedded by the run itself.
const AHEAD_MAX: usize = 100_000;

/// Embeds the chunks a run of `repo` into `index` would embed (those of files added or changed
/// since its last commit that have no vector yet), reading `index` alone, so that searches go
/// on meanwhile; the run is then given them ([`index_repository_with`]) and holds the index
/// only to write. Nothing is embedded ahead for an index of another embedding model (the run
/// starts over).
pub fn embed_ahead(
    repo: &Path,
    index: &ProjectIndex,
    embedder: &Embedder,
    options: &IndexOptions,
    progress: &dyn IndexProgress,
) -> Result<Ahead, IndexError> {
    let meta = index.meta();
    if !index.vectors_made_by(embedder) || meta.dims != embedder.dims() || meta.format != catalog::format(&options.backend) {
        return Ok(Ahead::default());
    }
    let started = Instant::now();
    let mut watch = Stopwatch(started);
    let mut seconds = PhaseSeconds::default();
    let walked = list(repo, &options.walk)?;
    seconds.walk += watch.lap();
    let old_files = index.catalog().files()?;
    let stored = index.store().ids()?;
    let reader = Reader::new(&old_files, options)?;
    let mut wanted: Vec<(u64, String)> = Vec::new();
    for slice in slices(&walked.files, options.slice_bytes) {
        let chunks = reader.read(slice, &walked).into_iter().flat_map(|file| match file {
            ReadFile::Changed { parsed, .. } => parsed.chunks,
            ReadFile::Unchanged { .. } | ReadFile::Skipped { .. } => Vec::new(),
        });
        let new = chunks.filter(|(id, _)| !stored.contains(id));
        wanted.extend(new.map(|(id, c)| (id, embedding_text(&c.path, &c.symbol, &c.text))));
        if wanted.len() >= AHEAD_MAX {
            wanted.truncate(AHEAD_MAX);
            break;
        }
    }
    seconds.chunk += watch.lap();
    progress.embedding(wanted.len());
    let mut vectors = HashMap::with_capacity(wanted.len());
    for step in wanted.chunks(AHEAD_STEP) {
        if progress.should_stop() {
            return Err(IndexError::Stopped);
        }
        progress.make_way();
        let texts: Vec<String> = step.iter().map(|(_, t)| t.clone()).collect();
        vectors.extend(step.iter().map(|(id, _)| *id).zip(embedder.embed(&texts)?));
        progress.embedded(step.len());
    }
    seconds.embed += watch.lap();
    seconds.total = started.elapsed().as_secs_f64();
    Ok(Ahead {
        vectors,
        walked: Some(walked),
        seconds,
    })
}

/// Embeds the chunks of `index` that have no vector (those an index run with
/// [`IndexOptions::embed_after_commit`] left, or a killed run), with the index open and
/// serving: each step's vectors are searchable as soon as they are stored, and a search's
/// query waits at most one small step for the embedding model. Returns how many were
/// embedded. The caller makes sure no index run writes meanwhile.
pub fn embed_missing(index: &ProjectIndex, embedder: &Embedder, progress: &dyn IndexProgress) -> Result<usize, IndexError> {
    let (catalog, store) = (index.catalog(), index.store());
    let live = catalog.chunk_ids()?;
    let stored = store.ids()?;
    let missing: Vec<u64> = live.difference(&stored).copied().collect();
    progress.embedding(missing.len());
    let mut embedded = 0;
    for ids in missing.chunks(EMBED_STEP) {
        // Small steps of texts of about one length: little padding, and little waiting.
        let mut texts = embedding_texts(catalog, ids)?;
        texts.sort_by_key(|(_, text)| text.len());
        for step in texts.chunks(AHEAD_STEP) {
            if progress.should_stop() {
                store.flush()?;
                return Err(IndexError::Stopped);
            }
            progress.make_way();
            let batch: Vec<String> = step.iter().map(|(_, text)| text.clone()).collect();
            let points: Vec<(u64, Vec<f32>)> = step.iter().map(|(id, _)| *id).zip(embedder.embed(&batch)?).collect();
            store.upsert(&points)?;
            embedded += points.len();
            progress.embedded(points.len());
        }
        store.flush()?;
    }
    Ok(embedded)
}

/// What the embedding model reads of the committed chunks `ids` ([`embedding_text`]); ids the
/// catalog does not have are left out.
fn embedding_texts(catalog: &dyn Catalog, ids: &[u64]) -> Result<Vec<(u64, String)>, IndexError> {
    Ok(catalog
        .chunks(ids)?
        .into_values()
        .map(|chunk| (chunk.id, embedding_text(&chunk.path, &chunk.symbol, &chunk.text)))
        .collect())
}

/// Embeds `(id, text)` pairs in steps (those embedded ahead taken from `ahead`) and stores the
/// vectors; returns how many were stored. Each step's texts go to the model shortest first, a
/// few at a time ([`EMBED_CALL`]), and a stop is heard between two calls: what the step has
/// embedded by then is stored and flushed, for the next run. The caller flushes the store
/// otherwise.
fn embed_and_store(
    items: &[(u64, String)],
    embedder: &Embedder,
    store: &dyn vectors::VectorStore,
    claim: &Claim,
    progress: &dyn IndexProgress,
    seconds: &mut PhaseSeconds,
    ahead: &HashMap<u64, Vec<f32>>,
) -> Result<usize, IndexError> {
    for step in items.chunks(EMBED_STEP) {
        claim.renew()?;
        let (known, mut unknown): (Vec<_>, Vec<_>) = step.iter().partition(|(id, _)| ahead.contains_key(id));
        unknown.sort_by_key(|(_, text)| text.len());
        let mut points: Vec<(u64, Vec<f32>)> = known.iter().filter_map(|(id, _)| Some((*id, ahead.get(id)?.clone()))).collect();
        let mut stopped = false;
        for call in unknown.chunks(EMBED_CALL) {
            if progress.should_stop() {
                stopped = true;
                break;
            }
            progress.make_way();
            let texts: Vec<String> = call.iter().map(|(_, t)| t.clone()).collect();
            let started = Instant::now();
            let vectors = embedder.embed(&texts)?;
            seconds.embed += started.elapsed().as_secs_f64();
            points.extend(call.iter().map(|(id, _)| *id).zip(vectors));
            progress.embedded(call.len());
        }
        let started = Instant::now();
        store.upsert(&points)?;
        if stopped {
            // The vectors stored so far are kept for the next run.
            store.flush()?;
            return Err(IndexError::Stopped);
        }
        seconds.vectors += started.elapsed().as_secs_f64();
    }
    Ok(items.len())
}

/// What the embedding model sees of a chunk: where it is, what it defines, what it says, in
/// the words of [`embedding_words`].
pub fn embedding_text(path: &str, symbol: &str, text: &str) -> String {
    let text = if symbol.is_empty() {
        format!("{path}\n{text}")
    } else {
        format!("{path}\n{symbol}\n{text}")
    };
    embedding_words(&text)
}

/// Text as the embedding model reads it, a search's query's and a chunk's alike
/// ([`embedding_text`]): each identifier of several parts written as its words
/// (`parseHttpRequest` -> `parse Http Request`, `max_body_bytes` -> `max body bytes`;
/// [`tokenizer::spaced_identifiers`]). all-MiniLM-L6-v2 knows words, and cuts a name whose words are glued together into pieces
/// that are not (`tcpstream` -> `tc`, `##pst`, ...): `graft bench questions`, vector search
/// alone, MRR 0.326 -> 0.446 on pythonnet's C#, 0.359 -> 0.370 on networkx, 0.230 -> 0.227
/// on tokio.
pub fn embedding_words(text: &str) -> String {
    tokenizer::spaced_identifiers(text)
}

/// How an index's vectors are made, as its meta records it: the embedding model and its input
/// limit ([`Embedder::id`]) and the form of the text it reads ([`embedding_text`]). An index
/// whose vectors were made otherwise is embedded anew by its next run.
pub fn vectors_id(embedder: &Embedder) -> String {
    format!("{}:words", embedder.id())
}

/// Each definition of one file with its path and the id of the chunk that holds its first
/// line (or, where no chunk does, the first one that overlaps it); a definition no chunk
/// covers is left out.
fn holding_chunks(chunks: &[(u64, Chunk)], definitions: Vec<Definition>) -> Vec<(String, Definition, u64)> {
    definitions
        .into_iter()
        .filter_map(|d| {
            let holds = |c: &&(u64, Chunk)| (c.1.start_line..=c.1.end_line).contains(&d.start_line);
            let overlaps = |c: &&(u64, Chunk)| c.1.start_line <= d.end_line && d.start_line <= c.1.end_line;
            let (id, chunk) = chunks.iter().find(holds).or_else(|| chunks.iter().find(overlaps))?;
            Some((chunk.path.clone(), d, *id))
        })
        .collect()
}

/// A file's hash as the catalog keeps it (`Catalog::files`): hex SHA-256 of its text, which
/// tells a changed file from an unchanged one.
pub(crate) fn file_hash(text: &[u8]) -> String {
    hex::encode(Sha256::digest(text))
}

/// Gives each chunk an id derived from its path and content (and, for repeated identical
/// chunks in one file, which repetition it is), so unchanged chunks keep their id across runs.
fn with_ids(chunks: Vec<Chunk>) -> Vec<(u64, Chunk)> {
    let mut repeats: HashMap<(String, String), u32> = HashMap::new();
    chunks
        .into_iter()
        .map(|chunk| {
            let n = repeats.entry((chunk.path.clone(), chunk.hash.clone())).or_default();
            let mut h = Sha256::new();
            h.update(chunk.path.as_bytes());
            h.update([0]);
            h.update(chunk.hash.as_bytes());
            h.update(n.to_le_bytes());
            *n += 1;
            let digest = h.finalize();
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&digest[..8]);
            // Qdrant ids are u64; keep them below 2^63 so every store (and JSON) is happy.
            (u64::from_le_bytes(bytes) >> 1, chunk)
        })
        .collect()
}
