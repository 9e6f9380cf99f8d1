//! The one reader of a generation's text for every API shape: thinking split off first
//! (`reasoning::ReasoningSplitter`), then the answer read for tool calls (`tools::parser`), so calls
//! made after thinking still parse and thinking never reaches the content. Streamed (`AnswerParser`)
//! or whole (`read_answer`), the same text gives the same answer.

use super::reasoning::{Reasoning, ReasoningPiece, ReasoningSplitter};
use crate::tools::ToolFormat;
use crate::tools::parser::{ToolCall, ToolCallParser, ToolEvent};

/// A piece of a read answer, in the order the model wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerEvent {
    /// More of the model's thinking.
    Reasoning(String),
    /// More of the answer's text.
    Content(String),
    /// A new tool call, index 0.. in order.
    CallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More of call `index`'s arguments JSON.
    CallArguments { index: usize, delta: String },
}

impl From<ToolEvent> for AnswerEvent {
    fn from(event: ToolEvent) -> Self {
        match event {
            ToolEvent::Content(text) => Self::Content(text),
            ToolEvent::CallStart { index, id, name } => Self::CallStart { index, id, name },
            ToolEvent::CallArguments { index, delta } => Self::CallArguments { index, delta },
        }
    }
}

/// Reads one choice's text as it streams: reasoning, content and tool calls.
#[derive(Debug)]
pub struct AnswerParser {
    /// `None`: the model does not think, or the server leaves its thinking raw.
    reasoning: Option<ReasoningSplitter>,
    /// `None`: the request offered no tools; the answer is all content.
    tools: Option<ToolCallParser>,
}

impl AnswerParser {
    /// A reader for a generation's `tool_format` and `reasoning` (as `Generation` carries them).
    pub fn new(tool_format: Option<ToolFormat>, reasoning: Option<Reasoning>) -> Self {
        Self {
            reasoning: reasoning.map(ReasoningSplitter::new),
            tools: tool_format.map(ToolCallParser::new),
        }
    }

    /// The events the next piece of text completes.
    pub fn push(&mut self, text: &str) -> Vec<AnswerEvent> {
        match self.reasoning.as_mut() {
            Some(splitter) => {
                let pieces = splitter.push(text);
                self.read_pieces(pieces, false)
            }
            None => self.read_answer(text, false),
        }
    }

    /// The end of the text: whatever was held back comes out (a call cut short is closed).
    pub fn finish(&mut self) -> Vec<AnswerEvent> {
        match self.reasoning.as_mut() {
            Some(splitter) => {
                let pieces = splitter.finish();
                self.read_pieces(pieces, true)
            }
            None => self.read_answer("", true),
        }
    }

    /// `push` then, with the last piece, `finish`.
    pub fn push_last(&mut self, text: &str, at_end: bool) -> Vec<AnswerEvent> {
        let mut events = self.push(text);
        if at_end {
            events.extend(self.finish());
        }
        events
    }

    /// The tool calls read so far.
    pub fn calls(&self) -> &[ToolCall] {
        self.tools.as_ref().map_or(&[], ToolCallParser::calls)
    }

    fn read_pieces(&mut self, pieces: Vec<ReasoningPiece>, at_end: bool) -> Vec<AnswerEvent> {
        let mut events = Vec::new();
        for piece in pieces {
            match piece {
                ReasoningPiece::Reasoning(text) => events.push(AnswerEvent::Reasoning(text)),
                ReasoningPiece::Answer(text) => events.extend(self.read_answer(&text, false)),
                // A harmony call: a tool call where the request offered tools, else its text is content.
                ReasoningPiece::Call(name) => {
                    if let Some(parser) = self.tools.as_mut() {
                        events.extend(parser.begin_call(&name).into_iter().map(AnswerEvent::from));
                    }
                }
                ReasoningPiece::CallArguments(text) => match self.tools.as_mut() {
                    Some(parser) => {
                        events.extend(parser.call_text(&text).into_iter().map(AnswerEvent::from))
                    }
                    None => events.push(AnswerEvent::Content(text)),
                },
            }
        }
        if at_end {
            events.extend(self.read_answer("", true));
        }
        events
    }

    fn read_answer(&mut self, text: &str, at_end: bool) -> Vec<AnswerEvent> {
        let Some(parser) = self.tools.as_mut() else {
            return if text.is_empty() {
                Vec::new()
            } else {
                vec![AnswerEvent::Content(text.to_string())]
            };
        };
        let mut events = parser.push(text);
        if at_end {
            events.extend(parser.finish());
        }
        events.into_iter().map(AnswerEvent::from).collect()
    }
}

/// A whole answer, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The model's thinking; `None` when it wrote none (or it was left raw in the content).
    pub reasoning: Option<String>,
    pub content: String,
    pub calls: Vec<ToolCall>,
}

