//! The model store end to end: the real `model` binary, the real default model, a real OCI registry.

mod common;

use std::process::Command;

use common::{ModelCli, Proxy, ProxyMode, Registry, default_model_gguf};
use serde_json::Value;

fn inspect(cli: &ModelCli, reference: &str) -> Value {
    serde_json::from_str(&cli.ok(&["inspect", reference])).expect("inspect prints JSON")
}

/// Packages the default model and pushes it as `ai/smollm2:test`; returns the reference and GGUF digest.
fn push_default_model(registry: &Registry) -> (String, String) {
    let publisher = ModelCli::new();
    let reference = format!("{}/ai/smollm2:test", registry.host());
    let gguf = default_model_gguf();
    publisher.ok(&[
        "package",
        "--gguf",
        gguf.to_str().unwrap(),
        "--push",
        &reference,
    ]);
    let model = inspect(&publisher, &reference);
    let gguf_digest = model["config"]["gguf"].is_object().then_some(());
    assert!(gguf_digest.is_some());
    let manifest = std::fs::read_dir(publisher.home.path().join("manifests/sha256"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    (reference, layer)
}

#[test]
fn package_push_rm_pull_round_trip_is_byte_identical() {
    let registry = Registry::start();
    let cli = ModelCli::new();
    let reference = format!("{}/ai/smollm2:test", registry.host());
    let gguf = default_model_gguf();
    cli.ok(&[
        "package",
        "--gguf",
        gguf.to_str().unwrap(),
        "--push",
        &reference,
    ]);

    let model = inspect(&cli, &reference);
    let config = &model["config"];
    assert_eq!(config["format"], "gguf");
    assert_eq!(config["architecture"], "llama");
    assert_eq!(config["quantization"], "Q4_1");
    assert_eq!(config["parameters"], "134.52M");
    assert_eq!(config["context_size"], 8192);
    assert!(config["size"].as_str().unwrap().ends_with("MiB"));
    assert_eq!(config["gguf"]["general.architecture"], "llama");
    assert_eq!(model["tags"][0], reference);

    // Another reference to the same content, then remove both; the store empties.
    cli.ok(&["tag", &reference, "mine/smollm2:copy"]);
    assert!(cli.ok(&["ls"]).contains("mine/smollm2:copy"));
    cli.ok(&["rm", &reference, "mine/smollm2:copy"]);
    assert_eq!(cli.ok(&["ls", "--json"]).trim(), "[]");
    assert!(
        cli.stored_files().is_empty(),
        "rm left {:?}",
        cli.stored_files()
    );

    let out = cli.run(&["pull", &reference]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("done"), "pull shows progress: {progress}");

    let listing = cli.ok(&["ls"]);
    let header = listing.lines().next().unwrap();
    for column in [
        "MODEL NAME",
        "PARAMETERS",
        "QUANTIZATION",
        "ARCHITECTURE",
        "MODEL ID",
        "CREATED",
        "CONTEXT",
        "SIZE",
    ] {
        assert!(
            header.contains(column),
            "ls header lacks {column}: {header}"
        );
    }
    let row = listing.lines().nth(1).expect("one model listed");
    for cell in [reference.as_str(), "134.52M", "Q4_1", "llama", "8192"] {
        assert!(row.contains(cell), "ls row lacks {cell}: {row}");
    }

    // The pulled GGUF layer is the source file, byte for byte.
    let manifest_path = std::fs::read_dir(cli.home.path().join("manifests/sha256"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifest_path).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let stored = cli.blobs_dir().join(layer.trim_start_matches("sha256:"));
    assert_eq!(
        std::fs::read(stored).unwrap(),
        std::fs::read(&gguf).unwrap()
    );

    // Another OCI tool sees our manifest with Docker Model Runner's media types.
    let skopeo = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    assert!(
        skopeo.status.success(),
        "{}",
        String::from_utf8_lossy(&skopeo.stderr)
    );
    let remote: Value = serde_json::from_slice(&skopeo.stdout).unwrap();
    assert_eq!(
        remote["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        remote["config"]["mediaType"],
        "application/vnd.docker.ai.model.config.v0.1+json"
    );
    assert_eq!(
        remote["layers"][0]["mediaType"],
        "application/vnd.docker.ai.gguf.v3"
    );
    assert_eq!(remote, manifest);
}

#[test]
fn tampered_blob_fails_with_digest_error_and_store_unchanged() {
    let registry = Registry::start();
    let (reference, layer) = push_default_model(&registry);
    let data = registry.blob_data_path(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let cli = ModelCli::new();
    let error = cli.fails(&["pull", &reference]);
    assert!(
        error.to_lowercase().contains("digest"),
        "error names the digest: {error}"
    );
    assert_eq!(
        error
            .trim()
            .lines()
            .last()
            .unwrap()
            .matches("Error:")
            .count(),
        1
    );
    assert_eq!(cli.ok(&["ls", "--json"]).trim(), "[]");
    let partials: Vec<_> = cli
        .stored_files()
        .into_iter()
        .filter(|f| f.contains(&layer[7..]))
        .collect();
    assert!(
        partials.is_empty(),
        "tampered data stayed in the store: {partials:?}"
    );
}

#[test]
fn interrupted_pull_resumes_with_range_request() {
    let registry = Registry::start();
    let (reference, layer) = push_default_model(&registry);
    let blob_size = std::fs::metadata(default_model_gguf()).unwrap().len();
    let proxy = Proxy::start(registry.port);
    let via_proxy = reference.replace(&registry.host(), &proxy.host());

    // The connection breaks 30 MiB into the big layer.
    proxy.set_mode(ProxyMode::CutAfter, 30 << 20);
    let cli = ModelCli::new();
    cli.fails(&["pull", &via_proxy]);
    let partial = cli.incoming_dir().join(format!("{}.partial", &layer[7..]));
    let kept = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(
        kept > 10 << 20,
        "the partial download was kept ({kept} bytes)"
    );

    proxy.set_mode(ProxyMode::Pass, u64::MAX);
    proxy.reset_count();
    cli.ok(&["pull", &via_proxy]);
    let transferred = proxy
        .response_bytes
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        transferred < blob_size - (10 << 20),
        "resume moved {transferred} bytes for a {blob_size}-byte blob"
    );
    let stored = cli.blobs_dir().join(&layer[7..]);
    assert_eq!(
        std::fs::read(stored).unwrap(),
        std::fs::read(default_model_gguf()).unwrap()
    );
    assert!(!partial.exists());
}

#[test]
fn concurrent_pulls_of_one_model_both_succeed() {
    let registry = Registry::start();
    let (reference, layer) = push_default_model(&registry);
    let cli = ModelCli::new();
    let children: Vec<_> = (0..2)
        .map(|_| {
            cli.command(&["pull", &reference])
                .spawn()
                .expect("spawn pull")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
    }
    let listing: Value = serde_json::from_str(&cli.ok(&["ls", "--json"])).unwrap();
    assert_eq!(listing.as_array().unwrap().len(), 1);
    let files = cli.stored_files();
    assert!(files.iter().all(|f| !f.ends_with(".partial")), "{files:?}");
    assert_eq!(files.iter().filter(|f| **f == layer[7..]).count(), 1);
    let stored = cli.blobs_dir().join(&layer[7..]);
    assert_eq!(
        std::fs::read(stored).unwrap(),
        std::fs::read(default_model_gguf()).unwrap()
    );
}

/// Writes an OCI layout holding `gguf` under a config of `config_media_type`, with CNCF layer types.
fn oci_layout_with(dir: &std::path::Path, gguf: &std::path::Path, config_media_type: &str) {
    let script = r#"
import hashlib, json, os, shutil, sys
out, gguf, config_type = sys.argv[1], sys.argv[2], sys.argv[3]
blobs = os.path.join(out, "blobs", "sha256"); os.makedirs(blobs, exist_ok=True)
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(os.path.join(blobs, d), "wb").write(data); return "sha256:" + d, len(data)
h = hashlib.sha256()
with open(gguf, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""): h.update(chunk)
layer_digest = "sha256:" + h.hexdigest()
shutil.copyfile(gguf, os.path.join(blobs, h.hexdigest()))
config = json.dumps({"descriptor": {"createdAt": "2025-06-01T00:00:00Z"},
    "config": {"architecture": "llama", "format": "gguf", "paramSize": "135M", "quantization": "Q4_1"},
    "modelfs": {"type": "layers", "diffIds": [layer_digest]}}).encode()
cd, cs = put(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": config_type, "digest": cd, "size": cs},
    "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.gguf", "digest": layer_digest,
                "size": os.path.getsize(gguf)}]}).encode()
md, ms = put(manifest)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]},
    open(os.path.join(out, "index.json"), "w"))
