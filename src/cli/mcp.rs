//! `model mcp catalog | server | client`: browse the MCP catalog (and push or pull it as an OCI artifact),
//! install its servers into the gateway's
//! config (and have a running server reload it), and point MCP clients (Claude Desktop, Cursor,
//! VS Code, Claude Code, Codex) at the gateway. `model mcp` without a subcommand serves the gateway over stdio
//! (`serve::mcp`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{RegistryArgs, client, write_table};
use crate::mcp::catalog::{
    CATALOG_ARTIFACT_TYPE, CATALOG_ENV, Catalog, Entry, MAX_CATALOG_BYTES, pulled_path,
    registry_document, validate,
};
use crate::mcp::client_config::{Link, McpClient, TOKEN_ENV};
use crate::mcp::config_edit::{ConfigFile, atomic_write, default_path};
use crate::mcp::install::{InstallOptions, Sandbox, definition};
use crate::reference::ModelRef;
use crate::registry::{self, JsonArtifactKind, RegistryOptions};
use crate::store::Store;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum McpCommand {
    /// Browse the catalog of MCP servers that can be installed.
    Catalog(CatalogArgs),
    /// Install, remove, enable and disable the gateway's MCP servers; show their state.
    Server(ServerArgs),
    /// Point MCP clients (claude-desktop, cursor, vscode, claude-code, codex) at this gateway.
    Client(ClientArgs),
    /// Authorize the gateway at remote MCP servers that use OAuth; list and revoke the grants.
    Auth(super::mcp_auth::AuthArgs),
}

/// Where the catalog and the gateway config are.
#[derive(Debug, Clone, clap::Args)]
pub struct Files {
    /// The gateway config to edit (default: mcp.json under the store root, which `model serve` reads
    /// when given no --mcp-config).
    #[arg(
        long,
        env = "MODEL_RUNNER_MCP_CONFIG",
        value_name = "FILE",
        global = true
    )]
    pub mcp_config: Option<PathBuf>,
    /// More catalog files or folders of server.json files (repeatable; after the shipped catalog and
    /// <home>/mcp-catalog/).
    #[arg(long = "catalog", env = CATALOG_ENV, value_delimiter = ',', value_name = "PATH", global = true)]
    pub catalogs: Vec<PathBuf>,
}

impl Files {
    pub(super) fn config_path(&self, store: &Store) -> PathBuf {
        self.mcp_config
            .clone()
            .unwrap_or_else(|| default_path(store.root()))
    }

