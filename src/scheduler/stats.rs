//! The scheduler's counters and latency histograms: updated by its thread, read by anyone, and rendered
//! as Prometheus text here so that the server's `/metrics` handler need not know a field of them.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crate::metrics::{Histogram, describe, label};

/// Counters the server exports; updated by the scheduler thread, read by anyone.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    pub running: AtomicUsize,
    pub waiting: AtomicUsize,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub requests_finished: AtomicU64,
    pub preemptions: AtomicU64,
    pub steps: AtomicU64,
    pub kv_blocks_total: AtomicUsize,
    pub kv_blocks_used: AtomicUsize,
    /// Blocks the prefix cache holds (some may also be held by running sequences).
    pub prefix_cache_blocks: AtomicUsize,
    /// Prompt tokens looked up in the prefix cache, and those found there.
    pub prefix_cache_queries: AtomicU64,
    pub prefix_cache_hits: AtomicU64,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    /// Time to compute one constrained sequence's token mask.
    pub grammar_mask_time: Histogram,
    /// The scheduler's thread has ended (a step panicked): it accepts nothing more.
    pub stopped: AtomicBool,
}

type Gauge = fn(&SchedulerStats) -> f64;

/// Name, Prometheus type, help and reading of every counter and gauge (vLLM's names where they fit).
const SERIES: [(&str, &str, &str, Gauge); 12] = [
    (
        "model_runner:prefix_cache_blocks",
        "gauge",
        "KV cache blocks kept by the prefix cache.",
        |s| s.prefix_cache_blocks.load(Ordering::Relaxed) as f64,
    ),
    (
        "model_runner:prefix_cache_queries_total",
        "counter",
        "Prompt tokens looked up in the prefix cache.",
        |s| s.prefix_cache_queries.load(Ordering::Relaxed) as f64,
    ),
    (
        "model_runner:prefix_cache_hits_total",
        "counter",
        "Prompt tokens found in the prefix cache.",
        |s| s.prefix_cache_hits.load(Ordering::Relaxed) as f64,
    ),
    (
        "model_runner:num_requests_running",
        "gauge",
        "Requests in the running batch.",
        |s| s.running.load(Ordering::Relaxed) as f64,
    ),
    (
        "model_runner:num_requests_waiting",
        "gauge",
        "Requests waiting to start.",
        |s| s.waiting.load(Ordering::Relaxed) as f64,
    ),
    (
        "model_runner:prompt_tokens_total",
        "counter",
        "Prompt tokens processed.",
        |s| s.prompt_tokens.load(Ordering::Relaxed) as f64,
    ),
    (
        "model_runner:generation_tokens_total",
        "counter",
        "Tokens generated.",
        |s| s.generation_tokens.load(Ordering::Relaxed) as f64,
    ),
    (
        "model_runner:request_success_total",
        "counter",
        "Requests finished.",
        |s| s.requests_finished.load(Ordering::Relaxed) as f64,
    ),
    (
        "model_runner:num_preemptions_total",
        "counter",
        "Sequences preempted for KV memory.",
        |s| s.preemptions.load(Ordering::Relaxed) as f64,
    ),
    (
        "model_runner:kv_cache_blocks_used",
        "gauge",
        "KV cache blocks held by sequences.",
        |s| s.kv_blocks_used.load(Ordering::Relaxed) as f64,
    ),
    (
        "model_runner:kv_cache_blocks_total",
        "gauge",
        "KV cache blocks in all.",
        |s| s.kv_blocks_total.load(Ordering::Relaxed) as f64,
    ),
    (
        "model_runner:steps_total",
        "counter",
        "Forward steps run.",
        |s| s.steps.load(Ordering::Relaxed) as f64,
    ),
];

type Pick = fn(&SchedulerStats) -> &Histogram;

const HISTOGRAMS: [(&str, &str, Pick); 3] = [
    (
        "model_runner:time_to_first_token_seconds",
        "Time from arrival to first token.",
        |s| &s.time_to_first_token,
    ),
    (
        "model_runner:inter_token_latency_seconds",
        "Time between tokens of a stream.",
        |s| &s.inter_token_latency,
    ),
    (
        "model_runner:grammar_mask_seconds",
        "Time to compute one constrained sequence's allowed-token mask (overlaps the forward pass).",
        |s| &s.grammar_mask_time,
    ),
];

impl SchedulerStats {
    /// Appends every series of every `(model name, stats)` to `out` in Prometheus text: each metric's
    /// `# HELP`/`# TYPE` once, then one sample per model labelled `model="name"`.
    pub fn render(out: &mut String, models: &[(&str, &SchedulerStats)]) {
        for (name, kind, help, value) in SERIES {
            describe(out, name, kind, help);
            for (model, stats) in models {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", label(model), value(stats));
            }
        }
        for (name, help, pick) in HISTOGRAMS {
            describe(out, name, "histogram", help);
            for (model, stats) in models {
                pick(stats).render(out, name, &format!("model=\"{}\"", label(model)));
            }
        }
    }

    /// Records a token produced `now`: time to first token from `arrived`, else the gap since `previous`.
    pub(super) fn observe_token(&self, arrived: Instant, previous: Option<Instant>, now: Instant) {
        match previous {
            None => self
                .time_to_first_token
                .observe((now - arrived).as_secs_f64()),
            Some(t) => self.inter_token_latency.observe((now - t).as_secs_f64()),
        }
        self.generation_tokens.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_described_once_and_sampled_per_model() {
        let (a, b) = (SchedulerStats::default(), SchedulerStats::default());
        a.steps.store(7, Ordering::Relaxed);
        a.time_to_first_token.observe(0.002);
        let mut out = String::new();
        SchedulerStats::render(&mut out, &[("ai/a", &a), ("ai/\"b\"", &b)]);
        assert_eq!(
            out.matches("# TYPE model_runner:steps_total counter")
                .count(),
            1
        );
        assert!(
            out.contains("model_runner:steps_total{model=\"ai/a\"} 7\n"),
            "{out}"
        );
        assert!(
            out.contains("model_runner:steps_total{model=\"ai/\\\"b\\\"\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("model_runner:time_to_first_token_seconds_count{model=\"ai/a\"} 1\n"));
        assert_eq!(
            out.matches("# HELP ").count(),
            SERIES.len() + HISTOGRAMS.len()
        );
    }
}
