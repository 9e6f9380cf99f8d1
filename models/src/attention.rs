//! Self-attention over the paged KV cache, for a packed batch.
//!
//! Projections run on candle tensors for the whole batch at once. Rotary embedding, the cache write and
//! the attention itself run here on the host, per (token, head) row in parallel, reading keys and values in
//! place through each sequence's block table: no gather, no concatenation, no per-step allocation of
//! cache-sized tensors. On a GPU device the same code works through host copies; a device kernel for the
//! paged layout belongs to the `kernels` crate.

use candle_core::{Device, Tensor};

use crate::ModelError;
use crate::batch::StepBatch;
use crate::kv_cache::PagedKvCache;
use crate::layers::{Linear, RmsNorm};
use crate::weights::GgufWeights;

/// How rotary embedding pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(x[2i], x[2i+1])`: ggml's "normal" mode, used for llama GGUFs.
    Interleaved,
    /// Halves `(x[i], x[i + d/2])`: GPT-NeoX mode (Qwen, Gemma, Phi-3).
    Neox,
}

/// Rotary position embedding: per-pair frequencies and a pairing style.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f64>,
    style: RopeStyle,
}

/// Cosines and sines for one step's positions: `[token][pair]`.
pub struct RopeAngles {
    cos: Vec<f32>,
    sin: Vec<f32>,
    pairs: usize,
}

impl Rope {
    /// `dims` rotated dimensions per head (the head size unless partial), frequency base `base`.
    pub fn new(dims: usize, base: f32, style: RopeStyle) -> Self {
        let inv_freq = (0..dims / 2)
            .map(|i| 1.0 / (base as f64).powf(2.0 * i as f64 / dims as f64))
            .collect();
        Self { inv_freq, style }
    }

    /// Linear position scaling (`rope.scaling.factor`): positions are divided by `factor`.
    pub fn with_linear_scale(mut self, factor: f32) -> Self {
        if factor > 0.0 && factor != 1.0 {
            for f in &mut self.inv_freq {
                *f /= factor as f64;
            }
        }
        self
    }

    pub fn angles(&self, positions: &[u32]) -> RopeAngles {
        let pairs = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * pairs);
        let mut sin = Vec::with_capacity(positions.len() * pairs);
        for &p in positions {
            for f in &self.inv_freq {
                let (s, c) = (p as f64 * f).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        RopeAngles { cos, sin, pairs }
    }

    /// Rotates every head of every token of `x` (`[tokens][heads][head_dim]`) in place.
    pub fn apply(&self, x: &mut [f32], heads: usize, head_dim: usize, angles: &RopeAngles) {
        let pairs = angles.pairs;
        kernels::pool().for_each_chunk_mut(x, heads * head_dim, &|t, token| {
            let cos = &angles.cos[t * pairs..(t + 1) * pairs];
            let sin = &angles.sin[t * pairs..(t + 1) * pairs];
            for head in token.chunks_mut(head_dim) {
                for i in 0..pairs {
                    let (a, b) = match self.style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::Neox => (i, i + pairs),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos[i] - x1 * sin[i];
                    head[b] = x0 * sin[i] + x1 * cos[i];
                }
            }
        });
    }
}

/// The query/key/value projections: separate matrices, or one fused matrix (Phi-3).
#[derive(Debug, Clone)]
enum Projections {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

/// One layer's self-attention.
#[derive(Debug, Clone)]
pub struct Attention {
    projections: Projections,
    output: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Attend only to the last `window` positions (Gemma's local layers).
    pub sliding_window: Option<usize>,
    /// This layer's index in the KV cache.
    pub layer: usize,
}

/// The shape of a layer's attention, read from the GGUF by the architecture.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    /// Heads, KV heads and head size from `<arch>.attention.*` (head size defaults to hidden / heads).
    pub fn read(w: &GgufWeights, hidden: usize) -> Result<Self, ModelError> {
        let heads = w.arch_usize("attention.head_count")?;
        Ok(Self {
            heads,
            kv_heads: w.arch_usize_or("attention.head_count_kv", heads)?,
            head_dim: w.arch_usize_or("attention.key_length", hidden / heads.max(1))?,
        })
    }
}

impl Attention {
    /// Loads `attn_q/k/v/output` (or fused `attn_qkv`) and, if present, `attn_q_norm`/`attn_k_norm`.
    pub fn load(
        w: &mut GgufWeights,
        layer: usize,
        shape: AttentionShape,
        norm_eps: f32,
    ) -> Result<Self, ModelError> {
        let p = format!("blk.{layer}");
        let (q, k, v) = (
            format!("{p}.attn_q"),
            format!("{p}.attn_k"),
            format!("{p}.attn_v"),
        );
        let projections = if w.has_tensor(&format!("{p}.attn_qkv.weight")) {
            Projections::Fused(Linear::load(w, &format!("{p}.attn_qkv"))?)
        } else if let Some(stacked) = Linear::load_stacked(w, &[&q, &k, &v])? {
            Projections::Fused(stacked)
        } else {
            Projections::Separate {
                q: Linear::load(w, &q)?,
                k: Linear::load(w, &k)?,
                v: Linear::load(w, &v)?,
            }
        };
        let q_norm_name = format!("{p}.attn_q_norm.weight");
        let k_norm_name = format!("{p}.attn_k_norm.weight");
        let q_norm = if w.has_tensor(&q_norm_name) {
            Some(RmsNorm::load(w, &q_norm_name, norm_eps)?)
        } else {
            None
        };
        let k_norm = if w.has_tensor(&k_norm_name) {
            Some(RmsNorm::load(w, &k_norm_name, norm_eps)?)
        } else {
            None
        };
        Ok(Self {
            projections,
            output: Linear::load(w, &format!("{p}.attn_output"))?,
            q_norm,
            k_norm,
            heads: shape.heads,
            kv_heads: shape.kv_heads,
            head_dim: shape.head_dim,
            scale: 1.0 / (shape.head_dim as f32).sqrt(),
            sliding_window: None,
            layer,
        })
    }

