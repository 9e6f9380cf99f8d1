//! SmolLM3 (GGUF architecture `smollm3`, SmolLM3-3B): Llama's decoder (SwiGLU, interleaved rotary
//! embedding, GQA) with every fourth layer attending without rotary embedding (NoPE). llama.cpp fixes the
//! step at 4 (`n_no_rope_layer_step`; the converter writes no key for it): layer `i` skips the rotation
//! when `(i + 1) % 4 == 0`.

use crate::ModelError;
use crate::attention::RopeStyle;
use crate::decoder::{Decoder, DecoderOptions, RopeLayers};
use crate::layers::Activation;
use crate::moe::ExpertLayers;
use crate::weights::GgufWeights;

/// llama.cpp's `n_no_rope_layer_step` for `smollm3`.
const NO_ROPE_LAYER_STEP: usize = 4;

pub fn load(w: &mut GgufWeights) -> Result<Decoder, ModelError> {
    Decoder::load(
        w,
        DecoderOptions {
            rope_style: RopeStyle::Interleaved,
            activation: Activation::Silu,
            fused_gate_up: false,
            experts: ExpertLayers::Never,
            default_rope_base: 10_000.0,
            rope_layers: RopeLayers::AllButEvery(NO_ROPE_LAYER_STEP),
            granite_multipliers: false,
        },
    )
}
