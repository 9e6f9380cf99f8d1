//! A Messages request translated into the chat pipeline's terms: `system` and `messages` (content as a
//! string or blocks) into the chat template's messages, Anthropic's `tools` and `tool_choice` into the
//! OpenAI shapes `tools::parse_tools` reads, `mcp_servers` and MCP toolsets into the gateway's `mcp`
//! entries, and the sampling fields into `GenerationParams`. Everything is checked here with errors that
//! name the field (`messages[2].content[0].type`), so a wrong type is a 400 and never a panic.
//!
//! Blocks kept only for their shape: `thinking` and `redacted_thinking` in history are validated and then
//! dropped from the prompt, as Anthropic does for earlier turns. `image` and `document` are refused until
//! the runner has a vision model.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::AnthropicError;
use crate::engine::chat_template::ChatMessage;
use crate::mcp::naming;
use crate::validation::GenerationParams;

/// Anthropic's smallest thinking budget.
pub const MIN_THINKING_BUDGET: i64 = 1024;

/// The body of `POST /v1/messages` and `/v1/messages/count_tokens`.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: Option<i64>,
    pub messages: Vec<MessageIn>,
    pub system: Option<Value>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub stop_sequences: Option<Vec<String>>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub thinking: Option<Value>,
    pub metadata: Option<Value>,
    #[serde(default)]
    pub stream: bool,
    pub mcp_servers: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
pub struct MessageIn {
    pub role: String,
    pub content: Value,
}

/// The request's `thinking` switch. Until the reasoning splitter is wired in, it is accepted and carried
/// to the one place thinking blocks are emitted (`stream::Piece::Thinking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Thinking {
    #[default]
    Disabled,
    /// `{"type": "enabled", "budget_tokens": N}`, or `adaptive` (no budget).
    Enabled { budget_tokens: Option<u32> },
}

/// The `mcp_servers` a request names, with their index in it.
pub type ServerNames = Vec<(usize, String)>;

/// The request in the pipeline's terms.
#[derive(Debug)]
pub struct Translated {
    pub messages: Vec<ChatMessage>,
    /// Function tools and `mcp` entries, in OpenAI's shapes.
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: bool,
    pub params: GenerationParams,
    pub thinking: Thinking,
    /// Configured MCP servers the request names through `mcp_servers` (checked against the gateway).
    pub mcp_server_names: ServerNames,
}

fn invalid(field: &str, message: impl std::fmt::Display) -> AnthropicError {
    AnthropicError::invalid(format!("{field}: {message}"))
}

fn string_field<'a>(
    block: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a str, AnthropicError> {
    match block.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(&format!("{at}.{key}"), "must be a string")),
        None => Err(invalid(&format!("{at}.{key}"), "Field required")),
    }
}

/// Translates `request`; `count_only` for `count_tokens`, which takes no `max_tokens`.
pub fn translate(request: MessagesRequest, count_only: bool) -> Result<Translated, AnthropicError> {
    if !count_only && request.max_tokens.is_none() {
        return Err(invalid("max_tokens", "Field required"));
    }
    if request.messages.is_empty() {
        return Err(invalid("messages", "at least one message is required"));
    }
    if let Some(metadata) = &request.metadata
        && !(metadata.is_object() || metadata.is_null())
    {
        return Err(invalid("metadata", "must be an object"));
    }
    let thinking = thinking(request.thinking.as_ref(), request.max_tokens)?;
    let mut messages = Vec::new();
    if let Some(system) = system_text(request.system.as_ref())? {
        messages.push(ChatMessage::new("system", system));
    }
    for (i, message) in request.messages.into_iter().enumerate() {
        let at = format!("messages[{i}]");
        match message.role.as_str() {
            "user" => user_message(&message.content, &at, &mut messages)?,
            "assistant" => assistant_message(&message.content, &at, &mut messages)?,
            other => {
                return Err(invalid(
                    &format!("{at}.role"),
                    format!(
                        "{other:?} is not one of user, assistant (put system text in the top-level 'system')"
                    ),
                ));
            }
        }
    }
    let (tools, toolsets) = tools(request.tools.unwrap_or_default())?;
    let (mcp_entries, mcp_server_names) =
        mcp_entries(request.mcp_servers.unwrap_or_default(), toolsets)?;
    let mut tools = tools;
    tools.extend(mcp_entries);
    let (tool_choice, parallel_tool_calls) = tool_choice(request.tool_choice.as_ref())?;
    let params = GenerationParams {
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        stop: request.stop_sequences.unwrap_or_default(),
        ..Default::default()
    };
    Ok(Translated {
        messages,
        tools: (!tools.is_empty()).then_some(Value::Array(tools)),
        tool_choice,
        parallel_tool_calls,
        params,
        thinking,
        mcp_server_names,
    })
}

