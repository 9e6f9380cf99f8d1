//! The gateway's configuration file: Claude Desktop's and Cursor's `mcpServers` shape (a `command` with
//! `args`/`env`, or a `url` with `headers`), per-server options, and a `gateway` section with clients and
//! secrets. JSON or YAML; `${NAME}` in an env value or header is a secret of that name, else an
//! environment variable, resolved when the file is loaded so that a missing one is an error at start.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read MCP config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid MCP config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("MCP config: {0}")]
    Invalid(String),
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    mcp_servers: BTreeMap<String, RawServer>,
    #[serde(default)]
    gateway: RawGateway,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawServer {
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Claude Desktop's `type` (`stdio`, `http`, `streamable-http`, `sse`; also spelt `transport`);
    /// told from command/url when absent.
    #[serde(rename = "type", alias = "transport")]
    kind: Option<String>,
    #[serde(default)]
    disabled: bool,
    /// Only these tools are offered (all when absent).
    tools: Option<Vec<String>>,
    call_timeout_secs: Option<f64>,
    idle_timeout_secs: Option<f64>,
    #[serde(default)]
    long_lived: bool,
    cache_ttl_secs: Option<f64>,
    /// Answer the server's sampling requests with this local model (off when absent).
    sampling: Option<RawSampling>,
    /// The OAuth client for a remote server (`model mcp auth login`); optional even then.
    oauth: Option<RawOAuth>,
    /// The catalog entry the server was installed from (`model mcp server add`); informational.
    #[serde(default)]
    #[allow(dead_code)]
    catalog: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawGateway {
    #[serde(default)]
    clients: Vec<RawClient>,
    #[serde(default)]
    secrets: BTreeMap<String, RawSecret>,
    max_rounds: Option<usize>,
    breaker_failures: Option<u32>,
    breaker_cooldown_secs: Option<f64>,
    /// Dynamic MCP: sessions may start catalog servers with `mcp_add` (off when absent).
    #[serde(default)]
    dynamic_servers: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawClient {
    name: String,
    token: String,
    /// Servers this client may use; `["*"]` or absent: all.
    servers: Option<Vec<String>>,
    /// Namespaced tools (`server__tool`) this client may call; absent: every tool of its servers.
    tools: Option<Vec<String>>,
    rate_limit: Option<RawRateLimit>,
    /// Tool calls allowed per UTC day (the guide's daily quota), beside the per-minute rate.
    calls_per_day: Option<u32>,
    /// Model tokens (prompt + completion) this client's token may spend per UTC day at the inference APIs.
    tokens_per_day: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRateLimit {
    per_minute: u32,
    burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSecret {
    env: Option<String>,
    file: Option<PathBuf>,
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawOAuth {
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSampling {
    model: String,
    max_tokens: Option<u32>,
}

/// Whether and how a server's `sampling/createMessage` requests are answered by a local model.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingPolicy {
    /// The model that answers (a reference of the store, e.g. `ai/smollm2`).
    pub model: String,
    /// The most tokens one answer may have, whatever the server asks for.
    pub max_tokens: u32,
}

/// `sampling.maxTokens` when absent, and its ceiling.
const DEFAULT_SAMPLING_TOKENS: u32 = 512;
const MAX_SAMPLING_TOKENS: u32 = 8192;

/// How the gateway reaches a server.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<PathBuf>,
    },
    /// Streamable HTTP. With `sse_fallback` (no `type`, or `http`), a server that answers the first
    /// POST with 400, 404 or 405 is tried with the older HTTP+SSE transport, as the spec's
    /// backwards-compatibility section says.
    Http {
        url: String,
        headers: BTreeMap<String, String>,
        sse_fallback: bool,
    },
    /// The older HTTP+SSE transport (protocol 2024-11-05), asked for with `"type": "sse"`.
    Sse {
        url: String,
        headers: BTreeMap<String, String>,
    },
}

/// One configured MCP server, secrets resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub name: String,
    pub transport: Transport,
    pub tools: Option<Vec<String>>,
    pub call_timeout: Duration,
    pub idle_timeout: Duration,
    pub long_lived: bool,
    pub cache_ttl: Option<Duration>,
    /// Off (`None`) unless the server's config names a model for its sampling requests.
    pub sampling: Option<SamplingPolicy>,
    /// The OAuth client settings of a remote server (its `oauth`), when given.
    pub oauth: Option<crate::mcp::oauth::ClientSettings>,
}

/// A gateway client: who a bearer token stands for and what it may do.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    pub name: String,
    pub token: String,
    pub servers: Option<Vec<String>>,
    pub tools: Option<Vec<String>>,
    pub rate_limit: Option<RateLimit>,
    /// Tool calls allowed per UTC day; None: no daily quota.
    pub calls_per_day: Option<u32>,
    /// Model tokens (prompt + completion) allowed per UTC day at the inference APIs; None: no quota.
    pub tokens_per_day: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct McpConfig {
    pub servers: Vec<ServerConfig>,
    pub clients: Vec<ClientConfig>,
    /// Every resolved secret value, for redaction.
    pub secret_values: Vec<String>,
    pub max_rounds: usize,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    /// Whether sessions may start catalog servers for themselves (`mcp_add`, `dynamicServers`).
    pub dynamic_servers: bool,
    /// The gateway's named secrets, resolved: what a server added at run time refers to.
    pub secrets: NamedSecrets,
}

/// Secret values by name, never printed.
#[derive(Clone, Default, PartialEq)]
pub struct NamedSecrets(BTreeMap<String, String>);

impl std::fmt::Debug for NamedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            clients: Vec::new(),
            secret_values: Vec::new(),
            max_rounds: DEFAULT_MAX_ROUNDS,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            dynamic_servers: false,
            secrets: NamedSecrets::default(),
        }
    }
}

