//! Unigram (`tokenizer.ggml.model = "t5"`: T5, XLM-RoBERTa's bge-m3 and bge-reranker-v2-m3), tokenizing
//! exactly as llama.cpp's UGM tokenizer (`llm_tokenizer_ugm_session`) does.
//!
//! A text is cut at special-token markers (`special_tokens`), then each raw fragment is normalised with
//! SentencePiece's precompiled charsmap (`tokenizer.ggml.precompiled_charsmap`: an XOR-compressed double
//! array of byte prefixes and the NUL-terminated strings they become; user-defined pieces pass through
//! untouched), spaces become `▁`, one is prepended (`add_space_prefix`) and runs of them merge
//! (`remove_extra_whitespaces`). Viterbi over the bytes then picks the segmentation with the highest sum of
//! piece scores (user-defined pieces score 0); a code point no piece starts is `<unk>`, scored ten below
//! the lowest normal piece, and consecutive unknowns merge into one.
//!
//! The charsmap comes with the model: every index into it is checked, and a malformed one is refused when
//! the tokenizer is built rather than read out of bounds.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use super::special_tokens::{Fragment, SpecialTokens};
use super::tokenizer::TokenizerError;

const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;
const TOKEN_TYPE_UNUSED: i32 = 5;
/// SentencePiece's escaped space, U+2581.
const ESCAPED_SPACE: &[u8] = "\u{2581}".as_bytes();
/// How far below the lowest normal piece an unknown code point scores.
const UNKNOWN_PENALTY: f64 = 10.0;

/// Byte strings sorted for prefix search: the range of entries sharing a prefix narrows one byte at a
/// time (what llama.cpp's `naive_trie` walks, without a node per byte).
#[derive(Debug, Clone, Default)]
struct PrefixSet {
    entries: Vec<(Box<[u8]>, u32)>,
}

impl PrefixSet {
    /// Later ids win over earlier ones with the same bytes, as a trie insert overwrites.
    fn new(mut entries: Vec<(Box<[u8]>, u32)>) -> Self {
        entries.retain(|(bytes, _)| !bytes.is_empty());
        entries.sort();
        let mut deduped: Vec<(Box<[u8]>, u32)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match deduped.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => deduped.push(entry),
            }
        }
        Self { entries: deduped }
    }

    /// Calls `found(length, id)` for every entry that is a prefix of `text`, shortest first; returns how
    /// many bytes of `text` some entry starts with (the depth a trie walk reaches).
    fn walk(&self, text: &[u8], mut found: impl FnMut(usize, u32)) -> usize {
        let (mut lo, mut hi) = (0, self.entries.len());
        for (depth, &byte) in text.iter().enumerate() {
            // Entries in lo..hi share text[..depth]; one of exactly that length sorts first.
            let range = &self.entries[lo..hi];
            let start = lo + range.partition_point(|(e, _)| e.len() <= depth || e[depth] < byte);
            let end = lo + range.partition_point(|(e, _)| e.len() <= depth || e[depth] <= byte);
            if start == end {
                return depth;
            }
            (lo, hi) = (start, end);
            let (bytes, id) = &self.entries[lo];
            if bytes.len() == depth + 1 {
                found(depth + 1, *id);
            }
        }
        text.len()
    }
}

/// SentencePiece's precompiled charsmap: the XCDA and the replacement strings its leaves point into.
#[derive(Debug, Clone)]
struct CharsMap {
    xcda: Vec<u32>,
    replacements: Vec<u8>,
}

