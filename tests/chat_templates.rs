//! Each family's real chat template (as its tokenizer config ships it; llama.cpp keeps the copies in
//! `tests/fixtures/templates/`) renders a conversation as transformers' `apply_chat_template` renders it,
//! through the path a chat request takes: OpenAI's messages read, the tools planned for the format the
//! template implies, the conversation prepared for it, then rendered. The references are written by
//! `scripts/render-chat-template.py --families tests/fixtures/templates/families.json --date 2026-01-01`.
//!
//! Then the tool-call side of each family: what the model writes in its format parses into OpenAI
//! `tool_calls`, and those calls, sent back in the next request, render as the reference does.
//! No model is loaded: templates, tools and the parser are plain code.

use std::path::Path;

use model_runner::chat::structured::tool_calls_json;
use model_runner::engine::chat_template::{ChatMessage, ChatTemplate, TemplateError};
use model_runner::server::openai::chat::{ChatMessageIn, to_chat_messages};
use model_runner::tools::parser::{ToolCall, ToolCallParser};
use model_runner::tools::{
    ToolChoice, ToolFormat, ToolPlan, parse_choice, parse_tools, template_input,
};
use serde::Deserialize;
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
/// The day `strftime_now` gives in the references.
const REFERENCE_DATE: (i32, u32, u32) = (2026, 1, 1);

/// One family of `templates/families.json`.
#[derive(Debug, Deserialize)]
struct Family {
    family: String,
    template: String,
    bos_token: String,
    eos_token: String,
    /// The tool format its template implies.
    format: String,
    /// The `strftime_now` formats its template prints the day in.
    #[serde(default)]
    date_formats: Vec<String>,
    conversations: Vec<String>,
}

impl Family {
    fn template(&self) -> ChatTemplate {
        ChatTemplate::new(&self.source(), &self.bos_token, &self.eos_token).expect("it compiles")
    }

    fn source(&self) -> String {
        read(&self.template)
    }

    /// The reference for conversation `name`: its text, or the message of the error it raises.
    fn reference(&self, name: &str) -> Result<String, String> {
        let stem = format!("templates/{}.{name}", self.family);
        let text = Path::new(FIXTURES).join(format!("{stem}.txt"));
        if text.exists() {
            Ok(read(&format!("{stem}.txt")))
        } else {
            Err(read(&format!("{stem}.error")).trim_end().to_string())
        }
    }

    /// `text` with today's date, as the template printed it, put back to the references' day.
    fn at_reference_date(&self, text: String) -> String {
        let today = chrono::Local::now().date_naive();
        let (y, m, d) = REFERENCE_DATE;
        let day = chrono::NaiveDate::from_ymd_opt(y, m, d).expect("a date");
        self.date_formats.iter().fold(text, |text, format| {
            text.replace(
                &today.format(format).to_string(),
                &day.format(format).to_string(),
            )
        })
    }
}

