//! The gateway as an MCP server: the tools of every configured server (namespaced), the discovery
//! meta-tools, and the runner's own `chat` and `list_models` (tools of the pseudo-server
//! `model-runner`, checked, logged and counted by the gateway like any other). Served at `/mcp`
//! (streamable HTTP, where the HTTP layer authenticates the caller and takes the rate limit) and by
//! `model mcp` over stdio.

use std::borrow::Cow;
use std::sync::Arc;

use futures::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    Tool, ToolAnnotations,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

use super::config::LOCAL_SERVER;
use super::gateway::Gateway;
use super::policy::Caller;
use super::{McpError, code_mode, discovery};

pub const CHAT: &str = "chat";
pub const LIST_MODELS: &str = "list_models";

/// The runner's models, as the `chat` and `list_models` tools reach them.
pub trait LocalModels: Send + Sync + 'static {
    /// Models in the store.
    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, String>>;
    /// One answer from `model` to `messages` (`role`, `content` pairs).
    fn chat(
        &self,
        model: String,
        messages: Vec<(String, String)>,
        max_tokens: Option<i64>,
    ) -> BoxFuture<'_, Result<String, String>>;
}

/// Who the caller is, put into the HTTP request's extensions by the server's `/mcp` layer.
#[derive(Debug, Clone)]
pub struct HttpCaller(pub Caller);

#[derive(Clone)]
pub struct Endpoint {
    gateway: Arc<Gateway>,
    models: Option<Arc<dyn LocalModels>>,
    /// The caller over stdio (HTTP callers come with each request).
    stdio_caller: Caller,
}

impl Endpoint {
    pub fn new(
        gateway: Arc<Gateway>,
        models: Option<Arc<dyn LocalModels>>,
        stdio_caller: Caller,
    ) -> Self {
        Self {
            gateway,
            models,
            stdio_caller,
        }
    }

    /// The caller and whether the transport already took the call from its rate budget.
    fn caller(&self, context: &RequestContext<RoleServer>) -> (Caller, bool) {
        match context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<HttpCaller>())
        {
            Some(HttpCaller(caller)) => (caller.clone(), true),
            None => (self.stdio_caller.clone(), false),
        }
    }

    async fn tool_list(&self, caller: &Caller) -> Vec<Tool> {
        let mut tools: Vec<Tool> = self
            .gateway
            .tools(caller)
            .await
            .iter()
            .map(|e| {
                let description = match e.description() {
                    "" => format!("{} (MCP server {})", e.tool.name, e.server),
                    d => d.to_string(),
                };
                let mut tool = Tool::new(e.name.clone(), description, e.tool.input_schema.clone());
                tool.annotations = e.tool.annotations.clone();
                tool.title = e.tool.title.clone();
                tool
            })
            .collect();
        tools.push(object_tool(
            discovery::FIND,
            discovery::FIND_DESCRIPTION,
            discovery::find_schema(),
            true,
        ));
        tools.push(object_tool(
            discovery::CALL,
            discovery::CALL_DESCRIPTION,
            discovery::call_schema(),
            false,
        ));
        tools.push(object_tool(
            code_mode::RUN_JS,
            code_mode::DESCRIPTION,
            code_mode::schema(),
            false,
        ));
        if self.models.is_some() {
            tools.extend(
                Self::local_tools()
                    .into_iter()
                    .filter(|t| self.gateway.allows(caller, LOCAL_SERVER, &t.name)),
            );
        }
        tools
    }

    /// The runner's own tools, offered as tools of the pseudo-server `model-runner`.
    fn local_tools() -> Vec<Tool> {
        vec![
            object_tool(
                CHAT,
                "Ask a model that runs locally in this model runner. Returns its answer.",
                json!({
                    "type": "object",
                    "properties": {
                        "model": {"type": "string", "description": "A model name, as list_models gives."},
                        "prompt": {"type": "string"},
                        "system": {"type": "string"},
                        "max_tokens": {"type": "integer", "minimum": 1}
                    },
                    "required": ["model", "prompt"]
                }),
                false,
            ),
            object_tool(
                LIST_MODELS,
                "List the models this model runner has in its store.",
                json!({"type": "object", "properties": {}}),
                true,
            ),
        ]
    }

    /// Runs `chat` or `list_models` (the gateway has already admitted the call); a failure is an
    /// `isError` result the caller can read.
    async fn local_call(
        models: Arc<dyn LocalModels>,
        name: String,
        arguments: Map<String, Value>,
    ) -> Result<CallToolResult, McpError> {
        let outcome = match name.as_str() {
            LIST_MODELS => models
                .list()
                .await
                .map(|names| CallToolResult::structured(json!({"models": names}))),
            CHAT => {
                let text = |k: &str| arguments.get(k).and_then(Value::as_str).map(String::from);
                match (text("model"), text("prompt")) {
                    (Some(model), Some(prompt)) => {
                        let mut messages = Vec::new();
                        if let Some(system) = text("system") {
                            messages.push(("system".to_string(), system));
                        }
                        messages.push(("user".to_string(), prompt));
                        let max_tokens = arguments.get("max_tokens").and_then(Value::as_i64);
                        models
                            .chat(model, messages, max_tokens)
                            .await
                            .map(|answer| CallToolResult::success(vec![ContentBlock::text(answer)]))
                    }
                    _ => Err("chat needs string arguments model and prompt".to_string()),
                }
            }
            _ => return Err(McpError::UnknownTool(name)),
        };
        Ok(outcome.unwrap_or_else(|e| CallToolResult::error(vec![ContentBlock::text(e)])))
    }
}

fn object_tool(
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

impl ServerHandler for Endpoint {
    fn get_info(&self) -> ServerConfig {
        #[allow(deprecated)]
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_logging()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(
                "model-runner",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Tools of the MCP servers this model runner's gateway reaches, named server__tool; \
                 mcp_find searches them; chat asks a local model.",
            )
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        // Versions with the initialize handshake, whose sessions can carry tools/list_changed.
        Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let (caller, _) = self.caller(&context);
        Ok(ListToolsResult::with_all_items(
            self.tool_list(&caller).await,
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let (caller, rate_checked) = self.caller(&context);
        let arguments = request.arguments.unwrap_or_default();
        let name = request.name.to_string();
        let call: BoxFuture<'_, _> = match &self.models {
            Some(models) if name == CHAT || name == LIST_MODELS => {
                let run = Self::local_call(models.clone(), name.clone(), arguments.clone());
                Box::pin(self.gateway.call_local(
                    &caller,
                    &name,
                    Value::Object(arguments),
                    rate_checked,
                    run,
                ))
            }
            _ => Box::pin(self.gateway.call_scoped(
                &caller,
                &name,
                Value::Object(arguments),
                rate_checked,
                None,
            )),
        };
        let record = tokio::select! {
            record = call => record,
            _ = context.ct.cancelled() => {
                return Err(ErrorData::internal_error("the call was cancelled", None));
            }
        };
        Ok(record.into_result().into())
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        tracing::debug!(level = ?request.level, "MCP client set its log level");
        Ok(())
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // Forward catalogue changes as tools/list_changed for as long as the session lives.
        let mut changes = self.gateway.subscribe();
        let peer = context.peer;
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if peer.is_transport_closed() || peer.notify_tool_list_changed().await.is_err() {
                    break;
                }
            }
        });
    }
}
