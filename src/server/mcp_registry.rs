//! The MCP Registry API (v0.1) over this runner's catalog: `GET /v0.1/servers` (with `search`, `limit`
//! and cursor paging), `GET /v0.1/servers/{name}/versions` and `.../versions/{version|latest}`, in the
//! official registry's shapes (`{"servers": [{"server": {...}, "_meta": {...}}], "metadata":
//! {"nextCursor", "count"}}`), so registry clients can browse what this gateway offers. Each entry's
//! `_meta` says where it came from and under which labels the gateway has it installed.
//!
//! The catalog is read per request (the shipped one, `<home>/mcp-catalog/`, `MODEL_RUNNER_MCP_CATALOG`),
//! so files the user adds show without a restart. The routes sit inside the API-key layer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::errors::ApiError;
use crate::mcp::catalog::{Catalog, Entry, Source};
use crate::mcp::config_edit::ConfigFile;

/// The registry's default and largest page sizes.
const DEFAULT_LIMIT: usize = 30;
const MAX_LIMIT: usize = 100;
/// This runner's `_meta` namespace.
const META_KEY: &str = "dev.model-runner/catalog";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v0.1/servers", get(list))
        .route("/v0.1/servers/{name}/versions", get(versions))
        .route("/v0.1/servers/{name}/versions/{version}", get(version))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
    limit: Option<String>,
    search: Option<String>,
    version: Option<String>,
    /// Accepted for compatibility; catalog entries carry no update times, so nothing is filtered.
    #[allow(dead_code)]
    updated_since: Option<String>,
}

fn catalog(state: &AppState) -> Result<Catalog, ApiError> {
    Catalog::load(
        state.runtime.store().root(),
        &crate::mcp::catalog::extra_from_env(),
    )
    .map_err(|e| ApiError::internal(e.to_string()))
}

/// Labels under which the gateway's config has each catalog entry installed.
fn installed(state: &AppState) -> HashMap<String, Vec<(String, bool)>> {
    let mut by_name: HashMap<String, Vec<(String, bool)>> = HashMap::new();
    let Some(path) = state.gateway.as_ref().and_then(|g| g.config_path()) else {
        return by_name;
    };
    let Ok(file) = ConfigFile::open(path) else {
        return by_name;
    };
    for (label, server) in file.servers() {
        if let Some(name) = server["catalog"]["name"].as_str() {
            let enabled = !server["disabled"].as_bool().unwrap_or(false);
            by_name
                .entry(name.to_string())
                .or_default()
                .push((label, enabled));
        }
    }
    by_name
}

fn response(entry: &Entry, installed: &HashMap<String, Vec<(String, bool)>>) -> Value {
    let source = match &entry.source {
        Source::Shipped => json!("shipped"),
        Source::File(path) => json!(path.display().to_string()),
    };
    let labels: Vec<Value> = installed
        .get(&entry.server.name)
        .map(|l| {
            l.iter()
                .map(|(label, enabled)| json!({"label": label, "enabled": enabled}))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "server": entry.server,
        "_meta": {META_KEY: {"source": source, "installed": labels, "isLatest": true}},
    })
}

async fn list(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
                    Some("limit"),
                ));
            }
        },
    };
    let catalog = catalog(&state)?;
    let entries = match query.search.as_deref().filter(|s| !s.is_empty()) {
        Some(term) => catalog.search(term),
        None => catalog.entries(),
    };
    let entries: Vec<&Entry> = entries
        .into_iter()
        .filter(|e| match query.version.as_deref() {
            None | Some("latest") | Some("") => true,
            Some(v) => e.server.version == v,
        })
        // The cursor is the last name of the previous page; entries are sorted by name.
        .filter(|e| {
            query
                .cursor
                .as_deref()
                .is_none_or(|c| e.server.name.as_str() > c)
        })
        .collect();
    let page = &entries[..entries.len().min(limit)];
    let installed = installed(&state);
    let mut metadata = json!({"count": page.len()});
    if entries.len() > page.len()
        && let Some(last) = page.last()
    {
        metadata["nextCursor"] = json!(last.server.name);
    }
    Ok(Json(json!({
        "servers": page.iter().map(|e| response(e, &installed)).collect::<Vec<_>>(),
        "metadata": metadata,
    })))
}

fn find(state: &AppState, name: &str) -> Result<(Entry, Value), ApiError> {
    let catalog = catalog(state)?;
    let entry = catalog
        .entries()
        .into_iter()
        .find(|e| e.server.name == name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no server named {name}")))?;
    let body = response(&entry, &installed(state));
    Ok((entry, body))
}

async fn versions(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, body) = find(&state, &name)?;
    Ok(Json(json!({"servers": [body], "metadata": {"count": 1}})))
}

async fn version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (entry, body) = find(&state, &name)?;
    if version != "latest" && version != entry.server.version {
        return Err(ApiError::not_found(format!(
            "{name} has no version {version} here (the catalog has {})",
            entry.server.version
        )));
    }
    Ok(Json(body))
}
