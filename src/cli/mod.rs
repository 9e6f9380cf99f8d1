//! The `model` command line: argument definitions and the store commands (`pull`, `push`, `ls`, ...).
//!
//! Each command turns its arguments into calls on the store, registry and package modules and prints the
//! result; errors travel up to `main`, which prints one line.

mod bench;
mod chat;
mod client;
mod compose;
mod mcp;
mod mcp_auth;
mod progress_view;
pub mod run;
mod serve;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::artifact::human_size;
use crate::package::{PackageSpec, package};
use crate::reference::{ModelRef, ModelSource};
use crate::registry::{self, RegistryOptions};
use crate::store::Store;

/// The environment variable (and `--threads`) that sizes the kernels' thread pool.
pub const THREADS_ENV: &str = "MODEL_RUNNER_THREADS";

#[derive(Debug, Parser)]
#[command(
    name = "model",
    version,
    about = "Run, serve and manage local LLMs packaged as OCI artifacts"
)]
pub struct Cli {
    /// Store root (default: model-runner under the user's data directory).
    #[arg(long, global = true, env = crate::store::HOME_ENV, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Threads the engine computes with (default: one per core).
    #[arg(long, global = true, env = THREADS_ENV, value_name = "N")]
    pub threads: Option<std::num::NonZeroUsize>,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chat with a model: one prompt, or interactively.
    Run(run::RunArgs),
    /// Serve the OpenAI-compatible API.
    Serve(serve::ServeArgs),
    /// Serve the MCP gateway (its servers' tools, `chat`, `list_models`) over stdio for MCP clients;
    /// `catalog`, `server` and `client` manage what it offers and who reaches it.
    #[command(args_conflicts_with_subcommands = true)]
    Mcp(serve::McpArgs),
    /// Measure throughput: the engine in process, or any OpenAI-compatible endpoint under load.
    Bench(bench::BenchArgs),
    /// Docker Compose's model provider: `compose up --model M SERVICE` pulls M, makes sure a server runs,
    /// and prints the JSON `setenv` lines (URL, MODEL) Compose passes to the service's dependents.
    Compose(compose::ComposeArgs),
    /// List the models a running server has loaded.
    Ps,
    /// Unload a model (or all) from a running server.
    Unload {
        reference: Option<String>,
        #[arg(long, conflicts_with = "reference")]
        all: bool,
    },
    /// Pull a model from a registry (or hf.co/ORG/REPO[:QUANT]) into the local store.
    Pull {
        /// Model reference, e.g. ai/smollm2 or 127.0.0.1:5000/ai/smollm2:v1.
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Push a model from the local store to its registry.
    Push {
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Give a stored model another reference.
    Tag { source: String, target: String },
    /// Remove models from the local store.
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
        /// Remove every reference of a model named by ID.
        #[arg(short, long)]
        force: bool,
    },
    /// List the models in the local store.
    #[command(alias = "list")]
    Ls {
        /// Print JSON, in Docker Model Runner's model API shape.
        #[arg(long)]
        json: bool,
        /// Print model IDs only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show a stored model as JSON.
    Inspect { reference: String },
    /// Set the runtime settings a model loads with (kept in the store; a loaded model picks them up
    /// when next idle), as `docker model configure`.
    Configure {
        /// Context size in tokens (-1: leave as it is).
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        context_size: Option<i64>,
        /// -1: think without limit; 0: do not think (templates with `enable_thinking`).
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        reasoning_budget: Option<i64>,
        /// How long the model stays loaded when idle ("10m", "1h", 0, -1 for ever).
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        keep_alive: Option<String>,
        /// Clear the model's settings before applying these.
        #[arg(long)]
        reset: bool,
        reference: String,
        /// llama.cpp runtime flags after `--`; --ctx-size and --reasoning-budget are understood.
        #[arg(last = true, value_name = "RUNTIME_FLAGS")]
        runtime_flags: Vec<String>,
    },
    /// Show the local store's disk usage.
    Df,
    /// Package a GGUF file as a model artifact in the store, and optionally push it.
    Package {
        /// The GGUF file (any shard of a split model).
        #[arg(long, value_name = "FILE")]
        gguf: PathBuf,
        /// License files to include (repeatable).
        #[arg(long, value_name = "FILE")]
        license: Vec<PathBuf>,
        /// A Jinja chat template that overrides the GGUF's.
        #[arg(long, value_name = "FILE")]
        chat_template: Option<PathBuf>,
        /// Context size to record in the config (default: the GGUF's context length).
        #[arg(long, value_name = "N")]
        context_size: Option<u64>,
        /// Push to the registry after packaging.
        #[arg(long)]
        push: bool,
        #[command(flatten)]
        registry: RegistryArgs,
        /// Reference to store (and push) the model under.
        reference: String,
    },
}

#[derive(Debug, Args, Clone)]
pub struct RegistryArgs {
    /// Use plain HTTP for this registry (loopback registries always do).
    #[arg(long)]
    insecure: bool,
}

impl RegistryArgs {
    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            insecure: self.insecure,
        }
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<()> {
    // Without a store named on the command line (or in the environment), `ls` asks a running server,
    // whose store may live elsewhere (a container, another user), as `docker model ls` asks its runner.
    let store_named = cli.home.is_some();
    let store = Store::open(cli.home.unwrap_or_else(Store::default_root))?;
    match cli.command {
        Command::Run(args) => run::run(&store, args).await,
        Command::Serve(args) => serve::serve(store, args).await,
        Command::Mcp(args) => match args.command {
            Some(command) => mcp::run(&store, command).await,
            None => serve::mcp(store, args).await,
        },
        Command::Bench(args) => bench::bench(&store, args).await,
        Command::Compose(args) => compose::compose(&store, args).await,
        Command::Ps => client::ps().await,
        Command::Unload { reference, all } => {
            if reference.is_none() && !all {
                bail!("name a model to unload, or pass --all");
            }
            client::unload(reference.as_deref()).await
        }
        Command::Pull {
            reference,
            registry,
        } => pull(&store, &reference, &registry.options()).await,
        Command::Push {
            reference,
            registry,
        } => push(&store, &reference, &registry.options()).await,
        Command::Tag { source, target } => {
            let target = ModelRef::parse(&target)?;
            let id = store.tag(&source, &target)?;
            println!("Tagged {} as {}", id.short(), target.familiar());
            Ok(())
        }
        Command::Rm { references, force } => remove(&store, &references, force),
        Command::Ls { json, quiet } => {
            if !store_named && client::server_answers().await {
                let listed = client::list_models().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&listed)?);
                    return Ok(());
                }
                let models: Vec<ListedModel> = serde_json::from_value(listed).map_err(|e| {
                    anyhow::anyhow!("the server's model list is not understood: {e}")
                })?;
                return print_models(&models, quiet);
            }
            list(&store, json, quiet)
        }
        Command::Inspect { reference } => {
            let model = store.resolve(&reference)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::server::dmr::model_json(&model))?
            );
            Ok(())
        }
        Command::Configure {
            context_size,
            reasoning_budget,
            keep_alive,
            reset,
            reference,
            runtime_flags,
        } => {
            let request = json!({
                "model": reference, "context-size": context_size, "reasoning-budget": reasoning_budget,
                "keep_alive": keep_alive, "runtime-flags": runtime_flags, "reset": reset,
            });
            let settings = if !store_named && client::server_answers().await {
                client::configure(&request).await?["settings"].clone()
            } else {
                let request: crate::server::dmr::ConfigureRequest =
                    serde_json::from_value(request)?;
                let update = request.settings().map_err(|e| anyhow::anyhow!(e.message))?;
                json!(store.configure(&reference, &update, reset)?.1)
            };
            println!("Configured {reference}: {settings}");
            Ok(())
        }
        Command::Df => disk_usage(&store),
        Command::Package {
            gguf,
            license,
            chat_template,
            context_size,
            push: and_push,
            registry,
            reference,
        } => {
            let target = ModelRef::parse(&reference)?;
            let spec = PackageSpec {
                gguf,
                licenses: license,
                chat_template,
                context_size,
            };
            let progress = progress_view::stderr_progress();
            let store_for_task = store.clone();
            let target_for_task = target.clone();
            let id = tokio::task::spawn_blocking(move || {
                package(&store_for_task, &spec, &target_for_task, &progress)
            })
            .await??;
            println!("Packaged {} ({id})", target.familiar());
            if and_push {
                push(&store, &target.to_string(), &registry.options()).await?;
            }
            Ok(())
        }
    }
}

