//! The gate every request passes before routing: the defences against web pages and foreign callers.
//!
//! A browser lets any page send "simple" cross-site requests (no CORS preflight): a POST whose body is
//! `text/plain`, form data or an untyped blob, with the page's `Origin`. And a page whose domain is
//! re-pointed at 127.0.0.1 (DNS rebinding) talks to us as if it were same-origin, with its own name in
//! `Host`. So, on every route:
//! - `Host` must name this server: a loopback name, the address it is bound to, an IP literal when bound
//!   to every interface (an IP cannot be re-pointed), or a name given with `--allowed-host`;
//! - `Origin`, when a browser sends one, must be a loopback page, this server itself, or a `--cors` origin;
//! - a request body must be declared `application/json` (415 otherwise), which no simple request can do.
//!
//! And the API key's scopes: the key opens every route; a gateway client's token (issued for MCP) opens
//! only the inference routes a chat client needs, never the store's or the server's administration.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::anthropic::error::{is_messages_path, respond_for};
use super::errors::ApiError;

/// Which `Host` and `Origin` values the server answers, fixed at start.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    bound: IpAddr,
    /// Names (lower case) added by `--allowed-host`; `*` allows any.
    extra: Vec<String>,
    /// `--cors` origins; `*` allows any.
    cors: Vec<String>,
}

impl HostPolicy {
    pub fn new(bound: IpAddr, allowed_hosts: &[String], cors_origins: &[String]) -> Self {
        Self {
            bound,
            extra: allowed_hosts
                .iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            cors: cors_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether `authority` (`name`, `name:port`, `[v6]:port`) names this server.
    pub fn host_allowed(&self, authority: &str) -> bool {
        let Some(host) = host_of(authority) else {
            return false;
        };
        if self.extra.iter().any(|h| name_matches(h, &host)) || is_loopback_name(&host) {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => ip == self.bound || ip.is_loopback() || self.bound.is_unspecified(),
            Err(_) => false,
        }
    }

    /// Whether a page of `origin` may call us; `host` is the request's (already allowed) `Host`.
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.cors.iter().any(|o| o == "*" || *o == origin) {
            return true;
        }
        let Some((scheme, authority)) = origin.split_once("://") else {
            // "null" (sandboxed frames, file: pages) and anything unparsable.
            return false;
        };
        if scheme != "http" && scheme != "https" {
            return false;
        }
        if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
            return true;
        }
        host_of(authority).is_some_and(|h| {
            is_loopback_name(&h) || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        })
    }
}

/// The host part of an authority, lower case, without port or IPv6 brackets; `None` if malformed.
fn host_of(authority: &str) -> Option<String> {
    let authority = authority.trim();
    if authority.is_empty() || authority.contains(['/', '@', ' ']) {
        return None;
    }
    let host = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        v6
    } else {
        match authority.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            Some(_) => return None,
            None => authority,
        }
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// An `--allowed-host` entry: `*`, an exact name, or `*.suffix` for the suffix's subdomains.
fn name_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        _ if pattern == "*" => true,
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => pattern == host,
    }
}

/// `localhost` and its subdomains, which browsers resolve to loopback themselves.
fn is_loopback_name(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost")
}

/// Host, Origin and Content-Type checks (see the module's doc), before any route.
pub async fn browser_guard(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let policy = &state.config.host_policy;
    let host = request_host(&request);
    // Each API's clients read refusals in their own error shape.
    let refuse = |error: ApiError| respond_for(request.uri().path(), error);
    if let Some(host) = &host
        && !policy.host_allowed(host)
    {
        tracing::warn!(host = %host, "refused a request for a foreign Host");
        return refuse(ApiError::forbidden(format!(
            "Host {host:?} is not a name of this server; add it with --allowed-host"
        )));
    }
    if let Some(origin) = header_str(request.headers(), header::ORIGIN)
        && !policy.origin_allowed(origin, host.as_deref())
    {
        tracing::warn!(origin = %origin, "refused a request from a foreign Origin");
        return refuse(ApiError::forbidden(format!(
            "Origin {origin:?} may not call this server; allow it with --cors"
        )));
    }
    if carries_body(&request) && !is_json(request.headers()) {
        return refuse(ApiError::unsupported_media_type());
    }
    next.run(request).await
}