fn read(relative: &str) -> String {
    let path = Path::new(FIXTURES).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn families() -> Vec<Family> {
    serde_json::from_str(&read("templates/families.json")).expect("the manifest")
}

fn conversation(name: &str) -> Value {
    serde_json::from_str(&read(&format!("templates/{name}-conversation.json"))).expect("JSON")
}

/// `conversation` (OpenAI's request shape) rendered as the server renders a chat request for it.
fn render_as_server(
    template: &ChatTemplate,
    conversation: &Value,
) -> Result<String, TemplateError> {
    let messages: Vec<ChatMessageIn> =
        serde_json::from_value(conversation["messages"].clone()).expect("messages");
    let mut messages: Vec<ChatMessage> = to_chat_messages(messages).expect("valid messages");
    let tools = match conversation.get("tools") {
        Some(tools) => parse_tools(tools).expect("valid tools"),
        None => Vec::new(),
    };
    let choice = parse_choice(conversation.get("tool_choice"), &tools).expect("a choice");
    let format = ToolFormat::detect(template.source());
    let plan = ToolPlan::new(format, tools, choice, true);
    let tools = template_input(plan.as_ref(), format, &mut messages);
    template.render(&messages, tools.as_ref(), true)
}

fn format_named(name: &str) -> ToolFormat {
    match name {
        "generic" => ToolFormat::Generic,
        "hermes" => ToolFormat::Hermes,
        "mistral" => ToolFormat::Mistral,
        "mistral-args" => ToolFormat::MistralArgs,
        "granite" => ToolFormat::Granite,
        "llama3" => ToolFormat::Llama3,
        "harmony" => ToolFormat::Harmony,
        other => panic!("unknown format {other:?}"),
    }
}

/// Every family's template renders every one of its conversations byte for byte as transformers does,
/// and fails where transformers' render raises (Gemma 2 has no system role).
#[test]
fn every_family_renders_as_transformers_does() {
    let mut failures = Vec::new();
    for family in families() {
        let template = family.template();
        for name in &family.conversations {
            let ours = render_as_server(&template, &conversation(name))
                .map(|text| family.at_reference_date(text));
            match (ours, family.reference(name)) {
                (Ok(ours), Ok(want)) if ours == want => {}
                (Err(TemplateError::Render(ours)), Err(want)) if ours.contains(&want) => {}
                (ours, want) => failures.push(format!(
                    "{}.{name}:\n--- ours\n{ours:?}\n--- transformers\n{want:?}",
                    family.family
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The format told from each real template is the one its family writes calls in.
#[test]
fn each_real_template_implies_its_familys_tool_format() {
    for family in families() {
        assert_eq!(
            ToolFormat::detect(&family.source()),
            format_named(&family.format),
            "{}",
            family.family
        );
    }
}

/// The calls `text` holds, read by the parser of `format` in small pieces, and the content around them.
fn parse(format: ToolFormat, text: &str) -> (String, Vec<ToolCall>) {
    let mut parser = ToolCallParser::new(format);
    let mut content = String::new();
    let mut events = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = 3.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        events.extend(parser.push(&rest[..cut]));
        rest = &rest[cut..];
    }
    events.extend(parser.finish());
    for event in events {
        if let model_runner::tools::parser::ToolEvent::Content(text) = event {
            content.push_str(&text);
        }
    }
    (content, parser.calls().to_vec())
}

/// The tool conversation with its call replaced by `calls` (as the server answered them) and the result
/// answering the first.
fn conversation_with_calls(calls: &[ToolCall]) -> Value {
    let mut conversation = conversation("tool");
    conversation["messages"][2]["tool_calls"] = tool_calls_json(calls);
    conversation["messages"][3]["tool_call_id"] = json!(calls[0].id);
    conversation
}

/// What the model of each family writes when it calls `get_weather` for Paris, in its own format, reads
/// as that call; sent back with the id we gave it, the conversation renders as the reference does with
/// that id.
#[test]
fn each_familys_calls_parse_and_render_back_as_the_reference() {
    let written = [
        (
            "llama-3.1",
            r#"<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}"#,
        ),
        (
            "llama-3.2",
            r#"{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}"#,
        ),
        (
            "mistral-nemo",
            r#"[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}, "id": "a1B2c3D4e"}]"#,
        ),
        (
            "mistral-small-3.2",
            r#"[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "celsius"}"#,
        ),
        (
            "qwen3",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>",
        ),
        (
            "qwen2.5",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>",
        ),
        (
            "granite-3.3",
            r#"<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]"#,
        ),
    ];
    let families = families();
    for (name, text) in written {
        let family = families
            .iter()
            .find(|f| f.family == name)
            .expect("a family");
        let template = family.template();
        let format = ToolFormat::detect(template.source());
        let (content, calls) = parse(format, text);
        assert_eq!(content, "", "{name}");
        assert_eq!(calls.len(), 1, "{name}: {calls:?}");
        assert_eq!(calls[0].name, "get_weather", "{name}");
        let arguments: Value = serde_json::from_str(&calls[0].arguments).expect("JSON arguments");
        assert_eq!(
            arguments,
            json!({"city": "Paris", "unit": "celsius"}),
            "{name}"
        );
        let ours = render_as_server(&template, &conversation_with_calls(&calls))
            .map(|text| family.at_reference_date(text))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = family
            .reference("tool")
            .expect("a reference")
            .replace("Xb3dPq7Lm", &calls[0].id);
        assert_eq!(ours, want, "{name}");
    }
}

/// Mistral's templates refuse call ids that are not 9 letters and digits: ours are, whichever way the
/// model wrote the call (Small 3.2's own `[CALL_ID]` kept), and ids from elsewhere (OpenAI's `call_..`)
/// are cut to 9 for the template, the call and its result alike.
#[test]
fn mistral_call_ids_are_nine_letters_and_digits_both_ways() {
    let nine = |id: &str| id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric());
    let (_, calls) = parse(
        ToolFormat::Mistral,
        r#"[TOOL_CALLS][{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}]"#,
    );
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| nine(&c.id)), "{calls:?}");
    let (content, calls) = parse(
        ToolFormat::MistralArgs,
        "Let me look.[TOOL_CALLS]a[CALL_ID]000000001[ARGS]{\"x\": [1, \"]\"]}[TOOL_CALLS]b[ARGS]{}",
    );
    assert_eq!(content, "Let me look.");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        (calls[0].id.as_str(), calls[0].arguments.as_str()),
        ("000000001", "{\"x\": [1, \"]\"]}")
    );
    assert!(nine(&calls[1].id));
    assert_eq!(
        (calls[1].name.as_str(), calls[1].arguments.as_str()),
        ("b", "{}")
    );

    for family in families()
        .iter()
        .filter(|f| f.family.starts_with("mistral"))
    {
        let mut conversation = conversation("tool");
        conversation["messages"][2]["tool_calls"][0]["id"] = json!("call_5f2a9c0e71b44d3a8e6f0b12");
        conversation["messages"][3]["tool_call_id"] = json!("call_5f2a9c0e71b44d3a8e6f0b12");
        assert_renders_tool_reference_with_id(family, &conversation, "a8e6f0b12");
    }
}

/// `conversation` renders as the family's `tool` reference does with the call id `id` in place of the
/// reference's own.
fn assert_renders_tool_reference_with_id(family: &Family, conversation: &Value, id: &str) {
    let ours = render_as_server(&family.template(), conversation)
        .map(|text| family.at_reference_date(text))
        .unwrap_or_else(|e| panic!("{}: {e}", family.family));
    let want = family
        .reference("tool")
        .expect("a reference")
        .replace("Xb3dPq7Lm", id);
    assert_eq!(ours, want, "{}", family.family);
}

/// Calls and results without ids (as Ollama's clients send them back) render for Mistral's templates,
/// which require ids: the calls are numbered and each result answers the oldest call still open.
#[test]
fn mistral_calls_without_ids_are_numbered_for_the_template() {
    for family in families()
        .iter()
        .filter(|f| f.family.starts_with("mistral"))
    {
        let mut conversation = conversation("tool");
        let call = conversation["messages"][2]["tool_calls"][0]
            .as_object_mut()
            .expect("a call");
        call.remove("id");
        call.remove("type");
        conversation["messages"][3]
            .as_object_mut()
            .expect("a result")
            .remove("tool_call_id");
        assert_renders_tool_reference_with_id(family, &conversation, "000000001");
    }
}

/// Text that only looks like the start of a Small 3.2 call is content, never dropped.
#[test]
fn a_mistral_args_head_that_is_no_call_is_content() {
    let (content, calls) = parse(ToolFormat::MistralArgs, "[TOOL_CALLS]not a name[ARGS]{}");
    assert!(calls.is_empty(), "{calls:?}");
    assert_eq!(content, "[TOOL_CALLS]not a name[ARGS]{}");
    let (content, calls) = parse(ToolFormat::MistralArgs, "[TOOL_CALLS]get_weather");
    assert!(calls.is_empty());
    assert_eq!(content, "[TOOL_CALLS]get_weather");
}

/// A required call is constrained to each format's own shape, its markers as the vocabulary's tokens.
#[test]
fn required_calls_are_constrained_to_each_formats_shape() {
    let tools = parse_tools(&conversation("tool")["tools"]).expect("tools");
    let ids = |text: &str| match text {
        "[TOOL_CALLS]" => Some(9),
        "[ARGS]" => Some(32),
        "<|tool_call|>" => Some(49154),
        _ => None,
    };
    for (format, starts) in [
        (
            ToolFormat::MistralArgs,
            "start: call\ncall: <[9]> \"get_weather\" <[32]> %json",
        ),
        (ToolFormat::Mistral, "start: <[9]> %json"),
        (ToolFormat::Granite, "start: <[49154]> %json"),
    ] {
        let plan =
            ToolPlan::new(format, tools.clone(), ToolChoice::Required, false).expect("a plan");
        let Some(model_runner::engine::grammar::GrammarSpec::Lark(grammar)) = plan.grammar(ids)
        else {
            panic!("{format:?}: a Lark grammar");
        };
        assert!(grammar.starts_with(starts), "{format:?}: {grammar}");
    }
}
