//! The pre-norm decoder stack that Llama, Qwen 2/3 and Phi-3 share: token embedding, then per layer
//! `x += attn(norm(x)); x += mlp(norm(x))`, then a final norm and the output head (tied to the embedding
//! when the file has no `output.weight`). The architectures differ only in what they load into it.
//! Llama 3's rope scaling comes as `rope_freqs.weight`, per-frequency divisors, wherever the file has it.
//! The feed-forward block is a gated MLP or, for Qwen 2/3 MoE and Mixtral, a mixture of experts (`moe`).

use candle_core::Tensor;

use crate::attention::{Attention, AttentionShape, Rope, RopeStyle};
use crate::batch::StepBatch;
use crate::kv_cache::PagedKvCache;
use crate::layers::{Activation, Embedding, GatedMlp, Linear, RmsNorm};
use crate::moe::{ExpertLayers, MixtureOfExperts};
use crate::weights::GgufWeights;
use crate::{ModelError, ModelInfo};

/// What distinguishes one pre-norm architecture from another at load time.
#[derive(Debug, Clone, Copy)]
pub struct DecoderOptions {
    pub rope_style: RopeStyle,
    pub activation: Activation,
    /// Gate and up projections stored as one `ffn_up` (Phi-3).
    pub fused_gate_up: bool,
    pub default_rope_base: f32,
    /// Whether feed-forward blocks are mixtures of experts.
    pub experts: ExpertLayers,
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: RmsNorm,
    attention: Attention,
    ffn_norm: RmsNorm,
    mlp: FeedForward,
}

/// A layer's feed-forward block.
#[derive(Debug, Clone)]
enum FeedForward {
    Dense(GatedMlp),
    Experts(MixtureOfExperts),
}

impl FeedForward {
    fn forward(&self, x: &Tensor, dense_from: usize) -> candle_core::Result<Tensor> {
        match self {
            FeedForward::Dense(mlp) => mlp.forward(x, dense_from),
            FeedForward::Experts(moe) => moe.forward(x, dense_from),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Decoder {
    info: ModelInfo,
    embedding: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    output: Linear,
    rope: Rope,
    /// LongRoPE (Phi-3 128k): the rotation for contexts longer than the original one, and that length;
    /// `rope` then holds the short one until `use_context` says the context is longer.
    long_rope: Option<(usize, Rope)>,
}

impl Decoder {
    pub fn load(w: &mut GgufWeights, options: DecoderOptions) -> Result<Self, ModelError> {
        let layers = w.arch_usize("block_count")?;
        let hidden = w.arch_usize("embedding_length")?;
        let shape = AttentionShape::read(w, hidden)?;
        let rope_dims = w.arch_usize_or("rope.dimension_count", shape.head_dim)?;
        let eps = w.arch_f32_or("attention.layer_norm_rms_epsilon", 1e-5)?;
        let rope_base = w.arch_f32_or("rope.freq_base", options.default_rope_base)?;
        let context_length = w.arch_usize_or("context_length", 4096)?;
        let moe = crate::shape::moe_shape(w, options.experts)?;

        let mut rope = Rope::new(rope_dims, rope_base, options.rope_style);
        if let Some(factors) = w.optional_dequantized("rope_freqs.weight")? {
            let factors = factors.flatten_all()?.to_vec1::<f32>()?;
            rope = rope.with_freq_factors("rope_freqs.weight", &factors)?;
        }
        let mut long_rope = None;
        if w.has_tensor("rope_factors_long.weight") {
            let (short, long) = ("rope_factors_short.weight", "rope_factors_long.weight");
            let factors = |w: &mut GgufWeights, name: &str| -> Result<Vec<f32>, ModelError> {
                Ok(w.dequantized(name)?.flatten_all()?.to_vec1::<f32>()?)
            };
            let original = w.arch_usize("rope.scaling.original_context_length")?;
            let attn_factor = w.arch_f32_or("rope.scaling.attn_factor", 1.0)?;
            let long_factors = factors(w, long)?;
            long_rope = Some((
                original,
                rope.clone()
                    .with_freq_factors(long, &long_factors)?
                    .with_attention_factor(attn_factor)?,
            ));
            let short_factors = factors(w, short)?;
            rope = rope
                .with_freq_factors(short, &short_factors)?
                .with_attention_factor(attn_factor)?;
        }

        let output = Linear::output_head(w)?;
        let tied = (!w.has_tensor("output.weight")).then_some(&output);
        let embedding = Embedding::load(w, "token_embd.weight", tied)?;
        let mut blocks = Vec::with_capacity(layers);
        for layer in 0..layers {
            let p = format!("blk.{layer}");
            let mlp = if let Some(moe) = moe {
                FeedForward::Experts(MixtureOfExperts::load(w, &p, moe)?)
            } else if options.fused_gate_up {
                FeedForward::Dense(GatedMlp::load_fused(w, &p, options.activation)?)
            } else {
                FeedForward::Dense(GatedMlp::load(w, &p, options.activation)?)
            };
            blocks.push(Block {
                attn_norm: RmsNorm::load(w, &format!("{p}.attn_norm.weight"), eps)?,
                attention: Attention::load(w, layer, shape, eps)?,
                ffn_norm: RmsNorm::load(w, &format!("{p}.ffn_norm.weight"), eps)?,
                mlp,
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
            blocks,
            norm: RmsNorm::load(w, "output_norm.weight", eps)?,
            output,
            rope,
            long_rope,
        })
    }

    /// The context each sequence may fill: LongRoPE models rotate with their long factors when it is
    /// longer than their original context, as llama.cpp chooses (by the context, not by position).
    pub fn use_context(&mut self, tokens: usize) {
        if let Some((original, long)) = &self.long_rope
            && tokens > *original
        {
            self.rope = long.clone();
            self.long_rope = None;
        }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn hidden_states(
        &self,
        batch: &StepBatch,
        cache: &mut PagedKvCache,
    ) -> Result<Tensor, ModelError> {
        let mut x = self.embedding.forward(&batch.tokens)?;
        let angles = self.rope.angles_on(&batch.positions, x.device())?;
        for block in &self.blocks {
            let attended = block.attention.forward(
                &block.attn_norm.forward(&x)?,
                batch,
                &self.rope,
                &angles,
                cache,
            )?;
            x = (x + attended)?;
            let mixed = block
                .mlp
                .forward(&block.ffn_norm.forward(&x)?, batch.dense_from())?;
            x = (x + mixed)?;
        }
        Ok(self.norm.forward(&x)?)
    }

    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.output.forward(hidden, usize::MAX)?)
    }
}
