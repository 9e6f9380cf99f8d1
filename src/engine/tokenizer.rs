//! A `tokenizers::Tokenizer` built from a GGUF's `tokenizer.ggml.*` metadata, tokenizing as llama.cpp does.
//!
//! - `gpt2`: byte-level BPE from the vocabulary and merges, with the pre-tokenizer regexes that
//!   `tokenizer.ggml.pre` names (llama.cpp's table, applied one after another).
//! - `llama`: SentencePiece-style BPE. The merges are derived from the token scores (a merge's rank is its
//!   merged piece's score, highest first), which merges exactly as llama.cpp's SPM tokenizer does; spaces
//!   become `▁`, unknown characters fall back to byte tokens.
//!
//! - `bert`: WordPiece, by our own `wordpiece::WordPiece` (llama.cpp's WPM, which no `tokenizers` model
//!   reproduces exactly); `inner` then holds the vocabulary for decoding. `encode` with `add_bos` wraps the
//!   text in `[CLS]` ... `[SEP]`, as llama.cpp adds a WPM model's special tokens.
//! - `t5`: Unigram, by our own `ugm::Unigram` (llama.cpp's UGM: XLM-RoBERTa's bge-m3 and rerankers, T5),
//!   `inner` again only the vocabulary. With special tokens: BOS if the file adds it, the text, EOS.
//!
//! `encode` with special tokens appends EOS where the file says `tokenizer.ggml.add_eos_token` (as
//! llama.cpp does: Qwen3-Embedding's `<|endoftext|>`, which its last-token pooling reads).
//!
//! Control tokens become special added tokens (matched in text, so rendered chat templates tokenize into
//! their markers); user-defined tokens become plain added tokens.
//!
//! The metadata comes with the model, so it is checked before use (lengths agree, ids in range, a vocabulary
//! at all), and `encode` refuses texts above a byte cap: tokenizing is CPU-bound and cannot be cancelled.

use std::collections::{BTreeSet, HashMap};

use super::ugm::Unigram;
use super::wordpiece::WordPiece;
use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

/// Largest text `encode` tokenizes (tokenizing 16 MiB takes seconds of one core).
pub const MAX_ENCODE_BYTES: usize = 16 << 20;
/// Bytes of text `encode_for_context` allows per token of context: real text averages 3 to 5, so a longer
/// text could never fit the context and is refused before the work of tokenizing it.
pub const MAX_BYTES_PER_CONTEXT_TOKEN: usize = 32;
/// Largest vocabulary taken from a GGUF (real ones have up to about 260k tokens).
pub const MAX_VOCAB: usize = 1 << 22;

const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;
const TOKEN_TYPE_BYTE: i32 = 6;

/// Texts llama.cpp also treats as end-of-generation when they are control tokens.
const END_OF_GENERATION_TEXTS: [&str; 11] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<|return|>",
    "<|call|>",
    "<|eom_id|>",
];

/// Harmony's message markers (gpt-oss), which the answer is read by.
const HARMONY_MARKERS: [&str; 5] = [
    "<|start|>",
    "<|channel|>",
    "<|message|>",
    "<|constrain|>",
    "<|end|>",
];

/// For a harmony vocabulary (one with `<|channel|>`), makes its message markers rendered text rather than
/// control tokens, as llama.cpp does: the channels they name are how thinking is told from the answer.
/// Returns whether the vocabulary is harmony's.
fn render_harmony_markers(tokens: &[String], types: &mut [i32]) -> bool {
    let is_harmony = tokens
        .iter()
        .zip(types.iter())
        .any(|(text, t)| text == "<|channel|>" && *t == TOKEN_TYPE_CONTROL);
    if is_harmony {
        for (text, t) in tokens.iter().zip(types.iter_mut()) {
            if *t == TOKEN_TYPE_CONTROL && HARMONY_MARKERS.contains(&text.as_str()) {
                *t = TOKEN_TYPE_USER_DEFINED;
            }
        }
    }
    is_harmony
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("the GGUF has no tokenizer ({0} missing)")]
    Missing(&'static str),
    #[error("unsupported tokenizer model {0:?} (supported: gpt2, llama, bert, t5)")]
    UnsupportedModel(String),
    #[error("cannot build the tokenizer: {0}")]
    Build(String),
    #[error("the GGUF's tokenizer metadata is invalid: {key}: {reason}")]
    BadMetadata { key: &'static str, reason: String },
    #[error("tokenization failed: {0}")]
    Encode(String),
    #[error("the text to tokenize is {bytes} bytes, more than the limit of {limit}")]
    TooLong { bytes: usize, limit: usize },
}

fn bad(key: &'static str, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::BadMetadata {
        key,
        reason: reason.into(),
    }
}

