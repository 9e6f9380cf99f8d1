//! A model's pooled output for one input. An encoder pools as its file says (`models::bert`): mean, first
//! or last row L2-normalised as llama.cpp's server normalises embeddings, or, for a reranker, the
//! classifier's raw scores. A causal model embeds by its file's `<arch>.pooling_type` (Qwen3-Embedding:
//! the last token's final hidden state), or else by the mean of its final hidden states (llama.cpp's
//! `--pooling mean`), L2-normalised. A causal reranker (Qwen3-Reranker: rank pooling) puts its last
//! token's final hidden state through its classifier (`cls.output`, the "yes" and "no" rows of its output
//! head) and a softmax, as llama.cpp does for qwen3: the first output is the probability of "yes". The scheduler runs one between steps; the pooling itself lives here,
//! beside the forward it reads, so that the scheduler only ever sees a finished vector.

use models::bert::Pooling;
use models::{LogitsWanted, Model};

use super::{Engine, EngineError, PREFILL_CHUNK};

impl Engine {
    /// The pooled output of `tokens`, which must fit the context: a unit-length embedding, or a
    /// reranker's scores (`Pooling::Rank`, one per classifier label, not normalised).
    pub fn embed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        if tokens.is_empty() || tokens.len() > self.context_size() {
            return Err(EngineError::ContextOverflow {
                prompt: tokens.len(),
                context: self.context_size(),
            });
        }
        if let Model::Encoder(encoder) = &self.model {
            let pooled = encoder.pooled(tokens)?;
            return Ok(match encoder.pooling() {
                Pooling::Rank => pooled,
                _ => normalized(pooled),
            });
        }
        let pooling = self.decoder_pooling.unwrap_or(Pooling::Mean);
        let mut lease = self.pool().lease();
        lease.reserve(tokens.len())?;
        let mut sum: Vec<f32> = Vec::new();
        let chunks = tokens.len().div_ceil(PREFILL_CHUNK);
        for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
            let mut batch = models::StepBatch::default();
            batch.push_prompt(
                chunk,
                i * PREFILL_CHUNK,
                tokens.len(),
                lease.blocks().to_vec(),
                LogitsWanted::None,
            );
            let states = self.hidden_states(&batch)?;
            let hidden = match pooling {
                Pooling::Cls if i == 0 => states.get(0)?.to_vec1::<f32>()?,
                Pooling::Last if i + 1 == chunks => {
                    states.get(chunk.len() - 1)?.to_vec1::<f32>()?
                }
                Pooling::Rank if i + 1 == chunks => {
                    let last = states.narrow(0, chunk.len() - 1, 1)?;
                    return self.rank(&last);
                }
                // Every chunk must still run: later positions attend to the cache it writes.
                Pooling::Cls | Pooling::Last | Pooling::Rank => continue,
                _ => states.sum(0)?.to_vec1::<f32>()?,
            };
            if sum.is_empty() {
                sum = hidden;
            } else {
                sum.iter_mut().zip(&hidden).for_each(|(s, h)| *s += h);
            }
        }
        Ok(normalized(sum))
    }
}

impl Engine {
    /// A causal reranker's scores for its last hidden state `[1, hidden]`: the classifier's logits
    /// through a softmax.
    fn rank(&self, last: &candle_core::Tensor) -> Result<Vec<f32>, EngineError> {
        let head = self.rank_head.as_ref().ok_or_else(|| {
            EngineError::Model(models::ModelError::MissingTensor(
                "cls.output.weight".into(),
            ))
        })?;
        let logits = head.forward(last, 0)?.get(0)?.to_vec1::<f32>()?;
        Ok(softmax(logits))
    }
}

/// `exp(x - max)` over its sum, as ggml's `soft_max`.
fn softmax(logits: Vec<f32>) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// `v` scaled to unit length (a zero vector stays zero).
fn normalized(v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.into_iter().map(|x| x / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_scores_are_a_probability_distribution() {
        let p = softmax(vec![2.0, 0.0]);
        assert!((p[0] + p[1] - 1.0).abs() < 1e-6);
        assert!((p[0] - 1.0 / (1.0 + (-2f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn pooled_vectors_have_unit_length_and_zero_stays_zero() {
        assert_eq!(normalized(vec![3.0, 4.0]), [0.6, 0.8]);
        assert_eq!(normalized(vec![0.0, 0.0]), [0.0, 0.0]);
    }
}
