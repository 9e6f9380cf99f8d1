//! The chat pipeline every API shape shares: a request translated into a `ChatInput` is validated
//! (`ValidChat`), prepared (template, tools, grammar), submitted to the model's scheduler and collected
//! or streamed (`Generation`); `tool_loop` runs MCP tools server-side over the same pipeline. Nothing
//! here knows HTTP or any API's JSON: handlers in `server/` translate in and out, and `ChatError` is
//! turned into statuses by the server's one error table.
//!
//! Architecture Invariant: there is one copy of validate -> prepare -> submit -> collect, `pipeline`.

pub mod answer;
pub mod error;
pub mod generation;
pub mod mcp_tools;
pub mod pipeline;
pub mod prompt;
pub mod reasoning;
pub mod structured;
pub mod tool_loop;

pub use answer::{Answer, AnswerEvent, AnswerParser, read_answer};
pub use error::ChatError;
pub use generation::{Choice, ChoiceEvent, total_usage};
pub use pipeline::{ChatInput, Generation, PromptInput, ToolsInput, ValidChat};
pub use reasoning::{Reasoning, ReasoningFormat, ReasoningInput, ReasoningOutput};
pub use structured::OutputFormat;
