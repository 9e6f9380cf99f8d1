//! `pull`: manifest, config and layers from a registry into the store, resuming interrupted blobs.
//!
//! Nothing a registry sends is trusted for its size: the manifest is capped, the manifest's declared sizes
//! are bounded and checked against free disk space before any blob is fetched, and a blob's body is never
//! read past its declared size.

use futures::StreamExt;

use super::session::{BlobBody, RegistrySession};
use super::{CONCURRENT_TRANSFERS, RegistryError, RegistryOptions};
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
    let session = RegistrySession::open(reference, options).await?;
    let raw = session
        .manifest(&[
            artifact::OCI_MANIFEST,
            artifact::DOCKER_MANIFEST_V2,
            artifact::OCI_INDEX,
        ])
        .await?;
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

    let (guard_store, blobs) = (store.clone(), manifest.blobs().cloned().collect::<Vec<_>>());
    let _guard = tokio::task::spawn_blocking(move || {
        let guard = guard_store.write_guard()?;
        guard_store.ensure_room(&blobs)?;
        Ok::<_, crate::store::StoreError>(guard)
    })
    .await
    .map_err(|e| RegistryError::Task(e.to_string()))??;

    // Every fetch runs to its end, even after another failed: a fetch cut off midway could not delete a
    // partial it found bad, and what it fetched well stays for a resumed pull.
    let fetched = futures::stream::iter(manifest.blobs().cloned())
        .map(|descriptor| {
            let (session, progress) = (&session, progress.clone());
            async move { fetch_blob(session, store, &descriptor, progress).await }
        })
        .buffer_unordered(CONCURRENT_TRANSFERS)
        .collect::<Vec<Result<(), RegistryError>>>()
        .await;
    fetched.into_iter().collect::<Result<Vec<()>, _>>()?;

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
    session: &RegistrySession,
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
        stream_into(session, descriptor, &mut partial, &id, &progress).await?;
    }
    tokio::task::spawn_blocking(move || partial.commit())
        .await
        .map_err(|e| RegistryError::Task(e.to_string()))??;
    progress(TransferEvent::Finished { id, skipped: false });
    Ok(())
}

/// Streams the rest of a blob into its partial file, stopping at the declared size. A registry that sends
/// more has lied about the blob: the partial is deleted, as it is after a digest mismatch.
async fn stream_into(
    session: &RegistrySession,
    descriptor: &Descriptor,
    partial: &mut PartialBlob,
    id: &str,
    progress: &ProgressSink,
) -> Result<(), RegistryError> {
    let size = descriptor.size;
    let mut body: BlobBody = session.blob(&descriptor.digest, partial.offset()).await?;
    if !body.resumed && partial.offset() > 0 {
        // The registry ignored our Range header: start again from zero.
        partial.restart()?;
    }
    let overrun = |partial: &mut PartialBlob| {
        partial.discard();
        RegistryError::BlobOverrun {
            registry: session.registry().to_string(),
            digest: descriptor.digest.to_string(),
            declared: size,
        }
    };
    if body
        .declared_len()
        .is_some_and(|len| len > size - partial.offset())
    {
        return Err(overrun(partial));
    }
    // Bounded by the declared size: every chunk is non-empty or ends the loop.
    while partial.offset() < size {
        let chunk = body
            .next_chunk()
            .await
            .map_err(|e| RegistryError::Registry {
                registry: session.registry().to_string(),
                message: format!(
                    "download of {} broke off: {}",
                    descriptor.digest,
                    super::root_cause(&e)
                ),
            })?;
        let Some(chunk) = chunk else {
            break;
        };
        if chunk.len() as u64 > size - partial.offset() {
            return Err(overrun(partial));
        }
        partial.write(&chunk)?;
        progress(TransferEvent::Advanced {
            id: id.to_string(),
            done: partial.offset(),
        });
    }
    Ok(())
}
