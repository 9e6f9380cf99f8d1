//! The older HTTP+SSE transport (protocol 2024-11-05) as an rmcp client transport: a GET opens the
//! server's event stream, whose first `endpoint` event names the URL to POST messages to; the server's
//! messages (answers and its own requests) arrive as `message` events on the stream.
//!
//! Bounded everywhere: the endpoint must come within `ENDPOINT_TIMEOUT` and be on the stream's origin
//! (scheme, host and port), so a server cannot make the gateway post its session elsewhere; one event
//! may hold at most `MAX_EVENT_BYTES`; redirects are not followed. The transport does not reconnect on
//! its own: an SSE session lives exactly as long as its stream, so a dropped stream closes the
//! transport and the upstream's lifecycle starts a new session (initialize again), under its backoff
//! and circuit breaker. A POST answered 404 means the server no longer knows the session (it
//! restarted, or, as the MCP SDK's servers do, it binds a session to the credential that opened it
//! and a new login changed that): the transport closes too.
//!
//! A server without a configured `Authorization` header gets the OAuth grant's access token
//! (`oauth::Credentials`) on the GET and on every POST, refreshed before it expires and once more when
//! the server answers 401; the POSTs go only to the stream's origin, so the token does too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use rmcp::RoleClient;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::sync::mpsc;

use crate::mcp::oauth::{CredentialError, Credentials};

/// How long the server has to open its stream and name its endpoint.
pub const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest event (its data lines together) the gateway reads.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;
/// How long one POST to the endpoint may take (its answer comes on the stream, not in the POST).
const POST_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages read ahead of the service (with `MAX_EVENT_BYTES`, what one stream can hold in memory).
const QUEUE: usize = 16;

/// Why the SSE transport could not connect or send.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("header {0}: {1}")]
    Header(String, String),
    #[error("invalid URL {0}")]
    Url(String),
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the server answered the SSE GET with HTTP {0}")]
    Status(u16),
    #[error("the server's answer to the SSE GET is not an event stream (content type {0:?})")]
    NotEventStream(Option<String>),
    #[error("the server sent no endpoint event within {} s", ENDPOINT_TIMEOUT.as_secs())]
    NoEndpoint,
    #[error("the server's first event is {0:?}, not endpoint")]
    FirstEventNotEndpoint(String),
    #[error("the endpoint {0:?} is not on the stream's origin")]
    ForeignEndpoint(String),
    #[error("an event is larger than {MAX_EVENT_BYTES} bytes")]
    EventTooLarge,
    #[error("the event stream ended")]
    StreamEnded,
    #[error("the server answered a POST with HTTP {0}")]
    PostStatus(u16),
    /// Kept as the `source`, so the gateway finds it (`oauth::credential_error`) and shows it alone.
    #[error("{0}")]
    Credentials(#[from] CredentialError),
}

impl SseError {
    /// Whether the server refused the request's credentials.
    fn is_refusal(&self) -> bool {
        matches!(self, Self::Status(401) | Self::PostStatus(401))
    }
}

/// One event of the stream: its type (`message` when unnamed) and its data lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// An incremental reader of `text/event-stream` that never holds more than `max` bytes of one event.
#[derive(Debug)]
pub struct EventReader {
    line: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
    max: usize,
}

impl EventReader {
    pub fn new(max: usize) -> Self {
        Self {
            line: Vec::new(),
            event: String::new(),
            data: String::new(),
            has_data: false,
            max,
        }
    }

