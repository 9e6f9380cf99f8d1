//! OpenAI's Responses API: `POST /v1/responses` translated into a `ChatInput` (or a `ToolLoop` when it
//! brings MCP tools), the pipeline's answer translated back into a `response` object or its event stream;
//! `GET`/`DELETE /v1/responses/{id}` and `input_items` over the stored responses (`store.rs`).

pub mod items;
mod mcp;
pub mod store;
mod stream;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::unix_now;
use crate::chat::structured::OutputFormat;
use crate::chat::{ChatInput, PromptInput, ReasoningInput, ToolsInput, pipeline, read_answer};
use crate::engine::FinishReason;
use crate::engine::chat_template::ChatMessage;
use crate::engine::grammar::GrammarSpec;
use crate::mcp::TokenAccount;
use crate::scheduler::Usage;
use crate::server::AppState;
use crate::server::body::parse_body;
use crate::server::errors::ApiError;
use crate::validation::GenerationParams;
use items::new_id;
use store::StoredResponse;

/// OpenAI's bounds on `metadata`.
const METADATA_KEYS: usize = 16;
const METADATA_KEY_CHARS: usize = 64;
const METADATA_VALUE_CHARS: usize = 512;
/// Bound on `user` (OpenAI's is 64 for safety identifiers; we accept longer end-user ids).
const USER_CHARS: usize = 256;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effort {
    Minimal,
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Summary {
    Auto,
    Concise,
    Detailed,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reasoning {
    pub effort: Option<Effort>,
    pub summary: Option<Summary>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Truncation {
    Auto,
    #[default]
    Disabled,
}

#[derive(Debug, Default, Deserialize)]
pub struct TextConfig {
    pub format: Option<Value>,
    pub verbosity: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    #[serde(default)]
    pub input: Value,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub text: Option<TextConfig>,
    pub reasoning: Option<Reasoning>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub truncation: Option<Truncation>,
    pub user: Option<String>,
    pub store: Option<bool>,
    #[serde(default)]
    pub stream: bool,
    pub background: Option<bool>,
    pub previous_response_id: Option<String>,
}

/// The request fields a response echoes, checked.
struct Echo {
    fields: Value,
    store: bool,
}

fn check_request(request: &ResponsesRequest) -> Result<Echo, ApiError> {
    if request.background == Some(true) {
        return Err(ApiError::invalid(
            "background responses are not supported by this server; send the request without background: true",
            Some("background"),
        ));
    }
    if let Some(metadata) = &request.metadata {
        if metadata.len() > METADATA_KEYS {
            return Err(ApiError::invalid(
                format!(
                    "metadata has {} keys; at most {METADATA_KEYS} are allowed",
                    metadata.len()
                ),
                Some("metadata"),
            ));
        }
        for (key, value) in metadata {
            if key.chars().count() > METADATA_KEY_CHARS
                || value.chars().count() > METADATA_VALUE_CHARS
            {
                return Err(ApiError::invalid(
                    format!(
                        "metadata keys are at most {METADATA_KEY_CHARS} characters and values at most {METADATA_VALUE_CHARS}"
                    ),
                    Some(&format!(
                        "metadata.{}",
                        key.chars().take(METADATA_KEY_CHARS).collect::<String>()
                    )),
                ));
            }
        }
    }
    if request
        .user
        .as_ref()
        .is_some_and(|u| u.chars().count() > USER_CHARS)
    {
        return Err(ApiError::invalid(
            format!("user is at most {USER_CHARS} characters"),
            Some("user"),
        ));
    }
    let store = request.store.unwrap_or(true);
    let text_format = request
        .text
        .as_ref()
        .and_then(|t| t.format.clone())
        .unwrap_or_else(|| json!({"type": "text"}));
    Ok(Echo {
        fields: json!({
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "max_tool_calls": null,
            "parallel_tool_calls": request.parallel_tool_calls.unwrap_or(true),
            "previous_response_id": request.previous_response_id,
            "reasoning": request.reasoning.clone().unwrap_or_default(),
            "service_tier": "default",
            "store": store,
            "temperature": request.temperature.unwrap_or(1.0),
            "text": {"format": text_format},
            "tool_choice": request.tool_choice.clone().unwrap_or_else(|| json!("auto")),
            "tools": request.tools.clone().unwrap_or_default(),
            "top_logprobs": 0,
            "top_p": request.top_p.unwrap_or(1.0),
            "truncation": request.truncation.unwrap_or_default(),
            "user": request.user,
            "metadata": request.metadata.clone().unwrap_or_default(),
        }),
        store,
    })
}

/// `text.format` as the pipeline's output format.
fn output_format(text: Option<&TextConfig>) -> Result<Option<OutputFormat>, ApiError> {
    let Some(format) = text
        .and_then(|t| t.format.as_ref())
        .filter(|f| !f.is_null())
    else {
        return Ok(None);
    };
    let spec = match format.get("type").and_then(Value::as_str) {
        Some("text") => return Ok(None),
        Some("json_object") => GrammarSpec::JsonSchema(json!({"type": "object"})),
        Some("json_schema") => {
            if !format.get("name").is_some_and(Value::is_string) {
                return Err(ApiError::invalid(
                    "text.format.name is required for json_schema",
                    Some("text.format.name"),
                ));
            }
            match format.get("schema") {
                Some(schema) if schema.is_object() => GrammarSpec::JsonSchema(schema.clone()),
                _ => {
                    return Err(ApiError::invalid(
                        "text.format.schema must be a JSON Schema object",
                        Some("text.format.schema"),
                    ));
                }
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "text.format.type must be one of text, json_schema, json_object",
                Some("text.format.type"),
            ));
        }
    };
    Ok(Some(OutputFormat {
        spec,
        field: "text.format",
    }))
}

/// The Responses `tools` in the chat pipeline's shape: flat function tools nested as chat's, MCP
/// entries kept for the gateway (never a client-given `server_url`), hosted tools refused.
fn chat_tools(tools: &[Value]) -> Result<Vec<Value>, ApiError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let param = format!("tools[{i}]");
            match tool.get("type").and_then(Value::as_str) {
                Some("function") if tool.get("function").is_some() => Ok(tool.clone()),
                Some("function") => Ok(json!({"type": "function", "function": {
                    "name": tool.get("name").cloned().unwrap_or(Value::Null),
                    "description": tool.get("description").cloned().unwrap_or(Value::Null),
                    "parameters": tool.get("parameters").cloned().unwrap_or(Value::Null),
                }})),
                Some("mcp") => {
                    if tool.get("server_url").is_some() || tool.get("connector_id").is_some() {
                        return Err(ApiError::invalid(
                            format!("{param}: this server never connects to a server_url or connector given in a request; name one of its configured MCP servers in server_label"),
                            Some(&format!("{param}.server_url")),
                        ));
                    }
                    Ok(tool.clone())
                }
                Some(other) => Err(ApiError::invalid(
                    format!("{param}.type {other:?} is not supported by this server; use function or mcp tools"),
                    Some(&format!("{param}.type")),
                )),
                None => Err(ApiError::invalid(
                    format!("{param}.type is required"),
                    Some(&format!("{param}.type")),
                )),
            }
        })
        .collect()
}

