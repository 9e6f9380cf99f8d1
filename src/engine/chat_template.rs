//! Chat templates: the model's Jinja template (`tokenizer.chat_template`, or a template layer in the
//! package, which wins) rendered with `minijinja` the way Hugging Face and llama.cpp render it.
//!
//! The environment matches transformers': `trim_blocks` and `lstrip_blocks`, loop controls, Python string
//! methods (`minijinja-contrib`'s pycompat), `raise_exception`, `strftime_now`, and a `tojson` that writes
//! Python's `json.dumps` form (`", "` and `": "` separators, non-ASCII kept). No template at all: ChatML.
//!
//! A template comes with the model, so it is untrusted code: every render runs on a fuel budget (which
//! bounds both its time and the data it makes), its output is capped, and the filters and methods that can
//! ask for huge strings in one call (`tojson(indent=..)`, `str.format` widths) are bounded by us.

use std::io::Write;

use minijinja::value::Kwargs;
use minijinja::{Environment, Error as JinjaError, ErrorKind, State, Value, context};
use serde::{Deserialize, Serialize};

/// The template used when a model brings none.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Fuel for one render: minijinja charges about one per instruction executed and one per 64 bytes of data
/// a template creates, so this bounds a render's time (well under a second) and the memory it can make
/// (about `RENDER_FUEL * 64` bytes). Real templates over long conversations with tools use a few thousand
/// per message.
pub const RENDER_FUEL: u64 = 5_000_000;
/// Largest prompt a render may produce; larger output fails the render rather than growing.
pub const MAX_RENDERED_BYTES: usize = 8 << 20;
/// Largest `indent` `tojson` accepts (templates use 2 or 4); a huge one would ask for terabytes.
pub const MAX_JSON_INDENT: usize = 16;
/// Largest width or precision a `str.format` field may ask for.
pub const MAX_FORMAT_WIDTH: u64 = 1024;
/// Stack of the thread a render runs on (reserved address space; only what is used is touched).
pub const RENDER_STACK_BYTES: usize = 128 << 20;
/// Deepest macro / recursive-loop nesting; minijinja recurses on the native stack for each level.
const RECURSION_LIMIT: usize = 64;

const TEMPLATE_NAME: &str = "chat";

/// Why a template could not be compiled or rendered. All of them fail only the request that rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the chat template does not compile: {0}")]
    Compile(String),
    #[error("the chat template failed to render: {0}")]
    Render(String),
    #[error(
        "the chat template used more than its budget of {RENDER_FUEL} fuel (too much work or data)"
    )]
    OutOfFuel,
    #[error("the rendered prompt is larger than {MAX_RENDERED_BYTES} bytes")]
    TooLarge,
}

/// One chat message as templates see it. Tool calls and tool results ride along for templates that use them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_string(),
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
            name: None,
        }
    }
}

/// A compiled chat template and the special-token texts it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| TemplateError::Compile(describe(&e)))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_unknown_method_callback(python_method);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", python_json);
        env.add_filter("string", bounded_string);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| TemplateError::Compile(describe(&e)))?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The Jinja source, for telling what the template supports (tools, their format).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The texts of `bos_token` and `eos_token` as the template sees them.
    pub fn special_tokens(&self) -> (&str, &str) {
        (&self.bos_token, &self.eos_token)
    }

    /// Renders a conversation; `tools` (OpenAI function specs) are passed to templates that take them.
    ///
    /// CPU-bound but bounded by `RENDER_FUEL` and `MAX_RENDERED_BYTES`; callers on an async runtime should
    /// run it on a blocking thread. The render itself runs on a thread of its own with a
    /// `RENDER_STACK_BYTES` stack: minijinja prints and drops nested values recursively, and a template can
    /// nest a list hundreds of thousands deep within its fuel, far past a worker thread's 2 MiB.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with(
            messages,
            tools,
            add_generation_prompt,
            &serde_json::Map::new(),
        )
    }

    /// `render` with further template variables (a request's `chat_template_kwargs`, such as
    /// `enable_thinking`); the variables the server sets win over them.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("chat-template".to_string())
                .stack_size(RENDER_STACK_BYTES)
                .spawn_scoped(scope, || {
                    self.render_here(messages, tools, add_generation_prompt, extra)
                })
                .map_err(|e| TemplateError::Render(format!("cannot start the render: {e}")))?
                .join()
                .map_err(|_| TemplateError::Render("the render panicked".to_string()))?
        })
    }

    fn render_here(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Compile(describe(&e)))?;
        let mut out = CappedOutput::default();
        let ours = context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            tools => tools.map(|t| Value::from(minijinja::value::Serde(t))),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
        };
        // The first map wins a name both have.
        let context =
            minijinja::value::merge_maps([ours, Value::from(minijinja::value::Serde(extra))]);
        let rendered = template.render_captured_to(context, &mut out);
        if out.overflowed {
            return Err(TemplateError::TooLarge);
        }
        match rendered {
            Ok(_) => String::from_utf8(out.bytes)
                .map_err(|e| TemplateError::Render(format!("output is not UTF-8: {e}"))),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(TemplateError::OutOfFuel),
            Err(e) => Err(TemplateError::Render(describe(&e))),
        }
    }
}

