//! One pull's conversation with a registry over the OCI distribution API, with every response bounded.
//!
//! oci-client buffers whole manifests, token and error bodies, and sends Basic credentials to whatever
//! token realm a registry names; a hostile registry could exhaust memory or collect the credentials. Pulls
//! therefore make the few requests they need themselves: the `/v2/` challenge, a bearer token (Basic
//! credentials only to a realm on the registry's own domain), the manifest (at most `MAX_MANIFEST_BYTES`)
//! and blobs (streamed by the caller, never past their declared size). reqwest drops the Authorization
//! header on a redirect to another host, so blob storage behind a redirect never sees it.

use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_RANGE, HeaderValue, RANGE, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use super::credentials::{registry_auth, same_domain};
use super::{RegistryError, RegistryOptions, root_cause};
use crate::digest::Digest;
use crate::reference::ModelRef;

/// The largest manifest a pull reads; a model's manifest is a few KiB.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// A bearer token response is a small JSON object.
const MAX_TOKEN_BYTES: u64 = 256 << 10;
/// Of an error body only the start is read, for its message.
const MAX_ERROR_BYTES: u64 = 64 << 10;

/// An authorised view of one repository on one registry.
pub struct RegistrySession {
    http: reqwest::Client,
    reference: ModelRef,
    /// `http://127.0.0.1:5000`: where the registry's API lives.
    origin: String,
    /// The host requests go to (`index.docker.io` for `docker.io`).
    host: String,
    /// Replaced when a token expires during a long pull (Docker Hub's last five minutes).
    authorization: std::sync::Mutex<Option<HeaderValue>>,
}

/// A blob response whose body the caller streams.
pub struct BlobBody {
    /// The registry honoured the Range request: the body continues from the offset asked for.
    pub resumed: bool,
    response: Response,
}

impl BlobBody {
    /// The body's length as the registry declared it, if it did.
    pub fn declared_len(&self) -> Option<u64> {
        self.response.content_length()
    }

    /// The next piece of the body; `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, reqwest::Error> {
        self.response.chunk().await
    }
}

impl RegistrySession {
    /// Opens a session for `reference`, authorising with the credentials scoped to its registry.
    pub async fn open(
        reference: &ModelRef,
        options: &RegistryOptions,
    ) -> Result<Self, RegistryError> {
        let session = Self::unauthorised(reference, options)?;
        session.reauthorize().await?;
        Ok(session)
    }

    /// The credentials a push through oci-client may be given: those scoped to the registry, unless the
    /// registry sends token requests to a realm that may not have them (oci-client would send them there).
    pub async fn push_auth(
        reference: &ModelRef,
        options: &RegistryOptions,
    ) -> Result<RegistryAuth, RegistryError> {
        let auth = registry_auth(reference.registry());
        if !matches!(auth, RegistryAuth::Basic(..)) {
            return Ok(auth);
        }
        let session = Self::unauthorised(reference, options)?;
        match session.challenge().await? {
            Some(challenge) if !session.may_receive_credentials(&challenge.realm) => {
                Ok(RegistryAuth::Anonymous)
            }
            _ => Ok(auth),
        }
    }

    fn unauthorised(
        reference: &ModelRef,
        options: &RegistryOptions,
    ) -> Result<Self, RegistryError> {
        let host = reference.to_oci().resolve_registry().to_string();
        let scheme = if options.plain_http(reference) {
            "http"
        } else {
            "https"
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| RegistryError::Registry {
                registry: host.clone(),
                message: root_cause(&e),
            })?;
        Ok(Self {
            http,
            reference: reference.clone(),
            origin: format!("{scheme}://{host}"),
            host,
            authorization: std::sync::Mutex::new(None),
        })
    }

    /// The registry as the user named it (`docker.io`).
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// Authorises (again) with the credentials scoped to the registry.
    async fn reauthorize(&self) -> Result<(), RegistryError> {
        let value = self.authorize(registry_auth(self.registry())).await?;
        *self
            .authorization
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
        Ok(())
    }

