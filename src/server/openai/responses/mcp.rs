//! MCP tools in the Responses shape (`{"type": "mcp", "server_label", "allowed_tools", "require_approval"}`)
//! run by our gateway through the chat tool loop: `mcp_list_tools` items for the servers offered,
//! `mcp_call` items for what ran. A tool that needs approval is left out of the names the loop runs, so
//! the model's call of it ends the loop like a client call and becomes an `mcp_approval_request`; a
//! follow-up's `mcp_approval_response` runs (or drops) it before the loop goes on.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::items::{self, new_id};
use crate::chat::ReasoningInput;
use crate::chat::mcp_tools::McpChat;
use crate::chat::tool_loop::ToolLoop;
use crate::engine::FinishReason;
use crate::engine::chat_template::ChatMessage;
use crate::mcp::naming::SEPARATOR;
use crate::mcp::{CallContext, CallRecord};
use crate::runtime::LoadedModel;
use crate::scheduler::Usage;
use crate::server::errors::ApiError;
use crate::tools::parser::ToolCall;
use crate::validation::GenerationParams;

/// Namespaced tool names whose calls wait for the client's approval, with their server label.
#[derive(Debug, Clone, Default)]
pub struct Approval {
    labels: HashMap<String, String>,
}

/// A tool's name on its server (the gateway's namespaced name without `label__`).
fn short_name<'a>(name: &'a str, label: &str) -> &'a str {
    name.strip_prefix(label)
        .and_then(|rest| rest.strip_prefix(SEPARATOR))
        .unwrap_or(name)
}

/// Whether `entry`'s `require_approval` asks for approval of `tool` (its name on the server). As
/// OpenAI, approval is required unless the entry says `never` (for all tools or by name).
fn needs_approval(entry: &Value, tool: &str, param: &str) -> Result<bool, ApiError> {
    let listed = |filter: Option<&Value>| {
        filter
            .and_then(|f| f.get("tool_names"))
            .and_then(Value::as_array)
            .is_some_and(|names| names.iter().any(|n| n.as_str() == Some(tool)))
    };
    match entry.get("require_approval") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::String(s)) if s == "always" => Ok(true),
        Some(Value::String(s)) if s == "never" => Ok(false),
        Some(Value::Object(filter)) => {
            Ok(listed(filter.get("always")) || !listed(filter.get("never")))
        }
        Some(_) => Err(ApiError::invalid(
            format!(
                "{param}.require_approval must be \"always\", \"never\" or {{\"never\": {{\"tool_names\": [...]}}}}"
            ),
            Some(&format!("{param}.require_approval")),
        )),
    }
}

/// One Responses request over MCP tools, ready to run.
pub struct McpRun {
    looped: ToolLoop,
    /// `mcp_list_tools` items, then calls approved in this request and run before the loop.
    first: Vec<Value>,
    pub approval: Approval,
}

impl McpRun {
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        model: Arc<LoadedModel>,
        mcp: McpChat,
        tools: Option<&Value>,
        messages: Vec<ChatMessage>,
        context: &[Value],
        tool_choice: Option<Value>,
        parallel_tool_calls: bool,
        params: GenerationParams,
    ) -> Result<Self, ApiError> {
        let entries: Vec<(usize, &Value)> = tools
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .enumerate()
                    .filter(|(_, t)| t.get("type").and_then(Value::as_str) == Some("mcp"))
                    .collect()
            })
            .unwrap_or_default();
        let mut first = Vec::new();
        let mut approval = Approval::default();
        for (i, entry) in &entries {
            let param = format!("tools[{i}]");
            let label = entry["server_label"].as_str().unwrap_or_default();
            let offered: Vec<&Value> = mcp
                .selection
                .functions
                .iter()
                .filter(|f| {
                    f.pointer("/function/name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| short_name(n, label) != n)
                })
                .collect();
            let mut listed = Vec::new();
            for function in offered {
                let name = function
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let short = short_name(name, label);
                if needs_approval(entry, short, &param)? {
                    approval.labels.insert(name.to_string(), label.to_string());
                }
                listed.push(json!({
                    "name": short,
                    "description": function.pointer("/function/description"),
                    "input_schema": function.pointer("/function/parameters"),
                    "annotations": null,
                }));
            }
            let already = context.iter().any(|item| {
                item["type"] == "mcp_list_tools" && item["server_label"].as_str() == Some(label)
            });
            if !already {
                first.push(
                    json!({"id": new_id("mcpl"), "type": "mcp_list_tools", "server_label": label,
                                  "tools": listed, "error": null}),
                );
            }
        }
        let mut looped = ToolLoop::new(model, mcp, messages);
        for name in approval.labels.keys() {
            looped.mcp_names.remove(name);
        }
        looped.tool_choice = tool_choice;
        looped.parallel_tool_calls = parallel_tool_calls;
        looped.params = params;
        let approved = approvals(context)?;
        for (request, approve) in approved {
            if !approve {
                continue;
            }
            let label = request["server_label"].as_str().unwrap_or_default();
            let name = format!(
                "{label}{SEPARATOR}{}",
                request["name"].as_str().unwrap_or_default()
            );
            let arguments: Value = request["arguments"]
                .as_str()
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or_else(|| json!({}));
            let record = looped
                .gateway
                .call(
                    &CallContext::new(looped.caller.clone()).scoped(looped.scope.clone()),
                    &name,
                    arguments,
                )
                .await;
            let mut item = call_item(&record);
            item["approval_request_id"] = request["id"].clone();
            looped
                .messages
                .extend(items::to_messages(std::slice::from_ref(&item))?);
            first.push(item);
        }
        Ok(Self {
            looped,
            first,
            approval,
        })
    }

    /// Items that open the output: tool lists and calls approved by this request.
    pub fn list_items(&self) -> Vec<Value> {
        self.first.clone()
    }

    /// Every round's thinking switches and how its thinking is read.
    pub fn with_reasoning(mut self, reasoning: ReasoningInput) -> Self {
        self.looped.reasoning = reasoning;
        self
    }

    pub fn into_loop(self) -> ToolLoop {
        self.looped
    }

    /// Runs the loop to its end: the output items, usage and finish.
    pub async fn run(self) -> Result<(Vec<Value>, Usage, Option<FinishReason>), ApiError> {
        let mut output = self.first;
        let outcome = self.looped.run(None).await?;
        if let Some(thinking) = &outcome.reasoning {
            output.push(items::reasoning_item(&new_id("rs"), thinking));
        }
        output.extend(outcome.calls.iter().map(call_item));
        let content = outcome.content.unwrap_or_default();
        if !content.trim().is_empty() || outcome.client_calls.is_empty() {
            let status = super::status_of(outcome.finish);
            output.push(items::message_item(&new_id("msg"), &content, status));
        }
        output.extend(client_call_items(&self.approval, &outcome.client_calls));
        Ok((output, outcome.usage, outcome.finish))
    }
}

