//! A server's OAuth grant while the gateway runs, and the streamable-HTTP transport's client for
//! servers without a configured `Authorization` header.
//!
//! `Credentials` owns one server's grant: `authorized` is the one request path both upstream
//! transports (streamable HTTP through `BearerClient`, HTTP+SSE in `upstream::sse`) send through. It
//! attaches the access token, refreshes it shortly before it expires, and once more when the server
//! refuses it (then the request is retried once). A refresh holds the store's cross-process lock and
//! reads the grant again under it, so a `model` process that finds it renewed by another takes that
//! token instead of spending the refresh token a second time. When no grant is saved, or the refresh
//! fails, the request fails with an error that tells the user to run `model mcp auth login NAME`. The
//! token goes only to the URL the grant was made for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use sse_stream::Sse;

use super::OAuthError;
use super::flow::refresh;
use super::http::{OAuthHttp, check_url};
use super::store::{Grant, GrantLock, TokenStore};

/// The longest a refresh waits for another process's.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// How often a waiting refresh looks at the lock again.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// Why a request could not be authorized. Each message ends with what the user should do.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("MCP server {server} requires authorization: run `model mcp auth login {server}`")]
    LoginRequired { server: String },
    #[error(
        "MCP server {server}'s authorization expired or was revoked and could not be renewed ({reason}): run `model mcp auth login {server}`"
    )]
    RenewFailed { server: String, reason: String },
    #[error(
        "MCP server {server}'s saved authorization was granted for {granted}, not its configured URL; run `model mcp auth login {server}`"
    )]
    OtherUrl { server: String, granted: String },
    #[error("MCP server {server}: {source}; run `model mcp auth login {server}`")]
    Store { server: String, source: OAuthError },
}

