//! The packed batch one forward step runs over: the new tokens of many sequences, concatenated.
//!
//! Each token carries its own position; each sequence carries its own block table into the paged KV cache.
//! Linear layers see one `[tokens, hidden]` matrix for the whole batch, so weights are read once per step
//! however many sequences share it; attention alone works per sequence.

/// Which logits a sequence needs from this step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    /// None: an intermediate chunk of a long prompt.
    None,
    /// The last token's: decoding, or the end of a prompt.
    Last,
    /// Every token's: prompt logprobs or echo.
    All,
}

/// Prompts at least this long go through dense weights (shorter ones are faster quantized).
pub const DENSE_MIN_PROMPT: usize = 64;

/// One sequence's share of a step.
#[derive(Debug, Clone)]
pub struct SequenceSlice {
    /// Index of this sequence's first token in `StepBatch::tokens`.
    pub token_start: usize,
    /// How many new tokens this sequence brings.
    pub len: usize,
    /// Tokens already in this sequence's cache: the first new token sits at this position.
    pub cached: usize,
    /// The cache blocks holding positions `0..cached + len`, in order.
    pub block_table: Vec<u32>,
    pub logits: LogitsWanted,
    /// Prompt rows of a long prompt: they go through dense weights where the model keeps them.
    pub dense: bool,
}

impl SequenceSlice {
    pub fn tokens(&self) -> std::ops::Range<usize> {
        self.token_start..self.token_start + self.len
    }
}

/// The input of one forward step.
#[derive(Debug, Clone, Default)]
pub struct StepBatch {
    pub tokens: Vec<u32>,
    pub positions: Vec<u32>,
    pub sequences: Vec<SequenceSlice>,
}

impl StepBatch {
    /// Appends a sequence's new tokens; they take positions `cached..cached + tokens.len()`.
    pub fn push(
        &mut self,
        tokens: &[u32],
        cached: usize,
        block_table: Vec<u32>,
        logits: LogitsWanted,
    ) {
        let token_start = self.tokens.len();
        self.tokens.extend_from_slice(tokens);
        self.positions
            .extend((cached..cached + tokens.len()).map(|p| p as u32));
        self.sequences.push(SequenceSlice {
            token_start,
            len: tokens.len(),
            cached,
            block_table,
            logits,
            dense: false,
        });
    }

    /// A whole prompt from position 0 in one step (benchmarks, tests).
    pub fn prefill(prompt: &[u32], block_table: Vec<u32>, logits: LogitsWanted) -> Self {
        let mut batch = Self::default();
        batch.push_prompt(prompt, 0, prompt.len(), block_table, logits);
        batch
    }

    /// One new token per sequence: `(token, position, block_table)` each, logits of every one wanted.
    pub fn decode(rows: impl IntoIterator<Item = (u32, usize, Vec<u32>)>) -> Self {
        let mut batch = Self::default();
        for (token, position, block_table) in rows {
            batch.push(&[token], position, block_table, LogitsWanted::Last);
        }
        batch
    }

    /// Appends a chunk of a prompt of `prompt_len` tokens (or of a recompute that starts inside the prompt):
    /// its rows are dense when the prompt is long enough for one GEMM to beat per-row quantized products.
    /// Decided by the whole prompt's length, not the chunk's, so that chunking never changes a sequence's
    /// numbers. Dense slices must come after every other slice of the batch (see `dense_from`).
    pub fn push_prompt(
        &mut self,
        tokens: &[u32],
        cached: usize,
        prompt_len: usize,
        block_table: Vec<u32>,
        logits: LogitsWanted,
    ) {
        self.push(tokens, cached, block_table, logits);
        if let Some(last) = self.sequences.last_mut() {
            last.dense = prompt_len >= DENSE_MIN_PROMPT;
        }
    }

    /// The first dense row: every slice from the first one marked dense on. Callers push the other slices
    /// first, so rows below this take the quantized path.
    pub fn dense_from(&self) -> usize {
        self.sequences
            .iter()
            .find(|s| s.dense)
            .map_or(self.tokens.len(), |s| s.token_start)
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The rows of the packed batch whose logits are wanted, in sequence order.
    pub fn logit_rows(&self) -> Vec<u32> {
        let mut rows = Vec::new();
        for s in &self.sequences {
            match s.logits {
                LogitsWanted::None => {}
                LogitsWanted::Last => rows.push((s.token_start + s.len - 1) as u32),
                LogitsWanted::All => rows.extend(s.tokens().map(|t| t as u32)),
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_place_tokens_at_their_positions_and_mark_long_prompts_dense() {
        let long: Vec<u32> = (0..DENSE_MIN_PROMPT as u32).collect();
        let batch = StepBatch::prefill(&long, vec![0, 1, 2, 3], LogitsWanted::Last);
        assert!(batch.sequences[0].dense);
        assert_eq!(batch.dense_from(), 0);
        assert_eq!(batch.logit_rows(), [DENSE_MIN_PROMPT as u32 - 1]);
        assert!(!StepBatch::prefill(&[1, 2], vec![0], LogitsWanted::Last).sequences[0].dense);
        // A chunk is dense by the whole prompt's length, not its own.
        let mut chunked = StepBatch::default();
        chunked.push_prompt(&long[..8], 0, long.len(), vec![0], LogitsWanted::None);
        assert!(chunked.sequences[0].dense);
        let decode = StepBatch::decode([(7, 10, vec![0]), (9, 3, vec![1])]);
        assert_eq!(decode.tokens, [7, 9]);
        assert_eq!(decode.positions, [10, 3]);
        assert_eq!(decode.logit_rows(), [0, 1]);
        assert_eq!(decode.dense_from(), 2, "decodes are never dense");
    }
}
