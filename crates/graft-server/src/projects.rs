//! Projects the server knows: each one's configuration and its index, opened on first use,
//! searched on a blocking thread, and re-indexed on request.
//!
//! A re-index first embeds the code the change brings while the index still serves
//! (`graft_index::embed_ahead`), then closes the index for the indexer to write (the indexer
//! owns its files; a fraction of a second for a few hundred changed chunks); requests for the
//! project are served without retrieved code while it writes rather than made to wait. The
//! same holds while another process (a `graft index` run) has the index open. What was not
//! embedded ahead (a first index: all of it) is embedded after the write, with the index
//! serving: keyword search and definition lookup work from the commit on, and each chunk's
//! vector joins the searches as it is stored (`graft_index::embed_missing`). A server shutting
//! down stops its runs between two steps ([`Projects::stop_indexing`]).
//!
//! Projects are added and removed, and a project's serving settings (its adapter, retrieval,
//! `top_k`...) replaced, while the server serves (a reload of the config file): a project is
//! swapped whole ([`Projects::replace_settings`] keeps its index), so a request reads one
//! project's settings throughout.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use graft_core::ProjectConfig;
use graft_index::{
    embed_ahead, embed_missing, index_repository_with, Ahead, Embedder, IndexError, IndexLayout, IndexOptions, IndexProgress, IndexReport,
    Names, ProjectIndex, Query, SearchHit, SearchMode, SearchOptions, StartOver,
};

use crate::limits::Running;
use crate::sticky::{Scope, Spot, Sticky};

/// How long a re-index waits for searches in flight to let go of the index.
const SEARCHES_FINISH: std::time::Duration = std::time::Duration::from_secs(10);

/// One project.
pub struct Project {
    pub config: ProjectConfig,
    /// Its index, shared with the projects that name it as their `index`.
    index: Arc<IndexSlot>,
}

/// One index on disk and its state in this process: opened once however many projects
/// search it.
struct IndexSlot {
    /// The project that owns the index (its name names the index's collection).
    owner: String,
    layout: IndexLayout,
    options: IndexOptions,
    /// The open index; `None` until first used, and while re-indexing.
    open: Mutex<Option<Arc<ProjectIndex>>>,
    /// Held for a whole re-index.
    reindexing: Arc<tokio::sync::Mutex<()>>,
    /// Set (under `open`'s lock) while the indexer writes: the index is closed, and searches
    /// get nothing. A re-index first embeds what changed with the index still serving.
    writing: AtomicBool,
    /// The last completion searches' hits by file and line, reused while the user types.
    sticky: Sticky,
    /// The index runs this process made, how the last one ended, and what the one running
    /// has left to embed.
    runs: Mutex<IndexRuns>,
}

/// The index runs of one index in this process (`GET /v1/projects/{name}`, `/metrics`).
#[derive(Debug, Clone, Default)]
pub struct IndexRuns {
    pub succeeded: u64,
    pub failed: u64,
    /// When the last run that succeeded ended, in seconds since the Unix epoch.
    pub last_success: Option<f64>,
    pub last: Option<LastRun>,
    /// Chunks the run now going committed whose vectors it is still embedding, the index
    /// serving (none between runs).
    pub vectors_pending: usize,
}

/// How an index run ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastRun {
    /// When, in seconds since the Unix epoch.
    pub finished_at: f64,
    pub seconds: f64,
    /// What it changed; none when it failed.
    pub files_added: Option<usize>,
    pub files_changed: Option<usize>,
    pub files_removed: Option<usize>,
    pub embedded: Option<usize>,
    /// Why it failed.
    pub error: Option<String>,
}

