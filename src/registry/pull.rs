//! `pull`: manifest, config and layers from a registry into the store, resuming interrupted blobs.

use futures::{StreamExt, TryStreamExt};
use oci_client::client::BlobResponse;
use oci_client::manifest::OciDescriptor;

use super::{CONCURRENT_TRANSFERS, RegistryError, RegistryOptions, classify, registry_auth};
use crate::artifact::{self, Descriptor, Manifest};
use crate::digest::Digest;
use crate::progress::{ProgressSink, TransferEvent};
use crate::reference::ModelRef;
use crate::store::{BlobIngest, PartialBlob, Store};

/// Pulls `reference` into the store and indexes it under that reference. Returns the manifest digest.
pub async fn pull(
    store: &Store,
    reference: &ModelRef,
    options: &RegistryOptions,
    progress: ProgressSink,
) -> Result<Digest, RegistryError> {
    let client = options.client_for(reference);
    let oci_ref = reference.to_oci();
    let auth = registry_auth(reference.registry());
    let (raw, _) = client
        .pull_manifest_raw(
            &oci_ref,
            &auth,
            &[
                artifact::OCI_MANIFEST,
                artifact::DOCKER_MANIFEST_V2,
                artifact::OCI_INDEX,
            ],
        )
        .await
        .map_err(|e| classify(reference, e))?;
    let manifest_digest = Digest::of_bytes(&raw);
    if let Some(expected) = reference.digest()
        && *expected != manifest_digest
    {
        return Err(RegistryError::ManifestDigestMismatch {
            reference: reference.familiar(),
            expected: expected.to_string(),
            actual: manifest_digest.to_string(),
        });
    }
    if serde_json::from_slice::<serde_json::Value>(&raw)
        .ok()
        .and_then(|v| v.get("manifests").cloned())
        .is_some()
    {
        return Err(RegistryError::IndexNotSupported(reference.familiar()));
    }
    let manifest = Manifest::parse_model(&raw)?;
    progress(TransferEvent::Note(format!(
        "{}: manifest {}",
        reference.familiar(),
        manifest_digest
    )));

    let guard_store = store.clone();
    let _guard = tokio::task::spawn_blocking(move || guard_store.write_guard())
        .await
        .map_err(|e| RegistryError::Task(e.to_string()))??;

    futures::stream::iter(manifest.blobs().cloned())
        .map(|descriptor| {
            let (client, oci_ref, progress) = (&client, &oci_ref, progress.clone());
            async move { fetch_blob(client, oci_ref, store, &descriptor, progress).await }
        })
        .buffer_unordered(CONCURRENT_TRANSFERS)
        .try_collect::<Vec<()>>()
        .await?;

    // Indexed by its tag when it has one, else by digest.
    let indexed_as = match reference.tag() {
        Some(_) => reference.without_digest(),
        None => reference.with_digest(manifest_digest.clone()),
    };
    let store = store.clone();
    let raw = raw.to_vec();
    tokio::task::spawn_blocking(move || store.add_model(&indexed_as, &raw))
        .await
        .map_err(|e| RegistryError::Task(e.to_string()))??;
    Ok(manifest_digest)
}

/// Fetches one blob into the store unless it is there already, resuming from a partial file.
async fn fetch_blob(
    client: &oci_client::Client,
    oci_ref: &oci_client::Reference,
    store: &Store,
    descriptor: &Descriptor,
    progress: ProgressSink,
) -> Result<(), RegistryError> {
    let id = descriptor.digest.short().to_string();
    let (digest, size) = (descriptor.digest.clone(), descriptor.size);
    let blob_store = store.clone();
    // Taking the blob's lock may wait for another process: keep that off the async threads.
    let ingest = tokio::task::spawn_blocking(move || blob_store.begin_blob(&digest, size))
        .await
        .map_err(|e| RegistryError::Task(e.to_string()))??;
    let mut partial = match ingest {
        BlobIngest::Present => {
            progress(TransferEvent::Finished { id, skipped: true });
            return Ok(());
        }
        BlobIngest::Partial(partial) => partial,
    };
    progress(TransferEvent::Started {
        id: id.clone(),
        total: size,
        done: partial.offset(),
    });
    if partial.offset() < size {
        let result = stream_into(client, oci_ref, descriptor, &mut partial, &id, &progress).await;
        // With every byte received, the digest check below is the judge, whatever the stream said last.
        if partial.offset() < size {
            result?;
        }
    }
    tokio::task::spawn_blocking(move || partial.commit())
        .await
        .map_err(|e| RegistryError::Task(e.to_string()))??;
    progress(TransferEvent::Finished { id, skipped: false });
    Ok(())
}

async fn stream_into(
    client: &oci_client::Client,
    oci_ref: &oci_client::Reference,
    descriptor: &Descriptor,
    partial: &mut PartialBlob,
    id: &str,
    progress: &ProgressSink,
) -> Result<(), RegistryError> {
    let layer = OciDescriptor {
        media_type: descriptor.media_type.clone(),
        digest: descriptor.digest.to_string(),
        size: descriptor.size as i64,
        ..Default::default()
    };
    let reference = ModelRef::parse(&oci_ref.whole()).ok();
    let classify_here = |e| match &reference {
        Some(r) => classify(r, e),
        None => RegistryError::Registry {
            registry: oci_ref.registry().to_string(),
            message: e.to_string(),
        },
    };
    let response = client
        .pull_blob_stream_partial(oci_ref, &layer, partial.offset(), None)
        .await
        .map_err(classify_here)?;
    let mut stream = match response {
        BlobResponse::Partial(stream) => stream,
        BlobResponse::Full(stream) => {
            // The registry ignored our Range header: start again from zero.
            if partial.offset() > 0 {
                partial.restart()?;
            }
            stream
        }
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Registry {
            registry: oci_ref.registry().to_string(),
            message: format!(
                "download of {} broke off: {}",
                descriptor.digest,
                super::root_cause(&e)
            ),
        })?;
        partial.write(&chunk)?;
        progress(TransferEvent::Advanced {
            id: id.to_string(),
            done: partial.offset(),
        });
    }
    Ok(())
}
