//! Gateway tool names: `server__tool`, sanitised to what every model API accepts (`^[A-Za-z0-9_-]{1,64}$`).
//! Two tools that sanitise to the same name keep it in configuration order for the first and get a
//! numbered suffix for the next, so the choice is deterministic across restarts; it is logged, never fatal.

use std::collections::HashSet;

/// The separator between server and tool.
pub const SEPARATOR: &str = "__";
const MAX_LEN: usize = 64;

/// Keeps `[A-Za-z0-9_-]`, turns anything else into `_`.
fn sanitise(part: &str) -> String {
    part.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `server__tool`, sanitised and cut to 64 characters.
pub fn namespaced(server: &str, tool: &str) -> String {
    let mut name = format!("{}{SEPARATOR}{}", sanitise(server), sanitise(tool));
    name.truncate(MAX_LEN);
    if name.is_empty() {
        name.push('_');
    }
    name
}

/// Hands out unique names in the order tools are registered.
#[derive(Debug, Default)]
pub struct NameTable {
    taken: HashSet<String>,
}

impl NameTable {
    /// The name for `server`'s `tool`: its namespaced form, or that form with `_2`, `_3`... when taken.
    pub fn assign(&mut self, server: &str, tool: &str) -> String {
        let base = namespaced(server, tool);
        if self.taken.insert(base.clone()) {
            return base;
        }
        for n in 2.. {
            let suffix = format!("_{n}");
            let mut candidate = base.clone();
            candidate.truncate(MAX_LEN - suffix.len());
            candidate.push_str(&suffix);
            if self.taken.insert(candidate.clone()) {
                tracing::warn!(
                    server,
                    tool,
                    name = %candidate,
                    "MCP tool name collides with another after sanitising; renamed"
                );
                return candidate;
            }
        }
        unreachable!("some suffix is always free")
    }

    /// Reserves a name that no server tool may take (the gateway's own tools).
    pub fn reserve(&mut self, name: &str) {
        self.taken.insert(name.to_string());
    }
}

/// Whether `name` is valid for the OpenAI API and MCP clients.
pub fn is_valid(name: &str) -> bool {
    (1..=MAX_LEN).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised_and_bounded() {
        assert_eq!(namespaced("fs", "read_file"), "fs__read_file");
        assert_eq!(namespaced("my server", "get.env"), "my_server__get_env");
        let long = namespaced("s", &"x".repeat(100));
        assert_eq!(long.len(), 64);
        assert!(is_valid(&long));
        assert!(is_valid(&namespaced("ünï", "tööl")));
    }

    #[test]
    fn collisions_get_deterministic_suffixes() {
        let mut table = NameTable::default();
        assert_eq!(table.assign("a", "get.x"), "a__get_x");
        assert_eq!(table.assign("a", "get_x"), "a__get_x_2");
        assert_eq!(table.assign("a", "get x"), "a__get_x_3");
        let mut long = NameTable::default();
        let first = long.assign("s", &"y".repeat(80));
        let second = long.assign("s", &"y".repeat(90));
        assert_ne!(first, second);
        assert!(is_valid(&second) && second.ends_with("_2"));
    }

    #[test]
    fn reserved_names_are_never_handed_out() {
        let mut table = NameTable::default();
        table.reserve("mcp__find");
        assert_eq!(table.assign("mcp", "find"), "mcp__find_2");
    }
}
