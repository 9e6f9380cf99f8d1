//! Anthropic's error shape, `{"type": "error", "error": {"type", "message"}}`, with its statuses. It
//! renders the server's one error table (`server::errors::ApiError`) rather than keeping a second one:
//! the status decides Anthropic's `type`, and a full scheduler (our 503) becomes `overloaded_error` 529.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::chat::ChatError;
use crate::server::errors::ApiError;

/// Anthropic's status for an overloaded API.
const OVERLOADED: u16 = 529;

/// An error answered in Anthropic's shape.
#[derive(Debug, Clone)]
pub struct AnthropicError(pub ApiError);

impl AnthropicError {
    /// A 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self(ApiError::invalid(message, None))
    }

    /// The status and Anthropic's `type` for it.
    fn status_and_type(&self) -> (StatusCode, &'static str) {
        let status = self.0.status;
        let kind = match status.as_u16() {
            400 | 415 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | OVERLOADED => "overloaded_error",
            504 => "timeout_error",
            _ if status.is_client_error() => "invalid_request_error",
            _ => "api_error",
        };
        let status = if kind == "overloaded_error" {
            StatusCode::from_u16(OVERLOADED).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
        } else {
            status
        };
        (status, kind)
    }

    /// The JSON body, also the data of a stream's `error` event.
    pub fn body(&self) -> Value {
        let (_, kind) = self.status_and_type();
        json!({"type": "error", "error": {"type": kind, "message": self.0.message}})
    }
}

impl From<ApiError> for AnthropicError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<ChatError> for AnthropicError {
    fn from(e: ChatError) -> Self {
        Self(e.into())
    }
}

impl From<crate::runtime::RuntimeError> for AnthropicError {
    fn from(e: crate::runtime::RuntimeError) -> Self {
        Self(e.into())
    }
}

impl From<crate::validation::ValidationError> for AnthropicError {
    fn from(e: crate::validation::ValidationError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_type();
        let mut response = (status, Json(self.body())).into_response();
        // Keep what the table added (Retry-After on an overloaded scheduler).
        let table = self.0.into_response();
        for (name, value) in table.headers() {
            if name != axum::http::header::CONTENT_TYPE
                && name != axum::http::header::CONTENT_LENGTH
            {
                response.headers_mut().insert(name, value.clone());
            }
        }
        response
    }
}

/// Whether `path` is one of the Messages API's routes, whose errors take Anthropic's shape (the guard's
/// refusals included).
pub fn is_messages_path(path: &str) -> bool {
    let path = path.strip_prefix("/anthropic").unwrap_or(path);
    path == "/v1/messages" || path.starts_with("/v1/messages/")
}

/// `error` in the shape the client at `path` reads: Anthropic's on the Messages routes, OpenAI's elsewhere.
pub fn respond_for(path: &str, error: ApiError) -> Response {
    if is_messages_path(path) {
        AnthropicError(error).into_response()
    } else {
        error.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::SubmitError;

    fn kind_and_status(error: ApiError) -> (String, u16) {
        let e = AnthropicError(error);
        let body = e.body();
        (
            body["error"]["type"].as_str().unwrap().to_string(),
            e.into_response().status().as_u16(),
        )
    }

    #[test]
    fn statuses_map_onto_anthropic_error_types() {
        assert_eq!(
            kind_and_status(ApiError::invalid("x", None)),
            ("invalid_request_error".into(), 400)
        );
        assert_eq!(
            kind_and_status(ApiError::unauthorized()),
            ("authentication_error".into(), 401)
        );
        assert_eq!(
            kind_and_status(ApiError::forbidden("no")),
            ("permission_error".into(), 403)
        );
        assert_eq!(
            kind_and_status(ApiError::not_found("no")),
            ("not_found_error".into(), 404)
        );
        assert_eq!(
            kind_and_status(ApiError::internal("boom")),
            ("api_error".into(), 500)
        );
    }

    #[test]
    fn a_full_scheduler_is_overloaded_529() {
        let full = ApiError::from(SubmitError::QueueFull { waiting: 1 });
        assert_eq!(kind_and_status(full), ("overloaded_error".into(), 529));
    }

    #[test]
    fn messages_paths_are_told_apart() {
        assert!(is_messages_path("/v1/messages"));
        assert!(is_messages_path("/v1/messages/count_tokens"));
        assert!(is_messages_path("/anthropic/v1/messages"));
        assert!(!is_messages_path("/v1/chat/completions"));
        assert!(!is_messages_path("/v1/messagesx"));
    }
}
