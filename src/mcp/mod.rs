//! The MCP gateway: one place through which the runner reaches MCP servers (stdio commands, including
//! `docker run -i`, and streamable-HTTP URLs) and through which outside MCP clients reach them.
//!
//! `config` reads the `mcpServers` file; `upstream` is one server's lifecycle (lazy start, idle stop,
//! restart with backoff, circuit `breaker`); `gateway` is the catalogue of namespaced tools (`naming`) and
//! the call path every caller shares: access and rate limits (`policy`), argument checks against the
//! tool's schema, timeout, result cache, call log with secrets removed (`redact`) and metrics;
//! `discovery` ranks tools for the `mcp_find` meta-tool; `code_mode` runs `run_js` scripts whose
//! functions are the tools; `endpoint` serves it all as an MCP server (the
//! `/mcp` route and `model mcp` over stdio).

pub mod breaker;
pub mod code_mode;
pub mod config;
pub mod discovery;
pub mod endpoint;
pub mod gateway;
pub mod naming;
pub mod policy;
pub mod redact;
pub mod upstream;

use std::time::Duration;

pub use config::{ConfigError, McpConfig};
pub use gateway::{CallRecord, Gateway};
pub use policy::Caller;

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("no MCP tool named {0}")]
    UnknownTool(String),
    #[error("no MCP server labelled {0} is configured")]
    UnknownServer(String),
    #[error("client {client} may not call {tool}")]
    Denied { client: String, tool: String },
    #[error("client {client} is over its rate limit; retry in {:.1} s", retry_after.as_secs_f64())]
    RateLimited {
        client: String,
        retry_after: Duration,
    },
    #[error("invalid arguments for {tool}: {message}")]
    InvalidArguments { tool: String, message: String },
    #[error("MCP server {server} is unavailable: {reason}")]
    Unavailable { server: String, reason: String },
    #[error("{server}'s tool {tool} did not answer within {} s", after.as_secs_f64())]
    Timeout {
        server: String,
        tool: String,
        after: Duration,
    },
    #[error("MCP server {server} refused the call: {message}")]
    Protocol { server: String, message: String },
    #[error("MCP server {server} failed during the call: {message}")]
    Transport { server: String, message: String },
    #[error("{0}")]
    Script(String),
}

impl McpError {
    /// A short machine-readable kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            McpError::UnknownTool(_) => "unknown_tool",
            McpError::UnknownServer(_) => "unknown_server",
            McpError::Denied { .. } => "denied",
            McpError::RateLimited { .. } => "rate_limited",
            McpError::InvalidArguments { .. } => "invalid_arguments",
            McpError::Unavailable { .. } => "unavailable",
            McpError::Timeout { .. } => "timeout",
            McpError::Protocol { .. } => "protocol_error",
            McpError::Transport { .. } => "transport_error",
            McpError::Script(_) => "script_error",
        }
    }
}
