//! The one HTTP client for OAuth traffic (discovery, registration, token and revocation requests):
//! every URL must be https, or http to a loopback host; every request has a timeout; redirects are
//! never followed (a 3xx is an error, so no answer can move a credential to another origin); every
//! body is read up to a byte limit.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;
use serde::de::DeserializeOwned;

use super::{OAuthError, printable};

/// The most bytes read of any OAuth answer (metadata documents and token responses are small).
pub const MAX_BODY: usize = 64 * 1024;
/// How long one OAuth request may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether `url` may carry OAuth traffic: https anywhere, http only to a loopback host, no userinfo
/// and no fragment.
pub fn check_url(what: &'static str, url: &str) -> Result<Url, OAuthError> {
    let unsafe_url = |reason| OAuthError::UnsafeUrl {
        what,
        url: printable(url),
        reason,
    };
    let parsed = Url::parse(url).map_err(|_| unsafe_url("it is not a URL"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(unsafe_url("it carries credentials"));
    }
    if parsed.fragment().is_some() {
        return Err(unsafe_url("it has a fragment"));
    }
    match parsed.scheme() {
        "https" if parsed.host().is_some() => Ok(parsed),
        "http" if is_loopback(&parsed) => Ok(parsed),
        "http" => Err(unsafe_url("plain http is allowed only to a loopback host")),
        _ => Err(unsafe_url(
            "only https (or http to a loopback host) is allowed",
        )),
    }
}

/// Whether the URL's host is this machine's loopback interface.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A client for OAuth requests.
#[derive(Clone)]
pub struct OAuthHttp {
    client: reqwest::Client,
}

impl OAuthHttp {
    pub fn new() -> Result<Self, OAuthError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("model-runner/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OAuthError::Request {
                what: "client",
                url: String::new(),
                reason: e.to_string(),
            })?;
        Ok(Self { client })
    }

    /// GETs a JSON document; `Ok(None)` when the server answers 404 (a well-known URL it does not serve).
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        what: &'static str,
        url: &Url,
    ) -> Result<Option<T>, OAuthError> {
        let request = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        let (status, body) = self.send(what, url, request).await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(OAuthError::Request {
                what,
                url: url.to_string(),
                reason: format!("HTTP {status}"),
            });
        }
        parse(what, url, &body).map(Some)
    }

    /// Asks an MCP server, unauthenticated, to initialize: its `WWW-Authenticate` challenge when it
    /// refuses with 401. A server of the older HTTP+SSE transport answers the POST otherwise (its URL
    /// takes only the GET that opens the event stream), so that GET is asked next; its body, a stream
    /// when the server lets it open, is never read.
    pub async fn challenge(&self, server: &Url) -> Result<Option<String>, OAuthError> {
        let initialize = serde_json::json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "model-runner", "version": env!("CARGO_PKG_VERSION")}
            }
        });
        let post = self
            .client
            .post(server.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::ACCEPT,
                "application/json, text/event-stream",
            )
            .body(initialize.to_string());
        if let Some(challenge) = self.challenge_of(server, post).await? {
            return Ok(Some(challenge));
        }
        let get = self
            .client
            .get(server.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream");
        self.challenge_of(server, get).await
    }

    /// The `Bearer` challenge of `request`'s answer, when it is a 401.
    async fn challenge_of(
        &self,
        server: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<String>, OAuthError> {
        let response = request.send().await.map_err(|e| OAuthError::Request {
            what: "MCP server",
            url: server.to_string(),
            reason: describe(&e),
        })?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(None);
        }
        Ok(response
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.to_ascii_lowercase().contains("bearer"))
            .map(str::to_string))
    }

    /// POSTs a JSON body; any 2xx answer is parsed as `T`.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        what: &'static str,
        url: &Url,
        body: &serde_json::Value,
    ) -> Result<T, OAuthError> {
        let request = self
            .client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.to_string());
        let (status, body) = self.send(what, url, request).await?;
        if !status.is_success() {
            return Err(OAuthError::Request {
                what,
                url: url.to_string(),
                reason: format!(
                    "HTTP {status}: {}",
                    printable(&String::from_utf8_lossy(&body))
                ),
            });
        }
        parse(what, url, &body)
    }

    /// POSTs a form (token and revocation requests), with HTTP Basic client authentication when
    /// `basic` is given. Returns the status and the body, bounded, for the caller to read.
    pub async fn post_form(
        &self,
        what: &'static str,
        url: &Url,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), OAuthError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request = self
            .client
            .post(url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body);
        if let Some((id, secret)) = basic {
            // RFC 6749 §2.3.1: both parts form-encoded before Basic encoding.
            let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            let (id, secret): (String, String) = (encode(id), encode(secret));
            request = request.basic_auth(id, Some(secret));
        }
        self.send(what, url, request).await
    }

    /// Sends a request: a timeout, no redirects, at most `MAX_BODY` bytes of answer. Errors never
    /// include the request (it may carry a code or a token).
    async fn send(
        &self,
        what: &'static str,
        url: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), OAuthError> {
        let failed = |reason: String| OAuthError::Request {
            what,
            url: url.to_string(),
            reason,
        };
        let mut response = request.send().await.map_err(|e| failed(describe(&e)))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(failed(format!(
                "answered with a redirect (HTTP {status}), which OAuth requests never follow"
            )));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(failed(format!(
                "its answer is larger than {MAX_BODY} bytes"
            )));
        }
        let mut body = Vec::new();
        loop {
            let chunk = tokio::time::timeout(REQUEST_TIMEOUT, response.chunk())
                .await
                .map_err(|_| failed("the answer did not arrive in time".into()))?
                .map_err(|e| failed(describe(&e)))?;
            let Some(chunk) = chunk else { break };
            if body.len() + chunk.len() > MAX_BODY {
                return Err(failed(format!(
                    "its answer is larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

/// A reqwest error without its URL (which the caller names already, and which may carry a query).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
    } else if error.is_connect() {
        "cannot connect".into()
    } else if error.is_decode() || error.is_body() {
        "the answer could not be read".into()
    } else {
        match std::error::Error::source(error) {
            Some(source) => printable(&source.to_string()),
            None => "the request failed".into(),
        }
    }
}

/// Parses a JSON answer as `T`.
pub fn parse<T: DeserializeOwned>(
    what: &'static str,
    url: &Url,
    body: &[u8],
) -> Result<T, OAuthError> {
    serde_json::from_slice(body).map_err(|e| OAuthError::Invalid {
        what,
        url: url.to_string(),
        reason: printable(&e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_may_carry_credentials() {
        for ok in [
            "https://auth.example.com/token",
            "http://127.0.0.1:8080/token",
            "http://localhost/token",
            "http://[::1]:9/x",
        ] {
            assert!(check_url("token endpoint", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://auth.example.com/token",
            "http://10.0.0.1/token",
            "ftp://auth.example.com/",
            "javascript:alert(1)",
            "https://user:pw@auth.example.com/",
            "https://auth.example.com/#frag",
            "not a url",
        ] {
            assert!(check_url("token endpoint", bad).is_err(), "{bad}");
        }
    }
}
