//! `POST /v1/embeddings` (and the embedding half of Ollama's `/api/embed`): inputs tokenized, each
//! embedded by the model's scheduler, in OpenAI's `list` of `embedding`s.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::PromptField;
use crate::chat::ChatError;
use crate::runtime::LoadedModel;
use crate::server::AppState;
use crate::server::body::parse_body;
use crate::server::errors::ApiError;

#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: PromptField,
    pub encoding_format: Option<String>,
    pub dimensions: Option<i64>,
}

/// Embeds every input and returns them in order, with the token count used.
pub async fn embed_all(
    model: &Arc<LoadedModel>,
    input: PromptField,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    if model.ranks() {
        return Err(ApiError::invalid(
            format!(
                "model {} is a reranker: it scores query/document pairs (POST /v1/rerank), it does not embed",
                model.name
            ),
            Some("model"),
        ));
    }
    if model.pooling == Some(models::bert::Pooling::None) {
        // llama.cpp's server refuses it on its OpenAI route too: every shape we serve (OpenAI's,
        // Ollama's) carries one vector per input, and this model gives one per token.
        return Err(ApiError::invalid(
            format!(
                "model {}'s pooling type is none: it gives a vector per token, and this API returns one \
                 vector per input; use a model with mean, cls or last pooling",
                model.name
            ),
            Some("model"),
        ));
    }
    let inputs = input.tokens(model, "input").await?;
    if inputs.is_empty() || inputs.iter().any(Vec::is_empty) {
        return Err(ApiError::invalid("input must not be empty", Some("input")));
    }
    let mut vectors = Vec::with_capacity(inputs.len());
    let mut tokens = 0;
    for (i, ids) in inputs.into_iter().enumerate() {
        if ids.len() > model.context_size {
            return Err(ApiError::invalid(
                format!(
                    "input[{i}] is {} tokens, more than the context size of {}",
                    ids.len(),
                    model.context_size
                ),
                Some("input"),
            ));
        }
        tokens += ids.len();
        vectors.push(
            model
                .scheduler
                .embed(ids)
                .await
                .map_err(|e| ApiError::from(ChatError::Generation(e)))?,
        );
    }
    Ok((vectors, tokens))
}

/// `POST /v1/embeddings`: an encoder's own pooling (mean, first or last token), L2-normalised; for a causal
/// model, the mean of its final hidden states, normalised, as llama.cpp gives with `--pooling mean`.
pub async fn embeddings(
    State(app): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    use base64::Engine as _;
    let request: EmbeddingRequest = parse_body(&body)?;
    if request.dimensions.is_some() {
        return Err(ApiError::invalid(
            "dimensions is not supported: embeddings have the model's hidden size",
            Some("dimensions"),
        ));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("encoding_format {other:?} is not float or base64"),
                Some("encoding_format"),
            ));
        }
    };
    let model = app.runtime.get(&request.model).await?;
    let (vectors, tokens) = embed_all(&model, request.input).await?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(
        Json(json!({"object": "list", "data": data, "model": model.name,
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
        .into_response(),
    )
}