/// The approvals a request's items answer: each approved or declined `mcp_approval_request` of the
/// previous response. An answer to no request is a 400.
fn approvals(context: &[Value]) -> Result<Vec<(Value, bool)>, ApiError> {
    let mut answered = Vec::new();
    for (i, item) in context.iter().enumerate() {
        if item["type"] != "mcp_approval_response" {
            continue;
        }
        let id = item["approval_request_id"].as_str().unwrap_or_default();
        let request = context[..i]
            .iter()
            .find(|r| r["type"] == "mcp_approval_request" && r["id"].as_str() == Some(id))
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("approval_request_id {id:?} answers no mcp_approval_request of the conversation (send previous_response_id)"),
                    Some("input"),
                )
            })?;
        let ran = context[i..]
            .iter()
            .any(|c| c["type"] == "mcp_call" && c["approval_request_id"].as_str() == Some(id));
        if !ran {
            answered.push((request.clone(), item["approve"] == true));
        }
    }
    Ok(answered)
}

/// An `mcp_call` item for a call the gateway ran.
pub fn call_item(record: &CallRecord) -> Value {
    json!({
        "id": new_id("mcp"),
        "type": "mcp_call",
        "status": if record.failed() { "failed" } else { "completed" },
        "approval_request_id": null,
        "server_label": record.server,
        "name": short_name(&record.name, &record.server),
        "arguments": record.arguments.to_string(),
        "output": record.error.is_none().then(|| record.output_text()),
        "error": record.error,
    })
}

/// The calls the loop handed back: approval requests for MCP tools that need one, else the client's
/// own `function_call`s.
pub fn client_call_items(approval: &Approval, calls: &[ToolCall]) -> Vec<Value> {
    calls
        .iter()
        .map(|call| match approval.labels.get(&call.name) {
            Some(label) => json!({
                "id": new_id("mcpr"),
                "type": "mcp_approval_request",
                "server_label": label,
                "name": short_name(&call.name, label),
                "arguments": call.arguments,
            }),
            None => items::function_call_item(
                &new_id("fc"),
                &call.id,
                &call.name,
                &call.arguments,
                "completed",
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_is_required_unless_never() {
        let check = |entry: Value| needs_approval(&entry, "now", "tools[0]").unwrap();
        assert!(check(json!({"server_label": "t"})));
        assert!(!check(json!({"require_approval": "never"})));
        assert!(!check(
            json!({"require_approval": {"never": {"tool_names": ["now"]}}})
        ));
        assert!(check(
            json!({"require_approval": {"never": {"tool_names": ["other"]}}})
        ));
        assert!(needs_approval(&json!({"require_approval": 3}), "now", "tools[0]").is_err());
    }

    #[test]
    fn an_approval_must_answer_a_request_of_the_conversation() {
        let request = json!({"type": "mcp_approval_request", "id": "mcpr_1", "name": "now", "server_label": "t", "arguments": "{}"});
        let yes = json!({"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": true});
        let answered = approvals(&[request.clone(), yes.clone()]).unwrap();
        assert_eq!(answered.len(), 1);
        assert!(answered[0].1);
        assert!(approvals(&[yes]).is_err());
        assert_eq!(short_name("t__now", "t"), "now");
    }
}
