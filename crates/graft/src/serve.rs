//! `graft serve` (offline: everything must be on disk) and `graft up` (fetch what is missing,
//! then serve).

use anyhow::{Context, Result};
use graft_core::Config;
use graft_engine::{BaseModel, Engine};
use graft_kit::Kit;
use graft_server::AppState;

use crate::cli::ServeArgs;
use crate::{index, models};

/// `graft up`: the one command a new user runs. Fetches the model files the config needs,
/// brings every configured project's index up to date, then serves.
pub fn up(args: ServeArgs) -> Result<()> {
    let config = load(&args)?;
    let kit = Kit::new(&config.kit.dir);
    let mut needed = models::needed_by(&config)?;
    if !config.projects.is_empty() {
        needed.extend(index::needed_artifacts(&config)?);
    }
    if needed.iter().any(|a| !kit.is_installed(a)) {
        eprintln!("fetching the offline model kit into {}", kit.dir().display());
    }
    models::ensure(&kit, &needed, false)?;
    if !config.projects.is_empty() {
        let embedder = index::load_embedder(&config)?;
        for project in &config.projects {
            eprintln!("indexing project `{}` ({})", project.name, project.path.display());
            let report = index::run_index(&config, &project.name, &project.path, &embedder, false)?;
            eprintln!(
                "  {} files, {} chunks ({} embedded now) in {:.1}s",
                report.files_indexed,
                report.chunks,
                report.embeddings,
                report.elapsed.as_secs_f64()
            );
        }
    }
    run(config)
}

/// `graft serve`.
pub fn serve(args: ServeArgs) -> Result<()> {
    run(load(&args)?)
}

fn load(args: &ServeArgs) -> Result<Config> {
    let mut config = models::load_config(&args.config.config)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    Ok(config)
}

fn run(config: Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let kit = Kit::new(&config.kit.dir);
        let gguf = models::resolve(&kit, &config.model.gguf).context("`model.gguf`")?;
        let base = BaseModel {
            name: config.model.name.clone(),
            gguf,
            device: config.model.device,
            max_num_seqs: config.model.max_num_seqs,
        };
        tracing::info!(model = %base.name, path = %base.gguf.display(), "loading the base model");
        let engine = Engine::load(&base).await?;

        let listen = config.server.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let listen = listener.local_addr().unwrap_or(listen);
        let state = AppState::new(engine, config.generation.clone());
        let app = graft_server::router(state, config.server.max_body_bytes);
        eprintln!(
            "graft is serving `{}` on http://{listen}  (OpenAI base URL: http://{listen}/v1)",
            config.model.name
        );
        graft_server::serve(listener, app, shutdown_signal()).await?;
        eprintln!("graft stopped");
        Ok(())
    })
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
