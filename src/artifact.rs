//! The model artifact format: Docker Model Runner's OCI media types and config, so that models packaged by
//! DMR and by us are interchangeable. CNCF ModelPack configs are read too.
//!
//! A model is an OCI image manifest whose config blob describes the model and whose layers are files, one per
//! layer, uncompressed: GGUF weights (each shard its own layer), licenses, and an optional chat template.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub const CONFIG_V01: &str = "application/vnd.docker.ai.model.config.v0.1+json";
pub const CONFIG_V02: &str = "application/vnd.docker.ai.model.config.v0.2+json";
pub const CNCF_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";

pub const GGUF_LAYER: &str = "application/vnd.docker.ai.gguf.v3";
pub const CNCF_GGUF_LAYER: &str = "application/vnd.cncf.model.weight.v1.gguf";
pub const LICENSE_LAYER: &str = "application/vnd.docker.ai.license";
pub const CHAT_TEMPLATE_LAYER: &str = "application/vnd.docker.ai.chat.template.jinja";
pub const MMPROJ_LAYER: &str = "application/vnd.docker.ai.mmproj";

/// The largest config blob a manifest may declare: a model config is a few KiB, and it is read whole.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// The largest layer a manifest may declare. The biggest GGUF files are a few hundred GB; a size beyond
/// this is a registry lying, refused before any byte is fetched.
pub const MAX_LAYER_BYTES: u64 = 512 << 30;

/// The annotation that carries a layer's file name.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("not a model: config media type {0:?} is not a model config")]
    NotAModel(String),
    #[error("unsupported manifest media type {0:?}")]
    ManifestMediaType(String),
    #[error("unsupported layer media type {0:?} (this runner serves GGUF models)")]
    LayerMediaType(String),
    #[error("the model has no GGUF layer")]
    NoWeights,
    #[error(
        "the manifest declares a {what} of {size} bytes ({digest}), over the {limit}-byte limit"
    )]
    BlobTooLarge {
        what: &'static str,
        digest: String,
        size: u64,
        limit: u64,
    },
    #[error("malformed manifest: {0}")]
    MalformedManifest(String),
    #[error("malformed model config: {0}")]
    MalformedConfig(String),
}

/// An OCI content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    pub fn title(&self) -> Option<&str> {
        self.annotations
            .as_ref()?
            .get(TITLE_ANNOTATION)
            .map(String::as_str)
    }
}

/// An OCI image manifest holding a model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Manifest {
    /// Parses a manifest and checks that it is a model we can store: known config and layer types, some weights.
    pub fn parse_model(bytes: &[u8]) -> Result<Self, ArtifactError> {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| ArtifactError::MalformedManifest(e.to_string()))?;
        if let Some(media_type) = &manifest.media_type
            && media_type != OCI_MANIFEST
            && media_type != DOCKER_MANIFEST_V2
        {
            return Err(ArtifactError::ManifestMediaType(media_type.clone()));
        }
        if ![CONFIG_V01, CONFIG_V02, CNCF_CONFIG].contains(&manifest.config.media_type.as_str()) {
            return Err(ArtifactError::NotAModel(manifest.config.media_type.clone()));
        }
        let too_large = |what, blob: &Descriptor, limit| ArtifactError::BlobTooLarge {
            what,
            digest: blob.digest.to_string(),
            size: blob.size,
            limit,
        };
        if manifest.config.size > MAX_CONFIG_BYTES {
            return Err(too_large("config", &manifest.config, MAX_CONFIG_BYTES));
        }
        if let Some(layer) = manifest.layers.iter().find(|l| l.size > MAX_LAYER_BYTES) {
            return Err(too_large("layer", layer, MAX_LAYER_BYTES));
        }
        for layer in &manifest.layers {
            let known = [
                GGUF_LAYER,
                CNCF_GGUF_LAYER,
                LICENSE_LAYER,
                CHAT_TEMPLATE_LAYER,
                MMPROJ_LAYER,
            ];
            if !known.contains(&layer.media_type.as_str()) {
                return Err(ArtifactError::LayerMediaType(layer.media_type.clone()));
            }
        }
        if manifest.gguf_layers().next().is_none() {
            return Err(ArtifactError::NoWeights);
        }
        Ok(manifest)
    }

    /// The GGUF weight layers, in shard order.
    pub fn gguf_layers(&self) -> impl Iterator<Item = &Descriptor> {
        self.layers
            .iter()
            .filter(|l| l.media_type == GGUF_LAYER || l.media_type == CNCF_GGUF_LAYER)
    }

    pub fn chat_template_layer(&self) -> Option<&Descriptor> {
        self.layers
            .iter()
            .find(|l| l.media_type == CHAT_TEMPLATE_LAYER)
    }

    /// Every blob the manifest names: config first, then layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What the config blob says of the model, in Docker Model Runner's shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub format: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub quantization: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parameters: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub size: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gguf: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_size: Option<u64>,
}