fn thinking(value: Option<&Value>, max_tokens: Option<i64>) -> Result<Thinking, AnthropicError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Thinking::Disabled);
    };
    let Some(object) = value.as_object() else {
        return Err(invalid(
            "thinking",
            "must be an object like {\"type\": \"enabled\", \"budget_tokens\": 2048}",
        ));
    };
    match object.get("type").and_then(Value::as_str) {
        Some("disabled") => Ok(Thinking::Disabled),
        Some("adaptive") => Ok(Thinking::Enabled {
            budget_tokens: None,
        }),
        Some("enabled") => {
            let budget = object
                .get("budget_tokens")
                .and_then(Value::as_i64)
                .ok_or_else(|| {
                    invalid(
                        "thinking.budget_tokens",
                        "an integer is required when thinking is enabled",
                    )
                })?;
            if budget < MIN_THINKING_BUDGET {
                return Err(invalid(
                    "thinking.budget_tokens",
                    format!("must be at least {MIN_THINKING_BUDGET}, got {budget}"),
                ));
            }
            if let Some(max) = max_tokens
                && budget >= max
            {
                return Err(invalid(
                    "thinking.budget_tokens",
                    format!("must be less than max_tokens ({budget} >= {max})"),
                ));
            }
            Ok(Thinking::Enabled {
                budget_tokens: Some(u32::try_from(budget).unwrap_or(u32::MAX)),
            })
        }
        _ => Err(invalid(
            "thinking.type",
            "must be \"enabled\", \"disabled\" or \"adaptive\"",
        )),
    }
}

/// `system`: a string or text blocks.
fn system_text(value: Option<&Value>) -> Result<Option<String>, AnthropicError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(blocks)) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (j, block) in blocks.iter().enumerate() {
                let at = format!("system[{j}]");
                let block = block_object(block, &at)?;
                match block_type(block, &at)? {
                    "text" => parts.push(string_field(block, "text", &at)?.to_string()),
                    other => {
                        return Err(invalid(
                            &format!("{at}.type"),
                            format!("{other:?} is not allowed in system; use text blocks"),
                        ));
                    }
                }
            }
            Ok(Some(parts.join("\n")))
        }
        Some(_) => Err(invalid(
            "system",
            "must be a string or an array of text blocks",
        )),
    }
}

fn block_object<'a>(block: &'a Value, at: &str) -> Result<&'a Map<String, Value>, AnthropicError> {
    block
        .as_object()
        .ok_or_else(|| invalid(at, "a content block must be an object with a \"type\""))
}

fn block_type<'a>(block: &'a Map<String, Value>, at: &str) -> Result<&'a str, AnthropicError> {
    string_field(block, "type", at)
}

/// A message's content as blocks (a string is one text block).
fn content_blocks(content: &Value, at: &str) -> Result<Vec<Value>, AnthropicError> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(blocks) => Ok(blocks.clone()),
        _ => Err(invalid(
            &format!("{at}.content"),
            "must be a string or an array of content blocks",
        )),
    }
}

/// The refusal of a block type no message of this server may carry, naming the field.
fn unsupported(kind: &str, at: &str) -> AnthropicError {
    let field = format!("{at}.type");
    match kind {
        "image" | "document" => invalid(
            &field,
            format!("{kind} content is not supported: the models this server runs take text only"),
        ),
        "server_tool_use"
        | "web_search_tool_result"
        | "web_fetch_tool_result"
        | "code_execution_tool_result"
        | "bash_code_execution_tool_result"
        | "text_editor_code_execution_tool_result"
        | "container_upload"
        | "search_result" => invalid(
            &field,
            format!(
                "{kind} blocks belong to Anthropic's hosted tools, which this server does not run"
            ),
        ),
        other => invalid(&field, format!("unknown content block type {other:?}")),
    }
}

