//! OpenAI's `/v1` API: chat completions, completions, models, embeddings, in the shapes the OpenAI SDKs
//! expect, streaming as server-sent events ending in `data: [DONE]`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::agent;
use super::errors::ApiError;
use super::generation::{self, Choice, ChoiceEvent, finish_reason, token_text, total_usage};
use super::structured::{self, ChatOptions};
use crate::engine::FinishReason;
use crate::engine::chat_template::ChatMessage;
use crate::engine::sampler::SampledToken;
use crate::engine::tokenizer::Tokenizer;
use crate::runtime::LoadedModel;
use crate::scheduler::Usage;
use crate::tools::ToolFormat;
use crate::tools::parser::{ToolCallParser, ToolEvent};
use crate::validation::{GenerationParams, validate};

/// Most choices per request.
const MAX_CHOICES: i64 = 8;

/// Parses a JSON body, naming the offending field in the error.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let param = (path != ".").then_some(path.as_str());
        ApiError::invalid(format!("invalid request body: {}", e.inner()), param)
    })
}

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
        }
    }

    fn choices(&self) -> Result<usize, ApiError> {
        match self.n {
            None => Ok(1),
            Some(n) if (1..=MAX_CHOICES).contains(&n) => Ok(n as usize),
            Some(n) => Err(ApiError::invalid(
                format!("n must be between 1 and {MAX_CHOICES}, got {n}"),
                Some("n"),
            )),
        }
    }
}

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
}

fn to_chat_messages(messages: Vec<ChatMessageIn>) -> Result<Vec<ChatMessage>, ApiError> {
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
            if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
                return Err(ApiError::invalid(
                    format!("messages[{i}].role {:?} is not one of system, developer, user, assistant, tool", m.role),
                    Some(&format!("messages[{i}].role")),
                ));
            }
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
            let role = if m.role == "developer" { "system".to_string() } else { m.role };
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

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn request_id(prefix: &str) -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("{prefix}-{:024x}", n & ((1u128 << 96) - 1))
}

/// OpenAI's `usage` object.
pub(crate) fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

fn chat_logprob_entry(tokenizer: &Tokenizer, token: &SampledToken) -> Value {
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

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ChatRequest = parse_body(&body)?;
    let sampling: SamplingFields = parse_body(&body)?;
    let n = sampling.choices()?;
    let model = app.runtime.get(&request.model).await?;
    let messages = to_chat_messages(request.messages)?;
    if let Some(looped) = mcp_request(&app, &headers, &request.tools).await? {
        if n != 1 {
            return Err(ApiError::invalid("n must be 1 with MCP tools", Some("n")));
        }
        if request.logprobs == Some(true) {
            return Err(ApiError::invalid(
                "logprobs are not returned with MCP tools",
                Some("logprobs"),
            ));
        }
        if request
            .response_format
            .as_ref()
            .is_some_and(|f| !f.is_null())
        {
            return Err(ApiError::invalid(
                "response_format cannot be combined with MCP tools",
                Some("response_format"),
            ));
        }
        let McpChat {
            gateway,
            caller,
            mut functions,
            selection,
        } = looped;
        functions.extend(selection.functions);
        let stream = sampling.stream;
        let include_usage = sampling
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        let agent_request = agent::AgentRequest {
            model,
            gateway,
            caller,
            messages,
            tools: Value::Array(functions),
            mcp_names: selection.names,
            scope: selection.scope,
            tool_choice: request.tool_choice,
            parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
            params: sampling.params(None),
            id: request_id("chatcmpl"),
            created: unix_now(),
            include_usage,
        };
        return if stream {
            Ok(agent::stream(agent_request))
        } else {
            agent::respond(agent_request).await
        };
    }
    let output = structured::response_format(request.response_format.as_ref())?;
    let prepared = structured::prepare_chat(
        &model,
        messages,
        ChatOptions {
            tools: request.tools.as_ref(),
            tool_choice: request.tool_choice.as_ref(),
            parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
            output: output.map(|g| (g, "response_format")),
        },
    )
    .await?;
    let want_logprobs = request.logprobs.unwrap_or(false);
    let top = if want_logprobs {
        Some(request.top_logprobs.unwrap_or(0))
    } else {
        None
    };
    if request.top_logprobs.is_some() && !want_logprobs {
        return Err(ApiError::invalid(
            "top_logprobs requires logprobs to be true",
            Some("top_logprobs"),
        ));
    }
    let stream = sampling.stream;
    let include_usage = sampling
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    let mut valid = validate(
        prepared.prompt,
        &sampling.params(top),
        model.vocab_size,
        model.context_size,
    )?;
    valid.constraint = prepared.constraint;
    let tool_format = prepared.tool_format;
    let receivers = generation::submit(&model, &valid, n)?;
    let id = request_id("chatcmpl");
    let created = unix_now();
    if stream {
        let stream = ChatStream {
            id,
            created,
            want_logprobs,
            include_usage,
            tool_format,
        };
        return Ok(chat_stream(model, receivers, stream).into_response());
    }
    let choices = generation::collect(receivers).await?;
    let usage = total_usage(choices.iter().map(|c| c.usage));
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model.name,
        "system_fingerprint": null,
        "choices": choices.iter().enumerate().map(|(i, c)| {
            let mut message = json!({"role": "assistant", "content": c.text, "refusal": null});
            let mut finish = c.finish.map(finish_reason);
            if let Some(format) = tool_format {
                let answer = structured::split_answer(format, &c.text);
                if !answer.calls.is_empty() {
                    if c.finish == Some(FinishReason::Stop) {
                        finish = Some("tool_calls");
                    }
                    message["content"] = if answer.content.trim().is_empty() { Value::Null } else { json!(answer.content) };
                    message["tool_calls"] = structured::tool_calls_json(&answer.calls);
                } else {
                    message["content"] = json!(answer.content);
                }
            }
            json!({
                "index": i,
                "message": message,
                "logprobs": want_logprobs.then(|| json!({
                    "content": c.tokens.iter().map(|t| chat_logprob_entry(&model.tokenizer, t)).collect::<Vec<_>>()
                })),
                "finish_reason": finish,
            })
        }).collect::<Vec<_>>(),
        "usage": usage_json(usage),
    });
    Ok(Json(body).into_response())
}

