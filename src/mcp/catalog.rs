//! The MCP catalog: servers one can install into the gateway, described in the official MCP Registry's
//! `server.json` format (name, title, description, version, `packages` on npm / PyPI / OCI with their
//! transport, arguments and environment variables, `remotes` for streamable-HTTP servers).
//!
//! Entries come from the catalog shipped inside the binary (`catalog/mcp-catalog.json`: the reference
//! servers of the modelcontextprotocol project, pinned, and a few well-known ones), then from files the
//! user adds (`<home>/mcp-catalog/*.json` and `--catalog PATH`); a later entry of the same name replaces
//! an earlier one. A file holds one `server.json`, a list of them, or a registry answer
//! (`{"servers": [{"server": {...}}]}`). This module only reads and searches; `install` turns an entry
//! into a gateway server definition, and `config_edit` writes it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The catalog shipped with the binary.
const SHIPPED: &str = include_str!("../../catalog/mcp-catalog.json");

/// The folder under the store root whose `*.json` files add to the catalog.
pub const USER_CATALOG_DIR: &str = "mcp-catalog";
/// The artifact type of a catalog kept in an OCI registry (`model mcp catalog push | pull`); its one layer
/// is a registry answer (`registry_document`).
pub const CATALOG_ARTIFACT_TYPE: &str = "application/vnd.model-runner.mcp.catalog.v1+json";
/// The largest catalog pulled from a registry: the shipped one is a few KiB.
pub const MAX_CATALOG_BYTES: u64 = 4 << 20;
/// More catalog files or folders, comma-separated (also `--catalog`).
pub const CATALOG_ENV: &str = "MODEL_RUNNER_MCP_CATALOG";

/// The paths `MODEL_RUNNER_MCP_CATALOG` names.
pub fn extra_from_env() -> Vec<PathBuf> {
    std::env::var(CATALOG_ENV)
        .map(|v| {
            v.split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| PathBuf::from(p.trim()))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read MCP catalog {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid MCP catalog {path}: {message}")]
    Parse { path: String, message: String },
    #[error("no catalog entry is named {0} (see `model mcp catalog ls`)")]
    NotFound(String),
    #[error("{name} is ambiguous: it could be {}", candidates.join(", "))]
    Ambiguous {
        name: String,
        candidates: Vec<String>,
    },
}

/// One server in the Registry's `server.json` format. Fields this runner does not use are kept in
/// `extra`, so that serving an entry gives back what was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerJson {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub description: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<Package>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<Remote>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A way to run the server locally from a package registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    /// `npm`, `pypi`, `oci` (others are listed but cannot be installed).
    pub registry_type: String,
    /// The package's name (npm, PyPI) or image reference (OCI, with its tag or digest).
    pub identifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_hint: Option<String>,
    pub transport: PackageTransport,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_arguments: Vec<Argument>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub package_arguments: Vec<Argument>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_variables: Vec<KeyValueInput>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageTransport {
    /// `stdio`, `streamable-http` or `sse`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A command-line argument: `positional` (its `value`, or one the user gives for `valueHint`) or
/// `named` (`name` followed by its value, or alone when it has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Argument {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_hint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_required: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_secret: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_repeated: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Argument {
    /// What the user names this argument by in `--arg NAME=VALUE`.
    pub fn key(&self) -> Option<&str> {
        self.name.as_deref().or(self.value_hint.as_deref())
    }

    /// Whether `--arg KEY=...` names this argument (a named one with or without its leading dashes).
    pub fn is_named_by(&self, key: &str) -> bool {
        self.key()
            .is_some_and(|k| k == key || k.trim_start_matches('-') == key.trim_start_matches('-'))
    }
}

/// An environment variable or HTTP header the server reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyValueInput {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_required: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_secret: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A hosted server reached over HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remote {
    /// `streamable-http` or `sse`.
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<KeyValueInput>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Where an entry came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The catalog built into the binary.
    Shipped,
    /// A file the user added.
    File(PathBuf),
}

/// A catalog entry and its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub server: ServerJson,
    pub source: Source,
}

