//! `model serve` with real clients: the openai Python SDK, concurrent streams, and raw HTTP for the error
//! paths, disconnects and metrics. Every loop is bounded and talks only to 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::{ModelCli, Server, cli_with_default_model, default_model_gguf, repo_root};
use serde_json::{Value, json};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn post(
    url: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn metrics_text(server: &Server) -> String {
    reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn metric(server: &Server, name: &str) -> f64 {
    metrics_text(server)
        .await
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn openai_sdk_works_by_base_url_alone() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    let out = server.run_python("openai_basics.py");
    assert!(out.contains("openai SDK checks passed"), "{out}");
}

/// Forced tool calls and json_schema answers validate (`jsonschema`), streamed calls reassemble through the
/// SDK's helper, `none` never calls, a round trip completes, bad schemas are 400s; the masks were timed.
#[test]
fn tool_calls_and_structured_output_follow_their_schemas() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    let out = server.run_python("tool_calls.py");
    assert!(out.contains("tool calls ok"), "{out}");
    runtime().block_on(async {
        let masks = metric(&server, "model_runner:grammar_mask_seconds_count").await;
        assert!(masks > 500.0, "constrained tokens were masked: {masks}");
    });
}

/// The native Hermes format (`<tool_call>` tags, Lark grammar) with the real model under a Qwen-style
/// template that renders `tools`, past calls and tool results.
#[test]
fn native_hermes_tool_calls_with_a_tools_aware_template() {
    let cli = ModelCli::new();
    let template = repo_root().join("tests/fixtures/hermes-chat-template.jinja");
    cli.ok(&[
        "package",
        "--gguf",
        default_model_gguf().to_str().unwrap(),
        "--chat-template",
        template.to_str().unwrap(),
        "ai/smollm2-hermes:latest",
    ]);
    let server = Server::start(&cli, &[]);
    let out = server.run_python_with("hermes_tools.py", "ai/smollm2-hermes:latest");
    assert!(out.contains("hermes tools ok"), "{out}");
}

#[test]
fn sixteen_concurrent_streams_match_solo_runs_and_share_steps() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &["--parallel", "16"]);
    server.run_python("concurrent_streams.py");
    runtime().block_on(async {
        let generated = metric(&server, "model_runner:generation_tokens_total").await;
        let finished = metric(&server, "model_runner:request_success_total").await;
        let steps = metric(&server, "model_runner:steps_total").await;
        assert_eq!(finished, 32.0, "16 solo + 16 concurrent requests");
        // Shared steps: far fewer forward passes than tokens generated.
        assert!(
            steps < generated * 0.8,
            "{steps} steps for {generated} tokens"
        );
        let text = metrics_text(&server).await;
        assert!(
            text.contains("model_runner:time_to_first_token_seconds_count"),
            "{text}"
        );
    });
}

