//! Granite 3.x (GGUF architectures `granite`, dense, and `granitemoe`): Llama's decoder (SwiGLU,
//! interleaved rotary embedding, GQA; optional biases on the attention output and the MLP) with IBM's
//! multipliers, which `Decoder` applies as llama.cpp does: `<arch>.embedding_scale` on the token
//! embeddings, `residual_scale` on each attention and feed-forward output before the residual add,
//! `attention.scale` instead of `1/sqrt(head size)`, and the logits divided by `logit_scale` (required,
//! as llama.cpp requires it). `granitemoe`'s feed-forward blocks are mixtures of experts (softmax router,
//! top-k renormalised, `moe`); the shared-expert variant (`expert_shared_feed_forward_length`) is refused.
//! `rope.scaling.finetuned` false turns rotary embedding off in every layer, llama.cpp's switch for it.

use crate::ModelError;
use crate::attention::RopeStyle;
use crate::decoder::{Decoder, DecoderOptions, RopeLayers};
use crate::layers::Activation;
use crate::moe::ExpertLayers;
use crate::weights::GgufWeights;

pub fn load(w: &mut GgufWeights) -> Result<Decoder, ModelError> {
    let experts = if w.architecture() == "granitemoe" {
        if w.arch_usize_or("expert_shared_feed_forward_length", 0)? > 0 {
            return Err(ModelError::Unsupported(
                "granitemoe with a shared expert (GraniteMoeShared): not implemented".into(),
            ));
        }
        ExpertLayers::Always
    } else {
        ExpertLayers::Never
    };
    let rope_layers = if w.arch_bool_or("rope.scaling.finetuned", true)? {
        RopeLayers::All
    } else {
        RopeLayers::None
    };
    Decoder::load(
        w,
        DecoderOptions {
            rope_style: RopeStyle::Interleaved,
            activation: Activation::Silu,
            fused_gate_up: false,
            experts,
            default_rope_base: 10_000.0,
            rope_layers,
            granite_multipliers: true,
        },
    )
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use candle_core::quantized::gguf_file::Value;

    use crate::ModelError;
    use crate::shape::tests::TinyLlama;

    fn load(model: TinyLlama) -> Result<crate::LoadedModel, ModelError> {
        let path = model.write();
        let loaded = crate::load(&[path.as_path()], &Device::Cpu);
        let _ = std::fs::remove_file(&path);
        loaded
    }

    fn granite(arch: &str) -> TinyLlama {
        TinyLlama::new()
            .set("llama.logit_scale", Value::F32(8.0))
            .set("llama.residual_scale", Value::F32(0.22))
            .under_architecture(arch)
    }

    #[test]
    fn a_granite_file_loads_and_one_without_its_logit_scale_is_refused_in_one_line() {
        load(granite("granite")).expect("a granite file with its multipliers");
        let err = load(granite("granite").remove("granite.logit_scale"))
            .err()
            .expect("no logit_scale");
        assert!(
            matches!(&err, ModelError::MissingMetadata(key) if key == "granite.logit_scale"),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("granite.logit_scale"), "{message}");
    }

    #[test]
    fn granite_multipliers_that_are_not_numbers_are_refused_naming_the_key() {
        let err = load(granite("granite").set("granite.logit_scale", Value::F32(0.0)))
            .err()
            .expect("a zero divisor");
        assert!(
            matches!(&err, ModelError::Shape { key, .. } if key == "granite.logit_scale"),
            "{err:?}"
        );
        let err = load(granite("granite").set("granite.embedding_scale", Value::U32(12)))
            .err()
            .expect("an integer multiplier");
        assert!(
            matches!(&err, ModelError::BadMetadata(key) if key == "granite.embedding_scale"),
            "{err:?}"
        );
    }

    #[test]
    fn a_granitemoe_with_a_shared_expert_is_refused() {
        let model = TinyLlama::new()
            .with_experts(4, 2)
            .set("llama.logit_scale", Value::F32(8.0))
            .set("llama.expert_shared_feed_forward_length", Value::U32(16))
            .under_architecture("granitemoe");
        let err = load(model).err().expect("a shared expert");
        assert!(matches!(&err, ModelError::Unsupported(_)), "{err:?}");
        let model = TinyLlama::new()
            .with_experts(4, 2)
            .set("llama.logit_scale", Value::F32(8.0))
            .under_architecture("granitemoe");
        load(model).expect("a granitemoe file");
    }
}
