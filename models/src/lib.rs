//! Model architectures for model-runner: GGUF weights on candle, one forward pass over a packed batch of
//! many sequences, each with its own position and its own slice of a paged KV cache.
//!
//! Unlike candle-transformers' quantized models, which keep one KV cache inside the layers and one position
//! for the whole batch, a model here holds only weights: the cache and the batch layout come in with each
//! step, so sequences at different positions (prefill chunks and decodes) share one forward.

pub mod attention;
mod attention_math;
pub mod batch;
pub mod bert;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod decoder;
pub mod gemma2;
pub mod gemma3;
pub mod gguf;
pub mod gptoss;
pub mod granite;
pub mod kv_cache;
pub mod kv_layout;
pub mod layers;
pub mod llama;
pub mod moe;
pub mod mxfp4;
pub mod phi3;
pub mod qwen2;
pub mod qwen2moe;
pub mod qwen3;
pub mod qwen3moe;
pub mod shape;
pub mod smollm3;
pub mod weights;

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};

pub use batch::{DENSE_MIN_PROMPT, LogitsWanted, SequenceSlice, StepBatch};
pub use kv_cache::{BlockLease, BlockPool, KvLayer, OutOfBlocks, PagedKvCache};
pub use kv_layout::{KvLayout, KvType, StepTables};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: truncated or corrupt GGUF: {reason}")]
    Corrupt { path: String, reason: String },
    #[error(
        "unsupported model architecture {0:?} (supported: llama, qwen2, qwen2moe, qwen3, qwen3moe, gemma2, gemma3, phi3, smollm3, granite, granitemoe, gpt-oss, bert, nomic-bert, jina-bert-v2)"
    )]
    UnknownArchitecture(String),
    #[error("the GGUF lacks tensor {0}")]
    MissingTensor(String),
    #[error("the GGUF lacks metadata key {0}")]
    MissingMetadata(String),
    #[error("the GGUF metadata key {0} has an unexpected type")]
    BadMetadata(String),
    #[error("cannot load tensor {name}: {reason}")]
    Tensor { name: String, reason: String },
    /// A dimension in the metadata or a tensor's shape that does not fit the rest of the model.
    #[error("invalid model shape: {key}: {reason}")]
    Shape { key: String, reason: String },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    fn corrupt(path: &Path, e: candle_core::Error) -> Self {
        let reason = e.to_string();
        if reason.contains("unknown dtype") {
            return ModelError::Unsupported(format!(
                "{}: a tensor type this engine cannot run ({reason}); supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, MXFP4",
                path.display()
            ));
        }
        ModelError::Corrupt {
            path: path.display().to_string(),
            reason,
        }
    }
}

/// A model's dimensions, as the engine and scheduler need them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// The context length the model was trained for.
    pub context_length: usize,
}

impl ModelInfo {
    pub fn kv_layout(&self, block_size: usize) -> KvLayout {
        KvLayout {
            layers: self.layers,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            block_size,
            kv_type: KvType::default(),
        }
    }
}

/// A loaded causal language model: weights only; the cache and batch come with each step.
#[derive(Debug, Clone)]
pub enum CausalModel {
    /// llama (Mixtral too), qwen2, qwen2moe, qwen3, qwen3moe, phi3, smollm3, granite and granitemoe share
    /// the pre-norm decoder.
    Decoder(decoder::Decoder),
    Gemma2(gemma2::Gemma2),
    Gemma3(gemma3::Gemma3),
    GptOss(gptoss::GptOss),
}

impl CausalModel {
    /// Tells the model the context each sequence may fill (LongRoPE chooses its factors by it).
    pub fn use_context(&mut self, tokens: usize) {
        if let CausalModel::Decoder(m) = self {
            m.use_context(tokens);
        }
    }

    pub fn info(&self) -> &ModelInfo {
        match self {
            CausalModel::Decoder(m) => m.info(),
            CausalModel::Gemma2(m) => m.info(),
            CausalModel::Gemma3(m) => m.info(),
            CausalModel::GptOss(m) => m.info(),
        }
    }

    /// Final-normalised hidden states, `[batch tokens, hidden]`, after writing the batch into the cache.
    pub fn hidden_states(
        &self,
        batch: &StepBatch,
        cache: &mut PagedKvCache,
    ) -> Result<Tensor, ModelError> {
        cache.begin_step(batch)?;
        match self {
            CausalModel::Decoder(m) => m.hidden_states(batch, cache),
            CausalModel::Gemma2(m) => m.hidden_states(batch, cache),
            CausalModel::Gemma3(m) => m.hidden_states(batch, cache),
            CausalModel::GptOss(m) => m.hidden_states(batch, cache),
        }
    }

