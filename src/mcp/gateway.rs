//! The gateway: every configured server's tools under namespaced names, and the one call path that
//! `/mcp`, `model mcp` and the chat loop share — access, rate limit, argument check, cache, timeout,
//! call log, metrics. The configuration can be reloaded (SIGHUP): servers whose settings did not change
//! keep running.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolResult, ContentBlock, Tool};
use serde_json::{Map, Value, json};

use super::breaker::Breaker;
use super::code_mode;
use super::config::{ConfigError, LOCAL_SERVER, McpConfig};
use super::discovery::{self, Candidate};
use super::naming::NameTable;
use super::policy::{Caller, Policy};
use super::redact::Redactor;
use super::upstream::Upstream;
use super::{McpError, naming};
use crate::metrics::{Histogram, describe, label};

/// The `server` label of the gateway's own tools (`mcp_find`, `mcp_call`, `run_js`) and of unknown names.
pub const GATEWAY_SERVER: &str = "gateway";
/// The `tool` label under which calls to names no tool has are counted.
pub const UNKNOWN_TOOL: &str = "unknown";
/// How much of a tool's name a log line carries (names come from callers).
const LOGGED_NAME_CHARS: usize = 128;

/// A tool as the gateway offers it.
pub struct Entry {
    /// Namespaced: `server__tool`.
    pub name: String,
    pub server: String,
    /// The tool as its server describes it (its own name).
    pub tool: Tool,
    validator: Option<Arc<jsonschema::Validator>>,
    upstream: Arc<Upstream>,
}

impl Entry {
    pub fn description(&self) -> &str {
        self.tool.description.as_deref().unwrap_or("")
    }

    /// The tool's input schema, ready to be embedded in a larger one (a chat request's tool-call
    /// grammar puts it under `arguments`): a schema with local references (`#/$defs/..`, recursive
    /// ones included) gets an `$id`, so that they resolve against it and not the embedding document.
    pub fn input_schema(&self) -> Value {
        let mut schema = (*self.tool.input_schema).clone();
        if !schema.contains_key("$id") && has_local_ref(&Value::Object(schema.clone())) {
            schema.insert(
                "$id".into(),
                Value::String(format!("urn:model-runner:mcp:{}", self.name)),
            );
        }
        Value::Object(schema)
    }

    fn read_only(&self) -> bool {
        self.tool
            .annotations
            .as_ref()
            .and_then(|a| a.read_only_hint)
            .unwrap_or(false)
    }
}

/// The tools of every server that has listed them, in configuration order.
#[derive(Default)]
struct Catalogue {
    entries: Vec<Arc<Entry>>,
    by_name: HashMap<String, usize>,
}

/// What one call did: what the chat loop reports as `mcp_calls` and the call log writes.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub name: String,
    pub server: String,
    pub arguments: Value,
    pub result: Option<CallToolResult>,
    pub error: Option<String>,
    pub error_kind: Option<&'static str>,
    pub duration: Duration,
}

impl CallRecord {
    /// The result as the model reads it: text blocks joined, else structured content as JSON.
    pub fn output_text(&self) -> String {
        match (&self.result, &self.error) {
            (_, Some(error)) => format!("Error: {error}"),
            (Some(result), None) => result_text(result),
            (None, None) => String::new(),
        }
    }

    /// Whether the tool reported a failure (an error, or a result marked `isError`).
    pub fn failed(&self) -> bool {
        self.error.is_some()
            || self
                .result
                .as_ref()
                .is_some_and(|r| r.is_error == Some(true))
    }

    /// The call as an MCP result (errors become `isError` results the model can read).
    pub fn into_result(self) -> CallToolResult {
        match (self.result, self.error) {
            (Some(result), None) => result,
            (_, error) => CallToolResult::error(vec![ContentBlock::text(
                error.unwrap_or_else(|| "the call produced no result".into()),
            )]),
        }
    }

    /// `mcp_calls[i]` in a chat response.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "server": self.server,
            "arguments": self.arguments,
            "result": self.error.is_none().then(|| self.output_text()),
            "structured_result": self.result.as_ref().and_then(|r| r.structured_content.clone()),
            "is_error": self.failed(),
            "error": self.error,
            "duration_ms": self.duration.as_secs_f64() * 1000.0,
        })
    }
}