impl Entry {
    /// The label the server gets in the gateway config unless the user picks another: the part of the
    /// name after its namespace, without a `server-` / `mcp-server-` prefix or `-mcp-server` suffix
    /// (`io.github.modelcontextprotocol/server-time` -> `time`), sanitised for tool names.
    pub fn short_name(&self) -> String {
        let tail = self
            .server
            .name
            .rsplit('/')
            .next()
            .unwrap_or(&self.server.name);
        let tail = tail
            .strip_prefix("mcp-server-")
            .or_else(|| tail.strip_prefix("server-"))
            .unwrap_or(tail);
        let tail = tail
            .strip_suffix("-mcp-server")
            .or_else(|| tail.strip_suffix("-mcp"))
            .filter(|t| !t.is_empty())
            .unwrap_or(tail);
        tail.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect()
    }

    /// How the entry runs, for listings: `npm`, `pypi`, `oci`, `remote`.
    pub fn kind(&self) -> String {
        match (self.server.packages.first(), self.server.remotes.first()) {
            (Some(package), _) => package.registry_type.clone(),
            (None, Some(_)) => "remote".into(),
            (None, None) => "-".into(),
        }
    }
}

/// Every entry, by name; later sources replace earlier ones.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: Vec<Entry>,
}

impl Catalog {
    /// The shipped catalog, then `<home>/mcp-catalog/*.json` (sorted), then each of `extra` (a file, or
    /// a folder of `*.json` files).
    pub fn load(home: &Path, extra: &[PathBuf]) -> Result<Self, CatalogError> {
        let mut catalog = Self::default();
        for server in parse(SHIPPED, "the shipped catalog")? {
            catalog.insert(Entry {
                server,
                source: Source::Shipped,
            });
        }
        let user_dir = home.join(USER_CATALOG_DIR);
        if user_dir.is_dir() {
            catalog.add_path(&user_dir)?;
        }
        for path in extra {
            catalog.add_path(path)?;
        }
        Ok(catalog)
    }

    fn add_path(&mut self, path: &Path) -> Result<(), CatalogError> {
        let read_err = |source| CatalogError::Read {
            path: path.to_owned(),
            source,
        };
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(read_err)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            files.sort();
            files
        } else {
            vec![path.to_owned()]
        };
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| CatalogError::Read {
                path: file.clone(),
                source,
            })?;
            for server in parse(&text, &file.display().to_string())? {
                self.insert(Entry {
                    server,
                    source: Source::File(file.clone()),
                });
            }
        }
        Ok(())
    }

    fn insert(&mut self, entry: Entry) {
        match self
            .entries
            .iter_mut()
            .find(|e| e.server.name == entry.server.name)
        {
            Some(slot) => *slot = entry,
            None => self.entries.push(entry),
        }
    }

    /// Every entry, sorted by name.
    pub fn entries(&self) -> Vec<&Entry> {
        let mut entries: Vec<&Entry> = self.entries.iter().collect();
        entries.sort_by(|a, b| a.server.name.cmp(&b.server.name));
        entries
    }

    /// Entries whose name, title or description contains `term` (case-insensitive), sorted by name.
    pub fn search(&self, term: &str) -> Vec<&Entry> {
        let term = term.to_lowercase();
        self.entries()
            .into_iter()
            .filter(|e| {
                e.server.name.to_lowercase().contains(&term)
                    || e.server
                        .title
                        .as_deref()
                        .is_some_and(|t| t.to_lowercase().contains(&term))
                    || e.server.description.to_lowercase().contains(&term)
            })
            .collect()
    }

    /// The entry `name` names: its full name, or its short name (`time`), or its title, ignoring case.
    pub fn find(&self, name: &str) -> Result<&Entry, CatalogError> {
        if let Some(entry) = self.entries.iter().find(|e| e.server.name == name) {
            return Ok(entry);
        }
        let wanted = name.to_lowercase();
        let matches: Vec<&Entry> = self
            .entries()
            .into_iter()
            .filter(|e| {
                e.short_name() == wanted
                    || e.server.name.rsplit('/').next() == Some(name)
                    || e.server.title.as_deref().map(str::to_lowercase) == Some(wanted.clone())
            })
            .collect();
        match matches.as_slice() {
            [] => Err(CatalogError::NotFound(name.to_string())),
            [one] => Ok(one),
            many => Err(CatalogError::Ambiguous {
                name: name.to_string(),
                candidates: many.iter().map(|e| e.server.name.clone()).collect(),
            }),
        }
    }
}

