//! Turning generated text into content and tool calls as it streams.
//!
//! Content before a call streams as content; a call streams as soon as its name is known, then its
//! arguments in pieces as they are written. Text that only looked like the start of a call is given back
//! as content, never dropped.

use super::ToolFormat;
use super::json_scan::scan_call;

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL_MARKER: &str = "[TOOL_CALLS]";
const MISTRAL_ARGS: &str = "[ARGS]";
const MISTRAL_CALL_ID: &str = "[CALL_ID]";
const GRANITE_MARKER: &str = "<|tool_call|>";
const LLAMA_MARKER: &str = "<|python_tag|>";
/// Longest `NAME[CALL_ID]ID` read before `[ARGS]`; past it the text is not a call.
const MAX_CALL_HEAD: usize = 160;

/// A piece of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolEvent {
    Content(String),
    /// A new call, index 0.. in order.
    CallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More of call `index`'s arguments JSON.
    CallArguments {
        index: usize,
        delta: String,
    },
}

/// A finished call, as the non-streaming response carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing decided yet (formats whose calls open the answer hold text back here).
    Start,
    /// Plain content, watching for a call marker.
    Text,
    /// The generic format's `{"response": "` string, streamed unescaped.
    Response,
    /// Between the items of a JSON array of calls.
    CallList,
    /// Inside a call object.
    Call,
    /// After Mistral's `[TOOL_CALLS]`: a function's name (and `[CALL_ID]ID`) up to `[ARGS]`.
    CallName,
    /// After `[ARGS]`: the arguments' JSON value.
    CallArguments,
    /// After a Hermes call object, before `</tool_call>`.
    HermesClose,
    /// Done with structure; the rest (closing brackets) is not content.
    Tail,
}

/// A streaming parser for one choice.
#[derive(Debug)]
pub struct ToolCallParser {
    format: ToolFormat,
    state: State,
    /// Text received and not yet given out.
    pending: String,
    /// Whether the current call object sits in a JSON array.
    in_list: bool,
    calls: Vec<ToolCall>,
    /// For the call being read: its name is out, and this much of its arguments.
    started: bool,
    arguments_sent: usize,
    /// The raw text of the current structure, given back as content if it turns out malformed.
    raw: String,
    /// A call just closed: whitespace before the next call or text is layout, not content.
    after_call: bool,
}

impl ToolCallParser {
    pub fn new(format: ToolFormat) -> Self {
        Self {
            format,
            state: State::Start,
            pending: String::new(),
            in_list: false,
            calls: Vec::new(),
            started: false,
            arguments_sent: 0,
            raw: String::new(),
            after_call: false,
        }
    }

    /// The calls read so far.
    pub fn calls(&self) -> &[ToolCall] {
        &self.calls
    }

    pub fn push(&mut self, text: &str) -> Vec<ToolEvent> {
        let mut events = Vec::new();
        if !text.is_empty() {
            self.end_outside_call(&mut events);
        }
        self.pending.push_str(text);
        while self.advance(&mut events, false) {}
        events
    }

    /// A call whose name the format gives outside the answer's text (harmony's `to=functions.NAME`
    /// header, which `chat::reasoning` reads): it starts now, ending the one before it.
    pub fn begin_call(&mut self, name: &str) -> Vec<ToolEvent> {
        let mut events = Vec::new();
        self.end_outside_call(&mut events);
        self.start_call(&mut events, name, None);
        events
    }

    /// A call named `name` starts (with the model's `id` when the format gives one).
    fn start_call(&mut self, events: &mut Vec<ToolEvent>, name: &str, id: Option<String>) {
        let index = self.calls.len();
        let id = id.unwrap_or_else(|| call_id(self.format));
        events.push(ToolEvent::CallStart {
            index,
            id: id.clone(),
            name: name.to_string(),
        });
        self.calls.push(ToolCall {
            id,
            name: name.to_string(),
            arguments: String::new(),
        });
        self.started = true;
        self.arguments_sent = 0;
    }