impl CharsMap {
    /// The blob as llama.cpp reads it: a little-endian u32 size, that many bytes of XCDA entries, then
    /// the replacement strings.
    fn parse(blob: &[u8]) -> Result<Self, TokenizerError> {
        let bad = |reason: &str| TokenizerError::BadMetadata {
            key: "tokenizer.ggml.precompiled_charsmap",
            reason: reason.to_string(),
        };
        let size: [u8; 4] = blob
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("shorter than its size header"))?;
        let size = u32::from_le_bytes(size) as usize;
        if size.checked_add(4).is_none_or(|end| end >= blob.len()) || !size.is_multiple_of(4) {
            return Err(bad("its double array does not fit the blob"));
        }
        let xcda = blob[4..4 + size]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Self {
            xcda,
            replacements: blob[4 + size..].to_vec(),
        })
    }

    fn node(&self, index: usize) -> Option<u32> {
        self.xcda.get(index).copied()
    }

    fn base(node: u32) -> u32 {
        (node >> 10) << ((node & (1 << 9)) >> 6)
    }

    /// The longest prefix of `input` the map replaces: its length and replacement.
    fn longest(&self, input: &[u8]) -> Option<(usize, &[u8])> {
        let mut index = Self::base(self.node(0)?) as usize;
        let mut best = None;
        for (i, &c) in input.iter().enumerate() {
            if c == 0 {
                break;
            }
            index ^= c as usize;
            let Some(node) = self.node(index) else { break };
            if node & ((1 << 31) | 0xff) != c as u32 {
                break;
            }
            let leaf = (node >> 8) & 1 == 1;
            index ^= Self::base(node) as usize;
            if leaf {
                let Some(value) = self.node(index) else { break };
                best = Some((i + 1, (value & ((1 << 31) - 1)) as usize));
            }
        }
        let (length, offset) = best?;
        let rest = self.replacements.get(offset..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some((length, &rest[..end]))
    }
}

/// A Unigram vocabulary with llama.cpp's normaliser options.
#[derive(Debug, Clone)]
pub struct Unigram {
    /// Normal, user-defined and unused pieces: what a segmentation is made of.
    pieces: PrefixSet,
    /// User-defined pieces, which normalisation leaves as they are.
    user_defined: PrefixSet,
    scores: Vec<f64>,
    unk: u32,
    unknown_score: f64,
    charsmap: Option<CharsMap>,
    add_space_prefix: bool,
    remove_extra_whitespaces: bool,
    specials: SpecialTokens,
}

impl Unigram {
    /// From the GGUF's vocabulary: its tokens, types, `tokenizer.ggml.scores`, the unknown token and the
    /// normaliser keys.
    pub fn from_gguf(
        metadata: &HashMap<String, Value>,
        tokens: &[String],
        types: &[i32],
        unk: u32,
    ) -> Result<Self, TokenizerError> {
        let scores: Vec<f64> = match metadata.get("tokenizer.ggml.scores") {
            Some(Value::Array(values)) => values
                .iter()
                .map(|v| v.to_f32().map(f64::from).unwrap_or(0.0))
                .collect(),
            _ => return Err(TokenizerError::Missing("tokenizer.ggml.scores")),
        };
        if scores.len() != tokens.len() {
            return Err(TokenizerError::BadMetadata {
                key: "tokenizer.ggml.scores",
                reason: format!("{} scores for {} tokens", scores.len(), tokens.len()),
            });
        }
        let charsmap = match metadata.get("tokenizer.ggml.precompiled_charsmap") {
            Some(Value::Array(values)) if !values.is_empty() => {
                let blob: Vec<u8> = values
                    .iter()
                    .map(|v| match v {
                        Value::U8(b) => Some(*b),
                        Value::I8(b) => Some(*b as u8),
                        _ => None,
                    })
                    .collect::<Option<_>>()
                    .ok_or(TokenizerError::BadMetadata {
                        key: "tokenizer.ggml.precompiled_charsmap",
                        reason: "not an array of bytes".into(),
                    })?;
                Some(CharsMap::parse(&blob)?)
            }
            _ => None,
        };
        let flag = |key: &str| matches!(metadata.get(key), Some(Value::Bool(true)));
        Ok(Self::new(
            tokens,
            types,
            scores,
            unk,
            charsmap,
            flag("tokenizer.ggml.add_space_prefix"),
            flag("tokenizer.ggml.remove_extra_whitespaces"),
        ))
    }

