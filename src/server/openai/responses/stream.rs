//! The Responses event stream: `response.created`, `response.in_progress`, each output item opened,
//! filled by deltas and closed (`output_item.added` ... `output_item.done`), then `response.completed`,
//! `.incomplete` or `.failed`; every event numbered by `sequence_number`, sent as SSE with its type as the
//! event name. The answer is generated in a task that stops (cancelling the generation) when the client
//! goes away.

use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::items::{self, new_id};
use super::mcp::{self, McpRun};
use super::{Envelope, ToStore, status_of};
use crate::chat::tool_loop::LoopEvent;
use crate::chat::{AnswerEvent, AnswerParser, ChatError, ChoiceEvent, Generation};
use crate::engine::FinishReason;
use crate::scheduler::Usage;
use crate::server::errors::ApiError;

/// The numbered events of one stream.
pub(super) struct Events {
    sequence: u64,
    sender: mpsc::UnboundedSender<Value>,
    closed: bool,
}

impl Events {
    fn new(sender: mpsc::UnboundedSender<Value>) -> Self {
        Self {
            sequence: 0,
            sender,
            closed: false,
        }
    }

    /// Sends event `kind` with `body`'s fields.
    pub(super) fn send(&mut self, kind: &str, mut body: Value) {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        if self.sender.send(body).is_err() {
            self.closed = true;
        }
    }
}

/// The item open in the stream.
enum Open {
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// The output items of a streamed response, as they are opened, filled and closed.
#[derive(Default)]
pub(super) struct Output {
    pub(super) items: Vec<Value>,
    open: Option<Open>,
    /// Whitespace held back before a message opens (a call may follow instead).
    pending: String,
}

impl Output {
    fn index(&self) -> usize {
        self.items.len()
    }

