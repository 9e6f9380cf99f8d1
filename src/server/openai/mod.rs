//! OpenAI's `/v1` API: chat completions, completions, models, embeddings, responses, in the shapes the OpenAI SDKs
//! expect, streaming as server-sent events ending in `data: [DONE]`. This module holds what the shapes
//! share: the sampling fields, the prompt field, `usage`, finish reasons and ids.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod models;
pub mod responses;
pub mod stream;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::errors::ApiError;
use crate::chat::prompt;
use crate::engine::FinishReason;
use crate::engine::tokenizer::Tokenizer;
use crate::runtime::LoadedModel;
use crate::scheduler::Usage;
use crate::validation::GenerationParams;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

impl StopField {
    fn into_vec(self) -> Vec<String> {
        match self {
            StopField::One(s) => vec![s],
            StopField::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Sampling fields shared by chat and completions (plus llama.cpp's extensions). Parsed from the same body
/// as the request itself rather than `#[serde(flatten)]`ed into it, which would lose the field paths that
/// errors name.
#[derive(Debug, Default, Deserialize)]
pub struct SamplingFields {
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<StopField>,
    pub logit_bias: Option<HashMap<String, f64>>,
    #[serde(default)]
    pub ignore_eos: bool,
    pub n: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
}

impl SamplingFields {
    /// The generation parameters, reporting `top_logprobs` alternatives when set.
    fn params(self, top_logprobs: Option<i64>) -> GenerationParams {
        GenerationParams {
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repetition_penalty: self.repeat_penalty,
            seed: self.seed,
            stop: self.stop.map(StopField::into_vec).unwrap_or_default(),
            logit_bias: self.logit_bias,
            top_logprobs,
            ignore_eos: self.ignore_eos,
            context_size: None,
        }
    }

    /// Whether a stream ends with a `usage` chunk.
    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

/// A prompt or embedding input: text, texts, token ids or lists of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

impl PromptField {
    /// The field as token lists: texts tokenized off the runtime, token ids as given.
    pub async fn tokens(
        self,
        model: &Arc<LoadedModel>,
        field: &'static str,
    ) -> Result<Vec<Vec<u32>>, ApiError> {
        Ok(match self {
            PromptField::Text(t) => prompt::texts(model, vec![t], field).await?,
            PromptField::Texts(ts) => prompt::texts(model, ts, field).await?,
            PromptField::Tokens(ids) => vec![ids],
            PromptField::TokenLists(lists) => lists,
        })
    }
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(crate) fn request_id(prefix: &str) -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("{prefix}-{:024x}", n & ((1u128 << 96) - 1))
}

/// OpenAI's `usage` object.
pub fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// OpenAI's name for a finish reason (Ollama's `done_reason` uses the same).
pub fn finish_reason(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "stop",
    }
}

/// The text a token stands for, for logprobs.
fn token_text(tokenizer: &Tokenizer, id: u32) -> String {
    tokenizer.decode(&[id], false)
}