/// The Responses `tool_choice` in chat's shape.
fn chat_tool_choice(choice: Option<&Value>) -> Result<Option<Value>, ApiError> {
    match choice {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!(s))),
        Some(object) => match object.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = object
                    .get("name")
                    .or_else(|| object.pointer("/function/name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::invalid("tool_choice.name is required", Some("tool_choice.name"))
                    })?;
                Ok(Some(
                    json!({"type": "function", "function": {"name": name}}),
                ))
            }
            _ => Err(ApiError::invalid(
                "tool_choice must be none, auto, required or {\"type\": \"function\", \"name\": ...}",
                Some("tool_choice"),
            )),
        },
    }
}

/// The request's `reasoning.effort` as the pipeline's switch (`minimal` asks templates that can to
/// skip thinking; absent leaves the template's default), and the server's `--reasoning-format`.
fn reasoning_input(app: &AppState, reasoning: Option<&Reasoning>) -> ReasoningInput {
    ReasoningInput {
        enable: reasoning
            .and_then(|r| r.effort)
            .map(|effort| !matches!(effort, Effort::Minimal)),
        template_kwargs: Default::default(),
        output: app.config.reasoning_output,
    }
}

/// The model's thinking, when it wrote any, as the `reasoning` item that comes before the answer's.
fn reasoning_items(thinking: Option<&str>) -> Vec<Value> {
    thinking
        .map(|text| items::reasoning_item(&new_id("rs"), text))
        .into_iter()
        .collect()
}

/// The Responses `usage`.
fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// One response being made: what every form of it (created, in progress, done) shares.
#[derive(Clone)]
struct Envelope {
    id: String,
    created_at: i64,
    model: String,
    echo: Value,
}

impl Envelope {
    /// The response object in `status`.
    fn object(
        &self,
        status: &str,
        output: Vec<Value>,
        usage: Option<Usage>,
        finish: Option<FinishReason>,
    ) -> Value {
        let incomplete = finish == Some(FinishReason::Length) && status == "incomplete";
        let mut body = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": incomplete.then(|| json!({"reason": "max_output_tokens"})),
            "model": self.model,
            "output": output,
            "usage": usage.map(usage_json),
        });
        if let (Some(body), Some(echo)) = (body.as_object_mut(), self.echo.as_object()) {
            for (k, v) in echo {
                body.insert(k.clone(), v.clone());
            }
        }
        body
    }
}

