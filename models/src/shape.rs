//! Shape checks at load: a GGUF's dimensions (`<arch>.attention.head_count`, `embedding_length`, ...)
//! and every tensor the architecture reads are checked against each other before any weight is loaded.
//!
//! The forward pass indexes buffers by these numbers on pool threads; a file whose `head_count_kv` does
//! not divide `head_count`, or whose `attn_k` is narrower than the heads say, would panic there in the
//! middle of a step. Here it is one `ModelError::Shape` naming the key or tensor, returned by `load`.

use crate::ModelError;
use crate::attention::AttentionShape;
use crate::moe::{ExpertLayers, MAX_EXPERTS, MoeShape};
use crate::weights::GgufWeights;

/// What an architecture reads beyond the shared decoder's tensors.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expected {
    /// Gate and up projections stored as one `ffn_up` of twice the width (Phi-3).
    pub fused_gate_up: bool,
    /// Norms after attention and after the MLP as well (Gemma 2 and 3).
    pub post_norms: bool,
    /// Whether feed-forward blocks are mixtures of experts (`qwen3moe`, `granitemoe`; `llama` with an
    /// expert count).
    pub experts: ExpertLayers,
    /// gpt-oss: the pre-FFN norm is `post_attention_norm`, each layer has `attn_sinks` (one per head),
    /// and the attention output is biased.
    pub gpt_oss: bool,
}

impl Expected {
    pub fn for_architecture(architecture: &str) -> Self {
        Self {
            fused_gate_up: architecture == "phi3",
            post_norms: matches!(architecture, "gemma2" | "gemma3"),
            experts: match architecture {
                "qwen3moe" | "granitemoe" => ExpertLayers::Always,
                "qwen2moe" => ExpertLayers::AlwaysWithSharedExpert,
                "llama" | "mistral" => ExpertLayers::WhenCounted,
                "gpt-oss" => ExpertLayers::AlwaysOpenAi,
                _ => ExpertLayers::Never,
            },
            gpt_oss: architecture == "gpt-oss",
        }
    }
}

