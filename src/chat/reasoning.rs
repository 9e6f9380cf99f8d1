//! Thinking separated from the answer. Reasoning models (qwen3, the deepseek-r1 distills, smollm3) write
//! their thinking between `<think>` and `</think>` before the answer; some templates open `<think>` in
//! the generation prompt, so the model's text starts inside the thinking. This module owns the format
//! (read once from the chat template), the request's switches (`enable_thinking` and other template
//! variables, bounded), and `ReasoningSplitter`, which cuts streamed text into reasoning and answer the
//! same way whatever the chunking: a tag split across pieces is held back until it is whole.
//!
//! gpt-oss writes in OpenAI's harmony format instead: messages on channels,
//! `<|channel|>analysis<|message|>...<|end|><|start|>assistant<|channel|>final<|message|>...`. The
//! tokenizer renders those markers as text for such models (as llama.cpp does), and `HarmonySplitter`
//! reads the `analysis` channel as reasoning and the rest as the answer, but for messages addressed to a
//! function (`<|channel|>commentary to=functions.NAME ...<|message|>{ARGS}<|call|>`, or the recipient
//! after the role), which it gives out as calls for `answer` to turn into OpenAI tool calls.

use serde_json::{Map, Value};

use crate::validation::ValidationError;

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
/// Harmony's markers (gpt-oss): a message is `<|start|>ROLE<|channel|>NAME<|message|>TEXT<|end|>`.
const HARMONY_START: &str = "<|start|>";
const HARMONY_CHANNEL: &str = "<|channel|>";
const HARMONY_MESSAGE: &str = "<|message|>";
const HARMONY_END: &str = "<|end|>";
/// Ends a message addressed to a tool (also the end of the turn, so seldom in the text).
const HARMONY_CALL: &str = "<|call|>";
/// A message's recipient when it calls one of the request's functions: `to=functions.NAME`.
const HARMONY_FUNCTION_RECIPIENT: &str = "to=functions.";
/// The channel harmony models think on.
const HARMONY_ANALYSIS: &str = "analysis";
/// Longest message header (role, channel, recipient, constraint) held while it is read.
const MAX_HARMONY_HEADER: usize = 256;
/// The template variable thinking templates (qwen3, smollm3) switch thinking off with.
pub const ENABLE_THINKING: &str = "enable_thinking";
/// Most variables a request may pass to the chat template.
pub const MAX_TEMPLATE_KWARGS: usize = 32;
/// Largest serialized size of a request's template variables.
pub const MAX_TEMPLATE_KWARGS_BYTES: usize = 16 << 10;
/// Variables the server sets itself; a request may not replace them.
const RESERVED_KWARGS: &[&str] = &[
    "messages",
    "tools",
    "add_generation_prompt",
    "bos_token",
    "eos_token",
];

/// How a model marks its thinking, as its chat template shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningFormat {
    /// `<think>`...`</think>` before the answer.
    ThinkTags,
    /// OpenAI's harmony channels (gpt-oss): thinking on `analysis`, the answer on `final`.
    Harmony,
}

impl ReasoningFormat {
    /// The format a chat template's model thinks in; `None` for a model that does not think.
    pub fn detect(template_source: &str) -> Option<Self> {
        if template_source.contains(HARMONY_CHANNEL) && template_source.contains(HARMONY_MESSAGE) {
            return Some(Self::Harmony);
        }
        (template_source.contains(THINK_OPEN) || template_source.contains(THINK_CLOSE))
            .then_some(Self::ThinkTags)
    }

    /// Whether the template lets a request switch thinking off (`enable_thinking`).
    pub fn switchable(template_source: &str) -> bool {
        template_source.contains(ENABLE_THINKING)
    }
}

/// Where thinking goes: split into its own field, or left raw in the content (`--reasoning-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReasoningOutput {
    /// Split into reasoning and answer (llama.cpp's `deepseek`, and `auto`).
    #[default]
    Split,
    /// The model's text as it is, tags and all, in the content.
    Raw,
}

