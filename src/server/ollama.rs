//! Ollama's API (`/api/...`) for the many tools that speak it: tags, ps, show, chat and generate (NDJSON
//! streams by default, as Ollama), pull (NDJSON progress), delete, version and embed. Chat and generate
//! are translations into the chat pipeline's `ChatInput` and of its events back into Ollama's lines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::body::parse_body;
use super::errors::ApiError;
use super::openai::embeddings::embed_all;
use super::openai::{PromptField, finish_reason};
use super::pulling::PullUpdate;
use crate::chat::answer::{AnswerEvent, AnswerParser, read_answer};
use crate::chat::structured;
use crate::chat::{
    ChatInput, ChoiceEvent, PromptInput, ReasoningFormat, ReasoningInput, ToolsInput, pipeline,
};
use crate::engine::FinishReason;
use crate::engine::chat_template::ChatMessage;
use crate::mcp::TokenAccount;
use crate::progress::TransferEvent;
use crate::reference::ModelSource;
use crate::runtime::LoadedModel;
use crate::store::{LocalModel, settings};
use crate::tools::parser::ToolCall;
use crate::validation::GenerationParams;

/// The Ollama API version we answer like.
const OLLAMA_VERSION: &str = "0.12.0";

#[derive(Debug, Default, Deserialize)]
pub struct Options {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub num_predict: Option<i64>,
    pub num_ctx: Option<i64>,
    pub seed: Option<i64>,
    pub stop: Option<Vec<String>>,
    pub repeat_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
}

impl Options {
    fn params(&self) -> GenerationParams {
        GenerationParams {
            // Ollama: -1 means no limit.
            max_tokens: self.num_predict.filter(|n| *n >= 0),
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repetition_penalty: self.repeat_penalty,
            seed: self.seed,
            stop: self.stop.clone().unwrap_or_default(),
            context_size: self.num_ctx,
            ..Default::default()
        }
    }
}

/// Ollama's keep_alive: a duration string ("5m", "30s", "1h"), seconds, 0 to unload, negative for ever.
fn keep_alive(value: &Option<Value>) -> Result<Option<Option<Duration>>, ApiError> {
    let bad = |e: String| ApiError::invalid(e, Some("keep_alive"));
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .and_then(settings::keep_alive_from_seconds)
            .map(Some)
            .ok_or_else(|| bad(format!("keep_alive {n} is not a number of seconds"))),
        Some(Value::String(s)) => settings::parse_keep_alive(s)
            .map(Some)
            .map_err(|e| bad(e.to_string())),
        Some(_) => Err(bad(
            "keep_alive must be a duration like \"5m\" or a number of seconds".into(),
        )),
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn details(model: &LocalModel) -> Value {
    let c = &model.config.config;
    json!({
        "parent_model": "",
        "format": if c.format.is_empty() { "gguf" } else { &c.format },
        "family": c.architecture,
        "families": [c.architecture],
        "parameter_size": c.parameters,
        "quantization_level": c.quantization,
    })
}

/// `GET /api/version`.
pub async fn version() -> Json<Value> {
    Json(json!({"version": OLLAMA_VERSION}))
}

/// `GET /api/tags`: the store's models.
pub async fn tags(State(app): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let models = app.runtime.store().list()?;
    let list: Vec<Value> = models
        .iter()
        .flat_map(|m| {
            let modified = m.created().map(|t| t.to_rfc3339()).unwrap_or_default();
            m.familiar_names().into_iter().map(move |name| {
                json!({"name": name, "model": name, "modified_at": modified, "size": m.size(),
                       "digest": m.id.hex(), "details": details(m)})
            })
        })
        .collect();
    Ok(Json(json!({"models": list})))
}

/// `GET /api/ps`: the loaded models, with when they unload and their context size.
pub async fn ps(State(app): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let mut list = Vec::new();
    for m in app.runtime.loaded().await {
        let local = app.runtime.store().resolve(&m.id.to_string()).ok();
        // Checked: a keep-alive of centuries must not overflow the calendar.
        let expires_at = m
            .expires_at()
            .and_then(|t| {
                chrono::TimeDelta::from_std(t.saturating_duration_since(Instant::now())).ok()
            })
            .and_then(|left| chrono::Utc::now().checked_add_signed(left))
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "9999-12-31T23:59:59Z".into());
        list.push(json!({
            "name": m.name, "model": m.name, "size": m.memory_bytes, "digest": m.id.hex(),
            "details": local.as_ref().map(details), "expires_at": expires_at,
            // Ollama's meaning: bytes in GPU memory.
            "size_vram": if m.device == "cpu" { 0 } else { m.memory_bytes },
            "context_length": m.context_size, "device": m.device,
            // What `model configure` set for it.
            "settings": m.settings,
        }));
    }
    Ok(Json(json!({"models": list})))
}

