//! Gateway names for what servers offer. Tools and prompts: `server__name`, sanitised to what every
//! model API accepts (`^[A-Za-z0-9_-]{1,64}$`); two that sanitise to the same name keep it in
//! configuration order for the first and get a numbered suffix for the next, so the choice is
//! deterministic across restarts; it is logged, never fatal.
//!
//! Resources: `model-runner://SERVER/ORIGINAL`, the server's name percent-encoded as the authority
//! (only `A-Za-z0-9-._~` stay as they are) and the server's own URI (or URI template) kept verbatim
//! after the first `/`. The scheme is reversible without any table: everything after the authority is
//! the upstream's URI, so a template's expansion is still a URI the gateway can route, two servers
//! offering the same URI stay apart, and a server cannot offer a URI that routes to another server
//! (its URIs are always put under its own name, whatever they contain).

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

/// The scheme of the gateway's resource URIs.
pub const RESOURCE_SCHEME: &str = "model-runner";
/// The longest upstream resource URI (or template) the gateway relays; longer ones are left out.
pub const MAX_URI_LEN: usize = 8 * 1024;

/// `server`'s resource `uri` (or URI template) as the gateway offers it.
pub fn resource_uri(server: &str, uri: &str) -> String {
    let mut out = String::with_capacity(RESOURCE_SCHEME.len() + server.len() + uri.len() + 4);
    out.push_str(RESOURCE_SCHEME);
    out.push_str("://");
    for byte in server.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out.push('/');
    out.push_str(uri);
    out
}

/// The server and its own URI behind a gateway resource URI; `None` for a URI of another scheme or a
/// server part that is not well-formed percent-encoded UTF-8.
pub fn split_resource_uri(uri: &str) -> Option<(String, &str)> {
    let rest = uri
        .get(..RESOURCE_SCHEME.len() + 3)
        .filter(|prefix| prefix.eq_ignore_ascii_case(&format!("{RESOURCE_SCHEME}://")))
        .map(|_| &uri[RESOURCE_SCHEME.len() + 3..])?;
    let (server, original) = rest.split_once('/')?;
    let mut bytes = Vec::with_capacity(server.len());
    let mut chars = server.bytes();
    while let Some(byte) = chars.next() {
        if byte == b'%' {
            let hex = [chars.next()?, chars.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            bytes.push(byte);
        }
    }
    let server = String::from_utf8(bytes).ok()?;
    (!server.is_empty()).then_some((server, original))
}

/// Whether a server's resource URI may be relayed: not empty, within `MAX_URI_LEN`, and free of
/// control characters (which no URI has and which would garble logs and clients' displays).
pub fn is_relayable_uri(uri: &str) -> bool {
    !uri.is_empty() && uri.len() <= MAX_URI_LEN && !uri.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_uris_round_trip_and_stay_apart_per_server() {
        let uri = resource_uri("everything", "demo://resource/static/document/a.md");
        assert_eq!(
            uri,
            "model-runner://everything/demo://resource/static/document/a.md"
        );
        assert_eq!(
            split_resource_uri(&uri),
            Some(("everything".into(), "demo://resource/static/document/a.md"))
        );
        // Odd server names and hostile URIs: the server part is always the server's own name.
        for (server, original) in [
            ("my server/x", "file:///etc/passwd"),
            ("ünï", "model-runner://other/secret"),
            ("a%b", ""),
            ("fs", "x/../../y?q=1#frag"),
        ] {
            let uri = resource_uri(server, original);
            assert_eq!(split_resource_uri(&uri), Some((server.into(), original)));
        }
        assert_ne!(resource_uri("a", "x:/1"), resource_uri("b", "x:/1"));
        // Templates keep their expressions after the server part, so expansions route.
        let template = resource_uri("everything", "demo://resource/dynamic/text/{id}");
        let expanded = template.replace("{id}", "7");
        assert_eq!(
            split_resource_uri(&expanded),
            Some(("everything".into(), "demo://resource/dynamic/text/7"))
        );
    }

    #[test]
    fn foreign_or_broken_resource_uris_route_nowhere() {
        for uri in [
            "file:///etc/passwd",
            "model-runner://",
            "model-runner://nopath",
            "model-runner:///x",
            "model-runner://%zz/x",
            "model-runner://%ff/x",
            "model-runner://%4/x",
            "mo",
        ] {
            assert_eq!(split_resource_uri(uri), None, "{uri}");
        }
        assert!(is_relayable_uri("demo://x"));
        assert!(!is_relayable_uri(""));
        assert!(!is_relayable_uri("demo://x\ny"));
        assert!(!is_relayable_uri(&"x".repeat(MAX_URI_LEN + 1)));
    }

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
