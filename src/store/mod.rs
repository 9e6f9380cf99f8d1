//! The local model store: one root directory, content-addressed, the only code that writes under it.
//!
//! ```text
//! $MODEL_RUNNER_HOME/
//!   blobs/sha256/<hex>        config blobs and layers (GGUF, licenses, templates), verified
//!   manifests/sha256/<hex>    model manifests, by digest
//!   incoming/                 partial downloads (kept for resume, collected after a day) and their locks
//!   index.json                reference -> manifest digest; model ID -> runtime settings
//!   index.lock, gc.lock       advisory locks
//! ```
//!
//! Invariant: a blob or manifest under `blobs/` or `manifests/` has been verified against its digest and
//! was made visible by an atomic rename. Garbage collection takes `gc.lock` exclusively; writers hold it
//! shared, so a blob that a pull just stored is never collected before its manifest is indexed.

mod blobs;
mod index;
pub mod settings;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use blobs::FileLock;
pub use blobs::{BlobIngest, PartialBlob};
use index::ReferenceIndex;
pub use settings::ModelSettings;

use crate::artifact::{ArtifactError, ConfigFile, Descriptor, Manifest};
use crate::digest::Digest;
use crate::reference::{ModelRef, ModelSource, ReferenceError};

/// The environment variable that moves the store.
pub const HOME_ENV: &str = "MODEL_RUNNER_HOME";

/// A partial download untouched this long is abandoned: garbage collection deletes it.
pub const STALE_PARTIAL_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Bytes free for an unprivileged writer on the file system holding `path`.
pub fn available_bytes(path: &Path) -> Result<u64, StoreError> {
    blobs::available_bytes(path)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("model not found: {0}")]
    NotFound(String),
    #[error(
        "{reference} is {count} references of one model ({names}); name one, or use --force to remove them all"
    )]
    Ambiguous {
        reference: String,
        count: usize,
        names: String,
    },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "not enough disk space under {path}: the download needs {needed} more bytes, {available} are free"
    )]
    NoSpace {
        path: String,
        needed: u64,
        available: u64,
    },
    #[error("blob {0} is missing from the store")]
    MissingBlob(String),
    #[error("store file {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

pub(crate) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A model in the store: its manifest, its config and the references that name it.
#[derive(Debug, Clone)]
pub struct LocalModel {
    /// The manifest digest, which is the model's ID.
    pub id: Digest,
    pub references: Vec<ModelRef>,
    pub manifest: Manifest,
    pub config: ConfigFile,
    /// What `model configure` set for it.
    pub settings: ModelSettings,
}

impl LocalModel {
    /// Total bytes of the model's layers.
    pub fn size(&self) -> u64 {
        self.manifest.layers.iter().map(|l| l.size).sum()
    }

    pub fn created(&self) -> Option<DateTime<Utc>> {
        self.config.descriptor.created
    }

    /// Names as `ls` shows them (`ai/smollm2:latest`).
    pub fn familiar_names(&self) -> Vec<String> {
        self.references.iter().map(ModelRef::familiar).collect()
    }
}

/// What `rm` did.
#[derive(Debug, Default)]
pub struct Removal {
    pub untagged: Vec<String>,
    pub deleted_models: Vec<Digest>,
    pub freed_bytes: u64,
}

/// What `df` reports.
#[derive(Debug, Default, Serialize)]
pub struct DiskUsage {
    pub models: usize,
    pub blobs: usize,
    pub blob_bytes: u64,
    pub partial_bytes: u64,
    pub root: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    blobs_dir: PathBuf,
    manifests_dir: PathBuf,
    incoming_dir: PathBuf,
}

impl Store {
    /// The store root: `$MODEL_RUNNER_HOME`, else `model-runner` under the user's data directory.
    pub fn default_root() -> PathBuf {
        if let Some(home) = std::env::var_os(HOME_ENV).filter(|h| !h.is_empty()) {
            return PathBuf::from(home);
        }
        dirs::data_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("model-runner")
    }

    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let store = Self {
            blobs_dir: root.join("blobs").join("sha256"),
            manifests_dir: root.join("manifests").join("sha256"),
            incoming_dir: root.join("incoming"),
            root,
        };
        for dir in [&store.blobs_dir, &store.manifests_dir, &store.incoming_dir] {
            fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir.join(digest.hex())
    }

    /// Held while writing blobs and indexing them; garbage collection waits for every holder.
    pub fn write_guard(&self) -> Result<FileLock, StoreError> {
        FileLock::shared(&self.root.join("gc.lock"))
    }

    pub fn begin_blob(&self, digest: &Digest, size: u64) -> Result<BlobIngest, StoreError> {
        blobs::begin(&self.blobs_dir, &self.incoming_dir, digest, size)
    }

