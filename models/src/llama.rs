//! Llama 2/3, Mistral and SmolLM2 (GGUF architecture `llama`): the pre-norm decoder with SwiGLU and
//! interleaved rotary embedding (llama.cpp's converter permutes Q/K for ggml's "normal" rope mode). With
//! `llama.expert_count` above 0 (Mixtral) every feed-forward block is a mixture of experts (`moe`).

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
            rope_style: RopeStyle::Interleaved,
            activation: Activation::Silu,
            fused_gate_up: false,
            experts: ExpertLayers::WhenCounted,
            default_rope_base: 10_000.0,
            rope_layers: RopeLayers::All,
            granite_multipliers: false,
        },
    )
}
