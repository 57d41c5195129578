//! graft-server: the OpenAI-compatible HTTP API.
//!
//! - [`router`] builds the axum app: routes, body limit, per-request tracing spans, panic
//!   catching. [`serve`] runs it until a shutdown signal, finishing requests in flight.
//! - [`routes`]: the handlers. [`openai`]: the wire types. [`error`]: every error body, in
//!   OpenAI's shape. [`json`]: the body extractor. [`state`]: what handlers share.
//!
//! The server composes the engine (and later retrieval); it holds no model logic itself.

pub mod error;
pub mod json;
pub mod openai;
pub mod routes;
pub mod state;

use std::future::Future;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use state::AppState;

/// The whole HTTP app.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/health", get(routes::system::health))
        .route("/v1/models", get(routes::models::list))
        .route("/v1/chat/completions", post(routes::chat::completions))
        .fallback(routes::system::not_found)
        .method_not_allowed_fallback(routes::system::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| panic_response()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        id = %uuid::Uuid::new_v4().simple(),
                    )
                })
                .on_response(|res: &Response, latency: Duration, _: &tracing::Span| {
                    tracing::info!(status = res.status().as_u16(), ms = latency.as_millis() as u64, "response");
                }),
        )
        .with_state(state)
}

fn panic_response() -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error while handling the request").into_response()
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting connections and
/// waits for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