/// `thinking` and `redacted_thinking` blocks: their shape is checked, their text never reaches the prompt.
fn check_thinking_block(
    kind: &str,
    block: &Map<String, Value>,
    at: &str,
) -> Result<(), AnthropicError> {
    match kind {
        "thinking" => {
            string_field(block, "thinking", at)?;
            if let Some(signature) = block.get("signature")
                && !signature.is_string()
            {
                return Err(invalid(&format!("{at}.signature"), "must be a string"));
            }
        }
        _ => {
            string_field(block, "data", at)?;
        }
    }
    Ok(())
}

/// A `tool_result`'s (or `mcp_tool_result`'s) content as text; `is_error` marks it as the tool's failure.
fn tool_result_text(block: &Map<String, Value>, at: &str) -> Result<String, AnthropicError> {
    let mut text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (k, part) in parts.iter().enumerate() {
                let at = format!("{at}.content[{k}]");
                let part = block_object(part, &at)?;
                match block_type(part, &at)? {
                    "text" => texts.push(string_field(part, "text", &at)?.to_string()),
                    other => return Err(unsupported(other, &at)),
                }
            }
            texts.join("\n")
        }
        Some(_) => {
            return Err(invalid(
                &format!("{at}.content"),
                "must be a string or an array of text blocks",
            ));
        }
    };
    match block.get("is_error") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => text = format!("Error: {text}"),
        Some(_) => return Err(invalid(&format!("{at}.is_error"), "must be a boolean")),
    }
    Ok(text)
}

fn user_message(
    content: &Value,
    at: &str,
    out: &mut Vec<ChatMessage>,
) -> Result<(), AnthropicError> {
    let mut text = String::new();
    let mut any_text = false;
    for (j, block) in content_blocks(content, at)?.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        let block = block_object(block, &at)?;
        match block_type(block, &at)? {
            "text" => {
                text.push_str(string_field(block, "text", &at)?);
                any_text = true;
            }
            "tool_result" => {
                let id = string_field(block, "tool_use_id", &at)?.to_string();
                if any_text {
                    out.push(ChatMessage::new("user", std::mem::take(&mut text)));
                    any_text = false;
                }
                let result = tool_result_text(block, &at)?;
                out.push(ChatMessage {
                    tool_call_id: Some(id),
                    ..ChatMessage::new("tool", result)
                });
            }
            kind @ ("thinking" | "redacted_thinking") => check_thinking_block(kind, block, &at)?,
            other => return Err(unsupported(other, &at)),
        }
    }
    if any_text {
        out.push(ChatMessage::new("user", text));
    }
    Ok(())
}

/// A `tool_use`'s call in the OpenAI shape the chat template reads.
fn call_json(id: &str, name: &str, input: &Value) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}})
}

fn assistant_message(
    content: &Value,
    at: &str,
    out: &mut Vec<ChatMessage>,
) -> Result<(), AnthropicError> {
    let mut current = ChatMessage::new("assistant", "");
    let mut calls: Vec<Value> = Vec::new();
    let mut pushed = false;
    let flush = |current: &mut ChatMessage, calls: &mut Vec<Value>, out: &mut Vec<ChatMessage>| {
        let mut message = std::mem::replace(current, ChatMessage::new("assistant", ""));
        if !calls.is_empty() {
            message.tool_calls = Some(Value::Array(std::mem::take(calls)));
        }
        out.push(message);
    };
    for (j, block) in content_blocks(content, at)?.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        let block = block_object(block, &at)?;
        match block_type(block, &at)? {
            "text" => current.content.push_str(string_field(block, "text", &at)?),
            kind @ ("tool_use" | "mcp_tool_use") => {
                let id = string_field(block, "id", &at)?;
                let name = string_field(block, "name", &at)?;
                let input = match block.get("input") {
                    Some(input @ Value::Object(_)) => input,
                    _ => return Err(invalid(&format!("{at}.input"), "must be an object")),
                };
                let name = if kind == "mcp_tool_use" {
                    naming::namespaced(string_field(block, "server_name", &at)?, name)
                } else {
                    name.to_string()
                };
                calls.push(call_json(id, &name, input));
            }
            "mcp_tool_result" => {
                let id = string_field(block, "tool_use_id", &at)?.to_string();
                let result = tool_result_text(block, &at)?;
                flush(&mut current, &mut calls, out);
                pushed = true;
                out.push(ChatMessage {
                    tool_call_id: Some(id),
                    ..ChatMessage::new("tool", result)
                });
            }
            kind @ ("thinking" | "redacted_thinking") => check_thinking_block(kind, block, &at)?,
            "tool_result" => {
                return Err(invalid(
                    &format!("{at}.type"),
                    "tool_result blocks belong in user messages",
                ));
            }
            other => return Err(unsupported(other, &at)),
        }
    }
    if !pushed || !current.content.is_empty() || !calls.is_empty() {
        flush(&mut current, &mut calls, out);
    }
    Ok(())
}