async fn pull(store: &Store, reference: &str, options: &RegistryOptions) -> Result<()> {
    let progress = progress_view::stderr_progress();
    match ModelSource::parse(reference)? {
        ModelSource::Registry(model_ref) => {
            let id = registry::pull(store, &model_ref, options, progress).await?;
            println!("Pulled {} ({id})", model_ref.familiar());
        }
        ModelSource::HuggingFace(hf) => {
            let id = crate::huggingface::pull(store, &hf, progress).await?;
            println!("Pulled {} ({id})", hf.store_ref().familiar());
        }
    }
    Ok(())
}

async fn push(store: &Store, reference: &str, options: &RegistryOptions) -> Result<()> {
    let target = ModelRef::parse(reference)?;
    let model = store.resolve(reference)?;
    let digest = registry::push(
        store,
        &model,
        &target,
        options,
        progress_view::stderr_progress(),
    )
    .await?;
    println!("Pushed {} ({digest})", target.familiar());
    Ok(())
}

fn remove(store: &Store, references: &[String], force: bool) -> Result<()> {
    let mut failures = 0;
    for reference in references {
        match store.remove(reference, force) {
            Ok(removal) => {
                for name in &removal.untagged {
                    let shown = ModelRef::parse(name).map_or(name.clone(), |r| r.familiar());
                    println!("Untagged: {shown}");
                }
                for id in &removal.deleted_models {
                    println!("Deleted: {id}");
                }
            }
            Err(e) if references.len() == 1 => return Err(e.into()),
            Err(e) => {
                eprintln!("Error: {e}");
                failures += 1;
            }
        }
    }
    if failures > 0 {
        bail!("{failures} of {} removals failed", references.len());
    }
    Ok(())
}

