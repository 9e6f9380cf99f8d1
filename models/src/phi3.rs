//! Phi-3 (GGUF architecture `phi3`): fused QKV (`attn_qkv`) and fused gate/up (`ffn_up`, gate first), NeoX
//! rotary embedding; the 128k variants' LongRoPE (short and long per-frequency factors) in `Decoder`.

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
            fused_gate_up: true,
            experts: ExpertLayers::Never,
            default_rope_base: 10_000.0,
            rope_layers: RopeLayers::All,
            granite_multipliers: false,
        },
    )
}
