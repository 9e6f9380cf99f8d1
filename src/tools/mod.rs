//! Tool calling: offering OpenAI-style function tools to a model, constraining its output when the
//! request demands a call, and turning what it writes back into `tool_calls`.
//!
//! Each model family writes calls its own way (`ToolFormat`, told from its chat template). Templates that
//! know tools get them through their `tools` variable and speak their native format; templates that do
//! not (the default SmolLM2's) get llama.cpp's generic fallback: a system section that lists the tools and
//! asks for `{"tool_calls": [...]}` or `{"response": "..."}`, enforced by a grammar. The server calls
//! `ToolPlan::prepare_messages` before rendering, `ToolPlan::grammar` for the constraint, and feeds the
//! generated text through a `parser::ToolCallParser`.

pub mod json_scan;
pub mod parser;

use serde_json::{Value, json};

use crate::engine::chat_template::ChatMessage;
use crate::engine::grammar::GrammarSpec;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ToolError {
    #[error("{message}")]
    Invalid { message: String, param: String },
}

impl ToolError {
    fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        ToolError::Invalid {
            message: message.into(),
            param: param.into(),
        }
    }

    /// The request field at fault, as OpenAI's `param`.
    pub fn param(&self) -> &str {
        match self {
            ToolError::Invalid { param, .. } => param,
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// What the request lets or makes the model do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Never call: tools are not even shown.
    None,
    /// Answer or call, as the model decides.
    Auto,
    /// Call at least one tool.
    Required,
    /// Call this function.
    Function(String),
}

/// How a model family writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// Templates without tool support: `{"tool_calls": [...]}` or `{"response": "..."}` (llama.cpp's generic).
    Generic,
    /// Hermes, Qwen 2.5/3, SmolLM3: `<tool_call>{"name": .., "arguments": ..}</tool_call>`.
    Hermes,
    /// Mistral (Nemo, 7B v0.3): `[TOOL_CALLS][{"name": .., "arguments": ..}]`; call ids are 9 letters
    /// and digits, which the template checks.
    Mistral,
    /// Mistral Small 3.2, Devstral, Magistral: `[TOOL_CALLS]NAME[ARGS]{..}` for each call (llama.cpp also
    /// reads a `[CALL_ID]ID` before `[ARGS]`); ids as `Mistral`'s.
    MistralArgs,
    /// Granite 3.x: `<|tool_call|>[{"name": .., "arguments": ..}]`.
    Granite,
    /// Llama 3.x: `{"name": .., "parameters": ..}`, optionally after `<|python_tag|>`.
    Llama3,
    /// gpt-oss's harmony: a message `<|channel|>commentary to=functions.NAME ...<|message|>{ARGS}`,
    /// read by `chat::reasoning`'s harmony splitter and handed to the parser as a call.
    Harmony,
}

impl ToolFormat {
    /// Tells the format from a chat template's source.
    pub fn detect(template: &str) -> Self {
        if !template.contains("tools") {
            ToolFormat::Generic
        } else if template.contains("<|channel|>") && template.contains("functions.") {
            // Harmony addresses a call `to=functions.NAME` (gpt-oss's template builds it in pieces).
            ToolFormat::Harmony
        } else if template.contains("<tool_call>") {
            ToolFormat::Hermes
        } else if template.contains("[TOOL_CALLS]") && template.contains("[ARGS]") {
            ToolFormat::MistralArgs
        } else if template.contains("[TOOL_CALLS]") {
            ToolFormat::Mistral
        } else if template.contains("<|tool_call|>") {
            ToolFormat::Granite
        } else if template.contains("<|python_tag|>")
            || template.contains("<|eom_id|>")
            || (template.contains("<|start_header_id|>") && template.contains("\"parameters\""))
        {
            // Llama 3.2 and 3.3 name neither marker: their prompt asks for `{"name", "parameters"}`.
            ToolFormat::Llama3
        } else if template.contains("tool_call") {
            // Templates that know tools but not a family marker most often follow Hermes.
            ToolFormat::Hermes
        } else {
            ToolFormat::Generic
        }
    }
}

