//! A JSON body extractor whose rejections are [`ApiError`]s, so a malformed, mistyped or
//! oversized body gets OpenAI's error shape instead of axum's plain text.
//!
//! The body is read as JSON whatever its `Content-Type` says: `curl -d '{...}'` sends
//! `application/x-www-form-urlencoded`, and llama.cpp's server accepts that too.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Like `axum::Json`, but lenient about `Content-Type` and rejecting with an [`ApiError`].
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(reject_body)?;
        parse(&bytes).map(Json)
    }
}

/// Parses a JSON body; the error names the field at fault (`messages[0].role`).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || inner.is_syntax() || inner.is_eof() {
            ApiError::invalid(format!("Invalid JSON body: {inner}"))
        } else {
            ApiError::invalid(format!("Invalid request: `{path}`: {inner}"))
        }
    })
}

fn reject_body(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "The request body is larger than this server accepts (server.max_body_bytes)")
    } else {
        ApiError::new(status, format!("Cannot read the request body: {}", rejection.body_text()))
    }
}
