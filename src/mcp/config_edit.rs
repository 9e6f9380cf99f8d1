//! Safe edits of the gateway's configuration file, for `model mcp server ...` and `model mcp client ...`:
//! the document is edited as a JSON value (so keys this runner does not know, and every server it is
//! not asked to touch, stay as they were), checked with `config::check_document` before it is written,
//! and written atomically (a temporary file in the same folder, flushed, then renamed over the old
//! one). A YAML file stays YAML (its comments do not survive; JSON files lose nothing).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::config::{ConfigError, check_document};

/// The gateway configuration's file name under the store root, used when `--mcp-config` is not given.
pub const DEFAULT_FILE: &str = "mcp.json";

/// The gateway configuration used when `--mcp-config` is not given: `mcp.json` under the store root.
pub fn default_path(home: &Path) -> PathBuf {
    home.join(DEFAULT_FILE)
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a JSON or YAML object: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("the edited configuration would not load: {0}")]
    Invalid(#[from] ConfigError),
    #[error("no MCP server labelled {0} is configured")]
    UnknownServer(String),
}

/// The gateway configuration file's document.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    document: Value,
    yaml: bool,
}

impl ConfigFile {
    /// Reads `path`; a missing file is an empty configuration (created on `save`).
    pub fn open(path: &Path) -> Result<Self, EditError> {
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        let document = match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => json!({}),
            Ok(text) => {
                let parsed: Result<Value, String> = if yaml && !text.trim_start().starts_with('{') {
                    yaml_serde::from_str(&text).map_err(|e| e.to_string())
                } else {
                    serde_json::from_str(&text).map_err(|e| e.to_string())
                };
                parsed.map_err(|message| EditError::Parse {
                    path: path.to_owned(),
                    message,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
            Err(source) => {
                return Err(EditError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        if !document.is_object() {
            return Err(EditError::Parse {
                path: path.to_owned(),
                message: "the top level is not an object".into(),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            document,
            yaml,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn section(&mut self, key: &str) -> &mut Map<String, Value> {
        let root = self
            .document
            .as_object_mut()
            .expect("the document is an object (checked on open)");
        let slot = root.entry(key).or_insert_with(|| json!({}));
        if !slot.is_object() {
            *slot = json!({});
        }
        slot.as_object_mut().expect("just made an object")
    }

    /// The configured servers by label, as written.
    pub fn servers(&self) -> Vec<(String, Value)> {
        self.document
            .get("mcpServers")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    pub fn has_server(&self, label: &str) -> bool {
        self.servers().iter().any(|(l, _)| l == label)
    }

    /// Adds or replaces the server `label`.
    pub fn set_server(&mut self, label: &str, definition: Value) {
        self.section("mcpServers")
            .insert(label.to_string(), definition);
    }

    /// Removes the server `label`; false when there was none.
    pub fn remove_server(&mut self, label: &str) -> bool {
        self.section("mcpServers").remove(label).is_some()
    }

    /// Sets the server's `disabled` flag (removed when enabling, as the file would be written by hand).
    pub fn set_disabled(&mut self, label: &str, disabled: bool) -> Result<(), EditError> {
        let server = self
            .section("mcpServers")
            .get_mut(label)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| EditError::UnknownServer(label.to_string()))?;
        if disabled {
            server.insert("disabled".into(), Value::Bool(true));
        } else {
            server.remove("disabled");
        }
        Ok(())
    }

    /// The gateway clients, as written.
    pub fn clients(&self) -> Vec<Value> {
        self.document
            .get("gateway")
            .and_then(|g| g.get("clients"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// Adds or replaces the gateway client `name`.
    pub fn set_client(&mut self, client: Value) {
        let name = client.get("name").cloned();
        let gateway = self.section("gateway");
        let clients = gateway.entry("clients").or_insert_with(|| json!([]));
        if !clients.is_array() {
            *clients = json!([]);
        }
        let list = clients.as_array_mut().expect("just made a list");
        list.retain(|c| c.get("name") != name.as_ref());
        list.push(client);
    }

    /// Removes the gateway client `name`; false when there was none.
    pub fn remove_client(&mut self, name: &str) -> bool {
        let Some(list) = self
            .document
            .get_mut("gateway")
            .and_then(|g| g.get_mut("clients"))
            .and_then(Value::as_array_mut)
        else {
            return false;
        };
        let before = list.len();
        list.retain(|c| c.get("name").and_then(Value::as_str) != Some(name));
        list.len() != before
    }

    /// Checks the document loads, then writes it atomically (owner-only permissions for a new file:
    /// it may hold client tokens).
    pub fn save(&self) -> Result<(), EditError> {
        let base = self.path.parent().unwrap_or(Path::new("."));
        check_document(&self.document, base)?;
        let text = if self.yaml {
            yaml_serde::to_string(&self.document).map_err(|e| EditError::Parse {
                path: self.path.clone(),
                message: e.to_string(),
            })?
        } else {
            let mut text =
                serde_json::to_string_pretty(&self.document).unwrap_or_else(|_| "{}".into());
            text.push('\n');
            text
        };
        atomic_write(&self.path, text.as_bytes()).map_err(|source| EditError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder renamed over it, so that a
/// reader sees the old or the new content, never half of one. An existing file's permissions are
/// kept; a new one is readable by its owner only.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::Builder::new()
        .prefix(".model-runner-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    match std::fs::metadata(path) {
        Ok(meta) => file.as_file().set_permissions(meta.permissions())?,
        Err(_) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                file.as_file()
                    .set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_keep_unknown_keys_and_other_servers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mcp.json");
        std::fs::write(
            &path,
            r#"{"$comment": "mine", "mcpServers": {"keep": {"command": "x", "idleTimeoutSecs": 9}},
                "gateway": {"maxRounds": 3}}"#,
        )
        .expect("write");
        let mut file = ConfigFile::open(&path).expect("open");
        file.set_server(
            "time",
            json!({"command": "uvx", "args": ["mcp-server-time@1"]}),
        );
        file.set_disabled("keep", true).expect("disable");
        file.set_client(json!({"name": "cursor", "token": "t-123456"}));
        file.save().expect("save");
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(written["$comment"], "mine");
        assert_eq!(written["gateway"]["maxRounds"], 3);
        assert_eq!(written["mcpServers"]["keep"]["idleTimeoutSecs"], 9);
        assert_eq!(written["mcpServers"]["keep"]["disabled"], true);
        assert_eq!(written["gateway"]["clients"][0]["name"], "cursor");
        let mut file = ConfigFile::open(&path).expect("reopen");
        file.set_disabled("keep", false).expect("enable");
        assert!(file.remove_client("cursor"));
        assert!(file.remove_server("time"));
        file.save().expect("save");
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert!(written["mcpServers"]["keep"].get("disabled").is_none());
        assert!(written["mcpServers"].get("time").is_none());
        // Nothing but the file itself is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn an_edit_that_would_not_load_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mcp.yaml");
        let mut file = ConfigFile::open(&path).expect("missing is empty");
        file.set_server("model-runner", json!({"command": "x"}));
        assert!(matches!(file.save(), Err(EditError::Invalid(_))));
        assert!(!path.exists());
        let mut file = ConfigFile::open(&path).expect("open");
        file.set_server("time", json!({"command": "uvx"}));
        file.save().expect("save yaml");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("mcpServers:"), "{text}");
        assert!(ConfigFile::open(&path).expect("reopen").has_server("time"));
    }

    #[test]
    fn unknown_servers_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = ConfigFile::open(&dir.path().join("mcp.json")).expect("open");
        let err = file.set_disabled("ghost", true).expect_err("unknown");
        assert!(err.to_string().contains("ghost"));
    }
}
