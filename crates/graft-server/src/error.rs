//! Every error the API returns, in OpenAI's JSON error shape with the matching status code:
//! `{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`.
//!
//! Handlers return [`ApiError`]; nothing else in the server writes an error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use graft_engine::pool::PoolError;
use graft_engine::EngineError;
use serde::Serialize;

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<&'static str>,
    /// A machine-readable code, such as `model_not_found`.
    pub code: Option<&'static str>,
    /// Seconds a client should wait before retrying (503, 429): sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: clip_middle(message.into()),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 429 with `Retry-After`: too many requests at once.
    pub fn too_many_requests(message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            code: Some("rate_limit_exceeded"),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }

    /// 504: the request ran past `server.request_timeout_secs`.
    pub fn timeout(after: std::time::Duration) -> ApiError {
        ApiError {
            code: Some("timeout"),
            ..ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "The request did not finish within {} s (server.request_timeout_secs)",
                    after.as_secs()
                ),
            )
        }
    }

    /// 503: the server is shutting down and its grace period for requests in flight is over.
    pub fn shutting_down() -> ApiError {
        ApiError {
            code: Some("server_shutting_down"),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is shutting down and this generation ran past server.shutdown_timeout_secs; it was stopped",
            )
        }
    }

    /// 401: no key, or a key graft does not know.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("invalid_api_key"),
            ..ApiError::new(StatusCode::UNAUTHORIZED, message)
        }
    }

    /// 403: a valid key that may not do this.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("permission_denied"),
            ..ApiError::new(StatusCode::FORBIDDEN, message)
        }
    }

    /// 503 with `Retry-After`: the server is busy, not broken.
    pub fn busy(message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// 500: something failed inside the server. The client gets the error's first line (at
    /// most 300 characters): never a backtrace or anything else a dependency appended; the log
    /// gets all of it.
    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> ApiError {
        let full = error.to_string();
        tracing::error!(error = %full, "{context}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, first_line(&full, 300))
    }

    /// 400: the request is malformed or asks for something invalid.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 about one field.
    pub fn invalid_param(param: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param),
            ..ApiError::invalid(message)
        }
    }

    /// 400 for a field graft does not implement (rather than ignoring it).
    pub fn unsupported(param: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("unsupported_parameter"),
            ..ApiError::invalid_param(param, message)
        }
    }

    /// 404 for a `model` that graft does not serve.
    pub fn model_not_found(model: &str, available: &[&str]) -> ApiError {
        ApiError {
            param: Some("model"),
            code: Some("model_not_found"),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                if available.is_empty() {
                    format!("The model `{model}` does not exist")
                } else {
                    format!("The model `{model}` does not exist. Available models: {}", available.join(", "))
                },
            )
        }
    }

    /// OpenAI's `type` for this status.
    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND if self.code == Some("model_not_found") => "invalid_request_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Detail {
                message: &self.message,
                kind: self.kind(),
                param: self.param,
                code: self.code,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::InvalidRequest(message) => ApiError::invalid(message),
            EngineError::UnknownModel(message) => ApiError {
                param: Some("model"),
                code: Some("model_not_found"),
                ..ApiError::new(StatusCode::NOT_FOUND, format!("The model does not exist: {message}"))
            },
            other => ApiError::internal("engine error", &other),
        }
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> ApiError {
        match e {
            PoolError::Unknown(model) => ApiError::model_not_found(&model, &[]),
            PoolError::Engine { source, .. } => source.into(),
            PoolError::Busy { .. } => ApiError::busy(e.to_string(), 2),
            PoolError::InvalidName(_)
            | PoolError::OutsideStore { .. }
            | PoolError::Adapter(_)
            | PoolError::Merge {
                source: graft_engine::merge::MergeError::Adapter(_),
                ..
            } => ApiError::invalid(e.to_string()),
            PoolError::Merge { .. } => ApiError::internal("adapter merge failed", &e),
        }
    }
}

/// The most characters an error message keeps: a request's own value echoed back (a
/// 200,000-character model name, serde quoting a wrong-typed string) is cut in its middle, so
/// the message's start and the position serde names at its end survive.
const MESSAGE_MAX_CHARS: usize = 1_000;

/// `message` unchanged when it is short; else its first and last characters around a note of
/// how many were left out (cuts at character boundaries).
fn clip_middle(message: String) -> String {
    let total = message.chars().count();
    if total <= MESSAGE_MAX_CHARS {
        return message;
    }
    let (head, tail) = (MESSAGE_MAX_CHARS * 3 / 4, MESSAGE_MAX_CHARS / 4);
    let byte_at = |n: usize| message.char_indices().nth(n).map_or(message.len(), |(i, _)| i);
    let (head_end, tail_start) = (byte_at(head), byte_at(total - tail));
    format!(
        "{} ... ({} characters left out) ... {}",
        &message[..head_end],
        total - head - tail,
        &message[tail_start..]
    )
}

/// The first line of `text`, cut to at most `max` characters (at a character boundary).
fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("internal error");
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    }
}

/// The event that reports a failure in the middle of a stream (the status line is already
/// sent): OpenAI's error object as the event's data.
pub fn stream_error_event(e: &ApiError) -> axum::response::sse::Event {
    tracing::error!(status = e.status.as_u16(), error = %e.message, "generation failed while streaming");
    let error = serde_json::json!({"error": {"message": e.message, "type": e.kind(), "param": e.param, "code": e.code}});
    axum::response::sse::Event::default().data(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_shows_its_first_line_only() {
        let with_backtrace = "index out of range for embedding\n\nStack backtrace:\n   0: candle_core::error::Error::bt\n             at /root/.cargo/registry/src/candle-core/src/error.rs:264:25";
        let e = ApiError::internal("test", &with_backtrace);
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.message, "index out of range for embedding");
        let long = "é".repeat(400);
        let e = ApiError::internal("test", &long);
        assert_eq!(e.message.chars().count(), 303);
        let e: ApiError = EngineError::Generation(with_backtrace.into()).into();
        assert!(!e.message.contains("backtrace") && !e.message.contains(".rs:"), "{}", e.message);
    }

    #[test]
    fn a_long_message_keeps_its_ends_and_says_what_it_left_out() {
        let short = format!("The model `{}` does not exist", "m".repeat(900));
        assert_eq!(
            ApiError::invalid(short.clone()).message,
            short,
            "a message within the limit is kept whole"
        );
        let echoed = format!(
            "`model`: invalid type: string \"{}\", expected a map at line 1 column 200010",
            "é".repeat(200_000)
        );
        let left_out = echoed.chars().count() - MESSAGE_MAX_CHARS;
        let e = ApiError::invalid(echoed);
        assert!(e.message.starts_with("`model`: invalid type: string \"ééé"), "{}", &e.message[..40]);
        assert!(
            e.message.ends_with("expected a map at line 1 column 200010"),
            "the position survives"
        );
        assert!(
            e.message.contains(&format!(" ... ({left_out} characters left out) ... ")),
            "{}",
            e.message
        );
        assert!(e.message.chars().count() < 1_100, "{}", e.message.chars().count());
        let e = ApiError::model_not_found(&"x".repeat(50_000), &["smollm2"]);
        assert!(e.message.chars().count() < 1_100, "every constructor clips, model_not_found too");
    }
}
