//! Who made a request ([`Caller`], from the `auth` middleware) and what it may do: use a
//! model, or call an admin endpoint ([`Admin`], an extractor that answers 403 for others).
//! This module decides rights from the key alone; it knows nothing of the server's state.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use graft_core::keys::ApiKey;

use crate::error::ApiError;

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

/// A caller with an admin key (or any caller when no keys are configured). As a handler
/// argument it answers 403 for everyone else.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The `auth` middleware puts a caller on every request it lets through.
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("This endpoint needs an admin API key"))?;
        caller.require_admin()?;
        Ok(Admin(caller))
    }
}
