//! Reading a tool call's JSON object while it is still being written: the function's name as soon as
//! its string closes, and where the arguments value starts and ends, so that arguments can stream.

/// What is known so far of one call object (`{"name": "...", "arguments": {...}}`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallScan {
    pub name: Option<String>,
    /// Byte offset where the arguments value starts (`arguments`, or Llama's `parameters`).
    pub arguments_start: Option<usize>,
    /// Byte offset just past the arguments value, once it is complete.
    pub arguments_end: Option<usize>,
    /// Byte offset just past the object's closing brace, once it closes.
    pub end: Option<usize>,
    /// Byte offset where the text stops being a JSON object (nothing after it was read).
    pub invalid: Option<usize>,
}

/// Scans `text`, which should start (after whitespace) with a JSON object. What it reports of a prefix
/// of `text` never changes as more text comes (the first `name` and arguments count, a value belongs to
/// the key it followed), so a call streamed in pieces reads as the same call read whole.
pub fn scan_call(text: &str) -> CallScan {
    let mut scan = CallScan::default();
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut string_start = 0;
    // At depth 1: the last key read, whether a value is expected, where the value began and the key it
    // belongs to, and whether it is a bare number, `true`, `false` or `null` still being read.
    let mut key: Option<String> = None;
    let mut expecting_value = false;
    let mut value_start: Option<usize> = None;
    let mut value_key: Option<String> = None;
    let mut in_primitive = false;
    let mut started = false;

    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if depth == 1 {
                    let literal = &text[string_start..=i];
                    if value_start == Some(string_start) {
                        let value: Option<String> = serde_json::from_str(literal).ok();
                        finish_value(&mut scan, value_key.as_deref(), i + 1, value);
                        value_start = None;
                    } else {
                        key = serde_json::from_str(literal).ok();
                    }
                }
            }
            continue;
        }
        if b.is_ascii_whitespace() {
            continue;
        }
        if !started {
            if b != b'{' {
                scan.invalid = Some(i);
                return scan;
            }
            started = true;
            depth = 1;
            continue;
        }
        if depth == 1 && expecting_value && value_start.is_none() {
            if !matches!(
                b,
                b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
            ) {
                scan.invalid = Some(i);
                return scan;
            }
            value_start = Some(i);
            value_key = key.take();
            expecting_value = false;
            in_primitive = !matches!(b, b'{' | b'[' | b'"');
            if is_arguments(value_key.as_deref()) && scan.arguments_start.is_none() {
                scan.arguments_start = Some(i);
            }
            if in_primitive {
                continue;
            }
        } else if in_primitive
            && !matches!(b, b',' | b'}')
            && !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
        {
            scan.invalid = Some(i);
            return scan;
        }
        match b {
            b'"' => {
                in_string = true;
                string_start = i;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                in_primitive = false;
                if depth == 1 && value_start.take().is_some() {
                    finish_value(&mut scan, value_key.as_deref(), i + 1, None);
                } else if depth == 0 {
                    if let Some(start) = value_start.take() {
                        finish_primitive(&mut scan, value_key.as_deref(), text, start, i);
                    }
                    scan.end = Some(i + 1);
                    return scan;
                }
            }
            b':' if depth == 1 => expecting_value = true,
            b',' if depth == 1 => {
                in_primitive = false;
                if let Some(start) = value_start.take() {
                    finish_primitive(&mut scan, value_key.as_deref(), text, start, i);
                }
                key = None;
            }
            _ => {}
        }
    }
    scan
}

fn is_arguments(key: Option<&str>) -> bool {
    matches!(key, Some("arguments" | "parameters"))
}

/// The first string `name` and the first arguments value count: a streamed call's name and arguments are
/// out as soon as they close, so a later duplicate key must not change what the whole text means.
fn finish_value(scan: &mut CallScan, key: Option<&str>, end: usize, string: Option<String>) {
    if key == Some("name") {
        if scan.name.is_none() {
            scan.name = string;
        }
    } else if is_arguments(key) && scan.arguments_end.is_none() {
        scan.arguments_end = Some(end);
    }
}

/// A number, `true`, `false` or `null` ends at the `,` or `}` after it.
fn finish_primitive(scan: &mut CallScan, key: Option<&str>, text: &str, start: usize, end: usize) {
    let trimmed = text[start..end].trim_end().len();
    finish_value(scan, key, start + trimmed, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_call_is_read_whole() {
        let text = r#" {"name": "get_weather", "arguments": {"city": "Paris, \"FR\"", "days": [1, 2]}} tail"#;
        let scan = scan_call(text);
        assert_eq!(scan.name.as_deref(), Some("get_weather"));
        let args = &text[scan.arguments_start.unwrap()..scan.arguments_end.unwrap()];
        assert_eq!(args, r#"{"city": "Paris, \"FR\"", "days": [1, 2]}"#);
        assert_eq!(&text[scan.end.unwrap()..], " tail");
    }

    #[test]
    fn a_partial_call_gives_what_is_known() {
        let scan = scan_call(r#"{"name": "get_wea"#);
        assert_eq!(scan.name, None);
        let scan = scan_call(r#"{"name": "get_weather", "arguments": {"ci"#);
        assert_eq!(scan.name.as_deref(), Some("get_weather"));
        assert_eq!(scan.arguments_start, Some(37));
        assert_eq!(scan.arguments_end, None);
        assert_eq!(scan.end, None);
    }

    #[test]
    fn llama_parameters_and_primitive_values() {
        let text = r#"{"type": "function", "name": "f", "parameters": 3 }"#;
        let scan = scan_call(text);
        assert_eq!(scan.name.as_deref(), Some("f"));
        let args = &text[scan.arguments_start.unwrap()..scan.arguments_end.unwrap()];
        assert_eq!(args, "3");
        assert_eq!(scan_call("hello").invalid, Some(0));
        assert_eq!(
            scan_call(r#"{"name": "f", "arguments": z"x": 1}"#).invalid,
            Some(27)
        );
        assert_eq!(
            scan_call(r#"{"name": "f", "arguments": 1"x"}"#).invalid,
            Some(28)
        );
    }
}