/// How one generation's text is read: the format, and whether the prompt already opened the thinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reasoning {
    pub format: ReasoningFormat,
    /// The rendered prompt ends inside `<think>`: the model's text starts as reasoning.
    pub opened: bool,
}

impl Reasoning {
    /// How the answer to `prompt` (the rendered text) is read, for a model that thinks in `format`.
    /// `constrained`: a grammar shapes the answer from its first token, so it cannot start by thinking.
    pub fn for_prompt(format: ReasoningFormat, prompt: &str, constrained: bool) -> Self {
        let opened = match format {
            ReasoningFormat::ThinkTags => !constrained && prompt.trim_end().ends_with(THINK_OPEN),
            // A harmony prompt ends with `<|start|>assistant`: the model names its channel itself.
            ReasoningFormat::Harmony => false,
        };
        Self { format, opened }
    }
}

/// What a request asks of the model's thinking, in no API's shape.
#[derive(Debug, Clone, Default)]
pub struct ReasoningInput {
    /// Thinking switched on or off (`reasoning_effort`, Ollama's `think`, Messages' `thinking`);
    /// `None`: the template's default. Reaches templates that read `enable_thinking`.
    pub enable: Option<bool>,
    /// Further chat-template variables (`chat_template_kwargs`), checked by `template_kwargs`.
    pub template_kwargs: Map<String, Value>,
    /// Split thinking from the answer, or leave it raw.
    pub output: ReasoningOutput,
}

impl ReasoningInput {
    /// The variables the template is rendered with: the request's, and `enable_thinking` when the
    /// request switched thinking and did not set it itself.
    pub fn template_context(&self) -> Map<String, Value> {
        let mut context = self.template_kwargs.clone();
        if let Some(enable) = self.enable {
            context
                .entry(ENABLE_THINKING)
                .or_insert(Value::Bool(enable));
        }
        context
    }
}

/// `chat_template_kwargs`: an object of at most `MAX_TEMPLATE_KWARGS` variables and
/// `MAX_TEMPLATE_KWARGS_BYTES`, none of the variables the server sets itself.
pub fn template_kwargs(
    value: Option<&Value>,
    field: &'static str,
) -> Result<Map<String, Value>, ValidationError> {
    let object = match value {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(object)) => object,
        Some(_) => {
            return Err(ValidationError::invalid(
                field,
                format!("{field} must be an object of template variables"),
            ));
        }
    };
    if object.len() > MAX_TEMPLATE_KWARGS {
        return Err(ValidationError::invalid(
            field,
            format!("{field} has more than {MAX_TEMPLATE_KWARGS} variables"),
        ));
    }
    if serde_json::to_string(object).map_or(usize::MAX, |s| s.len()) > MAX_TEMPLATE_KWARGS_BYTES {
        return Err(ValidationError::invalid(
            field,
            format!("{field} is larger than {MAX_TEMPLATE_KWARGS_BYTES} bytes"),
        ));
    }
    if let Some(key) = object
        .keys()
        .find(|k| RESERVED_KWARGS.contains(&k.as_str()))
    {
        return Err(ValidationError::invalid(
            field,
            format!("{field} may not set {key:?}: the server sets it"),
        ));
    }
    Ok(object.clone())
}

/// OpenAI's `reasoning_effort` (also the Responses API's `reasoning.effort`): `none` and `minimal`
/// switch thinking off; `low`, `medium`, `high` leave it on.
pub fn effort(value: Option<&str>, field: &'static str) -> Result<Option<bool>, ValidationError> {
    match value {
        None => Ok(None),
        Some("none" | "minimal") => Ok(Some(false)),
        Some("low" | "medium" | "high") => Ok(Some(true)),
        Some(other) => Err(ValidationError::invalid(
            field,
            format!("{field} {other:?} is not one of none, minimal, low, medium, high"),
        )),
    }
}

