//! Gemma 2 (GGUF architecture `gemma2`), as llama.cpp runs it (`src/models/gemma2.cpp`).
//!
//! Like Gemma 3 (embeddings scaled by sqrt(hidden), norms after attention and after the MLP as well as
//! before, GELU-tanh MLP, output tied to the embedding) but: no norm on queries and keys; attention scores
//! soft-capped, `c * tanh(s / c)` (`attn_logit_softcapping`), and so are the final logits
//! (`final_logit_softcapping`); local (sliding-window) and global layers alternate, the even layers local;
//! one rope base for both.

use candle_core::Tensor;

use crate::attention::{Attention, AttentionShape, Rope, RopeStyle};
use crate::batch::StepBatch;
use crate::kv_cache::PagedKvCache;
use crate::layers::{Activation, Embedding, GatedMlp, Linear, RmsNorm};
use crate::weights::GgufWeights;
use crate::{ModelError, ModelInfo};

/// Every second layer attends globally (llama.cpp's swa pattern 2: layers 0, 2, ... are local).
const GLOBAL_LAYER_PERIOD: usize = 2;
/// Gemma 2's window when the file does not say (llama.cpp's default).
const DEFAULT_WINDOW: usize = 4096;

#[derive(Debug, Clone)]
struct Block {
    attn_norm: RmsNorm,
    attention: Attention,
    post_attention_norm: RmsNorm,
    ffn_norm: RmsNorm,
    mlp: GatedMlp,
    post_ffw_norm: RmsNorm,
}

#[derive(Debug, Clone)]
pub struct Gemma2 {
    info: ModelInfo,
    embedding: Embedding,
    embedding_scale: f64,
    blocks: Vec<Block>,
    norm: RmsNorm,
    output: Linear,
    rope: Rope,
    final_softcap: Option<f32>,
}

/// A soft-cap from the metadata: absent or zero means none.
fn softcap(w: &GgufWeights, key: &str) -> Result<Option<f32>, ModelError> {
    let cap = w.arch_f32_or(key, 0.0)?;
    Ok((cap > 0.0).then_some(cap))
}

impl Gemma2 {
    pub fn load(w: &mut GgufWeights) -> Result<Self, ModelError> {
        let layers = w.arch_usize("block_count")?;
        let hidden = w.arch_usize("embedding_length")?;
        let shape = AttentionShape::read(w, hidden)?;
        let eps = w.arch_f32_or("attention.layer_norm_rms_epsilon", 1e-6)?;
        let window = w.arch_usize_or("attention.sliding_window", DEFAULT_WINDOW)?;
        let rope_base = w.arch_f32_or("rope.freq_base", 10_000.0)?;
        let context_length = w.arch_usize_or("context_length", 8192)?;
        let attention_softcap = softcap(w, "attn_logit_softcapping")?;
        let final_softcap = softcap(w, "final_logit_softcapping")?;
        // Gemma 2 27B (46 layers) scales queries by hidden / heads rather than the head size.
        let query_scale = if layers == 46 {
            1.0 / ((hidden / shape.heads) as f32).sqrt()
        } else {
            1.0 / (shape.head_dim as f32).sqrt()
        };

        let output = Linear::output_head(w)?;
        let tied = (!w.has_tensor("output.weight")).then_some(&output);
        let embedding = Embedding::load(w, "token_embd.weight", tied)?;
        let mut blocks = Vec::with_capacity(layers);
        for layer in 0..layers {
            let p = format!("blk.{layer}");
            let mut attention = Attention::load(w, layer, shape, eps)?;
            let local = (layer + 1) % GLOBAL_LAYER_PERIOD != 0;
            attention.sliding_window = local.then_some(window);
            attention.softcap = attention_softcap;
            attention.scale = query_scale;
            blocks.push(Block {
                attn_norm: RmsNorm::load(w, &format!("{p}.attn_norm.weight"), eps)?,
                attention,
                post_attention_norm: RmsNorm::load(
                    w,
                    &format!("{p}.post_attention_norm.weight"),
                    eps,
                )?,
                ffn_norm: RmsNorm::load(w, &format!("{p}.ffn_norm.weight"), eps)?,
                mlp: GatedMlp::load(w, &p, Activation::GeluTanh)?,
                post_ffw_norm: RmsNorm::load(w, &format!("{p}.post_ffw_norm.weight"), eps)?,
            });
        }
        Ok(Self {
            info: ModelInfo {
                architecture: w.architecture().to_string(),
                vocab_size: embedding.vocab_size(),
                hidden_size: hidden,
                layers,
                kv_heads: shape.kv_heads,
                head_dim: shape.head_dim,
                context_length,
            },
            embedding,
            embedding_scale: (hidden as f64).sqrt(),
            blocks,
            norm: RmsNorm::load(w, "output_norm.weight", eps)?,
            output,
            rope: Rope::new(shape.head_dim, rope_base, RopeStyle::Neox),
            final_softcap,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn hidden_states(
        &self,
        batch: &StepBatch,
        cache: &mut PagedKvCache,
    ) -> Result<Tensor, ModelError> {
        let mut x = (self.embedding.forward(&batch.tokens)? * self.embedding_scale)?;
        let angles = self.rope.angles_on(&batch.positions, x.device())?;
        for block in &self.blocks {
            let attended = block.attention.forward(
                &block.attn_norm.forward(&x)?,
                batch,
                &self.rope,
                &angles,
                cache,
            )?;
            x = (x + block.post_attention_norm.forward(&attended)?)?;
            let mixed = block
                .mlp
                .forward(&block.ffn_norm.forward(&x)?, batch.dense_from())?;
            x = (x + block.post_ffw_norm.forward(&mixed)?)?;
        }
        Ok(self.norm.forward(&x)?)
    }

    /// Logits, soft-capped when the file says so.
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        let logits = self.output.forward(hidden, usize::MAX)?;
        Ok(match self.final_softcap {
            Some(cap) => ((logits / cap as f64)?.tanh()? * cap as f64)?,
            None => logits,
        })
    }
}
