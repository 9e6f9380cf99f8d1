//! Dynamic MCP: with `dynamicServers` on, a client session may start servers of the catalog for itself
//! (`mcp_add {name}`) and stop them (`mcp_remove {name}`). Only catalog entries run, installed as
//! `model mcp server add` would (pinned packages or a remote), never a command the caller writes; their
//! `${NAME}` references come from the gateway's secrets or the runner's environment, and an entry whose
//! secrets are not set is refused, naming them. The caller must be allowed the server by its client's
//! `servers`, as for configured ones; its tools (`server__tool`) are then offered to that session
//! only, and every call of them takes the one call path (access, rate, schema, log). A session holds at
//! most `MAX_PER_SESSION` of them; they stop when it ends (or with the gateway).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use rmcp::model::{CallToolResult, Tool};
use serde_json::{Value, json};

use super::super::breaker::Breaker;
use super::super::catalog::Catalog;
use super::super::config::LOCAL_SERVER;
use super::super::install::{self, InstallOptions};
use super::super::policy::Caller;
use super::super::upstream::{ListKind, Upstream};
use super::call::CallContext;
use super::catalogue::{Catalogue, Entry, build_catalogue};
use super::meta_tools::object_tool;
use super::{Gateway, McpError, lock};

/// The tool that starts a catalog server for the calling session.
pub const ADD: &str = "mcp_add";
/// The tool that stops one.
pub const REMOVE: &str = "mcp_remove";
/// Most servers one session may have started.
pub const MAX_PER_SESSION: usize = 4;

const ADD_DESCRIPTION: &str = "Start a server of the MCP catalog for this session by its catalog \
     name (e.g. \"time\"); its tools (name__tool) are offered once it runs.";
const REMOVE_DESCRIPTION: &str = "Stop a server this session started with mcp_add.";

/// The servers each live session started (a session is here from its lease's making to its end).
#[derive(Default)]
pub(super) struct SessionServers {
    by_session: HashMap<u64, Vec<Arc<Upstream>>>,
}

/// A server started for a session but not yet recorded as the session's: stopped if the add is
/// abandoned (its request cancelled, the session gone).
struct Pending(Option<Arc<Upstream>>);

impl Pending {
    /// The server, now the session's to stop.
    fn keep(mut self) -> Option<Arc<Upstream>> {
        self.0.take()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(upstream) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { upstream.stop().await });
        }
    }
}

/// Ends a session's servers when the last handle of its endpoint goes.
pub struct SessionLease {
    gateway: Weak<Gateway>,
    session: u64,
}

impl SessionLease {
    pub fn new(gateway: &Arc<Gateway>, session: u64) -> Self {
        lock(&gateway.dynamic)
            .by_session
            .entry(session)
            .or_default();
        Self {
            gateway: Arc::downgrade(gateway),
            session,
        }
    }
}

impl Drop for SessionLease {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.upgrade() {
            gateway.end_session(self.session);
        }
    }
}

fn name_schema(verb: &str) -> Value {
    json!({"type": "object", "properties": {"name": {"type": "string",
        "description": format!("The catalog name of the server to {verb}")}},
        "required": ["name"], "additionalProperties": false})
}

impl Gateway {
    /// Where the catalog is read from (the runner's home); without it `mcp_add` has no catalog but the
    /// shipped one.
    pub fn use_catalog_of(&self, home: PathBuf) {
        let _ = self.catalog_home.set(home);
    }

    /// The catalog: the shipped one, the home's, and `MODEL_RUNNER_MCP_CATALOGS`.
    fn catalog(&self) -> Result<Catalog, super::super::catalog::CatalogError> {
        let home = self
            .catalog_home
            .get()
            .cloned()
            .unwrap_or_else(std::env::temp_dir);
        Catalog::load(&home, &super::super::catalog::extra_from_env())
    }

