//! The runner's own tools, `chat` and `list_models`: tools of the pseudo-server `model-runner`. The
//! transport that offers them (`/mcp`, `model mcp`) registers the runner's models with the gateway once;
//! from then on `Gateway::call` routes the two names here, behind the same access check (a client's
//! `servers` must name `model-runner`), rate limit, call log and metrics as any server's tool.

use std::sync::Arc;

use futures::future::BoxFuture;
use rmcp::model::{CallToolResult, ContentBlock, Tool};
use serde_json::{Value, json};

use super::super::config::LOCAL_SERVER;
use super::super::policy::Caller;
use super::super::upstream::{AnswerOptions, LocalAnswer, Sampler, SamplingError};
use super::call::CallContext;
use super::meta_tools::object_tool;
use super::{Gateway, McpError, read, write};
use crate::runtime::RuntimeError;
use crate::store::StoreError;
use crate::validation::ValidationError;

pub const CHAT: &str = "chat";
pub const LIST_MODELS: &str = "list_models";

/// The runner's models, as the `chat` and `list_models` tools reach them.
pub trait LocalModels: Send + Sync + 'static {
    /// Models in the store.
    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, LocalToolError>>;
    /// One answer from `model` to `messages` (`role`, `content` pairs), generated as `options` say.
    fn chat(
        &self,
        model: String,
        messages: Vec<(String, String)>,
        options: AnswerOptions,
    ) -> BoxFuture<'_, Result<LocalAnswer, LocalToolError>>;
}

/// Why `chat` or `list_models` failed; the caller reads it as an `isError` result.
#[derive(Debug, thiserror::Error)]
pub enum LocalToolError {
    #[error("chat needs string arguments model and prompt")]
    MissingChatArguments,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] RuntimeError),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The chat pipeline's refusal or failure (a `chat::ChatError`, boxed: the chat module calls the
    /// gateway, so the gateway names no type of it).
    #[error(transparent)]
    Chat(Box<dyn std::error::Error + Send + Sync>),
}

/// The runner's models answering upstream servers' sampling requests, once a transport registered
/// them: through the same `LocalModels::chat` (the chat pipeline) as the `chat` tool.
pub(super) struct LocalSampler(pub(super) Arc<std::sync::RwLock<Option<Arc<dyn LocalModels>>>>);

impl Sampler for LocalSampler {
    fn sample(
        &self,
        model: String,
        messages: Vec<(String, String)>,
        options: AnswerOptions,
    ) -> BoxFuture<'static, Result<LocalAnswer, SamplingError>> {
        let models = read(&self.0).clone();
        Box::pin(async move {
            let models = models.ok_or(SamplingError::NoModels)?;
            models
                .chat(model, messages, options)
                .await
                .map_err(|e| SamplingError::Model(e.to_string()))
        })
    }
}

impl Gateway {
    /// Offers `models` as the tools `chat` and `list_models` from now on; a second registration
    /// replaces the first. The gateway holds them for its life.
    pub fn register_local_models(&self, models: Arc<dyn LocalModels>) {
        *write(&self.local) = Some(models);
    }

    /// The runner's own tools `caller` may see, once registered.
    pub fn local_tools(&self, caller: &Caller) -> Vec<Tool> {
        if read(&self.local).is_none() {
            return Vec::new();
        }
        local_tool_descriptions()
            .into_iter()
            .filter(|t| self.allows(caller, LOCAL_SERVER, &t.name))
            .collect()
    }

    /// The models behind `name`, when it is one of the runner's own tools and the call may reach them.
    /// A chat request's scope names configured servers only, so its calls never do.
    pub(super) fn local_models(
        &self,
        context: &CallContext,
        name: &str,
    ) -> Option<Arc<dyn LocalModels>> {
        if ![CHAT, LIST_MODELS].contains(&name) || !context.reaches(LOCAL_SERVER) {
            return None;
        }
        read(&self.local).clone()
    }

