//! OpenAI's gpt-oss (GGUF architecture `gpt-oss`, llama.cpp's `LLM_ARCH_OPENAI_MOE`), as llama.cpp's
//! `llama_model_openai_moe` runs it.
//!
//! A pre-norm decoder (`x += attn(norm(x)); x += moe(post_attention_norm(x))`) whose attention has biased
//! Q/K/V and output projections, a learned sink logit per head in every softmax's denominator
//! (`attn_sinks`), NeoX rotary embedding with YaRN scaling as the file says (`rope.scaling.*`), and
//! sliding-window layers (`attention.sliding_window`, 128 in the real models) alternating with full ones,
//! the even layers windowed (llama.cpp's swa pattern 2). Every feed-forward block is a mixture of
//! experts with biases everywhere and the clamped `swiglu_oai` (`moe`, `ExpertLayers::AlwaysOpenAi`).
//! The experts come as MXFP4 in the released files; our CPU kernels run them as they are, and `weights`
//! converts them to Q8_0 where candle runs them (`crate::mxfp4`).

use candle_core::Tensor;

use crate::attention::{Attention, AttentionShape, Rope, RopeStyle, Yarn};
use crate::batch::StepBatch;
use crate::kv_cache::PagedKvCache;
use crate::layers::{Embedding, Linear, RmsNorm};
use crate::moe::{ExpertLayers, MixtureOfExperts};
use crate::weights::GgufWeights;
use crate::{ModelError, ModelInfo};

/// llama.cpp's swa pattern for this architecture: of every two layers, the first is windowed.
const SWA_PERIOD: usize = 2;
/// llama.cpp's YaRN defaults, which it does not read from the file for this architecture.
const YARN_BETA_FAST: f32 = 32.0;
const YARN_BETA_SLOW: f32 = 1.0;

#[derive(Debug, Clone)]
struct Block {
    attn_norm: RmsNorm,
    attention: Attention,
    post_attention_norm: RmsNorm,
    moe: MixtureOfExperts,
}

#[derive(Debug, Clone)]
pub struct GptOss {
    info: ModelInfo,
    embedding: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    output: Linear,
    rope: Rope,
}

impl GptOss {
    pub fn load(w: &mut GgufWeights) -> Result<Self, ModelError> {
        let layers = w.arch_usize("block_count")?;
        let hidden = w.arch_usize("embedding_length")?;
        let shape = AttentionShape::read(w, hidden)?;
        let eps = w.arch_f32_or("attention.layer_norm_rms_epsilon", 1e-5)?;
        let window = w.arch_usize("attention.sliding_window")?;
        let context_length = w.arch_usize_or("context_length", 4096)?;
        let rope = rope(w, shape.head_dim, context_length)?;
        let moe = crate::shape::moe_shape(w, ExpertLayers::AlwaysOpenAi)?
            .ok_or_else(|| ModelError::MissingMetadata("gpt-oss.expert_count".into()))?;

        let output = Linear::output_head(w)?;
        let embedding = Embedding::load(w, "token_embd.weight", None)?;
        let mut blocks = Vec::with_capacity(layers);
        for layer in 0..layers {
            let p = format!("blk.{layer}");
            let mut attention = Attention::load(w, layer, shape, eps)?;
            attention.sliding_window = (layer % SWA_PERIOD < SWA_PERIOD - 1).then_some(window);
            attention.sinks = Some(
                w.dequantized(&format!("{p}.attn_sinks.weight"))?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
            blocks.push(Block {
                attn_norm: RmsNorm::load(w, &format!("{p}.attn_norm.weight"), eps)?,
                attention,
                post_attention_norm: RmsNorm::load(
                    w,
                    &format!("{p}.post_attention_norm.weight"),
                    eps,
                )?,
                moe: MixtureOfExperts::load(w, &p, moe)?,
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
                .moe
                .forward(&block.post_attention_norm.forward(&x)?, batch.dense_from())?;
            x = (x + mixed)?;
        }
        Ok(self.norm.forward(&x)?)
    }

    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.output.forward(hidden, usize::MAX)?)
    }
}

/// NeoX rope over `rope.dimension_count` dimensions, YaRN-scaled when `rope.scaling.type` is `yarn`
/// (its factor, original context length and attention factor from the file). Another scaling type is
/// refused rather than run wrong; none means none.
fn rope(w: &GgufWeights, head_dim: usize, context_length: usize) -> Result<Rope, ModelError> {
    let dims = w.arch_usize_or("rope.dimension_count", head_dim)?;
    let base = w.arch_f32_or("rope.freq_base", 10_000.0)?;
    let rope = Rope::new(dims, base, RopeStyle::Neox);
    let key = format!("{}.rope.scaling.type", w.architecture());
    let scaling = match w.metadata().get(&key) {
        None => return Ok(rope),
        Some(candle_core::quantized::gguf_file::Value::String(s)) => s.clone(),
        Some(_) => return Err(ModelError::BadMetadata(key)),
    };
    match scaling.as_str() {
        "none" => Ok(rope),
        "yarn" => {
            let yarn = Yarn {
                factor: w.arch_f32_or("rope.scaling.factor", 1.0)?,
                original_context: w
                    .arch_usize_or("rope.scaling.original_context_length", context_length)?,
                beta_fast: YARN_BETA_FAST,
                beta_slow: YARN_BETA_SLOW,
                attn_factor: w.arch_f32_or("rope.scaling.attn_factor", 1.0)?,
            };
            Ok(rope.with_yarn(base, yarn))
        }
        other => Err(ModelError::Unsupported(format!(
            "gpt-oss with rope scaling {other:?} (this engine runs yarn or none)"
        ))),
    }
}
