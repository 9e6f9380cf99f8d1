//! Grammar-constrained decoding with `llguidance` (the engine llama.cpp and mistral.rs use).
//!
//! A `Grammar` is built once per model: a token trie over the raw bytes of every token, and the parser
//! factory with its precomputed token-set slices. Each constrained sequence gets its own `Constraint`,
//! which says which tokens may come next (a mask over the vocabulary) and follows the tokens chosen.
//! Control tokens enter the trie as llguidance's special tokens, so grammars never produce them as text;
//! the end-of-sequence token is allowed exactly when the grammar accepts.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};

use super::tokenizer::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum GrammarError {
    #[error("the model's tokenizer has no end-of-sequence token to end constrained output with")]
    NoEndToken,
    #[error("cannot build the grammar engine: {0}")]
    Setup(String),
    #[error("{0}")]
    Invalid(String),
    #[error("constrained decoding failed: {0}")]
    Matcher(String),
}

/// What the output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// A JSON Schema (any JSON value when the schema is `{}`); emitted as compact JSON with `", "` and
    /// `": "` separators, so that small models cannot wander into endless whitespace.
    JsonSchema(serde_json::Value),
    /// A grammar in llguidance's Lark dialect (may embed schemas with `%json`).
    Lark(String),
}

impl GrammarSpec {
    pub(crate) fn to_top_level(&self) -> TopLevelGrammar {
        match self {
            GrammarSpec::JsonSchema(schema) => {
                let mut schema = schema.clone();
                close_objects(&mut schema);
                TopLevelGrammar::from_json_schema(with_compact_layout(schema))
            }
            GrammarSpec::Lark(source) => TopLevelGrammar::from_lark(source.clone()),
        }
    }
}

/// Objects that list their `properties` and say nothing of others get `additionalProperties: false`, as
/// llama.cpp's schema converter and OpenAI's strict mode treat them: a small model otherwise invents
/// keys without end.
pub fn close_objects(schema: &mut serde_json::Value) {
    use serde_json::Value;
    let Value::Object(object) = schema else {
        return;
    };
    if object.contains_key("properties") && !object.contains_key("additionalProperties") {
        object.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, value) in object.iter_mut() {
        match (key.as_str(), value) {
            ("properties" | "$defs" | "definitions" | "patternProperties", Value::Object(map)) => {
                map.values_mut().for_each(close_objects)
            }
            ("anyOf" | "oneOf" | "allOf" | "prefixItems", Value::Array(list)) => {
                list.iter_mut().for_each(close_objects)
            }
            (
                "items" | "additionalProperties" | "not" | "if" | "then" | "else" | "contains",
                value,
            ) => close_objects(value),
            _ => {}
        }
    }
}

/// Puts llguidance's layout options into a schema's root (`x-guidance`), keeping any the caller set.
pub fn with_compact_layout(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(object) = schema.as_object_mut() {
        let options = object
            .entry("x-guidance")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(options) = options.as_object_mut() {
            for (key, value) in [
                ("whitespace_flexible", serde_json::json!(false)),
                ("item_separator", serde_json::json!(", ")),
                ("key_separator", serde_json::json!(": ")),
            ] {
                options.entry(key).or_insert(value);
            }
        }
    }
    schema
}

/// A model's grammar engine: its token trie and parser factory.
pub struct Grammar {
    factory: ParserFactory,
    vocab_size: usize,
    closers: Arc<[Closer]>,
    eos: u32,
}

impl Grammar {
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<Self, GrammarError> {
        let eos = tokenizer
            .eos
            .or_else(|| tokenizer.end_of_generation.first().copied())
            .ok_or(GrammarError::NoEndToken)?;
        let vocab_size = tokenizer.vocab_size();
        let words: Vec<Vec<u8>> = (0..vocab_size as u32)
            .map(|id| {
                let bytes = tokenizer.token_bytes(id);
                if tokenizer.is_control(id) {
                    let mut special = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    special.extend(bytes);
                    special
                } else {
                    bytes
                }
            })
            .collect();
        let info = TokRxInfo {
            tok_bos: tokenizer.bos,
            tok_end_of_turn: None,
            ..TokRxInfo::new(vocab_size as u32, eos)
        };
        let closers: Arc<[Closer]> = words.iter().map(|w| Closer::of(w)).collect();
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(TrieEnv { trie, tokenizer });
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| GrammarError::Setup(e.to_string()))?;
        factory.quiet();
        Ok(Self {
            factory,
            vocab_size,
            closers,
            eos,
        })
    }

    /// Compiles `spec` into a fresh constraint; an invalid grammar or schema is an `Invalid` error.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Constraint, GrammarError> {
        let parser = self
            .factory
            .create_parser(spec.to_top_level())
            .map_err(|e| GrammarError::Invalid(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(error) = matcher.get_error() {
            return Err(GrammarError::Invalid(error));
        }
        Ok(Constraint {
            matcher,
            vocab_size: self.vocab_size,
            closers: self.closers.clone(),
            in_string: false,
            escaped: false,
            eos: self.eos,
        })
    }
}

