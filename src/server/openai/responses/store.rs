//! Stored responses (`store: true`, the default): what `previous_response_id`, `GET /v1/responses/{id}`
//! and its `input_items` read. One embedded redb database under the store root (`responses/responses.redb`),
//! so a restart keeps them; bounded by age and count, the oldest evicted on each insert. Every database
//! call runs on the blocking pool; a database that cannot be opened or read is a clear error, never a panic.
//! It is open only during an operation, so servers sharing a store root take turns.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Response id -> the stored response as JSON.
const RESPONSES: TableDefinition<&str, &[u8]> = TableDefinition::new("responses");
/// (created_at, id): the eviction order.
const ORDER: TableDefinition<(u64, &str), ()> = TableDefinition::new("order");

/// How long and how many responses are kept (`model serve --responses-max-age-days/--responses-max`).
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub max_age: Duration,
    pub max_responses: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_responses: 10_000,
        }
    }
}

/// One stored response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredResponse {
    /// The response object as it was returned.
    pub response: Value,
    /// This request's own input items, each with an `id` (what `input_items` lists).
    pub input: Vec<Value>,
    /// Every item the model read before this response's output (earlier turns, then `input`): with
    /// `output` appended, what a follow-up's `previous_response_id` continues.
    pub context: Vec<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResponsesStoreError {
    #[error(
        "the responses database {path} cannot be opened ({source}); move it aside to start a new one"
    )]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error(
        "the responses database {path} stayed in use by another process for {} s",
        LOCK_WAIT.as_secs()
    )]
    Busy { path: PathBuf },
    #[error("the responses database failed: {0}")]
    Database(#[from] redb::Error),
    #[error("a stored response is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("the responses database worker stopped: {0}")]
    Worker(String),
}

fn db_error(e: impl Into<redb::Error>) -> ResponsesStoreError {
    ResponsesStoreError::Database(e.into())
}

/// The database, opened for each operation and closed after it, so that several servers on one store
/// root can share it (redb locks the file while it is open); one operation at a time per process.
pub struct ResponsesStore {
    path: PathBuf,
    limits: StoreLimits,
    /// Held while the database is open; `true` once its tables exist.
    open: Mutex<bool>,
}

/// How long an operation waits for another process to close the database.
const LOCK_WAIT: Duration = Duration::from_secs(5);

impl ResponsesStore {
    pub fn new(path: PathBuf, limits: StoreLimits) -> Self {
        Self {
            path,
            limits,
            open: Mutex::new(false),
        }
    }