/// Text of a tool result.
pub fn result_text(result: &CallToolResult) -> String {
    let texts: Vec<String> = result
        .content
        .iter()
        .map(|c| match c.as_text() {
            Some(t) => t.text.clone(),
            None if c.as_image().is_some() => "[image]".to_string(),
            None => serde_json::to_string(c).unwrap_or_default(),
        })
        .collect();
    if texts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        return structured.to_string();
    }
    texts.join("\n")
}

#[derive(Default)]
struct ToolStats {
    calls: AtomicU64,
    errors: AtomicU64,
    latency: Histogram,
}

/// The parts replaced together on reload.
struct Setup {
    config: McpConfig,
    upstreams: Vec<Arc<Upstream>>,
    policy: Policy,
    redactor: Arc<Redactor>,
    caches: HashMap<String, moka::future::Cache<String, CallToolResult>>,
}

/// Shared between the gateway and its upstreams: set when a tool list changed.
struct ChangeSignal {
    dirty: AtomicBool,
    version: tokio::sync::watch::Sender<u64>,
}

impl ChangeSignal {
    fn raise(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.version.send_modify(|v| *v += 1);
    }
}

pub struct Gateway {
    setup: RwLock<Arc<Setup>>,
    config_path: Option<PathBuf>,
    catalogue: RwLock<Arc<Catalogue>>,
    changes: Arc<ChangeSignal>,
    stats: Mutex<BTreeMap<(String, String, String), Arc<ToolStats>>>,
}

impl Gateway {
    /// A gateway over `config`; `config_path` is what SIGHUP reloads.
    pub fn new(config: McpConfig, config_path: Option<PathBuf>) -> Arc<Self> {
        let (version, _) = tokio::sync::watch::channel(0);
        let changes = Arc::new(ChangeSignal {
            dirty: AtomicBool::new(true),
            version,
        });
        let setup = build_setup(config, &[], &changes);
        Arc::new(Self {
            setup: RwLock::new(Arc::new(setup)),
            config_path,
            catalogue: RwLock::new(Arc::new(Catalogue::default())),
            changes,
            stats: Mutex::new(BTreeMap::new()),
        })
    }

    /// Loads `--mcp-config FILE`.
    pub fn from_file(path: PathBuf) -> Result<Arc<Self>, ConfigError> {
        let config = McpConfig::load(&path)?;
        Ok(Self::new(config, Some(path)))
    }

    fn setup(&self) -> Arc<Setup> {
        read(&self.setup).clone()
    }

    /// Configured server names, in order.
    pub fn server_names(&self) -> Vec<String> {
        self.setup()
            .upstreams
            .iter()
            .map(|u| u.name().to_string())
            .collect()
    }

    /// Each configured server and whether it runs now, for `/health`.
    pub async fn server_status(&self) -> Vec<(String, bool)> {
        let mut status = Vec::new();
        for upstream in &self.setup().upstreams {
            status.push((upstream.name().to_string(), upstream.is_running().await));
        }
        status
    }

    pub fn max_rounds(&self) -> usize {
        self.setup().config.max_rounds
    }

    /// The caller a bearer token stands for; `None` when the token is unknown and clients are configured.
    pub fn authenticate(&self, token: Option<&str>) -> Option<Caller> {
        self.setup().policy.authenticate(token)
    }

    /// Whether any client is configured (then calls without a known token are denied).
    pub fn is_enforced(&self) -> bool {
        self.setup().policy.is_enforced()
    }

    /// Takes one call from the caller's budget (for transports that answer "rate limited" themselves).
    pub fn check_rate(&self, caller: &Caller) -> Result<(), McpError> {
        self.setup()
            .policy
            .check_rate(caller)
            .map_err(|retry_after| McpError::RateLimited {
                client: caller.label().to_string(),
                retry_after,
            })
    }

