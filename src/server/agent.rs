//! Chat completions with MCP tools: a request names configured servers in `tools`
//! (`{"type": "mcp", "server_label": "fs", "allowed_tools": [..]}`, the Responses API's shape), and the
//! server runs the model's calls to them through the gateway in a loop — calls of one turn concurrently,
//! results appended as tool messages — until the model answers, a client-defined function is called (it
//! goes back to the client as `tool_calls`), or the round limit is reached (then one last turn without
//! tools). The response lists what ran in `mcp_calls`; a stream sends an `mcp_call` event per call.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::errors::ApiError;
use super::generation::{self, finish_reason};
use super::openai::usage_json;
use super::structured::{self, ChatOptions};
use crate::engine::FinishReason;
use crate::engine::chat_template::ChatMessage;
use crate::mcp::{CallContext, CallRecord, Caller, Gateway, McpError};
use crate::mcp::{code_mode, discovery};
use crate::runtime::LoadedModel;
use crate::scheduler::Usage;
use crate::validation::{GenerationParams, validate};

/// What `tools` asks of the gateway, read from the request.
pub struct McpSelection {
    /// OpenAI function tools the model is offered for MCP (namespaced names).
    pub functions: Vec<Value>,
    /// Names the server runs itself (everything else goes back to the client).
    pub names: HashSet<String>,
    /// Servers the discovery meta-tools may reach (`None`: every server the caller may use).
    pub scope: Option<Vec<String>>,
}

/// Server-side default for requests without tools (`model serve --mcp-tools`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DefaultMcpTools {
    /// Only what a request asks for.
    #[default]
    None,
    /// Every tool the caller may use.
    All,
    /// The discovery meta-tools (`mcp_find`, `mcp_call`) instead of every schema.
    Discovery,
}

/// `tools` entries of type `mcp`, with their index in the request.
pub type McpEntries = Vec<(usize, Value)>;

/// Splits `tools` into client function tools and MCP entries; `None` when there are no MCP entries.
pub fn split_tools(tools: Option<&Value>) -> Option<(Vec<Value>, McpEntries)> {
    let list = tools?.as_array()?;
    let (mcp, functions): (Vec<_>, Vec<_>) = list
        .iter()
        .cloned()
        .enumerate()
        .partition(|(_, t)| t.get("type").and_then(Value::as_str) == Some("mcp"));
    (!mcp.is_empty()).then(|| (functions.into_iter().map(|(_, t)| t).collect(), mcp))
}

fn function_json(name: &str, description: &str, parameters: Value) -> Value {
    json!({"type": "function", "function": {"name": name, "description": description, "parameters": parameters}})
}

fn discovery_functions(selection: &mut McpSelection) {
    if selection.names.contains(discovery::FIND) {
        return;
    }
    selection.functions.push(function_json(
        discovery::FIND,
        discovery::FIND_DESCRIPTION,
        discovery::find_schema(),
    ));
    selection.functions.push(function_json(
        discovery::CALL,
        discovery::CALL_DESCRIPTION,
        discovery::call_schema(),
    ));
    selection.names.insert(discovery::FIND.into());
    selection.names.insert(discovery::CALL.into());
}