/// An `mcp_toolset` entry of `tools`: which of the request's `mcp_servers` it enables, and which tools.
#[derive(Debug)]
struct Toolset {
    index: usize,
    server: String,
    allowed: Option<Vec<String>>,
}

/// Server tools of Anthropic's that this server cannot run, told by their versioned type names.
fn is_hosted_tool(kind: &str) -> bool {
    [
        "web_search_",
        "web_fetch_",
        "bash_",
        "text_editor_",
        "computer_",
        "code_execution_",
        "memory_",
        "tool_search_tool_",
    ]
    .iter()
    .any(|prefix| kind.starts_with(prefix))
}

/// `tools`: custom tools as OpenAI function tools, our own `mcp` entries as they are; MCP toolsets are
/// returned apart (server name and allowed tools) for `mcp_entries`.
fn tools(list: Vec<Value>) -> Result<(Vec<Value>, Vec<Toolset>), AnthropicError> {
    let mut tools = Vec::with_capacity(list.len());
    let mut toolsets = Vec::new();
    for (i, tool) in list.into_iter().enumerate() {
        let at = format!("tools[{i}]");
        let object = tool
            .as_object()
            .ok_or_else(|| invalid(&at, "a tool must be an object"))?;
        let kind = match object.get("type") {
            None | Some(Value::Null) => "custom",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(invalid(&format!("{at}.type"), "must be a string")),
        };
        match kind {
            "custom" => {
                let name = string_field(object, "name", &at)?;
                let schema = match object.get("input_schema") {
                    Some(schema @ Value::Object(_)) => schema.clone(),
                    Some(_) => {
                        return Err(invalid(
                            &format!("{at}.input_schema"),
                            "must be a JSON Schema object",
                        ));
                    }
                    None => return Err(invalid(&format!("{at}.input_schema"), "Field required")),
                };
                let mut function = json!({"name": name, "parameters": schema});
                match object.get("description") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(d)) => function["description"] = json!(d),
                    Some(_) => {
                        return Err(invalid(&format!("{at}.description"), "must be a string"));
                    }
                }
                tools.push(json!({"type": "function", "function": function}));
            }
            "mcp" => tools.push(tool),
            "mcp_toolset" => {
                let server = string_field(object, "mcp_server_name", &at)?.to_string();
                toolsets.push(Toolset {
                    index: i,
                    server,
                    allowed: toolset_allowed(object, &at)?,
                });
            }
            kind if is_hosted_tool(kind) => {
                return Err(invalid(
                    &format!("{at}.type"),
                    format!(
                        "{kind:?} is one of Anthropic's hosted tools, which this server does not run; define a custom tool (name, description, input_schema) or use MCP servers"
                    ),
                ));
            }
            other => {
                return Err(invalid(
                    &format!("{at}.type"),
                    format!("unknown tool type {other:?}"),
                ));
            }
        }
    }
    Ok((tools, toolsets))
}

/// The tools an MCP toolset enables: `None` for all; with `default_config.enabled: false`, those its
/// `configs` enable.
fn toolset_allowed(
    object: &Map<String, Value>,
    at: &str,
) -> Result<Option<Vec<String>>, AnthropicError> {
    let enabled = |config: Option<&Value>| {
        config
            .and_then(|c| c.get("enabled"))
            .and_then(Value::as_bool)
    };
    let default_on = enabled(object.get("default_config")).unwrap_or(true);
    let configs = match object.get("configs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(c)) => c.clone(),
        Some(_) => {
            return Err(invalid(
                &format!("{at}.configs"),
                "must be an object keyed by tool name",
            ));
        }
    };
    if default_on && configs.values().all(|c| enabled(Some(c)) != Some(false)) {
        return Ok(None);
    }
    Ok(Some(
        configs
            .iter()
            .filter(|(_, c)| enabled(Some(c)).unwrap_or(default_on))
            .map(|(name, _)| name.clone())
            .collect(),
    ))
}

