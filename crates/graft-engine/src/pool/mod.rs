//! The model pool: the base model, always resident, and LoRA adapters merged into it and loaded
//! next to it in the same mistralrs engine.
//!
//! Policy, in one place:
//! - An adapter is loaded on its first request (or on [`Pool::load`]): validated against the
//!   base, merged through the content-addressed cache, added to the engine under a versioned
//!   id (`name@hash`).
//! - Loads are serialized: concurrent first requests for one adapter cause one load; the others
//!   wait for it and use it.
//! - Every generation holds a [`Lease`] on the version it runs on. A version with leases is
//!   never evicted; it leaves the engine when its last lease ends.
//! - The pool holds at most `max_adapters` adapters and `max_bytes` of merged models; to make
//!   room it unloads the least recently used idle adapter, and when every one is busy the new
//!   load is refused ([`PoolError::Busy`]) rather than exceeding the limit.
//! - When an adapter's files change (same name, new files), the next request loads the new
//!   version and switches new requests to it at once; requests in flight finish on the old one.
//!   If the new version fails to load, the old one keeps serving and the failure is reported.
//!
//! This module owns that policy; merging is `merge`/`cache`, generation is `engine`.

mod table;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, UNIX_EPOCH};

use crate::adapter::{Adapter, AdapterError};
use crate::cache::MergeCache;
use crate::engine::{Engine, TokenStream};
use crate::error::EngineError;
use crate::merge::{BaseGguf, MergeError, MergeSettings};
use crate::types::{ChatRequest, Completion, CompletionRequest, Prompt, Sampling, TokenLogprob};
pub use table::Lease;
use table::{Fingerprint, Table, Unload, Version};

/// Where adapters come from and how they are merged.
#[derive(Debug, Clone)]
pub struct AdapterStore {
    /// The store: `<dir>/<name>/` in PEFT format.
    pub dir: PathBuf,
    /// Largest LoRA rank accepted.
    pub max_rank: usize,
    pub merge: MergeSettings,
    /// The merged-model cache.
    pub cache_dir: PathBuf,
    /// Folders outside the store that [`Pool::load`] may load adapters from.
    pub allowed_dirs: Vec<PathBuf>,
}

/// How much the pool may hold besides the base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Most adapters loaded at once (at least 1).
    pub max_adapters: usize,
    /// Most bytes of merged model files loaded at once; `None`: no byte limit.
    pub max_bytes: Option<u64>,
}

/// What the pool can fail at.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Neither the base model nor an adapter of the store.
    #[error("no model or adapter named `{0}`")]
    Unknown(String),
    #[error("{0}")]
    InvalidName(String),
    /// A load from a folder outside the store and the allowed folders.
    #[error("adapter `{name}`: {} is outside the adapter folders graft may load from", path.display())]
    OutsideStore { name: String, path: PathBuf },
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    #[error("adapter `{name}`: {source}")]
    Merge {
        name: String,
        #[source]
        source: MergeError,
    },
    #[error("adapter `{name}`: {source}")]
    Engine {
        name: String,
        #[source]
        source: EngineError,
    },
    /// No room: every loaded adapter has requests in flight.
    #[error("cannot load adapter `{name}`: {limit} reached and every loaded adapter is serving requests; retry shortly")]
    Busy { name: String, limit: String },
}

/// Takes adapter versions out of the engine when nothing holds them any more.
struct EngineUnloader(Arc<Engine>);

impl Unload for EngineUnloader {
    fn unload(&self, name: &str, id: &str) {
        let engine = Arc::clone(&self.0);
        let (id, name) = (id.to_owned(), name.to_owned());
        // mistralrs's removal blocks; it gets a thread of its own so no caller waits on it.
        std::thread::spawn(move || match engine.remove_model(&id) {
            Ok(()) => tracing::info!(adapter = %name, version = %id, "adapter version unloaded"),
            Err(e) => tracing::warn!(adapter = %name, version = %id, "cannot unload adapter version: {e}"),
        });
    }
}