pub const DEFAULT_MAX_ROUNDS: usize = 8;
/// The pseudo-server of the runner's own tools (`chat`, `list_models`): what a client's `servers` names
/// to be allowed them. No configured server may take the name.
pub const LOCAL_SERVER: &str = "model-runner";
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

impl McpConfig {
    /// Reads a JSON or YAML file (by extension; content that starts with `{` is JSON either way).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) && !text.trim_start().starts_with('{');
        let raw: RawConfig = if yaml {
            yaml_serde::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?
        } else {
            let de = &mut serde_json::Deserializer::from_str(&text);
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: format!("{} at {}", e.inner(), e.path()),
            })?
        };
        let base = path.parent().unwrap_or(Path::new("."));
        resolve(raw, base, &|name| std::env::var(name).ok())
    }
}

impl McpConfig {
    /// A server definition (the `mcpServers` shape) added at run time, resolved as the file's servers
    /// are: `${NAME}` from the gateway's secrets, else the runner's environment; a reference to neither
    /// is an error that names it.
    pub fn resolve_server(
        &self,
        name: &str,
        definition: serde_json::Value,
    ) -> Result<ResolvedServer, ConfigError> {
        let server: RawServer = serde_json::from_value(definition)
            .map_err(|e| ConfigError::Invalid(format!("server {name}: {e}")))?;
        let raw = RawConfig {
            mcp_servers: BTreeMap::from([(name.to_string(), server)]),
            gateway: RawGateway {
                secrets: self
                    .secrets
                    .0
                    .iter()
                    .map(|(k, v)| {
                        let secret = RawSecret {
                            env: None,
                            file: None,
                            value: Some(v.clone()),
                        };
                        (k.clone(), secret)
                    })
                    .collect(),
                ..RawGateway::default()
            },
        };
        let mut resolved = resolve(raw, Path::new("."), &|name| std::env::var(name).ok())?;
        let config = resolved
            .servers
            .pop()
            .ok_or_else(|| ConfigError::Invalid(format!("server {name} is disabled")))?;
        Ok(ResolvedServer {
            config,
            secret_values: resolved.secret_values,
        })
    }
}

/// A server resolved at run time, with the secret values its `${NAME}` references brought in (from the
/// gateway's secrets or the environment), which the log redactor must learn.
pub struct ResolvedServer {
    pub config: ServerConfig,
    pub secret_values: Vec<String>,
}

impl std::fmt::Debug for ResolvedServer {
    /// The values never print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedServer")
            .field("config", &self.config)
            .field("secret_values", &self.secret_values.len())
            .finish()
    }
}

