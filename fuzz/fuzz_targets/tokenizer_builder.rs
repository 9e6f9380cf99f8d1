//! Building the tokenizer from GGUF metadata (`engine::tokenizer::Tokenizer::from_gguf`) with fuzzed
//! vocabularies, token types, merges, scores, a Unigram model's precompiled charsmap and special-token ids
//! (of any integer type), then using it:
//! encode and decode a fuzzed text, every token's bytes, and the grammar engine's token trie over it
//! (`engine::grammar::Grammar::new`), as loading a model does. Bad metadata must be an error, not a panic.
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;

use arbitrary::Arbitrary;
use candle_core::quantized::gguf_file::Value;
use libfuzzer_sys::fuzz_target;
use model_runner::engine::grammar::{Grammar, GrammarSpec};
use model_runner::engine::tokenizer::Tokenizer;

/// An integer as GGUF writers store ids, in one of several widths (some of them wrong).
#[derive(Arbitrary, Debug)]
enum Id {
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    U8(u8),
    Small(u8),
    Text(String),
}

impl Id {
    fn value(&self, vocab: usize) -> Value {
        match self {
            Id::U32(v) => Value::U32(*v),
            Id::I32(v) => Value::I32(*v),
            Id::U64(v) => Value::U64(*v),
            Id::I64(v) => Value::I64(*v),
            Id::U8(v) => Value::U8(*v),
            // Mostly a real id, to get past the ids that are out of range.
            Id::Small(v) => Value::U32(u32::from(*v) % (vocab as u32 + 1)),
            Id::Text(s) => Value::String(s.clone()),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    model: u8,
    pre: Option<String>,
    /// The byte-level alphabet first (so gpt2 merges meet real tokens), then these.
    with_byte_tokens: bool,
    tokens: Vec<String>,
    types: Option<Vec<i8>>,
    merges: Option<Vec<String>>,
    scores: Option<Vec<f32>>,
    bos: Option<Id>,
    eos: Option<Id>,
    eot: Option<Id>,
    eom: Option<Id>,
    unknown: Option<Id>,
    add_bos: Option<bool>,
    add_space_prefix: Option<bool>,
    /// `tokenizer.ggml.precompiled_charsmap` (read by the `t5` model): a size header, a double array and
    /// replacement strings, all fuzzed.
    charsmap: Option<Vec<u8>>,
    text: String,
    decode: Vec<u16>,
}

fn metadata(input: &Input) -> HashMap<String, Value> {
    let model = ["gpt2", "llama", "bert", "t5", ""][input.model as usize % 5];
    let mut tokens = if input.with_byte_tokens {
        fuzz_support::byte_level_chars()
    } else {
        Vec::new()
    };
    tokens.extend(input.tokens.iter().cloned());
    let vocab = tokens.len();
    let strings = |items: Vec<String>| Value::Array(items.into_iter().map(Value::String).collect());
    let mut m = HashMap::new();
    m.insert("tokenizer.ggml.model".into(), Value::String(model.into()));
    m.insert("tokenizer.ggml.tokens".into(), strings(tokens));
    if let Some(pre) = &input.pre {
        m.insert("tokenizer.ggml.pre".into(), Value::String(pre.clone()));
    }
    if let Some(types) = &input.types {
        let types = types.iter().map(|t| Value::I32(i32::from(*t % 8))).collect();
        m.insert("tokenizer.ggml.token_type".into(), Value::Array(types));
    }
    if let Some(merges) = &input.merges {
        m.insert("tokenizer.ggml.merges".into(), strings(merges.clone()));
    }
    if let Some(scores) = &input.scores {
        let scores = scores.iter().map(|s| Value::F32(*s)).collect();
        m.insert("tokenizer.ggml.scores".into(), Value::Array(scores));
    }
    for (key, id) in [
        ("bos_token_id", &input.bos),
        ("eos_token_id", &input.eos),
        ("eot_token_id", &input.eot),
        ("eom_token_id", &input.eom),
        ("unknown_token_id", &input.unknown),
    ] {
        if let Some(id) = id {
            m.insert(format!("tokenizer.ggml.{key}"), id.value(vocab));
        }
    }
    if let Some(charsmap) = &input.charsmap {
        let bytes = charsmap.iter().map(|b| Value::U8(*b)).collect();
        m.insert("tokenizer.ggml.precompiled_charsmap".into(), Value::Array(bytes));
    }
    for (key, flag) in [("add_bos_token", input.add_bos), ("add_space_prefix", input.add_space_prefix)] {
        if let Some(flag) = flag {
            m.insert(format!("tokenizer.ggml.{key}"), Value::Bool(flag));
        }
    }
    m
}

fuzz_target!(init: fuzz_support::single_threaded(), |input: Input| {
    if input.tokens.len() > 512 || input.text.len() > 1024 {
        return;
    }
    let Ok(tokenizer) = Tokenizer::from_gguf(&metadata(&input)) else {
        return;
    };
    if let Ok(ids) = tokenizer.encode(&input.text, true) {
        for &id in &ids {
            assert!((id as usize) < tokenizer.vocab_size() + 1024, "id {id} far outside the vocabulary");
        }
        let _ = tokenizer.decode(&ids, false);
        let _ = tokenizer.decode(&ids, true);
    }
    let ids: Vec<u32> = input.decode.iter().map(|&i| u32::from(i)).collect();
    let _ = tokenizer.decode(&ids, false);
    for id in 0..tokenizer.vocab_size() as u32 + 2 {
        let _ = tokenizer.token_bytes(id);
        let _ = tokenizer.token_text(id);
        let _ = tokenizer.is_control(id);
    }
    let tokenizer = Arc::new(tokenizer);
    if let Ok(grammar) = Grammar::new(tokenizer) {
        let spec = GrammarSpec::JsonSchema(serde_json::json!({"type": "object",
            "properties": {"a": {"type": "string"}}, "required": ["a"]}));
        if let Ok(mut constraint) = grammar.compile(&spec) {
            let _ = constraint.allowed();
        }
    }
});