/// Reads OpenAI's `tools` array (function tools; other types are refused).
pub fn parse_tools(tools: &Value) -> Result<Vec<FunctionTool>, ToolError> {
    let Some(list) = tools.as_array() else {
        return Err(ToolError::invalid("tools must be an array", "tools"));
    };
    let mut parsed: Vec<FunctionTool> = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let kind = tool
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("function");
        if kind != "function" {
            return Err(ToolError::invalid(
                format!("tools[{i}].type {kind:?} is not supported; use \"function\""),
                format!("tools[{i}].type"),
            ));
        }
        let function = tool.get("function").unwrap_or(tool);
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(ToolError::invalid(
                format!(
                    "tools[{i}].function.name {name:?} must be 1-64 letters, digits, '_', '-' or '.'"
                ),
                format!("tools[{i}].function.name"),
            ));
        }
        if parsed.iter().any(|t| t.name == name) {
            return Err(ToolError::invalid(
                format!("tools[{i}].function.name {name:?} is given twice"),
                format!("tools[{i}].function.name"),
            ));
        }
        let parameters = match function.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p) if p.is_object() => p.clone(),
            Some(_) => {
                return Err(ToolError::invalid(
                    format!("tools[{i}].function.parameters must be a JSON Schema object"),
                    format!("tools[{i}].function.parameters"),
                ));
            }
        };
        parsed.push(FunctionTool {
            name: name.to_string(),
            description: function
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters,
        });
    }
    Ok(parsed)
}

/// Reads OpenAI's `tool_choice` (absent: `auto` when there are tools).
pub fn parse_choice(
    choice: Option<&Value>,
    tools: &[FunctionTool],
) -> Result<ToolChoice, ToolError> {
    let choice = match choice {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ToolError::invalid(
                    format!("tool_choice {other:?} is not one of none, auto, required"),
                    "tool_choice",
                ));
            }
        },
        Some(object) => {
            let name = object
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ToolError::invalid(
                        "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                        "tool_choice",
                    )
                })?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(ToolError::invalid(
                    format!("tool_choice names function {name:?}, which is not in tools"),
                    "tool_choice",
                ));
            }
            ToolChoice::Function(name.to_string())
        }
    };
    if tools.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Function(_)) {
        return Err(ToolError::invalid(
            "tool_choice requires a tool call but no tools were given",
            "tool_choice",
        ));
    }
    Ok(choice)
}

/// The tools of one request and how the model will be asked to use them.
#[derive(Debug, Clone)]
pub struct ToolPlan {
    pub format: ToolFormat,
    pub choice: ToolChoice,
    /// The tools the model may call (one when a function is named).
    pub tools: Vec<FunctionTool>,
    pub parallel: bool,
}

impl ToolPlan {
    /// A plan, or None when the model is not to see tools at all.
    pub fn new(
        format: ToolFormat,
        tools: Vec<FunctionTool>,
        choice: ToolChoice,
        parallel: bool,
    ) -> Option<Self> {
        if tools.is_empty() || choice == ToolChoice::None {
            return None;
        }
        let tools = match &choice {
            ToolChoice::Function(name) => tools.into_iter().filter(|t| &t.name == name).collect(),
            _ => tools,
        };
        Some(Self {
            format,
            choice,
            tools,
            parallel,
        })
    }

    /// Whether the output must be a call.
    pub fn forces_call(&self) -> bool {
        matches!(self.choice, ToolChoice::Required | ToolChoice::Function(_))
    }

    /// The `tools` value for templates that render tools themselves (None for the generic format).
    pub fn template_tools(&self) -> Option<Value> {
        (self.format != ToolFormat::Generic).then(|| {
            Value::Array(
                self.tools
                    .iter()
                    .map(|t| json!({"type": "function", "function": function_json(t)}))
                    .collect(),
            )
        })
    }

    /// Adapts the conversation to the format: the generic format gets its system section, and past
    /// calls and results are written the way the model is asked to write them.
    pub fn prepare_messages(&self, messages: &mut Vec<ChatMessage>) {
        if self.format != ToolFormat::Generic {
            for message in messages.iter_mut() {
                arguments_as_objects(message);
            }
            if matches!(self.format, ToolFormat::Mistral | ToolFormat::MistralArgs) {
                mistral_call_ids(messages);
            }
            return;
        }
        for message in messages.iter_mut() {
            generic_history(message);
        }
        let section = self.generic_system_section();
        match messages.first_mut() {
            Some(first) if first.role == "system" => {
                first.content = format!("{}\n\n{section}", first.content);
            }
            _ => messages.insert(0, ChatMessage::new("system", section)),
        }
    }