fn build_error(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Build(e.to_string())
}

/// The model's tokenizer and the special tokens generation needs.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Every token that ends generation (EOS, EOT, and llama.cpp's known end markers).
    pub end_of_generation: BTreeSet<u32>,
    pub add_bos: bool,
    tokens: Vec<String>,
    types: Vec<i32>,
    byte_level: bool,
    /// Set for a `bert` vocabulary: it, not `inner`, tokenizes.
    wordpiece: Option<WordPiece>,
    /// Set for a `t5` (Unigram) vocabulary: it, not `inner`, tokenizes.
    unigram: Option<Unigram>,
    /// The separator token (`[SEP]`) and whether a pair of texts gets it between them.
    pub sep: Option<u32>,
    pub add_sep: bool,
    /// Whether llama.cpp appends EOS to a text it adds special tokens to (never for WordPiece).
    pub add_eos: bool,
    /// `tokenizer.chat_template.rerank` (Qwen3-Reranker): the prompt a query/document pair fills.
    rerank_template: Option<String>,
}

impl Tokenizer {
    pub fn from_gguf(metadata: &HashMap<String, Value>) -> Result<Self, TokenizerError> {
        let model = string(metadata, "tokenizer.ggml.model")
            .ok_or(TokenizerError::Missing("tokenizer.ggml.model"))?;
        let tokens = string_array(metadata, "tokenizer.ggml.tokens")?
            .ok_or(TokenizerError::Missing("tokenizer.ggml.tokens"))?;
        if tokens.is_empty() {
            return Err(bad("tokenizer.ggml.tokens", "the vocabulary is empty"));
        }
        if tokens.len() > MAX_VOCAB {
            return Err(bad(
                "tokenizer.ggml.tokens",
                format!("{} tokens, more than {MAX_VOCAB}", tokens.len()),
            ));
        }
        let mut types = int_array(metadata, "tokenizer.ggml.token_type")?
            .unwrap_or_else(|| vec![TOKEN_TYPE_NORMAL; tokens.len()]);
        if types.len() != tokens.len() {
            return Err(bad(
                "tokenizer.ggml.token_type",
                format!("{} types for {} tokens", types.len(), tokens.len()),
            ));
        }
        let harmony = render_harmony_markers(&tokens, &mut types);
        let token_id = |key: &'static str| -> Result<Option<u32>, TokenizerError> {
            match uint(metadata, key) {
                Some(id) if id as usize >= tokens.len() => Err(bad(
                    key,
                    format!(
                        "token id {id} is outside the vocabulary of {}",
                        tokens.len()
                    ),
                )),
                id => Ok(id),
            }
        };
        let bos = token_id("tokenizer.ggml.bos_token_id")?;
        let eos = token_id("tokenizer.ggml.eos_token_id")?;
        let eot = token_id("tokenizer.ggml.eot_token_id")?;
        let eom = token_id("tokenizer.ggml.eom_token_id")?;
        token_id("tokenizer.ggml.unknown_token_id")?;
        let byte_level = model == "gpt2";
        let bert = model == "bert";
        let t5 = model == "t5";
        // llama.cpp's defaults for a WordPiece vocabulary: [CLS] 101 as BOS, [SEP] 102, [UNK] 100; for
        // a Unigram one: </s> 1 as EOS, <unk> 2.
        let default_id = |id: u32, kind: bool| (kind && (id as usize) < tokens.len()).then_some(id);
        let bos = bos.or(default_id(101, bert));
        let eos = eos.or(default_id(1, t5));
        let sep = token_id("tokenizer.ggml.seperator_token_id")?.or(default_id(102, bert));
        let (mut inner, default_add_bos) = match model.as_str() {
            "gpt2" => (byte_level_bpe(metadata, &tokens)?, false),
            "llama" => (sentencepiece_bpe(metadata, &tokens)?, true),
            "bert" => (wordpiece_vocabulary(&tokens)?, true),
            "t5" => (wordpiece_vocabulary(&tokens)?, false),
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let unigram = if t5 {
            let unk = token_id("tokenizer.ggml.unknown_token_id")?
                .or(default_id(2, t5))
                .ok_or(TokenizerError::Missing("tokenizer.ggml.unknown_token_id"))?;
            Some(Unigram::from_gguf(metadata, &tokens, &types, unk)?)
        } else {
            None
        };
        let wordpiece = if bert {
            let unk = token_id("tokenizer.ggml.unknown_token_id")?
                .or(default_id(100, bert))
                .ok_or(TokenizerError::Missing("tokenizer.ggml.unknown_token_id"))?;
            let lowercase = match metadata.get("tokenizer.ggml.normalizer.lowercase") {
                Some(Value::Bool(b)) => *b,
                _ => true,
            };
            let strip_accents = match metadata.get("tokenizer.ggml.normalizer.strip_accents") {
                Some(Value::Bool(b)) => *b,
                _ => lowercase,
            };
            Some(WordPiece::new(
                &tokens,
                &types,
                unk,
                lowercase,
                strip_accents,
            ))
        } else {
            None
        };
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            // An empty marker would match between every two characters of every text.
            .filter(|(text, t)| {
                !text.is_empty() && matches!(**t, TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED)
            })
            .map(|(text, t)| {
                AddedToken::from(text.clone(), *t == TOKEN_TYPE_CONTROL).normalized(false)
            })
            .collect();
        inner.add_special_tokens(&added);

        let mut end_of_generation: BTreeSet<u32> = [eos, eot, eom].into_iter().flatten().collect();
        for (id, (text, t)) in tokens.iter().zip(&types).enumerate() {
            if *t == TOKEN_TYPE_CONTROL && END_OF_GENERATION_TEXTS.contains(&text.as_str()) {
                end_of_generation.insert(id as u32);
            }
        }
        if harmony {
            // A harmony model ends a message with `<|end|>` and goes on to the next; only `<|return|>`
            // and `<|call|>` end its turn.
            end_of_generation.retain(|&id| types[id as usize] != TOKEN_TYPE_USER_DEFINED);
        }
        let flag = |key: &str, default: bool| match metadata.get(key) {
            Some(Value::Bool(b)) => *b,
            _ => default,
        };
        let add_bos = flag("tokenizer.ggml.add_bos_token", default_add_bos);
        let add_eos = flag("tokenizer.ggml.add_eos_token", t5);
        let add_sep = flag("tokenizer.ggml.add_sep_token", bert);
        Ok(Self {
            inner,
            bos,
            eos,
            end_of_generation,
            add_bos: add_bos && bos.is_some(),
            tokens,
            types,
            byte_level,
            wordpiece,
            unigram,
            sep,
            add_sep: add_sep && sep.is_some(),
            add_eos: add_eos && eos.is_some(),
            rerank_template: string(metadata, "tokenizer.chat_template.rerank"),
        })
    }