/// Checks that a configuration document (as `config_edit` is about to write it) is one this module
/// reads: the shape, server names and transports, durations. `${NAME}` references are not looked up,
/// since the values may be set only where the server runs.
pub fn check_document(document: &serde_json::Value, base: &Path) -> Result<(), ConfigError> {
    let raw: RawConfig = serde_path_to_error::deserialize(document.clone())
        .map_err(|e| ConfigError::Invalid(format!("{} at {}", e.inner(), e.path())))?;
    resolve(raw, base, &|_| Some("unresolved-reference".to_string())).map(|_| ())
}

fn seconds(value: Option<f64>, default: Duration, field: &str) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(ConfigError::Invalid(format!(
            "{field} must be a positive number of seconds, got {s}"
        ))),
    }
}

fn resolve(
    raw: RawConfig,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<McpConfig, ConfigError> {
    let mut secrets: HashMap<String, String> = HashMap::new();
    for (name, secret) in &raw.gateway.secrets {
        let value = match (&secret.env, &secret.file, &secret.value) {
            (Some(var), None, None) => env(var).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "secret {name}: environment variable {var} is not set"
                ))
            })?,
            (None, Some(file), None) => {
                let file = base.join(file);
                std::fs::read_to_string(&file)
                    .map_err(|e| {
                        ConfigError::Invalid(format!(
                            "secret {name}: cannot read {}: {e}",
                            file.display()
                        ))
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string()
            }
            (None, None, Some(value)) => value.clone(),
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "secret {name} needs exactly one of env, file, value"
                )));
            }
        };
        secrets.insert(name.clone(), value);
    }
    // Every value an `${NAME}` brought in (a secret or a plain environment variable) is redacted alike.
    let interpolated = std::cell::RefCell::new(Vec::<String>::new());
    let lookup = |name: &str| {
        let value = secrets.get(name).cloned().or_else(|| env(name))?;
        interpolated.borrow_mut().push(value.clone());
        Some(value)
    };
    let mut servers = Vec::new();
    for (name, server) in raw.mcp_servers {
        if server.disabled {
            continue;
        }
        if name.is_empty() {
            return Err(ConfigError::Invalid("a server name is empty".into()));
        }
        if name == LOCAL_SERVER {
            return Err(ConfigError::Invalid(format!(
                "the server name {LOCAL_SERVER} is reserved for the runner's own tools"
            )));
        }
        let interpolate_map = |map: &BTreeMap<String, String>, what: &str| {
            map.iter()
                .map(|(k, v)| {
                    interpolate(v, &lookup)
                        .map(|v| (k.clone(), v))
                        .map_err(|missing| {
                            ConfigError::Invalid(format!(
                                "server {name}: {what} {k} refers to ${{{missing}}}, which is neither a secret nor set in the environment"
                            ))
                        })
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
        };
        let kind = server.kind.as_deref().unwrap_or("");
        let transport = match (&server.command, &server.url) {
            (Some(command), None) if matches!(kind, "" | "stdio") => Transport::Stdio {
                command: command.clone(),
                args: server.args.clone(),
                env: interpolate_map(&server.env, "env")?,
                cwd: server.cwd.clone(),
            },
            (None, Some(url))
                if matches!(kind, "" | "http" | "streamable-http" | "streamableHttp") =>
            {
                Transport::Http {
                    url: url.clone(),
                    headers: interpolate_map(&server.headers, "header")?,
                    sse_fallback: matches!(kind, "" | "http"),
                }
            }
            (None, Some(url)) if kind == "sse" => Transport::Sse {
                url: url.clone(),
                headers: interpolate_map(&server.headers, "header")?,
            },
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "server {name} needs either a command or a url"
                )));
            }
        };
        servers.push(ServerConfig {
            transport,
            tools: server.tools,
            call_timeout: seconds(
                server.call_timeout_secs,
                DEFAULT_CALL_TIMEOUT,
                "callTimeoutSecs",
            )?,
            idle_timeout: seconds(
                server.idle_timeout_secs,
                DEFAULT_IDLE_TIMEOUT,
                "idleTimeoutSecs",
            )?,
            long_lived: server.long_lived,
            sampling: server
                .sampling
                .map(|s| {
                    let max_tokens = s.max_tokens.unwrap_or(DEFAULT_SAMPLING_TOKENS);
                    if s.model.trim().is_empty() || !(1..=MAX_SAMPLING_TOKENS).contains(&max_tokens) {
                        return Err(ConfigError::Invalid(format!(
                            "server {name}: sampling needs a model and maxTokens from 1 to {MAX_SAMPLING_TOKENS}"
                        )));
                    }
                    Ok(SamplingPolicy {
                        model: s.model,
                        max_tokens,
                    })
                })
                .transpose()?,
            cache_ttl: server
                .cache_ttl_secs
                .map(|s| seconds(Some(s), Duration::ZERO, "cacheTtlSecs"))
                .transpose()?,
            oauth: server
                .oauth
                .map(|o| {
                    let client_secret = o
                        .client_secret
                        .map(|secret| {
                            interpolate(&secret, &lookup).map_err(|missing| {
                                ConfigError::Invalid(format!(
                                    "server {name}: oauth.clientSecret refers to ${{{missing}}}, which is neither a secret nor set in the environment"
                                ))
                            })
                        })
                        .transpose()?;
                    if client_secret.is_some() && o.client_id.is_none() {
                        return Err(ConfigError::Invalid(format!(
                            "server {name}: oauth.clientSecret needs an oauth.clientId"
                        )));
                    }
                    Ok(crate::mcp::oauth::ClientSettings {
                        client_id: o.client_id,
                        client_secret,
                        scope: o.scope,
                    })
                })
                .transpose()?,
            name,
        });
    }
    let mut clients = Vec::new();
    for client in raw.gateway.clients {
        let token = interpolate(&client.token, &lookup).map_err(|missing| {
            ConfigError::Invalid(format!(
                "client {}: token refers to ${{{missing}}}, which is not set",
                client.name
            ))
        })?;
        if token.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "client {} has an empty token",
                client.name
            )));
        }
        let rate_limit = match client.rate_limit {
            None => None,
            Some(r) if r.per_minute == 0 => {
                return Err(ConfigError::Invalid(format!(
                    "client {}: rateLimit.perMinute must be at least 1",
                    client.name
                )));
            }
            Some(r) => Some(RateLimit {
                per_minute: r.per_minute,
                burst: r.burst.unwrap_or(r.per_minute).max(1),
            }),
        };
        if client.calls_per_day == Some(0) || client.tokens_per_day == Some(0) {
            let key = if client.calls_per_day == Some(0) {
                "callsPerDay"
            } else {
                "tokensPerDay"
            };
            return Err(ConfigError::Invalid(format!(
                "client {}: {key} must be at least 1",
                client.name
            )));
        }
        clients.push(ClientConfig {
            name: client.name,
            token,
            servers: client.servers,
            tools: client.tools,
            rate_limit,
            calls_per_day: client.calls_per_day,
            tokens_per_day: client.tokens_per_day,
        });
    }
    let named_secrets = NamedSecrets(secrets.clone().into_iter().collect());
    let mut secret_values: Vec<String> = secrets.into_values().collect();
    secret_values.extend(interpolated.into_inner());
    secret_values.extend(clients.iter().map(|c| c.token.clone()));
    secret_values.extend(
        servers
            .iter()
            .filter_map(|s| s.oauth.as_ref()?.client_secret.clone()),
    );
    secret_values.retain(|s| s.len() >= 4);
    secret_values.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secret_values.dedup();
    Ok(McpConfig {
        servers,
        clients,
        secret_values,
        max_rounds: raw.gateway.max_rounds.unwrap_or(DEFAULT_MAX_ROUNDS).max(1),
        breaker_failures: raw.gateway.breaker_failures.unwrap_or(5).max(1),
        breaker_cooldown: seconds(
            raw.gateway.breaker_cooldown_secs,
            Duration::from_secs(30),
            "breakerCooldownSecs",
        )?,
        dynamic_servers: raw.gateway.dynamic_servers,
        secrets: named_secrets,
    })
}

