//! Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`; also under
//! `/anthropic`), for the `anthropic` SDKs and Claude-style tools: a thin translation into the chat
//! pipeline (`request.rs`), its answer read into pieces and returned as a `message` (`response.rs`) or
//! as Anthropic's stream of events (`stream.rs`), errors in Anthropic's shape (`error.rs`). MCP servers
//! named by `mcp_servers` (configured ones only) run server-side through `chat::tool_loop`, their calls
//! shown as `mcp_tool_use` / `mcp_tool_result` blocks.

pub mod error;
pub mod request;
pub mod response;
pub mod stream;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json};
use futures::StreamExt;
use serde_json::{Value, json};

use self::error::AnthropicError;
use self::request::{MessagesRequest, Thinking, Translated};
use self::response::{Blocks, Piece};
use self::stream::{EventWriter, error_event, sse};
use super::AppState;
use super::body::parse_body;
use crate::chat::answer::{AnswerEvent, AnswerParser};
use crate::chat::mcp_tools::{self, McpChat};
use crate::chat::reasoning::ReasoningInput;
use crate::chat::tool_loop::{LoopEvent, Outcome, ToolLoop};
use crate::chat::{
    ChatError, ChatInput, ChoiceEvent, Generation, PromptInput, ToolsInput, ValidChat, pipeline,
};
use crate::engine::FinishReason;
use crate::mcp::TokenAccount;
use crate::runtime::LoadedModel;
use crate::tools::parser::ToolEvent;

/// The Messages routes, mounted at the root and under `/anthropic`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
}

/// The key a client presented, as a gateway client token: Anthropic's clients send `x-api-key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    super::mcp::bearer(headers).or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
}

/// `mcp_servers` may name only servers configured with `--mcp-config`; a request's URL is never used.
fn check_mcp_servers(app: &AppState, names: &[(usize, String)]) -> Result<(), AnthropicError> {
    if names.is_empty() {
        return Ok(());
    }
    let Some(gateway) = &app.gateway else {
        return Err(AnthropicError::invalid(
            "mcp_servers: this server has no MCP servers (start it with --mcp-config); it never connects to a URL given in a request",
        ));
    };
    let known = gateway.server_names();
    for (i, name) in names {
        if !known.contains(name) {
            return Err(AnthropicError::invalid(format!(
                "mcp_servers[{i}].name: {name:?} is not an MCP server configured on this server; servers come from --mcp-config and a URL given in a request is never connected to"
            )));
        }
    }
    Ok(())
}

/// The request's MCP selection, when it has MCP servers or the server attaches MCP tools by default.
async fn mcp_chat(
    app: &AppState,
    headers: &HeaderMap,
    t: &Translated,
) -> Result<Option<McpChat>, AnthropicError> {
    check_mcp_servers(app, &t.mcp_server_names)?;
    Ok(mcp_tools::resolve(
        app.gateway.as_ref(),
        app.config.default_mcp_tools,
        presented_key(headers),
        t.tools.as_ref(),
    )
    .await?)
}

/// The model the request names (after the request itself checked out: a bad body never loads a model).
async fn model_and_request(
    app: &AppState,
    body: &Bytes,
    count_only: bool,
) -> Result<(Arc<LoadedModel>, Translated, bool), AnthropicError> {
    let request: MessagesRequest = parse_body(body)?;
    let name = request.model.clone();
    let stream = request.stream;
    let translated = request::translate(request, count_only)?;
    let model = app.runtime.get(&name).await?;
    Ok((model, translated, stream))
}