    /// Whether this is a WordPiece (BERT) vocabulary.
    pub fn is_wordpiece(&self) -> bool {
        self.wordpiece.is_some()
    }

    /// A query and a document as one input, as llama.cpp's server formats a rerank pair for a model
    /// without a rerank template: BOS, the query, EOS if the model adds it, SEP if it adds one, the
    /// document, EOS if the model adds it; the texts' own special markers are not matched. For BERT:
    /// `[CLS] query [SEP] document`. A file with a rerank template (`tokenizer.chat_template.rerank`)
    /// has `{query}` then `{document}` replaced in it and the result tokenized without added tokens,
    /// markers matched (llama.cpp's `format_prompt_rerank`). Texts above `limit` bytes together are
    /// refused.
    pub fn encode_pair(
        &self,
        query: &str,
        document: &str,
        limit: usize,
    ) -> Result<Vec<u32>, TokenizerError> {
        let bytes = query.len() + document.len();
        if bytes > limit.min(MAX_ENCODE_BYTES) {
            return Err(TokenizerError::TooLong {
                bytes,
                limit: limit.min(MAX_ENCODE_BYTES),
            });
        }
        if let Some(template) = &self.rerank_template {
            let with_query = template.replace("{query}", query);
            // A query may itself say `{document}` (llama.cpp replaces that too): the size is known before
            // the text is built, so that a hostile one cannot make it huge.
            let slots = with_query.matches("{document}").count();
            let bytes = with_query.len() + slots.saturating_mul(document.len());
            let limit = limit.min(MAX_ENCODE_BYTES).max(template.len());
            if bytes > limit {
                return Err(TokenizerError::TooLong { bytes, limit });
            }
            let prompt = with_query.replace("{document}", document);
            return self.encode_within(&prompt, false, limit);
        }
        let plain = |text: &str| -> Result<Vec<u32>, TokenizerError> {
            let mut ids = Vec::new();
            match (&self.wordpiece, &self.unigram) {
                (Some(wp), _) => {
                    wp.encode(text, false, &mut ids);
                    Ok(ids)
                }
                (_, Some(unigram)) => {
                    unigram.encode(text, false, &mut ids);
                    Ok(ids)
                }
                _ => Ok(self
                    .inner
                    .encode_fast(text, false)
                    .map_err(|e| TokenizerError::Encode(e.to_string()))?
                    .get_ids()
                    .to_vec()),
            }
        };
        let eos = self.eos.or(self.sep);
        let mut ids = Vec::new();
        if self.add_bos
            && let Some(bos) = self.bos
        {
            ids.push(bos);
        }
        ids.extend(plain(query)?);
        if self.add_eos
            && let Some(eos) = eos
        {
            ids.push(eos);
        }
        if self.add_sep
            && let Some(sep) = self.sep
        {
            ids.push(sep);
        }
        ids.extend(plain(document)?);
        if self.add_eos
            && let Some(eos) = eos
        {
            ids.push(eos);
        }
        Ok(ids)
    }

