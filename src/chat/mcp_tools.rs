//! MCP tools in a chat request: `tools` entries of type `mcp` (`{"type": "mcp", "server_label": "fs",
//! "allowed_tools": [..]}`, the Responses API's shape, or with `code_mode` / `discovery`), or the server's
//! `--mcp-tools` default for a request without tools, read into the function tools the model is offered
//! and the names the server runs itself. Access is checked here, through the gateway, before the loop.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};

use super::ChatError;
use crate::mcp::{Caller, Gateway, McpError};
use crate::mcp::{code_mode, discovery};
use crate::validation::ValidationError;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
) -> Result<McpSelection, ChatError> {
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
                ValidationError::invalid(
                    format!("{param}.server_label"),
                    "an mcp tool needs a server_label naming a configured MCP server",
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
                    return Err(ValidationError::invalid(
                        format!("{param}.allowed_tools"),
                        "allowed_tools must be an array of tool names",
                    )
                    .into());
                }
            };
        if entry.get("code_mode").and_then(Value::as_bool) == Some(true) {
            if !gateway.server_names().iter().any(|s| s == label) {
                return Err(ChatError::mcp(McpError::UnknownServer(label.into()), param));
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
                return Err(ChatError::mcp(McpError::UnknownServer(label.into()), param));
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
            .map_err(|e| ChatError::mcp(e, format!("{param}.server_label")))?;
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

/// A chat request that the server loops over MCP tools.
pub struct McpChat {
    pub gateway: Arc<Gateway>,
    pub caller: Caller,
    /// The client's own function tools, then the MCP tools, as OpenAI `tools`.
    pub functions: Vec<Value>,
    pub selection: McpSelection,
}

/// Reads `tools` for MCP entries (or applies `default` when there are none), as `bearer`'s caller;
/// `None`: a plain chat request.
pub async fn resolve(
    gateway: Option<&Arc<Gateway>>,
    default: DefaultMcpTools,
    bearer: Option<&str>,
    tools: Option<&Value>,
) -> Result<Option<McpChat>, ChatError> {
    let split = split_tools(tools);
    let Some(gateway) = gateway.cloned() else {
        return match split {
            Some(_) => Err(ValidationError::invalid(
                "tools",
                "mcp tools need a server started with --mcp-config",
            )
            .into()),
            None => Ok(None),
        };
    };
    let no_tools = tools.is_none_or(|t| t.is_null() || t.as_array().is_some_and(Vec::is_empty));
    if split.is_none() && !(no_tools && default != DefaultMcpTools::None) {
        return Ok(None);
    }
    let caller = gateway
        .authenticate(bearer)
        .ok_or_else(|| ChatError::Forbidden("this key may not use MCP tools".into()))?;
    let (functions, selection) = match split {
        Some((functions, entries)) => (functions, select(&gateway, &caller, &entries).await?),
        None => match default_selection(&gateway, &caller, default).await {
            Some(selection) => (Vec::new(), selection),
            None => return Ok(None),
        },
    };
    Ok(Some(McpChat {
        gateway,
        caller,
        functions,
        selection,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_entries_are_split_from_function_tools() {
        let tools = json!([
            {"type": "function", "function": {"name": "f"}},
            {"type": "mcp", "server_label": "time"}
        ]);
        let (functions, entries) = split_tools(Some(&tools)).unwrap();
        assert_eq!(functions.len(), 1);
        assert_eq!(entries[0].0, 1);
        assert!(split_tools(Some(&json!([{"type": "function"}]))).is_none());
        assert!(split_tools(None).is_none());
    }

    #[tokio::test]
    async fn mcp_entries_without_a_gateway_are_refused_naming_tools() {
        let tools = json!([{"type": "mcp", "server_label": "time"}]);
        let error = resolve(None, DefaultMcpTools::All, None, Some(&tools))
            .await
            .err()
            .unwrap();
        assert!(matches!(&error, ChatError::Validation(v) if v.param() == Some("tools")));
        assert!(
            resolve(None, DefaultMcpTools::All, None, None)
                .await
                .unwrap()
                .is_none()
        );
    }
}
