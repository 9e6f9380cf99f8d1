//! The API request bodies without a model: fuzzed bytes parsed (`server::openai::parse_body`) as each
//! request type of the OpenAI and Ollama APIs, then what the handlers do before a model is involved:
//! generation parameters through `validation::validate`, `tools`/`tool_choice` through `tools::parse_tools`,
//! `parse_choice` and a `ToolPlan` per format (messages prepared, grammar built), `response_format` and
//! Ollama's `format` through `server::structured`, and every resulting grammar compiled against a tiny
//! byte-level vocabulary (lazy static).
//!
//! The handlers' own translations (`SamplingFields::params`, `Options::params`, `to_chat_messages`,
//! `keep_alive`) are private; the mapping to `GenerationParams` is restated here as they do it.
#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use model_runner::engine::chat_template::ChatMessage;
use model_runner::engine::grammar::{Grammar, GrammarSpec};
use model_runner::engine::tokenizer::Tokenizer;
use model_runner::chat::structured;
use model_runner::server::body::parse_body;
use model_runner::server::ollama;
use model_runner::server::openai::chat::{ChatRequest, MessageContent};
use model_runner::server::openai::completions::CompletionRequest;
use model_runner::server::openai::embeddings::EmbeddingRequest;
use model_runner::server::openai::{SamplingFields, StopField};
use model_runner::tools::{ToolFormat, ToolPlan, parse_choice, parse_tools};
use model_runner::validation::{GenerationParams, validate};
use serde_json::Value;

const VOCAB: usize = 49_152;
const CONTEXT: usize = 4096;

fn grammar() -> &'static Grammar {
    static GRAMMAR: OnceLock<Grammar> = OnceLock::new();
    GRAMMAR.get_or_init(|| {
        let tokenizer = Tokenizer::from_gguf(&fuzz_support::tiny_tokenizer_metadata(0)).unwrap();
        Grammar::new(Arc::new(tokenizer)).unwrap()
    })
}

fn compile(spec: Option<GrammarSpec>) {
    if let Some(spec) = spec
        && let Ok(mut constraint) = grammar().compile(&spec)
    {
        let _ = constraint.allowed();
    }
}

fn check_params(params: &GenerationParams, prompt_len: usize) {
    let _ = validate(
        vec![1; prompt_len.clamp(1, CONTEXT + 1)],
        None,
        params,
        VOCAB,
        CONTEXT,
    );
}

fn tools_and_messages(tools: Option<&Value>, choice: Option<&Value>, messages: Vec<ChatMessage>) {
    let parsed = match tools {
        Some(tools) => match parse_tools(tools) {
            Ok(parsed) => parsed,
            Err(e) => {
                let _ = e.param();
                return;
            }
        },
        None => Vec::new(),
    };
    let Ok(choice) = parse_choice(choice, &parsed) else {
        return;
    };
    for format in [ToolFormat::Generic, ToolFormat::Hermes, ToolFormat::Mistral, ToolFormat::Llama3] {
        for parallel in [false, true] {
            let Some(plan) = ToolPlan::new(format, parsed.clone(), choice.clone(), parallel) else {
                continue;
            };
            let _ = plan.template_tools();
            let mut prepared = messages.clone();
            plan.prepare_messages(&mut prepared);
            let spec = plan.grammar(|text| (text.len() < 16).then_some(VOCAB as u32 - 1));
            if format == ToolFormat::Generic || format == ToolFormat::Hermes {
                compile(spec);
            }
        }
    }
}

fn openai_chat(body: &Bytes) {
    let (Ok(request), Ok(sampling)) = (
        parse_body::<ChatRequest>(body),
        parse_body::<SamplingFields>(body),
    ) else {
        return;
    };
    let messages: Vec<ChatMessage> = request
        .messages
        .iter()
        .map(|m| {
            let content = match &m.content {
                Some(MessageContent::Text(t)) => t.clone(),
                Some(MessageContent::Parts(parts)) => {
                    parts.iter().filter_map(|p| p.text.clone()).collect()
                }
                None => String::new(),
            };
            let mut message = ChatMessage::new(&m.role, content);
            message.tool_calls = m.tool_calls.clone();
            message.tool_call_id = m.tool_call_id.clone();
            message.name = m.name.clone();
            message
        })
        .collect();
    let prompt_len = messages.iter().map(|m| m.content.len() / 4 + 4).sum();
    check_params(&openai_params(sampling, request.top_logprobs), prompt_len);
    if let Ok(format) = structured::response_format(request.response_format.as_ref()) {
        compile(format.map(|f| f.spec));
    }
    tools_and_messages(request.tools.as_ref(), request.tool_choice.as_ref(), messages);
}

/// `SamplingFields::params`, restated (it is private).
fn openai_params(s: SamplingFields, top_logprobs: Option<i64>) -> GenerationParams {
    GenerationParams {
        max_tokens: s.max_completion_tokens.or(s.max_tokens),
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        min_p: s.min_p,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        repetition_penalty: s.repeat_penalty,
        seed: s.seed,
        stop: match s.stop {
            Some(StopField::One(one)) => vec![one],
            Some(StopField::Many(many)) => many,
            None => Vec::new(),
        },
        logit_bias: s.logit_bias,
        top_logprobs,
        ignore_eos: s.ignore_eos,
        context_size: None,
    }
}

/// `ollama::Options::params`, restated (it is private).
fn ollama_params(o: &ollama::Options) -> GenerationParams {
    GenerationParams {
        max_tokens: o.num_predict.filter(|n| *n >= 0),
        temperature: o.temperature,
        top_p: o.top_p,
        top_k: o.top_k,
        min_p: o.min_p,
        presence_penalty: o.presence_penalty,
        frequency_penalty: o.frequency_penalty,
        repetition_penalty: o.repeat_penalty,
        seed: o.seed,
        stop: o.stop.clone().unwrap_or_default(),
        context_size: o.num_ctx,
        ..Default::default()
    }
}

fuzz_target!(init: fuzz_support::single_threaded(), |data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    openai_chat(&body);
    if let (Ok(_), Ok(sampling)) = (
        parse_body::<CompletionRequest>(&body),
        parse_body::<SamplingFields>(&body),
    ) {
        check_params(&openai_params(sampling, None), 8);
    }
    let _ = parse_body::<EmbeddingRequest>(&body);
    if let Ok(request) = parse_body::<ollama::ChatRequest>(&body) {
        check_params(&ollama_params(&request.options), request.messages.len() + 1);
        if let Ok(format) = structured::ollama_format(request.format.as_ref()) {
            compile(format.map(|f| f.spec));
        }
        let messages = request
            .messages
            .iter()
            .map(|m| ChatMessage::new(&m.role, m.content.clone()))
            .collect();
        tools_and_messages(request.tools.as_ref(), None, messages);
    }
    if let Ok(request) = parse_body::<ollama::GenerateRequest>(&body) {
        check_params(&ollama_params(&request.options), request.prompt.len() / 4 + 1);
        if let Ok(format) = structured::ollama_format(request.format.as_ref()) {
            compile(format.map(|f| f.spec));
        }
    }
    let _ = parse_body::<ollama::ModelName>(&body);
    let _ = parse_body::<ollama::EmbedRequest>(&body);
});
