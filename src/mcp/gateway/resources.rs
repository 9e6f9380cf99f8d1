//! Resources and resource templates of every server that offers them, under the gateway's URIs
//! (`model-runner://SERVER/URI`, see `naming`): lists gathered from the servers a caller may use,
//! reads and subscriptions routed back by the URI alone, after the same access check and rate limit
//! as tool calls. What a server answers is relayed with its URIs put under its own name, so a client
//! can read what it was given and nothing routes to a server it did not come from. Tool results get the
//! same treatment (`namespace_result`): their resource links and embedded resources carry gateway URIs.

use std::sync::Arc;
use std::time::Instant;

use rmcp::model::{
    CallToolResult, ContentBlock, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
};

use super::super::naming;
use super::super::policy::Caller;
use super::super::upstream::{Offers, Subscriber, Upstream};
use super::call::{CallContext, admit_server};
use super::{Gateway, McpError};

impl Gateway {
    /// The servers `caller` may use whose offers pass `wanted` (those of them never started are
    /// started first; servers the caller may not use are left asleep).
    pub(super) async fn offering(
        &self,
        caller: &Caller,
        wanted: impl Fn(Offers) -> bool,
    ) -> Vec<Arc<Upstream>> {
        let setup = self.setup();
        let pending: Vec<_> = setup
            .upstreams
            .iter()
            .filter(|u| u.offers().is_none() && setup.policy.allows_server(caller, u.name()))
            .cloned()
            .collect();
        let started = futures::future::join_all(pending.iter().map(|u| u.tools())).await;
        for (upstream, result) in pending.iter().zip(started) {
            if let Err(e) = result {
                tracing::warn!(server = %upstream.name(), "MCP server not available: {e}");
            }
        }
        let setup = self.setup();
        setup
            .upstreams
            .iter()
            .filter(|u| setup.policy.allows_server(caller, u.name()))
            .filter(|u| u.offers().is_some_and(&wanted))
            .cloned()
            .collect()
    }

    /// What the servers `caller` may use offer together, as far as known: `initialize` advertises from
    /// it without starting anything (servers start on first use). A server never started may offer
    /// anything, so it counts as offering all; once it has run, what it said counts.
    pub fn offers_for(&self, caller: &Caller) -> Offers {
        let unknown = Offers {
            resources: true,
            resource_subscriptions: true,
            prompts: true,
        };
        let setup = self.setup();
        setup
            .upstreams
            .iter()
            .filter(|u| setup.policy.allows_server(caller, u.name()))
            .map(|u| u.offers().unwrap_or(unknown))
            .fold(Offers::default(), |all, o| Offers {
                resources: all.resources || o.resources,
                resource_subscriptions: all.resource_subscriptions || o.resource_subscriptions,
                prompts: all.prompts || o.prompts,
            })
    }

    /// The resources of every server `caller` may use, under the gateway's URIs; a server that fails
    /// to list them is logged and left out.
    pub async fn resources(&self, caller: &Caller) -> Vec<Resource> {
        let upstreams = self.offering(caller, |o| o.resources).await;
        let lists = futures::future::join_all(upstreams.iter().map(|u| u.list_resources())).await;
        let mut all = Vec::new();
        for (upstream, list) in upstreams.iter().zip(lists) {
            match list {
                Ok(resources) => all.extend(resources.into_iter().map(|mut r| {
                    r.uri = naming::resource_uri(upstream.name(), &r.uri);
                    r
                })),
                Err(e) => {
                    tracing::warn!(server = %upstream.name(), "resources not listed: {e}")
                }
            }
        }
        all
    }

    /// The resource templates of every server `caller` may use, under the gateway's URIs (an
    /// expansion of one is a URI the gateway routes to the template's server).
    pub async fn resource_templates(&self, caller: &Caller) -> Vec<ResourceTemplate> {
        let upstreams = self.offering(caller, |o| o.resources).await;
        let lists =
            futures::future::join_all(upstreams.iter().map(|u| u.list_resource_templates())).await;
        let mut all = Vec::new();
        for (upstream, list) in upstreams.iter().zip(lists) {
            match list {
                Ok(templates) => all.extend(templates.into_iter().map(|mut t| {
                    t.uri_template = naming::resource_uri(upstream.name(), &t.uri_template);
                    t
                })),
                Err(e) => {
                    tracing::warn!(server = %upstream.name(), "resource templates not listed: {e}")
                }
            }
        }
        all
    }

    /// Reads the resource behind a gateway URI, after the access check and rate limit; the contents
    /// come back under gateway URIs.
    pub async fn read_resource(
        &self,
        context: &CallContext,
        uri: &str,
    ) -> Result<ReadResourceResult, McpError> {
        let started = Instant::now();
        let setup = self.setup();
        let outcome = async {
            let (upstream, original) = self.resource_upstream(uri)?;
            admit_server(&setup, context, upstream.name(), uri)?;
            let mut result = upstream.read_resource(original).await?;
            for contents in &mut result.contents {
                namespace_contents(upstream.name(), contents);
            }
            Ok(result)
        }
        .await;
        self.observe_request(
            &setup,
            &context.caller,
            "mcp_resource_read",
            uri,
            started,
            outcome.as_ref().err(),
        );
        outcome
    }

