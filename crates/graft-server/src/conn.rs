//! Accepting connections within limits, so that clients that are slow, silent or many cannot
//! take the server down: at most `server.max_connections` at once (further ones wait in the
//! listen backlog), each request's headers within `server.read_timeout_secs` (an idle
//! keep-alive connection is closed after it too), at most [`MAX_HEADERS`] headers. The body's
//! deadline is the JSON extractor's (`json`). HTTP/1.1 only, as hyper parses it: a request
//! with both `Content-Length` and `Transfer-Encoding`, or an unknown transfer coding, is
//! refused with 400 and its connection closed, so nothing can be smuggled behind it.
//!
//! Shutdown: once `shutdown` completes, the listener closes and every connection finishes the
//! request it is serving and closes. This module knows nothing of routes or models.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Most headers in one request; more get 431.
pub const MAX_HEADERS: usize = 100;

/// Connection limits (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub read_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for every connection to
/// finish its request and close.
pub async fn serve_connections(listener: TcpListener, app: Router, limits: ConnLimits, shutdown: impl Future<Output = ()> + Send) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Connections hold a receiver each: the sender sees them all gone when `closed` returns.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.read_timeout)
                .max_headers(MAX_HEADERS)
                .keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.wait_for(|s| *s) => connection.as_mut().graceful_shutdown(),
            }
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    stop_tx.closed().await;
}
