//! `push`: a stored model's blobs and manifest to a registry, streaming each blob from disk.

use futures::{StreamExt, TryStreamExt};
use reqwest::header::HeaderValue;
use tokio::io::AsyncReadExt;

use super::session::RegistrySession;
use super::{CONCURRENT_TRANSFERS, RegistryError, RegistryOptions, classify};
use crate::artifact::{self, Descriptor};
use crate::digest::Digest;
use crate::progress::{ProgressSink, TransferEvent};
use crate::reference::ModelRef;
use crate::store::{LocalModel, Store};

const READ_CHUNK: usize = 4 << 20;

/// Pushes `model` to `target`. Blobs the registry already has are skipped.
pub async fn push(
    store: &Store,
    model: &LocalModel,
    target: &ModelRef,
    options: &RegistryOptions,
    progress: ProgressSink,
) -> Result<Digest, RegistryError> {
    let (client, oci_ref) = push_client(target, options).await?;

    futures::stream::iter(model.manifest.blobs().cloned())
        .map(|descriptor| {
            let (client, oci_ref, progress) = (&client, &oci_ref, progress.clone());
            async move { push_blob(client, oci_ref, target, store, &descriptor, progress).await }
        })
        .buffer_unordered(CONCURRENT_TRANSFERS)
        .try_collect::<Vec<()>>()
        .await?;

    // The stored bytes, not a re-serialisation: the digest must stay the model's ID.
    let manifest_bytes = store.manifest_bytes(&model.id)?;
    let digest = Digest::of_bytes(&manifest_bytes);
    client
        .push_manifest_raw(
            &oci_ref,
            manifest_bytes,
            HeaderValue::from_static(artifact::OCI_MANIFEST),
        )
        .await
        .map_err(|e| classify(target, e))?;
    progress(TransferEvent::Note(format!(
        "{}: pushed manifest {digest}",
        target.familiar()
    )));
    Ok(digest)
}

/// An oci-client authorised to push to `target` (credentials withheld from a realm that may not have
/// them), and the reference it pushes under.
pub(super) async fn push_client(
    target: &ModelRef,
    options: &RegistryOptions,
) -> Result<(oci_client::Client, oci_client::Reference), RegistryError> {
    let client = options.client_for(target);
    let oci_ref = target.without_digest().to_oci();
    let auth = RegistrySession::push_auth(target, options).await?;
    client
        .auth(&oci_ref, &auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(|e| classify(target, e))?;
    Ok((client, oci_ref))
}

async fn push_blob(
    client: &oci_client::Client,
    oci_ref: &oci_client::Reference,
    target: &ModelRef,
    store: &Store,
    descriptor: &Descriptor,
    progress: ProgressSink,
) -> Result<(), RegistryError> {
    let id = descriptor.digest.short().to_string();
    let exists = client
        .blob_exists(oci_ref, &descriptor.digest.to_string())
        .await
        .map_err(|e| classify(target, e))?;
    if exists {
        progress(TransferEvent::Finished { id, skipped: true });
        return Ok(());
    }
    let path = store.blob_path(&descriptor.digest);
    let file =
        tokio::fs::File::open(&path)
            .await
            .map_err(|source| crate::store::StoreError::Io {
                path: path.display().to_string(),
                source,
            })?;
    progress(TransferEvent::Started {
        id: id.clone(),
        total: descriptor.size,
        done: 0,
    });
    let sent_progress = progress.clone();
    let sent_id = id.clone();
    let chunks = futures::stream::unfold((file, 0u64), move |(mut file, sent)| {
        let (progress, id) = (sent_progress.clone(), sent_id.clone());
        async move {
            let mut buf = vec![0u8; READ_CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    let sent = sent + n as u64;
                    progress(TransferEvent::Advanced { id, done: sent });
                    Some((Ok(bytes::Bytes::from(buf)), (file, sent)))
                }
                Err(e) => Some((
                    Err(oci_client::errors::OciDistributionError::IoError(e)),
                    (file, sent),
                )),
            }
        }
    });
    client
        .push_blob_stream(
            oci_ref,
            chunks,
            &descriptor.digest.to_string(),
            Some(descriptor.size),
        )
        .await
        .map_err(|e| classify(target, e))?;
    progress(TransferEvent::Finished { id, skipped: false });
    Ok(())
}