#[derive(Debug, Deserialize)]
pub struct ModelName {
    pub model: Option<String>,
    pub name: Option<String>,
    #[serde(default = "yes")]
    pub stream: bool,
    #[serde(default)]
    pub insecure: bool,
}

fn yes() -> bool {
    true
}

impl ModelName {
    fn get(&self) -> Result<&str, ApiError> {
        self.model
            .as_deref()
            .or(self.name.as_deref())
            .ok_or_else(|| ApiError::invalid("model is required", Some("model")))
    }
}

/// `POST /api/show`.
pub async fn show(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let request: ModelName = parse_body(&body)?;
    let model = app.runtime.store().resolve(request.get()?)?;
    let c = &model.config.config;
    // The template the model answers with: its package's own layer wins over the GGUF's.
    let template = match model.manifest.chat_template_layer() {
        Some(layer) => {
            String::from_utf8_lossy(&app.runtime.store().read_blob(&layer.digest)?).into_owned()
        }
        None => c
            .gguf
            .get("tokenizer.chat_template")
            .cloned()
            .unwrap_or_default(),
    };
    let mut info: serde_json::Map<String, Value> =
        c.gguf.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    info.remove("tokenizer.chat_template");
    let capabilities = capabilities(c, &template);
    Ok(Json(json!({
        "license": "", "modelfile": "", "parameters": "", "template": template,
        "details": details(&model), "model_info": info, "capabilities": capabilities,
        "modified_at": model.created().map(|t| t.to_rfc3339()),
    })))
}

/// What a model can do, as Ollama's `/api/show` lists it: the artifact's capabilities (every decoder
/// completes and calls tools: a template without a tool format gets the generic one, and the grammar keeps
/// calls well formed; encoders embed or rerank), and `thinking` for a decoder whose template thinks.
fn capabilities(config: &crate::artifact::ModelConfig, template: &str) -> Vec<&'static str> {
    let mut capabilities = config.capabilities();
    if capabilities.contains(&"completion") && ReasoningFormat::detect(template).is_some() {
        capabilities.push("thinking");
    }
    capabilities
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    #[serde(default)]
    pub messages: Vec<OllamaMessage>,
    #[serde(default = "yes")]
    pub stream: bool,
    #[serde(default)]
    pub options: Options,
    pub keep_alive: Option<Value>,
    pub format: Option<Value>,
    pub tools: Option<Value>,
    /// Thinking on or off; the thinking comes back in `message.thinking`.
    pub think: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct OllamaMessage {
    pub role: String,
    #[serde(default)]
    pub content: String,
    /// `[{"function": {"name", "arguments": {..}}}]` on assistant turns.
    pub tool_calls: Option<Value>,
    /// On tool turns: which tool answered.
    pub tool_name: Option<String>,
}

impl OllamaMessage {
    fn to_chat_message(&self) -> ChatMessage {
        let mut message = ChatMessage::new(&self.role, self.content.clone());
        message.name = self.tool_name.clone();
        message.tool_calls = self.tool_calls.as_ref().and_then(Value::as_array).map(|calls| {
            Value::Array(
                calls
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        json!({"id": format!("call_{i}"), "type": "function", "function": c.get("function").cloned().unwrap_or(Value::Null)})
                    })
                    .collect(),
            )
        });
        message
    }
}