/// `mcp_servers` (and the toolsets that name them) as the gateway's `mcp` entries. A server's `url` and
/// `authorization_token` are never used: the name must be one of the servers configured with
/// `--mcp-config`, and the gateway connects to it as configured.
fn mcp_entries(
    servers: Vec<Value>,
    toolsets: Vec<Toolset>,
) -> Result<(Vec<Value>, ServerNames), AnthropicError> {
    let mut names = Vec::with_capacity(servers.len());
    let mut entries = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let at = format!("mcp_servers[{i}]");
        let object = server
            .as_object()
            .ok_or_else(|| invalid(&at, "must be an object with type \"url\" and a name"))?;
        if block_type(object, &at)? != "url" {
            return Err(invalid(&format!("{at}.type"), "must be \"url\""));
        }
        let name = string_field(object, "name", &at)?.to_string();
        let config = object.get("tool_configuration");
        let enabled = config
            .and_then(|c| c.get("enabled"))
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let allowed = match config.and_then(|c| c.get("allowed_tools")) {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => Some(
                list.iter()
                    .map(|t| t.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        invalid(
                            &format!("{at}.tool_configuration.allowed_tools"),
                            "must be an array of tool names",
                        )
                    })?,
            ),
            Some(_) => {
                return Err(invalid(
                    &format!("{at}.tool_configuration.allowed_tools"),
                    "must be an array of tool names",
                ));
            }
        };
        if enabled && toolsets.is_empty() {
            entries.push(json!({"type": "mcp", "server_label": name, "allowed_tools": allowed}));
        }
        names.push((i, name));
    }
    for Toolset {
        index: i,
        server,
        allowed,
    } in toolsets
    {
        if !names.iter().any(|(_, n)| *n == server) {
            return Err(invalid(
                &format!("tools[{i}].mcp_server_name"),
                format!("{server:?} is not one of the request's mcp_servers"),
            ));
        }
        entries.push(json!({"type": "mcp", "server_label": server, "allowed_tools": allowed}));
    }
    Ok((entries, names))
}