    /// What to send as `Authorization`: a bearer token from the realm the registry names, or Basic
    /// credentials when it asks for those, or nothing when it asks for nothing.
    async fn authorize(&self, auth: RegistryAuth) -> Result<Option<HeaderValue>, RegistryError> {
        if let RegistryAuth::Bearer(token) = &auth {
            return self.header(&format!("Bearer {token}")).map(Some);
        }
        let response = self
            .send(self.http.get(format!("{}/v2/", self.origin)))
            .await?;
        // Anything but 401 leaves it to the manifest request to say what is wrong.
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(None);
        }
        match (bearer_challenge(&response), auth) {
            (Some(challenge), auth) => self.fetch_token(challenge, auth).await.map(Some),
            (None, RegistryAuth::Basic(user, password)) => {
                self.header(&basic(&user, &password)).map(Some)
            }
            (None, _) => Ok(None),
        }
    }

    /// The bearer challenge the registry answers `/v2/` with, if it asks for a token.
    async fn challenge(&self) -> Result<Option<BearerChallenge>, RegistryError> {
        let response = self
            .send(self.http.get(format!("{}/v2/", self.origin)))
            .await?;
        Ok(bearer_challenge(&response))
    }

    /// Whether a token realm may receive the registry's credentials: on the registry's domain, and not
    /// over plain HTTP unless the registry itself is spoken to that way.
    fn may_receive_credentials(&self, realm: &str) -> bool {
        let Ok(realm) = reqwest::Url::parse(realm) else {
            return false;
        };
        let secure_enough = realm.scheme() == "https" || self.origin.starts_with("http://");
        let allowed =
            secure_enough && same_domain(&self.host, realm.host_str().unwrap_or_default());
        if !allowed {
            tracing::warn!(
                registry = %self.host,
                realm = %realm,
                "credentials withheld from a token realm outside the registry's domain"
            );
        }
        allowed
    }

    async fn fetch_token(
        &self,
        challenge: BearerChallenge,
        auth: RegistryAuth,
    ) -> Result<HeaderValue, RegistryError> {
        let realm = reqwest::Url::parse(&challenge.realm).map_err(|_| {
            self.failure(format!(
                "its token realm {:?} is not a URL",
                challenge.realm
            ))
        })?;
        let mut query = vec![(
            "scope",
            format!("repository:{}:pull", self.reference.repository()),
        )];
        if let Some(service) = challenge.service {
            query.push(("service", service));
        }
        let mut request = self.http.get(realm.clone()).query(&query);
        if let RegistryAuth::Basic(user, password) = &auth
            && self.may_receive_credentials(&challenge.realm)
        {
            request = request.header(AUTHORIZATION, self.header(&basic(user, password))?);
        }
        let response = self.send(request).await?;
        if !response.status().is_success() {
            return Err(self.refusal(response).await);
        }
        let body = self.read_capped(response, MAX_TOKEN_BYTES, "token").await?;
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&body)
            .map_err(|e| self.failure(format!("its token response is malformed: {e}")))?;
        let token = token
            .token
            .or(token.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.failure("its token response holds no token".into()))?;
        self.header(&format!("Bearer {token}"))
    }

    /// The manifest the reference names, in the registry's exact bytes, at most `MAX_MANIFEST_BYTES`.
    pub async fn manifest(&self, accept: &[&str]) -> Result<bytes::Bytes, RegistryError> {
        let name = match (self.reference.digest(), self.reference.tag()) {
            (Some(digest), _) => digest.to_string(),
            (None, tag) => tag.unwrap_or("latest").to_string(),
        };
        let url = format!(
            "{}/v2/{}/manifests/{name}",
            self.origin,
            self.reference.repository()
        );
        let request = self.authorised(self.http.get(url).header(ACCEPT, accept.join(", ")));
        let response = self.send(request).await?;
        if !response.status().is_success() {
            return Err(self.refusal(response).await);
        }
        self.read_capped(response, MAX_MANIFEST_BYTES, "manifest")
            .await
            .map(bytes::Bytes::from)
    }

    /// Starts a blob's download at `offset` (a Range request when above zero). A token that expired while
    /// earlier layers downloaded is renewed once.
    pub async fn blob(&self, digest: &Digest, offset: u64) -> Result<BlobBody, RegistryError> {
        let url = format!(
            "{}/v2/{}/blobs/{digest}",
            self.origin,
            self.reference.repository()
        );
        let request = || {
            let request = self.authorised(self.http.get(&url));
            match offset {
                0 => request,
                _ => request.header(RANGE, format!("bytes={offset}-")),
            }
        };
        let mut response = self.send(request()).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            self.reauthorize().await?;
            response = self.send(request()).await?;
        }
        match response.status() {
            StatusCode::OK => Ok(BlobBody {
                resumed: false,
                response,
            }),
            StatusCode::PARTIAL_CONTENT if offset > 0 && range_start(&response) == Some(offset) => {
                Ok(BlobBody {
                    resumed: true,
                    response,
                })
            }
            StatusCode::PARTIAL_CONTENT => Err(self.failure(format!(
                "it answered a request for {digest} from byte {offset} with another range"
            ))),
            _ => Err(self.refusal(response).await),
        }
    }

    fn authorised(&self, request: RequestBuilder) -> RequestBuilder {
        let value = self
            .authorization
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match value {
            Some(value) => request.header(AUTHORIZATION, value),
            None => request,
        }
    }

    async fn send(&self, request: RequestBuilder) -> Result<Response, RegistryError> {
        request.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                RegistryError::Unreachable {
                    registry: self.reference.registry().to_string(),
                    reason: root_cause(&e),
                }
            } else {
                self.failure(root_cause(&e))
            }
        })
    }

    /// Reads a whole body that may not exceed `limit`: a declared length over it is refused before
    /// reading, and reading stops as soon as the bytes pass it.
    async fn read_capped(
        &self,
        mut response: Response,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, RegistryError> {
        let too_large = || RegistryError::TooLarge {
            registry: self.reference.registry().to_string(),
            what,
            limit,
        };
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.failure(format!("its {what} broke off: {}", root_cause(&e))))?
        {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Turns a refusal into the error that says what happened to the user's reference.
    async fn refusal(&self, mut response: Response) -> RegistryError {
        let status = response.status();
        let mut body = Vec::new();
        while (body.len() as u64) < MAX_ERROR_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        body.truncate(MAX_ERROR_BYTES as usize);
        let codes: Vec<ErrorEntry> = serde_json::from_slice::<ErrorEnvelope>(&body)
            .map(|e| e.errors)
            .unwrap_or_default();
        let has = |wanted: &[&str]| codes.iter().any(|e| wanted.contains(&e.code.as_str()));
        if status == StatusCode::NOT_FOUND
            || has(&["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"])
        {
            return RegistryError::NotFound(self.reference.familiar());
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            || has(&["UNAUTHORIZED", "DENIED"])
        {
            return RegistryError::Unauthorized(self.reference.familiar());
        }
        let message = if codes.is_empty() {
            String::from_utf8_lossy(&body).chars().take(200).collect()
        } else {
            codes
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        };
        self.failure(format!("HTTP {}: {}", status.as_u16(), message.trim()))
    }

    fn failure(&self, message: String) -> RegistryError {
        RegistryError::Registry {
            registry: self.reference.registry().to_string(),
            message,
        }
    }

    fn header(&self, value: &str) -> Result<HeaderValue, RegistryError> {
        let mut header = HeaderValue::from_str(value)
            .map_err(|_| self.failure("its token is not a valid header value".into()))?;
        header.set_sensitive(true);
        Ok(header)
    }
}

#[derive(Debug, Default, Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

fn bearer_challenge(response: &Response) -> Option<BearerChallenge> {
    if response.status() != StatusCode::UNAUTHORIZED {
        return None;
    }
    let header = response.headers().get(WWW_AUTHENTICATE)?.to_str().ok()?;
    BearerChallenge::parse(header)
}

/// Where a 206 response's body starts (`Content-Range: bytes 100-199/200`).
fn range_start(response: &Response) -> Option<u64> {
    let value = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let range = value.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// `WWW-Authenticate: Bearer realm="https://auth.example/token",service="registry.example"`.
#[derive(Debug, PartialEq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
}

impl BearerChallenge {
    fn parse(header: &str) -> Option<Self> {
        let (scheme, params) = header.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let (mut realm, mut service) = (None, None);
        for (key, value) in auth_params(params) {
            match key.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value),
                "service" => service = Some(value),
                _ => {}
            }
        }
        Some(Self {
            realm: realm?,
            service,
        })
    }
}

/// `key="quoted, value",other=token` as pairs; commas inside quotes belong to the value.
fn auth_params(params: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = params.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_string();
        if key.is_empty() || chars.next_if_eq(&'=').is_none() {
            return pairs;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != ',')));
        }
        pairs.push((key, value.trim().to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_keeps_commas_inside_quotes() {
        let parsed = BearerChallenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            parsed,
            Some(BearerChallenge {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        assert_eq!(BearerChallenge::parse(r#"Basic realm="x""#), None);
        assert_eq!(BearerChallenge::parse("Bearer service=x"), None);
    }
}