/// The status a finished answer has.
fn status_of(finish: Option<FinishReason>) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "incomplete",
        _ => "completed",
    }
}

/// What a response is stored with, for `previous_response_id` and `input_items`.
struct ToStore {
    store: Arc<store::ResponsesStore>,
    input: Vec<Value>,
    context: Vec<Value>,
}

impl ToStore {
    /// Stores the finished `response`; a failure is logged (the answer was already made).
    async fn put(self, response: &Value) {
        let id = response["id"].as_str().unwrap_or_default().to_string();
        let created = response["created_at"].as_u64().unwrap_or(0);
        let record = StoredResponse {
            response: response.clone(),
            input: self.input,
            context: self.context,
        };
        if let Err(e) = self.store.put(id.clone(), created, record).await {
            tracing::error!(%id, error = %e, "the response could not be stored");
        }
    }
}

/// `POST /v1/responses`.
pub async fn create(
    State(app): State<Arc<AppState>>,
    account: Option<Extension<TokenAccount>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ResponsesRequest = parse_body(&body)?;
    let echo = check_request(&request)?;
    let output = output_format(request.text.as_ref())?;
    let tools = request
        .tools
        .as_deref()
        .map(chat_tools)
        .transpose()?
        .map(Value::Array);
    let tool_choice = chat_tool_choice(request.tool_choice.as_ref())?;
    let input = items::input_items(request.input)?;
    let model = app.runtime.get(&request.model).await?;
    let mut context = match &request.previous_response_id {
        Some(id) => {
            let previous = load(&app, id, "previous_response_id").await?;
            let mut context = previous.context;
            if let Some(output) = previous.response["output"].as_array() {
                context.extend(output.iter().cloned());
            }
            context
        }
        None => Vec::new(),
    };
    context.extend(input.iter().cloned());
    let mut messages: Vec<ChatMessage> = Vec::new();
    if let Some(instructions) = request.instructions.as_ref().filter(|i| !i.is_empty()) {
        messages.push(ChatMessage {
            role: "system".into(),
            content: instructions.clone(),
            tool_calls: None,
            tool_call_id: None,
            name: None,
        });
    }
    messages.extend(items::to_messages(&context)?);
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "'input' must contain at least one item",
            Some("input"),
        ));
    }
    let params = GenerationParams {
        max_tokens: request.max_output_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        ..GenerationParams::default()
    };
    let envelope = Envelope {
        id: new_id("resp"),
        created_at: unix_now(),
        model: model.name.clone(),
        echo: echo.fields,
    };
    let to_store = echo.store.then(|| ToStore {
        store: app.responses.clone(),
        input,
        context: context.clone(),
    });
    let parallel_tool_calls = request.parallel_tool_calls.unwrap_or(true);
    let mcp = crate::chat::mcp_tools::resolve(
        app.gateway.as_ref(),
        app.config.default_mcp_tools,
        crate::server::mcp::bearer(&headers),
        tools.as_ref(),
    )
    .await?;
    if let Some(mcp) = mcp {
        if output.is_some() {
            return Err(ApiError::invalid(
                "text.format cannot be combined with mcp tools",
                Some("text.format"),
            ));
        }
        let run = mcp::McpRun::new(
            model,
            mcp,
            tools.as_ref(),
            messages,
            &context,
            tool_choice,
            parallel_tool_calls,
            params,
        )
        .await?
        .with_reasoning(reasoning_input(&app, request.reasoning.as_ref()));
        return if request.stream {
            Ok(stream::mcp_stream(run, envelope, to_store))
        } else {
            let (output, usage, finish) = run.run().await?;
            let body = envelope.object(status_of(finish), output, Some(usage), finish);
            if let Some(to_store) = to_store {
                to_store.put(&body).await;
            }
            Ok(Json(body).into_response())
        };
    }
    let chat = ChatInput {
        prompt: PromptInput::Messages(messages),
        prompt_field: "input",
        tools: ToolsInput {
            tools,
            tool_choice,
            parallel_tool_calls,
        },
        output,
        params,
        choices: 1,
        reasoning: reasoning_input(&app, request.reasoning.as_ref()),
        account: account.map(|Extension(a)| a),
    };
    let generation = pipeline::start(&model, chat).await?;
    if request.stream {
        return Ok(stream::chat_stream(generation, envelope, to_store));
    }
    let (tool_format, thinking) = (generation.tool_format, generation.reasoning);
    let choice = generation
        .collect()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("the model produced no answer"))?;
    let status = status_of(choice.finish);
    let answer = read_answer(tool_format, thinking, &choice.text);
    let mut output = reasoning_items(answer.reasoning.as_deref());
    if answer.calls.is_empty() || !answer.content.trim().is_empty() {
        output.push(items::message_item(&new_id("msg"), &answer.content, status));
    }
    for call in &answer.calls {
        output.push(items::function_call_item(
            &new_id("fc"),
            &call.id,
            &call.name,
            &call.arguments,
            "completed",
        ));
    }
    let body = envelope.object(status, output, Some(choice.usage), choice.finish);
    if let Some(to_store) = to_store {
        to_store.put(&body).await;
    }
    Ok(Json(body).into_response())
}

