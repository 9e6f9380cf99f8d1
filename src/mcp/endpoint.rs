//! The gateway as an MCP server: the tools of every configured server (namespaced), the discovery
//! meta-tools, and the runner's own `chat` and `list_models` (tools of the pseudo-server
//! `model-runner`, checked, logged and counted by the gateway like any other); the servers'
//! resources, resource templates and prompts (namespaced too, see `naming`), with resource
//! subscriptions; and every list's changes as `notifications/*/list_changed`. `initialize` advertises
//! resources and prompts only when a server the caller may use offers them (or has not run yet, so
//! cannot have said). Served at `/mcp`
//! (streamable HTTP, where the HTTP layer authenticates the caller and takes the rate limit) and by
//! `model mcp` over stdio.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, GetPromptRequestParams, GetPromptResponse,
    Implementation, InitializeRequestParams, InitializeResult, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;

use super::McpError;
use super::gateway::{self, CallContext, Gateway};
use super::policy::Caller;
use super::upstream::{Requester, Subscriber};

/// Who the caller is, put into the HTTP request's extensions by the server's `/mcp` layer.
#[derive(Debug, Clone)]
pub struct HttpCaller(pub Caller);

#[derive(Clone)]
pub struct Endpoint {
    gateway: Arc<Gateway>,
    /// The caller over stdio (HTTP callers come with each request).
    stdio_caller: Caller,
    /// This session's number (resource subscriptions are kept per session).
    session: u64,
    sessions: Arc<AtomicU64>,
    /// Held by every handle of one HTTP session: the servers it added stop when the last goes.
    _lease: Option<Arc<gateway::SessionLease>>,
}

