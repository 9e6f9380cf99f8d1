//! What a server offers besides tools: its resources, resource templates and prompts, lists followed
//! page by page within bounds, reads and prompt answers bounded in size, and the sessions subscribed to
//! its resources (the upstream subscription is sent for each, resent after a restart, and
//! `notifications/resources/updated` relayed to them under the gateway's URIs). Every request goes
//! through `Upstream::request`: breaker, call timeout, idle clock.

use std::collections::HashSet;
use std::sync::Arc;

use rmcp::model::{
    Cursor, GetPromptRequestParams, GetPromptResult, PaginatedRequestParams, Prompt,
    ReadResourceRequestParams, ReadResourceResult, Resource, ResourceTemplate,
    ResourceUpdatedNotificationParam, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::{Peer, RoleClient, RoleServer, ServiceError};
use serde_json::{Map, Value};

use super::super::McpError;
use super::super::naming;
use super::{ListKind, Offers, Upstream, lock};

/// The most pages the gateway follows in one list (a server whose cursors never end is cut there).
pub const MAX_PAGES: usize = 64;
/// The most items one list of one server contributes.
pub const MAX_ITEMS: usize = 10_000;
/// The most bytes (as JSON) of one resource read or prompt the gateway relays.
pub const MAX_CONTENT_BYTES: usize = 8 * 1024 * 1024;

/// A session subscribed to one of the server's resources.
#[derive(Clone)]
pub struct Subscriber {
    /// The endpoint session's number (one per `/mcp` session or stdio connection).
    pub session: u64,
    pub peer: Peer<RoleServer>,
}

impl Upstream {
    /// What the server offered when it last started; `None` if it never did.
    pub fn offers(&self) -> Option<Offers> {
        *lock(&self.offers)
    }

    /// The prompts last listed, if the server offers prompts and ever ran.
    pub fn known_prompts(&self) -> Option<Vec<Prompt>> {
        lock(&self.prompts).clone()
    }

    /// Lists the server's prompts again (at start, and when it says they changed).
    pub(super) async fn refresh_prompts(&self, peer: &Peer<RoleClient>) {
        let listing = tokio::time::timeout(
            self.config.call_timeout,
            all_pages(&self.config.name, "prompts/list", |params| async move {
                let page = peer.list_prompts(params).await?;
                Ok((page.prompts, page.next_cursor))
            }),
        )
        .await;
        match listing {
            Ok(Ok(prompts)) => {
                *lock(&self.prompts) = Some(prompts);
                (self.on_change)(ListKind::Prompts);
            }
            Ok(Err(e)) => {
                tracing::warn!(server = %self.config.name, "cannot list prompts: {}", self.redactor.redact(&e.to_string()))
            }
            Err(_) => tracing::warn!(server = %self.config.name, "prompts/list did not answer"),
        }
    }

    /// The server's resources (its own URIs), every page, within the bounds.
    pub async fn list_resources(self: &Arc<Self>) -> Result<Vec<Resource>, McpError> {
        let server = self.config.name.clone();
        let resources = self
            .request("resources/list", |peer| async move {
                all_pages(&server, "resources/list", |params| {
                    let peer = peer.clone();
                    async move {
                        let page = peer.list_resources(params).await?;
                        Ok((page.resources, page.next_cursor))
                    }
                })
                .await
            })
            .await?;
        Ok(self.relayable(resources, |r| &r.uri))
    }

    /// The server's resource templates (its own URI templates), every page, within the bounds.
    pub async fn list_resource_templates(
        self: &Arc<Self>,
    ) -> Result<Vec<ResourceTemplate>, McpError> {
        let server = self.config.name.clone();
        let templates = self
            .request("resources/templates/list", |peer| async move {
                all_pages(&server, "resources/templates/list", |params| {
                    let peer = peer.clone();
                    async move {
                        let page = peer.list_resource_templates(params).await?;
                        Ok((page.resource_templates, page.next_cursor))
                    }
                })
                .await
            })
            .await?;
        Ok(self.relayable(templates, |t| &t.uri_template))
    }

    /// Reads one resource by the server's own URI.
    pub async fn read_resource(
        self: &Arc<Self>,
        uri: &str,
    ) -> Result<ReadResourceResult, McpError> {
        let params = ReadResourceRequestParams::new(uri);
        let result = self
            .request("resources/read", |peer| async move {
                peer.read_resource(params).await
            })
            .await?;
        self.bounded(result, "resources/read")
    }

    /// Gets one prompt by the server's own name.
    pub async fn get_prompt(
        self: &Arc<Self>,
        name: &str,
        arguments: Option<Map<String, Value>>,
    ) -> Result<GetPromptResult, McpError> {
        let mut params = GetPromptRequestParams::new(name);
        params.arguments = arguments;
        let result = self
            .request("prompts/get", |peer| async move {
                peer.get_prompt(params).await
            })
            .await?;
        self.bounded(result, "prompts/get")
    }

    /// Subscribes `subscriber` to the resource `uri` (the server's own URI): forwarded to the server,
    /// and its updates relayed to the session until it unsubscribes or goes away.
    #[allow(deprecated)]
    pub async fn subscribe(
        self: &Arc<Self>,
        uri: &str,
        subscriber: Subscriber,
    ) -> Result<(), McpError> {
        let session = subscriber.session;
        {
            let mut subscriptions = lock(&self.subscriptions);
            let sessions = subscriptions.entry(uri.to_string()).or_default();
            sessions.retain(|s| s.session != session && !s.peer.is_transport_closed());
            sessions.push(subscriber);
        }
        let params = SubscribeRequestParams::new(uri);
        let outcome = self
            .request("resources/subscribe", |peer| async move {
                peer.subscribe(params).await
            })
            .await;
        if outcome.is_err() {
            self.forget(uri, session);
        }
        outcome
    }

    /// Ends `session`'s subscription to `uri`; the server is told once no session is left on it.
    #[allow(deprecated)]
    pub async fn unsubscribe(self: &Arc<Self>, uri: &str, session: u64) -> Result<(), McpError> {
        if !self.forget(uri, session) {
            return Ok(());
        }
        let params = UnsubscribeRequestParams::new(uri);
        self.request("resources/unsubscribe", |peer| async move {
            peer.unsubscribe(params).await
        })
        .await
    }

    /// Drops `session` from `uri`'s subscribers; true when none is left.
    fn forget(&self, uri: &str, session: u64) -> bool {
        let mut subscriptions = lock(&self.subscriptions);
        let Some(sessions) = subscriptions.get_mut(uri) else {
            return false;
        };
        sessions.retain(|s| s.session != session && !s.peer.is_transport_closed());
        let empty = sessions.is_empty();
        if empty {
            subscriptions.remove(uri);
        }
        empty
    }

    /// Whether a live session is subscribed to any of the server's resources (then it is not stopped
    /// when idle: its updates would be lost).
    pub(super) fn has_subscribers(&self) -> bool {
        let mut subscriptions = lock(&self.subscriptions);
        subscriptions.retain(|_, sessions| {
            sessions.retain(|s| !s.peer.is_transport_closed());
            !sessions.is_empty()
        });
        !subscriptions.is_empty()
    }

    /// Relays the server's `notifications/resources/updated` for `uri` to its subscribers.
    pub(super) async fn relay_update(&self, uri: &str) {
        let subscribers: Vec<Subscriber> = lock(&self.subscriptions)
            .get(uri)
            .cloned()
            .unwrap_or_default();
        let public = naming::resource_uri(&self.config.name, uri);
        for subscriber in subscribers {
            if subscriber.peer.is_transport_closed() {
                continue;
            }
            let params = ResourceUpdatedNotificationParam::new(public.clone());
            if let Err(e) = subscriber.peer.notify_resource_updated(params).await {
                tracing::debug!(server = %self.config.name, session = subscriber.session, "resource update not delivered: {e}");
            }
        }
    }

    /// After a (re)start: subscribes again to every resource a live session follows.
    #[allow(deprecated)]
    pub(super) async fn resubscribe(&self, peer: &Peer<RoleClient>) {
        let uris: Vec<String> = {
            let mut subscriptions = lock(&self.subscriptions);
            subscriptions.retain(|_, sessions| {
                sessions.retain(|s| !s.peer.is_transport_closed());
                !sessions.is_empty()
            });
            subscriptions.keys().cloned().collect()
        };
        for uri in uris {
            let sent = tokio::time::timeout(
                self.config.call_timeout,
                peer.subscribe(SubscribeRequestParams::new(uri.clone())),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::warn!(server = %self.config.name, "cannot subscribe again to a resource after a restart");
            }
        }
    }

    /// The items whose URI can be relayed (see `naming::is_relayable_uri`); the others are logged.
    fn relayable<T>(&self, mut items: Vec<T>, uri: impl Fn(&T) -> &String) -> Vec<T> {
        let before = items.len();
        items.retain(|item| naming::is_relayable_uri(uri(item)));
        if items.len() < before {
            tracing::warn!(server = %self.config.name, left_out = before - items.len(), "resources with empty, control-character or over-long URIs left out");
        }
        items
    }

    /// `result`, or an error naming the server when it is larger than `MAX_CONTENT_BYTES` as JSON.
    fn bounded<T: serde::Serialize>(&self, result: T, what: &str) -> Result<T, McpError> {
        let size = json_size(&result);
        if size > MAX_CONTENT_BYTES {
            return Err(McpError::Oversize {
                server: self.config.name.clone(),
                what: what.to_string(),
                limit: MAX_CONTENT_BYTES,
            });
        }
        Ok(result)
    }
}

/// Follows a list's cursors from the first page: at most `MAX_PAGES` pages and `MAX_ITEMS` items, and
/// never the same cursor twice (a server that loops is cut, with a warning, and what it gave is kept).
async fn all_pages<T, Fut>(
    server: &str,
    what: &str,
    mut page: impl FnMut(Option<PaginatedRequestParams>) -> Fut,
) -> Result<Vec<T>, ServiceError>
where
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<Cursor>), ServiceError>>,
{
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor: Option<Cursor> = None;
    for _ in 0..MAX_PAGES {
        let params =
            cursor.map(|c| PaginatedRequestParams::default().with_cursor(Some(c.to_string())));
        let (mut page_items, next) = page(params).await?;
        page_items.truncate(MAX_ITEMS - items.len());
        items.extend(page_items);
        match next {
            None => return Ok(items),
            Some(_) if items.len() >= MAX_ITEMS => break,
            Some(next) if !seen.insert(next.clone()) => break,
            Some(next) => cursor = Some(next),
        }
    }
    tracing::warn!(
        server,
        what,
        items = items.len(),
        "list cut at the gateway's bound of {MAX_PAGES} pages or {MAX_ITEMS} items"
    );
    Ok(items)
}

