//! Qwen 3 MoE (GGUF architecture `qwen3moe`, e.g. Qwen3-30B-A3B): Qwen 3's attention (per-head RMS norm on
//! queries and keys, NeoX rotary embedding, no biases) with a mixture of SiLU-gated experts as every
//! layer's feed-forward block (`moe`: `qwen3moe.expert_count` experts, `expert_used_count` per token,
//! router weights renormalised to sum 1).

use crate::ModelError;
use crate::attention::RopeStyle;
use crate::decoder::{Decoder, DecoderOptions, RopeLayers};
use crate::layers::Activation;
use crate::moe::ExpertLayers;
use crate::weights::GgufWeights;

pub fn load(w: &mut GgufWeights) -> Result<Decoder, ModelError> {
    for norm in ["blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight"] {
        if !w.has_tensor(norm) {
            return Err(ModelError::MissingTensor(norm.into()));
        }
    }
    Decoder::load(
        w,
        DecoderOptions {
            rope_style: RopeStyle::Neox,
            activation: Activation::Silu,
            fused_gate_up: false,
            experts: ExpertLayers::Always,
            default_rope_base: 1_000_000.0,
            rope_layers: RopeLayers::All,
            granite_multipliers: false,
        },
    )
}
