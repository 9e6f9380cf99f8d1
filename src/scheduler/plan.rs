//! Choosing what one step runs: a pure function of the running sequences and the step's token budget,
//! unit-tested without a model.
//!
//! The policy, in order:
//! 1. Decodes first: every decoding sequence brings its one token, so a prompt never stalls them.
//! 2. The oldest prompt (by arrival) is guaranteed a floor of a quarter of the prompt budget left after the
//!    decodes (or what it still needs), so however many short prompts keep arriving it always progresses.
//! 3. The rest of the budget goes to prompts shortest remaining first (ties: oldest first), each up to
//!    `prefill_chunk` tokens (chunked prefill). A short prompt that arrives behind a long one is finished in
//!    the next step instead of waiting for every chunk of the long one; prompts of equal length are served
//!    first come, first served, so their mean time to first token stays that of a queue.
//!
//! With a step budget of 512 and 16 new 38-token prompts, all fit one step as before; with one 4000-token
//! prompt ahead of 15 short ones, the short ones all get their first token after one step and the long
//! one still takes at least 128 tokens of every step.

use std::time::Instant;

/// What the planner needs to know of one running sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Tokens known but not yet in the KV cache (1 for a decoding sequence, more while prefilling).
    pub uncached: usize,
    /// When its request arrived: the oldest prompt is the one guaranteed to progress.
    pub arrived: Instant,
}

/// Limits of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepBudget {
    /// Most tokens one forward pass takes in all.
    pub tokens: usize,
    /// Most prompt tokens one sequence brings to one step.
    pub prefill_chunk: usize,
}

/// The share of the prompt budget the oldest prompt is guaranteed every step: one part in this many.
const OLDEST_FLOOR_DIVISOR: usize = 4;

/// How many tokens each sequence (same order as `pending`) brings to this step; 0 means it waits.
pub fn plan_step(pending: &[Pending], budget: StepBudget) -> Vec<usize> {
    let mut take = vec![0; pending.len()];
    let mut left = budget.tokens;
    for (i, p) in pending.iter().enumerate() {
        if p.uncached == 1 && left > 0 {
            take[i] = 1;
            left -= 1;
        }
    }
    let want = |p: &Pending| p.uncached.min(budget.prefill_chunk);
    let mut prompts: Vec<usize> = (0..pending.len())
        .filter(|&i| pending[i].uncached > 1)
        .collect();
    if let Some(&oldest) = prompts.iter().min_by_key(|&&i| (pending[i].arrived, i)) {
        let floor = (left / OLDEST_FLOOR_DIVISOR).max(1).min(left);
        take[oldest] = want(&pending[oldest]).min(floor);
        left -= take[oldest];
    }
    prompts.sort_by_key(|&i| (pending[i].uncached, pending[i].arrived, i));
    for i in prompts {
        let n = (want(&pending[i]) - take[i]).min(left);
        take[i] += n;
        left -= n;
    }
    take
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Sequences with these uncached counts, arriving in this order one millisecond apart.
    fn pending(uncached: &[usize]) -> Vec<Pending> {
        let start = Instant::now();
        uncached
            .iter()
            .enumerate()
            .map(|(i, &u)| Pending {
                uncached: u,
                arrived: start + Duration::from_millis(i as u64),
            })
            .collect()
    }

    #[test]
    fn decodes_run_before_prefills_and_prefills_are_chunked() {
        let budget = StepBudget {
            tokens: 100,
            prefill_chunk: 64,
        };
        assert_eq!(plan_step(&pending(&[500, 1, 1]), budget), [64, 1, 1]);
        // The shorter prompt is served first; the oldest keeps its floor (a quarter of the 99 left).
        assert_eq!(plan_step(&pending(&[500, 300, 1]), budget), [35, 64, 1]);
    }

    #[test]
    fn a_spent_budget_makes_the_rest_wait() {
        let budget = StepBudget {
            tokens: 2,
            prefill_chunk: 64,
        };
        assert_eq!(plan_step(&pending(&[1, 1, 1, 10]), budget), [1, 1, 0, 0]);
        assert_eq!(plan_step(&pending(&[0, 10]), budget), [0, 2]);
    }

    #[test]
    fn sixteen_new_prompts_all_get_their_first_chunk_in_the_first_step() {
        let budget = StepBudget {
            tokens: 512,
            prefill_chunk: 512,
        };
        // A long prompt first and fifteen short ones behind it: the short ones all finish in this step,
        // the long one takes its floor and whatever is left.
        let mut waiting = vec![20; 15];
        waiting.insert(0, 4000);
        let take = plan_step(&pending(&waiting), budget);
        assert_eq!(&take[1..], &[20; 15]);
        assert_eq!(take[0], 512 - 15 * 20);
        // Sixteen prompts of 38 tokens (608 in all) overflow 512: first come, first served.
        let take = plan_step(&pending(&[38; 16]), budget);
        assert_eq!(take.iter().sum::<usize>(), 512);
        assert_eq!(&take[..13], &[38; 13]);
        assert_eq!(take[13], 512 - 13 * 38);
        assert_eq!(take[14..], [0, 0]);
    }

    #[test]
    fn decodes_are_never_starved_by_prompts() {
        let budget = StepBudget {
            tokens: 80,
            prefill_chunk: 64,
        };
        let mut uncached = vec![1; 16];
        uncached.extend([5000, 3000, 40]);
        let take = plan_step(&pending(&uncached), budget);
        assert_eq!(&take[..16], &[1; 16]);
        assert_eq!(take.iter().sum::<usize>(), 80);
        assert_eq!(take[18], 40, "the short prompt finishes");
        assert_eq!(take[16], 16, "the oldest prompt gets its floor: 64 / 4");
        assert_eq!(take[17], 8, "the next shortest gets what is left");
    }

    #[test]
    fn a_long_prompt_is_never_blocked_by_a_stream_of_short_ones() {
        // Every step, a fresh batch of short prompts that alone would fill the budget arrives after the
        // long one; it still progresses each step and finishes in bounded time.
        let budget = StepBudget {
            tokens: 512,
            prefill_chunk: 512,
        };
        let start = Instant::now();
        let mut long_left = 2048usize;
        let mut steps = 0;
        while long_left > 0 {
            steps += 1;
            assert!(steps <= 16, "the long prompt starved");
            let mut running = vec![Pending {
                uncached: long_left,
                arrived: start,
            }];
            running.extend((0..20).map(|i| Pending {
                uncached: 30,
                arrived: start + Duration::from_millis(steps * 100 + i),
            }));
            let take = plan_step(&running, budget);
            assert!(take[0] >= 128.min(long_left), "{take:?}");
            long_left -= take[0];
        }
    }
}
