//! What every handler shares: the engine and the request limits, behind one `Arc`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use graft_core::config::GenerationConfig;
use graft_engine::Engine;

/// Shared state of the server. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    generation: GenerationConfig,
    /// Unix seconds when the server started; the `created` time of the models it lists.
    started: u64,
}

impl AppState {
    pub fn new(engine: Engine, generation: GenerationConfig) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                engine,
                generation,
                started: unix_now(),
            }),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn generation(&self) -> &GenerationConfig {
        &self.inner.generation
    }

    pub fn started(&self) -> u64 {
        self.inner.started
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
