//! model-runner: a local LLM model runner. The `model` binary drives it; see ARCHITECTURE.md for the map.
// rmcp's service futures nest deeply; computing their layout needs more than the default depth.
#![recursion_limit = "256"]

pub mod allocator;
pub mod artifact;
pub mod chat;
pub mod cli;
pub mod digest;
pub mod engine;
pub mod huggingface;
pub mod mcp;
pub mod metrics;
pub mod package;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod tools;
pub mod validation;
