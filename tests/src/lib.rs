//! The harness shared by graft's end-to-end tests.
//!
//! - [`kit_file`]: a model from the offline kit, found (and fetched if missing) the way
//!   `graft up` does it: through config/graft.toml, honouring `GRAFT_KIT_DIR`.
//! - [`smollm2_server`]: one real graft server with SmolLM2-135M on an ephemeral loopback
//!   port, started once per test binary and shared by its tests (a model loads once);
//!   [`start_server`] starts others on the same model, with keys, projects and limits, and
//!   [`start_stoppable_server`] one that a test shuts down.
//! - [`kit_embedder`]: the kit's embedding model, loaded once per test binary.
//! - [`copy_fixture`]: a fixture repository copied somewhere a test may change it;
//!   [`change_meta`]: an index's meta as another graft would have written it.
//! - [`sse_data`]: the events of a streamed answer; [`logprob_tokens`]: the tokens of a list
//!   of log-probabilities.
//! - [`write_adapter`]: a PEFT LoRA adapter for a kit model, generated from a fixed seed.
//! - [`adapter_store`], [`pool`]: a model pool around an engine, its adapter store in a test's
//!   folder.
//! - [`qdrant`]: real Qdrant servers (one node or a cluster) for the server backend's tests.

pub mod qdrant;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use graft_core::config::{GenerationConfig, ServerConfig};
use graft_core::keys::ApiKeys;
use graft_core::{Config, ProjectConfig};
use graft_engine::merge::BaseGguf;
use graft_engine::pool::AdapterStore;
use graft_engine::requantize::{requantize, Restore};
use graft_engine::synthetic::SyntheticAdapter;
use graft_engine::{BaseModel, Engine, Pool, PoolLimits};
use graft_index::{index_repository, Embedder, EmbedderOptions, Quiet};
use graft_kit::{Kit, NoProgress, Source};
use graft_server::projects::Projects;
use graft_server::{AppState, ServerParts};

/// The model name the shared server answers to.
pub const MODEL: &str = "smollm2-135m-instruct";
/// The body limit of the shared server, small so the 413 path is cheap to test.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Deterministic values in [-1, 1) (a linear congruential sequence from `seed`): inputs for the
/// kernel tests and benches.
pub fn deterministic_values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Q8_0 copy of the kit's SmolLM2 that graft serves on a CPU (`model.cpu_weights`),
/// written into `folder`: its matrix products give every row the same bits at any row count.
pub fn q8_0_copy(folder: &Path) -> PathBuf {
    let copy = folder.join("smollm2-q8_0.gguf");
    let base = BaseGguf::open(&kit_file("smollm2-135m-instruct")).expect("the kit's SmolLM2");
    assert!(requantize(&base, &copy, Restore::Q8_0).expect("a Q8_0 copy") > 100);
    copy
}

/// The path of a kit artifact, installing it first if it is missing.
pub fn kit_file(id: &str) -> PathBuf {
    let config = Config::load(&repo_root().join("config/graft.toml")).expect("config/graft.toml loads");
    let kit = Kit::new(&config.kit.dir);
    let artifact = graft_kit::manifest::find(id).unwrap_or_else(|| panic!("no kit artifact `{id}`"));
    kit.ensure(&[*artifact], &Source::from_env(), &NoProgress)
        .unwrap_or_else(|e| panic!("cannot fetch kit artifact `{id}`: {e}"));
    kit.resolve(id).expect("installed artifact resolves")
}

/// A running test server.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Its adapter store (`adapters.dir`): adapters written here are served by name.
    pub store: PathBuf,
    /// A folder outside the store that `POST /v1/load_lora_adapter` may load from.
    pub external: PathBuf,
    /// Each project's repository, as the server indexed it (a copy a test may change).
    pub repos: Vec<PathBuf>,
    /// Each project's index folder (`index.dir/<project>`).
    pub indexes: Vec<PathBuf>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// What a test server is made of, beyond the shared SmolLM2 engine.
pub struct ServerSetup {
    pub keys: ApiKeys,
    /// Projects: each one's `path` names a fixture (`tests/fixtures/<path>`), which is copied
    /// and indexed with the kit's embedding model before the server starts.
    pub projects: Vec<ProjectConfig>,
    pub server: ServerConfig,
    pub generation: GenerationConfig,
    /// `adapters.max_loaded`.
    pub max_adapters: usize,
    /// `model.aliases`.
    pub aliases: Vec<String>,
}

impl Default for ServerSetup {
    fn default() -> ServerSetup {
        ServerSetup {
            keys: ApiKeys::default(),
            projects: Vec::new(),
            server: ServerConfig::default(),
            generation: GenerationConfig::default(),
            max_adapters: 2,
            aliases: Vec::new(),
        }
    }
}