    /// Whether a call `begin_call` started is open (rather than one read from the text).
    fn outside_call_open(&self) -> bool {
        self.started && !matches!(self.state, State::Call | State::CallArguments)
    }

    /// More of the call `begin_call` started: its arguments as the model writes them (as content when
    /// no call was started).
    pub fn call_text(&mut self, text: &str) -> Vec<ToolEvent> {
        let mut events = Vec::new();
        if text.is_empty() {
            return events;
        }
        if self.outside_call_open() {
            self.send_arguments(&mut events, text.to_string());
            self.arguments_sent += text.len();
        } else {
            push_content(&mut events, text.to_string());
        }
        events
    }

    /// Closes a call `begin_call` started (one that wrote nothing gets `{}`).
    fn end_outside_call(&mut self, events: &mut Vec<ToolEvent>) {
        if self.outside_call_open() {
            self.close_call(events, None);
        }
    }

    /// The end of the answer: whatever is held back comes out.
    pub fn finish(&mut self) -> Vec<ToolEvent> {
        let mut events = Vec::new();
        self.end_outside_call(&mut events);
        while self.advance(&mut events, true) {}
        match self.state {
            State::Call if !self.started => {
                let raw = std::mem::take(&mut self.raw) + &self.pending;
                push_content(&mut events, raw);
            }
            State::Call | State::CallArguments => {
                // Cut short (a length limit): close what was sent so the arguments stay one value.
                self.close_call(&mut events, None);
            }
            State::CallName => {
                let raw = std::mem::take(&mut self.raw) + &self.pending;
                push_content(&mut events, raw);
            }
            State::Text | State::Start => {
                push_content(&mut events, std::mem::take(&mut self.pending))
            }
            _ => {}
        }
        self.pending.clear();
        events
    }

    /// One move of the state machine; false when it needs more text.
    fn advance(&mut self, events: &mut Vec<ToolEvent>, at_end: bool) -> bool {
        match self.state {
            State::Start => self.start(at_end),
            State::Text => self.text(events, at_end),
            State::Response => self.response(events),
            State::CallList => self.call_list(),
            State::Call => self.call(events),
            State::CallName => self.call_name(events, at_end),
            State::CallArguments => self.call_arguments(events),
            State::HermesClose => self.hermes_close(at_end),
            State::Tail => {
                self.pending.clear();
                false
            }
        }
    }

    fn start(&mut self, at_end: bool) -> bool {
        let trimmed = self.pending.trim_start();
        if trimmed.is_empty() && !at_end {
            return false;
        }
        match self.format {
            ToolFormat::Generic => {
                // `{"tool_calls": [` or `{"response": "`; anything else is plain content.
                let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
                for (opening, next) in [
                    ("{\"tool_calls\":[", State::CallList),
                    ("{\"response\":\"", State::Response),
                ] {
                    if compact.starts_with(opening) {
                        let cut = byte_after_compact(&self.pending, opening.len());
                        self.raw = self.pending[..cut].to_string();
                        self.pending.drain(..cut);
                        self.state = next;
                        self.in_list = next == State::CallList;
                        return true;
                    }
                    if opening.starts_with(&compact) && !at_end {
                        return false;
                    }
                }
                self.state = State::Text;
            }
            ToolFormat::Mistral | ToolFormat::Granite | ToolFormat::Llama3 => {
                let (marker, opening) = match self.format {
                    ToolFormat::Mistral => (MISTRAL_MARKER, "[{"),
                    ToolFormat::Granite => (GRANITE_MARKER, "[{"),
                    _ => (LLAMA_MARKER, "{\""),
                };
                let listed = self.format != ToolFormat::Llama3;
                let after_marker = trimmed.strip_prefix(marker).unwrap_or(trimmed).trim_start();
                let compact: String = after_marker
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                if compact.starts_with(opening) {
                    let skip = self.pending.len() - after_marker.len();
                    self.raw = self.pending[..skip].to_string();
                    self.pending.drain(..skip);
                    if listed {
                        let bracket = self.pending.find('[').map_or(0, |i| i + 1);
                        self.raw.extend(self.pending.drain(..bracket));
                        self.in_list = true;
                        self.state = State::CallList;
                    } else {
                        self.state = State::Call;
                    }
                    return true;
                }
                let undecided = (marker.starts_with(trimmed) || opening.starts_with(&compact))
                    || (trimmed.starts_with(marker) && compact.len() < opening.len());
                if undecided && !at_end {
                    return false;
                }
                self.state = State::Text;
            }
            // Harmony's calls come through `begin_call`: its answer text is all content. Mistral's
            // `[TOOL_CALLS]NAME[ARGS]` calls may follow text.
            ToolFormat::Hermes | ToolFormat::Harmony | ToolFormat::MistralArgs => {
                self.state = State::Text
            }
        }
        true
    }

