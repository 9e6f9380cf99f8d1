//! Codex's `config.toml`: the gateway's `[mcp_servers.model-runner]` table written, read and removed
//! with `toml_edit`, so the user's comments, formatting and other tables stay as they were. A file that
//! is not TOML, or whose `mcp_servers` is not a table, is refused rather than rewritten.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use toml_edit::{Array, DocumentMut, InlineTable, Item, Table};

use super::{ClientConfigError, ENTRY_NAME, write_text_with_backup};

/// The table that holds Codex's MCP servers.
const SERVERS: &str = "mcp_servers";

/// Writes `entry` (the JSON form `McpClient::entry` gives) as `[mcp_servers.model-runner]`.
pub(super) fn connect(path: &Path, entry: &Value) -> Result<Option<PathBuf>, ClientConfigError> {
    let mut document = read(path)?;
    servers(&mut document, path)?.insert(ENTRY_NAME, Item::Table(table_of(entry)));
    write_text_with_backup(path, &document.to_string())
}

/// Removes the gateway's table; false when there was none.
pub(super) fn disconnect(path: &Path) -> Result<bool, ClientConfigError> {
    let mut document = read(path)?;
    let removed = document
        .get_mut(SERVERS)
        .and_then(Item::as_table_like_mut)
        .and_then(|servers| servers.remove(ENTRY_NAME))
        .is_some();
    if removed {
        write_text_with_backup(path, &document.to_string())?;
    }
    Ok(removed)
}

/// The gateway's table as JSON, if connected.
pub(super) fn connected(path: &Path) -> Result<Option<Value>, ClientConfigError> {
    let document = read(path)?;
    Ok(document
        .get(SERVERS)
        .and_then(Item::as_table_like)
        .and_then(|servers| servers.get(ENTRY_NAME))
        .map(json_of))
}

fn read(path: &Path) -> Result<DocumentMut, ClientConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(ClientConfigError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    text.parse()
        .map_err(|e: toml_edit::TomlError| ClientConfigError::Parse {
            path: path.to_owned(),
            message: format!("not TOML: {}", e.message()),
        })
}

/// The `mcp_servers` table, created when missing (as a dotted parent, so no empty header appears) and
/// turned from an inline table into a standard one when it was written inline.
fn servers<'d>(
    document: &'d mut DocumentMut,
    path: &Path,
) -> Result<&'d mut Table, ClientConfigError> {
    let item = document.entry(SERVERS).or_insert_with(|| {
        let mut table = Table::new();
        table.set_implicit(true);
        Item::Table(table)
    });
    if let Some(inline) = item.as_inline_table() {
        *item = Item::Table(inline.clone().into_table());
    }
    item.as_table_mut().ok_or_else(|| ClientConfigError::Parse {
        path: path.to_owned(),
        message: format!("`{SERVERS}` is not a table"),
    })
}

/// A JSON object of strings, string arrays and string maps as a TOML table (maps inline, as Codex's
/// documentation writes `env`).
fn table_of(entry: &Value) -> Table {
    let mut table = Table::new();
    for (key, value) in entry.as_object().into_iter().flatten() {
        let item = match value {
            Value::String(s) => toml_edit::value(s.as_str()),
            Value::Array(items) => {
                let array: Array = items.iter().filter_map(Value::as_str).collect();
                toml_edit::value(array)
            }
            Value::Object(map) => {
                let inline: InlineTable = map
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                    .collect();
                toml_edit::value(inline)
            }
            _ => continue,
        };
        table.insert(key, item);
    }
    table
}

/// A TOML item as JSON, for `ls` (strings, arrays and tables; other values as their text).
fn json_of(item: &Item) -> Value {
    match item {
        Item::Value(value) => json_of_value(value),
        Item::Table(table) => Value::Object(
            table
                .iter()
                .map(|(k, v)| (k.to_string(), json_of(v)))
                .collect::<Map<_, _>>(),
        ),
        Item::ArrayOfTables(tables) => Value::Array(
            tables
                .iter()
                .map(|t| json_of(&Item::Table(t.clone())))
                .collect(),
        ),
        Item::None => Value::Null,
    }
}

