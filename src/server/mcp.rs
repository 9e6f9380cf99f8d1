//! The gateway's HTTP side: `/mcp` (rmcp's streamable-HTTP service inside the axum app, behind a layer
//! that names the caller by bearer token and answers 401 and 429 itself, and one that answers session
//! termination with the statuses the spec names), and the runner's models as the MCP endpoint's `chat`
//! and `list_models` tools.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};

use super::AppState;
use crate::chat::{ChatInput, pipeline};
use crate::engine::FinishReason;
use crate::engine::chat_template::ChatMessage;
use crate::mcp::endpoint::{Endpoint, HttpCaller};
use crate::mcp::upstream::{AnswerOptions, LocalAnswer};
use crate::mcp::{Caller, Gateway, LocalModels, LocalToolError};
use crate::validation::GenerationParams;

/// The streamable-HTTP transport's session header.
const SESSION_HEADER: &str = "mcp-session-id";

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// `/mcp`, when a gateway is configured.
pub fn routes(state: &Arc<AppState>, gateway: Arc<Gateway>) -> Router<Arc<AppState>> {
    gateway.register_local_models(Arc::new(RunnerModels(state.clone())));
    let endpoint = Endpoint::new(gateway, Caller::Anonymous);
    let mut hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let host = state.config.addr.ip().to_string();
    if !hosts.contains(&host) && !state.config.addr.ip().is_unspecified() {
        hosts.push(host);
    }
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_sse_keep_alive(Some(std::time::Duration::from_secs(15)));
    // Browsers send Origin; a page on another site must not reach local tools (DNS rebinding). Loopback
    // pages (the web console among them) and `--cors` origins may, as `guard::browser_guard` allows.
    let mut origins: Vec<String> = [
        "http://localhost:*",
        "http://127.0.0.1:*",
        "http://[::1]:*",
        "https://localhost:*",
        "https://127.0.0.1:*",
    ]
    .map(String::from)
    .to_vec();
    let ip = state.config.addr.ip();
    if !ip.is_loopback() && !ip.is_unspecified() {
        // The console served on the bound address calls /mcp from there.
        origins.push(format!("http://{}", state.config.addr));
    }
    origins.extend(state.config.cors_origins.iter().cloned());
    config = config.with_allowed_origins(origins);
    if state.config.addr.ip().is_unspecified() {
        // Bound to every interface: any Host may be the right one, so only Origin guards.
        config = config.disable_allowed_hosts();
    }
    let sessions = Arc::new(LocalSessionManager::default());
    let service =
        StreamableHttpService::new(move || Ok(endpoint.new_session()), sessions.clone(), config);
    Router::new()
        .route_service("/mcp", service)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            terminate_as_specified(sessions.clone(), request, next)
        }))
        .layer(middleware::from_fn_with_state(state.clone(), mcp_access))
}

/// `DELETE /mcp` as the streamable-HTTP transport specifies it (and the Python SDK expects): 200 when
/// the session is terminated, 404 for a session the server does not know (rmcp answers 202 for both).
async fn terminate_as_specified(
    sessions: Arc<LocalSessionManager>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::DELETE {
        return next.run(request).await;
    }
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(Arc::<str>::from);
    if let Some(id) = &session
        && !sessions.has_session(id).await.unwrap_or(false)
    {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "no such MCP session"}}),
            ),
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    if response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::OK;
    }
    response
}

/// Names the caller (401 for an unknown token once clients are configured, or without the server's API
/// key), and takes `tools/call`, `resources/read` and `prompts/get` requests from its rate budget (429
/// with `Retry-After`).
async fn mcp_access(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(gateway) = state.gateway.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let token = bearer(request.headers()).map(String::from);
    let caller = if gateway.is_enforced() {
        match gateway.authenticate(token.as_deref()) {
            Some(caller @ Caller::Client(_)) => caller,
            _ => return unauthorized("a gateway client token is required"),
        }
    } else {
        if let Some(key) = &state.config.api_key
            && !super::guard::secret_matches(token.as_deref(), key)
        {
            return unauthorized("the API key is required");
        }
        Caller::Anonymous
    };
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.config.body_limit_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let message: Option<Value> = serde_json::from_slice(&bytes).ok();
    // What reaches a server's tools, resources or prompts counts against the caller's rate.
    let is_call = matches!(
        message
            .as_ref()
            .and_then(|m| m.get("method"))
            .and_then(Value::as_str),
        Some("tools/call" | "resources/read" | "prompts/get")
    );
    if is_call && let Err(e) = gateway.check_rate(&caller) {
        let retry = match &e {
            crate::mcp::McpError::RateLimited { retry_after, .. } => retry_after.as_secs().max(1),
            _ => 1,
        };
        let id = message
            .as_ref()
            .and_then(|m| m.get("id"))
            .cloned()
            .unwrap_or(Value::Null);
        let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": e.to_string()}});
        let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
        if let Ok(value) = HeaderValue::from_str(&retry.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(HttpCaller(caller));
    next.run(request).await
}

fn unauthorized(message: &str) -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        axum::Json(
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32001, "message": message}}),
        ),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The runner's models for the MCP endpoint's own tools.
pub struct RunnerModels(pub Arc<AppState>);

impl LocalModels for RunnerModels {
    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, LocalToolError>> {
        Box::pin(async move {
            let models = self.0.runtime.store().list()?;
            Ok(models.iter().flat_map(|m| m.familiar_names()).collect())
        })
    }

    fn chat(
        &self,
        model: String,
        messages: Vec<(String, String)>,
        options: AnswerOptions,
    ) -> BoxFuture<'_, Result<LocalAnswer, LocalToolError>> {
        Box::pin(async move {
            let model = self.0.runtime.get(&model).await?;
            let messages = messages
                .into_iter()
                .map(|(role, content)| ChatMessage::new(&role, content))
                .collect();
            let params = GenerationParams {
                max_tokens: options.max_tokens,
                temperature: options.temperature,
                stop: options.stop,
                ..Default::default()
            };
            let chat_failed = |e: crate::chat::ChatError| LocalToolError::Chat(Box::new(e));
            let generation = pipeline::start(&model, ChatInput::messages(messages, params))
                .await
                .map_err(chat_failed)?;
            let mut choices = generation.collect().await.map_err(chat_failed)?;
            let choice = choices.pop().unwrap_or_default();
            Ok(LocalAnswer {
                hit_limit: choice.finish == Some(FinishReason::Length),
                text: choice.text,
            })
        })
    }
}