    /// Tokenizes `text`, matching special-token markers in it (as llama.cpp's `parse_special`), and adds
    /// BOS when the model wants it and the text does not already start with it. Texts above
    /// `MAX_ENCODE_BYTES` are refused (`TokenizerError::TooLong`).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        self.encode_within(text, add_bos, MAX_ENCODE_BYTES)
    }

    /// `encode` for a prompt that must fit `context_size` tokens: a text above
    /// `MAX_BYTES_PER_CONTEXT_TOKEN` bytes per context token (or `MAX_ENCODE_BYTES`) is refused with
    /// `TokenizerError::TooLong` before any tokenizing work.
    pub fn encode_for_context(
        &self,
        text: &str,
        add_bos: bool,
        context_size: usize,
    ) -> Result<Vec<u32>, TokenizerError> {
        let limit = context_size
            .saturating_mul(MAX_BYTES_PER_CONTEXT_TOKEN)
            .min(MAX_ENCODE_BYTES);
        self.encode_within(text, add_bos, limit)
    }

    fn encode_within(
        &self,
        text: &str,
        add_bos: bool,
        limit: usize,
    ) -> Result<Vec<u32>, TokenizerError> {
        if text.len() > limit {
            return Err(TokenizerError::TooLong {
                bytes: text.len(),
                limit,
            });
        }
        if let Some(wp) = &self.wordpiece {
            // llama.cpp's WPM with special tokens added: [CLS] text [SEP].
            let mut ids = Vec::new();
            let bos = self.bos.filter(|_| add_bos);
            ids.extend(bos);
            wp.encode(text, true, &mut ids);
            if bos.is_some() {
                ids.extend(self.sep);
            }
            return Ok(ids);
        }
        let mut ids = match &self.unigram {
            Some(unigram) => {
                let mut ids = Vec::new();
                unigram.encode(text, true, &mut ids);
                ids
            }
            None => self
                .inner
                .encode_fast(text, false)
                .map_err(|e| TokenizerError::Encode(e.to_string()))?
                .get_ids()
                .to_vec(),
        };
        if add_bos
            && self.add_bos
            && let Some(bos) = self.bos
            && (ids.first() != Some(&bos) || self.unigram.is_some())
        {
            ids.insert(0, bos);
        }
        if add_bos
            && self.add_eos
            && let Some(eos) = self.eos
        {
            ids.push(eos);
        }
        Ok(ids)
    }

    /// Text for `ids`; special tokens are left out when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        self.inner.decode(ids, skip_special).unwrap_or_default()
    }

    /// The piece a token stands for in the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Whether a token is a control token (chat markers, EOS): never text, only the model's own signal.
    pub fn is_control(&self, id: u32) -> bool {
        self.types.get(id as usize) == Some(&TOKEN_TYPE_CONTROL)
    }

    /// The bytes a token adds to the text (control tokens: their marker text). Byte-level BPE pieces map
    /// back through GPT-2's byte-to-character table; SentencePiece pieces turn `▁` into spaces and
    /// `<0xNN>` byte tokens into their byte.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(piece) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        let kind = self
            .types
            .get(id as usize)
            .copied()
            .unwrap_or(TOKEN_TYPE_NORMAL);
        if matches!(kind, TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED) {
            return piece.as_bytes().to_vec();
        }
        if self.byte_level {
            let table = byte_level_decoding();
            return piece
                .chars()
                .map(|c| table.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .unwrap_or_else(|| piece.as_bytes().to_vec());
        }
        if kind == TOKEN_TYPE_BYTE
            && let Some(hex) = piece.strip_prefix("<0x").and_then(|h| h.strip_suffix('>'))
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            return vec![byte];
        }
        piece.replace('▁', " ").into_bytes()
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The token whose piece is exactly `text`, if any.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// GPT-2's byte-level alphabet inverted: the character that stands for each byte, back to the byte.
fn byte_level_decoding() -> &'static HashMap<char, u8> {
    static TABLE: std::sync::OnceLock<HashMap<char, u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut shifted = 0u32;
        (0..=255u8)
            .map(|b| {
                let c = if printable(b) {
                    char::from(b)
                } else {
                    shifted += 1;
                    char::from_u32(255 + shifted).unwrap_or('\0')
                };
                (c, b)
            })
            .collect()
    })
}

