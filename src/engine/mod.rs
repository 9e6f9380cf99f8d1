//! The inference engine: a loaded model with its tokenizer, chat template and paged KV cache.
//!
//! `Engine::step` runs one packed forward over any number of sequences; the scheduler is its only caller
//! on a request path (there is one generation loop, `scheduler`), `embedding` pools hidden states. The
//! engine knows nothing of HTTP, OpenAI shapes or of the scheduler that drives it.

pub mod chat_template;
pub mod device;
pub mod embedding;
pub mod grammar;
pub mod sampler;
pub mod special_tokens;
pub mod template_sandbox;
pub mod text_stream;
pub mod tokenizer;
pub mod ugm;
pub mod wordpiece;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use models::bert::Pooling;
use models::{BlockPool, KvLayout, KvType, Model, ModelInfo, PagedKvCache, StepBatch};

use chat_template::{CHATML_TEMPLATE, ChatTemplate, TemplateError};
use tokenizer::{Tokenizer, TokenizerError};

/// Context size when neither the package nor the user names one, capped by what the model was trained for.
pub const DEFAULT_CONTEXT_SIZE: usize = 4096;
/// Positions per KV cache block.
pub const KV_BLOCK_SIZE: usize = 16;
/// Most prompt tokens one step takes from one sequence.
pub const PREFILL_CHUNK: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] models::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("the prompt is {prompt} tokens, more than the context size of {context}")]
    ContextOverflow { prompt: usize, context: usize },
    #[error(transparent)]
    OutOfBlocks(#[from] models::OutOfBlocks),
    #[error(
        "the tokenizer has {tokenizer} tokens but the model's token_embd.weight has {model} rows: a token id could fall outside the embedding"
    )]
    VocabMismatch { tokenizer: usize, model: usize },
    #[error("inference failed: {0}")]
    Compute(#[from] candle_core::Error),
    /// A generation step asked of an encoder, which only embeds or ranks.
    #[error("this model is an encoder ({0}): it embeds or ranks, it does not generate")]
    NotGenerative(String),
}

/// What to load.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The GGUF, or every file of a split one (`-00001-of-0000N.gguf`), in any order.
    pub gguf: Vec<PathBuf>,
    /// A template shipped beside the weights; wins over the GGUF's own.
    pub chat_template: Option<String>,
    /// The context size the package records, if any.
    pub context_size: Option<usize>,
}

/// How to load it.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub device: Device,
    /// Overrides the package's and the default context size.
    pub context_size: Option<usize>,
    /// KV cache blocks; default: enough for `sequences` full contexts.
    pub kv_blocks: Option<usize>,
    pub sequences: usize,
    /// The KV cache's element type on the host (CUDA's cache is f32 whatever this says).
    pub kv_type: KvType,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            context_size: None,
            kv_blocks: None,
            sequences: 1,
            kv_type: KvType::default(),
        }
    }
}

/// A model ready to run.
pub struct Engine {
    model: Model,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Arc<ChatTemplate>,
    cache: PagedKvCache,
    pool: BlockPool,
    context_size: usize,
    device: Device,
    /// How a decoder pools: its file's `<arch>.pooling_type` when that is cls, last or (with a
    /// classifier) rank; `None` when it names none (it embeds by the mean).
    decoder_pooling: Option<Pooling>,
    /// A decoder's rank classifier (`cls.output`).
    rank_head: Option<models::layers::Linear>,
}