/// Architectures that only encode: they embed (or, with rank pooling, rerank), never generate.
const ENCODER_ARCHITECTURES: &[&str] = &[
    "bert",
    "nomic-bert",
    "jina-bert-v2",
    "t5encoder",
    "modernbert",
];

/// llama.cpp's `LLAMA_POOLING_TYPE_RANK`, as `<arch>.pooling_type` stores it.
const POOLING_RANK: &str = "4";

impl ModelConfig {
    /// What the model serves, from its GGUF metadata: `completion` and `tools` for a decoder (which also
    /// embeds by mean pooling, unadvertised, as Ollama lists only embedding models' `embedding`), only
    /// `embedding` for a decoder whose file names its pooling (Qwen3-Embedding), `rerank` for one whose
    /// pooling is rank (Qwen3-Reranker),
    /// `embedding` for an encoder, `rerank` for an encoder whose pooling is rank (a cross-encoder).
    pub fn capabilities(&self) -> Vec<&'static str> {
        let architecture = self
            .gguf
            .get("general.architecture")
            .map(String::as_str)
            .unwrap_or(self.architecture.as_str());
        let pooling = self.gguf.get(&format!("{architecture}.pooling_type"));
        if !ENCODER_ARCHITECTURES.contains(&architecture) {
            // A decoder whose file names a pooling (Qwen3-Embedding: last) is an embedding model; one
            // with rank pooling (Qwen3-Reranker, its classifier `cls.output`) a reranker.
            return match pooling.map(String::as_str) {
                Some("1" | "2" | "3") => vec!["embedding"],
                Some(POOLING_RANK) => vec!["rerank"],
                _ => vec!["completion", "tools"],
            };
        }
        if pooling.map(String::as_str) == Some(POOLING_RANK) {
            vec!["rerank"]
        } else {
            vec!["embedding"]
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConfigDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// The config blob: `{"config":{..},"descriptor":{"created":..},"rootfs":{..}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfigFile {
    pub config: ModelConfig,
    #[serde(default)]
    pub descriptor: ConfigDescriptor,
    pub rootfs: RootFs,
}

/// CNCF ModelPack's config, read only as far as we can map it onto ours.
#[derive(Debug, Deserialize)]
struct CncfConfigFile {
    #[serde(default)]
    descriptor: CncfDescriptor,
    #[serde(default)]
    config: CncfModelConfig,
    #[serde(default)]
    modelfs: Option<CncfModelFs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CncfDescriptor {
    created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CncfModelConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    param_size: String,
    #[serde(default)]
    quantization: String,
    #[serde(default)]
    precision: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CncfModelFs {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

impl ConfigFile {
    /// Reads a config blob of any media type we accept, mapping CNCF ModelPack onto DMR's shape.
    pub fn parse(media_type: &str, bytes: &[u8]) -> Result<Self, ArtifactError> {
        let malformed = |e: serde_json::Error| ArtifactError::MalformedConfig(e.to_string());
        match media_type {
            CNCF_CONFIG => {
                let cncf: CncfConfigFile = serde_json::from_slice(bytes).map_err(malformed)?;
                let quantization = if cncf.config.quantization.is_empty() {
                    cncf.config.precision
                } else {
                    cncf.config.quantization
                };
                Ok(ConfigFile {
                    config: ModelConfig {
                        format: cncf.config.format,
                        quantization,
                        parameters: cncf.config.param_size,
                        architecture: cncf.config.architecture,
                        ..Default::default()
                    },
                    descriptor: ConfigDescriptor {
                        created: cncf.descriptor.created_at,
                    },
                    rootfs: RootFs {
                        kind: "layers".into(),
                        diff_ids: cncf.modelfs.map(|m| m.diff_ids).unwrap_or_default(),
                    },
                })
            }
            CONFIG_V01 | CONFIG_V02 => serde_json::from_slice(bytes).map_err(malformed),
            other => Err(ArtifactError::NotAModel(other.to_string())),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Sizes as Docker's go-units `BytesSize` writes them: four significant digits, binary units (`93.8MiB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{}{}", four_significant_digits(value), UNITS[unit])
}

/// `%.4g` without exponent for the range sizes take: trailing zeros dropped.
fn four_significant_digits(value: f64) -> String {
    let decimals = if value >= 1000.0 {
        0
    } else if value >= 100.0 {
        1
    } else if value >= 10.0 {
        2
    } else {
        3
    };
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(media_type: &str) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: Digest::of_bytes(media_type.as_bytes()),
            size: 1,
            annotations: None,
        }
    }

    fn manifest(config: &str, layers: &[&str]) -> Vec<u8> {
        Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            config: descriptor(config),
            layers: layers.iter().map(|l| descriptor(l)).collect(),
            annotations: None,
        }
        .to_json()
    }

    #[test]
    fn manifests_declaring_oversized_config_or_layers_are_refused() {
        let sized = |config_size, layer_size| {
            let mut m: Manifest =
                serde_json::from_slice(&manifest(CONFIG_V01, &[GGUF_LAYER])).unwrap();
            m.config.size = config_size;
            m.layers[0].size = layer_size;
            Manifest::parse_model(&m.to_json())
        };
        assert!(sized(MAX_CONFIG_BYTES, MAX_LAYER_BYTES).is_ok());
        assert!(matches!(
            sized(MAX_CONFIG_BYTES + 1, 1),
            Err(ArtifactError::BlobTooLarge { what: "config", .. })
        ));
        assert!(matches!(
            sized(1, 1 << 40),
            Err(ArtifactError::BlobTooLarge { what: "layer", .. })
        ));
    }

    #[test]
    fn model_manifests_parse_and_others_are_refused() {
        assert!(Manifest::parse_model(&manifest(CONFIG_V01, &[GGUF_LAYER, LICENSE_LAYER])).is_ok());
        assert!(Manifest::parse_model(&manifest(CNCF_CONFIG, &[CNCF_GGUF_LAYER])).is_ok());
        assert!(matches!(
            Manifest::parse_model(&manifest(
                "application/vnd.oci.image.config.v1+json",
                &[GGUF_LAYER]
            )),
            Err(ArtifactError::NotAModel(_))
        ));
        assert!(matches!(
            Manifest::parse_model(&manifest(
                CONFIG_V01,
                &["application/vnd.oci.image.layer.v1.tar"]
            )),
            Err(ArtifactError::LayerMediaType(_))
        ));
        assert!(matches!(
            Manifest::parse_model(&manifest(CONFIG_V01, &[LICENSE_LAYER])),
            Err(ArtifactError::NoWeights)
        ));
        assert!(Manifest::parse_model(b"{not json").is_err());
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(98_356_768), "93.8MiB");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1536), "1.5KiB");
    }

    #[test]
    fn cncf_configs_map_onto_ours() {
        let cncf = br#"{"descriptor":{"createdAt":"2025-01-02T03:04:05Z"},
            "config":{"architecture":"llama","format":"gguf","paramSize":"135M","quantization":"Q4_1"},
            "modelfs":{"type":"layers","diffIds":[]}}"#;
        let c = ConfigFile::parse(CNCF_CONFIG, cncf).unwrap();
        assert_eq!(c.config.architecture, "llama");
        assert_eq!(c.config.parameters, "135M");
        assert!(c.descriptor.created.is_some());
    }
}