/// Replaces `${NAME}` with its value; the error is the first name that has none.
fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = &rest[start + 2..start + 2 + len];
        out.push_str(&lookup(name).ok_or_else(|| name.to_string())?);
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str, env: &[(&str, &str)]) -> Result<McpConfig, ConfigError> {
        let raw: RawConfig = serde_json::from_str(json).expect("test JSON");
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(raw, Path::new("."), &|k| env.get(k).cloned())
    }

    #[test]
    fn run_time_servers_resolve_secrets_and_name_missing_ones() {
        let config = parse(
            r#"{"gateway": {"secrets": {"WEB_KEY": {"value": "k3y-value"}}, "dynamicServers": true}}"#,
            &[],
        )
        .expect("valid config");
        assert!(config.dynamic_servers);
        let web = config
            .resolve_server(
                "web",
                serde_json::json!({"url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "Bearer ${WEB_KEY}"}}),
            )
            .expect("resolved");
        assert!(web.secret_values.iter().any(|v| v == "k3y-value"));
        let web = web.config;
        assert!(
            matches!(&web.transport, Transport::Http { headers, .. } if headers["Authorization"] == "Bearer k3y-value")
        );
        let error = config
            .resolve_server(
                "gh",
                serde_json::json!({"url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "Bearer ${MODEL_RUNNER_TEST_UNSET_TOKEN}"}}),
            )
            .expect_err("an unset secret");
        assert!(
            error.to_string().contains("MODEL_RUNNER_TEST_UNSET_TOKEN"),
            "{error}"
        );
        assert!(
            !format!("{:?}", config.secrets).contains("k3y-value"),
            "named secrets are not printed"
        );
        assert!(!McpConfig::default().dynamic_servers, "off by default");
    }

    #[test]
    fn claude_desktop_shape_with_secrets() {
        let config = parse(
            r#"{"mcpServers": {
                "fs": {"command": "npx", "args": ["-y", "server-filesystem", "/tmp"], "env": {"TOKEN": "${API_TOKEN}"}},
                "web": {"url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "Bearer ${HTTP_TOKEN}"}, "cacheTtlSecs": 5},
                "off": {"command": "x", "disabled": true}
              },
              "gateway": {"secrets": {"API_TOKEN": {"value": "s3cret-value"}},
                          "clients": [{"name": "cursor", "token": "tok-123", "servers": ["fs"],
                                       "rateLimit": {"perMinute": 10}, "callsPerDay": 500,
                                       "tokensPerDay": 100000}]}}"#,
            &[("HTTP_TOKEN", "from-env")],
        )
        .expect("valid config");
        assert_eq!(config.servers.len(), 2);
        let fs = config.servers.iter().find(|s| s.name == "fs").expect("fs");
        match &fs.transport {
            Transport::Stdio { env, args, .. } => {
                assert_eq!(env["TOKEN"], "s3cret-value");
                assert_eq!(args.len(), 3);
            }
            other => panic!("fs is stdio, got {other:?}"),
        }
        let web = config
            .servers
            .iter()
            .find(|s| s.name == "web")
            .expect("web");
        match &web.transport {
            Transport::Http { headers, .. } => {
                assert_eq!(headers["Authorization"], "Bearer from-env")
            }
            other => panic!("web is http, got {other:?}"),
        }
        assert_eq!(web.cache_ttl, Some(Duration::from_secs(5)));
        assert_eq!(
            config.clients[0].rate_limit,
            Some(RateLimit {
                per_minute: 10,
                burst: 10
            })
        );
        assert_eq!(config.clients[0].calls_per_day, Some(500));
        assert_eq!(config.clients[0].tokens_per_day, Some(100_000));
        assert!(config.secret_values.contains(&"s3cret-value".to_string()));
        assert!(config.secret_values.contains(&"tok-123".to_string()));
    }

    #[test]
    fn sampling_is_off_unless_a_server_names_a_model() {
        let config = parse(
            r#"{"mcpServers": {"asks": {"command": "x", "sampling": {"model": "ai/smollm2"}},
                               "quiet": {"command": "y"}}}"#,
            &[],
        )
        .expect("config");
        let asks = config
            .servers
            .iter()
            .find(|s| s.name == "asks")
            .expect("asks");
        assert_eq!(
            asks.sampling,
            Some(SamplingPolicy {
                model: "ai/smollm2".into(),
                max_tokens: DEFAULT_SAMPLING_TOKENS
            })
        );
        let quiet = config
            .servers
            .iter()
            .find(|s| s.name == "quiet")
            .expect("quiet");
        assert_eq!(quiet.sampling, None);
        for bad in [
            r#"{"model": ""}"#,
            r#"{"model": "m", "maxTokens": 0}"#,
            r#"{"model": "m", "maxTokens": 100000}"#,
        ] {
            let json =
                format!(r#"{{"mcpServers": {{"s": {{"command": "x", "sampling": {bad}}}}}}}"#);
            assert!(parse(&json, &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn oauth_client_settings_resolve_their_secret_and_redact_it() {
        let config = parse(
            r#"{"mcpServers": {"web": {"url": "https://mcp.example.com/mcp",
                 "oauth": {"clientId": "runner", "clientSecret": "${OAUTH_SECRET}", "scope": "read"}}}}"#,
            &[("OAUTH_SECRET", "oauth-client-secret")],
        )
        .expect("config");
        let oauth = config.servers[0].oauth.clone().expect("oauth");
        assert_eq!(oauth.client_id.as_deref(), Some("runner"));
        assert_eq!(oauth.client_secret.as_deref(), Some("oauth-client-secret"));
        assert_eq!(oauth.scope.as_deref(), Some("read"));
        assert!(
            config
                .secret_values
                .contains(&"oauth-client-secret".to_string())
        );
        let err = parse(
            r#"{"mcpServers": {"web": {"url": "https://x/mcp", "oauth": {"clientSecret": "s"}}}}"#,
            &[],
        )
        .expect_err("a secret without an id");
        assert!(err.to_string().contains("clientId"), "{err}");
    }

    #[test]
    fn a_missing_reference_names_server_and_variable() {
        let err = parse(
            r#"{"mcpServers": {"fs": {"command": "x", "env": {"K": "${NOPE}"}}}}"#,
            &[],
        )
        .expect_err("missing variable");
        let message = err.to_string();
        assert!(
            message.contains("fs") && message.contains("NOPE"),
            "{message}"
        );
    }

    #[test]
    fn values_from_plain_environment_variables_are_redacted_like_secrets() {
        let config = parse(
            r#"{"mcpServers": {
                "fs": {"command": "x", "env": {"TOKEN": "${PLAIN_TOKEN}"}},
                "web": {"url": "http://127.0.0.1:9/mcp", "headers": {"X-Key": "k=${HEADER_KEY}"}}
              }}"#,
            &[
                ("PLAIN_TOKEN", "plain-env-value-1"),
                ("HEADER_KEY", "header-env-value-2"),
            ],
        )
        .expect("valid config");
        for value in ["plain-env-value-1", "header-env-value-2"] {
            assert!(
                config.secret_values.iter().any(|s| s == value),
                "{value} is not redacted: {:?}",
                config.secret_values
            );
        }
    }

    #[test]
    fn the_runner_pseudo_server_name_is_reserved() {
        let err = parse(r#"{"mcpServers": {"model-runner": {"command": "x"}}}"#, &[])
            .expect_err("reserved name");
        assert!(err.to_string().contains("reserved"), "{err}");
    }

    #[test]
    fn a_server_needs_a_command_or_a_url() {
        let err = parse(r#"{"mcpServers": {"bad": {}}}"#, &[]).expect_err("no transport");
        assert!(err.to_string().contains("bad"));
    }

    #[test]
    fn urls_speak_streamable_http_or_sse_as_their_type_says() {
        let config = parse(
            r#"{"mcpServers": {
                "auto": {"url": "http://127.0.0.1:9/mcp"},
                "strict": {"url": "http://127.0.0.1:9/mcp", "type": "streamable-http"},
                "legacy": {"url": "http://127.0.0.1:9/sse", "transport": "sse", "headers": {"X-Key": "k"}}
            }}"#,
            &[],
        )
        .expect("valid config");
        let transport = |name: &str| {
            config
                .servers
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.transport.clone())
                .expect("server")
        };
        assert!(matches!(
            transport("auto"),
            Transport::Http {
                sse_fallback: true,
                ..
            }
        ));
        assert!(matches!(
            transport("strict"),
            Transport::Http {
                sse_fallback: false,
                ..
            }
        ));
        match transport("legacy") {
            Transport::Sse { url, headers } => {
                assert_eq!(url, "http://127.0.0.1:9/sse");
                assert_eq!(headers["X-Key"], "k");
            }
            other => panic!("legacy is sse, got {other:?}"),
        }
    }

    #[test]
    fn yaml_is_read_too() {
        let raw: RawConfig = yaml_serde::from_str(
            "mcpServers:\n  time:\n    command: mcp-server-time\n    args: [--local-timezone, UTC]\n",
        )
        .expect("yaml");
        let config = resolve(raw, Path::new("."), &|_| None).expect("valid");
        assert_eq!(config.servers[0].name, "time");
    }
}
