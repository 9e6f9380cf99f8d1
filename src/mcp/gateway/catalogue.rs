//! Which tools exist and who sees them: the namespaced tools of every server that has listed its own
//! (`server__tool`, names assigned by `naming`), each with a compiled checker for its input schema,
//! rebuilt when a server's tool list changes; and the views of it that callers ask for (a caller's
//! tools, one server's tools for a chat request, `mcp_find`'s ranked search).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rmcp::model::Tool;
use serde_json::{Map, Value};

use super::super::code_mode;
use super::super::discovery::{self, Candidate};
use super::super::naming::{self, NameTable};
use super::super::policy::Caller;
use super::super::upstream::Upstream;
use super::{Gateway, McpError, read, write};

/// A tool as the gateway offers it.
pub struct Entry {
    /// Namespaced: `server__tool`.
    pub name: String,
    pub server: String,
    /// The tool as its server describes it (its own name).
    pub tool: Tool,
    validator: Option<Arc<jsonschema::Validator>>,
    pub(super) upstream: Arc<Upstream>,
}

impl Entry {
    pub fn description(&self) -> &str {
        self.tool.description.as_deref().unwrap_or("")
    }

    /// The tool's input schema, ready to be embedded in a larger one (a chat request's tool-call
    /// grammar puts it under `arguments`): a schema with local references (`#/$defs/..`, recursive
    /// ones included) gets an `$id`, so that they resolve against it and not the embedding document.
    pub fn input_schema(&self) -> Value {
        crate::tools::embeddable_schema(
            &Value::Object((*self.tool.input_schema).clone()),
            &self.name,
        )
    }

    /// Checks `arguments` against the tool's input schema (a tool whose schema did not compile takes
    /// anything); every problem is named, with where in the arguments it is.
    pub(super) fn check_arguments(&self, arguments: &Map<String, Value>) -> Result<(), McpError> {
        let Some(validator) = &self.validator else {
            return Ok(());
        };
        let instance = Value::Object(arguments.clone());
        let problems: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(McpError::InvalidArguments {
            tool: self.name.clone(),
            message: problems.join("; "),
        })
    }

    /// Whether the server declares the tool free of side effects (then its results may be cached).
    pub(super) fn read_only(&self) -> bool {
        self.tool
            .annotations
            .as_ref()
            .and_then(|a| a.read_only_hint)
            .unwrap_or(false)
    }
}

/// The tools of every server that has listed them, in configuration order.
#[derive(Default)]
pub(super) struct Catalogue {
    entries: Vec<Arc<Entry>>,
    by_name: HashMap<String, usize>,
}

impl Catalogue {
    pub(super) fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    pub(super) fn get(&self, name: &str) -> Option<&Arc<Entry>> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }
}

impl Gateway {
    /// Lists every server (or only `only`) that never listed its tools, starting it; failures are
    /// logged and the server left out.
    pub(super) async fn discover(&self, only: Option<&str>) {
        let setup = self.setup();
        let pending: Vec<_> = setup
            .upstreams
            .iter()
            .filter(|u| u.known_tools().is_none() && only.is_none_or(|name| u.name() == name))
            .cloned()
            .collect();
        let results = futures::future::join_all(pending.iter().map(|u| u.tools())).await;
        for (upstream, result) in pending.iter().zip(results) {
            if let Err(e) = result {
                tracing::warn!(server = %upstream.name(), "MCP server's tools are not available: {e}");
            }
        }
    }

    /// The catalogue, once `only` (or every server) has listed its tools.
    pub(super) async fn catalogue_of(&self, only: Option<&str>) -> Arc<Catalogue> {
        self.discover(only).await;
        if self.changes.dirty.swap(false, Ordering::SeqCst) {
            let setup = self.setup();
            let catalogue = Arc::new(build_catalogue(&setup.upstreams));
            *write(&self.catalogue) = catalogue;
        }
        read(&self.catalogue).clone()
    }

    /// The server of a namespaced tool in the catalogue as it stands (no server is started).
    pub(super) fn server_of(&self, name: &str) -> Option<String> {
        read(&self.catalogue)
            .get(name)
            .map(|entry| entry.server.clone())
    }

    /// The tools `caller` may use, gateway tools excluded.
    pub async fn tools(&self, caller: &Caller) -> Vec<Arc<Entry>> {
        self.tools_of(caller, None).await
    }