open(os.path.join(out, "oci-layout"), "w").write('{"imageLayoutVersion": "1.0.0"}')
"#;
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .arg(gguf)
        .arg(config_media_type)
        .status()
        .expect("python3");
    assert!(status.success());
}

fn skopeo_copy(layout: &std::path::Path, target: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--preserve-digests"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{target}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn artifact_pushed_by_skopeo_pulls_and_lists() {
    let registry = Registry::start();
    let layout = tempfile::tempdir().unwrap();
    oci_layout_with(
        layout.path(),
        &default_model_gguf(),
        "application/vnd.cncf.model.config.v1+json",
    );
    let target = format!("{}/cncf/smollm2:v1", registry.host());
    skopeo_copy(layout.path(), &target);

    let cli = ModelCli::new();
    cli.ok(&["pull", &target]);
    let listing = cli.ok(&["ls"]);
    let row = listing.lines().nth(1).expect("one model");
    for cell in [target.as_str(), "135M", "Q4_1", "llama"] {
        assert!(row.contains(cell), "ls row lacks {cell}: {row}");
    }
    assert_eq!(inspect(&cli, &target)["config"]["format"], "gguf");
}

#[test]
fn non_model_artifacts_and_broken_registries_give_one_line_errors() {
    let registry = Registry::start();
    let cli = ModelCli::new();

    // An OCI image that is not a model.
    let layout = tempfile::tempdir().unwrap();
    oci_layout_with(
        layout.path(),
        &default_model_gguf(),
        "application/vnd.oci.image.config.v1+json",
    );
    let image = format!("{}/not/a-model:v1", registry.host());
    skopeo_copy(layout.path(), &image);
    let error = cli.fails(&["pull", &image]);
    assert!(error.contains("not a model"), "{error}");

    // A tag the registry does not have.
    let error = cli.fails(&["pull", &format!("{}/ai/missing:v1", registry.host())]);
    assert!(error.contains("not found"), "{error}");

    // A registry that answers 500.
    let proxy = Proxy::start(registry.port);
    proxy.set_mode(ProxyMode::Fail500, 0);
    let error = cli.fails(&["pull", &format!("{}/ai/smollm2:v1", proxy.host())]);
    assert!(
        error.contains("500") || error.contains("injected failure"),
        "{error}"
    );

    // A registry that is down.
    let down = format!("127.0.0.1:{}/ai/smollm2:v1", common::free_port());
    let error = cli.fails(&["pull", &down]);
    assert!(error.contains("cannot reach registry"), "{error}");

    assert!(cli.stored_files().is_empty(), "{:?}", cli.stored_files());
    for error in [
        cli.fails(&["pull", "Bad/Reference"]),
        cli.fails(&["pull", "ai/smollm2:bad tag"]),
        cli.fails(&["rm", "ai/never-pulled"]),
        cli.fails(&["inspect", "ai/never-pulled"]),
    ] {
        assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
        assert!(error.starts_with("Error: "), "{error}");
    }
}

