//! A server's `sampling/createMessage` requests, answered by a local model when the server's config
//! names one (`"sampling": {"model": ..., "maxTokens": ...}`; off by default, and then the gateway does
//! not even advertise sampling to the server). The request's text messages and system prompt become a
//! chat for the runner's pipeline through a `Sampler`; the answer is capped at the config's
//! `maxTokens` and bounded by the server's call timeout. Images, audio and tool use are refused.

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

/// What answers sampling requests: the runner's chat pipeline, registered by the gateway.
pub trait Sampler: Send + Sync + 'static {
    /// One answer of `model` to `messages` (`role`, `content` pairs), at most `max_tokens` long.
    fn sample(
        &self,
        model: String,
        messages: Vec<(String, String)>,
        max_tokens: u32,
    ) -> BoxFuture<'static, Result<String, SamplingError>>;
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
        let max_tokens = params.max_tokens.clamp(1, policy.max_tokens);
        // One line in the call log: a server asking the local model is an outside caller of it.
        let line = serde_json::json!({
            "event": "mcp_sampling",
            "server": self.config.name,
            "model": policy.model,
            "max_tokens": max_tokens,
            "messages": messages.len(),
        });
        tracing::info!(target: "model_runner::mcp::calls", "{line}");
        let answer = tokio::time::timeout(
            self.config.call_timeout,
            self.sampler
                .sample(policy.model.clone(), messages, max_tokens),
        )
        .await
        .map_err(|_| ErrorData::internal_error("the local model did not answer in time", None))?
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text(answer),
            policy.model.clone(),
        )
        .with_stop_reason(CreateMessageResult::STOP_REASON_END_TURN))
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
}
