//! Responses items in and out: `input` (a string or items) checked and given ids, items read into the
//! chat template's messages, and the output items a response carries (`message` with `output_text`,
//! `function_call`, `mcp_call`, `mcp_list_tools`).

use serde_json::{Map, Value, json};

use crate::engine::chat_template::ChatMessage;
use crate::server::errors::ApiError;

/// An id as OpenAI writes them: a type prefix and 48 hex digits.
pub fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let (a, b): (u128, u64) = (rng.random(), rng.random());
    format!("{prefix}_{a:032x}{b:016x}")
}

/// Whether `id` could be one of our ids (`resp_` then letters and digits): anything else is refused
/// before it reaches the database.
pub fn valid_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|rest| {
        rest.starts_with('_')
            && rest.len() > 1
            && rest.len() <= 100
            && rest[1..].chars().all(|c| c.is_ascii_alphanumeric())
    })
}

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid(message, Some(param))
}

fn string_field<'a>(item: &'a Value, key: &str, param: &str) -> Result<&'a str, ApiError> {
    item.get(key).and_then(Value::as_str).ok_or_else(|| {
        invalid(
            format!("{param}.{key} must be a string"),
            &format!("{param}.{key}"),
        )
    })
}

/// The request's `input` as items, each checked and given an `id`, as `input_items` lists them.
pub fn input_items(input: Value) -> Result<Vec<Value>, ApiError> {
    let list = match input {
        Value::String(text) => vec![json!({
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}],
        })],
        Value::Array(items) => items,
        Value::Null => return Err(invalid("'input' is required", "input")),
        _ => {
            return Err(invalid(
                "'input' must be a string or an array of input items",
                "input",
            ));
        }
    };
    list.into_iter()
        .enumerate()
        .map(|(i, item)| check_item(i, item))
        .collect()
}

fn check_item(i: usize, item: Value) -> Result<Value, ApiError> {
    let param = format!("input[{i}]");
    let Value::Object(mut item) = item else {
        return Err(invalid(format!("{param} must be an object"), &param));
    };
    // A message may leave out its type (EasyInputMessage).
    let kind = match item.get("type") {
        None if item.contains_key("role") => "message".to_string(),
        Some(Value::String(kind)) => kind.clone(),
        _ => {
            return Err(invalid(
                format!("{param}.type must name the item's type"),
                &format!("{param}.type"),
            ));
        }
    };
    item.insert("type".into(), json!(kind));
    let value = Value::Object(item.clone());
    let prefix = match kind.as_str() {
        "message" => {
            let role = string_field(&value, "role", &param)?;
            if !matches!(role, "user" | "system" | "developer" | "assistant") {
                return Err(invalid(
                    format!(
                        "{param}.role {role:?} is not one of user, system, developer, assistant"
                    ),
                    &format!("{param}.role"),
                ));
            }
            let content = match item.get("content") {
                Some(Value::String(text)) => {
                    let part = if role == "assistant" {
                        "output_text"
                    } else {
                        "input_text"
                    };
                    json!([{"type": part, "text": text}])
                }
                Some(Value::Array(parts)) => {
                    for (j, part) in parts.iter().enumerate() {
                        part_text(part, &format!("{param}.content[{j}]"))?;
                    }
                    Value::Array(parts.clone())
                }
                _ => {
                    return Err(invalid(
                        format!("{param}.content must be a string or an array of content parts"),
                        &format!("{param}.content"),
                    ));
                }
            };
            item.insert("content".into(), content);
            "msg"
        }
        "function_call" => {
            for key in ["call_id", "name", "arguments"] {
                string_field(&value, key, &param)?;
            }
            "fc"
        }
        "function_call_output" => {
            string_field(&value, "call_id", &param)?;
            output_text(&value, &param)?;
            "fco"
        }
        "mcp_approval_response" => {
            string_field(&value, "approval_request_id", &param)?;
            if !value.get("approve").is_some_and(Value::is_boolean) {
                return Err(invalid(
                    format!("{param}.approve must be true or false"),
                    &format!("{param}.approve"),
                ));
            }
            "mcpr"
        }
        // Items this server wrote itself, sent back as history.
        "reasoning" => "rs",
        "mcp_call" => "mcp",
        "mcp_list_tools" => "mcpl",
        "mcp_approval_request" => "mcpr",
        other => {
            return Err(invalid(
                format!(
                    "{param}.type {other:?} is not supported here; use message, function_call, function_call_output or mcp_approval_response"
                ),
                &format!("{param}.type"),
            ));
        }
    };
    if !item.get("id").is_some_and(Value::is_string) {
        item.insert("id".into(), json!(new_id(prefix)));
    }
    if kind == "message" && !item.contains_key("status") {
        item.insert("status".into(), json!("completed"));
    }
    Ok(Value::Object(item))
}