    fn text(&mut self, events: &mut Vec<ToolEvent>, at_end: bool) -> bool {
        if self.after_call {
            let kept = self.pending.trim_start().len();
            self.pending.drain(..self.pending.len() - kept);
            if self.pending.is_empty() {
                return false;
            }
            self.after_call = false;
        }
        let marker = match self.format {
            ToolFormat::Hermes => HERMES_OPEN,
            ToolFormat::Mistral | ToolFormat::MistralArgs => MISTRAL_MARKER,
            ToolFormat::Granite => GRANITE_MARKER,
            _ => {
                push_content(events, std::mem::take(&mut self.pending));
                return false;
            }
        };
        if let Some(at) = self.pending.find(marker) {
            push_content(events, self.pending[..at].to_string());
            self.raw = marker.to_string();
            self.pending.drain(..at + marker.len());
            self.state = match self.format {
                ToolFormat::Mistral | ToolFormat::Granite => State::Start,
                ToolFormat::MistralArgs => State::CallName,
                _ => {
                    self.in_list = false;
                    State::Call
                }
            };
            return true;
        }
        // Hold back a tail that may be the marker's beginning.
        let keep = if at_end {
            0
        } else {
            partial_suffix(&self.pending, marker)
        };
        let out = self.pending.len() - keep;
        push_content(events, self.pending[..out].to_string());
        self.pending.drain(..out);
        false
    }

    fn response(&mut self, events: &mut Vec<ToolEvent>) -> bool {
        let mut out = String::new();
        let mut consumed = 0;
        let bytes = self.pending.as_bytes();
        while consumed < bytes.len() {
            match bytes[consumed] {
                b'"' => {
                    consumed += 1;
                    self.state = State::Tail;
                    break;
                }
                b'\\' => {
                    let Some(len) = escape_len(&self.pending[consumed..]) else {
                        break;
                    };
                    let literal = format!("\"{}\"", &self.pending[consumed..consumed + len]);
                    match serde_json::from_str::<String>(&literal) {
                        Ok(s) => out.push_str(&s),
                        Err(_) => out.push_str(&self.pending[consumed..consumed + len]),
                    }
                    consumed += len;
                }
                _ => {
                    let ch = self.pending[consumed..].chars().next().unwrap_or('\0');
                    out.push(ch);
                    consumed += ch.len_utf8();
                }
            }
        }
        self.pending.drain(..consumed);
        push_content(events, out);
        self.state == State::Tail
    }

    fn call_list(&mut self) -> bool {
        let trimmed = self
            .pending
            .trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        let skip = self.pending.len() - trimmed.len();
        match trimmed.chars().next() {
            None => {
                self.pending.clear();
                false
            }
            Some('{') => {
                self.pending.drain(..skip);
                self.state = State::Call;
                true
            }
            Some(_) => {
                // `]` closes the list; whatever follows is structure, not content.
                self.state = State::Tail;
                true
            }
        }
    }