#[test]
fn package_refuses_files_that_are_not_whole_gguf() {
    let cli = ModelCli::new();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "this is not a model").unwrap();
    let error = cli.fails(&["package", "--gguf", text.to_str().unwrap(), "ai/bad:v1"]);
    assert!(error.contains("not a GGUF file"), "{error}");

    let source = std::fs::read(default_model_gguf()).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &source[..source.len() / 2]).unwrap();
    let error = cli.fails(&[
        "package",
        "--gguf",
        truncated.to_str().unwrap(),
        "ai/bad:v1",
    ]);
    assert!(error.contains("truncated"), "{error}");
    assert!(cli.stored_files().is_empty(), "{:?}", cli.stored_files());
}

#[test]
fn package_records_license_template_and_context_size() {
    let cli = ModelCli::new();
    let dir = tempfile::tempdir().unwrap();
    let license = dir.path().join("LICENSE");
    std::fs::write(&license, "Apache-2.0").unwrap();
    let template = dir.path().join("template.jinja");
    std::fs::write(
        &template,
        "{% for m in messages %}{{ m.content }}{% endfor %}",
    )
    .unwrap();
    let gguf = default_model_gguf();
    cli.ok(&[
        "package",
        "--gguf",
        gguf.to_str().unwrap(),
        "--license",
        license.to_str().unwrap(),
        "--chat-template",
        template.to_str().unwrap(),
        "--context-size",
        "2048",
        "ai/smollm2:ctx2k",
    ]);
    let model = inspect(&cli, "smollm2:ctx2k");
    assert_eq!(model["config"]["context_size"], 2048);
    let id = model["id"].as_str().unwrap();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(cli.home.path().join("manifests/sha256").join(&id[7..])).unwrap(),
    )
    .unwrap();
    let types: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.docker.ai.gguf.v3",
            "application/vnd.docker.ai.license",
            "application/vnd.docker.ai.chat.template.jinja"
        ]
    );
    // Resolvable by the short ID `ls -q` prints, too.
    let short = cli.ok(&["ls", "-q"]).trim().to_string();
    assert_eq!(inspect(&cli, &short)["id"], id);
    let df = cli.ok(&["df"]);
    assert!(df.contains("Models"), "{df}");
}

/// A loopback stand-in for the hub serving the default model's GGUF, listed at `listed_size` bytes: the
/// routes hf-hub uses, served by Python's file server, killed on drop.
struct FakeHub {
    _dir: tempfile::TempDir,
    server: std::process::Child,
    port: u16,
}