#[derive(Debug, Deserialize)]
pub struct GenerateRequest {
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    pub system: Option<String>,
    #[serde(default)]
    pub raw: bool,
    #[serde(default = "yes")]
    pub stream: bool,
    #[serde(default)]
    pub options: Options,
    pub keep_alive: Option<Value>,
    pub format: Option<Value>,
    /// Thinking on or off; the thinking comes back in `thinking`.
    pub think: Option<bool>,
}

/// Loads (or unloads) a model as a request with no messages or prompt asks, applying its keep_alive.
async fn model_for(
    app: &AppState,
    name: &str,
    keep: &Option<Value>,
) -> Result<Option<Arc<LoadedModel>>, ApiError> {
    let keep = keep_alive(keep)?;
    if keep == Some(Some(Duration::ZERO)) {
        app.runtime.unload(Some(name)).await?;
        return Ok(None);
    }
    let model = app.runtime.get(name).await?;
    model.touch(keep);
    Ok(Some(model))
}

/// Ollama's `think`: switches thinking on or off; asking a model that does not think to think is
/// refused, as Ollama does.
fn think(
    app: &AppState,
    model: &LoadedModel,
    think: Option<bool>,
) -> Result<ReasoningInput, ApiError> {
    if think == Some(true) && ReasoningFormat::detect(model.template.source()).is_none() {
        return Err(ApiError::invalid(
            format!("{:?} does not support thinking", model.name),
            Some("think"),
        ));
    }
    Ok(ReasoningInput {
        enable: think,
        output: app.config.reasoning_output,
        ..Default::default()
    })
}

/// `POST /api/chat`.
pub async fn chat(
    State(app): State<Arc<AppState>>,
    account: Option<Extension<TokenAccount>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ChatRequest = parse_body(&body)?;
    let output = structured::ollama_format(request.format.as_ref())?;
    let Some(model) = model_for(&app, &request.model, &request.keep_alive).await? else {
        return Ok(Json(json!({"model": request.model, "created_at": now_rfc3339(), "message": {"role": "assistant", "content": ""}, "done_reason": "unload", "done": true})).into_response());
    };
    if request.messages.is_empty() {
        return Ok(Json(json!({"model": model.name, "created_at": now_rfc3339(), "message": {"role": "assistant", "content": ""}, "done_reason": "load", "done": true})).into_response());
    }
    let messages: Vec<ChatMessage> = request
        .messages
        .iter()
        .map(OllamaMessage::to_chat_message)
        .collect();
    let input = ChatInput {
        prompt: PromptInput::Messages(messages),
        prompt_field: "messages",
        tools: ToolsInput {
            tools: request.tools,
            tool_choice: None,
            parallel_tool_calls: true,
        },
        output,
        params: request.options.params(),
        choices: 1,
        reasoning: think(&app, &model, request.think)?,
        account: account.map(|Extension(a)| a),
    };
    respond(model, input, request.stream, true).await
}

/// `POST /api/generate`.
pub async fn generate(
    State(app): State<Arc<AppState>>,
    account: Option<Extension<TokenAccount>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: GenerateRequest = parse_body(&body)?;
    let output = structured::ollama_format(request.format.as_ref())?;
    let Some(model) = model_for(&app, &request.model, &request.keep_alive).await? else {
        return Ok(Json(json!({"model": request.model, "created_at": now_rfc3339(), "response": "", "done_reason": "unload", "done": true})).into_response());
    };
    if request.prompt.is_empty() {
        return Ok(Json(json!({"model": model.name, "created_at": now_rfc3339(), "response": "", "done_reason": "load", "done": true})).into_response());
    }
    let prompt = if request.raw {
        PromptInput::Text(request.prompt)
    } else {
        let mut messages = Vec::new();
        if let Some(system) = request.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", request.prompt));
        PromptInput::Messages(messages)
    };
    let input = ChatInput {
        prompt,
        prompt_field: "prompt",
        tools: ToolsInput::default(),
        output,
        params: request.options.params(),
        choices: 1,
        reasoning: think(&app, &model, request.think)?,
        account: account.map(|Extension(a)| a),
    };
    respond(model, input, request.stream, false).await
}