    fn project(
        &self,
        x: &Tensor,
        dense_from: usize,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        match &self.projections {
            Projections::Separate { q, k, v } => Ok((
                q.forward(x, dense_from)?,
                k.forward(x, dense_from)?,
                v.forward(x, dense_from)?,
            )),
            Projections::Fused(qkv) => {
                let all = qkv.forward(x, dense_from)?;
                let (q_width, kv_width) =
                    (self.heads * self.head_dim, self.kv_heads * self.head_dim);
                Ok((
                    all.narrow(1, 0, q_width)?,
                    all.narrow(1, q_width, kv_width)?,
                    all.narrow(1, q_width + kv_width, kv_width)?,
                ))
            }
        }
    }

    /// Per-head RMS norm on `[tokens, heads * head_dim]`.
    fn head_norm(
        norm: Option<&RmsNorm>,
        x: Tensor,
        heads: usize,
        head_dim: usize,
    ) -> candle_core::Result<Tensor> {
        match norm {
            Some(norm) => {
                let tokens = x.dim(0)?;
                norm.forward(&x.reshape((tokens, heads, head_dim))?)?
                    .reshape((tokens, heads * head_dim))
            }
            None => Ok(x),
        }
    }

    /// `x` is `[tokens, hidden]` for the whole batch; returns the same shape.
    pub fn forward(
        &self,
        x: &Tensor,
        batch: &StepBatch,
        rope: &Rope,
        angles: &RopeAngles,
        cache: &mut PagedKvCache,
    ) -> Result<Tensor, ModelError> {
        let tokens = x.dim(0)?;
        let dense_from = batch.dense_from();
        let (q, k, v) = self.project(x, dense_from)?;
        let q = Self::head_norm(self.q_norm.as_ref(), q, self.heads, self.head_dim)?;
        let k = Self::head_norm(self.k_norm.as_ref(), k, self.kv_heads, self.head_dim)?;
        let mut q = host_vec(&q)?;
        let mut k = host_vec(&k)?;
        let v = host_vec(&v)?;
        rope.apply(&mut q, self.heads, self.head_dim, angles);
        rope.apply(&mut k, self.kv_heads, self.head_dim, angles);

        let width = self.kv_heads * self.head_dim;
        for seq in &batch.sequences {
            for (i, t) in seq.tokens().enumerate() {
                let row = t * width..(t + 1) * width;
                cache.write(
                    self.layer,
                    &seq.block_table,
                    seq.cached + i,
                    &k[row.clone()],
                    &v[row],
                );
            }
        }
        let out = self.attend(&q, batch, cache);
        let out = Tensor::from_vec(out, (tokens, self.heads * self.head_dim), &Device::Cpu)?
            .to_device(x.device())?;
        Ok(self.output.forward(&out, dense_from)?)
    }

