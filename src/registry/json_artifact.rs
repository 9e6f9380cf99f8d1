//! Small single-layer JSON artifacts (MCP catalogs) pushed to and pulled from a registry, beside models.
//!
//! The layout is OCI 1.1's for artifacts that are not images: an image manifest whose `artifactType` names
//! the content, the empty config (`{}`), and one layer holding the JSON. A pull is bounded like a model's
//! (the manifest through `session`, the layer never read past its declared size, which must fit the
//! caller's limit) and the layer's bytes are checked against its digest before the caller sees them.

use reqwest::header::HeaderValue;
use serde::Deserialize;

use super::session::RegistrySession;
use super::{RegistryError, RegistryOptions, classify};
use crate::artifact;
use crate::digest::Digest;
use crate::reference::ModelRef;

/// OCI's empty descriptor: the config of an artifact that needs none.
const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_CONFIG: &[u8] = b"{}";

/// What kind of artifact a reference must hold: its `artifactType` (also the layer's media type) and the
/// largest layer accepted.
#[derive(Debug, Clone, Copy)]
pub struct JsonArtifactKind {
    pub artifact_type: &'static str,
    pub max_bytes: u64,
    /// The layer's file name (`org.opencontainers.image.title`).
    pub title: &'static str,
}

/// Pushes `content` as an artifact of `kind` to `target`. Returns the manifest's digest.
pub async fn push_json_artifact(
    target: &ModelRef,
    kind: JsonArtifactKind,
    content: Vec<u8>,
    options: &RegistryOptions,
) -> Result<Digest, RegistryError> {
    if content.len() as u64 > kind.max_bytes {
        return Err(RegistryError::TooLarge {
            registry: target.registry().to_string(),
            what: "layer",
            limit: kind.max_bytes,
        });
    }
    let (client, oci_ref) = super::push::push_client(target, options).await?;

    let layer_digest = Digest::of_bytes(&content);
    let layer_size = content.len();
    let config_digest = Digest::of_bytes(EMPTY_CONFIG);
    for (bytes, digest) in [
        (EMPTY_CONFIG.to_vec(), &config_digest),
        (content, &layer_digest),
    ] {
        let exists = client
            .blob_exists(&oci_ref, &digest.to_string())
            .await
            .map_err(|e| classify(target, e))?;
        if !exists {
            client
                .push_blob(&oci_ref, bytes, &digest.to_string())
                .await
                .map_err(|e| classify(target, e))?;
        }
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": artifact::OCI_MANIFEST,
        "artifactType": kind.artifact_type,
        "config": {
            "mediaType": EMPTY_CONFIG_TYPE,
            "digest": config_digest.to_string(),
            "size": EMPTY_CONFIG.len(),
            "data": "e30=",
        },
        "layers": [{
            "mediaType": kind.artifact_type,
            "digest": layer_digest.to_string(),
            "size": layer_size,
            "annotations": {"org.opencontainers.image.title": kind.title},
        }],
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| RegistryError::Task(e.to_string()))?;
    let digest = Digest::of_bytes(&bytes);
    client
        .push_manifest_raw(
            &oci_ref,
            bytes,
            HeaderValue::from_static(artifact::OCI_MANIFEST),
        )
        .await
        .map_err(|e| classify(target, e))?;
    Ok(digest)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest {
    #[serde(default)]
    artifact_type: Option<String>,
    config: ManifestDescriptor,
    #[serde(default)]
    layers: Vec<ManifestDescriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDescriptor {
    media_type: String,
    digest: String,
    size: u64,
}

/// The layer of the artifact `reference` names, which must be of `kind`, verified against its digest.
pub async fn pull_json_artifact(
    reference: &ModelRef,
    kind: JsonArtifactKind,
    options: &RegistryOptions,
) -> Result<Vec<u8>, RegistryError> {
    let session = RegistrySession::open(reference, options).await?;
    let raw = session.manifest(&[artifact::OCI_MANIFEST]).await?;
    if let Some(expected) = reference.digest() {
        let actual = Digest::of_bytes(&raw);
        if *expected != actual {
            return Err(RegistryError::ManifestDigestMismatch {
                reference: reference.familiar(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    let not_it = |found: String| RegistryError::WrongArtifact {
        reference: reference.familiar(),
        expected: kind.artifact_type,
        found,
    };
    let manifest: ArtifactManifest = serde_json::from_slice(&raw)
        .map_err(|e| not_it(format!("a manifest that does not parse ({e})")))?;
    // Registries that predate OCI 1.1 drop `artifactType`; the layer's media type says it as well.
    let declared = manifest
        .artifact_type
        .clone()
        .unwrap_or_else(|| manifest.config.media_type.clone());
    let layer = match manifest.layers.as_slice() {
        [layer] if layer.media_type == kind.artifact_type => layer,
        _ => {
            return Err(not_it(format!(
                "{declared} with layers [{}]",
                manifest
                    .layers
                    .iter()
                    .map(|l| l.media_type.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    if layer.size > kind.max_bytes {
        return Err(RegistryError::TooLarge {
            registry: reference.registry().to_string(),
            what: "layer",
            limit: kind.max_bytes,
        });
    }
    let digest = Digest::parse(&layer.digest).map_err(|e| not_it(e.to_string()))?;
    let mut body = session.blob(&digest, 0).await?;
    let mut bytes = Vec::with_capacity(layer.size as usize);
    // Bounded by the declared size, itself within `max_bytes`.
    while let Some(chunk) = body
        .next_chunk()
        .await
        .map_err(|e| RegistryError::Registry {
            registry: reference.registry().to_string(),
            message: format!("download of {digest} broke off: {}", super::root_cause(&e)),
        })?
    {
        if (bytes.len() + chunk.len()) as u64 > layer.size {
            return Err(RegistryError::BlobOverrun {
                registry: reference.registry().to_string(),
                digest: digest.to_string(),
                declared: layer.size,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    let actual = Digest::of_bytes(&bytes);
    if actual != digest || bytes.len() as u64 != layer.size {
        return Err(RegistryError::BlobDigestMismatch {
            registry: reference.registry().to_string(),
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(bytes)
}
