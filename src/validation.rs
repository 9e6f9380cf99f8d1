//! Request validation, before the queue: API parameters become a typed `ValidRequest`, checked and clamped,
//! with errors that name the parameter. The scheduler only ever sees requests that passed here.

use std::collections::HashMap;

use crate::engine::sampler::SamplingParams;
use crate::scheduler::ValidRequest;

/// Most alternatives a client may ask for with each token, as OpenAI allows.
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most stop strings, as OpenAI allows.
pub const MAX_STOP_STRINGS: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ValidationError {
    #[error("{message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    #[error(
        "This model's maximum context length is {context} tokens. However, you requested {} tokens ({prompt} in the prompt, {completion} for the completion). Please reduce the length of the prompt or of max_tokens.",
        prompt + completion
    )]
    ContextOverflow {
        prompt: usize,
        completion: usize,
        context: usize,
    },
}

impl ValidationError {
    pub fn param(&self) -> Option<&'static str> {
        match self {
            ValidationError::Invalid { param, .. } => Some(param),
            ValidationError::ContextOverflow { .. } => Some("messages"),
        }
    }

    fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        ValidationError::Invalid {
            param,
            message: message.into(),
        }
    }
}

/// Generation parameters common to every API shape (OpenAI chat and completions, Ollama), unchecked.
#[derive(Debug, Clone, Default)]
pub struct GenerationParams {
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Vec<String>,
    pub logit_bias: Option<HashMap<String, f64>>,
    /// Some(n): report logprobs with n alternatives.
    pub top_logprobs: Option<i64>,
    pub ignore_eos: bool,
}

fn in_range(
    param: &'static str,
    value: Option<f64>,
    low: f64,
    high: f64,
) -> Result<Option<f32>, ValidationError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && (low..=high).contains(&v) => Ok(Some(v as f32)),
        Some(v) => Err(ValidationError::invalid(
            param,
            format!("{v} is not a valid value for '{param}': it must be between {low} and {high}"),
        )),
    }
}

/// Checks `params` for a prompt of `prompt` tokens on a model with `vocab_size` tokens and `context` positions.
pub fn validate(
    prompt: Vec<u32>,
    params: &GenerationParams,
    vocab_size: usize,
    context: usize,
) -> Result<ValidRequest, ValidationError> {
    if prompt.is_empty() {
        return Err(ValidationError::invalid("prompt", "the prompt is empty"));
    }
    let defaults = SamplingParams::default();
    let temperature = in_range("temperature", params.temperature, 0.0, 2.0)?;
    let top_p = in_range("top_p", params.top_p, 0.0, 1.0)?;
    let min_p = in_range("min_p", params.min_p, 0.0, 1.0)?;
    let presence_penalty = in_range("presence_penalty", params.presence_penalty, -2.0, 2.0)?;
    let frequency_penalty = in_range("frequency_penalty", params.frequency_penalty, -2.0, 2.0)?;
    let repetition_penalty = in_range("repetition_penalty", params.repetition_penalty, 0.0, 10.0)?;
    let top_k = match params.top_k {
        None => defaults.top_k,
        Some(k) if k >= 0 => k as usize,
        Some(k) => {
            return Err(ValidationError::invalid(
                "top_k",
                format!("top_k must be 0 or more, got {k}"),
            ));
        }
    };
    let seed = params.seed.map(|s| s as u64);
    let top_logprobs = match params.top_logprobs {
        None => None,
        Some(n) if (0..=MAX_TOP_LOGPROBS as i64).contains(&n) => Some(n as usize),
        Some(n) => {
            return Err(ValidationError::invalid(
                "top_logprobs",
                format!("top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {n}"),
            ));
        }
    };
    if params.stop.len() > MAX_STOP_STRINGS {
        return Err(ValidationError::invalid(
            "stop",
            format!(
                "at most {MAX_STOP_STRINGS} stop sequences are allowed, got {}",
                params.stop.len()
            ),
        ));
    }
    let mut logit_bias = Vec::new();
    for (token, bias) in params.logit_bias.iter().flatten() {
        let id: u32 = token
            .parse()
            .ok()
            .filter(|id| (*id as usize) < vocab_size)
            .ok_or_else(|| {
                ValidationError::invalid(
                    "logit_bias",
                    format!("{token:?} is not a token id of this model"),
                )
            })?;
        if !(-100.0..=100.0).contains(bias) {
            return Err(ValidationError::invalid(
                "logit_bias",
                format!("bias {bias} for token {id} is outside -100..100"),
            ));
        }
        logit_bias.push((id, *bias as f32));
    }
    let available = context.saturating_sub(prompt.len());
    let max_tokens = match params.max_tokens {
        Some(n) if n < 1 => {
            return Err(ValidationError::invalid(
                "max_tokens",
                format!("max_tokens must be at least 1, got {n}"),
            ));
        }
        Some(n) if n as usize > available => {
            return Err(ValidationError::ContextOverflow {
                prompt: prompt.len(),
                completion: n as usize,
                context,
            });
        }
        Some(n) => n as usize,
        None if available == 0 => {
            return Err(ValidationError::ContextOverflow {
                prompt: prompt.len(),
                completion: 1,
                context,
            });
        }
        None => available,
    };
    Ok(ValidRequest {
        prompt,
        sampling: SamplingParams {
            temperature: temperature.unwrap_or(defaults.temperature),
            top_k,
            top_p: top_p.unwrap_or(defaults.top_p),
            min_p: min_p.unwrap_or(defaults.min_p),
            repetition_penalty: repetition_penalty.unwrap_or(defaults.repetition_penalty),
            presence_penalty: presence_penalty.unwrap_or(0.0),
            frequency_penalty: frequency_penalty.unwrap_or(0.0),
            logit_bias,
            seed,
            top_logprobs,
        },
        max_tokens,
        stop: params.stop.clone(),
        ignore_eos: params.ignore_eos,
        constraint: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_parameters_are_named() {
        let bad = GenerationParams {
            temperature: Some(3.0),
            ..Default::default()
        };
        let err = validate(vec![1], &bad, 10, 100).unwrap_err();
        assert_eq!(err.param(), Some("temperature"));
        let bad = GenerationParams {
            max_tokens: Some(-1),
            ..Default::default()
        };
        assert_eq!(
            validate(vec![1], &bad, 10, 100).unwrap_err().param(),
            Some("max_tokens")
        );
        let bad = GenerationParams {
            logit_bias: Some(HashMap::from([("99".to_string(), 1.0)])),
            ..Default::default()
        };
        assert_eq!(
            validate(vec![1], &bad, 10, 100).unwrap_err().param(),
            Some("logit_bias")
        );
    }

    #[test]
    fn context_overflow_says_how_many_tokens_and_the_limit() {
        let params = GenerationParams {
            max_tokens: Some(60),
            ..Default::default()
        };
        let err = validate(vec![1; 50], &params, 10, 100).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("100 tokens") && text.contains("110 tokens"),
            "{text}"
        );
        let full = validate(vec![1; 100], &GenerationParams::default(), 10, 100);
        assert!(matches!(full, Err(ValidationError::ContextOverflow { .. })));
    }

    #[test]
    fn max_tokens_defaults_to_the_rest_of_the_context() {
        let valid = validate(vec![1; 30], &GenerationParams::default(), 10, 100).unwrap();
        assert_eq!(valid.max_tokens, 70);
    }
}
