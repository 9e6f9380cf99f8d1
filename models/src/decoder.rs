//! The pre-norm decoder stack that Llama, Qwen 2/3 and Phi-3 share: token embedding, then per layer
//! `x += attn(norm(x)); x += mlp(norm(x))`, then a final norm and the output head (tied to the embedding
//! when the file has no `output.weight`). The architectures differ only in what they load into it.
//! Llama 3's rope scaling comes as `rope_freqs.weight`, per-frequency divisors, wherever the file has it.
//! The feed-forward block is a gated MLP or, for Qwen 2/3 MoE, Mixtral and Granite MoE, a mixture of
//! experts (`moe`). SmolLM3 leaves rotary embedding out of some layers (`RopeLayers`); Granite scales the
//! embeddings, each block's residual contributions, the attention scores and the logits (`Multipliers`).

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
    /// Which layers rotate queries and keys.
    pub rope_layers: RopeLayers,
    /// Whether the file's Granite multipliers (`<arch>.logit_scale`, required, and the optional
    /// `embedding_scale`, `residual_scale`, `attention.scale`) apply.
    pub granite_multipliers: bool,
}

/// Which layers rotate queries and keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayers {
    All,
    /// Every layer but each `n`-th, counting from 1 (layer `i` rotates unless `(i + 1) % n == 0`):
    /// SmolLM3's NoPE layers, llama.cpp's `n_no_rope_layer_step`, which it fixes at 4 (no metadata key).
    AllButEvery(usize),
    /// No layer (Granite with `rope.scaling.finetuned` false, llama.cpp's switch for it).
    None,
}

impl RopeLayers {
    fn rotates(self, layer: usize) -> bool {
        match self {
            RopeLayers::All => true,
            RopeLayers::AllButEvery(n) => !(layer + 1).is_multiple_of(n),
            RopeLayers::None => false,
        }
    }
}

/// Granite's multipliers, as llama.cpp applies them: the token embeddings times `embedding`, each
/// attention and feed-forward output times `residual` before it joins the residual stream, the logits
/// divided by `logit_divisor`. (`attention.scale` replaces `1/sqrt(head size)` in `Attention`.) A key the
/// file leaves out, or sets to 0, applies no scaling, as in llama.cpp.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Multipliers {
    embedding: Option<f64>,
    residual: Option<f64>,
    logit_divisor: f32,
}

impl Multipliers {
    /// Reads the keys; returns them with the attention scale, if the file sets one.
    fn read(w: &GgufWeights) -> Result<(Self, Option<f32>), ModelError> {
        let arch = w.architecture().to_string();
        let optional = |key: &str| -> Result<Option<f32>, ModelError> {
            let v = w.arch_f32_or(key, 0.0)?;
            if !v.is_finite() {
                return Err(ModelError::Shape {
                    key: format!("{arch}.{key}"),
                    reason: format!("{v} is not a finite number"),
                });
            }
            Ok((v != 0.0).then_some(v))
        };
        let logit_divisor = w.arch_f32("logit_scale")?;
        if !logit_divisor.is_finite() || logit_divisor == 0.0 {
            return Err(ModelError::Shape {
                key: format!("{arch}.logit_scale"),
                reason: format!("{logit_divisor}: the logits are divided by it"),
            });
        }
        let multipliers = Self {
            embedding: optional("embedding_scale")?.map(f64::from),
            residual: optional("residual_scale")?.map(f64::from),
            logit_divisor,
        };
        Ok((multipliers, optional("attention.scale")?))
    }
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
    /// Granite's scalings, when the architecture has them.
    multipliers: Option<Multipliers>,
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
        let (multipliers, attention_scale) = if options.granite_multipliers {
            let (m, scale) = Multipliers::read(w)?;
            (Some(m), scale)
        } else {
            (None, None)
        };

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
            let mut attention = Attention::load(w, layer, shape, eps)?;
            attention.rotary = options.rope_layers.rotates(layer);
            if let Some(scale) = attention_scale {
                attention.scale = scale;
            }
            blocks.push(Block {
                attn_norm: RmsNorm::load(w, &format!("{p}.attn_norm.weight"), eps)?,
                attention,
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
            multipliers,
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
        let multipliers = self.multipliers.as_ref();
        if let Some(scale) = multipliers.and_then(|m| m.embedding) {
            x = x.affine(scale, 0.0)?;
        }
        let residual = |t: Tensor| match multipliers.and_then(|m| m.residual) {
            Some(scale) => t.affine(scale, 0.0),
            None => Ok(t),
        };
        let angles = self.rope.angles_on(&batch.positions, x.device())?;
        let tokens = batch.tokens.len();
        for block in &self.blocks {
            // Each block's next weights start streaming in before the norm that precedes them.
            block.attention.warm(tokens);
            let attended = block.attention.forward(
                &block.attn_norm.forward(&x)?,
                batch,
                &self.rope,
                &angles,
                cache,
            )?;
            x = (x + residual(attended)?)?;
            if let FeedForward::Dense(mlp) = &block.mlp {
                mlp.warm(tokens);
            }
            let mixed = block
                .mlp
                .forward(&block.ffn_norm.forward(&x)?, batch.dense_from())?;
            x = (x + residual(mixed)?)?;
        }
        self.output.warm(tokens);
        Ok(self.norm.forward(&x)?)
    }

    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        let logits = self.output.forward(hidden, usize::MAX)?;
        Ok(match &self.multipliers {
            // As llama.cpp: times the divisor's reciprocal, taken in f32.
            Some(m) => logits.affine(f64::from(1.0 / m.logit_divisor), 0.0)?,
            None => logits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::RopeLayers;

    #[test]
    fn smollm3_leaves_every_fourth_layer_unrotated() {
        let rotated: Vec<bool> = (0..8)
            .map(|l| RopeLayers::AllButEvery(4).rotates(l))
            .collect();
        assert_eq!(rotated, [true, true, true, false, true, true, true, false]);
        assert!((0..8).all(|l| RopeLayers::All.rotates(l)));
        assert!((0..8).all(|l| !RopeLayers::None.rotates(l)));
    }
}
