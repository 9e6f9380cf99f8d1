//! What can end a request once it reached the scheduler, typed so that the API layer maps each kind to its
//! status in one table. Clone, because one failed step fails every sequence that was in it.

use std::sync::Arc;

use crate::engine::EngineError;
use crate::engine::grammar::GrammarError;

/// Why a request's generation (or embedding) failed; carried by `Event::Failed`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GenerationError {
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// The prompt needs more KV positions than the whole cache has: it could never be admitted.
    #[error(
        "the prompt needs {needed} KV cache positions, the cache has {capacity} (raise --kv-cache-blocks)"
    )]
    NeverFits { needed: usize, capacity: usize },
    /// The model failed: a forward step (every sequence in it fails alike) or an embedding.
    #[error("{0}")]
    Model(Arc<EngineError>),
    /// The sequence's grammar could not compute its mask or accept the sampled token.
    #[error("{0}")]
    Grammar(Arc<GrammarError>),
}

impl From<EngineError> for GenerationError {
    fn from(e: EngineError) -> Self {
        GenerationError::Model(Arc::new(e))
    }
}

impl From<GrammarError> for GenerationError {
    fn from(e: GrammarError) -> Self {
        GenerationError::Grammar(Arc::new(e))
    }
}

/// Why the scheduler itself failed a request.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SchedulerError {
    #[error("the prompt holds token id {token}, outside the model's vocabulary of {vocab} tokens")]
    TokenOutOfVocabulary { token: u32, vocab: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the model failed during a step and was unloaded ({0}); the next request reloads it")]
    Panicked(String),
}

/// Why a request was refused at submission.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the server is busy: {waiting} requests are waiting already")]
    QueueFull { waiting: usize },
    #[error("the model's scheduler has stopped")]
    Stopped,
}

/// Checks that `tokens` is not empty and every id is below `vocab`: one bad id would fail a whole step.
pub(super) fn check_tokens(tokens: &[u32], vocab: usize) -> Result<(), SchedulerError> {
    if tokens.is_empty() {
        return Err(SchedulerError::EmptyPrompt);
    }
    match tokens.iter().find(|&&t| t as usize >= vocab) {
        Some(&token) => Err(SchedulerError::TokenOutOfVocabulary { token, vocab }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
