//! Authentication: the bearer token of each request checked against the configured API keys,
//! and the [`Caller`] it identifies handed to the handlers, which check what it may use.
//!
//! With no keys configured every request is an open [`Caller`]. `GET /health` never needs a
//! key. 401 means no key or an unknown one; 403 means a known key that may not do this.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use graft_core::keys::ApiKey;

use crate::error::ApiError;
use crate::state::AppState;

/// Who made a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No keys are configured: everything is allowed.
    Open,
    Key(Arc<ApiKey>),
}

impl Caller {
    /// May this caller use `model`, which names a project or adapter (`base` is the base
    /// model's name, open to every caller)?
    pub fn may_use(&self, model: &str, base: &str) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key(key) => model == base || key.allows(model),
        }
    }

    /// A 403 unless the caller may use `model`.
    pub fn check(&self, model: &str, base: &str) -> Result<(), ApiError> {
        if self.may_use(model, base) {
            return Ok(());
        }
        Err(ApiError {
            param: Some("model"),
            ..ApiError::forbidden(format!("This API key may not use `{model}`"))
        })
    }

    /// A 403 unless the caller holds an admin key (or no keys are configured).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Open => Ok(()),
            Caller::Key(key) if key.admin => Ok(()),
            Caller::Key(_) => Err(ApiError::forbidden("This endpoint needs an admin API key")),
        }
    }

    /// A name for logs: the key's name, never the key.
    pub fn name(&self) -> &str {
        match self {
            Caller::Open => "open",
            Caller::Key(key) => &key.name,
        }
    }
}

/// Middleware: identifies the caller from `Authorization: Bearer KEY` and stores it in the
/// request's extensions, or answers 401.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let caller = match identify(&state, &request) {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    tracing::Span::current().record("caller", caller.name());
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn identify(state: &AppState, request: &Request) -> Result<Caller, ApiError> {
    let keys = state.keys();
    if keys.is_empty() {
        return Ok(Caller::Open);
    }
    let Some(header) = request.headers().get(AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "You didn't provide an API key. Send it in the header `Authorization: Bearer YOUR_KEY`",
        ));
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| ApiError::unauthorized("The Authorization header must be `Bearer YOUR_KEY`"))?;
    keys.find(token)
        .map(|key| Caller::Key(Arc::new(key.clone())))
        .ok_or_else(|| ApiError::unauthorized("Incorrect API key provided"))
}
