//! The seam to the schedulers: submit one validated request per choice, then either collect every choice
//! whole or merge their events into one stream. Dropping the stream (a client that disconnects) drops the
//! receivers, which cancels the sequences at the next step.
//!
//! A generation of a client with a daily token quota is charged to its `TokenAccount` by the receivers:
//! the usage the engine reports when a choice ends, or, when a receiver is dropped first (a client that
//! disconnected mid-stream), the prompt and every token generated until then.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::ChatError;
use crate::engine::FinishReason;
use crate::engine::sampler::SampledToken;
use crate::mcp::TokenAccount;
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

/// One choice's events, charging its tokens to an account (when there is one) as it ends.
pub struct ChoiceReceiver {
    rx: mpsc::UnboundedReceiver<Event>,
    charge: Option<Charge>,
}

/// What a choice owes its account until it ends.
struct Charge {
    account: TokenAccount,
    /// The prompt's tokens, for the first choice only (choices share one prompt).
    prompt: u64,
    /// Tokens generated so far.
    generated: u64,
    first: bool,
}

impl Charge {
    fn settle(self, usage: Option<Usage>) {
        let tokens = match usage {
            Some(u) => {
                let prompt = if self.first { u.prompt_tokens } else { 0 };
                (prompt + u.completion_tokens) as u64
            }
            None => self.prompt + self.generated,
        };
        self.account.spend(tokens);
    }
}

impl ChoiceReceiver {
    fn new(rx: mpsc::UnboundedReceiver<Event>, charge: Option<Charge>) -> Self {
        Self { rx, charge }
    }

    async fn recv(&mut self) -> Option<Event> {
        let event = self.rx.recv().await;
        self.observe(event.as_ref());
        event
    }

    /// Counts a generated token, or settles the charge when the choice ends.
    fn observe(&mut self, event: Option<&Event>) {
        match event {
            Some(Event::Token { .. }) => {
                if let Some(charge) = self.charge.as_mut() {
                    charge.generated += 1;
                }
            }
            Some(Event::Done { usage, .. }) => {
                if let Some(charge) = self.charge.take() {
                    charge.settle(Some(*usage));
                }
            }
            Some(Event::Failed(_)) | None => {
                if let Some(charge) = self.charge.take() {
                    charge.settle(None);
                }
            }
        }
    }
}

impl Stream for ChoiceReceiver {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(event) = &polled {
            self.observe(event.as_ref());
        }
        polled
    }
}

impl Drop for ChoiceReceiver {
    /// A choice dropped before its end (the client went away) pays for what was generated: the events
    /// still queued are counted too.
    fn drop(&mut self) {
        while self.charge.is_some() {
            match self.rx.try_recv() {
                Ok(event) => self.observe(Some(&event)),
                Err(_) => self.observe(None),
            }
        }
    }
}

/// Submits `n` copies of `request` (seeds offset per choice so that choices differ), charged to
/// `account` when given.
pub fn submit(
    model: &LoadedModel,
    request: &ValidRequest,
    n: usize,
    account: Option<&TokenAccount>,
) -> Result<Vec<ChoiceReceiver>, ChatError> {
    (0..n)
        .map(|i| {
            let mut r = request.clone();
            if let Some(seed) = r.sampling.seed.as_mut() {
                *seed = seed.wrapping_add(i as u64);
            }
            let charge = account.map(|account| Charge {
                account: account.clone(),
                prompt: if i == 0 {
                    request.prompt.len() as u64
                } else {
                    0
                },
                generated: 0,
                first: i == 0,
            });
            Ok(ChoiceReceiver::new(model.scheduler.submit(r)?, charge))
        })
        .collect()
}

/// Waits for every choice to finish.
pub async fn collect(receivers: Vec<ChoiceReceiver>) -> Result<Vec<Choice>, ChatError> {
    let mut choices = Vec::with_capacity(receivers.len());
    for rx in receivers {
        choices.push(collect_choice(rx, |_, _| {}).await?);
    }
    Ok(choices)
}

/// Waits for one choice to finish, handing each piece of its text to `on_text` as it comes (`true`
/// with the last piece).
pub async fn collect_choice(
    mut rx: ChoiceReceiver,
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
pub fn merged(receivers: Vec<ChoiceReceiver>) -> impl futures::Stream<Item = ChoiceEvent> + Send {
    futures::stream::select_all(receivers.into_iter().enumerate().map(|(index, rx)| {
        rx.map(move |event| match event {
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
