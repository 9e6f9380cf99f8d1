//! `model serve`: turns flags into the server's and runtime's configuration and runs the server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::chat::ReasoningOutput;
use crate::chat::mcp_tools::DefaultMcpTools;
use crate::engine::device::{DeviceChoice, device_name};
use crate::engine::template_sandbox::TemplateSandbox;
use crate::engine::{EngineOptions, PREFILL_CHUNK};
use crate::mcp::Gateway;
use crate::mcp::endpoint::Endpoint;
use crate::runtime::{DEFAULT_KEEP_ALIVE, ModelRuntime, RuntimeOptions};
use crate::scheduler::SchedulerConfig;
use crate::scheduler::plan::StepBudget;
use crate::server::mcp::RunnerModels;
use crate::server::openai::responses::store::{ResponsesStore, StoreLimits};
use crate::server::{AppState, DEFAULT_PORT, ServerConfig};
use crate::store::Store;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[arg(long, env = "MODEL_RUNNER_HOST", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, env = "MODEL_RUNNER_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Context size per model (default: the package's, else 4096 capped by the model).
    #[arg(long)]
    pub context_size: Option<usize>,
    /// Where models run: auto (a GPU this build supports, else the CPU), cpu, cuda, cuda:N, metal.
    #[arg(long, env = "MODEL_RUNNER_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
    /// Most sequences decoded together per model.
    #[arg(long, default_value_t = 16)]
    pub parallel: usize,
    /// KV cache blocks (16 tokens each) per model (default: parallel full contexts, within a quarter of free memory).
    #[arg(long)]
    pub kv_cache_blocks: Option<usize>,
    /// The KV cache's element type: f16 (half the memory, as llama.cpp's default), q8_0 (about a quarter, as
    /// llama.cpp's `-ctk/-ctv q8_0`) or f32. CUDA's is f32.
    #[arg(long, default_value = "f16", value_name = "TYPE")]
    pub kv_cache_type: models::KvType,
    /// Most tokens in one forward step (chunked prefill budget).
    #[arg(long, default_value_t = 512)]
    pub step_tokens: usize,
    /// Most requests waiting per model; more get 503 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, env = "MODEL_RUNNER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Allowed CORS origin (repeatable; `*` for any). CORS is off without it. Pages of other origins
    /// (loopback ones and this server's own excepted) are refused.
    #[arg(long = "cors")]
    pub cors_origins: Vec<String>,
    /// Another name clients reach this server by (repeatable, or comma-separated in the variable; `*` for
    /// any). Requests whose Host is none of loopback, the bound address, an IP literal when bound to every
    /// interface, or these names are refused (DNS rebinding).
    #[arg(
        long = "allowed-host",
        env = "MODEL_RUNNER_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub body_limit: usize,
    /// Seconds a model stays loaded after its last request (negative: forever).
    #[arg(long, default_value_t = DEFAULT_KEEP_ALIVE.as_secs() as i64, allow_negative_numbers = true)]
    pub keep_alive: i64,
    /// Most models loaded at once; the least recently used idle one gives way.
    #[arg(long, default_value_t = 2)]
    pub max_loaded_models: usize,
    /// Days a stored Responses API response is kept (`store: true`); older ones are evicted.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub responses_max_age_days: u64,
    /// Most stored Responses API responses; past it the oldest are evicted.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub responses_max: usize,
    /// Memory (MiB) that loaded models, weights and KV caches together, may take; past it the least
    /// recently used idle model gives way. Default: 3/4 of the memory available at start.
    #[arg(long, value_name = "MIB")]
    pub memory_budget: Option<u64>,
    /// MCP servers for the gateway: a JSON or YAML file in the `mcpServers` shape (reloaded on SIGHUP
    /// and on `POST /gateway/reload`). Default: `mcp.json` under the store root, when it exists.
    #[arg(long, env = "MODEL_RUNNER_MCP_CONFIG", value_name = "FILE")]
    pub mcp_config: Option<std::path::PathBuf>,
    /// MCP tools given to chat requests that bring no tools of their own.
    #[arg(long, value_enum, default_value_t = McpToolsArg::None)]
    pub mcp_tools: McpToolsArg,
    /// Thinking models' reasoning: split from the answer into its own field (deepseek, or auto), or
    /// left raw in the content (none), as llama.cpp's flag.
    #[arg(long, value_enum, default_value_t = ReasoningFormatArg::Auto)]
    pub reasoning_format: ReasoningFormatArg,
    /// Serve no web console at `/` and `/ui/` (then `/` answers with one line of text).
    #[arg(long)]
    pub no_ui: bool,
}

/// `--reasoning-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReasoningFormatArg {
    Auto,
    Deepseek,
    None,
}

impl From<ReasoningFormatArg> for ReasoningOutput {
    fn from(arg: ReasoningFormatArg) -> Self {
        match arg {
            ReasoningFormatArg::Auto | ReasoningFormatArg::Deepseek => ReasoningOutput::Split,
            ReasoningFormatArg::None => ReasoningOutput::Raw,
        }
    }
}