    fn generic_system_section(&self) -> String {
        let listed: Vec<Value> = self.tools.iter().map(function_json).collect();
        let listed = serde_json::to_string_pretty(&listed).unwrap_or_default();
        let call = r#"{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}"#;
        if self.forces_call() {
            format!(
                "You have access to these tools:\n{listed}\n\nCall a tool now. Respond with JSON only, in this form:\n{call}"
            )
        } else {
            format!(
                "You have access to these tools:\n{listed}\n\nRespond with JSON only. To call tools, use:\n{call}\nTo answer the user directly, use:\n{{\"response\": \"<your answer>\"}}"
            )
        }
    }

    /// The grammar the output must follow, if any. The generic format is always constrained (its
    /// answers are JSON); native formats are constrained when a call is required.
    pub fn grammar(&self, special_token_id: impl Fn(&str) -> Option<u32>) -> Option<GrammarSpec> {
        let items = Value::Array(
            self.tools
                .iter()
                .map(|t| call_schema(t, "arguments"))
                .collect(),
        );
        let calls = {
            let mut schema = json!({"type": "array", "items": {"anyOf": items}, "minItems": 1});
            if !self.parallel {
                schema["maxItems"] = json!(1);
            }
            schema
        };
        match self.format {
            ToolFormat::Generic => {
                let call = json!({
                    "type": "object",
                    "properties": {"tool_calls": calls},
                    "required": ["tool_calls"],
                    "additionalProperties": false,
                });
                if self.forces_call() {
                    return Some(GrammarSpec::JsonSchema(call));
                }
                let response = json!({
                    "type": "object",
                    "properties": {"response": {"type": "string"}},
                    "required": ["response"],
                    "additionalProperties": false,
                });
                Some(GrammarSpec::JsonSchema(json!({"anyOf": [call, response]})))
            }
            _ if !self.forces_call() => None,
            ToolFormat::Hermes => {
                let one = lark_json(&json!({"anyOf": items}));
                let repeat = if self.parallel { "+" } else { "" };
                Some(GrammarSpec::Lark(format!(
                    "start: call{repeat}\ncall: \"<tool_call>\\n\" {one} \"\\n</tool_call>\" \"\\n\"?\n"
                )))
            }
            ToolFormat::Mistral | ToolFormat::Granite => {
                let marker = if self.format == ToolFormat::Mistral {
                    "[TOOL_CALLS]"
                } else {
                    "<|tool_call|>"
                };
                Some(GrammarSpec::Lark(format!(
                    "start: {} {}\n",
                    lark_marker(&special_token_id, marker),
                    lark_json(&calls)
                )))
            }
            ToolFormat::MistralArgs => {
                let (marker, args) = (
                    lark_marker(&special_token_id, "[TOOL_CALLS]"),
                    lark_marker(&special_token_id, "[ARGS]"),
                );
                let calls: Vec<String> = self
                    .tools
                    .iter()
                    .map(|t| {
                        let name = Value::String(t.name.clone());
                        let arguments = lark_json(&embeddable_schema(&t.parameters, &t.name));
                        format!("{marker} {name} {args} {arguments}")
                    })
                    .collect();
                let repeat = if self.parallel { "+" } else { "" };
                Some(GrammarSpec::Lark(format!(
                    "start: call{repeat}\ncall: {}\n",
                    calls.join("\n    | ")
                )))
            }
            ToolFormat::Llama3 => {
                let items: Vec<Value> = self
                    .tools
                    .iter()
                    .map(|t| call_schema(t, "parameters"))
                    .collect();
                Some(GrammarSpec::JsonSchema(json!({"anyOf": items})))
            }
            ToolFormat::Harmony => {
                // After the prompt's `<|start|>assistant`: a commentary message to one of the
                // functions, its arguments JSON (the model's `<|call|>` then ends the turn).
                let (channel, constrain, message) = (
                    lark_marker(&special_token_id, "<|channel|>"),
                    lark_marker(&special_token_id, "<|constrain|>"),
                    lark_marker(&special_token_id, "<|message|>"),
                );
                let calls: Vec<String> = self
                    .tools
                    .iter()
                    .map(|t| {
                        let header = Value::String(format!("commentary to=functions.{} ", t.name));
                        let arguments = lark_json(&embeddable_schema(&t.parameters, &t.name));
                        format!("{channel} {header} {constrain} \"json\" {message} {arguments}")
                    })
                    .collect();
                Some(GrammarSpec::Lark(format!(
                    "start: {}\n",
                    calls.join("\n    | ")
                )))
            }
        }
    }
}

