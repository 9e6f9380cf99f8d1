//! The reference index: which reference (tag or digest reference) names which manifest, and the runtime
//! settings of the models it names.
//!
//! One JSON file, rewritten atomically under an exclusive lock for every change.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::settings::ModelSettings;
use crate::digest::Digest;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct ReferenceIndex {
    #[serde(default)]
    pub version: u32,
    /// Full reference (`docker.io/ai/smollm2:latest`) -> manifest digest.
    #[serde(default)]
    pub references: BTreeMap<String, Digest>,
    /// Model ID -> its runtime settings (`model configure`); dropped with the model's last reference.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<Digest, ModelSettings>,
}

impl ReferenceIndex {
    pub(crate) fn load(path: &Path) -> Result<Self, StoreError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                version: 1,
                ..Default::default()
            }),
            Err(e) => Err(super::io_error(path)(e)),
        }
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// References grouped by the manifest they name.
    pub(crate) fn by_manifest(&self) -> BTreeMap<Digest, Vec<String>> {
        let mut grouped: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for (reference, digest) in &self.references {
            grouped
                .entry(digest.clone())
                .or_default()
                .push(reference.clone());
        }
        grouped
    }
}
