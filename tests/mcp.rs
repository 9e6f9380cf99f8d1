//! The MCP gateway against real MCP servers (the reference servers from npm and PyPI, installed by
//! `scripts/setup-mcp.sh`) and real clients (the Python MCP SDK, the OpenAI SDK, the MCP conformance
//! suite). Everything talks to 127.0.0.1; every wait is bounded.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    ModelCli, cli_with_default_model, everything_server, free_port, mcp_env, mcp_var as var,
    python, repo_root, time_server,
};
use serde_json::{Value, json};

/// `model serve --mcp-config` with its log captured; stopped with SIGTERM (the graceful path) on drop.
struct Gateway {
    child: Child,
    port: u16,
    log: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start(cli: &ModelCli, config: &Value, extra: &[&str]) -> Self {
        Self::start_with_env(cli, config, extra, &[])
    }

    /// As `start`, with `env` added to the runner's environment.
    fn start_with_env(
        cli: &ModelCli,
        config: &Value,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_in(cli, config, extra, env, None)
    }

    /// As `start_with_env`, the runner working in `cwd` (where `npx` finds locally installed packages).
    fn start_in(
        cli: &ModelCli,
        config: &Value,
        extra: &[&str],
        env: &[(&str, &str)],
        cwd: Option<&std::path::Path>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("mcp.json");
        std::fs::write(&config_path, config.to_string()).expect("write config");
        let log = dir.path().join("serve.log");
        let mut args = vec![
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--mcp-config",
            config_path.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        let path = format!(
            "{}:{}",
            repo_root().join("tests/fixtures/fake-docker").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = cli.command(&args);
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let child = command
            .envs(mcp_env())
            .env("PATH", path)
            .envs(env.iter().copied())
            .env_remove("MODEL_RUNNER_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start model serve");
        // The server binds port 0 and logs the port it got.
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(port) = common::listening_port(&text) {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "model serve did not listen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            child,
            port,
            log,
            config: config_path,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a script of tests/python against this gateway with the default model and the files of
    /// `files`; it must print `marker`, else the script's output and the server's log are shown.
    fn run_python(&self, script: &str, files: &Files, marker: &str) {
        let out = Command::new(python())
            .arg(repo_root().join("tests/python").join(script))
            .env("BASE_URL", self.url("/v1"))
            .env("MCP_URL", self.url("/mcp"))
            .env("MODEL", "ai/smollm2:latest")
            .env("FILES_DIR", &files.path)
            .output()
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{stdout}");
        assert!(
            stdout.contains(marker),
            "{script}: {stdout}\n{}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Processes whose parent is the server (its MCP servers' group leaders).
    fn children(&self) -> Vec<(u32, String)> {
        children_of(self.child.id())
    }

    /// SIGTERM, then waits for the exit; returns whether it exited in time.
    fn stop(&mut self) -> bool {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) && !self.stop() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // ppid is the second field after the parenthesised command name.
        let Some(after) = stat.rsplit_once(") ").map(|(_, rest)| rest.to_string()) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            let cmdline = std::fs::read(entry.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            found.push((pid, cmdline));
        }
    }
    found
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// A raw streamable-HTTP MCP session (JSON-RPC over POST), to see statuses and headers the SDKs hide.
struct Session {
    url: String,
    token: Option<String>,
    id: Option<String>,
    next: u64,
    http: reqwest::blocking::Client,
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    /// The JSON-RPC message that answers the request (from a JSON body or the SSE stream).
    message: Value,
}

impl Session {
    fn new(url: String, token: Option<&str>) -> Self {
        Self {
            url,
            token: token.map(String::from),
            id: None,
            next: 1,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        }
    }

    fn post(&mut self, body: Value) -> Reply {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = &self.id {
            request = request.header("mcp-session-id", id);
        }
        let response = request.json(&body).send().expect("POST /mcp");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().unwrap_or_default();
        let message = serde_json::from_str(&text).unwrap_or_else(|_| {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .find(|m| m.get("id").is_some())
                .unwrap_or(Value::Null)
        });
        Reply {
            status,
            headers,
            message,
        }
    }

    fn request(&mut self, method: &str, params: Value) -> Reply {
        let id = self.next;
        self.next += 1;
        self.post(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
    }

    fn initialize(&mut self) -> Reply {
        let reply = self.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "model-runner-tests", "version": "1"}}),
        );
        if reply.status == 200 {
            self.id = reply
                .headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let ack = self.post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
            assert!(ack.status < 300, "initialized: {}", ack.status);
        }
        reply
    }

    fn tool_names(&mut self) -> Vec<String> {
        let reply = self.request("tools/list", json!({}));
        assert_eq!(reply.status, 200, "{}", reply.message);
        reply.message["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .filter_map(|t| t["name"].as_str().map(String::from))
            .collect()
    }

    fn call(&mut self, name: &str, arguments: Value) -> Reply {
        self.request("tools/call", json!({"name": name, "arguments": arguments}))
    }

    /// `DELETE` with this session's id: the HTTP status.
    fn delete(&self) -> u16 {
        let mut request = self
            .http
            .delete(&self.url)
            .header("mcp-protocol-version", "2025-11-25");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = &self.id {
            request = request.header("mcp-session-id", id);
        }
        request.send().expect("DELETE /mcp").status().as_u16()
    }
}

fn result_text(reply: &Reply) -> String {
    reply.message["result"]["content"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn is_error(reply: &Reply) -> bool {
    reply.message["result"]["isError"] == json!(true)
}

fn metric(gateway: &Gateway, series: &str) -> Option<f64> {
    let text = reqwest::blocking::get(gateway.url("/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A directory with known files for the filesystem server, under a plain path a small model can copy.
struct Files {
    _root: TempDirPath,
    path: PathBuf,
}

/// A directory of two files for the filesystem server. Its path goes into prompts the default model
/// answers, so it is the same on every run of a test (named from the test's thread, which the harness
/// names after the test; letters only): a path with the process id changed the prompt, and with it the
/// small model's call, from run to run.
fn files_dir() -> Files {
    thread_local!(static CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
    let call = CALLS.with(|c| c.replace(c.get() + 1));
    let test = std::thread::current().name().unwrap_or("main").to_string();
    let mut hash = call.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xCBF2_9CE4_8422_2325;
    for byte in test.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3);
    }
    let letters: String = (0..8)
        .map(|i| char::from(b'a' + ((hash >> (i * 6)) % 26) as u8))
        .collect();
    let root = std::env::temp_dir().join(format!("mcp-{letters}"));
    // Left by a run that was killed: ours to replace.
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir(&root).expect("mkdir");
    let root = TempDirPath(root);
    let path = root.0.join("documents");
    std::fs::create_dir(&path).expect("mkdir");
    std::fs::write(path.join("alpha.txt"), "first file\n").expect("write");
    std::fs::write(path.join("beta.md"), "# second\n").expect("write");
    Files { _root: root, path }
}

/// A directory removed on drop.
struct TempDirPath(PathBuf);

impl Drop for TempDirPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// mcp-proxy serving server-everything over streamable HTTP on a free port, killed on drop.
struct Proxy(Child, u16);

impl Proxy {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new(var("MCP_PROXY_BIN"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--"])
            .arg(var("MCP_NODE"))
            .arg(var("MCP_SERVER_EVERYTHING_JS"))
            .arg("stdio")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mcp-proxy");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mcp-proxy did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self(child, port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SECRET: &str = "sk-test-0123456789-never-logged";

/// The Python MCP SDK lists and calls tools of stdio servers, a `docker run -i` server and an HTTP
/// server through `/mcp`; the secret reaches the server's environment but no log line; calls are logged
/// and counted; SIGTERM stops every server process.
#[test]
fn python_sdk_reaches_real_servers_through_the_gateway() {
    let cli = cli_with_default_model();
    let files = files_dir();
    let proxy = Proxy::start();
    let secret_file = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(secret_file.path(), format!("{SECRET}\n")).expect("write secret");
    let config = json!({
        "mcpServers": {
            "everything": everything_server(json!({"env": {"SERVICE_TOKEN": "${SERVICE_TOKEN}"}})),
            "fs": {"command": var("MCP_NODE"), "args": [var("MCP_SERVER_FILESYSTEM_JS"), &files.path],
                   "tools": ["list_directory", "read_text_file"]},
            "time": time_server(json!({})),
            "docker_time": {"command": "docker", "args": ["run", "-i", "--rm", "mcp/time"],
                            "env": {"MCP_SERVER_TIME_BIN": "${MCP_SERVER_TIME_BIN}"}},
            "proxied": {"url": format!("http://127.0.0.1:{}/mcp", proxy.1)}
        },
        "gateway": {"secrets": {"SERVICE_TOKEN": {"file": secret_file.path()}}}
    });
    let mut gateway = Gateway::start(&cli, &config, &[]);
    let out = Command::new(var("MCP_PYTHON"))
        .arg(repo_root().join("tests/python/mcp_gateway_client.py"))
        .env("MCP_URL", gateway.url("/mcp"))
        .env("FILES_DIR", &files.path)
        .env("SECRET", SECRET)
        .env("MODEL", "ai/smollm2:latest")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("gateway client ok"),
        "{stdout}\n{stderr}\n--- server log ---\n{}",
        gateway.log()
    );
    assert!(
        !stderr.contains("Session termination failed"),
        "the SDK's DELETE of its session is answered as it expects:\n{stderr}"
    );
    let echo_calls = metric(
        &gateway,
        "model_runner:mcp_tool_calls_total{server=\"everything\",tool=\"everything__echo\",client=\"anonymous\"}",
    );
    assert!(
        echo_calls >= Some(2.0),
        "echo calls counted: {echo_calls:?}"
    );
    assert!(
        metric(
            &gateway,
            "model_runner:mcp_tool_errors_total{server=\"everything\",tool=\"everything__get-sum\""
        )
        .is_some_and(|v| v >= 2.0),
        "schema-invalid calls count as errors"
    );
    let servers = gateway.children();
    assert!(
        servers.len() >= 4,
        "stdio servers run as children: {servers:?}"
    );
    assert!(gateway.stop(), "the server exits on SIGTERM");
    // The children are told to stop as the gateway exits; on a loaded machine they take a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while servers.iter().any(|(pid, _)| alive(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (pid, cmd) in &servers {
        assert!(
            !alive(*pid),
            "MCP server {pid} ({cmd}) outlived the gateway"
        );
    }
    let log = gateway.log();
    let call_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"event\":\"mcp_call\""))
        .collect();
    assert!(call_lines.len() >= 10, "every call is logged:\n{log}");
    assert!(
        call_lines.iter().any(|l| l.contains("[REDACTED]")),
        "the echo of the secret is logged redacted"
    );
    assert!(!log.contains(SECRET), "a secret reached the log:\n{log}");
}

/// Clients by bearer token: unknown tokens are refused, each client sees and calls only its servers, and
/// a client over its rate gets 429 with Retry-After while another is unaffected.
#[test]
fn gateway_clients_are_authenticated_limited_and_rate_limited() {
    let cli = ModelCli::new();
    let config = json!({
        "mcpServers": {"everything": everything_server(json!({})), "time": time_server(json!({}))},
        "gateway": {"clients": [
            {"name": "agent", "token": "agent-token-1234", "servers": ["everything"], "rateLimit": {"perMinute": 3}},
            {"name": "ops", "token": "ops-token-5678", "tools": ["time__get_current_time"], "callsPerDay": 2}
        ]}
    });
    let gateway = Gateway::start(&cli, &config, &[]);
    let url = gateway.url("/mcp");
    assert_eq!(Session::new(url.clone(), None).initialize().status, 401);
    assert_eq!(
        Session::new(url.clone(), Some("wrong")).initialize().status,
        401
    );

    let mut agent = Session::new(url.clone(), Some("agent-token-1234"));
    assert_eq!(agent.initialize().status, 200);
    let names = agent.tool_names();
    assert!(names.iter().any(|n| n == "everything__echo"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("time__")), "{names:?}");
    let denied = agent.call("time__get_current_time", json!({"timezone": "UTC"}));
    assert!(
        is_error(&denied) && result_text(&denied).contains("may not call"),
        "{}",
        denied.message
    );
    for _ in 0..2 {
        let ok = agent.call("everything__echo", json!({"message": "x"}));
        assert!(!is_error(&ok), "{}", ok.message);
    }
    let limited = agent.call("everything__echo", json!({"message": "x"}));
    assert_eq!(limited.status, 429, "{}", limited.message);
    assert!(limited.headers.contains_key("retry-after"));
    assert!(
        limited.message["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("rate limit")
    );

    let mut ops = Session::new(url, Some("ops-token-5678"));
    assert_eq!(ops.initialize().status, 200);
    assert_eq!(
        ops.tool_names().iter().filter(|n| n.contains("__")).count(),
        1
    );
    let now = ops.call("time__get_current_time", json!({"timezone": "UTC"}));
    assert!(!is_error(&now), "{}", now.message);
    assert!(is_error(
        &ops.call("everything__echo", json!({"message": "x"}))
    ));
    // Its daily quota (2 calls, the refused one counted: it was a call) is spent: refused until midnight,
    // and /metrics says so.
    let over = ops.call("time__get_current_time", json!({"timezone": "UTC"}));
    assert_eq!(over.status, 429, "{}", over.message);
    let metrics = reqwest::blocking::get(gateway.url("/metrics"))
        .and_then(|r| r.text())
        .expect("metrics");
    assert!(
        metrics.contains("model_runner:mcp_client_calls_today{client=\"ops\"} 2")
            && metrics.contains("model_runner:mcp_client_calls_per_day{client=\"ops\"} 2"),
        "{metrics}"
    );

    // The chat API knows gateway clients too: an unknown key may not use MCP tools.
    let response = reqwest::blocking::Client::new()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth("wrong")
        .json(
            &json!({"model": "x", "messages": [{"role": "user", "content": "hi"}],
                      "tools": [{"type": "mcp", "server_label": "time"}]}),
        )
        .send()
        .expect("chat");
    assert!(
        matches!(response.status().as_u16(), 403 | 404),
        "{}",
        response.status()
    );
}

/// Resources, resource templates, prompts and subscriptions of server-everything through `/mcp`, read by
/// the Python SDK as a client allowed the server; a client allowed only another server sees none of
/// them and is refused reading them.
#[test]
fn resources_and_prompts_are_relayed_namespaced_and_access_checked() {
    let cli = ModelCli::new();
    let config = json!({
        "mcpServers": {"everything": everything_server(json!({})), "time": time_server(json!({}))},
        "gateway": {"clients": [
            {"name": "reader", "token": "reader-token-1234", "servers": ["everything"]},
            {"name": "outsider", "token": "outsider-token-5678", "servers": ["time"]}
        ]}
    });
    let gateway = Gateway::start(&cli, &config, &[]);
    let started = Instant::now();
    let out = Command::new(var("MCP_PYTHON"))
        .arg(repo_root().join("tests/python/mcp_resources_client.py"))
        .env("MCP_URL", gateway.url("/mcp"))
        .env("READER_TOKEN", "reader-token-1234")
        .env("OUTSIDER_TOKEN", "outsider-token-5678")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("resources client ok"),
        "{stdout}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        gateway.log()
    );
    eprintln!("resources client: {:.1} s", started.elapsed().as_secs_f64());
    let log = gateway.log();
    assert!(
        log.contains("\"event\":\"mcp_resource_read\"")
            && log.contains("\"event\":\"mcp_prompt_get\""),
        "reads and prompt fetches are logged:\n{log}"
    );
    assert!(
        log.contains("\"outcome\":\"denied\""),
        "the outsider's refusals are logged:\n{log}"
    );
}

/// Resource subscriptions relayed through `/mcp`, with the Python SDK on both sides (a server on the
/// 2.x SDK's low-level `Server`, in `.venv`, that sends `notifications/resources/updated` when a tool changes a note): the subscribed
/// session receives the update under the gateway's URI, a session of the same client that did not
/// subscribe receives nothing, an unsubscribe reaches the server, a server without subscriptions and
/// another client's server are refused, and `resources.subscribe` is advertised only to clients with
/// a server that offers it.
#[test]
fn resource_updates_reach_only_the_sessions_subscribed_to_them() {
    let cli = ModelCli::new();
    let server = |extra: &[&str]| {
        let mut args = vec![
            repo_root()
                .join("tests/python/mcp_subscribe_server.py")
                .to_string_lossy()
                .to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        json!({"command": python(), "args": args})
    };
    let config = json!({
        "mcpServers": {"notes": server(&[]), "plain": server(&["--no-subscribe"])},
        "gateway": {"clients": [
            {"name": "both", "token": "both-token-1234", "servers": ["notes", "plain"]},
            {"name": "plain", "token": "plain-token-5678", "servers": ["plain"]}
        ]}
    });
    let gateway = Gateway::start(&cli, &config, &[]);
    let started = Instant::now();
    let out = Command::new(var("MCP_PYTHON"))
        .arg(repo_root().join("tests/python/mcp_subscribe_client.py"))
        .env("MCP_URL", gateway.url("/mcp"))
        .env("TOKEN", "both-token-1234")
        .env("PLAIN_TOKEN", "plain-token-5678")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("subscribe client ok"),
        "{stdout}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        gateway.log()
    );
    eprintln!("subscribe client: {:.1} s", started.elapsed().as_secs_f64());
}

/// A server that pages its resources forever, offers a URI with a control character, answers a read with
/// a malformed result and a read and a prompt with 9 MiB: the list is cut at the gateway's bound, the
/// odd URI left out, each bad answer is an MCP error naming the server, and the gateway keeps serving.
#[test]
fn hostile_resource_servers_are_cut_refused_and_survived() {
    let cli = ModelCli::new();
    let config = json!({"mcpServers": {"hostile": {
        "command": var("MCP_PYTHON"),
        "args": [repo_root().join("tests/python/mcp_hostile_server.py")],
        "callTimeoutSecs": 5
    }}});
    let gateway = Gateway::start(&cli, &config, &[]);
    let mut session = Session::new(gateway.url("/mcp"), None);
    let init = session.initialize();
    assert_eq!(init.status, 200);
    let capabilities = &init.message["result"]["capabilities"];
    assert!(
        capabilities["resources"].is_object() && capabilities["prompts"].is_object(),
        "{capabilities}"
    );
    let listed = session.request("resources/list", json!({}));
    let uris: Vec<&str> = listed.message["result"]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert_eq!(uris.len(), 64, "cut at 64 pages: {uris:?}");
    assert!(
        uris.iter()
            .all(|u| u.starts_with("model-runner://hostile/loop://")),
        "{uris:?}"
    );
    let error_of = |reply: &Reply| reply.message["error"]["message"].as_str().map(String::from);
    let malformed = session.request(
        "resources/read",
        json!({"uri": "model-runner://hostile/loop://1"}),
    );
    assert!(
        error_of(&malformed).is_some_and(|m| m.contains("hostile")),
        "{}",
        malformed.message
    );
    let huge = session.request(
        "resources/read",
        json!({"uri": "model-runner://hostile/loop://2"}),
    );
    assert!(
        error_of(&huge).is_some_and(|m| m.contains("hostile") && m.contains("larger than")),
        "{}",
        huge.message
    );
    let prompt = session.request("prompts/get", json!({"name": "hostile__huge"}));
    assert!(
        error_of(&prompt).is_some_and(|m| m.contains("larger than")),
        "{}",
        prompt.message
    );
    let fine = session.request(
        "resources/read",
        json!({"uri": "model-runner://hostile/loop://3"}),
    );
    let contents = &fine.message["result"]["contents"][0];
    assert_eq!(contents["text"], "fine", "{}", fine.message);
    assert_eq!(contents["uri"], "model-runner://hostile/loop://3");
}

/// A server's sampling request (server-everything's `trigger-sampling-request`) is answered by the local
/// model through the chat pipeline when the server's config allows it, capped at its `maxTokens`; a
/// server without `sampling` is not offered sampling at all (so that tool is not even listed).
#[test]
fn sampling_requests_are_answered_by_the_local_model_only_when_allowed() {
    let cli = cli_with_default_model();
    let config = json!({"mcpServers": {
        "sampler": everything_server(json!({"sampling": {"model": "ai/smollm2:latest", "maxTokens": 8}})),
        "plain": everything_server(json!({}))
    }});
    let gateway = Gateway::start(&cli, &config, &[]);
    let mut session = Session::new(gateway.url("/mcp"), None);
    assert_eq!(session.initialize().status, 200);
    let names = session.tool_names();
    assert!(
        names
            .iter()
            .any(|n| n == "sampler__trigger-sampling-request"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "plain__trigger-sampling-request"),
        "{names:?}"
    );
    let started = Instant::now();
    let reply = session.call(
        "sampler__trigger-sampling-request",
        json!({"prompt": "Say hello.", "maxTokens": 100}),
    );
    let text = result_text(&reply);
    assert!(
        !is_error(&reply)
            && text.contains("LLM sampling result")
            && text.contains("ai/smollm2:latest")
            && text.contains("assistant"),
        "{}\n--- server log ---\n{}",
        reply.message,
        gateway.log()
    );
    eprintln!("sampled in {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        gateway
            .log()
            .lines()
            .any(|l| l.contains("\"event\":\"mcp_sampling\"") && l.contains("\"max_tokens\":8")),
        "the request is logged, capped at the config's maxTokens:\n{}",
        gateway.log()
    );
}

/// A crashed server is restarted on the next call; a call past its timeout is an error result; an idle
/// server is stopped and started again on demand; a server that cannot start trips the breaker.
#[test]
fn servers_restart_after_crashes_time_out_sleep_when_idle_and_trip_the_breaker() {
    let cli = ModelCli::new();
    let config = json!({
        "mcpServers": {
            "everything": everything_server(json!({"callTimeoutSecs": 1.5})),
            "sleepy": time_server(json!({"idleTimeoutSecs": 1})),
            "flaky": everything_server(json!({"callTimeoutSecs": 0.5})),
            "broken": {"command": "/nonexistent/mcp-server"}
        },
        "gateway": {"breakerFailures": 2, "breakerCooldownSecs": 30}
    });
    let gateway = Gateway::start(&cli, &config, &[]);
    let mut session = Session::new(gateway.url("/mcp"), None);
    assert_eq!(session.initialize().status, 200);
    assert!(!is_error(
        &session.call("everything__echo", json!({"message": "a"}))
    ));

    // Crash: kill the server's process group; the next call starts a new one.
    let everything: Vec<u32> = gateway
        .children()
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("server-everything"))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(everything.len(), 1, "{:?}", gateway.children());
    Command::new("kill")
        .args(["-KILL", &everything[0].to_string()])
        .status()
        .expect("kill");
    std::thread::sleep(Duration::from_millis(300));
    let after = session.call("everything__echo", json!({"message": "back"}));
    assert!(
        !is_error(&after) && result_text(&after) == "Echo: back",
        "{}",
        after.message
    );
    let restarted: Vec<u32> = gateway
        .children()
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("server-everything"))
        .map(|(pid, _)| pid)
        .collect();
    assert!(
        restarted.len() == 1 && restarted[0] != everything[0],
        "{restarted:?}"
    );
    assert_eq!(
        metric(
            &gateway,
            "model_runner:mcp_server_crashes_total{server=\"everything\"}"
        ),
        Some(1.0)
    );

    // Timeout: a 5-second operation against a 1.5-second limit.
    let started = Instant::now();
    let slow = session.call(
        "everything__trigger-long-running-operation",
        json!({"duration": 5, "steps": 5}),
    );
    assert!(
        is_error(&slow) && result_text(&slow).contains("did not answer within"),
        "{}",
        slow.message
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(!is_error(
        &session.call("everything__echo", json!({"message": "still fine"}))
    ));

    // Idle shutdown, then a start on demand.
    let first = session.call("sleepy__get_current_time", json!({"timezone": "UTC"}));
    assert!(!is_error(&first), "{}", first.message);
    assert_eq!(
        metric(&gateway, "model_runner:mcp_server_up{server=\"sleepy\"}"),
        Some(1.0)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&gateway, "model_runner:mcp_server_up{server=\"sleepy\"}") != Some(0.0) {
        assert!(Instant::now() < deadline, "the idle server was not stopped");
        std::thread::sleep(Duration::from_millis(200));
    }
    while gateway
        .children()
        .iter()
        .any(|(_, cmd)| cmd.contains("mcp-server-time"))
    {
        assert!(
            Instant::now() < deadline,
            "the idle server's process is still running"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let woken = session.call("sleepy__get_current_time", json!({"timezone": "UTC"}));
    assert!(!is_error(&woken), "{}", woken.message);

    // Breaker: two timeouts in a row open it; then even a quick call fails fast.
    for _ in 0..2 {
        let slow = session.call(
            "flaky__trigger-long-running-operation",
            json!({"duration": 3, "steps": 3}),
        );
        assert!(
            is_error(&slow) && result_text(&slow).contains("did not answer"),
            "{}",
            slow.message
        );
    }
    let started = Instant::now();
    let refused = session.call("flaky__echo", json!({"message": "x"}));
    assert!(
        is_error(&refused) && result_text(&refused).contains("circuit breaker is open"),
        "{}",
        refused.message
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // A server that cannot start is left out of the list, with the reason in the log.
    let names = session.tool_names();
    assert!(
        !names.iter().any(|n| n.starts_with("broken__")),
        "{names:?}"
    );
    let log = gateway.log();
    assert!(
        log.contains("broken") && log.contains("failed to start"),
        "{log}"
    );
}

/// Results of read-only tools are cached for the server's TTL; a long-lived server starts with the
/// gateway and is brought back in the background after a crash.
#[test]
fn read_only_results_are_cached_and_long_lived_servers_stay_up() {
    let cli = ModelCli::new();
    let files = files_dir();
    let config = json!({"mcpServers": {
        "fs": {"command": var("MCP_NODE"), "args": [var("MCP_SERVER_FILESYSTEM_JS"), &files.path],
               "cacheTtlSecs": 2},
        "clock": time_server(json!({"longLived": true}))
    }});
    let gateway = Gateway::start(&cli, &config, &[]);
    let up = |gateway: &Gateway| metric(gateway, "model_runner:mcp_server_up{server=\"clock\"}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while up(&gateway) != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the long-lived server did not start by itself"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut session = Session::new(gateway.url("/mcp"), None);
    assert_eq!(session.initialize().status, 200);
    let file = files.path.join("alpha.txt");
    let read = |session: &mut Session| {
        let reply = session.call("fs__read_text_file", json!({"path": file}));
        assert!(!is_error(&reply), "{}", reply.message);
        result_text(&reply)
    };
    assert!(read(&mut session).contains("first file"));
    std::fs::write(&file, "changed\n").expect("rewrite");
    assert!(
        read(&mut session).contains("first file"),
        "served from the cache"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        read(&mut session).contains("changed"),
        "the cache entry expired"
    );

    let clock: Vec<u32> = gateway
        .children()
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("mcp-server-time"))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(clock.len(), 1);
    Command::new("kill")
        .args(["-KILL", &clock[0].to_string()])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(
        &gateway,
        "model_runner:mcp_server_crashes_total{server=\"clock\"}",
    ) != Some(1.0)
        || up(&gateway) != Some(1.0)
    {
        assert!(
            Instant::now() < deadline,
            "the long-lived server was not restarted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `--mcp-tools discovery` gives requests that bring no tools the discovery meta-tools (and the loop);
/// requests with tools of their own are left alone.
#[test]
fn serve_mcp_tools_attaches_tools_to_requests_without_any() {
    let cli = cli_with_default_model();
    let config = json!({"mcpServers": {"time": time_server(json!({}))}});
    let gateway = Gateway::start(&cli, &config, &["--mcp-tools", "discovery"]);
    let chat = |body: Value| -> Value {
        reqwest::blocking::Client::new()
            .post(gateway.url("/v1/chat/completions"))
            .timeout(Duration::from_secs(120))
            .json(&body)
            .send()
            .and_then(|r| r.json())
            .expect("chat")
    };
    let ask = json!([{"role": "user", "content": "What time is it in Tokyo?"}]);
    let attached = chat(json!({"model": "ai/smollm2", "messages": ask, "max_tokens": 1}));
    assert!(attached["mcp_calls"].is_array(), "{attached}");
    let hidden = chat(
        json!({"model": "ai/smollm2", "messages": ask, "max_tokens": 1, "tool_choice": "none"}),
    );
    assert!(
        attached["usage"]["prompt_tokens"].as_u64() > hidden["usage"]["prompt_tokens"].as_u64(),
        "the meta-tools are in the prompt: {attached} vs {hidden}"
    );
    let own = chat(
        json!({"model": "ai/smollm2", "messages": ask, "max_tokens": 1,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}),
    );
    assert!(own.get("mcp_calls").is_none(), "{own}");
}

/// SIGHUP rereads the configuration: a new server's tools appear without a restart.
#[test]
fn sighup_reloads_the_configuration() {
    let cli = ModelCli::new();
    let gateway = Gateway::start(
        &cli,
        &json!({"mcpServers": {"time": time_server(json!({}))}}),
        &[],
    );
    let mut session = Session::new(gateway.url("/mcp"), None);
    assert_eq!(session.initialize().status, 200);
    assert!(
        !session
            .tool_names()
            .iter()
            .any(|n| n.starts_with("everything__"))
    );
    let config = json!({"mcpServers": {"time": time_server(json!({})), "everything": everything_server(json!({}))}});
    std::fs::write(&gateway.config, config.to_string()).expect("rewrite config");
    gateway.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let names = session.tool_names();
        if names.iter().any(|n| n == "everything__echo") {
            assert!(names.iter().any(|n| n == "time__get_current_time"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload did not add the server: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let health: Value = reqwest::blocking::get(gateway.url("/health"))
        .and_then(|r| r.json())
        .expect("health");
    let servers: Vec<&str> = health["mcp_servers"]
        .as_array()
        .expect("mcp_servers in /health")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(servers, ["everything", "time"], "{health}");
}

/// `model mcp` over stdio, launched by the Python SDK as a desktop client would.
#[test]
fn model_mcp_serves_the_gateway_over_stdio() {
    let cli = cli_with_default_model();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mcp.yaml");
    std::fs::write(
        &config,
        format!(
            "mcpServers:\n  everything:\n    command: {}\n    args: [{}, stdio]\n",
            var("MCP_NODE"),
            var("MCP_SERVER_EVERYTHING_JS")
        ),
    )
    .expect("write config");
    let out = Command::new(var("MCP_PYTHON"))
        .arg(repo_root().join("tests/python/mcp_stdio_client.py"))
        .env("MODEL_BIN", env!("CARGO_BIN_EXE_model"))
        .env("CONFIG", &config)
        .env("MODEL_RUNNER_HOME", cli.home.path())
        .env("MODEL", "ai/smollm2:latest")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("stdio client ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The MCP conformance suite's scenarios that apply to a gateway.
#[test]
fn mcp_conformance_scenarios_pass_against_the_gateway() {
    let cli = ModelCli::new();
    let gateway = Gateway::start(
        &cli,
        &json!({"mcpServers": {"everything": everything_server(json!({}))}}),
        &[],
    );
    let results = tempfile::tempdir().expect("tempdir");
    for scenario in [
        "server-initialize",
        "ping",
        "logging-set-level",
        "tools-list",
        "tools-call-error",
        "dns-rebinding-protection",
    ] {
        let out = Command::new(var("MCP_NODE"))
            .arg(var("MCP_CONFORMANCE_JS"))
            .args([
                "server",
                "--url",
                &gateway.url("/mcp"),
                "--scenario",
                scenario,
                "-o",
            ])
            .arg(results.path())
            .output()
            .expect("run conformance");
        assert!(
            out.status.success(),
            "conformance scenario {scenario} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The end-to-end loop: the default model, `tool_choice: "required"`, the real filesystem server; the
/// final response's `mcp_calls` holds the real listing (and streams report each call).
#[test]
fn chat_completions_run_mcp_tools_in_a_loop() {
    let cli = cli_with_default_model();
    let files = files_dir();
    let config = json!({"mcpServers": {
        "fs": {"command": var("MCP_NODE"), "args": [var("MCP_SERVER_FILESYSTEM_JS"), &files.path]},
        "everything": everything_server(json!({})),
        "time": time_server(json!({}))
    }});
    let gateway = Gateway::start(&cli, &config, &[]);
    gateway.run_python("mcp_chat.py", &files, "mcp chat ok");
}

/// The runner's own tools are tools of the pseudo-server `model-runner`: a client whose `servers` leave
/// it out neither sees nor calls them, one that names it does, and both outcomes are logged and counted
/// like any upstream call.
#[test]
fn runner_tools_obey_client_scopes_and_are_logged_and_counted() {
    let cli = ModelCli::new();
    let config = json!({
        "mcpServers": {"time": time_server(json!({}))},
        "gateway": {"clients": [
            {"name": "agent", "token": "agent-token-1234", "servers": ["time"]},
            {"name": "runner", "token": "runner-token-5678", "servers": ["model-runner"]},
            {"name": "lister", "token": "lister-token-9012", "tools": ["list_models"]}
        ]}
    });
    let gateway = Gateway::start(&cli, &config, &[]);
    let url = gateway.url("/mcp");

    let mut agent = Session::new(url.clone(), Some("agent-token-1234"));
    assert_eq!(agent.initialize().status, 200);
    let names = agent.tool_names();
    assert!(
        !names.iter().any(|n| n == "chat" || n == "list_models"),
        "{names:?}"
    );
    for tool in ["list_models", "chat"] {
        let denied = agent.call(tool, json!({"model": "x", "prompt": "hi"}));
        assert!(
            is_error(&denied) && result_text(&denied).contains("may not call"),
            "{}",
            denied.message
        );
    }

    let mut runner = Session::new(url.clone(), Some("runner-token-5678"));
    assert_eq!(runner.initialize().status, 200);
    let names = runner.tool_names();
    assert!(
        names.iter().any(|n| n == "chat") && names.iter().any(|n| n == "list_models"),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("time__")), "{names:?}");
    let listed = runner.call("list_models", json!({}));
    assert!(!is_error(&listed), "{}", listed.message);

    let mut lister = Session::new(url, Some("lister-token-9012"));
    assert_eq!(lister.initialize().status, 200);
    let names = lister.tool_names();
    assert!(
        names.iter().any(|n| n == "list_models") && !names.iter().any(|n| n == "chat"),
        "{names:?}"
    );

    let series = |tool: &str, client: &str| {
        metric(
            &gateway,
            &format!(
                "model_runner:mcp_tool_calls_total{{server=\"model-runner\",tool=\"{tool}\",client=\"{client}\"}}"
            ),
        )
    };
    assert_eq!(series("list_models", "runner"), Some(1.0));
    assert_eq!(series("list_models", "agent"), Some(1.0));
    assert_eq!(series("chat", "agent"), Some(1.0));
    assert_eq!(
        metric(
            &gateway,
            "model_runner:mcp_tool_errors_total{server=\"model-runner\",tool=\"chat\",client=\"agent\"}"
        ),
        Some(1.0)
    );
    let log = gateway.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"event\":\"mcp_call\"") && l.contains("model-runner"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"client\":\"runner\"") && l.contains("\"outcome\":\"ok\"")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"client\":\"agent\"") && l.contains("\"outcome\":\"denied\"")),
        "{log}"
    );
}

const API_KEY: &str = "runner-api-key-0123456789";
const REGISTRY_PASSWORD: &str = "registry-password-0123456789";
const PLAIN_VALUE: &str = "plain-env-value-0123456789";

/// A stdio server starts with a cleared environment: the runner's API key and registry password never
/// reach it, what its config's `env` names does; a value brought in by `${VAR}` from the plain
/// environment is redacted in the call log like a declared secret.
#[test]
fn stdio_servers_get_only_allow_listed_and_declared_environment() {
    let cli = ModelCli::new();
    let config = json!({"mcpServers": {
        "everything": everything_server(json!({"env": {"DECLARED": "${PLAIN_VAR_FOR_SERVER}"}}))
    }});
    let gateway = Gateway::start_with_env(
        &cli,
        &config,
        &[],
        &[
            ("MODEL_RUNNER_API_KEY", API_KEY),
            ("MODEL_RUNNER_REGISTRY_PASSWORD", REGISTRY_PASSWORD),
            ("PLAIN_VAR_FOR_SERVER", PLAIN_VALUE),
            ("UNRELATED_RUNNER_VARIABLE", "unrelated"),
        ],
    );
    let mut session = Session::new(gateway.url("/mcp"), Some(API_KEY));
    assert_eq!(session.initialize().status, 200);
    let env = session.call("everything__get-env", json!({}));
    assert!(!is_error(&env), "{}", env.message);
    let env = result_text(&env);
    assert!(
        env.contains("DECLARED") && env.contains(PLAIN_VALUE),
        "{env}"
    );
    assert!(env.contains("PATH") && env.contains("HOME"), "{env}");
    for leaked in [
        API_KEY,
        REGISTRY_PASSWORD,
        "MODEL_RUNNER_API_KEY",
        "MODEL_RUNNER_REGISTRY_PASSWORD",
        "UNRELATED_RUNNER_VARIABLE",
    ] {
        assert!(!env.contains(leaked), "{leaked} reached the server: {env}");
    }

    let echo = session.call(
        "everything__echo",
        json!({"message": format!("value {PLAIN_VALUE}")}),
    );
    assert!(!is_error(&echo), "{}", echo.message);
    let log = gateway.log();
    assert!(
        log.lines()
            .any(|l| l.contains("\"tool\":\"everything__echo\"") && l.contains("[REDACTED]")),
        "{log}"
    );
    assert!(
        !log.contains(PLAIN_VALUE),
        "an interpolated value reached the log:\n{log}"
    );
}

/// Calls to names no tool has are counted under one `tool="unknown"` series, not one series per name.
#[test]
fn unknown_tool_names_share_one_metric_series() {
    let cli = ModelCli::new();
    let gateway = Gateway::start(
        &cli,
        &json!({"mcpServers": {"time": time_server(json!({}))}}),
        &[],
    );
    let mut session = Session::new(gateway.url("/mcp"), None);
    assert_eq!(session.initialize().status, 200);
    for i in 0..30 {
        let reply = session.call(&format!("junk_{i}__nothing"), json!({}));
        assert!(is_error(&reply), "{}", reply.message);
    }
    let reply = session.call("mcp_call", json!({"name": "time__junk", "arguments": {}}));
    assert!(is_error(&reply), "{}", reply.message);
    let metrics = reqwest::blocking::get(gateway.url("/metrics"))
        .and_then(|r| r.text())
        .expect("metrics");
    assert!(
        !metrics.contains("junk"),
        "caller-chosen names became series:\n{metrics}"
    );
    assert_eq!(
        metric(
            &gateway,
            "model_runner:mcp_tool_calls_total{server=\"gateway\",tool=\"unknown\",client=\"anonymous\"}"
        ),
        Some(31.0)
    );
}

/// `DELETE /mcp` ends a session with 200 (what the spec and the Python SDK expect), and a session the
/// server does not know gets 404.
#[test]
fn deleting_a_session_answers_as_the_transport_spec_says() {
    let cli = ModelCli::new();
    let gateway = Gateway::start(
        &cli,
        &json!({"mcpServers": {"time": time_server(json!({}))}}),
        &[],
    );
    let mut session = Session::new(gateway.url("/mcp"), None);
    assert_eq!(session.initialize().status, 200);
    assert!(session.id.is_some(), "the server hands out a session id");
    assert_eq!(session.delete(), 200);
    assert_eq!(session.delete(), 404, "the session is gone");
    let reply = session.request("tools/list", json!({}));
    assert_eq!(reply.status, 404, "{}", reply.message);
}

/// A tool whose input schema is recursive (`#/$defs/Node` inside itself, as the Python SDK writes a
/// tree) is listed, called, and its arguments are checked all the way down.
#[test]
fn recursive_input_schemas_are_listed_checked_and_called() {
    let cli = ModelCli::new();
    let config = json!({"mcpServers": {"tree": {
        "command": var("MCP_PYTHON"),
        "args": [repo_root().join("tests/python/mcp_tree_server.py")]
    }}});
    let gateway = Gateway::start(&cli, &config, &[]);
    let mut session = Session::new(gateway.url("/mcp"), None);
    assert_eq!(session.initialize().status, 200);
    let names = session.tool_names();
    assert!(names.iter().any(|n| n == "tree__count_nodes"), "{names:?}");
    let tree = json!({"root": {"name": "a", "children": [
        {"name": "b", "children": [{"name": "c"}]}, {"name": "d"}
    ]}});
    let counted = session.call("tree__count_nodes", tree);
    assert!(
        !is_error(&counted) && result_text(&counted).contains("4 nodes"),
        "{}",
        counted.message
    );
    let invalid = json!({"root": {"name": "a", "children": [{"children": [{"name": 7}]}]}});
    let refused = session.call("tree__count_nodes", invalid);
    let text = result_text(&refused);
    assert!(
        is_error(&refused)
            && text.contains("invalid arguments")
            && text.contains("/root/children/0"),
        "{}",
        refused.message
    );
    assert!(!text.contains("does not exist"), "{text}");
}

/// A chat request with `code_mode` offers `run_js`, and the chat loop's calls of it run the script
/// through the gateway for the request's servers (not "no MCP tool named run_js").
#[test]
fn chat_code_mode_runs_run_js_through_the_gateway() {
    let cli = cli_with_default_model();
    let gateway = Gateway::start(
        &cli,
        &json!({"mcpServers": {"time": time_server(json!({}))}}),
        &[],
    );
    let body = json!({
        "model": "ai/smollm2",
        "messages": [{"role": "user", "content": "Use JavaScript to get the current time in UTC with time__get_current_time."}],
        "tools": [{"type": "mcp", "server_label": "time", "code_mode": true}],
        "tool_choice": {"type": "function", "function": {"name": "run_js"}},
        "max_tokens": 96,
        "temperature": 0
    });
    let response: Value = reqwest::blocking::Client::new()
        .post(gateway.url("/v1/chat/completions"))
        .timeout(Duration::from_secs(300))
        .json(&body)
        .send()
        .and_then(|r| r.json())
        .expect("chat");
    let calls = response["mcp_calls"].as_array().expect("mcp_calls");
    let first = &calls[0];
    assert_eq!(first["name"], "run_js", "{response}");
    assert_eq!(first["server"], "gateway", "{response}");
    let error = first["error"].as_str().unwrap_or("");
    assert!(
        !error.contains("no MCP tool named"),
        "run_js did not reach the gateway: {response}"
    );
    assert!(
        first["error"].is_null() || error.contains("script"),
        "a script's own failure is all that may come back: {response}"
    );
    let log = gateway.log();
    assert!(
        log.lines()
            .any(|l| l.contains("\"event\":\"mcp_call\"") && l.contains("\"tool\":\"run_js\"")),
        "{log}"
    );
}

/// A chat request may offer a tool with a recursive input schema: the forced call follows the schema,
/// and the gateway runs it.
#[test]
fn chat_offers_and_runs_tools_with_recursive_schemas() {
    let cli = cli_with_default_model();
    let config = json!({"mcpServers": {"tree": {
        "command": var("MCP_PYTHON"),
        "args": [repo_root().join("tests/python/mcp_tree_server.py")]
    }}});
    let gateway = Gateway::start(&cli, &config, &[]);
    let body = json!({
        "model": "ai/smollm2",
        "messages": [{"role": "user", "content": "Count the nodes of the tree a with children b and c."}],
        "tools": [{"type": "mcp", "server_label": "tree"}],
        "tool_choice": "required",
        "max_tokens": 96,
        "temperature": 0
    });
    let response = reqwest::blocking::Client::new()
        .post(gateway.url("/v1/chat/completions"))
        .timeout(Duration::from_secs(300))
        .json(&body)
        .send()
        .expect("chat");
    let status = response.status().as_u16();
    let response: Value = response.json().expect("json");
    assert_eq!(status, 200, "{response}");
    let first = &response["mcp_calls"][0];
    assert_eq!(first["name"], "tree__count_nodes", "{response}");
    assert_eq!(first["is_error"], false, "{response}");
}

/// The Messages API's MCP connector: `mcp_servers` names a configured server (its URL is never used),
/// the server runs the default model's forced call of the real filesystem server in its loop, and the
/// anthropic SDK reads `mcp_tool_use` / `mcp_tool_result` blocks, whole and streamed.
#[test]
fn messages_api_runs_mcp_servers_named_by_the_connector() {
    let cli = cli_with_default_model();
    let files = files_dir();
    let config = json!({"mcpServers": {
        "fs": {"command": var("MCP_NODE"), "args": [var("MCP_SERVER_FILESYSTEM_JS"), &files.path]}
    }});
    let gateway = Gateway::start(&cli, &config, &[]);
    gateway.run_python("anthropic_mcp.py", &files, "anthropic mcp ok");
}

/// The Responses API's MCP tools on the gateway: `mcp_list_tools` / `mcp_call` items whole and streamed,
/// the approval round trip, a client's `server_url` refused; the Agents SDK with our `/mcp` as its MCP
/// server (the default model, the real filesystem server).
#[test]
fn responses_api_runs_mcp_tools_with_approvals_and_agents_use_our_mcp() {
    let cli = cli_with_default_model();
    let files = files_dir();
    let config = json!({"mcpServers": {
        "fs": {"command": var("MCP_NODE"), "args": [var("MCP_SERVER_FILESYSTEM_JS"), &files.path]},
    }});
    let gateway = Gateway::start(&cli, &config, &[]);
    gateway.run_python("responses_mcp.py", &files, "responses mcp ok");
}

/// `PATH` with the test installation's `uvx` and Node 22 first: what a user who has `npx` and `uvx` has.
fn path_with_runtimes() -> String {
    format!(
        "{}/bin:{}:{}",
        var("MCP_VENV"),
        var("MCP_NPM_BIN_DIR"),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Servers from the shipped catalog, installed by `model mcp server add` (npm through `npx -y`, PyPI
/// through `uvx`, at the versions scripts/setup-mcp.sh installs, so nothing is downloaded here), picked up
/// by a running server without a restart, used through /mcp, disabled and enabled; the catalog served
/// as the MCP Registry API and read by a client written to its spec; `client connect` writing VS Code's
/// (HTTP, with a minted token) and Claude Desktop's (stdio) files, which the Python SDK then uses as
/// those clients would.
#[test]
fn catalog_servers_installed_by_the_cli_run_through_the_gateway() {
    let cli = ModelCli::new();
    let npm_dir = PathBuf::from(var("MCP_NPM_DIR"));
    let path = path_with_runtimes();
    let gateway = Gateway::start_in(
        &cli,
        &json!({"mcpServers": {}}),
        &[],
        &[("PATH", path.as_str())],
        Some(&npm_dir),
    );
    let config = gateway.config.to_str().expect("utf-8").to_string();
    let port = gateway.port.to_string();
    let model = |args: &[&str]| -> String {
        let out = cli
            .command(args)
            .env("MODEL_RUNNER_PORT", &port)
            .env("PATH", &path)
            .current_dir(&npm_dir)
            .output()
            .expect("run model");
        assert!(
            out.status.success(),
            "model {args:?}:\n{}\n{}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            gateway.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // The catalog pins the versions the test installation has.
    let listed: Value =
        serde_json::from_str(&model(&["mcp", "catalog", "ls", "--json"])).expect("json");
    let pinned = |name: &str| -> String {
        listed["servers"]
            .as_array()
            .expect("servers")
            .iter()
            .find(|s| s["server"]["name"] == name)
            .and_then(|s| s["server"]["packages"][0]["version"].as_str())
            .unwrap_or_else(|| panic!("{name} not in the catalog"))
            .to_string()
    };
    let installed_everything: Value = serde_json::from_str(
        &std::fs::read_to_string(
            npm_dir.join("node_modules/@modelcontextprotocol/server-everything/package.json"),
        )
        .expect("package.json"),
    )
    .expect("json");
    assert_eq!(
        pinned("io.github.modelcontextprotocol/server-everything"),
        installed_everything["version"].as_str().expect("version")
    );
    assert!(model(&["mcp", "catalog", "search", "time zone"]).contains("server-time"));
    assert!(model(&["mcp", "catalog", "show", "time"]).contains("uvx mcp-server-time@"));

    let wheels = format!("UV_FIND_LINKS={}", var("MCP_WHEELS_DIR"));
    let added = model(&[
        "mcp",
        "server",
        "add",
        "everything",
        "--mcp-config",
        &config,
        "--env",
        "npm_config_offline=true",
    ]);
    assert!(
        added.contains("npx -y @modelcontextprotocol/server-everything@"),
        "{added}"
    );
    assert!(
        added.contains("reloaded"),
        "the running server was not told: {added}"
    );
    model(&[
        "mcp",
        "server",
        "add",
        "time",
        "--mcp-config",
        &config,
        "--arg",
        "local-timezone=UTC",
        "--env",
        "UV_NO_INDEX=1",
        "--env",
        &wheels,
        "--env",
        "UV_PYTHON_DOWNLOADS=never",
        "--tools",
        "get_current_time",
    ]);
    let ls = model(&["mcp", "server", "ls", "--mcp-config", &config]);
    assert!(
        ls.contains("io.github.modelcontextprotocol/server-time@"),
        "{ls}"
    );

    let mut session = Session::new(gateway.url("/mcp"), None);
    assert_eq!(session.initialize().status, 200);
    let names = session.tool_names();
    assert!(names.iter().any(|n| n == "everything__echo"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "time__get_current_time"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "time__convert_time"),
        "--tools: {names:?}"
    );
    let echo = session.call("everything__echo", json!({"message": "from the catalog"}));
    assert!(
        result_text(&echo).contains("from the catalog"),
        "{}",
        echo.message
    );
    let now = session.call("time__get_current_time", json!({"timezone": "UTC"}));
    assert!(
        !is_error(&now) && result_text(&now).contains("UTC"),
        "{}",
        now.message
    );

    let status: Value =
        serde_json::from_str(&model(&["mcp", "server", "status", "--json"])).expect("json");
    let everything = status["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["name"] == "everything")
        .expect("everything in status");
    assert_eq!(everything["state"], "running", "{status}");
    assert!(
        everything["tools"].as_u64().is_some_and(|n| n > 3),
        "{status}"
    );

    model(&["mcp", "server", "disable", "time", "--mcp-config", &config]);
    assert!(!session.tool_names().iter().any(|n| n.starts_with("time__")));
    model(&["mcp", "server", "enable", "time", "--mcp-config", &config]);
    assert!(
        session
            .tool_names()
            .iter()
            .any(|n| n == "time__get_current_time")
    );

    // The catalog as the MCP Registry API, read by a client written to the spec.
    let out = Command::new(var("MCP_PYTHON"))
        .arg(repo_root().join("tests/python/mcp_registry_client.py"))
        .env("REGISTRY_URL", gateway.url(""))
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("registry client ok") && stdout.contains(r#""label": "everything""#),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Clients' own files, used as the clients would use them.
    let client_home = tempfile::tempdir().expect("tempdir");
    let vscode_file = client_home.path().join("vscode/mcp.json");
    std::fs::create_dir_all(vscode_file.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &vscode_file,
        r#"{"servers": {"mine": {"type": "stdio", "command": "x"}}}"#,
    )
    .expect("write");
    let connected = model(&[
        "mcp",
        "client",
        "connect",
        "vscode",
        "--transport",
        "http",
        "--mcp-config",
        &config,
        "--config-file",
        vscode_file.to_str().expect("utf-8"),
        "--url",
        &gateway.url("/mcp"),
    ]);
    assert!(connected.contains("kept as"), "{connected}");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&vscode_file).expect("read")).expect("json");
    assert_eq!(written["servers"]["mine"]["command"], "x");
    // The gateway now wants tokens: anonymous callers are refused.
    assert_eq!(
        Session::new(gateway.url("/mcp"), None).initialize().status,
        401
    );
    let out = Command::new(var("MCP_PYTHON"))
        .arg(repo_root().join("tests/python/mcp_client_config.py"))
        .env("CLIENT", "vscode")
        .env("CLIENT_CONFIG", &vscode_file)
        .output()
        .expect("run python");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("client config ok"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gateway.log()
    );

    let connected = cli
        .command(&[
            "mcp",
            "client",
            "connect",
            "claude-desktop",
            "--mcp-config",
            &config,
        ])
        .env("HOME", client_home.path())
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .expect("connect claude-desktop");
    assert!(
        connected.status.success(),
        "{}",
        String::from_utf8_lossy(&connected.stderr)
    );
    let claude_file = client_home
        .path()
        .join(".config/Claude/claude_desktop_config.json");
    let out = Command::new(var("MCP_PYTHON"))
        .arg(repo_root().join("tests/python/mcp_client_config.py"))
        .env("CLIENT", "claude-desktop")
        .env("CLIENT_CONFIG", &claude_file)
        .env("PATH", &path)
        .current_dir(&npm_dir)
        .output()
        .expect("run python");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("client config ok"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Codex: its TOML file under CODEX_HOME, the user's own content kept, the token from the environment.
    let codex_home = client_home.path().join("codex");
    std::fs::create_dir_all(&codex_home).expect("mkdir");
    let codex_file = codex_home.join("config.toml");
    let users_toml = "# mine\nmodel = \"o4-mini\"\n\n[mcp_servers.docs]\ncommand = \"docs\"\n";
    std::fs::write(&codex_file, users_toml).expect("write");
    let connected = cli
        .command(&[
            "mcp",
            "client",
            "connect",
            "codex",
            "--transport",
            "http",
            "--mcp-config",
            &config,
            "--url",
            &gateway.url("/mcp"),
        ])
        .env("CODEX_HOME", &codex_home)
        .env("MODEL_RUNNER_PORT", &port)
        .output()
        .expect("connect codex");
    let said = String::from_utf8_lossy(&connected.stdout);
    let token = said
        .split_whitespace()
        .find_map(|w| w.strip_prefix("MODEL_RUNNER_MCP_TOKEN="))
        .unwrap_or_else(|| panic!("the token to export is printed: {said}"));
    let written = std::fs::read_to_string(&codex_file).expect("read");
    assert!(
        written.starts_with("# mine")
            && written.contains("[mcp_servers.docs]")
            && !written.contains(token),
        "{written}"
    );
    let out = Command::new(var("MCP_PYTHON"))
        .arg(repo_root().join("tests/python/mcp_client_config.py"))
        .env("CLIENT", "codex")
        .env("CLIENT_CONFIG", &codex_file)
        .env("MODEL_RUNNER_MCP_TOKEN", token)
        .output()
        .expect("run python");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("client config ok"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gateway.log()
    );
    let listed = cli
        .command(&["mcp", "client", "ls", "--mcp-config", &config])
        .env("HOME", client_home.path())
        .env("CODEX_HOME", &codex_home)
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .expect("client ls");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("claude-desktop") && l.contains("stdio")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("codex") && l.contains("http") && l.contains("yes")),
        "{listed}"
    );
    let disconnected = cli
        .command(&[
            "mcp",
            "client",
            "disconnect",
            "codex",
            "--mcp-config",
            &config,
        ])
        .env("CODEX_HOME", &codex_home)
        .env("MODEL_RUNNER_PORT", &port)
        .output()
        .expect("disconnect codex");
    assert!(disconnected.status.success());
    assert_eq!(
        std::fs::read_to_string(&codex_file).expect("read"),
        users_toml,
        "disconnect leaves the user's file as it was"
    );
    model(&[
        "mcp",
        "client",
        "disconnect",
        "vscode",
        "--mcp-config",
        &config,
        "--config-file",
        vscode_file.to_str().expect("utf-8"),
    ]);
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&vscode_file).expect("read")).expect("json");
    assert!(written["servers"].get("model-runner").is_none());
}

/// tests/python/mcp_features_server.py (FastMCP) over the older HTTP+SSE transport on a free port
/// (`/sse`, with its POST endpoint under `/messages/`), killed on drop.
struct SseServer(Child, u16);

impl SseServer {
    fn start_on(port: u16) -> Self {
        let child = Command::new(var("MCP_PYTHON"))
            .arg(repo_root().join("tests/python/mcp_features_server.py"))
            .args(["sse", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SSE server");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the SSE server did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self(child, port)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/sse", self.1)
    }
}

impl Drop for SseServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A FastMCP server that speaks only the older HTTP+SSE transport is reached when its config says
/// `"type": "sse"` and, with no type, by falling back from streamable HTTP (whose POST it answers 405);
/// with `"type": "streamable-http"` there is no fallback. When the server goes away its session is
/// over; the gateway opens a new one once the server is back.
#[test]
fn sse_servers_are_reached_by_type_and_by_fallback_from_streamable_http() {
    let cli = ModelCli::new();
    let port = free_port();
    let mut server = SseServer::start_on(port);
    let config = json!({"mcpServers": {
        "legacy": {"url": server.url(), "type": "sse", "callTimeoutSecs": 10},
        "fallback": {"url": server.url()},
        "strict": {"url": server.url(), "type": "streamable-http"}
    }});
    let gateway = Gateway::start(&cli, &config, &[]);
    let mut session = Session::new(gateway.url("/mcp"), None);
    assert_eq!(session.initialize().status, 200);
    let started = Instant::now();
    for name in ["legacy__echo", "fallback__echo"] {
        let reply = session.call(name, json!({"text": "over sse"}));
        assert_eq!(
            result_text(&reply),
            "echo: over sse",
            "{name}: {}\n--- server log ---\n{}",
            reply.message,
            gateway.log()
        );
    }
    eprintln!(
        "two SSE sessions up and called in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        gateway.log().contains("trying the HTTP+SSE transport"),
        "{}",
        gateway.log()
    );
    let names = session.tool_names();
    assert!(
        !names.iter().any(|n| n.starts_with("strict__")),
        "a streamable-http server that answers 405 is not tried over SSE: {names:?}"
    );

    drop(server);
    let down = session.call("legacy__echo", json!({"text": "anyone?"}));
    assert!(is_error(&down), "{}", down.message);
    server = SseServer::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(30);
    let back = loop {
        let reply = session.call("legacy__echo", json!({"text": "back"}));
        if !is_error(&reply) || Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        result_text(&back),
        "echo: back",
        "{}\n{}",
        back.message,
        gateway.log()
    );
    drop(server);
}

/// A server's elicitation during a tool call reaches the calling client's elicitation callback and its
/// answer goes back (accept with content, decline); a client that declared no elicitation gets an
/// error result. Resource links and embedded resources in tool results come back under the gateway's
/// URIs and read back through it. Over `/mcp` with an SSE server behind, and over `model mcp` (stdio)
/// with a stdio server behind.
#[test]
fn elicitations_reach_the_calling_client_and_resource_links_read_back() {
    let cli = ModelCli::new();
    let server = SseServer::start_on(free_port());
    let config = json!({"mcpServers": {"legacy": {"url": server.url(), "type": "sse"}}});
    let gateway = Gateway::start(&cli, &config, &[]);
    let started = Instant::now();
    let out = Command::new(var("MCP_PYTHON"))
        .arg(repo_root().join("tests/python/mcp_features_client.py"))
        .env("MCP_URL", gateway.url("/mcp"))
        .env("SERVER", "legacy")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("features client ok"),
        "{stdout}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        gateway.log()
    );
    eprintln!("over /mcp: {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        gateway.log().lines().any(
            |l| l.contains("\"event\":\"mcp_elicitation\"") && l.contains("\"forwarded\":true")
        ),
        "elicitations are logged:\n{}",
        gateway.log()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("mcp.json");
    let stdio_config = json!({"mcpServers": {"features": features_server(json!({}))}});
    std::fs::write(&config_path, stdio_config.to_string()).expect("write config");
    let started = Instant::now();
    let out = Command::new(var("MCP_PYTHON"))
        .arg(repo_root().join("tests/python/mcp_features_client.py"))
        .env("MODEL_BIN", env!("CARGO_BIN_EXE_model"))
        .env("CONFIG", &config_path)
        .env("MODEL_RUNNER_HOME", cli.home.path())
        .env("SERVER", "features")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("features client ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("over stdio: {:.1} s", started.elapsed().as_secs_f64());
}

/// The features server as a stdio server of the gateway's config.
fn features_server(extra: Value) -> Value {
    let mut server = json!({
        "command": var("MCP_PYTHON"),
        "args": [repo_root().join("tests/python/mcp_features_server.py"), "stdio"]
    });
    if let (Some(server), Some(extra)) = (server.as_object_mut(), extra.as_object()) {
        server.extend(extra.clone());
    }
    server
}

/// A server's sampling request is answered with its `temperature` (0: the same answer twice) and
/// `stopSequences` (the answer ends before one), its `maxTokens` capped at the config's; an answer
/// cut there says `maxTokens`; a temperature out of range is refused.
#[test]
fn sampling_requests_honour_temperature_stop_sequences_and_max_tokens() {
    let cli = cli_with_default_model();
    let config = json!({"mcpServers": {"features": features_server(
        json!({"sampling": {"model": "ai/smollm2:latest", "maxTokens": 24}})
    )}});
    let gateway = Gateway::start(&cli, &config, &[]);
    let mut session = Session::new(gateway.url("/mcp"), None);
    assert_eq!(session.initialize().status, 200);
    let mut sample = |arguments: Value| {
        let reply = session.call("features__sample", arguments);
        assert!(!is_error(&reply), "{}\n{}", reply.message, gateway.log());
        let answer: Value = serde_json::from_str(&result_text(&reply)).expect("the tool's JSON");
        answer
    };
    let started = Instant::now();
    let count = json!({"prompt": "Count from 1 to 10, separated by commas.",
                       "temperature": 0, "stop": [","]});
    let first = sample(count.clone());
    let second = sample(count);
    assert_eq!(first, second, "temperature 0 answers the same twice");
    let text = first["text"].as_str().expect("text");
    assert!(
        !text.contains(','),
        "the answer ends before the stop sequence: {first}"
    );
    assert_eq!(first["model"], "ai/smollm2:latest");
    let story = sample(json!({"prompt": "Write a long story about a dragon.", "max_tokens": 3}));
    assert_eq!(story["stopReason"], "maxTokens", "{story}");
    let capped =
        sample(json!({"prompt": "Write a long story about a dragon.", "max_tokens": 100000}));
    assert_eq!(capped["stopReason"], "maxTokens", "{capped}");
    eprintln!("four samples in {:.1} s", started.elapsed().as_secs_f64());
    let refused = session.call(
        "features__sample",
        json!({"prompt": "hi", "temperature": 5}),
    );
    assert!(
        is_error(&refused) && result_text(&refused).contains("temperature"),
        "{}",
        refused.message
    );
    let log = gateway.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"event\":\"mcp_sampling\""))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"temperature\":0.0") && l.contains("\"stop_sequences\":1")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"max_tokens\":3")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"max_tokens\":24")),
        "capped at the config's maxTokens: {lines:?}"
    );
}

/// Claude Code's CLI (a native binary), installed by scripts/setup-tests.sh outside the repo.
fn claude_bin() -> PathBuf {
    let cache = std::env::var_os("MODEL_RUNNER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/model-runner")
        });
    let bin = cache.join("claude-code/node_modules/.bin/claude");
    assert!(
        bin.exists(),
        "run scripts/setup-tests.sh first: it installs Claude Code"
    );
    bin
}

/// `claude mcp list` with `home` as its home (where `~/.claude.json` is), without its auto-updater or
/// other traffic, within 60 s: the line that names the gateway's entry, and the whole output.
fn claude_mcp_list(home: &std::path::Path, runner_home: &std::path::Path) -> (String, String) {
    let mut child = Command::new(claude_bin())
        .args(["mcp", "list"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("MODEL_RUNNER_HOME", runner_home)
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .current_dir(home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run claude");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for claude").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("claude mcp list did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("claude's output");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = all
        .lines()
        .find(|l| l.starts_with("model-runner:"))
        .unwrap_or_default()
        .to_string();
    (line, all)
}

/// Claude Code, pointed at the gateway by `model mcp client connect claude-code` (over streamable HTTP
/// with the token it minted, then over stdio through `model mcp`), reports the gateway connected in
/// `claude mcp list`; with the token changed it does not.
#[test]
fn claude_code_lists_the_gateway_connected() {
    let cli = ModelCli::new();
    let config = json!({"mcpServers": {"features": features_server(json!({}))}});
    let gateway = Gateway::start(&cli, &config, &[]);
    let client_home = tempfile::tempdir().expect("tempdir");
    let gateway_config = gateway.config.to_str().expect("utf-8").to_string();
    let connect = |transport: &str| {
        let out = cli
            .command(&[
                "mcp",
                "client",
                "connect",
                "claude-code",
                "--transport",
                transport,
                "--mcp-config",
                &gateway_config,
                "--url",
                &gateway.url("/mcp"),
            ])
            .env("HOME", client_home.path())
            .env("MODEL_RUNNER_PORT", gateway.port.to_string())
            .output()
            .expect("connect claude-code");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    connect("http");
    // The gateway now wants the minted token: anonymous callers are refused.
    assert_eq!(
        Session::new(gateway.url("/mcp"), None).initialize().status,
        401
    );
    let claude_file = client_home.path().join(".claude.json");
    let started = Instant::now();
    let (line, all) = claude_mcp_list(client_home.path(), cli.home.path());
    eprintln!(
        "claude mcp list (http): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        line.contains(&gateway.url("/mcp")) && line.contains("Connected"),
        "{all}\n--- server log ---\n{}",
        gateway.log()
    );

    let written = std::fs::read_to_string(&claude_file).expect("read");
    let entry: Value = serde_json::from_str(&written).expect("json");
    let header = entry["mcpServers"]["model-runner"]["headers"]["Authorization"]
        .as_str()
        .expect("the minted token is in the entry")
        .to_string();
    std::fs::write(
        &claude_file,
        written.replace(&header, "Bearer not-the-minted-token"),
    )
    .expect("write");
    let (line, all) = claude_mcp_list(client_home.path(), cli.home.path());
    assert!(
        line.contains("model-runner") && !line.contains("Connected"),
        "a wrong token is not connected: {all}"
    );

    connect("stdio");
    let started = Instant::now();
    let (line, all) = claude_mcp_list(client_home.path(), cli.home.path());
    eprintln!(
        "claude mcp list (stdio): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        line.contains(env!("CARGO_BIN_EXE_model")) && line.contains("Connected"),
        "{all}"
    );
}

/// `tests/python/mcp_oauth_server.py`: a real OAuth-protected MCP server (the MCP Python SDK's
/// authorization and resource server routes) on a free loopback port, killed on drop.
struct OAuthServer {
    child: Child,
    port: u16,
}

impl OAuthServer {
    fn start(token_lifetime_secs: u64) -> Self {
        Self::start_serving(token_lifetime_secs, "streamable-http")
    }

    /// The server with its MCP endpoint on `transport`: `streamable-http` (at /mcp) or `sse` (/sse).
    fn start_serving(token_lifetime_secs: u64, transport: &str) -> Self {
        let port = free_port();
        let child = Command::new(python())
            .arg(repo_root().join("tests/python/mcp_oauth_server.py"))
            .arg(port.to_string())
            .arg("--token-lifetime")
            .arg(token_lifetime_secs.to_string())
            .arg("--transport")
            .arg(transport)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mcp_oauth_server.py");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the OAuth server did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn stats(&self) -> Value {
        reqwest::blocking::get(self.url("/test/stats"))
            .and_then(|r| r.json())
            .expect("GET /test/stats")
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `text` holds something shaped like one of the test server's tokens (`at-…`, `rt-…`).
fn holds_token(text: &str) -> bool {
    ["at-", "rt-"].iter().any(|prefix| {
        text.match_indices(prefix).any(|(i, _)| {
            text[i + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .count()
                >= 30
        })
    })
}

/// Runs `model mcp auth login NAME --no-browser`; with `follow`, fetches the URL it prints as a browser
/// would (the test server approves at once and redirects to the runner's loopback listener). Whether it
/// succeeded, all it printed, and the URL.
fn auth_login(
    cli: &ModelCli,
    config: &str,
    name: &str,
    follow: bool,
) -> (bool, String, Option<String>) {
    let mut login = cli
        .command(&[
            "mcp",
            "auth",
            "login",
            name,
            "--no-browser",
            "--timeout",
            "30",
            "--mcp-config",
            config,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("model mcp auth login");
    let mut stdout = std::io::BufReader::new(login.stdout.take().expect("stdout"));
    let mut printed = String::new();
    let mut url = None;
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stdout, &mut line).expect("read login output");
        printed.push_str(&line);
        if n == 0 {
            break;
        }
        if line.starts_with("http") {
            url = Some(line.trim().to_string());
            break;
        }
    }
    if let (Some(url), true) = (&url, follow) {
        let browser = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let landing = browser
            .get(url)
            .send()
            .expect("follow the authorization URL");
        let status = landing.status().as_u16();
        let page = landing.text().unwrap_or_default();
        printed.push_str(&format!("[browser: {status} {page}]\n"));
    }
    let status = login.wait().expect("login exits");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
    printed.push_str(&rest);
    if let Some(mut stderr) = login.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut printed);
    }
    (status.success(), printed, url)
}

#[test]
fn hostile_authorization_servers_are_refused_and_nothing_is_stored() {
    let auth_server = OAuthServer::start(3600);
    let cli = ModelCli::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mcp.json");
    std::fs::write(
        &config,
        json!({"mcpServers": {"secure": {"url": auth_server.url("/mcp")}}}).to_string(),
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8").to_string();
    for (mode, expected) in [
        ("foreign-issuer", "is not http://127.0.0.1:"),
        ("huge-metadata", "larger than 65536 bytes"),
        ("redirect-token", "answered with a redirect"),
    ] {
        reqwest::blocking::Client::new()
            .post(auth_server.url(&format!("/test/hostile?mode={mode}")))
            .send()
            .expect("set hostile mode");
        let (ok, printed, _) = auth_login(&cli, &config, "secure", true);
        assert!(!ok && printed.contains(expected), "{mode}: {printed}");
        let ls = cli.ok(&["mcp", "auth", "ls", "--json", "--mcp-config", &config]);
        assert!(ls.contains("not logged in"), "{mode}: {ls}");
    }
    // The redirected token request never reached another origin: only the real endpoint saw a code.
    assert_eq!(auth_server.stats()["code_grants"].as_u64(), Some(0));
}

/// `model mcp auth ls --json` for the gateway's config: the entry of `server`.
fn auth_entry(cli: &ModelCli, gateway: &Gateway, server: &str) -> Value {
    let out = cli.ok(&[
        "mcp",
        "auth",
        "ls",
        "--json",
        "--mcp-config",
        gateway.config.to_str().expect("utf-8"),
    ]);
    assert!(!holds_token(&out), "auth ls printed a token: {out}");
    let list: Value = serde_json::from_str(&out).expect("auth ls --json");
    list.as_array()
        .and_then(|l| l.iter().find(|e| e["server"] == server).cloned())
        .unwrap_or_else(|| panic!("{server} is not listed: {out}"))
}

#[test]
fn remote_servers_are_authorized_with_oauth_refreshed_and_ask_for_login_when_revoked() {
    let auth_server = OAuthServer::start(4);
    let cli = ModelCli::new();
    let config = json!({"mcpServers": {"secure": {"url": auth_server.url("/mcp")}}});
    let gateway = Gateway::start(&cli, &config, &[]);
    let config_arg = gateway.config.to_str().expect("utf-8").to_string();
    let mut session = Session::new(gateway.url("/mcp"), None);
    assert_eq!(session.initialize().status, 200);

    // Before a login the server refuses the gateway, which says how to log in.
    assert!(
        !session
            .tool_names()
            .iter()
            .any(|n| n.starts_with("secure__"))
    );
    let servers = reqwest::blocking::get(gateway.url("/gateway/servers"))
        .and_then(|r| r.text())
        .expect("GET /gateway/servers");
    assert!(
        servers.contains("run `model mcp auth login secure`"),
        "{servers}"
    );
    eprintln!("before login: {servers}");
    assert_eq!(
        auth_entry(&cli, &gateway, "secure")["state"],
        "not logged in"
    );

    // Login: the printed URL, followed as a browser would (the test server approves at once),
    // returns to the runner's loopback listener.
    let started = Instant::now();
    let (ok, printed, url) = auth_login(&cli, &config_arg, "secure", true);
    assert!(ok, "login failed: {printed}");
    assert!(printed.contains("Authorized secure"), "{printed}");
    assert!(!holds_token(&printed), "{printed}");
    eprintln!("login took {:.2} s", started.elapsed().as_secs_f64());
    let url = url.expect("the authorization URL");
    let authorize: Vec<(String, String)> = reqwest::Url::parse(&url)
        .expect("authorization URL")
        .query_pairs()
        .into_owned()
        .collect();
    let param = |k: &str| {
        authorize
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(param("code_challenge_method"), Some("S256"), "{url}");
    assert_eq!(param("resource"), Some(auth_server.url("/mcp").as_str()));
    assert!(param("state").is_some_and(|s| s.len() >= 22), "{url}");
    assert!(param("redirect_uri").is_some_and(|r| r.starts_with("http://127.0.0.1:")));
    let stats = auth_server.stats();
    assert_eq!(
        (stats["registered"].as_u64(), stats["code_grants"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
    let entry = auth_entry(&cli, &gateway, "secure");
    assert_eq!(entry["state"], "authorized", "{entry}");
    assert_eq!(entry["refreshable"], true);
    let first_expiry = entry["expires_at"].as_i64().expect("expires_at");
    // The grant is encrypted at rest: no token in any file of the runner's home.
    for file in walk(&cli.home.path().join("mcp-auth")) {
        let bytes = std::fs::read(&file).expect("read store file");
        assert!(!holds_token(&String::from_utf8_lossy(&bytes)), "{file:?}");
    }

    // The gateway now reaches the server with the token.
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let reply = session.call("secure__whoami", json!({}));
        if !is_error(&reply) && reply.message.get("error").is_none() || Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = session.tool_names();
    };
    assert_eq!(
        result_text(&reply),
        "authorized caller",
        "{}",
        reply.message
    );

    // Past the access token's lifetime the gateway refreshes it before the call.
    std::thread::sleep(Duration::from_secs(5));
    let reply = session.call("secure__whoami", json!({}));
    assert_eq!(
        result_text(&reply),
        "authorized caller",
        "{}",
        reply.message
    );
    let stats = auth_server.stats();
    assert!(stats["refresh_grants"].as_u64() >= Some(1), "{stats}");
    let entry = auth_entry(&cli, &gateway, "secure");
    assert!(entry["expires_at"].as_i64() > Some(first_expiry), "{entry}");

    // Logout revokes both tokens at the server's revocation endpoint and deletes the grant.
    let out = cli.ok(&[
        "mcp",
        "auth",
        "logout",
        "secure",
        "--mcp-config",
        &config_arg,
    ]);
    assert!(out.contains("Revoked and deleted"), "{out}");
    assert_eq!(auth_server.stats()["revoked"].as_u64(), Some(2));
    assert_eq!(
        auth_entry(&cli, &gateway, "secure")["state"],
        "not logged in"
    );

    // The gateway still holds the revoked token: the server refuses it, the one refresh fails, and
    // the error says how to log in again.
    let mut answers = String::new();
    for _ in 0..2 {
        let reply = session.call("secure__whoami", json!({}));
        answers.push_str(&reply.message.to_string());
        if answers.contains("run `model mcp auth login secure`") {
            break;
        }
    }
    assert!(
        answers.contains("run `model mcp auth login secure`"),
        "{answers}\n{}",
        gateway.log()
    );
    eprintln!("after logout: {answers}");
    let log = gateway.log();
    assert!(!holds_token(&log), "the server log holds a token:\n{log}");
}

/// Calls `tool` until it answers without an error (a server just authorized may still be backing off
/// from its refusals), for at most 15 s; the last reply.
fn call_until_answered(session: &mut Session, tool: &str) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = session.call(tool, json!({}));
        if !is_error(&reply) && reply.message.get("error").is_none() || Instant::now() > deadline {
            return reply;
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = session.tool_names();
    }
}

/// An HTTP+SSE server behind the Python SDK's OAuth: login discovers through the SSE URL (its POST is
/// not allowed, its GET answers 401 with the challenge); the gateway sends the token on the GET that
/// opens the stream and on every POST, refreshes it past its lifetime, and once the server revoked
/// every token says to log in again, after which it works again. A server configured without a
/// `type` reaches the same SSE server by falling back from streamable HTTP, with its own grant.
#[test]
fn sse_servers_are_authorized_with_oauth_refreshed_and_ask_for_login_when_revoked() {
    let auth_server = OAuthServer::start_serving(4, "sse");
    let cli = ModelCli::new();
    let config = json!({"mcpServers": {
        "legacy": {"type": "sse", "url": auth_server.url("/sse")},
        "auto": {"url": auth_server.url("/sse")}
    }});
    let gateway = Gateway::start(&cli, &config, &[]);
    let config_arg = gateway.config.to_str().expect("utf-8").to_string();
    let mut session = Session::new(gateway.url("/mcp"), None);
    assert_eq!(session.initialize().status, 200);
    // Before a login both are refused, and the gateway says how to log in.
    assert!(
        !session
            .tool_names()
            .iter()
            .any(|n| n.starts_with("legacy__") || n.starts_with("auto__"))
    );
    let servers = reqwest::blocking::get(gateway.url("/gateway/servers"))
        .and_then(|r| r.text())
        .expect("GET /gateway/servers");
    for name in ["legacy", "auto"] {
        assert!(
            servers.contains(&format!("run `model mcp auth login {name}`")),
            "{servers}"
        );
    }
    let listed = cli.ok(&["mcp", "auth", "ls", "--mcp-config", &config_arg]);
    assert!(
        listed.contains("legacy") && listed.contains("auto"),
        "{listed}"
    );

    let started = Instant::now();
    for name in ["legacy", "auto"] {
        let (ok, printed, url) = auth_login(&cli, &config_arg, name, true);
        assert!(
            ok && printed.contains(&format!("Authorized {name}")),
            "{printed}"
        );
        let url = url.expect("the authorization URL");
        assert!(
            url.contains(&format!(
                "resource={}",
                urlencoding(&auth_server.url("/sse"))
            )),
            "the token is asked for the SSE URL: {url}"
        );
    }
    eprintln!("two SSE logins: {:.2} s", started.elapsed().as_secs_f64());
    for tool in ["legacy__whoami", "auto__whoami"] {
        let reply = call_until_answered(&mut session, tool);
        assert_eq!(
            result_text(&reply),
            "authorized caller",
            "{}",
            reply.message
        );
    }

    // Past the access tokens' lifetime the POSTs carry refreshed tokens.
    std::thread::sleep(Duration::from_secs(5));
    for tool in ["legacy__whoami", "auto__whoami"] {
        let reply = session.call(tool, json!({}));
        assert_eq!(
            result_text(&reply),
            "authorized caller",
            "{}",
            reply.message
        );
    }
    let stats = auth_server.stats();
    assert!(stats["refresh_grants"].as_u64() >= Some(2), "{stats}");

    // The server forgets every token: the POST is refused, the one refresh fails, the user is told.
    reqwest::blocking::Client::new()
        .post(auth_server.url("/test/revoke-all"))
        .send()
        .expect("revoke all");
    let reply = session.call("legacy__whoami", json!({}));
    assert!(
        reply
            .message
            .to_string()
            .contains("run `model mcp auth login legacy`"),
        "{}\n{}",
        reply.message,
        gateway.log()
    );
    let (ok, printed, _) = auth_login(&cli, &config_arg, "legacy", true);
    assert!(ok, "{printed}");
    let reply = call_until_answered(&mut session, "legacy__whoami");
    assert_eq!(
        result_text(&reply),
        "authorized caller",
        "{}",
        reply.message
    );
    let log = gateway.log();
    assert!(!holds_token(&log), "the server log holds a token:\n{log}");
}

/// `url` percent-encoded as a query value.
fn urlencoding(url: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", [("v", url)])
        .expect("url")
        .query()
        .and_then(|q| q.strip_prefix("v="))
        .expect("query")
        .to_string()
}

/// Several `model` processes that find the same expired grant (as `model serve` and a CLI command
/// sharing a home would) renew it once between them: the first to take the refresh lock spends the
/// rotating refresh token, the others read the renewed grant after it and hold the same new token.
#[test]
fn concurrent_refreshes_in_separate_processes_spend_the_refresh_token_once() {
    let auth_server = OAuthServer::start(3);
    let cli = ModelCli::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mcp.json");
    std::fs::write(
        &config,
        json!({"mcpServers": {"secure": {"url": auth_server.url("/mcp")}}}).to_string(),
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8").to_string();
    let (ok, printed, _) = auth_login(&cli, &config, "secure", true);
    assert!(ok, "{printed}");
    std::thread::sleep(Duration::from_secs(4));
    let refreshers: Vec<Child> = (0..4)
        .map(|_| {
            cli.command(&[
                "mcp",
                "auth",
                "refresh",
                "secure",
                "--json",
                "--mcp-config",
                &config,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("model mcp auth refresh")
        })
        .collect();
    let mut grants = Vec::new();
    for refresher in refreshers {
        let out = refresher.wait_with_output().expect("refresh exits");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!holds_token(&stdout), "{stdout}");
        let grant: Value = serde_json::from_str(stdout.trim()).expect("refresh --json");
        grants.push((grant["obtained_at"].clone(), grant["expires_at"].clone()));
    }
    let stats = auth_server.stats();
    assert_eq!(stats["refresh_grants"].as_u64(), Some(1), "{stats}");
    assert!(
        grants.iter().all(|g| *g == grants[0]) && grants[0].0.is_i64(),
        "every process holds the one renewed grant: {grants:?}"
    );
    let entry = cli.ok(&["mcp", "auth", "ls", "--json", "--mcp-config", &config]);
    assert!(entry.contains("\"authorized\""), "{entry}");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The processes below `pid` (at any depth up to eight) whose command line contains `needle`.
fn descendants_running(pid: u32, needle: &str) -> usize {
    let mut level = vec![pid];
    let mut count = 0;
    for _ in 0..8 {
        let below: Vec<(u32, String)> = level.iter().flat_map(|&p| children_of(p)).collect();
        count += below.iter().filter(|(_, c)| c.contains(needle)).count();
        level = below.into_iter().map(|(p, _)| p).collect();
        if level.is_empty() {
            break;
        }
    }
    count
}

/// Dynamic MCP: off unless `dynamicServers` is set (the meta-tools are not offered and refuse); on, a
/// session adds a catalog server (npm's server-everything through `npx`, at the version
/// scripts/setup-mcp.sh installs, offline) and gets its tools and `tools/list_changed`, other sessions do
/// not, a client not allowed the server and a server whose secrets are unset are refused, `mcp_remove`
/// stops it, and the end of the session stops what it left running. Driven by the Python MCP SDK.
#[test]
fn dynamic_servers_are_added_per_session_behind_a_switch() {
    let cli = ModelCli::new();
    let npm_dir = PathBuf::from(var("MCP_NPM_DIR"));
    let path = path_with_runtimes();
    // npx must not reach a registry: the servers' HOME says so.
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(home.path().join(".npmrc"), "offline=true\n").expect("npmrc");
    let home_dir = home.path().to_str().expect("utf-8").to_string();
    let clients = json!([
        {"name": "agent", "token": "agent-token-1234", "servers": ["everything", "github"]},
        {"name": "narrow", "token": "narrow-token-5678", "servers": ["time"]}
    ]);
    let env = [("PATH", path.as_str()), ("HOME", home_dir.as_str())];
    let run = |gateway: &Gateway, mode: &str| {
        let out = Command::new(var("MCP_PYTHON"))
            .arg(repo_root().join("tests/python/mcp_dynamic_client.py"))
            .env("MCP_URL", gateway.url("/mcp"))
            .env("MODE", mode)
            .env("TOKEN", "agent-token-1234")
            .env("NARROW_TOKEN", "narrow-token-5678")
            .env("GATEWAY_PID", gateway.child.id().to_string())
            .output()
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("dynamic client ok"),
            "{mode}: {stdout}\n{}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            gateway.log()
        );
    };

    let off = Gateway::start_in(
        &cli,
        &json!({"mcpServers": {}, "gateway": {"clients": clients}}),
        &[],
        &env,
        Some(&npm_dir),
    );
    run(&off, "off");
    drop(off);

    let on = Gateway::start_in(
        &cli,
        &json!({"mcpServers": {}, "gateway": {"clients": clients, "dynamicServers": true}}),
        &[],
        &env,
        Some(&npm_dir),
    );
    run(&on, "on");
    let deadline = Instant::now() + Duration::from_secs(20);
    while descendants_running(on.child.id(), "server-everything") > 0 {
        assert!(
            Instant::now() < deadline,
            "the ended session's server still runs\n--- server log ---\n{}",
            on.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
