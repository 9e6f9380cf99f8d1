//! The server-side MCP tool loop: the model's calls of MCP tools run through the gateway in rounds —
//! calls of one round concurrently, results appended as tool messages — until the model answers, a
//! client-defined function is called (it goes back to the client as a tool call), or the round limit is
//! reached (then one last turn without tools). Each round is one pass of the chat pipeline. The loop
//! knows no HTTP: it reports progress as `LoopEvent`s and ends with an `Outcome`.

use std::collections::HashSet;
use std::sync::Arc;

use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::ChatError;
use super::answer::{AnswerEvent, AnswerParser, read_answer};
use super::mcp_tools::McpChat;
use super::pipeline::{self, ChatInput, ToolsInput};
use super::reasoning::ReasoningInput;
use super::structured;
use crate::engine::FinishReason;
use crate::engine::chat_template::ChatMessage;
use crate::mcp::{CallContext, CallRecord, Caller, Gateway, TokenAccount};
use crate::runtime::LoadedModel;
use crate::scheduler::Usage;
use crate::tools::parser::ToolCall;
use crate::validation::GenerationParams;

/// Everything one looped chat request needs.
pub struct ToolLoop {
    pub model: Arc<LoadedModel>,
    pub gateway: Arc<Gateway>,
    pub caller: Caller,
    pub messages: Vec<ChatMessage>,
    /// Client function tools and MCP function tools together, as OpenAI `tools`.
    pub tools: Value,
    /// Names the server runs itself (every other call goes back to the client).
    pub mcp_names: HashSet<String>,
    /// Servers the discovery meta-tools and `run_js` may reach.
    pub scope: Option<Vec<String>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: bool,
    pub params: GenerationParams,
    /// Every round's thinking switches and how its thinking is read.
    pub reasoning: ReasoningInput,
    /// Where every round's tokens are counted (the caller's daily token quota, when it has one).
    pub account: Option<TokenAccount>,
}

/// What the loop reports as it goes.
#[derive(Debug)]
pub enum LoopEvent {
    /// Answer text, as it is generated (tool calls held back).
    Content(String),
    /// The model's thinking, as it is generated.
    Reasoning(String),
    CallStarted {
        id: String,
        name: String,
        arguments: Value,
    },
    CallFinished {
        id: String,
        record: Box<CallRecord>,
    },
    /// The last event of a streamed loop.
    Ended(Result<Outcome, ChatError>),
}

/// What the loop ends with.
#[derive(Debug)]
pub struct Outcome {
    /// The answer's text (`None`: only client calls, no text).
    pub content: Option<String>,
    /// The model's thinking over every round (`None`: it wrote none).
    pub reasoning: Option<String>,
    /// Calls of the client's own functions, for the client to run.
    pub client_calls: Vec<ToolCall>,
    pub finish: Option<FinishReason>,
    /// Every MCP call the server ran.
    pub calls: Vec<CallRecord>,
    /// Tokens over every round.
    pub usage: Usage,
}

impl ToolLoop {
    /// A loop over `mcp`'s tools for `messages`.
    pub fn new(model: Arc<LoadedModel>, mcp: McpChat, messages: Vec<ChatMessage>) -> Self {
        let McpChat {
            gateway,
            caller,
            mut functions,
            selection,
        } = mcp;
        functions.extend(selection.functions);
        let account = gateway.token_account(&caller);
        Self {
            model,
            gateway,
            caller,
            messages,
            tools: Value::Array(functions),
            mcp_names: selection.names,
            scope: selection.scope,
            tool_choice: None,
            parallel_tool_calls: true,
            params: GenerationParams::default(),
            reasoning: ReasoningInput::default(),
            account,
        }
    }

