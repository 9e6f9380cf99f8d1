//! Shared set-up for integration tests: the real `model` binary with its own store, a real registry
//! (Debian's `docker-registry`, the CNCF distribution registry) on a free loopback port, the real default
//! model, and a loopback TCP proxy that can cut a transfer short.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The default model's GGUF, fetched once by the project's own script.
pub fn default_model_gguf() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/fetch-default-model.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/fetch-default-model.sh");
        assert!(out.status.success(), "fetching the default model failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// A free port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start listening on 127.0.0.1:{port}");
}

/// A CNCF distribution registry with filesystem storage in a temp dir, killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub storage: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Self {
        let binary = ["/usr/bin/docker-registry", "/usr/bin/registry"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("docker-registry is not installed (apt-get install docker-registry)");
        let storage = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                storage.path().join("data").display()
            ),
        )
        .expect("write registry config");
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        wait_for_port(port, "docker-registry");
        Self {
            child,
            port,
            storage,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file holding a blob's bytes in the registry's storage.
    pub fn blob_data_path(&self, digest_hex: &str) -> PathBuf {
        self.storage
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&digest_hex[..2])
            .join(digest_hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `model` binary with a store of its own.
pub struct ModelCli {
    pub home: tempfile::TempDir,
}

impl ModelCli {
    pub fn new() -> Self {
        Self {
            home: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_model"));
        cmd.args(args)
            .env("MODEL_RUNNER_HOME", self.home.path())
            .env_remove("MODEL_RUNNER_REGISTRY_USERNAME")
            .env_remove("MODEL_RUNNER_REGISTRY_TOKEN")
            .env_remove("MODEL_RUNNER_REGISTRY_PASSWORD")
            .env_remove("MODEL_RUNNER_REGISTRY_HOST")
            .env("DOCKER_CONFIG", self.home.path().join("docker-config"))
            // No runner answers here unless a test starts one: `run` stays in process.
            .env("MODEL_RUNNER_HOST", "127.0.0.1")
            .env("MODEL_RUNNER_PORT", "1")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run model")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "model {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "model {args:?} should have failed but printed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.home.path().join("blobs/sha256")
    }

    pub fn incoming_dir(&self) -> PathBuf {
        self.home.path().join("incoming")
    }

    /// Files under blobs/ and partial downloads, for "the store is unchanged" checks.
    pub fn stored_files(&self) -> Vec<String> {
        let mut names = Vec::new();
        for dir in [self.blobs_dir(), self.home.path().join("manifests/sha256")] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                names.extend(
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned()),
                );
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.incoming_dir()) {
            names.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".partial")),
            );
        }
        names.sort();
        names
    }
}

/// How the proxy treats traffic.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProxyMode {
    /// Forward everything.
    Pass = 0,
    /// Cut every connection once this many response bytes have passed on it (set by `cut_after`).
    CutAfter = 1,
    /// Answer every request with HTTP 500.
    Fail500 = 2,
}

