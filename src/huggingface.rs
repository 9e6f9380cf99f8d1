//! Hugging Face as a second model source: `hf.co/ORG/REPO[:QUANT]` fetches a GGUF through `hf-hub`
//! (honouring `HF_ENDPOINT` and `HF_TOKEN`) and stores it as the same artifact `package` makes, so nothing
//! downstream can tell where a model came from.
//!
//! What the Hub sends is bounded like a registry's: the listing by a file count, each file by the size the
//! listing declared (and `MAX_LAYER_BYTES`), the whole download by the free space where it lands.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::artifact::MAX_LAYER_BYTES;
use crate::digest::Digest;
use crate::package::{PackageError, PackageSpec, package};
use crate::progress::{ProgressSink, TransferEvent};
use crate::reference::HuggingFaceRef;
use crate::store::Store;

/// The quantization picked when the reference names none, as Docker Model Runner does.
const DEFAULT_QUANTIZATION: &str = "Q4_K_M";
/// The most files a repository listing may hold; model repositories hold tens.
const MAX_LISTED_FILES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum HuggingFaceError {
    #[error("Hugging Face request for {repo} failed: {message}")]
    Hub { repo: String, message: String },
    #[error("{repo} has no GGUF file{}", quant.as_ref().map(|q| format!(" for quantization {q}")).unwrap_or_default())]
    NoGguf { repo: String, quant: Option<String> },
    #[error("writing the download to {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("Hugging Face {repo}: {file} {problem}")]
    Oversized {
        repo: String,
        file: String,
        problem: String,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Downloads the GGUF that `reference` names and stores it under `reference.store_ref()`.
pub async fn pull(
    store: &Store,
    reference: &HuggingFaceRef,
    progress: ProgressSink,
) -> Result<Digest, HuggingFaceError> {
    let hub = |e: hf_hub::HFError| HuggingFaceError::Hub {
        repo: reference.repo.clone(),
        message: e.to_string(),
    };
    let client = hf_hub::HFClient::builder().build().map_err(hub)?;
    let (owner, name) = reference
        .repo
        .split_once('/')
        .unwrap_or(("", &reference.repo));
    let repo = client.model(owner, name);
    let mut files = Vec::new();
    let listing = repo.list_tree().recursive(true).send().map_err(hub)?;
    futures::pin_mut!(listing);
    while let Some(entry) = listing.next().await {
        if let hf_hub::repository::RepoTreeEntry::File { path, size, .. } = entry.map_err(hub)? {
            files.push((path, size));
        }
        if files.len() > MAX_LISTED_FILES {
            return Err(oversized(
                reference,
                "the listing",
                format!("holds over {MAX_LISTED_FILES} files"),
            ));
        }
    }
    let chosen = choose_files(&files, reference.quantization.as_deref()).ok_or_else(|| {
        HuggingFaceError::NoGguf {
            repo: reference.repo.clone(),
            quant: reference.quantization.clone(),
        }
    })?;

    let download_dir = tempfile::Builder::new()
        .prefix("model-runner-hf-")
        .tempdir()
        .map_err(|source| HuggingFaceError::Io {
            path: std::env::temp_dir().display().to_string(),
            source,
        })?;
    check_room(reference, &chosen, download_dir.path(), store)?;
    let mut local_paths = Vec::new();
    for (file, size) in &chosen {
        let local = download_dir
            .path()
            .join(Path::new(file).file_name().unwrap_or_default());
        progress(TransferEvent::Started {
            id: file.clone(),
            total: *size,
            done: 0,
        });
        let (declared, mut stream) = repo
            .download_file_stream()
            .filename(file.clone())
            .send()
            .await
            .map_err(hub)?;
        let io = |source| HuggingFaceError::Io {
            path: local.display().to_string(),
            source,
        };
        let longer = || {
            oversized(
                reference,
                file,
                format!("is longer than the {size} bytes listed"),
            )
        };
        if declared.is_some_and(|len| len > *size) {
            return Err(longer());
        }
        let mut out = tokio::fs::File::create(&local).await.map_err(io)?;
        let mut done = 0u64;
        // Bounded by the listed size: a longer body is refused, whatever the server says its length is.
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(hub)?;
            if done + chunk.len() as u64 > *size {
                return Err(longer());
            }
            out.write_all(&chunk).await.map_err(io)?;
            done += chunk.len() as u64;
            progress(TransferEvent::Advanced {
                id: file.clone(),
                done,
            });
        }
        out.flush().await.map_err(io)?;
        if done != *size {
            return Err(oversized(
                reference,
                file,
                format!("broke off at {done} of {size} bytes"),
            ));
        }
        progress(TransferEvent::Finished {
            id: file.clone(),
            skipped: false,
        });
        local_paths.push(local);
    }

    let spec = PackageSpec {
        gguf: local_paths.first().cloned().unwrap_or_else(PathBuf::new),
        ..Default::default()
    };
    let (store, target, sink) = (store.clone(), reference.store_ref(), progress.clone());
    let digest = tokio::task::spawn_blocking(move || package(&store, &spec, &target, &sink))
        .await
        .map_err(|e| HuggingFaceError::Task(e.to_string()))??;
    drop(download_dir);
    Ok(digest)
}

fn oversized(reference: &HuggingFaceRef, file: &str, problem: String) -> HuggingFaceError {
    HuggingFaceError::Oversized {
        repo: reference.repo.clone(),
        file: file.to_string(),
        problem,
    }
}

/// Refuses files listed beyond `MAX_LAYER_BYTES`, and a download that does not fit where it lands: the
/// temporary directory, then the store it is copied into.
fn check_room(
    reference: &HuggingFaceRef,
    chosen: &[(String, u64)],
    download_dir: &Path,
    store: &Store,
) -> Result<(), HuggingFaceError> {
    if let Some((file, size)) = chosen.iter().find(|(_, size)| *size > MAX_LAYER_BYTES) {
        return Err(oversized(
            reference,
            file,
            format!("is listed at {size} bytes, over the {MAX_LAYER_BYTES}-byte limit"),
        ));
    }
    let total = chosen.iter().map(|(_, size)| size).sum::<u64>();
    for dir in [download_dir, store.root()] {
        let available = crate::store::available_bytes(dir)?;
        if total > available {
            return Err(crate::store::StoreError::NoSpace {
                path: dir.display().to_string(),
                needed: total,
                available,
            }
            .into());
        }
    }
    Ok(())
}

/// Picks the GGUF file(s) for a quantization: every shard of the match, never a multimodal projector.
/// Without a quantization: Q4_K_M if present, else the only or first GGUF.
fn choose_files(files: &[(String, u64)], quantization: Option<&str>) -> Option<Vec<(String, u64)>> {
    let mut ggufs: Vec<&(String, u64)> = files
        .iter()
        .filter(|(path, _)| {
            let lower = path.to_ascii_lowercase();
            lower.ends_with(".gguf") && !lower.contains("mmproj")
        })
        .collect();
    ggufs.sort();
    let matches = |quant: &str| -> Vec<&(String, u64)> {
        let quant = quant.to_ascii_lowercase();
        ggufs
            .iter()
            .copied()
            .filter(|(path, _)| {
                let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
                name.split(['-', '.', '_'])
                    .collect::<Vec<_>>()
                    .join("_")
                    .contains(&quant.replace('-', "_"))
            })
            .collect()
    };
    let picked: Vec<&(String, u64)> = match quantization {
        Some(quant) => matches(quant),
        None => {
            let default = matches(DEFAULT_QUANTIZATION);
            if default.is_empty() {
                ggufs
                    .first()
                    .map(|first| shards_of(&ggufs, first))
                    .unwrap_or_default()
            } else {
                default
            }
        }
    };
    let first = picked.first()?;
    Some(shards_of(&picked, first).into_iter().cloned().collect())
}

/// `first` and its sibling shards (`-00002-of-00003.gguf`), or just `first` when unsplit.
fn shards_of<'a>(
    candidates: &[&'a (String, u64)],
    first: &'a (String, u64),
) -> Vec<&'a (String, u64)> {
    match first.0.split_once("-00001-of-") {
        Some((prefix, _)) => candidates
            .iter()
            .copied()
            .filter(|(path, _)| path.starts_with(prefix) && path.contains("-of-"))
            .collect(),
        None => vec![first],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<(String, u64)> {
        names.iter().map(|n| (n.to_string(), 1)).collect()
    }

    fn names(picked: Option<Vec<(String, u64)>>) -> Vec<String> {
        picked
            .unwrap_or_default()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn picks_the_named_quantization_then_q4_k_m_then_the_first() {
        let repo = files(&[
            "README.md",
            "model-Q4_K_M.gguf",
            "model-Q8_0.gguf",
            "mmproj-model-f16.gguf",
        ]);
        assert_eq!(
            names(choose_files(&repo, Some("Q8_0"))),
            ["model-Q8_0.gguf"]
        );
        assert_eq!(names(choose_files(&repo, None)), ["model-Q4_K_M.gguf"]);
        let only = files(&["SmolLM2-135M-Instruct.Q4_1.gguf"]);
        assert_eq!(
            names(choose_files(&only, None)),
            ["SmolLM2-135M-Instruct.Q4_1.gguf"]
        );
        assert_eq!(
            names(choose_files(&only, Some("q4_1"))),
            ["SmolLM2-135M-Instruct.Q4_1.gguf"]
        );
        assert!(choose_files(&only, Some("Q2_K")).is_none());
    }

    #[test]
    fn picks_every_shard_of_a_split_model() {
        let repo = files(&[
            "Q4_K_M/big-Q4_K_M-00001-of-00002.gguf",
            "Q4_K_M/big-Q4_K_M-00002-of-00002.gguf",
            "big-Q8_0.gguf",
        ]);
        assert_eq!(choose_files(&repo, None).unwrap().len(), 2);
    }
}