impl FakeHub {
    fn start(listed_size: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("test-org/SmolLM2-135M-Instruct-GGUF");
        std::fs::create_dir_all(repo.join("resolve/main")).unwrap();
        std::fs::copy(
            default_model_gguf(),
            repo.join("resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf"),
        )
        .unwrap();
        let tree = dir
            .path()
            .join("api/models/test-org/SmolLM2-135M-Instruct-GGUF/tree");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(
            tree.join("main"),
            serde_json::json!([
                {"type": "file", "oid": "1", "size": 12, "path": "README.md"},
                {"type": "file", "oid": "2", "size": listed_size, "path": "SmolLM2-135M-Instruct.Q4_1.gguf"}
            ])
            .to_string(),
        )
        .unwrap();
        let port = common::free_port();
        let server = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
                "--directory",
            ])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 http.server");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self {
            _dir: dir,
            server,
            port,
        }
    }

    fn pull(&self, cli: &ModelCli) -> std::process::Output {
        cli.command(&["pull", "hf.co/test-org/SmolLM2-135M-Instruct-GGUF:Q4_1"])
            .env("HF_ENDPOINT", format!("http://127.0.0.1:{}", self.port))
            .env("HF_HOME", cli.home.path().join("hf-home"))
            .env_remove("HF_TOKEN")
            .output()
            .unwrap()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[test]
fn hugging_face_pull_stores_the_same_artifact() {
    let gguf = default_model_gguf();
    let hub = FakeHub::start(std::fs::metadata(&gguf).unwrap().len());
    let cli = ModelCli::new();
    let out = hub.pull(&cli);
    drop(hub);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let model = inspect(&cli, "hf.co/test-org/smollm2-135m-instruct-gguf:Q4_1");
    assert_eq!(model["config"]["architecture"], "llama");
    assert_eq!(model["config"]["quantization"], "Q4_1");
    let row = cli.ok(&["ls"]);
    assert!(
        row.contains("hf.co/test-org/smollm2-135m-instruct-gguf:Q4_1"),
        "{row}"
    );
    let id = model["id"].as_str().unwrap();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(cli.home.path().join("manifests/sha256").join(&id[7..])).unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(
        std::fs::read(cli.blobs_dir().join(&layer[7..])).unwrap(),
        std::fs::read(&gguf).unwrap()
    );
}

/// Compose's provider protocol: `model compose up` pulls the model from a registry, starts a server when
/// none answers, and prints the `setenv` lines Compose passes on; the URL serves the model.
#[test]
fn compose_up_pulls_starts_a_server_and_prints_setenv_lines() {
    let registry = Registry::start();
    let (reference, _) = push_default_model(&registry);
    let cli = ModelCli::new();
    let port = common::free_port().to_string();
    let up = |cli: &ModelCli| -> Vec<Value> {
        let out = cli
            .command(&[
                "compose",
                "--project-name",
                "demo",
                "up",
                "--model",
                &reference,
                "--context-size",
                "1024",
                "app",
            ])
            .env("MODEL_RUNNER_PORT", &port)
            .output()
            .expect("run model compose");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "compose up failed:\n{stdout}");
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("every stdout line is a JSON message"))
            .collect()
    };
    let messages = up(&cli);
    let started: Option<u32> = messages.iter().find_map(|m| {
        let text = m["message"].as_str()?;
        text.strip_prefix("started model serve (pid ")?
            .split(',')
            .next()?
            .parse()
            .ok()
    });
    let server_pid = started.expect("a server was started");
    let _stop = StopOnDrop(server_pid);
    let setenv: Vec<&str> = messages
        .iter()
        .filter(|m| m["type"] == "setenv")
        .filter_map(|m| m["message"].as_str())
        .collect();
    let url = format!("http://127.0.0.1:{port}/engines/v1/");
    assert_eq!(setenv, [format!("URL={url}"), format!("MODEL={reference}")]);
    assert!(
        messages
            .iter()
            .any(|m| m["message"] == format!("pulling {reference}")),
        "{messages:?}"
    );

    // The URL is an OpenAI base URL serving the pulled model.
    let listed: Value = reqwest::blocking::get(format!("{url}models"))
        .and_then(|r| r.json())
        .expect("GET models");
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .expect("model list")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.iter()
            .any(|id| reference.contains(id) || id.contains("smollm2")),
        "{ids:?}"
    );

    // A second `up` finds the model cached and the server running: nothing pulled, nothing started.
    let again = up(&cli);
    assert!(again.iter().all(|m| {
        let text = m["message"].as_str().unwrap_or_default();
        !text.starts_with("pulling") && !text.starts_with("started")
    }));
    let metadata = cli.ok(&["compose", "metadata"]);
    let metadata: Value = serde_json::from_str(&metadata).expect("metadata is JSON");
    assert_eq!(metadata["up"]["parameters"][0]["name"], "model");
}

/// Kills the server a test started through `model compose up`.
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