/// `--mcp-tools`: the server-side default for chat requests without tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum McpToolsArg {
    /// Only what a request asks for.
    #[default]
    None,
    /// Every tool the caller may use.
    All,
    /// The discovery meta-tools (`mcp_find`, `mcp_call`) instead of every schema.
    Discovery,
}

impl From<McpToolsArg> for DefaultMcpTools {
    fn from(arg: McpToolsArg) -> Self {
        match arg {
            McpToolsArg::None => DefaultMcpTools::None,
            McpToolsArg::All => DefaultMcpTools::All,
            McpToolsArg::Discovery => DefaultMcpTools::Discovery,
        }
    }
}

/// `model mcp`: the gateway over stdio for desktop MCP clients, or (with a subcommand) its catalog,
/// servers and clients.
#[derive(Debug, Clone, clap::Args)]
pub struct McpArgs {
    /// A gateway client token: the calls are made as that client.
    #[arg(long, env = "MODEL_RUNNER_MCP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(subcommand)]
    pub command: Option<super::mcp::McpCommand>,
}

pub async fn serve(store: Store, args: ServeArgs) -> Result<()> {
    let state = app_state(store, args)?;
    crate::server::serve(state).await
}

/// Serves the gateway's MCP endpoint (its tools, `chat`, `list_models`) on stdin/stdout.
pub async fn mcp(store: Store, args: McpArgs) -> Result<()> {
    use rmcp::ServiceExt;
    let state = app_state(store, args.serve)?;
    let Some(gateway) = state.gateway.clone() else {
        anyhow::bail!(
            "model mcp needs --mcp-config FILE naming the MCP servers to serve (or servers added with `model mcp server add`)"
        );
    };
    let caller = gateway
        .authenticate(args.token.as_deref())
        .ok_or_else(|| anyhow::anyhow!("--token is not a gateway client's token"))?;
    if gateway.is_enforced() && matches!(caller, crate::mcp::Caller::Anonymous) {
        anyhow::bail!("this gateway has clients: pass --token with one of their tokens");
    }
    gateway.spawn_maintenance();
    gateway.register_local_models(Arc::new(RunnerModels(state.clone())));
    let endpoint = Endpoint::new(gateway.clone(), caller);
    let outcome = async {
        let running = endpoint
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| anyhow::anyhow!("MCP session did not start: {e}"))?;
        running.waiting().await?;
        anyhow::Ok(())
    }
    .await;
    gateway.shutdown().await;
    outcome
}

fn app_state(store: Store, args: ServeArgs) -> Result<Arc<AppState>> {
    let addr: std::net::SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid --host/--port: {e}"))?;
    // Without --mcp-config, the config `model mcp server add` writes, when there is one.
    let mcp_config = args.mcp_config.clone().or_else(|| {
        let default = crate::mcp::config_edit::default_path(store.root());
        default.exists().then_some(default)
    });
    let gateway = match mcp_config {
        Some(path) => {
            let gateway =
                Gateway::from_file(path, Some(crate::mcp::oauth::TokenStore::new(store.root())))?;
            gateway.use_catalog_of(store.root().to_path_buf());
            Some(gateway)
        }
        None => None,
    };
    let responses = Arc::new(ResponsesStore::new(
        store.root().join("responses").join("responses.redb"),
        StoreLimits {
            max_age: Duration::from_secs(args.responses_max_age_days.saturating_mul(24 * 3600)),
            max_responses: args.responses_max.max(1),
        },
    ));
    let device = args.device.open()?;
    tracing::info!(device = %device_name(&device), "models run on this device");
    let runtime = ModelRuntime::new(
        store,
        RuntimeOptions {
            engine: EngineOptions {
                device,
                context_size: args.context_size,
                kv_blocks: args.kv_cache_blocks,
                sequences: args.parallel,
                kv_type: args.kv_cache_type,
            },
            scheduler: SchedulerConfig {
                max_running: args.parallel.max(1),
                max_waiting: args.max_queue,
                budget: StepBudget {
                    tokens: args.step_tokens.max(1),
                    prefill_chunk: PREFILL_CHUNK.min(args.step_tokens.max(1)),
                },
            },
            max_loaded: args.max_loaded_models,
            memory_budget: args.memory_budget.map(|mib| mib << 20).or_else(|| {
                crate::engine::device::available_memory_bytes().map(|b| b as u64 / 4 * 3)
            }),
            keep_alive: u64::try_from(args.keep_alive).ok().map(Duration::from_secs),
            template_sandbox: Some(TemplateSandbox::for_this_binary(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )?),
        },
    );
    Ok(Arc::new(AppState {
        runtime,
        config: ServerConfig {
            addr,
            api_key: args.api_key,
            host_policy: crate::server::guard::HostPolicy::new(
                addr.ip(),
                &args.allowed_hosts,
                &args.cors_origins,
            ),
            cors_origins: args.cors_origins,
            body_limit_bytes: args.body_limit,
            default_mcp_tools: args.mcp_tools.into(),
            reasoning_output: args.reasoning_format.into(),
            console: !args.no_ui,
        },
        gateway,
        responses,
    }))
}
