//! Llama 2/3, Mistral and SmolLM2 (GGUF architecture `llama`): the pre-norm decoder with SwiGLU and
//! interleaved rotary embedding (llama.cpp's converter permutes Q/K for ggml's "normal" rope mode).

use crate::ModelError;
use crate::attention::RopeStyle;
use crate::decoder::{Decoder, DecoderOptions};
use crate::layers::Activation;
use crate::weights::GgufWeights;

pub fn load(w: &mut GgufWeights) -> Result<Decoder, ModelError> {
    Decoder::load(
        w,
        DecoderOptions {
            rope_style: RopeStyle::Interleaved,
            activation: Activation::Silu,
            fused_gate_up: false,
            default_rope_base: 10_000.0,
        },
    )
}
