//! A Messages stream: server-sent events named by their `type`, as the `anthropic` SDK's
//! `messages.stream()` reads them: `message_start`, `ping`, per content block `content_block_start`,
//! `content_block_delta` (`text_delta`, `thinking_delta`, `input_json_delta`) and `content_block_stop`,
//! then `message_delta` (stop reason, usage) and `message_stop`; a failure midway is an `error` event.
//! `EventWriter` turns an answer's pieces into those events, opening and closing blocks as they change.

use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use super::error::AnthropicError;
use super::response::{Piece, block_start, usage_json};
use crate::scheduler::Usage;

/// What kind of block is open (deltas only continue a block of their kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    ToolUse,
}

/// Turns pieces into events, numbering content blocks.
#[derive(Debug, Default)]
pub struct EventWriter {
    /// Blocks started so far (the next block's index).
    started: usize,
    open: Option<Open>,
    tool_use: bool,
}

impl EventWriter {
    /// The stream's opening events: `message_start` with an empty message, then a `ping`.
    pub fn start(id: &str, model: &str, input_tokens: usize) -> Vec<Value> {
        vec![
            json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": 0,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
            }}),
            json!({"type": "ping"}),
        ]
    }

    /// Whether a client tool call was streamed.
    pub fn has_tool_use(&self) -> bool {
        self.tool_use
    }

    /// The events for one piece.
    pub fn push(&mut self, piece: Piece) -> Vec<Value> {
        let mut events = Vec::new();
        let index = self.started.saturating_sub(1);
        match piece {
            Piece::Text(text) | Piece::Thinking(text) | Piece::ToolInput(text)
                if text.is_empty() => {}
            Piece::Text(text) if self.open == Some(Open::Text) => {
                events.push(delta(index, json!({"type": "text_delta", "text": text})));
            }
            Piece::Thinking(text) if self.open == Some(Open::Thinking) => {
                events.push(delta(
                    index,
                    json!({"type": "thinking_delta", "thinking": text}),
                ));
            }
            Piece::ToolInput(json) => {
                if self.open == Some(Open::ToolUse) {
                    events.push(delta(
                        index,
                        json!({"type": "input_json_delta", "partial_json": json}),
                    ));
                }
            }
            piece => {
                self.close(&mut events);
                let Some(block) = block_start(&piece) else {
                    return events;
                };
                let index = self.started;
                self.started += 1;
                events.push(
                    json!({"type": "content_block_start", "index": index, "content_block": block}),
                );
                match piece {
                    Piece::Text(text) => {
                        self.open = Some(Open::Text);
                        events.push(delta(index, json!({"type": "text_delta", "text": text})));
                    }
                    Piece::Thinking(text) => {
                        self.open = Some(Open::Thinking);
                        events.push(delta(
                            index,
                            json!({"type": "thinking_delta", "thinking": text}),
                        ));
                    }
                    Piece::ToolStart { .. } => {
                        self.tool_use = true;
                        self.open = Some(Open::ToolUse);
                    }
                    // MCP blocks arrive whole: started and stopped at once.
                    _ => events.push(json!({"type": "content_block_stop", "index": index})),
                }
            }
        }
        events
    }

    fn close(&mut self, events: &mut Vec<Value>) {
        if self.open.take().is_some() {
            events.push(json!({"type": "content_block_stop", "index": self.started - 1}));
        }
    }

    /// The closing events: the open block's stop (an empty text block if none was ever opened),
    /// `message_delta` and `message_stop`.
    pub fn finish(
        mut self,
        stop_reason: &str,
        stop_sequence: Option<String>,
        usage: Usage,
    ) -> Vec<Value> {
        let mut events = Vec::new();
        if self.started == 0 {
            events.push(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}));
            events.push(json!({"type": "content_block_stop", "index": 0}));
        }
        self.close(&mut events);
        events.push(json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": usage_json(usage),
        }));
        events.push(json!({"type": "message_stop"}));
        events
    }
}

fn delta(index: usize, delta: Value) -> Value {
    json!({"type": "content_block_delta", "index": index, "delta": delta})
}

/// A failure midway, as an `error` event.
pub fn error_event(error: AnthropicError) -> Value {
    error.body()
}

/// The SSE response: each event named by its `type`.
pub fn sse(
    events: impl Stream<Item = Value> + Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = events.map(|event| {
        let name = event["type"].as_str().unwrap_or("message").to_string();
        Ok(SseEvent::default().event(name).data(event.to_string()))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(events: &[Value]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e["delta"]["type"].as_str() {
                Some(d) => format!("{}:{d}", e["type"].as_str().unwrap()),
                None => e["type"].as_str().unwrap().to_string(),
            })
            .collect()
    }

    #[test]
    fn blocks_open_and_close_as_pieces_change_kind() {
        let mut writer = EventWriter::default();
        let mut events = Vec::new();
        for piece in [
            Piece::Thinking("hmm".into()),
            Piece::Text("Hi".into()),
            Piece::Text("!".into()),
            Piece::ToolStart {
                id: "toolu_1".into(),
                name: "f".into(),
            },
            Piece::ToolInput("{\"a\":".into()),
            Piece::ToolInput("1}".into()),
        ] {
            events.extend(writer.push(piece));
        }
        assert!(writer.has_tool_use());
        events.extend(writer.finish("tool_use", None, Usage::default()));
        assert_eq!(
            types(&events),
            [
                "content_block_start",
                "content_block_delta:thinking_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta:text_delta",
                "content_block_delta:text_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta:input_json_delta",
                "content_block_delta:input_json_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        let indexes: Vec<i64> = events.iter().filter_map(|e| e["index"].as_i64()).collect();
        assert_eq!(indexes, [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(events[11]["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn an_empty_answer_still_has_one_text_block() {
        let events = EventWriter::default().finish("end_turn", None, Usage::default());
        assert_eq!(
            types(&events),
            [
                "content_block_start",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
    }

    #[test]
    fn mcp_blocks_start_and_stop_whole() {
        let mut writer = EventWriter::default();
        let mut events = writer.push(Piece::Text("a".into()));
        events.extend(writer.push(Piece::McpUse {
            id: "mcptoolu_1".into(),
            name: "list".into(),
            server: "fs".into(),
            input: json!({"path": "/"}),
        }));
        events.extend(writer.push(Piece::Text("b".into())));
        assert_eq!(
            types(&events),
            [
                "content_block_start",
                "content_block_delta:text_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_stop",
                "content_block_start",
                "content_block_delta:text_delta",
            ]
        );
        assert_eq!(events[3]["content_block"]["input"]["path"], "/");
        assert_eq!(events[5]["index"], 2);
    }
}
