//! The gateway's administration routes, for `model mcp server ...`: `GET /gateway/servers` (each
//! server's state: running, idle, crashed, breaker open; its tools count and last error) and
//! `POST /gateway/reload` (reread the config file, as SIGHUP does, so that a CLI edit takes effect
//! without a restart). Inside the API-key layer: a gateway client's token does not open them.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::AppState;
use super::errors::ApiError;
use crate::mcp::Gateway;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/gateway/servers", get(servers))
        .route("/gateway/reload", post(reload))
}

fn gateway(state: &AppState) -> Result<&Arc<Gateway>, ApiError> {
    state.gateway.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "this server runs no MCP gateway: start it with --mcp-config FILE, or create the default config (model mcp server add ...) and restart it",
        )
    })
}

fn config_path(gateway: &Gateway) -> Value {
    json!(gateway.config_path().map(|p| p.display().to_string()))
}

async fn servers(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let gateway = gateway(&state)?;
    Ok(Json(json!({
        "config": config_path(gateway),
        "servers": gateway.server_report().await,
    })))
}

async fn reload(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let gateway = gateway(&state)?;
    gateway.reload().await.map_err(|e| {
        ApiError::invalid(format!("the MCP configuration was not reloaded: {e}"), None)
    })?;
    Ok(Json(json!({
        "config": config_path(gateway),
        "servers": gateway.server_names(),
    })))
}
