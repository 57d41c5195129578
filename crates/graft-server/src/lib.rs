//! graft-server: the OpenAI-compatible HTTP API.
//!
//! - [`router`] builds the axum app: routes, authentication ([`auth`]), body limit, metrics,
//!   per-request tracing spans, panic catching. [`serve`] runs it on [`conn`]'s connections
//!   (limits on connections, slow and silent clients) until a shutdown signal,
//!   then gives requests in flight a bounded time to finish, and ends the rest with an error.
//! - [`routes`]: the handlers. [`openai`]: the wire types. [`error`]: every error body, in
//!   OpenAI's shape. [`json`]: the body extractor. [`state`]: what handlers share and how a
//!   request's `model` resolves.
//! - [`generation`] runs a generation under [`limits`] (slots, queue, deadline);
//!   [`projects`] holds the indexes; [`prompt`] lays out chat and completion prompts (with
//!   retrieved code) and checks their length; [`metrics`] counts for `GET /metrics`.
//! - [`auth`] identifies the [`caller`] of each request from its key; [`conn`] accepts
//!   connections within limits.
//!
//! The server composes the engine and the index; it holds no model or search logic itself.

pub mod auth;
pub mod caller;
pub mod conn;
pub mod error;
pub mod generation;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod openai;
pub mod path;
pub mod projects;
pub mod prompt;
pub mod routes;
pub mod state;
pub mod sticky;

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use state::{AppState, ServerParts};

/// The whole HTTP app.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    // Everything but /, /health (and llama.cpp's /v1/health) and Ollama's /api/version needs a key (when keys are
    // configured).
    let api = Router::new()
        .route("/v1/models", get(routes::models::list))
        .route("/v1/models/{*model}", get(routes::models::retrieve))
        .route("/v1/chat/completions", post(routes::chat::completions))
        .route("/v1/completions", post(routes::completions::completions))
        .route("/v1/responses", post(routes::responses::create))
        .route("/v1/messages", post(routes::anthropic::messages))
        .route("/v1/messages/count_tokens", post(routes::anthropic::count_tokens))
        .route(
            "/v1/responses/{id}",
            get(routes::responses::stored).delete(routes::responses::stored),
        )
        .route("/v1/embeddings", post(routes::embeddings::embeddings))
        .route("/infill", post(routes::llama_cpp::infill::infill))
        .route("/completion", post(routes::llama_cpp::completion::completion))
        .route("/completions", post(routes::llama_cpp::completion::completion))
        .route("/tokenize", post(routes::tokenize::tokenize))
        .route("/detokenize", post(routes::tokenize::detokenize))
        .route("/tokenizer_info", get(routes::tokenize::tokenizer_info))
        .route("/props", get(routes::llama_cpp::props::props))
        .route("/v1/events", post(routes::tabby::event))
        .route("/v1/load_lora_adapter", post(routes::adapters::load))
        .route("/v1/unload_lora_adapter", post(routes::adapters::unload))
        .route("/v1/projects", get(routes::projects::list))
        .route("/v1/projects/{name}", get(routes::projects::status))
        .route("/v1/projects/{name}/reindex", post(routes::projects::reindex))
        .route("/v1/projects/{name}/search", post(routes::projects::search))
        .route("/metrics", get(routes::system::metrics))
        // Ollama's native API (`routes::ollama`).
        .route("/api/tags", get(routes::ollama::tags))
        .route("/api/ps", get(routes::ollama::ps))
        .route("/api/show", post(routes::ollama::show))
        .route("/api/chat", post(routes::ollama::chat))
        .route("/api/generate", post(routes::ollama::generate))
        .route("/api/embed", post(routes::ollama::embed))
        .route("/api/embeddings", post(routes::ollama::embeddings))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::authenticate));
    Router::new()
        .route("/", get(routes::system::root))
        .route("/health", get(routes::system::health))
        .route("/v1/health", get(routes::system::health))
        .route("/api/version", get(routes::ollama::version))
        .merge(api)
        .fallback(routes::system::not_found)
        .method_not_allowed_fallback(routes::system::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::Extension(json::BodyDeadline(state.conn_limits().read_timeout)))
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| panic_response()))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        id = %uuid::Uuid::new_v4().simple(),
                        caller = tracing::field::Empty,
                    )
                })
                .on_response(|res: &Response, latency: Duration, _: &tracing::Span| {
                    tracing::info!(status = res.status().as_u16(), ms = latency.as_millis() as u64, "response");
                }),
        )
        .with_state(state)
}

/// Middleware: counts every request by route and status, with its latency (to the response
/// head; a stream's body may go on after it).
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics().request(&route, response.status().as_u16(), started.elapsed());
    response
}

fn panic_response() -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error while handling the request").into_response()
}

/// Serves `state`'s app on `listener` until `shutdown` completes; then stops the projects'
/// index runs at their next step, stops accepting connections and waits for the requests in
/// flight, at most `grace`. Generations still
/// running after that end with an error event (a stream) or a 503, and the server returns once
/// they are told (or after a few more seconds).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    max_body_bytes: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (signalled_tx, mut signalled_rx) = tokio::sync::watch::channel(false);
    let stopping = state.clone();
    let shutdown = async move {
        shutdown.await;
        // An index run (hours for a large repository's first one) must not hold the
        // process after its requests are done.
        stopping.projects().stop_indexing();
        let _ = signalled_tx.send(true);
    };
    let app = router(state.clone(), max_body_bytes);
    let server = conn::serve_connections(listener, app, state.conn_limits(), shutdown);
    tokio::pin!(server);
    let deadline = async move {
        let _ = signalled_rx.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = &mut server => return Ok(()),
        () = deadline => {}
    }
    tracing::warn!(
        seconds = grace.as_secs(),
        "requests still running after the shutdown grace period; ending them"
    );
    state.cut_generations();
    if tokio::time::timeout(CUT_WAIT, &mut server).await.is_err() {
        tracing::warn!("connections still open after the generations were ended; stopping anyway");
    }
    Ok(())
}

/// How long connections get to send their last error event once generations are cut.
const CUT_WAIT: Duration = Duration::from_secs(3);
