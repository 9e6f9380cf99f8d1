//! WordPiece (`tokenizer.ggml.model = "bert"`), tokenizing exactly as llama.cpp's WPM tokenizer does.
//!
//! llama.cpp's converter stores BERT's vocabulary in "phantom space" form: a word-initial piece carries a
//! leading `▁` and a `##` continuation loses its prefix. A text is split on special-token markers, then
//! normalised and cut into words (`llm_tokenizer_wpm_session::preprocess`: each code point mapped to the
//! first code point of its canonical decomposition and accent marks dropped when stripping accents,
//! lowercased, control characters dropped, whitespace separating words, every punctuation mark, ASCII
//! symbol and CJK ideograph a word of its own); each word, with `▁` in front, is matched greedily,
//! longest piece first, and a word with any unmatched part becomes `[UNK]` whole.

use std::collections::HashMap;

use unicode_general_category::{GeneralCategory, get_general_category};

use super::special_tokens::{Fragment, SpecialTokens};
/// What llama.cpp prepends to every word before matching.
const PHANTOM_SPACE: &str = "\u{2581}";

/// llama.cpp's whitespace set (`unicode_set_whitespace`).
const WHITESPACE: [u32; 25] = [
    0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
    0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
];

/// A WordPiece vocabulary with llama.cpp's normaliser options.
#[derive(Debug, Clone)]
pub struct WordPiece {
    ids: HashMap<String, u32>,
    /// The longest piece, in bytes: no match is tried beyond it.
    max_token_len: usize,
    unk: u32,
    lowercase: bool,
    strip_accents: bool,
    /// The markers a text is cut at before tokenizing.
    specials: SpecialTokens,
}

impl WordPiece {
    pub fn new(
        tokens: &[String],
        types: &[i32],
        unk: u32,
        lowercase: bool,
        strip_accents: bool,
    ) -> Self {
        let mut ids = HashMap::with_capacity(tokens.len());
        for (id, token) in tokens.iter().enumerate() {
            // Later duplicates win, as in llama.cpp's `token_to_id`.
            ids.insert(token.clone(), id as u32);
        }
        let max_token_len = tokens.iter().map(String::len).max().unwrap_or(0);
        let specials = SpecialTokens::new(tokens, types);
        Self {
            ids,
            max_token_len,
            unk,
            lowercase,
            strip_accents,
            specials,
        }
    }

    /// Appends the ids of `text` to `out`; special-token markers in it are matched when `parse_special`
    /// (user-defined tokens always are, as in llama.cpp).
    pub fn encode(&self, text: &str, parse_special: bool, out: &mut Vec<u32>) {
        for fragment in self.specials.partition(text, parse_special) {
            match fragment {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(text) => {
                    for word in self.words(text) {
                        self.word(&word, out);
                    }
                }
            }
        }
    }

    /// `preprocess`: normalised words.
    fn words(&self, text: &str) -> Vec<String> {
        let mut words = vec![String::new()];
        for c in text.chars() {
            let c = if self.strip_accents {
                first_of_nfd(c)
            } else {
                c
            };
            if WHITESPACE.contains(&(c as u32)) {
                if !words.last().is_some_and(String::is_empty) {
                    words.push(String::new());
                }
                continue;
            }
            let category = get_general_category(c);
            if c == '\0' || c == '\u{FFFD}' || is_control(category) {
                continue;
            }
            if self.strip_accents && is_accent_mark(category) {
                continue;
            }
            let c = if self.lowercase { lowercase(c) } else { c };
            let last = words.len() - 1;
            if is_punctuation(category)
                || ((c as u32) < 0x7F && is_symbol(category))
                || is_chinese(c as u32)
            {
                if !words[last].is_empty() {
                    words.push(String::new());
                }
                let last = words.len() - 1;
                words[last] = c.to_string();
                words.push(String::new());
            } else {
                words[last].push(c);
            }
        }
        if words.last().is_some_and(String::is_empty) {
            words.pop();
        }
        words
    }