/// The authority the client asked for: HTTP/2's `:authority`, else HTTP/1's `Host`.
fn request_host(request: &Request) -> Option<String> {
    request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| header_str(request.headers(), header::HOST).map(str::to_string))
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A request that sends a body (a length above zero, or chunked).
fn carries_body(request: &Request) -> bool {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return false;
    }
    let headers = request.headers();
    let length = header_str(headers, header::CONTENT_LENGTH).map(str::trim);
    match length {
        Some(n) => n != "0",
        None => headers.contains_key(header::TRANSFER_ENCODING),
    }
}

/// `application/json`, with parameters, or any `+json` type.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = header_str(headers, header::CONTENT_TYPE) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Who presented what: the API key opens everything, a gateway client's token the inference routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    ApiKey,
    GatewayClient,
    None,
}

/// Routes a gateway client token may use: asking models and listing them, nothing that changes the store
/// or the server, nor reads its metrics.
pub fn client_route(method: &Method, path: &str) -> bool {
    let path = inference_path(path);
    let path = path.strip_prefix("/anthropic").unwrap_or(path);
    match *method {
        Method::GET => {
            path == "/v1/models"
                || path.starts_with("/v1/models/")
                || matches!(path, "/api/tags" | "/api/version")
        }
        Method::POST => matches!(
            path,
            "/v1/chat/completions"
                | "/v1/responses"
                | "/v1/completions"
                | "/v1/embeddings"
                | "/v1/rerank"
                | "/rerank"
                | "/v1/score"
                | "/api/chat"
                | "/api/generate"
                | "/api/embed"
                | "/api/embeddings"
                | "/api/show"
                | "/v1/messages"
                | "/v1/messages/count_tokens"
                | "/tokenize"
                | "/detokenize"
        ),
        _ => false,
    }
}

/// `/engines/v1/...` and `/engines/{backend}/v1/...` are `/v1/...` under other names.
pub(super) fn inference_path(path: &str) -> &str {
    let Some(rest) = path.strip_prefix("/engines/") else {
        return path;
    };
    if rest.starts_with("v1/") {
        return &path["/engines".len()..];
    }
    match rest.find('/') {
        Some(i) if rest[i..].starts_with("/v1/") => &rest[i..],
        _ => path,
    }
}

/// Compares a presented secret with the expected one in time independent of where they differ.
pub fn secret_matches(presented: Option<&str>, expected: &str) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    let mut difference = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        difference |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    difference == 0
}

/// The status a refused credential gets: 401 when none was good, 403 for a client token on an admin route;
/// in the shape of the API `path` belongs to.
pub fn refusal(credential: Credential, path: &str) -> Response {
    let error = match credential {
        Credential::GatewayClient => ApiError::forbidden(
            "a gateway client token may use the chat and model-listing routes only; this route needs the API key",
        ),
        _ if is_messages_path(path) => ApiError {
            message: "invalid x-api-key: send the server's --api-key as 'x-api-key' or 'Authorization: Bearer'".into(),
            ..ApiError::unauthorized()
        },
        _ => ApiError::unauthorized(),
    };
    respond_for(path, error)
}

impl ApiError {
    /// A body not declared as JSON (what a cross-site form or `text/plain` post sends).
    pub fn unsupported_media_type() -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            kind: "invalid_request_error",
            code: Some("unsupported_media_type"),
            param: None,
            message: "request bodies must be JSON sent with 'Content-Type: application/json'"
                .into(),
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_policy() -> HostPolicy {
        HostPolicy::new("127.0.0.1".parse().unwrap(), &[], &[])
    }

    #[test]
    fn loopback_names_and_the_bound_address_are_this_server() {
        let policy = loopback_policy();
        for host in [
            "localhost",
            "LOCALHOST:12434",
            "127.0.0.1:12434",
            "[::1]:12434",
            "app.localhost:80",
            "127.0.0.2",
        ] {
            assert!(policy.host_allowed(host), "{host}");
        }
    }