/// The runtime test servers run on: one per test binary, alive for the whole process, so a
/// server outlives each test's own runtime.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Runs `future` on the harness runtime and waits for its result (from sync or async tests).
fn run_on_harness<T: Send + 'static>(future: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    runtime().spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().expect("the harness task finished")
}

/// SmolLM2-135M, loaded once per test binary and shared by its servers.
///
/// One sequence at a time: requests decoded in one batch get slightly different
/// floating-point sums, which can flip a greedy token, and the tests compare greedy answers
/// exactly. Concurrent requests queue instead.
pub fn smollm2_engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    Arc::clone(ENGINE.get_or_init(|| {
        let base = BaseModel::cpu(MODEL, kit_file("smollm2-135m-instruct"), 1);
        match run_on_harness(async move { Engine::load(&base).await }) {
            Ok(engine) => Arc::new(engine),
            Err(e) => panic!("cannot load SmolLM2: {e}"),
        }
    }))
}

/// The `token` of each entry of a list of log-probabilities (chat's `logprobs.content`, the
/// Responses API's and Ollama's `logprobs`).
pub fn logprob_tokens(logprobs: &serde_json::Value) -> Vec<String> {
    let entries = logprobs.as_array().unwrap_or_else(|| panic!("no logprobs: {logprobs}"));
    entries.iter().map(|e| e["token"].as_str().expect("a token").to_owned()).collect()
}

/// An adapter store in `folder`: adapters in `adapters/`, merged models cached in `merged/`,
/// ranks up to 64, nothing loaded from elsewhere.
pub fn adapter_store(folder: &Path) -> AdapterStore {
    AdapterStore {
        dir: folder.join("adapters"),
        max_rank: 64,
        merge: Default::default(),
        cache_dir: folder.join("merged"),
        allowed_dirs: Vec::new(),
    }
}

/// A pool around `engine` with [`adapter_store`] in `folder`, holding up to `max_adapters`
/// adapters at once.
pub fn pool(engine: Arc<Engine>, folder: &Path, max_adapters: usize) -> Pool {
    let limits = PoolLimits {
        max_adapters,
        max_bytes: None,
    };
    Pool::new(engine, adapter_store(folder), limits).expect("a pool")
}

/// Starts a server on the shared SmolLM2 engine, on an ephemeral loopback port. It serves
/// until the test process ends. Its folders live as long as the process too.
pub fn start_server(setup: ServerSetup) -> TestServer {
    launch(setup, std::future::pending(), Duration::ZERO).0
}

/// Like [`start_server`], shut down as SIGTERM shuts graft down when the returned sender
/// fires: no new connections, requests in flight get `grace` to finish. The receiver says
/// when the server has stopped.
pub fn start_stoppable_server(
    setup: ServerSetup,
    grace: Duration,
) -> (TestServer, tokio::sync::oneshot::Sender<()>, tokio::sync::oneshot::Receiver<()>) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (server, stopped) = launch(
        setup,
        async move {
            let _ = stop_rx.await;
        },
        grace,
    );
    (server, stop_tx, stopped)
}