    fn call(&mut self, events: &mut Vec<ToolEvent>) -> bool {
        let scan = scan_call(&self.pending);
        // Name, arguments, then the object's end or fault, in the order the text has them: whatever
        // comes out here would have come out the same had the text arrived in smaller pieces.
        if !self.started
            && let Some(name) = &scan.name
        {
            self.start_call(events, name, None);
        }
        if self.started
            && let Some(start) = scan.arguments_start
        {
            // Until the value is known to end, trailing whitespace is held back: it may lie after it.
            let read = scan
                .invalid
                .or(scan.end)
                .unwrap_or_else(|| self.pending.trim_end().len());
            let end = scan.arguments_end.unwrap_or(read).min(read);
            self.send_pending_arguments(events, start, end);
        }
        if let Some(fault) = scan.invalid {
            if self.started {
                // The call stands as far as it was written.
                self.close_call(events, None);
            } else {
                // Not a call: its text up to the fault is content.
                let raw = std::mem::take(&mut self.raw) + &self.pending[..fault];
                push_content(events, raw);
            }
            // From the fault on, the text is read afresh (it may hold the next call's marker).
            self.pending.drain(..fault);
            self.state = State::Text;
            return true;
        }
        let Some(end) = scan.end else {
            return false;
        };
        if !self.started {
            // A complete object without a name is not a call.
            let raw = std::mem::take(&mut self.raw) + &self.pending[..end];
            push_content(events, raw);
            self.pending.drain(..end);
            self.state = State::Text;
            return true;
        }
        self.close_call(events, Some(scan.arguments_start.is_some()));
        self.pending.drain(..end);
        self.state = match (self.format, self.in_list) {
            (_, true) => State::CallList,
            (ToolFormat::Hermes, false) => State::HermesClose,
            (ToolFormat::Llama3, false) => State::Start,
            _ => State::Tail,
        };
        true
    }

    /// `NAME[ARGS]` or `NAME[CALL_ID]ID[ARGS]` after `[TOOL_CALLS]` (or Nemo's `[{..}]` list): the call
    /// starts once `[ARGS]` is read; a head that is no call's is given back as content.
    fn call_name(&mut self, events: &mut Vec<ToolEvent>, at_end: bool) -> bool {
        let trimmed = self.pending.trim_start();
        if trimmed.starts_with('[') {
            let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
            if compact.starts_with("[{") {
                let bracket = self.pending.find('[').map_or(0, |i| i + 1);
                self.raw.extend(self.pending.drain(..bracket));
                self.in_list = true;
                self.state = State::CallList;
                return true;
            }
            if compact == "[" && !at_end {
                return false;
            }
        }
        let Some(at) = self.pending.find(MISTRAL_ARGS) else {
            if self.pending.len() <= MAX_CALL_HEAD && !at_end {
                return false;
            }
            let raw = std::mem::take(&mut self.raw) + &self.pending;
            push_content(events, raw);
            self.pending.clear();
            self.state = State::Text;
            return true;
        };
        let head = &self.pending[..at];
        let (name, id) = match head.split_once(MISTRAL_CALL_ID) {
            Some((name, id)) => (name.trim(), Some(id.trim())),
            None => (head.trim(), None),
        };
        let named = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !named {
            let raw = std::mem::take(&mut self.raw) + &self.pending[..at + MISTRAL_ARGS.len()];
            push_content(events, raw);
        } else {
            let id = id
                .filter(|id| super::is_mistral_call_id(id))
                .map(str::to_string);
            let name = name.to_string();
            self.start_call(events, &name, id);
            self.raw.clear();
        }
        self.pending.drain(..at + MISTRAL_ARGS.len());
        self.state = if named {
            State::CallArguments
        } else {
            State::Text
        };
        true
    }

    /// The arguments' JSON value after `[ARGS]`, streamed as it is written; the call ends with it.
    fn call_arguments(&mut self, events: &mut Vec<ToolEvent>) -> bool {
        // Read as the value of an `arguments` key, so that the call scanner finds where it ends.
        const KEY: &str = "{\"arguments\": ";
        let scan = scan_call(&format!("{KEY}{}", self.pending));
        let at = |offset: usize| offset.saturating_sub(KEY.len());
        let fault = scan.invalid.map(at);
        if let Some(start) = scan.arguments_start.map(at) {
            let read = fault.unwrap_or_else(|| self.pending.trim_end().len());
            let end = scan.arguments_end.map(at).unwrap_or(read).min(read);
            self.send_pending_arguments(events, start, end);
        }
        let done = scan.arguments_end.map(at).or(fault);
        let Some(done) = done else {
            return false;
        };
        self.close_call(events, None);
        self.pending.drain(..done.min(self.pending.len()));
        self.state = State::Text;
        self.after_call = true;
        true
    }

