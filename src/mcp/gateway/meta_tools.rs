//! The gateway's own tools, which reach server tools rather than being one: `mcp_find` (ranked search
//! over what the caller may use), `mcp_call` (calls a tool `mcp_find` returned) and `run_js` (a script
//! whose functions are the tools). Each inner call enters `Gateway::call` again, so it is checked,
//! limited and logged on its own; a chat request's scope bounds all three.

use std::collections::HashSet;
use std::sync::Arc;

use rmcp::model::{CallToolResult, Tool, ToolAnnotations};
use serde_json::{Map, Value, json};

use super::super::{code_mode, discovery};
use super::call::{CallContext, CallRecord, RateBudget, result_text};
use super::{GATEWAY_SERVER, Gateway, McpError};

/// The gateway's own tools as an MCP client lists them (every caller may use them; what they reach is
/// checked per inner call).
pub fn meta_tools() -> Vec<Tool> {
    vec![
        object_tool(
            discovery::FIND,
            discovery::FIND_DESCRIPTION,
            discovery::find_schema(),
            true,
        ),
        object_tool(
            discovery::CALL,
            discovery::CALL_DESCRIPTION,
            discovery::call_schema(),
            false,
        ),
        object_tool(
            code_mode::RUN_JS,
            code_mode::DESCRIPTION,
            code_mode::schema(),
            false,
        ),
    ]
}

/// A tool the gateway itself describes: an object schema and whether it is read-only.
pub(super) fn object_tool(
    name: &'static str,
    description: &'static str,
    schema: Value,
    read_only: bool,
) -> Tool {
    let schema = match schema {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    Tool::new(name, description, schema)
        .with_annotations(ToolAnnotations::new().read_only(read_only))
}

impl Gateway {
    /// `mcp_find`: the tools matching `query`, with their schemas, that the call's scope reaches.
    pub(super) async fn call_find(
        &self,
        context: &CallContext,
        arguments: &Value,
    ) -> Result<CallToolResult, McpError> {
        let query = arguments
            .get("query")
            .and_then(Value::as_str)
            .ok_or_else(|| McpError::InvalidArguments {
                tool: discovery::FIND.into(),
                message: "query must be a string".into(),
            })?;
        let limit = arguments
            .get("limit")
            .and_then(Value::as_u64)
            .map_or(discovery::DEFAULT_RESULTS, |l| l as usize)
            .clamp(1, discovery::MAX_RESULTS);
        let found = self
            .find(&context.caller, query, limit, context.scope.as_deref())
            .await;
        let listing: Vec<Value> = found
            .iter()
            .map(|e| json!({"name": e.name, "description": e.description(), "inputSchema": e.input_schema()}))
            .collect();
        Ok(CallToolResult::structured(json!({ "tools": listing })))
    }

    /// `mcp_call`: the server tool it names, recorded as that tool's call; a name that is no server
    /// tool's, or one outside the scope, is recorded as a failed `mcp_call`.
    pub(super) async fn call_through(&self, context: &CallContext, arguments: Value) -> CallRecord {
        let attempt = self.begin();
        let target = arguments.get("name").and_then(Value::as_str).unwrap_or("");
        let refusal = if [discovery::CALL, discovery::FIND, code_mode::RUN_JS, ""].contains(&target)
        {
            McpError::InvalidArguments {
                tool: discovery::CALL.to_string(),
                message: "name must be a tool that mcp_find returned".into(),
            }
        } else if !context.reaches_tool(target) {
            McpError::Denied {
                client: context.caller.label().to_string(),
                tool: target.to_string(),
            }
        } else {
            // Only server tools: mcp_find never returns the runner's own tools, so neither does this.
            let inner = arguments.get("arguments").cloned().unwrap_or(json!({}));
            let target = target.to_string();
            return self.call_server_tool(context, &target, inner).await;
        };
        self.record(
            attempt,
            context,
            discovery::CALL,
            GATEWAY_SERVER,
            arguments,
            Err(refusal),
        )
    }

    /// `run_js`: a script whose tool functions call through the gateway as the caller (each call
    /// checked, limited and logged on its own), run on a blocking thread.
    pub(super) async fn run_js(
        self: &Arc<Self>,
        context: &CallContext,
        arguments: Value,
    ) -> CallRecord {
        let attempt = self.begin();
        let outcome = match arguments.get("script").and_then(Value::as_str) {
            None => Err(McpError::InvalidArguments {
                tool: code_mode::RUN_JS.into(),
                message: "script must be a string".into(),
            }),
            Some(script) => {
                let names: Vec<String> = self
                    .tools(&context.caller)
                    .await
                    .iter()
                    .filter(|e| context.reaches(&e.server))
                    .map(|e| e.name.clone())
                    .collect();
                let call = self.script_caller(context, &names);
                let script = script.to_string();
                tokio::task::spawn_blocking(move || {
                    code_mode::run(&script, &names, call, code_mode::Limits::default())
                })
                .await
                .map_err(|e| McpError::Script(format!("the script's thread failed: {e}")))
                .and_then(|outcome| outcome.map_err(McpError::Script))
                .map(|out| {
                    CallToolResult::structured(json!({"logs": out.logs, "result": out.result}))
                })
            }
        };
        self.record(
            attempt,
            context,
            code_mode::RUN_JS,
            GATEWAY_SERVER,
            arguments,
            outcome,
        )
    }

    /// The function a script's tool calls go through (blocking on the async runtime from its thread).
    fn script_caller(
        self: &Arc<Self>,
        context: &CallContext,
        names: &[String],
    ) -> code_mode::ToolCaller {
        let gateway = self.clone();
        // The script's calls are the gateway's to admit: the transport took only the run_js call itself.
        let context = CallContext {
            rate_budget: RateBudget::Gateway,
            ..context.clone()
        };
        let allowed: HashSet<String> = names.iter().cloned().collect();
        let runtime = tokio::runtime::Handle::current();
        Arc::new(move |name: &str, arguments: Value| {
            if !allowed.contains(name) {
                return Err(format!("no tool named {name} is available to this script"));
            }
            // The call runs as a task on the runtime's workers, not on this blocking thread: a server it
            // starts is bound to its spawning thread's life (PR_SET_PDEATHSIG), and blocking threads
            // are reaped when idle.
            let call = {
                let (gateway, context, name) = (gateway.clone(), context.clone(), name.to_string());
                runtime.spawn(async move { gateway.call(&context, &name, arguments).await })
            };
            let record = runtime
                .block_on(call)
                .map_err(|e| format!("the tool call stopped: {e}"))?;
            if let Some(error) = record.error {
                return Err(error);
            }
            let failed = record.failed();
            let result = record
                .result
                .unwrap_or_else(|| CallToolResult::success(Vec::new()));
            if failed {
                return Err(result_text(&result));
            }
            Ok(result
                .structured_content
                .clone()
                .unwrap_or_else(|| Value::String(result_text(&result))))
        })
    }
}
