//! Rendering a hostile chat template (`engine::chat_template::ChatTemplate`) over a fixed conversation with
//! tool calls and tools. The template is untrusted model data: every render must end within its fuel and
//! output caps, as an error or a prompt, never a panic, a hang or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_runner::engine::chat_template::{ChatMessage, ChatTemplate, MAX_RENDERED_BYTES};
use serde_json::json;

fn conversation() -> Vec<ChatMessage> {
    let mut call = ChatMessage::new("assistant", "");
    call.tool_calls = Some(json!([{"id": "call_0", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]));
    let mut result = ChatMessage::new("tool", "{\"temperature\": 21}");
    result.tool_call_id = Some("call_0".into());
    result.name = Some("get_weather".into());
    vec![
        ChatMessage::new("system", "You are helpful."),
        ChatMessage::new("user", "What is the weather in Paris? é 😀 {{ x }}"),
        call,
        result,
        ChatMessage::new("assistant", "It is 21 degrees."),
        ChatMessage::new("user", "Thanks"),
    ]
}

fuzz_target!(|data: &[u8]| {
    let source = String::from_utf8_lossy(data);
    let Ok(template) = ChatTemplate::new(&source, "<|im_start|>", "<|im_end|>") else {
        return;
    };
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let messages = conversation();
    for (tools, generation) in [(Some(&tools), true), (None, false)] {
        if let Ok(prompt) = template.render(&messages, tools, generation) {
            assert!(prompt.len() <= MAX_RENDERED_BYTES, "a render beyond the output cap");
        }
    }
});