fn json_of_value(value: &toml_edit::Value) -> Value {
    match value {
        toml_edit::Value::String(s) => Value::String(s.value().clone()),
        toml_edit::Value::Boolean(b) => Value::Bool(*b.value()),
        toml_edit::Value::Array(items) => Value::Array(items.iter().map(json_of_value).collect()),
        toml_edit::Value::InlineTable(table) => Value::Object(
            table
                .iter()
                .map(|(k, v)| (k.to_string(), json_of_value(v)))
                .collect(),
        ),
        other => Value::String(other.to_string().trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::super::{Link, McpClient, TOKEN_ENV};
    use super::*;

    const USERS_FILE: &str = r#"# my Codex settings
model = "o4-mini"   # the default model

[mcp_servers.docs]
# a server of mine
command = "npx"
args = ["-y", "docs-server"]

[profiles.fast]
model = "gpt-4.1-mini"
"#;

    /// `text` without the gateway's table (its header up to the blank line after it).
    fn without_our_table(text: &str) -> String {
        let mut skipping = false;
        let mut kept = String::new();
        for line in text.split_inclusive('\n') {
            if line.trim_end() == format!("[mcp_servers.{ENTRY_NAME}]") {
                skipping = true;
            }
            if !skipping {
                kept.push_str(line);
            }
            if skipping && line.trim().is_empty() {
                skipping = false;
            }
        }
        kept
    }

    /// A HOME of its own, with Codex's file where `default_path` finds it.
    fn codex_home() -> (tempfile::TempDir, PathBuf) {
        let home = tempfile::tempdir().expect("tempdir");
        let path = home.path().join(".codex").join("config.toml");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        (home, path)
    }

    #[test]
    fn connect_keeps_comments_and_tables_and_writes_codexs_schema() {
        let (_home, path) = codex_home();
        std::fs::write(&path, USERS_FILE).expect("write");
        let link = Link::Http {
            url: "http://127.0.0.1:12434/mcp".into(),
            token: "mrt_secret".into(),
        };
        let backup = McpClient::Codex
            .connect(&path, &link)
            .expect("connect")
            .expect("a backup");
        assert_eq!(std::fs::read_to_string(backup).expect("backup"), USERS_FILE);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            without_our_table(&text),
            USERS_FILE,
            "the rest is kept verbatim"
        );
        assert!(
            !text.contains("mrt_secret"),
            "the token stays out of the file"
        );
        let parsed: toml_edit::DocumentMut = text.parse().expect("TOML");
        let ours = &parsed["mcp_servers"][ENTRY_NAME];
        assert_eq!(ours["url"].as_str(), Some("http://127.0.0.1:12434/mcp"));
        assert_eq!(ours["bearer_token_env_var"].as_str(), Some(TOKEN_ENV));
        assert_eq!(
            parsed["mcp_servers"]["docs"]["command"].as_str(),
            Some("npx")
        );
        assert_eq!(
            parsed["profiles"]["fast"]["model"].as_str(),
            Some("gpt-4.1-mini")
        );
        let listed = McpClient::Codex
            .connected(&path)
            .expect("read")
            .expect("connected");
        assert_eq!(listed["url"], "http://127.0.0.1:12434/mcp");

        assert!(McpClient::Codex.disconnect(&path).expect("disconnect"));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(ENTRY_NAME), "{text}");
        assert!(text.contains("# a server of mine") && text.contains("[profiles.fast]"));
        assert!(McpClient::Codex.connected(&path).expect("read").is_none());
        assert!(!McpClient::Codex.disconnect(&path).expect("again"));
    }

    #[test]
    fn stdio_entries_carry_command_args_and_env_and_replace_an_old_entry() {
        let (_home, path) = codex_home();
        let mut env = BTreeMap::new();
        env.insert(TOKEN_ENV.to_string(), "mrt_1".to_string());
        let link = Link::Stdio {
            command: "/usr/local/bin/model".into(),
            args: vec!["mcp".into(), "--mcp-config".into(), "/h/mcp.json".into()],
            env,
        };
        assert!(
            McpClient::Codex
                .connect(&path, &link)
                .expect("connect")
                .is_none()
        );
        McpClient::Codex.connect(&path, &link).expect("again");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text.matches("[mcp_servers.model-runner]").count(),
            1,
            "{text}"
        );
        assert!(
            !text.contains("[mcp_servers]\n"),
            "no empty parent header:\n{text}"
        );
        let listed = McpClient::Codex
            .connected(&path)
            .expect("read")
            .expect("connected");
        assert_eq!(
            listed,
            json!({"args": ["mcp", "--mcp-config", "/h/mcp.json"], "command": "/usr/local/bin/model",
                   "env": {TOKEN_ENV: "mrt_1"}})
        );
    }

    #[test]
    fn inline_server_tables_are_expanded_and_broken_files_refused() {
        let (_home, path) = codex_home();
        std::fs::write(&path, "mcp_servers = { docs = { command = \"x\" } }\n").expect("write");
        let link = Link::Http {
            url: "http://127.0.0.1:1/mcp".into(),
            token: "t".into(),
        };
        McpClient::Codex.connect(&path, &link).expect("connect");
        let parsed: toml_edit::DocumentMut = std::fs::read_to_string(&path)
            .expect("read")
            .parse()
            .expect("TOML");
        assert_eq!(parsed["mcp_servers"]["docs"]["command"].as_str(), Some("x"));
        assert!(parsed["mcp_servers"][ENTRY_NAME]["url"].is_str());

        std::fs::write(&path, "mcp_servers = 3\n").expect("write");
        assert!(matches!(
            McpClient::Codex.connect(&path, &link),
            Err(ClientConfigError::Parse { .. })
        ));
        std::fs::write(&path, "[broken\n").expect("write");
        let error = McpClient::Codex
            .connect(&path, &link)
            .expect_err("not TOML");
        assert!(error.to_string().contains("not TOML"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "[broken\n");
    }

    #[test]
    fn the_default_path_follows_codex_home() {
        let (home, path) = codex_home();
        // SAFETY (of the test): only this test reads CODEX_HOME.
        unsafe { std::env::set_var("CODEX_HOME", path.parent().expect("parent")) };
        assert_eq!(McpClient::Codex.default_path().expect("path"), path);
        unsafe { std::env::remove_var("CODEX_HOME") };
        drop(home);
    }
}