/// What the hostile registry sends back for one request.
enum Reply {
    Whole {
        status: &'static str,
        headers: Vec<String>,
        body: Vec<u8>,
    },
    /// A 200 whose body never ends (until 2 GiB or the client hangs up), with no declared length.
    Endless,
}

impl Reply {
    fn ok(body: impl Into<Vec<u8>>) -> Self {
        Self::Whole {
            status: "200 OK",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    fn status(status: &'static str, headers: &[String]) -> Self {
        Self::Whole {
            status,
            headers: headers.to_vec(),
            body: Vec::new(),
        }
    }
}

/// A registry that misbehaves on demand, since no real one does: a loopback HTTP/1.1 server that records
/// every request head and answers each through `answer`, one request per connection.
struct HostileRegistry {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HostileRegistry {
    fn start(answer: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let server = Self {
            port: listener.local_addr().unwrap().port(),
            requests: Arc::new(Mutex::new(Vec::new())),
            sent: Arc::default(),
            stop: Arc::default(),
        };
        let (requests, sent, stop) = (
            server.requests.clone(),
            server.sent.clone(),
            server.stop.clone(),
        );
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut client, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                let (requests, sent, answer) = (requests.clone(), sent.clone(), answer.clone());
                std::thread::spawn(move || {
                    let _ = client.set_nonblocking(false);
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while head.len() < 64 << 10 && !head.ends_with(b"\r\n\r\n") {
                        match client.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    requests.lock().unwrap().push(head.clone());
                    match answer(&head) {
                        Reply::Whole {
                            status,
                            headers,
                            body,
                        } => {
                            let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
                            for header in headers {
                                out.push_str(&header);
                                out.push_str("\r\n");
                            }
                            if !out.to_ascii_lowercase().contains("content-length") {
                                out.push_str(&format!("Content-Length: {}\r\n", body.len()));
                            }
                            out.push_str("\r\n");
                            let _ = client.write_all(out.as_bytes());
                            let _ = client.write_all(&body);
                        }
                        Reply::Endless => {
                            let _ =
                                client.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                            let chunk = vec![b' '; 64 << 10];
                            for _ in 0..(2u64 << 30) / chunk.len() as u64 {
                                if client.write_all(&chunk).is_err() {
                                    break;
                                }
                                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                            }
                        }
                    }
                });
            }
        });
        server
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Request heads whose request line contains `path_part`.
    fn requests_to(&self, path_part: &str) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|head| head.lines().next().unwrap_or("").contains(path_part))
            .cloned()
            .collect()
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A small model's blobs and a manifest naming them, with the layer's declared size given.
struct HostileModel {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

impl HostileModel {
    fn new(declared_layer_size: u64) -> Self {
        let config =
            br#"{"config":{"format":"gguf"},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
        let layer = vec![7u8; 1000];
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.docker.ai.model.config.v0.1+json",
                "digest": format!("sha256:{}", sha256_hex(&config)),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.docker.ai.gguf.v3",
                "digest": format!("sha256:{}", sha256_hex(&layer)),
                "size": declared_layer_size,
            }],
        });
        Self {
            config,
            layer,
            manifest: serde_json::to_vec(&manifest).unwrap(),
        }
    }

    /// Answers for the manifest and config; `layer` answers for the layer.
    fn serve(self, layer: impl Fn() -> Reply + Send + Sync + 'static) -> HostileRegistry {
        let config_path = format!("/blobs/sha256:{}", sha256_hex(&self.config));
        HostileRegistry::start(move |head| {
            let line = head.lines().next().unwrap_or("");
            if line.contains("/manifests/") {
                Reply::Whole {
                    status: "200 OK",
                    headers: vec![
                        "Content-Type: application/vnd.oci.image.manifest.v1+json".into(),
                    ],
                    body: self.manifest.clone(),
                }
            } else if line.contains(&config_path) {
                Reply::ok(self.config.clone())
            } else if line.contains("/blobs/") {
                layer()
            } else {
                Reply::ok("{}")
            }
        })
    }
}

fn partial_downloads(cli: &ModelCli) -> Vec<String> {
    cli.stored_files()
        .into_iter()
        .filter(|f| f.ends_with(".partial"))
        .collect()
}

