//! Pulls started by the API (`/api/pull`, `/models/create`): run in the background, their progress sent back
//! as updates that each API turns into its own line format.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::digest::Digest;
use crate::huggingface::HuggingFaceError;
use crate::progress::TransferEvent;
use crate::reference::ModelSource;
use crate::registry::{RegistryError, RegistryOptions};
use crate::store::Store;

/// One step of a background pull.
pub enum PullUpdate {
    Progress(TransferEvent),
    Finished(Result<Digest, PullError>),
}

/// Why a background pull failed, by the source it pulled from.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    HuggingFace(#[from] HuggingFaceError),
}

/// Starts pulling `source` into `store`; the last update is always `Finished`.
pub fn start(
    store: Store,
    source: ModelSource,
    options: RegistryOptions,
) -> mpsc::UnboundedReceiver<PullUpdate> {
    let (tx, rx) = mpsc::unbounded_channel();
    let progress_tx = tx.clone();
    let progress: crate::progress::ProgressSink = Arc::new(move |event| {
        let _ = progress_tx.send(PullUpdate::Progress(event));
    });
    tokio::spawn(async move {
        let result = match source {
            ModelSource::Registry(r) => crate::registry::pull(&store, &r, &options, progress)
                .await
                .map_err(PullError::from),
            ModelSource::HuggingFace(hf) => crate::huggingface::pull(&store, &hf, progress)
                .await
                .map_err(PullError::from),
        };
        let _ = tx.send(PullUpdate::Finished(result));
    });
    rx
}