    fn catalog(&self, store: &Store) -> Result<Catalog> {
        Ok(Catalog::load(store.root(), &self.catalogs)?)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct CatalogArgs {
    #[command(flatten)]
    files: Files,
    #[command(subcommand)]
    command: CatalogCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum CatalogCommand {
    /// List every entry.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Entries whose name, title or description contains TERM.
    Search {
        term: String,
        #[arg(long)]
        json: bool,
    },
    /// One entry: how it runs, its arguments and environment variables.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Fetch a catalog kept in an OCI registry into <home>/mcp-catalog/ (again to update it).
    Pull {
        /// The catalog's reference (`registry/repository:tag` or `@sha256:...`).
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Push a catalog to an OCI registry: FILE, or every entry `ls` lists.
    Push {
        reference: String,
        /// A catalog file (one server.json, a list, or a registry answer) to push instead.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    files: Files,
    #[command(subcommand)]
    command: ServerCommand,
}

// Parsed once per run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, clap::Subcommand)]
enum ServerCommand {
    /// Install a catalog entry into the gateway config.
    Add(AddArgs),
    /// Remove a server from the gateway config.
    Rm { label: String },
    /// Enable a disabled server.
    Enable { label: String },
    /// Disable a server (kept in the config, not run).
    Disable { label: String },
    /// The configured servers.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// The running server's MCP servers: running, idle, crashed or breaker open; tools; last error.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct AddArgs {
    /// A catalog entry: its full name, short name (`time`) or title.
    name: String,
    /// The server's label in the config and its tools' prefix (default: the entry's short name).
    #[arg(long = "name", value_name = "LABEL")]
    label: Option<String>,
    /// An environment variable for the server (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = key_value)]
    env: Vec<(String, String)>,
    /// A secret environment variable: written as ${K}, resolved when the config loads from the
    /// gateway's `secrets` or the server's environment (repeatable).
    #[arg(long = "secret", value_name = "K")]
    secrets: Vec<String>,
    /// A value for one of the entry's arguments, by name or value hint (repeatable).
    #[arg(long = "arg", value_name = "NAME=VALUE", value_parser = key_value)]
    args: Vec<(String, String)>,
    /// Offer only these tools.
    #[arg(long, value_delimiter = ',', value_name = "a,b")]
    tools: Option<Vec<String>>,
    /// Which way to run it when the entry offers several: npm, pypi, oci, remote.
    #[arg(long, value_name = "KIND")]
    package: Option<String>,
    /// Docker packages: CPUs the container may use.
    #[arg(long, default_value = "1")]
    cpus: String,
    /// Docker packages: memory the container may use.
    #[arg(long, default_value = "512m")]
    memory: String,
    /// Docker packages: the network (default: none, unless the entry declares it needs one).
    #[arg(long)]
    network: Option<String>,
    /// Replace a server already configured under the label.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    #[command(flatten)]
    files: Files,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TransportArg {
    /// The client runs `model mcp`.
    Stdio,
    /// The client posts to this server's /mcp with a token minted for it.
    Http,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum ClientCommand {
    /// Write the client's config so that it reaches this gateway.
    Connect {
        /// claude-desktop, cursor, vscode, claude-code or codex.
        client: String,
        #[arg(long, value_enum, default_value_t = TransportArg::Stdio)]
        transport: TransportArg,
        /// The client's config file (default: where the client keeps it on this OS).
        #[arg(long, value_name = "FILE")]
        config_file: Option<PathBuf>,
        /// The gateway's URL for --transport http (default: this machine's server, /mcp).
        #[arg(long)]
        url: Option<String>,
    },
    /// Remove the gateway from the client's config, and its token from the gateway.
    Disconnect {
        client: String,
        #[arg(long, value_name = "FILE")]
        config_file: Option<PathBuf>,
    },
    /// Which clients are connected, and how.
    Ls {
        #[arg(long)]
        json: bool,
    },
}

/// What `model mcp catalog push | pull` moves: a registry answer of at most `MAX_CATALOG_BYTES`.
const CATALOG_ARTIFACT: JsonArtifactKind = JsonArtifactKind {
    artifact_type: CATALOG_ARTIFACT_TYPE,
    max_bytes: MAX_CATALOG_BYTES,
    title: "mcp-catalog.json",
};

/// Pulls a catalog, checks it reads as one, and writes it (atomically) where `Catalog::load` finds it.
async fn pull_catalog(store: &Store, reference: &str, options: &RegistryOptions) -> Result<()> {
    let reference = ModelRef::parse(reference)?;
    let bytes = registry::pull_json_artifact(&reference, CATALOG_ARTIFACT, options).await?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("{} is not UTF-8 text", reference.familiar()))?;
    let count = validate(&text, &reference.familiar())?;
    let path = pulled_path(store.root(), &reference.familiar());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    atomic_write(&path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "Pulled {} ({count} servers) into {}",
        reference.familiar(),
        path.display()
    );
    Ok(())
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

pub async fn run(store: &Store, command: McpCommand) -> Result<()> {
    match command {
        McpCommand::Catalog(args) => catalog(store, args).await,
        McpCommand::Server(args) => server(store, args).await,
        McpCommand::Client(args) => client_command(store, args).await,
        McpCommand::Auth(args) => super::mcp_auth::run(store, args).await,
    }
}

async fn catalog(store: &Store, args: CatalogArgs) -> Result<()> {
    let load = || args.files.catalog(store);
    match &args.command {
        CatalogCommand::Ls { json } => list(load()?.entries(), *json),
        CatalogCommand::Search { term, json } => list(load()?.search(term), *json),
        CatalogCommand::Show { name, json } => {
            let catalog = load()?;
            let entry = catalog.find(name)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&entry.server)?);
            } else {
                show(entry);
            }
            Ok(())
        }
        // A pull replaces a catalog file, so it must work while the catalog does not read.
        CatalogCommand::Pull {
            reference,
            registry,
        } => pull_catalog(store, reference, &registry.options()).await,
        CatalogCommand::Push {
            reference,
            file,
            registry,
        } => {
            let content = match file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    validate(&text, &path.display().to_string())?;
                    text.into_bytes()
                }
                None => serde_json::to_vec_pretty(&registry_document(
                    load()?.entries().into_iter().map(|e| &e.server),
                ))?,
            };
            let target = ModelRef::parse(reference)?;
            let options = registry.options();
            let digest =
                registry::push_json_artifact(&target, CATALOG_ARTIFACT, content, &options).await?;
            println!("Pushed {} ({digest})", target.familiar());
            Ok(())
        }
    }
}

/// Catalog entries as a table, or as a registry answer with `--json`.
fn list(entries: Vec<&Entry>, json: bool) -> Result<()> {
    if json {
        let document = registry_document(entries.iter().map(|e| &e.server));
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(());
    }
    let mut rows = vec![["NAME", "KIND", "VERSION", "ENTRY", "DESCRIPTION"].map(String::from)];
    for entry in entries {
        let mut description: String = entry.server.description.chars().take(60).collect();
        if entry.server.description.chars().count() > 60 {
            description.push('…');
        }
        rows.push([
            entry.short_name(),
            entry.kind(),
            entry.server.version.clone(),
            entry.server.name.clone(),
            description,
        ]);
    }
    write_table(&mut std::io::stdout().lock(), &rows)
}

fn show(entry: &Entry) {
    let s = &entry.server;
    println!("{} ({})", s.title.as_deref().unwrap_or(&s.name), s.name);
    println!("Version:     {}", s.version);
    println!("Description: {}", s.description);
    match definition(entry, &InstallOptions::default()) {
        Ok(installed) => {
            let d = &installed.definition;
            match d["command"].as_str() {
                Some(command) => println!("Runs:        {command} {}", words(&d["args"])),
                None => println!("Reaches:     {}", d["url"].as_str().unwrap_or_default()),
            }
        }
        Err(e) => println!("Runs:        (needs more: {e})"),
    }
    for package in &s.packages {
        for a in package
            .runtime_arguments
            .iter()
            .chain(&package.package_arguments)
        {
            println!(
                "Argument:    {} {}{}",
                a.key().unwrap_or("?"),
                if a.is_required { "(required) " } else { "" },
                a.description.as_deref().unwrap_or_default()
            );
        }
        for v in &package.environment_variables {
            println!(
                "Env:         {} {}{}{}",
                v.name,
                if v.is_required { "(required) " } else { "" },
                if v.is_secret { "(secret) " } else { "" },
                v.description.as_deref().unwrap_or_default()
            );
        }
    }
    for remote in &s.remotes {
        for h in &remote.headers {
            println!(
                "Header:      {} {}{}",
                h.name,
                if h.is_secret { "(secret) " } else { "" },
                h.description.as_deref().unwrap_or_default()
            );
        }
    }
}

fn words(args: &Value) -> String {
    args.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Has a running server reread its config, when one answers; says what happened.
async fn reload_running(config: &Path) {
    if !client::server_answers().await {
        return;
    }
    match client::gateway_reload().await {
        Ok(answer) if answer["config"].as_str().map(Path::new) == Some(config) => {
            println!("The running server reloaded {}", config.display());
        }
        Ok(answer) => println!(
            "The running server reloaded its own config ({}); this edit is in {}",
            answer["config"].as_str().unwrap_or("?"),
            config.display()
        ),
        Err(e) => eprintln!("note: the running server did not reload: {e}"),
    }
}

async fn server(store: &Store, args: ServerArgs) -> Result<()> {
    let path = args.files.config_path(store);
    match args.command {
        ServerCommand::Add(add) => {
            let catalog = args.files.catalog(store)?;
            let entry = catalog.find(&add.name)?;
            let label = add.label.clone().unwrap_or_else(|| entry.short_name());
            if !crate::mcp::naming::is_valid(&label) {
                bail!("{label:?} cannot be a server label: use letters, digits, '-' and '_'");
            }
            let mut file = ConfigFile::open(&path)?;
            if file.has_server(&label) && !add.force {
                bail!(
                    "a server labelled {label} is already configured in {}; pass --force to replace it or --name to pick another label",
                    path.display()
                );
            }
            let options = InstallOptions {
                env: add.env,
                secrets: add.secrets,
                args: add.args,
                tools: add.tools,
                prefer: add.package,
                sandbox: Sandbox {
                    cpus: add.cpus,
                    memory: add.memory,
                    network: add.network,
                },
            };
            let installed = definition(entry, &options)?;
            for note in &installed.notes {
                eprintln!("note: {note}");
            }
            let summary = match installed.definition["command"].as_str() {
                Some(command) => format!("{command} {}", words(&installed.definition["args"])),
                None => installed.definition["url"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            };
            file.set_server(&label, installed.definition);
            file.save()?;
            println!(
                "Added {label} ({} {}) to {}: {summary}",
                entry.server.name,
                entry.server.version,
                path.display()
            );
            reload_running(&path).await;
        }
        ServerCommand::Rm { label } => {
            let mut file = ConfigFile::open(&path)?;
            if !file.remove_server(&label) {
                bail!("no MCP server labelled {label} in {}", path.display());
            }
            file.save()?;
            println!("Removed {label}");
            reload_running(&path).await;
        }
        ServerCommand::Enable { label } => set_disabled(&path, &label, false).await?,
        ServerCommand::Disable { label } => set_disabled(&path, &label, true).await?,
        ServerCommand::Ls { json } => {
            let file = ConfigFile::open(&path)?;
            if json {
                let servers: serde_json::Map<String, Value> = file.servers().into_iter().collect();
                println!("{}", serde_json::to_string_pretty(&servers)?);
                return Ok(());
            }
            let mut rows = vec![["LABEL", "ENABLED", "FROM", "RUNS"].map(String::from)];
            for (label, server) in file.servers() {
                let from = match (
                    server["catalog"]["name"].as_str(),
                    server["catalog"]["version"].as_str(),
                ) {
                    (Some(name), Some(version)) => format!("{name}@{version}"),
                    _ => "-".into(),
                };
                let runs = match server["command"].as_str() {
                    Some(command) => format!("{command} {}", words(&server["args"])),
                    None => server["url"].as_str().unwrap_or_default().to_string(),
                };
                let enabled = if server["disabled"].as_bool().unwrap_or(false) {
                    "no"
                } else {
                    "yes"
                };
                rows.push([label, enabled.into(), from, runs]);
            }
            write_table(&mut std::io::stdout().lock(), &rows)?;
        }
        ServerCommand::Status { json } => {
            let answer = client::gateway_servers().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let mut rows =
                vec![["NAME", "STATE", "TOOLS", "CRASHES", "LAST ERROR"].map(String::from)];
            for s in answer["servers"].as_array().into_iter().flatten() {
                rows.push([
                    s["name"].as_str().unwrap_or_default().to_string(),
                    s["state"].as_str().unwrap_or_default().replace('_', " "),
                    s["tools"]
                        .as_u64()
                        .map_or_else(|| "-".to_string(), |n| n.to_string()),
                    s["crashes"].as_u64().unwrap_or(0).to_string(),
                    s["last_error"].as_str().unwrap_or_default().to_string(),
                ]);
            }
            write_table(&mut std::io::stdout().lock(), &rows)?;
        }
    }
    Ok(())
}

async fn set_disabled(path: &Path, label: &str, disable: bool) -> Result<()> {
    let mut file = ConfigFile::open(path)?;
    file.set_disabled(label, disable)?;
    file.save()?;
    println!("{} {label}", if disable { "Disabled" } else { "Enabled" });
    reload_running(path).await;
    Ok(())
}

/// A fresh random token for a gateway client.
fn mint_token() -> String {
    format!("mrt_{}", hex::encode(rand::random::<[u8; 24]>()))
}

async fn client_command(store: &Store, args: ClientArgs) -> Result<()> {
    let config_path = args.files.config_path(store);
    match args.command {
        ClientCommand::Connect {
            client: name,
            transport,
            config_file,
            url,
        } => {
            let mcp_client = McpClient::parse(&name)?;
            let target = match config_file {
                Some(path) => path,
                None => mcp_client.default_path()?,
            };
            let mut gateway = ConfigFile::open(&config_path)?;
            let was_enforced = !gateway.clients().is_empty();
            // HTTP clients always get a token of their own; stdio ones when the gateway asks for one.
            let token = (transport == TransportArg::Http || was_enforced).then(mint_token);
            let absolute = std::path::absolute(&config_path).unwrap_or(config_path.clone());
            let link = match transport {
                TransportArg::Stdio => {
                    let exe = std::env::current_exe().context("cannot tell where `model` is")?;
                    let mut env = BTreeMap::new();
                    if let Some(token) = &token {
                        env.insert(TOKEN_ENV.to_string(), token.clone());
                    }
                    Link::Stdio {
                        command: exe.display().to_string(),
                        args: vec![
                            "--home".into(),
                            store.root().display().to_string(),
                            "mcp".into(),
                            "--mcp-config".into(),
                            absolute.display().to_string(),
                        ],
                        env,
                    }
                }
                TransportArg::Http => Link::Http {
                    url: url.unwrap_or_else(|| format!("{}/mcp", client::server_url())),
                    token: token.clone().unwrap_or_default(),
                },
            };
            // Check the client takes this link before anything is written.
            mcp_client.entry(&link)?;
            if let Some(token) = &token {
                gateway.set_client(json!({"name": mcp_client.name(), "token": token}));
                gateway.save()?;
            }
            let backup = mcp_client.connect(&target, &link)?;
            println!("Connected {} in {}", mcp_client.name(), target.display());
            if let Some(backup) = backup {
                println!("The previous file is kept as {}", backup.display());
            }
            if let (McpClient::Codex, Link::Http { token, .. }) = (mcp_client, &link) {
                println!(
                    "Codex reads the gateway token from {TOKEN_ENV}; set it where Codex runs:\n  export {TOKEN_ENV}={token}"
                );
            }
            if token.is_some() {
                println!(
                    "Gave {} a token of its own (gateway client {} in {})",
                    mcp_client.name(),
                    mcp_client.name(),
                    config_path.display()
                );
                if !was_enforced {
                    println!(
                        "note: the gateway now has clients, so every caller of /mcp and `model mcp` needs a client token"
                    );
                }
                reload_running(&config_path).await;
            }
        }
        ClientCommand::Disconnect {
            client: name,
            config_file,
        } => {
            let mcp_client = McpClient::parse(&name)?;
            let target = match config_file {
                Some(path) => path,
                None => mcp_client.default_path()?,
            };
            let removed = mcp_client.disconnect(&target)?;
            let mut gateway = ConfigFile::open(&config_path)?;
            let revoked = gateway.remove_client(mcp_client.name());
            if revoked {
                gateway.save()?;
            }
            match removed {
                true => println!("Disconnected {} in {}", mcp_client.name(), target.display()),
                false => println!(
                    "{} was not connected in {}",
                    mcp_client.name(),
                    target.display()
                ),
            }
            if revoked {
                println!("Revoked {}'s gateway token", mcp_client.name());
                reload_running(&config_path).await;
            }
        }
        ClientCommand::Ls { json } => {
            let gateway = ConfigFile::open(&config_path)?;
            let mut listed = Vec::new();
            for mcp_client in McpClient::ALL {
                let path = mcp_client.default_path().ok();
                let entry = match &path {
                    Some(path) => mcp_client.connected(path).unwrap_or(None),
                    None => None,
                };
                let transport = entry.as_ref().map(|e| {
                    if e.get("url").is_some() {
                        "http"
                    } else {
                        "stdio"
                    }
                });
                let token = gateway
                    .clients()
                    .iter()
                    .any(|c| c["name"].as_str() == Some(mcp_client.name()));
                listed.push(json!({
                    "client": mcp_client.name(),
                    "config": path.map(|p| p.display().to_string()),
                    "connected": transport,
                    "token": token,
                }));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
                return Ok(());
            }
            let mut rows = vec![["CLIENT", "CONNECTED", "TOKEN", "CONFIG"].map(String::from)];
            for l in &listed {
                rows.push([
                    l["client"].as_str().unwrap_or_default().to_string(),
                    l["connected"].as_str().unwrap_or("no").to_string(),
                    if l["token"].as_bool().unwrap_or(false) {
                        "yes"
                    } else {
                        "no"
                    }
                    .to_string(),
                    l["config"].as_str().unwrap_or("?").to_string(),
                ]);
            }
            write_table(&mut std::io::stdout().lock(), &rows)?;
        }
    }
    Ok(())
}