    async fn tools_of(&self, caller: &Caller, only: Option<&str>) -> Vec<Arc<Entry>> {
        let catalogue = self.catalogue_of(only).await;
        let setup = self.setup();
        catalogue
            .entries
            .iter()
            .filter(|e| setup.policy.allows(caller, &e.server, &e.name))
            .cloned()
            .collect()
    }

    /// One server's tools for a chat request (`{"type": "mcp", "server_label": ..}`), optionally only
    /// those named in `allowed` (by the server's own names or namespaced ones).
    pub async fn server_tools(
        &self,
        caller: &Caller,
        server: &str,
        allowed: Option<&[String]>,
    ) -> Result<Vec<Arc<Entry>>, McpError> {
        if !self.server_names().iter().any(|s| s == server) {
            return Err(McpError::UnknownServer(server.to_string()));
        }
        Ok(self
            .tools_of(caller, Some(server))
            .await
            .into_iter()
            .filter(|e| e.server == server)
            .filter(|e| {
                allowed.is_none_or(|a| a.iter().any(|n| n == e.tool.name.as_ref() || n == &e.name))
            })
            .collect())
    }

    /// Ranked search for `mcp_find`, over what `caller` may use (optionally only some servers).
    pub async fn find(
        &self,
        caller: &Caller,
        query: &str,
        limit: usize,
        servers: Option<&[String]>,
    ) -> Vec<Arc<Entry>> {
        let tools: Vec<Arc<Entry>> = self
            .tools(caller)
            .await
            .into_iter()
            .filter(|e| servers.is_none_or(|s| s.contains(&e.server)))
            .collect();
        let candidates: Vec<Candidate<'_>> = tools
            .iter()
            .map(|e| Candidate {
                name: &e.name,
                description: e.description(),
            })
            .collect();
        discovery::rank(query, &candidates, limit)
            .into_iter()
            .map(|i| tools[i].clone())
            .collect()
    }
}

pub(super) fn build_catalogue(upstreams: &[Arc<Upstream>]) -> Catalogue {
    let mut names = NameTable::default();
    names.reserve(discovery::FIND);
    names.reserve(discovery::CALL);
    names.reserve(code_mode::RUN_JS);
    let mut catalogue = Catalogue::default();
    for upstream in upstreams {
        for tool in upstream.known_tools().unwrap_or_default() {
            let name = names.assign(upstream.name(), &tool.name);
            debug_assert!(naming::is_valid(&name));
            let schema = Value::Object((*tool.input_schema).clone());
            let validator = match input_validator(&schema) {
                Ok(v) => Some(Arc::new(v)),
                Err(e) => {
                    tracing::warn!(server = %upstream.name(), tool = %tool.name, "input schema not checkable, arguments pass unchecked: {e}");
                    None
                }
            };
            catalogue
                .by_name
                .insert(name.clone(), catalogue.entries.len());
            catalogue.entries.push(Arc::new(Entry {
                name,
                server: upstream.name().to_string(),
                tool,
                validator,
                upstream: upstream.clone(),
            }));
        }
    }
    catalogue
}

/// Whether a schema holds a `$ref` to a place in its own document (`#...`), bounded by JSON's nesting.
/// A checker for a tool's `inputSchema`.
fn input_validator(
    schema: &Value,
) -> Result<jsonschema::Validator, jsonschema::ValidationError<'static>> {
    jsonschema::validator_for(schema)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The schema the Python SDK writes for a tree argument (`Node` refers to itself).
    fn tree_schema() -> Value {
        json!({"$defs": {"Node": {"properties": {"name": {"type": "string"},
            "children": {"default": [], "items": {"$ref": "#/$defs/Node"}, "type": "array"}},
            "required": ["name"], "type": "object"}},
            "properties": {"root": {"$ref": "#/$defs/Node"}}, "required": ["root"], "type": "object"})
    }

    #[test]
    fn recursive_schemas_check_arguments_all_the_way_down() {
        let validator = input_validator(&tree_schema()).expect("a recursive schema compiles");
        let valid = json!({"root": {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}});
        let problems: Vec<String> = validator
            .iter_errors(&valid)
            .map(|e| e.to_string())
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
        let invalid = json!({"root": {"name": "a", "children": [{"children": [{"name": 7}]}]}});
        assert!(validator.iter_errors(&invalid).count() >= 2);
    }
}
