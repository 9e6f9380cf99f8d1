//! model-runner: a local LLM model runner. The `model` binary drives it; see ARCHITECTURE.md for the map.

pub mod artifact;
pub mod cli;
pub mod digest;
pub mod gguf;
pub mod huggingface;
pub mod package;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod store;
