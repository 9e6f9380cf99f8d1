//! Who may call what: gateway clients are named by bearer token; once any client is configured, a caller
//! without a known token may do nothing (default deny). Each client may be limited to some servers and
//! tools, to a call rate (`governor`'s GCRA limiter, one per client), to a number of calls per UTC
//! day and to a number of model tokens per UTC day at the inference APIs (both counted here; the counts
//! restart with each configuration reload).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Per client with a daily quota: its use of the current UTC day.
    days: Mutex<HashMap<String, DayCount>>,
}

/// What a client used in one UTC day.
#[derive(Debug, Clone, Copy, Default)]
struct DayCount {
    /// Days since the epoch.
    day: u64,
    calls: u32,
    tokens: u64,
}

/// One client's daily quotas and its use today, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyUse {
    pub client: String,
    pub calls_today: u32,
    pub calls_per_day: Option<u32>,
    pub tokens_today: u64,
    pub tokens_per_day: Option<u64>,
}

const DAY_SECS: u64 = 86_400;

/// Seconds since the epoch, now.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
        Self {
            clients,
            limiters,
            days: Mutex::new(HashMap::new()),
        }
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

    /// Takes one call from the caller's rate budget and daily quota; `Err` holds how long until the next
    /// is allowed (for an exhausted quota: until the next UTC midnight).
    pub fn check_rate(&self, caller: &Caller) -> Result<(), Duration> {
        self.check_rate_at(caller, now_secs())
    }

    fn check_rate_at(&self, caller: &Caller, now: u64) -> Result<(), Duration> {
        let Caller::Client(client) = caller else {
            return Ok(());
        };
        let today = now / DAY_SECS;
        if let Some(quota) = client.calls_per_day
            && self.today(&client.name, today).calls >= quota
        {
            return Err(until_midnight(now));
        }
        if let Some(limiter) = self.limiters.get(&client.name) {
            limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))?;
        }
        if client.calls_per_day.is_some() {
            self.count(&client.name, today, |c| {
                c.calls = c.calls.saturating_add(1);
            });
        }
        Ok(())
    }

    /// Whether `caller` may start a generation: `Err` holds the time until the next UTC midnight once
    /// its tokens of the day are spent. A generation admitted under the quota runs to its end.
    pub fn check_tokens(&self, caller: &Caller) -> Result<(), Duration> {
        self.check_tokens_at(caller, now_secs())
    }

    fn check_tokens_at(&self, caller: &Caller, now: u64) -> Result<(), Duration> {
        let Caller::Client(client) = caller else {
            return Ok(());
        };
        match client.tokens_per_day {
            Some(quota) if self.today(&client.name, now / DAY_SECS).tokens >= quota => {
                Err(until_midnight(now))
            }
            _ => Ok(()),
        }
    }

    /// Adds `tokens` a generation spent to `client`'s count of the day (clients without a token quota
    /// are not counted).
    pub fn spend_tokens(&self, client: &str, tokens: u64) {
        self.spend_tokens_at(client, tokens, now_secs());
    }

    fn spend_tokens_at(&self, client: &str, tokens: u64, now: u64) {
        let metered = self
            .clients
            .iter()
            .any(|c| c.name == client && c.tokens_per_day.is_some());
        if metered {
            self.count(client, now / DAY_SECS, |c| {
                c.tokens = c.tokens.saturating_add(tokens);
            });
        }
    }

    /// `client`'s use of `today` (zero when its last count is of an earlier day).
    fn today(&self, client: &str, today: u64) -> DayCount {
        let days = self.days.lock().unwrap_or_else(|e| e.into_inner());
        match days.get(client) {
            Some(c) if c.day == today => *c,
            _ => DayCount::default(),
        }
    }

    /// Changes `client`'s count of `today`, starting it afresh when the day turned.
    fn count(&self, client: &str, today: u64, change: impl FnOnce(&mut DayCount)) {
        let mut days = self.days.lock().unwrap_or_else(|e| e.into_inner());
        let entry = days.entry(client.to_string()).or_default();
        if entry.day != today {
            *entry = DayCount {
                day: today,
                ..DayCount::default()
            };
        }
        change(entry);
    }

    /// Each client with a daily quota: its use today and its quotas.
    pub fn daily_use(&self) -> Vec<DailyUse> {
        let today = now_secs() / DAY_SECS;
        self.clients
            .iter()
            .filter(|c| c.calls_per_day.is_some() || c.tokens_per_day.is_some())
            .map(|c| {
                let used = self.today(&c.name, today);
                DailyUse {
                    client: c.name.clone(),
                    calls_today: used.calls,
                    calls_per_day: c.calls_per_day,
                    tokens_today: used.tokens,
                    tokens_per_day: c.tokens_per_day,
                }
            })
            .collect()
    }
}

