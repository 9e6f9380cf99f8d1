//! What an answer becomes in the Messages API: the pieces an answer is read into (`Piece`), the content
//! blocks of a whole `message`, `stop_reason`, `usage` and ids. The stream (`stream.rs`) turns the same
//! pieces into events, so a streamed and a whole answer carry the same blocks.

use serde_json::{Value, json};

use crate::engine::FinishReason;
use crate::engine::tokenizer::Tokenizer;
use crate::mcp::{CallRecord, naming};
use crate::scheduler::Usage;
use crate::tools::parser::{ToolCall, ToolEvent};

/// One piece of an answer, in the order it is generated.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Reasoning text, shown as a `thinking` block. The one place thinking blocks come from: the
    /// reasoning splitter (layered in front of the tool-call parser) is to produce these.
    Thinking(String),
    Text(String),
    /// A client tool call begins (`tool_use`).
    ToolStart {
        id: String,
        name: String,
    },
    /// More of the open call's input JSON.
    ToolInput(String),
    /// The server starts an MCP call (`mcp_tool_use`).
    McpUse {
        id: String,
        name: String,
        server: String,
        input: Value,
    },
    /// An MCP call's result (`mcp_tool_result`).
    McpResult {
        id: String,
        is_error: bool,
        text: String,
    },
}

/// Anthropic's id for a tool call the parser named `call_...`.
pub fn tool_use_id(id: &str) -> String {
    format!("toolu_{}", id.strip_prefix("call_").unwrap_or(id))
}

/// Anthropic's id for an MCP call.
pub fn mcp_tool_use_id(id: &str) -> String {
    format!("mcptoolu_{}", id.strip_prefix("call_").unwrap_or(id))
}

/// A message id, `msg_` and 24 hex digits.
pub fn message_id() -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("msg_{:024x}", n & ((1u128 << 96) - 1))
}

/// A parsed piece of the answer as a `Piece`.
pub fn from_tool_event(event: ToolEvent) -> Piece {
    match event {
        ToolEvent::Content(text) => Piece::Text(text),
        ToolEvent::CallStart { id, name, .. } => Piece::ToolStart {
            id: tool_use_id(&id),
            name,
        },
        ToolEvent::CallArguments { delta, .. } => Piece::ToolInput(delta),
    }
}

/// A whole client call as pieces (the tool loop hands its client calls over whole).
pub fn call_pieces(call: &ToolCall) -> [Piece; 2] {
    [
        Piece::ToolStart {
            id: tool_use_id(&call.id),
            name: call.name.clone(),
        },
        Piece::ToolInput(call.arguments.clone()),
    ]
}

/// A gateway tool name as Anthropic's MCP connector shows it: the server and its own tool name. The
/// gateway's meta-tools (`mcp_find`, `run_js`) belong to no one server.
pub fn mcp_name(namespaced: &str) -> (String, String) {
    match namespaced.split_once(naming::SEPARATOR) {
        Some((server, tool)) => (server.to_string(), tool.to_string()),
        None => ("gateway".to_string(), namespaced.to_string()),
    }
}

/// The pieces of one MCP call the server ran.
pub fn mcp_pieces(id: &str, record: &CallRecord) -> [Piece; 2] {
    let (_, name) = mcp_name(&record.name);
    [
        Piece::McpUse {
            id: mcp_tool_use_id(id),
            name,
            server: record.server.clone(),
            input: record.arguments.clone(),
        },
        mcp_result_piece(id, record),
    ]
}

/// An MCP call's result piece.
pub fn mcp_result_piece(id: &str, record: &CallRecord) -> Piece {
    Piece::McpResult {
        id: mcp_tool_use_id(id),
        is_error: record.failed(),
        text: record.output_text(),
    }
}

/// A tool call's input JSON as the object `input` must be (anything else is kept under `arguments`).
pub fn input_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => object,
        Ok(other) => json!({"arguments": other}),
        Err(_) if arguments.trim().is_empty() => json!({}),
        Err(_) => json!({"arguments": arguments}),
    }
}