/// The text of one content part; images, files and audio are refused (this server reads text only).
fn part_text<'a>(part: &'a Value, param: &str) -> Result<&'a str, ApiError> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "input_text" | "output_text" | "text" => string_field(part, "text", param),
        "refusal" => string_field(part, "refusal", param),
        "input_image" | "input_file" | "input_audio" => Err(invalid(
            format!("{param}: {kind} parts are not supported; this server's models read text only"),
            param,
        )),
        other => Err(invalid(
            format!(
                "{param}.type {other:?} is not a content part this server reads (input_text, output_text)"
            ),
            &format!("{param}.type"),
        )),
    }
}

/// A `function_call_output`'s or `mcp_call`'s output as text.
fn output_text(item: &Value, param: &str) -> Result<String, ApiError> {
    match item.get("output") {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                text.push_str(part_text(part, &format!("{param}.output[{j}]"))?);
            }
            Ok(text)
        }
        Some(_) => Err(invalid(
            format!("{param}.output must be a string or an array of content parts"),
            &format!("{param}.output"),
        )),
    }
}

fn message(role: &str, content: String) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content,
        tool_calls: None,
        tool_call_id: None,
        name: None,
    }
}

/// Appends a call to the last assistant message, or opens one (parallel calls share a message).
fn push_call(messages: &mut Vec<ChatMessage>, call: Value) {
    if let Some(last) = messages.last_mut()
        && last.role == "assistant"
    {
        match last.tool_calls.as_mut().and_then(Value::as_array_mut) {
            Some(calls) => calls.push(call),
            None => last.tool_calls = Some(json!([call])),
        }
        return;
    }
    let mut assistant = message("assistant", String::new());
    assistant.tool_calls = Some(json!([call]));
    messages.push(assistant);
}

