//! Every error the API returns, in OpenAI's JSON error shape with the matching status code:
//! `{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`.
//!
//! Handlers return [`ApiError`]; nothing else in the server writes an error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
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
            message: message.into(),
            param: None,
            code: None,
        }
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

    /// 404 for a `model` that graft does not serve.
    pub fn model_not_found(model: &str, available: &[&str]) -> ApiError {
        ApiError {
            param: Some("model"),
            code: Some("model_not_found"),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                format!("The model `{model}` does not exist. Available models: {}", available.join(", ")),
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
        (self.status, Json(body)).into_response()
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
            other => {
                tracing::error!(error = %other, "engine error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
            }
        }
    }
}