/// The content block a piece opens; `None` for pieces that continue the open block.
pub fn block_start(piece: &Piece) -> Option<Value> {
    Some(match piece {
        Piece::Thinking(_) => json!({"type": "thinking", "thinking": "", "signature": ""}),
        Piece::Text(_) => json!({"type": "text", "text": ""}),
        Piece::ToolStart { id, name } => {
            json!({"type": "tool_use", "id": id, "name": name, "input": {}})
        }
        Piece::ToolInput(_) => return None,
        Piece::McpUse {
            id,
            name,
            server,
            input,
        } => {
            json!({"type": "mcp_tool_use", "id": id, "name": name, "server_name": server, "input": input})
        }
        Piece::McpResult { id, is_error, text } => json!({
            "type": "mcp_tool_result", "tool_use_id": id, "is_error": is_error,
            "content": [{"type": "text", "text": text}]
        }),
    })
}

/// Content blocks built from pieces, for a whole message.
#[derive(Debug, Default)]
pub struct Blocks {
    blocks: Vec<Value>,
    /// The open tool_use block's input JSON so far.
    input: Option<String>,
}

impl Blocks {
    pub fn push(&mut self, piece: Piece) {
        match piece {
            Piece::Text(text) | Piece::Thinking(text) if text.is_empty() => {}
            Piece::Text(text) => match self.blocks.last_mut() {
                Some(last) if last["type"] == "text" && self.input.is_none() => {
                    let joined = format!("{}{text}", last["text"].as_str().unwrap_or(""));
                    last["text"] = json!(joined);
                }
                _ => self.open(json!({"type": "text", "text": text})),
            },
            Piece::Thinking(text) => match self.blocks.last_mut() {
                Some(last) if last["type"] == "thinking" => {
                    let joined = format!("{}{text}", last["thinking"].as_str().unwrap_or(""));
                    last["thinking"] = json!(joined);
                }
                _ => self.open(json!({"type": "thinking", "thinking": text, "signature": ""})),
            },
            Piece::ToolInput(delta) => {
                if let Some(input) = self.input.as_mut() {
                    input.push_str(&delta);
                }
            }
            other => {
                if let Some(start) = block_start(&other) {
                    self.open(start);
                }
                if matches!(other, Piece::ToolStart { .. }) {
                    self.input = Some(String::new());
                }
            }
        }
    }

    fn open(&mut self, block: Value) {
        self.close_input();
        self.blocks.push(block);
    }

    fn close_input(&mut self) {
        if let (Some(input), Some(last)) = (self.input.take(), self.blocks.last_mut()) {
            last["input"] = input_object(&input);
        }
    }

    /// Whether a client tool call is among the blocks.
    pub fn has_tool_use(&self) -> bool {
        self.blocks.iter().any(|b| b["type"] == "tool_use")
    }

    /// The blocks; text that is only layout around tool calls is left out, and an answer with no
    /// block at all gets one empty text block (clients read `content[0]`).
    pub fn finish(mut self) -> Vec<Value> {
        self.close_input();
        if self.has_tool_use() {
            self.blocks.retain(|b| {
                b["type"] != "text" || b["text"].as_str().is_some_and(|t| !t.trim().is_empty())
            });
        }
        if self.blocks.is_empty() {
            self.blocks.push(json!({"type": "text", "text": ""}));
        }
        self.blocks
    }
}

/// Anthropic's `stop_reason`.
pub fn stop_reason(
    finish: Option<FinishReason>,
    called: bool,
    stop_sequence: Option<&str>,
) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "max_tokens",
        _ if called => "tool_use",
        _ if stop_sequence.is_some() => "stop_sequence",
        _ => "end_turn",
    }
}

/// Which of `stops` ended a generation of `tokens` (the first to occur in their text), if one did: the
/// scheduler reports a stop string and an end-of-turn token alike as `Stop`.
pub fn stop_sequence_hit(
    tokenizer: &Tokenizer,
    tokens: &[u32],
    stops: &[String],
) -> Option<String> {
    if stops.is_empty() || tokens.is_empty() {
        return None;
    }
    let text = tokenizer.decode(tokens, false);
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
        .min_by_key(|(at, _)| *at)
        .map(|(_, s)| s.clone())
}

