//! Talking to a running `model serve`, as `docker model` talks to its runner: `ps`, `unload`, the store
//! listing, and `model run`'s answers through the server's OpenAI API.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::chat::{AnswerOptions, Answerer, show};
use crate::engine::chat_template::ChatMessage;
use crate::server::DEFAULT_PORT;

/// Where the server is expected: `MODEL_RUNNER_HOST`/`MODEL_RUNNER_PORT`, default 127.0.0.1:12434.
pub fn server_url() -> String {
    let host = std::env::var("MODEL_RUNNER_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("MODEL_RUNNER_PORT").unwrap_or_else(|_| DEFAULT_PORT.to_string());
    format!("http://{host}:{port}")
}

fn client() -> reqwest::Client {
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Ok(key) = std::env::var("MODEL_RUNNER_API_KEY") {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = format!("Bearer {key}").parse() {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        builder = builder.default_headers(headers);
    }
    builder.build().unwrap_or_default()
}

async fn send(request: reqwest::RequestBuilder) -> Result<Value> {
    let response = request.send().await.with_context(|| {
        format!(
            "no model runner answers at {} (start one with `model serve`)",
            server_url()
        )
    })?;
    let status = response.status();
    let bytes = response.bytes().await?;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        bail!("{message}");
    }
    Ok(body)
}

/// The server's stored models (`GET /models`, Docker Model Runner's store API).
pub async fn list_models() -> Result<Value> {
    send(client().get(format!("{}/models", server_url()))).await
}

/// `model configure` through the server (`POST /engines/_configure`); returns its answer.
pub async fn configure(request: &Value) -> Result<Value> {
    send(
        client()
            .post(format!("{}/engines/_configure", server_url()))
            .header("content-type", "application/json")
            .body(request.to_string()),
    )
    .await
}

/// The running server's MCP servers and their state (`GET /gateway/servers`).
pub async fn gateway_servers() -> Result<Value> {
    send(client().get(format!("{}/gateway/servers", server_url()))).await
}

/// Asks the running server to reread its MCP configuration (`POST /gateway/reload`).
pub async fn gateway_reload() -> Result<Value> {
    send(client().post(format!("{}/gateway/reload", server_url()))).await
}

/// `model ps`: the models the server has loaded.
pub async fn ps() -> Result<()> {
    let body = send(client().get(format!("{}/api/ps", server_url()))).await?;
    println!(
        "{:<40} {:<14} {:>10} {:>8} {:<8}   {:<25}   SETTINGS",
        "MODEL NAME", "MODEL ID", "SIZE", "CONTEXT", "DEVICE", "UNTIL"
    );
    for m in body["models"].as_array().into_iter().flatten() {
        let settings = m["settings"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string)))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "{:<40} {:<14} {:>10} {:>8} {:<8}   {:<25}   {}",
            m["name"].as_str().unwrap_or_default(),
            m["digest"]
                .as_str()
                .unwrap_or_default()
                .get(..12)
                .unwrap_or_default(),
            crate::artifact::human_size(m["size"].as_u64().unwrap_or(0)),
            m["context_length"].as_u64().unwrap_or(0),
            m["device"].as_str().unwrap_or("cpu"),
            m["expires_at"].as_str().unwrap_or_default(),
            settings,
        );
    }
    Ok(())
}

/// `model unload REF|--all`.
pub async fn unload(reference: Option<&str>) -> Result<()> {
    let names: Vec<String> = match reference {
        Some(r) => vec![r.to_string()],
        None => send(client().get(format!("{}/api/ps", server_url()))).await?["models"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str().map(str::to_string))
            .collect(),
    };
    for name in names {
        send(
            client()
                .post(format!("{}/api/generate", server_url()))
                .header("content-type", "application/json")
                .body(json!({"model": name, "keep_alive": 0}).to_string()),
        )
        .await?;
        println!("Unloaded {name}");
    }
    Ok(())
}

/// Whether a model runner answers `/health` at the configured address (quickly, or not at all).
pub async fn server_answers() -> bool {
    let probe = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(500))
        .build()
        .unwrap_or_default();
    probe
        .get(format!("{}/health", server_url()))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Answers `model run`'s conversation through a running server's OpenAI API, streamed.
pub struct ServerAnswerer {
    options: AnswerOptions,
}

impl ServerAnswerer {
    pub fn new(options: AnswerOptions) -> Self {
        Self { options }
    }
}

impl Answerer for ServerAnswerer {
    async fn answer(&mut self, history: &[ChatMessage]) -> Result<String> {
        ask_remote(&self.options, history).await
    }
}

/// Streams one answer from the server to stdout; pulls the model through the server first if it lacks it.
async fn ask_remote(args: &AnswerOptions, history: &[ChatMessage]) -> Result<String> {
    let mut body = json!({
        "model": args.model, "stream": true, "stream_options": {"include_usage": true},
        "messages": history.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
    });
    if let Some(t) = args.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(n) = args.max_tokens {
        body["max_tokens"] = json!(n);
    }
    if let Some(seed) = args.seed {
        body["seed"] = json!(seed);
    }
    let url = format!("{}/engines/v1/chat/completions", server_url());
    let streaming = reqwest::Client::builder().build().unwrap_or_default();
    let started = std::time::Instant::now();
    let mut response = streaming
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    if response.status().as_u16() == 404 {
        eprintln!(
            "Unable to find model '{}' on the runner. Pulling it.",
            args.model
        );
        let pull = streaming
            .post(format!("{}/models/create", server_url()))
            .header("content-type", "application/json")
            .body(json!({"from": args.model}).to_string())
            .send()
            .await?
            .text()
            .await?;
        if let Some(error) = pull
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["type"] == "error")
        {
            bail!("{}", error["message"].as_str().unwrap_or("pull failed"));
        }
        response = streaming
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
    }
    if !response.status().is_success() {
        let error: Value = serde_json::from_slice(&response.bytes().await?).unwrap_or(Value::Null);
        bail!(
            "{}",
            error["error"]["message"]
                .as_str()
                .unwrap_or("the server refused the request")
        );
    }
    let mut reply = String::new();
    let mut buffer = String::new();
    let mut usage = Value::Null;
    while let Some(chunk) = response.chunk().await? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let Some(data) = line.trim().strip_prefix("data:").map(str::trim) else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if let Some(piece) = event["choices"][0]["delta"]["content"].as_str() {
                reply.push_str(piece);
                show(piece);
            }
            if !event["usage"].is_null() {
                usage = event["usage"].clone();
            }
        }
    }
    println!();
    if args.verbose {
        let elapsed = started.elapsed().as_secs_f64();
        let tokens = usage["completion_tokens"].as_u64().unwrap_or(0);
        eprintln!(
            "prompt eval count:    {} token(s)",
            usage["prompt_tokens"].as_u64().unwrap_or(0)
        );
        eprintln!("eval count:           {tokens} token(s)");
        eprintln!(
            "total duration:       {elapsed:.3}s (through the server at {})",
            server_url()
        );
    }
    Ok(reply)
}