impl Endpoint {
    /// The gateway's tools as an MCP server; the runner's own tools are offered once registered with
    /// the gateway (`Gateway::register_local_models`).
    pub fn new(gateway: Arc<Gateway>, stdio_caller: Caller) -> Self {
        Self {
            // Session 0: the stdio connection's, which lasts as long as the gateway.
            _lease: Some(Arc::new(gateway::SessionLease::new(&gateway, 0))),
            gateway,
            stdio_caller,
            session: 0,
            sessions: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The endpoint for a new session (the streamable-HTTP service makes one per session).
    pub fn new_session(&self) -> Self {
        let session = self.sessions.fetch_add(1, Ordering::Relaxed);
        Self {
            session,
            _lease: Some(Arc::new(gateway::SessionLease::new(&self.gateway, session))),
            ..self.clone()
        }
    }

    /// The call's context: over HTTP, the caller the `/mcp` layer named, whose call it already took
    /// from the rate budget; over stdio, the endpoint's caller, limited by the gateway.
    /// The session is the requester that servers' elicitations during the call ask.
    fn context(&self, context: &RequestContext<RoleServer>) -> CallContext {
        let call = match context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<HttpCaller>())
        {
            Some(HttpCaller(caller)) => CallContext::new(caller.clone()).rate_taken_by_transport(),
            None => CallContext::new(self.stdio_caller.clone()),
        };
        call.from_session(Requester {
            session: self.session,
            peer: context.peer.clone(),
        })
    }

    /// Server tools (the session's own added servers' too), then the gateway's meta-tools, then the
    /// runner's own tools.
    async fn tool_list(&self, caller: &Caller) -> Vec<Tool> {
        let mut entries = self.gateway.tools(caller).await;
        entries.extend(self.gateway.session_tools(self.session, caller).await);
        let mut tools: Vec<Tool> = entries
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
        tools.extend(self.gateway.dynamic_tools());
        tools.extend(self.gateway.local_tools(caller));
        tools
    }
}

/// A gateway refusal as the JSON-RPC error an MCP client reads: unknown names and URIs are the
/// caller's mistake, a denial or rate limit is named as such, a failing server is an internal error
/// whose message says which server and why.
fn error_data(error: McpError) -> ErrorData {
    let message = error.to_string();
    match error {
        McpError::UnknownResource(_) => ErrorData::resource_not_found(message, None),
        McpError::UnknownPrompt(_)
        | McpError::UnknownTool(_)
        | McpError::UnknownServer(_)
        | McpError::InvalidArguments { .. }
        | McpError::Script(_) => ErrorData::invalid_params(message, None),
        McpError::Denied { .. }
        | McpError::RateLimited { .. }
        | McpError::TokensSpent { .. }
        | McpError::Refused(_) => ErrorData::invalid_request(message, None),
        McpError::Unavailable { .. }
        | McpError::Timeout { .. }
        | McpError::Protocol { .. }
        | McpError::Oversize { .. }
        | McpError::Transport { .. } => ErrorData::internal_error(message, None),
    }
}

impl ServerHandler for Endpoint {
    fn get_info(&self) -> ServerConfig {
        // Everything the gateway can relay; `initialize` removes what no server of the caller's offers.
        #[allow(deprecated)]
        let capabilities = ServerCapabilities::builder()
            .enable_prompts()
            .enable_resources()
            .enable_tools()
            .enable_prompts_list_changed()
            .enable_resources_list_changed()
            .enable_resources_subscribe()
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
                 mcp_find searches them; chat asks a local model. Their prompts are named \
                 server__prompt and their resources model-runner://server/uri.",
            )
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        // Versions with the initialize handshake, whose sessions can carry tools/list_changed.
        Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        context.peer.set_peer_info(request.clone());
        let caller = self.context(&context).caller;
        let offers = self.gateway.offers_for(&caller);
        let mut result = self.negotiate_initialize(&request)?;
        let capabilities = &mut result.capabilities;
        if !offers.resources {
            capabilities.resources = None;
        } else if !offers.resource_subscriptions
            && let Some(resources) = capabilities.resources.as_mut()
        {
            resources.subscribe = None;
        }
        if !offers.prompts {
            capabilities.prompts = None;
        }
        Ok(result)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let caller = self.context(&context).caller;
        Ok(ListResourcesResult::with_all_items(
            self.gateway.resources(&caller).await,
        ))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let caller = self.context(&context).caller;
        Ok(ListResourceTemplatesResult::with_all_items(
            self.gateway.resource_templates(&caller).await,
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let call_context = self.context(&context);
        let read = self.gateway.read_resource(&call_context, &request.uri);
        tokio::select! {
            result = read => result.map(Into::into).map_err(error_data),
            _ = context.ct.cancelled() => Err(ErrorData::internal_error("the read was cancelled", None)),
        }
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // Subscriptions are not taken from the rate budget (their updates are the server's doing).
        let call_context = self.context(&context).rate_taken_by_transport();
        let subscriber = Subscriber {
            session: self.session,
            peer: context.peer.clone(),
        };
        self.gateway
            .subscribe_resource(&call_context, &request.uri, subscriber)
            .await
            .map_err(error_data)
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let call_context = self.context(&context).rate_taken_by_transport();
        self.gateway
            .unsubscribe_resource(&call_context, &request.uri, self.session)
            .await
            .map_err(error_data)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let caller = self.context(&context).caller;
        Ok(ListPromptsResult::with_all_items(
            self.gateway.prompts(&caller).await,
        ))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let call_context = self.context(&context);
        let get = self
            .gateway
            .get_prompt(&call_context, &request.name, request.arguments);
        tokio::select! {
            result = get => result.map(Into::into).map_err(error_data),
            _ = context.ct.cancelled() => Err(ErrorData::internal_error("the request was cancelled", None)),
        }
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
        // Forward the servers' list changes for as long as the session lives.
        let mut changes = self.gateway.list_changes();
        let peer = context.peer;
        tokio::spawn(async move {
            loop {
                let sent = tokio::select! {
                    changed = changes.tools.changed() => match changed {
                        Ok(()) => peer.notify_tool_list_changed().await.is_ok(),
                        Err(_) => false,
                    },
                    changed = changes.prompts.changed() => match changed {
                        Ok(()) => peer.notify_prompt_list_changed().await.is_ok(),
                        Err(_) => false,
                    },
                    changed = changes.resources.changed() => match changed {
                        Ok(()) => peer.notify_resource_list_changed().await.is_ok(),
                        Err(_) => false,
                    },
                };
                if !sent || peer.is_transport_closed() {
                    break;
                }
            }
        });
    }
}
