//! The chat pipeline every API shape shares, written once: validate -> prepare -> submit -> collect.
//!
//! A handler translates its request into a `ChatInput`; `ValidChat::new` checks it against the model
//! before anything renders or compiles (parameters, token ids, tools, the output format); `prepare`
//! renders the prompt with the request's tools, compiles the grammar and hands both to validation as
//! inputs, which checks them against the context; `submit` starts one sequence per choice; the
//! returned `Generation` is collected whole or read as a stream of events.

use std::sync::Arc;

use super::ChatError;
use super::generation::{self, Choice, ChoiceEvent, ChoiceReceiver};
use super::prompt;
use super::reasoning::{Reasoning, ReasoningFormat, ReasoningInput, ReasoningOutput};
use super::structured::{self, OutputFormat};
use crate::engine::chat_template::ChatMessage;
use crate::engine::grammar::GrammarSpec;
use crate::mcp::TokenAccount;
use crate::runtime::LoadedModel;
use crate::scheduler::ValidRequest;
use crate::tools::{ToolFormat, ToolPlan, parse_choice, parse_tools};
use crate::validation::{self, GenerationParams, ValidParams, ValidationError};
use futures::Stream;
use serde_json::Value;

/// What the model is to continue.
#[derive(Debug, Clone)]
pub enum PromptInput {
    /// A conversation, rendered by the model's chat template.
    Messages(Vec<ChatMessage>),
    /// A text tokenized as it is (completions, Ollama's `raw`).
    Text(String),
    /// Token ids as the client gave them.
    Tokens(Vec<u32>),
}

/// The tools a conversation offers the model, as the request gave them (OpenAI's shapes).
#[derive(Debug, Clone, Default)]
pub struct ToolsInput {
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: bool,
}

/// One chat request, in no API's shape.
#[derive(Debug, Clone)]
pub struct ChatInput {
    pub prompt: PromptInput,
    /// The request field that prompt errors name (`messages`, `prompt`).
    pub prompt_field: &'static str,
    pub tools: ToolsInput,
    pub output: Option<OutputFormat>,
    pub params: GenerationParams,
    /// Choices to generate, as `validation::choices` allows.
    pub choices: usize,
    /// Thinking switched on or off, template variables, and whether thinking is split from the answer.
    pub reasoning: ReasoningInput,
    /// Where the generation's tokens are counted (a gateway client with a daily token quota).
    pub account: Option<TokenAccount>,
}

impl ChatInput {
    /// A conversation with default tools and output, one choice.
    pub fn messages(messages: Vec<ChatMessage>, params: GenerationParams) -> Self {
        Self {
            prompt: PromptInput::Messages(messages),
            prompt_field: "messages",
            tools: ToolsInput::default(),
            output: None,
            params,
            choices: 1,
            reasoning: ReasoningInput::default(),
            account: None,
        }
    }
}