/// llama.cpp's pre-tokenizer regexes for each `tokenizer.ggml.pre`, applied in order.
fn pre_tokenizer_regexes(pre: &str) -> Vec<&'static str> {
    const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
    const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "dbrx" | "smaug-bpe" | "pixtral" => {
            vec![LLAMA3]
        }
        "qwen2" | "qwen35" | "stablelm2" | "hunyuan" | "deepseek-r1-qwen" | "megrez" => vec![QWEN2],
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            vec![r"\p{N}", GPT2]
        }
        "gpt-2" | "gpt2" | "mpt" | "olmo" | "jais" | "trillion" => vec![GPT2],
        _ => vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
    }
}

fn byte_level_bpe(
    metadata: &HashMap<String, Value>,
    tokens: &[String],
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let merges = string_array(metadata, "tokenizer.ggml.merges")?
        .ok_or(TokenizerError::Missing("tokenizer.ggml.merges"))?;
    let merges: Vec<(String, String)> = merges
        .iter()
        .filter_map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let pre = string(metadata, "tokenizer.ggml.pre").unwrap_or_else(|| "default".into());
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(matches!(pre.as_str(), "llama3" | "llama-v3" | "llama-bpe"))
        .build()
        .map_err(build_error)?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    for regex in pre_tokenizer_regexes(&pre) {
        let split = Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(build_error)?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    tokenizer.with_pre_tokenizer(Some(PreSequence::new(steps)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tokenizer)
}

fn sentencepiece_bpe(
    metadata: &HashMap<String, Value>,
    tokens: &[String],
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let scores = float_array(metadata, "tokenizer.ggml.scores")?
        .ok_or(TokenizerError::Missing("tokenizer.ggml.scores"))?;
    if scores.len() != tokens.len() {
        return Err(bad(
            "tokenizer.ggml.scores",
            format!("{} scores for {} tokens", scores.len(), tokens.len()),
        ));
    }
    let types = int_array(metadata, "tokenizer.ggml.token_type")?.unwrap_or_default();
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    // Only normal pieces take part in merges; control and byte tokens are reached otherwise.
    let mergeable = |id: u32| {
        types
            .get(id as usize)
            .is_none_or(|t| *t == TOKEN_TYPE_NORMAL || *t == TOKEN_TYPE_USER_DEFINED)
    };
    let mut ranked: Vec<(f32, u32, u32, String, String)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if !mergeable(id as u32) || piece.chars().count() < 2 {
            continue;
        }
        let score = scores.get(id).copied().unwrap_or(0.0);
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                ranked.push((score, l, r, left.to_string(), right.to_string()));
            }
        }
    }
    // Highest merged score first; ties by the ids of the parts, as transformers' converter orders them.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<(String, String)> = ranked.into_iter().map(|(_, _, _, l, r)| (l, r)).collect();
    let unk = uint(metadata, "tokenizer.ggml.unknown_token_id")
        .and_then(|id| tokens.get(id as usize).cloned());
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder.build().map_err(build_error)?;
    let add_space_prefix = match metadata.get("tokenizer.ggml.add_space_prefix") {
        Some(Value::Bool(b)) => *b,
        _ => true,
    };
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        normalizers.push(Prepend::new("▁".into()).into());
    }
    normalizers.push(Replace::new(" ", "▁").map_err(build_error)?.into());
    tokenizer.with_normalizer(Some(NormalizerSequence::new(normalizers)));
    let mut decoders: Vec<DecoderWrapper> = Vec::new();
    decoders.push(Replace::new("▁", " ").map_err(build_error)?.into());
    decoders.push(ByteFallback::new().into());
    decoders.push(Fuse::new().into());
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

