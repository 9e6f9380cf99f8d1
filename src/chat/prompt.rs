//! Prompts made off the async runtime. Rendering a chat template and tokenizing are CPU work that a
//! hostile template or a huge prompt can stretch, so they run on the blocking pool within a deadline:
//! the runtime's threads stay free for every other request (and `/health`), and a request whose prompt
//! takes too long gets an error instead of holding its connection for ever. A text too long for any
//! prompt of the model's context is refused before it is tokenized at all. Where the server has a
//! template sandbox, the render runs in a worker process instead, which the deadline kills.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::ChatError;
use crate::engine::chat_template::{ChatMessage, TemplateError};
use crate::engine::template_sandbox::RenderJob;
use crate::engine::tokenizer::TokenizerError;
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
) -> Result<Vec<u32>, ChatError> {
    Ok(chat_with(model, messages, tools, Map::new(), field)
        .await?
        .tokens)
}

/// A rendered and tokenized conversation.
pub struct RenderedChat {
    pub tokens: Vec<u32>,
    /// The rendered text, for what its end says (a generation prompt that opened the thinking).
    pub text: String,
}

/// `chat` with further template variables (`chat_template_kwargs`, `enable_thinking`).
pub async fn chat_with(
    model: &Arc<LoadedModel>,
    messages: Vec<ChatMessage>,
    tools: Option<Value>,
    variables: Map<String, Value>,
    field: &'static str,
) -> Result<RenderedChat, ChatError> {
    render(model, messages, tools, true, variables, field).await
}

/// A conversation rendered and tokenized as it stands, with or without the assistant's turn opened
/// (`/tokenize`'s chat shape).
pub async fn conversation(
    model: &Arc<LoadedModel>,
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    field: &'static str,
) -> Result<Vec<u32>, ChatError> {
    let rendered = render(
        model,
        messages,
        None,
        add_generation_prompt,
        Map::new(),
        field,
    )
    .await?;
    Ok(rendered.tokens)
}

async fn render(
    model: &Arc<LoadedModel>,
    messages: Vec<ChatMessage>,
    tools: Option<Value>,
    add_generation_prompt: bool,
    variables: Map<String, Value>,
    field: &'static str,
) -> Result<RenderedChat, ChatError> {
    let model = model.clone();
    let template_error = move |e: TemplateError| ChatError::Template {
        field,
        message: e.to_string(),
    };
    let Some(sandbox) = model.template_sandbox.clone() else {
        return off_runtime(move || {
            let text = model
                .template
                .render_with(&messages, tools.as_ref(), add_generation_prompt, &variables)
                .map_err(template_error)?;
            let tokens = encode(&model, &text, field)?;
            Ok(RenderedChat { tokens, text })
        })
        .await;
    };
    let job = RenderJob::new(
        &model.template,
        messages,
        tools,
        add_generation_prompt,
        variables,
    );
    let started = tokio::time::Instant::now();
    // Dropping the render at the deadline kills its worker.
    let text = tokio::time::timeout(PROMPT_DEADLINE, sandbox.render(&job))
        .await
        .map_err(|_| ChatError::PromptDeadline {
            seconds: PROMPT_DEADLINE.as_secs(),
        })?
        .map_err(template_error)?;
    let left = PROMPT_DEADLINE.saturating_sub(started.elapsed());
    off_runtime_within(left, move || {
        let tokens = encode(&model, &text, field)?;
        Ok(RenderedChat { tokens, text })
    })
    .await
}

/// Texts tokenized as they are (completions, embeddings, raw generation).
pub async fn texts(
    model: &Arc<LoadedModel>,
    texts: Vec<String>,
    field: &'static str,
) -> Result<Vec<Vec<u32>>, ChatError> {
    let model = model.clone();
    off_runtime(move || texts.iter().map(|t| encode(&model, t, field)).collect()).await
}

/// One text tokenized as it is, with or without the model's BOS (`/tokenize`'s `add_special`).
pub async fn text(
    model: &Arc<LoadedModel>,
    text: String,
    add_bos: bool,
    field: &'static str,
) -> Result<Vec<u32>, ChatError> {
    let model = model.clone();
    off_runtime(move || encode_with(&model, &text, add_bos, field)).await
}

/// Query/document pairs as a reranker's inputs (`Tokenizer::encode_pair`), each within the bytes its
/// context could hold.
pub async fn pairs(
    model: &Arc<LoadedModel>,
    pairs: Vec<(String, String)>,
    field: &'static str,
) -> Result<Vec<Vec<u32>>, ChatError> {
    let model = model.clone();
    off_runtime(move || {
        let limit = model
            .context_size
            .saturating_mul(crate::engine::tokenizer::MAX_BYTES_PER_CONTEXT_TOKEN);
        pairs
            .iter()
            .map(|(query, document)| {
                model
                    .tokenizer
                    .encode_pair(query, document, limit)
                    .map_err(|e| tokenize_error(e, field, model.context_size))
            })
            .collect()
    })
    .await
}

fn tokenize_error(e: TokenizerError, field: &'static str, context: usize) -> ChatError {
    match e {
        TokenizerError::TooLong { bytes, limit } => ChatError::PromptTooLong {
            field,
            bytes,
            limit,
            context,
        },
        other => ChatError::Tokenize {
            field,
            message: other.to_string(),
        },
    }
}

fn encode(model: &LoadedModel, text: &str, field: &'static str) -> Result<Vec<u32>, ChatError> {
    encode_with(model, text, true, field)
}

fn encode_with(
    model: &LoadedModel,
    text: &str,
    add_bos: bool,
    field: &'static str,
) -> Result<Vec<u32>, ChatError> {
    model
        .tokenizer
        .encode_for_context(text, add_bos, model.context_size)
        .map_err(|e| tokenize_error(e, field, model.context_size))
}

/// Runs `work` on the blocking pool; a panic in it is this request's 500, a deadline passed its 503.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ChatError> + Send + 'static,
) -> Result<T, ChatError> {
    off_runtime_within(PROMPT_DEADLINE, work).await
}

/// `off_runtime` with what is left of the deadline.
async fn off_runtime_within<T: Send + 'static>(
    deadline: Duration,
    work: impl FnOnce() -> Result<T, ChatError> + Send + 'static,
) -> Result<T, ChatError> {
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(stopped)) => {
            tracing::error!(error = %stopped, "preparing a prompt failed");
            Err(ChatError::Internal(
                "the server failed to prepare this prompt; it has been logged".into(),
            ))
        }
        Err(_) => Err(ChatError::PromptDeadline {
            seconds: PROMPT_DEADLINE.as_secs(),
        }),
    }
}
