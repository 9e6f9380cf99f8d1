//! Docker Compose's provider protocol, so that a service with `provider: {type: model, options: {model: M}}`
//! works with this binary on PATH as `model` (as `docker model compose` does for Docker Model Runner).
//!
//! Compose runs `model compose --project-name P up --model M [--context-size N] SERVICE` and reads JSON
//! lines from stdout: `info` lines to show, `error` to fail, and `setenv` lines `KEY=VALUE` that it passes
//! to the services depending on SERVICE as `SERVICE_KEY` (here `URL`, the OpenAI base URL, and `MODEL`).
//! `up` pulls missing models into the store and starts `model serve` in the background when no server
//! answers; `down` leaves both in place (models stay cached, the server is shared). `metadata` describes
//! the options to Compose.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::client;
use crate::reference::ModelSource;
use crate::registry::{self, RegistryOptions};
use crate::store::Store;

#[derive(Debug, Clone, Args)]
pub struct ComposeArgs {
    /// The Compose project (given by Compose; recorded in messages only).
    #[arg(long, global = true)]
    pub project_name: Option<String>,
    #[command(subcommand)]
    pub command: ComposeCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ComposeCommand {
    /// Make models ready for a Compose service: pull them, make sure a server runs, print setenv lines.
    Up {
        /// Model reference (repeatable).
        #[arg(long, required = true)]
        model: Vec<String>,
        /// Context size for a server this command starts.
        #[arg(long)]
        context_size: Option<usize>,
        /// The Compose service these models are for.
        service: String,
    },
    /// Release a Compose service's models (nothing to do: they stay cached, the server is shared).
    Down {
        #[arg(long)]
        model: Vec<String>,
        service: String,
    },
    /// Describe this provider's options as JSON, for Compose.
    Metadata,
}

/// One line of the provider protocol.
fn say(kind: &str, message: impl Into<String>) {
    println!("{}", json!({"type": kind, "message": message.into()}));
}

pub async fn compose(store: &Store, args: ComposeArgs) -> Result<()> {
    match args.command {
        ComposeCommand::Metadata => {
            println!(
                "{}",
                json!({
                    "description": "Runs models with model-runner and gives services its OpenAI-compatible URL",
                    "up": {"parameters": [
                        {"name": "model", "description": "Model reference to pull and serve", "required": true, "type": "string"},
                        {"name": "context-size", "description": "Context size for a server started here", "required": false, "type": "integer"},
                    ]},
                    "down": {"parameters": [
                        {"name": "model", "description": "Model reference", "required": false, "type": "string"},
                    ]},
                })
            );
            Ok(())
        }
        ComposeCommand::Down { service, .. } => {
            say("info", format!("{service}: models stay in the local store"));
            Ok(())
        }
        ComposeCommand::Up {
            model,
            context_size,
            service,
        } => match up(store, &model, context_size, &service).await {
            Ok(()) => Ok(()),
            Err(e) => {
                say("error", format!("{e:#}"));
                Err(e)
            }
        },
    }
}

async fn up(
    store: &Store,
    models: &[String],
    context_size: Option<usize>,
    service: &str,
) -> Result<()> {
    for reference in models {
        if store.resolve(reference).is_ok() {
            say("info", format!("{reference} is in the local store"));
            continue;
        }
        say("info", format!("pulling {reference}"));
        let silent = crate::progress::silent();
        match ModelSource::parse(reference)? {
            ModelSource::Registry(r) => {
                registry::pull(store, &r, &RegistryOptions::default(), silent).await?;
            }
            ModelSource::HuggingFace(hf) => {
                crate::huggingface::pull(store, &hf, silent).await?;
            }
        }
        say("info", format!("pulled {reference}"));
    }
    if !client::server_answers().await {
        start_server(store, context_size).await?;
    }
    let base = std::env::var("MODEL_RUNNER_COMPOSE_URL")
        .unwrap_or_else(|_| format!("{}/engines/v1/", client::server_url()));
    say("setenv", format!("URL={base}"));
    if let Some(first) = models.first() {
        say("setenv", format!("MODEL={first}"));
    }
    say(
        "info",
        format!("{service}: {} ready at {base}", models.join(", ")),
    );
    Ok(())
}

/// Starts `model serve` detached, logging to the store's `serve.log`, and waits for it to answer.
async fn start_server(store: &Store, context_size: Option<usize>) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find this program to start the server")?;
    let log_path = store.root().join("serve.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("--home")
        .arg(store.root())
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Ok(host) = std::env::var("MODEL_RUNNER_HOST") {
        command.args(["--host", &host]);
    }
    if let Ok(port) = std::env::var("MODEL_RUNNER_PORT") {
        command.args(["--port", &port]);
    }
    if let Some(n) = context_size {
        command.args(["--context-size", &n.to_string()]);
    }
    // Its own session: the server outlives this command and Compose's process group.
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    let child = command.spawn().context("cannot start `model serve`")?;
    say(
        "info",
        format!(
            "started model serve (pid {}, log {})",
            child.id(),
            log_path.display()
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if client::server_answers().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "the server started for Compose did not answer at {} within 60 s (see {})",
        client::server_url(),
        log_path.display()
    )
}