/// `tool_choice` as OpenAI's, and whether calls may come in parallel.
fn tool_choice(value: Option<&Value>) -> Result<(Option<Value>, bool), AnthropicError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok((None, true));
    };
    let object = value
        .as_object()
        .ok_or_else(|| invalid("tool_choice", "must be an object like {\"type\": \"auto\"}"))?;
    let parallel = match object.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(disable)) => !disable,
        Some(_) => {
            return Err(invalid(
                "tool_choice.disable_parallel_tool_use",
                "must be a boolean",
            ));
        }
    };
    let choice = match block_type(object, "tool_choice")? {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            let name = string_field(object, "name", "tool_choice")?;
            json!({"type": "function", "function": {"name": name}})
        }
        other => {
            return Err(invalid(
                "tool_choice.type",
                format!("{other:?} is not one of auto, any, tool, none"),
            ));
        }
    };
    Ok((Some(choice), parallel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> Result<Translated, AnthropicError> {
        let request: MessagesRequest = serde_json::from_value(body).unwrap();
        translate(request, false)
    }

    fn message_of(error: AnthropicError) -> String {
        error.0.message
    }

    #[test]
    fn max_tokens_is_required_as_anthropic_requires_it() {
        let error = request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .unwrap_err();
        assert!(message_of(error).starts_with("max_tokens"));
        let counted: MessagesRequest = serde_json::from_value(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap();
        assert!(translate(counted, true).is_ok());
    }

    #[test]
    fn system_blocks_tool_use_and_tool_results_become_template_messages() {
        let t = request(json!({
            "model": "m", "max_tokens": 10,
            "system": [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Be kind."}],
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "down", "is_error": true},
                    {"type": "text", "text": "thanks"}
                ]}
            ]
        }))
        .unwrap();
        let roles: Vec<&str> = t.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(
            roles,
            ["system", "user", "assistant", "tool", "tool", "user"]
        );
        assert_eq!(t.messages[0].content, "Be terse.\nBe kind.");
        assert_eq!(t.messages[2].content, "Let me look.");
        let calls = t.messages[2].tool_calls.as_ref().unwrap();
        assert_eq!(calls[0]["function"]["name"], "weather");
        assert_eq!(calls[0]["function"]["arguments"], r#"{"city":"Paris"}"#);
        assert_eq!(t.messages[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(t.messages[3].content, "sunny");
        assert_eq!(t.messages[4].content, "Error: down");
    }

    #[test]
    fn images_hosted_tools_and_wrong_types_are_refused_by_field() {
        let image = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
        ]}]});
        let error = message_of(request(image).unwrap_err());
        assert!(
            error.contains("messages[0].content[0].type") && error.contains("image"),
            "{error}"
        );
        let hosted = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
        assert!(message_of(request(hosted).unwrap_err()).contains("hosted"));
        for bad in [
            json!({"role": "user", "content": 3}),
            json!({"role": "user", "content": [{"type": "text", "text": 3}]}),
            json!({"role": "user", "content": [{"text": "no type"}]}),
            json!({"role": "system", "content": "x"}),
            json!({"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": "x"}]}),
            json!({"role": "assistant", "content": [{"type": "thinking"}]}),
        ] {
            let body = json!({"model": "m", "max_tokens": 10, "messages": [bad]});
            assert!(request(body.clone()).is_err(), "{body}");
        }
    }

    #[test]
    fn tool_choice_and_tools_take_openai_shapes() {
        let t = request(
            json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "get", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "get", "disable_parallel_tool_use": true}}),
        )
        .unwrap();
        assert_eq!(
            t.tools.unwrap()[0]["function"]["parameters"]["type"],
            "object"
        );
        assert_eq!(t.tool_choice.unwrap()["function"]["name"], "get");
        assert!(!t.parallel_tool_calls);
        let any = tool_choice(Some(&json!({"type": "any"}))).unwrap();
        assert_eq!(any, (Some(json!("required")), true));
        assert!(tool_choice(Some(&json!({"type": "sometimes"}))).is_err());
        assert!(tool_choice(Some(&json!("auto"))).is_err());
    }

    #[test]
    fn thinking_is_checked_as_anthropic_checks_it() {
        assert_eq!(thinking(None, Some(10)).unwrap(), Thinking::Disabled);
        assert_eq!(
            thinking(
                Some(&json!({"type": "enabled", "budget_tokens": 2048})),
                Some(4096)
            )
            .unwrap(),
            Thinking::Enabled {
                budget_tokens: Some(2048)
            }
        );
        assert!(
            thinking(
                Some(&json!({"type": "enabled", "budget_tokens": 100})),
                Some(4096)
            )
            .is_err()
        );
        assert!(
            thinking(
                Some(&json!({"type": "enabled", "budget_tokens": 4096})),
                Some(4096)
            )
            .is_err()
        );
        assert!(thinking(Some(&json!({"type": "enabled"})), Some(4096)).is_err());
        assert!(thinking(Some(&json!(true)), Some(4096)).is_err());
    }

    #[test]
    fn mcp_servers_become_gateway_entries_by_name_only() {
        let t = request(
            json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
            "mcp_servers": [{"type": "url", "url": "https://elsewhere.example/mcp", "name": "fs",
                             "tool_configuration": {"allowed_tools": ["list_directory"]}}]}),
        )
        .unwrap();
        let tools = t.tools.unwrap();
        assert_eq!(
            tools[0],
            json!({"type": "mcp", "server_label": "fs", "allowed_tools": ["list_directory"]})
        );
        assert_eq!(t.mcp_server_names, vec![(0, "fs".to_string())]);
        assert!(!tools.to_string().contains("elsewhere"));
        let toolset = request(
            json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
            "mcp_servers": [{"type": "url", "url": "u", "name": "fs"}],
            "tools": [{"type": "mcp_toolset", "mcp_server_name": "time"}]}),
        );
        assert!(toolset.is_err());
    }

    #[test]
    fn mcp_history_blocks_become_calls_and_results() {
        let t = request(json!({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [
                {"type": "mcp_tool_use", "id": "mcptoolu_1", "name": "list_directory", "server_name": "fs", "input": {"path": "/"}},
                {"type": "mcp_tool_result", "tool_use_id": "mcptoolu_1", "is_error": false, "content": [{"type": "text", "text": "a.txt"}]},
                {"type": "text", "text": "There is a.txt."}
            ]}
        ]}))
        .unwrap();
        let roles: Vec<&str> = t.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
        assert_eq!(
            t.messages[1].tool_calls.as_ref().unwrap()[0]["function"]["name"],
            "fs__list_directory"
        );
        assert_eq!(t.messages[3].content, "There is a.txt.");
    }
}