impl IndexRuns {
    fn record(&mut self, started: std::time::Instant, result: Result<&IndexReport, &ReindexError>) {
        let now = crate::state::unix_seconds();
        let report = result.ok();
        match result {
            Ok(_) => {
                self.succeeded += 1;
                self.last_success = Some(now);
            }
            Err(_) => self.failed += 1,
        }
        self.last = Some(LastRun {
            finished_at: now,
            seconds: started.elapsed().as_secs_f64(),
            files_added: report.map(|r| r.files_added),
            files_changed: report.map(|r| r.files_changed),
            files_removed: report.map(|r| r.files_removed),
            embedded: report.map(|r| r.embeddings),
            error: result.err().map(ToString::to_string),
        });
    }
}

impl IndexSlot {
    /// Its runs' record.
    fn runs(&self) -> std::sync::MutexGuard<'_, IndexRuns> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a re-index holds the index now (searches then get nothing).
    fn is_reindexing(&self) -> bool {
        self.reindexing.try_lock().is_err()
    }
}

impl Project {
    /// A project with an index of its own.
    pub fn new(config: ProjectConfig, layout: IndexLayout, options: IndexOptions) -> Project {
        let index = Arc::new(IndexSlot {
            owner: config.name.clone(),
            layout,
            options,
            open: Mutex::new(None),
            reindexing: Arc::new(tokio::sync::Mutex::new(())),
            writing: AtomicBool::new(false),
            sticky: Sticky::default(),
            runs: Mutex::new(IndexRuns::default()),
        });
        Project { config, index }
    }

