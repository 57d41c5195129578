//! `graft bench ...`: benchmarks that print figures (and `--json`). They assert nothing:
//! targets live in the figures, not in tests.
//!
//! - [`index`]: indexing and search speed on a real source tree.
//! - [`questions`]: how well search finds code for questions in prose on a real source tree.
//! - [`engine`]: model load, adapter activation, decode speed, memory per adapter, overhead.
//! - [`load`]: the whole server under concurrent streaming clients, with and without retrieval.
//! - [`api`]: graft beside other OpenAI-compatible servers on the same prompts (first token,
//!   typing, decode).
//! - [`train`]: LoRA training steps on the served base: tokens/s and peak memory.

pub mod api;
pub mod engine;
pub mod index;
pub mod load;
pub mod questions;
pub mod train;

use std::time::Duration;

use anyhow::{Context, Result};
use graft_index::{IndexLayout, IndexOptions};

use crate::models;

/// A scratch index for a benchmark, in a folder removed with it, or (`index.qdrant_url`)
/// with its vectors in a collection named for `bench` on the server.
struct ScratchIndex {
    folder: tempfile::TempDir,
    layout: IndexLayout,
    options: IndexOptions,
    /// Where its vectors go, in words.
    backend: String,
}

impl ScratchIndex {
    /// A scratch index configured as `config` says, the kit's files it needs fetched.
    fn new(config: &graft_core::Config) -> Result<ScratchIndex> {
        let kit = graft_kit::Kit::new(&config.kit.dir);
        models::ensure(&kit, &graft_wiring::index_artifacts(config)?, true)?;
        let folder = tempfile::tempdir().context("creating a scratch folder for the index")?;
        let layout = IndexLayout::new(folder.path().join("bench"));
        let backend = match &config.index.qdrant_url {
            Some(url) => format!("qdrant {url}"),
            None => "embedded".to_owned(),
        };
        Ok(ScratchIndex {
            folder,
            layout,
            options: graft_wiring::index_options(config),
            backend,
        })
    }

    /// The scratch folder (the index's, and room for a benchmark's own files).
    fn folder(&self) -> &std::path::Path {
        self.folder.path()
    }

    /// Runs `measure` on the index emptied, and empties it after (a server keeps collections
    /// between runs).
    fn measure<T>(&self, measure: impl FnOnce() -> Result<T>) -> Result<T> {
        let reset = || -> Result<()> {
            graft_index::vectors::reset(&self.options.backend, &self.layout, &self.layout.project())?;
            graft_index::catalog::reset(&self.options.backend, &self.layout)?;
            Ok(())
        };
        reset()?;
        let figures = measure();
        reset()?;
        figures
    }
}

/// An HTTP client that opens a fresh connection per request (a loopback connect is a fraction
/// of a millisecond): a server may close an idle kept-alive one just as the next request goes
/// out.
fn fresh_connections() -> reqwest::ClientBuilder {
    reqwest::Client::builder().pool_max_idle_per_host(0)
}

/// Another server to time beside graft (`--endpoint`), or graft itself.
#[derive(Clone)]
struct Server {
    name: String,
    /// The base URL, without `/v1`.
    base: String,
    model: String,
    key: Option<String>,
}

/// `NAME=URL` (or a bare URL, named by itself), asked for `model` ("default" when not given)
/// with the bearer token `key`.
fn endpoint(spec: &str, model: Option<&str>, key: Option<&str>) -> Result<Server> {
    let (name, url) = match spec.split_once('=') {
        Some((name, url)) if !name.is_empty() && !name.contains("://") => (name.to_owned(), url),
        _ => (spec.to_owned(), spec),
    };
    let base = crate::eval::target::base_url(url).with_context(|| format!("--endpoint `{spec}`: give NAME=URL"))?;
    Ok(Server {
        name,
        base,
        model: model.unwrap_or("default").to_owned(),
        key: key.map(str::to_owned),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p` quantile (0..=1) of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The median of some figures.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `bytes` in MB.
fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// This process's resident memory in MB; 0 where the system does not say (not Linux).
fn rss_mb() -> f64 {
    graft_core::memory::resident_bytes().map_or(0.0, megabytes)
}

/// This process's peak resident memory in MB; 0 where the system does not say.
fn peak_rss_mb() -> f64 {
    graft_core::memory::peak_bytes().map_or(0.0, megabytes)
}
