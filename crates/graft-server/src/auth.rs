//! Authentication: the bearer token of each request (or its `x-api-key`, as Anthropic's SDKs
//! send it) checked against the configured API keys,
//! and the [`Caller`] it identifies handed to the handlers (as a request extension), which
//! check what it may use (`caller`).
//!
//! With no keys configured every request is an open [`Caller`]. `GET /health` never needs a
//! key. 401 means no key or an unknown one; 403 means a known key that may not do this.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use graft_core::keys::ApiKeys;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Middleware: identifies the caller from `Authorization: Bearer KEY` (or `x-api-key: KEY`) and stores it in the
/// request's extensions, or answers 401.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let caller = match identify(&state.keys(), request.headers()) {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    tracing::Span::current().record("caller", caller.name());
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The caller `headers` identify among `keys`.
pub fn identify(keys: &ApiKeys, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if keys.is_empty() {
        return Ok(Caller::Open);
    }
    let token = match (headers.get(AUTHORIZATION), headers.get("x-api-key")) {
        (Some(header), _) => header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| ApiError::unauthorized("The Authorization header must be `Bearer YOUR_KEY`"))?,
        // Anthropic's SDKs send the key as `x-api-key`.
        (None, Some(key)) => key.to_str().map(str::trim).unwrap_or_default(),
        (None, None) => {
            return Err(ApiError::unauthorized(
                "You didn't provide an API key. Send it in the header `Authorization: Bearer YOUR_KEY` (or `x-api-key: YOUR_KEY`)",
            ))
        }
    };
    keys.find(token)
        .map(|key| Caller::Key(Arc::new(key.clone())))
        .ok_or_else(|| ApiError::unauthorized("Incorrect API key provided"))
}
