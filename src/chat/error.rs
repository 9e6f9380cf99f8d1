//! `ChatError`: every way a chat request can fail between its parsed body and its last token, typed, so
//! that the server's one error table (and nothing else) decides statuses and shapes.

use crate::mcp::McpError;
use crate::scheduler::{GenerationError, SubmitError};
use crate::tools::ToolError;
use crate::validation::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// A parameter or the prompt failed validation.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// `tools` or `tool_choice` are malformed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The gateway refused a request's MCP tools; `param` names the entry.
    #[error("{error}")]
    Mcp { error: McpError, param: String },
    /// The caller may not use what it asked for (MCP tools with an unknown key).
    #[error("{0}")]
    Forbidden(String),
    /// The chat template failed on these messages.
    #[error("{message}")]
    Template {
        field: &'static str,
        message: String,
    },
    /// A text is longer than the model's context could ever hold (refused before tokenizing it).
    #[error(
        "This model's maximum context length is {context} tokens, and the {field} is {bytes} bytes, more than such a context can hold (at most {limit} bytes are tokenized). Please reduce the length of the {field}."
    )]
    PromptTooLong {
        field: &'static str,
        bytes: usize,
        limit: usize,
        context: usize,
    },
    /// Tokenizing failed for another reason.
    #[error("{message}")]
    Tokenize {
        field: &'static str,
        message: String,
    },
    /// A grammar (`response_format`, `format`, a tool schema) does not compile.
    #[error("invalid {field}: {message}")]
    Grammar {
        field: &'static str,
        message: String,
    },
    /// Rendering and tokenizing the prompt took longer than its deadline.
    #[error(
        "preparing the prompt took longer than {seconds} s (the model's chat template or the prompt's size)"
    )]
    PromptDeadline { seconds: u64 },
    /// The model's queue is full or its scheduler stopped.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// Generation failed inside the scheduler.
    #[error(transparent)]
    Generation(#[from] GenerationError),
    /// A chat or completion asked of a model that only embeds or ranks.
    #[error("model {model} is an encoder ({capability} only): it cannot chat or complete text")]
    NotGenerative {
        model: String,
        capability: &'static str,
    },
    /// The server failed on this request (a panic in a worker, a lost channel): a 500.
    #[error("{0}")]
    Internal(String),
}

impl ChatError {
    /// A gateway error about the request's MCP entry `param`.
    pub fn mcp(error: McpError, param: impl Into<String>) -> Self {
        ChatError::Mcp {
            error,
            param: param.into(),
        }
    }
}
