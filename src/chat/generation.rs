//! The seam to the schedulers: submit one validated request per choice, then either collect every choice
//! whole or merge their events into one stream. Dropping the stream (a client that disconnects) drops the
//! receivers, which cancels the sequences at the next step.

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::ChatError;
use crate::engine::FinishReason;
use crate::engine::sampler::SampledToken;
use crate::runtime::LoadedModel;
use crate::scheduler::{Event, GenerationError, Usage, ValidRequest};

/// A finished choice.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    pub text: String,
    pub tokens: Vec<SampledToken>,
    pub finish: Option<FinishReason>,
    pub usage: Usage,
}

/// One event of one choice, for streaming.
#[derive(Debug, Clone)]
pub enum ChoiceEvent {
    Token {
        index: usize,
        text: String,
        token: SampledToken,
    },
    Done {
        index: usize,
        finish: FinishReason,
        text: String,
        usage: Usage,
    },
    Failed(GenerationError),
}

/// Submits `n` copies of `request` (seeds offset per choice so that choices differ).
pub fn submit(
    model: &LoadedModel,
    request: &ValidRequest,
    n: usize,
) -> Result<Vec<mpsc::UnboundedReceiver<Event>>, ChatError> {
    (0..n)
        .map(|i| {
            let mut r = request.clone();
            if let Some(seed) = r.sampling.seed.as_mut() {
                *seed = seed.wrapping_add(i as u64);
            }
            Ok(model.scheduler.submit(r)?)
        })
        .collect()
}

/// Waits for every choice to finish.
pub async fn collect(
    receivers: Vec<mpsc::UnboundedReceiver<Event>>,
) -> Result<Vec<Choice>, ChatError> {
    let mut choices = Vec::with_capacity(receivers.len());
    for rx in receivers {
        choices.push(collect_choice(rx, |_, _| {}).await?);
    }
    Ok(choices)
}

/// Waits for one choice to finish, handing each piece of its text to `on_text` as it comes (`true`
/// with the last piece).
pub async fn collect_choice(
    mut rx: mpsc::UnboundedReceiver<Event>,
    mut on_text: impl FnMut(&str, bool),
) -> Result<Choice, ChatError> {
    let mut choice = Choice::default();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Token { text, token } => {
                on_text(&text, false);
                choice.text.push_str(&text);
                choice.tokens.push(token);
            }
            Event::Done {
                finish,
                usage,
                text,
            } => {
                on_text(&text, true);
                choice.text.push_str(&text);
                choice.finish = Some(finish);
                choice.usage = usage;
                break;
            }
            Event::Failed(e) => return Err(ChatError::Generation(e)),
        }
    }
    if choice.finish.is_none() {
        return Err(ChatError::Internal(
            "the model's scheduler stopped before the answer was complete".into(),
        ));
    }
    Ok(choice)
}

/// Every choice's events, merged in the order they happen.
pub fn merged(
    receivers: Vec<mpsc::UnboundedReceiver<Event>>,
) -> impl futures::Stream<Item = ChoiceEvent> + Send {
    futures::stream::select_all(receivers.into_iter().enumerate().map(|(index, rx)| {
        UnboundedReceiverStream::new(rx)
            .map(move |event| match event {
                Event::Token { text, token } => ChoiceEvent::Token { index, text, token },
                Event::Done {
                    finish,
                    usage,
                    text,
                } => ChoiceEvent::Done {
                    index,
                    finish,
                    text,
                    usage,
                },
                Event::Failed(e) => ChoiceEvent::Failed(e),
            })
            .boxed()
    }))
}

/// Usage summed over choices: the prompt counted once.
pub fn total_usage(usages: impl Iterator<Item = Usage>) -> Usage {
    let mut total = Usage::default();
    for u in usages {
        total.prompt_tokens = u.prompt_tokens;
        total.cached_tokens = u.cached_tokens;
        total.completion_tokens += u.completion_tokens;
    }
    total
}
