//! The web console in a real browser: Debian's Chromium, headless, driven through chromedriver by
//! Selenium (`tests/python/console_ui.py`) against the real server with an API key, a real registry to
//! pull from and the MCP reference server `server-everything` behind the gateway. The script saves a
//! screenshot of each page (the path is printed) and runs axe-core in each page.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    ModelCli, Registry, Server, default_model_gguf, everything_server, python, repo_root,
};
use serde_json::json;

const API_KEY: &str = "console-test-key-0123";

/// Chromium and its driver, which `scripts/setup-tests.sh` installs; `None` says why the test cannot run.
fn chromium() -> Option<(PathBuf, PathBuf)> {
    let browser = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())?;
    let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())?;
    Some((browser, driver))
}

/// axe-core's script, installed by `scripts/setup-tests.sh` outside the repository.
fn axe_script() -> PathBuf {
    let cache = std::env::var_os("MODEL_RUNNER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/model-runner")
        });
    let path = cache.join("console/node_modules/axe-core/axe.min.js");
    assert!(
        path.exists(),
        "axe-core is missing at {}: run scripts/setup-tests.sh",
        path.display()
    );
    path
}

/// A server with the API key and server-everything behind its MCP gateway (config written at `config`).
fn start_with_everything(cli: &ModelCli, config: &Path) -> Server {
    std::fs::write(
        config,
        json!({"mcpServers": {"everything": everything_server(json!({}))}}).to_string(),
    )
    .expect("write MCP config");
    Server::start(
        cli,
        &[
            "--api-key",
            API_KEY,
            "--mcp-config",
            config.to_str().expect("utf-8 path"),
        ],
    )
}

/// Packages the default model and pushes it to `registry`; returns its reference there.
fn push_default_model(registry: &Registry) -> String {
    let publisher = ModelCli::new();
    let reference = format!("{}/ai/smollm2:console", registry.host());
    let gguf = default_model_gguf();
    publisher.ok(&[
        "package",
        "--gguf",
        gguf.to_str().expect("utf-8 path"),
        "--push",
        &reference,
    ]);
    reference
}

fn get(url: &str, key: Option<&str>) -> reqwest::blocking::Response {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut request = client.get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().expect("GET")
}

#[test]
fn console_pages_load_with_strict_headers_and_no_ui_turns_them_off() {
    let cli = ModelCli::new();
    let server = Server::start(&cli, &["--api-key", API_KEY]);
    // The page and its assets load without the key (the page asks for it); the API does not.
    for path in ["/", "/ui/", "/ui/app.js", "/ui/style.css"] {
        let response = get(&server.url(path), None);
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
    }
    assert!(
        get(&server.url("/ui/app.js"), None).headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(get(&server.url("/models"), None).status(), 401);
    assert_eq!(get(&server.url("/ui/nope.js"), None).status(), 404);
    // A page of another site is refused before any console file is served.
    let foreign = reqwest::blocking::Client::new()
        .get(server.url("/"))
        .header("Origin", "https://evil.example")
        .send()
        .expect("GET");
    assert_eq!(foreign.status(), 403);

    let plain = Server::start(&cli, &["--no-ui"]);
    let root = get(&plain.url("/"), None);
    assert_eq!(root.status(), 200);
    assert_eq!(root.text().unwrap(), "model-runner is running");
    assert_eq!(get(&plain.url("/ui/"), None).status(), 404);
}

/// The console's MCP page calls `/mcp` from the server's own origin; a page of another site may not.
#[test]
fn mcp_takes_the_console_origin_and_refuses_a_foreign_one() {
    let cli = ModelCli::new();
    let server = start_with_everything(&cli, &cli.home.path().join("mcp.json"));
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "console-test", "version": "1"}}});
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let post = |origin: &str| {
        let response = http
            .post(server.url("/mcp"))
            .bearer_auth(API_KEY)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .header("Origin", origin)
            .body(initialize.to_string())
            .send()
            .expect("POST /mcp");
        let status = response.status().as_u16();
        (status, response.text().unwrap_or_default())
    };
    // The MCP page's server list: not started yet, so idle (the first call starts it).
    let health: serde_json::Value = get(&server.url("/health"), Some(API_KEY))
        .json()
        .expect("health");
    assert_eq!(
        health["mcp_servers"],
        json!([{"name": "everything", "running": false, "state": "idle", "crashes": 0}]),
        "{health}"
    );
    let page = format!("http://127.0.0.1:{}", server.port);
    let (status, body) = post(&page);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("serverInfo"), "{body}");
    for foreign in [
        "https://evil.example",
        "http://127.0.0.1.evil.example",
        "null",
    ] {
        let (status, body) = post(foreign);
        assert_eq!(status, 403, "Origin {foreign}: {body}");
    }
}

#[test]
fn console_chats_pulls_calls_a_tool_and_charts_metrics_in_chromium() {
    let Some((browser, driver)) = chromium() else {
        eprintln!(
            "SKIPPED console_chats_pulls_calls_a_tool_and_charts_metrics_in_chromium: chromium and \
             chromium-driver are not installed (scripts/setup-tests.sh installs them with apt)"
        );
        return;
    };
    let registry = Registry::start();
    let reference = push_default_model(&registry);
    let dir = tempfile::tempdir().expect("tempdir");
    // An empty store: the page pulls the model it then chats with.
    let cli = ModelCli::new();
    let server = start_with_everything(&cli, &dir.path().join("mcp.json"));
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&screenshots).expect("screenshot dir");
    let out = Command::new(python())
        .arg(repo_root().join("tests/python/console_ui.py"))
        .env("CONSOLE_URL", server.url("/"))
        .env("API_KEY", API_KEY)
        .env("PULL_REFERENCE", &reference)
        .env("CHROMIUM", browser)
        .env("CHROMEDRIVER", driver)
        .env("AXE_SCRIPT", axe_script())
        .env("SCREENSHOT_DIR", &screenshots)
        .output()
        .expect("run console_ui.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "console_ui.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("console screenshots: {}", screenshots.display());
    for page in ["chat", "models", "mcp", "metrics"] {
        let shot = screenshots.join(format!("{page}.png"));
        assert!(
            std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
            "{}",
            shot.display()
        );
    }
}
