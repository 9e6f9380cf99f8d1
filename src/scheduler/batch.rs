//! One step's packed batch: the plan's slice of every running sequence, quantized rows first and dense
//! prompt rows after (as `StepBatch::dense_from` requires), and the forward over it with the grammar masks
//! of the sampling sequences computed on another thread meanwhile.

use std::time::Instant;

use models::{LogitsWanted, StepBatch};

use super::plan::{Pending, StepBudget, plan_step};
use super::sequence::Sequence;
use super::{GenerationError, StepModel};
use crate::engine::grammar::{GrammarError, TokenMask};
use crate::metrics::Histogram;

/// The grammar mask of one sampled row: None for an unconstrained sequence.
pub(super) type RowMask = Option<Result<TokenMask, GrammarError>>;

/// What one step runs and who samples from it.
pub(super) struct StepPlan {
    pub batch: StepBatch,
    /// Tokens each running sequence brings (same order as the running set).
    pub take: Vec<usize>,
    /// Running sequences that reach their last known token and so sample, in logits-row order.
    pub sampled: Vec<usize>,
    /// Prompt tokens this step computes (for the prompt-tokens counter).
    pub prompt_tokens: usize,
}

impl StepPlan {
    /// Plans the step for `running` under `budget` and packs its batch.
    pub fn new(running: &[Sequence], budget: StepBudget) -> Self {
        let pending: Vec<Pending> = running
            .iter()
            .map(|s| Pending {
                uncached: s.tokens.len() - s.cached,
                arrived: s.submission.arrived,
            })
            .collect();
        let take = plan_step(&pending, budget);
        let taking = |i: &usize| take[*i] > 0;
        let order = (0..running.len())
            .filter(taking)
            .filter(|&i| !running[i].prefills_densely())
            .chain(
                (0..running.len())
                    .filter(taking)
                    .filter(|&i| running[i].prefills_densely()),
            );
        let mut batch = StepBatch::default();
        let mut sampled = Vec::new();
        for i in order {
            let seq = &running[i];
            let end = seq.cached + take[i];
            let completes = end == seq.tokens.len();
            let wanted = if completes {
                LogitsWanted::Last
            } else {
                LogitsWanted::None
            };
            let (tokens, blocks) = (&seq.tokens[seq.cached..end], seq.lease.blocks().to_vec());
            if seq.prefills_densely() {
                batch.push_prompt(tokens, seq.cached, seq.prompt_len(), blocks, wanted);
            } else {
                batch.push(tokens, seq.cached, blocks, wanted);
            }
            if completes {
                sampled.push(i);
            }
        }
        let prompt_tokens = take
            .iter()
            .zip(&pending)
            .filter(|(_, p)| p.uncached > 1)
            .map(|(t, _)| *t)
            .sum();
        Self {
            batch,
            take,
            sampled,
            prompt_tokens,
        }
    }

    /// Runs the forward; meanwhile computes the mask of every sampling sequence that has a grammar (the
    /// masks depend only on tokens already chosen). Masks come back one per sampled row.
    pub fn run<M: StepModel>(
        &self,
        model: &mut M,
        running: &mut [Sequence],
        mask_time: &Histogram,
    ) -> (Result<Vec<Vec<f32>>, GenerationError>, Vec<RowMask>) {
        let mut constraints: Vec<_> = {
            let mut by_index: Vec<_> = running.iter_mut().map(|s| s.constraint.as_mut()).collect();
            self.sampled.iter().map(|&i| by_index[i].take()).collect()
        };
        let batch = &self.batch;
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
            let logits = model.step_logits(batch).map_err(GenerationError::from);
            tracing::debug!(
                sequences = batch.sequences.len(),
                tokens = batch.tokens.len(),
                ms = started.elapsed().as_secs_f64() * 1e3,
                "step"
            );
            let masks = masks.and_then(|m| m.join().ok()).unwrap_or_default();
            (logits, masks)
        });
        masks.resize_with(self.sampled.len(), || None);
        (logits, masks)
    }
}
