//! The one error table of the API: every failure becomes an HTTP status and OpenAI's error shape,
//! `{"error": {"message", "type", "param", "code"}}`, here and nowhere else.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::chat::ChatError;
use crate::mcp::McpError;
use crate::runtime::RuntimeError;
use crate::scheduler::{GenerationError, SubmitError};
use crate::server::openai::responses::store::ResponsesStoreError;
use crate::store::StoreError;
use crate::tools::ToolError;
use crate::validation::ValidationError;

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_SECONDS: u32 = 1;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub message: String,
    /// Seconds the client should wait before trying again (`Retry-After`), where that is known.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorFields<'a>,
}

#[derive(Serialize)]
struct ErrorFields<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: None,
            param: param.map(str::to_string),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            code: Some("invalid_api_key"),
            param: None,
            message: "Incorrect or missing API key: send it as 'Authorization: Bearer <key>'"
                .into(),
            retry_after: None,
        }
    }

    /// The caller is known but may not do this (OpenAI's `permission_error`).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            kind: "permission_error",
            code: None,
            param: None,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: None,
            param: None,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            code: None,
            param: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The JSON body, also sent as an SSE event when a stream fails midway.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody {
            error: ErrorFields {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        })
        .unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        let retry_after = match self.retry_after {
            Some(seconds) => Some(seconds),
            None if self.status == StatusCode::SERVICE_UNAVAILABLE => {
                Some(u64::from(RETRY_AFTER_SECONDS))
            }
            None => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        let code = match &e {
            ValidationError::ContextOverflow { .. } => Some("context_length_exceeded"),
            _ => None,
        };
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code,
            param: e.param().map(str::to_string),
            message: e.to_string(),
            retry_after: None,
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::NotFound(_) => Self {
                status: StatusCode::NOT_FOUND,
                kind: "invalid_request_error",
                code: Some("model_not_found"),
                param: Some("model".into()),
                message: e.to_string(),
                retry_after: None,
            },
            RuntimeError::Reference(_) => Self::invalid(e.to_string(), Some("model")),
            // As Ollama and llama.cpp's server answer a model that fails to load: a 500, here with a
            // code that tells it from a failure of the server itself.
            RuntimeError::Load(_) => Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "server_error",
                code: Some("model_load_failed"),
                param: Some("model".into()),
                message: e.to_string(),
                retry_after: None,
            },
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        RuntimeError::from(e).into()
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: Some("server_overloaded"),
            param: None,
            message: e.to_string(),
            retry_after: None,
        }
    }
}

impl From<ResponsesStoreError> for ApiError {
    fn from(e: ResponsesStoreError) -> Self {
        tracing::error!(error = %e, "the responses store failed");
        Self {
            code: Some("responses_store_failed"),
            ..Self::internal(e.to_string())
        }
    }
}

impl From<ToolError> for ApiError {
    fn from(e: ToolError) -> Self {
        ApiError::invalid(e.to_string(), Some(e.param()))
    }
}

impl From<McpError> for ApiError {
    fn from(e: McpError) -> Self {
        let (status, kind, code) = match &e {
            McpError::Denied { .. } | McpError::Refused(_) => {
                (StatusCode::FORBIDDEN, "permission_error", None)
            }
            McpError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            McpError::TokensSpent { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("insufficient_quota"),
            ),
            McpError::Unavailable { .. }
            | McpError::Protocol { .. }
            | McpError::Oversize { .. }
            | McpError::Transport { .. } => (
                StatusCode::BAD_GATEWAY,
                "server_error",
                Some("mcp_server_unavailable"),
            ),
            McpError::Timeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                Some("mcp_timeout"),
            ),
            McpError::UnknownTool(_)
            | McpError::UnknownServer(_)
            | McpError::UnknownResource(_)
            | McpError::UnknownPrompt(_)
            | McpError::InvalidArguments { .. }
            | McpError::Script(_) => (StatusCode::BAD_REQUEST, "invalid_request_error", None),
        };
        let retry_after = match &e {
            // Whole seconds, rounded up: a client that waits that long is let in.
            McpError::RateLimited { retry_after, .. }
            | McpError::TokensSpent { retry_after, .. } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
            }
            _ => None,
        };
        Self {
            status,
            kind,
            code,
            param: None,
            message: e.to_string(),
            retry_after,
        }
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::Validation(e) => e.into(),
            ChatError::Tool(e) => e.into(),
            ChatError::Mcp { error, param } => Self {
                param: Some(param),
                ..error.into()
            },
            ChatError::Forbidden(message) => Self::forbidden(message),
            ChatError::Template { field, .. }
            | ChatError::Tokenize { field, .. }
            | ChatError::Grammar { field, .. } => Self::invalid(e.to_string(), Some(field)),
            ChatError::PromptTooLong { field, .. } => Self {
                status: StatusCode::BAD_REQUEST,
                kind: "invalid_request_error",
                code: Some("context_length_exceeded"),
                param: Some(field.into()),
                message: e.to_string(),
                retry_after: None,
            },
            ChatError::PromptDeadline { .. } => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "server_error",
                code: Some("timeout"),
                param: None,
                message: e.to_string(),
                retry_after: None,
            },
            ChatError::Submit(e) => e.into(),
            ChatError::Generation(GenerationError::Submit(e)) => e.into(),
            ChatError::Generation(e) => Self::internal(e.to_string()),
            ChatError::NotGenerative { .. } => Self::invalid(e.to_string(), Some("model")),
            ChatError::Internal(message) => Self::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn mcp_refusals_keep_their_meaning_as_statuses() {
        let status = |e: McpError| ApiError::from(ChatError::mcp(e, "tools[0]")).status;
        let denied = McpError::Denied {
            client: "c".into(),
            tool: "t".into(),
        };
        assert_eq!(status(denied), StatusCode::FORBIDDEN);
        let limited = McpError::RateLimited {
            client: "c".into(),
            retry_after: Duration::from_millis(2300),
        };
        let response = ApiError::from(ChatError::mcp(limited, "tools[0]")).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3", "rounded up");
        let down = McpError::Unavailable {
            server: "s".into(),
            reason: "r".into(),
        };
        assert_eq!(status(down), StatusCode::BAD_GATEWAY);
        let slow = McpError::Timeout {
            server: "s".into(),
            tool: "t".into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(status(slow), StatusCode::GATEWAY_TIMEOUT);
        let unknown = ApiError::from(ChatError::mcp(
            McpError::UnknownServer("x".into()),
            "tools[0]",
        ));
        assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
        assert_eq!(unknown.param.as_deref(), Some("tools[0]"));
    }

    #[test]
    fn a_prompt_too_long_for_the_context_is_a_400_naming_the_field() {
        let error = ApiError::from(ChatError::PromptTooLong {
            field: "messages",
            bytes: 9000,
            limit: 8192,
            context: 256,
        });
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.code, Some("context_length_exceeded"));
        assert_eq!(error.param.as_deref(), Some("messages"));
        assert!(error.message.contains("256"), "{}", error.message);
    }

    #[test]
    fn a_model_that_cannot_load_says_so_with_its_code() {
        let error = ApiError::from(RuntimeError::Load(
            crate::runtime::LoadError::TemplateNotUtf8,
        ));
        assert_eq!(error.code, Some("model_load_failed"));
        assert_eq!(error.param.as_deref(), Some("model"));
        assert!(error.status.is_server_error());
    }
}