/// A piece of a generation's text, once split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReasoningPiece {
    Reasoning(String),
    Answer(String),
    /// A harmony message addressed to function `NAME` begins (its header said `to=functions.NAME`).
    Call(String),
    /// More of that message's text: the call's arguments as the model writes them.
    CallArguments(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing read yet: the text may open with `<think>`.
    Start,
    /// Inside the thinking, before any of it went out (leading whitespace is layout).
    ThinkingStart,
    Thinking,
    /// Just past `</think>`: whitespace before the answer is layout.
    Closed,
    Answer,
}

/// Cuts one generation's text into reasoning and answer as it streams. Whatever the pieces, their
/// output joins up to what the whole text gives: tags are matched only when whole, and the whitespace
/// around the reasoning (trimmed, as llama.cpp does) is held back until what follows it is known.
#[derive(Debug)]
pub struct ReasoningSplitter {
    phase: Phase,
    pending: String,
    /// Set for harmony models, which the splitter hands their text to.
    harmony: Option<HarmonySplitter>,
}

impl ReasoningSplitter {
    pub fn new(reasoning: Reasoning) -> Self {
        Self {
            phase: if reasoning.opened {
                Phase::ThinkingStart
            } else {
                Phase::Start
            },
            pending: String::new(),
            harmony: (reasoning.format == ReasoningFormat::Harmony).then(HarmonySplitter::default),
        }
    }

    /// The pieces `text` completes.
    pub fn push(&mut self, text: &str) -> Vec<ReasoningPiece> {
        if let Some(harmony) = &mut self.harmony {
            return harmony.push(text);
        }
        self.pending.push_str(text);
        let mut out = Vec::new();
        while self.advance(&mut out, false) {}
        out
    }

    /// The end of the text: whatever is held back comes out. A thinking never closed (a length limit)
    /// is reasoning.
    pub fn finish(&mut self) -> Vec<ReasoningPiece> {
        if let Some(harmony) = &mut self.harmony {
            return harmony.finish();
        }
        let mut out = Vec::new();
        while self.advance(&mut out, true) {}
        out
    }

    /// Splits a whole text: the reasoning (`None` when there was none) and the answer.
    pub fn split(reasoning: Reasoning, text: &str) -> (Option<String>, String) {
        let mut splitter = Self::new(reasoning);
        let mut pieces = splitter.push(text);
        pieces.extend(splitter.finish());
        let (mut thought, mut answer) = (None::<String>, String::new());
        for piece in pieces {
            match piece {
                ReasoningPiece::Reasoning(t) => thought.get_or_insert_default().push_str(&t),
                ReasoningPiece::Answer(t) | ReasoningPiece::CallArguments(t) => answer.push_str(&t),
                ReasoningPiece::Call(_) => {}
            }
        }
        (thought, answer)
    }

    /// One move; false when it needs more text (or, `at_end`, when all is out).
    fn advance(&mut self, out: &mut Vec<ReasoningPiece>, at_end: bool) -> bool {
        match self.phase {
            Phase::Start => {
                let trimmed = self.pending.trim_start();
                if let Some(rest) = trimmed.strip_prefix(THINK_OPEN) {
                    self.pending = rest.to_string();
                    self.phase = Phase::ThinkingStart;
                    return true;
                }
                if THINK_OPEN.starts_with(trimmed) && !at_end {
                    return false;
                }
                self.phase = Phase::Answer;
                true
            }
            Phase::ThinkingStart | Phase::Closed => {
                let kept = self.pending.trim_start().len();
                self.pending.drain(..self.pending.len() - kept);
                if self.pending.is_empty() && !at_end {
                    return false;
                }
                self.phase = if self.phase == Phase::Closed {
                    Phase::Answer
                } else {
                    Phase::Thinking
                };
                true
            }
            Phase::Thinking => {
                if let Some(at) = self.pending.find(THINK_CLOSE) {
                    emit_reasoning(out, self.pending[..at].trim_end());
                    self.pending.drain(..at + THINK_CLOSE.len());
                    self.phase = Phase::Closed;
                    return true;
                }
                let held = if at_end {
                    0
                } else {
                    partial_suffix(&self.pending, THINK_CLOSE)
                };
                let before = &self.pending[..self.pending.len() - held];
                // Whitespace that may turn out to end the reasoning waits too.
                let cut = before.trim_end().len();
                emit_reasoning(out, &self.pending[..cut]);
                if at_end {
                    self.pending.clear();
                } else {
                    self.pending.drain(..cut);
                }
                false
            }
            Phase::Answer => {
                if !self.pending.is_empty() {
                    out.push(ReasoningPiece::Answer(std::mem::take(&mut self.pending)));
                }
                false
            }
        }
    }
}

