//! Request validation, before the queue: API parameters become typed values, checked and clamped, with
//! errors that name the parameter. It runs in two steps, both before the scheduler: `check` turns the
//! parameters into `ValidParams` before anything renders or compiles, and `ValidParams::request` takes the
//! rendered prompt and the compiled constraint as inputs and checks them against the context. The
//! request-shape checks that every API shares (`n`, roles, logprobs, `suffix`, prompt ids) live here too.
//! The scheduler only ever sees requests that passed here.

use std::collections::HashMap;

use crate::engine::grammar::Constraint;
use crate::engine::sampler::SamplingParams;
use crate::scheduler::ValidRequest;

/// Most alternatives a client may ask for with each token, as OpenAI allows.
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most stop strings, as OpenAI allows.
pub const MAX_STOP_STRINGS: usize = 4;
/// Most choices per request.
pub const MAX_CHOICES: i64 = 8;
/// The roles a chat message may have (`developer` is OpenAI's newer name for `system`).
pub const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ValidationError {
    #[error("{message}")]
    Invalid { param: String, message: String },
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
    /// The request field at fault, as OpenAI's `param`.
    pub fn param(&self) -> Option<&str> {
        match self {
            ValidationError::Invalid { param, .. } => Some(param),
            ValidationError::ContextOverflow { .. } => Some("messages"),
        }
    }

    /// An invalid value of `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError::Invalid {
            param: param.into(),
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
    /// The context this request may use (Ollama's `num_ctx`), within the model's own.
    pub context_size: Option<i64>,
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

/// Generation parameters checked against a model, waiting for their prompt.
#[derive(Debug, Clone)]
pub struct ValidParams {
    sampling: SamplingParams,
    /// As asked; checked against the context once the prompt's length is known.
    max_tokens: Option<usize>,
    stop: Vec<String>,
    ignore_eos: bool,
    /// The request's own context limit, if it set one below the model's.
    context_limit: Option<usize>,
}

/// Checks `params` for a model with `vocab_size` tokens: everything that does not depend on the prompt.
pub fn check(params: &GenerationParams, vocab_size: usize) -> Result<ValidParams, ValidationError> {
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
    let max_tokens = match params.max_tokens {
        Some(n) if n < 1 => {
            return Err(ValidationError::invalid(
                "max_tokens",
                format!("max_tokens must be at least 1, got {n}"),
            ));
        }
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => None,
    };
    let context_limit = match params.context_size {
        Some(n) if n < 1 => {
            return Err(ValidationError::invalid(
                "num_ctx",
                format!("num_ctx must be at least 1, got {n}"),
            ));
        }
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => None,
    };
    Ok(ValidParams {
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
        context_limit,
    })
}

impl ValidParams {
    /// The request for `prompt` under `constraint` on a model of `context` positions: the prompt must
    /// not be empty, and it and the completion must fit the context, or the request's own smaller one
    /// (`max_tokens` defaults to the rest).
    pub fn request(
        &self,
        prompt: Vec<u32>,
        constraint: Option<Constraint>,
        context: usize,
    ) -> Result<ValidRequest, ValidationError> {
        if prompt.is_empty() {
            return Err(ValidationError::invalid("prompt", "the prompt is empty"));
        }
        let context = self
            .context_limit
            .map_or(context, |limit| limit.min(context));
        let available = context.saturating_sub(prompt.len());
        let max_tokens = match self.max_tokens {
            Some(n) if n > available => {
                return Err(ValidationError::ContextOverflow {
                    prompt: prompt.len(),
                    completion: n,
                    context,
                });
            }
            Some(n) => n,
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
            sampling: self.sampling.clone(),
            max_tokens,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            constraint,
        })
    }
}

/// Checks `params` and `prompt` together, for callers that have their prompt already.
pub fn validate(
    prompt: Vec<u32>,
    constraint: Option<Constraint>,
    params: &GenerationParams,
    vocab_size: usize,
    context: usize,
) -> Result<ValidRequest, ValidationError> {
    check(params, vocab_size)?.request(prompt, constraint, context)
}

