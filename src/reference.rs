//! Model references: parsed once, normalised the way Docker Model Runner does.
//!
//! A bare name (`smollm2`) lives in the `ai/` namespace on Docker Hub and defaults to the `latest` tag, so
//! `smollm2`, `ai/smollm2` and `docker.io/ai/smollm2:latest` name the same model. `host:port/repo:tag` and
//! `repo@sha256:<hex>` work as in Docker. `hf.co/ORG/REPO[:QUANT]` names a Hugging Face repository.
//! A malformed reference is refused here, before anything touches the network.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry a bare reference resolves to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The namespace a single-component name lives in.
pub const DEFAULT_NAMESPACE: &str = "ai";
/// The tag a reference without tag or digest resolves to.
pub const DEFAULT_TAG: &str = "latest";

const HUGGING_FACE_HOSTS: [&str; 2] = ["hf.co", "huggingface.co"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid model reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: String,
}

/// A fully qualified model reference: registry, repository, and a tag or a digest (or both).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Where a reference points: an OCI registry, or a Hugging Face repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Registry(ModelRef),
    HuggingFace(HuggingFaceRef),
}

/// `hf.co/ORG/REPO[:QUANT]`: a GGUF repository on the Hugging Face hub and an optional quantization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuggingFaceRef {
    pub repo: String,
    pub quantization: Option<String>,
}

impl ModelSource {
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let input = input.trim();
        if let Some((host, rest)) = input.split_once('/')
            && HUGGING_FACE_HOSTS.contains(&host.to_ascii_lowercase().as_str())
        {
            return HuggingFaceRef::parse(input, rest).map(ModelSource::HuggingFace);
        }
        ModelRef::parse(input).map(ModelSource::Registry)
    }
}

impl HuggingFaceRef {
    fn parse(input: &str, rest: &str) -> Result<Self, ReferenceError> {
        let fail = |reason: &str| ReferenceError {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        let (repo, quantization) = match rest.rsplit_once(':') {
            Some((repo, quant)) if !quant.is_empty() && !quant.contains('/') => {
                (repo, Some(quant.to_string()))
            }
            Some(_) => return Err(fail("empty quantization after ':'")),
            None => (rest, None),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        let valid_part = |p: &&str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if parts.len() != 2 || !parts.iter().all(valid_part) {
            return Err(fail("expected hf.co/ORG/REPO[:QUANT]"));
        }
        Ok(Self {
            repo: repo.to_string(),
            quantization,
        })
    }

    /// The registry-style reference a pulled Hugging Face model is stored under.
    pub fn store_ref(&self) -> ModelRef {
        ModelRef {
            registry: "hf.co".to_string(),
            repository: self.repo.to_ascii_lowercase(),
            tag: Some(
                self.quantization
                    .clone()
                    .unwrap_or_else(|| DEFAULT_TAG.to_string()),
            ),
            digest: None,
        }
    }
}

impl ModelRef {
    /// Parses and normalises a registry reference.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let fail = |reason: String| ReferenceError {
            reference: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(fail("empty reference".into()));
        }
        if input.len() > 255 {
            return Err(fail("longer than 255 characters".into()));
        }
        let (name_and_tag, digest) = match input.split_once('@') {
            Some((name, digest)) => (
                name,
                Some(Digest::parse(digest).map_err(|e| fail(e.to_string()))?),
            ),
            None => (input, None),
        };
        // A ':' after the last '/' separates the tag; one before it belongs to a host:port.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].find(':') {
            Some(i) => {
                let split = last_slash + i;
                (&name_and_tag[..split], Some(&name_and_tag[split + 1..]))
            }
            None => (name_and_tag, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(fail)?;
        }
        let (registry, repository) = split_registry(name);
        validate_registry(&registry).map_err(fail)?;
        validate_repository(&repository).map_err(fail)?;
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }
    pub fn repository(&self) -> &str {
        &self.repository
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository at another digest (the manifest a tag resolved to).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same reference by tag alone.
    pub fn without_digest(&self) -> Self {
        Self {
            digest: None,
            ..self.clone()
        }
    }

    /// The short form users type and `ls` shows: `ai/smollm2:latest` on Docker Hub, the full form elsewhere.
    pub fn familiar(&self) -> String {
        let full = self.to_string();
        match full.strip_prefix(&format!("{DEFAULT_REGISTRY}/")) {
            // Dropping the registry must not make the first path part read as one (`docker.io/a.b/c`
            // would become `a.b/c`, a reference to the registry `a.b`).
            Some(short) if !first_part_reads_as_registry(short) => short.to_string(),
            _ => full,
        }
    }

    /// Whether Docker would talk plain HTTP to this registry without being told: loopback only.
    pub fn is_loopback_registry(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .map_or(&*self.registry, |(h, port)| {
                if port.chars().all(|c| c.is_ascii_digit()) {
                    h
                } else {
                    &self.registry
                }
            });
        matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.starts_with("127.")
    }

    /// The reference in `oci-client`'s terms.
    pub fn to_oci(&self) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone(),
                digest.to_string(),
            ),
            (_, Some(digest)) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                digest.to_string(),
            ),
            (tag, None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_string()),
            ),
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ModelRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Splits `host[:port]/path` from a bare path, the way Docker decides whether the first component is a host.
fn split_registry(name: &str) -> (String, String) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            let registry = if first == "index.docker.io" {
                DEFAULT_REGISTRY
            } else {
                first
            };
            (registry.to_string(), rest.to_string())
        }
        Some(_) => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        None => (
            DEFAULT_REGISTRY.to_string(),
            format!("{DEFAULT_NAMESPACE}/{name}"),
        ),
    }
}