/// Where a harmony reader is in the text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum HarmonyPhase {
    /// Between messages: a header may start here (`<|start|>`, `<|channel|>`), else text is answer.
    #[default]
    Between,
    /// Inside a header, up to `<|message|>`.
    Header,
    /// Inside a message's text.
    Message(MessageKind),
}

/// What a harmony message's text is, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    /// The `analysis` channel: reasoning.
    Analysis,
    /// Any other channel (`final`, a `commentary` preamble): the answer.
    Answer,
    /// Addressed to a function: the call's arguments.
    Call,
}

/// Reads harmony messages as they stream: `analysis` text is reasoning, a message to `functions.NAME` is
/// a call, every other message's text (`final`, `commentary` preambles) is the answer. Markers are
/// matched only when whole, as `ReasoningSplitter` matches its tags.
#[derive(Debug, Default)]
struct HarmonySplitter {
    phase: HarmonyPhase,
    pending: String,
}

impl HarmonySplitter {
    fn push(&mut self, text: &str) -> Vec<ReasoningPiece> {
        self.pending.push_str(text);
        let mut out = Vec::new();
        while self.advance(&mut out, false) {}
        out
    }

    fn finish(&mut self) -> Vec<ReasoningPiece> {
        let mut out = Vec::new();
        while self.advance(&mut out, true) {}
        out
    }

    fn advance(&mut self, out: &mut Vec<ReasoningPiece>, at_end: bool) -> bool {
        match self.phase {
            HarmonyPhase::Between => {
                if let Some(rest) = self.pending.strip_prefix(HARMONY_START) {
                    self.pending = rest.to_string();
                    self.phase = HarmonyPhase::Header;
                    return true;
                }
                if self.pending.starts_with(HARMONY_CHANNEL) {
                    // The header is the channel alone (the role was in the prompt).
                    self.phase = HarmonyPhase::Header;
                    return true;
                }
                if let Some(rest) = self
                    .pending
                    .strip_prefix(HARMONY_END)
                    .or_else(|| self.pending.strip_prefix(HARMONY_CALL))
                {
                    self.pending = rest.to_string();
                    return true;
                }
                let maybe_marker = [HARMONY_START, HARMONY_CHANNEL, HARMONY_END, HARMONY_CALL]
                    .iter()
                    .any(|m| m.starts_with(self.pending.as_str()));
                if self.pending.is_empty() || (maybe_marker && !at_end) {
                    return false;
                }
                // Text outside any message (a model that skipped the format) is the answer.
                self.phase = HarmonyPhase::Message(MessageKind::Answer);
                true
            }
            HarmonyPhase::Header => {
                if let Some(at) = self.pending.find(HARMONY_MESSAGE) {
                    let header = &self.pending[..at];
                    let kind = match function_recipient(header) {
                        Some(name) => {
                            out.push(ReasoningPiece::Call(name.to_string()));
                            MessageKind::Call
                        }
                        None if header_channel(header) == HARMONY_ANALYSIS => MessageKind::Analysis,
                        None => MessageKind::Answer,
                    };
                    self.phase = HarmonyPhase::Message(kind);
                    self.pending.drain(..at + HARMONY_MESSAGE.len());
                    return true;
                }
                if at_end || self.pending.len() > MAX_HARMONY_HEADER {
                    // A header that never ends: what came after its start is the answer.
                    let text = std::mem::take(&mut self.pending);
                    emit(out, ReasoningPiece::Answer, &text);
                    self.phase = HarmonyPhase::Message(MessageKind::Answer);
                }
                false
            }
            HarmonyPhase::Message(kind) => {
                let piece = match kind {
                    MessageKind::Analysis => ReasoningPiece::Reasoning,
                    MessageKind::Answer => ReasoningPiece::Answer,
                    MessageKind::Call => ReasoningPiece::CallArguments,
                };
                let next = [HARMONY_END, HARMONY_START, HARMONY_CHANNEL, HARMONY_CALL]
                    .iter()
                    .filter_map(|m| self.pending.find(m))
                    .min();
                if let Some(at) = next {
                    let text: String = self.pending.drain(..at).collect();
                    emit(out, piece, &text);
                    self.phase = HarmonyPhase::Between;
                    return true;
                }
                let held = if at_end {
                    0
                } else {
                    [HARMONY_END, HARMONY_START, HARMONY_CHANNEL, HARMONY_CALL]
                        .iter()
                        .map(|m| partial_suffix(&self.pending, m))
                        .max()
                        .unwrap_or(0)
                };
                let cut = self.pending.len() - held;
                let text: String = self.pending.drain(..cut).collect();
                emit(out, piece, &text);
                false
            }
        }
    }
}