    fn new(
        tokens: &[String],
        types: &[i32],
        scores: Vec<f64>,
        unk: u32,
        charsmap: Option<CharsMap>,
        add_space_prefix: bool,
        remove_extra_whitespaces: bool,
    ) -> Self {
        let entries = |wanted: &dyn Fn(i32) -> bool| {
            tokens
                .iter()
                .zip(types)
                .enumerate()
                .filter(|(_, (_, t))| wanted(**t))
                .map(|(id, (text, _))| (text.as_bytes().into(), id as u32))
                .collect::<Vec<_>>()
        };
        let min_score = types
            .iter()
            .zip(&scores)
            .filter(|(t, _)| **t == TOKEN_TYPE_NORMAL)
            .map(|(_, s)| *s as f32)
            .fold(f32::MAX, f32::min);
        Self {
            pieces: PrefixSet::new(entries(&|t| {
                matches!(
                    t,
                    TOKEN_TYPE_NORMAL | TOKEN_TYPE_USER_DEFINED | TOKEN_TYPE_UNUSED
                )
            })),
            user_defined: PrefixSet::new(entries(&|t| t == TOKEN_TYPE_USER_DEFINED)),
            // The user-defined pieces' scores count as 0 (normal ones are log probabilities).
            scores: scores
                .iter()
                .zip(types)
                .map(|(s, t)| {
                    if *t == TOKEN_TYPE_USER_DEFINED {
                        0.0
                    } else {
                        *s
                    }
                })
                .collect(),
            unk,
            unknown_score: f64::from(min_score - UNKNOWN_PENALTY as f32),
            charsmap,
            add_space_prefix,
            remove_extra_whitespaces,
            specials: SpecialTokens::new(tokens, types),
        }
    }

    /// Appends the ids of `text` to `out`; special-token markers in it are matched when `parse_special`
    /// (user-defined tokens always are).
    pub fn encode(&self, text: &str, parse_special: bool, out: &mut Vec<u32>) {
        for fragment in self.specials.partition(text, parse_special) {
            match fragment {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(text) => self.segment(&self.normalize(text.as_bytes()), out),
            }
        }
    }

    /// llama.cpp's `normalize`: the charsmap applied prefix by prefix, spaces escaped, prepended, merged.
    fn normalize(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() * 3);
        let (mut space_prepended, mut in_word) = (false, false);
        let mut offset = 0;
        while offset < input.len() {
            let (piece, consumed) = self.normalize_prefix(&input[offset..]);
            for &c in piece.as_ref() {
                if c != b' ' {
                    if !in_word {
                        in_word = true;
                        if (self.add_space_prefix && !space_prepended)
                            || self.remove_extra_whitespaces
                        {
                            out.extend_from_slice(ESCAPED_SPACE);
                            space_prepended = true;
                        }
                    }
                    out.push(c);
                } else {
                    in_word = false;
                    if !self.remove_extra_whitespaces {
                        out.extend_from_slice(ESCAPED_SPACE);
                    }
                }
            }
            offset += consumed.max(1);
        }
        out
    }

    /// What the start of `input` becomes and how many bytes of it that consumes.
    fn normalize_prefix<'a>(&'a self, input: &'a [u8]) -> (std::borrow::Cow<'a, [u8]>, usize) {
        let user_defined = self.user_defined.walk(input, |_, _| {});
        if user_defined > 0 {
            return (input[..user_defined].into(), user_defined);
        }
        if let Some((length, replacement)) =
            self.charsmap.as_ref().and_then(|map| map.longest(input))
        {
            return (replacement.into(), length);
        }
        match utf8_sequence_len(input) {
            Some(n) => (input[..n].into(), n),
            // Not a whole UTF-8 sequence: one byte becomes U+FFFD.
            None => ("\u{FFFD}".as_bytes().into(), 1),
        }
    }

    /// Viterbi over the normalised bytes, then the best path back from the end.
    fn segment(&self, text: &[u8], out: &mut Vec<u32>) {
        let n = text.len();
        if n == 0 {
            return;
        }
        // (token, start of the token, best score of a segmentation ending here)
        let mut best: Vec<(u32, usize, f64)> = vec![(self.unk, 0, -f64::MAX); n + 1];
        best[0] = (self.unk, 0, 0.0);
        let mut offset = 0;
        while offset < n {
            let code_point = utf8_len_from_lead(text[offset]).min(n - offset);
            let here = best[offset].2;
            let mut whole_code_point = false;
            self.pieces.walk(&text[offset..], |len, id| {
                if len == code_point {
                    whole_code_point = true;
                }
                let score = here + self.scores[id as usize];
                if score > best[offset + len].2 {
                    best[offset + len] = (id, offset, score);
                }
            });
            if !whole_code_point {
                let score = here + self.unknown_score;
                if score > best[offset + code_point].2 {
                    best[offset + code_point] = (self.unk, offset, score);
                }
            }
            offset += code_point;
        }
        let start = out.len();
        let (mut at, mut previous_unknown) = (n, false);
        loop {
            let (id, from, _) = best[at];
            let unknown = id == self.unk;
            if !(previous_unknown && unknown) {
                out.push(id);
            }
            if from == 0 {
                break;
            }
            previous_unknown = unknown;
            at = from;
        }
        out[start..].reverse();
    }
}

