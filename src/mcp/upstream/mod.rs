//! One configured MCP server as the gateway sees it: started on first use (or at once when long-lived),
//! its tool list kept while it sleeps, stopped after its idle timeout, restarted after a crash with
//! exponential backoff, and guarded by a circuit breaker. Stdio servers run in their own process group,
//! so stopping one kills everything it started (`docker run -i` clients, `npx` children).
//!
//! Tool calls live here; `features` holds the server's other offers (resources, resource templates,
//! prompts, resource subscriptions), asked through the same guarded request path; `sampling` answers
//! the server's own sampling requests with a local model, when its config allows it; `elicitation`
//! forwards its requests for the user's input to the client whose call is running; `sse` is the older
//! HTTP+SSE transport (asked for, or tried when a streamable-HTTP start is refused with 400/404/405).

mod elicitation;
mod features;
mod sampling;
mod sse;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    Prompt, ProtocolVersion, ServerCapabilities, Tool,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientCacheConfig, ClientHandler, Peer, RoleClient, ServiceError, ServiceExt};
use tokio::io::AsyncBufReadExt;

use super::McpError;
use super::breaker::{Breaker, BreakerState};
use super::config::{ServerConfig, Transport};
use super::oauth::{BearerClient, Credentials, TokenStore, credential_error};
use super::redact::Redactor;

pub use elicitation::Requester;
pub use features::Subscriber;
pub use sampling::{AnswerOptions, LocalAnswer, Sampler, SamplingError};

/// How long a server may take to start and answer `initialize` and `tools/list`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping server gets to exit before its process group is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What changed on a server, for the gateway to rebuild and tell its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
}

/// What a server offers besides tools, learnt from its `initialize` answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offers {
    pub resources: bool,
    pub resource_subscriptions: bool,
    pub prompts: bool,
}

impl Offers {
    fn of(capabilities: &ServerCapabilities) -> Self {
        Self {
            resources: capabilities.resources.is_some(),
            resource_subscriptions: capabilities
                .resources
                .as_ref()
                .is_some_and(|r| r.subscribe == Some(true)),
            prompts: capabilities.prompts.is_some(),
        }
    }
}

/// A running connection.
struct Connection {
    service: RunningService<RoleClient, Listener>,
    peer: Peer<RoleClient>,
    pid: Option<u32>,
}

/// What the lifecycle knows besides the connection.
#[derive(Debug, Default)]
struct Health {
    /// Failed starts in a row, for backoff.
    start_failures: u32,
    next_start: Option<Instant>,
    /// Set when a running server was found dead.
    crashes: u64,
    /// The last failure (a start, a crash, a call that failed in transport or timed out), redacted.
    last_error: Option<String>,
}

/// What `model mcp server status` shows of one server.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UpstreamStatus {
    pub name: String,
    pub state: ServerState,
    /// Whether a live session is up (`state` is `running`).
    pub running: bool,
    /// Tools offered, once the server has listed them.
    pub tools: Option<usize>,
    pub crashes: u64,
    pub last_error: Option<String>,
}

pub struct Upstream {
    pub config: ServerConfig,
    connection: tokio::sync::Mutex<Option<Connection>>,
    tools: Mutex<Option<Vec<Tool>>>,
    /// What the server offered when it last started (kept while it sleeps, as its tools are).
    offers: Mutex<Option<Offers>>,
    /// Its prompts, listed at start and again when it says they changed.
    prompts: Mutex<Option<Vec<Prompt>>>,
    /// Sessions subscribed to its resources, by the server's own URI.
    subscriptions: Mutex<HashMap<String, Vec<Subscriber>>>,
    breaker: Mutex<Breaker>,
    health: Mutex<Health>,
    last_used: Mutex<Instant>,
    in_flight: AtomicUsize,
    /// Called when the server's tools, prompts or resources change (the gateway rebuilds what it
    /// derives from them and tells its sessions).
    on_change: Arc<dyn Fn(ListKind) + Send + Sync>,
    redactor: Arc<Redactor>,
    /// Answers the server's sampling requests (used only when its config has `sampling`).
    sampler: Arc<dyn Sampler>,
    /// Tool calls in flight, by ticket, with the session each comes from (who its elicitations ask).
    requesters: Mutex<Vec<(u64, Option<Requester>)>>,
    next_ticket: AtomicU64,
    /// A remote server's OAuth grant (`model mcp auth login`), when the gateway keeps grants.
    credentials: Option<Arc<Credentials>>,
}

