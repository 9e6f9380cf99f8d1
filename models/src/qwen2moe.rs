//! Qwen 1.5 / 2 MoE (GGUF architecture `qwen2moe`, e.g. Qwen1.5-MoE-A2.7B, Qwen2-57B-A14B): Qwen 2's
//! attention (biased Q/K/V, NeoX rotary embedding) with a mixture of experts as every layer's
//! feed-forward block (`moe`): the routed experts' softmax weights are not renormalised, and a shared
//! expert (`ffn_*_shexp`) that every token goes through is added, scaled by `sigmoid(ffn_gate_inp_shexp . x)`.

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
            experts: ExpertLayers::AlwaysWithSharedExpert,
            default_rope_base: 1_000_000.0,
            rope_layers: RopeLayers::All,
            granite_multipliers: false,
        },
    )
}