    /// Subscribes a session to the resource behind a gateway URI (its server must offer
    /// subscriptions); updates come to the session as `notifications/resources/updated`.
    pub async fn subscribe_resource(
        &self,
        context: &CallContext,
        uri: &str,
        subscriber: Subscriber,
    ) -> Result<(), McpError> {
        let (upstream, original) = self.resource_upstream(uri)?;
        admit_server(&self.setup(), context, upstream.name(), uri)?;
        if !upstream.offers().is_some_and(|o| o.resource_subscriptions) {
            return Err(McpError::Protocol {
                server: upstream.name().to_string(),
                message: "the server does not offer resource subscriptions".into(),
            });
        }
        upstream.subscribe(original, subscriber).await
    }

    /// Ends a session's subscription to the resource behind a gateway URI.
    pub async fn unsubscribe_resource(
        &self,
        context: &CallContext,
        uri: &str,
        session: u64,
    ) -> Result<(), McpError> {
        let (upstream, original) = self.resource_upstream(uri)?;
        admit_server(&self.setup(), context, upstream.name(), uri)?;
        upstream.unsubscribe(original, session).await
    }

    /// The configured server a gateway URI names, and the server's own URI. The server part is
    /// matched exactly, else without regard to ASCII case when that is unambiguous (clients that
    /// parse URIs may lower-case their authority).
    fn resource_upstream<'u>(&self, uri: &'u str) -> Result<(Arc<Upstream>, &'u str), McpError> {
        let unknown = || McpError::UnknownResource(uri.chars().take(256).collect());
        let (server, original) = naming::split_resource_uri(uri).ok_or_else(unknown)?;
        let setup = self.setup();
        let exact = setup.upstreams.iter().find(|u| u.name() == server);
        let upstream = match exact {
            Some(u) => u.clone(),
            None => {
                let mut folded = setup
                    .upstreams
                    .iter()
                    .filter(|u| u.name().eq_ignore_ascii_case(&server));
                match (folded.next(), folded.next()) {
                    (Some(u), None) => u.clone(),
                    _ => return Err(unknown()),
                }
            }
        };
        Ok((upstream, original))
    }
}

/// Puts the URI of a resource's contents under the gateway's URIs for `server`.
pub(super) fn namespace_contents(server: &str, contents: &mut ResourceContents) {
    match contents {
        ResourceContents::TextResourceContents { uri, .. }
        | ResourceContents::BlobResourceContents { uri, .. } => {
            *uri = naming::resource_uri(server, uri);
        }
        // A kind of contents this gateway does not know carries no URI it could route.
        _ => {}
    }
}

/// Puts the URIs of a tool result's resource links and embedded resources under the gateway's URIs for
/// `server`, so the client can read them back through the gateway; a block whose URI cannot be relayed
/// (see `naming::is_relayable_uri`) is dropped, as such resources are from lists.
pub(super) fn namespace_result(server: &str, result: &mut CallToolResult) {
    let before = result.content.len();
    result.content.retain_mut(|block| {
        let uri = match block {
            ContentBlock::ResourceLink(resource) => &mut resource.uri,
            ContentBlock::Resource(embedded) => match &mut embedded.resource {
                ResourceContents::TextResourceContents { uri, .. }
                | ResourceContents::BlobResourceContents { uri, .. } => uri,
                _ => return true,
            },
            _ => return true,
        };
        if !naming::is_relayable_uri(uri) {
            return false;
        }
        *uri = naming::resource_uri(server, uri);
        true
    });
    if result.content.len() < before {
        tracing::warn!(
            server,
            left_out = before - result.content.len(),
            "tool result blocks with empty, control-character or over-long resource URIs left out"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_results_link_and_embed_resources_under_gateway_uris() {
        let mut result: CallToolResult = serde_json::from_value(serde_json::json!({"content": [
            {"type": "text", "text": "see"},
            {"type": "resource_link", "uri": "memo://a", "name": "a"},
            {"type": "resource", "resource": {"uri": "memo://b", "text": "b"}},
            {"type": "resource_link", "uri": "memo://bad\u{7}", "name": "bad"},
            {"type": "resource", "resource": {"uri": "", "blob": "AA=="}}
        ]}))
        .expect("result");
        namespace_result("notes", &mut result);
        let json = serde_json::to_value(&result).expect("json");
        let content = json["content"].as_array().expect("content");
        assert_eq!(content.len(), 3, "{json}");
        assert_eq!(content[1]["uri"], "model-runner://notes/memo://a");
        assert_eq!(
            content[2]["resource"]["uri"],
            "model-runner://notes/memo://b"
        );
    }
}
