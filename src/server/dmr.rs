//! Docker Model Runner's store API, for its CLI's habits: `GET /models`, `GET /models/{name}`,
//! `POST /models/create` (pull, streaming JSON progress lines) and `DELETE /models/{name}`.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::body::parse_body;
use super::errors::ApiError;
use super::pulling::PullUpdate;
use crate::progress::TransferEvent;
use crate::reference::ModelSource;
use crate::store::LocalModel;

/// A stored model in Docker Model Runner's JSON shape (which `ls --json` and `inspect` print too), its
/// fields in DMR's order.
#[derive(Debug, Serialize)]
pub struct ModelJson<'a> {
    pub id: String,
    pub tags: Vec<String>,
    pub created: i64,
    pub config: &'a crate::artifact::ModelConfig,
}

/// `model` in DMR's shape.
pub fn model_json(model: &LocalModel) -> ModelJson<'_> {
    ModelJson {
        id: model.id.to_string(),
        tags: model.familiar_names(),
        created: model.created().map_or(0, |c| c.timestamp()),
        config: &model.config.config,
    }
}

/// `GET /models`: every stored model in DMR's JSON shape (as `model ls --json`).
pub async fn list(State(app): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let models = app.runtime.store().list()?;
    Ok(Json(json!(
        models.iter().map(model_json).collect::<Vec<_>>()
    )))
}

/// `GET /models/{name}`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let model = app.runtime.store().resolve(&name)?;
    Ok(Json(json!(model_json(&model))))
}

/// `DELETE /models/{name}`.
pub async fn delete(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let _ = app.runtime.unload(Some(&name)).await;
    let removal = app.runtime.store().remove(&name, false)?;
    Ok(Json(
        json!({"untagged": removal.untagged, "deleted": removal.deleted_models}),
    ))
}

#[derive(Debug, Deserialize)]
pub struct CreateRequest {
    pub from: String,
}

/// `POST /models/create {"from": REF}`: pulls, streaming one JSON progress object per line.
pub async fn create(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let request: CreateRequest = parse_body(&body)?;
    let source = ModelSource::parse(&request.from)
        .map_err(|e| ApiError::invalid(e.to_string(), Some("from")))?;
    let updates = super::pulling::start(app.runtime.store().clone(), source, Default::default());
    let lines = tokio_stream::wrappers::UnboundedReceiverStream::new(updates).map(|update| match update {
        PullUpdate::Progress(TransferEvent::Started { id, total, done }) => {
            json!({"type": "progress", "message": format!("Downloading {id}"), "layer": {"id": id, "size": total, "current": done}})
        }
        PullUpdate::Progress(TransferEvent::Advanced { id, done }) => {
            json!({"type": "progress", "message": format!("Downloading {id}"), "layer": {"id": id, "current": done}})
        }
        PullUpdate::Progress(TransferEvent::Finished { id, .. }) => {
            json!({"type": "progress", "message": format!("Downloaded {id}"), "layer": {"id": id}})
        }
        PullUpdate::Progress(TransferEvent::Note(note)) => json!({"type": "progress", "message": note}),
        PullUpdate::Finished(Ok(id)) => json!({"type": "success", "message": format!("Model pulled successfully: {id}")}),
        PullUpdate::Finished(Err(e)) => json!({"type": "error", "message": e.to_string()}),
    });
    let lines = lines.map(|line| Ok::<_, std::convert::Infallible>(format!("{line}\n")));
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(lines),
    )
        .into_response())
}
