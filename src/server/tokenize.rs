//! `POST /tokenize` and `POST /detokenize`, for clients that count tokens, in both shapes they come in:
//! llama.cpp's server (`content`, `add_special`, `with_pieces`; answered with `tokens`, and `content`
//! back) and vLLM's (`model` with `prompt` or chat `messages`; answered with `count`, `max_model_len`,
//! `tokens`, `token_strs`, and `prompt` back). A request in llama.cpp's shape may leave out the model,
//! as llama.cpp serves one: it gets the one loaded (or, with none loaded, the one stored).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::body::parse_body;
use super::errors::ApiError;
use super::openai::chat::{ChatMessageIn, to_chat_messages};
use crate::chat::prompt;
use crate::runtime::LoadedModel;
use crate::validation;

/// Most tokens one `/detokenize` takes (a long context's worth, many times over).
const MAX_DETOKENIZE_TOKENS: usize = 1 << 20;

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    /// llama.cpp's text.
    pub content: Option<String>,
    /// vLLM's text.
    pub prompt: Option<String>,
    /// vLLM's chat shape: the conversation as the chat template renders it.
    pub messages: Option<Vec<ChatMessageIn>>,
    /// llama.cpp: add BOS (default false).
    pub add_special: Option<bool>,
    /// vLLM: add BOS (default true).
    pub add_special_tokens: Option<bool>,
    /// vLLM, chat shape: end with the assistant's turn opened (default true).
    pub add_generation_prompt: Option<bool>,
    /// llama.cpp: each token with its text.
    #[serde(default)]
    pub with_pieces: bool,
    /// vLLM: each token's text alongside.
    #[serde(default)]
    pub return_token_strs: bool,
}

#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<i64>,
}

/// `POST /tokenize`.
pub async fn tokenize(
    State(app): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: TokenizeRequest = parse_body(&body)?;
    let model = model_for(&app, request.model.as_deref()).await?;
    let llama_cpp_shape = request.content.is_some();
    let tokens = match (request.content, request.prompt, request.messages) {
        (Some(text), None, None) => {
            prompt::text(
                &model,
                text,
                request.add_special.unwrap_or(false),
                "content",
            )
            .await?
        }
        (None, Some(text), None) => {
            let add_bos = request.add_special_tokens.unwrap_or(true);
            prompt::text(&model, text, add_bos, "prompt").await?
        }
        (None, None, Some(messages)) => {
            let messages = to_chat_messages(messages)?;
            let add_generation_prompt = request.add_generation_prompt.unwrap_or(true);
            prompt::conversation(&model, messages, add_generation_prompt, "messages").await?
        }
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of content (llama.cpp), prompt or messages (vLLM)",
                None,
            ));
        }
    };
    if llama_cpp_shape {
        if !request.with_pieces {
            return Ok(Json(json!({ "tokens": tokens })));
        }
        let pieces: Vec<Value> = tokens
            .iter()
            .map(|&id| json!({"id": id, "piece": piece(&model, id)}))
            .collect();
        return Ok(Json(json!({ "tokens": pieces })));
    }
    let token_strs = request.return_token_strs.then(|| {
        tokens
            .iter()
            .map(|&id| {
                model
                    .tokenizer
                    .token_text(id)
                    .unwrap_or_default()
                    .to_string()
            })
            .collect::<Vec<_>>()
    });
    Ok(Json(json!({
        "count": tokens.len(),
        "max_model_len": model.context_size,
        "tokens": tokens,
        "token_strs": token_strs,
    })))
}

/// `POST /detokenize`: llama.cpp's `content`, or vLLM's `prompt` when the request named its model.
pub async fn detokenize(
    State(app): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: DetokenizeRequest = parse_body(&body)?;
    if request.tokens.len() > MAX_DETOKENIZE_TOKENS {
        return Err(ApiError::invalid(
            format!("at most {MAX_DETOKENIZE_TOKENS} tokens are detokenized at once"),
            Some("tokens"),
        ));
    }
    let model = model_for(&app, request.model.as_deref()).await?;
    let ids: Vec<u32> = request
        .tokens
        .iter()
        .map(|&id| u32::try_from(id).unwrap_or(u32::MAX))
        .collect();
    validation::prompt_ids(&ids, model.vocab_size)
        .map_err(|e| ApiError::invalid(e.to_string(), Some("tokens")))?;
    let decoding = model.clone();
    let text = tokio::task::spawn_blocking(move || {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| decoding.tokenizer.token_bytes(id))
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    })
    .await
    .map_err(|e| ApiError::internal(format!("detokenizing stopped: {e}")))?;
    Ok(Json(if request.model.is_some() {
        json!({ "prompt": text })
    } else {
        json!({ "content": text })
    }))
}

/// A token's text as llama.cpp gives it: a string when its bytes are UTF-8, else the bytes.
fn piece(model: &LoadedModel, id: u32) -> Value {
    let bytes = model.tokenizer.token_bytes(id);
    match String::from_utf8(bytes) {
        Ok(text) => Value::String(text),
        Err(e) => json!(e.into_bytes()),
    }
}

/// The model a request names; without a name, the one model loaded, else the one model stored.
async fn model_for(app: &AppState, name: Option<&str>) -> Result<Arc<LoadedModel>, ApiError> {
    if let Some(name) = name {
        return Ok(app.runtime.get(name).await?);
    }
    let loaded = app.runtime.loaded().await;
    if let [only] = loaded.as_slice() {
        return Ok(only.clone());
    }
    let store = app.runtime.store().clone();
    let stored = tokio::task::spawn_blocking(move || store.list())
        .await
        .map_err(|e| ApiError::internal(format!("listing models stopped: {e}")))??;
    match (loaded.len(), stored.as_slice()) {
        (0, [only]) => Ok(app.runtime.get(&only.id.to_string()).await?),
        _ => Err(ApiError::invalid(
            "more than one model is here: name one in \"model\"",
            Some("model"),
        )),
    }
}