/// `n`, the number of choices: 1 when absent.
pub fn choices(n: Option<i64>) -> Result<usize, ValidationError> {
    match n {
        None => Ok(1),
        Some(n) if (1..=MAX_CHOICES).contains(&n) => Ok(n as usize),
        Some(n) => Err(ValidationError::invalid(
            "n",
            format!("n must be between 1 and {MAX_CHOICES}, got {n}"),
        )),
    }
}

/// The role of message `index`, checked; `developer` becomes `system`, which every template knows.
pub fn role(index: usize, role: String) -> Result<String, ValidationError> {
    if !ROLES.contains(&role.as_str()) {
        return Err(ValidationError::invalid(
            format!("messages[{index}].role"),
            format!(
                "messages[{index}].role {role:?} is not one of system, developer, user, assistant, tool"
            ),
        ));
    }
    Ok(if role == "developer" {
        "system".to_string()
    } else {
        role
    })
}

/// OpenAI chat's `logprobs` and `top_logprobs`: the alternatives to report per token, if any.
pub fn chat_logprobs(
    logprobs: Option<bool>,
    top_logprobs: Option<i64>,
) -> Result<Option<i64>, ValidationError> {
    let wanted = logprobs.unwrap_or(false);
    if top_logprobs.is_some() && !wanted {
        return Err(ValidationError::invalid(
            "top_logprobs",
            "top_logprobs requires logprobs to be true",
        ));
    }
    Ok(wanted.then(|| top_logprobs.unwrap_or(0)))
}

/// A chat the server loops over MCP tools: one choice, no logprobs, no output format (the loop reads
/// every answer for calls).
pub fn mcp_loop(
    choices: usize,
    logprobs: Option<bool>,
    has_output_format: bool,
) -> Result<(), ValidationError> {
    if choices != 1 {
        return Err(ValidationError::invalid("n", "n must be 1 with MCP tools"));
    }
    if logprobs == Some(true) {
        return Err(ValidationError::invalid(
            "logprobs",
            "logprobs are not returned with MCP tools",
        ));
    }
    if has_output_format {
        return Err(ValidationError::invalid(
            "response_format",
            "response_format cannot be combined with MCP tools",
        ));
    }
    Ok(())
}

/// Completions' `suffix` (fill-in-the-middle) and `best_of`, neither of which this server does.
pub fn completion_extras(
    suffix: Option<&str>,
    best_of: Option<i64>,
) -> Result<(), ValidationError> {
    if suffix.is_some_and(|s| !s.is_empty()) {
        return Err(ValidationError::invalid(
            "suffix",
            "suffix is not supported: this server does not do fill-in-the-middle",
        ));
    }
    if best_of.is_some_and(|b| b != 1) {
        return Err(ValidationError::invalid(
            "best_of",
            "best_of is not supported",
        ));
    }
    Ok(())
}

/// A list of prompts: at least one.
pub fn prompt_count(count: usize) -> Result<(), ValidationError> {
    if count == 0 {
        return Err(ValidationError::invalid(
            "prompt",
            "prompt must not be empty",
        ));
    }
    Ok(())
}