/// `POST /v1/messages`.
pub async fn messages(
    State(app): State<Arc<AppState>>,
    account: Option<Extension<TokenAccount>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AnthropicError> {
    let (model, mut t, stream) = model_and_request(&app, &body, false).await?;
    if let Some(mcp) = mcp_chat(&app, &headers, &t).await? {
        let mut looped = ToolLoop::new(model, mcp, t.messages);
        looped.tool_choice = t.tool_choice;
        looped.parallel_tool_calls = t.parallel_tool_calls;
        looped.params = t.params;
        looped.reasoning = reasoning_input(&app, t.thinking);
        return if stream {
            Ok(loop_stream(looped))
        } else {
            loop_answer(looped).await
        };
    }
    let stops = t.params.stop.clone();
    let tools = t.tools.take();
    let mut input = chat_input(&app, t, tools);
    input.account = account.map(|Extension(a)| a);
    let valid = ValidChat::new(&model, input)?;
    let prepared = pipeline::prepare(&model, valid).await?;
    let input_tokens = prepared.request.prompt.len();
    let generation = pipeline::submit(&model, prepared)?;
    let reader = AnswerReader::new(&generation);
    if stream {
        return Ok(answer_stream(
            model,
            generation,
            reader,
            stops,
            input_tokens,
        ));
    }
    let choice = generation.collect_first(|_, _| {}).await?;
    let mut reader = reader;
    let mut blocks = Blocks::default();
    for piece in reader.push(&choice.text, true) {
        blocks.push(piece);
    }
    let called = blocks.has_tool_use();
    let ids: Vec<u32> = choice.tokens.iter().map(|t| t.id).collect();
    let stop_sequence = stop_hit(&model, choice.finish, called, &ids, &stops);
    let reason = response::stop_reason(choice.finish, called, stop_sequence.as_deref());
    let body = response::message_json(
        &response::message_id(),
        &model.name,
        blocks.finish(),
        reason,
        stop_sequence,
        choice.usage,
    );
    Ok(Json(body).into_response())
}

/// The stop sequence that ended an answer, if one did.
fn stop_hit(
    model: &LoadedModel,
    finish: Option<FinishReason>,
    called: bool,
    tokens: &[u32],
    stops: &[String],
) -> Option<String> {
    (finish == Some(FinishReason::Stop) && !called)
        .then(|| response::stop_sequence_hit(&model.tokenizer, tokens, stops))
        .flatten()
}

/// Reads generated text into pieces: thinking, text and tool calls, through the one answer parser.
struct AnswerReader(AnswerParser);

impl AnswerReader {
    fn new(generation: &Generation) -> Self {
        Self(AnswerParser::new(
            generation.tool_format,
            generation.reasoning,
        ))
    }

    /// The pieces in the next text (`at_end` with the last).
    fn push(&mut self, text: &str, at_end: bool) -> Vec<Piece> {
        self.0
            .push_last(text, at_end)
            .into_iter()
            .map(|event| match event {
                AnswerEvent::Reasoning(text) => Piece::Thinking(text),
                AnswerEvent::Content(text) => response::from_tool_event(ToolEvent::Content(text)),
                AnswerEvent::CallStart { index, id, name } => {
                    response::from_tool_event(ToolEvent::CallStart { index, id, name })
                }
                AnswerEvent::CallArguments { index, delta } => {
                    response::from_tool_event(ToolEvent::CallArguments { index, delta })
                }
            })
            .collect()
    }
}

/// The translated request as the pipeline's input, offering `tools` (function tools, and for counting
/// the MCP tools a request would be offered).
fn chat_input(app: &AppState, t: Translated, tools: Option<Value>) -> ChatInput {
    ChatInput {
        prompt: PromptInput::Messages(t.messages),
        prompt_field: "messages",
        tools: ToolsInput {
            tools,
            tool_choice: t.tool_choice,
            parallel_tool_calls: t.parallel_tool_calls,
        },
        output: None,
        params: t.params,
        choices: 1,
        reasoning: reasoning_input(app, t.thinking),
        account: None,
    }
}

/// Messages' `thinking` as the pipeline's switch: enabled asks the template to think, anything else
/// asks it not to (Anthropic's models think only when asked); `--reasoning-format` says how it is read.
fn reasoning_input(app: &AppState, thinking: Thinking) -> ReasoningInput {
    ReasoningInput {
        enable: Some(matches!(thinking, Thinking::Enabled { .. })),
        template_kwargs: Default::default(),
        output: app.config.reasoning_output,
    }
}

/// The generation as Anthropic's events.
fn answer_stream(
    model: Arc<LoadedModel>,
    generation: Generation,
    mut reader: AnswerReader,
    stops: Vec<String>,
    input_tokens: usize,
) -> Response {
    let id = response::message_id();
    let first = EventWriter::start(&id, &model.name, input_tokens);
    let mut writer = EventWriter::default();
    let mut tokens: Vec<u32> = Vec::new();
    let events = generation.events().flat_map(move |event| {
        let out: Vec<Value> = match event {
            ChoiceEvent::Token { text, token, .. } => {
                tokens.push(token.id);
                reader
                    .push(&text, false)
                    .into_iter()
                    .flat_map(|piece| writer.push(piece))
                    .collect()
            }
            ChoiceEvent::Done {
                finish,
                text,
                usage,
                ..
            } => {
                let mut out: Vec<Value> = reader
                    .push(&text, true)
                    .into_iter()
                    .flat_map(|piece| writer.push(piece))
                    .collect();
                let writer = std::mem::take(&mut writer);
                let called = writer.has_tool_use();
                let stop_sequence = stop_hit(&model, Some(finish), called, &tokens, &stops);
                let reason = response::stop_reason(Some(finish), called, stop_sequence.as_deref());
                out.extend(writer.finish(reason, stop_sequence, usage));
                out
            }
            ChoiceEvent::Failed(e) => vec![error_event(ChatError::Generation(e).into())],
        };
        futures::stream::iter(out)
    });
    sse(futures::stream::iter(first).chain(events)).into_response()
}

/// Why a looped answer stopped.
fn loop_stop_reason(outcome: &Outcome) -> &'static str {
    response::stop_reason(outcome.finish, !outcome.client_calls.is_empty(), None)
}