/// The vocabulary of a WordPiece model as a `tokenizers` word-level model: for decoding, token lookups
/// and the grammar's token table; `WordPiece` tokenizes. `▁` marks a word's start, so decoding turns it
/// into a space and drops the first.
fn wordpiece_vocabulary(tokens: &[String]) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let vocab: HashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let model = tokenizers::models::wordlevel::WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token(tokens[0].clone())
        .build()
        .map_err(build_error)?;
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    let decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(build_error)?.into(),
        Fuse::new().into(),
        Strip::new(' ', 1, 0).into(),
    ];
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

fn string(metadata: &HashMap<String, Value>, key: &str) -> Option<String> {
    match metadata.get(key)? {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn uint(metadata: &HashMap<String, Value>, key: &str) -> Option<u32> {
    match metadata.get(key)? {
        Value::U32(v) => Some(*v),
        Value::I32(v) if *v >= 0 => Some(*v as u32),
        Value::U64(v) => u32::try_from(*v).ok(),
        Value::I64(v) => u32::try_from(*v).ok(),
        Value::U16(v) => Some(*v as u32),
        Value::U8(v) => Some(*v as u32),
        _ => None,
    }
}

fn array<'a>(metadata: &'a HashMap<String, Value>, key: &str) -> Option<&'a Vec<Value>> {
    match metadata.get(key)? {
        Value::Array(items) => Some(items),
        _ => None,
    }
}