impl Engine {
    pub fn load(files: &ModelFiles, options: &EngineOptions) -> Result<Self, EngineError> {
        let shards: Vec<&Path> = files.gguf.iter().map(PathBuf::as_path).collect();
        let loaded = models::load(&shards, &options.device)?;
        let tokenizer = Tokenizer::from_gguf(&loaded.metadata)?;
        check_vocab(tokenizer.vocab_size(), loaded.model.info().vocab_size)?;
        let token_text = |id: Option<u32>| {
            id.and_then(|i| tokenizer.token_text(i))
                .unwrap_or_default()
                .to_string()
        };
        let gguf_template = match loaded.metadata.get("tokenizer.chat_template") {
            Some(candle_core::quantized::gguf_file::Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let source = files
            .chat_template
            .clone()
            .or(gguf_template)
            .unwrap_or_else(|| CHATML_TEMPLATE.to_string());
        let template = ChatTemplate::new(
            &source,
            &token_text(tokenizer.bos),
            &token_text(tokenizer.eos),
        )?;
        let info = loaded.model.info().clone();
        let named_pooling = match loaded.model {
            // An encoder pools by itself (`models::bert`), its classifier its own.
            Model::Encoder(_) => None,
            Model::Causal(_) => loaded
                .metadata
                .get(&format!("{}.pooling_type", info.architecture))
                .and_then(|v| v.to_u32().ok())
                .and_then(|v| Pooling::from_gguf(v as usize)),
        };
        let decoder_pooling = match named_pooling {
            Some(p @ (Pooling::Cls | Pooling::Last)) => Some(p),
            Some(Pooling::Rank) if loaded.rank_head.is_some() => Some(Pooling::Rank),
            Some(Pooling::Rank) => {
                tracing::warn!(
                    "the file asks for rank pooling but has no cls.output classifier: embedding by the mean"
                );
                None
            }
            _ => None,
        };
        let rank_head = loaded.rank_head;
        let context_size = options
            .context_size
            .or(files.context_size)
            .unwrap_or(DEFAULT_CONTEXT_SIZE.min(info.context_length))
            .max(1);
        let shape = info.kv_layout(KV_BLOCK_SIZE);
        let kv_type = if options.device.is_cuda() {
            KvType::F32
        } else if !options.kv_type.fits_head(shape.head_dim) {
            tracing::warn!(
                head_dim = shape.head_dim,
                wanted = options.kv_type.name(),
                "this model's head size is not whole blocks of the KV cache type: using f16"
            );
            KvType::F16
        } else {
            options.kv_type
        };
        let layout = KvLayout { kv_type, ..shape };
        // An encoder keeps no cache: one block, never leased, keeps the engine's shape uniform.
        let encoder = matches!(loaded.model, Model::Encoder(_));
        let blocks = if encoder { Some(1) } else { options.kv_blocks };
        let blocks = blocks.unwrap_or_else(|| {
            let wanted = layout.blocks_for(context_size) * options.sequences.max(1);
            // What the device can spare, but always room for one full context.
            let affordable = device::kv_cache_budget(&options.device)
                .map_or(wanted, |m| m / layout.bytes_per_block());
            wanted.min(affordable).max(layout.blocks_for(context_size))
        });
        let mut model = loaded.model;
        if let Model::Causal(causal) = &mut model {
            causal.use_context(context_size);
        }
        Ok(Self {
            model,
            tokenizer: Arc::new(tokenizer),
            template: Arc::new(template),
            cache: PagedKvCache::on_device(layout, blocks, &options.device)?,
            pool: BlockPool::new(blocks, KV_BLOCK_SIZE),
            context_size,
            device: options.device.clone(),
            decoder_pooling,
            rank_head,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        self.model.info()
    }

    /// The file's pooling: an encoder's, or the one a decoder's file names (Qwen3-Embedding: last;
    /// Qwen3-Reranker: rank); `None` for a decoder that names none (it embeds by the mean).
    pub fn pooling(&self) -> Option<Pooling> {
        match &self.model {
            Model::Causal(_) => self.decoder_pooling,
            Model::Encoder(m) => Some(m.pooling()),
        }
    }

    /// Whether the model generates text (a decoder), rather than only embedding or ranking.
    pub fn generates(&self) -> bool {
        matches!(self.model, Model::Causal(_))
    }

    /// The element type the KV cache holds.
    pub fn kv_type(&self) -> KvType {
        self.cache.layout().kv_type
    }

    /// The device the weights and KV cache live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn context_size(&self) -> usize {
        self.context_size
    }

    /// Bytes the KV cache holds, all blocks counted.
    pub fn kv_cache_bytes(&self) -> u64 {
        (self.cache.num_blocks() * self.cache.layout().bytes_per_block()) as u64
    }

    /// The allocator of this engine's KV cache blocks.
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// Copies the first `count` positions of one KV block into another (see `PagedKvCache::copy_positions`).
    pub fn copy_kv_positions(
        &mut self,
        src_block: u32,
        dst_block: u32,
        count: usize,
    ) -> Result<(), EngineError> {
        Ok(self.cache.copy_positions(src_block, dst_block, count)?)
    }

    /// One packed forward: logits `[rows, vocab]` for `batch.logit_rows()`.
    pub fn step(&mut self, batch: &StepBatch) -> Result<Tensor, EngineError> {
        match &self.model {
            Model::Causal(m) => Ok(m.forward(batch, &mut self.cache)?),
            Model::Encoder(m) => Err(EngineError::NotGenerative(m.info().architecture.clone())),
        }
    }

    /// Final hidden states for a batch (for a decoder's embeddings).
    pub fn hidden_states(&mut self, batch: &StepBatch) -> Result<Tensor, EngineError> {
        match &self.model {
            Model::Causal(m) => Ok(m.hidden_states(batch, &mut self.cache)?),
            Model::Encoder(m) => Err(EngineError::NotGenerative(m.info().architecture.clone())),
        }
    }
}

/// Every id the tokenizer can produce must be a row of the embedding (more rows than tokens is padding).
fn check_vocab(tokenizer: usize, model: usize) -> Result<(), EngineError> {
    if tokenizer > model {
        return Err(EngineError::VocabMismatch { tokenizer, model });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the context size.
    Length,
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokenizer_larger_than_the_embedding_is_refused_at_load() {
        assert!(check_vocab(49152, 49152).is_ok());
        assert!(check_vocab(151_665, 151_936).is_ok());
        assert!(matches!(
            check_vocab(100, 99),
            Err(EngineError::VocabMismatch {
                tokenizer: 100,
                model: 99
            })
        ));
    }
}