    /// A project that searches `owner`'s index (the same repository served another way, for
    /// example on an adapter).
    pub fn sharing(config: ProjectConfig, owner: &Project) -> Project {
        Project {
            config,
            index: Arc::clone(&owner.index),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The project whose index this one searches (itself unless it shares another's).
    pub fn index_owner(&self) -> &str {
        &self.index.owner
    }

    /// Whether an index has been committed for this project (it may be out of date): in its
    /// folder, or on the Qdrant server (false when the server cannot be asked).
    pub fn has_index(&self) -> bool {
        let slot = &self.index;
        graft_index::catalog::read_meta(&slot.options.backend, &slot.layout).is_ok_and(|meta| meta.is_some())
    }

    /// The open index, opening it if needed; `None` while a re-index writes it, or builds the
    /// first one.
    fn index(&self) -> Result<Option<Arc<ProjectIndex>>, IndexError> {
        let slot = &self.index;
        let mut open = slot.open.lock().unwrap_or_else(|p| p.into_inner());
        if slot.writing.load(Ordering::Acquire) {
            return Ok(None);
        }
        if open.is_none() {
            match ProjectIndex::open_with(&slot.owner, &slot.layout, &slot.options.backend) {
                Ok(index) => *open = Some(Arc::new(index)),
                Err(IndexError::NoIndex { .. }) if slot.is_reindexing() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(open.clone())
    }
}

/// `project`'s open index, if it can be searched now: `None` while it is re-indexing here, or
/// held by another process, of an older layout or unreadable (`graft up` rebuilds it in the
/// background), said in the log.
fn searchable(project: &Project) -> Result<Option<Arc<ProjectIndex>>, IndexError> {
    match project.index() {
        Ok(Some(index)) => Ok(Some(index)),
        Ok(None) => {
            tracing::info!(project = project.name(), "re-indexing: searched without its index");
            Ok(None)
        }
        Err(
            e @ (IndexError::InUse { .. }
            | IndexError::Busy
            | IndexError::Claimed { .. }
            | IndexError::Outdated { .. }
            | IndexError::Unreadable { .. }),
        ) => {
            tracing::warn!(project = project.name(), error = %e, "index not usable now: searched without it");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A re-index's progress as log lines: the files found, every tenth of them read before the
/// last (a large repository's), then every tenth of the embedding; and whether the server is
/// shutting down.
struct LogProgress {
    slot: Arc<IndexSlot>,
    /// [`Projects::stop_indexing`]'s flag.
    stop: Arc<AtomicBool>,
    /// The generations the run gives way to ([`Projects::give_way_to`]).
    give_way: Option<Running>,
    files: AtomicUsize,
    files_read: AtomicUsize,
    total: AtomicUsize,
    done: AtomicUsize,
    /// Milliseconds the run has waited for generations ([`IndexProgress::make_way`]).
    gave_way_ms: AtomicU64,
}

/// How many tenths of `total` `done` is.
fn tenths(done: usize, total: usize) -> usize {
    (done * 10).checked_div(total).unwrap_or(0)
}

/// The longest an index run waits before a batch of chunks for the generations running to
/// end: under a steady load it still embeds (a batch of 8 chunks, about a quarter of a second
/// on 2 cores, every 2 s), and the generations are slowed only while a batch runs.
const GIVE_WAY_MAX: Duration = Duration::from_secs(2);

impl LogProgress {
    fn new(slot: &Arc<IndexSlot>, projects: &Projects) -> LogProgress {
        LogProgress {
            slot: Arc::clone(slot),
            stop: Arc::clone(&projects.stopping),
            give_way: projects.give_way.get().cloned(),
            files: AtomicUsize::new(0),
            files_read: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            gave_way_ms: AtomicU64::new(0),
        }
    }
}

impl IndexProgress for LogProgress {
    fn walked(&self, files: usize) {
        tracing::info!(project = %self.slot.owner, files, "indexing: repository walked");
    }

    fn reading(&self, files: usize) {
        self.files.store(files, Ordering::Relaxed);
    }

    fn read(&self, n: usize) {
        let files = self.files.load(Ordering::Relaxed);
        let before = self.files_read.fetch_add(n, Ordering::Relaxed);
        if before + n < files && tenths(before + n, files) > tenths(before, files) {
            tracing::info!(project = %self.slot.owner, read = before + n, of = files, "indexing: reading files");
        }
    }

    fn embedding(&self, chunks: usize) {
        self.total.store(chunks, Ordering::Relaxed);
        if chunks > 0 {
            tracing::info!(project = %self.slot.owner, chunks, "indexing: embedding new and changed chunks");
        }
    }

    fn embedded(&self, n: usize) {
        let total = self.total.load(Ordering::Relaxed);
        let before = self.done.fetch_add(n, Ordering::Relaxed);
        if tenths(before + n, total) > tenths(before, total) {
            let waited_for_generations_s = self.gave_way_ms.load(Ordering::Relaxed) / 1000;
            tracing::info!(project = %self.slot.owner, embedded = before + n, of = total, waited_for_generations_s, "indexing: embedding");
        }
        // Counts down what a run embeds after its commit (none pending otherwise).
        let mut runs = self.slot.runs();
        runs.vectors_pending = runs.vectors_pending.saturating_sub(n);
    }

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn make_way(&self) {
        if let Some(running) = &self.give_way {
            let waited = running.wait_for_none(GIVE_WAY_MAX, || self.should_stop());
            self.gave_way_ms.fetch_add(waited.as_millis() as u64, Ordering::Relaxed);
        }
    }
}

/// The mark of an index being written, lifted when dropped, however the run ended.
struct Writing(Arc<IndexSlot>);

impl Drop for Writing {
    fn drop(&mut self) {
        let _open = self.0.open.lock().unwrap_or_else(|p| p.into_inner());
        self.0.writing.store(false, Ordering::Release);
    }
}

/// An index run's embedding with its index serving, counted while it lasts (the count goes down
/// when this is dropped, however the work ended).
struct EmbeddingNow(Arc<AtomicUsize>);

impl EmbeddingNow {
    fn start(count: &Arc<AtomicUsize>) -> EmbeddingNow {
        count.fetch_add(1, Ordering::Relaxed);
        EmbeddingNow(Arc::clone(count))
    }
}

impl Drop for EmbeddingNow {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A project marked as re-indexing ([`Projects::start_reindex`]).
pub struct ReindexGuard {
    _held: tokio::sync::OwnedMutexGuard<()>,
}

/// Why a re-index did not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReindexError {
    #[error("a re-index of this project is already running")]
    Running,
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// What a retrieval searches for, owned: it is searched on a blocking thread.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Matched by keyword and by meaning.
    pub text: String,
    /// Which names are looked up as definitions.
    pub look_up: LookUp,
    /// The file being edited, as the client named it: none of its chunks is returned.
    pub current_path: Option<String>,
}

/// The names a [`Search`] looks up in the symbol table.
#[derive(Debug, Clone, Default)]
pub enum LookUp {
    /// None (the search endpoint).
    #[default]
    Nothing,
    /// Those the current file uses around the cursor (a completion): the file before and
    /// after it. Their definitions come first.
    Cursor { before: String, after: String },
    /// The words of `text` written like code (a chat question).
    Question,
}

impl Search {
    /// Text alone (the search endpoint).
    pub fn text(text: impl Into<String>) -> Search {
        Search {
            text: text.into(),
            ..Search::default()
        }
    }

    /// The index's query for this search.
    pub fn as_query(&self) -> Query<'_> {
        let names = match &self.look_up {
            LookUp::Nothing => None,
            LookUp::Cursor { before, after } => Some(Names::Code { before, after }),
            LookUp::Question => Some(Names::Question(&self.text)),
        };
        Query {
            text: &self.text,
            names,
            current_path: self.current_path.as_deref(),
        }
    }
}

/// Every project, and the embedding model their indexes were built with.
pub struct Projects {
    /// By name; a project is replaced whole when its settings change.
    projects: RwLock<BTreeMap<String, Arc<Project>>>,
    /// The embedding model and its public name (`/v1/embeddings`, `/v1/models`): from the
    /// start, or set once when a first project is added to a server that had none.
    embedding: OnceLock<(String, Arc<Embedder>)>,
    /// Per-file cap and fusion weight from `[index]`.
    search: SearchOptions,
    /// Set when the server shuts down: index runs stop at their next step.
    stopping: Arc<AtomicBool>,
    /// Index runs embedding now, with their indexes serving ([`EmbeddingNow`]).
    embedding_now: Arc<AtomicUsize>,
    /// The generations index runs give way to, when the model runs on the same CPU.
    give_way: OnceLock<Running>,
    /// The projects other projects also search whose index could not be opened (never built,
    /// say), each said once in the log rather than on every request.
    left_out: Mutex<HashSet<String>>,
}

impl Projects {
    /// No projects and no embedding model.
    pub fn none() -> Projects {
        Projects::new(Vec::new(), None, SearchOptions::default())
    }

    pub fn new(projects: Vec<Project>, embedder: Option<(String, Arc<Embedder>)>, search: SearchOptions) -> Projects {
        Projects {
            projects: RwLock::new(projects.into_iter().map(|p| (p.config.name.clone(), Arc::new(p))).collect()),
            embedding: embedder.map(OnceLock::from).unwrap_or_default(),
            search,
            stopping: Arc::default(),
            embedding_now: Arc::default(),
            give_way: OnceLock::new(),
            left_out: Mutex::default(),
        }
    }

    /// Has index runs embed between the generations `running` counts, not during them (for a
    /// while: [`GIVE_WAY_MAX`]), where both share the CPU: on 2 cores, a completion took three
    /// times as long while a first index embedded. Set once.
    pub fn give_way_to(&self, running: Running) {
        let _ = self.give_way.set(running);
    }

    /// Stops every index run at its next step (the server is shutting down), leaving each
    /// index as a kill there would (searchable; the next run finishes it), and refuses new
    /// ones, so that the process ends in a moment rather than when a long first index is done.
    pub fn stop_indexing(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Project>>> {
        self.projects.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The project `name`, with its settings now.
    pub fn get(&self, name: &str) -> Option<Arc<Project>> {
        self.map().get(name).cloned()
    }

    /// Every project, by name.
    pub fn all(&self) -> Vec<Arc<Project>> {
        self.map().values().cloned().collect()
    }

    /// The projects on the repository `url` names (`remote_urls`, compared as
    /// `graft_core::remote::normalize` writes them), by name.
    pub fn on_remote(&self, url: &str) -> Vec<Arc<Project>> {
        let wanted = graft_core::remote::normalize(url);
        let mut on = self.all();
        on.retain(|p| !wanted.is_empty() && p.config.remote_urls.iter().any(|r| graft_core::remote::normalize(r) == wanted));
        on
    }

    /// Serves `project` from now on (a project added to the config); the project as served.
    /// One of the same name is replaced.
    pub fn add(&self, project: Project) -> Arc<Project> {
        let project = Arc::new(project);
        let mut projects = self.projects.write().unwrap_or_else(|p| p.into_inner());
        projects.insert(project.config.name.clone(), Arc::clone(&project));
        project
    }

    /// Stops serving the project `name` (its index stays on disk; requests already running
    /// finish); the project as it was, if there was one.
    pub fn remove(&self, name: &str) -> Option<Arc<Project>> {
        self.projects.write().unwrap_or_else(|p| p.into_inner()).remove(name)
    }

    /// Serves the project `config` names with `config` from now on, keeping the index it
    /// searches (requests already running finish with the settings they began with; a
    /// repository moved is indexed into it by the next run); the project as it now is. `None`
    /// when no project has that name. A project that is to search another index is added
    /// anew ([`Projects::add`]).
    pub fn replace_settings(&self, config: ProjectConfig) -> Option<Arc<Project>> {
        let mut projects = self.projects.write().unwrap_or_else(|p| p.into_inner());
        let serving = projects.get_mut(&config.name)?;
        *serving = Arc::new(Project {
            config,
            index: Arc::clone(&serving.index),
        });
        Some(Arc::clone(serving))
    }

    pub fn embedder(&self) -> Option<&Arc<Embedder>> {
        self.embedding.get().map(|(_, embedder)| embedder)
    }

    pub fn embedding_name(&self) -> Option<&str> {
        self.embedding.get().map(|(name, _)| name.as_str())
    }

    /// The embedding model, for a server that started with none (its first project added
    /// while it serves); false, and nothing changed, when it has one.
    pub fn set_embedder(&self, name: String, embedder: Arc<Embedder>) -> bool {
        self.embedding.set((name, embedder)).is_ok()
    }

    /// Searches `project` for `query` on a blocking thread, with the indexes of the projects it
    /// also searches (`also_search`; one that cannot be searched now is left out, and the
    /// search fails over to the project's own index alone). `None` while it is re-indexing
    /// here or its index is open in another process.
    pub async fn search(
        &self,
        project: &Arc<Project>,
        query: Search,
        k: usize,
        mode: SearchMode,
    ) -> Result<Option<Vec<SearchHit>>, IndexError> {
        let Some(index) = searchable(project)? else {
            return Ok(None);
        };
        let mut others = Vec::new();
        for name in &project.config.also_search {
            match self.get(name) {
                Some(other) if other.index_owner() != project.index_owner() => match searchable(&other) {
                    Ok(Some(index)) => {
                        others.push((name.clone(), index));
                        self.left_out.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if self.left_out.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone()) {
                            tracing::warn!(project = name, error = %e, "index not usable: left out of the searches of the projects that also search it until it is");
                        }
                    }
                },
                Some(_) => {}
                None => tracing::warn!(
                    project = project.name(),
                    also_search = name,
                    "no such project now: left out of the search"
                ),
            }
        }
        let embedder = match mode {
            SearchMode::Keyword => None,
            _ => Some(
                self.embedder()
                    .cloned()
                    .ok_or_else(|| IndexError::Invalid("no embedding model is loaded".into()))?,
            ),
        };
        let mut options = SearchOptions { k, mode, ..self.search };
        // While an index run embeds code (a change ahead of its write, or a first index's
        // vectors after its commit), a completion's search leaves the vectors out: keyword
        // search and definition lookup find code's definitions as well, and the query's
        // embedding would wait its turn at the model (one for every project) behind the run's.
        if matches!(query.look_up, LookUp::Cursor { .. }) && self.embedding_now.load(Ordering::Relaxed) > 0 {
            options.vector_weight = 0.0;
        }
        let name = project.name().to_owned();
        tokio::task::spawn_blocking(move || {
            let query = query.as_query();
            let embedder = embedder.as_deref();
            if !others.is_empty() {
                let across: Vec<(&str, &ProjectIndex)> = others.iter().map(|(name, index)| (name.as_str(), index.as_ref())).collect();
                match index.search_across(&across, &query, embedder, &options) {
                    Ok(hits) => return Ok(hits),
                    Err(e) => {
                        tracing::warn!(project = name, error = %e, "searching the other projects' indexes failed: the project's own alone")
                    }
                }
            }
            index.search_for(&query, embedder, &options)
        })
        .await
        .map_err(|e| IndexError::Invalid(format!("the search task failed: {e}")))?
        .map(Some)
    }

    /// [`Projects::search`] (hybrid) for a completion at `spot`: the hits of the last search
    /// near it in the same file are reused while they are fresh ([`crate::sticky`]), so the
    /// prompt keeps its start while the user types. Never while re-indexing.
    pub async fn search_at(
        &self,
        project: &Arc<Project>,
        spot: Spot,
        query: Search,
        k: usize,
    ) -> Result<Option<Vec<SearchHit>>, IndexError> {
        let slot = &project.index;
        // The projects sharing an index may search different others with it.
        let across = project
            .config
            .also_search
            .iter()
            .filter_map(|name| self.get(name))
            .map(|p| p.index_owner().to_owned());
        let scope = Scope {
            top_k: k,
            across: across.collect(),
        };
        if !slot.writing.load(Ordering::Acquire) {
            if let Some(hits) = slot.sticky.near(spot, &scope) {
                return Ok(Some(hits));
            }
        }
        let hits = self.search(project, query, k, SearchMode::Hybrid).await?;
        if let Some(hits) = &hits {
            slot.sticky.keep(spot, scope, hits.clone());
        }
        Ok(hits)
    }

    /// A stamp of `project`'s repository as its index walks it ([`graft_index::walk::stamp`],
    /// read on a blocking thread): it changes when a file the index reads is added, removed or
    /// written. Every project's index folder is left out, should one lie in the repository.
    pub async fn stamp(&self, project: &Arc<Project>) -> Result<u64, IndexError> {
        let repo = project.config.path.clone();
        let walk = project.index.options.walk.clone();
        let indexes: Vec<std::path::PathBuf> = self.all().iter().map(|p| p.index.layout.root.clone()).collect();
        tokio::task::spawn_blocking(move || graft_index::walk::stamp(&repo, &walk, &indexes))
            .await
            .map_err(|e| IndexError::Invalid(format!("the stamp task failed: {e}")))?
            .map_err(IndexError::from)
    }

    /// Re-indexes `project` from its repository (incremental). One run at a time per project;
    /// a second request while one runs fails at once.
    pub async fn reindex(&self, project: &Arc<Project>) -> Result<IndexReport, ReindexError> {
        self.reindex_anew(project, StartOver::default()).await
    }

    /// [`Projects::reindex`], building anew what `start_over` asks (`graft index --rebuild`,
    /// `--embed-again`).
    pub async fn reindex_anew(&self, project: &Arc<Project>, start_over: StartOver) -> Result<IndexReport, ReindexError> {
        let guard = self.start_reindex(project).ok_or(ReindexError::Running)?;
        self.recorded_run(project, guard, start_over).await
    }

    /// Marks `project` as re-indexing (its requests get no retrieved code from now on) and
    /// returns the mark for [`Projects::reindex_with`]; `None` if a re-index is running.
    pub fn start_reindex(&self, project: &Arc<Project>) -> Option<ReindexGuard> {
        Arc::clone(&project.index.reindexing)
            .try_lock_owned()
            .ok()
            .map(|held| ReindexGuard { _held: held })
    }

    /// Re-indexes `project`, marked by [`Projects::start_reindex`]; the mark goes when done.
    /// The outcome is kept for [`Projects::status`] and [`Projects::index_runs`].
    pub async fn reindex_with(&self, project: &Arc<Project>, guard: ReindexGuard) -> Result<IndexReport, ReindexError> {
        self.recorded_run(project, guard, StartOver::default()).await
    }

    async fn recorded_run(&self, project: &Arc<Project>, guard: ReindexGuard, start_over: StartOver) -> Result<IndexReport, ReindexError> {
        let started = std::time::Instant::now();
        let result = self.run_index(project, guard, start_over).await;
        let mut runs = project.index.runs();
        runs.record(started, result.as_ref());
        result
    }

    /// The index runs of each index in this process, by the name of the project that owns it.
    pub fn index_runs(&self) -> Vec<(String, IndexRuns)> {
        self.all()
            .iter()
            .filter(|p| p.index_owner() == p.name())
            .map(|p| (p.name().to_owned(), p.index.runs().clone()))
            .collect()
    }

    async fn run_index(&self, project: &Arc<Project>, guard: ReindexGuard, start_over: StartOver) -> Result<IndexReport, ReindexError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(IndexError::Stopped.into());
        }
        let embedder = self
            .embedder()
            .cloned()
            .ok_or_else(|| IndexError::Invalid("no embedding model is loaded".into()))?;
        // First, with the index still serving, the chunks the change brings are embedded (the
        // slow part); a search's query waits a few chunks' embedding at most.
        let ahead = match project.index() {
            Ok(Some(index)) => {
                let (serving, embedder) = (Arc::clone(project), Arc::clone(&embedder));
                let progress = LogProgress::new(&project.index, self);
                let embedding = EmbeddingNow::start(&self.embedding_now);
                let ahead = tokio::task::spawn_blocking(move || {
                    let _embedding = embedding;
                    embed_ahead(&serving.config.path, &index, &embedder, &serving.index.options, &progress)
                })
                .await
                .map_err(|e| IndexError::Invalid(format!("the index task failed: {e}")))?;
                // The run embeds whatever was not embedded ahead.
                match ahead {
                    Ok(ahead) => ahead,
                    Err(IndexError::Stopped) => return Err(IndexError::Stopped.into()),
                    Err(e) => {
                        tracing::warn!(project = project.name(), error = %e, "embedding ahead of the re-index failed");
                        Ahead::default()
                    }
                }
            }
            _ => Ahead::default(),
        };
        // Then the indexer owns the index files while it writes: close ours, once the searches
        // running on it (milliseconds each) have let go.
        let (open, writing) = {
            let mut open = project.index.open.lock().unwrap_or_else(|p| p.into_inner());
            project.index.writing.store(true, Ordering::Release);
            // Lifted when the run ends, or at once should this future be dropped first.
            (open.take(), Writing(Arc::clone(&project.index)))
        };
        if let Some(open) = open {
            let waited = std::time::Instant::now();
            while Arc::strong_count(&open) > 1 && waited.elapsed() < SEARCHES_FINISH {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        let (writer, run_embedder) = (Arc::clone(project), Arc::clone(&embedder));
        let progress = LogProgress::new(&project.index, self);
        // The run's mark goes with the blocking work, so that it stays held however long the
        // work outlives this future (a client that stops waiting).
        let (report, guard) = tokio::task::spawn_blocking(move || {
            let _writing = writing;
            let slot = &writer.index;
            // What was not embedded ahead is embedded below, with the index serving.
            let options = IndexOptions {
                embed_after_commit: true,
                start_over,
                ..slot.options.clone()
            };
            let report = index_repository_with(&writer.config.path, &slot.layout, &run_embedder, &options, &progress, ahead);
            // Hits remembered from the old index may name code that changed or went.
            slot.sticky.clear();
            // What the run held (a large first index: hundreds of MB) back to the system.
            graft_core::memory::give_back();
            (report, guard)
        })
        .await
        .map_err(|e| IndexError::Invalid(format!("the index task failed: {e}")))?;
        // Nor may those of the searches that spanned it from other projects.
        for other in self.all() {
            other.index.sticky.forget_across(project.index_owner());
        }
        let mut report = report?;
        if report.vectors_pending > 0 {
            self.embed_pending(project, &embedder, &mut report, guard).await?;
        }
        Ok(report)
    }

    /// Embeds the chunks a run committed without vectors, with the index serving (the run's
    /// mark still held, so that no other run writes meanwhile), into `report`.
    async fn embed_pending(
        &self,
        project: &Arc<Project>,
        embedder: &Arc<Embedder>,
        report: &mut IndexReport,
        guard: ReindexGuard,
    ) -> Result<(), IndexError> {
        let slot = &project.index;
        let index = project
            .index()?
            .ok_or_else(|| IndexError::Invalid("the index did not open after its run".into()))?;
        slot.runs().vectors_pending = report.vectors_pending;
        tracing::info!(
            project = %slot.owner,
            chunks = report.chunks,
            pending = report.vectors_pending,
            seconds = report.elapsed.as_secs_f64(),
            "indexed: keyword search and definition lookup serve it now; the vectors of searches by meaning follow as they are embedded"
        );
        let (embedder, progress) = (Arc::clone(embedder), LogProgress::new(slot, self));
        let started = std::time::Instant::now();
        let embedding = EmbeddingNow::start(&self.embedding_now);
        let embedded = tokio::task::spawn_blocking(move || {
            let (_guard, _embedding) = (guard, embedding);
            let embedded = embed_missing(&index, &embedder, &progress);
            graft_core::memory::give_back();
            embedded
        })
        .await
        .map_err(|e| IndexError::Invalid(format!("the embedding task failed: {e}")));
        slot.runs().vectors_pending = 0;
        let embedded = embedded??;
        let seconds = started.elapsed();
        report.embeddings += embedded;
        report.vectors_pending = report.vectors_pending.saturating_sub(embedded);
        report.seconds.embed += seconds.as_secs_f64();
        report.seconds.total += seconds.as_secs_f64();
        report.elapsed += seconds;
        Ok(())
    }

    /// The index's state, for the status endpoint.
    pub fn status(&self, project: &Arc<Project>) -> serde_json::Value {
        let reindexing = project.index.reindexing.try_lock().is_err();
        let (last_run, vectors_pending) = {
            let runs = project.index.runs();
            (runs.last.clone(), runs.vectors_pending)
        };
        let opened = project.index();
        let (indexed, chunks, meta, error) = match &opened {
            Ok(Some(index)) => (true, index.chunk_count().ok(), serde_json::to_value(index.meta()).ok(), None),
            Ok(None) => (false, None, None, None),
            Err(e) => (false, None, None, Some(e.to_string())),
        };
        // Vectors of another embedding model or text form, which searches leave out until a
        // run embeds the index anew.
        let vectors_outdated = match (&opened, self.embedder()) {
            (Ok(Some(index)), Some(embedder)) => !index.vectors_made_by(embedder),
            _ => false,
        };
        serde_json::json!({
            "project": project.name(),
            "repository": project.config.path,
            "remote_urls": project.config.remote_urls,
            "index": graft_index::catalog::place(&project.index.options.backend, &project.index.layout),
            "index_of": project.index_owner(),
            "indexed": indexed,
            "reindexing": reindexing,
            "vectors_pending": vectors_pending,
            "vectors_outdated": vectors_outdated,
            "last_run": last_run,
            "chunks": chunks,
            "meta": meta,
            "error": error,
            "adapter": project.config.adapter,
            "retrieval": project.config.retrieval,
            "top_k": project.config.top_k,
            "context_tokens": project.config.context_tokens,
            "also_search": project.config.also_search,
        })
    }
}
