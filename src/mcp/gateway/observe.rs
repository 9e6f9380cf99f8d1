//! What the gateway tells operators about calls: one log line per call (secrets removed, under the
//! target `model_runner::mcp::calls`) and the Prometheus series `model_runner:mcp_tool_calls_total`,
//! `mcp_tool_errors_total`, `mcp_tool_call_seconds` per server, tool and client, plus each server's
//! `mcp_server_up` and `mcp_server_crashes_total`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::super::policy::{Caller, DailyUse};
use super::call::CallRecord;
use super::{GATEWAY_SERVER, Gateway, McpError, Setup, UNKNOWN_TOOL, lock};
use crate::metrics::{Histogram, describe, label};

/// How much of a tool's name a log line carries (names come from callers).
const LOGGED_NAME_CHARS: usize = 128;

/// One series' key: server, tool, client.
type SeriesKey = (String, String, String);

#[derive(Default)]
struct ToolStats {
    calls: AtomicU64,
    errors: AtomicU64,
    latency: Histogram,
}

/// Counts and latencies of every call so far, by server, tool and client.
#[derive(Default)]
pub(super) struct CallStats(Mutex<BTreeMap<SeriesKey, Arc<ToolStats>>>);

impl Gateway {
    /// Call log line (secrets removed) and metrics. A name no tool has is counted under the one series
    /// `tool="unknown"`: callers choose names, and each name must not become a series of its own.
    pub(super) fn observe(&self, setup: &Setup, caller: &Caller, record: &CallRecord) {
        let failed = record.failed();
        let known = record.error_kind != Some(McpError::UnknownTool(String::new()).kind());
        let logged_name: String = record.name.chars().take(LOGGED_NAME_CHARS).collect();
        let line = json!({
            "event": "mcp_call",
            "client": caller.label(),
            "server": record.server,
            "tool": setup.redactor.redact(&logged_name),
            "arguments": setup.redactor.redact(&record.arguments.to_string()),
            "duration_ms": (record.duration.as_secs_f64() * 1e4).round() / 10.0,
            "outcome": if record.error.is_some() { record.error_kind.unwrap_or("error") } else if failed { "tool_error" } else { "ok" },
            "error": record.error,
        });
        tracing::info!(target: "model_runner::mcp::calls", "{line}");
        let key = if known {
            (
                record.server.clone(),
                record.name.clone(),
                caller.label().to_string(),
            )
        } else {
            (
                GATEWAY_SERVER.to_string(),
                UNKNOWN_TOOL.to_string(),
                caller.label().to_string(),
            )
        };
        let stats = lock(&self.stats.0).entry(key).or_default().clone();
        stats.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        stats.latency.observe(record.duration.as_secs_f64());
    }

    /// Log line of a resource read or prompt fetch (`event`), in the call log's shape: who, what
    /// (`subject`: a gateway URI or prompt name, cut and redacted), how long, how it ended.
    pub(super) fn observe_request(
        &self,
        setup: &Setup,
        caller: &Caller,
        event: &str,
        subject: &str,
        started: std::time::Instant,
        error: Option<&McpError>,
    ) {
        let subject: String = subject.chars().take(LOGGED_NAME_CHARS).collect();
        let line = json!({
            "event": event,
            "client": caller.label(),
            "subject": setup.redactor.redact(&subject),
            "duration_ms": (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
            "outcome": error.map_or("ok", McpError::kind),
            "error": error.map(|e| setup.redactor.redact(&e.to_string())),
        });
        tracing::info!(target: "model_runner::mcp::calls", "{line}");
    }

    /// Prometheus series for the gateway.
    pub async fn render_metrics(&self, out: &mut String) {
        let stats: Vec<_> = lock(&self.stats.0)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let labels = |(server, tool, client): &SeriesKey| {
            format!(
                "server=\"{}\",tool=\"{}\",client=\"{}\"",
                label(server),
                label(tool),
                label(client)
            )
        };
        type Count = fn(&ToolStats) -> u64;
        let counters: [(&str, &str, Count); 2] = [
            (
                "model_runner:mcp_tool_calls_total",
                "MCP tool calls through the gateway.",
                |s| s.calls.load(Ordering::Relaxed),
            ),
            (
                "model_runner:mcp_tool_errors_total",
                "MCP tool calls that failed or returned isError.",
                |s| s.errors.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, count) in counters {
            describe(out, name, "counter", help);
            for (key, s) in &stats {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(key), count(s));
            }
        }
        describe(
            out,
            "model_runner:mcp_tool_call_seconds",
            "histogram",
            "MCP tool call latency.",
        );
        for (key, s) in &stats {
            s.latency
                .render(out, "model_runner:mcp_tool_call_seconds", &labels(key));
        }
        let setup = self.setup();
        describe(
            out,
            "model_runner:mcp_server_up",
            "gauge",
            "Whether an MCP server is running.",
        );
        for u in &setup.upstreams {
            let up = u.is_running().await as u8;
            let _ = writeln!(
                out,
                "model_runner:mcp_server_up{{server=\"{}\"}} {up}",
                label(u.name())
            );
        }
        let daily = setup.policy.daily_use();
        type Daily = fn(&DailyUse) -> Option<u64>;
        let gauges: [(&str, &str, Daily); 4] = [
            (
                "model_runner:mcp_client_calls_today",
                "Tool calls a client with a daily quota made this UTC day.",
                |d| d.calls_per_day.map(|_| u64::from(d.calls_today)),
            ),
            (
                "model_runner:mcp_client_calls_per_day",
                "A client's daily quota of tool calls.",
                |d| d.calls_per_day.map(u64::from),
            ),
            (
                "model_runner:mcp_client_tokens_today",
                "Model tokens (prompt and completion) a client with a token quota spent this UTC day.",
                |d| d.tokens_per_day.map(|_| d.tokens_today),
            ),
            (
                "model_runner:mcp_client_tokens_per_day",
                "A client's daily quota of model tokens.",
                |d| d.tokens_per_day,
            ),
        ];
        for (name, help, value) in gauges {
            // Described only when some client has that quota.
            let lines: Vec<(&str, u64)> = daily
                .iter()
                .filter_map(|d| Some((d.client.as_str(), value(d)?)))
                .collect();
            if lines.is_empty() {
                continue;
            }
            describe(out, name, "gauge", help);
            for (client, value) in lines {
                let _ = writeln!(out, "{name}{{client=\"{}\"}} {value}", label(client));
            }
        }
        describe(
            out,
            "model_runner:mcp_server_crashes_total",
            "counter",
            "MCP servers found dead and restarted.",
        );
        for u in &setup.upstreams {
            let _ = writeln!(
                out,
                "model_runner:mcp_server_crashes_total{{server=\"{}\"}} {}",
                label(u.name()),
                u.crashes()
            );
        }
    }
}
