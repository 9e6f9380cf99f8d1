//! The loopback listener the browser returns to after authorization (RFC 8252 §7.3): bound to
//! 127.0.0.1 on a random port, it answers until one request to `/callback` carries the expected
//! `state` (or an error), or until its deadline, then closes. Other paths get a 404; a `state` that
//! does not match ends the login (it is not this login's answer).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{OAuthError, printable};

/// The most bytes read of a request's head.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const PATH: &str = "/callback";

/// A bound, not yet answered, callback listener.
pub struct CallbackListener {
    listener: TcpListener,
    redirect_uri: String,
}

/// What the browser brought back.
enum Outcome {
    Code(String),
    Failed(String),
}

impl CallbackListener {
    /// Binds 127.0.0.1 on a port the system picks.
    pub async fn bind() -> Result<Self, OAuthError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| OAuthError::Callback(format!("cannot listen on 127.0.0.1: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| OAuthError::Callback(e.to_string()))?
            .port();
        Ok(Self {
            listener,
            redirect_uri: format!("http://127.0.0.1:{port}{PATH}"),
        })
    }

    /// The redirect URI to register and send.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits (at most `wait`) for the browser to return with `state`; the authorization code.
    /// Consumes the listener: it answers once.
    pub async fn code(self, state: &str, wait: Duration) -> Result<String, OAuthError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let accepted = tokio::time::timeout_at(deadline, self.listener.accept())
                .await
                .map_err(|_| {
                    OAuthError::Callback(format!(
                        "the browser did not return within {} s",
                        wait.as_secs()
                    ))
                })?;
            let Ok((stream, _)) = accepted else { continue };
            match answer(stream, state).await {
                Some(Outcome::Code(code)) => return Ok(code),
                Some(Outcome::Failed(reason)) => return Err(OAuthError::Callback(reason)),
                None => continue,
            }
        }
    }
}

/// Reads one request and answers it; `None` when it was not the callback (or could not be read).
async fn answer(mut stream: TcpStream, state: &str) -> Option<Outcome> {
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .ok()
        .flatten()?;
    let target = head
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("GET "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != PATH {
        respond(&mut stream, "404 Not Found", "Not found.").await;
        return None;
    }
    let outcome = outcome(query, state);
    let (status, text) = match &outcome {
        Outcome::Code(_) => (
            "200 OK",
            "model-runner is authorized. You can close this window.",
        ),
        Outcome::Failed(_) => ("400 Bad Request", "Authorization failed; see the terminal."),
    };
    respond(&mut stream, status, text).await;
    Some(outcome)
}

/// Reads the callback's query.
fn outcome(query: &str, state: &str) -> Outcome {
    let mut code = None;
    let mut got_state = None;
    let mut error = None;
    let mut description = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "code" => code = Some(v.into_owned()),
            "state" => got_state = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            "error_description" => description = Some(v.into_owned()),
            _ => {}
        }
    }
    if got_state.as_deref() != Some(state) {
        return Outcome::Failed(
            "the browser returned with a state that is not this login's (a forged or stale \
             redirect); nothing was accepted"
                .into(),
        );
    }
    if let Some(error) = error {
        let detail = description
            .map(|d| format!(" ({})", printable(&d)))
            .unwrap_or_default();
        return Outcome::Failed(format!(
            "the authorization server answered {}{detail}",
            printable(&error)
        ));
    }
    match code {
        Some(code) if !code.is_empty() => Outcome::Code(code),
        _ => Outcome::Failed("the browser returned without an authorization code".into()),
    }
}

/// The request line and headers, up to `MAX_REQUEST` bytes.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return None;
        }
    }
    String::from_utf8(buf).ok()
}

async fn respond(stream: &mut TcpStream, status: &str, text: &str) {
    let body =
        format!("<!doctype html><meta charset=utf-8><title>model-runner</title><p>{text}</p>");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_expected_state_yields_the_code() {
        assert!(matches!(outcome("code=abc&state=s1", "s1"), Outcome::Code(c) if c == "abc"));
        assert!(matches!(
            outcome("code=abc&state=evil", "s1"),
            Outcome::Failed(_)
        ));
        assert!(matches!(outcome("code=abc", "s1"), Outcome::Failed(_)));
        assert!(matches!(
            outcome("error=access_denied&state=s1", "s1"),
            Outcome::Failed(m) if m.contains("access_denied")
        ));
    }
}