/// Anthropic's `usage`: input tokens not read from the prefix cache, those that were, and output.
pub fn usage_json(usage: Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(usage.cached_tokens),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    })
}

/// A whole `message`.
pub fn message_json(
    id: &str,
    model: &str,
    content: Vec<Value>,
    stop_reason: &str,
    stop_sequence: Option<String>,
    usage: Usage,
) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_json(usage),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_build_text_and_tool_use_blocks() {
        let mut blocks = Blocks::default();
        for piece in [
            Piece::Text("Hel".into()),
            Piece::Text("lo".into()),
            Piece::ToolStart {
                id: "toolu_1".into(),
                name: "get".into(),
            },
            Piece::ToolInput("{\"a\":".into()),
            Piece::ToolInput(" 1}".into()),
        ] {
            blocks.push(piece);
        }
        assert!(blocks.has_tool_use());
        let content = blocks.finish();
        assert_eq!(content[0], json!({"type": "text", "text": "Hello"}));
        assert_eq!(
            content[1],
            json!({"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"a": 1}})
        );
    }

    #[test]
    fn layout_around_calls_is_dropped_and_nothing_is_one_empty_block() {
        let mut blocks = Blocks::default();
        blocks.push(Piece::Text("\n".into()));
        blocks.extend_call();
        assert_eq!(blocks.finish().len(), 1);
        assert_eq!(
            Blocks::default().finish(),
            vec![json!({"type": "text", "text": ""})]
        );
    }

    impl Blocks {
        fn extend_call(&mut self) {
            let call = ToolCall {
                id: "call_7".into(),
                name: "f".into(),
                arguments: "{}".into(),
            };
            for piece in call_pieces(&call) {
                self.push(piece);
            }
        }
    }

    #[test]
    fn stop_reasons_follow_anthropic() {
        assert_eq!(
            stop_reason(Some(FinishReason::Length), true, None),
            "max_tokens"
        );
        assert_eq!(
            stop_reason(Some(FinishReason::Stop), true, None),
            "tool_use"
        );
        assert_eq!(
            stop_reason(Some(FinishReason::Stop), false, Some("X")),
            "stop_sequence"
        );
        assert_eq!(
            stop_reason(Some(FinishReason::Stop), false, None),
            "end_turn"
        );
    }

    #[test]
    fn ids_and_inputs_take_anthropic_shapes() {
        assert_eq!(tool_use_id("call_abc"), "toolu_abc");
        assert_eq!(mcp_tool_use_id("call_abc"), "mcptoolu_abc");
        assert!(message_id().starts_with("msg_"));
        assert_eq!(input_object("[1]"), json!({"arguments": [1]}));
        assert_eq!(input_object(""), json!({}));
        assert_eq!(
            mcp_name("fs__list_directory"),
            ("fs".into(), "list_directory".into())
        );
    }

    #[test]
    fn the_stop_sequence_that_ended_an_answer_is_the_first_in_its_text() {
        let metadata = crate::engine::tokenizer::test_vocab::gpt2_metadata();
        let tokenizer = Tokenizer::from_gguf(&metadata).unwrap();
        // "a", "b", "ab": the text "abab".
        let tokens = [0, 1, 2];
        let stops = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            stop_sequence_hit(&tokenizer, &tokens, &stops(&["ba", "ab"])),
            Some("ab".into())
        );
        assert_eq!(
            stop_sequence_hit(&tokenizer, &tokens, &stops(&["bb"])),
            None
        );
        assert_eq!(stop_sequence_hit(&tokenizer, &tokens, &[]), None);
        // An end-of-turn token is no stop sequence.
        assert_eq!(stop_sequence_hit(&tokenizer, &[0, 3], &stops(&["b"])), None);
    }

    #[test]
    fn cached_tokens_are_reported_apart_from_input() {
        let usage = usage_json(Usage {
            prompt_tokens: 10,
            completion_tokens: 3,
            cached_tokens: 4,
        });
        assert_eq!(usage["input_tokens"], 6);
        assert_eq!(usage["cache_read_input_tokens"], 4);
        assert_eq!(usage["output_tokens"], 3);
    }
}