/// Checked items (earlier turns and this input) as the conversation the chat template reads.
pub fn to_messages(items: &[Value]) -> Result<Vec<ChatMessage>, ApiError> {
    let mut messages: Vec<ChatMessage> = Vec::new();
    let mut names: Map<String, Value> = Map::new();
    for (i, item) in items.iter().enumerate() {
        let param = format!("input[{i}]");
        match item["type"].as_str().unwrap_or("") {
            "message" => {
                let role = match item["role"].as_str().unwrap_or("user") {
                    "developer" => "system",
                    role => role,
                };
                let text = match &item["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => {
                        let mut text = String::new();
                        for (j, part) in parts.iter().enumerate() {
                            text.push_str(part_text(part, &format!("{param}.content[{j}]"))?);
                        }
                        text
                    }
                    _ => String::new(),
                };
                messages.push(message(role, text));
            }
            "function_call" => {
                let call_id = string_field(item, "call_id", &param)?;
                let name = string_field(item, "name", &param)?;
                names.insert(call_id.into(), json!(name));
                push_call(
                    &mut messages,
                    json!({"id": call_id, "type": "function", "function": {
                        "name": name, "arguments": item["arguments"].as_str().unwrap_or("{}")}}),
                );
            }
            "function_call_output" => {
                let call_id = string_field(item, "call_id", &param)?;
                let mut tool = message("tool", output_text(item, &param)?);
                tool.tool_call_id = Some(call_id.into());
                tool.name = names.get(call_id).and_then(Value::as_str).map(String::from);
                messages.push(tool);
            }
            "mcp_call" => {
                let id = item["id"].as_str().unwrap_or("mcp").to_string();
                // The model knew the tool by the gateway's namespaced name.
                let name = match item["server_label"].as_str() {
                    Some(label) => format!(
                        "{label}{}{}",
                        crate::mcp::naming::SEPARATOR,
                        item["name"].as_str().unwrap_or("")
                    ),
                    None => item["name"].as_str().unwrap_or("").to_string(),
                };
                push_call(
                    &mut messages,
                    json!({"id": id, "type": "function", "function": {
                        "name": name, "arguments": item["arguments"].as_str().unwrap_or("{}")}}),
                );
                let output = match item["error"].as_str() {
                    Some(error) => format!("Error: {error}"),
                    None => output_text(item, &param)?,
                };
                let mut tool = message("tool", output);
                tool.tool_call_id = Some(id);
                tool.name = Some(name);
                messages.push(tool);
            }
            // Reasoning is not read back; tool lists and approvals are not part of the conversation.
            _ => {}
        }
    }
    Ok(messages)
}

/// A `reasoning` item: the model's thinking as one `reasoning_text` part (as open-weight models'
/// reasoning is returned), no summary.
pub fn reasoning_item(id: &str, text: &str) -> Value {
    json!({
        "id": id, "type": "reasoning", "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    })
}

/// An assistant `message` item with one `output_text` part.
pub fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "id": id, "type": "message", "status": status, "role": "assistant",
        "content": [output_text_part(text)],
    })
}

pub fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A `function_call` item.
pub fn function_call_item(
    id: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
           "arguments": arguments})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_input_is_one_user_message() {
        let items = input_items(json!("hi")).unwrap();
        assert_eq!(items.len(), 1);
        assert!(valid_id(items[0]["id"].as_str().unwrap(), "msg"));
        let messages = to_messages(&items).unwrap();
        assert_eq!(
            (messages[0].role.as_str(), messages[0].content.as_str()),
            ("user", "hi")
        );
    }

    #[test]
    fn calls_and_their_outputs_become_tool_messages() {
        let items = input_items(json!([
            {"role": "developer", "content": "be brief"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ]))
        .unwrap();
        let messages = to_messages(&items).unwrap();
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
        assert_eq!(
            messages[2]
                .tool_calls
                .as_ref()
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(messages[3].name.as_deref(), Some("weather"));
    }

    #[test]
    fn hostile_items_are_refused_naming_the_field() {
        let param = |input: Value| input_items(input).unwrap_err().param.unwrap();
        assert_eq!(param(json!(3)), "input");
        assert_eq!(param(json!([1])), "input[0]");
        assert_eq!(param(json!([{"type": "nope"}])), "input[0].type");
        assert_eq!(
            param(json!([{"role": "tool", "content": "x"}])),
            "input[0].role"
        );
        assert_eq!(
            param(json!([{"role": "user", "content": 5}])),
            "input[0].content"
        );
        assert_eq!(
            param(
                json!([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}])
            ),
            "input[0].content[0]"
        );
        assert_eq!(
            param(json!([{"type": "function_call", "call_id": "c"}])),
            "input[0].name"
        );
    }

    #[test]
    fn ids_are_checked_before_any_lookup() {
        assert!(valid_id(&new_id("resp"), "resp"));
        assert!(!valid_id("resp_", "resp"));
        assert!(!valid_id("resp_1' OR 1=1", "resp"));
        assert!(!valid_id("msg_1", "resp"));
    }
}
