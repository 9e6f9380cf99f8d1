//! The OAuth 2.1 grants the runner uses: the authorization code grant with PKCE (S256), a random
//! `state` and the RFC 8707 `resource` indicator; the refresh token grant; and RFC 7009 revocation.
//! Token answers are read into `Tokens`, whose `Debug` shows no token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use reqwest::Url;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::http::{OAuthHttp, parse};
use super::registration::Client;
use super::{OAuthError, printable};

/// A PKCE pair (RFC 7636): the verifier stays here, its S256 challenge goes in the authorization URL.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    /// A fresh pair: a 43-character verifier from 32 random bytes.
    pub fn new() -> Self {
        Self::from_verifier(random_token(32))
    }

    fn from_verifier(verifier: String) -> Self {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// `bytes` random bytes, base64url: PKCE verifiers (43 characters from 32 bytes) and `state` values.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The URL the user's browser opens to authorize the runner.
pub fn authorization_url(
    endpoint: &str,
    client: &Client,
    redirect_uri: &str,
    pkce: &Pkce,
    state: &str,
    resource: &Url,
    scope: Option<&str>,
) -> Result<Url, OAuthError> {
    let mut url = Url::parse(endpoint).map_err(|_| OAuthError::UnsafeUrl {
        what: "authorization endpoint",
        url: printable(endpoint),
        reason: "it is not a URL",
    })?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &client.id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", state)
            .append_pair("resource", resource.as_str());
        if let Some(scope) = scope {
            query.append_pair("scope", scope);
        }
    }
    Ok(url)
}

/// A token endpoint's successful answer (RFC 6749 §5.1).
#[derive(Clone, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub token_type: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A token endpoint's error answer (RFC 6749 §5.2).
#[derive(Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Exchanges an authorization code for tokens.
pub async fn exchange_code(
    http: &OAuthHttp,
    token_endpoint: &Url,
    client: &Client,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
    resource: &Url,
) -> Result<Tokens, OAuthError> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
        ("resource", resource.as_str()),
    ];
    token_request(http, token_endpoint, client, &form, "authorization code").await
}

/// Trades a refresh token for new tokens.
pub async fn refresh(
    http: &OAuthHttp,
    token_endpoint: &Url,
    client: &Client,
    refresh_token: &str,
    resource: &Url,
) -> Result<Tokens, OAuthError> {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("resource", resource.as_str()),
    ];
    token_request(http, token_endpoint, client, &form, "refresh token").await
}

async fn token_request(
    http: &OAuthHttp,
    endpoint: &Url,
    client: &Client,
    form: &[(&str, &str)],
    grant: &'static str,
) -> Result<Tokens, OAuthError> {
    let auth = client.authentication();
    let mut fields = auth.form;
    fields.extend(form.iter().map(|&(k, v)| (k, v)));
    let (status, body) = http
        .post_form("token", endpoint, &fields, auth.basic)
        .await?;
    if !status.is_success() {
        return Err(match serde_json::from_slice::<TokenError>(&body) {
            Ok(e) => OAuthError::Refused {
                grant,
                error: printable(&e.error),
                description: e.error_description.map(|d| printable(&d)),
            },
            Err(_) => OAuthError::Request {
                what: "token",
                url: endpoint.to_string(),
                reason: format!("HTTP {status}"),
            },
        });
    }
    let tokens: Tokens = parse("token response", endpoint, &body)?;
    if !tokens.token_type.eq_ignore_ascii_case("bearer") {
        return Err(OAuthError::Invalid {
            what: "token response",
            url: endpoint.to_string(),
            reason: format!("token type {} is not Bearer", printable(&tokens.token_type)),
        });
    }
    if tokens.access_token.is_empty() || tokens.access_token.chars().any(|c| !c.is_ascii_graphic())
    {
        return Err(OAuthError::Invalid {
            what: "token response",
            url: endpoint.to_string(),
            reason: "the access token is empty or not printable ASCII".into(),
        });
    }
    Ok(tokens)
}

/// Revokes a token (RFC 7009). The server answers 200 for tokens it does not know, too.
pub async fn revoke(
    http: &OAuthHttp,
    endpoint: &Url,
    client: &Client,
    token: &str,
    hint: &str,
) -> Result<(), OAuthError> {
    let auth = client.authentication();
    let mut fields = auth.form;
    fields.extend([("token", token), ("token_type_hint", hint)]);
    let (status, _) = http
        .post_form("revocation", endpoint, &fields, auth.basic)
        .await?;
    if !status.is_success() {
        return Err(OAuthError::Request {
            what: "revocation",
            url: endpoint.to_string(),
            reason: format!("HTTP {status}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::oauth::registration::ClientAuth;

    #[test]
    fn pkce_challenge_is_the_s256_of_the_verifier() {
        // RFC 7636 appendix B.
        let pkce = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        assert_eq!(
            pkce.challenge,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let pkce = Pkce::new();
        assert_eq!(pkce.verifier.len(), 43);
        assert_ne!(pkce.verifier, Pkce::new().verifier);
    }

    #[test]
    fn authorization_urls_carry_pkce_state_and_resource() {
        let client = Client {
            id: "c1".into(),
            secret: None,
            auth: ClientAuth::None,
        };
        let pkce = Pkce::new();
        let resource = Url::parse("https://mcp.example.com/mcp").unwrap();
        let url = authorization_url(
            "https://auth.example.com/authorize?tenant=x",
            &client,
            "http://127.0.0.1:5000/callback",
            &pkce,
            "st",
            &resource,
            Some("a b"),
        )
        .unwrap();
        let pairs: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["tenant"], "x");
        assert_eq!(pairs["code_challenge"], pkce.challenge);
        assert_eq!(pairs["code_challenge_method"], "S256");
        assert_eq!(pairs["state"], "st");
        assert_eq!(pairs["resource"], "https://mcp.example.com/mcp");
        assert_eq!(pairs["scope"], "a b");
        assert_eq!(pairs["redirect_uri"], "http://127.0.0.1:5000/callback");
    }
}