/// The time from `now` to the next UTC midnight, when daily quotas start afresh.
fn until_midnight(now: u64) -> Duration {
    Duration::from_secs((now / DAY_SECS + 1) * DAY_SECS - now)
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
            calls_per_day: None,
            tokens_per_day: None,
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

    #[test]
    fn daily_quotas_count_per_client_and_restart_at_utc_midnight() {
        let mut quota = client("q", None, None);
        quota.calls_per_day = Some(3);
        let policy = Policy::new(&[quota, client("free", None, None)]);
        let q = policy.authenticate(Some("q-token")).expect("q");
        let free = policy.authenticate(Some("free-token")).expect("free");
        // Ten seconds before a UTC midnight.
        let evening = 20_000 * DAY_SECS - 10;
        for _ in 0..3 {
            assert!(policy.check_rate_at(&q, evening).is_ok());
        }
        assert_eq!(
            policy.check_rate_at(&q, evening),
            Err(Duration::from_secs(10)),
            "the fourth call waits for midnight"
        );
        for _ in 0..10 {
            assert!(policy.check_rate_at(&free, evening).is_ok());
        }
        assert!(policy.check_rate_at(&q, evening + 10).is_ok(), "a new day");
        assert!(policy.check_rate_at(&q, evening + 11).is_ok());
    }

    #[test]
    fn a_refused_minute_does_not_spend_the_daily_quota() {
        let mut both = client("b", None, Some(1));
        both.calls_per_day = Some(5);
        let policy = Policy::new(&[both]);
        let b = policy.authenticate(Some("b-token")).expect("b");
        assert!(policy.check_rate(&b).is_ok());
        assert!(policy.check_rate(&b).is_err(), "over the minute's rate");
        let usage = policy.daily_use();
        assert_eq!(
            usage,
            vec![DailyUse {
                client: "b".into(),
                calls_today: 1,
                calls_per_day: Some(5),
                tokens_today: 0,
                tokens_per_day: None,
            }]
        );
    }

    #[test]
    fn token_quotas_admit_until_spent_and_restart_at_utc_midnight() {
        let mut metered = client("m", None, None);
        metered.tokens_per_day = Some(100);
        let policy = Policy::new(&[metered, client("free", None, None)]);
        let m = policy.authenticate(Some("m-token")).expect("m");
        let free = policy.authenticate(Some("free-token")).expect("free");
        let evening = 20_000 * DAY_SECS - 30;
        assert!(policy.check_tokens_at(&m, evening).is_ok());
        // A generation admitted under the quota is counted whole, past the quota.
        policy.spend_tokens_at("m", 60, evening);
        assert!(policy.check_tokens_at(&m, evening).is_ok(), "60 of 100");
        policy.spend_tokens_at("m", 70, evening);
        assert_eq!(
            policy.check_tokens_at(&m, evening),
            Err(Duration::from_secs(30))
        );
        // Clients without a token quota are neither refused nor counted.
        policy.spend_tokens_at("free", 1_000, evening);
        assert!(policy.check_tokens_at(&free, evening).is_ok());
        assert!(
            policy.check_tokens_at(&m, evening + 30).is_ok(),
            "a new day"
        );
        let usage = policy.daily_use();
        assert_eq!(usage.len(), 1, "{usage:?}");
        assert_eq!(usage[0].tokens_per_day, Some(100));
        assert_eq!(usage[0].calls_per_day, None);
    }
}
