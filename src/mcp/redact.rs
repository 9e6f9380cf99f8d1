//! Keeps secrets out of logs: every configured secret value and client token is replaced by `[REDACTED]`
//! in anything the gateway logs or reports about a call.

#[derive(Debug, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole. Grows when a server started
    /// at run time (Dynamic MCP) brings secrets of its own.
    secrets: std::sync::RwLock<Vec<String>>,
}

pub const REDACTED: &str = "[REDACTED]";

impl Redactor {
    pub fn new(secrets: Vec<String>) -> Self {
        let redactor = Self::default();
        redactor.learn(secrets);
        redactor
    }

    /// Adds secret values to those replaced from now on.
    pub fn learn(&self, more: Vec<String>) {
        let mut secrets = self.secrets.write().unwrap_or_else(|p| p.into_inner());
        secrets.extend(more.into_iter().filter(|s| !s.is_empty()));
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        let secrets = self.secrets.read().unwrap_or_else(|p| p.into_inner());
        for secret in secrets.iter() {
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
        r.learn(vec!["late-secret".into()]);
        assert_eq!(r.redact("a late-secret"), format!("a {REDACTED}"));
    }
}
