//! The MCP gateway: one place through which the runner reaches MCP servers (stdio commands, including
//! `docker run -i`, streamable-HTTP URLs and older HTTP+SSE ones) and through which outside MCP clients
//! reach them.
//!
//! `config` reads the `mcpServers` file; `upstream` is one server's lifecycle (lazy start, idle stop,
//! restart with backoff, circuit `breaker`); `gateway` is the catalogue of namespaced tools (`naming`) and
//! the one call path every caller shares, `Gateway::call(&CallContext, name, arguments)`: access and
//! rate limits (`policy`), argument checks against the tool's schema, timeout, result cache, call log
//! with secrets removed (`redact`) and metrics, for server tools, the meta-tools and the runner's own
//! tools alike; `discovery` ranks tools for the `mcp_find` meta-tool; `code_mode` runs `run_js`
//! scripts whose functions are the tools; `endpoint` serves it all as an MCP server (the `/mcp` route
//! and `model mcp` over stdio).
//!
//! Around the gateway: `catalog` (servers one can install, in the MCP Registry's `server.json` format),
//! `install` (a catalog entry to a server definition: pinned `npx`/`uvx`/sandboxed `docker run`, or a
//! remote), `config_edit` (atomic edits of the gateway's config file), `client_config` (the MCP
//! clients' own files, pointed at this gateway) and `oauth` (OAuth 2.1 for remote servers: login,
//! encrypted grants, and the bearer token the upstream HTTP transport attaches).

pub mod breaker;
pub mod catalog;
pub mod client_config;
pub mod code_mode;
pub mod config;
pub mod config_edit;
pub mod discovery;
pub mod endpoint;
pub mod gateway;
pub mod install;
pub mod naming;
pub mod oauth;
pub mod policy;
pub mod redact;
pub mod upstream;

use std::time::Duration;

pub use config::{ConfigError, McpConfig};
pub use gateway::{
    CallContext, CallRecord, Gateway, LocalModels, LocalToolError, RateBudget, TokenAccount,
};
pub use policy::Caller;

/// Why the gateway did not carry out a call. The variants fall into the classes an API maps to its
/// statuses: the caller asked for something that is not there or not well-formed (`UnknownTool`,
/// `UnknownServer`, `UnknownResource`, `UnknownPrompt`, `InvalidArguments`, `Script`), is not allowed (`Denied`), is over its budget
/// (`RateLimited`, `TokensSpent`, with when to retry), or the server behind the tool failed (`Unavailable`,
/// `Protocol`, `Transport`, `Oversize`) or did not answer in time (`Timeout`).
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("no MCP tool named {0}")]
    UnknownTool(String),
    #[error("no MCP server labelled {0} is configured")]
    UnknownServer(String),
    /// A resource URI that is not the gateway's (`model-runner://SERVER/...`) or names no server.
    #[error("no MCP resource {0} behind this gateway")]
    UnknownResource(String),
    #[error("no MCP prompt named {0}")]
    UnknownPrompt(String),
    /// The caller's client may not use the tool (its `servers` or `tools` do not name it).
    #[error("client {client} may not call {tool}")]
    Denied { client: String, tool: String },
    /// The caller's budget is spent; `retry_after` says when the next call is allowed.
    #[error("client {client} is over its rate limit; retry in {:.1} s", retry_after.as_secs_f64())]
    RateLimited {
        client: String,
        retry_after: Duration,
    },
    /// The caller's model tokens of the day (`tokensPerDay`) are spent; refused until UTC midnight.
    #[error("client {client} has spent its {quota} model tokens of the day; retry in {} s (after midnight UTC)", retry_after.as_secs())]
    TokensSpent {
        client: String,
        quota: u64,
        retry_after: Duration,
    },
    #[error("invalid arguments for {tool}: {message}")]
    InvalidArguments { tool: String, message: String },
    /// The server could not be started or reached, or its circuit breaker is open.
    #[error("MCP server {server} is unavailable: {reason}")]
    Unavailable { server: String, reason: String },
    /// The server took longer than its `timeout` (`tool` names the tool, or the request: `resources/read`).
    #[error("{server}'s {tool} did not answer within {} s", after.as_secs_f64())]
    Timeout {
        server: String,
        tool: String,
        after: Duration,
    },
    /// The server answered the call with a JSON-RPC error.
    #[error("MCP server {server} refused the call: {message}")]
    Protocol { server: String, message: String },
    /// The server's answer is larger than the gateway relays.
    #[error("MCP server {server}'s answer to {what} is larger than {limit} bytes")]
    Oversize {
        server: String,
        what: String,
        limit: usize,
    },
    /// The connection to the server failed during the call.
    #[error("MCP server {server} failed during the call: {message}")]
    Transport { server: String, message: String },
    /// The gateway will not do what was asked (a Dynamic MCP request it does not allow), and says why.
    #[error("{0}")]
    Refused(String),
    /// A `run_js` script failed (a syntax or runtime error, or a limit it ran into).
    #[error("{0}")]
    Script(String),
}

impl McpError {
    /// A short machine-readable kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            McpError::UnknownTool(_) => "unknown_tool",
            McpError::UnknownServer(_) => "unknown_server",
            McpError::UnknownResource(_) => "unknown_resource",
            McpError::UnknownPrompt(_) => "unknown_prompt",
            McpError::Oversize { .. } => "oversize",
            McpError::Denied { .. } => "denied",
            McpError::RateLimited { .. } => "rate_limited",
            McpError::TokensSpent { .. } => "tokens_spent",
            McpError::Refused(_) => "refused",
            McpError::InvalidArguments { .. } => "invalid_arguments",
            McpError::Unavailable { .. } => "unavailable",
            McpError::Timeout { .. } => "timeout",
            McpError::Protocol { .. } => "protocol_error",
            McpError::Transport { .. } => "transport_error",
            McpError::Script(_) => "script_error",
        }
    }
}
