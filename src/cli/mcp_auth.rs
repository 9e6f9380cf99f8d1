//! `model mcp auth login | logout | ls | refresh`: authorize the gateway at remote MCP servers
//! (streamable HTTP or HTTP+SSE) that use OAuth 2.1 (the browser URL is printed, and opened when a
//! browser can be; the answer comes back to a one-shot loopback listener), revoke and delete the
//! grants, show which servers have one and when its access token expires, and renew an access token
//! now (under the same cross-process lock `model serve` refreshes under). No token is ever printed.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::mcp::Files;
use super::write_table;
use crate::mcp::McpConfig;
use crate::mcp::config::{ServerConfig, Transport};
use crate::mcp::oauth::{Credentials, Grant, LoginOptions, TokenStore, login, logout};
use crate::store::Store;

#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    #[command(flatten)]
    files: Files,
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum AuthCommand {
    /// Authorize the gateway at a remote server: prints (and tries to open) the URL to approve in a
    /// browser, then waits for the browser to come back.
    Login {
        /// The server's label in the gateway config.
        name: String,
        /// Only print the URL; do not try to open a browser.
        #[arg(long)]
        no_browser: bool,
        /// How long to wait for the browser, in seconds.
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        timeout: u64,
    },
    /// Revoke the server's tokens (when its authorization server can) and delete them.
    Logout { name: String },
    /// Renew the server's access token now if it expires soon (with --force, even if not), unless
    /// another process (a running `model serve`) renewed it meanwhile.
    Refresh {
        name: String,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remote servers and their grants: authorized or not, when the access token expires.
    #[command(alias = "status")]
    Ls {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(store: &Store, args: AuthArgs) -> Result<()> {
    let tokens = TokenStore::new(store.root());
    let config_path = args.files.config_path(store);
    match args.command {
        AuthCommand::Login {
            name,
            no_browser,
            timeout,
        } => {
            let config = McpConfig::load(&config_path)?;
            let server = remote_server(&config, &name)?;
            let Some(url) = remote_url(server) else {
                bail!("server {name} is not a remote (HTTP or SSE) server");
            };
            let settings = server.oauth.clone().unwrap_or_default();
            let options = LoginOptions {
                wait: Duration::from_secs(timeout.max(1)),
            };
            let grant = login(&tokens, &name, url, &settings, &options, |target| {
                println!("Open this URL in a browser to authorize model-runner for {name}:");
                println!("{target}");
                println!("Waiting up to {timeout} s for the browser to come back...");
                let _ = std::io::stdout().flush();
                if !no_browser {
                    open_browser(target.as_str());
                }
            })
            .await
            .with_context(|| format!("login to {name} failed"))?;
            println!(
                "Authorized {name} at {} ({}).",
                grant.issuer,
                expiry(&grant)
            );
            Ok(())
        }
        AuthCommand::Logout { name } => {
            let outcome = logout(&tokens, &name).await?;
            match (outcome.deleted, outcome.revoked) {
                (false, _) => println!("{name} had no saved authorization."),
                (true, true) => println!("Revoked and deleted {name}'s authorization."),
                (true, false) => println!("Deleted {name}'s authorization."),
            }
            Ok(())
        }
        AuthCommand::Ls { json } => list(&tokens, &config_path, json),
        AuthCommand::Refresh { name, force, json } => {
            let config = McpConfig::load(&config_path)?;
            let server = remote_server(&config, &name)?;
            let Some(url) = remote_url(server) else {
                bail!("server {name} is not a remote (HTTP or SSE) server");
            };
            let grant = Credentials::new(tokens, &name, url)
                .renew_now(force)
                .await?;
            if json {
                let entry = json!({
                    "server": name,
                    "expires_at": grant.expires_at,
                    "obtained_at": grant.obtained_at,
                });
                println!("{entry}");
            } else {
                println!("{name}: {}.", expiry(&grant));
            }
            Ok(())
        }
    }
}

/// A remote server's URL (streamable HTTP or HTTP+SSE); `None` for a local one.
fn remote_url(server: &ServerConfig) -> Option<&str> {
    match &server.transport {
        Transport::Http { url, .. } | Transport::Sse { url, .. } => Some(url),
        _ => None,
    }
}

/// The named server of the config, if it is a remote one.
fn remote_server<'a>(config: &'a McpConfig, name: &str) -> Result<&'a ServerConfig> {
    config
        .servers
        .iter()
        .find(|s| s.name == name)
        .with_context(|| format!("no MCP server labelled {name} is configured (or it is disabled)"))
}

/// The remote servers of the config and every server with a saved grant.
fn list(tokens: &TokenStore, config_path: &std::path::Path, json: bool) -> Result<()> {
    let mut rows: Vec<(String, Option<String>)> = Vec::new();
    if let Ok(config) = McpConfig::load(config_path) {
        for server in &config.servers {
            if let Some(url) = remote_url(server) {
                rows.push((server.name.clone(), Some(url.to_string())));
            }
        }
    }
    for name in tokens.servers()? {
        if !rows.iter().any(|(n, _)| *n == name) {
            rows.push((name, None));
        }
    }
    let mut entries = Vec::new();
    for (name, url) in rows {
        let grant = tokens.load(&name);
        let (state, grant) = match grant {
            Ok(Some(grant)) => (
                if grant.needs_refresh() && grant.refresh_token.is_none() {
                    "expired"
                } else {
                    "authorized"
                },
                Some(grant),
            ),
            Ok(None) => ("not logged in", None),
            Err(_) => ("unreadable", None),
        };
        entries.push((name, url, state, grant));
    }
    if json {
        let list: Vec<_> = entries
            .iter()
            .map(|(name, url, state, grant)| {
                json!({
                    "server": name,
                    "url": url.as_deref().or(grant.as_ref().map(|g| g.server_url.as_str())),
                    "state": state,
                    "issuer": grant.as_ref().map(|g| &g.issuer),
                    "expires_at": grant.as_ref().and_then(|g| g.expires_at),
                    "refreshable": grant.as_ref().map(|g| g.refresh_token.is_some()),
                    "scope": grant.as_ref().and_then(|g| g.scope.as_ref()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let mut table = vec![["SERVER", "STATE", "EXPIRES", "ISSUER"].map(String::from)];
    for (name, _, state, grant) in &entries {
        table.push([
            name.clone(),
            state.to_string(),
            grant.as_ref().map(expiry).unwrap_or_default(),
            grant.as_ref().map(|g| g.issuer.clone()).unwrap_or_default(),
        ]);
    }
    write_table(&mut std::io::stdout().lock(), &table)
}

/// When the access token expires, in words, and whether it can be refreshed.
fn expiry(grant: &Grant) -> String {
    let refresh = if grant.refresh_token.is_some() {
        ", refreshable"
    } else {
        ""
    };
    match grant.expires_at {
        None => format!("no expiry given{refresh}"),
        Some(at) => {
            let left = at - crate::mcp::oauth::store::now();
            let when = chrono::DateTime::from_timestamp(at, 0)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default();
            if left > 0 {
                format!("expires {when}, in {left} s{refresh}")
            } else {
                format!("expired {when}{refresh}")
            }
        }
    }
}

/// Tries to open `url` in the user's browser; failing is fine (the URL is printed).
fn open_browser(url: &str) {
    let opener: &[&str] = if cfg!(target_os = "macos") {
        &["open"]
    } else if cfg!(windows) {
        &["rundll32", "url.dll,FileProtocolHandler"]
    } else {
        &["xdg-open"]
    };
    let spawned = std::process::Command::new(opener[0])
        .args(&opener[1..])
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        tracing::debug!("cannot open a browser ({}): {e}", opener[0]);
    }
}
