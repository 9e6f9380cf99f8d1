//! Qwen 2 / 2.5 (GGUF architecture `qwen2`): biased Q/K/V projections (loaded with their `.bias`), NeoX
//! rotary embedding, SwiGLU.

use crate::ModelError;
use crate::attention::RopeStyle;
use crate::decoder::{Decoder, DecoderOptions, RopeLayers};
use crate::layers::Activation;
use crate::moe::ExpertLayers;
use crate::weights::GgufWeights;

pub fn load(w: &mut GgufWeights) -> Result<Decoder, ModelError> {
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
