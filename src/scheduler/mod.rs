//! Continuous batching: one scheduler thread per loaded model owns its engine and runs steps forever.
//!
//! Requests join the running set at the next step and leave when done; every step is ONE packed forward
//! over all running sequences (decodes plus prompt chunks under a token budget), then each sequence samples.
//! KV memory is a budget of blocks: a request is admitted only when its prompt fits, and when decoding runs
//! out of blocks the youngest sequence is preempted (its blocks freed, its tokens re-queued for recompute).
//! A client that goes away closes its event channel; its sequence and blocks are dropped at the next step.
//!
//! A panic inside a turn (a model bug, a kernel task on a pool thread) is caught: every request the
//! scheduler holds fails with `SchedulerError::Panicked`, the scheduler marks itself stopped and its thread
//! ends, dropping the engine. The runtime then unloads the model, so the next request loads it afresh;
//! nothing waits on a thread that is gone.
//!
//! Architecture Invariant: the scheduler thread is the only user of its engine and of the KV cache's blocks.

pub mod plan;
pub mod prefix_cache;

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use models::{BlockLease, LogitsWanted, StepBatch};
use tokio::sync::mpsc;

use crate::engine::grammar::{Constraint, TokenMask};
use crate::engine::sampler::{SampledToken, Sampler, SamplingParams};
use crate::engine::text_stream::{StopMatcher, StopScan, TextStream};
use crate::engine::{Engine, FinishReason, PREFILL_CHUNK};
use crate::metrics::Histogram;
use plan::{Pending, StepBudget, plan_step};
use prefix_cache::PrefixCache;

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
    /// The step failed for this request.
    Failed(String),
}

/// Why the scheduler itself failed a request (the engine's own errors reach `Event::Failed` as text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchedulerError {
    #[error("the prompt holds token id {token}, outside the model's vocabulary of {vocab} tokens")]
    TokenOutOfVocabulary { token: u32, vocab: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the model failed during a step and was unloaded ({0}); the next request reloads it")]
    Panicked(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the server is busy: {waiting} requests are waiting already")]
    QueueFull { waiting: usize },
    #[error("the model's scheduler has stopped")]
    Stopped,
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

struct Submission {
    request: ValidRequest,
    events: mpsc::UnboundedSender<Event>,
    arrived: Instant,
}

/// An embedding to compute: mean-pooled, L2-normalised final hidden states of `tokens`.
struct EmbedJob {
    tokens: Vec<u32>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<f32>, String>>,
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
    /// Starts the scheduler thread, which owns `engine` until every handle is dropped.
    pub fn start(engine: Engine, config: SchedulerConfig) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let stats = Arc::new(SchedulerStats::default());
        stats
            .kv_blocks_total
            .store(engine.pool().total_blocks(), Ordering::Relaxed);
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || Loop::new(engine, config, rx, thread_stats).run())
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

    /// Computes an embedding between steps; the prompt must fit the context.
    pub async fn embed(&self, tokens: Vec<u32>) -> Result<Vec<f32>, String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.submissions
            .send(Work::Embed(EmbedJob { tokens, reply }))
            .map_err(|_| SubmitError::Stopped.to_string())?;
        rx.await.map_err(|_| SubmitError::Stopped.to_string())?
    }
}

/// One running (or re-queued) sequence.
struct Sequence {
    submission: Submission,
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    /// Tokens whose keys and values are in the cache.
    cached: usize,
    lease: BlockLease,
    sampler: Sampler,
    constraint: Option<Constraint>,
    /// The model wanted to end inside an incomplete grammar: its output is being closed.
    closing: bool,
    text: TextStream,
    stops: StopMatcher,
    generated: usize,
    last_token_at: Option<Instant>,
    /// Prompt tokens found in the prefix cache at admission.
    prefix_hit: usize,
    /// Whether this sequence's prompt blocks are in the prefix cache.
    prompt_cached: bool,
}

impl Sequence {
    fn new(submission: Submission, lease: BlockLease) -> Self {
        let mut sampler = Sampler::new(submission.request.sampling.clone());
        let prompt = submission.request.prompt.clone();
        for &t in prompt
            .iter()
            .rev()
            .take(crate::engine::sampler::PENALTY_WINDOW)
            .rev()
        {
            sampler.observe(t);
        }
        Self {
            stops: StopMatcher::new(submission.request.stop.clone()),
            constraint: submission.request.constraint.clone(),
            closing: false,
            tokens: prompt,
            cached: 0,
            lease,
            sampler,
            text: TextStream::new(),
            generated: 0,
            last_token_at: None,
            prefix_hit: 0,
            prompt_cached: false,
            submission,
        }
    }