/// Reads the request's MCP entries into tools, checking labels and access.
pub async fn select(
    gateway: &Gateway,
    caller: &Caller,
    entries: &[(usize, Value)],
) -> Result<McpSelection, ApiError> {
    let mut selection = McpSelection {
        functions: Vec::new(),
        names: HashSet::new(),
        scope: Some(Vec::new()),
    };
    for (i, entry) in entries {
        let param = format!("tools[{i}]");
        let label = entry
            .get("server_label")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::invalid(
                    "an mcp tool needs a server_label naming a configured MCP server",
                    Some(&format!("{param}.server_label")),
                )
            })?;
        let allowed: Option<Vec<String>> =
            match entry.get("allowed_tools") {
                None | Some(Value::Null) => None,
                Some(Value::Array(names)) => Some(
                    names
                        .iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect(),
                ),
                Some(Value::Object(filter)) => filter
                    .get("tool_names")
                    .and_then(Value::as_array)
                    .map(|names| {
                        names
                            .iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect()
                    }),
                Some(_) => {
                    return Err(ApiError::invalid(
                        "allowed_tools must be an array of tool names",
                        Some(&format!("{param}.allowed_tools")),
                    ));
                }
            };
        if entry.get("code_mode").and_then(Value::as_bool) == Some(true) {
            if !gateway.server_names().iter().any(|s| s == label) {
                return Err(mcp_error(McpError::UnknownServer(label.into()), &param));
            }
            if selection.names.insert(code_mode::RUN_JS.into()) {
                selection.functions.push(function_json(
                    code_mode::RUN_JS,
                    &code_mode_description(gateway, caller, label).await,
                    code_mode::schema(),
                ));
            }
            if let Some(scope) = selection.scope.as_mut() {
                scope.push(label.to_string());
            }
            continue;
        }
        if entry.get("discovery").and_then(Value::as_bool) == Some(true) {
            if !gateway.server_names().iter().any(|s| s == label) {
                return Err(mcp_error(McpError::UnknownServer(label.into()), &param));
            }
            discovery_functions(&mut selection);
            if let Some(scope) = selection.scope.as_mut() {
                scope.push(label.to_string());
            }
            continue;
        }
        let tools = gateway
            .server_tools(caller, label, allowed.as_deref())
            .await
            .map_err(|e| mcp_error(e, &format!("{param}.server_label")))?;
        for tool in tools {
            if selection.names.insert(tool.name.clone()) {
                selection.functions.push(function_json(
                    &tool.name,
                    tool.description(),
                    tool.input_schema(),
                ));
            }
        }
    }
    Ok(selection)
}

/// The server's default selection for a request without tools.
pub async fn default_selection(
    gateway: &Gateway,
    caller: &Caller,
    mode: DefaultMcpTools,
) -> Option<McpSelection> {
    let mut selection = McpSelection {
        functions: Vec::new(),
        names: HashSet::new(),
        scope: None,
    };
    match mode {
        DefaultMcpTools::None => return None,
        DefaultMcpTools::Discovery => discovery_functions(&mut selection),
        DefaultMcpTools::All => {
            for tool in gateway.tools(caller).await {
                selection.names.insert(tool.name.clone());
                selection.functions.push(function_json(
                    &tool.name,
                    tool.description(),
                    tool.input_schema(),
                ));
            }
        }
    }
    (!selection.functions.is_empty()).then_some(selection)
}

/// `run_js`'s description for a model: what it does and the functions one server gives it.
async fn code_mode_description(gateway: &Gateway, caller: &Caller, server: &str) -> String {
    let functions: Vec<String> = gateway
        .server_tools(caller, server, None)
        .await
        .unwrap_or_default()
        .iter()
        .map(|t| format!("{}: {}", t.name, t.description()))
        .collect();
    format!(
        "{} Functions: {}",
        code_mode::DESCRIPTION,
        functions.join("; ")
    )
}

fn mcp_error(error: McpError, param: &str) -> ApiError {
    ApiError::invalid(error.to_string(), Some(param))
}

/// Everything one looped chat request needs.
pub struct AgentRequest {
    pub model: Arc<LoadedModel>,
    pub gateway: Arc<Gateway>,
    pub caller: Caller,
    pub messages: Vec<ChatMessage>,
    /// Client function tools and MCP function tools together, as OpenAI `tools`.
    pub tools: Value,
    pub mcp_names: HashSet<String>,
    /// Servers the discovery meta-tools may reach.
    pub scope: Option<Vec<String>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: bool,
    pub params: GenerationParams,
    pub id: String,
    pub created: i64,
    pub include_usage: bool,
}

/// What the loop ends with.
struct Outcome {
    content: Option<String>,
    client_calls: Vec<crate::tools::parser::ToolCall>,
    finish: Option<FinishReason>,
    calls: Vec<CallRecord>,
    usage: Usage,
}

/// Progress the loop reports to a stream.
enum Progress {
    Started {
        id: String,
        name: String,
        arguments: Value,
    },
    Finished {
        id: String,
        record: Box<CallRecord>,
    },
    /// Answer text, as it is generated.
    Content(String),
}