fn bad(key: impl Into<String>, reason: impl Into<String>) -> ModelError {
    ModelError::Shape {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Heads, KV heads and head size from `<arch>.attention.*`, checked: both head counts positive, the KV
/// heads dividing the query heads (each KV head serves a whole group), and a head size that is either
/// `key_length` or divides `embedding_length` evenly.
pub fn attention_shape(w: &GgufWeights, hidden: usize) -> Result<AttentionShape, ModelError> {
    let arch = w.architecture();
    let key = |k: &str| format!("{arch}.{k}");
    let heads = w.arch_usize("attention.head_count")?;
    if heads == 0 {
        return Err(bad(key("attention.head_count"), "must be at least 1"));
    }
    let kv_heads = w.arch_usize_or("attention.head_count_kv", heads)?;
    if kv_heads == 0 {
        return Err(bad(key("attention.head_count_kv"), "must be at least 1"));
    }
    if !heads.is_multiple_of(kv_heads) {
        return Err(bad(
            key("attention.head_count_kv"),
            format!(
                "{kv_heads} does not divide {} ({heads}): each KV head must serve a whole group of query heads",
                key("attention.head_count")
            ),
        ));
    }
    let head_dim = match w.arch_usize_or("attention.key_length", 0)? {
        0 if !hidden.is_multiple_of(heads) => {
            return Err(bad(
                key("embedding_length"),
                format!(
                    "{hidden} is not divisible by {} ({heads}) and {} is not set",
                    key("attention.head_count"),
                    key("attention.key_length")
                ),
            ));
        }
        0 => hidden / heads,
        n => n,
    };
    let value_length = w.arch_usize_or("attention.value_length", head_dim)?;
    if value_length != head_dim {
        return Err(bad(
            key("attention.value_length"),
            format!(
                "{value_length} differs from the key length {head_dim}, which this engine does not run"
            ),
        ));
    }
    Ok(AttentionShape {
        heads,
        kv_heads,
        head_dim,
    })
}

/// The mixture's expert count and experts per token from `<arch>.expert_count` and
/// `expert_used_count`, or `None` for dense feed-forward blocks: both counts positive, at most llama.cpp's
/// 1024 experts, and no more used than there are. Expert tensors in a file without an expert count, or
/// the old per-expert layout, are refused naming what is missing.
pub fn moe_shape(w: &GgufWeights, layers: ExpertLayers) -> Result<Option<MoeShape>, ModelError> {
    let arch = w.architecture();
    let key = |k: &str| format!("{arch}.{k}");
    let experts = match layers {
        ExpertLayers::Never => return Ok(None),
        ExpertLayers::WhenCounted => w.arch_usize_or("expert_count", 0)?,
        ExpertLayers::Always
        | ExpertLayers::AlwaysWithSharedExpert
        | ExpertLayers::AlwaysOpenAi => w.arch_usize("expert_count")?,
    };
    if experts == 0 {
        if layers != ExpertLayers::WhenCounted {
            return Err(bad(key("expert_count"), "must be at least 1"));
        }
        if w.has_tensor("blk.0.ffn_gate_inp.weight") {
            return Err(ModelError::MissingMetadata(key("expert_count")));
        }
        return Ok(None);
    }
    if experts > MAX_EXPERTS {
        return Err(bad(
            key("expert_count"),
            format!("{experts} experts, more than llama.cpp's {MAX_EXPERTS}"),
        ));
    }
    let used = w.arch_usize("expert_used_count")?;
    if used == 0 || used > experts {
        return Err(bad(
            key("expert_used_count"),
            format!("{used} must be between 1 and the expert count {experts}"),
        ));
    }
    if !w.has_tensor("blk.0.ffn_down_exps.weight") && w.has_tensor("blk.0.ffn_down.0.weight") {
        return Err(ModelError::Unsupported(
            "experts stored as one tensor each (blk.N.ffn_down.E.weight, an old Mixtral layout): \
             convert the model again with a current llama.cpp (ffn_*_exps tensors)"
                .into(),
        ));
    }
    let shared_expert = layers == ExpertLayers::AlwaysWithSharedExpert;
    Ok(Some(MoeShape {
        experts,
        used,
        // gpt-oss's softmax over the chosen logits is the full softmax renormalised over the chosen.
        renormalise: !shared_expert,
        shared_expert,
        openai: layers == ExpertLayers::AlwaysOpenAi,
    }))
}

/// Checks the dimensions in the metadata and the shape of every tensor the architecture will read.
pub fn check(w: &GgufWeights, expected: Expected) -> Result<(), ModelError> {
    let arch = w.architecture();
    let key = |k: &str| format!("{arch}.{k}");
    let layers = w.arch_usize("block_count")?;
    if layers == 0 {
        return Err(bad(key("block_count"), "a model needs at least one layer"));
    }
    let hidden = w.arch_usize("embedding_length")?;
    if hidden == 0 {
        return Err(bad(key("embedding_length"), "must be at least 1"));
    }
    if w.arch_usize_or("context_length", 1)? == 0 {
        return Err(bad(key("context_length"), "must be at least 1"));
    }
    let AttentionShape {
        heads,
        kv_heads,
        head_dim,
    } = attention_shape(w, hidden)?;
    let moe = moe_shape(w, expected.experts)?;
    let rope_dims = w.arch_usize_or("rope.dimension_count", head_dim)?;
    if rope_dims > head_dim || !rope_dims.is_multiple_of(2) {
        return Err(bad(
            key("rope.dimension_count"),
            format!("{rope_dims} must be even and at most the head size {head_dim}"),
        ));
    }

    let (vocab, _) = matrix(w, "token_embd.weight", None, Some(hidden))?;
    if vocab == 0 {
        return Err(bad("token_embd.weight", "the vocabulary is empty"));
    }
    if w.has_tensor("output.weight") {
        matrix(w, "output.weight", Some(vocab), Some(hidden))?;
    }
    vector(w, "output_norm.weight", hidden)?;

    let (q_rows, kv_rows) = (heads * head_dim, kv_heads * head_dim);
    // Layer tensors are looked up in order, so an inflated `block_count` stops at the first missing one.
    for layer in 0..layers {
        let p = format!("blk.{layer}");
        vector(w, &format!("{p}.attn_norm.weight"), hidden)?;
        if w.has_tensor(&format!("{p}.attn_qkv.weight")) {
            projection(w, &format!("{p}.attn_qkv"), q_rows + 2 * kv_rows, hidden)?;
        } else {
            projection(w, &format!("{p}.attn_q"), q_rows, hidden)?;
            projection(w, &format!("{p}.attn_k"), kv_rows, hidden)?;
            projection(w, &format!("{p}.attn_v"), kv_rows, hidden)?;
        }
        matrix(
            w,
            &format!("{p}.attn_output.weight"),
            Some(hidden),
            Some(q_rows),
        )?;
        for norm in ["attn_q_norm", "attn_k_norm"] {
            let name = format!("{p}.{norm}.weight");
            if w.has_tensor(&name) {
                vector(w, &name, head_dim)?;
            }
        }
        if expected.gpt_oss {
            vector(w, &format!("{p}.post_attention_norm.weight"), hidden)?;
            vector(w, &format!("{p}.attn_sinks.weight"), heads)?;
            vector(w, &format!("{p}.attn_output.bias"), hidden)?;
        } else {
            vector(w, &format!("{p}.ffn_norm.weight"), hidden)?;
        }
        if let Some(moe) = moe {
            experts(w, &p, moe, hidden)?;
        } else if expected.fused_gate_up {
            let (_, ff) = matrix(w, &format!("{p}.ffn_down.weight"), Some(hidden), None)?;
            matrix(w, &format!("{p}.ffn_up.weight"), Some(2 * ff), Some(hidden))?;
        } else {
            let (_, ff) = matrix(w, &format!("{p}.ffn_down.weight"), Some(hidden), None)?;
            matrix(w, &format!("{p}.ffn_gate.weight"), Some(ff), Some(hidden))?;
            matrix(w, &format!("{p}.ffn_up.weight"), Some(ff), Some(hidden))?;
        }
        if expected.post_norms {
            vector(w, &format!("{p}.post_attention_norm.weight"), hidden)?;
            vector(w, &format!("{p}.post_ffw_norm.weight"), hidden)?;
        }
    }
    Ok(())
}

/// A layer's router `ffn_gate_inp` `[experts, hidden]` and its experts' `ffn_{gate,up,down}_exps`,
/// `[experts, ff, hidden]` and `[experts, hidden, ff]` with one expert width `ff` for all three; and a
/// shared expert's gate `ffn_gate_inp_shexp` (`[hidden]`, or `[1, hidden]` as the converter keeps it)
/// and its `ffn_{gate,up,down}_shexp` matrices where the mixture has one.
fn experts(w: &GgufWeights, p: &str, moe: MoeShape, hidden: usize) -> Result<(), ModelError> {
    let n = moe.experts;
    matrix(
        w,
        &format!("{p}.ffn_gate_inp.weight"),
        Some(n),
        Some(hidden),
    )?;
    let down = format!("{p}.ffn_down_exps.weight");
    let [_, _, ff] = stack(w, &down, [Some(n), Some(hidden), None])?;
    if ff == 0 {
        return Err(bad(down, "the experts' width is 0"));
    }
    for name in ["ffn_gate_exps", "ffn_up_exps"] {
        stack(
            w,
            &format!("{p}.{name}.weight"),
            [Some(n), Some(ff), Some(hidden)],
        )?;
    }
    if moe.openai {
        vector(w, &format!("{p}.ffn_gate_inp.bias"), n)?;
        for (name, width) in [
            ("ffn_gate_exps", ff),
            ("ffn_up_exps", ff),
            ("ffn_down_exps", hidden),
        ] {
            matrix(w, &format!("{p}.{name}.bias"), Some(n), Some(width))?;
        }
    }
    if moe.shared_expert {
        let gate = format!("{p}.ffn_gate_inp_shexp.weight");
        match w.tensor_dims(&gate) {
            None => return Err(ModelError::MissingTensor(gate)),
            Some(dims) if dims == [hidden] || dims == [1, hidden] => {}
            Some(dims) => {
                return Err(bad(
                    gate,
                    format!("expected [{hidden}] or [1, {hidden}], found {dims:?}"),
                ));
            }
        }
        let (_, ff) = matrix(w, &format!("{p}.ffn_down_shexp.weight"), Some(hidden), None)?;
        matrix(
            w,
            &format!("{p}.ffn_gate_shexp.weight"),
            Some(ff),
            Some(hidden),
        )?;
        matrix(
            w,
            &format!("{p}.ffn_up_shexp.weight"),
            Some(ff),
            Some(hidden),
        )?;
    }
    Ok(())
}

/// Checks a 3-D tensor's dimensions where given (experts' matrices stacked); returns all three.
fn stack(w: &GgufWeights, name: &str, want: [Option<usize>; 3]) -> Result<[usize; 3], ModelError> {
    let dims = w
        .tensor_dims(name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    let &[a, b, c] = dims else {
        return Err(bad(
            name,
            format!("expected a stack of expert matrices (3 dimensions), found {dims:?}"),
        ));
    };
    let found = [a, b, c];
    if want
        .iter()
        .zip(found)
        .any(|(w, f)| w.is_some_and(|w| w != f))
    {
        let show: Vec<String> = want
            .iter()
            .map(|d| d.map_or("any".to_string(), |d| d.to_string()))
            .collect();
        return Err(bad(
            name,
            format!("expected [{}], found {found:?}", show.join(", ")),
        ));
    }
    Ok(found)
}

/// `<name>.weight` of `[rows, cols]`, and `<name>.bias` of `[rows]` if present.
fn projection(w: &GgufWeights, name: &str, rows: usize, cols: usize) -> Result<(), ModelError> {
    matrix(w, &format!("{name}.weight"), Some(rows), Some(cols))?;
    let bias = format!("{name}.bias");
    if w.has_tensor(&bias) {
        vector(w, &bias, rows)?;
    }
    Ok(())
}

/// Checks a 2-D tensor's `[rows, cols]` where given; returns both.
fn matrix(
    w: &GgufWeights,
    name: &str,
    rows: Option<usize>,
    cols: Option<usize>,
) -> Result<(usize, usize), ModelError> {
    let dims = w
        .tensor_dims(name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    let &[r, c] = dims else {
        return Err(bad(
            name,
            format!("expected a matrix, found dimensions {dims:?}"),
        ));
    };
    if rows.is_some_and(|n| n != r) || cols.is_some_and(|n| n != c) {
        let show = |d: Option<usize>| d.map_or("any".to_string(), |d| d.to_string());
        return Err(bad(
            name,
            format!(
                "expected [{}, {}], found [{r}, {c}]",
                show(rows),
                show(cols)
            ),
        ));
    }
    Ok((r, c))
}

/// Checks a 1-D tensor of `len` values (norm weights, biases).
fn vector(w: &GgufWeights, name: &str, len: usize) -> Result<(), ModelError> {
    let dims = w
        .tensor_dims(name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    if dims != [len] {
        return Err(bad(name, format!("expected [{len}], found {dims:?}")));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
    use candle_core::{Device, Tensor};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A tiny llama GGUF's dimensions and tensors, editable before it is written.
    pub(crate) struct TinyLlama {
        pub metadata: Vec<(String, gguf_file::Value)>,
        pub tensors: Vec<(String, Vec<usize>)>,
    }

    impl TinyLlama {
        /// Hidden 8, 2 heads of 4, 1 KV head, feed-forward 16, vocabulary 10, two layers.
        pub(crate) fn new() -> Self {
            use gguf_file::Value;
            let metadata = vec![
                ("general.architecture".into(), Value::String("llama".into())),
                ("llama.block_count".into(), Value::U32(2)),
                ("llama.embedding_length".into(), Value::U32(8)),
                ("llama.attention.head_count".into(), Value::U32(2)),
                ("llama.attention.head_count_kv".into(), Value::U32(1)),
                ("llama.context_length".into(), Value::U32(64)),
            ];
            let mut tensors = vec![
                ("token_embd.weight".to_string(), vec![10, 8]),
                ("output_norm.weight".to_string(), vec![8]),
            ];
            for l in 0..2 {
                for (name, dims) in [
                    ("attn_norm", vec![8]),
                    ("attn_q", vec![8, 8]),
                    ("attn_k", vec![4, 8]),
                    ("attn_v", vec![4, 8]),
                    ("attn_output", vec![8, 8]),
                    ("ffn_norm", vec![8]),
                    ("ffn_gate", vec![16, 8]),
                    ("ffn_up", vec![16, 8]),
                    ("ffn_down", vec![8, 16]),
                ] {
                    tensors.push((format!("blk.{l}.{name}.weight"), dims));
                }
            }
            Self { metadata, tensors }
        }

        pub(crate) fn set(mut self, key: &str, value: gguf_file::Value) -> Self {
            self.metadata.retain(|(k, _)| k != key);
            self.metadata.push((key.to_string(), value));
            self
        }

        pub(crate) fn reshape(mut self, name: &str, dims: Vec<usize>) -> Self {
            for t in &mut self.tensors {
                if t.0 == name {
                    t.1 = dims.clone();
                }
            }
            self
        }

        /// Every layer's dense MLP replaced by `experts` experts of width 16, `used` per token.
        pub(crate) fn with_experts(mut self, experts: usize, used: usize) -> Self {
            use gguf_file::Value;
            self.tensors.retain(|(n, _)| {
                !["ffn_gate.", "ffn_up.", "ffn_down."]
                    .iter()
                    .any(|f| n.contains(f))
            });
            for l in 0..2 {
                for (name, dims) in [
                    ("ffn_gate_inp", vec![experts, 8]),
                    ("ffn_gate_exps", vec![experts, 16, 8]),
                    ("ffn_up_exps", vec![experts, 16, 8]),
                    ("ffn_down_exps", vec![experts, 8, 16]),
                ] {
                    self.tensors.push((format!("blk.{l}.{name}.weight"), dims));
                }
            }
            self.set("llama.expert_count", Value::U32(experts as u32))
                .set("llama.expert_used_count", Value::U32(used as u32))
        }

        /// The same model under another `general.architecture`, its `llama.*` keys renamed to match.
        pub(crate) fn under_architecture(mut self, arch: &str) -> Self {
            for (key, value) in &mut self.metadata {
                if key == "general.architecture" {
                    *value = gguf_file::Value::String(arch.into());
                } else if let Some(rest) = key.strip_prefix("llama.") {
                    *key = format!("{arch}.{rest}");
                }
            }
            self
        }

        pub(crate) fn remove(mut self, key_or_tensor: &str) -> Self {
            self.metadata.retain(|(k, _)| k != key_or_tensor);
            self.tensors.retain(|(k, _)| k != key_or_tensor);
            self
        }

        /// Writes it as F32 tensors of small values to a fresh temporary file.
        pub(crate) fn write(&self) -> PathBuf {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "models-shape-{}-{}.gguf",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let tensors: Vec<(String, QTensor)> = self
                .tensors
                .iter()
                .enumerate()
                .map(|(i, (name, dims))| {
                    let n: usize = dims.iter().product();
                    let values: Vec<f32> = (0..n)
                        .map(|j| ((i * 31 + j) % 7) as f32 * 0.05 + 0.5)
                        .collect();
                    let t = Tensor::from_vec(values, dims.as_slice(), &Device::Cpu).unwrap();
                    (name.clone(), QTensor::quantize(&t, GgmlDType::F32).unwrap())
                })
                .collect();
            let metadata: Vec<(&str, &gguf_file::Value)> =
                self.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let tensor_refs: Vec<(&str, &QTensor)> =
                tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
            let mut file = std::fs::File::create(&path).unwrap();
            gguf_file::write(&mut file, &metadata, &tensor_refs).unwrap();
            path
        }
    }

    fn check_file(model: TinyLlama) -> Result<(), ModelError> {
        let path = model.write();
        let weights = GgufWeights::open(&path, &Device::Cpu);
        let _ = std::fs::remove_file(&path);
        check(&weights?, Expected::for_architecture("llama"))
    }

    fn shape_error(model: TinyLlama) -> (String, String) {
        match check_file(model) {
            Err(ModelError::Shape { key, reason }) => (key, reason),
            other => panic!("expected a shape error, got {other:?}"),
        }
    }

    #[test]
    fn a_consistent_model_passes() {
        check_file(TinyLlama::new()).unwrap();
    }

    #[test]
    fn kv_heads_that_do_not_divide_the_heads_are_refused_naming_the_key() {
        use gguf_file::Value;
        let model = TinyLlama::new()
            .set("llama.attention.head_count", Value::U32(9))
            .set("llama.attention.head_count_kv", Value::U32(7))
            .set("llama.attention.key_length", Value::U32(4));
        let (key, reason) = shape_error(model);
        assert_eq!(key, "llama.attention.head_count_kv");
        assert!(reason.contains("does not divide"), "{reason}");
    }

    #[test]
    fn zero_kv_heads_zero_context_and_uneven_heads_are_refused() {
        use gguf_file::Value;
        let zero_kv = TinyLlama::new().set("llama.attention.head_count_kv", Value::U32(0));
        assert_eq!(shape_error(zero_kv).0, "llama.attention.head_count_kv");
        let zero_context = TinyLlama::new().set("llama.context_length", Value::U32(0));
        assert_eq!(shape_error(zero_context).0, "llama.context_length");
        let uneven = TinyLlama::new().set("llama.attention.head_count", Value::U32(3));
        assert_eq!(shape_error(uneven).0, "llama.embedding_length");
        let long_rope = TinyLlama::new().set("llama.rope.dimension_count", Value::U32(6));
        assert_eq!(shape_error(long_rope).0, "llama.rope.dimension_count");
    }

    #[test]
    fn tensors_of_the_wrong_shape_are_refused_naming_the_tensor() {
        let narrow_k = TinyLlama::new().reshape("blk.1.attn_k.weight", vec![8, 8]);
        let (key, reason) = shape_error(narrow_k);
        assert_eq!(key, "blk.1.attn_k.weight");
        assert!(reason.contains("expected [4, 8], found [8, 8]"), "{reason}");
        let up = TinyLlama::new().reshape("blk.0.ffn_up.weight", vec![12, 8]);
        assert_eq!(shape_error(up).0, "blk.0.ffn_up.weight");
        let norm = TinyLlama::new().reshape("output_norm.weight", vec![7]);
        assert_eq!(shape_error(norm).0, "output_norm.weight");
    }

    #[test]
    fn an_output_head_whose_vocabulary_differs_from_the_embedding_is_refused() {
        let mut model = TinyLlama::new();
        model
            .tensors
            .push(("output.weight".to_string(), vec![12, 8]));
        assert_eq!(shape_error(model).0, "output.weight");
    }

    #[test]
    fn an_inflated_block_count_stops_at_the_first_missing_layer() {
        let model = TinyLlama::new().set("llama.block_count", gguf_file::Value::U64(1 << 40));
        match check_file(model) {
            Err(ModelError::MissingTensor(name)) => assert_eq!(name, "blk.2.attn_norm.weight"),
            other => panic!("expected a missing tensor, got {other:?}"),
        }
    }

    #[test]
    fn a_consistent_mixture_of_experts_passes() {
        check_file(TinyLlama::new().with_experts(4, 2)).unwrap();
    }

    #[test]
    fn missing_expert_tensors_and_keys_are_named() {
        use gguf_file::Value;
        let missing = |model: TinyLlama| match check_file(model) {
            Err(ModelError::MissingTensor(name)) => name,
            Err(ModelError::MissingMetadata(key)) => key,
            other => panic!("expected something missing, got {other:?}"),
        };
        let no_up = TinyLlama::new()
            .with_experts(4, 2)
            .remove("blk.1.ffn_up_exps.weight");
        assert_eq!(missing(no_up), "blk.1.ffn_up_exps.weight");
        let no_router = TinyLlama::new()
            .with_experts(4, 2)
            .remove("blk.0.ffn_gate_inp.weight");
        assert_eq!(missing(no_router), "blk.0.ffn_gate_inp.weight");
        let no_used = TinyLlama::new()
            .with_experts(4, 2)
            .remove("llama.expert_used_count");
        assert_eq!(missing(no_used), "llama.expert_used_count");
        let no_count = TinyLlama::new()
            .with_experts(4, 2)
            .remove("llama.expert_count");
        assert_eq!(missing(no_count), "llama.expert_count");
        let too_many = TinyLlama::new()
            .with_experts(4, 2)
            .set("llama.expert_used_count", Value::U32(5));
        assert_eq!(shape_error(too_many).0, "llama.expert_used_count");
        let wrong_count = TinyLlama::new()
            .with_experts(4, 2)
            .set("llama.expert_count", Value::U32(3));
        assert_eq!(shape_error(wrong_count).0, "blk.0.ffn_gate_inp.weight");
        let flat = TinyLlama::new()
            .with_experts(4, 2)
            .reshape("blk.0.ffn_down_exps.weight", vec![32, 16]);
        let (key, reason) = shape_error(flat);
        assert_eq!(key, "blk.0.ffn_down_exps.weight");
        assert!(reason.contains("3 dimensions"), "{reason}");
        let narrow = TinyLlama::new()
            .with_experts(4, 2)
            .reshape("blk.1.ffn_gate_exps.weight", vec![4, 12, 8]);
        assert_eq!(shape_error(narrow).0, "blk.1.ffn_gate_exps.weight");
    }

    #[test]
    fn a_qwen3moe_file_without_an_expert_count_is_refused_naming_the_key() {
        use gguf_file::Value;
        let mut model = TinyLlama::new()
            .with_experts(4, 2)
            .set("general.architecture", Value::String("qwen3moe".into()));
        for (key, _) in &mut model.metadata {
            if let Some(rest) = key.strip_prefix("llama.") {
                *key = format!("qwen3moe.{rest}");
            }
        }
        let model = model.remove("qwen3moe.expert_count");
        let path = model.write();
        let weights = GgufWeights::open(&path, &Device::Cpu).unwrap();
        let _ = std::fs::remove_file(&path);
        match check(&weights, Expected::for_architecture("qwen3moe")) {
            Err(ModelError::MissingMetadata(key)) => assert_eq!(key, "qwen3moe.expert_count"),
            other => panic!("expected a missing key, got {other:?}"),
        }
    }

    #[test]
    fn a_qwen2moe_file_without_its_shared_expert_is_refused_naming_the_tensor() {
        use gguf_file::Value;
        let mut model = TinyLlama::new()
            .with_experts(4, 2)
            .set("general.architecture", Value::String("qwen2moe".into()));
        for (key, _) in &mut model.metadata {
            if let Some(rest) = key.strip_prefix("llama.") {
                *key = format!("qwen2moe.{rest}");
            }
        }
        let path = model.write();
        let weights = GgufWeights::open(&path, &Device::Cpu).unwrap();
        let _ = std::fs::remove_file(&path);
        match check(&weights, Expected::for_architecture("qwen2moe")) {
            Err(ModelError::MissingTensor(name)) => {
                assert_eq!(name, "blk.0.ffn_gate_inp_shexp.weight")
            }
            other => panic!("expected a missing tensor, got {other:?}"),
        }
    }
}
