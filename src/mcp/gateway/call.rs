//! The one call path. Every tool call — from `/mcp`, `model mcp` over stdio, a chat request's tool
//! loop, a `run_js` script's functions, `mcp_call` — enters through `Gateway::call` with a
//! `CallContext` (who calls, within which servers, whether the transport already took the call from the
//! rate budget). From there: the gateway's meta-tools (`meta_tools`), the runner's own tools
//! (`local_tools`) or a server's tool (access check, rate limit, argument check, cache, the upstream
//! call with its timeout); every outcome ends as a `CallRecord` that `observe` logs and counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Map, Value, json};

use super::super::config::LOCAL_SERVER;
use super::super::policy::Caller;
use super::super::upstream::Requester;
use super::super::{code_mode, discovery, naming};
use super::{GATEWAY_SERVER, Gateway, McpError, Setup, dynamic};

/// Who takes a call from the caller's rate budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateBudget {
    /// The gateway takes it when it admits the call (stdio, a chat loop, a script's functions).
    Gateway,
    /// The transport already took it and answered "rate limited" itself (`/mcp`'s HTTP layer, 429).
    TakenByTransport,
}

/// Everything about a call that is not the tool's name and arguments.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// Whom access and rate limits apply to, and the `client` of the log line and metrics.
    pub caller: Caller,
    /// The servers a chat request named (its `server_label`s): what `mcp_find`, `mcp_call` and
    /// `run_js` may reach. `None`: every server the caller may use.
    pub scope: Option<Vec<String>>,
    pub rate_budget: RateBudget,
    /// The client session the call comes from, asked when a server elicits input during the call
    /// (`None`: no one can be asked, as in a chat request's tool loop).
    pub requester: Option<Requester>,
}

impl CallContext {
    /// A call the gateway admits in full, over every server `caller` may use.
    pub fn new(caller: Caller) -> Self {
        Self {
            caller,
            scope: None,
            rate_budget: RateBudget::Gateway,
            requester: None,
        }
    }

    /// The same call, coming from a client session that servers' elicitations may ask.
    pub fn from_session(mut self, requester: Requester) -> Self {
        self.requester = Some(requester);
        self
    }

    /// The same call, kept to `scope`'s servers (`None` leaves it unscoped).
    pub fn scoped(mut self, scope: Option<Vec<String>>) -> Self {
        self.scope = scope;
        self
    }

    /// The same call, already taken from the rate budget by its transport.
    pub fn rate_taken_by_transport(mut self) -> Self {
        self.rate_budget = RateBudget::TakenByTransport;
        self
    }

    /// Whether the scope lets the call reach `server`.
    pub(super) fn reaches(&self, server: &str) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|servers| servers.iter().any(|s| s == server))
    }

    /// Whether the scope lets the call reach the namespaced tool `name` (`server__tool`).
    pub(super) fn reaches_tool(&self, name: &str) -> bool {
        self.scope.as_ref().is_none_or(|servers| {
            servers
                .iter()
                .any(|s| name.starts_with(&format!("{s}{}", naming::SEPARATOR)))
        })
    }
}

/// What one call did: what the chat loop reports as `mcp_calls` and the call log writes.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub name: String,
    pub server: String,
    pub arguments: Value,
    pub result: Option<CallToolResult>,
    /// The gateway's error, as text with secrets removed.
    pub error: Option<String>,
    /// `McpError::kind` of that error.
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

impl Gateway {
    /// Calls `name` with `arguments` as `context` says: a namespaced server tool, a gateway tool
    /// (`mcp_find`, `mcp_call`, `run_js`) or one of the runner's own tools (`chat`, `list_models`, when
    /// a transport registered them). The one entry every caller uses; the record is logged and counted.
    pub async fn call(
        self: &Arc<Self>,
        context: &CallContext,
        name: &str,
        arguments: Value,
    ) -> CallRecord {
        match name {
            // Each records itself: run_js as one call of its own, mcp_call as the call it makes.
            code_mode::RUN_JS => self.run_js(context, arguments).await,
            dynamic::ADD | dynamic::REMOVE => {
                let attempt = self.begin();
                let outcome = if name == dynamic::ADD {
                    self.call_add(context, &arguments).await
                } else {
                    self.call_remove(context, &arguments).await
                };
                self.record(attempt, context, name, GATEWAY_SERVER, arguments, outcome)
            }
            discovery::CALL => self.call_through(context, arguments).await,
            discovery::FIND => {
                let attempt = self.begin();
                let outcome = self.call_find(context, &arguments).await;
                self.record(attempt, context, name, GATEWAY_SERVER, arguments, outcome)
            }
            _ => match self.local_models(context, name) {
                Some(models) => {
                    let attempt = self.begin();
                    let outcome = match admit(&attempt.setup, context, LOCAL_SERVER, name) {
                        Ok(()) => self.run_local_tool(models, name, &arguments).await,
                        Err(e) => Err(e),
                    };
                    self.record(attempt, context, name, LOCAL_SERVER, arguments, outcome)
                }
                None => self.call_server_tool(context, name, arguments).await,
            },
        }
    }

