//! OCI registry access: pulling models into the store and pushing them out, and small JSON artifacts
//! (MCP catalogs) both ways.
//!
//! Pulls speak the distribution API through `session` (every response bounded, credentials only for their
//! own registry); pushes go through `oci-client`. Plain HTTP is used only for registries named insecure:
//! loopback ones, as Docker does, or any with `--insecure`. Everything fetched is verified by the store
//! before it becomes visible.

mod credentials;
mod json_artifact;
mod pull;
mod push;
mod session;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;

pub use credentials::registry_auth;
pub use json_artifact::{JsonArtifactKind, pull_json_artifact, push_json_artifact};
pub use pull::pull;
pub use push::push;

use crate::artifact::ArtifactError;
use crate::reference::ModelRef;
use crate::store::StoreError;

/// Layers fetched or sent at once.
const CONCURRENT_TRANSFERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {registry}: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("model not found in registry: {0}")]
    NotFound(String),
    #[error(
        "unauthorized: the registry refused credentials for {0} (log in, or set MODEL_RUNNER_REGISTRY_HOST with _USERNAME/_PASSWORD)"
    )]
    Unauthorized(String),
    #[error("registry {registry} failed: {message}")]
    Registry { registry: String, message: String },
    #[error("manifest digest mismatch for {reference}: expected {expected}, got {actual}")]
    ManifestDigestMismatch {
        reference: String,
        expected: String,
        actual: String,
    },
    #[error("registry {registry} sent a {what} over the {limit}-byte limit")]
    TooLarge {
        registry: String,
        what: &'static str,
        limit: u64,
    },
    #[error("registry {registry} sent more than the {declared} bytes declared for blob {digest}")]
    BlobOverrun {
        registry: String,
        digest: String,
        declared: u64,
    },
    #[error("{reference} is not a {expected} artifact: the registry holds {found}")]
    WrongArtifact {
        reference: String,
        expected: &'static str,
        found: String,
    },
    #[error(
        "registry {registry} sent a blob that does not match its digest {expected} (got {actual})"
    )]
    BlobDigestMismatch {
        registry: String,
        expected: String,
        actual: String,
    },
    #[error("{0} is an image index (multi-platform list), not a model manifest")]
    IndexNotSupported(String),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Options that shape how a registry is reached.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Talk plain HTTP to every registry, not just loopback ones.
    pub insecure: bool,
}

impl RegistryOptions {
    /// Whether `reference`'s registry is spoken to over plain HTTP.
    fn plain_http(&self, reference: &ModelRef) -> bool {
        self.insecure || reference.is_loopback_registry()
    }

    fn client_for(&self, reference: &ModelRef) -> oci_client::Client {
        let protocol = if self.plain_http(reference) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        oci_client::Client::new(ClientConfig {
            protocol,
            use_monolithic_push: true,
            max_concurrent_download: CONCURRENT_TRANSFERS,
            max_concurrent_upload: CONCURRENT_TRANSFERS,
            connect_timeout: Some(std::time::Duration::from_secs(15)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        })
    }
}

/// Turns oci-client's errors into ones that say what happened to the user's reference.
fn classify(reference: &ModelRef, error: OciDistributionError) -> RegistryError {
    let registry = reference.registry().to_string();
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => {
            RegistryError::NotFound(reference.familiar())
        }
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => {
            RegistryError::Unauthorized(reference.familiar())
        }
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            RegistryError::Unreachable {
                registry,
                reason: root_cause(&e),
            }
        }
        OciDistributionError::ServerError { code, message, .. } => match code {
            404 => RegistryError::NotFound(reference.familiar()),
            401 | 403 => RegistryError::Unauthorized(reference.familiar()),
            _ => RegistryError::Registry {
                registry,
                message: format!("HTTP {code}: {message}"),
            },
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let not_found = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                        | oci_client::errors::OciErrorCode::BlobUnknown
                )
            });
            let unauthorized = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::Unauthorized
                        | oci_client::errors::OciErrorCode::Denied
                )
            });
            if not_found {
                RegistryError::NotFound(reference.familiar())
            } else if unauthorized {
                RegistryError::Unauthorized(reference.familiar())
            } else {
                RegistryError::Registry {
                    registry,
                    message: envelope
                        .errors
                        .iter()
                        .map(|e| e.message.clone())
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            }
        }
        other => RegistryError::Registry {
            registry,
            message: other.to_string(),
        },
    }
}

/// The innermost message of an error chain: "connection refused" rather than "error sending request".
fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
