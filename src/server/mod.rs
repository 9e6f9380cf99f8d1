//! `model serve`: the HTTP server, axum only. OpenAI's `/v1` API (also under Docker Model Runner's
//! `/engines/v1` and `/engines/{backend}/v1` paths), Anthropic's `/v1/messages`, Ollama's `/api`, Docker
//! Model Runner's `/models` and `/engines/_configure`, `/tokenize` and `/detokenize`, `/mcp`, the MCP
//! Registry API over the catalog (`/v0.1/servers`), the gateway's `/gateway/servers` and
//! `/gateway/reload`, health and Prometheus metrics, optional bearer-key auth and CORS.
//!
//! Data flows one way: handler -> `chat` (validation, prompt, grammar) -> runtime (model lifecycle) ->
//! scheduler -> events back. Handlers translate HTTP into a `chat::ChatInput` and events back into HTTP;
//! they never touch tensors.

pub mod anthropic;
pub mod body;
pub mod console;
pub mod dmr;
pub mod errors;
pub mod gateway_admin;
pub mod guard;
pub mod mcp;
pub mod mcp_registry;
mod metrics;
pub mod ollama;
pub mod openai;
pub mod pulling;
pub mod rerank;
pub mod token_quota;
pub mod tokenize;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::runtime::ModelRuntime;
use errors::ApiError;

/// Docker Model Runner's port.
pub const DEFAULT_PORT: u16 = 12434;

/// How long a stopping server waits for in-flight requests before it cuts them.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// What the server is started with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub api_key: Option<String>,
    /// Allowed CORS origins; empty: CORS off.
    pub cors_origins: Vec<String>,
    /// The `Host` and `Origin` values answered (loopback, the bound address, `--allowed-host`, `--cors`).
    pub host_policy: guard::HostPolicy,
    pub body_limit_bytes: usize,
    /// MCP tools a chat request without `tools` gets (`--mcp-tools`).
    pub default_mcp_tools: crate::chat::mcp_tools::DefaultMcpTools,
    /// Whether thinking is split from answers or left raw (`--reasoning-format`).
    pub reasoning_output: crate::chat::ReasoningOutput,
    /// Whether `/` and `/ui/` serve the web console (`--no-ui` turns it off).
    pub console: bool,
}

/// State shared by every handler.
pub struct AppState {
    pub runtime: ModelRuntime,
    pub config: ServerConfig,
    /// The MCP gateway, when `--mcp-config` names servers.
    pub gateway: Option<Arc<crate::mcp::Gateway>>,
    /// Stored Responses API responses (`previous_response_id`, `GET /v1/responses/{id}`).
    pub responses: Arc<openai::responses::store::ResponsesStore>,
}

/// The full router.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/chat/completions", post(openai::chat::chat_completions))
        .route("/completions", post(openai::completions::completions))
        .route("/embeddings", post(openai::embeddings::embeddings))
        .route("/rerank", post(rerank::rerank))
        .route("/score", post(rerank::score))
        .route("/models", get(openai::models::list_models))
        .route("/models/{*id}", get(openai::models::get_model))
        .route("/responses", post(openai::responses::create))
        .route(
            "/responses/{id}",
            get(openai::responses::retrieve).delete(openai::responses::delete),
        )
        .route(
            "/responses/{id}/input_items",
            get(openai::responses::input_items),
        );
    let mut app = Router::new()
        .nest("/v1", v1.clone())
        .nest("/engines/v1", v1.clone())
        .nest("/engines/{backend}/v1", v1)
        .route("/metrics", get(metrics::metrics))
        .route("/models", get(dmr::list))
        .route("/models/create", post(dmr::create))
        .route("/models/{*name}", get(dmr::get).delete(dmr::delete))
        .route("/engines/_configure", post(dmr::configure))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/engines/{backend}/_configure", post(dmr::configure))
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/pull", post(ollama::pull))
        .route("/api/delete", axum::routing::delete(ollama::delete))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/rerank", post(rerank::rerank))
        .merge(anthropic::routes())
        .nest("/anthropic", anthropic::routes())
        .merge(mcp_registry::routes())
        .merge(gateway_admin::routes())
        // Inside the API key's layer: only callers it let in are counted.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            token_quota::admit,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ))
        .route("/health", get(health));
    if let Some(gateway) = state.gateway.clone() {
        // Outside the API-key layer: /mcp names its callers by gateway client tokens.
        app = app.merge(mcp::routes(&state, gateway));
    }
    app = if state.config.console {
        // Outside the API-key layer: the page must load to ask for the key; its API calls carry it.
        app.merge(console::routes())
    } else {
        app.route("/", get(|| async { "model-runner is running" }))
    };
    app = app
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(state.config.body_limit_bytes))
        .layer(middleware::from_fn(body_too_large_as_json))
        // A panic in a handler is that request's 500; the server and every other request go on.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_as_json,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::browser_guard,
        ));
    if !state.config.cors_origins.is_empty() {
        app = app.layer(cors(&state.config.cors_origins));
    }
    app.with_state(state)
}

fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let layer = CorsLayer::new().allow_methods(Any).allow_headers(Any);
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        let list = origins
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect::<Vec<_>>();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

/// Every route but `/health` needs the key when one is set; a gateway client's token opens only the
/// inference routes (`guard::client_route`).
async fn require_api_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(key) = &state.config.api_key {
        let presented = mcp::bearer(&headers).or_else(|| {
            // Anthropic's clients send their key as `x-api-key`.
            headers.get("x-api-key").and_then(|v| v.to_str().ok())
        });
        let credential = if guard::secret_matches(presented, key) {
            guard::Credential::ApiKey
        } else if state.gateway.as_ref().is_some_and(|g| {
            g.is_enforced()
                && matches!(
                    g.authenticate(presented),
                    Some(crate::mcp::Caller::Client(_))
                )
        }) {
            guard::Credential::GatewayClient
        } else {
            guard::Credential::None
        };
        let allowed = match credential {
            guard::Credential::ApiKey => true,
            guard::Credential::GatewayClient => {
                guard::client_route(request.method(), request.uri().path())
            }
            guard::Credential::None => false,
        };
        if !allowed {
            return guard::refusal(credential, request.uri().path());
        }
    }
    next.run(request).await
}

/// What a panicking handler's client gets: OpenAI's error shape, without the panic's text.
fn panic_as_json(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    tracing::error!(panic = %what, "a request handler panicked");
    ApiError::internal("the server failed on this request; it has been logged").into_response()
}

/// axum answers an oversized body with plain text; clients expect their API's JSON.
async fn body_too_large_as_json(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let error = ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "invalid_request_error",
            code: Some("request_too_large"),
            param: None,
            message: "the request body is larger than the server accepts".into(),
            retry_after: None,
        };
        return anthropic::error::respond_for(&path, error);
    }
    response
}

async fn health(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let loaded = state.runtime.loaded().await;
    let mut body = json!({
        "status": "ok",
        "device": state.runtime.device_name(),
        "threads": kernels::pool().threads(),
        "models_loaded": loaded.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
    });
    if let Some(gateway) = &state.gateway {
        body["mcp_servers"] = gateway
            .server_report()
            .await
            .into_iter()
            .map(|status| {
                json!({"name": status.name, "running": status.running,
                       "state": status.state.as_str(), "crashes": status.crashes})
            })
            .collect();
    }
    axum::Json(body)
}

/// Serves until Ctrl-C or SIGTERM, then lets in-flight streams finish (bounded) and returns.
pub async fn serve(state: Arc<AppState>) -> anyhow::Result<()> {
    let addr = state.config.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    // The address really bound: with `--port 0` the system picks the port, and this line says which.
    let addr = listener.local_addr().unwrap_or(addr);
    let expiring = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            expiring.runtime.expire().await;
        }
    });
    tracing::info!(%addr, "serving");
    eprintln!("model-runner listening on http://{addr}");
    if !addr.ip().is_loopback() && state.config.api_key.is_none() {
        tracing::warn!(
            %addr,
            "serving beyond loopback without --api-key: anyone who can reach this address can run, pull and delete models"
        );
        eprintln!(
            "warning: {addr} is reachable from other machines and no --api-key is set; anyone who can reach it can use and change this server"
        );
    }
    if let Some(gateway) = &state.gateway {
        gateway.spawn_maintenance();
    }
    let gateway = state.gateway.clone();
    let (stopping, mut stop_seen) = tokio::sync::watch::channel(false);
    let served = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stopping.send(true);
    });
    // In-flight requests get a bounded time to finish; a stream that never ends cannot hold the stop.
    let drain_deadline = async move {
        if stop_seen.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(SHUTDOWN_DRAIN).await;
    };
    let served = tokio::select! {
        served = served => served,
        () = drain_deadline => {
            tracing::warn!(seconds = SHUTDOWN_DRAIN.as_secs(), "requests still running at the drain deadline are cut");
            Ok(())
        }
    };
    if let Some(gateway) = gateway {
        gateway.shutdown().await;
    }
    served?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