fn validate_registry(registry: &str) -> Result<(), String> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || registry.starts_with('[') => {
            (host, Some(port))
        }
        _ => (registry, None),
    };
    if let Some(port) = port
        && (port.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(format!("invalid registry port {port:?}"));
    }
    let host_ok = !host.is_empty()
        && (host.starts_with('[') && host.ends_with(']')
            || host.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }));
    if host_ok {
        Ok(())
    } else {
        Err(format!("invalid registry host {host:?}"))
    }
}

/// OCI distribution's repository grammar: lowercase path components joined by `.`, `_`, `__` or `-` runs.
fn validate_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("empty repository name".into());
    }
    for component in repository.split('/') {
        let ok = !component.is_empty()
            && component.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
            && component.starts_with(|c: char| c.is_ascii_alphanumeric())
            && component.ends_with(|c: char| c.is_ascii_alphanumeric())
            && !component.contains("..")
            && !component.contains("___");
        if !ok {
            let hint = if component.chars().any(|c| c.is_ascii_uppercase()) {
                " (repository names must be lowercase)"
            } else {
                ""
            };
            return Err(format!("invalid repository component {component:?}{hint}"));
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag {tag:?}"))
    }
}

/// Whether `path`'s first part would be parsed as a registry host (as Docker reads it: a `.` or a `:`,
/// or `localhost`).
fn first_part_reads_as_registry(path: &str) -> bool {
    path.split_once('/')
        .is_some_and(|(first, _)| first.contains(['.', ':']) || first == "localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        ModelRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn bare_names_live_in_the_ai_namespace_on_docker_hub() {
        assert_eq!(full("smollm2"), "docker.io/ai/smollm2:latest");
        assert_eq!(full("ai/smollm2"), "docker.io/ai/smollm2:latest");
        assert_eq!(full("smollm2:135M-Q4_1"), "docker.io/ai/smollm2:135M-Q4_1");
        assert_eq!(full("docker.io/ai/smollm2"), "docker.io/ai/smollm2:latest");
        assert_eq!(
            full("index.docker.io/ai/smollm2"),
            "docker.io/ai/smollm2:latest"
        );
    }

    #[test]
    fn hosts_with_ports_and_digests_parse() {
        assert_eq!(
            full("127.0.0.1:5000/ai/smollm2:v1"),
            "127.0.0.1:5000/ai/smollm2:v1"
        );
        assert_eq!(full("localhost/x/y"), "localhost/x/y:latest");
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = ModelRef::parse(&format!("ai/smollm2@{digest}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), digest);
        assert!(
            ModelRef::parse("127.0.0.1:5000/ai/smollm2")
                .unwrap()
                .is_loopback_registry()
        );
        assert!(
            !ModelRef::parse("ai/smollm2")
                .unwrap()
                .is_loopback_registry()
        );
    }

    #[test]
    fn familiar_form_drops_docker_hub() {
        assert_eq!(
            ModelRef::parse("smollm2").unwrap().familiar(),
            "ai/smollm2:latest"
        );
        assert_eq!(
            ModelRef::parse("localhost:5000/a/b:c").unwrap().familiar(),
            "localhost:5000/a/b:c"
        );
    }

    #[test]
    fn familiar_form_parses_back_to_the_same_reference() {
        // Found by fuzzing: `docker.io/ahf.co/bwsi/k` was shown as `ahf.co/bwsi/k`, another registry.
        for text in [
            "docker.io/ahf.co/bwsi/k",
            "docker.io/localhost/x",
            "smollm2",
            "ai/smollm2:v1",
        ] {
            let reference = ModelRef::parse(text).unwrap();
            let again = ModelRef::parse(&reference.familiar()).unwrap();
            assert_eq!(again.to_string(), reference.to_string(), "{text}");
        }
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "Upper/Case",
            "ai/smollm2:",
            "ai/smollm2:bad tag",
            "ai//smollm2",
            "ai/smollm2@sha256:abc",
            "ai/smollm2@md5:abcd",
            "host:99999/repo",
            "-leading/dash",
            "a/b:-tag",
        ] {
            assert!(ModelRef::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn hugging_face_references_name_a_repo_and_quantization() {
        let ModelSource::HuggingFace(hf) =
            ModelSource::parse("hf.co/bartowski/SmolLM2-GGUF:Q4_K_M").unwrap()
        else {
            panic!("expected a Hugging Face reference");
        };
        assert_eq!(hf.repo, "bartowski/SmolLM2-GGUF");
        assert_eq!(hf.quantization.as_deref(), Some("Q4_K_M"));
        assert_eq!(
            hf.store_ref().to_string(),
            "hf.co/bartowski/smollm2-gguf:Q4_K_M"
        );
        assert!(ModelSource::parse("hf.co/only-org").is_err());
    }
}