    /// Runs the loop in a task; its events end with `LoopEvent::Ended`.
    pub fn stream(self) -> impl Stream<Item = LoopEvent> + Send {
        let (events, receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let outcome = self.run(Some(&events)).await;
            let _ = events.send(LoopEvent::Ended(outcome));
        });
        UnboundedReceiverStream::new(receiver)
    }

    /// Runs the loop to its outcome, reporting progress to `events` when given.
    pub async fn run(
        &self,
        events: Option<&mpsc::UnboundedSender<LoopEvent>>,
    ) -> Result<Outcome, ChatError> {
        let max_rounds = self.gateway.max_rounds();
        let mut messages = self.messages.clone();
        let mut calls: Vec<CallRecord> = Vec::new();
        let mut usage = Usage::default();
        // Calls already run (name and arguments): a model that repeats itself gets to answer instead.
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let mut answer_now = false;
        let mut reasoning: Option<String> = None;
        for round in 0..=max_rounds {
            let last = round == max_rounds || answer_now;
            let tool_choice = if last {
                Some(json!("none"))
            } else if round == 0 {
                self.tool_choice.clone()
            } else {
                None
            };
            let mut input = ChatInput::messages(messages.clone(), self.params.clone());
            input.reasoning = self.reasoning.clone();
            input.account = self.account.clone();
            input.tools = ToolsInput {
                tools: Some(self.tools.clone()),
                tool_choice,
                parallel_tool_calls: self.parallel_tool_calls,
            };
            let generation = pipeline::start(&self.model, input).await?;
            let (format, thinking) = (generation.tool_format, generation.reasoning);
            let mut parser = AnswerParser::new(format, thinking);
            let choice = generation
                .collect_first(|text, done| {
                    let Some(events) = events else {
                        return;
                    };
                    for event in parser.push_last(text, done) {
                        let _ = match event {
                            AnswerEvent::Reasoning(t) => events.send(LoopEvent::Reasoning(t)),
                            AnswerEvent::Content(t) => events.send(LoopEvent::Content(t)),
                            // Calls are run, or handed back whole, at the end of the round.
                            AnswerEvent::CallStart { .. } | AnswerEvent::CallArguments { .. } => {
                                Ok(())
                            }
                        };
                    }
                })
                .await?;
            usage.prompt_tokens += choice.usage.prompt_tokens;
            usage.cached_tokens += choice.usage.cached_tokens;
            usage.completion_tokens += choice.usage.completion_tokens;
            let answer = read_answer(format, thinking, &choice.text);
            if let Some(thought) = answer.reasoning {
                let all = reasoning.get_or_insert_default();
                if !all.is_empty() {
                    all.push_str("\n\n");
                }
                all.push_str(&thought);
            }
            if answer.calls.is_empty() {
                return Ok(Outcome {
                    content: Some(answer.content),
                    reasoning,
                    client_calls: Vec::new(),
                    finish: choice.finish,
                    calls,
                    usage,
                });
            }
            let (ours, theirs): (Vec<_>, Vec<_>) = answer
                .calls
                .into_iter()
                .partition(|c| self.mcp_names.contains(&c.name));
            let proposed = ours.len();
            let ours: Vec<_> = ours
                .into_iter()
                .filter(|c| seen.insert((c.name.clone(), canonical_arguments(&c.arguments))))
                .collect();
            if proposed > 0 && ours.is_empty() && theirs.is_empty() {
                tracing::debug!(
                    round,
                    "the model repeated calls it already made; asking for the answer"
                );
                answer_now = true;
                continue;
            }
            let records =
                futures::future::join_all(ours.iter().map(|call| self.call(call, events))).await;
            if !ours.is_empty() {
                messages.push(ChatMessage {
                    role: "assistant".into(),
                    content: answer.content.clone(),
                    tool_calls: Some(structured::tool_calls_json(&ours)),
                    tool_call_id: None,
                    name: None,
                });
                for (call, record) in ours.iter().zip(&records) {
                    messages.push(ChatMessage {
                        role: "tool".into(),
                        content: record.output_text(),
                        tool_calls: None,
                        tool_call_id: Some(call.id.clone()),
                        name: Some(call.name.clone()),
                    });
                }
            }
            calls.extend(records);
            if !theirs.is_empty() {
                let content = (!answer.content.trim().is_empty()).then_some(answer.content);
                return Ok(Outcome {
                    content,
                    reasoning,
                    client_calls: theirs,
                    finish: choice.finish,
                    calls,
                    usage,
                });
            }
        }
        Err(ChatError::Internal(
            "the tool loop ended without an answer".into(),
        ))
    }

    /// Runs one of the model's calls through the gateway: the loop's one call path (`run_js` included).
    async fn call(
        &self,
        call: &ToolCall,
        events: Option<&mpsc::UnboundedSender<LoopEvent>>,
    ) -> CallRecord {
        let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
        if let Some(events) = events {
            let _ = events.send(LoopEvent::CallStarted {
                id: call.id.clone(),
                name: call.name.clone(),
                arguments: arguments.clone(),
            });
        }
        let record = self
            .gateway
            .call(
                &CallContext::new(self.caller.clone()).scoped(self.scope.clone()),
                &call.name,
                arguments,
            )
            .await;
        if let Some(events) = events {
            let _ = events.send(LoopEvent::CallFinished {
                id: call.id.clone(),
                record: Box::new(record.clone()),
            });
        }
        record
    }
}

/// Arguments in a form where equal objects compare equal.
fn canonical_arguments(arguments: &str) -> String {
    serde_json::from_str::<Value>(arguments)
        .map_or_else(|_| arguments.to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_arguments_compare_equal_whatever_their_spacing() {
        assert_eq!(
            canonical_arguments(r#"{"a": 1,  "b": [1, 2]}"#),
            canonical_arguments(r#"{"a":1,"b":[1,2]}"#)
        );
        assert_eq!(canonical_arguments("not json"), "not json");
    }
}
