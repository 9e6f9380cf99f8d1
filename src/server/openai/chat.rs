//! `POST /v1/chat/completions`: the request translated into a `ChatInput` (or a `ToolLoop` when it
//! brings MCP tools), the pipeline's choices or the loop's events translated back into a
//! `chat.completion` or its chunks.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::stream::{Chunks, UsageTally, sse};
use super::{SamplingFields, finish_reason, request_id, token_text, unix_now, usage_json};
use crate::chat::answer::{AnswerEvent, AnswerParser, read_answer};
use crate::chat::mcp_tools;
use crate::chat::reasoning::{self, ReasoningInput, ReasoningOutput};
use crate::chat::structured::{self, tool_calls_json};
use crate::chat::tool_loop::{LoopEvent, Outcome, ToolLoop};
use crate::chat::{ChatError, ChatInput, ChoiceEvent, Generation, PromptInput, ToolsInput};
use crate::chat::{pipeline, total_usage};
use crate::engine::FinishReason;
use crate::engine::chat_template::ChatMessage;
use crate::engine::sampler::SampledToken;
use crate::engine::tokenizer::Tokenizer;
use crate::mcp::{CallRecord, TokenAccount};
use crate::runtime::LoadedModel;
use crate::server::AppState;
use crate::server::body::parse_body;
use crate::server::errors::ApiError;
use crate::validation;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessageIn {
    pub role: String,
    pub content: Option<MessageContent>,
    pub name: Option<String>,
    pub tool_calls: Option<Value>,
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessageIn>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<Value>,
    /// `none` / `minimal` switch thinking off where the template can.
    pub reasoning_effort: Option<String>,
    /// Further chat-template variables (vLLM's and llama.cpp's), e.g. `{"enable_thinking": false}`.
    pub chat_template_kwargs: Option<Value>,
}

impl ChatRequest {
    /// The request's thinking switches, and the server's `--reasoning-format`.
    fn reasoning(&self, output: ReasoningOutput) -> Result<ReasoningInput, ApiError> {
        Ok(ReasoningInput {
            enable: reasoning::effort(self.reasoning_effort.as_deref(), "reasoning_effort")?,
            template_kwargs: reasoning::template_kwargs(
                self.chat_template_kwargs.as_ref(),
                "chat_template_kwargs",
            )?,
            output,
        })
    }
}

/// The messages as the chat template reads them: roles checked, text parts joined.
pub fn to_chat_messages(messages: Vec<ChatMessageIn>) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "'messages' must contain at least one message",
            Some("messages"),
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = validation::role(i, m.role)?;
            let content = match m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t,
                Some(MessageContent::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, part) in parts.into_iter().enumerate() {
                        match (part.kind.as_str(), part.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    format!("content part type {kind:?} is not supported by this model; use text parts"),
                                    Some(&format!("messages[{i}].content[{j}]")),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            Ok(ChatMessage {
                role,
                content,
                tool_calls: m.tool_calls,
                tool_call_id: m.tool_call_id,
                name: m.name,
            })
        })
        .collect()
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(app): State<Arc<AppState>>,
    account: Option<Extension<TokenAccount>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ChatRequest = parse_body(&body)?;
    let sampling: SamplingFields = parse_body(&body)?;
    let choices = validation::choices(sampling.n)?;
    let model = app.runtime.get(&request.model).await?;
    let reasoning = request.reasoning(app.config.reasoning_output)?;
    let messages = to_chat_messages(request.messages)?;
    let stream = sampling.stream;
    let include_usage = sampling.include_usage();
    let mcp = mcp_tools::resolve(
        app.gateway.as_ref(),
        app.config.default_mcp_tools,
        crate::server::mcp::bearer(&headers),
        request.tools.as_ref(),
    )
    .await?;
    if let Some(mcp) = mcp {
        let has_format = request
            .response_format
            .as_ref()
            .is_some_and(|f| !f.is_null());
        validation::mcp_loop(choices, request.logprobs, has_format)?;
        let mut looped = ToolLoop::new(model, mcp, messages);
        looped.tool_choice = request.tool_choice;
        looped.parallel_tool_calls = request.parallel_tool_calls.unwrap_or(true);
        looped.params = sampling.params(None);
        looped.reasoning = reasoning;
        let chunks = Chunks::new(
            request_id("chatcmpl"),
            "chat.completion.chunk",
            unix_now(),
            &looped.model.name,
        );
        return if stream {
            Ok(loop_stream(looped, chunks, include_usage))
        } else {
            loop_answer(looped, chunks).await
        };
    }
    let output = structured::response_format(request.response_format.as_ref())?;
    let top_logprobs = validation::chat_logprobs(request.logprobs, request.top_logprobs)?;
    let want_logprobs = top_logprobs.is_some();
    let input = ChatInput {
        prompt: PromptInput::Messages(messages),
        prompt_field: "messages",
        tools: ToolsInput {
            tools: request.tools,
            tool_choice: request.tool_choice,
            parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
        },
        output,
        params: sampling.params(top_logprobs),
        choices,
        reasoning,
        account: account.map(|Extension(a)| a),
    };
    let generation = pipeline::start(&model, input).await?;
    let id = request_id("chatcmpl");
    let created = unix_now();
    if stream {
        let chunks = Chunks::new(id, "chat.completion.chunk", created, &model.name);
        return Ok(chat_stream(
            model,
            generation,
            chunks,
            want_logprobs,
            include_usage,
        ));
    }
    let (tool_format, thinking) = (generation.tool_format, generation.reasoning);
    let choices = generation.collect().await?;
    let usage = total_usage(choices.iter().map(|c| c.usage));
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model.name,
        "system_fingerprint": null,
        "choices": choices.iter().enumerate().map(|(i, c)| {
            let answer = read_answer(tool_format, thinking, &c.text);
            let mut message = json!({"role": "assistant", "content": answer.content, "refusal": null});
            let mut finish = c.finish.map(finish_reason);
            if let Some(thought) = &answer.reasoning {
                message["reasoning_content"] = json!(thought);
            }
            if !answer.calls.is_empty() {
                if c.finish == Some(FinishReason::Stop) {
                    finish = Some("tool_calls");
                }
                message["content"] = if answer.content.trim().is_empty() { Value::Null } else { json!(answer.content) };
                message["tool_calls"] = tool_calls_json(&answer.calls);
            }
            json!({
                "index": i,
                "message": message,
                "logprobs": want_logprobs.then(|| json!({
                    "content": c.tokens.iter().map(|t| logprob_entry(&model.tokenizer, t)).collect::<Vec<_>>()
                })),
                "finish_reason": finish,
            })
        }).collect::<Vec<_>>(),
        "usage": usage_json(usage),
    });
    Ok(Json(body).into_response())
}

