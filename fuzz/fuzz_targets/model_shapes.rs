//! The model loader's shape checks (`engine::Engine::load`, through `models::load`) on tiny GGUFs: a valid
//! small model of each architecture (random weights, a byte-level tokenizer) is synthesized per input, then
//! its metadata values are overridden (any GGUF type, any value), tensors dropped or reshaped, and the
//! result loaded and run for two tokens. Metadata that disagrees with the tensors must fail the load (or
//! the step) with an error: never a panic, an abort, or an allocation sized by a lying header.
#![no_main]

use arbitrary::Arbitrary;
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use libfuzzer_sys::fuzz_target;
use model_runner::engine::sampler::argmax;
use model_runner::engine::{Engine, EngineOptions, ModelFiles};
use models::{LogitsWanted, StepBatch};

const ARCHITECTURES: [&str; 5] = ["llama", "qwen2", "qwen3", "phi3", "gemma3"];
const KEYS: [&str; 13] = [
    "block_count",
    "embedding_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "rope.dimension_count",
    "attention.layer_norm_rms_epsilon",
    "rope.freq_base",
    "context_length",
    "attention.sliding_window",
    "rope.scaling.factor",
    "feed_forward_length",
];

/// A metadata value of any GGUF type.
#[derive(Arbitrary, Debug)]
enum Meta {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Text(String),
    /// A near value: the true one plus this (so that shapes are off by a little, not absurdly).
    Near(i8),
    Missing,
}

#[derive(Arbitrary, Debug)]
struct Input {
    architecture: u8,
    dtype: u8,
    layers: u8,
    heads: u8,
    kv_group: u8,
    head_dim: u8,
    ff: u8,
    vocab_extra: u8,
    tied: bool,
    /// (key index, value) pairs applied over the true metadata.
    overrides: Vec<(u8, Meta)>,
    /// (tensor index, dimension, new size) applied to the tensors' shapes.
    reshape: Vec<(u8, u8, u8)>,
    drop: Option<u8>,
    prompt: Vec<u8>,
}

/// The tensors of a model in the layout `models` loads, as (name, shape) with PyTorch-order shapes.
fn tensor_shapes(arch: &str, layers: usize, hidden: usize, q: usize, kv: usize, hd: usize, ff: usize, vocab: usize, tied: bool)
-> Vec<(String, Vec<usize>)> {
    let mut t: Vec<(String, Vec<usize>)> = vec![
        ("token_embd.weight".into(), vec![vocab, hidden]),
        ("output_norm.weight".into(), vec![hidden]),
    ];
    if !tied {
        t.push(("output.weight".into(), vec![vocab, hidden]));
    }
    for l in 0..layers {
        let p = format!("blk.{l}");
        let mut add = |name: &str, shape: Vec<usize>| t.push((format!("{p}.{name}"), shape));
        add("attn_norm.weight", vec![hidden]);
        add("ffn_norm.weight", vec![hidden]);
        if arch == "phi3" {
            add("attn_qkv.weight", vec![q + 2 * kv, hidden]);
            add("ffn_up.weight", vec![2 * ff, hidden]);
        } else {
            add("attn_q.weight", vec![q, hidden]);
            add("attn_k.weight", vec![kv, hidden]);
            add("attn_v.weight", vec![kv, hidden]);
            add("ffn_gate.weight", vec![ff, hidden]);
            add("ffn_up.weight", vec![ff, hidden]);
        }
        if arch == "qwen2" {
            add("attn_q.bias", vec![q]);
            add("attn_k.bias", vec![kv]);
            add("attn_v.bias", vec![kv]);
        }
        if arch == "qwen3" || arch == "gemma3" {
            add("attn_q_norm.weight", vec![hd]);
            add("attn_k_norm.weight", vec![hd]);
        }
        if arch == "gemma3" {
            add("post_attention_norm.weight", vec![hidden]);
            add("post_ffw_norm.weight", vec![hidden]);
        }
        add("attn_output.weight", vec![hidden, q]);
        add("ffn_down.weight", vec![hidden, ff]);
    }
    t
}

fn tensor(name: &str, shape: &[usize], dtype: GgmlDType, seed: usize) -> Option<QTensor> {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0) * 0.2 + if name.contains("norm") { 1.0 } else { 0.0 })
        .collect();
    let t = Tensor::from_vec(values, shape, &Device::Cpu).ok()?;
    let wanted = if shape.len() == 2 && !name.ends_with(".bias") { dtype } else { GgmlDType::F32 };
    QTensor::quantize(&t, wanted)
        .or_else(|_| QTensor::quantize(&t, GgmlDType::F32))
        .ok()
}