    /// Sends what of the arguments written at `pending[start..end]` has not gone out yet.
    fn send_pending_arguments(&mut self, events: &mut Vec<ToolEvent>, start: usize, end: usize) {
        let from = start + self.arguments_sent;
        if end > from && self.pending.is_char_boundary(from) && self.pending.is_char_boundary(end) {
            let delta = self.pending[from..end].to_string();
            self.arguments_sent += delta.len();
            self.send_arguments(events, delta);
        }
    }

    fn send_arguments(&mut self, events: &mut Vec<ToolEvent>, delta: String) {
        let index = self.calls.len() - 1;
        if let Some(call) = self.calls.last_mut() {
            call.arguments.push_str(&delta);
        }
        events.push(ToolEvent::CallArguments { index, delta });
    }

    /// Ends the current call; a call that never wrote arguments gets `{}`.
    fn close_call(&mut self, events: &mut Vec<ToolEvent>, had_arguments: Option<bool>) {
        if had_arguments != Some(true) && self.arguments_sent == 0 {
            self.send_arguments(events, "{}".to_string());
        }
        self.started = false;
        self.arguments_sent = 0;
        self.raw.clear();
    }

    fn hermes_close(&mut self, at_end: bool) -> bool {
        let trimmed = self.pending.trim_start();
        if let Some(rest) = trimmed.strip_prefix(HERMES_CLOSE) {
            self.pending = rest.to_string();
            self.state = State::Text;
            self.after_call = true;
            return true;
        }
        if HERMES_CLOSE.starts_with(trimmed) && !at_end {
            return false;
        }
        self.state = State::Text;
        true
    }
}

fn push_content(events: &mut Vec<ToolEvent>, text: String) {
    if text.is_empty() {
        return;
    }
    if let Some(ToolEvent::Content(last)) = events.last_mut() {
        last.push_str(&text);
    } else {
        events.push(ToolEvent::Content(text));
    }
}

/// The byte offset in `text` after `count` non-whitespace characters (all ASCII here).
fn byte_after_compact(text: &str, count: usize) -> usize {
    let mut seen = 0;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            continue;
        }
        seen += 1;
        if seen == count {
            return i + c.len_utf8();
        }
    }
    text.len()
}

/// Length of the longest suffix of `text` that is a proper prefix of `marker`.
fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// Length of the JSON escape at the start of `text`, if it is complete (a surrogate pair counts whole).
/// Always ends on a character boundary, whatever follows the backslash.
fn escape_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    match bytes.get(1)? {
        b'u' => {
            if bytes.len() < 6 {
                return None;
            }
            // A malformed `\u` escape is read as the two bytes `\u`; the JSON reader reports it.
            let Some(high) = text
                .get(2..6)
                .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            else {
                return Some(2);
            };
            if !(0xD800..0xDC00).contains(&high) {
                return Some(6);
            }
            if bytes.len() < 12 {
                return None;
            }
            // Only a `\u` low half makes it a pair; anything else is read as an escape of its own.
            match text.get(6..12) {
                Some(low) if low.starts_with("\\u") => Some(12),
                _ => Some(6),
            }
        }
        // A backslash and the character after it, however many bytes that takes (`\é` is 3).
        _ => Some(1 + text.get(1..)?.chars().next()?.len_utf8()),
    }
}