/// `{"name", "description", "parameters"}` of a tool, in the order OpenAI's clients write them (templates
/// that print the tools as JSON print them in this order).
fn function_json(tool: &FunctionTool) -> Value {
    let mut f = serde_json::Map::new();
    f.insert("name".into(), json!(tool.name));
    if let Some(d) = &tool.description {
        f.insert("description".into(), json!(d));
    }
    f.insert("parameters".into(), tool.parameters.clone());
    Value::Object(f)
}

/// The schema of one call to `tool`, with its arguments under `arguments_key`.
fn call_schema(tool: &FunctionTool, arguments_key: &str) -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"const": tool.name},
            arguments_key: embeddable_schema(&tool.parameters, &tool.name),
        },
        "required": ["name", arguments_key],
        "additionalProperties": false,
    })
}

/// `schema`, ready to sit inside a larger schema (a call's grammar puts it under `arguments`): local
/// references (`#/$defs/..`, recursive ones included) resolve against the document they are in, so a
/// schema that has them and no `$id` gets one, making it their document rather than the call's.
pub fn embeddable_schema(schema: &Value, tool_name: &str) -> Value {
    let mut schema = schema.clone();
    let needs_id = schema.get("$id").is_none() && has_local_ref(&schema);
    if needs_id && let Value::Object(map) = &mut schema {
        map.insert(
            "$id".into(),
            Value::String(format!("urn:model-runner:tool:{}", url_safe(tool_name))),
        );
    }
    schema
}

fn has_local_ref(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map.iter().any(|(key, value)| {
            (key == "$ref" && value.as_str().is_some_and(|r| r.starts_with('#')))
                || has_local_ref(value)
        }),
        Value::Array(items) => items.iter().any(has_local_ref),
        _ => false,
    }
}

