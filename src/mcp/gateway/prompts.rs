//! Prompts of every server that offers them, named as tools are (`server__prompt`, assigned by
//! `naming` in configuration order from the prompts each server last listed), shown to the callers
//! who may use the server and fetched through the same access check and rate limit as tool calls.
//! The messages a server answers with are relayed with their resource URIs under the gateway's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rmcp::model::{ContentBlock, GetPromptResult, Prompt};
use serde_json::{Map, Value};

use super::super::naming::{self, NameTable};
use super::super::policy::Caller;
use super::super::upstream::Upstream;
use super::call::{CallContext, admit_server};
use super::resources::namespace_contents;
use super::{Gateway, McpError};

/// A prompt as the gateway offers it.
pub struct PromptEntry {
    /// Namespaced: `server__prompt`.
    pub name: String,
    pub server: String,
    /// The prompt as its server describes it (its own name).
    pub prompt: Prompt,
    upstream: Arc<Upstream>,
}

impl Gateway {
    /// Every server's prompts under the gateway's names, in configuration order (servers never
    /// started are started first).
    async fn prompt_table(&self) -> (Vec<PromptEntry>, HashMap<String, usize>) {
        self.discover(None).await;
        let mut names = NameTable::default();
        let mut entries = Vec::new();
        let mut by_name = HashMap::new();
        for upstream in &self.setup().upstreams {
            for prompt in upstream.known_prompts().unwrap_or_default() {
                let name = names.assign(upstream.name(), &prompt.name);
                by_name.insert(name.clone(), entries.len());
                entries.push(PromptEntry {
                    name,
                    server: upstream.name().to_string(),
                    prompt,
                    upstream: upstream.clone(),
                });
            }
        }
        (entries, by_name)
    }

    /// The prompts `caller` may use, each under its gateway name.
    pub async fn prompts(&self, caller: &Caller) -> Vec<Prompt> {
        let setup = self.setup();
        self.prompt_table()
            .await
            .0
            .into_iter()
            .filter(|e| setup.policy.allows_server(caller, &e.server))
            .map(|e| {
                let mut prompt = e.prompt;
                prompt.name = e.name;
                prompt
            })
            .collect()
    }

    /// Gets the prompt with gateway name `name` from its server, after the access check and rate
    /// limit.
    pub async fn get_prompt(
        &self,
        context: &CallContext,
        name: &str,
        arguments: Option<Map<String, Value>>,
    ) -> Result<GetPromptResult, McpError> {
        let started = Instant::now();
        let setup = self.setup();
        let outcome = async {
            let (mut entries, by_name) = self.prompt_table().await;
            let entry = by_name
                .get(name)
                .map(|&i| entries.swap_remove(i))
                .ok_or_else(|| McpError::UnknownPrompt(name.chars().take(256).collect()))?;
            admit_server(&setup, context, &entry.server, name)?;
            let mut result = entry
                .upstream
                .get_prompt(&entry.prompt.name, arguments)
                .await?;
            for message in &mut result.messages {
                namespace_resources(&entry.server, &mut message.content);
            }
            Ok(result)
        }
        .await;
        self.observe_request(
            &setup,
            &context.caller,
            "mcp_prompt_get",
            name,
            started,
            outcome.as_ref().err(),
        );
        outcome
    }
}

/// Puts the resource URIs a prompt message carries (an embedded resource, a resource link) under the
/// gateway's URIs for `server`.
fn namespace_resources(server: &str, content: &mut ContentBlock) {
    match content {
        ContentBlock::Resource(embedded) => namespace_contents(server, &mut embedded.resource),
        ContentBlock::ResourceLink(link) => link.uri = naming::resource_uri(server, &link.uri),
        _ => {}
    }
}
