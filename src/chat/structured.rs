//! Structured output for every API shape: the output formats requests ask for (OpenAI's
//! `response_format`, Ollama's `format`) read into grammars, grammars compiled off the runtime, and an
//! answer's calls written back into a conversation (`chat::answer` reads answers).

use std::sync::Arc;

use serde_json::{Value, json};

use super::ChatError;
use crate::engine::grammar::{Constraint, GrammarError, GrammarSpec};
use crate::runtime::LoadedModel;
use crate::tools::parser::ToolCall;
use crate::validation::ValidationError;

/// A grammar for the whole answer, and the request field it came from.
#[derive(Debug, Clone)]
pub struct OutputFormat {
    pub spec: GrammarSpec,
    pub field: &'static str,
}

/// Compiles a grammar off the async runtime (the first one also builds the model's token trie).
pub async fn compile(
    model: &Arc<LoadedModel>,
    spec: GrammarSpec,
    field: &'static str,
) -> Result<Constraint, ChatError> {
    let model = model.clone();
    let compiled = tokio::task::spawn_blocking(move || model.grammar()?.compile(&spec))
        .await
        .map_err(|e| ChatError::Internal(format!("grammar compilation stopped: {e}")))?;
    compiled.map_err(|e| match e {
        GrammarError::Invalid(message) => ChatError::Grammar { field, message },
        other => ChatError::Internal(other.to_string()),
    })
}

/// OpenAI's `response_format`: `text`, `json_object` or `json_schema`.
pub fn response_format(value: Option<&Value>) -> Result<Option<OutputFormat>, ValidationError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(OutputFormat {
            spec: GrammarSpec::JsonSchema(json!({"type": "object"})),
            field: "response_format",
        })),
        "json_schema" => {
            let schema = value
                .pointer("/json_schema/schema")
                .or_else(|| value.get("schema"))
                .cloned()
                .unwrap_or_else(|| json!({}));
            schema_spec(schema, "response_format")
        }
        other => Err(ValidationError::invalid(
            "response_format.type",
            format!("response_format.type {other:?} is not one of text, json_object, json_schema"),
        )),
    }
}

/// Ollama's `format`: `"json"` or a JSON Schema object.
pub fn ollama_format(value: Option<&Value>) -> Result<Option<OutputFormat>, ValidationError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(OutputFormat {
            spec: GrammarSpec::JsonSchema(json!({})),
            field: "format",
        })),
        Some(Value::Object(_)) => schema_spec(value.cloned().unwrap_or_default(), "format"),
        Some(other) => Err(ValidationError::invalid(
            "format",
            format!("format {other} is not \"json\" or a JSON Schema object"),
        )),
    }
}

fn schema_spec(
    schema: Value,
    field: &'static str,
) -> Result<Option<OutputFormat>, ValidationError> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(ValidationError::invalid(
            field,
            format!("{field}: the schema must be a JSON object"),
        ));
    }
    Ok(Some(OutputFormat {
        spec: GrammarSpec::JsonSchema(schema),
        field,
    }))
}

/// The `tool_calls` of an assistant message in the conversation (the OpenAI shape chat templates read).
pub fn tool_calls_json(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_formats_are_read_before_anything_compiles() {
        let json = ollama_format(Some(&json!("json"))).unwrap().unwrap();
        assert_eq!(json.field, "format");
        assert!(ollama_format(Some(&json!(""))).unwrap().is_none());
        assert_eq!(
            ollama_format(Some(&json!(3))).unwrap_err().param(),
            Some("format")
        );
        let object = response_format(Some(&json!({"type": "json_object"})))
            .unwrap()
            .unwrap();
        assert_eq!(object.field, "response_format");
        assert!(
            response_format(Some(&json!({"type": "text"})))
                .unwrap()
                .is_none()
        );
        assert_eq!(
            response_format(Some(&json!({"type": "xml"})))
                .unwrap_err()
                .param(),
            Some("response_format.type")
        );
        assert_eq!(
            response_format(Some(
                &json!({"type": "json_schema", "json_schema": {"schema": 1}})
            ))
            .unwrap_err()
            .param(),
            Some("response_format")
        );
    }
}