/// One sequence's grammar state.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    vocab_size: usize,
    /// What each token closes, for steering an answer to its end.
    closers: Arc<[Closer]>,
    /// Whether the output so far ends inside a JSON string (and after a backslash in it).
    in_string: bool,
    escaped: bool,
    /// The end-of-sequence token the grammar allows when complete.
    eos: u32,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stopped", &self.matcher.is_stopped())
            .finish()
    }
}

impl Constraint {
    /// The tokens that may come next.
    pub fn allowed(&mut self) -> Result<TokenMask, GrammarError> {
        let mask = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| GrammarError::Matcher(e.to_string()))?;
        Ok(TokenMask {
            mask,
            vocab_size: self.vocab_size,
        })
    }

    /// Follows the token the sampler chose.
    pub fn commit(&mut self, token: u32) -> Result<(), GrammarError> {
        self.matcher
            .consume_token(token)
            .map_err(|e| GrammarError::Matcher(e.to_string()))?;
        let bytes = self
            .matcher
            .tok_env()
            .map(|env| env.tok_trie().token(token).to_vec())
            .unwrap_or_default();
        for b in bytes {
            if self.escaped {
                self.escaped = false;
            } else if self.in_string && b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = !self.in_string;
            }
        }
        Ok(())
    }

    /// When the token budget is nearly spent, steers toward finishing the value: among allowed tokens,
    /// those that only close strings, objects and arrays win whenever one is allowed. Output then ends
    /// as valid JSON instead of being cut mid-value (small models can loop inside a string forever).
    pub fn steer_to_close(&self, mask: &TokenMask, logits: &mut [f32]) {
        // Complete already: end here.
        if mask.allows(self.eos) {
            for (id, logit) in logits.iter_mut().enumerate() {
                if id != self.eos as usize {
                    *logit = f32::NEG_INFINITY;
                }
            }
            return;
        }
        // Inside a string, close it (and what encloses it, if one token does both); outside, close brackets.
        let wanted = if self.in_string {
            Closer::String
        } else {
            Closer::Brackets
        };
        let closes =
            |id: usize| mask.allows(id as u32) && self.closers.get(id).copied() == Some(wanted);
        if !(0..logits.len()).any(closes) {
            return;
        }
        for (id, logit) in logits.iter_mut().enumerate() {
            if !closes(id) {
                *logit = f32::NEG_INFINITY;
            }
        }
    }

    /// The grammar is complete and admits nothing more: generation should end here.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}

/// A set of allowed tokens.
#[derive(Debug, Clone)]
pub struct TokenMask {
    mask: SimpleVob,
    vocab_size: usize,
}

impl TokenMask {
    pub fn allows(&self, token: u32) -> bool {
        (token as usize) < self.vocab_size && self.mask.is_allowed(token)
    }

    /// Sets every disallowed token's logit to minus infinity (logits may be wider than the vocabulary).
    pub fn apply(&self, logits: &mut [f32]) {
        for (id, logit) in logits.iter_mut().enumerate() {
            if !self.allows(id as u32) {
                *logit = f32::NEG_INFINITY;
            }
        }
    }
}

/// What a token can close: a string (`"`, maybe with brackets after it), or brackets only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closer {
    None,
    String,
    Brackets,
}

impl Closer {
    fn of(bytes: &[u8]) -> Self {
        let closing = |b: &u8| matches!(b, b'}' | b']' | b' ' | b'\n');
        match bytes.split_first() {
            Some((b'"', rest)) if rest.iter().all(closing) => Closer::String,
            Some(_)
                if bytes.iter().all(closing) && bytes.iter().any(|b| matches!(b, b'}' | b']')) =>
            {
                Closer::Brackets
            }
            _ => Closer::None,
        }
    }
}

/// The trie and tokenizer that llguidance asks for.
struct TrieEnv {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for TrieEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        // Forced text (grammar literals) tokenizes as plain text: special markers stay text here.
        let text = String::from_utf8_lossy(s);
        self.tokenizer
            .inner()
            .encode_fast(text.as_ref(), false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }
}