    /// Feeds `bytes`; returns the events they complete, or an error once an event outgrows the bound.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        for &byte in bytes {
            if byte != b'\n' {
                self.line.push(byte);
                if self.line.len() + self.data.len() > self.max {
                    return Err(SseError::EventTooLarge);
                }
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(event) = self.line_done(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        Ok(events)
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            let complete = std::mem::take(&mut self.has_data);
            return complete.then(|| SseEvent {
                event: if event.is_empty() {
                    "message".into()
                } else {
                    event
                },
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

/// A connected SSE session: the endpoint to post to and the messages read from the stream.
pub struct SseTransport {
    http: reqwest::Client,
    endpoint: Url,
    headers: HeaderMap,
    credentials: Option<Arc<Credentials>>,
    incoming: mpsc::Receiver<ServerJsonRpcMessage>,
    reader: tokio::task::JoinHandle<()>,
}

impl SseTransport {
    /// Opens `url`'s event stream (with `headers` on every request, and `credentials`' token when
    /// given) and waits for its endpoint.
    pub async fn connect(
        url: &str,
        headers: &BTreeMap<String, String>,
        credentials: Option<Arc<Credentials>>,
    ) -> Result<Self, SseError> {
        let base = Url::parse(url).map_err(|_| SseError::Url(url.to_string()))?;
        let headers = header_map(headers)?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let opened = tokio::time::timeout(ENDPOINT_TIMEOUT, async {
            let open = |token: Option<String>| {
                let request = http
                    .get(base.clone())
                    .headers(headers.clone())
                    .header(ACCEPT, "text/event-stream");
                async move {
                    let response = with_token(request, token).send().await?;
                    if !response.status().is_success() {
                        return Err(SseError::Status(response.status().as_u16()));
                    }
                    Ok(response)
                }
            };
            let response = authorized(credentials.as_deref(), open).await?;
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            if !content_type
                .as_deref()
                .is_some_and(|t| t.trim_start().starts_with("text/event-stream"))
            {
                return Err(SseError::NotEventStream(content_type));
            }
            let mut stream = response.bytes_stream();
            let mut reader = EventReader::new(MAX_EVENT_BYTES);
            let mut pending = Vec::new();
            let endpoint = loop {
                if let Some(first) = pending.first() {
                    let SseEvent { event, data } = first;
                    if event != "endpoint" {
                        return Err(SseError::FirstEventNotEndpoint(event.clone()));
                    }
                    let endpoint = same_origin_endpoint(&base, data.trim())?;
                    pending.remove(0);
                    break endpoint;
                }
                match stream.next().await {
                    Some(chunk) => pending.extend(reader.push(&chunk?)?),
                    None => return Err(SseError::StreamEnded),
                }
            };
            Ok((endpoint, stream, reader, pending))
        })
        .await
        .map_err(|_| SseError::NoEndpoint)??;
        let (endpoint, mut stream, mut reader, pending) = opened;
        tracing::debug!(endpoint = %endpoint.path(), "SSE session opened");
        let (sender, incoming) = mpsc::channel(QUEUE);
        let reader = tokio::spawn(async move {
            let mut events = pending;
            loop {
                for event in events.drain(..) {
                    if !deliver(&sender, event).await {
                        return;
                    }
                }
                events = match stream.next().await {
                    Some(Ok(chunk)) => match reader.push(&chunk) {
                        Ok(events) => events,
                        Err(e) => {
                            tracing::warn!("SSE stream closed: {e}");
                            return;
                        }
                    },
                    Some(Err(e)) => {
                        tracing::debug!("SSE stream failed: {e}");
                        return;
                    }
                    None => return,
                };
            }
        });
        Ok(Self {
            http,
            endpoint,
            headers,
            credentials,
            incoming,
            reader,
        })
    }
}

/// Runs `call` with `credentials`' token (renewed once after a 401), or with none.
async fn authorized<T, F, Fut>(credentials: Option<&Credentials>, call: F) -> Result<T, SseError>
where
    F: Fn(Option<String>) -> Fut,
    Fut: Future<Output = Result<T, SseError>>,
{
    match credentials {
        Some(credentials) => {
            credentials
                .authorized(call, SseError::is_refusal, SseError::Credentials)
                .await
        }
        None => call(None).await,
    }
}

/// `request` with the access token as its `Authorization: Bearer` header (marked sensitive).
fn with_token(request: reqwest::RequestBuilder, token: Option<String>) -> reqwest::RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// Whether a failed streamable-HTTP start is the spec's sign of an older server: its first POST was
/// answered with 400, 404 or 405 (not an authentication refusal, not a network failure).
pub fn suggests_legacy_sse(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(status) = e.downcast_ref::<reqwest::Error>().and_then(|r| r.status()) {
            return matches!(status.as_u16(), 400 | 404 | 405);
        }
        let text = e.to_string();
        if ["HTTP 400", "HTTP 404", "HTTP 405"]
            .iter()
            .any(|s| text.contains(s))
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Hands one event to the service: `message` events parsed as JSON-RPC (one that does not parse is
/// logged and skipped), others ignored. False once the service is gone.
async fn deliver(sender: &mpsc::Sender<ServerJsonRpcMessage>, event: SseEvent) -> bool {
    if event.event != "message" {
        tracing::debug!(event = %event.event, "SSE event ignored");
        return true;
    }
    match serde_json::from_str::<ServerJsonRpcMessage>(&event.data) {
        Ok(message) => sender.send(message).await.is_ok(),
        Err(e) => {
            tracing::warn!("SSE message is not JSON-RPC: {e}");
            true
        }
    }
}

/// The endpoint the server named, resolved against the stream's URL; refused unless it has the same
/// scheme, host and port.
fn same_origin_endpoint(base: &Url, endpoint: &str) -> Result<Url, SseError> {
    let foreign = || SseError::ForeignEndpoint(endpoint.chars().take(256).collect());
    let url = base.join(endpoint).map_err(|_| foreign())?;
    if url.scheme() != base.scheme()
        || url.host_str() != base.host_str()
        || url.port_or_known_default() != base.port_or_known_default()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(foreign());
    }
    Ok(url)
}

fn header_map(headers: &BTreeMap<String, String>) -> Result<HeaderMap, SseError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| SseError::Header(name.clone(), e.to_string()))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| SseError::Header(name.clone(), "a value HTTP cannot carry".into()))?;
        map.insert(header, value);
    }
    Ok(map)
}

impl Transport<RoleClient> for SseTransport {
    type Error = SseError;

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let http = self.http.clone();
        let endpoint = self.endpoint.clone();
        let headers = self.headers.clone();
        let credentials = self.credentials.clone();
        let session = self.reader.abort_handle();
        async move {
            let post = |token: Option<String>| {
                let request = http
                    .post(endpoint.clone())
                    .headers(headers.clone())
                    .timeout(POST_TIMEOUT)
                    .json(&item);
                async move {
                    let response = with_token(request, token).send().await?;
                    let status = response.status();
                    if !status.is_success() {
                        return Err(SseError::PostStatus(status.as_u16()));
                    }
                    Ok(())
                }
            };
            let sent = authorized(credentials.as_deref(), post).await;
            if let Err(SseError::PostStatus(404)) = sent {
                tracing::info!("the server no longer knows the SSE session; closing it");
                session.abort();
            }
            sent
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<ServerJsonRpcMessage>> + Send {
        self.incoming.recv()
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.reader.abort();
        self.incoming.close();
        Ok(())
    }
}

impl Drop for SseTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_across_chunks_and_line_endings() {
        let mut reader = EventReader::new(1024);
        let mut events = reader
            .push(b": comment\r\nevent: endpoint\r\ndata: /messages/?session_id=1\r\n\r\nda")
            .expect("events");
        events.extend(reader.push(b"ta: {\"a\":\ndata: 1}\n\n").expect("events"));
        assert_eq!(
            events,
            [
                SseEvent {
                    event: "endpoint".into(),
                    data: "/messages/?session_id=1".into()
                },
                SseEvent {
                    event: "message".into(),
                    data: "{\"a\":\n1}".into()
                }
            ]
        );
    }

    #[test]
    fn an_event_past_the_bound_is_an_error_even_without_newlines() {
        let mut reader = EventReader::new(64);
        assert!(matches!(
            reader.push(&[b'x'; 100]),
            Err(SseError::EventTooLarge)
        ));
        let mut reader = EventReader::new(64);
        let lines = "data: 0123456789\n".repeat(8);
        assert!(matches!(
            reader.push(lines.as_bytes()),
            Err(SseError::EventTooLarge)
        ));
    }

    #[test]
    fn endpoints_must_stay_on_the_streams_origin() {
        let base = Url::parse("http://127.0.0.1:8000/sse").expect("url");
        let same = same_origin_endpoint(&base, "/messages/?session_id=ab").expect("same origin");
        assert_eq!(
            same.as_str(),
            "http://127.0.0.1:8000/messages/?session_id=ab"
        );
        assert!(same_origin_endpoint(&base, "http://127.0.0.1:8000/m").is_ok());
        for hostile in [
            "http://evil.example/messages",
            "//evil.example/messages",
            "https://127.0.0.1:8000/messages",
            "http://127.0.0.1:8001/messages",
            "http://user:pw@127.0.0.1:8000/messages",
        ] {
            assert!(
                same_origin_endpoint(&base, hostile).is_err(),
                "{hostile} accepted"
            );
        }
    }
}