    /// `mcp_add` and `mcp_remove`, when `dynamicServers` is on.
    pub fn dynamic_tools(&self) -> Vec<Tool> {
        if !self.setup().config.dynamic_servers {
            return Vec::new();
        }
        vec![
            object_tool(ADD, ADD_DESCRIPTION, name_schema("start"), false),
            object_tool(REMOVE, REMOVE_DESCRIPTION, name_schema("stop"), false),
        ]
    }

    /// The tools of the servers `session` started that `caller` may use.
    pub async fn session_tools(&self, session: u64, caller: &Caller) -> Vec<Arc<Entry>> {
        let setup = self.setup();
        self.session_catalogue(session)
            .entries()
            .iter()
            .filter(|e| setup.policy.allows(caller, &e.server, &e.name))
            .cloned()
            .collect()
    }

    /// A tool of a server the call's session started.
    pub(super) fn session_entry(&self, context: &CallContext, name: &str) -> Option<Arc<Entry>> {
        let session = context.requester.as_ref()?.session;
        self.session_catalogue(session).get(name).cloned()
    }

    fn session_catalogue(&self, session: u64) -> Catalogue {
        let upstreams = lock(&self.dynamic)
            .by_session
            .get(&session)
            .cloned()
            .unwrap_or_default();
        build_catalogue(&upstreams)
    }

    /// `mcp_add {name}`: starts the catalog server `name` for the calling session.
    pub(super) async fn call_add(
        &self,
        context: &CallContext,
        arguments: &Value,
    ) -> Result<CallToolResult, McpError> {
        let (session, wanted) = self.dynamic_request(context, ADD, arguments)?;
        let setup = self.setup();
        let refuse = |message: String| McpError::Refused(message);
        let catalog = self.catalog().map_err(|e| refuse(e.to_string()))?;
        let entry = catalog.find(wanted).map_err(|e| refuse(e.to_string()))?;
        let name = entry.short_name();
        if name == LOCAL_SERVER || setup.upstreams.iter().any(|u| u.name() == name) {
            return Err(refuse(format!(
                "{name} is a configured server of this gateway: use its tools as they are"
            )));
        }
        if !setup.policy.allows_server(&context.caller, &name) {
            return Err(McpError::Denied {
                client: context.caller.label().to_string(),
                tool: format!("{ADD} {name}"),
            });
        }
        {
            let dynamic = lock(&self.dynamic);
            let Some(started) = dynamic.by_session.get(&session) else {
                return Err(refuse("this session has ended".into()));
            };
            if started.iter().any(|u| u.name() == name) {
                return Err(refuse(format!("{name} already runs for this session")));
            }
            if started.len() >= MAX_PER_SESSION {
                return Err(refuse(format!(
                    "this session already runs {MAX_PER_SESSION} servers, the most it may: remove one first"
                )));
            }
        }
        let installed = install::definition(entry, &InstallOptions::by_reference(entry))
            .map_err(|e| refuse(format!("{name} cannot be started here: {e}")))?;
        let resolved = setup
            .config
            .resolve_server(&name, installed.definition)
            .map_err(|e| refuse(format!("{name} cannot be started: {e}")))?;
        // Values from the environment are secrets too: they must never reach a log.
        setup.redactor.learn(resolved.secret_values);
        let config = resolved.config;
        let changes = self.changes.clone();
        let upstream = Upstream::new(
            config,
            Breaker::new(setup.config.breaker_failures, setup.config.breaker_cooldown),
            setup.redactor.clone(),
            Arc::new(move |kind| changes.raise(kind)),
            Arc::new(super::local_tools::LocalSampler(self.local.clone())),
            self.tokens.as_ref(),
        );
        let pending = Pending(Some(upstream.clone()));
        let tools = upstream.tools().await?;
        let kept = {
            let mut dynamic = lock(&self.dynamic);
            // Bounded again, and the session still there: the start took a while.
            match dynamic.by_session.get_mut(&session) {
                Some(started)
                    if started.len() < MAX_PER_SESSION
                        && !started.iter().any(|u| u.name() == name) =>
                {
                    started.extend(pending.keep());
                    true
                }
                _ => false,
            }
        };
        if !kept {
            return Err(refuse(format!(
                "{name} was not added: the session changed meanwhile"
            )));
        }
        tracing::info!(server = %name, session, client = context.caller.label(), "catalog server started for a session");
        self.changes.raise(ListKind::Tools);
        let names: Vec<String> = self
            .session_tools(session, &context.caller)
            .await
            .iter()
            .filter(|e| e.server == name)
            .map(|e| e.name.clone())
            .collect();
        Ok(CallToolResult::structured(json!({
            "server": name,
            "catalogName": entry.server.name,
            "tools": names,
            "listed": tools.len(),
        })))
    }

