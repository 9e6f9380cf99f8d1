//! A circuit breaker per server: after `threshold` failures in a row it opens and calls fail at once;
//! after the cool-down one trial call is let through (half-open), which closes it on success or opens it
//! again on failure. Pure state; the caller passes the clock.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            failures: 0,
            opened_at: None,
            trial_in_flight: false,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(at) if now.duration_since(at) < self.cooldown => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go ahead now; `Err` holds how long until the next trial.
    pub fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state(now) {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => {
                let at = self.opened_at.unwrap_or(now);
                Err(self.cooldown.saturating_sub(now.duration_since(at)))
            }
            BreakerState::HalfOpen if self.trial_in_flight => Err(Duration::ZERO),
            BreakerState::HalfOpen => {
                self.trial_in_flight = true;
                Ok(())
            }
        }
    }

    pub fn record_success(&mut self) {
        self.failures = 0;
        self.opened_at = None;
        self.trial_in_flight = false;
    }

    pub fn record_failure(&mut self, now: Instant) {
        self.failures += 1;
        if self.trial_in_flight || self.failures >= self.threshold {
            if self.opened_at.is_none() || self.trial_in_flight {
                tracing::warn!(failures = self.failures, "MCP server circuit breaker opens");
            }
            self.opened_at = Some(now);
        }
        self.trial_in_flight = false;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_half_opens_after_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            assert!(b.admit(t0).is_ok());
            b.record_failure(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.record_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(b.admit(t0 + Duration::from_secs(5)).is_err());
        let later = t0 + Duration::from_secs(11);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.admit(later).is_ok(), "one trial call");
        assert!(b.admit(later).is_err(), "only one trial at a time");
        b.record_failure(later);
        assert_eq!(b.state(later), BreakerState::Open, "a failed trial reopens");
        let again = later + Duration::from_secs(11);
        assert!(b.admit(again).is_ok());
        b.record_success();
        assert_eq!(b.state(again), BreakerState::Closed);
        assert_eq!(b.failures(), 0);
    }
}
