//! `graft serve` (offline: everything must be on disk) and `graft up` (fetch what is missing,
//! then serve).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use graft_core::keys::ApiKeys;
use graft_core::reload::Snapshot;
use graft_core::Config;
use graft_engine::{Engine, Pool};
use graft_index::Embedder;
use graft_kit::Kit;
use graft_server::{AppState, ServerParts};

use crate::cli::ServeArgs;
use crate::reload::{self, file_stamp, Stamp, Stamps};
use crate::{index, models, reindexer};

/// `graft up`: the one command a new user runs. Fetches the model files the config needs and
/// serves, bringing every configured project's index up to date in the background (a
/// project's requests are answered without retrieved code until its index is ready).
pub fn up(args: ServeArgs) -> Result<()> {
    let started = load(&args)?;
    let config = &started.snapshot.config;
    // Keys and the address are checked, and the port taken, before fetching and loading.
    let (keys, listener) = open(config)?;
    let kit = Kit::new(&config.kit.dir);
    let mut needed = graft_wiring::model_artifacts(config)?;
    if !config.projects.is_empty() {
        needed.extend(graft_wiring::index_artifacts(config)?);
    }
    if needed.iter().any(|a| !kit.is_installed(a)) {
        eprintln!("fetching the offline model kit into {}", kit.dir().display());
    }
    models::ensure(&kit, &needed, false)?;
    let embedder = if config.projects.is_empty() {
        None
    } else {
        Some(index::load_embedder(config)?)
    };
    run(started, embedder, keys, listener, Indexing::InBackground)
}

/// `graft serve`.
pub fn serve(args: ServeArgs) -> Result<()> {
    let started = load(&args)?;
    let config = &started.snapshot.config;
    let (keys, listener) = open(config)?;
    let embedder = if config.projects.is_empty() {
        None
    } else {
        Some(index::load_embedder(config).context("projects are configured, so their embedding model is needed (`graft models fetch`)")?)
    };
    run(started, embedder, keys, listener, Indexing::Off)
}

/// Whether serving starts with the projects' indexes brought up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Indexing {
    /// `graft serve`: the indexes as they are.
    Off,
    /// `graft up`: each project re-indexed (incrementally) in turn while serving.
    InBackground,
}

