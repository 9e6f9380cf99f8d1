//! The scheduler thread: it owns the model, the waiting and running sequences and the prefix cache, and
//! turns forever: take in new work, drop cancelled requests, run at most one embedding, admit, step,
//! publish the gauges. A step packs one batch (`batch`), runs it, caches finished prompts' blocks, and
//! lets each sampling sequence choose and accept its token (`sequence`).
//!
//! A panic inside a turn is caught: every request held fails with `SchedulerError::Panicked`, the
//! scheduler marks itself stopped and the thread ends, dropping the model.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::batch::StepPlan;
use super::error::check_tokens;
use super::prefix_cache::PrefixCache;
use super::sequence::Sequence;
use super::{
    EmbedJob, Event, GenerationError, SchedulerConfig, SchedulerError, SchedulerStats, StepModel,
    Work,
};

pub(super) struct Loop<M> {
    pub model: M,
    pub config: SchedulerConfig,
    pub submissions: std::sync::mpsc::Receiver<Work>,
    pub stats: Arc<SchedulerStats>,
    pub waiting: VecDeque<Sequence>,
    pub running: Vec<Sequence>,
    pub embeds: VecDeque<EmbedJob>,
    pub prefix: PrefixCache,
}

impl<M: StepModel> Loop<M> {
    pub fn new(
        model: M,
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
            prefix: PrefixCache::new(model.pool()),
            model,
        }
    }

    pub fn run(mut self) {
        loop {
            if self.is_idle() {
                // Idle: block until work arrives; all handles gone means shut down.
                match self.submissions.recv() {
                    Ok(s) => self.enqueue(s),
                    Err(_) => return,
                }
            }
            // Unwinding is caught per turn (free when nothing panics): the model may be half-way
            // through a step, so it is not used again.
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.turn())) {
                let failure = SchedulerError::Panicked(panic_message(payload.as_ref()));
                tracing::error!(error = %failure, "scheduler step panicked; stopping this model's scheduler");
                self.stop(&failure);
                return;
            }
        }
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty() && self.embeds.is_empty()
    }

    /// One turn: take in new work, run at most one embedding and one step.
    pub fn turn(&mut self) {
        while let Ok(s) = self.submissions.try_recv() {
            self.enqueue(s);
        }
        self.drop_cancelled();
        if let Some(job) = self.embeds.pop_front() {
            let result = check_tokens(&job.tokens, self.model.vocab_size())
                .map_err(GenerationError::from)
                .and_then(|()| Ok(self.model.embed(&job.tokens)?));
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

    fn enqueue(&mut self, work: Work) {
        match work {
            Work::Generate(submission) => {
                if let Err(e) = check_tokens(&submission.request.prompt, self.model.vocab_size()) {
                    // Only this request fails; it never joins a step.
                    self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                    let _ = submission.events.send(Event::Failed(e.into()));
                    return;
                }
                let lease = self.model.pool().lease();
                self.waiting.push_back(Sequence::new(*submission, lease));
            }
            Work::Embed(job) => self.embeds.push_back(job),
        }
    }

    fn drop_cancelled(&mut self) {
        self.running.retain(|s| !s.cancelled());
        let before = self.waiting.len();
        self.waiting.retain(|s| !s.cancelled());
        let gone = before - self.waiting.len();
        self.stats.waiting.fetch_sub(gone, Ordering::Relaxed);
    }

    /// One packed forward over the running set, then every sequence that reached its last token samples.
    fn step(&mut self) {
        self.make_room();
        if self.running.is_empty() {
            return;
        }
        let plan = StepPlan::new(&self.running, self.config.budget);
        let (logits, masks) = plan.run(
            &mut self.model,
            &mut self.running,
            &self.stats.grammar_mask_time,
        );
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        self.stats
            .prompt_tokens
            .fetch_add(plan.prompt_tokens as u64, Ordering::Relaxed);
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                for seq in self.running.drain(..) {
                    seq.send(Event::Failed(e.clone()));
                }
                return;
            }
        };
        for (seq, &taken) in self.running.iter_mut().zip(&plan.take) {
            seq.cached += taken;
            let prompt = seq.prompt_len();
            if !seq.prompt_cached && seq.cached >= prompt {
                self.prefix
                    .insert(&seq.tokens[..prompt], seq.lease.blocks());
                seq.prompt_cached = true;
            }
        }
        let mut finished = Vec::new();
        for ((row, &i), mask) in plan.sampled.iter().enumerate().zip(masks) {
            let outcome = match mask.transpose() {
                Ok(mask) => self.sample(i, &logits[row], mask.as_ref()),
                Err(e) => Err(e.into()),
            };
            match outcome {
                Ok(Some(finish)) => finished.push((i, Ok(finish))),
                Ok(None) => {}
                Err(e) => finished.push((i, Err(e))),
            }
        }
        // Highest index first, so that each swap_remove leaves the indices still to remove in place.
        finished.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        for (i, outcome) in finished {
            self.running.swap_remove(i).finish(outcome);
            self.stats.requests_finished.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Running sequence `i` chooses and accepts its next token; returns why it ends, if it does.
    fn sample(
        &mut self,
        i: usize,
        logits: &[f32],
        allowed: Option<&crate::engine::grammar::TokenMask>,
    ) -> Result<Option<crate::engine::FinishReason>, GenerationError> {
        let tokenizer = self.model.tokenizer();
        let context = self.model.context_size();
        let seq = &mut self.running[i];
        let token = seq.choose(logits, allowed, tokenizer);
        let finish = seq.accept(token, tokenizer, context)?;
        let now = Instant::now();
        let previous = seq.last_token_at.replace(now);
        self.stats
            .observe_token(seq.submission.arrived, previous, now);
        Ok(finish)
    }

    fn publish(&self) {
        self.stats
            .running
            .store(self.running.len(), Ordering::Relaxed);
        self.stats
            .prefix_cache_blocks
            .store(self.prefix.blocks(), Ordering::Relaxed);
        let pool = self.model.pool();
        self.stats
            .kv_blocks_used
            .store(pool.total_blocks() - pool.free_blocks(), Ordering::Relaxed);
    }
}

/// The requests a scheduler holds when it stops.
pub(super) struct Held {
    pub running: Vec<Sequence>,
    pub waiting: VecDeque<Sequence>,
    pub embeds: VecDeque<EmbedJob>,
}

impl Held {
    /// Fails these and every request still queued with `failure`, and marks the scheduler stopped so
    /// that no more are sent; the queue's receiver goes with the thread, closing anything sent later.
    pub fn fail(
        mut self,
        failure: &SchedulerError,
        submissions: &std::sync::mpsc::Receiver<Work>,
        stats: &SchedulerStats,
    ) {
        stats.stopped.store(true, Ordering::Release);
        let error = GenerationError::from(failure.clone());
        while let Ok(work) = submissions.try_recv() {
            match work {
                Work::Generate(s) => {
                    let _ = s.events.send(Event::Failed(error.clone()));
                }
                Work::Embed(job) => self.embeds.push_back(job),
            }
        }
        for seq in self.running.into_iter().chain(self.waiting) {
            seq.send(Event::Failed(error.clone()));
        }
        for job in self.embeds {
            let _ = job.reply.send(Err(error.clone()));
        }
        stats.running.store(0, Ordering::Relaxed);
        stats.waiting.store(0, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_keeps_its_message() {
        let payload = catch_unwind(|| panic!("head {} of {}", 8, 7)).unwrap_err();
        assert_eq!(panic_message(payload.as_ref()), "head 8 of 7");
        let payload = catch_unwind(|| std::panic::panic_any(5u8)).unwrap_err();
        assert_eq!(panic_message(payload.as_ref()), "a panic without a message");
    }
}
