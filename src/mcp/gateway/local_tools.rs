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
    /// One answer from `model` to `messages` (`role`, `content` pairs).
    fn chat(
        &self,
        model: String,
        messages: Vec<(String, String)>,
        max_tokens: Option<i64>,
    ) -> BoxFuture<'_, Result<String, LocalToolError>>;
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
    /// The chat pipeline's refusal or failure, by its message (it has no typed error of its own yet).
    #[error("{0}")]
    Chat(String),
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
    pub(super) async fn call_local(
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
    let max_tokens = arguments.get("max_tokens").and_then(Value::as_i64);
    models.chat(model, messages, max_tokens).await
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
