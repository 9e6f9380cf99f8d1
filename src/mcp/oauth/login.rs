//! `model mcp auth login` and `logout`, start to end: discover the authorization server, register
//! (unless the config names a client), send the user's browser to authorize with PKCE, take the code
//! on the loopback listener, exchange it, and save the grant; or revoke a grant's tokens (when the
//! server can) and delete it.

use std::time::Duration;

use reqwest::Url;

use super::callback::CallbackListener;
use super::discovery::discover;
use super::flow::{Pkce, authorization_url, exchange_code, random_token, revoke};
use super::http::{OAuthHttp, check_url};
use super::registration::client_for;
use super::store::{Grant, TokenStore};
use super::{ClientSettings, OAuthError};

/// How a login runs.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// How long to wait for the browser to come back.
    pub wait: Duration,
}

/// Authorizes the runner for server `name` at `url`; `show` is given the URL the user must open
/// (before the wait starts). Saves and returns the grant.
pub async fn login(
    store: &TokenStore,
    name: &str,
    url: &str,
    settings: &ClientSettings,
    options: &LoginOptions,
    show: impl FnOnce(&Url),
) -> Result<Grant, OAuthError> {
    let server = check_url("MCP server", url)?;
    let http = OAuthHttp::new()?;
    let discovered = discover(&http, &server).await?;
    let metadata = discovered.metadata;
    let scope = settings.scope.clone().or(discovered.scope);
    let listener = CallbackListener::bind().await?;
    let redirect_uri = listener.redirect_uri().to_string();
    let client = client_for(&http, &metadata, settings, &redirect_uri, scope.as_deref()).await?;
    let pkce = Pkce::new();
    let state = random_token(24);
    let target = authorization_url(
        &metadata.authorization_endpoint,
        &client,
        &redirect_uri,
        &pkce,
        &state,
        &discovered.resource,
        scope.as_deref(),
    )?;
    show(&target);
    let code = listener.code(&state, options.wait).await?;
    let token_endpoint = check_url("token endpoint", &metadata.token_endpoint)?;
    let tokens = exchange_code(
        &http,
        &token_endpoint,
        &client,
        &code,
        &redirect_uri,
        &pkce.verifier,
        &discovered.resource,
    )
    .await?;
    let mut grant = Grant {
        server: name.to_string(),
        server_url: server.to_string(),
        resource: discovered.resource.to_string(),
        issuer: metadata.issuer.clone(),
        token_endpoint: token_endpoint.to_string(),
        revocation_endpoint: metadata.revocation_endpoint.clone(),
        client,
        access_token: String::new(),
        refresh_token: None,
        expires_at: None,
        obtained_at: None,
        scope,
    };
    grant.set_tokens(tokens);
    store.save(&grant)?;
    tracing::info!(server = name, issuer = %grant.issuer, "MCP server authorized");
    Ok(grant)
}

/// What `logout` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logout {
    /// A grant was saved and is now deleted.
    pub deleted: bool,
    /// The authorization server confirmed the revocation of its tokens.
    pub revoked: bool,
}

/// Revokes server `name`'s tokens when its authorization server has a revocation endpoint (RFC 7009),
/// then deletes its grant. A failed revocation is reported in the log but does not keep the grant.
pub async fn logout(store: &TokenStore, name: &str) -> Result<Logout, OAuthError> {
    let grant = match store.load(name) {
        Ok(grant) => grant,
        Err(e) => {
            tracing::warn!(
                server = name,
                "the saved grant is unreadable, deleting it: {e}"
            );
            None
        }
    };
    let mut revoked = false;
    if let Some(grant) = &grant
        && let Some(endpoint) = &grant.revocation_endpoint
    {
        revoked = revoke_grant(grant, endpoint).await;
    }
    let deleted = store.delete(name)?;
    Ok(Logout { deleted, revoked })
}

async fn revoke_grant(grant: &Grant, endpoint: &str) -> bool {
    let attempt = async {
        let endpoint = check_url("revocation endpoint", endpoint)?;
        let http = OAuthHttp::new()?;
        // The refresh token first: revoking it usually ends the access token too (RFC 7009 §2.1).
        if let Some(refresh) = &grant.refresh_token {
            revoke(&http, &endpoint, &grant.client, refresh, "refresh_token").await?;
        }
        revoke(
            &http,
            &endpoint,
            &grant.client,
            &grant.access_token,
            "access_token",
        )
        .await
    };
    match attempt.await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(server = %grant.server, "revocation failed: {e}");
            false
        }
    }
}
