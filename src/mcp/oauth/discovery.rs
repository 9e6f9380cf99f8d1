//! Finding a server's authorization server: the server's 401 challenge (`WWW-Authenticate: Bearer
//! resource_metadata=...`), its protected resource metadata (RFC 9728, else the well-known URLs under
//! its origin), then the authorization server's metadata (RFC 8414, else OpenID discovery).
//!
//! What the documents say is checked before anything is sent to the places they name: every URL is
//! https or loopback http (`http::check_url`), the resource metadata must describe the server that was
//! asked (same origin, a prefix of its path), the authorization server's `issuer` must be the URL its
//! metadata was looked up for, and it must offer PKCE with S256.

use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::http::{OAuthHttp, check_url, is_loopback};
use super::{OAuthError, printable};

/// The parameters of a `Bearer` challenge that discovery uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    pub resource_metadata: Option<String>,
    pub scope: Option<String>,
}

/// Reads the `Bearer` challenge of a `WWW-Authenticate` value (RFC 6750 §3; auth-params RFC 9110 §11.2).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let start = header
        .char_indices()
        .find(|(i, _)| {
            header[*i..]
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
                && (*i == 0 || header[..*i].ends_with([' ', ',']))
        })
        .map(|(i, _)| i + 6)?;
    let mut challenge = Challenge::default();
    let mut rest = &header[start..];
    loop {
        rest = rest.trim_start_matches([' ', ',', '\t']);
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq].trim().to_ascii_lowercase();
        if name.contains(' ') {
            // The next challenge's scheme: this one's parameters are done.
            break;
        }
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            out.push(next);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            value = out;
            rest = &quoted[end.min(quoted.len())..];
        } else {
            let end = rest.find([',', ' ']).unwrap_or(rest.len());
            value = rest[..end].to_string();
            rest = &rest[end..];
        }
        match name.as_str() {
            "resource_metadata" => challenge.resource_metadata = Some(value),
            "scope" => challenge.scope = Some(value),
            _ => {}
        }
    }
    Some(challenge)
}

/// RFC 9728 protected resource metadata (the fields used).
#[derive(Debug, Deserialize)]
struct ResourceMetadata {
    resource: String,
    #[serde(default)]
    authorization_servers: Vec<String>,
    #[serde(default)]
    scopes_supported: Vec<String>,
}

/// RFC 8414 authorization server metadata (the fields used), checked by `validate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthServerMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
}

/// What login needs to know about a server.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The resource indicator (RFC 8707) tokens are asked for.
    pub resource: Url,
    pub metadata: AuthServerMetadata,
    /// The scope the server asks for (its challenge, else its metadata's `scopes_supported`).
    pub scope: Option<String>,
}

/// Discovers how `server` is authorized.
pub async fn discover(http: &OAuthHttp, server: &Url) -> Result<Discovered, OAuthError> {
    let challenge = http
        .challenge(server)
        .await?
        .as_deref()
        .and_then(parse_challenge)
        .unwrap_or_default();
    let resource_metadata = fetch_resource_metadata(http, server, &challenge).await?;
    let (resource, issuer, supported) = match resource_metadata {
        Some((metadata, url)) => {
            let resource = check_resource(server, &metadata.resource, &url)?;
            let issuer =
                metadata
                    .authorization_servers
                    .first()
                    .ok_or_else(|| OAuthError::Discovery {
                        url: server.to_string(),
                        reason: format!(
                            "its resource metadata ({url}) names no authorization server"
                        ),
                    })?;
            (
                resource,
                check_url("authorization server", issuer)?,
                metadata.scopes_supported,
            )
        }
        None => {
            // Servers of the 2025-03-26 spec publish no resource metadata: their origin is the
            // authorization server.
            tracing::debug!(server = %server, "no protected resource metadata; trying the server's origin");
            let mut origin = server.clone();
            origin.set_path("");
            origin.set_query(None);
            (server.clone(), origin, Vec::new())
        }
    };
    if !is_loopback(server) && is_loopback(&issuer) {
        return Err(OAuthError::UnsafeUrl {
            what: "authorization server",
            url: issuer.to_string(),
            reason: "a remote server cannot send the runner to this machine's loopback interface",
        });
    }
    let metadata = fetch_server_metadata(http, &issuer).await?;
    let scope = challenge
        .scope
        .or_else(|| (!supported.is_empty()).then(|| supported.join(" ")));
    Ok(Discovered {
        resource,
        metadata,
        scope,
    })
}

