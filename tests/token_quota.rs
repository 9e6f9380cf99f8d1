//! The gateway clients' daily token quota (`tokensPerDay`) at the inference APIs, against the real
//! binary and the default model over real HTTP: requests under the quota pass and are counted by the
//! usage they report, a spent quota is refused with 429 and `Retry-After` (until UTC midnight) in each
//! API's error shape, another client is unaffected, a stream cut by its client is counted, and
//! `/metrics` shows the counts. Every request goes to 127.0.0.1; every loop and wait is bounded.

mod common;

use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Server, cli_with_default_model, serve_with_gateway};
use serde_json::{Value, json};

/// The metered client's quota: a few short chats' worth.
const QUOTA: u64 = 120;

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn chat(server: &Server, token: &str) -> reqwest::blocking::Response {
    http()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(
            &json!({"model": "ai/smollm2", "max_tokens": 8, "temperature": 0,
                      "messages": [{"role": "user", "content": "Say hello."}]}),
        )
        .send()
        .expect("chat request")
}

/// The value of `series` in the server's `/metrics`, if it is there.
fn metric(server: &Server, series: &str) -> Option<u64> {
    let text = http()
        .get(server.url("/metrics"))
        .bearer_auth("admin-key")
        .send()
        .and_then(|r| r.text())
        .expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn tokens_today(server: &Server, client: &str) -> Option<u64> {
    metric(
        server,
        &format!("model_runner:mcp_client_tokens_today{{client=\"{client}\"}}"),
    )
}

/// Seconds until the next UTC midnight, now.
fn seconds_to_midnight() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    86_400 - now % 86_400
}

fn retry_after(response: &reqwest::blocking::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header in seconds")
}

#[test]
fn token_quotas_admit_count_and_refuse_per_client() {
    let cli = cli_with_default_model();
    let server = serve_with_gateway(
        &cli,
        "admin-key",
        &json!({"mcpServers": {},
        "gateway": {"clients": [
            {"name": "metered", "token": "metered-token", "servers": [], "tokensPerDay": QUOTA},
            {"name": "streamer", "token": "streamer-token", "servers": [], "tokensPerDay": 100000},
            {"name": "free", "token": "free-token", "servers": []}
        ]}}),
    );
    assert_eq!(tokens_today(&server, "metered"), Some(0));
    assert_eq!(
        metric(
            &server,
            "model_runner:mcp_client_tokens_per_day{client=\"metered\"}"
        ),
        Some(QUOTA)
    );
    assert_eq!(tokens_today(&server, "free"), None, "no quota, no series");

    // Under the quota, chats pass; each is counted by the usage it reports, and the one that starts
    // under the quota finishes even when it takes the count past it.
    let mut spent = 0;
    let mut passed = 0;
    let refused = loop {
        assert!(passed < 20, "{QUOTA} tokens were never spent");
        let response = chat(&server, "metered-token");
        if response.status() == 429 {
            break response;
        }
        assert_eq!(response.status(), 200);
        let body: Value = response.json().unwrap();
        let total = body["usage"]["total_tokens"].as_u64().expect("usage");
        assert!(spent < QUOTA, "admitted with {spent} of {QUOTA} spent");
        spent += total;
        passed += 1;
        assert_eq!(tokens_today(&server, "metered"), Some(spent));
    };
    assert!(passed >= 1 && spent >= QUOTA, "{passed} passed, {spent}");
    // Over it: 429 until midnight, in OpenAI's shape.
    let wait = retry_after(&refused);
    assert!(
        wait.abs_diff(seconds_to_midnight()) <= 5,
        "Retry-After {wait}"
    );
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("metered") && m.contains("tokens")),
        "{body}"
    );
    // ... and in Anthropic's, and on Ollama's and the other OpenAI routes, streaming or not.
    let messages = http()
        .post(server.url("/v1/messages"))
        .header("x-api-key", "metered-token")
        .json(&json!({"model": "ai/smollm2", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .unwrap();
    assert_eq!(messages.status(), 429);
    assert!(retry_after(&messages) > 0);
    let body: Value = messages.json().unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    for (path, body) in [
        (
            "/api/chat",
            json!({"model": "ai/smollm2", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/api/generate",
            json!({"model": "ai/smollm2", "prompt": "hi"}),
        ),
        (
            "/v1/completions",
            json!({"model": "ai/smollm2", "prompt": "hi", "max_tokens": 2}),
        ),
        (
            "/v1/responses",
            json!({"model": "ai/smollm2", "input": "hi", "stream": true}),
        ),
        (
            "/engines/v1/chat/completions",
            json!({"model": "ai/smollm2", "stream": true,
                   "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let response = http()
            .post(server.url(path))
            .bearer_auth("metered-token")
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(response.status(), 429, "{path}");
        assert!(retry_after(&response) > 0, "{path}");
    }
    // Refusals cost nothing.
    assert_eq!(tokens_today(&server, "metered"), Some(spent));

    // Another client is unaffected, and one without a quota is not counted.
    assert_eq!(chat(&server, "free-token").status(), 200);
    assert_eq!(chat(&server, "streamer-token").status(), 200);
    let streamer_before = tokens_today(&server, "streamer").expect("streamer counted");
    assert!(streamer_before > 0);

    // A stream is counted when it ends, also when its client goes away in the middle: what was
    // generated until then.
    let mut stream = http()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth("streamer-token")
        .json(
            &json!({"model": "ai/smollm2", "stream": true, "ignore_eos": true, "max_tokens": 4000,
                      "messages": [{"role": "user", "content": "Tell me a long story."}]}),
        )
        .send()
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut first = [0u8; 256];
    assert!(stream.read(&mut first).unwrap() > 0);
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(30);
    let counted = loop {
        let now = tokens_today(&server, "streamer").unwrap_or(0);
        if now > streamer_before || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        counted > streamer_before && counted < streamer_before + 4000 + 100,
        "the cut stream was counted by what it generated: {streamer_before} -> {counted}"
    );
    // The metered client stays refused; its metrics say why.
    assert_eq!(chat(&server, "metered-token").status(), 429);
    assert_eq!(tokens_today(&server, "metered"), Some(spent));
}
