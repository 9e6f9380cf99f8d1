//! `GET /metrics`: Prometheus text exposition of every loaded model's scheduler (which renders its own
//! series), the device and memory of each model, and the MCP gateway's counters.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::metrics::{describe, label};
use crate::runtime::LoadedModel;
use crate::scheduler::SchedulerStats;

/// Prometheus text exposition.
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let models = state.runtime.loaded().await;
    let mut out = String::new();
    let stats: Vec<(&str, &SchedulerStats)> = models
        .iter()
        .map(|m| (m.name.as_str(), m.scheduler.stats.as_ref()))
        .collect();
    SchedulerStats::render(&mut out, &stats);
    describe(
        &mut out,
        "model_runner:device_info",
        "gauge",
        "The device models load onto (1), and each loaded model's device.",
    );
    let _ = writeln!(
        out,
        "model_runner:device_info{{device=\"{}\"}} 1",
        label(&state.runtime.device_name())
    );
    for m in &models {
        let _ = writeln!(
            out,
            "model_runner:device_info{{device=\"{}\",model=\"{}\"}} 1",
            label(&m.device),
            label(&m.name)
        );
    }
    type Reading = fn(&LoadedModel) -> u64;
    let per_model: [(&str, &str, Reading); 2] = [
        (
            "model_runner:model_memory_bytes",
            "Memory a loaded model holds: weights and KV cache.",
            |m| m.memory_bytes,
        ),
        (
            "model_runner:context_size",
            "Context size of each loaded model, in tokens.",
            |m| m.context_size as u64,
        ),
    ];
    for (name, help, value) in per_model {
        describe(&mut out, name, "gauge", help);
        for m in &models {
            let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", label(&m.name), value(m));
        }
    }
    if let Some(gateway) = &state.gateway {
        gateway.render_metrics(&mut out).await;
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
