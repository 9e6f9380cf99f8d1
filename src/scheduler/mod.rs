//! Continuous batching: one scheduler thread per loaded model owns its model and runs steps forever.
//!
//! Requests join the running set at the next step and leave when done; every step is ONE packed forward
//! over all running sequences (decodes plus prompt chunks under a token budget), then each sequence samples.
//! Decodes always get their token; prompt chunks go shortest remaining first, the oldest prompt keeping a
//! floor of the budget (see `plan`).
//! KV memory is a budget of blocks: a request is admitted only when its prompt fits, and when decoding runs
//! out of blocks the youngest sequence is preempted (its blocks freed, its tokens re-queued for recompute).
//! A client that goes away closes its event channel; its sequence and blocks are dropped at the next step.
//!
//! The scheduler is generic over `StepModel`, which `Engine` implements; its modules, in the order a step
//! uses them: `admission` (who runs, under the KV budget), `plan` (how many tokens each brings), `batch`
//! (the packed forward), `sequence` (choose and accept a token, stop strings, events), `prefix_cache`.
//!
//! A panic inside a turn (a model bug, a kernel task on a pool thread) is caught: every request the
//! scheduler holds fails with `SchedulerError::Panicked`, the scheduler marks itself stopped and its thread
//! ends, dropping the model. The runtime then unloads the model, so the next request loads it afresh;
//! nothing waits on a thread that is gone.
//!
//! Architecture Invariant: the scheduler thread is the only user of its model and of the KV cache's blocks.

mod admission;
mod batch;
mod error;
mod model;
pub mod plan;
pub mod prefix_cache;
mod sequence;
mod stats;
mod step_loop;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::mpsc;

pub use error::{GenerationError, SchedulerError, SubmitError};
pub use model::StepModel;
pub use stats::SchedulerStats;

use crate::engine::grammar::Constraint;
use crate::engine::sampler::{SampledToken, SamplingParams};
use crate::engine::{FinishReason, PREFILL_CHUNK};
use plan::StepBudget;
use step_loop::Loop;

/// A request the scheduler accepts: validated, tokenized, within the context.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// Most tokens to generate; validation has capped it to the context left after the prompt.
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    /// A grammar the output must match (structured output, forced tool calls).
    pub constraint: Option<Constraint>,
}

/// Token counts, as `usage` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

/// What a request's stream carries.
#[derive(Debug, Clone)]
pub enum Event {
    /// One generated token and the text it completes (may be empty, or held back for a stop string).
    Token { text: String, token: SampledToken },
    /// The end: why, and the counts.
    Done {
        finish: FinishReason,
        usage: Usage,
        text: String,
    },
    /// The request failed; nothing more comes.
    Failed(GenerationError),
}

/// Tunables of a scheduler.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Most sequences running at once.
    pub max_running: usize,
    /// Most requests waiting to start; past it, submissions are refused.
    pub max_waiting: usize,
    pub budget: StepBudget,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_running: 16,
            max_waiting: 256,
            budget: StepBudget {
                tokens: 512,
                prefill_chunk: PREFILL_CHUNK,
            },
        }
    }
}

struct Submission {
    request: ValidRequest,
    events: mpsc::UnboundedSender<Event>,
    arrived: Instant,
}

/// An embedding to compute between steps.
struct EmbedJob {
    tokens: Vec<u32>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<f32>, GenerationError>>,
}

enum Work {
    Generate(Box<Submission>),
    Embed(EmbedJob),
}

/// The handle the server holds: submit requests, read stats.
#[derive(Clone)]
pub struct Scheduler {
    submissions: std::sync::mpsc::Sender<Work>,
    pub stats: Arc<SchedulerStats>,
    max_waiting: usize,
}

impl Scheduler {
    /// Starts the scheduler thread, which owns `model` until every handle is dropped.
    pub fn start<M: StepModel + Send + 'static>(model: M, config: SchedulerConfig) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let stats = Arc::new(SchedulerStats::default());
        stats
            .kv_blocks_total
            .store(model.pool().total_blocks(), Ordering::Relaxed);
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || {
                Loop::new(model, config, rx, thread_stats).run();
                // The model is dropped: hand its memory back rather than keep it for the next load.
                crate::allocator::return_free_memory();
            })
            .ok();
        Self {
            submissions: tx,
            stats,
            max_waiting: config.max_waiting,
        }
    }

    /// Queues a request; its events arrive on the returned channel. Dropping the receiver cancels it.
    pub fn submit(
        &self,
        request: ValidRequest,
    ) -> Result<mpsc::UnboundedReceiver<Event>, SubmitError> {
        if self.is_stopped() {
            return Err(SubmitError::Stopped);
        }
        let waiting = self.stats.waiting.load(Ordering::Relaxed);
        if waiting >= self.max_waiting {
            return Err(SubmitError::QueueFull { waiting });
        }
        let (events, rx) = mpsc::unbounded_channel();
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        self.submissions
            .send(Work::Generate(Box::new(Submission {
                request,
                events,
                arrived: Instant::now(),
            })))
            .map_err(|_| SubmitError::Stopped)?;
        Ok(rx)
    }

    /// Whether the scheduler's thread has ended; its model must be loaded again.
    pub fn is_stopped(&self) -> bool {
        self.stats.stopped.load(Ordering::Acquire)
    }

    /// Computes a pooled embedding between steps; the prompt must fit the context.
    pub async fn embed(&self, tokens: Vec<u32>) -> Result<Vec<f32>, GenerationError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.submissions
            .send(Work::Embed(EmbedJob { tokens, reply }))
            .map_err(|_| SubmitError::Stopped)?;
        rx.await.map_err(|_| SubmitError::Stopped)?
    }
}