    /// Softmax attention of every (token, head) row against its own sequence's cached positions. One task
    /// per (token, KV head): the query heads sharing a KV head (GQA) read each key and value once.
    fn attend(&self, q: &[f32], batch: &StepBatch, cache: &PagedKvCache) -> Vec<f32> {
        let (hd, heads, kv_heads) = (self.head_dim, self.heads, self.kv_heads);
        let group = heads / kv_heads;
        let (keys, values) = cache.layer(self.layer);
        let simd = VectorOps::detect();
        // The sequence each packed token belongs to.
        let mut owner = vec![0usize; batch.tokens.len()];
        for (s, seq) in batch.sequences.iter().enumerate() {
            owner[seq.tokens()].fill(s);
        }
        let mut out = vec![0f32; q.len()];
        kernels::pool().for_each_chunk_mut(&mut out, group * hd, &|chunk, out_group| {
            let (t, kv_head) = (chunk / kv_heads, chunk % kv_heads);
            let seq = &batch.sequences[owner[t]];
            let position = seq.cached + (t - seq.token_start);
            let first = self
                .sliding_window
                .map_or(0, |w| (position + 1).saturating_sub(w));
            let n = position + 1 - first;
            let kv_offset = kv_head * hd;
            let queries = &q[(t * heads + kv_head * group) * hd..][..group * hd];
            // scores[g * n + i]: query head g of this group against position first + i.
            let mut scores = vec![0f32; group * n];
            for (i, p) in (first..=position).enumerate() {
                let at = cache.slot_offset(&seq.block_table, p) + kv_offset;
                let key = &keys[at..at + hd];
                for (g, query) in queries.chunks_exact(hd).enumerate() {
                    scores[g * n + i] = simd.dot(query, key) * self.scale;
                }
            }
            for row in scores.chunks_exact_mut(n) {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                let mut sum = 0.0;
                for s in row.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|s| *s *= inv);
            }
            for (i, p) in (first..=position).enumerate() {
                let at = cache.slot_offset(&seq.block_table, p) + kv_offset;
                let value = &values[at..at + hd];
                for (g, out_head) in out_group.chunks_exact_mut(hd).enumerate() {
                    simd.axpy(out_head, scores[g * n + i], value);
                }
            }
        });
        out
    }
}

/// The vector loops of attention, compiled twice: for the build's baseline and, on x86-64, with AVX2
/// and FMA, picked at run time (a portable build's baseline is SSE2).
#[derive(Clone, Copy)]
enum VectorOps {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl VectorOps {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return VectorOps::Avx2;
        }
        VectorOps::Baseline
    }

    #[inline]
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            VectorOps::Baseline => dot(a, b),
            // SAFETY: `detect` saw AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            VectorOps::Avx2 => unsafe { dot_avx2(a, b) },
        }
    }

    #[inline]
    fn axpy(self, out: &mut [f32], w: f32, v: &[f32]) {
        match self {
            VectorOps::Baseline => axpy(out, w, v),
            // SAFETY: `detect` saw AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            VectorOps::Avx2 => unsafe { axpy_avx2(out, w, v) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn axpy_avx2(out: &mut [f32], w: f32, v: &[f32]) {
    axpy(out, w, v)
}

fn host_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_device(&Device::Cpu)?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()
}

/// A dot product the compiler vectorises: sixteen independent accumulators.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        let (x, y) = (&a[c * 16..c * 16 + 16], &b[c * 16..c * 16 + 16]);
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 16..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

/// `out += w * v`.
#[inline(always)]
fn axpy(out: &mut [f32], w: f32, v: &[f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += w * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_styles_rotate_the_right_pairs() {
        let angles = RopeAngles {
            cos: vec![0.0, 1.0],
            sin: vec![1.0, 0.0],
            pairs: 2,
        };
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        Rope {
            inv_freq: vec![0.0; 2],
            style: RopeStyle::Interleaved,
        }
        .apply(&mut x, 1, 4, &angles);
        assert_eq!(x, [-2.0, 1.0, 3.0, 4.0]);
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        Rope {
            inv_freq: vec![0.0; 2],
            style: RopeStyle::Neox,
        }
        .apply(&mut x, 1, 4, &angles);
        assert_eq!(x, [-3.0, 2.0, 1.0, 4.0]);
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.1).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
    }
}