/// llama.cpp's `unicode_len_utf8`: the length a lead byte announces (1 for a stray continuation byte).
fn utf8_len_from_lead(byte: u8) -> usize {
    const LENGTHS: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LENGTHS[(byte >> 4) as usize]
}

/// The length of the UTF-8 sequence `input` starts with, if it is one (llama.cpp's
/// `unicode_cpt_from_utf8`: lead and continuation bits only).
fn utf8_sequence_len(input: &[u8]) -> Option<usize> {
    let lead = *input.first()?;
    let len = match lead {
        _ if lead & 0x80 == 0 => 1,
        _ if lead & 0x40 == 0 => return None,
        _ if lead & 0x20 == 0 => 2,
        _ if lead & 0x10 == 0 => 3,
        _ if lead & 0x08 == 0 => 4,
        _ => return None,
    };
    let continuation = input.get(1..len)?;
    continuation.iter().all(|b| b & 0xc0 == 0x80).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(add_space_prefix: bool, remove_extra_whitespaces: bool) -> Unigram {
        let pieces = [
            ("<pad>", 3, 0.0),
            ("</s>", 3, 0.0),
            ("<unk>", 2, 0.0),
            ("▁", 1, -2.0),
            ("▁hello", 1, -3.0),
            ("▁he", 1, -2.0),
            ("llo", 1, -2.0),
            ("h", 1, -4.0),
            ("e", 1, -4.0),
            ("l", 1, -4.0),
            ("o", 1, -4.0),
            ("▁world", 1, -3.5),
            ("<sep>", 4, -100.0),
        ];
        let tokens: Vec<String> = pieces.iter().map(|p| p.0.to_string()).collect();
        let types: Vec<i32> = pieces.iter().map(|p| p.1).collect();
        let scores = pieces.iter().map(|p| p.2).collect();
        Unigram::new(
            &tokens,
            &types,
            scores,
            2,
            None,
            add_space_prefix,
            remove_extra_whitespaces,
        )
    }

    fn encode(u: &Unigram, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        u.encode(text, true, &mut out);
        out
    }

    #[test]
    fn viterbi_takes_the_highest_scoring_segmentation() {
        let u = vocab(true, true);
        // "▁hello" (-3) beats "▁he" + "llo" (-4).
        assert_eq!(encode(&u, "hello world"), [4, 11]);
        // Extra spaces merge; user-defined pieces score 0 and pass through normalisation.
        assert_eq!(encode(&u, "  hello<sep>world"), [4, 12, 11]);
    }

    #[test]
    fn unknown_code_points_merge_into_one_unknown() {
        let u = vocab(false, false);
        // "xy" has no piece: one <unk>; spaces are kept, escaped.
        assert_eq!(encode(&u, "xy he"), [2, 5]);
        assert_eq!(encode(&u, "</s>é"), [1, 2]);
    }

    #[test]
    fn prefix_walk_reports_every_piece_and_the_depth_reached() {
        let set = PrefixSet::new(vec![
            (b"ab".as_slice().into(), 1),
            (b"a".as_slice().into(), 0),
            (b"abcd".as_slice().into(), 2),
            (b"a".as_slice().into(), 7),
        ]);
        let mut found = Vec::new();
        let depth = set.walk(b"abcx", |len, id| found.push((len, id)));
        assert_eq!(found, [(1, 7), (2, 1)]);
        assert_eq!(depth, 3);
    }

    #[test]
    fn a_charsmap_that_does_not_fit_its_blob_is_refused() {
        assert!(CharsMap::parse(&[1, 0]).is_err());
        assert!(CharsMap::parse(&[8, 0, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(CharsMap::parse(&[4, 0, 0, 0, 0, 0, 0, 0, b'a', 0]).is_ok());
    }
}