/// The length of `value` as JSON, counted without building the text.
fn json_size<T: serde::Serialize>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_of(n: usize, next: Option<&str>) -> Result<(Vec<usize>, Option<Cursor>), ServiceError> {
        Ok(((0..n).collect(), next.map(String::from)))
    }

    #[tokio::test]
    async fn lists_follow_cursors_to_the_end() {
        let items = all_pages("s", "list", |params| async move {
            match params.and_then(|p| p.cursor).as_deref() {
                None => page_of(3, Some("a")),
                Some("a") => page_of(2, Some("b")),
                _ => page_of(1, None),
            }
        })
        .await
        .expect("pages");
        assert_eq!(items.len(), 6);
    }

    #[tokio::test]
    async fn endless_or_looping_cursors_are_cut() {
        let mut asked = 0;
        let items = all_pages("s", "list", |_| {
            asked += 1;
            let next = format!("c{asked}");
            async move { page_of(1, Some(&next)) }
        })
        .await
        .expect("pages");
        assert_eq!((items.len(), asked), (MAX_PAGES, MAX_PAGES));
        let looping = all_pages("s", "list", |_| async { page_of(2, Some("same")) })
            .await
            .expect("pages");
        assert_eq!(looping.len(), 4, "the repeated cursor ends the list");
        let huge = all_pages("s", "list", |_| async { page_of(MAX_ITEMS + 5, Some("x")) })
            .await
            .expect("pages");
        assert_eq!(huge.len(), MAX_ITEMS);
    }

    #[test]
    fn json_size_counts_what_serde_writes() {
        let value = serde_json::json!({"a": "x".repeat(100)});
        assert_eq!(json_size(&value), value.to_string().len());
    }
}
