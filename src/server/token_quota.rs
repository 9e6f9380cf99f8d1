//! The daily token quota (`tokensPerDay`) at the routes that generate: before the handler, a gateway
//! client whose tokens of the UTC day are spent is refused with 429 and `Retry-After` (until midnight)
//! in its API's error shape; an admitted request carries its `TokenAccount` to the handler, whose
//! generation is charged as it ends. A request admitted under the quota runs to its end, even past it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::anthropic::error::respond_for;
use super::errors::ApiError;
use super::guard;

/// Admits or refuses a generating request of a client with a token quota (see the module's doc).
pub async fn admit(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(gateway) = &state.gateway else {
        return next.run(request).await;
    };
    if !generating_route(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let presented = super::mcp::bearer(request.headers())
        .or_else(|| {
            request
                .headers()
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
        })
        .map(str::to_string);
    // Unknown tokens are the API key's layer's (or the MCP tools') to refuse.
    let Some(caller) = gateway.authenticate(presented.as_deref()) else {
        return next.run(request).await;
    };
    match gateway.admit_generation(&caller) {
        Ok(Some(account)) => {
            request.extensions_mut().insert(account);
        }
        Ok(None) => {}
        Err(spent) => {
            tracing::info!(client = caller.label(), "refused: daily token quota spent");
            return respond_for(request.uri().path(), ApiError::from(spent));
        }
    }
    next.run(request).await
}

/// Routes whose requests run the model to generate text (the ones a token quota counts).
fn generating_route(method: &Method, path: &str) -> bool {
    let path = guard::inference_path(path);
    let path = path.strip_prefix("/anthropic").unwrap_or(path);
    *method == Method::POST
        && matches!(
            path,
            "/v1/chat/completions"
                | "/v1/completions"
                | "/v1/responses"
                | "/v1/messages"
                | "/api/chat"
                | "/api/generate"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generating_routes_are_the_chat_apis_under_every_prefix() {
        for path in [
            "/v1/chat/completions",
            "/engines/v1/chat/completions",
            "/engines/llama.cpp/v1/completions",
            "/v1/responses",
            "/anthropic/v1/messages",
            "/api/chat",
            "/api/generate",
        ] {
            assert!(generating_route(&Method::POST, path), "{path}");
        }
        for path in ["/v1/embeddings", "/v1/messages/count_tokens", "/api/embed"] {
            assert!(!generating_route(&Method::POST, path), "{path}");
        }
        assert!(!generating_route(&Method::GET, "/v1/responses"));
    }
}