/// The client side's handler: follows `notifications/tools/list_changed` (and prompts' and resources'),
/// relays `notifications/resources/updated` to subscribed sessions, logs server log messages.
#[derive(Clone)]
struct Listener {
    upstream: Weak<Upstream>,
}

impl ClientHandler for Listener {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        if self
            .upstream
            .upgrade()
            .is_some_and(|u| u.config.sampling.is_some())
        {
            capabilities.sampling = Some(Default::default());
        }
        capabilities.elicitation = Some(elicitation::capability());
        ClientConfig::new(
            capabilities,
            Implementation::new("model-runner", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    #[allow(deprecated)]
    async fn create_message(
        &self,
        params: rmcp::model::CreateMessageRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, rmcp::ErrorData> {
        match self.upstream.upgrade() {
            Some(upstream) => upstream.sample(params).await,
            None => Err(rmcp::ErrorData::internal_error(
                "the gateway no longer serves this server",
                None,
            )),
        }
    }

    async fn create_elicitation(
        &self,
        params: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        match self.upstream.upgrade() {
            Some(upstream) => upstream.elicit(params).await,
            None => Err(rmcp::ErrorData::internal_error(
                "the gateway no longer serves this server",
                None,
            )),
        }
    }

    async fn on_tool_list_changed(&self, context: NotificationContext<RoleClient>) {
        let Some(upstream) = self.upstream.upgrade() else {
            return;
        };
        match context.peer.list_all_tools().await {
            Ok(tools) => {
                tracing::info!(server = %upstream.config.name, tools = tools.len(), "MCP server's tools changed");
                upstream.set_tools(tools);
            }
            Err(e) => {
                tracing::warn!(server = %upstream.config.name, "cannot list changed tools: {e}")
            }
        }
    }

    async fn on_prompt_list_changed(&self, context: NotificationContext<RoleClient>) {
        if let Some(upstream) = self.upstream.upgrade() {
            upstream.refresh_prompts(&context.peer).await;
        }
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        if let Some(upstream) = self.upstream.upgrade() {
            (upstream.on_change)(ListKind::Resources);
        }
    }

    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(upstream) = self.upstream.upgrade() {
            upstream.relay_update(&params.uri).await;
        }
    }

    #[allow(deprecated)]
    async fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(upstream) = self.upstream.upgrade() {
            let data = upstream.redactor.redact(&params.data.to_string());
            tracing::debug!(server = %upstream.config.name, level = ?params.level, "{data}");
        }
    }
}

impl Upstream {
    pub fn new(
        config: ServerConfig,
        breaker: Breaker,
        redactor: Arc<Redactor>,
        on_change: Arc<dyn Fn(ListKind) + Send + Sync>,
        sampler: Arc<dyn Sampler>,
        tokens: Option<&TokenStore>,
    ) -> Arc<Self> {
        let credentials = match (&config.transport, tokens) {
            (Transport::Http { url, .. } | Transport::Sse { url, .. }, Some(tokens)) => {
                Some(Credentials::new(tokens.clone(), &config.name, url))
            }
            _ => None,
        };
        Arc::new(Self {
            config,
            connection: tokio::sync::Mutex::new(None),
            tools: Mutex::new(None),
            offers: Mutex::new(None),
            prompts: Mutex::new(None),
            subscriptions: Mutex::new(HashMap::new()),
            breaker: Mutex::new(breaker),
            health: Mutex::new(Health::default()),
            last_used: Mutex::new(Instant::now()),
            in_flight: AtomicUsize::new(0),
            on_change,
            redactor,
            sampler,
            requesters: Mutex::new(Vec::new()),
            next_ticket: AtomicU64::new(0),
            credentials,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn set_tools(&self, mut tools: Vec<Tool>) {
        if let Some(enabled) = &self.config.tools {
            tools.retain(|t| enabled.iter().any(|e| e == t.name.as_ref()));
        }
        *lock(&self.tools) = Some(tools);
        (self.on_change)(ListKind::Tools);
    }

    /// The tools last listed, if the server ever ran.
    pub fn known_tools(&self) -> Option<Vec<Tool>> {
        lock(&self.tools).clone()
    }

    /// The server's tools, starting it when they were never listed.
    pub async fn tools(self: &Arc<Self>) -> Result<Vec<Tool>, McpError> {
        if let Some(tools) = self.known_tools() {
            return Ok(tools);
        }
        self.peer().await?;
        Ok(self.known_tools().unwrap_or_default())
    }

    /// Whether the server is running now.
    pub async fn is_running(&self) -> bool {
        self.connection
            .lock()
            .await
            .as_ref()
            .is_some_and(|c| !c.peer.is_transport_closed())
    }

    /// A live connection's peer: the running one, or a new one.
    async fn peer(self: &Arc<Self>) -> Result<Peer<RoleClient>, McpError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            if !connection.peer.is_transport_closed() {
                return Ok(connection.peer.clone());
            }
            {
                let mut health = lock(&self.health);
                health.crashes += 1;
                health.last_error = Some("the server exited".into());
            }
            tracing::warn!(server = %self.config.name, pid = ?connection.pid, "MCP server exited; restarting");
            *slot = None;
        }
        let now = Instant::now();
        if let Some(at) = lock(&self.health).next_start
            && at > now
        {
            return Err(McpError::Unavailable {
                server: self.config.name.clone(),
                reason: format!(
                    "it failed to start; next attempt in {:.1} s",
                    (at - now).as_secs_f64()
                ),
            });
        }
        match tokio::time::timeout(START_TIMEOUT, self.start()).await {
            Ok(Ok((connection, tools, offers))) => {
                let peer = connection.peer.clone();
                tracing::info!(server = %self.config.name, pid = ?connection.pid, tools = tools.len(), "MCP server started");
                *slot = Some(connection);
                {
                    let mut health = lock(&self.health);
                    health.start_failures = 0;
                    health.next_start = None;
                }
                *lock(&self.last_used) = Instant::now();
                drop(slot);
                *lock(&self.offers) = Some(offers);
                self.set_tools(tools);
                if offers.prompts {
                    self.refresh_prompts(&peer).await;
                }
                if offers.resources {
                    (self.on_change)(ListKind::Resources);
                }
                self.resubscribe(&peer).await;
                Ok(peer)
            }
            outcome => {
                let reason = match outcome {
                    Ok(Err(e)) => self.redactor.redact(&e),
                    _ => format!("no answer within {} s", START_TIMEOUT.as_secs()),
                };
                let mut health = lock(&self.health);
                health.last_error = Some(format!("failed to start: {reason}"));
                health.start_failures += 1;
                let backoff = BACKOFF_BASE
                    .saturating_mul(1 << health.start_failures.min(16).saturating_sub(1))
                    .min(BACKOFF_MAX);
                health.next_start = Some(Instant::now() + backoff);
                tracing::warn!(server = %self.config.name, failures = health.start_failures, backoff_ms = backoff.as_millis() as u64, "MCP server failed to start: {reason}");
                Err(McpError::Unavailable {
                    server: self.config.name.clone(),
                    reason: format!("it failed to start: {reason}"),
                })
            }
        }
    }

    async fn start(self: &Arc<Self>) -> Result<(Connection, Vec<Tool>, Offers), String> {
        let listener = Listener {
            upstream: Arc::downgrade(self),
        };
        let (service, pid) = match &self.config.transport {
            Transport::Stdio {
                command,
                args,
                env,
                cwd,
            } => {
                let mut wrapped = process_wrap::tokio::CommandWrap::with_new(command, |c| {
                    // A cleared environment: the runner's own keys and passwords must not reach
                    // a server; only the allow-list and what the config's `env` names do.
                    c.args(args)
                        .env_clear()
                        .envs(inherited_env(std::env::vars_os()))
                        .envs(env);
                    if let Some(dir) = cwd {
                        c.current_dir(dir);
                    }
                    #[cfg(target_os = "linux")]
                    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child if
                    // the runner dies without stopping it (a SIGKILL leaves no time to clean up).
                    unsafe {
                        c.pre_exec(|| {
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                            Ok(())
                        });
                    }
                });
                #[cfg(unix)]
                wrapped.wrap(process_wrap::tokio::ProcessGroup::leader());
                let (transport, stderr) = TokioChildProcess::builder(wrapped)
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("cannot run {command}: {e}"))?;
                let pid = transport.id();
                if let Some(stderr) = stderr {
                    let server = self.config.name.clone();
                    let redactor = self.redactor.clone();
                    tokio::spawn(async move {
                        let mut lines = tokio::io::BufReader::new(stderr).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            tracing::debug!(server = %server, "stderr: {}", redactor.redact(&line));
                        }
                    });
                }
                let service = listener
                    .serve(transport)
                    .await
                    .map_err(|e| format!("initialize failed: {e}"))?;
                (service, pid)
            }
            Transport::Http {
                url,
                headers,
                sse_fallback,
            } => {
                let config = streamable_http_config(url, headers)?;
                let static_auth = has_static_auth(headers);
                // A configured Authorization header wins; otherwise the OAuth grant, if any, is used
                // (and a 401 without one says how to log in).
                let served = match &self.credentials {
                    Some(credentials) if !static_auth => {
                        let client = BearerClient::new(credentials.clone())
                            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
                        listener
                            .clone()
                            .serve(StreamableHttpClientTransport::with_client(client, config))
                            .await
                    }
                    _ => {
                        listener
                            .clone()
                            .serve(StreamableHttpClientTransport::from_config(config))
                            .await
                    }
                };
                match served {
                    Ok(service) => (service, None),
                    Err(e) if *sse_fallback && sse::suggests_legacy_sse(&e) => {
                        tracing::warn!(server = %self.config.name, "streamable HTTP refused ({e}); trying the HTTP+SSE transport (\"type\": \"sse\" skips this attempt)");
                        (self.serve_sse(listener, url, headers).await?, None)
                    }
                    Err(e) => {
                        // rmcp keeps the transport's error out of the `source` chain here.
                        let refused = match &e {
                            rmcp::service::ClientInitializeError::TransportError {
                                error, ..
                            } => credential_error(error),
                            other => credential_error(other),
                        };
                        return Err(match refused {
                            Some(refused) => refused.to_string(),
                            None => format!("cannot connect to {url}: {e}"),
                        });
                    }
                }
            }
            Transport::Sse { url, headers } => {
                (self.serve_sse(listener, url, headers).await?, None)
            }
        };
        let peer = service.peer().clone();
        peer.set_response_cache_config(ClientCacheConfig::disabled())
            .await;
        let offers = peer
            .peer_info()
            .map(|info| Offers::of(&info.capabilities))
            .unwrap_or_default();
        let tools = peer
            .list_all_tools()
            .await
            .map_err(|e| format!("tools/list failed: {e}"))?;
        Ok((Connection { service, peer, pid }, tools, offers))
    }