/// A stored response, or OpenAI's 404 (`param` names the field the id came in).
async fn load(app: &AppState, id: &str, param: &str) -> Result<StoredResponse, ApiError> {
    let not_found = || ApiError {
        param: Some(param.into()),
        ..ApiError::not_found(format!(
            "Response with id '{}' not found.",
            id.chars().take(120).collect::<String>()
        ))
    };
    if !items::valid_id(id, "resp") {
        return Err(not_found());
    }
    app.responses.get(id).await?.ok_or_else(not_found)
}

/// `GET /v1/responses/{id}`.
pub async fn retrieve(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let stored = load(&app, &id, "response_id").await?;
    Ok(Json(stored.response).into_response())
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let found = items::valid_id(&id, "resp") && app.responses.delete(&id).await?;
    if !found {
        return Err(ApiError {
            param: Some("response_id".into()),
            ..ApiError::not_found(format!(
                "Response with id '{}' not found.",
                id.chars().take(120).collect::<String>()
            ))
        });
    }
    Ok(Json(json!({"id": id, "object": "response.deleted", "deleted": true})).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub limit: Option<String>,
    pub order: Option<String>,
    pub after: Option<String>,
    pub before: Option<String>,
}

/// `GET /v1/responses/{id}/input_items`: OpenAI's list shape, newest first unless `order=asc`.
pub async fn input_items(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = match query.limit.as_deref() {
        None => 20,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| ApiError::invalid("limit must be between 1 and 100", Some("limit")))?,
    };
    let ascending = match query.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "order must be asc or desc",
                Some("order"),
            ));
        }
    };
    let stored = load(&app, &id, "response_id").await?;
    let mut list = stored.input;
    if !ascending {
        list.reverse();
    }
    let position = |cursor: &str, param: &str| {
        list.iter()
            .position(|item| item["id"].as_str() == Some(cursor))
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("{param} names no item of this response"),
                    Some(param),
                )
            })
    };
    let start = match &query.after {
        Some(after) => position(after, "after")? + 1,
        None => 0,
    };
    let end = match &query.before {
        Some(before) => position(before, "before")?,
        None => list.len(),
    };
    let window: Vec<Value> = list.get(start..end.max(start)).unwrap_or_default().to_vec();
    let has_more = window.len() > limit;
    let data: Vec<Value> = window.into_iter().take(limit).collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "first_id": data.first().and_then(|i| i["id"].as_str()),
        "last_id": data.last().and_then(|i| i["id"].as_str()),
        "has_more": has_more,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_function_tools_and_choices_translate_to_chat_shapes() {
        let tools = chat_tools(&[json!({"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": true})]).unwrap();
        assert_eq!(tools[0]["function"]["name"], "f");
        assert_eq!(
            chat_tool_choice(Some(&json!({"type": "function", "name": "f"})))
                .unwrap()
                .unwrap()["function"]["name"],
            "f"
        );
        let hosted = chat_tools(&[json!({"type": "web_search"})]).unwrap_err();
        assert_eq!(hosted.param.as_deref(), Some("tools[0].type"));
        let remote =
            chat_tools(&[json!({"type": "mcp", "server_label": "x", "server_url": "http://evil"})])
                .unwrap_err();
        assert_eq!(remote.param.as_deref(), Some("tools[0].server_url"));
    }

    #[test]
    fn text_formats_become_output_formats() {
        let config = |format: Value| TextConfig {
            format: Some(format),
            verbosity: None,
        };
        assert!(
            output_format(Some(&config(json!({"type": "text"}))))
                .unwrap()
                .is_none()
        );
        let schema = output_format(Some(&config(
            json!({"type": "json_schema", "name": "x", "schema": {"type": "object"}}),
        )))
        .unwrap();
        assert_eq!(schema.unwrap().field, "text.format");
        assert_eq!(
            output_format(Some(&config(json!({"type": "json_schema", "schema": {}}))))
                .unwrap_err()
                .param
                .as_deref(),
            Some("text.format.name")
        );
        assert!(output_format(Some(&config(json!({"type": "xml"})))).is_err());
    }
}