/// A chat input checked against its model: nothing rendered or compiled yet.
pub struct ValidChat {
    prompt: PromptInput,
    prompt_field: &'static str,
    plan: Option<ToolPlan>,
    format: ToolFormat,
    /// The grammar the answer must follow, and the field it came from.
    grammar: Option<(GrammarSpec, &'static str)>,
    params: ValidParams,
    choices: usize,
    reasoning: ReasoningInput,
    /// How the model marks its thinking; `None` when it does not think or it is left raw.
    reasoning_format: Option<ReasoningFormat>,
    account: Option<TokenAccount>,
}

impl ValidChat {
    /// Validates `input` for `model`: its parameters, its token ids, its tools and output format.
    pub fn new(model: &LoadedModel, input: ChatInput) -> Result<Self, ChatError> {
        if !model.generates {
            return Err(ChatError::NotGenerative {
                model: model.name.clone(),
                capability: if model.ranks() { "rerank" } else { "embedding" },
            });
        }
        let params = validation::check(&input.params, model.vocab_size)?;
        if let PromptInput::Tokens(ids) = &input.prompt {
            validation::prompt_ids(ids, model.vocab_size)?;
        }
        let tools = match &input.tools.tools {
            None | Some(Value::Null) => Vec::new(),
            Some(t) => parse_tools(t)?,
        };
        let choice = parse_choice(input.tools.tool_choice.as_ref(), &tools)?;
        let format = ToolFormat::detect(model.template.source());
        let plan = ToolPlan::new(format, tools, choice, input.tools.parallel_tool_calls);
        let tool_grammar = plan
            .as_ref()
            .and_then(|p| p.grammar(|text| model.tokenizer.token_id(text)));
        let grammar = match (tool_grammar, input.output) {
            (Some(_), Some(output)) => {
                let field = output.field;
                return Err(ValidationError::invalid(
                    field,
                    format!(
                        "{field} cannot be combined with tools on this model: the tool format already constrains the answer"
                    ),
                )
                .into());
            }
            (Some(g), None) => Some((g, "tools")),
            (None, output) => output.map(|o| (o.spec, o.field)),
        };
        let mut reasoning = input.reasoning;
        // A reasoning budget of 0 (`model configure`) switches thinking off unless the request asks.
        if reasoning.enable.is_none() && model.settings.thinking_disabled() {
            reasoning.enable = Some(false);
        }
        let reasoning_format = match reasoning.output {
            ReasoningOutput::Split => ReasoningFormat::detect(model.template.source()),
            ReasoningOutput::Raw => None,
        };
        Ok(Self {
            prompt: input.prompt,
            prompt_field: input.prompt_field,
            plan,
            format,
            grammar,
            params,
            choices: input.choices,
            reasoning,
            reasoning_format,
            account: input.account,
        })
    }
}

/// A chat made ready for the scheduler.
pub struct PreparedChat {
    pub request: ValidRequest,
    pub choices: usize,
    /// Set when the answer is to be read for tool calls.
    pub tool_format: Option<ToolFormat>,
    /// Set when the answer's thinking is to be split from it.
    pub reasoning: Option<Reasoning>,
    /// Where the generation's tokens are counted.
    pub account: Option<TokenAccount>,
}

/// Renders and tokenizes the prompt (with the tools, as the model's family expects them), compiles the
/// grammar, and validates both against the model's context.
pub async fn prepare(model: &Arc<LoadedModel>, chat: ValidChat) -> Result<PreparedChat, ChatError> {
    let field = chat.prompt_field;
    let constrained = chat.grammar.is_some();
    let (tokens, reasoning) = match chat.prompt {
        PromptInput::Messages(mut messages) => {
            let template_tools =
                crate::tools::template_input(chat.plan.as_ref(), chat.format, &mut messages);
            let variables = chat.reasoning.template_context();
            let rendered =
                prompt::chat_with(model, messages, template_tools, variables, field).await?;
            let reasoning = chat
                .reasoning_format
                .map(|f| Reasoning::for_prompt(f, &rendered.text, constrained));
            (rendered.tokens, reasoning)
        }
        // A prompt the client wrote whole: its continuation is not read for thinking.
        PromptInput::Text(text) => (
            prompt::texts(model, vec![text], field)
                .await?
                .pop()
                .unwrap_or_default(),
            None,
        ),
        PromptInput::Tokens(ids) => (ids, None),
    };
    let constraint = match chat.grammar {
        Some((spec, field)) => Some(structured::compile(model, spec, field).await?),
        None => None,
    };
    let request = chat
        .params
        .request(tokens, constraint, model.context_size)?;
    Ok(PreparedChat {
        request,
        choices: chat.choices,
        tool_format: chat.plan.map(|p| p.format),
        reasoning,
        account: chat.account,
    })
}

/// Starts the prepared chat's choices on the model's scheduler.
pub fn submit(model: &LoadedModel, chat: PreparedChat) -> Result<Generation, ChatError> {
    Ok(Generation {
        receivers: generation::submit(model, &chat.request, chat.choices, chat.account.as_ref())?,
        tool_format: chat.tool_format,
        reasoning: chat.reasoning,
    })
}

/// The whole pipeline up to the running generation: validate, prepare, submit.
pub async fn start(model: &Arc<LoadedModel>, input: ChatInput) -> Result<Generation, ChatError> {
    let valid = ValidChat::new(model, input)?;
    let prepared = prepare(model, valid).await?;
    submit(model, prepared)
}

/// Choices being generated.
pub struct Generation {
    receivers: Vec<ChoiceReceiver>,
    /// Set when the answer is to be read for tool calls.
    pub tool_format: Option<ToolFormat>,
    /// Set when the answer's thinking is to be split from it (read both with `answer::AnswerParser`).
    pub reasoning: Option<Reasoning>,
}

impl Generation {
    /// How many choices run.
    pub fn choices(&self) -> usize {
        self.receivers.len()
    }

    /// Waits for every choice to finish.
    pub async fn collect(self) -> Result<Vec<Choice>, ChatError> {
        generation::collect(self.receivers).await
    }

    /// Waits for the first choice, handing each piece of its text to `on_text` (`true` with the last).
    pub async fn collect_first(self, on_text: impl FnMut(&str, bool)) -> Result<Choice, ChatError> {
        let receiver = self
            .receivers
            .into_iter()
            .next()
            .ok_or_else(|| ChatError::Internal("the model produced no choice".into()))?;
        generation::collect_choice(receiver, on_text).await
    }

    /// Every choice's events, merged in the order they happen.
    pub fn events(self) -> impl Stream<Item = ChoiceEvent> + Send {
        generation::merged(self.receivers)
    }
}

/// Several generations as one, their choices in order (a completions request with several prompts).
pub fn join(generations: Vec<Generation>) -> Generation {
    let tool_format = generations.first().and_then(|g| g.tool_format);
    let reasoning = generations.first().and_then(|g| g.reasoning);
    Generation {
        receivers: generations.into_iter().flat_map(|g| g.receivers).collect(),
        tool_format,
        reasoning,
    }
}
