//! `POST /v1/completions`: each prompt (text or token ids) becomes a `ChatInput` without a template;
//! their choices come back as one `text_completion` or its chunks, with `echo` and logprobs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::stream::{Chunks, UsageTally, sse};
use super::{
    PromptField, SamplingFields, finish_reason, request_id, token_text, unix_now, usage_json,
};
use crate::chat::ReasoningInput;
use crate::chat::{ChatError, ChatInput, Choice, ChoiceEvent, PromptInput, ToolsInput, pipeline};
use crate::engine::tokenizer::Tokenizer;
use crate::mcp::TokenAccount;
use crate::scheduler::Usage;
use crate::server::AppState;
use crate::server::body::parse_body;
use crate::server::errors::ApiError;
use crate::validation;

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptField,
    pub logprobs: Option<i64>,
    #[serde(default)]
    pub echo: bool,
    pub suffix: Option<String>,
    pub best_of: Option<i64>,
}

/// The prompts of a completions request, one input each.
fn prompts(field: PromptField) -> Vec<PromptInput> {
    match field {
        PromptField::Text(t) => vec![PromptInput::Text(t)],
        PromptField::Texts(ts) => ts.into_iter().map(PromptInput::Text).collect(),
        PromptField::Tokens(ids) => vec![PromptInput::Tokens(ids)],
        PromptField::TokenLists(lists) => lists.into_iter().map(PromptInput::Tokens).collect(),
    }
}

/// `POST /v1/completions`.
pub async fn completions(
    State(app): State<Arc<AppState>>,
    account: Option<Extension<TokenAccount>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let account = account.map(|Extension(a)| a);
    let request: CompletionRequest = parse_body(&body)?;
    let sampling: SamplingFields = parse_body(&body)?;
    validation::completion_extras(request.suffix.as_deref(), request.best_of)?;
    let n = validation::choices(sampling.n)?;
    let model = app.runtime.get(&request.model).await?;
    let prompts = prompts(request.prompt);
    validation::prompt_count(prompts.len())?;
    let stream = sampling.stream;
    let include_usage = sampling.include_usage();
    let want_logprobs = request.logprobs.is_some();
    let params = sampling.params(request.logprobs);
    let mut generations = Vec::with_capacity(prompts.len());
    let mut echo_texts = Vec::new();
    for prompt in prompts {
        let input = ChatInput {
            prompt,
            prompt_field: "prompt",
            tools: ToolsInput::default(),
            output: None,
            params: params.clone(),
            choices: n,
            reasoning: ReasoningInput::default(),
            account: account.clone(),
        };
        let valid = pipeline::ValidChat::new(&model, input)?;
        let prepared = pipeline::prepare(&model, valid).await?;
        let echo = if request.echo {
            model.tokenizer.decode(&prepared.request.prompt, false)
        } else {
            String::new()
        };
        echo_texts.extend(std::iter::repeat_n(echo, n));
        generations.push(pipeline::submit(&model, prepared)?);
    }
    let generation = pipeline::join(generations);
    let id = request_id("cmpl");
    let created = unix_now();
    if stream {
        let chunks = Chunks::new(id, "text_completion", created, &model.name);
        let first: Vec<Value> = echo_texts
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty())
            .map(|(i, t)| {
                chunks.chunk(
                    json!([{"index": i, "text": t, "logprobs": null, "finish_reason": null}]),
                )
            })
            .collect();
        let mut tally = UsageTally::new(generation.choices());
        let events = generation.events().flat_map(move |event| {
            let mut out = Vec::new();
            match event {
                ChoiceEvent::Token { index, text, token } => {
                    if !text.is_empty() || want_logprobs {
                        let logprobs = want_logprobs
                            .then(|| logprobs_json(&model.tokenizer, std::slice::from_ref(&token)));
                        out.push(chunks.chunk(json!([{"index": index, "text": text, "logprobs": logprobs, "finish_reason": null}])));
                    }
                }
                ChoiceEvent::Done {
                    index,
                    finish,
                    text,
                    usage,
                } => {
                    out.push(chunks.chunk(json!([{"index": index, "text": text, "logprobs": null, "finish_reason": finish_reason(finish)}])));
                    if let Some(total) = tally.finish(index, usage)
                        && include_usage
                    {
                        out.push(chunks.usage(total));
                    }
                }
                ChoiceEvent::Failed(e) => {
                    out.push(ApiError::from(ChatError::Generation(e)).body())
                }
            }
            futures::stream::iter(out)
        });
        return Ok(sse(futures::stream::iter(first).chain(events)).into_response());
    }
    let choices = generation.collect().await?;
    let usage = total_usage_by_prompt(&choices, n);
    let body = json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model.name,
        "system_fingerprint": null,
        "choices": choices.iter().enumerate().map(|(i, c)| json!({
            "index": i,
            "text": format!("{}{}", echo_texts[i], c.text),
            "logprobs": want_logprobs.then(|| logprobs_json(&model.tokenizer, &c.tokens)),
            "finish_reason": c.finish.map(finish_reason),
        })).collect::<Vec<_>>(),
        "usage": usage_json(usage),
    });
    Ok(Json(body).into_response())
}

/// Usage over several prompts with `n` choices each: every prompt counted once.
fn total_usage_by_prompt(choices: &[Choice], n: usize) -> Usage {
    let mut total = Usage::default();
    for (i, c) in choices.iter().enumerate() {
        if i % n == 0 {
            total.prompt_tokens += c.usage.prompt_tokens;
            total.cached_tokens += c.usage.cached_tokens;
        }
        total.completion_tokens += c.usage.completion_tokens;
    }
    total
}

/// Completions' `logprobs` object for `tokens`.
fn logprobs_json(tokenizer: &Tokenizer, tokens: &[crate::engine::sampler::SampledToken]) -> Value {
    let mut offset = 0;
    let mut texts = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top = Vec::new();
    let mut offsets = Vec::new();
    for t in tokens {
        let text = token_text(tokenizer, t.id);
        offsets.push(offset);
        offset += text.len();
        texts.push(text);
        token_logprobs.push(t.logprob);
        let alternatives: serde_json::Map<String, Value> = t
            .top_logprobs
            .iter()
            .map(|(id, lp)| (token_text(tokenizer, *id), json!(lp)))
            .collect();
        top.push(Value::Object(alternatives));
    }
    json!({"tokens": texts, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets})
}
