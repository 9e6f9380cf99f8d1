//! Dynamic client registration (RFC 7591): when the config names no client id, the runner registers
//! itself with the authorization server for the one loopback redirect URI of this login.

use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::discovery::AuthServerMetadata;
use super::http::OAuthHttp;
use super::{ClientSettings, OAuthError};

/// How the client authenticates at the token endpoint (RFC 7591 §2 `token_endpoint_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// A public client: `client_id` in the form, no secret.
    None,
    /// `client_id` and `client_secret` in the form.
    ClientSecretPost,
    /// HTTP Basic with the id and secret.
    ClientSecretBasic,
}

/// The OAuth client the runner is to one authorization server.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub auth: ClientAuth,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "[REDACTED]"))
            .field("auth", &self.auth)
            .finish()
    }
}

/// How a token or revocation request authenticates the client: form fields, or HTTP Basic.
pub struct Authentication<'a> {
    pub form: Vec<(&'static str, &'a str)>,
    pub basic: Option<(&'a str, &'a str)>,
}

impl Client {
    /// The form fields and Basic credentials that authenticate this client in a token request.
    pub fn authentication(&self) -> Authentication<'_> {
        match (&self.auth, &self.secret) {
            (ClientAuth::ClientSecretBasic, Some(secret)) => Authentication {
                form: vec![],
                basic: Some((&self.id, secret)),
            },
            (ClientAuth::ClientSecretPost, Some(secret)) => Authentication {
                form: vec![("client_id", self.id.as_str()), ("client_secret", secret)],
                basic: None,
            },
            _ => Authentication {
                form: vec![("client_id", self.id.as_str())],
                basic: None,
            },
        }
    }
}

#[derive(Deserialize)]
struct RegistrationResponse {
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

/// The client to use: the configured one, else a freshly registered one.
pub async fn client_for(
    http: &OAuthHttp,
    metadata: &AuthServerMetadata,
    settings: &ClientSettings,
    redirect_uri: &str,
    scope: Option<&str>,
) -> Result<Client, OAuthError> {
    if let Some(id) = &settings.client_id {
        let supported = &metadata.token_endpoint_auth_methods_supported;
        let auth = match &settings.client_secret {
            None => ClientAuth::None,
            // RFC 8414 §2: client_secret_basic is the default when the server lists none.
            Some(_)
                if supported.is_empty() || supported.iter().any(|m| m == "client_secret_basic") =>
            {
                ClientAuth::ClientSecretBasic
            }
            Some(_) => ClientAuth::ClientSecretPost,
        };
        return Ok(Client {
            id: id.clone(),
            secret: settings.client_secret.clone(),
            auth,
        });
    }
    let Some(endpoint) = &metadata.registration_endpoint else {
        return Err(OAuthError::Discovery {
            url: metadata.issuer.clone(),
            reason: "the authorization server offers no dynamic client registration; set the \
                     server's oauth.clientId in the MCP config"
                .into(),
        });
    };
    let endpoint = Url::parse(endpoint).map_err(|_| OAuthError::UnsafeUrl {
        what: "registration endpoint",
        url: endpoint.clone(),
        reason: "it is not a URL",
    })?;
    let supported = &metadata.token_endpoint_auth_methods_supported;
    // A public client when the server allows it; else the secret in the form.
    let method = if supported.iter().any(|m| m == "none") {
        "none"
    } else {
        "client_secret_post"
    };
    let mut request = serde_json::json!({
        "client_name": "model-runner",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": method,
    });
    if let Some(scope) = scope {
        request["scope"] = scope.into();
    }
    let registered: RegistrationResponse = http
        .post_json("client registration", &endpoint, &request)
        .await?;
    let auth = match (
        registered.token_endpoint_auth_method.as_deref(),
        &registered.client_secret,
    ) {
        (_, None) => ClientAuth::None,
        (Some("client_secret_basic"), Some(_)) => ClientAuth::ClientSecretBasic,
        (_, Some(_)) => ClientAuth::ClientSecretPost,
    };
    tracing::info!(issuer = %metadata.issuer, client_id = %registered.client_id, "registered as an OAuth client");
    Ok(Client {
        id: registered.client_id,
        secret: registered.client_secret,
        auth,
    })
}
