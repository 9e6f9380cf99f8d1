//! A server's `sampling/createMessage` requests, answered by a local model when the server's config
//! names one (`"sampling": {"model": ..., "maxTokens": ...}`; off by default, and then the gateway does
//! not even advertise sampling to the server). The request's text messages and system prompt become a
//! chat for the runner's pipeline through a `Sampler`, with the request's `temperature` and
//! `stopSequences`; the answer is capped at the request's `maxTokens` and at the config's, and bounded
//! by the server's call timeout; its `stopReason` says whether it ended at that cap. Images, audio and
//! tool use are refused.

// rmcp marks sampling deprecated (SEP-2577, for protocol 2026-07-28); the servers this gateway speaks to
// (up to 2025-11-25) still ask for it.
#![allow(deprecated)]

use futures::future::BoxFuture;
use rmcp::ErrorData;
use rmcp::model::{
    CreateMessageRequestParams, CreateMessageResult, Role, SamplingMessage,
    SamplingMessageContentBlock,
};

use super::Upstream;

/// How a local model generates one answer: the `chat` tool's and sampling requests' parameters (the
/// chat pipeline validates them as it does an API request's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnswerOptions {
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub stop: Vec<String>,
}

/// One answer of a local model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalAnswer {
    pub text: String,
    /// Whether it ended at the token limit (else the model, or a stop sequence, ended it).
    pub hit_limit: bool,
}

/// What answers sampling requests: the runner's chat pipeline, registered by the gateway.
pub trait Sampler: Send + Sync + 'static {
    /// One answer of `model` to `messages` (`role`, `content` pairs), generated as `options` say.
    fn sample(
        &self,
        model: String,
        messages: Vec<(String, String)>,
        options: AnswerOptions,
    ) -> BoxFuture<'static, Result<LocalAnswer, SamplingError>>;
}

/// Why a sampling request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    /// No transport has registered the runner's models (a gateway without `/mcp` or `model mcp`).
    #[error("no local model can answer here")]
    NoModels,
    /// The local model refused or failed (its message).
    #[error("the local model failed: {0}")]
    Model(String),
}

impl Upstream {
    /// Answers one sampling request of the server, or refuses it with an MCP error.
    pub(super) async fn sample(
        &self,
        params: CreateMessageRequestParams,
    ) -> Result<CreateMessageResult, ErrorData> {
        let Some(policy) = &self.config.sampling else {
            return Err(ErrorData::invalid_request(
                "this gateway does not answer sampling requests from this server",
                None,
            ));
        };
        let messages = conversation(&params)?;
        let options = options(&params, policy.max_tokens);
        // One line in the call log: a server asking the local model is an outside caller of it.
        let line = serde_json::json!({
            "event": "mcp_sampling",
            "server": self.config.name,
            "model": policy.model,
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "stop_sequences": options.stop.len(),
            "messages": messages.len(),
        });
        tracing::info!(target: "model_runner::mcp::calls", "{line}");
        let answer = tokio::time::timeout(
            self.config.call_timeout,
            self.sampler.sample(policy.model.clone(), messages, options),
        )
        .await
        .map_err(|_| ErrorData::internal_error("the local model did not answer in time", None))?
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let stop_reason = if answer.hit_limit {
            CreateMessageResult::STOP_REASON_END_MAX_TOKEN
        } else {
            CreateMessageResult::STOP_REASON_END_TURN
        };
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text(answer.text),
            policy.model.clone(),
        )
        .with_stop_reason(stop_reason))
    }
}

/// The request's generation parameters: its `maxTokens` capped at `cap` (the config's), its
/// `temperature` and `stopSequences` as asked.
fn options(params: &CreateMessageRequestParams, cap: u32) -> AnswerOptions {
    AnswerOptions {
        max_tokens: Some(i64::from(params.max_tokens.clamp(1, cap))),
        temperature: params.temperature.map(f64::from),
        stop: params.stop_sequences.clone().unwrap_or_default(),
    }
}

/// The request as chat messages: the system prompt first, then each message's text (a message of
/// several text blocks joined by newlines); any other kind of content is refused.
fn conversation(params: &CreateMessageRequestParams) -> Result<Vec<(String, String)>, ErrorData> {
    let mut messages = Vec::with_capacity(params.messages.len() + 1);
    if let Some(system) = params.system_prompt.as_deref().filter(|s| !s.is_empty()) {
        messages.push(("system".to_string(), system.to_string()));
    }
    for message in &params.messages {
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let mut texts = Vec::new();
        for block in message.content.clone().into_vec() {
            match block {
                SamplingMessageContentBlock::Text(text) => texts.push(text.text),
                _ => {
                    return Err(ErrorData::invalid_params(
                        "the local model answers text messages only",
                        None,
                    ));
                }
            }
        }
        messages.push((role.to_string(), texts.join("\n")));
    }
    if messages.iter().all(|(role, _)| role == "system") {
        return Err(ErrorData::invalid_params(
            "a sampling request needs messages",
            None,
        ));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn params(value: serde_json::Value) -> CreateMessageRequestParams {
        serde_json::from_value(value).expect("params")
    }

    #[test]
    fn text_requests_become_chats_and_other_content_is_refused() {
        let request = params(json!({
            "messages": [{"role": "user", "content": {"type": "text", "text": "hi"}},
                         {"role": "assistant", "content": [{"type": "text", "text": "a"},
                                                           {"type": "text", "text": "b"}]}],
            "systemPrompt": "be brief", "maxTokens": 10}));
        assert_eq!(
            conversation(&request).expect("chat"),
            [
                ("system", "be brief"),
                ("user", "hi"),
                ("assistant", "a\nb")
            ]
            .map(|(r, c)| (r.to_string(), c.to_string()))
        );
        let image = params(json!({
            "messages": [{"role": "user", "content": {"type": "image", "data": "AA==", "mimeType": "image/png"}}],
            "maxTokens": 10}));
        assert!(conversation(&image).is_err());
        let empty = params(json!({"messages": [], "systemPrompt": "x", "maxTokens": 10}));
        assert!(conversation(&empty).is_err());
    }

    #[test]
    fn temperature_and_stop_sequences_pass_and_max_tokens_is_capped() {
        let request = params(json!({
            "messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}],
            "maxTokens": 100000, "temperature": 0.25, "stopSequences": ["\n", "END"]}));
        assert_eq!(
            options(&request, 64),
            AnswerOptions {
                max_tokens: Some(64),
                temperature: Some(0.25),
                stop: vec!["\n".into(), "END".into()],
            }
        );
        let small = params(json!({
            "messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}],
            "maxTokens": 3}));
        assert_eq!(
            options(&small, 64),
            AnswerOptions {
                max_tokens: Some(3),
                ..Default::default()
            }
        );
    }
}
