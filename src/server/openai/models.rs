//! `GET /v1/models` and `GET /v1/models/{id}`: the store's models in OpenAI's `model` shape.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::server::AppState;
use crate::server::errors::ApiError;

/// OpenAI's `model`, with what it serves (`completion`, `tools`, `embedding`, `rerank`) beside.
fn model_json(name: &str, created: i64, capabilities: &[&str]) -> Value {
    json!({"id": name, "object": "model", "created": created, "owned_by": "model-runner",
           "capabilities": capabilities})
}

/// `GET /v1/models`: every model in the store, by each of its names.
pub async fn list_models(State(app): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let models = app.runtime.store().list()?;
    let data: Vec<Value> = models
        .iter()
        .flat_map(|m| {
            let created = m.created().map_or(0, |c| c.timestamp());
            let capabilities = m.config.config.capabilities();
            m.familiar_names()
                .into_iter()
                .map(move |n| model_json(&n, created, &capabilities))
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /v1/models/{id}` (ids contain slashes).
pub async fn get_model(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let model = app.runtime.store().resolve(&id)?;
    Ok(Json(model_json(
        &id,
        model.created().map_or(0, |c| c.timestamp()),
        &model.config.config.capabilities(),
    )))
}