    #[test]
    fn rebound_names_and_malformed_hosts_are_refused() {
        let policy = loopback_policy();
        for host in [
            "evil.example:12434",
            "localhost.evil.example",
            "192.168.1.9:12434",
            "user@localhost",
            "localhost:port",
            "",
        ] {
            assert!(!policy.host_allowed(host), "{host}");
        }
    }

    #[test]
    fn every_interface_takes_ip_literals_and_named_hosts_only() {
        let policy = HostPolicy::new(
            "0.0.0.0".parse().unwrap(),
            &["Model-Runner".to_string()],
            &[],
        );
        assert!(policy.host_allowed("10.1.2.3:12434"));
        assert!(policy.host_allowed("model-runner:12434"));
        assert!(!policy.host_allowed("evil.example"));
        let cluster = HostPolicy::new(
            "0.0.0.0".parse().unwrap(),
            &["*.svc.cluster.local".to_string()],
            &[],
        );
        assert!(cluster.host_allowed("model-runner.ai.svc.cluster.local:12434"));
        assert!(!cluster.host_allowed("svc.cluster.local"));
        assert!(!cluster.host_allowed("evilsvc.cluster.local"));
        let any = HostPolicy::new("0.0.0.0".parse().unwrap(), &["*".to_string()], &[]);
        assert!(any.host_allowed("evil.example"));
    }

    #[test]
    fn origins_are_loopback_pages_this_server_or_cors_ones() {
        let policy = HostPolicy::new(
            "127.0.0.1".parse().unwrap(),
            &[],
            &["https://app.example".to_string()],
        );
        let host = Some("127.0.0.1:12434");
        assert!(policy.origin_allowed("http://localhost:3000", host));
        assert!(policy.origin_allowed("http://127.0.0.1:12434", host));
        assert!(policy.origin_allowed("https://app.example/", host));
        assert!(!policy.origin_allowed("https://evil.example", host));
        assert!(!policy.origin_allowed("null", host));
        assert!(!policy.origin_allowed("file://", host));
        let lan = HostPolicy::new("0.0.0.0".parse().unwrap(), &[], &[]);
        assert!(lan.origin_allowed("http://10.0.0.5:12434", Some("10.0.0.5:12434")));
        assert!(!lan.origin_allowed("http://10.0.0.6:80", Some("10.0.0.5:12434")));
    }

    #[test]
    fn client_tokens_reach_inference_routes_only() {
        assert!(client_route(&Method::POST, "/v1/chat/completions"));
        assert!(client_route(&Method::POST, "/engines/v1/chat/completions"));
        assert!(client_route(
            &Method::POST,
            "/engines/llama.cpp/v1/chat/completions"
        ));
        assert!(client_route(&Method::GET, "/v1/models"));
        assert!(client_route(&Method::POST, "/api/chat"));
        assert!(client_route(&Method::POST, "/v1/responses"));
        // Stored responses are not per client: reading or deleting them takes the API key.
        assert!(!client_route(&Method::GET, "/v1/responses/resp_1"));
        assert!(!client_route(&Method::DELETE, "/v1/responses/resp_1"));
        assert!(!client_route(&Method::POST, "/api/pull"));
        assert!(!client_route(&Method::DELETE, "/api/delete"));
        assert!(!client_route(&Method::POST, "/models/create"));
        assert!(!client_route(&Method::DELETE, "/models/ai/smollm2"));
        assert!(!client_route(&Method::GET, "/metrics"));
        assert!(!client_route(&Method::GET, "/api/ps"));
        assert!(client_route(&Method::POST, "/v1/messages"));
        assert!(client_route(
            &Method::POST,
            "/anthropic/v1/messages/count_tokens"
        ));
    }

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(secret_matches(Some("s3cret"), "s3cret"));
        assert!(!secret_matches(Some("s3cre"), "s3cret"));
        assert!(!secret_matches(Some("s3cret!"), "s3cret"));
        assert!(!secret_matches(Some("S3cret"), "s3cret"));
        assert!(!secret_matches(None, "s3cret"));
    }
}