/// A prompt given as token ids: every id in the model's vocabulary.
pub fn prompt_ids(ids: &[u32], vocab_size: usize) -> Result<(), ValidationError> {
    if ids.iter().any(|&id| id as usize >= vocab_size) {
        return Err(ValidationError::invalid(
            "prompt",
            "prompt holds a token id outside the vocabulary",
        ));
    }
    Ok(())
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
        let err = validate(vec![1], None, &bad, 10, 100).unwrap_err();
        assert_eq!(err.param(), Some("temperature"));
        let bad = GenerationParams {
            max_tokens: Some(-1),
            ..Default::default()
        };
        assert_eq!(
            validate(vec![1], None, &bad, 10, 100).unwrap_err().param(),
            Some("max_tokens")
        );
        let bad = GenerationParams {
            logit_bias: Some(HashMap::from([("99".to_string(), 1.0)])),
            ..Default::default()
        };
        assert_eq!(
            validate(vec![1], None, &bad, 10, 100).unwrap_err().param(),
            Some("logit_bias")
        );
    }

    #[test]
    fn a_request_context_limit_narrows_the_models_and_never_widens_it() {
        let within = |n: i64| GenerationParams {
            context_size: Some(n),
            ..Default::default()
        };
        let request = validate(vec![1; 10], None, &within(32), 10, 100).unwrap();
        assert_eq!(request.max_tokens, 22, "the rest of num_ctx");
        let request = validate(vec![1; 10], None, &within(1000), 10, 100).unwrap();
        assert_eq!(
            request.max_tokens, 90,
            "the model's context still bounds it"
        );
        assert!(matches!(
            validate(vec![1; 10], None, &within(8), 10, 100),
            Err(ValidationError::ContextOverflow { context: 8, .. })
        ));
        assert_eq!(
            validate(vec![1], None, &within(0), 10, 100)
                .unwrap_err()
                .param(),
            Some("num_ctx")
        );
    }

    #[test]
    fn context_overflow_says_how_many_tokens_and_the_limit() {
        let params = GenerationParams {
            max_tokens: Some(60),
            ..Default::default()
        };
        let err = validate(vec![1; 50], None, &params, 10, 100).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("100 tokens") && text.contains("110 tokens"),
            "{text}"
        );
        let full = validate(vec![1; 100], None, &GenerationParams::default(), 10, 100);
        assert!(matches!(full, Err(ValidationError::ContextOverflow { .. })));
    }

    #[test]
    fn max_tokens_defaults_to_the_rest_of_the_context() {
        let valid = validate(vec![1; 30], None, &GenerationParams::default(), 10, 100).unwrap();
        assert_eq!(valid.max_tokens, 70);
    }

    #[test]
    fn parameters_are_checked_before_there_is_a_prompt() {
        // An out-of-range parameter fails without any prompt, and so before anything renders.
        let bad = GenerationParams {
            top_p: Some(1.5),
            ..Default::default()
        };
        assert_eq!(check(&bad, 10).unwrap_err().param(), Some("top_p"));
        let valid = check(&GenerationParams::default(), 10).unwrap();
        assert!(matches!(
            valid.request(Vec::new(), None, 100),
            Err(ValidationError::Invalid { .. })
        ));
        assert_eq!(
            valid.request(vec![1; 10], None, 100).unwrap().max_tokens,
            90
        );
    }

    #[test]
    fn request_shape_checks_name_their_field() {
        assert_eq!(choices(None), Ok(1));
        assert_eq!(choices(Some(9)).unwrap_err().param(), Some("n"));
        assert_eq!(role(0, "developer".into()), Ok("system".to_string()));
        assert_eq!(
            role(2, "wizard".into()).unwrap_err().param(),
            Some("messages[2].role")
        );
        assert_eq!(chat_logprobs(Some(true), None), Ok(Some(0)));
        assert_eq!(chat_logprobs(None, None), Ok(None));
        assert_eq!(
            chat_logprobs(None, Some(3)).unwrap_err().param(),
            Some("top_logprobs")
        );
        assert_eq!(
            completion_extras(Some("x"), None).unwrap_err().param(),
            Some("suffix")
        );
        assert!(completion_extras(Some(""), Some(1)).is_ok());
        assert_eq!(prompt_count(0).unwrap_err().param(), Some("prompt"));
        assert_eq!(
            prompt_ids(&[1, 10], 10).unwrap_err().param(),
            Some("prompt")
        );
        assert!(prompt_ids(&[0, 9], 10).is_ok());
        assert_eq!(mcp_loop(2, None, false).unwrap_err().param(), Some("n"));
        assert_eq!(
            mcp_loop(1, Some(true), false).unwrap_err().param(),
            Some("logprobs")
        );
        assert_eq!(
            mcp_loop(1, None, true).unwrap_err().param(),
            Some("response_format")
        );
        assert!(mcp_loop(1, Some(false), false).is_ok());
    }
}