/// `servers` as the MCP Registry API answers a listing: the form catalogs are served and pushed in.
pub fn registry_document<'a>(servers: impl IntoIterator<Item = &'a ServerJson>) -> Value {
    let servers: Vec<Value> = servers
        .into_iter()
        .map(|server| serde_json::json!({"server": server}))
        .collect();
    serde_json::json!({"metadata": {"count": servers.len()}, "servers": servers})
}

/// The number of servers in `text` if it is a catalog (what `Catalog::load` accepts), else why not.
pub fn validate(text: &str, what: &str) -> Result<usize, CatalogError> {
    parse(text, what).map(|servers| servers.len())
}

/// Where a catalog pulled from `reference` is kept: `<home>/mcp-catalog/oci-<reference>.json`, the
/// reference reduced to characters safe in a file name.
pub fn pulled_path(home: &Path, reference: &str) -> PathBuf {
    let name: String = reference
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    home.join(USER_CATALOG_DIR).join(format!("oci-{name}.json"))
}

/// A `server.json`, a list of them, or a registry answer (`{"servers": [...]}`, each one bare or as
/// `{"server": {...}}`).
fn parse(text: &str, what: &str) -> Result<Vec<ServerJson>, CatalogError> {
    let error = |message: String| CatalogError::Parse {
        path: what.to_string(),
        message,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| error(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut object) => match object.remove("servers") {
            Some(Value::Array(items)) => items,
            Some(_) => return Err(error("`servers` is not a list".into())),
            None => vec![Value::Object(object)],
        },
        _ => return Err(error("expected a server.json object or a list".into())),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let item = match item {
                Value::Object(mut wrapped) if wrapped.contains_key("server") => {
                    wrapped.remove("server").unwrap_or(Value::Null)
                }
                bare => bare,
            };
            let server: ServerJson =
                serde_json::from_value(item).map_err(|e| error(format!("entry {i}: {e}")))?;
            if server.name.trim().is_empty() {
                return Err(error(format!("entry {i} has an empty name")));
            }
            Ok(server)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_reads_and_pins_every_package() {
        let catalog = Catalog::load(Path::new("/nonexistent"), &[]).expect("shipped catalog");
        assert!(catalog.entries().len() >= 5);
        for entry in catalog.entries() {
            for package in &entry.server.packages {
                assert!(
                    package.version.is_some() || package.identifier.contains(['@', ':']),
                    "{} is not pinned",
                    entry.server.name
                );
            }
        }
        let time = catalog.find("time").expect("time by short name");
        assert_eq!(
            time.server.name,
            "io.github.modelcontextprotocol/server-time"
        );
        assert_eq!(time.kind(), "pypi");
        assert_eq!(
            catalog.find("Everything").expect("by title").short_name(),
            "everything"
        );
        assert!(!catalog.search("KNOWLEDGE graph").is_empty());
    }

    #[test]
    fn user_files_add_and_replace_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = dir.path().join(USER_CATALOG_DIR);
        std::fs::create_dir_all(&user).expect("mkdir");
        std::fs::write(
            user.join("mine.json"),
            r#"{"servers": [{"server": {"name": "com.example/weather-mcp", "description": "Weather",
                "version": "1.2.0", "packages": [{"registryType": "oci",
                "identifier": "docker.io/example/weather:1.2.0", "transport": {"type": "stdio"}}]},
                "_meta": {}}]}"#,
        )
        .expect("write");
        let replacement = dir.path().join("time.json");
        std::fs::write(
            &replacement,
            r#"{"name": "io.github.modelcontextprotocol/server-time", "version": "9.9.9",
                "description": "replaced", "icons": [{"src": "x"}]}"#,
        )
        .expect("write");
        let catalog =
            Catalog::load(dir.path(), std::slice::from_ref(&replacement)).expect("catalog");
        let weather = catalog.find("weather").expect("weather");
        assert_eq!(weather.kind(), "oci");
        let time = catalog.find("time").expect("time");
        assert_eq!(time.server.version, "9.9.9");
        assert_eq!(time.source, Source::File(replacement));
        // Fields this runner does not know survive a round trip.
        let served = serde_json::to_value(&time.server).expect("serialise");
        assert_eq!(served["icons"][0]["src"], "x");
    }

    #[test]
    fn a_broken_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"servers": [{"description": "no name"}]}"#).expect("write");
        let err = Catalog::load(dir.path(), &[bad]).expect_err("invalid");
        assert!(err.to_string().contains("bad.json"), "{err}");
    }
}