/// The credential error inside a transport error, if it is one (rmcp wraps it a few times), so the
/// gateway can show its message alone.
pub fn credential_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a CredentialError> {
    let mut next = Some(error);
    // Error chains are short; the bound only guards against a cyclic `source`.
    for _ in 0..16 {
        let e = next?;
        if let Some(found) = e.downcast_ref::<CredentialError>() {
            return Some(found);
        }
        if let Some(found) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<CredentialError>())
        {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// One server's saved grant, kept current.
pub struct Credentials {
    server: String,
    url: String,
    store: TokenStore,
    grant: tokio::sync::Mutex<Option<Grant>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(store: TokenStore, server: &str, url: &str) -> Arc<Self> {
        Arc::new(Self {
            server: server.to_string(),
            url: url.to_string(),
            store,
            grant: tokio::sync::Mutex::new(None),
        })
    }

    /// Runs `call` with the access token (`None` when no login saved a grant); when the server
    /// refuses it (`is_refusal` says which outcomes are a refusal), renews the token once and calls
    /// once more. Both transports (streamable HTTP and HTTP+SSE) send every request through here;
    /// `refused` turns a credential error into the transport's error.
    pub async fn authorized<T, E, F, Fut>(
        &self,
        call: F,
        is_refusal: impl Fn(&E) -> bool,
        refused: impl Fn(CredentialError) -> E,
    ) -> Result<T, E>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let Some(token) = self.current(None).await.map_err(&refused)? else {
            return match call(None).await {
                Err(e) if is_refusal(&e) => Err(refused(CredentialError::LoginRequired {
                    server: self.server.clone(),
                })),
                other => other,
            };
        };
        match call(Some(token.clone())).await {
            Err(e) if is_refusal(&e) => {
                let fresh = self.current(Some(&token)).await.map_err(&refused)?;
                match call(fresh).await {
                    Err(e) if is_refusal(&e) => Err(refused(CredentialError::RenewFailed {
                        server: self.server.clone(),
                        reason: "the server refused the renewed token too".into(),
                    })),
                    other => other,
                }
            }
            other => other,
        }
    }

    /// The access token to send: the held grant's (read from the store when none is held), refreshed
    /// first when it is about to expire. After the server refused `refused`, the store is read again
    /// (a login or another process may have renewed it since) and the token refreshed unless it
    /// already changed. `None` only when no login saved a grant and nothing was refused.
    async fn current(&self, refused: Option<&str>) -> Result<Option<String>, CredentialError> {
        let mut slot = self.grant.lock().await;
        if slot.is_none() || refused.is_some() {
            *slot = self.load()?;
        }
        let Some(grant) = slot.as_mut() else {
            return match refused {
                Some(_) => Err(CredentialError::LoginRequired {
                    server: self.server.clone(),
                }),
                None => Ok(None),
            };
        };
        let was_refused = refused.is_some_and(|sent| sent == grant.access_token);
        if !was_refused && (!grant.needs_refresh() || grant.refresh_token.is_none()) {
            // Fresh, or expiring with no way to renew it: the server has the last word.
            return Ok(Some(grant.access_token.clone()));
        }
        if was_refused {
            tracing::info!(server = %self.server, "the server refused the access token; refreshing it once");
        } else {
            tracing::debug!(server = %self.server, "access token about to expire; refreshing");
        }
        match self.refresh(grant, refused).await {
            Ok(()) => Ok(Some(grant.access_token.clone())),
            Err(e) => {
                // Forget the grant: the next request reads the store again (a new login, or none).
                *slot = None;
                Err(e)
            }
        }
    }

    /// The saved grant, when it was made for this server's configured URL.
    fn load(&self) -> Result<Option<Grant>, CredentialError> {
        let grant = self
            .store
            .load(&self.server)
            .map_err(|source| CredentialError::Store {
                server: self.server.clone(),
                source,
            })?;
        match grant {
            Some(grant) if !same_url(&grant.server_url, &self.url) => {
                Err(CredentialError::OtherUrl {
                    server: self.server.clone(),
                    granted: grant.server_url,
                })
            }
            grant => Ok(grant),
        }
    }

    /// Refreshes `grant` at its recorded token endpoint and saves it, holding the server's
    /// cross-process lock from reading the saved grant to saving the new one: when another process
    /// renewed it meanwhile, its token is taken and the refresh token (spent) is not sent again.
    async fn refresh(
        &self,
        grant: &mut Grant,
        refused: Option<&str>,
    ) -> Result<(), CredentialError> {
        let failed = |reason: String| CredentialError::RenewFailed {
            server: self.server.clone(),
            reason,
        };
        let _lock = self.lock().await?;
        let latest = self.load()?.ok_or_else(|| CredentialError::LoginRequired {
            server: self.server.clone(),
        })?;
        let renewed_elsewhere = latest.access_token != grant.access_token
            && refused != Some(latest.access_token.as_str())
            && !latest.needs_refresh();
        *grant = latest;
        if renewed_elsewhere {
            tracing::debug!(server = %self.server, "access token renewed by another request or process");
            return Ok(());
        }
        let Some(refresh_token) = grant.refresh_token.clone() else {
            return Err(failed("no refresh token was granted".into()));
        };
        let attempt = async {
            let endpoint = check_url("token endpoint", &grant.token_endpoint)?;
            let resource = Url::parse(&grant.resource).map_err(|_| OAuthError::Invalid {
                what: "saved grant",
                url: grant.resource.clone(),
                reason: "its resource is not a URL".into(),
            })?;
            let http = OAuthHttp::new()?;
            refresh(&http, &endpoint, &grant.client, &refresh_token, &resource).await
        };
        let tokens = attempt.await.map_err(|e| {
            tracing::warn!(server = %self.server, "token refresh failed: {e}");
            failed(e.to_string())
        })?;
        grant.set_tokens(tokens);
        self.store
            .save(grant)
            .map_err(|source| CredentialError::Store {
                server: self.server.clone(),
                source,
            })?;
        tracing::info!(server = %self.server, expires_at = ?grant.expires_at, "access token refreshed");
        Ok(())
    }

    /// The server's refresh lock, waited for (polled) at most `LOCK_WAIT`: a process holds it only
    /// for one token request, which its HTTP client bounds well below that.
    async fn lock(&self) -> Result<GrantLock, CredentialError> {
        let store_error = |source| CredentialError::Store {
            server: self.server.clone(),
            source,
        };
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            if let Some(lock) = self.store.try_lock(&self.server).map_err(store_error)? {
                return Ok(lock);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(store_error(OAuthError::Store(format!(
                    "another process has held the refresh lock for over {} s",
                    LOCK_WAIT.as_secs()
                ))));
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    /// Renews the access token now, as `model mcp auth refresh` asks: refreshed when it is about to
    /// expire (or always, with `force`), unless another process renewed it meanwhile. The grant after.
    pub async fn renew_now(&self, force: bool) -> Result<Grant, CredentialError> {
        let mut slot = self.grant.lock().await;
        let Some(mut grant) = self.load()? else {
            return Err(CredentialError::LoginRequired {
                server: self.server.clone(),
            });
        };
        if force || grant.needs_refresh() {
            let sent = grant.access_token.clone();
            let refused = force.then_some(sent.as_str());
            self.refresh(&mut grant, refused).await?;
        }
        *slot = Some(grant.clone());
        Ok(grant)
    }
}

/// Whether two URLs name the same resource (parsed, so `HTTP://Host:443/x` and `https://host/x` agree).
fn same_url(a: &str, b: &str) -> bool {
    match (Url::parse(a), Url::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The streamable-HTTP client that attaches `credentials`' token.
#[derive(Clone)]
pub struct BearerClient {
    inner: reqwest::Client,
    credentials: Arc<Credentials>,
}

impl BearerClient {
    pub fn new(credentials: Arc<Credentials>) -> Result<Self, reqwest::Error> {
        let inner = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .redirect(same_origin_redirects())
            .build()?;
        Ok(Self { inner, credentials })
    }

    /// Runs `call` with the grant's token, unless the transport was given an `Authorization` itself.
    async fn authorized<T, F, Fut>(&self, given: Option<String>, call: F) -> HttpResult<T>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: Future<Output = HttpResult<T>>,
    {
        if given.is_some() {
            return call(given).await;
        }
        self.credentials
            .authorized(
                call,
                |e| matches!(e, StreamableHttpError::AuthRequired(_)),
                refused,
            )
            .await
    }
}

/// A credential error as the transport's error (its message reaches the gateway's error unchanged).
fn refused(error: CredentialError) -> StreamableHttpError<reqwest::Error> {
    StreamableHttpError::Io(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        error,
    ))
}

/// Only same-origin 307/308 redirects are followed (as rmcp's default client does): a token never
/// follows a redirect to another origin, and a POST never becomes a GET.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let keeps_body = matches!(
            attempt.status(),
            reqwest::StatusCode::TEMPORARY_REDIRECT | reqwest::StatusCode::PERMANENT_REDIRECT
        );
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if !keeps_body || !same_origin {
            attempt.stop()
        } else if attempt.previous().len() > 10 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

type Headers = HashMap<HeaderName, HeaderValue>;
type HttpResult<T> = Result<T, StreamableHttpError<reqwest::Error>>;

impl StreamableHttpClient for BearerClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: Headers,
    ) -> HttpResult<StreamableHttpPostResponse> {
        self.authorized(auth_header, |token| {
            self.inner.post_message(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                token,
                custom_headers.clone(),
            )
        })
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: Headers,
        max_sse_event_size: usize,
    ) -> HttpResult<StreamableHttpPostResponse> {
        self.authorized(auth_header, |token| {
            self.inner.post_message_with_max_sse_event_size(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                token,
                custom_headers.clone(),
                max_sse_event_size,
            )
        })
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: Headers,
        limits: StreamableHttpResponseLimits,
    ) -> HttpResult<StreamableHttpPostResponse> {
        self.authorized(auth_header, |token| {
            self.inner.post_message_with_response_limits(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                token,
                custom_headers.clone(),
                limits,
            )
        })
        .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: Headers,
    ) -> HttpResult<()> {
        self.authorized(auth_header, |token| {
            self.inner.delete_session(
                uri.clone(),
                session_id.clone(),
                token,
                custom_headers.clone(),
            )
        })
        .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: Headers,
    ) -> HttpResult<BoxStream<'static, Result<Sse, SseError>>> {
        self.authorized(auth_header, |token| {
            self.inner.get_stream(
                uri.clone(),
                session_id.clone(),
                last_event_id.clone(),
                token,
                custom_headers.clone(),
            )
        })
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: Headers,
        max_sse_event_size: usize,
    ) -> HttpResult<BoxStream<'static, Result<Sse, SseError>>> {
        self.authorized(auth_header, |token| {
            self.inner.get_stream_with_max_sse_event_size(
                uri.clone(),
                session_id.clone(),
                last_event_id.clone(),
                token,
                custom_headers.clone(),
                max_sse_event_size,
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_bound_to_the_url_they_were_made_for() {
        assert!(same_url(
            "https://Mcp.Example.com:443/mcp",
            "https://mcp.example.com/mcp"
        ));
        assert!(!same_url(
            "https://mcp.example.com/mcp",
            "https://evil.example.com/mcp"
        ));
        assert!(!same_url(
            "https://mcp.example.com/mcp",
            "https://mcp.example.com/other"
        ));
    }

    #[test]
    fn credential_errors_tell_the_user_to_log_in_and_are_found_inside_transport_errors() {
        let e = CredentialError::RenewFailed {
            server: "web".into(),
            reason: "invalid_grant".into(),
        };
        assert!(e.to_string().ends_with("run `model mcp auth login web`"));
        let wrapped = refused(e);
        let found = credential_error(&wrapped).map(|c| c.to_string());
        assert!(found.is_some_and(|m| m.starts_with("MCP server web's authorization")));
        let other: StreamableHttpError<reqwest::Error> = StreamableHttpError::UnexpectedEndOfStream;
        assert!(credential_error(&other).is_none());
    }
}