/// Ollama's `tool_calls`: arguments as objects, no ids.
fn ollama_tool_calls(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| {
                let arguments: Value =
                    serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                json!({"function": {"name": c.name, "arguments": arguments}})
            })
            .collect(),
    )
}

/// Runs one generation through the chat pipeline and answers as Ollama does: NDJSON lines while
/// streaming, else one object.
async fn respond(
    model: Arc<LoadedModel>,
    input: ChatInput,
    stream: bool,
    chat: bool,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let generation = pipeline::start(&model, input).await?;
    let name = model.name.clone();
    let piece = move |text: &str,
                      thinking: Option<&str>,
                      calls: &[ToolCall],
                      done: Option<(FinishReason, usize, usize)>|
          -> Value {
        let mut line = json!({"model": name, "created_at": now_rfc3339(), "done": done.is_some()});
        if chat {
            line["message"] = json!({"role": "assistant", "content": text});
            if let Some(thinking) = thinking {
                line["message"]["thinking"] = json!(thinking);
            }
            if !calls.is_empty() {
                line["message"]["tool_calls"] = ollama_tool_calls(calls);
            }
        } else {
            line["response"] = json!(text);
            if let Some(thinking) = thinking {
                line["thinking"] = json!(thinking);
            }
        }
        if let Some((finish, prompt_tokens, completion_tokens)) = done {
            let total = started.elapsed().as_nanos() as u64;
            line["done_reason"] = json!(finish_reason(finish));
            line["total_duration"] = json!(total);
            line["load_duration"] = json!(0);
            line["prompt_eval_count"] = json!(prompt_tokens);
            line["eval_count"] = json!(completion_tokens);
            line["eval_duration"] = json!(total);
        }
        line
    };
    let (tool_format, reasoning) = (generation.tool_format, generation.reasoning);
    if !stream {
        let choice = generation.collect_first(|_, _| {}).await?;
        let finish = choice.finish.unwrap_or(FinishReason::Stop);
        let answer = read_answer(tool_format, reasoning, &choice.text);
        return Ok(Json(piece(
            &answer.content,
            answer.reasoning.as_deref(),
            &answer.calls,
            Some((
                finish,
                choice.usage.prompt_tokens,
                choice.usage.completion_tokens,
            )),
        ))
        .into_response());
    }
    // Ollama streams thinking and content as they come and each tool call whole, just before the end.
    let mut parser = AnswerParser::new(tool_format, reasoning);
    let lines = generation.events().flat_map(move |event| {
        let mut lines = Vec::new();
        match event {
            ChoiceEvent::Token { text, .. } => {
                for event in parser.push(&text) {
                    match event {
                        AnswerEvent::Reasoning(t) => lines.push(piece("", Some(&t), &[], None)),
                        AnswerEvent::Content(t) => lines.push(piece(&t, None, &[], None)),
                        AnswerEvent::CallStart { .. } | AnswerEvent::CallArguments { .. } => {}
                    }
                }
            }
            ChoiceEvent::Done {
                finish,
                text,
                usage,
                ..
            } => {
                let (mut thinking, mut content) = (String::new(), String::new());
                for event in parser.push_last(&text, true) {
                    match event {
                        AnswerEvent::Reasoning(t) => thinking.push_str(&t),
                        AnswerEvent::Content(t) => content.push_str(&t),
                        AnswerEvent::CallStart { .. } | AnswerEvent::CallArguments { .. } => {}
                    }
                }
                if !thinking.is_empty() {
                    lines.push(piece("", Some(&thinking), &[], None));
                }
                let calls = parser.calls().to_vec();
                let done = Some((finish, usage.prompt_tokens, usage.completion_tokens));
                if !calls.is_empty() {
                    lines.push(piece(&content, None, &calls, None));
                    lines.push(piece("", None, &[], done));
                } else {
                    lines.push(piece(&content, None, &[], done));
                }
            }
            ChoiceEvent::Failed(e) => lines.push(json!({"error": e.to_string()})),
        }
        futures::stream::iter(
            lines
                .into_iter()
                .map(|l| Ok::<_, std::convert::Infallible>(format!("{l}\n"))),
        )
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// `POST /api/pull`: pulls into the store, streaming progress lines.
pub async fn pull(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let request: ModelName = parse_body(&body)?;
    let name = request.get()?.to_string();
    let source =
        ModelSource::parse(&name).map_err(|e| ApiError::invalid(e.to_string(), Some("model")))?;
    if request.insecure {
        // Plain HTTP would let anyone on the path swap what is pulled; a client may not ask for it.
        // Loopback registries are reached over HTTP anyway, as Docker does.
        return Err(ApiError::invalid(
            "insecure pulls are not accepted over the API; loopback registries need no flag, others need TLS",
            Some("insecure"),
        ));
    }
    let options = crate::registry::RegistryOptions { insecure: false };
    let updates = super::pulling::start(app.runtime.store().clone(), source, options);
    let lines = std::iter::once(json!({"status": "pulling manifest"}));
    let progress = tokio_stream::wrappers::UnboundedReceiverStream::new(updates).map(|update| match update {
        PullUpdate::Progress(TransferEvent::Started { id, total, done }) => {
            json!({"status": format!("pulling {id}"), "digest": id, "total": total, "completed": done})
        }
        PullUpdate::Progress(TransferEvent::Advanced { id, done }) => {
            json!({"status": format!("pulling {id}"), "digest": id, "completed": done})
        }
        PullUpdate::Progress(TransferEvent::Finished { id, .. }) => json!({"status": format!("pulling {id}"), "digest": id}),
        PullUpdate::Progress(TransferEvent::Note(note)) => json!({"status": note}),
        PullUpdate::Finished(Ok(_)) => json!({"status": "success"}),
        PullUpdate::Finished(Err(e)) => json!({"error": e.to_string()}),
    });
    let lines = futures::stream::iter(lines).chain(progress);
    if !request.stream {
        let last = lines.fold(json!({}), |_, line| async move { line }).await;
        if let Some(error) = last.get("error").and_then(Value::as_str) {
            return Err(ApiError::invalid(error.to_string(), Some("model")));
        }
        return Ok(Json(last).into_response());
    }
    let lines = lines.map(|line| Ok::<_, std::convert::Infallible>(format!("{line}\n")));
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// `DELETE /api/delete`.
pub async fn delete(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let request: ModelName = parse_body(&body)?;
    let name = request.get()?;
    let _ = app.runtime.unload(Some(name)).await;
    app.runtime.store().remove(name, false)?;
    Ok(Json(json!({})).into_response())
}

/// The legacy `POST /api/embeddings`: one `prompt`, one `embedding`.
#[derive(Debug, Deserialize)]
pub struct LegacyEmbedRequest {
    pub model: String,
    pub prompt: String,
    pub keep_alive: Option<Value>,
}

/// `POST /api/embeddings` (Ollama's older shape).
pub async fn embeddings(
    State(app): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: LegacyEmbedRequest = parse_body(&body)?;
    let Some(model) = model_for(&app, &request.model, &request.keep_alive).await? else {
        return Ok(Json(json!({"embedding": []})));
    };
    if request.prompt.is_empty() {
        // As Ollama answers an empty prompt: no vector.
        return Ok(Json(json!({"embedding": []})));
    }
    let (mut vectors, _) = embed_all(&model, PromptField::Text(request.prompt)).await?;
    Ok(Json(
        json!({"embedding": vectors.pop().unwrap_or_default()}),
    ))
}

#[derive(Debug, Deserialize)]
pub struct EmbedRequest {
    pub model: String,
    pub input: PromptField,
    pub keep_alive: Option<Value>,
}

/// `POST /api/embed`.
pub async fn embed(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let request: EmbedRequest = parse_body(&body)?;
    let Some(model) = model_for(&app, &request.model, &request.keep_alive).await? else {
        return Ok(Json(json!({"model": request.model, "embeddings": []})));
    };
    let started = Instant::now();
    let (vectors, tokens) = embed_all(&model, request.input).await?;
    Ok(Json(json!({"model": model.name, "embeddings": vectors,
                   "total_duration": started.elapsed().as_nanos() as u64, "prompt_eval_count": tokens})))
}
