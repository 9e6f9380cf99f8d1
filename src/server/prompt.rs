//! Prompts made off the async runtime. Rendering a chat template and tokenizing are CPU work that a
//! hostile template or a huge prompt can stretch, so they run on the blocking pool within a deadline:
//! the runtime's threads stay free for every other request (and `/health`), and a request whose prompt
//! takes too long gets an error instead of holding its connection for ever.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use super::errors::ApiError;
use crate::engine::chat_template::ChatMessage;
use crate::runtime::LoadedModel;

/// How long one request's prompt may take to render and tokenize. The template engine's fuel bounds
/// the work itself; this bounds the wait for it.
pub const PROMPT_DEADLINE: Duration = Duration::from_secs(30);

/// The conversation rendered by the model's chat template (with `tools` where the template takes
/// them) and tokenized; failures are errors of `field`.
pub async fn chat(
    model: &Arc<LoadedModel>,
    messages: Vec<ChatMessage>,
    tools: Option<Value>,
    field: &'static str,
) -> Result<Vec<u32>, ApiError> {
    let model = model.clone();
    off_runtime(move || {
        let text = model
            .template
            .render(&messages, tools.as_ref(), true)
            .map_err(|e| ApiError::invalid(e.to_string(), Some(field)))?;
        encode(&model, &text, field)
    })
    .await
}

/// Texts tokenized as they are (completions, embeddings, raw generation).
pub async fn texts(
    model: &Arc<LoadedModel>,
    texts: Vec<String>,
    field: &'static str,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let model = model.clone();
    off_runtime(move || texts.iter().map(|t| encode(&model, t, field)).collect()).await
}

fn encode(model: &LoadedModel, text: &str, field: &'static str) -> Result<Vec<u32>, ApiError> {
    model
        .tokenizer
        .encode(text, true)
        .map_err(|e| ApiError::invalid(e.to_string(), Some(field)))
}

/// Runs `work` on the blocking pool; a panic in it is this request's 500, a deadline passed its 503.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::time::timeout(PROMPT_DEADLINE, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(stopped)) => {
            tracing::error!(error = %stopped, "preparing a prompt failed");
            Err(ApiError::internal(
                "the server failed to prepare this prompt; it has been logged",
            ))
        }
        Err(_) => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: Some("timeout"),
            param: None,
            message: format!(
                "preparing the prompt took longer than {} s (the model's chat template or the prompt's size)",
                PROMPT_DEADLINE.as_secs()
            ),
        }),
    }
}
