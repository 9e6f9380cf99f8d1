//! MCP clients' own configuration files, for `model mcp client connect | disconnect | ls`: where each
//! client keeps its servers (per OS) and the entry that makes it reach this gateway, over stdio
//! (`model mcp`) or streamable HTTP (`/mcp` with a bearer token). Edits merge into the client's file
//! (its other servers and settings stay), keep a backup of the previous file beside it, and are atomic.
//!
//! Shapes, as each client documents them: Claude Desktop `claude_desktop_config.json`
//! `{"mcpServers": {NAME: {"command", "args", "env"}}}` (stdio only); Cursor `~/.cursor/mcp.json`
//! `{"mcpServers": {NAME: {"command", "args", "env"} | {"url", "headers"}}}`; VS Code's user `mcp.json`
//! `{"servers": {NAME: {"type": "stdio", "command", "args", "env"} | {"type": "http", "url",
//! "headers"}}}`; Claude Code `~/.claude.json` `{"mcpServers": {NAME: {"type": "stdio" | "http", ...}}}`;
//! Codex `$CODEX_HOME/config.toml` (default `~/.codex/config.toml`) `[mcp_servers.NAME]` with
//! `command`, `args`, `env`, or `url` and `bearer_token_env_var` (Codex refuses a token written in its
//! file), edited as TOML by `codex`.

mod codex;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::config_edit::atomic_write;

/// The name of this gateway's entry in a client's file.
pub const ENTRY_NAME: &str = "model-runner";
/// The environment variable that carries a client's gateway token (`model mcp --token`'s default, and
/// where Codex reads its bearer token from).
pub const TOKEN_ENV: &str = "MODEL_RUNNER_MCP_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("unknown MCP client {0}; known: claude-desktop, cursor, vscode, claude-code, codex")]
    UnknownClient(String),
    #[error("{client} reaches MCP servers over stdio only; use --transport stdio")]
    StdioOnly { client: &'static str },
    #[error("cannot tell where {client} keeps its configuration here; pass --config-file")]
    NoDefaultPath { client: &'static str },
    #[error("{path} cannot be edited ({message}); edit it by hand or pass another --config-file")]
    Parse { path: PathBuf, message: String },
    #[error("cannot update {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A client this runner can connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpClient {
    ClaudeDesktop,
    Cursor,
    VsCode,
    ClaudeCode,
    Codex,
}

/// How the client reaches the gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// The client runs `command args` (`model mcp ...`) with `env`.
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
    /// The client posts to `url` (`.../mcp`) with `Authorization: Bearer token`.
    Http { url: String, token: String },
}

impl McpClient {
    pub const ALL: [McpClient; 5] = [
        McpClient::ClaudeDesktop,
        McpClient::Cursor,
        McpClient::VsCode,
        McpClient::ClaudeCode,
        McpClient::Codex,
    ];