fn logprob_entry(tokenizer: &Tokenizer, token: &SampledToken) -> Value {
    let text = token_text(tokenizer, token.id);
    json!({
        "token": text,
        "logprob": token.logprob.unwrap_or(0.0),
        "bytes": text.as_bytes(),
        "top_logprobs": token.top_logprobs.iter().map(|(id, lp)| {
            let t = token_text(tokenizer, *id);
            json!({"token": t, "logprob": lp, "bytes": t.as_bytes()})
        }).collect::<Vec<_>>(),
    })
}

/// The opening chunk of choice `index`: the assistant's role.
fn role_chunk(chunks: &Chunks, index: usize) -> Value {
    chunks.chunk(json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]))
}

/// A chunk with one `delta` of choice `index`.
fn delta_chunk(chunks: &Chunks, index: usize, delta: Value, logprobs: Option<Value>) -> Value {
    chunks.chunk(
        json!([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": null}]),
    )
}

/// The chunk that finishes choice `index`.
fn finish_chunk(chunks: &Chunks, index: usize, reason: &str) -> Value {
    chunks.chunk(json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": reason}]))
}

/// The pipeline's choices as chunks: content and tool-call deltas as they are generated.
fn chat_stream(
    model: Arc<LoadedModel>,
    generation: Generation,
    chunks: Chunks,
    want_logprobs: bool,
    include_usage: bool,
) -> Response {
    let choices = generation.choices();
    let (tool_format, thinking) = (generation.tool_format, generation.reasoning);
    let first: Vec<Value> = (0..choices).map(|i| role_chunk(&chunks, i)).collect();
    let mut parsers: Vec<AnswerParser> = (0..choices)
        .map(|_| AnswerParser::new(tool_format, thinking))
        .collect();
    let mut tally = UsageTally::new(choices);
    let events = generation.events().flat_map(move |event| {
        let mut out: Vec<Value> = Vec::new();
        match event {
            ChoiceEvent::Token { index, text, token } => {
                let logprobs = want_logprobs
                    .then(|| json!({"content": [logprob_entry(&model.tokenizer, &token)]}));
                let deltas: Vec<Value> = parsers[index]
                    .push(&text)
                    .iter()
                    .map(answer_delta)
                    .collect();
                if deltas.is_empty() && logprobs.is_some() {
                    out.push(delta_chunk(&chunks, index, json!({}), logprobs.clone()));
                }
                for (k, delta) in deltas.into_iter().enumerate() {
                    let logprobs = if k == 0 { logprobs.clone() } else { None };
                    out.push(delta_chunk(&chunks, index, delta, logprobs));
                }
            }
            ChoiceEvent::Done {
                index,
                finish,
                text,
                usage,
            } => {
                let parser = &mut parsers[index];
                let deltas: Vec<Value> = parser
                    .push_last(&text, true)
                    .iter()
                    .map(answer_delta)
                    .collect();
                let called = !parser.calls().is_empty();
                for delta in deltas {
                    out.push(delta_chunk(&chunks, index, delta, None));
                }
                let reason = if called && finish == FinishReason::Stop {
                    "tool_calls"
                } else {
                    finish_reason(finish)
                };
                out.push(finish_chunk(&chunks, index, reason));
                if let Some(total) = tally.finish(index, usage)
                    && include_usage
                {
                    out.push(chunks.usage(total));
                }
            }
            ChoiceEvent::Failed(e) => out.push(ApiError::from(ChatError::Generation(e)).body()),
        }
        futures::stream::iter(out)
    });
    sse(futures::stream::iter(first).chain(events)).into_response()
}

/// The `delta` of one parsed piece of a streamed answer (thinking as `reasoning_content`, as
/// llama.cpp, vLLM and DeepSeek send it).
fn answer_delta(event: &AnswerEvent) -> Value {
    match event {
        AnswerEvent::Reasoning(text) => json!({"reasoning_content": text}),
        AnswerEvent::Content(text) => json!({"content": text}),
        AnswerEvent::CallStart { index, id, name } => json!({"tool_calls": [{
            "index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}
        }]}),
        AnswerEvent::CallArguments { index, delta } => json!({"tool_calls": [{
            "index": index, "function": {"arguments": delta}
        }]}),
    }
}

/// Why a looped chat finished, in OpenAI's words.
fn loop_finish(outcome: &Outcome) -> &'static str {
    if !outcome.client_calls.is_empty() {
        "tool_calls"
    } else {
        outcome.finish.map_or("stop", finish_reason)
    }
}

fn mcp_calls_json(calls: &[CallRecord]) -> Value {
    json!(calls.iter().map(CallRecord::to_json).collect::<Vec<_>>())
}

/// Runs the tool loop and answers whole, listing what ran in `mcp_calls`.
async fn loop_answer(looped: ToolLoop, chunks: Chunks) -> Result<Response, ApiError> {
    let outcome = looped.run(None).await?;
    let mut message = json!({"role": "assistant", "content": outcome.content, "refusal": null});
    if let Some(thought) = &outcome.reasoning {
        message["reasoning_content"] = json!(thought);
    }
    if !outcome.client_calls.is_empty() {
        message["tool_calls"] = tool_calls_json(&outcome.client_calls);
    }
    let mut body = chunks.chunk(json!([{"index": 0, "message": message, "logprobs": null, "finish_reason": loop_finish(&outcome)}]));
    body["object"] = json!("chat.completion");
    body["usage"] = usage_json(outcome.usage);
    body["mcp_calls"] = mcp_calls_json(&outcome.calls);
    Ok(Json(body).into_response())
}

/// Runs the tool loop and streams: content as it is generated, an `mcp_call` event as each call starts
/// and ends, client tool calls, and `mcp_calls` with the finish.
fn loop_stream(looped: ToolLoop, chunks: Chunks, include_usage: bool) -> Response {
    let first = role_chunk(&chunks, 0);
    let events = looped.stream().flat_map(move |event| {
        let out: Vec<Value> = match event {
            LoopEvent::Content(text) => {
                vec![delta_chunk(&chunks, 0, json!({"content": text}), None)]
            }
            LoopEvent::Reasoning(text) => {
                vec![delta_chunk(&chunks, 0, json!({"reasoning_content": text}), None)]
            }
            LoopEvent::CallStarted {
                id,
                name,
                arguments,
            } => {
                let mut message = chunks.chunk(json!([]));
                message["mcp_call"] =
                    json!({"id": id, "status": "in_progress", "name": name, "arguments": arguments});
                vec![message]
            }
            LoopEvent::CallFinished { id, record } => {
                let mut event = record.to_json();
                event["id"] = json!(id);
                event["status"] = json!(if record.failed() {
                    "failed"
                } else {
                    "completed"
                });
                let mut message = chunks.chunk(json!([]));
                message["mcp_call"] = event;
                vec![message]
            }
            // The answer's content went out as it was generated.
            LoopEvent::Ended(Ok(outcome)) => {
                let mut out: Vec<Value> = outcome
                    .client_calls
                    .iter()
                    .enumerate()
                    .map(|(i, call)| {
                        delta_chunk(
                            &chunks,
                            0,
                            json!({"tool_calls": [{"index": i, "id": call.id, "type": "function",
                                "function": {"name": call.name, "arguments": call.arguments}}]}),
                            None,
                        )
                    })
                    .collect();
                let mut last = finish_chunk(&chunks, 0, loop_finish(&outcome));
                last["mcp_calls"] = mcp_calls_json(&outcome.calls);
                out.push(last);
                if include_usage {
                    out.push(chunks.usage(outcome.usage));
                }
                out
            }
            LoopEvent::Ended(Err(error)) => vec![ApiError::from(error).body()],
        };
        futures::stream::iter(out)
    });
    sse(futures::stream::once(async move { first }).chain(events)).into_response()
}