fn metadata_value(meta: &Meta, truth: Option<&Value>) -> Option<Value> {
    Some(match meta {
        Meta::U8(v) => Value::U8(*v),
        Meta::U16(v) => Value::U16(*v),
        Meta::U32(v) => Value::U32(*v),
        Meta::U64(v) => Value::U64(*v),
        Meta::I32(v) => Value::I32(*v),
        Meta::I64(v) => Value::I64(*v),
        Meta::F32(v) => Value::F32(*v),
        Meta::F64(v) => Value::F64(*v),
        Meta::Bool(v) => Value::Bool(*v),
        Meta::Text(v) => Value::String(v.clone()),
        Meta::Near(d) => match truth {
            Some(Value::U32(v)) => Value::U32(v.saturating_add_signed(i32::from(*d))),
            Some(Value::F32(v)) => Value::F32(v + f32::from(*d)),
            _ => Value::U32(u32::from(d.unsigned_abs())),
        },
        Meta::Missing => return None,
    })
}

fuzz_target!(init: fuzz_support::single_threaded(), |input: Input| {
    if input.overrides.len() > 16 || input.reshape.len() > 8 || input.prompt.len() > 24 {
        return;
    }
    let arch = ARCHITECTURES[input.architecture as usize % ARCHITECTURES.len()];
    let dtype = [GgmlDType::F32, GgmlDType::F16, GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4K]
        [input.dtype as usize % 5];
    let layers = 1 + input.layers as usize % 2;
    let heads = 1 + input.heads as usize % 4;
    // KV heads divide the heads (GQA groups of 1, 2 or 4 where they fit).
    let group = [1, 2, 4][input.kv_group as usize % 3];
    let kv_heads = if heads % group == 0 { heads / group } else { heads };
    let head_dim = [8, 16, 32][input.head_dim as usize % 3];
    let hidden = 32 * (1 + (heads * head_dim) / 64);
    let ff = 32 * (1 + input.ff as usize % 3);
    let mut metadata = fuzz_support::tiny_tokenizer_metadata(input.vocab_extra as usize % 8);
    let vocab = match metadata.get("tokenizer.ggml.tokens") {
        Some(Value::Array(tokens)) => tokens.len(),
        _ => return,
    };
    metadata.insert("general.architecture".into(), Value::String(arch.into()));
    let truth: [(usize, u32); 7] = [
        (0, layers as u32),
        (1, hidden as u32),
        (2, heads as u32),
        (3, kv_heads as u32),
        (4, head_dim as u32),
        (9, 64),
        (12, ff as u32),
    ];
    for (key, value) in truth {
        metadata.insert(format!("{arch}.{}", KEYS[key]), Value::U32(value));
    }
    for (key, meta) in &input.overrides {
        let key = format!("{arch}.{}", KEYS[*key as usize % KEYS.len()]);
        match metadata_value(meta, metadata.get(&key)) {
            Some(value) => metadata.insert(key, value),
            None => metadata.remove(&key),
        };
    }
    let mut shapes = tensor_shapes(arch, layers, hidden, heads * head_dim, kv_heads * head_dim, head_dim, ff, vocab, input.tied);
    for &(index, dim, size) in &input.reshape {
        let count = shapes.len();
        let shape = &mut shapes[index as usize % count].1;
        let dims = shape.len();
        shape[dim as usize % dims] = 1 + size as usize % 96;
    }
    if let Some(index) = input.drop {
        let count = shapes.len();
        shapes.remove(index as usize % count);
    }
    let mut tensors = Vec::new();
    for (i, (name, shape)) in shapes.iter().enumerate() {
        let Some(t) = tensor(name, shape, dtype, i) else {
            return;
        };
        tensors.push((name.clone(), t));
    }
    let mut metadata: Vec<(String, Value)> = metadata.into_iter().collect();
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let Some(bytes) = fuzz_support::gguf_bytes(&metadata, &tensors) else {
        return;
    };
    let path = fuzz_support::scratch_file("model.gguf");
    std::fs::write(path, bytes).expect("write the scratch GGUF");
    let files = ModelFiles { gguf: vec![path.to_path_buf()], chat_template: None, context_size: None };
    let options = EngineOptions {
        device: Device::Cpu,
        context_size: Some(32),
        kv_blocks: Some(4),
        sequences: 1,
        ..Default::default()
    };
    let Ok(mut engine) = Engine::load(&files, &options) else {
        return;
    };
    let mut prompt: Vec<u32> = input.prompt.iter().map(|&b| u32::from(b)).collect();
    if prompt.is_empty() {
        prompt.push(1);
    }
    // Two tokens straight through the engine (no scheduler, whose thread would catch a panic): the
    // prompt in one step, then one decode.
    if prompt.len() >= engine.context_size() {
        return;
    }
    let mut lease = engine.pool().lease();
    if lease.reserve(prompt.len() + 1).is_err() {
        return;
    }
    let batch = StepBatch::prefill(&prompt, lease.blocks().to_vec(), LogitsWanted::Last);
    let Ok(logits) = engine.step(&batch).and_then(|l| Ok(l.to_vec2::<f32>()?)) else {
        return;
    };
    let Some(row) = logits.first() else {
        return;
    };
    let next = argmax(row);
    let batch = StepBatch::decode([(next, prompt.len(), lease.blocks().to_vec())]);
    let _ = engine.step(&batch);
});
