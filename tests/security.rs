//! The security review's probes of the HTTP API, each pinned: what a web page in the same browser, a
//! caller holding only a gateway client's token, and hostile parameter values could do before, and may
//! not now. Every request goes to 127.0.0.1; every wait is bounded.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Server, cli_with_default_model, free_port, serve_with_gateway};
use serde_json::{Value, json};

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn send(request: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let response = request.send().expect("request");
    let status = response.status().as_u16();
    let body = response.json().unwrap_or(Value::Null);
    (status, body)
}

fn chat_body() -> String {
    json!({"model": "ai/smollm2", "max_tokens": 2,
           "messages": [{"role": "user", "content": "hi"}]})
    .to_string()
}

#[test]
fn cross_site_requests_are_refused_on_every_route() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    let http = client();

    // A page's simple requests: no preflight, a body typed text/plain, a form, or not at all.
    for (path, method) in [
        ("/v1/chat/completions", "POST"),
        ("/engines/v1/chat/completions", "POST"),
        ("/api/chat", "POST"),
        ("/api/pull", "POST"),
        ("/models/create", "POST"),
        ("/api/delete", "DELETE"),
    ] {
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            let mut request = http
                .request(method.parse().unwrap(), server.url(path))
                .body(json!({"model": "ai/smollm2", "name": "ai/smollm2"}).to_string());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let (status, body) = send(request);
            assert_eq!(status, 415, "{method} {path} as {content_type:?}: {body}");
            assert_eq!(body["error"]["code"], "unsupported_media_type", "{body}");
        }
    }
    // The model is still in the store: the refused DELETE did nothing.
    assert!(cli.ok(&["ls"]).contains("smollm2"));

    // A page on another site, even with a JSON body (which a browser would preflight).
    let (status, body) = send(
        http.post(server.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("origin", "https://evil.example")
            .body(chat_body()),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["type"], "permission_error", "{body}");
    for origin in ["null", "file://"] {
        let (status, _) = send(http.get(server.url("/v1/models")).header("origin", origin));
        assert_eq!(status, 403, "Origin {origin}");
    }

    // DNS rebinding: the attacker's name in Host, on reads and writes, /health included.
    for path in ["/v1/models", "/api/tags", "/metrics", "/health", "/"] {
        let (status, body) = send(
            http.get(server.url(path))
                .header("host", format!("rebind.evil.example:{}", server.port)),
        );
        assert_eq!(status, 403, "GET {path}: {body}");
    }

    // What a local tool and a loopback page do still works.
    let (status, body) = send(
        http.post(server.url("/v1/chat/completions"))
            .header("content-type", "application/json; charset=utf-8")
            .header("origin", "http://localhost:3000")
            .header("host", format!("localhost:{}", server.port))
            .body(chat_body()),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(
        http.get(server.url("/v1/models"))
            .header("origin", format!("http://127.0.0.1:{}", server.port)),
    );
    assert_eq!(status, 200);
}

#[test]
fn allowed_host_and_cors_origins_open_exactly_what_they_name() {
    let cli = cli_with_default_model();
    let server = Server::start(
        &cli,
        &[
            "--allowed-host",
            "runner.internal",
            "--cors",
            "https://app.example",
        ],
    );
    let http = client();
    let (status, _) = send(
        http.get(server.url("/v1/models"))
            .header("host", "runner.internal:12434")
            .header("origin", "https://app.example"),
    );
    assert_eq!(status, 200);
    let (status, _) = send(
        http.get(server.url("/v1/models"))
            .header("host", "other.internal"),
    );
    assert_eq!(status, 403);
    let (status, _) = send(
        http.get(server.url("/v1/models"))
            .header("origin", "https://app.example.evil"),
    );
    assert_eq!(status, 403);
}

#[test]
fn gateway_client_tokens_reach_chat_but_not_administration() {
    let cli = cli_with_default_model();
    let server = serve_with_gateway(
        &cli,
        "admin-key",
        &json!({"mcpServers": {},
                "gateway": {"clients": [{"name": "ide", "token": "client-token", "servers": []}]}}),
    );
    let http = client();
    let as_client = |r: reqwest::blocking::RequestBuilder| r.bearer_auth("client-token");

    let (status, body) = send(as_client(
        http.post(server.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(chat_body()),
    ));
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(as_client(http.get(server.url("/v1/models"))));
    assert_eq!(status, 200);

    let json_body = |r: reqwest::blocking::RequestBuilder, body: Value| {
        r.header("content-type", "application/json")
            .body(body.to_string())
    };
    let admin = [
        json_body(
            http.delete(server.url("/api/delete")),
            json!({"model": "ai/smollm2"}),
        ),
        json_body(
            http.post(server.url("/api/pull")),
            json!({"model": "127.0.0.1:1/ai/x"}),
        ),
        json_body(
            http.post(server.url("/models/create")),
            json!({"from": "127.0.0.1:1/ai/x"}),
        ),
        http.delete(server.url("/models/ai/smollm2")),
        http.get(server.url("/metrics")),
        http.get(server.url("/api/ps")),
        // The gateway's administration and the catalog's registry API take the key too.
        http.post(server.url("/gateway/reload")),
        http.get(server.url("/gateway/servers")),
        http.get(server.url("/v0.1/servers")),
    ];
    for request in admin {
        let (status, body) = send(as_client(request));
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["type"], "permission_error", "{body}");
    }
    // The model survived, and the key still opens the admin routes.
    let (status, body) = send(http.get(server.url("/api/tags")).bearer_auth("admin-key"));
    assert_eq!(status, 200);
    assert_eq!(body["models"].as_array().map(Vec::len), Some(1), "{body}");
    let (status, _) = send(http.get(server.url("/metrics")).bearer_auth("admin-key"));
    assert_eq!(status, 200);
    let (status, _) = send(http.get(server.url("/metrics")).bearer_auth("admin-key!"));
    assert_eq!(status, 401);
    let (status, _) = send(http.get(server.url("/v0.1/servers")));
    assert_eq!(status, 401);
    let (status, body) = send(
        http.get(server.url("/v0.1/servers?limit=1"))
            .bearer_auth("admin-key"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["count"], 1, "{body}");
    let (status, body) = send(
        http.get(server.url("/gateway/servers"))
            .bearer_auth("admin-key"),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn huge_keep_alives_neither_panic_nor_stop_unloading() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    let http = client();
    let generate = |keep_alive: Value| {
        send(
            http.post(server.url("/api/generate"))
                .header("content-type", "application/json")
                .body(
                    json!({"model": "ai/smollm2", "prompt": "", "keep_alive": keep_alive})
                        .to_string(),
                ),
        )
    };
    for keep_alive in [
        json!(1e20),
        json!(1e19),
        json!(1e15),
        json!("99999999999999999999h"),
        json!(-1e300),
    ] {
        let (status, body) = generate(keep_alive.clone());
        assert_eq!(status, 200, "keep_alive {keep_alive}: {body}");
        let (status, body) = send(http.get(server.url("/api/ps")));
        assert_eq!(status, 200, "ps after keep_alive {keep_alive}: {body}");
        assert_eq!(body["models"].as_array().map(Vec::len), Some(1), "{body}");
    }
    let (status, body) = generate(json!("NaN"));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "keep_alive", "{body}");
    // The keep-alive task survived: a zero keep-alive still unloads within its tick.
    let (status, _) = generate(json!(0));
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = send(http.get(server.url("/api/ps")));
        if body["models"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the model never unloaded: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, _) = send(http.get(server.url("/health")));
    assert_eq!(status, 200);
}

#[test]
fn api_pulls_may_not_ask_for_plain_http() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    let (status, body) = send(
        client()
            .post(server.url("/api/pull"))
            .header("content-type", "application/json")
            .body(
                json!({"model": "registry.example/ai/x", "insecure": true, "stream": false})
                    .to_string(),
            ),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "insecure", "{body}");
}

#[test]
fn sigterm_stops_the_server_even_with_a_stream_that_would_run_on() {
    let cli = cli_with_default_model();
    let port = free_port();
    let mut child = cli
        .command(&[
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--context-size",
            "8192",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::blocking::get(format!("{url}/health")).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A stream that runs for a minute or more: the whole 8k context, never stopping at EOS.
    let mut stream = client()
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(
            json!({"model": "ai/smollm2", "stream": true, "ignore_eos": true, "max_tokens": 100000,
                   "messages": [{"role": "user", "content": "Count."}]})
            .to_string(),
        )
        .send()
        .unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read(&mut stream, &mut first).unwrap();
    let stopped_at = Instant::now();
    // SAFETY: signals a child process this test started and still owns.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let limit = Duration::from_secs(25);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if stopped_at.elapsed() > limit {
            let _ = child.kill();
            panic!("the server was still running {limit:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn serving_beyond_loopback_without_a_key_warns() {
    let cli = cli_with_default_model();
    let port = free_port();
    let mut child = cli
        .command(&["serve", "--host", "0.0.0.0", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::blocking::get(format!("http://127.0.0.1:{port}/health")).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = reader.join().unwrap();
    assert!(
        text.contains("warning") && text.contains("--api-key"),
        "no warning in: {text}"
    );
}

#[test]
fn hostile_chat_templates_fail_their_request_and_the_server_stays_up() {
    let cli = cli_with_default_model();
    let gguf = common::default_model_gguf();
    let hostile = [
        ("indent", "{{ messages | tojson(indent=1000000000000) }}"),
        ("repeat", "{{ 'x' * 1000000000000 }}"),
        (
            "loops",
            "{% for a in range(100000) %}{% for b in range(100000) %}{{ b }}{% endfor %}{% endfor %}",
        ),
        (
            "strftime",
            "{{ strftime_now('%Q') }}{{ messages[0].content }}",
        ),
        // A list doubled 48 times is 48 small values in memory but a petabyte of text: `~` and a
        // captured `set` write that text before minijinja charges any fuel for it.
        (
            "concat",
            "{% set ns = namespace(x=['abcd']) %}{% for i in range(48) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ (ns.x ~ '') | length }}",
        ),
        (
            "capture",
            "{% set ns = namespace(x=['abcd']) %}{% for i in range(48) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}{% set y %}{{ ns.x }}{% endset %}{{ y | length }}",
        ),
    ];
    for (name, template) in hostile {
        let file = cli.home.path().join(format!("{name}.jinja"));
        std::fs::write(&file, template).unwrap();
        cli.ok(&[
            "package",
            "--gguf",
            gguf.to_str().unwrap(),
            "--chat-template",
            file.to_str().unwrap(),
            &format!("ai/hostile-{name}:latest"),
        ]);
    }
    let server = Server::start(&cli, &[]);
    let http = client();
    for (name, _) in hostile {
        // Validation comes first: a bad parameter is refused before the template is ever rendered.
        let (status, body) = send(
            http.post(server.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(
                    json!({"model": format!("ai/hostile-{name}"), "temperature": 3,
                           "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
                ),
        );
        assert_eq!(
            (status, &body["error"]["param"]),
            (400, &json!("temperature")),
            "{name}: {body}"
        );
        let started = Instant::now();
        let (status, body) = send(
            http.post(server.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(
                    json!({"model": format!("ai/hostile-{name}"), "max_tokens": 2,
                           "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
                ),
        );
        assert!(
            (400..600).contains(&status) && body["error"]["message"].is_string(),
            "{name}: {status} {body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(35),
            "{name} took {:?}",
            started.elapsed()
        );
        let (status, _) = send(http.get(server.url("/health")));
        assert_eq!(status, 200, "after {name}");
    }
    // The same server still answers with a sound template.
    let (status, body) = send(
        http.post(server.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(chat_body()),
    );
    assert_eq!(status, 200, "{body}");
}