/// Runs the MCP tool loop and answers whole: each call the server ran, then the answer and any client
/// calls.
async fn loop_answer(looped: ToolLoop) -> Result<Response, AnthropicError> {
    let name = looped.model.name.clone();
    let id = response::message_id();
    let outcome = looped.run(None).await?;
    let mut blocks = Blocks::default();
    if let Some(thought) = outcome.reasoning.clone() {
        blocks.push(Piece::Thinking(thought));
    }
    for (i, record) in outcome.calls.iter().enumerate() {
        for piece in response::mcp_pieces(&format!("{}_{i}", &id[4..]), record) {
            blocks.push(piece);
        }
    }
    blocks.push(Piece::Text(outcome.content.clone().unwrap_or_default()));
    for call in &outcome.client_calls {
        for piece in response::call_pieces(call) {
            blocks.push(piece);
        }
    }
    let body = response::message_json(
        &id,
        &name,
        blocks.finish(),
        loop_stop_reason(&outcome),
        None,
        outcome.usage,
    );
    Ok(Json(body).into_response())
}

/// Runs the MCP tool loop and streams: text as it is generated, each MCP call and its result as blocks.
fn loop_stream(looped: ToolLoop) -> Response {
    let first = EventWriter::start(&response::message_id(), &looped.model.name, 0);
    let mut writer = EventWriter::default();
    let events = looped.stream().flat_map(move |event| {
        let out: Vec<Value> = match event {
            LoopEvent::Content(text) => writer.push(Piece::Text(text)),
            LoopEvent::Reasoning(text) => writer.push(Piece::Thinking(text)),
            LoopEvent::CallStarted {
                id,
                name,
                arguments,
            } => {
                let (server, name) = response::mcp_name(&name);
                writer.push(Piece::McpUse {
                    id: response::mcp_tool_use_id(&id),
                    name,
                    server,
                    input: arguments,
                })
            }
            LoopEvent::CallFinished { id, record } => {
                writer.push(response::mcp_result_piece(&id, &record))
            }
            LoopEvent::Ended(Ok(outcome)) => {
                let mut out: Vec<Value> = outcome
                    .client_calls
                    .iter()
                    .flat_map(response::call_pieces)
                    .flat_map(|piece| writer.push(piece))
                    .collect();
                let writer = std::mem::take(&mut writer);
                out.extend(writer.finish(loop_stop_reason(&outcome), None, outcome.usage));
                out
            }
            LoopEvent::Ended(Err(e)) => vec![error_event(e.into())],
        };
        futures::stream::iter(out)
    });
    sse(futures::stream::iter(first).chain(events)).into_response()
}

/// `POST /v1/messages/count_tokens`: the prompt as a request would render it (system, messages, tools,
/// MCP tools included), tokenized; nothing is generated.
pub async fn count_tokens(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AnthropicError> {
    let (model, mut t, _) = model_and_request(&app, &body, true).await?;
    let tools = match mcp_chat(&app, &headers, &t).await? {
        Some(mcp) => {
            let mut functions = mcp.functions;
            functions.extend(mcp.selection.functions);
            Some(Value::Array(functions))
        }
        None => t.tools.take(),
    };
    // Counting asks for no completion: the prompt alone is checked against the context.
    t.params.max_tokens = None;
    let input = chat_input(&app, t, tools);
    let valid = ValidChat::new(&model, input)?;
    let prepared = pipeline::prepare(&model, valid).await?;
    Ok(Json(json!({"input_tokens": prepared.request.prompt.len()})).into_response())
}