#[test]
fn errors_come_back_in_openai_shape_with_the_right_status() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &["--context-size", "256", "--body-limit", "65536"]);
    let url = server.url("/v1/chat/completions");
    runtime().block_on(async {
        for (body, param) in [
            ("{not json".to_string(), None),
            (json!({"model": "ai/smollm2", "messages": "hi"}).to_string(), Some("messages")),
            (json!({"model": "ai/smollm2", "messages": []}).to_string(), Some("messages")),
            (json!({"model": "ai/smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}).to_string(), Some("max_tokens")),
            (json!({"model": "ai/smollm2", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}).to_string(), Some("temperature")),
            (json!({"model": "ai/smollm2", "messages": [{"role": "wizard", "content": "hi"}]}).to_string(), Some("messages[0].role")),
        ] {
            let (status, _, error) = post(&url, body.clone()).await;
            assert_eq!(status, 400, "{body} -> {error}");
            assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
            if let Some(param) = param {
                assert_eq!(error["error"]["param"], param, "{body} -> {error}");
            }
        }
        let long = "word ".repeat(400);
        let (status, _, error) = post(&url, json!({"model": "ai/smollm2", "messages": [{"role": "user", "content": long}]}).to_string()).await;
        assert_eq!(status, 400, "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("256"), "the limit is named: {message}");
        // A text no prompt of this context could hold is refused before it is tokenized.
        let huge = "word ".repeat(2000);
        let (status, _, error) = post(&url, json!({"model": "ai/smollm2", "messages": [{"role": "user", "content": huge}]}).to_string()).await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert_eq!(error["error"]["code"], "context_length_exceeded", "{error}");
        assert_eq!(error["error"]["param"], "messages", "{error}");
        assert!(error["error"]["message"].as_str().unwrap_or_default().contains("256"), "{error}");
        let (status, _, error) = post(&url, json!({"model": "ai/unknown", "messages": [{"role": "user", "content": "hi"}]}).to_string()).await;
        assert_eq!((status, error["error"]["code"].as_str()), (404, Some("model_not_found")));
        let (status, _, error) = post(&url, "x".repeat(100_000)).await;
        assert_eq!(status, 413, "{error}");
        assert!(error["error"]["message"].is_string());
    });
}

/// `model bench --local` measures the engine in process: a prompt of the asked length in one step,
/// single-stream decode against its bandwidth limit, and batched decode; a length out of range is refused.
#[test]
fn bench_local_measures_a_prompt_of_the_asked_length() {
    let cli = cli_with_default_model();
    let out = cli.ok(&[
        "bench",
        "--local",
        "ai/smollm2",
        "--prompt-tokens",
        "1100",
        "--json",
    ]);
    let rows: Value = serde_json::from_str(&out).expect("bench prints JSON");
    let tests: Vec<&str> = rows
        .as_array()
        .expect("a list of tests")
        .iter()
        .filter_map(|r| r["test"].as_str())
        .collect();
    assert_eq!(
        tests,
        ["pp1100", "tg128", "decode x4", "decode x8", "decode x16"]
    );
    for row in rows.as_array().into_iter().flatten() {
        assert!(
            row["tokens_per_second"].as_f64().is_some_and(|t| t > 0.0),
            "{row}"
        );
    }
    assert_eq!(rows[0]["kv_cache_type"], "f16", "{rows}");
    assert!(
        rows[0]["threads"].as_u64().is_some_and(|t| t >= 1),
        "{rows}"
    );
    assert!(
        rows[1]["fraction_of_limit"]
            .as_f64()
            .is_some_and(|f| f > 0.0),
        "{rows}"
    );
    for bad in ["0", "40000", "many"] {
        let error = cli.fails(&["bench", "--local", "ai/smollm2", "--prompt-tokens", bad]);
        assert!(error.contains("--prompt-tokens"), "{error}");
    }
}

/// `model bench --url` against a running server: every request answered and timed; requests the server
/// refuses are counted as errors with the first one's cause (status and the start of its body).
#[test]
fn bench_measures_a_server_and_names_why_requests_failed() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    let base = server.base_url();
    let bench = |model: &str| -> Value {
        let out = cli.ok(&[
            "bench",
            "--url",
            &base,
            "--model",
            model,
            "--concurrency",
            "2",
            "--requests",
            "3",
            "--max-tokens",
            "4",
            "--json",
        ]);
        let rows: Value = serde_json::from_str(&out).expect("bench prints JSON");
        rows[0].clone()
    };
    let row = bench("ai/smollm2");
    assert_eq!(
        (row["requests"].as_u64(), row["errors"].as_u64()),
        (Some(3), Some(0)),
        "{row}"
    );
    assert!(row["first_error"].is_null(), "{row}");
    assert!(
        row["tokens_per_second"].as_f64().is_some_and(|t| t > 0.0),
        "{row}"
    );
    assert!(
        row["ttft_ms_p50"].as_f64().is_some_and(|t| t > 0.0),
        "{row}"
    );
    let row = bench("ai/unknown");
    assert_eq!(
        (row["requests"].as_u64(), row["errors"].as_u64()),
        (Some(0), Some(3)),
        "{row}"
    );
    let cause = row["first_error"].as_str().unwrap_or_default();
    assert!(
        cause.starts_with("HTTP 404") && cause.contains("model_not_found"),
        "{row}"
    );
}

/// A hostile endpoint answering every request with an error whose body never ends (and is not UTF-8):
/// `model bench --url` reads only the body's start, reports the status as the cause, and finishes.
#[test]
fn bench_reads_only_the_start_of_a_hostile_error_body() {
    use std::io::{Read, Write};
    const BOUND: usize = 64 << 20;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (sent, sizes) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let Ok(mut stream) = stream else { break };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(
                format!("HTTP/1.1 500 Internal Server Error\r\ncontent-length: {BOUND}\r\n\r\n")
                    .as_bytes(),
            );
            // Until the client hangs up, or the bound (a client that read it all).
            let chunk = [0xffu8; 16 << 10];
            let mut written = 0;
            while written < BOUND && stream.write_all(&chunk).is_ok() {
                written += chunk.len();
            }
            let _ = sent.send(written);
        }
    });
    let cli = ModelCli::new();
    let out = cli.ok(&[
        "bench",
        "--url",
        &format!("http://127.0.0.1:{port}/v1"),
        "--concurrency",
        "1",
        "--requests",
        "2",
        "--json",
    ]);
    let rows: Value = serde_json::from_str(&out).expect("bench prints JSON");
    let row = &rows[0];
    assert_eq!(
        (row["requests"].as_u64(), row["errors"].as_u64()),
        (Some(0), Some(2)),
        "{row}"
    );
    let cause = row["first_error"].as_str().unwrap_or_default();
    assert!(cause.starts_with("HTTP 500"), "{row}");
    assert!(
        cause.chars().count() <= 200 + "HTTP 500 Internal Server Error: ".len(),
        "{row}"
    );
    for _ in 0..2 {
        let written = sizes
            .recv_timeout(Duration::from_secs(60))
            .expect("both requests served");
        assert!(
            written < BOUND,
            "the client read the whole body ({written} bytes)"
        );
    }
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &["--parallel", "1", "--max-queue", "1"]);
    let url = server.url("/v1/completions");
    runtime().block_on(async {
        let body = json!({"model": "ai/smollm2", "prompt": "Tell me a long story.", "max_tokens": 64, "ignore_eos": true}).to_string();
        let requests: Vec<_> = (0..6).map(|_| post(&url, body.clone())).collect();
        let results = futures::future::join_all(requests).await;
        let refused: Vec<_> = results.iter().filter(|(s, _, _)| *s == 503).collect();
        assert!(!refused.is_empty(), "some of 6 requests must be refused with a queue of 1");
        for (_, headers, error) in refused {
            assert!(headers.contains_key("retry-after"));
            assert_eq!(error["error"]["code"], "server_overloaded");
        }
        assert!(results.iter().any(|(s, _, _)| *s == 200));
    });
}