    /// `mcp_remove {name}`: stops a server the calling session started.
    pub(super) async fn call_remove(
        &self,
        context: &CallContext,
        arguments: &Value,
    ) -> Result<CallToolResult, McpError> {
        let (session, wanted) = self.dynamic_request(context, REMOVE, arguments)?;
        // The label mcp_add answered with, or any name the catalog knows the server by.
        let label = match self
            .catalog()
            .ok()
            .and_then(|c| c.find(wanted).ok().map(|e| e.short_name()))
        {
            Some(short) => short,
            None => wanted.to_string(),
        };
        let removed = {
            let mut dynamic = lock(&self.dynamic);
            dynamic.by_session.get_mut(&session).and_then(|started| {
                let found = started
                    .iter()
                    .position(|u| u.name() == wanted || u.name() == label);
                found.map(|i| started.remove(i))
            })
        };
        let Some(upstream) = removed else {
            return Err(McpError::Refused(format!(
                "{wanted} is not a server this session added"
            )));
        };
        upstream.stop().await;
        self.changes.raise(ListKind::Tools);
        tracing::info!(server = %upstream.name(), session, "catalog server stopped for a session");
        Ok(CallToolResult::structured(
            json!({"server": upstream.name(), "removed": true}),
        ))
    }

    /// The session and `name` of an `mcp_add` or `mcp_remove`, once the gateway allows them at all.
    fn dynamic_request<'a>(
        &self,
        context: &CallContext,
        tool: &str,
        arguments: &'a Value,
    ) -> Result<(u64, &'a str), McpError> {
        if !self.setup().config.dynamic_servers {
            return Err(McpError::Refused(format!(
                "{tool} is off on this gateway: its configuration enables it with \"gateway\": {{\"dynamicServers\": true}}"
            )));
        }
        let session = context
            .requester
            .as_ref()
            .map(|r| r.session)
            .ok_or_else(|| {
                McpError::Refused(format!(
                    "{tool} needs an MCP client session (/mcp or model mcp)"
                ))
            })?;
        let name = arguments
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| McpError::InvalidArguments {
                tool: tool.to_string(),
                message: "name must be a catalog server's name".into(),
            })?;
        Ok((session, name.trim()))
    }

    /// Stops the servers `session` started (its endpoint is gone).
    pub(super) fn end_session(&self, session: u64) {
        let Some(upstreams) = lock(&self.dynamic).by_session.remove(&session) else {
            return;
        };
        if upstreams.is_empty() {
            return;
        }
        self.changes.raise(ListKind::Tools);
        tracing::info!(
            session,
            servers = upstreams.len(),
            "session ended: its catalog servers stop"
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    for upstream in upstreams {
                        upstream.stop().await;
                    }
                });
            }
            // No runtime left: the process is ending, and the servers' process groups with it.
            Err(_) => drop(upstreams),
        }
    }

    /// Stops every session's servers (the gateway shuts down).
    pub(super) async fn stop_session_servers(&self) {
        let all: Vec<Arc<Upstream>> = lock(&self.dynamic)
            .by_session
            .drain()
            .flat_map(|(_, u)| u)
            .collect();
        futures::future::join_all(all.iter().map(|u| u.stop())).await;
    }
}