/// A chat request that the server loops over MCP tools.
struct McpChat {
    gateway: Arc<crate::mcp::Gateway>,
    caller: crate::mcp::Caller,
    /// The client's own function tools.
    functions: Vec<Value>,
    selection: agent::McpSelection,
}

/// Reads `tools` for MCP entries (or applies `--mcp-tools` when there are no tools); `None`: a plain
/// chat request.
async fn mcp_request(
    app: &AppState,
    headers: &HeaderMap,
    tools: &Option<Value>,
) -> Result<Option<McpChat>, ApiError> {
    let split = agent::split_tools(tools.as_ref());
    let Some(gateway) = app.gateway.clone() else {
        return match split {
            Some(_) => Err(ApiError::invalid(
                "mcp tools need a server started with --mcp-config",
                Some("tools"),
            )),
            None => Ok(None),
        };
    };
    let no_tools = tools
        .as_ref()
        .is_none_or(|t| t.is_null() || t.as_array().is_some_and(Vec::is_empty));
    if split.is_none()
        && !(no_tools && app.config.default_mcp_tools != agent::DefaultMcpTools::None)
    {
        return Ok(None);
    }
    let caller = gateway
        .authenticate(super::mcp::bearer(headers))
        .ok_or_else(|| ApiError::forbidden("this key may not use MCP tools"))?;
    let (functions, selection) = match split {
        Some((functions, entries)) => {
            (functions, agent::select(&gateway, &caller, &entries).await?)
        }
        None => {
            match agent::default_selection(&gateway, &caller, app.config.default_mcp_tools).await {
                Some(selection) => (Vec::new(), selection),
                None => return Ok(None),
            }
        }
    };
    Ok(Some(McpChat {
        gateway,
        caller,
        functions,
        selection,
    }))
}

/// How a chat answer streams.
struct ChatStream {
    id: String,
    created: i64,
    want_logprobs: bool,
    include_usage: bool,
    /// Read the answer for tool calls in this format.
    tool_format: Option<ToolFormat>,
}