/// An adapter's state, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterInfo {
    pub name: String,
    pub dir: PathBuf,
    /// The engine id of the loaded version, when loaded.
    pub loaded: Option<String>,
    pub bytes: u64,
    /// Requests running on the loaded version.
    pub in_flight: usize,
    /// Unix seconds of the load.
    pub loaded_at: Option<u64>,
    /// Why the adapter's newest files failed to load, while an older version serves.
    pub last_error: Option<String>,
}

/// Counters since start, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Adapter versions added to the engine.
    pub loads: u64,
    /// Of those, merged now (not found in the cache).
    pub merges: u64,
    /// Adapters unloaded to make room.
    pub evictions: u64,
    /// Loads that failed.
    pub failures: u64,
}

/// What a load did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    pub name: String,
    pub engine_id: String,
    /// False when that version was already loaded.
    pub loaded_now: bool,
    /// True when the merge was done now rather than found in the cache.
    pub merged_now: bool,
    pub seconds: f64,
}

/// The base model and its adapters. Share it behind an `Arc`.
pub struct Pool {
    engine: Arc<Engine>,
    unloader: Arc<dyn Unload>,
    base: Arc<BaseGguf>,
    store: AdapterStore,
    limits: PoolLimits,
    table: Mutex<Table>,
    /// Held while an adapter version is prepared and added, so loads happen one at a time.
    load_gate: tokio::sync::Mutex<()>,
    loads: AtomicU64,
    merges: AtomicU64,
    evictions: AtomicU64,
    failures: AtomicU64,
}

