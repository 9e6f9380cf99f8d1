//! OAuth 2.1 for remote MCP servers (streamable HTTP and the older HTTP+SSE), as the MCP authorization spec describes: the
//! runner is the OAuth client, the MCP server a protected resource, its authorization server whatever
//! the server's metadata names.
//!
//! `http` is the one HTTP client every OAuth request goes through (timeouts, no redirects, bounded
//! bodies, https-or-loopback URLs); `discovery` finds the authorization server (RFC 9728 protected
//! resource metadata, RFC 8414 / OpenID metadata); `registration` registers the runner as a client
//! (RFC 7591); `flow` holds the grants (authorization code with PKCE and RFC 8707 `resource`, refresh,
//! RFC 7009 revocation); `callback` is the one-shot loopback listener the browser returns to; `login`
//! runs them in order for `model mcp auth login`; `store` keeps the grants encrypted under the
//! runner's home; `bearer` holds a server's grant while the gateway runs (`Credentials`, which both
//! upstream transports send every request through: the access token attached, refreshed before it
//! expires and once more when the server refuses it, under a cross-process lock) and is the
//! streamable-HTTP transport's HTTP client.
//!
//! Architecture Invariant: an access token is sent only to the MCP server URL it was granted for (and,
//! over HTTP+SSE, to the message endpoint the stream names on that URL's origin), a
//! refresh token only to the token endpoint recorded when it was granted; neither reaches a log line,
//! an error message or any other origin.

pub mod bearer;
pub mod callback;
pub mod discovery;
pub mod flow;
pub mod http;
pub mod login;
pub mod registration;
pub mod store;

pub use bearer::{BearerClient, CredentialError, Credentials, credential_error};
pub use login::{LoginOptions, login, logout};
pub use store::{Grant, TokenStore};

/// What the config may say about a server's OAuth client (all optional: without a client id the
/// runner registers itself dynamically).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    /// A client id registered with the authorization server beforehand.
    pub client_id: Option<String>,
    /// Its secret, for confidential clients.
    pub client_secret: Option<String>,
    /// The scopes to ask for (space-separated); default: what the server's challenge or metadata names.
    pub scope: Option<String>,
}

/// Why an OAuth step failed. Messages name the step and the server's URL, never a token.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// A URL the server or its metadata gave is not one the runner will send credentials to.
    #[error("refusing {what} {url}: {reason}")]
    UnsafeUrl {
        what: &'static str,
        url: String,
        reason: &'static str,
    },
    /// A request failed on the network, timed out, or was answered with a redirect.
    #[error("{what} request to {url} failed: {reason}")]
    Request {
        what: &'static str,
        url: String,
        reason: String,
    },
    /// An answer was not the JSON document the step expects (or larger than it allows).
    #[error("{what} from {url} is invalid: {reason}")]
    Invalid {
        what: &'static str,
        url: String,
        reason: String,
    },
    /// The authorization server refused a grant (RFC 6749 §5.2 `error`).
    #[error("the authorization server refused the {grant} grant: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        grant: &'static str,
        error: String,
        description: Option<String>,
    },
    /// The server offers no way to discover its authorization server.
    #[error("cannot discover how {url} is authorized: {reason}")]
    Discovery { url: String, reason: String },
    /// The browser's return to the loopback listener failed or did not come.
    #[error("authorization was not completed: {0}")]
    Callback(String),
    /// Reading or writing the encrypted grants failed.
    #[error("token store: {0}")]
    Store(String),
}

/// The text a server sent, made safe to show: control characters dropped, at most 200 characters.
pub(crate) fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}