    /// One word, greedily longest piece first; `[UNK]` for the whole word if any part has no piece.
    fn word(&self, word: &str, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        let word = format!("{PHANTOM_SPACE}{word}");
        let n = word.len();
        let start = out.len();
        let mut i = 0;
        while i < n {
            let mut matched = None;
            let mut j = n.min(i + self.max_token_len + 1);
            while j > i {
                if let Some(&id) = word.get(i..j).and_then(|piece| self.ids.get(piece)) {
                    matched = Some((id, j));
                    break;
                }
                j -= 1;
            }
            match matched {
                Some((id, end)) => {
                    out.push(id);
                    i = end;
                }
                None => {
                    out.truncate(start);
                    break;
                }
            }
        }
        if out.len() == start {
            out.push(self.unk);
        }
    }
}

/// The first code point of `c`'s canonical decomposition (llama.cpp's `unicode_cpts_normalize_nfd` keeps
/// only that one).
fn first_of_nfd(c: char) -> char {
    let mut first = None;
    unicode_normalization::char::decompose_canonical(c, |d| {
        first.get_or_insert(d);
    });
    first.unwrap_or(c)
}

fn lowercase(c: char) -> char {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        // A character whose lowercase is several (İ): llama.cpp's one-to-one table keeps its first.
        (Some(l), Some(_)) => l,
        _ => c,
    }
}

fn is_control(c: GeneralCategory) -> bool {
    matches!(
        c,
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::Surrogate
            | GeneralCategory::PrivateUse
    )
}

fn is_accent_mark(c: GeneralCategory) -> bool {
    matches!(
        c,
        GeneralCategory::NonspacingMark
            | GeneralCategory::SpacingMark
            | GeneralCategory::EnclosingMark
    )
}

fn is_punctuation(c: GeneralCategory) -> bool {
    matches!(
        c,
        GeneralCategory::ConnectorPunctuation
            | GeneralCategory::DashPunctuation
            | GeneralCategory::OpenPunctuation
            | GeneralCategory::ClosePunctuation
            | GeneralCategory::InitialPunctuation
            | GeneralCategory::FinalPunctuation
            | GeneralCategory::OtherPunctuation
    )
}

fn is_symbol(c: GeneralCategory) -> bool {
    matches!(
        c,
        GeneralCategory::MathSymbol
            | GeneralCategory::CurrencySymbol
            | GeneralCategory::ModifierSymbol
            | GeneralCategory::OtherSymbol
    )
}

/// llama.cpp's `is_chinese_char` (the CJK ideograph blocks, as Hugging Face's BERT tokenizer has them).
fn is_chinese(c: u32) -> bool {
    (0x4E00..=0x9FFF).contains(&c)
        || (0x3400..=0x4DBF).contains(&c)
        || (0x20000..=0x2A6DF).contains(&c)
        || (0x2A700..=0x2B73F).contains(&c)
        || (0x2B740..=0x2B81F).contains(&c)
        || (0x2B920..=0x2CEAF).contains(&c)
        || (0xF900..=0xFAFF).contains(&c)
        || (0x2F800..=0x2FA1F).contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> WordPiece {
        let tokens: Vec<String> = [
            "[PAD]", "[UNK]", "[CLS]", "▁hello", "▁world", "▁run", "ning", "▁,", "▁!", "▁cafe",
            "▁中",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut types = vec![1; tokens.len()];
        types[0] = 3;
        types[1] = 3;
        types[2] = 3;
        WordPiece::new(&tokens, &types, 1, true, true)
    }

    #[test]
    fn words_are_lowercased_stripped_of_accents_and_split_at_punctuation() {
        let mut out = Vec::new();
        vocab().encode("Hello,  WORLD! Running Café 中x", true, &mut out);
        // x has no piece: the word [UNK]; 中 is a word of its own.
        assert_eq!(out, [3, 7, 4, 8, 5, 6, 9, 10, 1]);
    }

    #[test]
    fn special_markers_are_matched_only_when_parsing_specials() {
        let wp = vocab();
        let mut out = Vec::new();
        wp.encode("[CLS]hello", true, &mut out);
        assert_eq!(out, [2, 3]);
        out.clear();
        wp.encode("[CLS]hello", false, &mut out);
        // "[", "cls", "]hello": brackets are punctuation without a piece here.
        assert_eq!(out, [1, 1, 1, 3]);
    }
}
