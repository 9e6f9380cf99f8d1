//! BERT encoders (GGUF architecture `bert`: all-MiniLM, bge, mxbai-embed-large, bge-m3, the ms-marco and
//! bge-reranker cross-encoders), as llama.cpp runs them: token, token-type (row 0, "sentence A", for every
//! token) and learned position embeddings, a LayerNorm, then per layer `x = norm(x + attn(x)); x =
//! norm(x + ffn(x))` with bidirectional attention over the whole input, biased projections and a GELU
//! feed-forward. No KV cache: one input is one forward.
//!
//! `nomic-bert` (nomic-embed-text v1/v1.5) is the same graph in llama.cpp (`models/bert.cpp`) with three
//! differences: no position embeddings but NeoX rotary on Q and K (`nomic-bert.rope.freq_base`), one fused
//! `attn_qkv` matrix, and a SwiGLU feed-forward (`silu(ffn_gate(x)) * ffn_up(x)`, no biases).
//!
//! The output is pooled as `bert.pooling_type` says (llama.cpp's enum): mean, the first (`[CLS]`) row,
//! the last row, or rank: the `[CLS]` row through the classifier head (`cls`, tanh, then `cls.output`),
//! whose outputs are the relevance scores of a cross-encoder. Normalising an embedding is the caller's.

use candle_core::{D, Tensor};

use crate::attention::{Rope, RopeStyle};
use crate::layers::{Activation, Embedding, GatedMlp, Linear};
use crate::weights::GgufWeights;
use crate::{ModelError, ModelInfo};

const POOLING_TYPE: &str = "pooling_type";
const LAYER_NORM_EPS: &str = "attention.layer_norm_epsilon";
/// llama.cpp's rope base when a file names none.
const DEFAULT_ROPE_BASE: f32 = 10000.0;

/// The GGUF architectures this file loads.
pub const ARCHITECTURES: [&str; 3] = ["bert", "nomic-bert", "jina-bert-v2"];
/// jina-bert-v2's maximum ALiBi bias (llama.cpp's `f_max_alibi_bias`, fixed for the architecture).
const JINA_MAX_ALIBI_BIAS: f32 = 8.0;

/// How the per-token outputs become one vector (llama.cpp's `llama_pooling_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// 0: one vector per token; served by no pooled endpoint.
    None,
    /// 1: the mean over the input's tokens.
    Mean,
    /// 2: the first token's row (`[CLS]`).
    Cls,
    /// 3: the last token's row.
    Last,
    /// 4: the `[CLS]` row through the classifier head: relevance scores.
    Rank,
}

impl Pooling {
    /// llama.cpp's number for it, as `<arch>.pooling_type` stores it.
    pub fn from_gguf(value: usize) -> Option<Self> {
        Some(match value {
            0 => Pooling::None,
            1 => Pooling::Mean,
            2 => Pooling::Cls,
            3 => Pooling::Last,
            4 => Pooling::Rank,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Pooling::None => "none",
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
            Pooling::Rank => "rank",
        }
    }
}

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension.
#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(w: &mut GgufWeights, name: &str, eps: f32) -> Result<Self, ModelError> {
        Ok(Self {
            weight: w.dequantized(&format!("{name}.weight"))?,
            bias: w.dequantized(&format!("{name}.bias"))?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps)
    }
}

/// Q, K and V: one stacked matrix where the kernels pack them together, else three.
#[derive(Debug, Clone)]
enum Qkv {
    Stacked(Linear),
    Separate { q: Linear, k: Linear, v: Linear },
}

/// BERT's `down(gelu(up(x)))`, or nomic-bert's SwiGLU, or jina-bert-v2's GEGLU.
#[derive(Debug, Clone)]
enum FeedForward {
    Gelu { up: Linear, down: Linear },
    Gated(GatedMlp),
}

impl FeedForward {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            FeedForward::Gelu { up, down } => down.forward(&up.forward(x, 0)?.gelu()?, 0),
            FeedForward::Gated(mlp) => mlp.forward(x, 0),
        }
    }
}

/// Where a token's position enters: BERT's learned rows added to the input, nomic-bert's rotary, or
/// jina-bert-v2's ALiBi slopes (one per head).
#[derive(Debug, Clone)]
enum Positions {
    Learned(Tensor),
    Rotary(Rope),
    Alibi(Vec<f32>),
}