    /// Runs an admitted `chat` or `list_models`; the models' failures are `isError` results.
    pub(super) async fn run_local_tool(
        &self,
        models: Arc<dyn LocalModels>,
        name: &str,
        arguments: &Value,
    ) -> Result<CallToolResult, McpError> {
        let outcome = match name {
            LIST_MODELS => models
                .list()
                .await
                .map(|names| CallToolResult::structured(json!({"models": names}))),
            CHAT => chat(models.as_ref(), arguments)
                .await
                .map(|answer| CallToolResult::success(vec![ContentBlock::text(answer)])),
            _ => return Err(McpError::UnknownTool(name.to_string())),
        };
        Ok(outcome
            .unwrap_or_else(|e| CallToolResult::error(vec![ContentBlock::text(e.to_string())])))
    }
}

/// `chat`'s arguments (`model`, `prompt`, optional `system` and `max_tokens`) turned into one answer.
async fn chat(models: &dyn LocalModels, arguments: &Value) -> Result<String, LocalToolError> {
    let text = |k: &str| arguments.get(k).and_then(Value::as_str).map(String::from);
    let (Some(model), Some(prompt)) = (text("model"), text("prompt")) else {
        return Err(LocalToolError::MissingChatArguments);
    };
    let mut messages = Vec::new();
    if let Some(system) = text("system") {
        messages.push(("system".to_string(), system));
    }
    messages.push(("user".to_string(), prompt));
    let options = AnswerOptions {
        max_tokens: arguments.get("max_tokens").and_then(Value::as_i64),
        ..Default::default()
    };
    Ok(models.chat(model, messages, options).await?.text)
}

