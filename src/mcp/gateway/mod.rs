//! The gateway: every configured server's tools under namespaced names, and the one call path that
//! `/mcp`, `model mcp`, the chat loop and `run_js` scripts share. This file owns the gateway's state and
//! lifecycle (the setup replaced on reload, background duties, shutdown); the rest lives beside it:
//! `catalogue` (which tools exist and who sees them), `call` (the one entry, `Gateway::call`, with its
//! access check, rate limit, argument check, cache and timeout), `meta_tools` (`mcp_find`, `mcp_call`,
//! `run_js`), `local_tools` (the runner's own `chat` and `list_models`), `observe` (call log and
//! Prometheus series), and the servers' other offers: `resources` (resources and templates under
//! `naming`'s `model-runner://SERVER/URI`, reads, subscriptions) and `prompts` (`server__prompt`);
//! `token_quota` admits and charges generations of clients with a daily token quota; `dynamic` runs
//! catalog servers a session adds for itself (`mcp_add`, `mcp_remove`). The configuration can be reloaded (SIGHUP): servers whose settings did not
//! change keep running.

mod call;
mod catalogue;
mod dynamic;
mod local_tools;
mod meta_tools;
mod observe;
mod prompts;
mod resources;
mod token_quota;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use rmcp::model::CallToolResult;

use super::McpError;
use super::breaker::Breaker;
use super::config::{ConfigError, McpConfig};
use super::oauth::TokenStore;
use super::policy::{Caller, Policy};
use super::redact::Redactor;
use super::upstream::{ListKind, Upstream};

pub use call::{CallContext, CallRecord, RateBudget, result_text};
pub use catalogue::Entry;
pub use dynamic::SessionLease;
pub use local_tools::{CHAT, LIST_MODELS, LocalModels, LocalToolError};
pub use meta_tools::meta_tools;
pub use prompts::PromptEntry;
pub use token_quota::TokenAccount;

/// The `server` label of the gateway's own tools (`mcp_find`, `mcp_call`, `run_js`) and of unknown names.
pub const GATEWAY_SERVER: &str = "gateway";
/// The `tool` label under which calls to names no tool has are counted.
pub const UNKNOWN_TOOL: &str = "unknown";

/// The parts replaced together on reload.
struct Setup {
    config: McpConfig,
    upstreams: Vec<Arc<Upstream>>,
    policy: Policy,
    redactor: Arc<Redactor>,
    caches: HashMap<String, moka::future::Cache<String, CallToolResult>>,
}

/// Shared between the gateway and its upstreams: raised when a server's tools, prompts or resources
/// changed (the tool catalogue is rebuilt; sessions are told each list changed).
struct ChangeSignal {
    dirty: AtomicBool,
    version: tokio::sync::watch::Sender<u64>,
    prompts: tokio::sync::watch::Sender<u64>,
    resources: tokio::sync::watch::Sender<u64>,
}

impl ChangeSignal {
    fn raise(&self, kind: ListKind) {
        match kind {
            ListKind::Tools => {
                self.dirty.store(true, Ordering::SeqCst);
                self.version.send_modify(|v| *v += 1);
            }
            ListKind::Prompts => self.prompts.send_modify(|v| *v += 1),
            ListKind::Resources => self.resources.send_modify(|v| *v += 1),
        }
    }
}

/// Receivers of each list's changes, for one session.
pub struct ListChanges {
    pub tools: tokio::sync::watch::Receiver<u64>,
    pub prompts: tokio::sync::watch::Receiver<u64>,
    pub resources: tokio::sync::watch::Receiver<u64>,
}

pub struct Gateway {
    setup: RwLock<Arc<Setup>>,
    config_path: Option<PathBuf>,
    catalogue: RwLock<Arc<catalogue::Catalogue>>,
    changes: Arc<ChangeSignal>,
    /// The runner's own tools, once a transport that offers them has registered them (shared with the
    /// upstreams, whose sampling requests they answer).
    local: Arc<RwLock<Option<Arc<dyn LocalModels>>>>,
    stats: observe::CallStats,
    /// Where remote servers' OAuth grants are kept (`model mcp auth login`), when the runner has a home.
    tokens: Option<TokenStore>,
    /// Catalog servers sessions started for themselves (Dynamic MCP).
    dynamic: Mutex<dynamic::SessionServers>,
    /// The runner's home, whose catalog `mcp_add` reads.
    catalog_home: OnceLock<PathBuf>,
}

