//! Keeps secrets out of logs: every configured secret value and client token is replaced by `[REDACTED]`
//! in anything the gateway logs or reports about a call.

#[derive(Debug, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<String>,
}

pub const REDACTED: &str = "[REDACTED]";

impl Redactor {
    pub fn new(mut secrets: Vec<String>) -> Self {
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_longest_first() {
        let r = Redactor::new(vec!["abcd".into(), "abcdef-long".into()]);
        assert_eq!(
            r.redact("x=abcdef-long y=abcd"),
            format!("x={REDACTED} y={REDACTED}")
        );
        assert_eq!(r.redact("nothing here"), "nothing here");
    }
}