/// The runner's own tools, as tools of the pseudo-server `model-runner` describe themselves.
fn local_tool_descriptions() -> Vec<Tool> {
    vec![
        object_tool(
            CHAT,
            "Ask a model that runs locally in this model runner. Returns its answer.",
            json!({
                "type": "object",
                "properties": {
                    "model": {"type": "string", "description": "A model name, as list_models gives."},
                    "prompt": {"type": "string"},
                    "system": {"type": "string"},
                    "max_tokens": {"type": "integer", "minimum": 1}
                },
                "required": ["model", "prompt"]
            }),
            false,
        ),
        object_tool(
            LIST_MODELS,
            "List the models this model runner has in its store.",
            json!({"type": "object", "properties": {}}),
            true,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::super::config::{ClientConfig, McpConfig, RateLimit};
    use super::super::super::discovery;
    use super::*;

    /// Models that answer without a runtime: two names, and an echo of the prompt.
    struct FakeModels;

    impl LocalModels for FakeModels {
        fn list(&self) -> BoxFuture<'_, Result<Vec<String>, LocalToolError>> {
            Box::pin(async { Ok(vec!["ai/smollm2".into(), "ai/qwen3".into()]) })
        }

        fn chat(
            &self,
            _model: String,
            messages: Vec<(String, String)>,
            _options: AnswerOptions,
        ) -> BoxFuture<'_, Result<LocalAnswer, LocalToolError>> {
            let text = messages.last().map(|m| m.1.clone()).unwrap_or_default();
            Box::pin(async move {
                Ok(LocalAnswer {
                    text,
                    hit_limit: false,
                })
            })
        }
    }

    fn client(name: &str, servers: &[&str], per_minute: Option<u32>) -> ClientConfig {
        ClientConfig {
            name: name.into(),
            token: format!("{name}-token"),
            servers: Some(servers.iter().map(|s| s.to_string()).collect()),
            tools: None,
            rate_limit: per_minute.map(|per_minute| RateLimit {
                per_minute,
                burst: per_minute,
            }),
            calls_per_day: None,
            tokens_per_day: None,
        }
    }

    /// A gateway without servers whose runner tools are registered: `runner` may use them once a
    /// minute, `agent` may not use them at all.
    fn gateway() -> Arc<Gateway> {
        let config = McpConfig {
            clients: vec![
                client("runner", &[LOCAL_SERVER], Some(1)),
                client("agent", &["fs"], None),
            ],
            ..McpConfig::default()
        };
        let gateway = Gateway::new(config, None);
        gateway.register_local_models(Arc::new(FakeModels));
        gateway
    }

    fn caller(gateway: &Gateway, name: &str) -> Caller {
        gateway
            .authenticate(Some(&format!("{name}-token")))
            .expect("a configured client")
    }

    #[tokio::test]
    async fn the_runners_own_tools_are_admitted_limited_logged_and_counted_like_server_tools() {
        let gateway = gateway();
        let runner = CallContext::new(caller(&gateway, "runner"));
        let listed = gateway.call(&runner, "list_models", json!({})).await;
        assert_eq!(listed.server, LOCAL_SERVER);
        assert!(!listed.failed(), "{:?}", listed.error);
        assert_eq!(
            listed.result.and_then(|r| r.structured_content),
            Some(json!({"models": ["ai/smollm2", "ai/qwen3"]}))
        );
        let limited = gateway.call(&runner, "list_models", json!({})).await;
        assert_eq!(limited.error_kind, Some("rate_limited"));
        let agent = CallContext::new(caller(&gateway, "agent"));
        let denied = gateway
            .call(&agent, "chat", json!({"model": "ai/qwen3", "prompt": "hi"}))
            .await;
        assert_eq!(denied.error_kind, Some("denied"));
        let mut metrics = String::new();
        gateway.render_metrics(&mut metrics).await;
        assert!(metrics.contains(
            "model_runner:mcp_tool_calls_total{server=\"model-runner\",tool=\"list_models\",client=\"runner\"} 2"
        ), "{metrics}");
        assert!(metrics.contains(
            "model_runner:mcp_tool_errors_total{server=\"model-runner\",tool=\"chat\",client=\"agent\"} 1"
        ), "{metrics}");
    }

    #[tokio::test]
    async fn a_call_the_transport_took_from_the_budget_is_not_taken_again() {
        let gateway = gateway();
        let runner = CallContext::new(caller(&gateway, "runner")).rate_taken_by_transport();
        for _ in 0..3 {
            let answer = gateway
                .call(
                    &runner,
                    "chat",
                    json!({"model": "ai/qwen3", "prompt": "echo"}),
                )
                .await;
            assert_eq!(answer.output_text(), "echo");
        }
    }

    #[tokio::test]
    async fn a_chat_failure_is_a_result_the_caller_reads() {
        let gateway = gateway();
        let runner = CallContext::new(caller(&gateway, "runner"));
        let record = gateway.call(&runner, "chat", json!({"prompt": "hi"})).await;
        assert!(record.error.is_none());
        assert!(record.failed());
        assert_eq!(
            record.output_text(),
            "chat needs string arguments model and prompt"
        );
    }

    #[tokio::test]
    async fn neither_a_chat_requests_scope_nor_mcp_call_reaches_the_runners_own_tools() {
        let gateway = gateway();
        let runner = caller(&gateway, "runner");
        let scoped = CallContext::new(runner.clone()).scoped(Some(vec!["fs".into()]));
        let record = gateway.call(&scoped, "list_models", json!({})).await;
        assert_eq!(record.error_kind, Some("unknown_tool"));
        let through = gateway
            .call(
                &CallContext::new(runner),
                discovery::CALL,
                json!({"name": "list_models", "arguments": {}}),
            )
            .await;
        assert_eq!(through.name, "list_models");
        assert_eq!(through.error_kind, Some("unknown_tool"));
    }

    #[tokio::test]
    async fn without_registered_models_the_runners_tool_names_are_unknown() {
        let gateway = Gateway::new(McpConfig::default(), None);
        assert!(gateway.local_tools(&Caller::Anonymous).is_empty());
        let record = gateway
            .call(
                &CallContext::new(Caller::Anonymous),
                "list_models",
                json!({}),
            )
            .await;
        assert_eq!(record.error_kind, Some("unknown_tool"));
        let gateway = gateway_with_anonymous_models();
        let names: Vec<String> = gateway
            .local_tools(&Caller::Anonymous)
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        assert_eq!(names, ["chat", "list_models"]);
    }

    fn gateway_with_anonymous_models() -> Arc<Gateway> {
        let gateway = Gateway::new(McpConfig::default(), None);
        gateway.register_local_models(Arc::new(FakeModels));
        gateway
    }
}
