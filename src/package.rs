//! `package`: turns GGUF files (plus licenses and a chat template) into a model artifact in the store.
//!
//! The config is filled from the GGUF header itself: architecture, parameter count, quantization, context
//! length and the header's scalar metadata, as Docker Model Runner writes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::artifact::{
    self, ConfigDescriptor, ConfigFile, Descriptor, Manifest, ModelConfig, RootFs,
};
use crate::digest::Digest;
use crate::progress::{ProgressSink, TransferEvent};
use crate::reference::ModelRef;
use crate::store::{Store, StoreError};
use models::gguf::{GgufError, GgufHeader, format_parameter_count};

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: shard {index} of {count} is missing")]
    MissingShard {
        path: String,
        index: u64,
        count: u64,
    },
}

/// What goes into a model artifact.
#[derive(Debug, Clone, Default)]
pub struct PackageSpec {
    /// The GGUF file, or any shard of a split model (its siblings are found by name).
    pub gguf: PathBuf,
    pub licenses: Vec<PathBuf>,
    pub chat_template: Option<PathBuf>,
    /// Overrides the context length the GGUF declares.
    pub context_size: Option<u64>,
}

/// Packages `spec` into the store under `reference` and returns the manifest digest (the model ID).
pub fn package(
    store: &Store,
    spec: &PackageSpec,
    reference: &ModelRef,
    progress: &ProgressSink,
) -> Result<Digest, PackageError> {
    let first = GgufHeader::read_file(&spec.gguf)?;
    let shard_paths = shard_paths(&spec.gguf, first.split_count())?;
    let mut headers = vec![first];
    for path in shard_paths.iter().skip(1) {
        headers.push(GgufHeader::read_file(path)?);
    }
    let _guard = store.write_guard()?;

    let mut layers = Vec::new();
    for path in &shard_paths {
        layers.push(import(store, path, artifact::GGUF_LAYER, progress)?);
    }
    for path in &spec.licenses {
        layers.push(import(store, path, artifact::LICENSE_LAYER, progress)?);
    }
    if let Some(path) = &spec.chat_template {
        layers.push(import(
            store,
            path,
            artifact::CHAT_TEMPLATE_LAYER,
            progress,
        )?);
    }

    let config = describe(&headers, &layers, spec.context_size);
    let config_bytes = config.to_json();
    let config_digest = store.put_blob_bytes(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(artifact::OCI_MANIFEST.to_string()),
        config: Descriptor {
            media_type: artifact::CONFIG_V01.to_string(),
            digest: config_digest,
            size: config_bytes.len() as u64,
            annotations: None,
        },
        layers,
        annotations: None,
    };
    Ok(store.add_model(reference, &manifest.to_json())?)
}

/// The config blob for these GGUF shards and layers.
fn describe(
    headers: &[GgufHeader],
    layers: &[Descriptor],
    context_size: Option<u64>,
) -> ConfigFile {
    let first = &headers[0];
    let weights: Vec<&Descriptor> = layers
        .iter()
        .filter(|l| l.media_type == artifact::GGUF_LAYER)
        .collect();
    let parameters: u64 = headers.iter().map(GgufHeader::parameter_count).sum();
    let mut gguf: BTreeMap<String, String> = first.text_metadata();
    gguf.retain(|k, _| !k.starts_with("tokenizer.chat_template") || k == "tokenizer.chat_template");
    ConfigFile {
        config: ModelConfig {
            format: "gguf".to_string(),
            quantization: first.quantization(),
            parameters: format_parameter_count(parameters),
            architecture: first.architecture().unwrap_or_default().to_string(),
            size: artifact::human_size(weights.iter().map(|l| l.size).sum()),
            gguf,
            context_size: context_size.or_else(|| first.context_length()),
        },
        descriptor: ConfigDescriptor {
            created: Some(Utc::now()),
        },
        rootfs: RootFs {
            kind: "rootfs".to_string(),
            diff_ids: weights.iter().map(|l| l.digest.clone()).collect(),
        },
    }
}

fn import(
    store: &Store,
    path: &Path,
    media_type: &str,
    progress: &ProgressSink,
) -> Result<Descriptor, PackageError> {
    let title = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let total = std::fs::metadata(path)
        .map_err(|source| StoreError::Io {
            path: path.display().to_string(),
            source,
        })?
        .len();
    progress(TransferEvent::Started {
        id: title.clone(),
        total,
        done: 0,
    });
    let (digest, size) = store.import_file(path, &mut |done| {
        progress(TransferEvent::Advanced {
            id: title.clone(),
            done,
        })
    })?;
    progress(TransferEvent::Finished {
        id: title.clone(),
        skipped: false,
    });
    Ok(Descriptor {
        media_type: media_type.to_string(),
        digest,
        size,
        annotations: Some(BTreeMap::from([(
            artifact::TITLE_ANNOTATION.to_string(),
            title,
        )])),
    })
}

/// The files of a split model, in order: `name-00001-of-00003.gguf` and its siblings. Just `path` if unsplit.
fn shard_paths(path: &Path, count: u64) -> Result<Vec<PathBuf>, PackageError> {
    if count <= 1 {
        return Ok(vec![path.to_path_buf()]);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let missing = |index| PackageError::MissingShard {
        path: path.display().to_string(),
        index,
        count,
    };
    // `<prefix>-<index, 5 digits>-of-<count, 5 digits>.gguf`, as llama.cpp's gguf-split names them.
    let stem = name.strip_suffix(".gguf").ok_or_else(|| missing(1))?;
    let (before_of, _) = stem.rsplit_once("-of-").ok_or_else(|| missing(1))?;
    let (prefix, _) = before_of.rsplit_once('-').ok_or_else(|| missing(1))?;
    (1..=count)
        .map(|i| {
            let sibling = path.with_file_name(format!("{prefix}-{i:05}-of-{count:05}.gguf"));
            if sibling.is_file() {
                Ok(sibling)
            } else {
                Err(missing(i))
            }
        })
        .collect()
}