/// A tool name as a URN segment: anything but ASCII letters, digits and `-_.` is percent-encoded.
fn url_safe(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A format's marker in a Lark grammar: the vocabulary's special token where it has one, else its text.
fn lark_marker(special_token_id: &impl Fn(&str) -> Option<u32>, text: &str) -> String {
    special_token_id(text)
        .map(|id| format!("<[{id}]>"))
        .unwrap_or_else(|| Value::String(text.into()).to_string())
}

/// A schema embedded in a Lark grammar, laid out as `GrammarSpec::JsonSchema` lays it out.
fn lark_json(schema: &Value) -> String {
    let mut schema = schema.clone();
    crate::engine::grammar::close_objects(&mut schema);
    format!(
        "%json {}",
        crate::engine::grammar::with_compact_layout(schema)
    )
}

/// Templates that render past calls expect `arguments` as an object; OpenAI sends a JSON string.
fn arguments_as_objects(message: &mut ChatMessage) {
    let Some(Value::Array(calls)) = message.tool_calls.as_mut() else {
        return;
    };
    for call in calls {
        if let Some(arguments) = call.pointer_mut("/function/arguments")
            && let Some(text) = arguments.as_str()
            && let Ok(parsed) = serde_json::from_str::<Value>(text)
        {
            *arguments = parsed;
        }
    }
}

/// Mistral's templates refuse call ids that are not 9 letters and digits; ids from elsewhere (OpenAI's
/// `call_...`) become their last 9 letters and digits (as vLLM cuts them), a call and its result alike.
/// Calls and results that come without ids (Ollama's) are numbered, each result taking the oldest call
/// not yet answered.
fn mistral_call_ids(messages: &mut [ChatMessage]) {
    let mut unanswered = std::collections::VecDeque::new();
    let mut numbered = 0usize;
    for message in messages.iter_mut() {
        if let Some(Value::Array(calls)) = message.tool_calls.as_mut() {
            for call in calls.iter_mut().filter_map(Value::as_object_mut) {
                let id = match call.get("id").and_then(Value::as_str) {
                    Some(id) => mistral_call_id(id),
                    None => {
                        numbered += 1;
                        format!("{numbered:09}")
                    }
                };
                call.insert("id".into(), Value::String(id.clone()));
                unanswered.push_back(id);
            }
        }
        if message.role == "tool" {
            let id = match message.tool_call_id.as_deref() {
                Some(id) => mistral_call_id(id),
                None => unanswered.front().cloned().unwrap_or_else(|| "0".repeat(9)),
            };
            unanswered.retain(|waiting| waiting != &id);
            message.tool_call_id = Some(id);
        }
    }
}

/// `id` as a Mistral call id: itself when it is one, else its last 9 letters and digits (padded with
/// `0` when it has fewer).
pub fn mistral_call_id(id: &str) -> String {
    if is_mistral_call_id(id) {
        return id.to_string();
    }
    let kept: Vec<char> = id.chars().filter(char::is_ascii_alphanumeric).collect();
    let tail = &kept[kept.len().saturating_sub(9)..];
    let mut out = "0".repeat(9 - tail.len());
    out.extend(tail);
    out
}

/// Whether `id` is 9 ASCII letters and digits, as Mistral's templates require.
pub fn is_mistral_call_id(id: &str) -> bool {
    id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The conversation made ready for the chat template and the `tools` value the template gets, with
/// `plan` (None: no tools offered this turn): what the server renders for a chat request.
pub fn template_input(
    plan: Option<&ToolPlan>,
    format: ToolFormat,
    messages: &mut Vec<ChatMessage>,
) -> Option<Value> {
    match plan {
        Some(plan) => {
            plan.prepare_messages(messages);
            plan.template_tools()
        }
        None => {
            generic_history_only(format, messages);
            None
        }
    }
}

/// In the generic format, past calls are the JSON the model was asked for, and results are user turns.
/// For a generic-format model shown a tool conversation without being offered tools this turn
/// (`tool_choice: "none"`, or the last turn of a tool loop): past calls and results become plain text,
/// so that the model answers in prose rather than imitating the JSON it is no longer asked for.
pub fn generic_history_only(format: ToolFormat, messages: &mut [ChatMessage]) {
    if format != ToolFormat::Generic {
        return;
    }
    for message in messages.iter_mut() {
        if let Some(Value::Array(calls)) = message.tool_calls.take() {
            let described: Vec<String> = calls
                .iter()
                .map(|c| {
                    let name = c
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or("a tool");
                    let arguments =
                        c.pointer("/function/arguments")
                            .map_or(String::new(), |a| match a {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            });
                    format!("I called {name} with {arguments}.")
                })
                .collect();
            let text = described.join(" ");
            message.content = if message.content.trim().is_empty() {
                text
            } else {
                format!("{}\n{text}", message.content)
            };
        }
        if message.role == "tool" {
            let tool = message.name.take().unwrap_or_else(|| "the tool".into());
            message.tool_call_id = None;
            message.role = "user".to_string();
            message.content = format!("Result of {tool}:\n{}", message.content);
        }
    }
}

fn generic_history(message: &mut ChatMessage) {
    if let Some(Value::Array(calls)) = message.tool_calls.take() {
        let calls: Vec<Value> = calls
            .iter()
            .map(|c| {
                let name = c.pointer("/function/name").cloned().unwrap_or(Value::Null);
                let arguments = match c.pointer("/function/arguments") {
                    Some(Value::String(s)) => {
                        serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
                    }
                    Some(v) => v.clone(),
                    None => json!({}),
                };
                json!({"name": name, "arguments": arguments})
            })
            .collect();
        message.content = json!({"tool_calls": calls}).to_string();
    } else if message.role == "assistant" && !message.content.is_empty() {
        message.content = json!({"response": message.content}).to_string();
    }
    if message.role == "tool" {
        let mut result = json!({"content": message.content});
        if let Some(id) = message.tool_call_id.take() {
            result["tool_call_id"] = json!(id);
        }
        if let Some(name) = message.name.take() {
            result["tool"] = json!(name);
        }
        message.role = "user".to_string();
        message.content = json!({"tool_response": result}).to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_history_without_tools_reads_as_prose() {
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls = Some(json!([{"id": "c1", "type": "function",
            "function": {"name": "fs__list_directory", "arguments": "{\"path\": \"/docs\"}"}}]));
        let mut result = ChatMessage::new("tool", "[FILE] a.txt");
        result.tool_call_id = Some("c1".into());
        result.name = Some("fs__list_directory".into());
        let mut messages = vec![ChatMessage::new("user", "list /docs"), call, result];
        generic_history_only(ToolFormat::Generic, &mut messages);
        assert_eq!(
            messages[1].content,
            "I called fs__list_directory with {\"path\": \"/docs\"}."
        );
        assert!(messages[1].tool_calls.is_none());
        assert_eq!(messages[2].role, "user");
        assert_eq!(
            messages[2].content,
            "Result of fs__list_directory:\n[FILE] a.txt"
        );
    }

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    }

    /// Whether `text` is a complete answer under the grammar `plan` builds (one byte per token).
    fn grammar_accepts(plan: &ToolPlan, text: &str) -> bool {
        let spec = plan.grammar(|_| None).expect("a grammar");
        let env = toktrie::ApproximateTokEnv::single_byte_env();
        let mut factory = llguidance::ParserFactory::new_simple(&env).expect("factory");
        factory.quiet();
        let parser = factory
            .create_parser(spec.to_top_level())
            .expect("the grammar compiles");
        let mut matcher = llguidance::Matcher::new(Ok(parser));
        assert_eq!(matcher.get_error(), None);
        let tokens: Vec<u32> = text.bytes().map(u32::from).collect();
        matcher.consume_tokens(&tokens).is_ok() && matcher.is_accepting().unwrap_or(false)
    }

    #[test]
    fn client_tools_with_recursive_defs_constrain_calls_all_the_way_down() {
        // The schema the Python SDKs write for a tree: `#/$defs/Node` refers to itself, and must
        // resolve against the tool's parameters, not the call object they are embedded in.
        let tools = parse_tools(&json!([{"type": "function", "function": {"name": "count.nodes",
            "parameters": {"$defs": {"Node": {"type": "object", "properties": {"name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}, "required": ["name"]}},
                "type": "object", "properties": {"root": {"$ref": "#/$defs/Node"}}, "required": ["root"]}}}]))
        .expect("tools");
        let plan = ToolPlan::new(
            ToolFormat::Generic,
            tools.clone(),
            ToolChoice::Required,
            false,
        )
        .expect("a plan");
        let call = |root: &str| {
            format!(
                r#"{{"tool_calls": [{{"name": "count.nodes", "arguments": {{"root": {root}}}}}]}}"#
            )
        };
        let deep = r#"{"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}"#;
        assert!(grammar_accepts(&plan, &call(deep)), "{}", call(deep));
        let nameless_grandchild =
            r#"{"name": "a", "children": [{"name": "b", "children": [{"children": []}]}]}"#;
        assert!(!grammar_accepts(&plan, &call(nameless_grandchild)));
        let embedded = embeddable_schema(&tools[0].parameters, &tools[0].name);
        assert_eq!(embedded["$id"], "urn:model-runner:tool:count.nodes");
        // A schema without local references is left as it is.
        let plain = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        assert_eq!(embeddable_schema(&plain, "w"), plain);
    }

    #[test]
    fn formats_are_told_from_templates() {
        assert_eq!(ToolFormat::detect("{{ messages }}"), ToolFormat::Generic);
        assert_eq!(
            ToolFormat::detect("{% if tools %}<tool_call>{% endif %}"),
            ToolFormat::Hermes
        );
        assert_eq!(
            ToolFormat::detect("{% if tools %}[TOOL_CALLS]{% endif %}"),
            ToolFormat::Mistral
        );
        assert_eq!(
            ToolFormat::detect("{% if tools %}<|python_tag|>{% endif %}"),
            ToolFormat::Llama3
        );
        assert_eq!(
            ToolFormat::detect(include_str!(
                "../../tests/fixtures/gpt-oss-chat-template.jinja"
            )),
            ToolFormat::Harmony
        );
    }

    #[test]
    fn bad_tools_and_choices_name_the_field() {
        let e = parse_tools(&json!([{"type": "retrieval"}])).unwrap_err();
        assert_eq!(e.param(), "tools[0].type");
        let e =
            parse_tools(&json!([{"type": "function", "function": {"name": "a b"}}])).unwrap_err();
        assert_eq!(e.param(), "tools[0].function.name");
        let tools = parse_tools(&weather()).unwrap();
        let e = parse_choice(
            Some(&json!({"type": "function", "function": {"name": "nope"}})),
            &tools,
        )
        .unwrap_err();
        assert_eq!(e.param(), "tool_choice");
        assert!(parse_choice(Some(&json!("required")), &[]).is_err());
        assert_eq!(
            parse_choice(Some(&json!("none")), &tools).unwrap(),
            ToolChoice::None
        );
    }

    #[test]
    fn generic_format_adds_a_system_section_and_rewrites_history() {
        let tools = parse_tools(&weather()).unwrap();
        let plan = ToolPlan::new(ToolFormat::Generic, tools, ToolChoice::Auto, true).unwrap();
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls = Some(json!([{"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]));
        let mut result = ChatMessage::new("tool", "18C");
        result.tool_call_id = Some("c1".into());
        let mut messages = vec![ChatMessage::new("user", "Weather?"), call, result];
        plan.prepare_messages(&mut messages);
        assert_eq!(messages[0].role, "system");
        assert!(messages[0].content.contains("get_weather"));
        let history: Value = serde_json::from_str(&messages[2].content).unwrap();
        assert_eq!(history["tool_calls"][0]["arguments"]["city"], "Paris");
        assert_eq!(messages[3].role, "user");
        assert!(messages[3].content.contains("tool_response"));
        assert!(matches!(
            plan.grammar(|_| None),
            Some(GrammarSpec::JsonSchema(_))
        ));
    }

    #[test]
    fn none_hides_tools_and_auto_leaves_native_formats_free() {
        let tools = parse_tools(&weather()).unwrap();
        assert!(ToolPlan::new(ToolFormat::Hermes, tools.clone(), ToolChoice::None, true).is_none());
        let plan =
            ToolPlan::new(ToolFormat::Hermes, tools.clone(), ToolChoice::Auto, true).unwrap();
        assert_eq!(plan.grammar(|_| None), None);
        let plan = ToolPlan::new(ToolFormat::Hermes, tools, ToolChoice::Required, false).unwrap();
        assert!(
            matches!(plan.grammar(|_| None), Some(GrammarSpec::Lark(g)) if g.contains("<tool_call>"))
        );
    }

    /// A required call from Mistral Small 3.2 is `[TOOL_CALLS]NAME[ARGS]{..}`, from Nemo and Granite their
    /// marker and a list of call objects (the markers as text where the vocabulary has no token).
    #[test]
    fn required_mistral_and_granite_calls_follow_their_shapes() {
        let tools = parse_tools(&weather()).unwrap();
        let plan = |format, parallel| {
            ToolPlan::new(format, tools.clone(), ToolChoice::Required, parallel).unwrap()
        };
        let args = plan(ToolFormat::MistralArgs, true);
        assert!(grammar_accepts(
            &args,
            r#"[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}"#
        ));
        assert!(!grammar_accepts(&args, r#"[TOOL_CALLS]get_time[ARGS]{}"#));
        let single = plan(ToolFormat::MistralArgs, false);
        assert!(!grammar_accepts(
            &single,
            r#"[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}"#
        ));
        let nemo = plan(ToolFormat::Mistral, true);
        assert!(grammar_accepts(
            &nemo,
            r#"[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]"#
        ));
        let granite = plan(ToolFormat::Granite, true);
        assert!(grammar_accepts(
            &granite,
            r#"<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]"#
        ));
    }

    /// A required call from gpt-oss is a commentary message to the function: harmony's markers as the
    /// vocabulary's tokens, the recipient's header, then the arguments' JSON.
    #[test]
    fn a_required_harmony_call_is_a_commentary_message_to_the_function() {
        let tools = parse_tools(&weather()).unwrap();
        let plan =
            ToolPlan::new(ToolFormat::Harmony, tools.clone(), ToolChoice::Auto, true).unwrap();
        assert_eq!(plan.grammar(|_| None), None);
        let plan = ToolPlan::new(ToolFormat::Harmony, tools, ToolChoice::Required, true).unwrap();
        let ids = |t: &str| match t {
            "<|channel|>" => Some(200005),
            "<|constrain|>" => Some(200003),
            "<|message|>" => Some(200008),
            _ => None,
        };
        let Some(GrammarSpec::Lark(grammar)) = plan.grammar(ids) else {
            panic!("a Lark grammar");
        };
        assert!(
            grammar.starts_with(
                "start: <[200005]> \"commentary to=functions.get_weather \" <[200003]> \"json\" \
                 <[200008]> %json"
            ),
            "{grammar}"
        );
        assert_eq!(
            plan.template_tools().unwrap()[0]["function"]["name"],
            "get_weather"
        );
    }
}