#[test]
fn pull_stops_reading_an_oversized_manifest_at_the_cap() {
    let endless = HostileRegistry::start(|head| {
        if head.starts_with("GET /v2/ ") {
            Reply::ok("{}")
        } else {
            Reply::Endless
        }
    });
    let cli = ModelCli::new();
    let error = cli.fails(&["pull", &format!("{}/ai/huge:v1", endless.host())]);
    assert!(
        error.contains("manifest over the 4194304-byte limit"),
        "{error}"
    );
    let sent = endless.sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        sent < 64 << 20,
        "the client kept reading past the cap: {sent} bytes sent"
    );

    // A declared length over the cap is refused before a byte of the body is read.
    let declared = HostileRegistry::start(|head| {
        if head.starts_with("GET /v2/ ") {
            Reply::ok("{}")
        } else {
            Reply::status("200 OK", &["Content-Length: 1073741824".into()])
        }
    });
    let error = cli.fails(&["pull", &format!("{}/ai/huge:v1", declared.host())]);
    assert!(error.contains("manifest over the"), "{error}");
    assert!(cli.stored_files().is_empty(), "{:?}", cli.stored_files());
}

#[test]
fn pull_deletes_a_blob_longer_than_declared_or_with_a_wrong_digest() {
    let cli = ModelCli::new();
    let longer = HostileModel::new(1000).serve(|| Reply::ok(vec![7u8; 6000]));
    let error = cli.fails(&["pull", &format!("{}/ai/long:v1", longer.host())]);
    assert!(
        error.contains("more than the 1000 bytes declared"),
        "{error}"
    );
    assert!(
        partial_downloads(&cli).is_empty(),
        "{:?}",
        cli.stored_files()
    );

    let wrong = HostileModel::new(1000).serve(|| Reply::ok(vec![8u8; 1000]));
    let error = cli.fails(&["pull", &format!("{}/ai/wrong:v1", wrong.host())]);
    assert!(error.contains("digest mismatch"), "{error}");
    assert!(
        partial_downloads(&cli).is_empty(),
        "{:?}",
        cli.stored_files()
    );

    // The honest registry's model pulls: the hostile parts were the only reason for refusal.
    let model = HostileModel::new(1000);
    let layer = model.layer.clone();
    let honest = model.serve(move || Reply::ok(layer.clone()));
    cli.ok(&["pull", &format!("{}/ai/honest:v1", honest.host())]);
    assert!(
        partial_downloads(&cli).is_empty(),
        "{:?}",
        cli.stored_files()
    );
}

#[test]
fn pull_refuses_a_layer_declared_beyond_the_bound_or_the_free_space_before_fetching_it() {
    let cli = ModelCli::new();
    let tebibyte = HostileModel::new(1 << 40).serve(|| Reply::Endless);
    let error = cli.fails(&["pull", &format!("{}/ai/tebibyte:v1", tebibyte.host())]);
    assert!(error.contains("over the"), "{error}");
    assert!(tebibyte.requests_to("/blobs/").is_empty());
    assert!(cli.stored_files().is_empty(), "{:?}", cli.stored_files());

    // Under the bound but over the free space of the store's disk.
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(cli.home.path())
        .output()
        .unwrap();
    let free: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap();
    let declared = free + (4 << 30);
    if declared <= 512 << 30 {
        let big = HostileModel::new(declared).serve(|| Reply::Endless);
        let error = cli.fails(&["pull", &format!("{}/ai/big:v1", big.host())]);
        assert!(error.contains("not enough disk space"), "{error}");
        assert!(big.requests_to("/blobs/").is_empty());
        assert!(cli.stored_files().is_empty(), "{:?}", cli.stored_files());
    }
}

/// Pulls from `registry` with registry credentials in the environment, scoped to `scope` when given.
fn pull_with_env_credentials(registry: &HostileRegistry, scope: Option<&str>, token: bool) {
    let cli = ModelCli::new();
    let reference = format!("{}/ai/secret:v1", registry.host());
    let mut command = cli.command(&["pull", &reference]);
    if token {
        command.env("MODEL_RUNNER_REGISTRY_TOKEN", "s3cr3t-token");
    } else {
        command
            .env("MODEL_RUNNER_REGISTRY_USERNAME", "alice")
            .env("MODEL_RUNNER_REGISTRY_PASSWORD", "s3cr3t");
    }
    match scope {
        Some(host) => command.env("MODEL_RUNNER_REGISTRY_HOST", host),
        None => command.env_remove("MODEL_RUNNER_REGISTRY_HOST"),
    };
    let _ = command.output().unwrap();
}

fn authorization_headers(registry: &HostileRegistry) -> Vec<String> {
    registry
        .requests
        .lock()
        .unwrap()
        .iter()
        .flat_map(|head| head.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|line| line.to_ascii_lowercase().starts_with("authorization:"))
        .collect()
}