#[test]
fn a_client_that_disconnects_mid_stream_frees_its_blocks() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    runtime().block_on(async {
        let mut response = reqwest::Client::new()
            .post(server.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(json!({"model": "ai/smollm2", "stream": true, "max_tokens": 2000, "ignore_eos": true,
                          "messages": [{"role": "user", "content": "Write a long essay."}]}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let mut received = 0;
        while received < 3 {
            response.chunk().await.unwrap().expect("stream chunk");
            received += 1;
        }
        assert!(metric(&server, "model_runner:kv_cache_blocks_used").await > 0.0);
        drop(response);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Blocks still in use are only those the prefix cache keeps for the next request.
            let used = metric(&server, "model_runner:kv_cache_blocks_used").await
                - metric(&server, "model_runner:prefix_cache_blocks").await;
            let running = metric(&server, "model_runner:num_requests_running").await;
            if used == 0.0 && running == 0.0 {
                break;
            }
            assert!(Instant::now() < deadline, "blocks still held after disconnect: {used}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn api_key_guards_every_route_but_health() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &["--api-key", "s3cret"]);
    runtime().block_on(async {
        let client = reqwest::Client::new();
        assert_eq!(
            client
                .get(server.url("/health"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            200
        );
        assert_eq!(
            client
                .get(server.url("/v1/models"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            401
        );
        let ok = client
            .get(server.url("/v1/models"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status().as_u16(), 200);
        let dmr = client
            .get(server.url("/engines/llama.cpp/v1/models"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(dmr.status().as_u16(), 200);
    });
}

#[test]
fn a_repeated_prompt_prefix_is_served_from_the_prefix_cache() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    let url = server.url("/v1/chat/completions");
    let system = "You are a meticulous assistant. ".repeat(12);
    let ask = |question: &str| {
        json!({"model": "ai/smollm2", "temperature": 0, "max_tokens": 16,
               "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]})
        .to_string()
    };
    runtime().block_on(async {
        let (_, _, first) = post(&url, ask("Name a fruit.")).await;
        assert_eq!(
            first["usage"]["prompt_tokens_details"]["cached_tokens"], 0,
            "{first}"
        );
        let (_, _, again) = post(&url, ask("Name a fruit.")).await;
        let cached = again["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        let prompt = again["usage"]["prompt_tokens"].as_u64().unwrap();
        // All but the last token: full blocks shared, the partial last block's positions copied.
        assert_eq!(cached, prompt - 1, "cached {cached} of {prompt}");
        assert_eq!(
            again["choices"][0]["message"]["content"],
            first["choices"][0]["message"]["content"]
        );
        let (_, _, other) = post(&url, ask("Name a country.")).await;
        assert!(
            other["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap()
                >= 64,
            "{other}"
        );
        assert!(metric(&server, "model_runner:prefix_cache_hits_total").await >= 128.0);
    });
}

#[test]
fn ollama_clients_chat_with_streaming_ndjson() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    let out = server.run_python("ollama_chat.py");
    assert!(out.contains("ollama API checks passed"), "{out}");
}

#[test]
fn model_run_answers_in_process_and_through_a_running_server() {
    let cli = cli_with_default_model();
    let args = [
        "run",
        "--temperature",
        "0",
        "--max-tokens",
        "12",
        "ai/smollm2",
        "Name a color.",
    ];
    let alone = cli.ok(&args);
    assert!(!alone.trim().is_empty(), "an answer in process");
    // Piped stdin is the prompt when none is given.
    let mut piped = cli
        .command(&[
            "run",
            "--temperature",
            "0",
            "--max-tokens",
            "12",
            "ai/smollm2",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    piped
        .stdin
        .take()
        .unwrap()
        .write_all(b"Name a color.")
        .unwrap();
    let out = piped.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), alone);

    let server = Server::start(&cli, &[]);
    let through = cli
        .command(&args)
        .env("MODEL_RUNNER_PORT", server.port.to_string())
        .output()
        .unwrap();
    assert!(
        through.status.success(),
        "{}",
        String::from_utf8_lossy(&through.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&through.stdout),
        alone,
        "the server gives the same greedy answer"
    );
    runtime().block_on(async {
        assert_eq!(
            metric(&server, "model_runner:request_success_total").await,
            1.0
        );
    });

    // `ls` with no store named asks the server, whose store is elsewhere (an empty HOME here).
    let elsewhere = tempfile::tempdir().unwrap();
    let listed = cli
        .command(&["ls"])
        .env_remove("MODEL_RUNNER_HOME")
        .env("HOME", elsewhere.path())
        .env("XDG_DATA_HOME", elsewhere.path())
        .env("MODEL_RUNNER_PORT", server.port.to_string())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("ai/smollm2:latest"), "{listed}");
    assert!(listed.contains("Q4_1"), "{listed}");
}

#[test]
fn a_prompt_larger_than_the_whole_kv_cache_fails_instead_of_waiting_forever() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &["--kv-cache-blocks", "2", "--context-size", "256"]);
    runtime().block_on(async {
        let body = json!({"model": "ai/smollm2", "max_tokens": 4,
                          "messages": [{"role": "user", "content": "word ".repeat(60)}]})
        .to_string();
        let url = server.url("/v1/chat/completions");
        let request = post(&url, body);
        let (status, _, error) = tokio::time::timeout(Duration::from_secs(60), request)
            .await
            .expect("no hang");
        assert!(status >= 400, "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("KV cache"),
            "{error}"
        );
    });
}

/// Where models run is reported everywhere a user or a scraper looks, and a device this build cannot
/// open is a one-line error, not a silent fallback.
#[test]
fn the_device_is_reported_in_health_ps_and_metrics() {
    let cli = cli_with_default_model();
    if !cfg!(feature = "cuda") {
        let err = cli.fails(&["serve", "--device", "cuda:0", "--port", "1"]);
        assert!(err.contains("--features cuda"), "{err}");
    }
    let err = cli.fails(&["serve", "--device", "tpu"]);
    assert!(err.contains("expected auto, cpu, cuda"), "{err}");

    let server = Server::start(&cli, &["--device", "cpu", "--threads", "1"]);
    runtime().block_on(async {
        let health: Value = reqwest::get(server.url("/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["device"], "cpu", "{health}");
        assert_eq!(
            health["threads"], 1,
            "--threads sizes the kernels' pool: {health}"
        );
        let (status, _, _) = post(
            &server.url("/v1/completions"),
            json!({"model": "ai/smollm2", "prompt": "Hi", "max_tokens": 1}).to_string(),
        )
        .await;
        assert_eq!(status, 200);
        let ps: Value = reqwest::get(server.url("/api/ps"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ps["models"][0]["device"], "cpu", "{ps}");
        assert_eq!(ps["models"][0]["size_vram"], 0, "{ps}");
        assert_eq!(metric(&server, "model_runner:device_info").await, 1.0);
        let text = metrics_text(&server).await;
        assert!(
            text.contains("model_runner:device_info{device=\"cpu\",model=\"ai/smollm2"),
            "{text}"
        );
    });
}

/// CPU time (user + system, in clock ticks) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command's closing parenthesis: state is the 3rd field, utime the 14th, stime the 15th.
    let (_, rest) = stat.rsplit_once(") ").expect("stat fields");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// The kernels' pool spins only briefly after a step: once an answer is done, a server with a loaded model
/// and no requests uses (next to) no CPU.
#[test]
fn an_idle_server_with_a_loaded_model_uses_no_cpu() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &["--threads", "2"]);
    runtime().block_on(async {
        let (status, _, _) = post(
            &server.url("/v1/completions"),
            json!({"model": "ai/smollm2", "prompt": "Hi", "max_tokens": 8}).to_string(),
        )
        .await;
        assert_eq!(status, 200);
    });
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(server.pid());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(server.pid()) - before;
    // Clock ticks are 1/100 s on Linux: 15 ticks in 3 s is 5% of one core, against 600 if both workers spun.
    assert!(used <= 15, "an idle server used {used} ticks of CPU in 3 s");
}

/// The server's resident memory in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmRSS")
        / 1024
}

/// Unloading gives the model's memory back, and reloading the same model does not grow the server:
/// without a fixed mmap threshold glibc serves the next load from heaps it keeps (five reloads took the
/// server from 143 to 446 MiB).
#[test]
fn unloading_returns_memory_and_reloads_do_not_grow() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    let rss = || rss_mib(server.pid());
    runtime().block_on(async {
        let chat = || async {
            let (status, _, body) = post(
                &server.url("/v1/completions"),
                json!({"model": "ai/smollm2", "prompt": "Hi", "max_tokens": 2}).to_string(),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        };
        chat().await;
        let loaded = rss();
        let mut unloaded = Vec::new();
        let mut reloaded = Vec::new();
        for _ in 0..5 {
            let (status, _, body) = post(
                &server.url("/api/generate"),
                json!({"model": "ai/smollm2", "keep_alive": 0}).to_string(),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            // The scheduler thread drops the model once its last handle goes: allow it a moment.
            let mut after = rss();
            for _ in 0..50 {
                if after + 48 < loaded {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                after = rss();
            }
            unloaded.push(after);
            chat().await;
            reloaded.push(rss());
        }
        assert!(
            unloaded.iter().all(|&u| u + 48 < loaded),
            "loaded {loaded} MiB, after each unload {unloaded:?}"
        );
        assert!(
            reloaded.iter().all(|&r| r <= loaded + 32),
            "loaded {loaded} MiB, after each reload {reloaded:?}"
        );
    });
}

// --- Hardening: shape checks at load, loads outside the runtime's lock -------------------------------

/// The default model's GGUF with the u32 metadata value of `key` replaced in place (same byte length).
fn gguf_with_u32(key: &str, from: u32, to: u32) -> Vec<u8> {
    let mut bytes = std::fs::read(default_model_gguf()).unwrap();
    // A GGUF key/value: key length (u64), key bytes, value type (u32, 4 = UINT32), value.
    let mut needle = (key.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(key.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap_or_else(|| panic!("{key} is in the default model's header"))
        + needle.len();
    assert_eq!(bytes[at..at + 4], 4u32.to_le_bytes(), "{key} is a u32");
    assert_eq!(bytes[at + 4..at + 8], from.to_le_bytes(), "{key} is {from}");
    bytes[at + 4..at + 8].copy_from_slice(&to.to_le_bytes());
    bytes
}

/// A GGUF whose `head_count_kv` (7) does not divide `head_count` (9) used to panic inside attention;
/// now it fails to load with an error naming the key, every time, while the server and the good model
/// carry on.
#[test]
fn a_model_whose_kv_heads_do_not_divide_its_heads_fails_to_load_naming_the_key() {
    let cli = cli_with_default_model();
    let path = cli.home.path().join("bad-kv-heads.gguf");
    std::fs::write(&path, gguf_with_u32("llama.attention.head_count_kv", 3, 7)).unwrap();
    cli.ok(&[
        "package",
        "--gguf",
        path.to_str().unwrap(),
        "ai/bad-kv-heads:latest",
    ]);
    let server = Server::start(&cli, &[]);
    let url = server.url("/v1/chat/completions");
    let ask = |model: &str| {
        json!({"model": model, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
    };
    runtime().block_on(async {
        for _ in 0..2 {
            let (status, _, error) = post(&url, ask("ai/bad-kv-heads")).await;
            assert!((400..600).contains(&status), "{status} {error}");
            let message = error["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("llama.attention.head_count_kv"),
                "{status} {error}"
            );
            assert_eq!(error["error"]["code"], "model_load_failed", "{error}");
            assert_eq!(error["error"]["param"], "model", "{error}");
            let health = reqwest::get(server.url("/health")).await.unwrap();
            assert_eq!(health.status().as_u16(), 200);
            let (status, _, answer) = post(&url, ask("ai/smollm2")).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["object"], "chat.completion", "{answer}");
        }
        let ps = reqwest::get(server.url("/api/ps"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!ps.contains("bad-kv-heads"), "{ps}");
    });
}

/// `/health` answers while a model is still loading (the load no longer holds the runtime's lock).
#[test]
fn health_answers_while_a_model_loads() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    let url = server.url("/v1/chat/completions");
    let body = json!({"model": "ai/smollm2", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    runtime().block_on(async {
        let started = Instant::now();
        let completion = tokio::spawn(async move { post(&url, body).await.0 });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let asked = Instant::now();
        let health = reqwest::get(server.url("/health")).await.unwrap();
        let health_took = asked.elapsed();
        assert_eq!(health.status().as_u16(), 200);
        let status = completion.await.unwrap();
        assert_eq!(status, 200);
        let completion_took = started.elapsed();
        assert!(
            health_took * 3 < completion_took,
            "/health took {health_took:?} while the first completion (with the load) took {completion_took:?}"
        );
    });
}

/// The anthropic SDK against the Messages API: create and stream (text, and a forced `tool_use` whose
/// input streams as `input_json_delta`), a tool round trip, stop sequences, `count_tokens`, and errors
/// (missing `max_tokens`, unknown model, images, wrong types, hostile sizes) as the SDK's exceptions.
#[test]
fn anthropic_sdk_speaks_the_messages_api() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    let out = server.run_python("anthropic_messages.py");
    assert!(out.contains("anthropic messages ok"), "{out}");
}

/// With `--api-key`, Anthropic's clients authenticate with `x-api-key` (or a bearer token); on the
/// Messages routes every refusal (key, Origin, content type, body size) comes in Anthropic's error shape,
/// while the OpenAI routes keep theirs.
#[test]
fn anthropic_clients_use_x_api_key_and_get_refusals_in_their_shape() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &["--api-key", "s3cret", "--body-limit", "65536"]);
    let out = std::process::Command::new(common::python())
        .arg(repo_root().join("tests/python/anthropic_messages.py"))
        .env("BASE_URL", server.base_url())
        .env("MODEL", "ai/smollm2:latest")
        .env("API_KEY", "s3cret")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("anthropic auth ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let body = json!({"model": "ai/smollm2", "max_tokens": 4,
                          "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
        let refused = |response: reqwest::Response| async move {
            let status = response.status().as_u16();
            let error: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(error["type"], "error", "{error}");
            (
                status,
                error["error"]["type"].as_str().unwrap_or("").to_string(),
            )
        };
        let plain = client
            .post(server.url("/v1/messages"))
            .header("x-api-key", "s3cret")
            .header("content-type", "text/plain")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(refused(plain).await, (415, "invalid_request_error".into()));
        let foreign = client
            .post(server.url("/v1/messages"))
            .header("x-api-key", "s3cret")
            .header("content-type", "application/json")
            .header("origin", "https://evil.example")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(refused(foreign).await, (403, "permission_error".into()));
        let huge = json!({"model": "ai/smollm2", "max_tokens": 4,
                          "messages": [{"role": "user", "content": "x".repeat(100_000)}]});
        let large = client
            .post(server.url("/anthropic/v1/messages"))
            .header("x-api-key", "s3cret")
            .header("content-type", "application/json")
            .body(huge.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(refused(large).await, (413, "request_too_large".into()));
        let unkeyed = client
            .post(server.url("/v1/messages/count_tokens"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(refused(unkeyed).await, (401, "authentication_error".into()));
        let openai = client.get(server.url("/v1/models")).send().await.unwrap();
        assert_eq!(openai.status().as_u16(), 401);
        let error: Value = openai.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_api_key", "{error}");
    });
}

/// A full scheduler is Anthropic's `overloaded_error` with status 529 on the Messages API.
#[test]
fn a_full_queue_is_overloaded_529_on_the_messages_api() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &["--parallel", "1", "--max-queue", "1"]);
    let url = server.url("/v1/messages");
    runtime().block_on(async {
        let body = json!({"model": "ai/smollm2", "max_tokens": 64,
                          "messages": [{"role": "user", "content": "Tell me a long story."}]})
        .to_string();
        let requests: Vec<_> = (0..6).map(|_| post(&url, body.clone())).collect();
        let results = futures::future::join_all(requests).await;
        let refused: Vec<_> = results.iter().filter(|(s, _, _)| *s == 529).collect();
        assert!(
            !refused.is_empty(),
            "some of 6 requests must be refused with a queue of 1"
        );
        for (_, _, error) in refused {
            assert_eq!(error["error"]["type"], "overloaded_error", "{error}");
        }
        assert!(results.iter().any(|(s, _, _)| *s == 200));
    });
}

/// The default model packaged again under real thinking templates: `ai/smollm2-r1` with
/// deepseek-r1-distill's (its generation prompt opens `<think>`, so a short answer is all thinking) and
/// `ai/smollm2-qwen3` with qwen3's (`enable_thinking`).
fn cli_with_thinking_models() -> ModelCli {
    let cli = cli_with_default_model();
    for (template, tag) in [
        (
            "deepseek-r1-distill-qwen-chat-template.jinja",
            "ai/smollm2-r1:latest",
        ),
        ("qwen3-chat-template.jinja", "ai/smollm2-qwen3:latest"),
    ] {
        let template = repo_root().join("tests/fixtures").join(template);
        cli.ok(&[
            "package",
            "--gguf",
            default_model_gguf().to_str().unwrap(),
            "--chat-template",
            template.to_str().unwrap(),
            tag,
        ]);
    }
    cli
}

/// The lines of an NDJSON response.
async fn ndjson(url: &str, body: Value) -> Vec<Value> {
    let text = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Chat completions' `reasoning_content` (whole and streamed) with the openai SDK, `enable_thinking`
/// reaching the template through `chat_template_kwargs` and `reasoning_effort`, bad switches as 400s.
#[test]
fn reasoning_content_is_separated_in_chat_completions_streamed_and_not() {
    let cli = cli_with_thinking_models();
    let server = Server::start(&cli, &[]);
    let out = server.run_python_with("reasoning.py", "ai/smollm2-r1:latest");
    assert!(out.contains("reasoning ok"), "{out}");
}

/// Ollama's `thinking` on `/api/chat` and `/api/generate`, whole and streamed; `/api/show` lists the
/// `thinking` capability for a thinking template only; `think: true` on a model that cannot is a 400.
#[test]
fn ollama_thinking_is_separated_in_chat_and_generate_streamed_and_not() {
    let cli = cli_with_thinking_models();
    let server = Server::start(&cli, &[]);
    let model = "ai/smollm2-r1";
    let options = json!({"temperature": 0, "num_predict": 16});
    runtime().block_on(async {
        let chat = json!({"model": model, "messages": [{"role": "user", "content": "What is the capital of France?"}],
                          "think": true, "stream": false, "options": options});
        let (status, _, whole) = post(&server.url("/api/chat"), chat.to_string()).await;
        assert_eq!(status, 200, "{whole}");
        let thinking = whole["message"]["thinking"].as_str().unwrap_or_default();
        assert!(!thinking.is_empty(), "{whole}");
        assert!(!thinking.contains("<think>"), "{whole}");
        assert_eq!(whole["message"]["content"], "", "{whole}");
        assert_eq!(whole["done_reason"], "length", "{whole}");

        let mut streamed = chat.clone();
        streamed["stream"] = json!(true);
        let lines = ndjson(&server.url("/api/chat"), streamed).await;
        let joined: String = lines
            .iter()
            .filter_map(|l| l["message"]["thinking"].as_str())
            .collect();
        let content: String = lines
            .iter()
            .filter_map(|l| l["message"]["content"].as_str())
            .collect();
        assert_eq!(joined, thinking, "{lines:?}");
        assert_eq!(content, "", "{lines:?}");
        assert!(lines.last().unwrap()["done"].as_bool().unwrap(), "{lines:?}");

        let generate = json!({"model": model, "prompt": "What is the capital of France?", "stream": false,
                              "options": options});
        let (status, _, whole) = post(&server.url("/api/generate"), generate.to_string()).await;
        assert_eq!(status, 200, "{whole}");
        assert_eq!(whole["thinking"], thinking, "{whole}");
        assert_eq!(whole["response"], "", "{whole}");
        let mut streamed = generate.clone();
        streamed["stream"] = json!(true);
        let lines = ndjson(&server.url("/api/generate"), streamed).await;
        let joined: String = lines
            .iter()
            .filter_map(|l| l["thinking"].as_str())
            .collect();
        assert_eq!(joined, thinking, "{lines:?}");

        for (name, thinks) in [
            ("ai/smollm2-r1", true),
            ("ai/smollm2-qwen3", true),
            ("ai/smollm2", false),
        ] {
            let (status, _, show) =
                post(&server.url("/api/show"), json!({"model": name}).to_string()).await;
            assert_eq!(status, 200, "{show}");
            let capabilities = show["capabilities"].as_array().unwrap();
            assert_eq!(
                capabilities.contains(&json!("thinking")),
                thinks,
                "{name}: {show}"
            );
        }

        let refused = json!({"model": "ai/smollm2", "messages": [{"role": "user", "content": "hi"}],
                             "think": true, "stream": false});
        let (status, _, error) = post(&server.url("/api/chat"), refused.to_string()).await;
        assert_eq!(status, 400, "{error}");
        assert!(error.to_string().contains("does not support thinking"), "{error}");
        // `think: false` on a model that cannot think is no error.
        let mut quiet = refused.clone();
        quiet["think"] = json!(false);
        quiet["options"] = json!({"num_predict": 2});
        let (status, _, answer) = post(&server.url("/api/chat"), quiet.to_string()).await;
        assert_eq!(status, 200, "{answer}");
    });
}

/// `--reasoning-format none` leaves the model's text raw: what the split server calls reasoning is
/// the content, and no `reasoning_content` is sent, whole or streamed.
#[test]
fn reasoning_format_none_leaves_the_thinking_raw_in_the_content() {
    let cli = cli_with_thinking_models();
    let ask = json!({"model": "ai/smollm2-r1", "temperature": 0, "max_tokens": 16,
                     "messages": [{"role": "user", "content": "What is the capital of France?"}]});
    let split = {
        let server = Server::start(&cli, &[]);
        runtime().block_on(async {
            let (status, _, body) =
                post(&server.url("/v1/chat/completions"), ask.to_string()).await;
            assert_eq!(status, 200, "{body}");
            body["choices"][0]["message"]["reasoning_content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
    };
    assert!(!split.is_empty());
    let server = Server::start(&cli, &["--reasoning-format", "none"]);
    runtime().block_on(async {
        let (status, _, body) = post(&server.url("/v1/chat/completions"), ask.to_string()).await;
        assert_eq!(status, 200, "{body}");
        let message = &body["choices"][0]["message"];
        assert!(message.get("reasoning_content").is_none(), "{body}");
        assert_eq!(message["content"].as_str().unwrap().trim(), split, "{body}");
        let mut streamed = ask.clone();
        streamed["stream"] = json!(true);
        let text = reqwest::Client::new()
            .post(server.url("/v1/chat/completions"))
            .json(&streamed)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains("reasoning_content"), "{text}");
        assert!(text.contains("\"content\""), "{text}");
    });
}

/// The body of an SSE response and its `data:` payloads as JSON.
async fn sse_events(url: &str, body: Value) -> Vec<Value> {
    let text = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect()
}

/// Anthropic's Messages API and OpenAI's Responses API split the thinking too: a `thinking` block (and
/// `thinking_delta` events) and a `reasoning` item (and `response.reasoning_text.delta` events), never
/// in the answer's text. deepseek-r1's template opens `<think>`, so a short answer is all thinking.
#[test]
fn thinking_is_separated_in_messages_and_responses_streamed_and_not() {
    let cli = cli_with_thinking_models();
    let server = Server::start(&cli, &[]);
    let model = "ai/smollm2-r1";
    runtime().block_on(async {
        // Messages, whole.
        let ask = json!({"model": model, "max_tokens": 12, "temperature": 0,
                         "messages": [{"role": "user", "content": "Why is the sky blue?"}]});
        let (status, _, body) = post(&server.url("/v1/messages"), ask.to_string()).await;
        assert_eq!(status, 200, "{body}");
        let blocks = body["content"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "thinking", "{body}");
        let thought = blocks[0]["thinking"].as_str().unwrap();
        assert!(!thought.trim().is_empty(), "{body}");
        assert!(!thought.contains("<think>"), "{body}");
        assert!(
            blocks.iter().all(|b| b["type"] != "text"
                || !b["text"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(thought.trim())),
            "{body}"
        );
        // Messages, streamed: the same thinking as `thinking_delta`s.
        let mut streamed = ask.clone();
        streamed["stream"] = json!(true);
        let events = sse_events(&server.url("/v1/messages"), streamed).await;
        let thinking: String = events
            .iter()
            .filter(|e| {
                e["type"] == "content_block_delta" && e["delta"]["type"] == "thinking_delta"
            })
            .map(|e| e["delta"]["thinking"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(thinking, thought, "{events:?}");

        // Responses, whole.
        let ask = json!({"model": model, "max_output_tokens": 12, "temperature": 0,
                         "input": "Why is the sky blue?"});
        let (status, _, body) = post(&server.url("/v1/responses"), ask.to_string()).await;
        assert_eq!(status, 200, "{body}");
        let output = body["output"].as_array().unwrap();
        assert_eq!(output[0]["type"], "reasoning", "{body}");
        let thought = output[0]["content"][0]["text"].as_str().unwrap();
        assert_eq!(output[0]["content"][0]["type"], "reasoning_text", "{body}");
        assert!(
            !thought.trim().is_empty() && !thought.contains("<think>"),
            "{body}"
        );
        // Responses, streamed.
        let mut streamed = ask.clone();
        streamed["stream"] = json!(true);
        let events = sse_events(&server.url("/v1/responses"), streamed).await;
        let thinking: String = events
            .iter()
            .filter(|e| e["type"] == "response.reasoning_text.delta")
            .map(|e| e["delta"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(thinking, thought, "{events:?}");
        let done = events.last().unwrap();
        assert_eq!(done["response"]["output"][0]["type"], "reasoning", "{done}");
    });
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// `model configure` keeps a model's settings in the store (`inspect` shows them); the server loads the
/// model with them (context size in `/api/ps`, keep-alive in its expiry, a reasoning budget of 0 turning
/// thinking off), and takes new ones through Docker Model Runner's `_configure`, reloading the idle model.
#[test]
fn configured_settings_persist_and_apply_when_the_model_loads() {
    let cli = cli_with_thinking_models();
    let refused = cli.fails(&["configure", "--reasoning-budget", "7", "ai/smollm2"]);
    assert!(refused.contains("reasoning budget"), "{refused}");
    let refused = cli.fails(&["configure", "ai/smollm2", "--", "--threads", "4"]);
    assert!(refused.contains("--threads"), "{refused}");
    let refused = cli.fails(&["configure", "--context-size", "512", "ai/missing"]);
    assert!(refused.contains("not found"), "{refused}");

    cli.ok(&[
        "configure",
        "--context-size",
        "512",
        "--keep-alive",
        "10m",
        "--reasoning-budget",
        "0",
        "ai/smollm2-qwen3",
    ]);
    let inspected: Value = serde_json::from_str(&cli.ok(&["inspect", "ai/smollm2-qwen3"])).unwrap();
    assert_eq!(
        inspected["settings"],
        json!({"context-size": 512, "reasoning-budget": 0, "keep-alive": "10m"}),
        "{inspected}"
    );
    let other: Value = serde_json::from_str(&cli.ok(&["inspect", "ai/smollm2"])).unwrap();
    assert!(other.get("settings").is_none(), "{other}");

    let server = Server::start(&cli, &[]);
    runtime().block_on(async {
        let ask = json!({"model": "ai/smollm2-qwen3", "max_tokens": 8, "temperature": 0,
                         "messages": [{"role": "user", "content": "Say hi."}]});
        let (status, _, answer) = post(&server.url("/v1/chat/completions"), ask.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        // Budget 0: qwen3's template renders with thinking off, closing an empty think block in the
        // generation prompt (counted below against the prompt with thinking on).
        let thinking_off_prompt = answer["usage"]["prompt_tokens"].as_u64().unwrap();
        let ps = get_json(&server.url("/api/ps")).await;
        let loaded = &ps["models"][0];
        assert_eq!(loaded["context_length"], 512, "{ps}");
        assert_eq!(loaded["settings"]["keep-alive"], "10m", "{ps}");
        let expires: chrono::DateTime<chrono::Utc> =
            loaded["expires_at"].as_str().unwrap().parse().unwrap();
        let left = (expires - chrono::Utc::now()).num_seconds();
        assert!((540..=600).contains(&left), "expires in {left}s: {ps}");
        // A prompt past the configured context is refused as one.
        let long = json!({"model": "ai/smollm2-qwen3", "max_tokens": 8,
                          "messages": [{"role": "user", "content": "word ".repeat(600)}]});
        let (status, _, error) = post(&server.url("/v1/chat/completions"), long.to_string()).await;
        assert_eq!(status, 400, "{error}");
        assert!(error.to_string().contains("512"), "{error}");

        // Docker Model Runner's endpoint, under both of its paths.
        let (status, _, body) = post(
            &server.url("/engines/llama.cpp/_configure"),
            json!({"model": "ai/smollm2-qwen3", "context-size": 1024,
                   "runtime-flags": ["--reasoning-budget", "-1"]})
            .to_string(),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["settings"]["context-size"], 1024, "{body}");
        assert_eq!(body["settings"]["reasoning-budget"], -1, "{body}");
        assert_eq!(body["settings"]["keep-alive"], "10m", "kept: {body}");
        let (status, _, answer) = post(&server.url("/v1/chat/completions"), ask.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        let ps = get_json(&server.url("/api/ps")).await;
        assert_eq!(ps["models"][0]["context_length"], 1024, "reloaded: {ps}");
        let thinking_on_prompt = answer["usage"]["prompt_tokens"].as_u64().unwrap();
        assert!(
            thinking_on_prompt < thinking_off_prompt,
            "budget -1 thinks: {thinking_on_prompt} vs {thinking_off_prompt}"
        );
        let mut off = ask.clone();
        off["chat_template_kwargs"] = json!({"enable_thinking": false});
        let (_, _, answer) = post(&server.url("/v1/chat/completions"), off.to_string()).await;
        assert_eq!(
            answer["usage"]["prompt_tokens"], thinking_off_prompt,
            "{answer}"
        );

        for (bad, param) in [
            (
                json!({"model": "ai/smollm2", "context-size": 0}),
                "context-size",
            ),
            (
                json!({"model": "ai/smollm2", "keep_alive": "soon"}),
                "keep_alive",
            ),
            (
                json!({"model": "ai/smollm2", "raw-runtime-flags": "--mlock"}),
                "runtime-flags",
            ),
            (
                json!({"model": "ai/smollm2", "speculative": {"draft_model": "x"}}),
                "speculative",
            ),
        ] {
            let (status, _, error) =
                post(&server.url("/engines/_configure"), bad.to_string()).await;
            assert_eq!(status, 400, "{bad}: {error}");
            assert_eq!(error["error"]["param"], param, "{bad}: {error}");
        }
        let (status, _, error) = post(
            &server.url("/engines/_configure"),
            json!({"model": "ai/nothing", "context-size": 512}).to_string(),
        )
        .await;
        assert_eq!(status, 404, "{error}");
    });
    // Removing the model's last reference drops its settings; a new package of it starts clean.
    cli.ok(&["rm", "ai/smollm2-qwen3"]);
    let index = std::fs::read_to_string(cli.home.path().join("index.json")).unwrap();
    assert!(!index.contains("context-size"), "{index}");
}

/// `/tokenize` and `/detokenize` in llama.cpp's shape (no model needed with one stored; `add_special`,
/// `with_pieces`) and vLLM's (`prompt` or `messages`, `count`, `max_model_len`), agreeing with the counts
/// generation reports.
#[test]
fn tokenize_and_detokenize_in_llama_cpp_and_vllm_shapes() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &["--context-size", "2048"]);
    runtime().block_on(async {
        let text = "Hello world, ünïcödé 🦀!";
        let (status, _, plain) = post(
            &server.url("/tokenize"),
            json!({ "content": text }).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{plain}");
        let tokens: Vec<u64> = serde_json::from_value(plain["tokens"].clone()).unwrap();
        assert!(!tokens.is_empty());
        let (_, _, with_pieces) = post(
            &server.url("/tokenize"),
            json!({ "content": text, "with_pieces": true }).to_string(),
        )
        .await;
        let pieces = with_pieces["tokens"].as_array().unwrap();
        assert_eq!(pieces.len(), tokens.len(), "{with_pieces}");
        let mut bytes = Vec::new();
        for (piece, id) in pieces.iter().zip(&tokens) {
            assert_eq!(piece["id"], *id, "{piece}");
            match &piece["piece"] {
                Value::String(s) => bytes.extend_from_slice(s.as_bytes()),
                Value::Array(b) => bytes.extend(b.iter().map(|x| x.as_u64().unwrap() as u8)),
                other => panic!("piece {other}"),
            }
        }
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            text,
            "pieces spell the text"
        );
        let (status, _, back) = post(
            &server.url("/detokenize"),
            json!({ "tokens": tokens }).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{back}");
        assert_eq!(back["content"], text, "{back}");

        // vLLM's shape names the model; BOS and the counts match what generation bills.
        let (status, _, vllm) = post(
            &server.url("/tokenize"),
            json!({"model": "ai/smollm2", "prompt": text}).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{vllm}");
        assert_eq!(vllm["max_model_len"], 2048, "{vllm}");
        let (_, _, completion) = post(
            &server.url("/v1/completions"),
            json!({"model": "ai/smollm2", "prompt": text, "max_tokens": 1}).to_string(),
        )
        .await;
        assert_eq!(
            vllm["count"], completion["usage"]["prompt_tokens"],
            "{vllm} {completion}"
        );
        let messages = json!([{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": text}]);
        let (_, _, chat_count) = post(
            &server.url("/tokenize"),
            json!({"model": "ai/smollm2", "messages": messages, "return_token_strs": true})
                .to_string(),
        )
        .await;
        let (_, _, chat) = post(
            &server.url("/v1/chat/completions"),
            json!({"model": "ai/smollm2", "messages": messages, "max_tokens": 1}).to_string(),
        )
        .await;
        assert_eq!(
            chat_count["count"], chat["usage"]["prompt_tokens"],
            "{chat_count} {chat}"
        );
        assert_eq!(
            chat_count["token_strs"].as_array().unwrap().len(),
            chat_count["tokens"].as_array().unwrap().len()
        );
        let (_, _, back) = post(
            &server.url("/detokenize"),
            json!({"model": "ai/smollm2", "tokens": tokens}).to_string(),
        )
        .await;
        assert_eq!(back["prompt"], text, "{back}");

        for bad in [
            json!({"content": "a", "prompt": "b"}),
            json!({}),
            json!({"content": 5}),
            json!({"model": "ai/absent", "prompt": "x"}),
        ] {
            let (status, _, error) = post(&server.url("/tokenize"), bad.to_string()).await;
            assert!(matches!(status, 400 | 404), "{bad}: {status} {error}");
            assert!(error["error"]["message"].is_string(), "{error}");
        }
        for bad in [
            json!({"tokens": [-1]}),
            json!({"tokens": [4294967296u64]}),
            json!({"tokens": [99999999]}),
        ] {
            let (status, _, error) = post(&server.url("/detokenize"), bad.to_string()).await;
            assert_eq!(status, 400, "{bad}: {error}");
        }
    });
}

/// Ollama's `options.num_ctx` bounds a request's context within the model's, and `/api/show` lists what
/// the model can do.
#[test]
fn ollama_num_ctx_bounds_the_request_and_show_lists_capabilities() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    runtime().block_on(async {
        let prompt = "Count from one to twenty in words, separated by commas.";
        let (status, _, bounded) = post(
            &server.url("/api/generate"),
            json!({"model": "ai/smollm2", "prompt": prompt, "stream": false,
                   "options": {"num_ctx": 64, "temperature": 0}})
            .to_string(),
        )
        .await;
        assert_eq!(status, 200, "{bounded}");
        let used = bounded["prompt_eval_count"].as_u64().unwrap()
            + bounded["eval_count"].as_u64().unwrap();
        assert!(used <= 64, "{used} tokens in a 64-token context: {bounded}");
        let (status, _, error) = post(
            &server.url("/api/generate"),
            json!({"model": "ai/smollm2", "prompt": prompt, "stream": false,
                   "options": {"num_ctx": 4}})
            .to_string(),
        )
        .await;
        assert_eq!(status, 400, "{error}");
        let (status, _, error) = post(
            &server.url("/api/generate"),
            json!({"model": "ai/smollm2", "prompt": prompt, "stream": false,
                   "options": {"num_ctx": 0}})
            .to_string(),
        )
        .await;
        assert_eq!(status, 400, "{error}");

        let (_, _, show) = post(
            &server.url("/api/show"),
            json!({"model": "ai/smollm2"}).to_string(),
        )
        .await;
        assert_eq!(
            show["capabilities"],
            json!(["completion", "tools"]),
            "{show}"
        );
    });
}