fn chat_stream(
    model: Arc<LoadedModel>,
    receivers: Vec<tokio::sync::mpsc::UnboundedReceiver<crate::scheduler::Event>>,
    options: ChatStream,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let choices = receivers.len();
    let ChatStream {
        id,
        created,
        want_logprobs,
        include_usage,
        tool_format,
    } = options;
    let chunk = {
        let name = model.name.clone();
        move |choices: Value| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": name,
                   "system_fingerprint": null, "choices": choices})
        }
    };
    let first: Vec<Value> = (0..choices)
        .map(|i| {
            chunk(json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]))
        })
        .collect();
    let mut parsers: Vec<Option<ToolCallParser>> = (0..choices)
        .map(|_| tool_format.map(ToolCallParser::new))
        .collect();
    let mut tally = UsageTally::new(choices);
    let events = generation::merged(receivers).flat_map(move |event| {
        let mut out: Vec<Value> = Vec::new();
        match event {
            ChoiceEvent::Token { index, text, token } => {
                let logprobs = want_logprobs.then(|| json!({"content": [chat_logprob_entry(&model.tokenizer, &token)]}));
                let deltas = match parsers[index].as_mut() {
                    Some(parser) => parser.push(&text).iter().map(tool_event_delta).collect(),
                    None if text.is_empty() => Vec::new(),
                    None => vec![json!({"content": text})],
                };
                if deltas.is_empty() && logprobs.is_some() {
                    out.push(chunk(json!([{"index": index, "delta": {}, "logprobs": logprobs, "finish_reason": null}])));
                }
                for (k, delta) in deltas.into_iter().enumerate() {
                    let logprobs = if k == 0 { logprobs.clone() } else { None };
                    out.push(chunk(json!([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": null}])));
                }
            }
            ChoiceEvent::Done { index, finish, text, usage } => {
                let (deltas, called): (Vec<Value>, bool) = match parsers[index].as_mut() {
                    Some(parser) => {
                        let mut events = parser.push(&text);
                        events.extend(parser.finish());
                        (events.iter().map(tool_event_delta).collect(), !parser.calls().is_empty())
                    }
                    None if text.is_empty() => (Vec::new(), false),
                    None => (vec![json!({"content": text})], false),
                };
                for delta in deltas {
                    out.push(chunk(json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": null}])));
                }
                let reason = if called && finish == FinishReason::Stop { "tool_calls" } else { finish_reason(finish) };
                out.push(chunk(json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": reason}])));
                if let Some(total) = tally.finish(index, usage)
                    && include_usage
                {
                    let mut last = chunk(json!([]));
                    last["usage"] = usage_json(total);
                    out.push(last);
                }
            }
            ChoiceEvent::Failed(message) => out.push(ApiError::internal(message).body()),
        }
        futures::stream::iter(out)
    });
    sse(first, events)
}

/// The `delta` of one parsed piece of a streamed answer.
fn tool_event_delta(event: &ToolEvent) -> Value {
    match event {
        ToolEvent::Content(text) => json!({"content": text}),
        ToolEvent::CallStart { index, id, name } => json!({"tool_calls": [{
            "index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}
        }]}),
        ToolEvent::CallArguments { index, delta } => json!({"tool_calls": [{
            "index": index, "function": {"arguments": delta}
        }]}),
    }
}

/// Counts finished choices; gives the summed usage when the last one finishes.
struct UsageTally {
    usages: Vec<Usage>,
    open: usize,
}

impl UsageTally {
    fn new(choices: usize) -> Self {
        Self {
            usages: vec![Usage::default(); choices],
            open: choices,
        }
    }

    fn finish(&mut self, index: usize, usage: Usage) -> Option<Usage> {
        self.usages[index] = usage;
        self.open -= 1;
        (self.open == 0).then(|| total_usage(self.usages.iter().copied()))
    }
}

/// An SSE response: the opening chunks, the event chunks, then `data: [DONE]`.
fn sse(
    first: Vec<Value>,
    events: impl futures::Stream<Item = Value> + Send + 'static,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = futures::stream::iter(first)
        .chain(events)
        .map(|v| SseEvent::default().data(v.to_string()))
        .chain(futures::stream::once(async {
            SseEvent::default().data("[DONE]")
        }))
        .map(Ok);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

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

/// `POST /v1/completions`.
pub async fn completions(
    State(app): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CompletionRequest = parse_body(&body)?;
    let sampling: SamplingFields = parse_body(&body)?;
    if request.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid(
            "suffix is not supported: this server does not do fill-in-the-middle",
            Some("suffix"),
        ));
    }
    if request.best_of.is_some_and(|b| b != 1) {
        return Err(ApiError::invalid(
            "best_of is not supported",
            Some("best_of"),
        ));
    }
    let n = sampling.choices()?;
    let model = app.runtime.get(&request.model).await?;
    let prompts = prompt_tokens(&model, request.prompt, "prompt").await?;
    if prompts.is_empty() {
        return Err(ApiError::invalid(
            "prompt must not be empty",
            Some("prompt"),
        ));
    }
    if prompts
        .iter()
        .flatten()
        .any(|&id| id as usize >= model.vocab_size)
    {
        return Err(ApiError::invalid(
            "prompt holds a token id outside the vocabulary",
            Some("prompt"),
        ));
    }
    let stream = sampling.stream;
    let include_usage = sampling
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    let params = sampling.params(request.logprobs);
    let mut receivers = Vec::new();
    for prompt in &prompts {
        let valid = validate(
            prompt.clone(),
            &params,
            model.vocab_size,
            model.context_size,
        )?;
        receivers.extend(generation::submit(&model, &valid, n)?);
    }
    let echo_texts: Vec<String> = prompts
        .iter()
        .flat_map(|p| {
            std::iter::repeat_n(
                if request.echo {
                    model.tokenizer.decode(p, false)
                } else {
                    String::new()
                },
                n,
            )
        })
        .collect();
    let id = request_id("cmpl");
    let created = unix_now();
    let want_logprobs = request.logprobs.is_some();
    if stream {
        return Ok(completion_stream(
            model,
            receivers,
            id,
            created,
            echo_texts,
            want_logprobs,
            include_usage,
        )
        .into_response());
    }
    let choices = generation::collect(receivers).await?;
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
            "logprobs": want_logprobs.then(|| completion_logprobs(&model.tokenizer, c)),
            "finish_reason": c.finish.map(finish_reason),
        })).collect::<Vec<_>>(),
        "usage": usage_json(usage),
    });
    Ok(Json(body).into_response())
}

/// A prompt field as token lists: texts tokenized off the runtime, token ids as given.
async fn prompt_tokens(
    model: &Arc<LoadedModel>,
    prompt: PromptField,
    field: &'static str,
) -> Result<Vec<Vec<u32>>, ApiError> {
    match prompt {
        PromptField::Text(t) => super::prompt::texts(model, vec![t], field).await,
        PromptField::Texts(ts) => super::prompt::texts(model, ts, field).await,
        PromptField::Tokens(ids) => Ok(vec![ids]),
        PromptField::TokenLists(lists) => Ok(lists),
    }
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

fn completion_logprobs(tokenizer: &Tokenizer, choice: &Choice) -> Value {
    let mut offset = 0;
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top = Vec::new();
    let mut offsets = Vec::new();
    for t in &choice.tokens {
        let text = token_text(tokenizer, t.id);
        offsets.push(offset);
        offset += text.len();
        tokens.push(text);
        token_logprobs.push(t.logprob);
        let alternatives: serde_json::Map<String, Value> = t
            .top_logprobs
            .iter()
            .map(|(id, lp)| (token_text(tokenizer, *id), json!(lp)))
            .collect();
        top.push(Value::Object(alternatives));
    }
    json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets})
}

