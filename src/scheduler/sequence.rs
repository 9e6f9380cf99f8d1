//! One request while the scheduler holds it: its tokens, KV lease, sampler, grammar and text streams.
//!
//! A sequence chooses its next token from a row of logits (steering a grammar-constrained answer to close
//! when the model wants to stop early, loops, or runs out of budget), then `accept`s it: the grammar
//! advances, the text and stop strings are scanned, the token is sent, and the sequence says whether it
//! has finished. It knows nothing of batches, blocks of other sequences or metrics.

use std::time::Instant;

use models::BlockLease;

use super::{Event, GenerationError, Submission, Usage};
use crate::engine::FinishReason;
use crate::engine::grammar::{Constraint, TokenMask};
use crate::engine::sampler::{PENALTY_WINDOW, SampledToken, Sampler, argmax};
use crate::engine::text_stream::{StopMatcher, StopScan, TextStream};
use crate::engine::tokenizer::Tokenizer;

/// One running (or re-queued) sequence.
pub(super) struct Sequence {
    pub submission: Submission,
    /// Prompt then generated tokens.
    pub tokens: Vec<u32>,
    /// Tokens whose keys and values are in the cache.
    pub cached: usize,
    pub lease: BlockLease,
    sampler: Sampler,
    pub constraint: Option<Constraint>,
    /// The model wanted to end inside an incomplete grammar: its output is being closed.
    closing: bool,
    text: TextStream,
    stops: StopMatcher,
    pub generated: usize,
    pub last_token_at: Option<Instant>,
    /// Prompt tokens found in the prefix cache at admission.
    pub prefix_hit: usize,
    /// Whether this sequence's prompt blocks are in the prefix cache.
    pub prompt_cached: bool,
}

impl Sequence {
    pub fn new(submission: Submission, lease: BlockLease) -> Self {
        let mut sampler = Sampler::new(submission.request.sampling.clone());
        let prompt = submission.request.prompt.clone();
        // Penalties see the prompt's tail, as if it had been generated.
        for &t in prompt.iter().rev().take(PENALTY_WINDOW).rev() {
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

    pub fn prompt_len(&self) -> usize {
        self.submission.request.prompt.len()
    }

    /// The client went away: its receiver is closed.
    pub fn cancelled(&self) -> bool {
        self.submission.events.is_closed()
    }

    /// Whether the next slice is rows of a prompt long enough for the dense path.
    pub fn prefills_densely(&self) -> bool {
        self.cached < self.prompt_len() && self.prompt_len() >= models::DENSE_MIN_PROMPT
    }

    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_len(),
            completion_tokens: self.generated,
            cached_tokens: self.prefix_hit,
        }
    }

    /// Samples the next token from `logits` among those `allowed` by the grammar's mask.
    pub fn choose(
        &mut self,
        logits: &[f32],
        allowed: Option<&TokenMask>,
        tokenizer: &Tokenizer,
    ) -> SampledToken {
        let steered: Vec<f32>;
        let logits = match (&self.constraint, allowed) {
            (Some(c), Some(mask)) => {
                // The model would end here but the grammar is not complete, or it is stuck repeating
                // itself: from now on, finish the value.
                let top = argmax(logits);
                let wants_end = tokenizer.is_end_of_generation(top) && !mask.allows(top);
                self.closing |= wants_end || is_looping(&self.tokens[self.prompt_len()..]);
                let max_tokens = self.submission.request.max_tokens;
                let remaining = max_tokens.saturating_sub(self.generated);
                if self.closing || remaining <= closing_window(max_tokens) {
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
        self.sampler.sample_allowed(logits, allowed)
    }

    /// Takes `token` as this sequence's next: advances the grammar, sends the token's text, and says why
    /// the sequence ends, if it does. A grammar that refuses the token is an error and nothing is sent.
    pub fn accept(
        &mut self,
        token: SampledToken,
        tokenizer: &Tokenizer,
        context: usize,
    ) -> Result<Option<FinishReason>, GenerationError> {
        let grammar_done = match self.constraint.as_mut() {
            Some(c) => {
                c.commit(token.id)?;
                c.is_finished()
            }
            None => false,
        };
        self.generated += 1;
        let request = &self.submission.request;
        // A constrained answer always ends at its end token: the grammar put it there.
        let is_end = tokenizer.is_end_of_generation(token.id)
            && (!request.ignore_eos || self.constraint.is_some());
        if is_end {
            self.send(Event::Token {
                text: String::new(),
                token,
            });
            return Ok(Some(FinishReason::Stop));
        }
        self.tokens.push(token.id);
        let piece = self.text.push(tokenizer, token.id);
        let (text, stopped) = match self.stops.push(&piece) {
            StopScan::Continue(text) => (text, false),
            StopScan::Stopped(text) => (text, true),
        };
        self.send(Event::Token { text, token });
        if stopped || grammar_done {
            return Ok(Some(FinishReason::Stop));
        }
        if self.generated >= self.submission.request.max_tokens || self.tokens.len() >= context {
            return Ok(Some(FinishReason::Length));
        }
        Ok(None)
    }

    /// Ends the request: `Done` with the text held back for stop strings, or `Failed`.
    pub fn finish(mut self, outcome: Result<FinishReason, GenerationError>) {
        let event = match outcome {
            Ok(finish) => Event::Done {
                finish,
                usage: self.usage(),
                text: self.stops.finish(),
            },
            Err(e) => Event::Failed(e),
        };
        self.send(event);
    }

    /// Sends one event; a client that went away is noticed at the next step, not here.
    pub fn send(&self, event: Event) {
        let _ = self.submission.events.send(event);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_short_cycles_repeated() {
        assert!(is_looping(&[7; 16]));
        assert!(!is_looping(&[7; 15]));
        let cycle: Vec<u32> = [1, 2, 3].iter().cycle().take(20).copied().collect();
        assert!(is_looping(&cycle));
        let varied: Vec<u32> = (0..40).collect();
        assert!(!is_looping(&varied));
    }

    #[test]
    fn the_closing_window_is_a_third_of_the_budget_within_bounds() {
        assert_eq!(closing_window(12), 8);
        assert_eq!(closing_window(90), 30);
        assert_eq!(closing_window(1000), 64);
    }
}