/// ggml's ALiBi slopes (`ggml_soft_max_ext` with `max_bias`), one per head, in f32 as it computes them.
fn alibi_slopes(heads: usize, max_bias: f32) -> Vec<f32> {
    let log2 = 1usize << heads.ilog2();
    let m0 = 2f32.powf(-max_bias / log2 as f32);
    let m1 = 2f32.powf(-(max_bias / 2.0) / log2 as f32);
    (0..heads)
        .map(|h| {
            if h < log2 {
                m0.powf((h + 1) as f32)
            } else {
                m1.powf((2 * (h - log2) + 1) as f32)
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Block {
    qkv: Qkv,
    output: Linear,
    attn_norm: LayerNorm,
    ffn: FeedForward,
    output_norm: LayerNorm,
}

/// The classifier head of a cross-encoder: `cls_out(tanh(cls(x)))`, either part optional.
#[derive(Debug, Clone)]
struct Classifier {
    pooler: Option<Linear>,
    output: Option<Linear>,
}

/// A loaded BERT encoder: weights only.
#[derive(Debug, Clone)]
pub struct Bert {
    info: ModelInfo,
    pooling: Pooling,
    token_embd: Embedding,
    /// Token type 0's row, added to every token as llama.cpp does.
    token_type: Option<Tensor>,
    positions: Positions,
    /// The longest input: the learned positions' rows, or the trained context for rotary.
    max_tokens: usize,
    embd_norm: LayerNorm,
    blocks: Vec<Block>,
    heads: usize,
    head_dim: usize,
    classifier: Classifier,
}

fn bad(key: impl Into<String>, reason: impl Into<String>) -> ModelError {
    ModelError::Shape {
        key: key.into(),
        reason: reason.into(),
    }
}

/// `name` must be a matrix of `rows` x `cols` (candle's order), when the file has it.
fn expect_matrix(w: &GgufWeights, name: &str, rows: usize, cols: usize) -> Result<(), ModelError> {
    match w.tensor_dims(name) {
        None => Err(ModelError::MissingTensor(name.to_string())),
        Some([r, c]) if *r == rows && *c == cols => Ok(()),
        Some(dims) => Err(bad(
            name,
            format!("shape {dims:?}, expected [{rows}, {cols}]"),
        )),
    }
}

fn expect_vector(w: &GgufWeights, name: &str, len: usize) -> Result<(), ModelError> {
    match w.tensor_dims(name) {
        None => Err(ModelError::MissingTensor(name.to_string())),
        Some([n]) if *n == len => Ok(()),
        Some(dims) => Err(bad(name, format!("shape {dims:?}, expected [{len}]"))),
    }
}

/// What distinguishes nomic-bert's and jina-bert-v2's layouts from BERT's.
#[derive(Debug, Clone, Copy)]
struct Variant {
    /// Rotary positions instead of `position_embd`.
    rotary: bool,
    /// ALiBi instead of `position_embd`.
    alibi: bool,
    /// `ffn_gate` beside `ffn_up`: SwiGLU instead of GELU.
    gated: bool,
    /// `ffn_up` twice the feed-forward length, gate rows first: GEGLU.
    fused_geglu: bool,
}

impl Variant {
    fn of(architecture: &str) -> Self {
        let nomic = architecture == "nomic-bert";
        let jina = architecture == "jina-bert-v2";
        Self {
            rotary: nomic,
            alibi: jina,
            gated: nomic,
            fused_geglu: jina,
        }
    }

    fn learned_positions(self) -> bool {
        !self.rotary && !self.alibi
    }
}

/// `[heads, n, n]`: each head's slope times `-|i - j|`, what ggml adds to the scaled scores.
fn alibi_bias(
    slopes: &[f32],
    n: usize,
    device: &candle_core::Device,
) -> candle_core::Result<Tensor> {
    let mut bias = Vec::with_capacity(slopes.len() * n * n);
    for slope in slopes {
        for i in 0..n {
            bias.extend((0..n).map(|j| slope * -(i.abs_diff(j) as f32)));
        }
    }
    Tensor::from_vec(bias, (slopes.len(), n, n), device)
}

/// Every dimension and tensor shape the forward relies on, before any weight loads.
fn check_shapes(
    w: &GgufWeights,
    variant: Variant,
    hidden: usize,
    ff: usize,
    layers: usize,
) -> Result<(), ModelError> {
    let Some(&[vocab, width]) = w.tensor_dims("token_embd.weight") else {
        return Err(ModelError::MissingTensor("token_embd.weight".into()));
    };
    if width != hidden || vocab == 0 {
        return Err(bad(
            "token_embd.weight",
            format!("[{vocab}, {width}] for an embedding length of {hidden}"),
        ));
    }
    if variant.learned_positions() {
        match w.tensor_dims("position_embd.weight") {
            Some([n, c]) if *n > 0 && *c == hidden => {}
            Some(dims) => return Err(bad("position_embd.weight", format!("shape {dims:?}"))),
            None => return Err(ModelError::MissingTensor("position_embd.weight".into())),
        }
    }
    if let Some(dims) = w.tensor_dims("token_types.weight")
        && !matches!(dims, [n, c] if *n > 0 && *c == hidden)
    {
        return Err(bad("token_types.weight", format!("shape {dims:?}")));
    }
    for norm in ["token_embd_norm.weight", "token_embd_norm.bias"] {
        expect_vector(w, norm, hidden)?;
    }
    for layer in 0..layers {
        let p = format!("blk.{layer}");
        let fused = format!("{p}.attn_qkv");
        let projections: &[(&str, usize)] = if w.has_tensor(&format!("{fused}.weight")) {
            &[("attn_qkv", 3 * hidden), ("attn_output", hidden)]
        } else {
            &[
                ("attn_q", hidden),
                ("attn_k", hidden),
                ("attn_v", hidden),
                ("attn_output", hidden),
            ]
        };
        for (name, rows) in projections {
            expect_matrix(w, &format!("{p}.{name}.weight"), *rows, hidden)?;
            let bias = format!("{p}.{name}.bias");
            if w.has_tensor(&bias) {
                expect_vector(w, &bias, *rows)?;
            }
        }
        let up_rows = if variant.fused_geglu { 2 * ff } else { ff };
        expect_matrix(w, &format!("{p}.ffn_up.weight"), up_rows, hidden)?;
        if variant.gated {
            expect_matrix(w, &format!("{p}.ffn_gate.weight"), ff, hidden)?;
        }
        expect_matrix(w, &format!("{p}.ffn_down.weight"), hidden, ff)?;
        for (name, len) in [("ffn_up.bias", up_rows), ("ffn_down.bias", hidden)] {
            let name = format!("{p}.{name}");
            if w.has_tensor(&name) {
                if variant.gated {
                    return Err(bad(name, "nomic-bert's SwiGLU feed-forward has no biases"));
                }
                expect_vector(w, &name, len)?;
            }
        }
        for norm in ["attn_output_norm", "layer_output_norm"] {
            expect_vector(w, &format!("{p}.{norm}.weight"), hidden)?;
            expect_vector(w, &format!("{p}.{norm}.bias"), hidden)?;
        }
    }
    if w.has_tensor("cls.weight") {
        expect_matrix(w, "cls.weight", hidden, hidden)?;
    }
    if let Some(dims) = w.tensor_dims("cls.output.weight")
        && !matches!(dims, [n, c] if *n > 0 && *c == hidden)
    {
        return Err(bad("cls.output.weight", format!("shape {dims:?}")));
    }
    Ok(())
}

/// Q, K and V of one layer: `attn_qkv` when the file fuses them, else the three packed together where
/// the kernels can, else three layers.
fn load_qkv(w: &mut GgufWeights, p: &str) -> Result<Qkv, ModelError> {
    let fused = format!("{p}.attn_qkv");
    if w.has_tensor(&format!("{fused}.weight")) {
        return Ok(Qkv::Stacked(Linear::load(w, &fused)?));
    }
    let names = [
        format!("{p}.attn_q"),
        format!("{p}.attn_k"),
        format!("{p}.attn_v"),
    ];
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    Ok(match Linear::load_stacked(w, &refs)? {
        Some(stacked) => Qkv::Stacked(stacked),
        None => Qkv::Separate {
            q: Linear::load(w, &names[0])?,
            k: Linear::load(w, &names[1])?,
            v: Linear::load(w, &names[2])?,
        },
    })
}

impl Bert {
    pub fn load(w: &mut GgufWeights) -> Result<Self, ModelError> {
        let arch = w.architecture().to_string();
        let variant = Variant::of(&arch);
        let layers = w.arch_usize("block_count")?;
        let hidden = w.arch_usize("embedding_length")?;
        let ff = w.arch_usize("feed_forward_length")?;
        let heads = w.arch_usize("attention.head_count")?;
        if layers == 0 || hidden == 0 || ff == 0 {
            return Err(bad(
                format!("{arch}.block_count"),
                "layers, embedding and feed-forward lengths must be at least 1",
            ));
        }
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(bad(
                format!("{arch}.attention.head_count"),
                format!("{heads} heads do not divide the embedding length {hidden}"),
            ));
        }
        let head_dim = hidden / heads;
        let eps = w.arch_f32_or(LAYER_NORM_EPS, 1e-12)?;
        let pooling_value = w.arch_usize_or(POOLING_TYPE, 1)?;
        let pooling = Pooling::from_gguf(pooling_value).ok_or_else(|| {
            bad(
                format!("{arch}.{POOLING_TYPE}"),
                format!("{pooling_value} is not a pooling type (0 to 4)"),
            )
        })?;
        check_shapes(w, variant, hidden, ff, layers)?;
        let (positions, max_tokens) = if variant.rotary {
            let base = w.arch_f32_or("rope.freq_base", DEFAULT_ROPE_BASE)?;
            let dims = w.arch_usize_or("rope.dimension_count", head_dim)?;
            if dims == 0
                || dims > head_dim
                || !dims.is_multiple_of(2)
                || base.is_nan()
                || base <= 0.0
            {
                return Err(bad(
                    format!("{arch}.rope.dimension_count"),
                    format!("{dims} rotated dimensions, base {base}, for heads of {head_dim}"),
                ));
            }
            let context = w.arch_usize("context_length")?;
            if context == 0 {
                return Err(bad(format!("{arch}.context_length"), "must be at least 1"));
            }
            (
                Positions::Rotary(Rope::new(dims, base, RopeStyle::Neox)),
                context,
            )
        } else if variant.alibi {
            let context = w.arch_usize("context_length")?;
            if context == 0 {
                return Err(bad(format!("{arch}.context_length"), "must be at least 1"));
            }
            (
                Positions::Alibi(alibi_slopes(heads, JINA_MAX_ALIBI_BIAS)),
                context,
            )
        } else {
            let learned = w.dequantized("position_embd.weight")?;
            let rows = learned.dim(0)?;
            let context = w.arch_usize_or("context_length", rows)?;
            (Positions::Learned(learned), context.min(rows))
        };
        let token_type = match w.optional_dequantized("token_types.weight")? {
            Some(types) => Some(types.get(0)?),
            None => None,
        };

        let mut blocks = Vec::with_capacity(layers);
        for layer in 0..layers {
            let p = format!("blk.{layer}");
            let ffn = if variant.gated {
                FeedForward::Gated(GatedMlp::load(w, &p, Activation::Silu)?)
            } else if variant.fused_geglu {
                FeedForward::Gated(GatedMlp::load_fused(w, &p, Activation::GeluTanh)?)
            } else {
                FeedForward::Gelu {
                    up: Linear::load(w, &format!("{p}.ffn_up"))?,
                    down: Linear::load(w, &format!("{p}.ffn_down"))?,
                }
            };
            blocks.push(Block {
                qkv: load_qkv(w, &p)?,
                output: Linear::load(w, &format!("{p}.attn_output"))?,
                attn_norm: LayerNorm::load(w, &format!("{p}.attn_output_norm"), eps)?,
                ffn,
                output_norm: LayerNorm::load(w, &format!("{p}.layer_output_norm"), eps)?,
            });
        }
        let classifier = Classifier {
            pooler: if w.has_tensor("cls.weight") {
                Some(Linear::load(w, "cls")?)
            } else {
                None
            },
            output: if w.has_tensor("cls.output.weight") {
                Some(Linear::load(w, "cls.output")?)
            } else {
                None
            },
        };
        let token_embd = Embedding::load(w, "token_embd.weight", None)?;
        Ok(Self {
            info: ModelInfo {
                architecture: arch,
                vocab_size: token_embd.vocab_size(),
                hidden_size: hidden,
                layers,
                kv_heads: heads,
                head_dim,
                context_length: max_tokens,
            },
            pooling,
            token_embd,
            token_type,
            embd_norm: LayerNorm::load(w, "token_embd_norm", eps)?,
            positions,
            max_tokens,
            blocks,
            heads,
            head_dim,
            classifier,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Whether the file has a classifier head (a cross-encoder that ranks).
    pub fn has_classifier(&self) -> bool {
        self.classifier.pooler.is_some() || self.classifier.output.is_some()
    }

    /// The last layer's outputs, `[tokens, hidden]`, for one input that attends to itself whole.
    pub fn hidden_states(&self, tokens: &[u32]) -> Result<Tensor, ModelError> {
        let n = tokens.len();
        if n == 0 || n > self.max_tokens {
            return Err(ModelError::Unsupported(format!(
                "an input of {n} tokens: this encoder takes 1 to {} tokens",
                self.max_tokens
            )));
        }
        let mut x = self.token_embd.forward(tokens)?;
        if let Some(row) = &self.token_type {
            x = x.broadcast_add(row)?;
        }
        let (mut rotary, mut alibi) = (None, None);
        match &self.positions {
            Positions::Learned(rows) => x = (x + rows.narrow(0, 0, n)?)?,
            Positions::Rotary(rope) => {
                let positions: Vec<u32> = (0..n as u32).collect();
                rotary = Some((rope, rope.angles(&positions)));
            }
            Positions::Alibi(slopes) => alibi = Some(alibi_bias(slopes, n, x.device())?),
        }
        x = self.embd_norm.forward(&x)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        for block in &self.blocks {
            let (q, k, v) = match &block.qkv {
                Qkv::Stacked(qkv) => {
                    let all = qkv.forward(&x, 0)?;
                    let hidden = self.heads * self.head_dim;
                    (
                        all.narrow(D::Minus1, 0, hidden)?,
                        all.narrow(D::Minus1, hidden, hidden)?,
                        all.narrow(D::Minus1, 2 * hidden, hidden)?,
                    )
                }
                Qkv::Separate { q, k, v } => {
                    (q.forward(&x, 0)?, k.forward(&x, 0)?, v.forward(&x, 0)?)
                }
            };
            let (q, k) = match &rotary {
                Some((rope, angles)) => (
                    self.rotated(&q, rope, angles)?,
                    self.rotated(&k, rope, angles)?,
                ),
                None => (q, k),
            };
            let heads = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((n, self.heads, self.head_dim))?
                    .transpose(0, 1)?
                    .contiguous()
            };
            let (q, k, v) = (heads(q)?, heads(k)?, heads(v)?);
            let mut scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
            if let Some(bias) = &alibi {
                scores = (scores + bias)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let attended = probs
                .matmul(&v)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((n, self.heads * self.head_dim))?;
            let attended = block.output.forward(&attended, 0)?;
            let h = block.attn_norm.forward(&(attended + &x)?)?;
            let mixed = block.ffn.forward(&h)?;
            x = block.output_norm.forward(&(mixed + h)?)?;
        }
        Ok(x)
    }

    /// `x` (`[tokens, heads * head_dim]`) with every head rotated by its token's position.
    fn rotated(
        &self,
        x: &Tensor,
        rope: &Rope,
        angles: &crate::attention::RopeAngles,
    ) -> candle_core::Result<Tensor> {
        let shape = x.dims().to_vec();
        let mut values = x.flatten_all()?.to_vec1::<f32>()?;
        rope.apply(&mut values, self.heads, self.head_dim, angles);
        Tensor::from_vec(values, shape, x.device())
    }

    /// The input pooled as the model's `pooling_type` says: an embedding (not normalised) for mean, cls
    /// and last; the classifier's outputs (relevance scores) for rank. `Pooling::None` has no one vector.
    pub fn pooled(&self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let hidden = self.hidden_states(tokens)?;
        let n = tokens.len();
        let row = match self.pooling {
            Pooling::None => {
                return Err(ModelError::Unsupported(
                    "this model's pooling type is none: it gives a vector per token, not one per input"
                        .into(),
                ));
            }
            Pooling::Mean => (hidden.sum(0)? / n as f64)?,
            Pooling::Cls => hidden.get(0)?,
            Pooling::Last => hidden.get(n - 1)?,
            Pooling::Rank => {
                let mut cls = hidden.narrow(0, 0, 1)?;
                if let Some(pooler) = &self.classifier.pooler {
                    cls = pooler.forward(&cls, 0)?.tanh()?;
                }
                if let Some(output) = &self.classifier.output {
                    cls = output.forward(&cls, 0)?;
                }
                cls.get(0)?
            }
        };
        Ok(row.to_vec1::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alibi_slopes_follow_ggml_past_the_largest_power_of_two() {
        // 12 heads: the first 8 take powers of 2^(-8/8), the last 4 odd powers of 2^(-4/8).
        let slopes = alibi_slopes(12, 8.0);
        for (h, slope) in slopes.iter().enumerate().take(8) {
            assert!((slope - 0.5f32.powi(h as i32 + 1)).abs() < 1e-7);
        }
        for (i, slope) in slopes[8..].iter().enumerate() {
            let expected = 2f32.powf(-0.5 * (2 * i + 1) as f32);
            assert!((slope - expected).abs() < 1e-7, "head {}", 8 + i);
        }
    }

    #[test]
    fn alibi_bias_lowers_scores_by_distance() {
        let bias = alibi_bias(&[0.5], 3, &candle_core::Device::Cpu).unwrap();
        assert_eq!(
            bias.get(0).unwrap().to_vec2::<f32>().unwrap(),
            [[0.0, -0.5, -1.0], [-0.5, 0.0, -0.5], [-1.0, -0.5, 0.0]]
        );
    }
}
