//! A server's `elicitation/create` requests, forwarded to the client whose tool call is running on
//! it. The gateway offers elicitation to every server (it cannot know at `initialize` which clients
//! will call), remembers which client session each call in flight comes from, and asks that session
//! when the server asks: only when exactly one session has calls in flight on the server (a request
//! carries nothing that ties it to one call, so with several the gateway cannot tell whose user to ask,
//! and asks nobody), only when that client declared the capability for the request's mode (form or
//! URL) in its `initialize`, and for at most the server's call timeout. Otherwise the server gets a
//! JSON-RPC error it can read, and its tool decides what to do. The answer (accept, decline or cancel,
//! with the content) is relayed as the client gave it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rmcp::model::{
    ElicitRequestParams, ElicitResult, ElicitationCapability, FormElicitationCapability,
    UrlElicitationCapability,
};
use rmcp::{ErrorData, Peer, RoleServer, ServiceError};

use super::{Upstream, lock};

/// The client session a call comes from: the one asked when the server elicits during the call.
#[derive(Clone)]
pub struct Requester {
    /// The endpoint session's number (one per `/mcp` session or stdio connection).
    pub session: u64,
    pub peer: Peer<RoleServer>,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// What the gateway tells servers it can do: both modes, forwarded to clients that can.
pub(super) fn capability() -> ElicitationCapability {
    ElicitationCapability::new()
        .with_form(FormElicitationCapability::default())
        .with_url(UrlElicitationCapability::default())
}

/// A call in flight on a server, registered for its life: dropping it forgets the call.
pub(super) struct InFlightCall {
    upstream: Arc<Upstream>,
    ticket: u64,
}

impl Drop for InFlightCall {
    fn drop(&mut self) {
        lock(&self.upstream.requesters).retain(|(ticket, _)| *ticket != self.ticket);
    }
}

impl Upstream {
    /// Registers a call in flight from `requester` (`None`: a caller no one can be asked for, such as
    /// a chat request's tool loop or a script).
    pub(super) fn call_in_flight(self: &Arc<Self>, requester: Option<Requester>) -> InFlightCall {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        lock(&self.requesters).push((ticket, requester));
        InFlightCall {
            upstream: self.clone(),
            ticket,
        }
    }

    /// The one session with calls in flight, or why there is none to ask.
    fn requester_to_ask(&self) -> Result<Requester, ErrorData> {
        let calls = lock(&self.requesters);
        let mut sessions = calls.iter().map(|(_, r)| r.as_ref().map(|r| r.session));
        let first = sessions.next().ok_or_else(|| {
            ErrorData::invalid_request(
                "no client call is in flight to ask the user for input",
                None,
            )
        })?;
        if sessions.any(|s| s != first) {
            return Err(ErrorData::invalid_request(
                "several clients have calls in flight; the gateway cannot tell whose user to ask",
                None,
            ));
        }
        calls.iter().find_map(|(_, r)| r.clone()).ok_or_else(|| {
            ErrorData::invalid_request(
                "the call in flight comes from a caller that cannot be asked for input",
                None,
            )
        })
    }

    /// Forwards one elicitation of the server to the client whose call is running, or refuses it.
    pub(super) async fn elicit(
        &self,
        params: ElicitRequestParams,
    ) -> Result<ElicitResult, ErrorData> {
        let requester = self.requester_to_ask()?;
        let url_mode = matches!(params, ElicitRequestParams::UrlElicitationParams { .. });
        let declared = requester
            .peer
            .peer_info()
            .and_then(|info| info.capabilities.elicitation.clone());
        let supported = match &declared {
            Some(capability) if url_mode => capability.url.is_some(),
            Some(_) => true,
            None => false,
        };
        let mode = if url_mode { "url" } else { "form" };
        let line = serde_json::json!({
            "event": "mcp_elicitation",
            "server": self.config.name,
            "session": requester.session,
            "mode": mode,
            "forwarded": supported,
        });
        tracing::info!(target: "model_runner::mcp::calls", "{line}");
        if !supported {
            return Err(ErrorData::invalid_request(
                format!("the client did not declare the elicitation capability ({mode} mode)"),
                None,
            ));
        }
        match requester
            .peer
            .create_elicitation_with_timeout(params, Some(self.config.call_timeout))
            .await
        {
            Ok(result) => Ok(result),
            Err(ServiceError::McpError(e)) => Err(e),
            Err(ServiceError::Timeout { .. }) => Err(ErrorData::internal_error(
                format!(
                    "the client did not answer within {} s",
                    self.config.call_timeout.as_secs_f64()
                ),
                None,
            )),
            Err(e) => Err(ErrorData::internal_error(
                format!("the client could not be asked: {e}"),
                None,
            )),
        }
    }
}
