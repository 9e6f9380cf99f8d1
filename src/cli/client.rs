//! Talking to a running `model serve`, as `docker model` talks to its runner: `ps` and `unload`.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

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

/// `model ps`: the models the server has loaded.
pub async fn ps() -> Result<()> {
    let body = send(client().get(format!("{}/api/ps", server_url()))).await?;
    println!(
        "{:<40} {:<14} {:>10} {:>8}   UNTIL",
        "MODEL NAME", "MODEL ID", "SIZE", "CONTEXT"
    );
    for m in body["models"].as_array().into_iter().flatten() {
        println!(
            "{:<40} {:<14} {:>10} {:>8}   {}",
            m["name"].as_str().unwrap_or_default(),
            m["digest"]
                .as_str()
                .unwrap_or_default()
                .get(..12)
                .unwrap_or_default(),
            crate::artifact::human_size(m["size"].as_u64().unwrap_or(0)),
            m["context_length"].as_u64().unwrap_or(0),
            m["expires_at"].as_str().unwrap_or_default(),
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