    /// Answer text: opens the message item when the text is more than whitespace.
    pub(super) fn content(&mut self, events: &mut Events, text: &str) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            if text.trim().is_empty() {
                self.pending.push_str(text);
                return;
            }
            self.open_message(events);
        }
        let delta = std::mem::take(&mut self.pending) + text;
        let index = self.index();
        if let Some(Open::Message { id, text }) = self.open.as_mut() {
            text.push_str(&delta);
            events.send(
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta,
                       "logprobs": []}),
            );
        }
    }

    fn open_message(&mut self, events: &mut Events) {
        let id = new_id("msg");
        let item = items::message_item(&id, "", "in_progress");
        self.open_item(events, &id, item, items::output_text_part(""));
        self.open = Some(Open::Message {
            id,
            text: String::new(),
        });
    }

    /// Closes the open item and announces `item` (its parts emptied) with its first, empty `part`.
    fn open_item(&mut self, events: &mut Events, id: &str, mut item: Value, part: Value) {
        self.close(events, "completed");
        let index = self.index();
        item["content"] = json!([]);
        events.send(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        );
        events.send(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
        );
    }

    /// The model's thinking: opens a `reasoning` item with one `reasoning_text` part.
    pub(super) fn reasoning(&mut self, events: &mut Events, text: &str) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            let id = new_id("rs");
            let item = items::reasoning_item(&id, "");
            let part = json!({"type": "reasoning_text", "text": ""});
            self.open_item(events, &id, item, part);
            self.open = Some(Open::Reasoning {
                id,
                text: String::new(),
            });
        }
        let index = self.index();
        if let Some(Open::Reasoning { id, text: all }) = self.open.as_mut() {
            all.push_str(text);
            events.send(
                "response.reasoning_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text}),
            );
        }
    }

    /// A function call starts.
    pub(super) fn call_start(&mut self, events: &mut Events, call_id: &str, name: &str) {
        self.close(events, "completed");
        self.pending.clear();
        let id = new_id("fc");
        events.send(
            "response.output_item.added",
            json!({"output_index": self.index(),
                   "item": items::function_call_item(&id, call_id, name, "", "in_progress")}),
        );
        self.open = Some(Open::Call {
            id,
            call_id: call_id.into(),
            name: name.into(),
            arguments: String::new(),
        });
    }

    /// More of the open call's arguments.
    pub(super) fn call_arguments(&mut self, events: &mut Events, delta: &str) {
        let index = self.index();
        if let Some(Open::Call { id, arguments, .. }) = self.open.as_mut() {
            arguments.push_str(delta);
            events.send(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": delta}),
            );
        }
    }

    /// Closes the open item, if any, in `status`.
    pub(super) fn close(&mut self, events: &mut Events, status: &str) {
        let index = self.index();
        let item = match self.open.take() {
            None => return,
            Some(Open::Reasoning { id, text }) => {
                events.send(
                    "response.reasoning_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
                );
                events.send(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": {"type": "reasoning_text", "text": text}}),
                );
                items::reasoning_item(&id, &text)
            }
            Some(Open::Message { id, text }) => {
                events.send(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text,
                           "logprobs": []}),
                );
                events.send(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": items::output_text_part(&text)}),
                );
                items::message_item(&id, &text, status)
            }
            Some(Open::Call {
                id,
                call_id,
                name,
                arguments,
            }) => {
                events.send(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "name": name,
                           "arguments": arguments}),
                );
                items::function_call_item(&id, &call_id, &name, &arguments, "completed")
            }
        };
        events.send(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        self.items.push(item);
    }

    /// A whole item at once (`mcp_list_tools`, an `mcp_call`, an approval request).
    pub(super) fn item(&mut self, events: &mut Events, item: Value, progress: &[&str]) {
        self.close(events, "completed");
        let index = self.index();
        let id = item["id"].clone();
        let mut added = item.clone();
        if added.get("status").is_some() {
            added["status"] = json!("in_progress");
        }
        events.send(
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        for kind in progress {
            events.send(kind, json!({"item_id": id, "output_index": index}));
        }
        events.send(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        self.items.push(item);
    }

    /// Ends the output: the open item closed; a response with no item gets an empty message.
    pub(super) fn finish(&mut self, events: &mut Events, status: &str) {
        self.close(events, status);
        if self.items.is_empty() {
            self.open_message(events);
            let pending = std::mem::take(&mut self.pending);
            if !pending.is_empty() {
                self.content(events, &pending);
            }
            self.close(events, status);
        }
    }

    fn answer_event(&mut self, events: &mut Events, event: AnswerEvent) {
        match event {
            AnswerEvent::Reasoning(text) => self.reasoning(events, &text),
            AnswerEvent::Content(text) => self.content(events, &text),
            AnswerEvent::CallStart { id, name, .. } => self.call_start(events, &id, &name),
            AnswerEvent::CallArguments { delta, .. } => self.call_arguments(events, &delta),
        }
    }
}

/// The opening events every stream shares.
fn open(events: &mut Events, envelope: &Envelope) {
    let response = envelope.object("in_progress", Vec::new(), None, None);
    events.send("response.created", json!({"response": response}));
    events.send("response.in_progress", json!({"response": response}));
}

/// The closing event: the whole response, stored first when asked.
async fn close(
    events: &mut Events,
    envelope: &Envelope,
    output: Output,
    usage: Usage,
    finish: Option<FinishReason>,
    to_store: Option<ToStore>,
) {
    let status = status_of(finish);
    let response = envelope.object(status, output.items, Some(usage), finish);
    if let Some(to_store) = to_store {
        to_store.put(&response).await;
    }
    let kind = if status == "incomplete" {
        "response.incomplete"
    } else {
        "response.completed"
    };
    events.send(kind, json!({"response": response}));
}

/// `response.failed`, with the error in the error table's words.
fn fail(events: &mut Events, envelope: &Envelope, output: Output, error: ApiError) {
    let mut response = envelope.object("failed", output.items, None, None);
    response["error"] =
        json!({"code": error.code.unwrap_or("server_error"), "message": error.message});
    events.send("response.failed", json!({"response": response}));
}

/// The SSE response over a task's events.
fn sse(receiver: mpsc::UnboundedReceiver<Value>) -> Response {
    let stream = UnboundedReceiverStream::new(receiver).map(|event| {
        let kind = event["type"].as_str().unwrap_or("message").to_string();
        Ok::<_, Infallible>(SseEvent::default().event(kind).data(event.to_string()))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Streams one generation: text as `output_text` deltas, calls as `function_call` items.
pub(super) fn chat_stream(
    generation: Generation,
    envelope: Envelope,
    to_store: Option<ToStore>,
) -> Response {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = Events::new(sender);
        open(&mut events, &envelope);
        let mut parser = AnswerParser::new(generation.tool_format, generation.reasoning);
        let mut output = Output::default();
        let mut stream = Box::pin(generation.events());
        while let Some(event) = stream.next().await {
            match event {
                ChoiceEvent::Token { text, .. } => {
                    for piece in parser.push(&text) {
                        output.answer_event(&mut events, piece);
                    }
                }
                ChoiceEvent::Done {
                    finish,
                    text,
                    usage,
                    ..
                } => {
                    for piece in parser.push_last(&text, true) {
                        output.answer_event(&mut events, piece);
                    }
                    output.finish(&mut events, status_of(Some(finish)));
                    close(
                        &mut events,
                        &envelope,
                        output,
                        usage,
                        Some(finish),
                        to_store,
                    )
                    .await;
                    return;
                }
                ChoiceEvent::Failed(e) => {
                    fail(
                        &mut events,
                        &envelope,
                        output,
                        ChatError::Generation(e).into(),
                    );
                    return;
                }
            }
            if events.closed {
                return;
            }
        }
        let stopped =
            ApiError::internal("the model's scheduler stopped before the answer was complete");
        fail(&mut events, &envelope, output, stopped);
    });
    sse(receiver)
}

/// Streams an MCP tool loop: tool lists, each `mcp_call` as it starts and ends, the answer's text.
pub(super) fn mcp_stream(run: McpRun, envelope: Envelope, to_store: Option<ToStore>) -> Response {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = Events::new(sender);
        open(&mut events, &envelope);
        let mut output = Output::default();
        for item in run.list_items() {
            output.item(
                &mut events,
                item,
                &[
                    "response.mcp_list_tools.in_progress",
                    "response.mcp_list_tools.completed",
                ],
            );
        }
        let approval = run.approval.clone();
        let mut stream = Box::pin(run.into_loop().stream());
        while let Some(event) = stream.next().await {
            match event {
                LoopEvent::Content(text) => output.content(&mut events, &text),
                LoopEvent::Reasoning(text) => output.reasoning(&mut events, &text),
                LoopEvent::CallStarted { .. } => {}
                LoopEvent::CallFinished { record, .. } => {
                    let item = mcp::call_item(&record);
                    let done = if record.failed() {
                        "response.mcp_call.failed"
                    } else {
                        "response.mcp_call.completed"
                    };
                    output.item(&mut events, item, &["response.mcp_call.in_progress", done]);
                }
                LoopEvent::Ended(Ok(outcome)) => {
                    output.close(&mut events, "completed");
                    for item in mcp::client_call_items(&approval, &outcome.client_calls) {
                        output.item(&mut events, item, &[]);
                    }
                    output.finish(&mut events, status_of(outcome.finish));
                    close(
                        &mut events,
                        &envelope,
                        output,
                        outcome.usage,
                        outcome.finish,
                        to_store,
                    )
                    .await;
                    return;
                }
                LoopEvent::Ended(Err(error)) => {
                    fail(&mut events, &envelope, output, error.into());
                    return;
                }
            }
            if events.closed {
                return;
            }
        }
    });
    sse(receiver)
}