#[test]
fn env_credentials_go_only_to_the_registry_named_by_registry_host() {
    // The registry asks for Basic credentials, as a private one does.
    let asks = || {
        HostileRegistry::start(|head| {
            if head.to_ascii_lowercase().contains("\nauthorization:") {
                Reply::status("404 Not Found", &[])
            } else {
                Reply::status(
                    "401 Unauthorized",
                    &[r#"WWW-Authenticate: Basic realm="registry""#.into()],
                )
            }
        })
    };
    for (scope, token) in [
        (None, false),
        (None, true),
        (Some("registry.example.invalid:5000"), false),
        (Some("registry.example.invalid:5000"), true),
    ] {
        let registry = asks();
        pull_with_env_credentials(&registry, scope, token);
        assert!(
            !registry.requests.lock().unwrap().is_empty(),
            "the pull reached the registry"
        );
        let sent = authorization_headers(&registry);
        assert!(
            sent.is_empty(),
            "credentials scoped to {scope:?} (token: {token}) went to {}: {sent:?}",
            registry.host()
        );
    }

    // Scoped to this registry, they are presented.
    let registry = asks();
    pull_with_env_credentials(&registry, Some(&registry.host()), false);
    let sent = authorization_headers(&registry);
    assert!(
        sent.iter().any(|h| h.contains("Basic YWxpY2U6czNjcjN0")),
        "{sent:?}"
    );
    let registry = asks();
    pull_with_env_credentials(&registry, Some(&registry.host()), true);
    assert!(
        authorization_headers(&registry)
            .iter()
            .any(|h| h.contains("Bearer s3cr3t-token"))
    );
}

#[test]
fn basic_credentials_are_withheld_from_a_token_realm_on_another_host() {
    // One server plays registry and realm; the realm's URL names it as `localhost`, another host.
    let realm_host = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let realm = realm_host.clone();
    let registry = HostileRegistry::start(move |head| {
        let line = head.lines().next().unwrap_or("");
        if line.contains("/token") {
            Reply::ok(r#"{"token":"anonymous-token"}"#)
        } else if line.starts_with("GET /v2/ ") {
            let challenge = format!(
                r#"WWW-Authenticate: Bearer realm="http://{}/token",service="hostile""#,
                realm.lock().unwrap()
            );
            Reply::status("401 Unauthorized", &[challenge])
        } else {
            Reply::status("404 Not Found", &[])
        }
    });
    for (realm_at, gets_credentials) in [
        (format!("localhost:{}", registry.port), false),
        (registry.host(), true),
    ] {
        *realm_host.lock().unwrap() = realm_at.clone();
        registry.requests.lock().unwrap().clear();
        pull_with_env_credentials(&registry, Some(&registry.host()), false);
        let token_requests = registry.requests_to("/token");
        assert_eq!(token_requests.len(), 1, "one token request");
        let sent_basic = token_requests[0].contains("Basic YWxpY2U6czNjcjN0");
        assert_eq!(
            sent_basic, gets_credentials,
            "realm {realm_at}: {token_requests:?}"
        );
        // The token goes to the registry, never the credentials beyond the realm.
        assert!(
            registry
                .requests_to("/manifests/")
                .iter()
                .all(|h| h.contains("Bearer anonymous-token") && !h.contains("Basic "))
        );
    }
}

#[test]
fn hugging_face_pull_refuses_a_file_longer_than_listed() {
    let hub = FakeHub::start(1000);
    let cli = ModelCli::new();
    let out = hub.pull(&cli);
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        error.contains("longer than the 1000 bytes listed"),
        "{error}"
    );
    assert!(cli.stored_files().is_empty(), "{:?}", cli.stored_files());
}

const CATALOG_TYPE: &str = "application/vnd.model-runner.mcp.catalog.v1+json";

/// The catalog files a store holds under mcp-catalog/, by name, with their contents.
fn pulled_catalogs(cli: &ModelCli) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(cli.home.path().join("mcp-catalog"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    (e.file_name().to_string_lossy().into_owned(), text)
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A registry whose manifest names one catalog layer of `declared` bytes, answered with `layer`.
fn hostile_catalog(layer: Vec<u8>, declared: u64) -> HostileRegistry {
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": CATALOG_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
            "digest": format!("sha256:{}", sha256_hex(b"{}")), "size": 2},
        "layers": [{"mediaType": CATALOG_TYPE, "digest": format!("sha256:{}", sha256_hex(&layer)),
            "size": declared}],
    }))
    .unwrap();
    HostileRegistry::start(move |head| {
        let line = head.lines().next().unwrap_or("");
        if line.contains("/manifests/") {
            Reply::Whole {
                status: "200 OK",
                headers: vec!["Content-Type: application/vnd.oci.image.manifest.v1+json".into()],
                body: manifest.clone(),
            }
        } else if line.contains("/blobs/") {
            Reply::ok(layer.clone())
        } else {
            Reply::ok("{}")
        }
    })
}