    /// A session over the older HTTP+SSE transport.
    async fn serve_sse(
        &self,
        listener: Listener,
        url: &str,
        headers: &std::collections::BTreeMap<String, String>,
    ) -> Result<RunningService<RoleClient, Listener>, String> {
        // As over streamable HTTP: a configured Authorization header wins over the OAuth grant.
        let credentials = self
            .credentials
            .clone()
            .filter(|_| !has_static_auth(headers));
        let transport = match sse::SseTransport::connect(url, headers, credentials).await {
            Ok(transport) => transport,
            Err(sse::SseError::Credentials(refused)) => return Err(refused.to_string()),
            Err(e) => return Err(format!("cannot open the SSE stream of {url}: {e}")),
        };
        listener
            .serve(transport)
            .await
            .map_err(|e| format!("initialize over SSE at {url} failed: {e}"))
    }

    /// Calls one of the server's tools (by its own name) under the breaker and the call timeout;
    /// elicitations the server sends meanwhile go to `requester`, when it is the only one calling.
    pub async fn call(
        self: &Arc<Self>,
        tool: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
        requester: Option<Requester>,
    ) -> Result<CallToolResult, McpError> {
        let _in_flight = self.call_in_flight(requester);
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        self.request(
            tool,
            move |peer| async move { peer.call_tool(params).await },
        )
        .await
    }