/// One turn's generation, its content streamed to `progress` as it comes (calls are kept back: the
/// server runs them, or returns them whole).
async fn generate_turn(
    receivers: Vec<tokio::sync::mpsc::UnboundedReceiver<crate::scheduler::Event>>,
    format: Option<crate::tools::ToolFormat>,
    progress: Option<&tokio::sync::mpsc::UnboundedSender<Progress>>,
) -> Result<generation::Choice, ApiError> {
    use crate::tools::parser::{ToolCallParser, ToolEvent};
    let receiver = receivers
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("the model produced no choice"))?;
    let mut parser = format.map(ToolCallParser::new);
    generation::collect_choice(receiver, |text, done| {
        let Some(progress) = progress else {
            return;
        };
        let pieces: Vec<String> = match parser.as_mut() {
            Some(parser) => {
                let mut events = parser.push(text);
                if done {
                    events.extend(parser.finish());
                }
                events
                    .into_iter()
                    .filter_map(|e| match e {
                        ToolEvent::Content(c) => Some(c),
                        _ => None,
                    })
                    .collect()
            }
            None => vec![text.to_string()],
        };
        for piece in pieces.into_iter().filter(|p| !p.is_empty()) {
            let _ = progress.send(Progress::Content(piece));
        }
    })
    .await
}

async fn run_loop(
    request: &AgentRequest,
    progress: Option<&tokio::sync::mpsc::UnboundedSender<Progress>>,
) -> Result<Outcome, ApiError> {
    let max_rounds = request.gateway.max_rounds();
    let mut messages = request.messages.clone();
    let mut calls: Vec<CallRecord> = Vec::new();
    let mut usage = Usage::default();
    // Calls already run (name and arguments): a model that repeats itself gets to answer instead.
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut answer_now = false;
    for round in 0..=max_rounds {
        let last = round == max_rounds || answer_now;
        let tool_choice = if last {
            Some(json!("none"))
        } else if round == 0 {
            request.tool_choice.clone()
        } else {
            None
        };
        let prepared = structured::prepare_chat(
            &request.model,
            messages.clone(),
            ChatOptions {
                tools: Some(&request.tools),
                tool_choice: tool_choice.as_ref(),
                parallel_tool_calls: request.parallel_tool_calls,
                output: None,
            },
        )
        .await?;
        let mut valid = validate(
            prepared.prompt,
            &request.params,
            request.model.vocab_size,
            request.model.context_size,
        )?;
        valid.constraint = prepared.constraint;
        let receivers = generation::submit(&request.model, &valid, 1)?;
        let choice = generate_turn(receivers, prepared.tool_format, progress).await?;
        usage.prompt_tokens += choice.usage.prompt_tokens;
        usage.cached_tokens += choice.usage.cached_tokens;
        usage.completion_tokens += choice.usage.completion_tokens;
        let answer = match prepared.tool_format {
            Some(format) => structured::split_answer(format, &choice.text),
            None => structured::SplitAnswer {
                content: choice.text.clone(),
                calls: Vec::new(),
            },
        };
        if answer.calls.is_empty() {
            return Ok(Outcome {
                content: Some(answer.content),
                client_calls: Vec::new(),
                finish: choice.finish,
                calls,
                usage,
            });
        }
        let (ours, theirs): (Vec<_>, Vec<_>) = answer
            .calls
            .into_iter()
            .partition(|c| request.mcp_names.contains(&c.name));
        let proposed = ours.len();
        let ours: Vec<_> = ours
            .into_iter()
            .filter(|c| seen.insert((c.name.clone(), canonical_arguments(&c.arguments))))
            .collect();
        if proposed > 0 && ours.is_empty() && theirs.is_empty() {
            tracing::debug!(
                round,
                "the model repeated calls it already made; asking for the answer"
            );
            answer_now = true;
            continue;
        }
        let records = futures::future::join_all(ours.iter().map(|call| async {
            let arguments: Value =
                serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
            if let Some(progress) = progress {
                let _ = progress.send(Progress::Started {
                    id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: arguments.clone(),
                });
            }
            let record = request
                .gateway
                .call(
                    &CallContext::new(request.caller.clone()).scoped(request.scope.clone()),
                    &call.name,
                    arguments,
                )
                .await;
            if let Some(progress) = progress {
                let _ = progress.send(Progress::Finished {
                    id: call.id.clone(),
                    record: Box::new(record.clone()),
                });
            }
            record
        }))
        .await;
        if !ours.is_empty() {
            messages.push(ChatMessage {
                role: "assistant".into(),
                content: answer.content.clone(),
                tool_calls: Some(structured::tool_calls_json(&ours)),
                tool_call_id: None,
                name: None,
            });
            for (call, record) in ours.iter().zip(&records) {
                messages.push(ChatMessage {
                    role: "tool".into(),
                    content: record.output_text(),
                    tool_calls: None,
                    tool_call_id: Some(call.id.clone()),
                    name: Some(call.name.clone()),
                });
            }
        }
        calls.extend(records);
        if !theirs.is_empty() {
            let content = (!answer.content.trim().is_empty()).then_some(answer.content);
            return Ok(Outcome {
                content,
                client_calls: theirs,
                finish: choice.finish,
                calls,
                usage,
            });
        }
    }
    Err(ApiError::internal("the tool loop ended without an answer"))
}

