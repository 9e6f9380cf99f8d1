//! Gemma 3 text models (GGUF architecture `gemma3`).
//!
//! Differs from the pre-norm decoder: embeddings scaled by sqrt(hidden); norms after attention and after
//! the MLP as well as before; per-head RMS norm on queries and keys; GELU (tanh) MLP; five local layers
//! (sliding window, rope base 10k) to every global one (rope base from the file, optionally linearly
//! scaled), as llama.cpp runs it.

use candle_core::Tensor;

use crate::attention::{Attention, AttentionShape, Rope, RopeStyle};
use crate::batch::StepBatch;
use crate::kv_cache::PagedKvCache;
use crate::layers::{Activation, Embedding, GatedMlp, Linear, RmsNorm};
use crate::weights::GgufWeights;
use crate::{ModelError, ModelInfo};

/// Every sixth layer attends globally; the others within the sliding window.
const GLOBAL_LAYER_PERIOD: usize = 6;
const LOCAL_ROPE_BASE: f32 = 10_000.0;

#[derive(Debug, Clone)]
struct Block {
    attn_norm: RmsNorm,
    attention: Attention,
    post_attention_norm: RmsNorm,
    ffn_norm: RmsNorm,
    mlp: GatedMlp,
    post_ffw_norm: RmsNorm,
    local: bool,
}

#[derive(Debug, Clone)]
pub struct Gemma3 {
    info: ModelInfo,
    embedding: Embedding,
    embedding_scale: f64,
    blocks: Vec<Block>,
    norm: RmsNorm,
    output: Linear,
    local_rope: Rope,
    global_rope: Rope,
}

impl Gemma3 {
    pub fn load(w: &mut GgufWeights) -> Result<Self, ModelError> {
        let layers = w.arch_usize("block_count")?;
        let hidden = w.arch_usize("embedding_length")?;
        let shape = AttentionShape::read(w, hidden)?;
        let eps = w.arch_f32_or("attention.layer_norm_rms_epsilon", 1e-6)?;
        let window = w.arch_usize_or("attention.sliding_window", 512)?;
        let global_base = w.arch_f32_or("rope.freq_base", 1_000_000.0)?;
        let scale = w.arch_f32_or("rope.scaling.factor", 1.0)?;
        let context_length = w.arch_usize_or("context_length", 32_768)?;

        let output = Linear::output_head(w)?;
        let tied = (!w.has_tensor("output.weight")).then_some(&output);
        let embedding = Embedding::load(w, "token_embd.weight", tied)?;
        let mut blocks = Vec::with_capacity(layers);
        for layer in 0..layers {
            let p = format!("blk.{layer}");
            let local = (layer + 1) % GLOBAL_LAYER_PERIOD != 0;
            let mut attention = Attention::load(w, layer, shape, eps)?;
            attention.sliding_window = local.then_some(window);
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
                local,
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
            local_rope: Rope::new(shape.head_dim, LOCAL_ROPE_BASE, RopeStyle::Neox),
            global_rope: Rope::new(shape.head_dim, global_base, RopeStyle::Neox)
                .with_linear_scale(scale),
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
        let local_angles = self.local_rope.angles_on(&batch.positions, x.device())?;
        let global_angles = self.global_rope.angles_on(&batch.positions, x.device())?;
        for block in &self.blocks {
            let (rope, angles) = if block.local {
                (&self.local_rope, &local_angles)
            } else {
                (&self.global_rope, &global_angles)
            };
            let attended = block.attention.forward(
                &block.attn_norm.forward(&x)?,
                batch,
                rope,
                angles,
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

    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.output.forward(hidden, usize::MAX)?)
    }
}