    fn cancelled(&self) -> bool {
        self.submission.events.is_closed()
    }

    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.submission.request.prompt.len(),
            completion_tokens: self.generated,
            cached_tokens: self.prefix_hit,
        }
    }
}

/// The requests a scheduler holds when it stops.
struct Held {
    running: Vec<Sequence>,
    waiting: VecDeque<Sequence>,
    embeds: VecDeque<EmbedJob>,
}

impl Held {
    /// Fails these and every request still queued with `failure`, and marks the scheduler stopped so
    /// that no more are sent; the queue's receiver goes with the thread, closing anything sent later.
    fn fail(
        mut self,
        failure: &SchedulerError,
        submissions: &std::sync::mpsc::Receiver<Work>,
        stats: &SchedulerStats,
    ) {
        stats.stopped.store(true, Ordering::Release);
        let message = failure.to_string();
        while let Ok(work) = submissions.try_recv() {
            match work {
                Work::Generate(s) => {
                    let _ = s.events.send(Event::Failed(message.clone()));
                }
                Work::Embed(job) => self.embeds.push_back(job),
            }
        }
        for seq in self.running.into_iter().chain(self.waiting) {
            let _ = seq.submission.events.send(Event::Failed(message.clone()));
        }
        for job in self.embeds {
            let _ = job.reply.send(Err(message.clone()));
        }
        stats.running.store(0, Ordering::Relaxed);
        stats.waiting.store(0, Ordering::Relaxed);
    }
}

/// Checks that `tokens` is not empty and every id is below `vocab`.
fn check_tokens(tokens: &[u32], vocab: usize) -> Result<(), SchedulerError> {
    if tokens.is_empty() {
        return Err(SchedulerError::EmptyPrompt);
    }
    match tokens.iter().find(|&&t| t as usize >= vocab) {
        Some(&token) => Err(SchedulerError::TokenOutOfVocabulary { token, vocab }),
        None => Ok(()),
    }
}

/// The text a panic was raised with, if it was a string.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Tokens before the budget runs out at which a constrained answer is steered to close its JSON.
fn closing_window(max_tokens: usize) -> usize {
    (max_tokens / 3).clamp(8, 64)
}

/// Whether `generated` ends in one cycle of tokens repeated over and over (`1111…`, `a, b, a, b…`, the
/// same tool call again and again).
fn is_looping(generated: &[u32]) -> bool {
    (1..=48).any(|period| {
        let window = (3 * period).max(16);
        generated.len() >= window && {
            let tail = &generated[generated.len() - window..];
            (period..window).all(|i| tail[i] == tail[i - period])
        }
    })
}

struct Loop {
    engine: Engine,
    config: SchedulerConfig,
    submissions: std::sync::mpsc::Receiver<Work>,
    stats: Arc<SchedulerStats>,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    embeds: VecDeque<EmbedJob>,
    prefix: PrefixCache,
}

impl Loop {
    fn new(
        engine: Engine,
        config: SchedulerConfig,
        submissions: std::sync::mpsc::Receiver<Work>,
        stats: Arc<SchedulerStats>,
    ) -> Self {
        Self {
            config,
            submissions,
            stats,
            waiting: VecDeque::new(),
            running: Vec::new(),
            embeds: VecDeque::new(),
            prefix: PrefixCache::new(engine.pool()),
            engine,
        }
    }