    /// One step: logits `[rows, vocab]` for `batch.logit_rows()`, in order. Empty when none are wanted.
    pub fn forward(
        &self,
        batch: &StepBatch,
        cache: &mut PagedKvCache,
    ) -> Result<Tensor, ModelError> {
        let hidden = self.hidden_states(batch, cache)?;
        let rows = batch.logit_rows();
        if rows.is_empty() {
            return Ok(Tensor::zeros(
                (0, self.info().vocab_size),
                candle_core::DType::F32,
                hidden.device(),
            )?);
        }
        let rows = Tensor::new(rows.as_slice(), hidden.device())?;
        let selected = hidden.index_select(&rows, 0)?;
        match self {
            CausalModel::Decoder(m) => m.lm_head(&selected),
            CausalModel::Gemma2(m) => m.lm_head(&selected),
            CausalModel::Gemma3(m) => m.lm_head(&selected),
            CausalModel::GptOss(m) => m.lm_head(&selected),
        }
    }
}

/// A loaded model of either kind: a decoder that generates, or an encoder that only embeds or ranks.
#[derive(Debug, Clone)]
pub enum Model {
    Causal(CausalModel),
    /// BERT: one whole input per forward, no KV cache, pooled as the file says.
    Encoder(bert::Bert),
}

impl Model {
    pub fn info(&self) -> &ModelInfo {
        match self {
            Model::Causal(m) => m.info(),
            Model::Encoder(m) => m.info(),
        }
    }
}

/// A model and the GGUF metadata its tokenizer and chat template are built from.
pub struct LoadedModel {
    pub model: Model,
    pub metadata: HashMap<String, gguf_file::Value>,
    /// A decoder's classifier over its final hidden state (`cls.output`, Qwen3-Reranker: the output
    /// head's "yes" and "no" rows), which rank pooling reads. An encoder keeps its own head.
    pub rank_head: Option<layers::Linear>,
}

/// Loads a GGUF model (one file, or every file of a split one) onto `device`, choosing the architecture
/// from `general.architecture`.
pub fn load(files: &[&Path], device: &Device) -> Result<LoadedModel, ModelError> {
    let mut weights = weights::GgufWeights::open_shards(files, device)?;
    let architecture = weights.architecture().to_string();
    if !matches!(
        architecture.as_str(),
        "llama"
            | "mistral"
            | "qwen2"
            | "qwen2moe"
            | "qwen3"
            | "qwen3moe"
            | "phi3"
            | "smollm3"
            | "granite"
            | "granitemoe"
            | "gemma2"
            | "gemma3"
            | "gpt-oss"
            | "bert"
            | "nomic-bert"
            | "jina-bert-v2"
    ) {
        return Err(ModelError::UnknownArchitecture(architecture));
    }
    if bert::ARCHITECTURES.contains(&architecture.as_str()) {
        // Its own shape checks, in `Bert::load`, before any weight is read.
        let model = Model::Encoder(bert::Bert::load(&mut weights)?);
        return Ok(LoadedModel {
            model,
            metadata: weights.into_metadata(),
            rank_head: None,
        });
    }
    // Before any weight is read: the forward pass relies on these shapes and would panic otherwise.
    shape::check(&weights, shape::Expected::for_architecture(&architecture))?;
    let model = Model::Causal(match weights.architecture() {
        "llama" | "mistral" => CausalModel::Decoder(llama::load(&mut weights)?),
        "qwen2" => CausalModel::Decoder(qwen2::load(&mut weights)?),
        "qwen2moe" => CausalModel::Decoder(qwen2moe::load(&mut weights)?),
        "qwen3" => CausalModel::Decoder(qwen3::load(&mut weights)?),
        "qwen3moe" => CausalModel::Decoder(qwen3moe::load(&mut weights)?),
        "phi3" => CausalModel::Decoder(phi3::load(&mut weights)?),
        "smollm3" => CausalModel::Decoder(smollm3::load(&mut weights)?),
        "granite" | "granitemoe" => CausalModel::Decoder(granite::load(&mut weights)?),
        "gemma2" => CausalModel::Gemma2(gemma2::Gemma2::load(&mut weights)?),
        "gemma3" => CausalModel::Gemma3(gemma3::Gemma3::load(&mut weights)?),
        "gpt-oss" => CausalModel::GptOss(gptoss::GptOss::load(&mut weights)?),
        other => return Err(ModelError::UnknownArchitecture(other.to_string())),
    });
    let rank_head = match weights.tensor_dims("cls.output.weight") {
        None => None,
        Some([labels, width]) if *labels > 0 && *width == model.info().hidden_size => {
            Some(layers::Linear::load(&mut weights, "cls.output")?)
        }
        Some(dims) => {
            return Err(ModelError::Shape {
                key: "cls.output.weight".into(),
                reason: format!(
                    "shape {dims:?}, expected [labels, {}]",
                    model.info().hidden_size
                ),
            });
        }
    };
    Ok(LoadedModel {
        model,
        metadata: weights.into_metadata(),
        rank_head,
    })
}
