//! Choosing what one step runs: a pure function of the running sequences and the step's token budget,
//! unit-tested without a model.
//!
//! The policy, in order:
//! 1. Decodes first: every decoding sequence brings its one token, so a prompt never stalls them.
//! 2. The oldest prompt (by arrival) is guaranteed a floor of a quarter of the prompt budget left after the
//!    decodes (or what it still needs), so however many short prompts keep arriving it always progresses.
//! 3. The rest of the budget goes to prompts shortest remaining first (ties: oldest first), each up to
//!    `prefill_chunk` tokens (chunked prefill). A short prompt that arrives behind a long one is finished in
//!    the next step instead of waiting for every chunk of the long one.
//! 4. Prompts finish one per step: once a step completes a prompt and holds `PACK_TOKENS`, no further
//!    prompt joins it. Prompts computed together all wait for the last of them, while one after another
//!    (shortest first) each waits only for those before it, so the mean and median time to first token
//!    fall by about half for the same total work; a step of `PACK_TOKENS` already runs the CPU kernels
//!    at full speed, so the extra steps cost only their weights' second pass through the cache. Tiny
//!    prompts still share a step up to `PACK_TOKENS`, and a prompt that does not finish in this step (a
//!    long one, chunked) still fills the budget.
//!
//! With a step budget of 512 and eight new 50-token prompts, the first gets its first token after one
//! 50-token step, the eighth after eight (before: all eight after one 400-token step); with one 4000-token
//! prompt ahead of 15 short ones, the long one takes at least 128 tokens of every step and the short ones
//! finish one a step beside it.

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

/// Tokens past which a step that already completes a prompt takes no further prompt (policy 4): the CPU
/// kernels take eight tokens a call, so a step of 32 keeps them at full speed.
pub const PACK_TOKENS: usize = 32;

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
    // Whether some prompt reaches its end in this step.
    let mut completes = false;
    if let Some(&oldest) = prompts.iter().min_by_key(|&&i| (pending[i].arrived, i)) {
        let floor = (left / OLDEST_FLOOR_DIVISOR).max(1).min(left);
        take[oldest] = want(&pending[oldest]).min(floor);
        left -= take[oldest];
        completes = take[oldest] == pending[oldest].uncached;
    }
    prompts.sort_by_key(|&i| (pending[i].uncached, pending[i].arrived, i));
    for i in prompts {
        if completes && budget.tokens - left >= PACK_TOKENS {
            break;
        }
        let n = (want(&pending[i]) - take[i]).min(left);
        take[i] += n;
        left -= n;
        completes |= take[i] == pending[i].uncached;
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
    fn prompts_finish_one_per_step_shortest_first() {
        let budget = StepBudget {
            tokens: 512,
            prefill_chunk: 512,
        };
        // A long prompt first and fifteen short ones behind it: the long one takes its floor, the
        // shortest (first come) finishes, the rest wait for the next step.
        let mut waiting = vec![20; 15];
        waiting.insert(0, 4000);
        let take = plan_step(&pending(&waiting), budget);
        assert_eq!(take[..2], [128, 20]);
        assert_eq!(take[2..], [0; 14]);
        // Eight 50-token prompts arriving together finish one a step, first come first served.
        let mut uncached = vec![50; 8];
        for step in 0..8 {
            let take = plan_step(&pending(&uncached), budget);
            // Those already answered decode one token each.
            let mut expected = vec![0; 8];
            expected[..step].fill(1);
            expected[step] = 50;
            assert_eq!(take, expected, "step {step}");
            uncached[step] = 1;
        }
        // Tiny prompts share a step until it holds PACK_TOKENS.
        let take = plan_step(&pending(&[5; 20]), budget);
        assert_eq!(
            take.iter().filter(|&&t| t == 5).count(),
            PACK_TOKENS.div_ceil(5)
        );
        // Prompts that do not finish in this step fill the budget.
        let take = plan_step(&pending(&[3000, 2500]), budget);
        assert_eq!(take.iter().sum::<usize>(), 512);
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
        assert_eq!(take[18], 40, "the short prompt finishes");
        assert_eq!(take[16], 16, "the oldest prompt gets its floor: 64 / 4");
        assert_eq!(take[17], 0, "a prompt finished this step: the next waits");
        assert_eq!(take.iter().sum::<usize>(), 16 + 16 + 40);
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