    /// One request to the server (`what` names it in errors: a tool's name, `resources/read`, ...),
    /// under the breaker, the call timeout and the idle clock, its failures recorded as calls' are.
    async fn request<T, Fut>(
        self: &Arc<Self>,
        what: &str,
        send: impl FnOnce(Peer<RoleClient>) -> Fut,
    ) -> Result<T, McpError>
    where
        Fut: std::future::Future<Output = Result<T, ServiceError>>,
    {
        if let Err(wait) = lock(&self.breaker).admit(Instant::now()) {
            return Err(McpError::Unavailable {
                server: self.config.name.clone(),
                reason: format!(
                    "its circuit breaker is open after repeated failures; next trial in {:.1} s",
                    wait.as_secs_f64()
                ),
            });
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let outcome = self.send_admitted(what, send).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        *lock(&self.last_used) = Instant::now();
        if let Err(e @ (McpError::Timeout { .. } | McpError::Transport { .. })) = &outcome {
            lock(&self.health).last_error = Some(e.to_string());
        }
        let mut breaker = lock(&self.breaker);
        match &outcome {
            Ok(_) | Err(McpError::Protocol { .. }) => breaker.record_success(),
            Err(_) => breaker.record_failure(Instant::now()),
        }
        outcome
    }

    async fn send_admitted<T, Fut>(
        self: &Arc<Self>,
        what: &str,
        send: impl FnOnce(Peer<RoleClient>) -> Fut,
    ) -> Result<T, McpError>
    where
        Fut: std::future::Future<Output = Result<T, ServiceError>>,
    {
        let peer = self.peer().await?;
        let server = self.config.name.clone();
        match tokio::time::timeout(self.config.call_timeout, send(peer)).await {
            Err(_) => Err(McpError::Timeout {
                server,
                tool: what.to_string(),
                after: self.config.call_timeout,
            }),
            Ok(Ok(result)) => Ok(result),
            Ok(Err(ServiceError::McpError(e))) => Err(McpError::Protocol {
                server,
                message: e.message.to_string(),
            }),
            Ok(Err(e)) => match credential_error(&e) {
                // Not a transport failure: the user has to (re)authorize the server.
                Some(refused) => Err(McpError::Unavailable {
                    server,
                    reason: refused.to_string(),
                }),
                None => Err(McpError::Transport {
                    server,
                    message: self.redactor.redact(&e.to_string()),
                }),
            },
        }
    }

    /// Stops the server if it has been idle past its timeout (never long-lived ones or ones in a call).
    pub async fn stop_if_idle(&self) {
        if self.config.long_lived {
            return;
        }
        // Decide under the connection lock: a start in progress holds it and renews `last_used`.
        let mut slot = self.connection.lock().await;
        let idle = Instant::now().saturating_duration_since(*lock(&self.last_used));
        if slot.is_none()
            || idle < self.config.idle_timeout
            || self.in_flight.load(Ordering::SeqCst) > 0
            || self.has_subscribers()
        {
            return;
        }
        let connection = slot.take();
        drop(slot);
        tracing::info!(server = %self.config.name, idle_s = idle.as_secs(), "stopping idle MCP server");
        if let Some(connection) = connection {
            close(connection).await;
        }
    }

    /// Keeps a long-lived server up: starts it when it is down and its backoff allows.
    pub async fn keep_alive(self: &Arc<Self>) {
        if !self.config.long_lived || self.is_running().await {
            return;
        }
        if lock(&self.health)
            .next_start
            .is_some_and(|at| at > Instant::now())
        {
            return;
        }
        let _ = self.peer().await;
    }

    /// Stops the server: closes the session, then kills its process group if it lingers.
    pub async fn stop(&self) {
        let connection = self.connection.lock().await.take();
        if let Some(connection) = connection {
            close(connection).await;
        }
    }

    /// The server's state, tools and last error: for `/health`, the console's MCP page and
    /// `model mcp server status`.
    pub async fn status(&self) -> UpstreamStatus {
        let (connected, dead) = match self.connection.lock().await.as_ref() {
            Some(c) => (true, c.peer.is_transport_closed()),
            None => (false, false),
        };
        let breaker_open = lock(&self.breaker).state(Instant::now()) == BreakerState::Open;
        let health = lock(&self.health);
        let running = connected && !dead;
        let state = if breaker_open {
            ServerState::BreakerOpen
        } else if dead || (!connected && health.start_failures > 0) {
            ServerState::Crashed
        } else if running {
            ServerState::Running
        } else {
            ServerState::Idle
        };
        UpstreamStatus {
            name: self.config.name.clone(),
            state,
            running,
            tools: self.known_tools().map(|t| t.len()),
            crashes: health.crashes,
            last_error: health.last_error.clone(),
        }
    }

    /// Restarts counted when the server was found dead.
    pub fn crashes(&self) -> u64 {
        lock(&self.health).crashes
    }
}

/// The streamable-HTTP client's settings for `url` with the config's `headers` (a bearer token goes
/// where rmcp expects it).
fn streamable_http_config(
    url: &str,
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<StreamableHttpClientTransportConfig, String> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    let mut custom = HashMap::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("authorization")
            && let Some(token) = value.strip_prefix("Bearer ")
        {
            config = config.auth_header(token.to_string());
            continue;
        }
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("header name {name:?}: {e}"))?;
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| format!("header {name} has a value HTTP cannot carry"))?;
        custom.insert(name, value);
    }
    Ok(config.custom_headers(custom))
}