    pub fn parse(name: &str) -> Result<Self, ClientConfigError> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name || (name == "code" && *c == McpClient::VsCode))
            .ok_or_else(|| ClientConfigError::UnknownClient(name.to_string()))
    }

    pub fn name(self) -> &'static str {
        match self {
            McpClient::ClaudeDesktop => "claude-desktop",
            McpClient::Cursor => "cursor",
            McpClient::VsCode => "vscode",
            McpClient::ClaudeCode => "claude-code",
            McpClient::Codex => "codex",
        }
    }

    /// Whether the client's file can name a streamable-HTTP server.
    pub fn supports_http(self) -> bool {
        !matches!(self, McpClient::ClaudeDesktop)
    }

    /// The client's user-level file on this OS (the user's config folder is `~/.config` on Linux,
    /// `~/Library/Application Support` on macOS, `%APPDATA%` on Windows).
    pub fn default_path(self) -> Result<PathBuf, ClientConfigError> {
        let missing = || ClientConfigError::NoDefaultPath {
            client: self.name(),
        };
        Ok(match self {
            McpClient::ClaudeDesktop => dirs::config_dir()
                .ok_or_else(missing)?
                .join("Claude")
                .join("claude_desktop_config.json"),
            McpClient::VsCode => dirs::config_dir()
                .ok_or_else(missing)?
                .join("Code")
                .join("User")
                .join("mcp.json"),
            McpClient::Cursor => dirs::home_dir()
                .ok_or_else(missing)?
                .join(".cursor")
                .join("mcp.json"),
            McpClient::ClaudeCode => dirs::home_dir().ok_or_else(missing)?.join(".claude.json"),
            McpClient::Codex => match std::env::var_os("CODEX_HOME").filter(|h| !h.is_empty()) {
                Some(home) => PathBuf::from(home).join("config.toml"),
                None => dirs::home_dir()
                    .ok_or_else(missing)?
                    .join(".codex")
                    .join("config.toml"),
            },
        })
    }

    fn servers_key(self) -> &'static str {
        match self {
            McpClient::VsCode => "servers",
            _ => "mcpServers",
        }
    }

    /// The entry this client's file gets for `link`.
    pub fn entry(self, link: &Link) -> Result<Value, ClientConfigError> {
        let typed = matches!(self, McpClient::VsCode | McpClient::ClaudeCode);
        let mut entry = match link {
            Link::Stdio { command, args, env } => {
                let mut entry = json!({"command": command, "args": args});
                if !env.is_empty() {
                    entry["env"] = json!(env);
                }
                if typed {
                    entry["type"] = json!("stdio");
                }
                entry
            }
            Link::Http { url, token } => {
                if !self.supports_http() {
                    return Err(ClientConfigError::StdioOnly {
                        client: self.name(),
                    });
                }
                if self == McpClient::Codex {
                    // The token stays out of the file: Codex reads it from the environment.
                    return Ok(json!({"bearer_token_env_var": TOKEN_ENV, "url": url}));
                }
                let mut entry =
                    json!({"url": url, "headers": {"Authorization": format!("Bearer {token}")}});
                if typed {
                    entry["type"] = json!("http");
                }
                entry
            }
        };
        if let Some(object) = entry.as_object_mut() {
            object.sort_keys();
        }
        Ok(entry)
    }

    /// Writes the gateway's entry into `path` (merged; the old file kept as `<file>.bak`). Returns the
    /// backup's path when there was a file to back up.
    pub fn connect(self, path: &Path, link: &Link) -> Result<Option<PathBuf>, ClientConfigError> {
        let entry = self.entry(link)?;
        if self == McpClient::Codex {
            return codex::connect(path, &entry);
        }
        let mut document = read(path)?;
        let servers = document
            .as_object_mut()
            .ok_or_else(|| ClientConfigError::Parse {
                path: path.to_owned(),
                message: "the top level is not an object".into(),
            })?
            .entry(self.servers_key())
            .or_insert_with(|| json!({}));
        if !servers.is_object() {
            return Err(ClientConfigError::Parse {
                path: path.to_owned(),
                message: format!("`{}` is not an object", self.servers_key()),
            });
        }
        servers[ENTRY_NAME] = entry;
        write_with_backup(path, &document)
    }

    /// Removes the gateway's entry from `path`; false when it had none.
    pub fn disconnect(self, path: &Path) -> Result<bool, ClientConfigError> {
        if !path.exists() {
            return Ok(false);
        }
        if self == McpClient::Codex {
            return codex::disconnect(path);
        }
        let mut document = read(path)?;
        let removed = document
            .get_mut(self.servers_key())
            .and_then(Value::as_object_mut)
            .and_then(|s| s.remove(ENTRY_NAME))
            .is_some();
        if removed {
            write_with_backup(path, &document)?;
        }
        Ok(removed)
    }

    /// The gateway's entry in `path`, if connected.
    pub fn connected(self, path: &Path) -> Result<Option<Value>, ClientConfigError> {
        if !path.exists() {
            return Ok(None);
        }
        if self == McpClient::Codex {
            return codex::connected(path);
        }
        Ok(read(path)?
            .get(self.servers_key())
            .and_then(|s| s.get(ENTRY_NAME))
            .cloned())
    }
}

fn read(path: &Path) -> Result<Value, ClientConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(json!({})),
        Ok(text) => serde_json::from_str(&text).map_err(|e| ClientConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(source) => Err(ClientConfigError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write_with_backup(path: &Path, document: &Value) -> Result<Option<PathBuf>, ClientConfigError> {
    let mut text = serde_json::to_string_pretty(document).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    write_text_with_backup(path, &text)
}

/// Writes `text` to `path` atomically, the previous file kept as `<file>.bak`; returns the backup's
/// path when there was a file to back up.
fn write_text_with_backup(path: &Path, text: &str) -> Result<Option<PathBuf>, ClientConfigError> {
    let io = |source| ClientConfigError::Io {
        path: path.to_owned(),
        source,
    };
    let backup = if path.exists() {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".bak");
        let backup = path.with_file_name(name);
        std::fs::copy(path, &backup).map_err(io)?;
        Some(backup)
    } else {
        None
    };
    atomic_write(path, text.as_bytes()).map_err(io)?;
    Ok(backup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_merges_keeps_a_backup_and_disconnect_removes_only_ours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mcp.json");
        std::fs::write(
            &path,
            r#"{"servers": {"other": {"type": "stdio", "command": "x"}}, "inputs": []}"#,
        )
        .expect("write");
        let link = Link::Http {
            url: "http://127.0.0.1:12434/mcp".into(),
            token: "tok-1".into(),
        };
        let backup = McpClient::VsCode
            .connect(&path, &link)
            .expect("connect")
            .expect("a backup");
        assert!(
            std::fs::read_to_string(backup)
                .expect("backup")
                .contains("other")
        );
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(written["servers"]["other"]["command"], "x");
        assert_eq!(written["inputs"], json!([]));
        assert_eq!(written["servers"][ENTRY_NAME]["type"], "http");
        assert_eq!(
            written["servers"][ENTRY_NAME]["headers"]["Authorization"],
            "Bearer tok-1"
        );
        assert!(McpClient::VsCode.disconnect(&path).expect("disconnect"));
        assert!(McpClient::VsCode.connected(&path).expect("read").is_none());
        assert!(!McpClient::VsCode.disconnect(&path).expect("again"));
    }

    #[test]
    fn claude_desktop_takes_stdio_only() {
        let link = Link::Http {
            url: "http://127.0.0.1/mcp".into(),
            token: "t".into(),
        };
        assert!(McpClient::ClaudeDesktop.entry(&link).is_err());
        let stdio = Link::Stdio {
            command: "/usr/bin/model".into(),
            args: vec!["mcp".into()],
            env: BTreeMap::new(),
        };
        let entry = McpClient::ClaudeDesktop.entry(&stdio).expect("stdio");
        assert_eq!(entry, json!({"args": ["mcp"], "command": "/usr/bin/model"}));
    }
}
