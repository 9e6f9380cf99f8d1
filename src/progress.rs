//! Transfer progress, reported as events so that the CLI can draw bars, print lines, or (in the server)
//! stream JSON progress, from one source.

use std::sync::Arc;

/// One step of a transfer of one item (a blob, a file).
#[derive(Debug, Clone)]
pub enum TransferEvent {
    /// Work on `id` begins; `done` bytes of `total` are already held (a resumed download).
    Started { id: String, total: u64, done: u64 },
    /// `done` bytes of `id` are now held.
    Advanced { id: String, done: u64 },
    /// `id` is complete; `skipped` when nothing had to move because it was already there.
    Finished { id: String, skipped: bool },
    /// A line worth telling the user (`Resolved ai/smollm2:latest to sha256:...`).
    Note(String),
}

/// Where events go. Cheap to clone; called from any task.
pub type ProgressSink = Arc<dyn Fn(TransferEvent) + Send + Sync>;

/// A sink that drops everything.
pub fn silent() -> ProgressSink {
    Arc::new(|_| {})
}
