//! Who may call what: gateway clients are named by bearer token; once any client is configured, a caller
//! without a known token may do nothing (default deny). Each client may be limited to some servers and
//! tools and to a call rate (`governor`'s GCRA limiter, one per client).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::config::ClientConfig;

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No token presented (allowed everything only while no clients are configured).
    Anonymous,
    Client(Arc<ClientConfig>),
}

impl Caller {
    /// The name used in logs and metrics.
    pub fn label(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Client(c) => &c.name,
        }
    }
}

pub struct Policy {
    clients: Vec<Arc<ClientConfig>>,
    limiters: HashMap<String, DefaultDirectRateLimiter>,
}

impl Policy {
    pub fn new(clients: &[ClientConfig]) -> Self {
        let clients: Vec<Arc<ClientConfig>> = clients.iter().cloned().map(Arc::new).collect();
        let limiters = clients
            .iter()
            .filter_map(|c| {
                let limit = c.rate_limit?;
                let per_minute = NonZeroU32::new(limit.per_minute)?;
                let burst = NonZeroU32::new(limit.burst).unwrap_or(per_minute);
                Some((
                    c.name.clone(),
                    RateLimiter::direct(Quota::per_minute(per_minute).allow_burst(burst)),
                ))
            })
            .collect();
        Self { clients, limiters }
    }

    /// Whether callers must present a token.
    pub fn is_enforced(&self) -> bool {
        !self.clients.is_empty()
    }

    /// The caller a bearer token stands for; `None` for a token no client has.
    pub fn authenticate(&self, token: Option<&str>) -> Option<Caller> {
        match token {
            None => Some(Caller::Anonymous),
            Some(token) => self
                .clients
                .iter()
                .find(|c| constant_time_eq(c.token.as_bytes(), token.as_bytes()))
                .map(|c| Caller::Client(c.clone()))
                .or((!self.is_enforced()).then_some(Caller::Anonymous)),
        }
    }

    /// Whether `caller` may see and call `server`'s tool named `name` (namespaced).
    pub fn allows(&self, caller: &Caller, server: &str, name: &str) -> bool {
        match caller {
            Caller::Anonymous => !self.is_enforced(),
            Caller::Client(client) => {
                let server_ok = client
                    .servers
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|s| s == "*" || s == server));
                let tool_ok = client
                    .tools
                    .as_ref()
                    .is_none_or(|t| t.iter().any(|t| t == "*" || t == name));
                server_ok && tool_ok
            }
        }
    }

    /// Whether `caller` may use `server` at all: its resources and prompts (a client's `tools` list
    /// narrows tools only).
    pub fn allows_server(&self, caller: &Caller, server: &str) -> bool {
        match caller {
            Caller::Anonymous => !self.is_enforced(),
            Caller::Client(client) => client
                .servers
                .as_ref()
                .is_none_or(|s| s.iter().any(|s| s == "*" || s == server)),
        }
    }

    /// Takes one call from the caller's rate budget; `Err` holds how long until the next is allowed.
    pub fn check_rate(&self, caller: &Caller) -> Result<(), Duration> {
        let Caller::Client(client) = caller else {
            return Ok(());
        };
        let Some(limiter) = self.limiters.get(&client.name) else {
            return Ok(());
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::config::RateLimit;

    fn client(name: &str, servers: Option<Vec<&str>>, rate: Option<u32>) -> ClientConfig {
        ClientConfig {
            name: name.into(),
            token: format!("{name}-token"),
            servers: servers.map(|s| s.into_iter().map(String::from).collect()),
            tools: None,
            rate_limit: rate.map(|r| RateLimit {
                per_minute: r,
                burst: r,
            }),
        }
    }

    #[test]
    fn without_clients_everyone_may_call() {
        let policy = Policy::new(&[]);
        let caller = policy.authenticate(None).expect("anonymous");
        assert!(policy.allows(&caller, "fs", "fs__read"));
        assert!(policy.authenticate(Some("anything")).is_some());
    }

    #[test]
    fn with_clients_unknown_callers_are_denied() {
        let policy = Policy::new(&[client("a", Some(vec!["fs"]), None)]);
        assert!(policy.authenticate(Some("wrong")).is_none());
        let anonymous = policy.authenticate(None).expect("anonymous");
        assert!(!policy.allows(&anonymous, "fs", "fs__read"));
        let a = policy.authenticate(Some("a-token")).expect("client a");
        assert!(policy.allows(&a, "fs", "fs__read"));
        assert!(!policy.allows(&a, "time", "time__now"));
        assert!(policy.allows_server(&a, "fs"));
        assert!(!policy.allows_server(&a, "time"));
        assert!(!policy.allows_server(&anonymous, "fs"));
    }

    #[test]
    fn rate_limits_per_client() {
        let policy = Policy::new(&[client("a", None, Some(2)), client("b", None, None)]);
        let a = policy.authenticate(Some("a-token")).expect("a");
        let b = policy.authenticate(Some("b-token")).expect("b");
        assert!(policy.check_rate(&a).is_ok());
        assert!(policy.check_rate(&a).is_ok());
        assert!(policy.check_rate(&a).is_err());
        for _ in 0..10 {
            assert!(policy.check_rate(&b).is_ok());
        }
    }
}
