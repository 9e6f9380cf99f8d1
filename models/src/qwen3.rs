//! Qwen 3 (GGUF architecture `qwen3`): per-head RMS norm on queries and keys (`attn_q_norm`,
//! `attn_k_norm`), no projection biases, NeoX rotary embedding, SwiGLU.

use crate::ModelError;
use crate::attention::RopeStyle;
use crate::decoder::{Decoder, DecoderOptions, RopeLayers};
use crate::layers::Activation;
use crate::moe::ExpertLayers;
use crate::weights::GgufWeights;

pub fn load(w: &mut GgufWeights) -> Result<Decoder, ModelError> {
    if !w.has_tensor("blk.0.attn_q_norm.weight") {
        return Err(ModelError::MissingTensor("blk.0.attn_q_norm.weight".into()));
    }
    Decoder::load(
        w,
        DecoderOptions {
            rope_style: RopeStyle::Neox,
            activation: Activation::Silu,
            fused_gate_up: false,
            experts: ExpertLayers::Never,
            default_rope_base: 1_000_000.0,
            rope_layers: RopeLayers::All,
            granite_multipliers: false,
        },
    )
}