    /// Refuses a download that cannot fit: the bytes still missing of `blobs` (less what partial files
    /// already hold) against the free space of the store's file system.
    pub fn ensure_room<'a>(
        &self,
        blobs: impl IntoIterator<Item = &'a Descriptor>,
    ) -> Result<(), StoreError> {
        let mut needed = 0u64;
        for blob in blobs {
            if fs::metadata(self.blob_path(&blob.digest)).is_ok_and(|m| m.len() == blob.size) {
                continue;
            }
            let held = fs::metadata(blobs::partial_path(&self.incoming_dir, &blob.digest))
                .map_or(0, |m| m.len())
                .min(blob.size);
            needed = needed.saturating_add(blob.size - held);
        }
        let available = available_bytes(&self.incoming_dir)?;
        if needed > available {
            return Err(StoreError::NoSpace {
                path: self.root.display().to_string(),
                needed,
                available,
            });
        }
        Ok(())
    }

    /// Copies a local file into the store; `on_progress` hears the bytes copied so far.
    pub fn import_file(
        &self,
        source: &Path,
        on_progress: &mut dyn FnMut(u64),
    ) -> Result<(Digest, u64), StoreError> {
        blobs::import_file(&self.blobs_dir, &self.incoming_dir, source, on_progress)
    }

    pub fn put_blob_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        blobs::put_bytes(&self.blobs_dir, &self.incoming_dir, bytes)
    }

    /// Reads a small blob whole and checks its digest again: configs and templates are read rarely.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::MissingBlob(digest.to_string()),
            _ => io_error(&path)(e),
        })?;
        let actual = Digest::of_bytes(&bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// A stored manifest's exact bytes.
    pub fn manifest_bytes(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.manifests_dir.join(digest.hex());
        fs::read(&path).map_err(io_error(&path))
    }

    fn read_manifest(&self, digest: &Digest) -> Result<Manifest, StoreError> {
        Ok(Manifest::parse_model(&self.manifest_bytes(digest)?)?)
    }

    /// Indexes a model whose blobs are all stored: writes its manifest and points `reference` at it.
    pub fn add_model(
        &self,
        reference: &ModelRef,
        manifest_bytes: &[u8],
    ) -> Result<Digest, StoreError> {
        let manifest = Manifest::parse_model(manifest_bytes)?;
        for blob in manifest.blobs() {
            if !fs::metadata(self.blob_path(&blob.digest)).is_ok_and(|m| m.len() == blob.size) {
                return Err(StoreError::MissingBlob(blob.digest.to_string()));
            }
        }
        let digest = blobs::put_bytes(&self.manifests_dir, &self.incoming_dir, manifest_bytes)?;
        self.update_index(|index| {
            index
                .references
                .insert(reference.to_string(), digest.clone());
            Ok(())
        })?;
        Ok(digest)
    }

    /// Reads, changes and atomically rewrites the index under its lock.
    fn update_index<T>(
        &self,
        change: impl FnOnce(&mut ReferenceIndex) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = FileLock::exclusive(&self.root.join("index.lock"))?;
        let path = self.root.join("index.json");
        let mut index = ReferenceIndex::load(&path)?;
        let out = change(&mut index)?;
        let live: BTreeSet<&Digest> = index.references.values().collect();
        let settings = std::mem::take(&mut index.settings);
        index.settings = settings
            .into_iter()
            .filter(|(id, s)| live.contains(id) && !s.is_empty())
            .collect();
        index.version = 1;
        blobs::write_atomically(&self.incoming_dir, &path, &index.to_json())?;
        Ok(out)
    }

    fn load_index(&self) -> Result<ReferenceIndex, StoreError> {
        ReferenceIndex::load(&self.root.join("index.json"))
    }

    fn load_model(
        &self,
        index: &ReferenceIndex,
        id: Digest,
        references: &[String],
    ) -> Result<LocalModel, StoreError> {
        let manifest = self.read_manifest(&id)?;
        let config_bytes = self.read_blob(&manifest.config.digest)?;
        let config = ConfigFile::parse(&manifest.config.media_type, &config_bytes)?;
        let mut references: Vec<ModelRef> = references
            .iter()
            .filter_map(|r| ModelRef::parse(r).ok())
            .collect();
        references.sort_by_key(|r| r.to_string());
        Ok(LocalModel {
            settings: index.settings.get(&id).cloned().unwrap_or_default(),
            id,
            references,
            manifest,
            config,
        })
    }

    /// Every model in the store, newest first.
    pub fn list(&self) -> Result<Vec<LocalModel>, StoreError> {
        let index = self.load_index()?;
        let mut models = index
            .by_manifest()
            .into_iter()
            .map(|(id, refs)| self.load_model(&index, id, &refs))
            .collect::<Result<Vec<_>, _>>()?;
        models.sort_by(|a, b| b.created().cmp(&a.created()).then(a.id.cmp(&b.id)));
        Ok(models)
    }

    /// Finds a model by reference (`smollm2`, `ai/smollm2:latest`, a digest reference), digest, or ID prefix.
    pub fn resolve(&self, input: &str) -> Result<LocalModel, StoreError> {
        let index = self.load_index()?;
        let id = self.resolve_id(&index, input)?;
        let refs = index.by_manifest().remove(&id).unwrap_or_default();
        self.load_model(&index, id, &refs)
    }

    /// Changes the runtime settings of the model `input` names: the fields `update` sets replace the
    /// stored ones (all of them go first with `reset`). Returns the model's ID and its settings now.
    pub fn configure(
        &self,
        input: &str,
        update: &ModelSettings,
        reset: bool,
    ) -> Result<(Digest, ModelSettings), StoreError> {
        self.update_index(|index| {
            let id = self.resolve_id(index, input)?;
            let entry = index.settings.entry(id.clone()).or_default();
            if reset {
                *entry = ModelSettings::default();
            }
            *entry = entry.merged(update);
            Ok((id, entry.clone()))
        })
    }

    fn resolve_id(&self, index: &ReferenceIndex, input: &str) -> Result<Digest, StoreError> {
        let not_found = || StoreError::NotFound(input.to_string());
        if let Ok(digest) = Digest::parse(input) {
            return index
                .references
                .values()
                .find(|d| **d == digest)
                .cloned()
                .ok_or_else(not_found);
        }
        if let Some(id) = self.id_by_prefix(index, input) {
            return Ok(id);
        }
        let reference = match ModelSource::parse(input)? {
            ModelSource::Registry(r) => r,
            ModelSource::HuggingFace(hf) => hf.store_ref(),
        };
        if let Some(digest) = reference.digest() {
            // A digest reference names the manifest whatever the repository says.
            return index
                .references
                .values()
                .find(|d| *d == digest)
                .cloned()
                .ok_or_else(not_found);
        }
        index
            .references
            .get(&reference.to_string())
            .cloned()
            .ok_or_else(not_found)
    }

    /// A hex prefix of a model ID, at least 12 digits as `ls` shows, and unique.
    fn id_by_prefix(&self, index: &ReferenceIndex, input: &str) -> Option<Digest> {
        let prefix = input.strip_prefix("sha256:").unwrap_or(input);
        if prefix.len() < 12 || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let ids: BTreeSet<&Digest> = index
            .references
            .values()
            .filter(|d| d.hex().starts_with(prefix))
            .collect();
        match ids.len() {
            1 => ids.into_iter().next().cloned(),
            _ => None,
        }
    }

    /// Points `target` at the model `source` names.
    pub fn tag(&self, source: &str, target: &ModelRef) -> Result<Digest, StoreError> {
        let _guard = self.write_guard()?;
        self.update_index(|index| {
            let id = self.resolve_id(index, source)?;
            index.references.insert(target.to_string(), id.clone());
            Ok(id)
        })
    }

    /// Removes a reference, or with an ID every reference of that model (`force` needed for more than one),
    /// then collects what nothing references any more.
    pub fn remove(&self, input: &str, force: bool) -> Result<Removal, StoreError> {
        let untagged = self.update_index(|index| {
            let id = self.resolve_id(index, input)?;
            let names_reference = match ModelSource::parse(input) {
                Ok(ModelSource::Registry(r)) if r.digest().is_none() => {
                    Some(r.to_string()).filter(|r| index.references.contains_key(r))
                }
                Ok(ModelSource::HuggingFace(hf)) => {
                    Some(hf.store_ref().to_string()).filter(|r| index.references.contains_key(r))
                }
                _ => None,
            };
            let doomed: Vec<String> = match names_reference {
                Some(reference) => vec![reference],
                None => {
                    let all = index.by_manifest().remove(&id).unwrap_or_default();
                    if all.len() > 1 && !force {
                        return Err(StoreError::Ambiguous {
                            reference: input.to_string(),
                            count: all.len(),
                            names: all.join(", "),
                        });
                    }
                    all
                }
            };
            for reference in &doomed {
                index.references.remove(reference);
            }
            Ok(doomed)
        })?;
        let (deleted_models, freed_bytes) = self.collect_garbage()?;
        Ok(Removal {
            untagged,
            deleted_models,
            freed_bytes,
        })
    }

    /// Deletes manifests no reference names, blobs no manifest names, and partial downloads abandoned for
    /// `STALE_PARTIAL_AGE`. Returns the manifests that went and the bytes freed.
    pub fn collect_garbage(&self) -> Result<(Vec<Digest>, u64), StoreError> {
        let _gc = FileLock::exclusive(&self.root.join("gc.lock"))?;
        let index = self.load_index()?;
        let live_manifests: BTreeSet<Digest> = index.references.values().cloned().collect();
        let mut live_blobs = BTreeSet::new();
        let mut deleted = Vec::new();
        let mut freed = 0;
        for digest in self.digests_in(&self.manifests_dir)? {
            if live_manifests.contains(&digest) {
                let manifest = self.read_manifest(&digest)?;
                live_blobs.extend(manifest.blobs().map(|b| b.digest.clone()));
            } else {
                let path = self.manifests_dir.join(digest.hex());
                freed += fs::metadata(&path).map_or(0, |m| m.len());
                fs::remove_file(&path).map_err(io_error(&path))?;
                deleted.push(digest);
            }
        }
        for digest in self.digests_in(&self.blobs_dir)? {
            if !live_blobs.contains(&digest) {
                let path = self.blob_path(&digest);
                freed += fs::metadata(&path).map_or(0, |m| m.len());
                fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
        freed += blobs::remove_stale_partials(&self.incoming_dir, STALE_PARTIAL_AGE)?;
        Ok((deleted, freed))
    }

    fn digests_in(&self, dir: &Path) -> Result<Vec<Digest>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            if let Ok(digest) =
                Digest::parse(&format!("sha256:{}", entry.file_name().to_string_lossy()))
            {
                out.push(digest);
            }
        }
        Ok(out)
    }

    /// Models and their blobs, and apart from them the partial downloads in `incoming/` (live or not),
    /// which are not model data.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let index = self.load_index()?;
        let mut usage = DiskUsage {
            models: index.by_manifest().len(),
            root: self.root.clone(),
            ..Default::default()
        };
        for entry in fs::read_dir(&self.blobs_dir).map_err(io_error(&self.blobs_dir))? {
            let meta = entry
                .and_then(|e| e.metadata())
                .map_err(io_error(&self.blobs_dir))?;
            usage.blobs += 1;
            usage.blob_bytes += meta.len();
        }
        for entry in fs::read_dir(&self.incoming_dir).map_err(io_error(&self.incoming_dir))? {
            let entry = entry.map_err(io_error(&self.incoming_dir))?;
            if entry.file_name().to_string_lossy().ends_with(".partial") {
                usage.partial_bytes += entry.metadata().map_or(0, |m| m.len());
            }
        }
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, by: std::time::Duration) {
        let file = fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_modified(std::time::SystemTime::now() - by)
            .unwrap();
    }

    #[test]
    fn gc_removes_an_abandoned_partial_but_not_one_a_pull_holds() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let (abandoned, live, fresh) = (
            Digest::of_bytes(b"abandoned"),
            Digest::of_bytes(b"live"),
            Digest::of_bytes(b"fresh"),
        );
        for digest in [&abandoned, &live, &fresh] {
            let BlobIngest::Partial(mut partial) = store.begin_blob(digest, 100).unwrap() else {
                panic!("nothing stored yet");
            };
            partial.write(&[7; 40]).unwrap();
        }
        // The live pull holds its blob's lock while GC runs.
        let BlobIngest::Partial(held) = store.begin_blob(&live, 100).unwrap() else {
            panic!("the partial is still there");
        };
        assert_eq!(held.offset(), 40);
        let partial = |d: &Digest| blobs::partial_path(&store.incoming_dir, d);
        let day = STALE_PARTIAL_AGE + std::time::Duration::from_secs(60);
        age(&partial(&abandoned), day);
        age(&partial(&live), day);

        let (_, freed) = store.collect_garbage().unwrap();
        assert_eq!(freed, 40);
        assert!(!partial(&abandoned).exists());
        assert!(partial(&live).exists(), "a held partial was collected");
        assert!(partial(&fresh).exists(), "a recent partial was collected");
        assert_eq!(store.disk_usage().unwrap().partial_bytes, 80);

        // Once the pull lets go, its partial is as abandoned as any.
        drop(held);
        store.collect_garbage().unwrap();
        assert!(!partial(&live).exists());
    }

    #[test]
    fn a_download_larger_than_the_free_space_is_refused_before_it_starts() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let free = available_bytes(root.path()).unwrap();
        let blob = |size| Descriptor {
            media_type: crate::artifact::GGUF_LAYER.into(),
            digest: Digest::of_bytes(b"big"),
            size,
            annotations: None,
        };
        assert!(store.ensure_room([&blob(1 << 20)]).is_ok());
        assert!(matches!(
            store.ensure_room([&blob(free + (1 << 30))]),
            Err(StoreError::NoSpace { .. })
        ));
    }
}
