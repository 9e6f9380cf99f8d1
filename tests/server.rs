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

    let server = Server::start(&cli, &["--device", "cpu"]);
    runtime().block_on(async {
        let health: Value = reqwest::get(server.url("/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["device"], "cpu", "{health}");
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