/// Arguments in a form where equal objects compare equal.
fn canonical_arguments(arguments: &str) -> String {
    serde_json::from_str::<Value>(arguments)
        .map_or_else(|_| arguments.to_string(), |v| v.to_string())
}

fn finish_of(outcome: &Outcome) -> &'static str {
    if !outcome.client_calls.is_empty() {
        "tool_calls"
    } else {
        outcome.finish.map_or("stop", finish_reason)
    }
}

/// Runs the loop and answers whole.
pub async fn respond(request: AgentRequest) -> Result<Response, ApiError> {
    let outcome = run_loop(&request, None).await?;
    let mut message = json!({"role": "assistant", "content": outcome.content, "refusal": null});
    if !outcome.client_calls.is_empty() {
        message["tool_calls"] = structured::tool_calls_json(&outcome.client_calls);
    }
    let body = json!({
        "id": request.id,
        "object": "chat.completion",
        "created": request.created,
        "model": request.model.name,
        "system_fingerprint": null,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_of(&outcome)}],
        "usage": usage_json(outcome.usage),
        "mcp_calls": outcome.calls.iter().map(CallRecord::to_json).collect::<Vec<_>>(),
    });
    Ok(axum::Json(body).into_response())
}

/// Runs the loop and streams: content as it is generated, an `mcp_call` event as each call starts and
/// ends, client tool calls, and `mcp_calls` with the finish.
pub fn stream(request: AgentRequest) -> Response {
    let (events, receiver) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let chunk = {
        let id = request.id.clone();
        let created = request.created;
        let name = request.model.name.clone();
        move |choices: Value| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": name,
                   "system_fingerprint": null, "choices": choices})
        }
    };
    let _ = events.send(chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}])));
    tokio::spawn(async move {
        let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel();
        let forward = {
            let events = events.clone();
            let chunk = chunk.clone();
            tokio::spawn(async move {
                while let Some(progress) = progress_rx.recv().await {
                    let event = match progress {
                        Progress::Started {
                            id,
                            name,
                            arguments,
                        } => {
                            json!({"id": id, "status": "in_progress", "name": name, "arguments": arguments})
                        }
                        Progress::Content(text) => {
                            let delta = chunk(
                                json!([{"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": null}]),
                            );
                            if events.send(delta).is_err() {
                                break;
                            }
                            continue;
                        }
                        Progress::Finished { id, record } => {
                            let mut event = record.to_json();
                            event["id"] = json!(id);
                            event["status"] = json!(if record.failed() {
                                "failed"
                            } else {
                                "completed"
                            });
                            event
                        }
                    };
                    let mut message = chunk(json!([]));
                    message["mcp_call"] = event;
                    if events.send(message).is_err() {
                        break;
                    }
                }
            })
        };
        let outcome = run_loop(&request, Some(&progress_tx)).await;
        drop(progress_tx);
        let _ = forward.await;
        match outcome {
            Ok(outcome) => {
                // The answer's content went out as it was generated.
                for (i, call) in outcome.client_calls.iter().enumerate() {
                    let _ = events.send(chunk(json!([{"index": 0, "delta": {"tool_calls": [{
                        "index": i, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments}}]},
                        "logprobs": null, "finish_reason": null}])));
                }
                let mut last = chunk(
                    json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_of(&outcome)}]),
                );
                last["mcp_calls"] = json!(
                    outcome
                        .calls
                        .iter()
                        .map(CallRecord::to_json)
                        .collect::<Vec<_>>()
                );
                let _ = events.send(last);
                if request.include_usage {
                    let mut usage = chunk(json!([]));
                    usage["usage"] = usage_json(outcome.usage);
                    let _ = events.send(usage);
                }
            }
            Err(error) => {
                let _ = events.send(error.body());
            }
        }
    });
    let stream = UnboundedReceiverStream::new(receiver)
        .map(|v| SseEvent::default().data(v.to_string()))
        .chain(futures::stream::once(async {
            SseEvent::default().data("[DONE]")
        }))
        .map(Ok::<_, Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