/// The URL at which a client on this machine reaches a graft listening on `listen` (an
/// unspecified address, 0.0.0.0 or ::, answers on loopback).
pub fn local_url(listen: std::net::SocketAddr) -> String {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

/// Said of a project whose name an adapter folder of the store has too.
pub const ADAPTER_NAMED_AS_PROJECT: &str = "an adapter folder has this project's name; `model` with that name means the project, so the adapter cannot be requested by name (rename its folder)";

/// The config graft serves with, as read at its start: a later read of the file is compared
/// with it ([`reload::on_change`]).
struct Started {
    snapshot: Snapshot,
    /// The config file.
    path: PathBuf,
    /// Its stamp from just before it was read.
    stamp: Stamp,
}

fn load(args: &ServeArgs) -> Result<Started> {
    let path = args.config.config.clone();
    let stamp = file_stamp(Some(&path));
    let mut snapshot = models::load_snapshot(&path)?;
    if let Some(listen) = args.listen {
        snapshot.config.server.listen = listen;
    }
    Ok(Started { snapshot, path, stamp })
}

/// The API keys as loaded, with the keys file's stamp from just before: a change made while
/// graft fetches and loads its models is read once it serves.
struct LoadedKeys {
    keys: ApiKeys,
    stamp: Stamp,
}

/// The API keys, and the listening socket: refused on a public address without keys, and
/// taken before anything slow so that a busy port is reported at once.
fn open(config: &Config) -> Result<(LoadedKeys, std::net::TcpListener)> {
    let stamp = file_stamp(config.server.api_keys_file.as_deref());
    let keys = ApiKeys::load(config)?;
    let listen = config.server.listen;
    if !listen.ip().is_loopback() && keys.is_empty() && !config.server.allow_unauthenticated {
        bail!(
            "refusing to listen on {listen} with no API keys: anyone who can reach it could use it. \
             Configure keys (server.api_keys_file or {}), listen on 127.0.0.1, or set \
             server.allow_unauthenticated = true",
            config.server.api_keys_env
        );
    }
    let listener = std::net::TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    listener.set_nonblocking(true).context("setting up the listening socket")?;
    Ok((LoadedKeys { keys, stamp }, listener))
}

fn run(started: Started, embedder: Option<Embedder>, keys: LoadedKeys, listener: std::net::TcpListener, indexing: Indexing) -> Result<()> {
    let config = started.snapshot.config.clone();
    let listen = config.server.listen;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async move {
        let gguf = graft_wiring::base_gguf(&config)?;
        let base = graft_wiring::base_model(&config, gguf);
        tracing::info!(model = %base.name, path = %base.gguf.display(), "loading the base model");
        let engine = Arc::new(Engine::load(&base).await?);
        let pool = Arc::new(Pool::new(engine, graft_wiring::adapter_store(&config), graft_wiring::pool_limits(&config))?);
        let store = graft_engine::pool::store_names(&config.adapters.dir);
        for project in &config.projects {
            if let Some(adapter) = project.adapter.as_ref().filter(|a| !store.contains(a)) {
                tracing::warn!(project = %project.name, adapter = %adapter, "the project's adapter is not in the adapter store; its requests will fail until it is");
            }
            if store.contains(&project.name) {
                tracing::warn!(project = %project.name, "{ADAPTER_NAMED_AS_PROJECT}");
            }
        }
        for alias in config.model.aliases.iter().filter(|a| store.contains(a)) {
            tracing::warn!(alias = %alias, "an adapter folder has the name of one of the base model's aliases; `model` with that name means the base, so the adapter cannot be requested by name (rename its folder)");
        }

        let listener = tokio::net::TcpListener::from_std(listener).with_context(|| format!("cannot listen on {listen}"))?;
        let listen = listener.local_addr().unwrap_or(listen);
        let state = AppState::new(ServerParts {
            pool,
            aliases: config.model.aliases.clone(),
            generation: config.generation.clone(),
            server: graft_wiring::server_config(&config),
            keys: keys.keys,
            projects: graft_wiring::projects(&config, embedder.map(Arc::new)),
        });
        // Marked before the first request can arrive, so each project reports itself as
        // re-indexing from the start.
        let (reindexer, indexing) = match indexing {
            Indexing::InBackground => {
                let (reindexer, task) = reindexer::start(&state, Duration::from_secs(config.index.refresh_secs));
                (Some(reindexer), Some(task))
            }
            Indexing::Off => (None, None),
        };
        let names: Vec<&str> = std::iter::once(config.model.name.as_str())
            .chain(config.projects.iter().map(|p| p.name.as_str()))
            .collect();
        eprintln!(
            "graft is serving {} on http://{listen}  (OpenAI base URL: http://{listen}/v1)",
            names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        );
        // The background tasks start once that line is out, so what they say comes after it.
        let seen = Stamps {
            config: started.stamp,
            keys: keys.stamp,
        };
        reload::on_change(&state, started.snapshot, started.path, seen, reindexer);
        if let Some(indexing) = indexing {
            tokio::spawn(indexing);
        }
        let grace = Duration::from_secs(config.server.shutdown_timeout_secs);
        graft_server::serve(listener, state, config.server.max_body_bytes, shutdown_signal(), grace).await?;
        Ok(())
    });
    // Index runs stop at their next step once the server stops; blocking work still running
    // after this long is left behind, as safely as a kill would leave it (`graft_index::indexer`).
    runtime.shutdown_timeout(BLOCKING_WORK_WAIT);
    if served.is_ok() {
        eprintln!("graft stopped");
    }
    served
}

/// How long graft waits, once it stops serving, for blocking work (an index run's step, a
/// search) to end before it exits anyway.
const BLOCKING_WORK_WAIT: Duration = Duration::from_secs(10);

/// A server for `config` in this process, on a free loopback port, with no keys (benches and
/// evaluation talk to it over HTTP, as clients do). It serves until the runtime ends.
pub async fn start_on_loopback(config: &Config, embedder: Option<Embedder>) -> Result<std::net::SocketAddr> {
    let gguf = graft_wiring::base_gguf(config)?;
    let base = graft_wiring::base_model(config, gguf);
    let engine = Arc::new(Engine::load(&base).await?);
    let pool = Arc::new(Pool::new(
        engine,
        graft_wiring::adapter_store(config),
        graft_wiring::pool_limits(config),
    )?);
    let state = AppState::new(ServerParts {
        pool,
        aliases: config.model.aliases.clone(),
        generation: config.generation.clone(),
        server: graft_wiring::server_config(config),
        keys: ApiKeys::default(),
        projects: graft_wiring::projects(config, embedder.map(Arc::new)),
    });
    let max_body_bytes = config.server.max_body_bytes;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = graft_server::serve(listener, state, max_body_bytes, std::future::pending(), Duration::ZERO).await;
    });
    Ok(addr)
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