/// The render's output, refusing to grow past `MAX_RENDERED_BYTES` (the render then fails).
#[derive(Default)]
struct CappedOutput {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered prompt too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The error and its causes on one line.
fn describe(e: &JinjaError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn invalid(message: impl Into<String>) -> JinjaError {
    JinjaError::new(ErrorKind::InvalidOperation, message.into())
}

fn raise_exception(message: String) -> Result<Value, JinjaError> {
    Err(invalid(message))
}

/// `strftime_now(format)`; an invalid format (`%Q`) is a render error, not chrono's panic in `to_string`.
fn strftime_now(format: String) -> Result<String, JinjaError> {
    use std::fmt::Write as _;
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format))
        .map_err(|_| invalid(format!("strftime_now: invalid format {format:?}")))?;
    Ok(out)
}

/// Python's string methods (pycompat), with `str.format` widths bounded first: pycompat formats without a
/// fuel check, so `"{:>1000000000000}".format(x)` would otherwise allocate a terabyte.
fn python_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, JinjaError> {
    if method == "format"
        && let Some(format) = value.as_str()
    {
        check_format_widths(format)?;
        for arg in args.iter().filter(|a| a.as_object().is_some()) {
            bounded_text(arg)?;
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// A value's text, refused once it passes `MAX_RENDERED_BYTES`: a list built from shared parts is small in
/// memory but its text is exponential, and minijinja's own `string` writes it all before charging fuel.
fn bounded_text(value: &Value) -> Result<String, JinjaError> {
    struct Capped(String);
    impl std::fmt::Write for Capped {
        fn write_str(&mut self, piece: &str) -> std::fmt::Result {
            if self.0.len() + piece.len() > MAX_RENDERED_BYTES {
                return Err(std::fmt::Error);
            }
            self.0.push_str(piece);
            Ok(())
        }
    }
    let mut out = Capped(String::new());
    std::fmt::write(&mut out, format_args!("{value}")).map_err(|_| {
        invalid(format!(
            "a value's text is larger than {MAX_RENDERED_BYTES} bytes"
        ))
    })?;
    Ok(out.0)
}

/// The `string` filter over `bounded_text`.
fn bounded_string(value: &Value) -> Result<Value, JinjaError> {
    if value.is_undefined() || value.as_str().is_some() {
        return Ok(value.clone());
    }
    bounded_text(value).map(Value::from)
}

/// Refuses a `str.format` string whose replacement fields name a number above `MAX_FORMAT_WIDTH`.
fn check_format_widths(format: &str) -> Result<(), JinjaError> {
    let mut in_field = false;
    let mut number: u64 = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if !in_field && chars.peek() == Some(&'{') => {
                chars.next();
            }
            '{' => in_field = true,
            '}' => in_field = false,
            d if in_field && d.is_ascii_digit() => {
                number = number
                    .saturating_mul(10)
                    .saturating_add(u64::from(d as u8 - b'0'));
                if number > MAX_FORMAT_WIDTH {
                    return Err(invalid(format!(
                        "str.format: width or precision above {MAX_FORMAT_WIDTH}"
                    )));
                }
                continue;
            }
            _ => {}
        }
        number = 0;
    }
    Ok(())
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent)`, with the
/// indent capped and the output bounded by the render's remaining fuel and `MAX_RENDERED_BYTES`. Written
/// straight from the template's value: a value built from shared parts (`[v, v]` repeated) is small in
/// memory but exponential once expanded, so nothing is expanded beyond what the output limit admits.
fn python_json(state: &State, value: Value, kwargs: Kwargs) -> Result<Value, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    if let Some(width) = indent
        && width > MAX_JSON_INDENT
    {
        return Err(invalid(format!(
            "tojson: indent {width} is above {MAX_JSON_INDENT}"
        )));
    }
    let fuel_bytes = state
        .fuel_levels()
        .map_or(u64::MAX, |(_, left)| left.saturating_mul(64));
    let limit = usize::try_from(fuel_bytes)
        .unwrap_or(usize::MAX)
        .min(MAX_RENDERED_BYTES);
    let mut out = JsonOut {
        text: String::new(),
        indent,
        limit,
    };
    out.value(&value, 0)?;
    Ok(Value::from_safe_string(out.text))
}

/// Deepest nesting `tojson` writes (serde_json's own parsing limit); the writer recurses per level.
const MAX_JSON_DEPTH: usize = 128;

/// Python `json.dumps` text being written, checked against a byte limit as it grows.
struct JsonOut {
    text: String,
    indent: Option<usize>,
    limit: usize,
}

impl JsonOut {
    fn too_large(&self) -> JinjaError {
        invalid(format!("tojson: output larger than {} bytes", self.limit))
    }

    fn push(&mut self, piece: &str) -> Result<(), JinjaError> {
        if self.text.len() + piece.len() > self.limit {
            return Err(self.too_large());
        }
        self.text.push_str(piece);
        Ok(())
    }

    fn newline(&mut self, depth: usize) -> Result<(), JinjaError> {
        let Some(width) = self.indent else {
            return Ok(());
        };
        let spaces = width.saturating_mul(depth);
        if self.text.len().saturating_add(spaces) >= self.limit {
            return Err(self.too_large());
        }
        self.text.push('\n');
        self.text.extend(std::iter::repeat_n(' ', spaces));
        Ok(())
    }

    fn json_text(value: &impl Serialize) -> Result<String, JinjaError> {
        serde_json::to_string(value).map_err(|e| invalid(format!("tojson: {e}")))
    }

    fn value(&mut self, value: &Value, depth: usize) -> Result<(), JinjaError> {
        use minijinja::value::ValueKind;
        if depth > MAX_JSON_DEPTH {
            return Err(invalid(format!(
                "tojson: nested deeper than {MAX_JSON_DEPTH}"
            )));
        }
        let item_separator = if self.indent.is_some() { "," } else { ", " };
        match value.kind() {
            ValueKind::Undefined | ValueKind::None => self.push("null"),
            ValueKind::Seq | ValueKind::Iterable => {
                self.push("[")?;
                let mut empty = true;
                for (i, item) in value.try_iter()?.enumerate() {
                    empty = false;
                    if i > 0 {
                        self.push(item_separator)?;
                    }
                    self.newline(depth + 1)?;
                    self.value(&item, depth + 1)?;
                }
                if !empty {
                    self.newline(depth)?;
                }
                self.push("]")
            }
            ValueKind::Map => {
                self.push("{")?;
                let mut empty = true;
                for (i, key) in value.try_iter()?.enumerate() {
                    empty = false;
                    if i > 0 {
                        self.push(item_separator)?;
                    }
                    self.newline(depth + 1)?;
                    // Python writes non-string keys (numbers, booleans) as their text.
                    let key_text = key.as_str().map_or_else(|| key.to_string(), str::to_string);
                    self.push(&Self::json_text(&key_text)?)?;
                    self.push(": ")?;
                    self.value(&value.get_item(&key)?, depth + 1)?;
                }
                if !empty {
                    self.newline(depth)?;
                }
                self.push("}")
            }
            _ => {
                let text = Self::json_text(value)?;
                self.push(&text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders_with_generation_prompt() {
        let t = ChatTemplate::new(CHATML_TEMPLATE, "", "").unwrap();
        let text = t
            .render(&[ChatMessage::new("user", "Hi")], None, true)
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn tojson_writes_python_json_and_raise_exception_fails_the_render() {
        let t = ChatTemplate::new("{{ tools | tojson }}", "", "").unwrap();
        let tools = serde_json::json!([{"name": "é", "p": {"a": 1}}]);
        assert_eq!(
            t.render(&[], Some(&tools), false).unwrap(),
            r#"[{"name": "é", "p": {"a": 1}}]"#
        );
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        let err = t.render(&[], None, false).unwrap_err().to_string();
        assert!(err.contains("roles must alternate"), "{err}");
    }

    #[test]
    fn python_string_methods_and_trimmed_blocks_work() {
        let source = "{% for m in messages %}\n{{ m.content.strip() }}|\n{% endfor %}";
        let t = ChatTemplate::new(source, "", "").unwrap();
        let text = t
            .render(&[ChatMessage::new("user", "  x  ")], None, false)
            .unwrap();
        assert_eq!(text, "x|\n");
    }

    /// Renders `source` over one user message on a thread with a 2 MiB stack (as a blocking worker has),
    /// so a stack overflow would show up here as it would in the server.
    fn render_hostile(source: &str) -> Result<String, TemplateError> {
        let source = source.to_string();
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let t = ChatTemplate::new(&source, "<s>", "</s>")?;
                t.render(&[ChatMessage::new("user", "Hi")], None, true)
            })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn tojson_with_a_huge_indent_is_a_render_error_not_an_abort() {
        let err = render_hostile("{{ messages | tojson(indent=1000000000000) }}").unwrap_err();
        assert!(matches!(err, TemplateError::Render(_)), "{err}");
        assert!(err.to_string().contains("indent"), "{err}");
        let ok = render_hostile("{{ [1] | tojson(indent=2) }}").unwrap();
        assert_eq!(ok, "[\n  1\n]");
    }

    #[test]
    fn tojson_output_is_bounded_by_the_render_budget() {
        // Every level indents by 16 more spaces: deep nesting would multiply the output.
        let source = "{% set ns = namespace(v=[1]) %}{% for i in range(40) %}{% set ns.v = [ns.v, ns.v] %}{% endfor %}{{ ns.v | tojson(indent=16) }}";
        let err = render_hostile(source).unwrap_err();
        assert!(
            matches!(
                err,
                TemplateError::Render(_) | TemplateError::OutOfFuel | TemplateError::TooLarge
            ),
            "{err}"
        );
    }

    #[test]
    fn nested_loops_run_out_of_fuel_within_seconds() {
        let started = std::time::Instant::now();
        let source = "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}{% endfor %}{% endfor %}{% endfor %}";
        let err = render_hostile(source).unwrap_err();
        assert!(matches!(err, TemplateError::OutOfFuel), "{err}");
        assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
    }

    #[test]
    fn string_repetition_and_padding_cannot_ask_for_terabytes() {
        for source in [
            "{{ 'x' * 1000000000000 }}",
            "{{ 'x' * 10000000 }}",
            "{{ ('x' * 1000000) * 1000000 }}",
            "{% for i in range(1000000000000) %}{% endfor %}",
            "{{ 'x' | indent(1000000000000, true) }}",
            "{{ '%1000000000000d' | format(1) }}",
            "{{ '{:>1000000000000}'.format('x') }}",
            "{{ '{:.1000000000000}'.format(1.5) }}",
            "{{ 'a b' | replace(' ', 'x' * 90000000) }}",
            // Shared parts: 2^40 leaves in a few bytes of memory, printed and serialised.
            "{% set ns = namespace(v=[1]) %}{% for i in range(40) %}{% set ns.v = [ns.v, ns.v] %}{% endfor %}{{ ns.v }}",
            "{% set ns = namespace(v=[1]) %}{% for i in range(40) %}{% set ns.v = [ns.v, ns.v] %}{% endfor %}{{ ns.v | tojson }}",
            "{% set ns = namespace(v=[1]) %}{% for i in range(40) %}{% set ns.v = [ns.v, ns.v] %}{% endfor %}{{ ns.v | string | length }}",
            "{% set ns = namespace(v=[]) %}{% for i in range(5000) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v | tojson }}",
        ] {
            let err = render_hostile(source).expect_err(source);
            assert!(
                matches!(
                    err,
                    TemplateError::Render(_) | TemplateError::OutOfFuel | TemplateError::TooLarge
                ),
                "{source}: {err}"
            );
        }
    }

    #[test]
    fn a_render_larger_than_the_output_cap_fails() {
        // 16 MiB of output in 64 KiB pieces: cheap in fuel per byte, still over the cap.
        let source =
            "{% set piece = 'x' * 65536 %}{% for i in range(256) %}{{ piece }}{% endfor %}";
        let err = render_hostile(source).unwrap_err();
        assert!(
            matches!(err, TemplateError::TooLarge | TemplateError::OutOfFuel),
            "{err}"
        );
    }

    #[test]
    fn unbounded_recursion_is_a_render_error() {
        for source in [
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "{% set ns = namespace(v=[]) %}{% for i in range(200) %}{% set ns.v = [ns.v] %}{% endfor %}{% for x in ns.v recursive %}{{ loop(x) }}{% endfor %}",
        ] {
            let err = render_hostile(source).expect_err(source);
            assert!(matches!(err, TemplateError::Render(_)), "{source}: {err}");
        }
    }

    #[test]
    fn strftime_now_with_an_invalid_format_is_a_render_error() {
        let err = render_hostile("{{ strftime_now('%Q') }}").unwrap_err();
        assert!(err.to_string().contains("strftime_now"), "{err}");
        let year = render_hostile("{{ strftime_now('%Y') }}").unwrap();
        assert_eq!(year.len(), 4, "{year}");
    }

    #[test]
    fn python_format_still_accepts_ordinary_widths() {
        let text = render_hostile("{{ '{:>5}|{{}}|{:.2f}'.format('ab', 1.5) }}").unwrap();
        assert_eq!(text, "   ab|{}|1.50");
    }

    #[test]
    fn a_real_template_over_a_long_conversation_with_tools_fits_the_budget() {
        let source = include_str!("../../tests/fixtures/hermes-chat-template.jinja");
        let t = ChatTemplate::new(source, "", "<|im_end|>").unwrap();
        let tools: Vec<serde_json::Value> = (0..50)
            .map(|i| {
                serde_json::json!({"type": "function", "function": {"name": format!("tool_{i}"),
                    "description": "x".repeat(500),
                    "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}})
            })
            .collect();
        let messages: Vec<ChatMessage> = (0..4000)
            .map(|i| {
                let role = if i % 2 == 0 { "user" } else { "assistant" };
                ChatMessage::new(role, "word ".repeat(200))
            })
            .collect();
        let text = t
            .render(&messages, Some(&serde_json::Value::from(tools)), true)
            .unwrap();
        assert!(text.len() > 4_000_000, "{}", text.len());
    }

    /// gpt-oss's own template (as its tokenizer config ships it) renders a conversation with a tool call,
    /// its result and a tool list in harmony exactly as transformers' jinja renders it
    /// (`scripts/render-chat-template.py`, the date fixed to the fixture's).
    #[test]
    fn the_gpt_oss_template_renders_harmony_as_transformers_does() {
        let source = include_str!("../../tests/fixtures/gpt-oss-chat-template.jinja");
        let conversation: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/gpt-oss-conversation.json"
        ))
        .unwrap();
        let want = include_str!("../../tests/fixtures/gpt-oss-rendered.txt");
        let messages: Vec<ChatMessage> =
            serde_json::from_value(conversation["messages"].clone()).unwrap();
        let t = ChatTemplate::new(source, "<|startoftext|>", "<|return|>").unwrap();
        let text = t
            .render(&messages, Some(&conversation["tools"]), true)
            .unwrap();
        let date = text
            .find("Current date: ")
            .map(|at| &text[at + 14..at + 24])
            .expect("a date line");
        assert_eq!(text.replacen(date, "2026-01-01", 1), want);
    }

    #[test]
    fn deeply_nested_values_neither_overflow_the_stack_nor_crash() {
        // As deep as the fuel allows: printing, serialising and dropping it must not recurse natively.
        for tail in ["{{ ns.v | length }}", "{{ ns.v }}", "{{ ns.v | tojson }}"] {
            let source = format!(
                "{{% set ns = namespace(v=[]) %}}{{% for i in range(100000) %}}{{% for j in range(100) %}}{{% set ns.v = [ns.v] %}}{{% endfor %}}{{% endfor %}}{tail}"
            );
            let _ = render_hostile(&source);
        }
    }
}
