//! Draws transfer progress: one indicatif bar per item on a terminal, plain lines with speed and ETA otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::artifact::human_size;
use crate::progress::{ProgressSink, TransferEvent};

/// Builds the sink for this process's stderr.
pub fn stderr_progress() -> ProgressSink {
    if std::io::stderr().is_terminal() {
        bars()
    } else {
        lines()
    }
}

fn bars() -> ProgressSink {
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let items: Mutex<HashMap<String, ProgressBar>> = Mutex::new(HashMap::new());
    Arc::new(move |event| {
        let Ok(mut items) = items.lock() else { return };
        match event {
            TransferEvent::Started { id, total, done } => {
                let bar = multi.add(ProgressBar::new(total));
                bar.set_style(style.clone());
                bar.set_prefix(id.clone());
                bar.set_position(done);
                items.insert(id, bar);
            }
            TransferEvent::Advanced { id, done } => {
                if let Some(bar) = items.get(&id) {
                    bar.set_position(done);
                }
            }
            TransferEvent::Finished { id, skipped } => match items.remove(&id) {
                Some(bar) => bar.finish(),
                None if skipped => {
                    let _ = multi.println(format!("{id:>12} already exists"));
                }
                None => {}
            },
            TransferEvent::Note(line) => {
                let _ = multi.println(line);
            }
        }
    })
}

struct LineState {
    total: u64,
    started: Instant,
    first_done: u64,
    next_report: u64,
}

/// Plain lines for logs and CI: one at start, one per tenth, one at the end.
fn lines() -> ProgressSink {
    let items: Mutex<HashMap<String, LineState>> = Mutex::new(HashMap::new());
    Arc::new(move |event| {
        let Ok(mut items) = items.lock() else { return };
        match event {
            TransferEvent::Started { id, total, done } => {
                let resumed = if done > 0 {
                    format!(", resuming at {}", human_size(done))
                } else {
                    String::new()
                };
                eprintln!("{id}: {}{resumed}", human_size(total));
                items.insert(
                    id,
                    LineState {
                        total,
                        started: Instant::now(),
                        first_done: done,
                        next_report: done + total / 10,
                    },
                );
            }
            TransferEvent::Advanced { id, done } => {
                if let Some(state) = items.get_mut(&id)
                    && done >= state.next_report
                    && done < state.total
                {
                    state.next_report = done + state.total / 10;
                    let elapsed = state.started.elapsed().as_secs_f64().max(1e-3);
                    let rate = (done - state.first_done) as f64 / elapsed;
                    let eta = if rate > 0.0 {
                        format!("{:.0}s", (state.total - done) as f64 / rate)
                    } else {
                        "?".into()
                    };
                    eprintln!(
                        "{id}: {:>3}% {}/{} {}/s ETA {eta}",
                        done * 100 / state.total.max(1),
                        human_size(done),
                        human_size(state.total),
                        human_size(rate as u64),
                    );
                }
            }
            TransferEvent::Finished { id, skipped } => {
                items.remove(&id);
                if skipped {
                    eprintln!("{id}: already exists");
                } else {
                    eprintln!("{id}: done");
                }
            }
            TransferEvent::Note(line) => eprintln!("{line}"),
        }
    })
}