/// One server's state, as `/health`, `/gateway/servers` and `model mcp server status` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Up, with a live session.
    Running,
    /// Not started yet, or stopped after its idle timeout: the next call starts it.
    Idle,
    /// Found dead, or its last start failed; the next start waits for the backoff.
    Crashed,
    /// Too many failures in a row: calls fail at once until the cool-down ends.
    BreakerOpen,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Idle => "idle",
            Self::Crashed => "crashed",
            Self::BreakerOpen => "breaker_open",
        }
    }
}

/// Variables a stdio server inherits from the runner: what a process needs to find programs, its home,
/// locale, time zone and temporary directory, the XDG directories (npx's and uvx's caches), the CA
/// bundles (TLS for `npx -y`/`uvx` downloads) and the Docker client's own settings (`docker run -i`).
/// Anything else (API keys, registry passwords, proxies with credentials) reaches a server only when its
/// config's `env` names it.
const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "SYSTEMROOT",
    "WINDIR",
    "COMSPEC",
    "PATHEXT",
    "APPDATA",
    "LOCALAPPDATA",
    "USERPROFILE",
    "TEMP",
    "TMP",
];

/// The allow-listed part of `vars` (`INHERITED_ENV` and every `LC_*`).
fn inherited_env(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    vars.filter(|(name, _)| {
        name.to_str().is_some_and(|name| {
            INHERITED_ENV
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(name))
                || name.starts_with("LC_")
        })
    })
    .collect()
}