    /// Bumped whenever the catalogue changes; `/mcp` sessions forward it as `tools/list_changed`.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.version.subscribe()
    }

    /// Lists every server (or only `only`) that never listed its tools, starting it; failures are
    /// logged and the server left out.
    async fn discover(&self, only: Option<&str>) {
        let setup = self.setup();
        let pending: Vec<_> = setup
            .upstreams
            .iter()
            .filter(|u| u.known_tools().is_none() && only.is_none_or(|name| u.name() == name))
            .cloned()
            .collect();
        let results = futures::future::join_all(pending.iter().map(|u| u.tools())).await;
        for (upstream, result) in pending.iter().zip(results) {
            if let Err(e) = result {
                tracing::warn!(server = %upstream.name(), "MCP server's tools are not available: {e}");
            }
        }
    }

    /// The catalogue, once `only` (or every server) has listed its tools.
    async fn catalogue_of(&self, only: Option<&str>) -> Arc<Catalogue> {
        self.discover(only).await;
        if self.changes.dirty.swap(false, Ordering::SeqCst) {
            let setup = self.setup();
            let catalogue = Arc::new(build_catalogue(&setup.upstreams));
            *write(&self.catalogue) = catalogue;
        }
        read(&self.catalogue).clone()
    }

    /// The tools `caller` may use, gateway tools excluded.
    pub async fn tools(&self, caller: &Caller) -> Vec<Arc<Entry>> {
        self.tools_of(caller, None).await
    }

    async fn tools_of(&self, caller: &Caller, only: Option<&str>) -> Vec<Arc<Entry>> {
        let catalogue = self.catalogue_of(only).await;
        let setup = self.setup();
        catalogue
            .entries
            .iter()
            .filter(|e| setup.policy.allows(caller, &e.server, &e.name))
            .cloned()
            .collect()
    }

    /// One server's tools for a chat request (`{"type": "mcp", "server_label": ..}`), optionally only
    /// those named in `allowed` (by the server's own names or namespaced ones).
    pub async fn server_tools(
        &self,
        caller: &Caller,
        server: &str,
        allowed: Option<&[String]>,
    ) -> Result<Vec<Arc<Entry>>, McpError> {
        if !self.server_names().iter().any(|s| s == server) {
            return Err(McpError::UnknownServer(server.to_string()));
        }
        Ok(self
            .tools_of(caller, Some(server))
            .await
            .into_iter()
            .filter(|e| e.server == server)
            .filter(|e| {
                allowed.is_none_or(|a| a.iter().any(|n| n == e.tool.name.as_ref() || n == &e.name))
            })
            .collect())
    }

    /// Ranked search for `mcp_find`, over what `caller` may use (optionally only some servers).
    pub async fn find(
        &self,
        caller: &Caller,
        query: &str,
        limit: usize,
        servers: Option<&[String]>,
    ) -> Vec<Arc<Entry>> {
        let tools: Vec<Arc<Entry>> = self
            .tools(caller)
            .await
            .into_iter()
            .filter(|e| servers.is_none_or(|s| s.contains(&e.server)))
            .collect();
        let candidates: Vec<Candidate<'_>> = tools
            .iter()
            .map(|e| Candidate {
                name: &e.name,
                description: e.description(),
            })
            .collect();
        discovery::rank(query, &candidates, limit)
            .into_iter()
            .map(|i| tools[i].clone())
            .collect()
    }

    /// Calls a namespaced tool (or a gateway tool: `mcp_find`, `mcp_call`, `run_js`) for `caller`.
    /// `rate_checked`: the transport already took this call from the caller's budget.
    pub async fn call(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        arguments: Value,
        rate_checked: bool,
    ) -> CallRecord {
        self.call_scoped(caller, name, arguments, rate_checked, None)
            .await
    }

    /// Calls one of the runner's own tools (`chat`, `list_models`: `run` does the work) under the same
    /// access check (as tools of the pseudo-server `model-runner`), rate limit, call log and metrics as
    /// an upstream tool. `run` is only polled once the call is admitted.
    pub async fn call_local(
        &self,
        caller: &Caller,
        name: &str,
        arguments: Value,
        rate_checked: bool,
        run: impl Future<Output = Result<CallToolResult, McpError>>,
    ) -> CallRecord {
        let started = Instant::now();
        let setup = self.setup();
        let outcome = match admit(&setup, caller, LOCAL_SERVER, name, rate_checked) {
            Ok(()) => run.await,
            Err(e) => Err(e),
        };
        self.record(
            &setup,
            caller,
            name.to_string(),
            LOCAL_SERVER.to_string(),
            arguments,
            outcome,
            started,
        )
    }

    /// Whether `caller` may see and call `server`'s tool `name` (namespaced, or a local tool's name).
    pub fn allows(&self, caller: &Caller, server: &str, name: &str) -> bool {
        self.setup().policy.allows(caller, server, name)
    }

    /// `run_js`: a script whose tool functions call through the gateway as `caller` (each call checked,
    /// limited and logged on its own), run on a blocking thread.
    async fn run_js(
        self: &Arc<Self>,
        caller: &Caller,
        arguments: Value,
        scope: Option<&[String]>,
    ) -> CallRecord {
        let started = Instant::now();
        let setup = self.setup();
        let outcome = match arguments.get("script").and_then(Value::as_str) {
            None => Err(McpError::InvalidArguments {
                tool: code_mode::RUN_JS.into(),
                message: "script must be a string".into(),
            }),
            Some(script) => {
                let names: Vec<String> = self
                    .tools(caller)
                    .await
                    .iter()
                    .filter(|e| scope.is_none_or(|s| s.contains(&e.server)))
                    .map(|e| e.name.clone())
                    .collect();
                let call = self.script_caller(caller, &names, scope);
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
            &setup,
            caller,
            code_mode::RUN_JS.into(),
            GATEWAY_SERVER.into(),
            arguments,
            outcome,
            started,
        )
    }

    /// The function a script's tool calls go through (blocking on the async runtime from its thread).
    fn script_caller(
        self: &Arc<Self>,
        caller: &Caller,
        names: &[String],
        scope: Option<&[String]>,
    ) -> code_mode::ToolCaller {
        let gateway = self.clone();
        let caller = caller.clone();
        let allowed: std::collections::HashSet<String> = names.iter().cloned().collect();
        let scope = scope.map(<[String]>::to_vec);
        let runtime = tokio::runtime::Handle::current();
        Arc::new(move |name: &str, arguments: Value| {
            if !allowed.contains(name) {
                return Err(format!("no tool named {name} is available to this script"));
            }
            // The call runs as a task on the runtime's workers, not on this blocking thread: a server it
            // starts is bound to its spawning thread's life (PR_SET_PDEATHSIG), and blocking threads
            // are reaped when idle.
            let call = {
                let (gateway, caller, name, scope) = (
                    gateway.clone(),
                    caller.clone(),
                    name.to_string(),
                    scope.clone(),
                );
                runtime.spawn(async move {
                    gateway
                        .call_scoped(&caller, &name, arguments, false, scope.as_deref())
                        .await
                })
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

    /// As `call`, with the gateway tools kept to `scope`'s servers (a chat request's labels): the one
    /// call path of `/mcp`, `model mcp` and the chat loop, `run_js` and the discovery meta-tools included.
    pub async fn call_scoped(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        arguments: Value,
        rate_checked: bool,
        scope: Option<&[String]>,
    ) -> CallRecord {
        if name == code_mode::RUN_JS {
            return self.run_js(caller, arguments, scope).await;
        }
        let started = Instant::now();
        let setup = self.setup();
        let outcome = match name {
            discovery::FIND => self.call_find(caller, &arguments, scope).await,
            discovery::CALL => {
                let target = arguments.get("name").and_then(Value::as_str).unwrap_or("");
                if [discovery::CALL, discovery::FIND, code_mode::RUN_JS, ""].contains(&target) {
                    Err(McpError::InvalidArguments {
                        tool: name.to_string(),
                        message: "name must be a tool that mcp_find returned".into(),
                    })
                } else if scope.is_some_and(|servers| {
                    !servers
                        .iter()
                        .any(|s| target.starts_with(&format!("{s}{}", naming::SEPARATOR)))
                }) {
                    Err(McpError::Denied {
                        client: caller.label().to_string(),
                        tool: target.to_string(),
                    })
                } else {
                    let inner = arguments.get("arguments").cloned().unwrap_or(json!({}));
                    return Box::pin(self.call_scoped(caller, target, inner, rate_checked, scope))
                        .await;
                }
            }
            _ => {
                self.call_tool(&setup, caller, name, &arguments, rate_checked)
                    .await
            }
        };
        let server = self
            .server_of(name)
            .unwrap_or_else(|| GATEWAY_SERVER.to_string());
        self.record(
            &setup,
            caller,
            name.to_string(),
            server,
            arguments,
            outcome,
            started,
        )
    }

    /// The record of a finished call (errors redacted), logged and counted.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        setup: &Setup,
        caller: &Caller,
        name: String,
        server: String,
        arguments: Value,
        outcome: Result<CallToolResult, McpError>,
        started: Instant,
    ) -> CallRecord {
        let (result, error, error_kind) = match outcome {
            Ok(result) => (Some(result), None, None),
            Err(e) => (
                None,
                Some(setup.redactor.redact(&e.to_string())),
                Some(e.kind()),
            ),
        };
        let record = CallRecord {
            name,
            server,
            arguments,
            result,
            error,
            error_kind,
            duration: started.elapsed(),
        };
        self.observe(setup, caller, &record);
        record
    }

    fn server_of(&self, name: &str) -> Option<String> {
        let catalogue = read(&self.catalogue).clone();
        catalogue
            .by_name
            .get(name)
            .map(|&i| catalogue.entries[i].server.clone())
    }

    async fn call_find(
        &self,
        caller: &Caller,
        arguments: &Value,
        scope: Option<&[String]>,
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
        let found = self.find(caller, query, limit, scope).await;
        let listing: Vec<Value> = found
            .iter()
            .map(|e| json!({"name": e.name, "description": e.description(), "inputSchema": e.input_schema()}))
            .collect();
        Ok(CallToolResult::structured(json!({ "tools": listing })))
    }

    async fn call_tool(
        &self,
        setup: &Setup,
        caller: &Caller,
        name: &str,
        arguments: &Value,
        rate_checked: bool,
    ) -> Result<CallToolResult, McpError> {
        let server = name.split(naming::SEPARATOR).next();
        let catalogue = self.catalogue_of(server).await;
        let entry = catalogue
            .by_name
            .get(name)
            .map(|&i| catalogue.entries[i].clone())
            .ok_or_else(|| McpError::UnknownTool(name.to_string()))?;
        admit(setup, caller, &entry.server, &entry.name, rate_checked)?;
        let arguments = match arguments {
            Value::Null => Map::new(),
            Value::Object(map) => map.clone(),
            other => {
                return Err(McpError::InvalidArguments {
                    tool: name.to_string(),
                    message: format!("arguments must be a JSON object, got {other}"),
                });
            }
        };
        if let Some(validator) = &entry.validator {
            let instance = Value::Object(arguments.clone());
            let problems: Vec<String> = validator
                .iter_errors(&instance)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    if at.is_empty() {
                        e.to_string()
                    } else {
                        format!("{at}: {e}")
                    }
                })
                .collect();
            if !problems.is_empty() {
                return Err(McpError::InvalidArguments {
                    tool: name.to_string(),
                    message: problems.join("; "),
                });
            }
        }
        let cache = setup
            .caches
            .get(&entry.server)
            .filter(|_| entry.read_only());
        let key = cache.map(|_| {
            format!(
                "{}\u{0}{}",
                entry.tool.name,
                Value::Object(arguments.clone())
            )
        });
        if let (Some(cache), Some(key)) = (cache, &key)
            && let Some(hit) = cache.get(key).await
        {
            return Ok(hit);
        }
        let result = entry.upstream.call(&entry.tool.name, arguments).await?;
        if let (Some(cache), Some(key)) = (cache, key)
            && result.is_error != Some(true)
        {
            cache.insert(key, result.clone()).await;
        }
        Ok(result)
    }

    /// Call log line (secrets removed) and metrics. A name no tool has is counted under the one series
    /// `tool="unknown"`: callers choose names, and each name must not become a series of its own.
    fn observe(&self, setup: &Setup, caller: &Caller, record: &CallRecord) {
        let failed = record.failed();
        let known = record.error_kind != Some(McpError::UnknownTool(String::new()).kind());
        let logged_name: String = record.name.chars().take(LOGGED_NAME_CHARS).collect();
        let line = json!({
            "event": "mcp_call",
            "client": caller.label(),
            "server": record.server,
            "tool": setup.redactor.redact(&logged_name),
            "arguments": setup.redactor.redact(&record.arguments.to_string()),
            "duration_ms": (record.duration.as_secs_f64() * 1e4).round() / 10.0,
            "outcome": if record.error.is_some() { record.error_kind.unwrap_or("error") } else if failed { "tool_error" } else { "ok" },
            "error": record.error,
        });
        tracing::info!(target: "model_runner::mcp::calls", "{line}");
        let key = if known {
            (
                record.server.clone(),
                record.name.clone(),
                caller.label().to_string(),
            )
        } else {
            (
                GATEWAY_SERVER.to_string(),
                UNKNOWN_TOOL.to_string(),
                caller.label().to_string(),
            )
        };
        let stats = lock(&self.stats).entry(key).or_default().clone();
        stats.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        stats.latency.observe(record.duration.as_secs_f64());
    }

    /// Prometheus series for the gateway.
    pub async fn render_metrics(&self, out: &mut String) {
        let stats: Vec<_> = lock(&self.stats)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let labels = |(server, tool, client): &(String, String, String)| {
            format!(
                "server=\"{}\",tool=\"{}\",client=\"{}\"",
                label(server),
                label(tool),
                label(client)
            )
        };
        type Count = fn(&ToolStats) -> u64;
        let counters: [(&str, &str, Count); 2] = [
            (
                "model_runner:mcp_tool_calls_total",
                "MCP tool calls through the gateway.",
                |s| s.calls.load(Ordering::Relaxed),
            ),
            (
                "model_runner:mcp_tool_errors_total",
                "MCP tool calls that failed or returned isError.",
                |s| s.errors.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, count) in counters {
            describe(out, name, "counter", help);
            for (key, s) in &stats {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(key), count(s));
            }
        }
        describe(
            out,
            "model_runner:mcp_tool_call_seconds",
            "histogram",
            "MCP tool call latency.",
        );
        for (key, s) in &stats {
            s.latency
                .render(out, "model_runner:mcp_tool_call_seconds", &labels(key));
        }
        let setup = self.setup();
        describe(
            out,
            "model_runner:mcp_server_up",
            "gauge",
            "Whether an MCP server is running.",
        );
        for u in &setup.upstreams {
            let up = u.is_running().await as u8;
            let _ = writeln!(
                out,
                "model_runner:mcp_server_up{{server=\"{}\"}} {up}",
                label(u.name())
            );
        }
        describe(
            out,
            "model_runner:mcp_server_crashes_total",
            "counter",
            "MCP servers found dead and restarted.",
        );
        for u in &setup.upstreams {
            let _ = writeln!(
                out,
                "model_runner:mcp_server_crashes_total{{server=\"{}\"}} {}",
                label(u.name()),
                u.crashes()
            );
        }
    }

    /// Rereads the configuration file: new and changed servers get fresh upstreams, unchanged ones keep
    /// running, removed and replaced ones are stopped.
    pub async fn reload(&self) -> Result<(), ConfigError> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        let config = McpConfig::load(path)?;
        let old = self.setup();
        let setup = build_setup(config, &old.upstreams, &self.changes);
        let retired: Vec<Arc<Upstream>> = old
            .upstreams
            .iter()
            .filter(|u| !setup.upstreams.iter().any(|n| Arc::ptr_eq(n, u)))
            .cloned()
            .collect();
        *write(&self.setup) = Arc::new(setup);
        for upstream in retired {
            upstream.stop().await;
        }
        self.changes.raise();
        tracing::info!(
            servers = self.server_names().len(),
            "MCP configuration reloaded"
        );
        Ok(())
    }

    /// Background duties: idle shutdown, long-lived restarts, reload on SIGHUP. Ends with the runtime.
    pub fn spawn_maintenance(self: &Arc<Self>) {
        let gateway = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(gateway) = gateway.upgrade() else {
                    return;
                };
                for upstream in gateway.setup().upstreams.clone() {
                    upstream.stop_if_idle().await;
                    upstream.keep_alive().await;
                }
            }
        });
        #[cfg(unix)]
        {
            let gateway = Arc::downgrade(self);
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                    return;
                };
                while hangups.recv().await.is_some() {
                    let Some(gateway) = gateway.upgrade() else {
                        return;
                    };
                    if let Err(e) = gateway.reload().await {
                        tracing::error!("MCP configuration not reloaded: {e}");
                    }
                }
            });
        }
    }

    /// Stops every server (their process groups included).
    pub async fn shutdown(&self) {
        let setup = self.setup();
        futures::future::join_all(setup.upstreams.iter().map(|u| u.stop())).await;
    }
}

