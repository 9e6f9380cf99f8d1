//! Compiling a JSON Schema (or, when the input is not JSON, a Lark grammar) into a constraint
//! (`engine::grammar::Grammar::compile`) and following it for a few tokens: the mask, steering to close,
//! and committing allowed tokens. Input: byte 0 seeds which allowed tokens are taken, the rest is the spec.
//!
//! The token trie is built once per process (lazy static) from the default model's tokenizer metadata
//! when its GGUF is on this machine (SmolLM2's 49,152 tokens, as the server builds it), else from a tiny
//! byte-level vocabulary (256 byte tokens, a few merges, ChatML markers). Init prints which.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use model_runner::engine::grammar::{Grammar, GrammarSpec};
use model_runner::engine::tokenizer::Tokenizer;

/// Most tokens followed per input: enough to get into the grammar, few enough to stay fast.
const STEPS: usize = 12;

/// The grammar engine and the vocabulary's size (the logits' width).
fn grammar() -> &'static (Grammar, usize) {
    static GRAMMAR: OnceLock<(Grammar, usize)> = OnceLock::new();
    GRAMMAR.get_or_init(|| {
        let real = fuzz_support::default_model_gguf()
            .and_then(|path| Some((fuzz_support::gguf_metadata(&path)?, path)));
        let metadata = match real {
            Some((metadata, path)) => {
                eprintln!("json_schema_grammar: token trie from {}", path.display());
                metadata
            }
            None => {
                eprintln!("json_schema_grammar: token trie from the tiny byte-level vocabulary");
                fuzz_support::tiny_tokenizer_metadata(0)
            }
        };
        let tokenizer = Tokenizer::from_gguf(&metadata).expect("the tokenizer builds");
        let vocab = tokenizer.vocab_size();
        (Grammar::new(Arc::new(tokenizer)).expect("the grammar engine builds"), vocab)
    })
}

fuzz_target!(init: { fuzz_support::single_threaded(); grammar(); }, |data: &[u8]| {
    let [seed, rest @ ..] = data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let spec = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(schema) => GrammarSpec::JsonSchema(schema),
        Err(_) => GrammarSpec::Lark(text.to_string()),
    };
    let (grammar, vocab) = grammar();
    let Ok(mut constraint) = grammar.compile(&spec) else {
        return;
    };
    let mut pick = usize::from(*seed);
    for step in 0..STEPS {
        if constraint.is_finished() {
            break;
        }
        let Ok(mask) = constraint.allowed() else {
            break;
        };
        let mut logits = vec![0.0f32; *vocab];
        if step % 4 == 3 {
            constraint.steer_to_close(&mask, &mut logits);
        }
        mask.apply(&mut logits);
        let allowed: Vec<u32> = (0..logits.len() as u32)
            .filter(|&id| logits[id as usize].is_finite() && mask.allows(id))
            .collect();
        let Some(&token) = allowed.get(pick % allowed.len().max(1)) else {
            break;
        };
        pick = pick.wrapping_mul(31).wrapping_add(7);
        if constraint.commit(token).is_err() {
            break;
        }
    }
});