/// An array of one element kind: `Ok(None)` when the key is absent, an error when it holds anything else.
fn typed_array<T>(
    metadata: &HashMap<String, Value>,
    key: &'static str,
    kind: &str,
    element: impl Fn(&Value) -> Option<T>,
) -> Result<Option<Vec<T>>, TokenizerError> {
    if !metadata.contains_key(key) {
        return Ok(None);
    }
    array(metadata, key)
        .and_then(|items| items.iter().map(element).collect::<Option<Vec<T>>>())
        .map(Some)
        .ok_or_else(|| bad(key, format!("not an array of {kind}")))
}

fn string_array(
    metadata: &HashMap<String, Value>,
    key: &'static str,
) -> Result<Option<Vec<String>>, TokenizerError> {
    typed_array(metadata, key, "strings", |v| match v {
        Value::String(s) => Some(s.clone()),
        _ => None,
    })
}

fn int_array(
    metadata: &HashMap<String, Value>,
    key: &'static str,
) -> Result<Option<Vec<i32>>, TokenizerError> {
    typed_array(metadata, key, "integers", |v| match v {
        Value::I32(x) => Some(*x),
        Value::U32(x) => Some(*x as i32),
        Value::I8(x) => Some(*x as i32),
        Value::U8(x) => Some(*x as i32),
        _ => None,
    })
}

fn float_array(
    metadata: &HashMap<String, Value>,
    key: &'static str,
) -> Result<Option<Vec<f32>>, TokenizerError> {
    typed_array(metadata, key, "numbers", |v| match v {
        Value::F32(x) => Some(*x),
        Value::F64(x) => Some(*x as f32),
        _ => None,
    })
}

/// A vocabulary small enough to reason about, for this module's tests and the scheduler's fake model.
#[cfg(test)]
pub(crate) mod test_vocab {
    use std::collections::HashMap;

    use candle_core::quantized::gguf_file::Value;

    pub(crate) fn strings(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
    }