    /// A server's tool, by its namespaced name: the part of the call path all upstream calls share.
    pub(super) async fn call_server_tool(
        &self,
        context: &CallContext,
        name: &str,
        arguments: Value,
    ) -> CallRecord {
        let attempt = self.begin();
        let outcome = self
            .run_server_tool(&attempt.setup, context, name, &arguments)
            .await;
        // Looked up after the call, which may have listed the server's tools for the first time.
        let server = self
            .server_of(name)
            .or_else(|| self.session_entry(context, name).map(|e| e.server.clone()))
            .unwrap_or_else(|| GATEWAY_SERVER.to_string());
        self.record(attempt, context, name, &server, arguments, outcome)
    }

    async fn run_server_tool(
        &self,
        setup: &Setup,
        context: &CallContext,
        name: &str,
        arguments: &Value,
    ) -> Result<CallToolResult, McpError> {
        let server = name.split(naming::SEPARATOR).next();
        let catalogue = self.catalogue_of(server).await;
        let entry = catalogue
            .get(name)
            .cloned()
            .or_else(|| self.session_entry(context, name))
            .ok_or_else(|| McpError::UnknownTool(name.to_string()))?;
        admit(setup, context, &entry.server, &entry.name)?;
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
        entry.check_arguments(&arguments)?;
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
        let mut result = entry
            .upstream
            .call(&entry.tool.name, arguments, context.requester.clone())
            .await?;
        super::resources::namespace_result(&entry.server, &mut result);
        if let (Some(cache), Some(key)) = (cache, key)
            && result.is_error != Some(true)
        {
            cache.insert(key, result.clone()).await;
        }
        Ok(result)
    }

    /// A call begins: under the setup of this moment (whose redactor its record uses), timed from now.
    pub(super) fn begin(&self) -> Attempt {
        Attempt {
            setup: self.setup(),
            started: Instant::now(),
        }
    }

    /// The record of a finished call (errors redacted), logged and counted.
    pub(super) fn record(
        &self,
        attempt: Attempt,
        context: &CallContext,
        name: &str,
        server: &str,
        arguments: Value,
        outcome: Result<CallToolResult, McpError>,
    ) -> CallRecord {
        let Attempt { setup, started } = attempt;
        let (result, error, error_kind) = match outcome {
            Ok(result) => (Some(result), None, None),
            Err(e) => (
                None,
                Some(setup.redactor.redact(&e.to_string())),
                Some(e.kind()),
            ),
        };
        let record = CallRecord {
            name: name.to_string(),
            server: server.to_string(),
            arguments,
            result,
            error,
            error_kind,
            duration: started.elapsed(),
        };
        self.observe(&setup, &context.caller, &record);
        record
    }
}

/// A call under way, until `Gateway::record` ends it.
pub(super) struct Attempt {
    setup: Arc<Setup>,
    started: Instant,
}

/// Access check, then the rate limit unless the transport took it: the admission of server tools and
/// the runner's own tools alike.
fn admit(setup: &Setup, context: &CallContext, server: &str, name: &str) -> Result<(), McpError> {
    let caller = &context.caller;
    if !setup.policy.allows(caller, server, name) {
        return Err(McpError::Denied {
            client: caller.label().to_string(),
            tool: name.to_string(),
        });
    }
    match context.rate_budget {
        RateBudget::Gateway => take_rate(setup, caller),
        RateBudget::TakenByTransport => Ok(()),
    }
}

/// The admission of a request for a server's resources or prompts: the caller may use the server
/// (`what` names the request in the denial), then the rate limit unless the transport took it.
pub(super) fn admit_server(
    setup: &Setup,
    context: &CallContext,
    server: &str,
    what: &str,
) -> Result<(), McpError> {
    let caller = &context.caller;
    if !setup.policy.allows_server(caller, server) {
        return Err(McpError::Denied {
            client: caller.label().to_string(),
            tool: what.to_string(),
        });
    }
    match context.rate_budget {
        RateBudget::Gateway => take_rate(setup, caller),
        RateBudget::TakenByTransport => Ok(()),
    }
}

/// Takes one call from `caller`'s budget.
pub(super) fn take_rate(setup: &Setup, caller: &Caller) -> Result<(), McpError> {
    setup
        .policy
        .check_rate(caller)
        .map_err(|retry_after| McpError::RateLimited {
            client: caller.label().to_string(),
            retry_after,
        })
}