/// A loopback TCP proxy in front of a registry that counts response bytes and can cut them short.
pub struct Proxy {
    pub port: u16,
    mode: Arc<AtomicU64>,
    cut_after: Arc<AtomicU64>,
    pub response_bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let proxy = Self {
            port,
            mode: Arc::new(AtomicU64::new(ProxyMode::Pass as u64)),
            cut_after: Arc::new(AtomicU64::new(u64::MAX)),
            response_bytes: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (mode, cut_after, counter, stop) = (
            proxy.mode.clone(),
            proxy.cut_after.clone(),
            proxy.response_bytes.clone(),
            proxy.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let (mode, cut_after, counter) =
                            (mode.clone(), cut_after.clone(), counter.clone());
                        std::thread::spawn(move || {
                            serve(client, upstream_port, mode, cut_after, counter)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        proxy
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: ProxyMode, cut_after: u64) {
        self.cut_after.store(cut_after, Ordering::SeqCst);
        self.mode.store(mode as u64, Ordering::SeqCst);
    }

    pub fn reset_count(&self) {
        self.response_bytes.store(0, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut client: TcpStream,
    upstream_port: u16,
    mode: Arc<AtomicU64>,
    cut_after: Arc<AtomicU64>,
    counter: Arc<AtomicU64>,
) {
    if mode.load(Ordering::SeqCst) == ProxyMode::Fail500 as u64 {
        let mut buf = [0u8; 4096];
        let _ = client.read(&mut buf);
        let body = r#"{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}"#;
        let _ = write!(
            client,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
        return;
    };
    let (Ok(mut client_read), Ok(mut upstream_write)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut passed = 0u64;
    loop {
        let n = match upstream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let cutting = mode.load(Ordering::SeqCst) == ProxyMode::CutAfter as u64;
        let limit = cut_after.load(Ordering::SeqCst);
        let n = if cutting && passed + n as u64 > limit {
            (limit - passed.min(limit)) as usize
        } else {
            n
        };
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
        passed += n as u64;
        counter.fetch_add(n as u64, Ordering::SeqCst);
        if cutting && passed >= limit {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
}

/// The Python interpreter of the test venv (made by scripts/setup.sh) with the `openai` package.
pub fn python() -> PathBuf {
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "run scripts/setup.sh first: it makes .venv with the openai package"
    );
    venv
}

/// A store holding the default model as `ai/smollm2:latest`.
pub fn cli_with_default_model() -> ModelCli {
    let cli = ModelCli::new();
    let gguf = default_model_gguf();
    cli.ok(&[
        "package",
        "--gguf",
        gguf.to_str().unwrap(),
        "ai/smollm2:latest",
    ]);
    cli
}

/// The port in `model serve`'s "listening on http://ADDR" line, where `text` has one.
pub fn listening_port(text: &str) -> Option<u16> {
    let (_, rest) = text.split_once("listening on http://")?;
    let (_, port) = rest.lines().next()?.trim().rsplit_once(':')?;
    port.parse().ok()
}

/// The port `model serve` reports it bound ("listening on http://ADDR"), read from its stderr; every
/// line is passed on to the test's own stderr, then and after. The server binds port 0 and says which
/// port it got, so two tests never race for one "free" port. `None` if it ends before saying.
fn bound_port(stderr: std::process::ChildStderr) -> Option<u16> {
    use std::io::BufRead;
    let (found, port) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            if let (Some(port), Some(sender)) = (listening_port(&line), &found) {
                let _ = sender.send(port);
                found = None;
            }
        }
    });
    port.recv_timeout(Duration::from_secs(60)).ok()
}

/// `model serve` on a loopback port of the system's choosing, killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn start(cli: &ModelCli, extra: &[&str]) -> Self {
        let mut args = vec!["serve", "--host", "127.0.0.1"];
        if !extra.contains(&"--port") {
            args.extend_from_slice(&["--port", "0"]);
        }
        args.extend_from_slice(extra);
        let mut child = cli
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start model serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let port = bound_port(stderr).unwrap_or_else(|| {
            let status = child.wait();
            panic!("model serve exited before listening: {status:?}")
        });
        wait_for_port(port, "model serve");
        Self { child, port }
    }

    /// The server's process id (for reading its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Runs a Python test script against this server with the default model.
    pub fn run_python(&self, script: &str) -> String {
        self.run_python_with(script, "ai/smollm2:latest")
    }

    /// Runs a Python test script against this server with `model`.
    pub fn run_python_with(&self, script: &str, model: &str) -> String {
        let out = Command::new(python())
            .arg(repo_root().join("tests/python").join(script))
            .env("BASE_URL", self.base_url())
            .env("MODEL", model)
            .output()
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{script} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `model serve` with the administrator key `admin_key` and the gateway configuration `config` (written
/// to the store's home): gateway clients' tokens beside the key.
pub fn serve_with_gateway(cli: &ModelCli, admin_key: &str, config: &Value) -> Server {
    let path = cli.home.path().join("mcp.json");
    std::fs::write(&path, config.to_string()).expect("write the gateway configuration");
    Server::start(
        cli,
        &[
            "--api-key",
            admin_key,
            "--mcp-config",
            path.to_str().expect("utf-8 path"),
        ],
    )
}

/// The MCP_* variables (paths of the MCP reference servers) of the test installation (installed on first use; idempotent).
pub fn mcp_env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let script = repo_root().join("scripts/setup-mcp.sh");
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "'{}' >/dev/null && . \"${{MODEL_RUNNER_CACHE:-$HOME/.cache/model-runner}}/mcp/env.sh\" && env",
                script.display()
            ))
            .output()
            .expect("run scripts/setup-mcp.sh");
        assert!(
            out.status.success(),
            "scripts/setup-mcp.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.starts_with("MCP_"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

pub fn mcp_var(name: &str) -> String {
    mcp_env()
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not set by scripts/setup-mcp.sh"))
        .clone()
}

pub fn everything_server(extra: Value) -> Value {
    let mut server = json!({"command": mcp_var("MCP_NODE"), "args": [mcp_var("MCP_SERVER_EVERYTHING_JS"), "stdio"]});
    if let (Some(server), Some(extra)) = (server.as_object_mut(), extra.as_object()) {
        server.extend(extra.clone());
    }
    server
}

pub fn time_server(extra: Value) -> Value {
    let mut server =
        json!({"command": mcp_var("MCP_SERVER_TIME_BIN"), "args": ["--local-timezone", "UTC"]});
    if let (Some(server), Some(extra)) = (server.as_object_mut(), extra.as_object()) {
        server.extend(extra.clone());
    }
    server
}

/// An engine on `gguf` from the library (no server): `context` tokens per sequence, `sequences` of them,
/// keys and values stored as `kv_type`.
pub fn load_engine(
    gguf: &Path,
    context: usize,
    sequences: usize,
    kv_type: models::KvType,
) -> model_runner::engine::Engine {
    load_engine_files(vec![gguf.to_path_buf()], context, sequences, kv_type)
}

/// `load_engine` on a model in several files (a split GGUF's shards).
pub fn load_engine_files(
    gguf: Vec<PathBuf>,
    context: usize,
    sequences: usize,
    kv_type: models::KvType,
) -> model_runner::engine::Engine {
    let files = model_runner::engine::ModelFiles {
        gguf,
        chat_template: None,
        context_size: None,
    };
    let options = model_runner::engine::EngineOptions {
        context_size: Some(context),
        sequences,
        kv_type,
        ..Default::default()
    };
    model_runner::engine::Engine::load(&files, &options).expect("load engine")
}

/// A JSON fixture under tests/fixtures (`relative` as `architectures/qwen3.json`).
pub fn fixture(relative: &str) -> Value {
    let path = repo_root().join("tests/fixtures").join(relative);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture JSON")
}

/// Writes a family's GGUF of `file_type` into `dir` with scripts/synthesize-gguf.py (its tokenizer copied
/// from `tokenizer_from` where the family borrows one) and checks it is byte for byte the file llama.cpp
/// ran, whose sha256 the fixture recorded.
pub fn synthesize_gguf(
    family: &str,
    file_type: &str,
    tokenizer_from: Option<&Path>,
    sha256: &str,
    dir: &Path,
) -> PathBuf {
    use sha2::Digest as _;
    let out = dir.join(format!("{family}-{file_type}.gguf"));
    let mut command = Command::new(python());
    command
        .arg(repo_root().join("scripts/synthesize-gguf.py"))
        .args(["--family", family, "--type", file_type, "--out"])
        .arg(&out);
    if let Some(tokenizer) = tokenizer_from {
        command.arg("--tokenizer-from").arg(tokenizer);
    }
    let status = command.status().expect("run scripts/synthesize-gguf.py");
    assert!(status.success(), "synthesizing {family} {file_type} failed");
    let bytes = std::fs::read(&out).expect("synthesized GGUF");
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&bytes)),
        sha256,
        "{family} {file_type}: the synthesized file differs from the one llama.cpp ran; the gguf or numpy \
         versions in .venv differ from the fixture's (scripts/setup-tests.sh pins them)"
    );
    out
}
