//! The one set of server-sent-event builders for OpenAI's streams (chat, completions, the MCP tool
//! loop): each chunk's envelope, the `usage` chunk that closes a stream asked for it, and the SSE
//! response that ends with `data: [DONE]`. An error midway is sent as one event in the error table's shape.

use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use super::usage_json;
use crate::chat::total_usage;
use crate::scheduler::Usage;

/// The envelope every chunk of one stream shares.
#[derive(Debug, Clone)]
pub struct Chunks {
    id: String,
    /// `chat.completion.chunk` or `text_completion`.
    object: &'static str,
    created: i64,
    model: String,
}

impl Chunks {
    pub fn new(id: String, object: &'static str, created: i64, model: &str) -> Self {
        Self {
            id,
            object,
            created,
            model: model.to_string(),
        }
    }

    /// A chunk carrying `choices`.
    pub fn chunk(&self, choices: Value) -> Value {
        json!({"id": self.id, "object": self.object, "created": self.created, "model": self.model,
               "system_fingerprint": null, "choices": choices})
    }

    /// The chunk that closes a stream with `stream_options.include_usage`.
    pub fn usage(&self, usage: Usage) -> Value {
        let mut last = self.chunk(json!([]));
        last["usage"] = usage_json(usage);
        last
    }
}

/// Counts finished choices; gives the summed usage when the last one finishes.
pub struct UsageTally {
    usages: Vec<Usage>,
    open: usize,
}

impl UsageTally {
    pub fn new(choices: usize) -> Self {
        Self {
            usages: vec![Usage::default(); choices],
            open: choices,
        }
    }

    /// Choice `index` finished with `usage`; the total once every choice has.
    pub fn finish(&mut self, index: usize, usage: Usage) -> Option<Usage> {
        self.usages[index] = usage;
        self.open = self.open.saturating_sub(1);
        (self.open == 0).then(|| total_usage(self.usages.iter().copied()))
    }
}

/// An SSE response: every chunk, then `data: [DONE]`.
pub fn sse(
    chunks: impl Stream<Item = Value> + Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = chunks
        .map(|v| SseEvent::default().data(v.to_string()))
        .chain(futures::stream::once(async {
            SseEvent::default().data("[DONE]")
        }))
        .map(Ok);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_totals_once_the_last_choice_finishes() {
        let mut tally = UsageTally::new(2);
        let usage = Usage {
            prompt_tokens: 5,
            completion_tokens: 3,
            cached_tokens: 0,
        };
        assert_eq!(tally.finish(1, usage), None);
        let total = tally.finish(0, usage).unwrap();
        assert_eq!((total.prompt_tokens, total.completion_tokens), (5, 6));
    }

    #[test]
    fn chunks_share_their_envelope() {
        let chunks = Chunks::new("id-1".into(), "text_completion", 7, "m");
        let chunk = chunks.chunk(json!([]));
        assert_eq!(chunk["id"], "id-1");
        assert_eq!(chunk["object"], "text_completion");
        assert_eq!(chunks.usage(Usage::default())["usage"]["total_tokens"], 0);
    }
}