    /// Opens (creating it on first use) the database and runs `f` with it. Blocking.
    fn run<T>(
        &self,
        f: impl FnOnce(&Database, StoreLimits) -> Result<T, ResponsesStoreError>,
    ) -> Result<T, ResponsesStoreError> {
        let mut ready = self
            .open
            .lock()
            .map_err(|_| ResponsesStoreError::Worker("a database call panicked".into()))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ResponsesStoreError::Open {
                path: self.path.clone(),
                source: redb::DatabaseError::Storage(redb::StorageError::Io(e)),
            })?;
        }
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match Database::create(&self.path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(ResponsesStoreError::Busy {
                        path: self.path.clone(),
                    });
                }
                Err(source) => {
                    return Err(ResponsesStoreError::Open {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        };
        if !*ready {
            let txn = db.begin_write().map_err(db_error)?;
            txn.open_table(RESPONSES).map_err(db_error)?;
            txn.open_table(ORDER).map_err(db_error)?;
            txn.commit().map_err(db_error)?;
            *ready = true;
        }
        f(&db, self.limits)
    }

    /// Runs `f` with the database on the blocking pool.
    async fn with_db<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Database, StoreLimits) -> Result<T, ResponsesStoreError> + Send + 'static,
    ) -> Result<T, ResponsesStoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.run(f))
            .await
            .map_err(|e| ResponsesStoreError::Worker(e.to_string()))?
    }

    /// Stores `record` under `id`, then evicts what is past the limits.
    pub async fn put(
        self: &Arc<Self>,
        id: String,
        created_at: u64,
        record: StoredResponse,
    ) -> Result<(), ResponsesStoreError> {
        let bytes = serde_json::to_vec(&record)?;
        self.with_db(move |db, limits| {
            let txn = db.begin_write().map_err(db_error)?;
            {
                let mut responses = txn.open_table(RESPONSES).map_err(db_error)?;
                let mut order = txn.open_table(ORDER).map_err(db_error)?;
                responses
                    .insert(id.as_str(), bytes.as_slice())
                    .map_err(db_error)?;
                order
                    .insert((created_at, id.as_str()), ())
                    .map_err(db_error)?;
                let cutoff = unix_now().saturating_sub(limits.max_age.as_secs());
                loop {
                    let over = order.len().map_err(db_error)? > limits.max_responses as u64;
                    let oldest = order.first().map_err(db_error)?.map(|(key, _)| {
                        let (at, id) = key.value();
                        (at, id.to_string())
                    });
                    let Some((at, oldest)) = oldest else { break };
                    if !over && at >= cutoff {
                        break;
                    }
                    order.remove((at, oldest.as_str())).map_err(db_error)?;
                    responses.remove(oldest.as_str()).map_err(db_error)?;
                    tracing::debug!(id = %oldest, "evicted a stored response");
                }
            }
            txn.commit().map_err(db_error)?;
            Ok(())
        })
        .await
    }

    /// The response stored under `id`, unless it is missing or past its age.
    pub async fn get(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<Option<StoredResponse>, ResponsesStoreError> {
        let id = id.to_string();
        self.with_db(move |db, limits| {
            let txn = db.begin_read().map_err(db_error)?;
            let responses = txn.open_table(RESPONSES).map_err(db_error)?;
            let Some(bytes) = responses.get(id.as_str()).map_err(db_error)? else {
                return Ok(None);
            };
            let record: StoredResponse = serde_json::from_slice(bytes.value())?;
            let created = record.response["created_at"].as_u64().unwrap_or(0);
            let cutoff = unix_now().saturating_sub(limits.max_age.as_secs());
            Ok((created >= cutoff).then_some(record))
        })
        .await
    }

    /// Deletes `id`; `false` when there was none.
    pub async fn delete(self: &Arc<Self>, id: &str) -> Result<bool, ResponsesStoreError> {
        let id = id.to_string();
        self.with_db(move |db, _| {
            let txn = db.begin_write().map_err(db_error)?;
            let found = {
                let mut responses = txn.open_table(RESPONSES).map_err(db_error)?;
                let mut order = txn.open_table(ORDER).map_err(db_error)?;
                let created = responses
                    .remove(id.as_str())
                    .map_err(db_error)?
                    .map(|bytes| {
                        serde_json::from_slice::<Value>(bytes.value())
                            .ok()
                            .and_then(|v| v["response"]["created_at"].as_u64())
                            .unwrap_or(0)
                    });
                if let Some(created) = created {
                    order.remove((created, id.as_str())).map_err(db_error)?;
                }
                created.is_some()
            };
            txn.commit().map_err(db_error)?;
            Ok(found)
        })
        .await
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(id: &str, created_at: u64) -> StoredResponse {
        StoredResponse {
            response: json!({"id": id, "created_at": created_at}),
            input: vec![json!({"type": "message"})],
            context: Vec::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn responses_survive_a_reopen_and_the_oldest_are_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses").join("responses.redb");
        let limits = StoreLimits {
            max_age: Duration::from_secs(3600),
            max_responses: 2,
        };
        let now = unix_now();
        {
            let store = Arc::new(ResponsesStore::new(path.clone(), limits));
            store
                .put("a".into(), now - 2, record("a", now - 2))
                .await
                .unwrap();
            store
                .put("b".into(), now - 1, record("b", now - 1))
                .await
                .unwrap();
            store.put("c".into(), now, record("c", now)).await.unwrap();
            // Older than max_age: evicted by the next insert, never served.
            store
                .put("old".into(), now - 7200, record("old", now - 7200))
                .await
                .unwrap();
            assert!(store.get("old").await.unwrap().is_none());
        }
        let store = Arc::new(ResponsesStore::new(path.clone(), limits));
        // Another server on the same root takes turns with this one.
        let other = Arc::new(ResponsesStore::new(path, limits));
        let (mine, theirs) = tokio::join!(store.get("b"), other.get("b"));
        assert!(mine.unwrap().is_some() && theirs.unwrap().is_some());
        assert!(store.get("a").await.unwrap().is_none(), "evicted by count");
        assert_eq!(store.get("b").await.unwrap().unwrap().response["id"], "b");
        assert!(store.delete("c").await.unwrap());
        assert!(!store.delete("c").await.unwrap());
        assert!(store.get("c").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_corrupt_database_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.redb");
        std::fs::write(&path, b"this is not a database, just some bytes").unwrap();
        let store = Arc::new(ResponsesStore::new(path, StoreLimits::default()));
        let error = store.get("resp_1").await.unwrap_err();
        assert!(error.to_string().contains("cannot be opened"), "{error}");
    }
}