impl Pool {
    /// A pool around a loaded base model; reads the base's GGUF header for adapter checks.
    pub fn new(engine: Arc<Engine>, store: AdapterStore, limits: PoolLimits) -> Result<Pool, PoolError> {
        let base = BaseGguf::open(&engine.base().gguf).map_err(|source| PoolError::Merge {
            name: engine.name().to_owned(),
            source: source.into(),
        })?;
        Ok(Pool {
            unloader: Arc::new(EngineUnloader(Arc::clone(&engine))),
            engine,
            base: Arc::new(base),
            store,
            limits: PoolLimits {
                max_adapters: limits.max_adapters.max(1),
                ..limits
            },
            table: Mutex::new(Table::default()),
            load_gate: tokio::sync::Mutex::new(()),
            loads: AtomicU64::new(0),
            merges: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The base model's name.
    pub fn base_name(&self) -> &str {
        self.engine.name()
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            loads: self.loads.load(Ordering::Relaxed),
            merges: self.merges.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// The model for a request named `name`: the base, or an adapter (loaded now if needed).
    pub async fn acquire(&self, name: &str) -> Result<Lease, PoolError> {
        if name == self.base_name() {
            return Ok(Lease {
                name: name.to_owned(),
                version: None,
            });
        }
        let dir = self.dir_of(name)?;
        if let Some(lease) = self.lease_if_current(name, &dir) {
            return Ok(lease);
        }
        let _gate = self.load_gate.lock().await;
        // Another request may have loaded it while this one waited.
        if let Some(lease) = self.lease_if_current(name, &dir) {
            return Ok(lease);
        }
        match self.load_locked(name, &dir).await {
            Ok(_) => self.lease_if_loaded(name).ok_or_else(|| PoolError::Unknown(name.to_owned())),
            Err(e) => match self.lease_if_loaded(name) {
                // The new files are broken: the old version keeps serving.
                Some(lease) => Ok(lease),
                None => Err(e),
            },
        }
    }

    /// Loads (or reloads, when its files changed) an adapter now. `dir` registers a folder
    /// outside the store, which must lie inside the store or an allowed folder. On failure a
    /// version already loaded keeps serving, and the error is returned.
    pub async fn load(&self, name: &str, dir: Option<&Path>) -> Result<LoadReport, PoolError> {
        check_name(name, self.base_name())?;
        self.lock().unloaded.remove(name);
        // A registration by path that fails to load is taken back (the previous one, if any,
        // stays), so a failed load leaves no name behind.
        let mut previous_registration = None;
        let dir = match dir {
            Some(dir) => {
                let dir = self.confine(name, dir)?;
                previous_registration = Some(self.lock().registered.insert(name.to_owned(), dir.clone()));
                dir
            }
            None => self.dir_of(name)?,
        };
        let result = self.load_registered(name, &dir).await;
        if let (Err(_), Some(previous)) = (&result, previous_registration) {
            let mut table = self.lock();
            if !table.slots.contains_key(name) {
                match previous {
                    Some(previous) => table.registered.insert(name.to_owned(), previous),
                    None => table.registered.remove(name),
                };
            }
        }
        result
    }

    /// [`Pool::load`] once the adapter's folder is known.
    async fn load_registered(&self, name: &str, dir: &Path) -> Result<LoadReport, PoolError> {
        let _gate = self.load_gate.lock().await;
        // Already loaded from these very files: nothing to do. (Files that failed before are
        // tried again: an explicit load reports the error.)
        let files = Fingerprint::of(dir);
        let loaded = {
            let table = self.lock();
            table
                .slots
                .get(name)
                .filter(|s| s.files == files && files.is_some())
                .map(|s| s.current.id.clone())
        };
        if let Some(engine_id) = loaded {
            return Ok(LoadReport {
                name: name.to_owned(),
                engine_id,
                loaded_now: false,
                merged_now: false,
                seconds: 0.0,
            });
        }
        self.load_locked(name, dir).await
    }

    /// Unloads an adapter: new requests no longer find it until it is loaded again with
    /// [`Pool::load`]; requests in flight finish first.
    pub fn unload(&self, name: &str) -> Result<(), PoolError> {
        let mut table = self.lock();
        if table.unloaded.contains(name) {
            return Err(PoolError::Unknown(name.to_owned()));
        }
        let slot = table.slots.remove(name);
        let registered = table.registered.remove(name);
        let in_store = has_config(&self.store.dir.join(name));
        if slot.is_none() && registered.is_none() && !in_store {
            return Err(PoolError::Unknown(name.to_owned()));
        }
        if in_store {
            table.unloaded.insert(name.to_owned());
        }
        tracing::info!(adapter = name, "adapter unloaded on request");
        Ok(())
    }

    /// Every adapter the pool knows: the store's folders, those registered by path, and what is
    /// loaded, by name.
    pub fn adapters(&self) -> Vec<AdapterInfo> {
        let table = self.lock();
        let mut names: Vec<(String, PathBuf)> = store_names(&self.store.dir)
            .into_iter()
            .filter(|n| !table.unloaded.contains(n))
            .map(|n| {
                let dir = self.store.dir.join(&n);
                (n, dir)
            })
            .collect();
        for (name, dir) in &table.registered {
            names.retain(|(n, _)| n != name);
            names.push((name.clone(), dir.clone()));
        }
        names.sort();
        names
            .into_iter()
            .map(|(name, dir)| {
                let slot = table.slots.get(&name);
                AdapterInfo {
                    loaded: slot.map(|s| s.current.id.clone()),
                    bytes: slot.map_or(0, |s| s.current.bytes),
                    in_flight: slot.map_or(0, table::Slot::in_flight),
                    loaded_at: slot.and_then(|s| s.loaded_at.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
                    last_error: slot.and_then(|s| s.failed.as_ref().map(|f| f.1.clone())),
                    name,
                    dir,
                }
            })
            .collect()
    }

    /// Loaded adapters, least recently used first.
    pub fn loaded(&self) -> Vec<String> {
        self.lock().lru()
    }

    /// Starts a chat on the model named `model`; the stream holds the model's lease.
    pub async fn chat_stream(&self, model: &str, request: ChatRequest) -> Result<TokenStream, PoolError> {
        let lease = self.acquire(model).await?;
        let stream = self.engine.chat_stream_on(lease.engine_id(), request).await;
        Ok(self.engine_result(model, stream)?.hold(lease))
    }

    /// A whole chat answer from the model named `model`.
    pub async fn chat(&self, model: &str, request: ChatRequest) -> Result<Completion, PoolError> {
        let stream = self.chat_stream(model, request).await?;
        stream.collect().await.map_err(|source| PoolError::Engine {
            name: model.to_owned(),
            source,
        })
    }

    /// Starts a raw completion on the model named `model`; the stream holds the model's lease.
    pub async fn complete_stream(&self, model: &str, request: CompletionRequest) -> Result<TokenStream, PoolError> {
        let lease = self.acquire(model).await?;
        let stream = self.engine.complete_stream_on(lease.engine_id(), request).await;
        Ok(self.engine_result(model, stream)?.hold(lease))
    }

    /// Starts a request's choices (`n`): several requests for one prompt on the model named
    /// `model`. When there are several, the prompt cache is on and the prompt is long enough
    /// to matter ([`READ_AHEAD_MIN_TOKENS`]), the prompt is read once first (one token
    /// generated and dropped, which leaves it in the cache), so each choice reads only its
    /// last tokens instead of the whole prompt: on a CPU, N choices cost one reading of the
    /// prompt, not N. Every choice then reads the prompt the same way, as choices of a cached
    /// prompt always did (`vendor/README.md`, the prefix cache), and each stream reports the
    /// prompt tokens earlier requests had cached ([`TokenStream::read_ahead`]).
    pub async fn complete_choices(&self, model: &str, requests: Vec<CompletionRequest>) -> Result<Vec<TokenStream>, PoolError> {
        let cached_before = match read_ahead_prompt(&requests, self.engine.base().prompt_cache) {
            Some(prompt) => {
                let ahead = CompletionRequest {
                    prompt: prompt.clone(),
                    sampling: Sampling::greedy(1),
                };
                Some(self.complete(model, ahead).await?.usage.cached_tokens)
            }
            None => None,
        };
        let mut streams = Vec::with_capacity(requests.len());
        for request in requests {
            let stream = self.complete_stream(model, request).await?;
            streams.push(match cached_before {
                Some(cached) => stream.read_ahead(cached),
                None => stream,
            });
        }
        Ok(streams)
    }

    /// A whole raw completion from the model named `model`.
    pub async fn complete(&self, model: &str, request: CompletionRequest) -> Result<Completion, PoolError> {
        let stream = self.complete_stream(model, request).await?;
        stream.collect().await.map_err(|source| PoolError::Engine {
            name: model.to_owned(),
            source,
        })
    }

    /// The log-probabilities of a prompt's tokens on the model named `model`
    /// ([`Engine::prompt_logprobs`]).
    pub async fn prompt_logprobs(&self, model: &str, tokens: Vec<u32>, top: usize) -> Result<Vec<TokenLogprob>, PoolError> {
        let lease = self.acquire(model).await?;
        let result = self.engine.prompt_logprobs_on(lease.engine_id(), tokens, top).await;
        self.engine_result(model, result)
    }

    fn engine_result<T>(&self, model: &str, result: Result<T, EngineError>) -> Result<T, PoolError> {
        result.map_err(|source| PoolError::Engine {
            name: model.to_owned(),
            source,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table half-changed (every change is
        // one insert or remove), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The folder an adapter's files are in: registered by [`Pool::load`], or in the store.
    fn dir_of(&self, name: &str) -> Result<PathBuf, PoolError> {
        {
            let table = self.lock();
            if let Some(dir) = table.registered.get(name) {
                return Ok(dir.clone());
            }
            if table.unloaded.contains(name) {
                return Err(PoolError::Unknown(name.to_owned()));
            }
        }
        check_name(name, self.base_name()).map_err(|_| PoolError::Unknown(name.to_owned()))?;
        let dir = self.store.dir.join(name);
        if has_config(&dir) || self.lock().slots.contains_key(name) {
            Ok(dir)
        } else {
            Err(PoolError::Unknown(name.to_owned()))
        }
    }

    /// A lease on the loaded version when it is still the one to serve (see
    /// `Table::lease_if_current`).
    fn lease_if_current(&self, name: &str, dir: &Path) -> Option<Lease> {
        let files = Fingerprint::of(dir);
        self.lock().lease_if_current(name, files)
    }

    /// A lease on whatever version is loaded.
    fn lease_if_loaded(&self, name: &str) -> Option<Lease> {
        self.lock().lease_if_loaded(name)
    }

    /// Validates, merges and adds the adapter in `dir`, then makes it the version new requests
    /// get. Called with the load gate held.
    async fn load_locked(&self, name: &str, dir: &Path) -> Result<LoadReport, PoolError> {
        let started = Instant::now();
        let files = Fingerprint::of(dir);
        let result = self.prepare_and_add(name, dir).await;
        let mut table = self.lock();
        match result {
            Ok((version, merged_now)) => {
                let report = LoadReport {
                    name: name.to_owned(),
                    engine_id: version.id.clone(),
                    loaded_now: true,
                    merged_now,
                    seconds: started.elapsed().as_secs_f64(),
                };
                // The old version (if any) leaves the table here and the engine when its last
                // request ends.
                table.install(name, version, files);
                tracing::info!(adapter = name, version = %report.engine_id, seconds = report.seconds, merged_now, "adapter loaded");
                Ok(report)
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if table.record_failure(name, files, e.to_string()) {
                    tracing::error!(
                        adapter = name,
                        "new adapter files failed to load; the previous version keeps serving: {e}"
                    );
                } else {
                    tracing::error!(adapter = name, "adapter failed to load: {e}");
                }
                Err(e)
            }
        }
    }

    /// The merge (cached) and the engine load of one adapter version.
    async fn prepare_and_add(&self, name: &str, dir: &Path) -> Result<(Arc<Version>, bool), PoolError> {
        let base = Arc::clone(&self.base);
        let store = self.store.clone();
        let (owned_name, owned_dir) = (name.to_owned(), dir.to_owned());
        let prepared = tokio::task::spawn_blocking(move || -> Result<_, PoolError> {
            // The files must really lie in the store or an allowed folder now, whatever
            // links lead there (checked on the opened files).
            let roots: Vec<&Path> = std::iter::once(store.dir.as_path())
                .chain(store.allowed_dirs.iter().map(PathBuf::as_path))
                .collect();
            let adapter = Adapter::load_confined(&owned_name, &owned_dir, store.max_rank, &roots)?;
            crate::merge::check(&base, &adapter)?;
            let cache = MergeCache::new(&store.cache_dir);
            let merge_error = |source| PoolError::Merge {
                name: owned_name.clone(),
                source,
            };
            cache.get_or_merge(&base, &adapter, &store.merge).map_err(merge_error)
        })
        .await
        .map_err(|e| PoolError::Engine {
            name: name.to_owned(),
            source: EngineError::Generation(format!("the merge task failed: {e}")),
        })??;
        let merged = prepared;
        let key = &merged.key;
        if merged.fresh {
            self.merges.fetch_add(1, Ordering::Relaxed);
        }
        let id = format!("{name}@{}", &key[..12.min(key.len())]);
        // The same content under new timestamps: the loaded version is reused.
        if let Some(slot) = self.lock().slots.get(name) {
            if slot.current.id == id {
                return Ok((Arc::clone(&slot.current), false));
            }
        }
        let bytes = std::fs::metadata(&merged.path).map_or(0, |m| m.len());
        self.make_room(name, bytes)?;
        self.engine.add_model(&id, &merged.path).await.map_err(|source| PoolError::Engine {
            name: name.to_owned(),
            source,
        })?;
        self.loads.fetch_add(1, Ordering::Relaxed);
        Ok((
            Arc::new(Version {
                name: name.to_owned(),
                id,
                bytes,
                unloader: Arc::clone(&self.unloader),
            }),
            merged.fresh,
        ))
    }

    /// Unloads least recently used idle adapters until one more of `bytes` fits, or says which
    /// limit every busy adapter keeps it from meeting.
    fn make_room(&self, name: &str, bytes: u64) -> Result<(), PoolError> {
        let evicted = self.lock().make_room(name, bytes, self.limits).map_err(|limit| PoolError::Busy {
            name: name.to_owned(),
            limit,
        })?;
        for victim in evicted {
            self.evictions.fetch_add(1, Ordering::Relaxed);
            tracing::info!(adapter = %victim, "evicted the least recently used idle adapter to make room");
        }
        Ok(())
    }

    /// `dir` made absolute and checked to lie inside the store or an allowed folder.
    fn confine(&self, name: &str, dir: &Path) -> Result<PathBuf, PoolError> {
        let outside = || PoolError::OutsideStore {
            name: name.to_owned(),
            path: dir.to_owned(),
        };
        let real = dir.canonicalize().map_err(|e| {
            PoolError::Adapter(AdapterError::Io {
                name: name.to_owned(),
                path: dir.to_owned(),
                source: e,
            })
        })?;
        let inside = std::iter::once(&self.store.dir)
            .chain(&self.store.allowed_dirs)
            .filter_map(|root| root.canonicalize().ok())
            .any(|root| real.starts_with(&root) && real != root);
        if inside {
            Ok(real)
        } else {
            Err(outside())
        }
    }
}

/// Adapter names are folder names ([`graft_core::is_valid_name`]), not the base's name.
fn check_name(name: &str, base: &str) -> Result<(), PoolError> {
    if !graft_core::is_valid_name(name) {
        return Err(PoolError::InvalidName(format!(
            "`{name}` is not a valid adapter name: use letters, digits, '.', '_' and '-' (at most {} characters, not starting with '.')",
            graft_core::config::MAX_NAME_CHARS
        )));
    }
    if name == base {
        return Err(PoolError::InvalidName(format!("`{name}` is the base model's name")));
    }
    Ok(())
}

/// Whether `dir` holds an `adapter_config.json`, of whatever kind: what is not a regular file
/// is refused with a clear error when read, rather than passed over as "no such adapter".
fn has_config(dir: &Path) -> bool {
    dir.join("adapter_config.json").exists()
}

/// The shortest prompt [`Pool::complete_choices`] reads ahead of its choices: below it, the
/// extra step costs about what reading the prompt N times does.
pub const READ_AHEAD_MIN_TOKENS: usize = 32;

/// The prompt the choices in `requests` share, when reading it ahead pays: several of them,
/// one prompt of token ids at least [`READ_AHEAD_MIN_TOKENS`] long, and a prompt cache
/// (`prompt_cache` entries) to leave it in.
fn read_ahead_prompt(requests: &[CompletionRequest], prompt_cache: usize) -> Option<&Prompt> {
    let (first, rest) = requests.split_first()?;
    let long_enough = matches!(&first.prompt, Prompt::Tokens(tokens) if tokens.len() >= READ_AHEAD_MIN_TOKENS);
    let shared = rest.iter().all(|request| request.prompt == first.prompt);
    (!rest.is_empty() && prompt_cache > 0 && long_enough && shared).then_some(&first.prompt)
}

/// The store's adapter names: folders holding an adapter_config.json.
pub fn store_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| has_config(&e.path()))
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}
