//! A JSON body extractor whose rejections are [`ApiError`]s, so a malformed, mistyped or
//! oversized body gets OpenAI's error shape instead of axum's plain text.
//!
//! The whole body must arrive within [`BodyDeadline`] (a client sending a byte a second gets
//! 408). The body is read as JSON whatever its `Content-Type` says: `curl -d '{...}'` sends
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
        let Body(bytes) = Body::from_request(req, state).await?;
        parse(&bytes).map(Json)
    }
}

/// A body read as [`Json`] reads it (within [`BodyDeadline`]), for a handler that parses it
/// with [`parse`] once it has seen which request it is (`/v1/completions` takes OpenAI's and
/// Tabby's).
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let deadline = req.extensions().get::<BodyDeadline>().map(|d| d.0);
        let read = Bytes::from_request(req, state);
        let bytes = match deadline {
            Some(deadline) => tokio::time::timeout(deadline, read).await.map_err(|_| {
                ApiError::new(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "The request body did not arrive within {} s (server.read_timeout_secs)",
                        deadline.as_secs()
                    ),
                )
            })?,
            None => read.await,
        }
        .map_err(reject_body)?;
        Ok(Body(bytes))
    }
}

/// How long a client has to send a whole request body (`server.read_timeout_secs`), as a
/// request extension the router adds.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub std::time::Duration);

/// Parses a JSON body; the error names the field at fault (`messages[0].role`).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || inner.is_syntax() || inner.is_eof() {
            ApiError::invalid(format!("Invalid JSON body: {inner}"))
        } else {
            ApiError::invalid(format!("Invalid request: `{path}`: {inner}"))
        }
    })?;
    // One JSON value and nothing after it but white space: anything else is a client's bug
    // (or a smuggling attempt), not something to guess about.
    de.end()
        .map_err(|e| ApiError::invalid(format!("Invalid JSON body: more data after the JSON value ({e})")))?;
    Ok(value)
}

fn reject_body(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "The request body is larger than this server accepts (server.max_body_bytes)",
        )
    } else {
        ApiError::new(status, format!("Cannot read the request body: {}", rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_and_nothing_after_it() {
        let ok: serde_json::Value = parse(b" {\"a\": 1}\n ").unwrap();
        assert_eq!(ok["a"], 1);
        for garbage in [&b"{\"a\": 1} trailing"[..], b"{\"a\": 1}{\"b\": 2}", b"{\"a\": 1}\x00"] {
            let err = parse::<serde_json::Value>(garbage).unwrap_err();
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(err.message.contains("after the JSON value"), "{}", err.message);
        }
    }
}
