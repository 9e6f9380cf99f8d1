//! The special-token markers of a vocabulary and llama.cpp's `tokenizer_st_partition`, shared by the
//! tokenizers we run ourselves (`wordpiece`, `ugm`): a text is cut at every marker of a control,
//! user-defined or unknown token, longest marker first, before the rest of it is tokenized. Control and
//! unknown markers are matched only when parsing specials; user-defined ones always are.

const TOKEN_TYPE_UNKNOWN: i32 = 2;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// A piece of the text to tokenize: raw text, or a special token already matched.
#[derive(Debug, PartialEq, Eq)]
pub enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// The markers, longest first (llama.cpp's `cache_special_tokens` order), each with its id and whether
/// it is matched only when parsing specials.
#[derive(Debug, Clone, Default)]
pub struct SpecialTokens {
    markers: Vec<(String, u32, bool)>,
}

impl SpecialTokens {
    pub fn new(tokens: &[String], types: &[i32]) -> Self {
        let mut markers: Vec<(String, u32, bool)> = tokens
            .iter()
            .zip(types)
            .enumerate()
            // An empty marker would match between every two characters of every text.
            .filter(|(_, (text, t))| {
                !text.is_empty()
                    && matches!(
                        **t,
                        TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED | TOKEN_TYPE_UNKNOWN
                    )
            })
            .map(|(id, (text, t))| (text.clone(), id as u32, *t != TOKEN_TYPE_USER_DEFINED))
            .collect();
        markers.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        Self { markers }
    }

    /// Each marker in turn, longest first, splits every raw fragment at each of its occurrences.
    pub fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut fragments = vec![Fragment::Text(text)];
        for (marker, id, only_when_parsing) in &self.markers {
            if *only_when_parsing && !parse_special {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len());
            for fragment in fragments {
                let Fragment::Text(mut rest) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(at) = rest.find(marker.as_str()) {
                    if at > 0 {
                        next.push(Fragment::Text(&rest[..at]));
                    }
                    next.push(Fragment::Token(*id));
                    rest = &rest[at + marker.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            fragments = next;
        }
        fragments
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longer_markers_win_and_control_ones_need_parse_special() {
        let tokens: Vec<String> = ["<s>", "<s>x", "<u>", "a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let specials = SpecialTokens::new(&tokens, &[3, 3, 4, 1]);
        assert_eq!(
            specials.partition("a<s>xb<s><u>", true),
            [
                Fragment::Text("a"),
                Fragment::Token(1),
                Fragment::Text("b"),
                Fragment::Token(0),
                Fragment::Token(2)
            ]
        );
        assert_eq!(
            specials.partition("a<s><u>", false),
            [Fragment::Text("a<s>"), Fragment::Token(2)]
        );
    }
}