/// The resource metadata: where the challenge says, else the well-known URLs (with the server's path,
/// then at the root). `None` when the server publishes none.
async fn fetch_resource_metadata(
    http: &OAuthHttp,
    server: &Url,
    challenge: &Challenge,
) -> Result<Option<(ResourceMetadata, Url)>, OAuthError> {
    let mut candidates = Vec::new();
    if let Some(url) = &challenge.resource_metadata {
        candidates.push(check_url("resource metadata", url)?);
    }
    let path = server.path().trim_end_matches('/');
    if !path.is_empty() {
        candidates.push(well_known(
            server,
            &format!("/.well-known/oauth-protected-resource{path}"),
        ));
    }
    candidates.push(well_known(server, "/.well-known/oauth-protected-resource"));
    for url in candidates {
        if let Some(metadata) = http.get_json("resource metadata", &url).await? {
            return Ok(Some((metadata, url)));
        }
    }
    Ok(None)
}

/// The server's origin with `path`.
fn well_known(server: &Url, path: &str) -> Url {
    let mut url = server.clone();
    url.set_path(path);
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// The resource the metadata describes, when it is the server that was asked: same origin, and a
/// prefix of the server's path (RFC 9728 §3.3 forbids using metadata for another resource).
fn check_resource(server: &Url, resource: &str, from: &Url) -> Result<Url, OAuthError> {
    let parsed = check_url("resource", resource)?;
    let prefix = parsed.path().trim_end_matches('/');
    let server_path = server.path();
    let covers = server_path == prefix
        || server_path.starts_with(&format!("{prefix}/"))
        || prefix.is_empty();
    if parsed.origin() != server.origin() || !covers || parsed.query().is_some() {
        return Err(OAuthError::Discovery {
            url: server.to_string(),
            reason: format!(
                "its resource metadata ({from}) describes another resource: {}",
                printable(resource)
            ),
        });
    }
    Ok(parsed)
}

/// The URLs where an issuer's metadata may be (RFC 8414 §3.1 with its path inserted, then OpenID
/// Connect Discovery both ways), in the MCP spec's order.
fn metadata_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/').to_string();
    let at = |p: String| well_known(issuer, &p);
    if path.is_empty() {
        vec![
            at("/.well-known/oauth-authorization-server".into()),
            at("/.well-known/openid-configuration".into()),
        ]
    } else {
        vec![
            at(format!("/.well-known/oauth-authorization-server{path}")),
            at(format!("/.well-known/openid-configuration{path}")),
            at(format!("{path}/.well-known/openid-configuration")),
        ]
    }
}

/// The authorization server's metadata, validated.
async fn fetch_server_metadata(
    http: &OAuthHttp,
    issuer: &Url,
) -> Result<AuthServerMetadata, OAuthError> {
    for url in metadata_urls(issuer) {
        if let Some(metadata) = http
            .get_json::<AuthServerMetadata>("authorization server metadata", &url)
            .await?
        {
            validate(&metadata, issuer, &url)?;
            return Ok(metadata);
        }
    }
    Err(OAuthError::Discovery {
        url: issuer.to_string(),
        reason: "the authorization server publishes no metadata (RFC 8414 or OpenID discovery)"
            .into(),
    })
}

