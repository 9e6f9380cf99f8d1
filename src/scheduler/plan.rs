//! Choosing what one step runs: a pure function of the running sequences and the step's token budget,
//! unit-tested without a model.
//!
//! Decodes go first (one token each, so a long prompt never stalls them), then prompt chunks in arrival
//! order, each at most `prefill_chunk` tokens, until the budget is spent (chunked prefill).

/// What the planner needs to know of one running sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Tokens known but not yet in the KV cache (1 for a decoding sequence, more while prefilling).
    pub uncached: usize,
}

/// Limits of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepBudget {
    /// Most tokens one forward pass takes in all.
    pub tokens: usize,
    /// Most prompt tokens one sequence brings to one step.
    pub prefill_chunk: usize,
}

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
    for (i, p) in pending.iter().enumerate() {
        if p.uncached > 1 && left > 0 {
            let n = p.uncached.min(budget.prefill_chunk).min(left);
            take[i] = n;
            left -= n;
        }
    }
    take
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(uncached: &[usize]) -> Vec<Pending> {
        uncached.iter().map(|&u| Pending { uncached: u }).collect()
    }

    #[test]
    fn decodes_run_before_prefills_and_prefills_are_chunked() {
        let budget = StepBudget {
            tokens: 100,
            prefill_chunk: 64,
        };
        assert_eq!(plan_step(&pending(&[500, 1, 1]), budget), [64, 1, 1]);
        assert_eq!(plan_step(&pending(&[500, 300, 1]), budget), [64, 35, 1]);
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
}
