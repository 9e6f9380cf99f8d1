//! Tools and structured output for both chat APIs: the prompt with the tools offered as the model's
//! family expects, the grammar that constrains the answer, and the answer split back into content and
//! tool calls.

use std::sync::Arc;

use serde_json::{Value, json};

use super::errors::ApiError;
use crate::engine::chat_template::ChatMessage;
use crate::engine::grammar::{Constraint, GrammarError, GrammarSpec};
use crate::runtime::LoadedModel;
use crate::tools::parser::{ToolCall, ToolCallParser, ToolEvent};
use crate::tools::{ToolFormat, ToolPlan, parse_choice, parse_tools};

/// What a chat request asks of tools and output shape, as read from the request body.
#[derive(Debug, Default)]
pub struct ChatOptions<'a> {
    pub tools: Option<&'a Value>,
    pub tool_choice: Option<&'a Value>,
    pub parallel_tool_calls: bool,
    /// A grammar for the whole answer (`response_format`, Ollama's `format`), and the field it came from.
    pub output: Option<(GrammarSpec, &'static str)>,
}

/// A chat request made ready for the scheduler.
pub struct PreparedChat {
    pub prompt: Vec<u32>,
    pub constraint: Option<Constraint>,
    /// Set when the answer is to be read for tool calls.
    pub tool_format: Option<ToolFormat>,
}

/// Renders the conversation with the request's tools and compiles its grammar.
pub async fn prepare_chat(
    model: &Arc<LoadedModel>,
    mut messages: Vec<ChatMessage>,
    options: ChatOptions<'_>,
) -> Result<PreparedChat, ApiError> {
    let tools = match options.tools {
        None | Some(Value::Null) => Vec::new(),
        Some(t) => parse_tools(t)?,
    };
    let choice = parse_choice(options.tool_choice, &tools)?;
    let format = ToolFormat::detect(model.template.source());
    let plan = ToolPlan::new(format, tools, choice, options.parallel_tool_calls);
    let tool_grammar = plan
        .as_ref()
        .and_then(|p| p.grammar(|text| model.tokenizer.token_id(text)));
    let grammar = match (tool_grammar, options.output) {
        (Some(_), Some((_, field))) => {
            return Err(ApiError::invalid(
                format!(
                    "{field} cannot be combined with tools on this model: the tool format already constrains the answer"
                ),
                Some(field),
            ));
        }
        (Some(g), None) => Some((g, "tools")),
        (None, output) => output,
    };
    match &plan {
        Some(plan) => plan.prepare_messages(&mut messages),
        None => crate::tools::generic_history_only(format, &mut messages),
    }
    let template_tools = plan.as_ref().and_then(ToolPlan::template_tools);
    let prompt = super::prompt::chat(model, messages, template_tools, "messages").await?;
    let constraint = match grammar {
        Some((spec, field)) => Some(compile(model, spec, field).await?),
        None => None,
    };
    Ok(PreparedChat {
        prompt,
        constraint,
        tool_format: plan.map(|p| p.format),
    })
}

/// Compiles a grammar off the async runtime (the first one also builds the model's token trie).
pub async fn compile(
    model: &Arc<LoadedModel>,
    spec: GrammarSpec,
    field: &'static str,
) -> Result<Constraint, ApiError> {
    let model = model.clone();
    let compiled = tokio::task::spawn_blocking(move || model.grammar()?.compile(&spec))
        .await
        .map_err(|e| ApiError::internal(format!("grammar compilation stopped: {e}")))?;
    compiled.map_err(|e| match e {
        GrammarError::Invalid(message) => {
            ApiError::invalid(format!("invalid {field}: {message}"), Some(field))
        }
        other => ApiError::internal(other.to_string()),
    })
}

/// OpenAI's `response_format`: `text`, `json_object` or `json_schema`.
pub fn response_format(value: Option<&Value>) -> Result<Option<GrammarSpec>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(GrammarSpec::JsonSchema(json!({"type": "object"})))),
        "json_schema" => {
            let schema = value
                .pointer("/json_schema/schema")
                .or_else(|| value.get("schema"))
                .cloned()
                .unwrap_or_else(|| json!({}));
            schema_spec(schema, "response_format")
        }
        other => Err(ApiError::invalid(
            format!("response_format.type {other:?} is not one of text, json_object, json_schema"),
            Some("response_format.type"),
        )),
    }
}

/// Ollama's `format`: `"json"` or a JSON Schema object.
pub fn ollama_format(value: Option<&Value>) -> Result<Option<GrammarSpec>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(GrammarSpec::JsonSchema(json!({})))),
        Some(Value::Object(_)) => schema_spec(value.cloned().unwrap_or_default(), "format"),
        Some(other) => Err(ApiError::invalid(
            format!("format {other} is not \"json\" or a JSON Schema object"),
            Some("format"),
        )),
    }
}

fn schema_spec(schema: Value, field: &str) -> Result<Option<GrammarSpec>, ApiError> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(ApiError::invalid(
            format!("{field}: the schema must be a JSON object"),
            Some(field),
        ));
    }
    Ok(Some(GrammarSpec::JsonSchema(schema)))
}

/// An answer read for tool calls.
#[derive(Debug, Default)]
pub struct SplitAnswer {
    pub content: String,
    pub calls: Vec<ToolCall>,
}

/// Splits a whole answer into content and tool calls.
pub fn split_answer(format: ToolFormat, text: &str) -> SplitAnswer {
    let mut parser = ToolCallParser::new(format);
    let mut events = parser.push(text);
    events.extend(parser.finish());
    let content = events
        .into_iter()
        .filter_map(|e| match e {
            ToolEvent::Content(t) => Some(t),
            _ => None,
        })
        .collect();
    SplitAnswer {
        content,
        calls: parser.calls().to_vec(),
    }
}

/// OpenAI's `tool_calls` array for a message.
pub fn tool_calls_json(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect(),
    )
}