/// Checks metadata before anything is sent to the endpoints it names.
pub fn validate(metadata: &AuthServerMetadata, issuer: &Url, from: &Url) -> Result<(), OAuthError> {
    let invalid = |reason: String| OAuthError::Invalid {
        what: "authorization server metadata",
        url: from.to_string(),
        reason,
    };
    // RFC 8414 §3.3: the issuer must be the URL the metadata was asked for.
    if metadata.issuer.trim_end_matches('/') != issuer.as_str().trim_end_matches('/') {
        return Err(invalid(format!(
            "its issuer {} is not {issuer}",
            printable(&metadata.issuer)
        )));
    }
    check_url("issuer", &metadata.issuer)?;
    check_url("authorization endpoint", &metadata.authorization_endpoint)?;
    check_url("token endpoint", &metadata.token_endpoint)?;
    if let Some(url) = &metadata.registration_endpoint {
        check_url("registration endpoint", url)?;
    }
    if let Some(url) = &metadata.revocation_endpoint {
        check_url("revocation endpoint", url)?;
    }
    if !metadata
        .code_challenge_methods_supported
        .iter()
        .any(|m| m == "S256")
    {
        return Err(invalid(
            "it does not offer PKCE with S256 (code_challenge_methods_supported)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_yield_resource_metadata_and_scope() {
        let c = parse_challenge(
            r#"Bearer error="invalid_token", error_description="a, \"b\"", resource_metadata="http://127.0.0.1:9/.well-known/oauth-protected-resource/mcp", scope="read write""#,
        )
        .unwrap();
        assert_eq!(
            c.resource_metadata.as_deref(),
            Some("http://127.0.0.1:9/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(c.scope.as_deref(), Some("read write"));
        let c = parse_challenge(r#"Basic realm="x", Bearer scope=files"#).unwrap();
        assert_eq!(c.scope.as_deref(), Some("files"));
        assert_eq!(c.resource_metadata, None);
        assert!(parse_challenge(r#"Basic realm="x""#).is_none());
    }

    #[test]
    fn resource_metadata_must_describe_the_server_asked() {
        let server = Url::parse("https://mcp.example.com/v1/mcp").unwrap();
        let from = server.clone();
        assert!(check_resource(&server, "https://mcp.example.com/v1/mcp", &from).is_ok());
        assert!(check_resource(&server, "https://mcp.example.com/v1", &from).is_ok());
        assert!(check_resource(&server, "https://mcp.example.com", &from).is_ok());
        assert!(check_resource(&server, "https://evil.example.com/v1/mcp", &from).is_err());
        assert!(check_resource(&server, "https://mcp.example.com/v2", &from).is_err());
        assert!(check_resource(&server, "https://mcp.example.com/v1/mc", &from).is_err());
    }

    #[test]
    fn metadata_urls_insert_the_issuer_path() {
        let urls = |issuer: &str| -> Vec<String> {
            metadata_urls(&Url::parse(issuer).unwrap())
                .into_iter()
                .map(String::from)
                .collect()
        };
        assert_eq!(
            urls("https://auth.example.com"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            urls("https://auth.example.com/tenant1/"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example.com/.well-known/openid-configuration/tenant1",
                "https://auth.example.com/tenant1/.well-known/openid-configuration"
            ]
        );
    }

    fn metadata() -> AuthServerMetadata {
        AuthServerMetadata {
            issuer: "https://auth.example.com".into(),
            authorization_endpoint: "https://auth.example.com/authorize".into(),
            token_endpoint: "https://auth.example.com/token".into(),
            registration_endpoint: None,
            revocation_endpoint: None,
            code_challenge_methods_supported: vec!["S256".into()],
            token_endpoint_auth_methods_supported: vec![],
            scopes_supported: vec![],
        }
    }

    #[test]
    fn metadata_with_another_issuer_plain_http_or_no_pkce_is_refused() {
        let issuer = Url::parse("https://auth.example.com").unwrap();
        assert!(validate(&metadata(), &issuer, &issuer).is_ok());
        let mut m = metadata();
        m.issuer = "https://evil.example.com".into();
        assert!(validate(&m, &issuer, &issuer).is_err());
        let mut m = metadata();
        m.token_endpoint = "http://evil.example.com/token".into();
        assert!(validate(&m, &issuer, &issuer).is_err());
        let mut m = metadata();
        m.code_challenge_methods_supported = vec!["plain".into()];
        assert!(validate(&m, &issuer, &issuer).is_err());
    }
}