    fn run(mut self) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() && self.embeds.is_empty() {
                // Idle: block until work arrives; all handles gone means shut down.
                match self.submissions.recv() {
                    Ok(s) => self.enqueue(s),
                    Err(_) => return,
                }
            }
            // Unwinding is caught per turn (free when nothing panics): the engine may be half-way
            // through a step, so it is not used again.
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.turn())) {
                let failure = SchedulerError::Panicked(panic_message(payload.as_ref()));
                tracing::error!(error = %failure, "scheduler step panicked; stopping this model's scheduler");
                self.stop(&failure);
                return;
            }
        }
    }

    /// One turn: take in new work, run at most one embedding and one step.
    fn turn(&mut self) {
        while let Ok(s) = self.submissions.try_recv() {
            self.enqueue(s);
        }
        self.drop_cancelled();
        if let Some(job) = self.embeds.pop_front() {
            let result = match self.check_tokens(&job.tokens) {
                Ok(()) => self.embed(&job.tokens).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let _ = job.reply.send(result);
        }
        self.admit();
        if !self.running.is_empty() {
            self.step();
        }
        self.publish();
    }

    /// Fails every request held or still queued with `failure` and marks the scheduler stopped.
    fn stop(&mut self, failure: &SchedulerError) {
        let held = Held {
            running: std::mem::take(&mut self.running),
            waiting: std::mem::take(&mut self.waiting),
            embeds: std::mem::take(&mut self.embeds),
        };
        held.fail(failure, &self.submissions, &self.stats);
    }

    /// Every token id must index the model's embedding: one bad id would fail the whole step.
    fn check_tokens(&self, tokens: &[u32]) -> Result<(), SchedulerError> {
        check_tokens(tokens, self.engine.info().vocab_size)
    }

    fn enqueue(&mut self, work: Work) {
        match work {
            Work::Generate(submission) => {
                if let Err(e) = self.check_tokens(&submission.request.prompt) {
                    // Only this request fails; it never joins a step.
                    self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                    let _ = submission.events.send(Event::Failed(e.to_string()));
                    return;
                }
                let lease = self.engine.pool().lease();
                self.waiting.push_back(Sequence::new(*submission, lease));
            }
            Work::Embed(job) => self.embeds.push_back(job),
        }
    }

    /// Mean of the final hidden states over `tokens`, L2-normalised (llama.cpp's mean pooling).
    fn embed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, crate::engine::EngineError> {
        if tokens.is_empty() || tokens.len() > self.engine.context_size() {
            return Err(crate::engine::EngineError::ContextOverflow {
                prompt: tokens.len(),
                context: self.engine.context_size(),
            });
        }
        let mut lease = self.engine.pool().lease();
        lease.reserve(tokens.len())?;
        let mut sum: Vec<f32> = Vec::new();
        for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
            let mut batch = StepBatch::default();
            batch.push(
                chunk,
                i * PREFILL_CHUNK,
                lease.blocks().to_vec(),
                LogitsWanted::None,
            );
            batch.mark_prompt(tokens.len());
            let hidden = self
                .engine
                .hidden_states(&batch)?
                .sum(0)?
                .to_vec1::<f32>()?;
            if sum.is_empty() {
                sum = hidden;
            } else {
                sum.iter_mut().zip(&hidden).for_each(|(s, h)| *s += h);
            }
        }
        let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        Ok(sum.into_iter().map(|x| x / norm).collect())
    }

    fn drop_cancelled(&mut self) {
        self.running.retain(|s| !s.cancelled());
        let before = self.waiting.len();
        self.waiting.retain(|s| !s.cancelled());
        let gone = before - self.waiting.len();
        self.stats.waiting.fetch_sub(gone, Ordering::Relaxed);
    }

    /// Starts waiting sequences, oldest first, while there is room and blocks for their whole prompt.
    fn admit(&mut self) {
        while self.running.len() < self.config.max_running {
            let Some(mut next) = self.waiting.pop_front() else {
                break;
            };
            let pool = self.engine.pool();
            if pool.block_size() * pool.total_blocks() < next.tokens.len() + 1 {
                // It could never fit, however long it waited: end it now rather than hang.
                self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                let event = if next.generated > 0 {
                    Event::Done {
                        finish: FinishReason::Length,
                        usage: next.usage(),
                        text: next.stops.finish(),
                    }
                } else {
                    Event::Failed(format!(
                        "the prompt needs {} KV cache positions, the cache has {} (raise --kv-cache-blocks)",
                        next.tokens.len() + 1,
                        pool.block_size() * pool.total_blocks()
                    ))
                };
                let _ = next.submission.events.send(event);
                continue;
            }
            let hit = self.prefix.lookup(&next.tokens);
            if !hit.blocks.is_empty() {
                next.lease.share_prefix(&hit.blocks);
                next.cached = hit.blocks.len() * pool.block_size();
            }
            // Held while blocks are reserved (which may evict cache entries), until it is copied.
            let mut copy_source = pool.lease();
            if let Some((block, _)) = hit.partial {
                copy_source.adopt(block);
            }
            if !self.reserve_or_evict(&mut next.lease, next.tokens.len() + 1) {
                // Not enough blocks yet: it stays first in line, holding nothing.
                next.lease.clear();
                next.cached = 0;
                self.waiting.push_front(next);
                break;
            }
            if let Some((block, positions)) = hit.partial {
                let own = next.lease.blocks()[hit.blocks.len()];
                match self.engine.copy_kv_positions(block, own, positions) {
                    Ok(()) => next.cached += positions,
                    Err(e) => tracing::warn!("prefix cache copy failed, recomputing: {e}"),
                }
            }
            drop(copy_source);
            if next.generated == 0 {
                next.prefix_hit = next.cached;
                self.stats
                    .prefix_cache_queries
                    .fetch_add(next.tokens.len() as u64, Ordering::Relaxed);
                self.stats
                    .prefix_cache_hits
                    .fetch_add(next.cached as u64, Ordering::Relaxed);
            }
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            self.running.push(next);
        }
    }

    /// Reserves room for `tokens` positions, evicting unused prefix-cache blocks if that makes room.
    fn reserve_or_evict(&mut self, lease: &mut BlockLease, tokens: usize) -> bool {
        loop {
            if lease.reserve(tokens).is_ok() {
                return true;
            }
            if !self.prefix.evict_one() {
                return false;
            }
        }
    }

    /// Frees the youngest running sequence's blocks and puts it back at the head of the queue.
    fn preempt_youngest(&mut self) -> bool {
        let Some(youngest) = self
            .running
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| s.submission.arrived)
            .map(|(i, _)| i)
        else {
            return false;
        };
        let mut seq = self.running.swap_remove(youngest);
        seq.lease.clear();
        seq.cached = 0;
        self.stats.preemptions.fetch_add(1, Ordering::Relaxed);
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        self.waiting.push_front(seq);
        true
    }

    fn step(&mut self) {
        // Every sequence needs room for the token it is about to add.
        let mut i = 0;
        while i < self.running.len() {
            let need = self.running[i].tokens.len() + 1;
            let mut lease =
                std::mem::replace(&mut self.running[i].lease, self.engine.pool().lease());
            let reserved = self.reserve_or_evict(&mut lease, need);
            self.running[i].lease = lease;
            if reserved {
                i += 1;
            } else if !self.preempt_youngest() {
                break;
            } else {
                i = 0;
            }
        }
        if self.running.is_empty() {
            return;
        }
        let pending: Vec<Pending> = self
            .running
            .iter()
            .map(|s| Pending {
                uncached: s.tokens.len() - s.cached,
            })
            .collect();
        let take = plan_step(&pending, self.config.budget);
        let mut batch = StepBatch::default();
        let mut sampled_rows = Vec::new();
        // Quantized slices first, dense prompt slices after: `StepBatch::dense_from` relies on it.
        let dense = |seq: &Sequence| {
            let prompt = seq.submission.request.prompt.len();
            seq.cached < prompt && prompt >= models::DENSE_MIN_PROMPT
        };
        let order = (0..self.running.len())
            .filter(|&i| take[i] > 0 && !dense(&self.running[i]))
            .chain((0..self.running.len()).filter(|&i| take[i] > 0 && dense(&self.running[i])));
        for i in order {
            let seq = &self.running[i];
            let end = seq.cached + take[i];
            let completes = end == seq.tokens.len();
            let wanted = if completes {
                LogitsWanted::Last
            } else {
                LogitsWanted::None
            };
            batch.push(
                &seq.tokens[seq.cached..end],
                seq.cached,
                seq.lease.blocks().to_vec(),
                wanted,
            );
            if dense(seq) {
                batch.mark_prompt(seq.submission.request.prompt.len());
            }
            if completes {
                sampled_rows.push(i);
            }
        }
        let prompt_tokens: usize = take
            .iter()
            .zip(&pending)
            .filter(|(_, p)| p.uncached > 1)
            .map(|(t, _)| *t)
            .sum();
        // The grammar masks depend only on tokens already chosen: compute them while the forward runs.
        let engine = &mut self.engine;
        let mask_time = &self.stats.grammar_mask_time;
        let mut constraints: Vec<Option<&mut Constraint>> = {
            let mut by_index: Vec<Option<&mut Constraint>> = self
                .running
                .iter_mut()
                .map(|s| s.constraint.as_mut())
                .collect();
            sampled_rows.iter().map(|&i| by_index[i].take()).collect()
        };
        let (logits, mut masks) = std::thread::scope(|scope| {
            let masks = constraints.iter().any(Option::is_some).then(|| {
                scope.spawn(|| {
                    constraints
                        .iter_mut()
                        .map(|c| {
                            c.as_mut().map(|c| {
                                let started = Instant::now();
                                let mask = c.allowed();
                                mask_time.observe(started.elapsed().as_secs_f64());
                                mask
                            })
                        })
                        .collect::<Vec<_>>()
                })
            });
            let started = Instant::now();
            let logits = engine.step(&batch).and_then(|l| Ok(l.to_vec2::<f32>()?));
            tracing::debug!(
                sequences = batch.sequences.len(),
                tokens = batch.tokens.len(),
                ms = started.elapsed().as_secs_f64() * 1e3,
                "step"
            );
            let masks = masks.and_then(|m| m.join().ok()).unwrap_or_default();
            (logits, masks)
        });
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        self.stats
            .prompt_tokens
            .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                for seq in self.running.drain(..) {
                    let _ = seq.submission.events.send(Event::Failed(e.to_string()));
                }
                return;
            }
        };
        for (i, seq) in self.running.iter_mut().enumerate() {
            seq.cached += take[i];
            let prompt = seq.submission.request.prompt.len();
            if !seq.prompt_cached && seq.cached >= prompt {
                self.prefix
                    .insert(&seq.tokens[..prompt], seq.lease.blocks());
                seq.prompt_cached = true;
            }
        }
        masks.resize_with(sampled_rows.len(), || None);
        let mut finished = Vec::new();
        for ((row, &i), mask) in sampled_rows.iter().enumerate().zip(masks) {
            let outcome = match mask.transpose() {
                Ok(mask) => self.sample(i, &logits[row], mask.as_ref()),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(Some(finish)) => finished.push((i, Ok(finish))),
                Ok(None) => {}
                Err(message) => finished.push((i, Err(message))),
            }
        }
        finished.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        for (i, outcome) in finished {
            let mut seq = self.running.swap_remove(i);
            let event = match outcome {
                Ok(finish) => Event::Done {
                    finish,
                    usage: seq.usage(),
                    text: seq.stops.finish(),
                },
                Err(message) => Event::Failed(message),
            };
            let _ = seq.submission.events.send(event);
            self.stats.requests_finished.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Samples the next token of running sequence `i` among those `allowed`; returns why it ends, if it
    /// does, or the grammar's error.
    fn sample(
        &mut self,
        i: usize,
        logits: &[f32],
        allowed: Option<&TokenMask>,
    ) -> Result<Option<FinishReason>, String> {
        let tokenizer = &self.engine.tokenizer;
        let context = self.engine.context_size();
        let seq = &mut self.running[i];
        let steered: Vec<f32>;
        let logits = match (&seq.constraint, allowed) {
            (Some(c), Some(mask)) => {
                // The model would end here but the grammar is not complete, or it is stuck repeating
                // itself: from now on, finish the value.
                let top = crate::engine::sampler::argmax(logits);
                let wants_end = tokenizer.is_end_of_generation(top) && !mask.allows(top);
                let prompt = seq.submission.request.prompt.len();
                seq.closing |= wants_end || is_looping(&seq.tokens[prompt..]);
                let remaining = seq
                    .submission
                    .request
                    .max_tokens
                    .saturating_sub(seq.generated);
                if seq.closing || remaining <= closing_window(seq.submission.request.max_tokens) {
                    let mut l = logits.to_vec();
                    c.steer_to_close(mask, &mut l);
                    steered = l;
                    &steered
                } else {
                    logits
                }
            }
            _ => logits,
        };
        let token = seq.sampler.sample_allowed(logits, allowed);
        let grammar_done = match seq.constraint.as_mut() {
            Some(c) => {
                c.commit(token.id).map_err(|e| e.to_string())?;
                c.is_finished()
            }
            None => false,
        };
        let now = Instant::now();
        match seq.last_token_at {
            None => self
                .stats
                .time_to_first_token
                .observe((now - seq.submission.arrived).as_secs_f64()),
            Some(t) => self
                .stats
                .inter_token_latency
                .observe((now - t).as_secs_f64()),
        }
        seq.last_token_at = Some(now);
        seq.generated += 1;
        self.stats.generation_tokens.fetch_add(1, Ordering::Relaxed);
        let is_end = tokenizer.is_end_of_generation(token.id)
            && (!seq.submission.request.ignore_eos || seq.constraint.is_some());
        if is_end {
            let _ = seq.submission.events.send(Event::Token {
                text: String::new(),
                token,
            });
            return Ok(Some(FinishReason::Stop));
        }
        seq.tokens.push(token.id);
        let piece = seq.text.push(tokenizer, token.id);
        let (text, stopped) = match seq.stops.push(&piece) {
            StopScan::Continue(text) => (text, false),
            StopScan::Stopped(text) => (text, true),
        };
        let _ = seq.submission.events.send(Event::Token { text, token });
        if stopped || grammar_done {
            return Ok(Some(FinishReason::Stop));
        }
        if seq.generated >= seq.submission.request.max_tokens || seq.tokens.len() >= context {
            return Ok(Some(FinishReason::Length));
        }
        Ok(None)
    }

    fn publish(&self) {
        self.stats
            .running
            .store(self.running.len(), Ordering::Relaxed);
        self.stats
            .prefix_cache_blocks
            .store(self.prefix.blocks(), Ordering::Relaxed);
        let pool = self.engine.pool();
        self.stats
            .kv_blocks_used
            .store(pool.total_blocks() - pool.free_blocks(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(prompt: Vec<u32>) -> (Submission, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        let request = ValidRequest {
            prompt,
            sampling: SamplingParams::greedy(),
            max_tokens: 4,
            stop: Vec::new(),
            ignore_eos: false,
            constraint: None,
        };
        let arrived = Instant::now();
        (
            Submission {
                request,
                events,
                arrived,
            },
            rx,
        )
    }

    fn failed_with(rx: &mut mpsc::UnboundedReceiver<Event>) -> String {
        match rx.try_recv() {
            Ok(Event::Failed(message)) => message,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_stopped_scheduler_fails_every_request_it_holds_or_is_sent_and_refuses_new_ones() {
        let pool = models::BlockPool::new(8, 16);
        let (tx, queue) = std::sync::mpsc::channel();
        let stats = Arc::new(SchedulerStats::default());
        stats.waiting.store(2, Ordering::Relaxed);
        let (running, mut running_rx) = submission(vec![1, 2]);
        let (waiting, mut waiting_rx) = submission(vec![3]);
        let (queued, mut queued_rx) = submission(vec![4]);
        tx.send(Work::Generate(Box::new(queued))).unwrap();
        let (reply, mut embed_rx) = tokio::sync::oneshot::channel();
        tx.send(Work::Embed(EmbedJob {
            tokens: vec![1],
            reply,
        }))
        .unwrap();
        let held = Held {
            running: vec![Sequence::new(running, pool.lease())],
            waiting: VecDeque::from([Sequence::new(waiting, pool.lease())]),
            embeds: VecDeque::new(),
        };
        let failure = SchedulerError::Panicked("index out of bounds".into());
        held.fail(&failure, &queue, &stats);
        for rx in [&mut running_rx, &mut waiting_rx, &mut queued_rx] {
            let message = failed_with(rx);
            assert!(message.contains("index out of bounds"), "{message}");
            assert!(message.contains("unloaded"), "{message}");
        }
        assert!(embed_rx.try_recv().unwrap().is_err());
        assert_eq!(stats.waiting.load(Ordering::Relaxed), 0);
        let handle = Scheduler {
            submissions: tx,
            stats,
            max_waiting: 4,
        };
        assert!(handle.is_stopped());
        let (next, _) = submission(vec![1]);
        assert_eq!(
            handle.submit(next.request).err(),
            Some(SubmitError::Stopped)
        );
    }

    #[test]
    fn token_ids_outside_the_vocabulary_fail_only_their_request() {
        assert_eq!(check_tokens(&[0, 9], 10), Ok(()));
        assert_eq!(
            check_tokens(&[0, 10, 3], 10),
            Err(SchedulerError::TokenOutOfVocabulary {
                token: 10,
                vocab: 10
            })
        );
        assert_eq!(check_tokens(&[], 10), Err(SchedulerError::EmptyPrompt));
    }

    #[test]
    fn a_caught_panic_keeps_its_message() {
        let payload = catch_unwind(|| panic!("head {} of {}", 8, 7)).unwrap_err();
        assert_eq!(panic_message(payload.as_ref()), "head 8 of 7");
        let payload = catch_unwind(|| std::panic::panic_any(5u8)).unwrap_err();
        assert_eq!(panic_message(payload.as_ref()), "a panic without a message");
    }

    #[test]
    fn loops_are_short_cycles_repeated() {
        assert!(is_looping(&[7; 16]));
        assert!(!is_looping(&[7; 15]));
        let cycle: Vec<u32> = [1, 2, 3].iter().cycle().take(20).copied().collect();
        assert!(is_looping(&cycle));
        let varied: Vec<u32> = (0..40).collect();
        assert!(!is_looping(&varied));
    }
}