/// A model as `ls` shows it, from the local store or a server's `GET /models`.
#[derive(Debug, serde::Deserialize)]
struct ListedModel {
    id: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    config: crate::artifact::ModelConfig,
}

fn list(store: &Store, json: bool, quiet: bool) -> Result<()> {
    let models = store.list()?;
    if json {
        let shapes: Vec<_> = models.iter().map(crate::server::dmr::model_json).collect();
        println!("{}", serde_json::to_string_pretty(&shapes)?);
        return Ok(());
    }
    let listed: Vec<ListedModel> = models
        .iter()
        .map(|model| {
            let mut config = model.config.config.clone();
            if config.size.is_empty() {
                config.size = human_size(model.size());
            }
            ListedModel {
                id: model.id.to_string(),
                tags: model.familiar_names(),
                created: model.created().map_or(0, |c| c.timestamp()),
                config,
            }
        })
        .collect();
    print_models(&listed, quiet)
}

fn print_models(models: &[ListedModel], quiet: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let short = |id: &str| {
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        hex.chars().take(12).collect::<String>()
    };
    if quiet {
        for model in models {
            writeln!(out, "{}", short(&model.id))?;
        }
        return Ok(());
    }
    let mut rows = vec![
        [
            "MODEL NAME",
            "PARAMETERS",
            "QUANTIZATION",
            "ARCHITECTURE",
            "MODEL ID",
            "CREATED",
            "CONTEXT",
            "SIZE",
            "CAPABILITIES",
        ]
        .map(String::from),
    ];
    for model in models {
        let c = &model.config;
        let created = chrono::DateTime::from_timestamp(model.created, 0)
            .filter(|_| model.created > 0)
            .map_or_else(String::new, ago);
        let names = if model.tags.is_empty() {
            vec!["<untagged>".to_string()]
        } else {
            model.tags.clone()
        };
        for name in names {
            rows.push([
                name,
                c.parameters.clone(),
                c.quantization.clone(),
                c.architecture.clone(),
                short(&model.id),
                created.clone(),
                c.context_size.map_or_else(String::new, |n| n.to_string()),
                c.size.clone(),
                c.capabilities().join(","),
            ]);
        }
    }
    write_table(&mut out, &rows)?;
    Ok(())
}

fn disk_usage(store: &Store) -> Result<()> {
    let usage = store.disk_usage()?;
    let rows = vec![
        ["TYPE", "COUNT", "SIZE"].map(String::from),
        [
            "Models".into(),
            usage.models.to_string(),
            human_size(usage.blob_bytes),
        ],
        [
            "Partial downloads".into(),
            "-".into(),
            human_size(usage.partial_bytes),
        ],
    ];
    write_table(&mut std::io::stdout().lock(), &rows)?;
    println!("\nStore: {}", usage.root.display());
    Ok(())
}

fn write_table<const N: usize>(out: &mut impl Write, rows: &[[String; N]]) -> Result<()> {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("   ").trim_end()).context("writing to stdout")?;
    }
    Ok(())
}

/// "3 minutes ago", as Docker prints ages.
fn ago(time: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (chrono::Utc::now() - time).num_seconds().max(0);
    let (n, unit) = match secs {
        s if s < 60 => return "Less than a minute ago".into(),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 86_400 * 30 => (s / 86_400, "day"),
        s if s < 86_400 * 365 => (s / (86_400 * 30), "month"),
        s => (s / (86_400 * 365), "year"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if n == 1 && unit == "hour" {
        "About an hour ago".into()
    } else {
        format!("{n} {unit}{plural} ago")
    }
}