/// The channel a harmony header names (`<|channel|>NAME ...`), or "".
fn header_channel(header: &str) -> &str {
    header
        .split(HARMONY_CHANNEL)
        .nth(1)
        .and_then(|c| c.split_whitespace().next())
        .unwrap_or_default()
}

/// `NAME` where a harmony header addresses `functions.NAME`, before or after its channel
/// (`assistant to=functions.NAME<|channel|>commentary json`, `<|channel|>commentary to=functions.NAME
/// <|constrain|>json`).
fn function_recipient(header: &str) -> Option<&str> {
    let at = header.find(HARMONY_FUNCTION_RECIPIENT)?;
    let rest = &header[at + HARMONY_FUNCTION_RECIPIENT.len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '<')
        .unwrap_or(rest.len());
    let name = &rest[..end];
    (!name.is_empty()).then_some(name)
}

fn emit(out: &mut Vec<ReasoningPiece>, piece: fn(String) -> ReasoningPiece, text: &str) {
    if !text.is_empty() {
        out.push(piece(text.to_string()));
    }
}

fn emit_reasoning(out: &mut Vec<ReasoningPiece>, text: &str) {
    if !text.is_empty() {
        out.push(ReasoningPiece::Reasoning(text.to_string()));
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag` (a tag maybe cut in two).
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const QWEN3: &str = include_str!("../../tests/fixtures/qwen3-chat-template.jinja");
    const DEEPSEEK_R1: &str =
        include_str!("../../tests/fixtures/deepseek-r1-distill-qwen-chat-template.jinja");
    const HERMES: &str = include_str!("../../tests/fixtures/hermes-chat-template.jinja");

    const CLOSED: Reasoning = Reasoning {
        format: ReasoningFormat::ThinkTags,
        opened: false,
    };
    const OPENED: Reasoning = Reasoning {
        format: ReasoningFormat::ThinkTags,
        opened: true,
    };

    /// The pieces of a streamed split, joined: (reasoning, answer).
    fn streamed(reasoning: Reasoning, pieces: &[&str]) -> (Option<String>, String) {
        let mut splitter = ReasoningSplitter::new(reasoning);
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(splitter.push(piece));
        }
        out.extend(splitter.finish());
        let (mut thought, mut answer) = (None::<String>, String::new());
        for piece in out {
            match piece {
                ReasoningPiece::Reasoning(t) => {
                    assert!(!t.is_empty(), "no empty pieces");
                    thought.get_or_insert_default().push_str(&t)
                }
                ReasoningPiece::Answer(t) | ReasoningPiece::CallArguments(t) => {
                    assert!(!t.is_empty(), "no empty pieces");
                    answer.push_str(&t)
                }
                ReasoningPiece::Call(_) => {}
            }
        }
        (thought, answer)
    }

    /// A harmony text's pieces when streamed in `chunks`, adjacent pieces of one kind merged.
    fn harmony_pieces(chunks: &[&str]) -> Vec<ReasoningPiece> {
        let mut splitter = ReasoningSplitter::new(HARMONY);
        let mut pieces = Vec::new();
        for chunk in chunks {
            pieces.extend(splitter.push(chunk));
        }
        pieces.extend(splitter.finish());
        let mut merged: Vec<ReasoningPiece> = Vec::new();
        for piece in pieces {
            match (merged.last_mut(), piece) {
                (Some(ReasoningPiece::Reasoning(a)), ReasoningPiece::Reasoning(b))
                | (Some(ReasoningPiece::Answer(a)), ReasoningPiece::Answer(b))
                | (Some(ReasoningPiece::CallArguments(a)), ReasoningPiece::CallArguments(b)) => {
                    a.push_str(&b)
                }
                (_, piece) => merged.push(piece),
            }
        }
        merged
    }

    /// gpt-oss calls a function on the commentary channel, the recipient in either place harmony
    /// allows; its arguments come out as a call's, its analysis as reasoning, however the text streams.
    #[test]
    fn harmony_messages_to_functions_are_calls_however_they_stream() {
        let text = "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant\
                    <|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>\
                    {\"city\":\"Paris\"}<|call|><|start|>assistant to=functions.add<|channel|>\
                    commentary json<|message|>{\"a\":1}";
        let want = vec![
            ReasoningPiece::Reasoning("Need the weather.".into()),
            ReasoningPiece::Call("get_weather".into()),
            ReasoningPiece::CallArguments("{\"city\":\"Paris\"}".into()),
            ReasoningPiece::Call("add".into()),
            ReasoningPiece::CallArguments("{\"a\":1}".into()),
        ];
        assert_eq!(harmony_pieces(&[text]), want);
        for i in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            assert_eq!(
                harmony_pieces(&[&text[..i], &text[i..]]),
                want,
                "split at {i}"
            );
        }
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(harmony_pieces(&chars), want, "char by char");
        // Another recipient (a built-in browser tool) is not a function call: its text is the answer.
        assert_eq!(
            harmony_pieces(&["<|channel|>commentary to=browser.search<|message|>{}"]),
            vec![ReasoningPiece::Answer("{}".into())]
        );
    }

    /// Every char boundary of `text` as one split point, and every pair of them.
    fn splits_agree(reasoning: Reasoning, text: &str) {
        let whole = ReasoningSplitter::split(reasoning, text);
        let bounds: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for &i in &bounds {
            assert_eq!(
                streamed(reasoning, &[&text[..i], &text[i..]]),
                whole,
                "{text:?} split at {i}"
            );
            for &j in bounds.iter().filter(|&&j| j >= i) {
                assert_eq!(
                    streamed(reasoning, &[&text[..i], &text[i..j], &text[j..]]),
                    whole,
                    "{text:?} split at {i} and {j}"
                );
            }
        }
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(streamed(reasoning, &chars), whole, "{text:?} char by char");
    }

    #[test]
    fn thinking_templates_are_detected_and_others_are_not() {
        assert_eq!(
            ReasoningFormat::detect(QWEN3),
            Some(ReasoningFormat::ThinkTags)
        );
        assert_eq!(
            ReasoningFormat::detect(DEEPSEEK_R1),
            Some(ReasoningFormat::ThinkTags)
        );
        assert_eq!(ReasoningFormat::detect(HERMES), None);
        assert_eq!(
            ReasoningFormat::detect(crate::engine::chat_template::CHATML_TEMPLATE),
            None
        );
        assert!(ReasoningFormat::switchable(QWEN3));
        assert!(!ReasoningFormat::switchable(DEEPSEEK_R1));
        assert_eq!(
            ReasoningFormat::detect(include_str!(
                "../../tests/fixtures/gpt-oss-chat-template.jinja"
            )),
            Some(ReasoningFormat::Harmony)
        );
    }

    const HARMONY: Reasoning = Reasoning {
        format: ReasoningFormat::Harmony,
        opened: false,
    };

    #[test]
    fn harmony_analysis_is_reasoning_and_final_is_the_answer_however_it_streams() {
        assert_eq!(
            ReasoningFormat::detect(
                "{{- '<|start|>assistant<|channel|>final<|message|>' + content + '<|end|>' }}"
            ),
            Some(ReasoningFormat::Harmony)
        );
        let text = "<|channel|>analysis<|message|>User greets. Reply kindly.<|end|>\
                    <|start|>assistant<|channel|>final<|message|>Hello! How can I help?";
        assert_eq!(
            ReasoningSplitter::split(HARMONY, text),
            (
                Some("User greets. Reply kindly.".into()),
                "Hello! How can I help?".into()
            )
        );
        splits_agree(HARMONY, text);
        // A preamble on commentary is said to the user; a final with no thinking is all answer.
        let text = "<|channel|>commentary<|message|>Checking.<|end|><|start|>assistant<|channel|>final<|message|>Done.";
        assert_eq!(
            ReasoningSplitter::split(HARMONY, text),
            (None, "Checking.Done.".into())
        );
        splits_agree(HARMONY, text);
        // Cut off while thinking (a length limit): all reasoning.
        let text = "<|channel|>analysis<|message|>Let me think about <|st";
        assert_eq!(
            ReasoningSplitter::split(HARMONY, text),
            (Some("Let me think about <|st".into()), String::new())
        );
        splits_agree(HARMONY, text);
        // A model that ignores the format answers in plain text.
        assert_eq!(
            ReasoningSplitter::split(HARMONY, "Just text, <|end|> and more"),
            (None, "Just text,  and more".into())
        );
        splits_agree(HARMONY, "Just text, <|end|> and more");
        // A header that never closes is bounded and given back as the answer.
        let endless = format!("<|channel|>{}", "x".repeat(MAX_HARMONY_HEADER * 2));
        let (thought, answer) = ReasoningSplitter::split(HARMONY, &endless);
        assert_eq!(thought, None);
        assert_eq!(answer, endless);
    }

    #[test]
    fn a_prompt_that_opens_the_thinking_starts_the_answer_inside_it() {
        let f = ReasoningFormat::ThinkTags;
        assert!(Reasoning::for_prompt(f, "<｜User｜>hi<｜Assistant｜><think>\n", false).opened);
        assert!(!Reasoning::for_prompt(f, "<|im_start|>assistant\n", false).opened);
        // qwen3 with enable_thinking false: an empty, closed thinking.
        assert!(
            !Reasoning::for_prompt(f, "<|im_start|>assistant\n<think>\n\n</think>\n\n", false)
                .opened
        );
        // A grammar shapes the answer from its first token: no thinking to read.
        assert!(!Reasoning::for_prompt(f, "<think>\n", true).opened);
    }

    #[test]
    fn thinking_and_answer_are_split_and_trimmed() {
        assert_eq!(
            ReasoningSplitter::split(CLOSED, "<think>\nLet me see.\n</think>\n\nHello!"),
            (Some("Let me see.".into()), "Hello!".into())
        );
        assert_eq!(
            ReasoningSplitter::split(OPENED, "Let me see.\n</think>\n\nHello!"),
            (Some("Let me see.".into()), "Hello!".into())
        );
        // No thinking at all: all answer, whitespace kept.
        assert_eq!(
            ReasoningSplitter::split(CLOSED, " Hello <think> there"),
            (None, " Hello <think> there".into())
        );
        // Cut short by a length limit: all reasoning.
        assert_eq!(
            ReasoningSplitter::split(OPENED, "I wonder  \n"),
            (Some("I wonder".into()), String::new())
        );
        // An empty thinking (qwen3 with thinking off writes none, but a model may).
        assert_eq!(
            ReasoningSplitter::split(CLOSED, "<think>\n\n</think>\n\nHi"),
            (None, "Hi".into())
        );
        // A second `<think>` inside the answer is the answer's.
        assert_eq!(
            ReasoningSplitter::split(CLOSED, "<think>a</think>b <think>c</think>"),
            (Some("a".into()), "b <think>c</think>".into())
        );
        // Something that only began like the tag.
        assert_eq!(
            ReasoningSplitter::split(CLOSED, "<thin"),
            (None, "<thin".into())
        );
    }

    #[test]
    fn every_split_point_gives_the_whole_texts_split() {
        for text in [
            "<think>\nLet me see.\n</think>\n\nHello!",
            "  <think>a b</think>c",
            "<think></think>",
            "plain answer",
            "<thi",
            "<think>é ünïcödé 思考 </thi</think>\n答え",
            "<think>\n\n a \n\n</think>   \n b \n ",
            "</think>x",
            "a</think>b",
            "<think>x</think",
        ] {
            splits_agree(CLOSED, text);
            splits_agree(OPENED, text);
        }
    }

    #[test]
    fn the_real_templates_open_or_close_the_thinking_as_switched() {
        use crate::engine::chat_template::{ChatMessage, ChatTemplate};
        let messages = [ChatMessage::new("user", "Hi")];
        let render = |source: &str, input: &ReasoningInput| {
            ChatTemplate::new(source, "<s>", "</s>")
                .unwrap()
                .render_with(&messages, None, true, &input.template_context())
                .unwrap()
        };
        let default = ReasoningInput::default();
        let off = ReasoningInput {
            enable: Some(false),
            ..Default::default()
        };
        let f = ReasoningFormat::ThinkTags;
        let deepseek = render(DEEPSEEK_R1, &default);
        assert!(
            deepseek.ends_with("<｜Assistant｜><think>\n"),
            "{deepseek:?}"
        );
        assert!(Reasoning::for_prompt(f, &deepseek, false).opened);
        let qwen = render(QWEN3, &default);
        assert!(qwen.ends_with("<|im_start|>assistant\n"), "{qwen:?}");
        assert!(!Reasoning::for_prompt(f, &qwen, false).opened);
        let qwen_off = render(QWEN3, &off);
        assert!(
            qwen_off.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"),
            "{qwen_off:?}"
        );
        assert!(!Reasoning::for_prompt(f, &qwen_off, false).opened);
    }

    #[test]
    fn template_kwargs_are_an_object_of_bounded_size_without_reserved_names() {
        let ok = template_kwargs(Some(&json!({"enable_thinking": false})), "k").unwrap();
        assert_eq!(ok["enable_thinking"], false);
        assert!(template_kwargs(None, "k").unwrap().is_empty());
        for bad in [
            json!("x"),
            json!([1]),
            json!({"messages": []}),
            json!({"add_generation_prompt": false}),
            json!({"big": "x".repeat(MAX_TEMPLATE_KWARGS_BYTES)}),
            Value::Object((0..40).map(|i| (format!("k{i}"), json!(i))).collect()),
        ] {
            assert_eq!(
                template_kwargs(Some(&bad), "chat_template_kwargs")
                    .unwrap_err()
                    .param(),
                Some("chat_template_kwargs"),
                "{bad}"
            );
        }
    }

    #[test]
    fn effort_none_switches_thinking_off_and_unknown_efforts_are_refused() {
        assert_eq!(effort(Some("none"), "e").unwrap(), Some(false));
        assert_eq!(effort(Some("minimal"), "e").unwrap(), Some(false));
        assert_eq!(effort(Some("high"), "e").unwrap(), Some(true));
        assert_eq!(effort(None, "e").unwrap(), None);
        assert!(effort(Some("max"), "e").is_err());
        let input = ReasoningInput {
            enable: Some(false),
            ..Default::default()
        };
        assert_eq!(input.template_context()[ENABLE_THINKING], false);
        // A request's own `enable_thinking` is kept.
        let input = ReasoningInput {
            enable: Some(false),
            template_kwargs: [(ENABLE_THINKING.to_string(), json!(true))]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        assert_eq!(input.template_context()[ENABLE_THINKING], true);
    }
}