/// Access check and rate limit, shared by upstream tools and the runner's own tools.
fn admit(
    setup: &Setup,
    caller: &Caller,
    server: &str,
    name: &str,
    rate_checked: bool,
) -> Result<(), McpError> {
    if !setup.policy.allows(caller, server, name) {
        return Err(McpError::Denied {
            client: caller.label().to_string(),
            tool: name.to_string(),
        });
    }
    if !rate_checked {
        setup
            .policy
            .check_rate(caller)
            .map_err(|retry_after| McpError::RateLimited {
                client: caller.label().to_string(),
                retry_after,
            })?;
    }
    Ok(())
}

fn build_setup(
    config: McpConfig,
    previous: &[Arc<Upstream>],
    changes: &Arc<ChangeSignal>,
) -> Setup {
    let redactor = Arc::new(Redactor::new(config.secret_values.clone()));
    let upstreams = config
        .servers
        .iter()
        .map(|server| {
            previous
                .iter()
                .find(|u| u.config == *server)
                .cloned()
                .unwrap_or_else(|| {
                    let changes = changes.clone();
                    Upstream::new(
                        server.clone(),
                        Breaker::new(config.breaker_failures, config.breaker_cooldown),
                        redactor.clone(),
                        Arc::new(move || changes.raise()),
                    )
                })
        })
        .collect();
    let caches = config
        .servers
        .iter()
        .filter_map(|s| {
            let ttl = s.cache_ttl?;
            Some((
                s.name.clone(),
                moka::future::Cache::builder()
                    .max_capacity(1024)
                    .time_to_live(ttl)
                    .build(),
            ))
        })
        .collect();
    Setup {
        policy: Policy::new(&config.clients),
        upstreams,
        redactor,
        caches,
        config,
    }
}