/// Reads a whole answer (non-streamed responses): the same as streaming it piece by piece.
pub fn read_answer(
    tool_format: Option<ToolFormat>,
    reasoning: Option<Reasoning>,
    text: &str,
) -> Answer {
    let mut parser = AnswerParser::new(tool_format, reasoning);
    let mut events = parser.push(text);
    events.extend(parser.finish());
    let mut answer = Answer::default();
    for event in events {
        match event {
            AnswerEvent::Reasoning(t) => answer.reasoning.get_or_insert_default().push_str(&t),
            AnswerEvent::Content(t) => answer.content.push_str(&t),
            AnswerEvent::CallStart { .. } | AnswerEvent::CallArguments { .. } => {}
        }
    }
    answer.calls = parser.calls().to_vec();
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::reasoning::ReasoningFormat;

    const THINKS: Option<Reasoning> = Some(Reasoning {
        format: ReasoningFormat::ThinkTags,
        opened: false,
    });

    #[test]
    fn a_tool_call_after_thinking_still_parses() {
        let text = "<think>\nThe user wants weather. I should call get_weather.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        let answer = read_answer(Some(ToolFormat::Hermes), THINKS, text);
        assert_eq!(
            answer.reasoning.as_deref(),
            Some("The user wants weather. I should call get_weather.")
        );
        assert_eq!(answer.calls.len(), 1, "{answer:?}");
        assert_eq!(answer.calls[0].name, "get_weather");
        assert_eq!(answer.calls[0].arguments, "{\"city\": \"Paris\"}");
        assert!(answer.content.trim().is_empty(), "{answer:?}");
        // A `<tool_call>` written inside the thinking is thinking, not a call.
        let musing = "<think>maybe <tool_call>{\"name\": \"x\", \"arguments\": {}}</tool_call></think>No call.";
        let answer = read_answer(Some(ToolFormat::Hermes), THINKS, musing);
        assert!(answer.calls.is_empty(), "{answer:?}");
        assert_eq!(answer.content, "No call.");
    }

    #[test]
    fn streamed_answers_match_the_whole_answer_at_every_split() {
        let text = "<think>plan: call</think>\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>";
        let whole = read_answer(Some(ToolFormat::Hermes), THINKS, text);
        for i in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            let mut parser = AnswerParser::new(Some(ToolFormat::Hermes), THINKS);
            let mut events = parser.push(&text[..i]);
            events.extend(parser.push_last(&text[i..], true));
            let reasoning: String = events
                .iter()
                .filter_map(|e| match e {
                    AnswerEvent::Reasoning(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            let arguments: String = events
                .iter()
                .filter_map(|e| match e {
                    AnswerEvent::CallArguments { delta, .. } => Some(delta.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(Some(reasoning), whole.reasoning, "split at {i}");
            let named = |calls: &[ToolCall]| -> Vec<(String, String)> {
                calls
                    .iter()
                    .map(|c| (c.name.clone(), c.arguments.clone()))
                    .collect()
            };
            assert_eq!(named(parser.calls()), named(&whole.calls), "split at {i}");
            assert_eq!(arguments, whole.calls[0].arguments, "split at {i}");
        }
    }

    /// gpt-oss thinks on the analysis channel, then calls a function on commentary: reasoning and an
    /// OpenAI tool call, nothing in the content; without tools offered, the call's text is content.
    #[test]
    fn a_harmony_call_after_analysis_is_a_tool_call() {
        let harmony = Some(Reasoning {
            format: ReasoningFormat::Harmony,
            opened: false,
        });
        let text = "<|channel|>analysis<|message|>User wants weather.<|end|><|start|>assistant\
                    <|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>\
                    {\"city\":\"Rome\"}";
        let answer = read_answer(Some(ToolFormat::Harmony), harmony, text);
        assert_eq!(answer.reasoning.as_deref(), Some("User wants weather."));
        assert_eq!(answer.calls.len(), 1, "{answer:?}");
        assert_eq!(answer.calls[0].name, "get_weather");
        assert_eq!(answer.calls[0].arguments, "{\"city\":\"Rome\"}");
        assert!(answer.content.is_empty(), "{answer:?}");
        for i in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            let mut parser = AnswerParser::new(Some(ToolFormat::Harmony), harmony);
            parser.push(&text[..i]);
            parser.push_last(&text[i..], true);
            let calls: Vec<(&str, &str)> = parser
                .calls()
                .iter()
                .map(|c| (c.name.as_str(), c.arguments.as_str()))
                .collect();
            assert_eq!(
                calls,
                [("get_weather", "{\"city\":\"Rome\"}")],
                "split at {i}"
            );
        }
        // A call with no arguments gets `{}`; a final answer after the call's message is content.
        let text = "<|channel|>commentary to=functions.now<|message|><|call|>";
        let answer = read_answer(Some(ToolFormat::Harmony), harmony, text);
        assert_eq!(answer.calls[0].arguments, "{}");
        let without_tools = read_answer(
            None,
            harmony,
            "<|channel|>commentary to=functions.f<|message|>{}",
        );
        assert_eq!(without_tools.content, "{}");
        assert!(without_tools.calls.is_empty());
    }

    #[test]
    fn without_reasoning_or_tools_the_text_is_all_content() {
        let raw = "<think>a</think>b";
        assert_eq!(
            read_answer(None, None, raw),
            Answer {
                reasoning: None,
                content: raw.into(),
                calls: Vec::new()
            }
        );
        assert_eq!(
            read_answer(None, THINKS, raw),
            Answer {
                reasoning: Some("a".into()),
                content: "b".into(),
                calls: Vec::new()
            }
        );
    }
}