/// A fresh folder for one test server's files (adapters, merged models, indexes, repository
/// copies). Servers shared through statics are never dropped, so their folders outlive the
/// test process; each folder is named after its process, and those of processes that have
/// ended are removed here first (about 200 MB each, with merged models).
fn scratch_dir() -> PathBuf {
    let base = std::env::temp_dir().join("graft-tests");
    static CLEANED: std::sync::Once = std::sync::Once::new();
    CLEANED.call_once(|| {
        let Ok(entries) = std::fs::read_dir(&base) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().unwrap_or_default();
            let ended = !pid.is_empty() && cfg!(target_os = "linux") && !Path::new("/proc").join(pid).exists();
            if ended {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
    std::fs::create_dir_all(&base).expect("the tests' scratch folder");
    tempfile::Builder::new()
        .prefix(&format!("{}-", std::process::id()))
        .tempdir_in(&base)
        .expect("temporary folder")
        .keep()
}

fn launch(
    setup: ServerSetup,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> (TestServer, tokio::sync::oneshot::Receiver<()>) {
    let engine = smollm2_engine();
    let root = scratch_dir();
    let (store, external) = (root.join("adapters"), root.join("external"));
    std::fs::create_dir_all(&store).expect("adapter store");
    std::fs::create_dir_all(&external).expect("external adapters");

    // The server is built from a config, through graft-wiring, as `graft serve` builds it.
    let mut config = Config::default();
    config.model.name = MODEL.to_owned();
    config.model.aliases = setup.aliases;
    config.adapters.dir = store.clone();
    config.adapters.cache_dir = root.join("merged");
    config.adapters.allowed_dirs = vec![external.clone()];
    config.adapters.max_loaded = setup.max_adapters;
    config.adapters.max_loaded_mb = 0;
    config.index.dir = root.join("index");
    config.server = setup.server;
    config.generation = setup.generation;
    let mut repos = Vec::new();
    for mut project in setup.projects {
        let repo = root.join("repos").join(&project.name);
        copy_tree(&repo_root().join("tests/fixtures").join(&project.path), &repo);
        project.path = repo.clone();
        config.projects.push(project);
        repos.push(repo);
    }
    let pool = Pool::new(engine, graft_wiring::adapter_store(&config), graft_wiring::pool_limits(&config)).expect("pool");
    let mut indexes = Vec::new();
    for project in &config.projects {
        let layout = graft_wiring::layout(&config, &project.name);
        index_repository(
            &project.path,
            &layout,
            kit_embedder(),
            &graft_wiring::index_options(&config),
            &Quiet,
        )
        .unwrap_or_else(|e| panic!("cannot index project `{}`: {e}", project.name));
        indexes.push(layout.root);
    }
    let projects = if config.projects.is_empty() {
        Projects::none()
    } else {
        graft_wiring::projects(&config, Some(Arc::clone(kit_embedder())))
    };

    let state = AppState::new(ServerParts {
        pool: Arc::new(pool),
        aliases: config.model.aliases.clone(),
        generation: config.generation.clone(),
        server: graft_wiring::server_config(&config),
        keys: setup.keys,
        projects,
    });
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
    let addr = run_on_harness(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            graft_server::serve(listener, state, MAX_BODY_BYTES, shutdown, grace)
                .await
                .expect("serve");
            let _ = stopped_tx.send(());
        });
        addr
    });
    let server = TestServer {
        addr,
        store,
        external,
        repos,
        indexes,
    };
    (server, stopped_rx)
}

/// The shared SmolLM2 server with no keys and no projects, started on first use.
pub fn smollm2_server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| start_server(ServerSetup::default()))
}

/// The name the kit's embedding model is served under (`POST /v1/embeddings`).
pub const EMBEDDING_MODEL: &str = "minilm-l6-v2";

/// The kit's all-MiniLM-L6-v2, loaded once per test binary.
pub fn kit_embedder() -> &'static Arc<Embedder> {
    static EMBEDDER: OnceLock<Arc<Embedder>> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        kit_file("minilm-l6-v2-onnx");
        kit_file("minilm-l6-v2-tokenizer");
        kit_file("onnxruntime");
        let config = Config::load(&repo_root().join("config/graft.toml")).expect("config/graft.toml loads");
        let options = EmbedderOptions {
            // Tests never download a catalog model: no cache folder.
            cache_dir: None,
            ..graft_wiring::embedder_options(&config).unwrap_or_else(|e| panic!("the kit's embedding model: {e}"))
        };
        Arc::new(Embedder::load(&options).unwrap_or_else(|e| panic!("cannot load the kit's embedding model: {e}")))
    })
}

/// The `data:` payloads of a server-sent event stream, in order (`[DONE]` last).
pub fn sse_data(body: &str) -> Vec<&str> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).collect()
}

/// Copies `tests/fixtures/<name>` into a new temporary folder and returns it.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let from = repo_root().join("tests/fixtures").join(name);
    let dir = tempfile::tempdir().expect("temporary folder");
    copy_tree(&from, dir.path());
    dir
}

/// Rewrites the meta of the index built in `layout` (on `backend`), as another graft would
/// have written it.
pub fn change_meta(
    backend: &graft_index::vectors::Backend,
    layout: &graft_index::IndexLayout,
    change: impl FnOnce(&mut graft_index::Meta),
) {
    let catalog = graft_index::catalog::open(backend, layout).expect("the catalog opens");
    let mut meta = catalog.meta().expect("its meta reads").expect("the index is built");
    change(&mut meta);
    catalog.write_meta(&meta).expect("its meta is written");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create folder");
    for entry in std::fs::read_dir(from).expect("read fixture folder") {
        let entry = entry.expect("fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// Writes a PEFT adapter for `base` targeting `projections` in every layer (graft-engine's
/// synthetic adapters). A and B are uniform in [-amplitude, amplitude]; `zero_b` makes B all
/// zeros (PEFT's initial state).
#[allow(clippy::too_many_arguments)]
pub fn write_adapter(dir: &Path, base: &BaseGguf, projections: &[&str], r: usize, alpha: f64, amplitude: f32, zero_b: bool, seed: u64) {
    let spec = SyntheticAdapter {
        projections,
        rank: r,
        alpha,
        amplitude,
        zero_b,
        seed,
    };
    spec.write(dir, base)
        .unwrap_or_else(|e| panic!("cannot write adapter {}: {e}", dir.display()));
}
