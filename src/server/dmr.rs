//! Docker Model Runner's store API, for its CLI's habits: `GET /models`, `GET /models/{name}`,
//! `POST /models/create` (pull, streaming JSON progress lines), `DELETE /models/{name}`, and
//! `POST /engines/_configure` (per-model runtime settings).

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
use crate::store::settings::{self, SettingsError};
use crate::store::{LocalModel, ModelSettings};

/// A stored model in Docker Model Runner's JSON shape (which `ls --json` and `inspect` print too), its
/// fields in DMR's order.
#[derive(Debug, Serialize)]
pub struct ModelJson<'a> {
    pub id: String,
    pub tags: Vec<String>,
    pub created: i64,
    pub config: &'a crate::artifact::ModelConfig,
    /// What it serves (`ModelConfig::capabilities`).
    pub capabilities: Vec<&'static str>,
    /// `model configure`'s settings, when it set any.
    #[serde(skip_serializing_if = "no_settings")]
    pub settings: &'a ModelSettings,
}

fn no_settings(settings: &&ModelSettings) -> bool {
    settings.is_empty()
}

/// `model` in DMR's shape.
pub fn model_json(model: &LocalModel) -> ModelJson<'_> {
    ModelJson {
        id: model.id.to_string(),
        tags: model.familiar_names(),
        created: model.created().map_or(0, |c| c.timestamp()),
        config: &model.config.config,
        capabilities: model.config.config.capabilities(),
        settings: &model.settings,
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

/// Docker Model Runner's `POST /engines/_configure` body: the model and the settings it loads with.
#[derive(Debug, Deserialize)]
pub struct ConfigureRequest {
    pub model: String,
    /// DMR's CLI sends -1 for "not given".
    #[serde(rename = "context-size")]
    pub context_size: Option<i64>,
    #[serde(rename = "reasoning-budget")]
    pub reasoning_budget: Option<i64>,
    /// A duration string (`"10m"`, `"-1"`), or seconds.
    pub keep_alive: Option<Value>,
    /// llama.cpp's flags; the ones this runner has an equivalent of are honoured, others refused.
    #[serde(rename = "runtime-flags", default)]
    pub runtime_flags: Vec<String>,
    /// The same as one string, split at white space.
    #[serde(rename = "raw-runtime-flags", default)]
    pub raw_runtime_flags: String,
    #[serde(default)]
    pub llamacpp: LlamaCppSettings,
    /// Clear the stored settings before applying these (ours; DMR has no way to unset).
    #[serde(default)]
    pub reset: bool,
    /// DMR's other fields (speculative decoding, vLLM's): refused by name rather than ignored.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LlamaCppSettings {
    #[serde(rename = "reasoning-budget")]
    pub reasoning_budget: Option<i64>,
}

impl ConfigureRequest {
    /// The settings this request sets, checked.
    pub fn settings(&self) -> Result<ModelSettings, ApiError> {
        fn invalid(param: &'static str) -> impl Fn(SettingsError) -> ApiError {
            move |e| ApiError::invalid(e.to_string(), Some(param))
        }
        if let Some(field) = self.other.keys().find(|k| k.as_str() != "mode") {
            return Err(ApiError::invalid(
                format!(
                    "{field:?} is not supported by this runner; it takes context-size, reasoning-budget, keep_alive and the runtime flags --ctx-size and --reasoning-budget"
                ),
                Some(field),
            ));
        }
        let flags = self
            .runtime_flags
            .iter()
            .map(String::as_str)
            .chain(self.raw_runtime_flags.split_whitespace());
        let mut settings = settings::from_runtime_flags(flags).map_err(invalid("runtime-flags"))?;
        if let Some(n) = self.context_size.filter(|n| *n != -1) {
            settings.context_size =
                Some(settings::context_size(n).map_err(invalid("context-size"))?);
        }
        if let Some(n) = self.reasoning_budget.or(self.llamacpp.reasoning_budget) {
            settings.reasoning_budget =
                Some(settings::reasoning_budget(n).map_err(invalid("reasoning-budget"))?);
        }
        match &self.keep_alive {
            None | Some(Value::Null) => {}
            Some(value) => {
                let text = match value {
                    Value::String(s) => s.trim().to_string(),
                    other => other.to_string(),
                };
                settings::parse_keep_alive(&text).map_err(invalid("keep_alive"))?;
                settings.keep_alive = Some(text);
            }
        }
        Ok(settings)
    }
}

/// `POST /engines/_configure` (and `/engines/{backend}/_configure`): stores a model's runtime settings.
/// A loaded model picks them up when it is next idle; answers 202 with the settings now in force.
pub async fn configure(
    State(app): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ConfigureRequest = parse_body(&body)?;
    let update = request.settings()?;
    let store = app.runtime.store().clone();
    let model = request.model.clone();
    let (id, settings) =
        tokio::task::spawn_blocking(move || store.configure(&model, &update, request.reset))
            .await
            .map_err(|e| ApiError::internal(format!("configure stopped: {e}")))??;
    tracing::info!(model = %request.model, ?settings, "model configured");
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({"model": request.model, "id": id.to_string(), "settings": settings})),
    )
        .into_response())
}