/// `model mcp catalog push | pull`: a curated catalog travels through a real registry as an OCI artifact
/// and is read back entry for entry; what is not a catalog, or not the bytes its digest names, is refused
/// with nothing written.
#[test]
fn mcp_catalogs_travel_through_a_registry_and_hostile_ones_are_refused() {
    let registry = Registry::start();
    let curator = ModelCli::new();
    let file = curator.home.path().join("team.json");
    std::fs::write(
        &file,
        r#"{"servers": [{"server": {"name": "com.example/weather-mcp", "description": "Weather for agents",
            "version": "1.2.0", "packages": [{"registryType": "oci",
            "identifier": "docker.io/example/weather:1.2.0", "transport": {"type": "stdio"}}]}}]}"#,
    )
    .unwrap();
    let team = format!("{}/team/mcp-catalog:v1", registry.host());
    let pushed = curator.ok(&[
        "mcp",
        "catalog",
        "push",
        &team,
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(pushed.contains("sha256:"), "{pushed}");

    let user = ModelCli::new();
    let pulled = user.ok(&["mcp", "catalog", "pull", &team]);
    assert!(pulled.contains("1 servers"), "{pulled}");
    let shown: Value =
        serde_json::from_str(&user.ok(&["mcp", "catalog", "show", "weather", "--json"]))
            .expect("show --json");
    assert_eq!(shown["name"], "com.example/weather-mcp");
    assert_eq!(
        shown["packages"][0]["identifier"],
        "docker.io/example/weather:1.2.0"
    );
    let listed: Value =
        serde_json::from_str(&user.ok(&["mcp", "catalog", "ls", "--json"])).expect("ls --json");
    let count = listed["metadata"]["count"].as_u64().unwrap();
    assert!(
        count >= 6,
        "the shipped catalog plus the pulled entry: {listed}"
    );

    // Without --file, push sends every entry the pusher lists; a third store reads the same list.
    let everything = format!("{}/team/mcp-catalog:all", registry.host());
    user.ok(&["mcp", "catalog", "push", &everything]);
    let other = ModelCli::new();
    other.ok(&["mcp", "catalog", "pull", &everything]);
    let relisted: Value =
        serde_json::from_str(&other.ok(&["mcp", "catalog", "ls", "--json"])).expect("ls --json");
    assert_eq!(relisted["metadata"]["count"].as_u64(), Some(count));
    assert!(
        other
            .ok(&["mcp", "catalog", "search", "weather"])
            .contains("weather")
    );

    // A model is not a catalog, and an invalid file is not pushed.
    let (model, _) = push_default_model(&registry);
    let before = pulled_catalogs(&user);
    let error = user.fails(&["mcp", "catalog", "pull", &model]);
    assert!(
        error.contains(&format!("not a {CATALOG_TYPE} artifact")),
        "{error}"
    );
    let bad = curator.home.path().join("bad.json");
    std::fs::write(&bad, r#"{"servers": [{"description": "no name"}]}"#).unwrap();
    let error = curator.fails(&[
        "mcp",
        "catalog",
        "push",
        &team,
        "--file",
        bad.to_str().unwrap(),
    ]);
    assert!(error.contains("invalid MCP catalog"), "{error}");

    // Bytes in the registry's storage changed after the push: the digest no longer matches.
    let manifest: Value = serde_json::from_slice(
        &Command::new("curl")
            .args([
                "-sf",
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
            ])
            .arg(format!(
                "http://{}/v2/team/mcp-catalog/manifests/v1",
                registry.host()
            ))
            .output()
            .expect("curl")
            .stdout,
    )
    .expect("manifest JSON");
    assert_eq!(manifest["artifactType"], CATALOG_TYPE, "{manifest}");
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let data = registry.blob_data_path(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&data).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&data, bytes).unwrap();
    let error = user.fails(&["mcp", "catalog", "pull", &team]);
    assert!(error.contains("does not match its digest"), "{error}");
    assert_eq!(
        pulled_catalogs(&user),
        before,
        "a refused pull changed the catalog"
    );

    // A hostile registry: a layer declared beyond the bound is refused before it is read, a layer that is
    // not a catalog is refused after it is.
    let huge = hostile_catalog(b"{}".to_vec(), 1 << 40);
    let error = user.fails(&[
        "mcp",
        "catalog",
        "pull",
        &format!("{}/x/catalog:v1", huge.host()),
    ]);
    assert!(error.contains("layer over the"), "{error}");
    let junk_layer = br#"{"servers": 5}"#.to_vec();
    let junk = hostile_catalog(junk_layer.clone(), junk_layer.len() as u64);
    let error = user.fails(&[
        "mcp",
        "catalog",
        "pull",
        &format!("{}/x/catalog:v1", junk.host()),
    ]);
    assert!(error.contains("invalid MCP catalog"), "{error}");
    assert_eq!(pulled_catalogs(&user), before);
    for error in [
        user.fails(&["mcp", "catalog", "pull", "Bad/Reference"]),
        user.fails(&[
            "mcp",
            "catalog",
            "pull",
            &format!("{}/x/catalog:v1", huge.host()),
        ]),
    ] {
        assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
    }
}