impl Gateway {
    /// A gateway over `config`; `config_path` is what SIGHUP reloads.
    pub fn new(config: McpConfig, config_path: Option<PathBuf>) -> Arc<Self> {
        Self::with_tokens(config, config_path, None)
    }

    /// As `new`, remote servers authorized with the OAuth grants of `tokens`.
    pub fn with_tokens(
        config: McpConfig,
        config_path: Option<PathBuf>,
        tokens: Option<TokenStore>,
    ) -> Arc<Self> {
        let changes = Arc::new(ChangeSignal {
            dirty: AtomicBool::new(true),
            version: tokio::sync::watch::channel(0).0,
            prompts: tokio::sync::watch::channel(0).0,
            resources: tokio::sync::watch::channel(0).0,
        });
        let local = Arc::new(RwLock::new(None));
        let setup = build_setup(config, &[], &changes, &local, tokens.as_ref());
        Arc::new(Self {
            setup: RwLock::new(Arc::new(setup)),
            config_path,
            catalogue: RwLock::new(Arc::new(catalogue::Catalogue::default())),
            changes,
            local,
            stats: observe::CallStats::default(),
            tokens,
            dynamic: Mutex::new(dynamic::SessionServers::default()),
            catalog_home: OnceLock::new(),
        })
    }

    /// Loads `--mcp-config FILE`; remote servers use the OAuth grants of `tokens`.
    pub fn from_file(path: PathBuf, tokens: Option<TokenStore>) -> Result<Arc<Self>, ConfigError> {
        let config = McpConfig::load(&path)?;
        Ok(Self::with_tokens(config, Some(path), tokens))
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

    /// Each configured server's state, tools count and last error (`/health`, `model mcp server status`).
    pub async fn server_report(&self) -> Vec<super::upstream::UpstreamStatus> {
        let mut report = Vec::new();
        for upstream in &self.setup().upstreams {
            report.push(upstream.status().await);
        }
        report
    }

    /// The file reloads read, if the gateway came from one.
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config_path.as_deref()
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

    /// Whether `caller` may see and call `server`'s tool `name` (namespaced, or a local tool's name).
    pub fn allows(&self, caller: &Caller, server: &str, name: &str) -> bool {
        self.setup().policy.allows(caller, server, name)
    }

    /// Takes one call from the caller's budget, for transports that answer "rate limited" themselves;
    /// their calls then enter `call` with `RateBudget::TakenByTransport`.
    pub fn check_rate(&self, caller: &Caller) -> Result<(), McpError> {
        call::take_rate(&self.setup(), caller)
    }

    /// Bumped whenever the catalogue changes; `/mcp` sessions forward it as `tools/list_changed`.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.version.subscribe()
    }

    /// Every list's changes, which sessions forward as `notifications/*/list_changed`.
    pub fn list_changes(&self) -> ListChanges {
        ListChanges {
            tools: self.changes.version.subscribe(),
            prompts: self.changes.prompts.subscribe(),
            resources: self.changes.resources.subscribe(),
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
        let setup = build_setup(
            config,
            &old.upstreams,
            &self.changes,
            &self.local,
            self.tokens.as_ref(),
        );
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
        for kind in [ListKind::Tools, ListKind::Prompts, ListKind::Resources] {
            self.changes.raise(kind);
        }
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
        self.stop_session_servers().await;
    }
}

fn build_setup(
    config: McpConfig,
    previous: &[Arc<Upstream>],
    changes: &Arc<ChangeSignal>,
    local: &Arc<RwLock<Option<Arc<dyn LocalModels>>>>,
    tokens: Option<&TokenStore>,
) -> Setup {
    let sampler: Arc<dyn super::upstream::Sampler> =
        Arc::new(local_tools::LocalSampler(local.clone()));
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
                        Arc::new(move |kind| changes.raise(kind)),
                        sampler.clone(),
                        tokens,
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

// A poisoned lock is taken over: its holders swap or insert whole values, so none is left half-written.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
