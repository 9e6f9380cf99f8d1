//! The streaming tool-call parser (`tools::parser::ToolCallParser`) for each `ToolFormat`, fed fuzzed text
//! in fuzzed chunk splits. Input: byte 0 picks the format, byte 1 seeds the split, the rest is the text.
//!
//! Checked besides "no panic": call events come in index order and agree with `calls()`, and the answer
//! (content and calls) is the same whether the text arrives whole or in pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_runner::tools::ToolFormat;
use model_runner::tools::parser::{ToolCallParser, ToolEvent};

const FORMATS: [ToolFormat; 4] = [
    ToolFormat::Generic,
    ToolFormat::Hermes,
    ToolFormat::Mistral,
    ToolFormat::Llama3,
];

/// Content and (name, arguments) of every call, from the events of one parse.
fn run(format: ToolFormat, pieces: &[&str]) -> (String, Vec<(String, String)>) {
    let mut parser = ToolCallParser::new(format);
    let mut events = Vec::new();
    for piece in pieces {
        events.extend(parser.push(piece));
    }
    events.extend(parser.finish());
    let mut content = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    for event in events {
        match event {
            ToolEvent::Content(text) => content.push_str(&text),
            ToolEvent::CallStart { index, name, .. } => {
                assert_eq!(index, calls.len(), "calls start out of order");
                calls.push((name, String::new()));
            }
            ToolEvent::CallArguments { index, delta } => {
                assert!(index < calls.len(), "arguments for call {index} before it started");
                calls[index].1.push_str(&delta);
            }
        }
    }
    let recorded: Vec<(String, String)> = parser
        .calls()
        .iter()
        .map(|c| (c.name.clone(), c.arguments.clone()))
        .collect();
    assert_eq!(recorded, calls, "calls() disagrees with the streamed events");
    (content, calls)
}

fuzz_target!(|data: &[u8]| {
    let [selector, seed, rest @ ..] = data else {
        return;
    };
    let format = FORMATS[*selector as usize % FORMATS.len()];
    let text = String::from_utf8_lossy(rest);
    let whole = run(format, &[text.as_ref()]);
    let pieces = fuzz_support::split_chunks(&text, u64::from(*seed) * 0x9E37_79B9 + rest.len() as u64);
    let split = run(format, &pieces);
    assert_eq!(whole, split, "{format:?}: the answer depends on how the text was split: {pieces:?}");
});