fn build_catalogue(upstreams: &[Arc<Upstream>]) -> Catalogue {
    let mut names = NameTable::default();
    names.reserve(discovery::FIND);
    names.reserve(discovery::CALL);
    names.reserve(code_mode::RUN_JS);
    let mut catalogue = Catalogue::default();
    for upstream in upstreams {
        for tool in upstream.known_tools().unwrap_or_default() {
            let name = names.assign(upstream.name(), &tool.name);
            debug_assert!(naming::is_valid(&name));
            let schema = Value::Object((*tool.input_schema).clone());
            let validator = match input_validator(&schema) {
                Ok(v) => Some(Arc::new(v)),
                Err(e) => {
                    tracing::warn!(server = %upstream.name(), tool = %tool.name, "input schema not checkable, arguments pass unchecked: {e}");
                    None
                }
            };
            catalogue
                .by_name
                .insert(name.clone(), catalogue.entries.len());
            catalogue.entries.push(Arc::new(Entry {
                name,
                server: upstream.name().to_string(),
                tool,
                validator,
                upstream: upstream.clone(),
            }));
        }
    }
    catalogue
}

/// Whether a schema holds a `$ref` to a place in its own document (`#...`), bounded by JSON's nesting.
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

/// A checker for a tool's `inputSchema`.
fn input_validator(
    schema: &Value,
) -> Result<jsonschema::Validator, jsonschema::ValidationError<'static>> {
    jsonschema::validator_for(schema)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema the Python SDK writes for a tree argument (`Node` refers to itself).
    fn tree_schema() -> Value {
        json!({"$defs": {"Node": {"properties": {"name": {"type": "string"},
            "children": {"default": [], "items": {"$ref": "#/$defs/Node"}, "type": "array"}},
            "required": ["name"], "type": "object"}},
            "properties": {"root": {"$ref": "#/$defs/Node"}}, "required": ["root"], "type": "object"})
    }

    #[test]
    fn recursive_schemas_check_arguments_all_the_way_down() {
        let validator = input_validator(&tree_schema()).expect("a recursive schema compiles");
        let valid = json!({"root": {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}});
        let problems: Vec<String> = validator
            .iter_errors(&valid)
            .map(|e| e.to_string())
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
        let invalid = json!({"root": {"name": "a", "children": [{"children": [{"name": 7}]}]}});
        assert!(validator.iter_errors(&invalid).count() >= 2);
    }
}
