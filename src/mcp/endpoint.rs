//! The gateway as an MCP server: the tools of every configured server (namespaced), the discovery
//! meta-tools, and the runner's own `chat` and `list_models` (tools of the pseudo-server
//! `model-runner`, checked, logged and counted by the gateway like any other). Served at `/mcp`
//! (streamable HTTP, where the HTTP layer authenticates the caller and takes the rate limit) and by
//! `model mcp` over stdio.

use std::borrow::Cow;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;

use super::gateway::{self, CallContext, Gateway};
use super::policy::Caller;

/// Who the caller is, put into the HTTP request's extensions by the server's `/mcp` layer.
#[derive(Debug, Clone)]
pub struct HttpCaller(pub Caller);

#[derive(Clone)]
pub struct Endpoint {
    gateway: Arc<Gateway>,
    /// The caller over stdio (HTTP callers come with each request).
    stdio_caller: Caller,
}

impl Endpoint {
    /// The gateway's tools as an MCP server; the runner's own tools are offered once registered with
    /// the gateway (`Gateway::register_local_models`).
    pub fn new(gateway: Arc<Gateway>, stdio_caller: Caller) -> Self {
        Self {
            gateway,
            stdio_caller,
        }
    }

    /// The call's context: over HTTP, the caller the `/mcp` layer named, whose call it already took
    /// from the rate budget; over stdio, the endpoint's caller, limited by the gateway.
    fn context(&self, context: &RequestContext<RoleServer>) -> CallContext {
        match context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<HttpCaller>())
        {
            Some(HttpCaller(caller)) => CallContext::new(caller.clone()).rate_taken_by_transport(),
            None => CallContext::new(self.stdio_caller.clone()),
        }
    }

    /// Server tools, then the gateway's meta-tools, then the runner's own tools.
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
        tools.extend(gateway::meta_tools());
        tools.extend(self.gateway.local_tools(caller));
        tools
    }
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
        let caller = self.context(&context).caller;
        Ok(ListToolsResult::with_all_items(
            self.tool_list(&caller).await,
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let call_context = self.context(&context);
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let call = self.gateway.call(&call_context, &request.name, arguments);
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