/// Closes the session, then kills what is left of the server's process group.
async fn close(mut connection: Connection) {
    let _ = connection.service.close_with_timeout(STOP_GRACE).await;
    #[cfg(unix)]
    if let Some(pid) = connection.pid {
        kill_group(pid);
    }
}

/// Kills what is left of a process group (the server exited but its children may not have).
#[cfg(unix)]
fn kill_group(pid: u32) {
    // SAFETY: killpg only sends a signal; a group that is gone yields ESRCH, which is fine.
    unsafe {
        libc::killpg(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// Poison-tolerant lock: the guarded values stay consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the config sets an `Authorization` header itself (then no OAuth grant is used).
fn has_static_auth(headers: &std::collections::BTreeMap<String, String>) -> bool {
    headers
        .keys()
        .any(|name| name.eq_ignore_ascii_case("authorization"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allow_listed_variables_are_inherited() {
        let vars = [
            ("PATH", "/usr/bin"),
            ("LC_ALL", "C.UTF-8"),
            ("MODEL_RUNNER_API_KEY", "key"),
            ("MODEL_RUNNER_REGISTRY_PASSWORD", "password"),
            ("AWS_SECRET_ACCESS_KEY", "aws"),
            ("HTTPS_PROXY", "http://user:pass@proxy"),
        ]
        .map(|(k, v)| (k.into(), v.into()));
        let kept: Vec<String> = inherited_env(vars.into_iter())
            .into_iter()
            .filter_map(|(k, _)| k.into_string().ok())
            .collect();
        assert_eq!(kept, ["PATH", "LC_ALL"]);
    }
}
