//! What the scheduler needs of a model: one packed forward per step, the KV block allocator it runs
//! against, the tokenizer its text comes from. `Engine` is the real one; the tests drive the scheduler with
//! a small fake, so admission, preemption and eviction are tested without weights.

use models::{BlockPool, StepBatch};

use crate::engine::tokenizer::Tokenizer;
use crate::engine::{Engine, EngineError};

/// A model the scheduler can step.
pub trait StepModel {
    /// The allocator of this model's KV cache blocks.
    fn pool(&self) -> &BlockPool;
    /// Turns tokens into text and knows which tokens end a generation.
    fn tokenizer(&self) -> &Tokenizer;
    /// Rows of the token embedding: every prompt id must be below it.
    fn vocab_size(&self) -> usize;
    /// Most positions one sequence may hold.
    fn context_size(&self) -> usize;
    /// One packed forward: one row of logits per `batch.logit_rows()`.
    fn step_logits(&mut self, batch: &StepBatch) -> Result<Vec<Vec<f32>>, EngineError>;
    /// Copies the first `count` positions of one KV block into another.
    fn copy_kv_positions(&mut self, src: u32, dst: u32, count: usize) -> Result<(), EngineError>;
    /// A pooled embedding of `tokens`.
    fn embed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError>;
}

impl StepModel for Engine {
    fn pool(&self) -> &BlockPool {
        Engine::pool(self)
    }

    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn vocab_size(&self) -> usize {
        self.info().vocab_size
    }

    fn context_size(&self) -> usize {
        Engine::context_size(self)
    }

    fn step_logits(&mut self, batch: &StepBatch) -> Result<Vec<Vec<f32>>, EngineError> {
        Ok(self.step(batch)?.to_vec2::<f32>()?)
    }

    fn copy_kv_positions(&mut self, src: u32, dst: u32, count: usize) -> Result<(), EngineError> {
        Engine::copy_kv_positions(self, src, dst, count)
    }

    fn embed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        Engine::embed(self, tokens)
    }
}