    /// A small byte-level BPE vocabulary: "a", "b", "ab", and a control marker.
    pub(crate) fn gpt2_metadata() -> HashMap<String, Value> {
        HashMap::from([
            ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
            (
                "tokenizer.ggml.tokens".into(),
                strings(&["a", "b", "ab", "<|end|>"]),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                Value::Array(vec![
                    Value::I32(1),
                    Value::I32(1),
                    Value::I32(1),
                    Value::I32(3),
                ]),
            ),
            ("tokenizer.ggml.merges".into(), strings(&["a b"])),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(3)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::test_vocab::{gpt2_metadata, strings};
    use super::*;

    fn llama_metadata() -> HashMap<String, Value> {
        HashMap::from([
            ("tokenizer.ggml.model".into(), Value::String("llama".into())),
            (
                "tokenizer.ggml.tokens".into(),
                strings(&["<s>", "▁", "a", "▁a"]),
            ),
            (
                "tokenizer.ggml.scores".into(),
                Value::Array(vec![Value::F32(0.0); 4]),
            ),
            ("tokenizer.ggml.bos_token_id".into(), Value::U32(0)),
        ])
    }

    fn build_error_for(metadata: &HashMap<String, Value>) -> String {
        match Tokenizer::from_gguf(metadata) {
            Ok(_) => panic!("hostile metadata was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn well_formed_small_vocabularies_build_and_encode() {
        let t = Tokenizer::from_gguf(&gpt2_metadata()).unwrap();
        assert_eq!(t.encode("ab<|end|>", false).unwrap(), vec![2, 3]);
        assert!(t.is_end_of_generation(3));
        let t = Tokenizer::from_gguf(&llama_metadata()).unwrap();
        assert_eq!(t.encode("a", true).unwrap(), vec![0, 3]);
    }

    /// gpt-oss's vocabulary: its message markers decode as text (the channels are read from them) and
    /// `<|end|>` ends a message, not the turn; `<|return|>` and `<|call|>` end the turn.
    #[test]
    fn harmony_markers_are_rendered_and_only_return_and_call_end_the_turn() {
        let texts = [
            "a",
            "b",
            "ab",
            "<|start|>",
            "<|channel|>",
            "<|message|>",
            "<|end|>",
            "<|return|>",
            "<|call|>",
        ];
        let mut m = gpt2_metadata();
        m.insert("tokenizer.ggml.tokens".into(), strings(&texts));
        let types = [1, 1, 1, 3, 3, 3, 3, 3, 3].map(Value::I32).to_vec();
        m.insert("tokenizer.ggml.token_type".into(), Value::Array(types));
        m.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(7));
        m.insert("tokenizer.ggml.eot_token_id".into(), Value::U32(6));
        let t = Tokenizer::from_gguf(&m).unwrap();
        let ids = t
            .encode("<|channel|>a<|message|>ab<|end|><|start|>b", false)
            .unwrap();
        assert_eq!(ids, vec![4, 0, 5, 2, 6, 3, 1]);
        assert_eq!(
            t.decode(&ids, true),
            "<|channel|>a<|message|>ab<|end|><|start|>b"
        );
        assert!(!t.is_end_of_generation(6), "<|end|> ends a message only");
        assert!(t.is_end_of_generation(7) && t.is_end_of_generation(8));
        // Anywhere else `<|end|>` stays a control token that ends the turn.
        let t = Tokenizer::from_gguf(&gpt2_metadata()).unwrap();
        assert!(t.is_end_of_generation(3));
        assert_eq!(t.decode(&[2, 3], true), "ab");
    }

    #[test]
    fn hostile_tokenizer_metadata_is_a_clear_error() {
        let mut m = gpt2_metadata();
        m.insert("tokenizer.ggml.tokens".into(), strings(&[]));
        assert!(build_error_for(&m).contains("empty"));

        let mut m = gpt2_metadata();
        m.insert(
            "tokenizer.ggml.token_type".into(),
            Value::Array(vec![Value::I32(1)]),
        );
        assert!(build_error_for(&m).contains("1 types for 4 tokens"));

        let mut m = gpt2_metadata();
        m.insert(
            "tokenizer.ggml.token_type".into(),
            strings(&["x", "y", "z", "w"]),
        );
        assert!(build_error_for(&m).contains("not an array of integers"));

        let mut m = gpt2_metadata();
        m.insert("tokenizer.ggml.merges".into(), strings(&["a zz"]));
        assert!(build_error_for(&m).contains("cannot build"));

        for key in [
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.unknown_token_id",
        ] {
            let mut m = gpt2_metadata();
            m.insert(key.into(), Value::U32(4));
            let err = build_error_for(&m);
            assert!(
                err.contains(key) && err.contains("outside the vocabulary"),
                "{err}"
            );
        }

        let mut m = llama_metadata();
        m.insert(
            "tokenizer.ggml.scores".into(),
            Value::Array(vec![Value::F32(0.0)]),
        );
        assert!(build_error_for(&m).contains("1 scores for 4 tokens"));
    }

    #[test]
    fn an_empty_control_token_is_not_matched_in_text() {
        let mut m = gpt2_metadata();
        m.insert(
            "tokenizer.ggml.tokens".into(),
            strings(&["a", "b", "ab", ""]),
        );
        let t = Tokenizer::from_gguf(&m).unwrap();
        assert_eq!(t.encode("ab", false).unwrap(), vec![2]);
    }

    #[test]
    fn texts_above_the_byte_caps_are_refused_before_tokenizing() {
        let t = Tokenizer::from_gguf(&gpt2_metadata()).unwrap();
        let huge = "a".repeat(MAX_ENCODE_BYTES + 1);
        assert!(matches!(
            t.encode(&huge, false),
            Err(TokenizerError::TooLong {
                limit: MAX_ENCODE_BYTES,
                ..
            })
        ));
        let text = "ab".repeat(100);
        assert!(matches!(
            t.encode_for_context(&text, false, 4),
            Err(TokenizerError::TooLong {
                bytes: 200,
                limit: 128
            })
        ));
        assert_eq!(t.encode_for_context(&text, false, 100).unwrap().len(), 100);
    }
}
