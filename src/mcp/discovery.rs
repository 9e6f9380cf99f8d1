//! Dynamic discovery: instead of every tool's schema in the prompt, the model gets two meta-tools,
//! `mcp_find {query}` (a ranked search over tool names and descriptions) and `mcp_call {name, arguments}`.
//! Ranking is term overlap, name terms weighing more than description terms, with prefix matches for
//! partial words: enough for catalogues of tens to hundreds of tools, with no model in the loop.

use serde_json::{Value, json};

pub const FIND: &str = "mcp_find";
pub const CALL: &str = "mcp_call";
pub const DEFAULT_RESULTS: usize = 5;
pub const MAX_RESULTS: usize = 20;

/// What the ranking sees of a tool.
pub struct Candidate<'a> {
    pub name: &'a str,
    pub description: &'a str,
}

fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(|t| {
            // A plain plural matches its singular ("files" and "file").
            let t = t.to_ascii_lowercase();
            match t.strip_suffix('s') {
                Some(stem) if stem.len() >= 3 && !stem.ends_with('s') => stem.to_string(),
                _ => t,
            }
        })
        .collect()
}

fn term_score(query: &str, words: &[String]) -> f64 {
    words
        .iter()
        .map(|w| {
            if w == query {
                1.0
            } else if query.len() >= 3
                && (w.starts_with(query) || query.starts_with(w.as_str()) && w.len() >= 3)
            {
                0.5
            } else {
                0.0
            }
        })
        .fold(0.0, f64::max)
}

/// Indices of the best matches for `query`, best first; ties keep catalogue order.
pub fn rank(query: &str, candidates: &[Candidate<'_>], limit: usize) -> Vec<usize> {
    let query_terms = terms(query);
    let mut scored: Vec<(usize, f64)> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let name = terms(c.name);
            let description = terms(c.description);
            let score = query_terms
                .iter()
                .map(|q| 3.0 * term_score(q, &name) + term_score(q, &description))
                .sum::<f64>();
            (i, score)
        })
        .filter(|(_, s)| *s > 0.0)
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().take(limit).map(|(i, _)| i).collect()
}

/// The meta-tools' argument schemas.
pub fn find_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What the tool should do, in a few words."},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_RESULTS}
        },
        "required": ["query"]
    })
}

pub fn call_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "A tool name that mcp_find returned."},
            "arguments": {"type": "object", "description": "The tool's arguments, as its inputSchema describes."}
        },
        "required": ["name", "arguments"]
    })
}

pub const FIND_DESCRIPTION: &str = "Search the available tools by what they do. Returns the best matches with their names, descriptions and input schemas; call one with mcp_call.";
pub const CALL_DESCRIPTION: &str =
    "Call a tool found with mcp_find, by name, with arguments that follow its inputSchema.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_matches_outrank_description_matches() {
        let tools = [
            Candidate {
                name: "time__get_current_time",
                description: "Get current time in a timezone",
            },
            Candidate {
                name: "fs__list_directory",
                description: "List files in a directory",
            },
            Candidate {
                name: "fs__read_file",
                description: "Read a file; also lists its size",
            },
        ];
        assert_eq!(rank("list directory", &tools, 5), vec![1, 2]);
        assert_eq!(rank("current time", &tools, 5), vec![0]);
        assert_eq!(
            rank("files", &tools, 5),
            vec![2, 1],
            "read_file names a file; list_directory describes files"
        );
        assert!(rank("weather", &tools, 5).is_empty());
    }
}