fn completion_stream(
    model: Arc<LoadedModel>,
    receivers: Vec<tokio::sync::mpsc::UnboundedReceiver<crate::scheduler::Event>>,
    id: String,
    created: i64,
    echo_texts: Vec<String>,
    want_logprobs: bool,
    include_usage: bool,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let choices = receivers.len();
    let name = model.name.clone();
    let chunk = move |choices: Value| {
        json!({"id": id, "object": "text_completion", "created": created, "model": name,
               "system_fingerprint": null, "choices": choices})
    };
    let first: Vec<Value> = echo_texts
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.is_empty())
        .map(|(i, t)| {
            chunk(json!([{"index": i, "text": t, "logprobs": null, "finish_reason": null}]))
        })
        .collect();
    let mut tally = UsageTally::new(choices);
    let events = generation::merged(receivers).flat_map(move |event| {
        let mut out = Vec::new();
        match event {
            ChoiceEvent::Token { index, text, token } => {
                if !text.is_empty() || want_logprobs {
                    let logprobs = want_logprobs.then(|| {
                        completion_logprobs(&model.tokenizer, &Choice { tokens: vec![token], ..Default::default() })
                    });
                    out.push(chunk(json!([{"index": index, "text": text, "logprobs": logprobs, "finish_reason": null}])));
                }
            }
            ChoiceEvent::Done { index, finish, text, usage } => {
                out.push(chunk(json!([{"index": index, "text": text, "logprobs": null, "finish_reason": finish_reason(finish)}])));
                if let Some(total) = tally.finish(index, usage)
                    && include_usage
                {
                    let mut last = chunk(json!([]));
                    last["usage"] = usage_json(total);
                    out.push(last);
                }
            }
            ChoiceEvent::Failed(message) => out.push(ApiError::internal(message).body()),
        }
        futures::stream::iter(out)
    });
    sse(first, events)
}

fn model_json(name: &str, created: i64) -> Value {
    json!({"id": name, "object": "model", "created": created, "owned_by": "model-runner"})
}

/// `GET /v1/models`: every model in the store, by each of its names.
pub async fn list_models(State(app): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let models = app.runtime.store().list()?;
    let data: Vec<Value> = models
        .iter()
        .flat_map(|m| {
            let created = m.created().map_or(0, |c| c.timestamp());
            m.familiar_names()
                .into_iter()
                .map(move |n| model_json(&n, created))
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
    )))
}

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
    let inputs = prompt_tokens(model, input, "input").await?;
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
                .map_err(|e| ApiError::internal(e.to_string()))?,
        );
    }
    Ok((vectors, tokens))
}

/// `POST /v1/embeddings`: mean-pooled, normalised final hidden states, as llama.cpp gives for a causal model.
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