/// A new call's id: OpenAI's style, or for Mistral's formats the 9 letters and digits their templates
/// require when the call comes back.
fn call_id(format: ToolFormat) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    if matches!(format, ToolFormat::Mistral | ToolFormat::MistralArgs) {
        const ALPHANUMERIC: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        return (0..9)
            .map(|_| char::from(ALPHANUMERIC[rng.random_range(0..ALPHANUMERIC.len())]))
            .collect();
    }
    let n: u128 = rng.random();
    format!("call_{:024x}", n & ((1u128 << 96) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` in pieces of `step` bytes (on char boundaries) and gathers content and calls.
    fn run(format: ToolFormat, text: &str, step: usize) -> (String, Vec<(String, String)>) {
        let mut parser = ToolCallParser::new(format);
        let mut events = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = step.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            events.extend(parser.push(&rest[..cut]));
            rest = &rest[cut..];
        }
        events.extend(parser.finish());
        let mut content = String::new();
        let mut calls: Vec<(String, String)> = Vec::new();
        for e in events {
            match e {
                ToolEvent::Content(t) => content.push_str(&t),
                ToolEvent::CallStart { index, name, .. } => {
                    assert_eq!(index, calls.len());
                    calls.push((name, String::new()));
                }
                ToolEvent::CallArguments { index, delta } => calls[index].1.push_str(&delta),
            }
        }
        let recorded: Vec<(String, String)> = parser
            .calls()
            .iter()
            .map(|c| (c.name.clone(), c.arguments.clone()))
            .collect();
        assert_eq!(recorded, calls);
        (content, calls)
    }

    #[test]
    fn generic_calls_and_responses_stream_in_any_pieces() {
        let text = r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "now", "arguments": {}}]}"#;
        for step in [1, 3, 7, 1000] {
            let (content, calls) = run(ToolFormat::Generic, text, step);
            assert_eq!(content, "");
            assert_eq!(
                calls,
                [
                    (
                        "get_weather".to_string(),
                        r#"{"city": "Paris"}"#.to_string()
                    ),
                    ("now".to_string(), "{}".to_string())
                ]
            );
            let (content, calls) = run(
                ToolFormat::Generic,
                r#"{"response": "Hi \"you\"\n\u00e9\ud83d\ude00!"}"#,
                step,
            );
            assert_eq!(content, "Hi \"you\"\né😀!");
            assert!(calls.is_empty());
        }
        let (content, _) = run(ToolFormat::Generic, "just text", 2);
        assert_eq!(content, "just text");
    }

    #[test]
    fn hermes_content_then_calls() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        for step in [1, 4, 1000] {
            let (content, calls) = run(ToolFormat::Hermes, text, step);
            assert_eq!(content, "Let me check.\n");
            assert_eq!(calls.len(), 2);
            assert_eq!(calls[0].1, r#"{"city": "Oslo"}"#);
        }
        let (content, calls) = run(ToolFormat::Hermes, "a < b and <tool_c", 1);
        assert_eq!(content, "a < b and <tool_c");
        assert!(calls.is_empty());
    }

    #[test]
    fn escapes_before_multibyte_characters_never_split_them() {
        // Found by fuzzing: `\é` was taken as a two-byte escape and the slice after it cut the `é`.
        for text in [
            "{\"response\": \"\\é\"}",
            "{\"response\": \"\\u00e9 \\ud83d\\ude00 \\ud83dé \\uzzzz\"}",
            "{\"response\": \"\\\u{1F600}\"}",
        ] {
            for step in 1..6 {
                run(ToolFormat::Generic, text, step);
            }
        }
        assert_eq!(escape_len("\\é"), Some(3));
        assert_eq!(escape_len("\\ud83d\\ude00"), Some(12));
        assert_eq!(escape_len("\\ud83dxxxxxx"), Some(6));
        assert_eq!(escape_len("\\ud83d"), None);
    }

    #[test]
    fn malformed_calls_come_back_as_content() {
        let (content, calls) = run(ToolFormat::Hermes, "<tool_call>not json</tool_call>", 3);
        assert!(calls.is_empty());
        assert_eq!(content, "<tool_call>not json</tool_call>");
        let (content, calls) = run(ToolFormat::Hermes, "<tool_call>{\"city\": 1}", 3);
        assert!(calls.is_empty());
        assert_eq!(content, "<tool_call>{\"city\": 1}");
    }

    #[test]
    fn duplicate_keys_mean_the_same_whole_or_in_pieces() {
        // Found by fuzzing: a streamed call's name is out when its string closes, so a later `name`
        // (another string, a number, an empty string) must not rename or unname the call read whole.
        let formats = [
            (ToolFormat::Llama3, "", ""),
            (ToolFormat::Hermes, "<tool_call>", "</tool_call>"),
            (ToolFormat::Generic, "{\"tool_calls\": [", "]}"),
            (ToolFormat::Mistral, "[TOOL_CALLS][", "]"),
        ];
        let objects = [
            r#"{"name": "f", "arguments": {"x": 1}, "name": "g"}"#,
            r#"{"name": "f", "name": 3, "arguments": {}}"#,
            r#"{"name": "", "parameters": {}, "name": "h"}"#,
            r#"{"name": "f", "arguments": {"a": 1}, "arguments": {"b": 2}}"#,
        ];
        for (format, open, close) in formats {
            for object in objects {
                let text = format!("{open}{object}{close}");
                let whole = run(format, &text, text.len());
                assert!(!whole.1.is_empty(), "{format:?} {text}: no call");
                for step in 1..8 {
                    assert_eq!(
                        run(format, &text, step),
                        whole,
                        "{format:?} {text} in {step}s"
                    );
                }
            }
        }
        let (_, calls) = run(ToolFormat::Llama3, objects[0], 100);
        assert_eq!(calls, [("f".to_string(), r#"{"x": 1}"#.to_string())]);
    }

    #[test]
    fn malformed_arguments_read_the_same_whole_or_in_pieces() {
        // Found by fuzzing: arguments that are not JSON (`z"x"`) were sent up to the end of whatever
        // text had arrived, so the call's arguments depended on the chunks.
        let cases = [
            (
                ToolFormat::Mistral,
                r#"[TOOL_CALLS][{"name": "f", "arguments": z"x": 1}}, {"name":P "g", "arguments": {}}]ather", {g"#,
            ),
            (
                ToolFormat::Llama3,
                r#"{"name": "f", "parameters": 12 , "x": 1}"#,
            ),
            (ToolFormat::Llama3, r#"{"name": "f", "parameters": 1"x" }"#),
            (
                ToolFormat::Hermes,
                "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1 }  ,  \n",
            ),
            (
                ToolFormat::Generic,
                r#"{"tool_calls": [{"name": "f", "arguments": [1, 2] ]"#,
            ),
            // Found by fuzzing: a malformed object before a sound call must not swallow the call.
            (
                ToolFormat::Hermes,
                "<tool_call>\n{\"name\":_t\"e\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\"}}a, {\"x",
            ),
        ];
        for (format, text) in cases {
            let whole = run(format, text, text.len());
            for step in 1..9 {
                assert_eq!(
                    run(format, text, step),
                    whole,
                    "{format:?} {text} in {step}s"
                );
            }
        }
        let (content, calls) = run(ToolFormat::Llama3, r#"{"name": "f", "parameters": z}"#, 3);
        assert_eq!(calls, [("f".to_string(), "{}".to_string())]);
        assert_eq!(content, "z}");
    }

    #[test]
    fn mistral_and_llama_formats() {
        let (content, calls) = run(
            ToolFormat::Mistral,
            r#"[TOOL_CALLS][{"name": "f", "arguments": {"x": 1}}, {"name": "g", "arguments": {}}]"#,
            2,
        );
        assert_eq!(content, "");
        assert_eq!(calls.len(), 2);
        let (_, calls) = run(
            ToolFormat::Mistral,
            r#"[{"name": "f", "arguments": {"x": 1}}]"#,
            5,
        );
        assert_eq!(calls[0].1, r#"{"x": 1}"#);
        let (content, calls) = run(
            ToolFormat::Llama3,
            r#"{"name": "f", "parameters": {"x": [1, 2]}}"#,
            3,
        );
        assert_eq!(content, "");
        assert_eq!(calls, [("f".to_string(), r#"{"x": [1, 2]}"#.to_string())]);
        let (content, calls) = run(ToolFormat::Llama3, "The answer is 4.", 3);
        assert_eq!(content, "The answer is 4.");
        assert!(calls.is_empty());
    }
}
