//! The harness shared by graft's end-to-end tests.
//!
//! - [`kit_file`]: a model from the offline kit, found (and fetched if missing) the way
//!   `graft up` does it: through config/graft.toml, honouring `GRAFT_KIT_DIR`.
//! - [`smollm2_server`]: one real graft server with SmolLM2-135M on an ephemeral loopback
//!   port, started once per test binary and shared by its tests (a model loads once).
//! - [`kit_embedder`]: the kit's embedding model, loaded once per test binary.
//! - [`copy_fixture`]: a fixture repository copied somewhere a test may change it.
//! - [`write_adapter`]: a PEFT LoRA adapter for a kit model, generated from a fixed seed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use graft_engine::merge::BaseGguf;
use graft_engine::pool::AdapterStore;
use graft_engine::synthetic::SyntheticAdapter;
use graft_engine::{Pool, PoolLimits};

use graft_core::config::{GenerationConfig, ServerConfig};
use graft_core::keys::ApiKeys;
use graft_core::Config;
use graft_engine::{BaseModel, Engine};
use graft_index::{Embedder, EmbedderOptions, EmbeddingSource};
use graft_kit::{Kit, NoProgress, Source};
use graft_server::projects::Projects;
use graft_server::{AppState, ServerParts};

/// The model name the shared server answers to.
pub const MODEL: &str = "smollm2-135m-instruct";
/// The body limit of the shared server, small so the 413 path is cheap to test.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The shared SmolLM2 server, started on first use. It runs on its own thread and runtime,
/// so it outlives each test's runtime.
pub fn smollm2_server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let gguf = kit_file("smollm2-135m-instruct");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                // One sequence at a time: requests decoded in one batch get slightly different
                // floating-point sums, which can flip a greedy token, and the tests compare
                // greedy answers exactly. Concurrent requests queue instead.
                let base = BaseModel::cpu(MODEL, gguf, 1);
                let engine = match Engine::load(&base).await {
                    Ok(engine) => Arc::new(engine),
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                // The server's folders live as long as the test process.
                let root = tempfile::tempdir().expect("temporary folder").keep();
                let (store, external) = (root.join("adapters"), root.join("external"));
                std::fs::create_dir_all(&store).expect("adapter store");
                std::fs::create_dir_all(&external).expect("external adapters");
                let adapters = AdapterStore {
                    dir: store.clone(),
                    max_rank: 64,
                    merge: Default::default(),
                    cache_dir: root.join("merged"),
                    allowed_dirs: vec![external.clone()],
                };
                let limits = PoolLimits {
                    max_adapters: 2,
                    max_bytes: None,
                };
                let pool = Pool::new(engine, adapters, limits).expect("pool");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
                let addr = listener.local_addr().expect("local addr");
                let state = AppState::new(ServerParts {
                    pool: Arc::new(pool),
                    generation: GenerationConfig::default(),
                    server: ServerConfig::default(),
                    keys: ApiKeys::default(),
                    projects: Projects::none(),
                });
                let app = graft_server::router(state, MAX_BODY_BYTES);
                let _ = tx.send(Ok((addr, store, external)));
                graft_server::serve(listener, app, std::future::pending(), Duration::ZERO).await.expect("serve");
            });
        });
        match rx.recv() {
            Ok(Ok((addr, store, external))) => TestServer { addr, store, external },
            Ok(Err(e)) => panic!("the test server could not load SmolLM2: {e}"),
            Err(_) => panic!("the test server thread died while starting"),
        }
    })
}

/// The kit's all-MiniLM-L6-v2, loaded once per test binary.
pub fn kit_embedder() -> &'static Embedder {
    static EMBEDDER: OnceLock<Embedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        let options = EmbedderOptions {
            source: EmbeddingSource::Files {
                onnx: kit_file("minilm-l6-v2-onnx"),
                tokenizer_dir: kit_file("minilm-l6-v2-tokenizer"),
            },
            onnxruntime: kit_file("onnxruntime"),
            threads: 2,
            batch_size: 64,
            max_tokens: graft_core::config::IndexConfig::default().embedding_max_tokens,
            cache_dir: None,
        };
        Embedder::load(&options).unwrap_or_else(|e| panic!("cannot load the kit's embedding model: {e}"))
    })
}

/// Copies `tests/fixtures/<name>` into a new temporary folder and returns it.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let from = repo_root().join("tests/fixtures").join(name);
    let dir = tempfile::tempdir().expect("temporary folder");
    copy_tree(&from, dir.path());
    dir
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
    spec.write(dir, base).unwrap_or_else(|e| panic!("cannot write adapter {}: {e}", dir.display()));
}
