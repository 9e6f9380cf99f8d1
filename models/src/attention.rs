//! Self-attention over the paged KV cache, for a packed batch.
//!
//! Projections run on candle tensors for the whole batch at once. Rotary embedding, the cache write and
//! the attention itself run here on the host, per (token, head) row in parallel, reading keys and values in
//! place through each sequence's block table: no gather, no concatenation, no per-step allocation of
//! cache-sized tensors. On CUDA the same steps run as our kernels over the cache in device memory
//! (`crate::cuda`); on Metal through host copies.

use std::ops::Range;

use candle_core::{Device, Tensor};

use kernels::reference::PagedAttentionShape;

use crate::ModelError;
use crate::attention_math::{KEY_BLOCK, SCORE_ROWS, VALUE_ROWS, VectorOps};
use crate::batch::StepBatch;
use crate::kv_cache::{KvLayer, PagedKvCache, Q8Block};
use crate::layers::{Linear, RmsNorm};
use crate::weights::GgufWeights;
use half::f16;
use half::slice::HalfFloatSliceExt;

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
    /// Every cosine and sine is multiplied by this (YaRN's magnitude correction; 1 otherwise).
    mscale: f32,
}

/// YaRN context extension (`rope.scaling.type` = `yarn`), as ggml's `rope_yarn` computes it: each pair's
/// frequency a blend of the interpolated (divided by `factor`) and the original one, by a ramp between
/// the correction dimensions that `beta_fast` and `beta_slow` give, and every angle's cosine and sine
/// scaled by `attn_factor * (1 + 0.1 ln factor)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    /// `rope.scaling.factor`: the context extension (llama.cpp's `1 / freq_scale`).
    pub factor: f32,
    /// `rope.scaling.original_context_length`.
    pub original_context: usize,
    pub beta_fast: f32,
    pub beta_slow: f32,
    /// `rope.scaling.attn_factor` (llama.cpp's `rope_attn_factor`, 1 unless the file says).
    pub attn_factor: f32,
}

/// Cosines and sines for one step's positions: `[token][pair]`.
pub struct RopeAngles {
    cos: Vec<f32>,
    sin: Vec<f32>,
    pairs: usize,
    /// Cosines then sines on the CUDA device, uploaded once per step for every layer.
    #[cfg(feature = "cuda")]
    on_device: Option<Tensor>,
}

impl Rope {
    /// `dims` rotated dimensions per head (the head size unless partial), frequency base `base`.
    pub fn new(dims: usize, base: f32, style: RopeStyle) -> Self {
        let inv_freq = (0..dims / 2)
            .map(|i| 1.0 / (base as f64).powf(2.0 * i as f64 / dims as f64))
            .collect();
        Self {
            inv_freq,
            style,
            mscale: 1.0,
        }
    }

    /// YaRN scaling over `base` (the frequency base `new` was given), with ggml's extrapolation factor 1.
    pub fn with_yarn(mut self, base: f32, yarn: Yarn) -> Self {
        if !(yarn.factor.is_finite() && yarn.factor > 0.0) {
            return self;
        }
        let dims = 2 * self.inv_freq.len();
        let freq_scale = 1.0 / yarn.factor;
        // ggml_rope_yarn_corr_dims, in f32 as ggml computes them.
        let corr_dim = |rotations: f32| {
            dims as f32
                * (yarn.original_context as f32 / (rotations * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * base.ln())
        };
        let low = corr_dim(yarn.beta_fast).floor().max(0.0);
        let high = corr_dim(yarn.beta_slow).ceil().min(dims as f32 - 1.0);
        for (i, f) in self.inv_freq.iter_mut().enumerate() {
            let y = (i as f32 - low) / (high - low).max(0.001);
            let mix = 1.0 - y.clamp(0.0, 1.0);
            *f *= (freq_scale * (1.0 - mix) + mix) as f64;
        }
        // llama.cpp's context sets attn_factor to cancel ggml's own correction for factors up to 1, so the
        // product is 1 there and `1 + 0.1 ln factor` above.
        let correction = if yarn.factor > 1.0 {
            1.0 + 0.1 * yarn.factor.ln()
        } else {
            1.0
        };
        self.mscale = yarn.attn_factor * correction;
        self
    }

    /// Scales the rotation's cosines and sines, so queries and keys, by `factor`, as ggml's rope does
    /// with its `attn_factor` (LongRoPE's `rope.scaling.attn_factor`).
    pub fn with_attention_factor(mut self, factor: f32) -> Result<Self, ModelError> {
        if !factor.is_finite() || factor <= 0.0 {
            return Err(ModelError::Shape {
                key: "rope.scaling.attn_factor".into(),
                reason: format!("{factor} is not a positive number"),
            });
        }
        self.mscale = factor;
        Ok(self)
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

    /// Per-frequency divisors (one per rotated pair, in tensor `name`): how llama.cpp's converter stores
    /// Llama 3's "llama3" rope scaling (`rope_freqs`) and LongRoPE's (`rope_factors_short` / `_long`),
    /// applied as ggml does, `theta_i / factor_i`.
    pub fn with_freq_factors(mut self, name: &str, factors: &[f32]) -> Result<Self, ModelError> {
        if factors.len() != self.inv_freq.len()
            || factors.iter().any(|f| !f.is_finite() || *f <= 0.0)
        {
            return Err(ModelError::Shape {
                key: name.into(),
                reason: format!(
                    "expected {} positive factors, one per rotated pair, found {}",
                    self.inv_freq.len(),
                    factors.len()
                ),
            });
        }
        for (f, factor) in self.inv_freq.iter_mut().zip(factors) {
            *f /= *factor as f64;
        }
        Ok(self)
    }

    /// The angles of `positions`, also on `device` when the kernels there read them.
    pub fn angles_on(&self, positions: &[u32], device: &Device) -> candle_core::Result<RopeAngles> {
        #[allow(unused_mut)]
        let mut angles = self.angles(positions);
        #[cfg(feature = "cuda")]
        if device.is_cuda() {
            let both: Vec<f32> = angles.cos.iter().chain(&angles.sin).copied().collect();
            let len = both.len();
            angles.on_device = Some(Tensor::from_vec(both, len, device)?);
        }
        let _ = device;
        Ok(angles)
    }

    pub fn angles(&self, positions: &[u32]) -> RopeAngles {
        let pairs = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * pairs);
        let mut sin = Vec::with_capacity(positions.len() * pairs);
        for &p in positions {
            for f in &self.inv_freq {
                let (s, c) = (p as f64 * f).sin_cos();
                cos.push(c as f32 * self.mscale);
                sin.push(s as f32 * self.mscale);
            }
        }
        RopeAngles {
            cos,
            sin,
            pairs,
            #[cfg(feature = "cuda")]
            on_device: None,
        }
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
    /// Soft-cap the scaled scores at this value, `c * tanh(s / c)` (Gemma 2).
    pub softcap: Option<f32>,
    /// A learned logit per query head that joins each softmax's denominator without a value (gpt-oss's
    /// attention sinks): the weights of a row then sum to less than 1.
    pub sinks: Option<Vec<f32>>,
    /// Whether queries and keys are rotated: false on SmolLM3's every fourth layer (NoPE), which attends
    /// by content alone.
    pub rotary: bool,
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
    /// Heads, KV heads and head size from `<arch>.attention.*` (head size defaults to hidden / heads),
    /// checked against each other (`crate::shape::attention_shape`).
    pub fn read(w: &GgufWeights, hidden: usize) -> Result<Self, ModelError> {
        crate::shape::attention_shape(w, hidden)
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
            softcap: None,
            sinks: None,
            rotary: true,
            layer,
        })
    }

    /// `Linear::warm` for the layer's first projection.
    pub fn warm(&self, tokens: usize) {
        match &self.projections {
            Projections::Separate { q, .. } => q.warm(tokens),
            Projections::Fused(qkv) => qkv.warm(tokens),
        }
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
        #[cfg(feature = "cuda")]
        if let Some(device_kv) = cache.device_mut() {
            return self.forward_cuda(x, batch, rope, angles, device_kv);
        }
        let tokens = x.dim(0)?;
        let dense_from = batch.dense_from();
        let (q, k, v) = self.project(x, dense_from)?;
        self.output.warm(tokens);
        let q = Self::head_norm(self.q_norm.as_ref(), q, self.heads, self.head_dim)?;
        let k = Self::head_norm(self.k_norm.as_ref(), k, self.kv_heads, self.head_dim)?;
        let mut q = host_vec(&q)?;
        let mut k = host_vec(&k)?;
        let v = host_vec(&v)?;
        if self.rotary {
            rope.apply(&mut q, self.heads, self.head_dim, angles);
            rope.apply(&mut k, self.kv_heads, self.head_dim, angles);
        }

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
                )?;
            }
        }
        let shape = self.kernel_shape(cache.layout().block_size);
        let out = attend_on_host(&shape, self.layer, &q, self.sinks.as_deref(), batch, cache)?;
        let out = Tensor::from_vec(out, (tokens, self.heads * self.head_dim), &Device::Cpu)?
            .to_device(x.device())?;
        Ok(self.output.forward(&out, dense_from)?)
    }

    /// The kernels' view of this layer's attention.
    pub fn kernel_shape(&self, block_size: usize) -> PagedAttentionShape {
        PagedAttentionShape {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            block_size,
            window: self.sliding_window.unwrap_or(0),
            scale: self.scale,
            softcap: self.softcap.unwrap_or(0.0),
        }
    }

    /// `forward` on a CUDA device: everything after the projections runs as our kernels, in device
    /// memory, over the same block tables.
    #[cfg(feature = "cuda")]
    fn forward_cuda(
        &self,
        x: &Tensor,
        batch: &StepBatch,
        rope: &Rope,
        angles: &RopeAngles,
        cache: &mut crate::cuda::DeviceKv,
    ) -> Result<Tensor, ModelError> {
        if self.softcap.is_some() {
            return Err(ModelError::Unsupported(
                "attention soft-capping (Gemma 2) on CUDA: the kernel does not apply it yet".into(),
            ));
        }
        if self.sinks.is_some() {
            return Err(ModelError::Unsupported(
                "attention sinks (gpt-oss) on CUDA: the kernel does not apply them yet".into(),
            ));
        }
        let dense_from = batch.dense_from();
        let (q, k, v) = self.project(x, dense_from)?;
        let q = Self::head_norm(self.q_norm.as_ref(), q, self.heads, self.head_dim)?;
        let k = Self::head_norm(self.k_norm.as_ref(), k, self.kv_heads, self.head_dim)?;
        let (q, k) = if self.rotary {
            let Some(on_device) = angles.on_device.as_ref() else {
                return Err(ModelError::Unsupported(
                    "rotary angles were not uploaded to the device".into(),
                ));
            };
            let neox = rope.style == RopeStyle::Neox;
            let (hd, pairs) = (self.head_dim, angles.pairs);
            (
                crate::cuda::rope(&q, on_device, self.heads, hd, pairs, neox)?,
                crate::cuda::rope(&k, on_device, self.kv_heads, hd, pairs, neox)?,
            )
        } else {
            (q.contiguous()?, k.contiguous()?)
        };
        cache.write(self.layer, &k, &v)?;
        let out = cache.attend(self.layer, &q, &self.kernel_shape(cache.block_size()))?;
        Ok(self.output.forward(&out, dense_from)?)
    }
}

/// Softmax attention of every (token, head) row against its own sequence's cached positions. One task
/// per tile of up to `QUERY_TILE` consecutive tokens of a sequence and KV head: each key and value is
/// widened once for every query head of the tile that reads it (GQA's group, and a prompt's tokens). The CPU
/// path of `kernels::reference::paged_attention`, which the tests hold it to. An f16 cache is widened
/// as it is read, eight values at a time. `sinks`, one logit per query head, join each row's softmax as
/// ggml's `soft_max_ext` with sinks does: in its maximum and its denominator.
pub fn attend_on_host(
    shape: &PagedAttentionShape,
    layer: usize,
    q: &[f32],
    sinks: Option<&[f32]>,
    batch: &StepBatch,
    cache: &PagedKvCache,
) -> Result<Vec<f32>, ModelError> {
    if sinks.is_some_and(|s| s.len() != shape.heads) {
        return Err(ModelError::Shape {
            key: format!("blk.{layer}.attn_sinks.weight"),
            reason: format!("expected one sink per query head ({})", shape.heads),
        });
    }
    Ok(match cache.layer(layer)? {
        KvLayer::F32 { keys, values } => attend(shape, q, sinks, batch, cache, keys, values),
        KvLayer::F16 { keys, values } => attend(shape, q, sinks, batch, cache, keys, values),
        KvLayer::Q8_0 { keys, values } => attend(shape, q, sinks, batch, cache, keys, values),
    })
}

fn attend<E: KvElement>(
    shape: &PagedAttentionShape,
    q: &[f32],
    sinks: Option<&[f32]>,
    batch: &StepBatch,
    cache: &PagedKvCache,
    keys: &[E],
    values: &[E],
) -> Vec<f32> {
    let (hd, heads, kv_heads) = (shape.head_dim, shape.heads, shape.kv_heads);
    let group = heads / kv_heads;
    let simd = VectorOps::detect();
    // Tiles of each sequence's new tokens, then one task per (tile, KV head). Results go to a buffer laid
    // out [KV head][token][group x head_dim], where every task's part is one contiguous run.
    let mut tiles: Vec<(usize, Range<usize>)> = batch
        .sequences
        .iter()
        .enumerate()
        .flat_map(|(s, seq)| {
            seq.tokens()
                .step_by(QUERY_TILE)
                .map(move |t| (s, t..(t + QUERY_TILE).min(seq.tokens().end)))
        })
        .collect();
    tiles.sort_by_key(|(_, range)| range.start);
    let tokens = batch.tokens.len();
    let width = group * hd;
    let mut by_head = vec![0f32; q.len()];
    let mut parts: Vec<std::sync::Mutex<&mut [f32]>> = Vec::with_capacity(tiles.len() * kv_heads);
    for head_part in by_head.chunks_exact_mut(tokens.max(1) * width) {
        let (mut rest, mut at) = (head_part, 0);
        for (_, range) in &tiles {
            // Sequences own disjoint runs of the batch's tokens; a token in none keeps zeros.
            let (_, from) = std::mem::take(&mut rest).split_at_mut((range.start - at) * width);
            let (part, tail) = from.split_at_mut(range.len() * width);
            parts.push(std::sync::Mutex::new(part));
            (rest, at) = (tail, range.end);
        }
    }
    let task = |unit: usize| {
        let (kv_head, (s, range)) = (unit / tiles.len(), &tiles[unit % tiles.len()]);
        let mut out = parts[unit].lock().unwrap_or_else(|p| p.into_inner());
        let seq = &batch.sequences[*s];
        let kv_offset = kv_head * hd;
        // Token j of the tile: its position and the first position it sees.
        let spans: Vec<(usize, usize)> = range
            .clone()
            .map(|t| {
                let position = seq.cached + (t - seq.token_start);
                let first = match shape.window {
                    0 => 0,
                    w => (position + 1).saturating_sub(w),
                };
                (first, position)
            })
            .collect();
        let (Some(&(lowest, _)), Some(&(_, highest))) = (spans.first(), spans.last()) else {
            return;
        };
        // Rows of the tile: query head g of token j is row j * group + g, its output `out[row * hd..]`.
        let rows = spans.len() * group;
        let query = |row: usize| {
            let (j, g) = (row / group, row % group);
            &q[((range.start + j) * heads + kv_head * group + g) * hd..][..hd]
        };
        // Online softmax over chunks of positions (flash attention's recurrence): each row keeps its
        // running maximum and denominator, and its output accumulates unnormalised. A sink starts a
        // row as one logit without a value.
        let mut max: Vec<f32> = (0..rows)
            .map(|row| sinks.map_or(f32::NEG_INFINITY, |s| s[kv_head * group + row % group]))
            .collect();
        let mut sum: Vec<f32> = max
            .iter()
            .map(|m| if m.is_finite() { 1.0 } else { 0.0 })
            .collect();
        let chunk_cap = KEY_CHUNK
            .min(highest + 1 - lowest)
            .next_multiple_of(KEY_BLOCK);
        let mut keys_f32 = vec![0f32; hd * chunk_cap];
        let mut vals = vec![0f32; hd * chunk_cap];
        let mut scores = vec![0f32; rows * chunk_cap];
        // Chunks end on whole multiples of `KEY_CHUNK` positions, wherever the tile starts: a row's
        // softmax then takes the same steps whatever tile it is in (a token's result does not depend
        // on what shares its step).
        let mut next = lowest;
        while next <= highest {
            let start = next;
            let end = ((start / KEY_CHUNK + 1) * KEY_CHUNK).min(highest + 1);
            next = end;
            let (n, stride) = (end - start, (end - start).next_multiple_of(KEY_BLOCK));
            // The chunk's keys and values as f32 rows, widened once for every row of the tile; the keys
            // padded with zero rows to whole blocks.
            for (i, p) in (start..end).enumerate() {
                let at = (cache.slot_offset(&seq.block_table, p) + kv_offset) / E::VALUES;
                let row = i * hd..(i + 1) * hd;
                E::widen(
                    simd,
                    &keys[at..at + hd / E::VALUES],
                    &mut keys_f32[row.clone()],
                );
                E::widen(simd, &values[at..at + hd / E::VALUES], &mut vals[row]);
            }
            keys_f32[n * hd..stride * hd].fill(0.0);
            let scores = &mut scores[..rows * stride];
            let mut row = 0;
            while row < rows {
                let take = (rows - row).min(SCORE_ROWS);
                let qs: [&[f32]; SCORE_ROWS] =
                    std::array::from_fn(|r| query(row + r.min(take - 1)));
                let out = &mut scores[row * stride..(row + take) * stride];
                simd.scores(&qs[..take], &keys_f32[..hd * stride], stride, out);
                row += take;
            }
            // Each row's own positions in the chunk: scaled, capped, exponentiated against the running
            // maximum; the rest weigh zero.
            for (row, weights) in scores.chunks_exact_mut(stride).enumerate() {
                let (first, position) = spans[row / group];
                let valid = first.max(start).min(end)..(position + 1).min(end);
                let (from, to) = (valid.start - start, valid.end.max(valid.start) - start);
                weights[..from].fill(0.0);
                weights[to..].fill(0.0);
                let live = &mut weights[from..to];
                if live.is_empty() {
                    continue;
                }
                let chunk_max = if shape.softcap > 0.0 {
                    let mut chunk_max = f32::NEG_INFINITY;
                    for w in live.iter_mut() {
                        *w = shape.softcap * (*w * shape.scale / shape.softcap).tanh();
                        chunk_max = chunk_max.max(*w);
                    }
                    chunk_max
                } else {
                    simd.scale_max(live, shape.scale)
                };
                let new_max = max[row].max(chunk_max);
                // Exactly what the exponential gives in the common cases, without a call per row.
                let rescale = if max[row] == new_max {
                    1.0
                } else if max[row] == f32::NEG_INFINITY {
                    0.0
                } else {
                    (max[row] - new_max).exp()
                };
                let chunk_sum = simd.exp_sum(live, new_max);
                sum[row] = sum[row] * rescale + chunk_sum;
                max[row] = new_max;
                if rescale != 1.0 {
                    out[row * hd..(row + 1) * hd]
                        .iter_mut()
                        .for_each(|o| *o *= rescale);
                }
            }
            let mut row = 0;
            while row < rows {
                let take = (rows - row).min(VALUE_ROWS);
                let weights = &scores[row * stride..(row + take) * stride];
                let outs = &mut out[row * hd..(row + take) * hd];
                simd.weighted_values(weights, stride, &vals[..n * hd], hd, outs);
                row += take;
            }
        }
        for (row, o) in out[..rows * hd].chunks_exact_mut(hd).enumerate() {
            let inv = if sum[row] > 0.0 { 1.0 / sum[row] } else { 0.0 };
            o.iter_mut().for_each(|v| *v *= inv);
        }
    };
    kernels::pool().run(parts.len(), &task);
    drop(parts);
    // Back to the projections' layout, [token][head][head_dim].
    let mut out = vec![0f32; q.len()];
    for (t, token_out) in out
        .chunks_exact_mut(kv_heads * width)
        .enumerate()
        .take(tokens)
    {
        for (kv_head, head_out) in token_out.chunks_exact_mut(width).enumerate() {
            let from = (kv_head * tokens + t) * width;
            head_out.copy_from_slice(&by_head[from..from + width]);
        }
    }
    out
}

/// Query tokens of one sequence that share each widened key and value (a prompt's tokens do; a decode
/// step has one). Their scores and outputs stay in cache: 16 tokens of 4 heads of 128 are 32 KiB.
const QUERY_TILE: usize = 16;
/// Positions one pass of a tile covers: their keys, values and scores stay in the core's cache (128
/// dimensions: 256 KiB of keys and values, 128 KiB of scores for 64 rows), and a long context costs no
/// memory in proportion. The unit tests take smaller chunks, so that a short cache spans several.
const KEY_CHUNK: usize = if cfg!(test) { 40 } else { 512 };

/// An element of the KV cache as attention reads it: widened to f32 once per position for all the
/// query rows that share it.
trait KvElement: Copy + Send + Sync {
    /// Values one element holds (a Q8_0 block holds 32; heads are whole elements).
    const VALUES: usize = 1;
    /// Writes `row`'s values, as f32, to `out` (one head's values).
    fn widen(simd: VectorOps, row: &[Self], out: &mut [f32]);
}

impl KvElement for f32 {
    #[inline]
    fn widen(_: VectorOps, row: &[f32], out: &mut [f32]) {
        out.copy_from_slice(row);
    }
}

impl KvElement for f16 {
    #[inline]
    fn widen(_: VectorOps, row: &[f16], out: &mut [f32]) {
        // half widens with F16C where the CPU has it (detected at run time).
        row.convert_to_f32_slice(out);
    }
}

impl KvElement for Q8Block {
    const VALUES: usize = 32;

    #[inline]
    fn widen(simd: VectorOps, row: &[Q8Block], out: &mut [f32]) {
        match simd {
            VectorOps::Baseline => Q8Block::widen_into(row, out),
            // SAFETY: `detect` saw AVX2, FMA and F16C.
            #[cfg(target_arch = "x86_64")]
            VectorOps::Avx2 | VectorOps::Avx512 => unsafe { widen_q8_avx2(row, out) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn widen_q8_avx2(blocks: &[Q8Block], out: &mut [f32]) {
    Q8Block::widen_into(blocks, out)
}

fn host_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_device(&Device::Cpu)?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::batch::LogitsWanted;
    use crate::kv_layout::{KvLayout, KvType, StepTables};
    use kernels::reference;

    /// `n` fixed values in [-1, 1), a different run for each `seed`.
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed * 97) % 2000) as f32 / 1000.0
                    - 1.0
            })
            .collect()
    }

    /// The CPU engine's attention and the CUDA kernel's twin compute the same thing over the same cache:
    /// a decode deep in one sequence and a prompt chunk of another, with and without a window.
    #[test]
    fn host_attention_matches_the_kernels_twin() {
        let mut outputs = Vec::new();
        for kv_type in [KvType::F32, KvType::F16, KvType::Q8_0] {
            let layout = KvLayout {
                layers: 1,
                kv_heads: 2,
                head_dim: 64,
                block_size: 16,
                kv_type,
            };
            let width = layout.token_width();
            let mut cache = PagedKvCache::new(layout, 16);
            let mut batch = StepBatch::default();
            batch.push(&[1], 20, vec![5, 2], LogitsWanted::Last);
            batch.push(&[1, 2, 3, 4, 5], 3, vec![7], LogitsWanted::All);
            // A prompt chunk deep in a third sequence: three query tiles, several key chunks.
            let long_table = vec![0u32, 1, 3, 4, 6, 8, 9, 10, 11];
            batch.push(&[3; 37], 100, long_table.clone(), LogitsWanted::Last);
            for (seq, table) in [(21, vec![5u32, 2]), (8, vec![7]), (137, long_table)] {
                for p in 0..seq {
                    let row = values(2 * width, (p * 31 + table[0] as usize) as u32);
                    cache
                        .write(0, &table, p, &row[..width], &row[width..])
                        .unwrap();
                }
            }
            let tables = StepTables::new(&batch, layout.block_size).unwrap();
            assert_eq!(
                tables.token_meta[..12],
                [0, 20, 2, 3, 2, 4, 2, 5, 2, 6, 2, 7]
            );
            assert_eq!(tables.slots[0], 2 * 16 + 4);
            let heads = 6;
            let q = values(batch.tokens.len() * heads * 64, 9);
            for (window, softcap) in [(0, 0.0), (4, 0.0), (0, 0.5), (90, 0.0)] {
                let shape = PagedAttentionShape {
                    heads,
                    kv_heads: 2,
                    head_dim: 64,
                    block_size: 16,
                    window,
                    scale: 0.125,
                    softcap,
                };
                let host = attend_on_host(&shape, 0, &q, None, &batch, &cache).unwrap();
                // The twin reads the cache's values as stored (widened, for an f16 cache).
                let (keys, vals) = cache.layer(0).unwrap().to_f32();
                let mut twin = vec![0f32; host.len()];
                reference::paged_attention(
                    &mut twin,
                    &q,
                    &keys,
                    &vals,
                    &tables.block_tables,
                    &tables.token_meta,
                    &shape,
                );
                let worst = host
                    .iter()
                    .zip(&twin)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < 1e-5,
                    "{kv_type:?}, window {window}, softcap {softcap}: largest difference {worst}"
                );
                outputs.push(host);
            }
        }
        // An f16 or q8_0 cache changes attention's output only at that type's precision: f16 keeps 11
        // bits, q8_0 rounds each value by at most half of its block's largest / 127.
        let (f32_out, narrower) = outputs.split_at(4);
        for (kv_type, bound, out) in [
            (KvType::F16, 2e-3, &narrower[..4]),
            (KvType::Q8_0, 1e-2, &narrower[4..]),
        ] {
            for (wide, narrow) in f32_out.iter().zip(out) {
                let worst = wide
                    .iter()
                    .zip(narrow)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < bound,
                    "{kv_type:?} against f32 cache: largest difference {worst}"
                );
            }
        }
    }

    /// A one-layer f16 cache of `kv_heads` heads of 64, blocks of 16, holding `positions` positions of
    /// fixed values, and the block table that reaches them.
    fn f16_cache(kv_heads: usize, positions: usize) -> (PagedKvCache, Vec<u32>) {
        let layout = KvLayout {
            layers: 1,
            kv_heads,
            head_dim: 64,
            block_size: 16,
            kv_type: KvType::F16,
        };
        let width = layout.token_width();
        let blocks = positions.div_ceil(16);
        let mut cache = PagedKvCache::new(layout, blocks);
        let table: Vec<u32> = (0..blocks as u32).collect();
        for p in 0..positions {
            let row = values(2 * width, p as u32 * 7 + 1);
            cache
                .write(0, &table, p, &row[..width], &row[width..])
                .unwrap();
        }
        (cache, table)
    }

    /// Not a check but a measurement: one layer of a 1B model's attention over a 512-token prompt (32
    /// heads, 8 KV heads of 64, f16 cache), best of several runs; on one thread the caller's CPU time:
    /// `MODEL_RUNNER_THREADS=1 cargo test -p model-runner-models --lib attention_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn attention_speed() {
        let (cache, table) = f16_cache(8, 512);
        let mut batch = StepBatch::default();
        batch.push(&[1; 512], 0, table, LogitsWanted::Last);
        let shape = PagedAttentionShape {
            heads: 32,
            kv_heads: 8,
            head_dim: 64,
            block_size: 16,
            window: 0,
            scale: 0.125,
            softcap: 0.0,
        };
        let q = values(512 * 32 * 64, 7);
        let mut best = f64::MAX;
        for _ in 0..5 {
            best = best.min(kernels::timed_seconds(|| {
                attend_on_host(&shape, 0, &q, None, &batch, &cache).unwrap();
            }));
        }
        let macs = 2.0 * 32.0 * 64.0 * 512.0 * 513.0 / 2.0;
        println!(
            "attention, 512 tokens: {:.1} ms, {:.1} GMAC/s",
            best * 1e3,
            macs / best / 1e9
        );
    }

    /// A token's attention is the same to the bit whether it is the last of a prompt chunk or decoded
    /// alone, with a window (whose chunks would otherwise start where each tile's first token sees).
    #[test]
    fn a_tokens_attention_does_not_depend_on_its_tile() {
        let (cache, table) = f16_cache(2, 150);
        let heads = 8;
        for window in [0, 45, 90] {
            let shape = PagedAttentionShape {
                heads,
                kv_heads: 2,
                head_dim: 64,
                block_size: 16,
                window,
                scale: 0.125,
                softcap: 0.0,
            };
            // 37 tokens at positions 100..137 (three tiles), then the last of them alone.
            let q = values(37 * heads * 64, 3);
            let mut chunk = StepBatch::default();
            chunk.push(&[1; 37], 100, table.clone(), LogitsWanted::Last);
            let together = attend_on_host(&shape, 0, &q, None, &chunk, &cache).unwrap();
            let last = &q[36 * heads * 64..];
            let mut single = StepBatch::default();
            single.push(&[1], 136, table.clone(), LogitsWanted::Last);
            let alone = attend_on_host(&shape, 0, last, None, &single, &cache).unwrap();
            assert_eq!(&together[36 * heads * 64..], &alone[..], "window {window}");
        }
    }

    /// A sink joins each head's softmax as one more logit without a value: the weights over the cached
    /// positions are `exp(s_i) / (sum_j exp(s_j) + exp(sink))`.
    #[test]
    fn attention_sinks_join_the_softmax_denominator() {
        let layout = KvLayout {
            layers: 1,
            kv_heads: 1,
            head_dim: 32,
            block_size: 16,
            kv_type: KvType::F32,
        };
        let width = layout.token_width();
        let mut cache = PagedKvCache::new(layout, 2);
        let table = vec![1u32];
        let n = 6;
        for p in 0..n {
            let row = values(2 * width, p as u32 + 3);
            cache
                .write(0, &table, p, &row[..width], &row[width..])
                .unwrap();
        }
        let mut batch = StepBatch::default();
        batch.push(&[1], n - 1, table.clone(), LogitsWanted::Last);
        let heads = 2;
        let q = values(heads * 32, 17);
        let shape = PagedAttentionShape {
            heads,
            kv_heads: 1,
            head_dim: 32,
            block_size: 16,
            window: 0,
            scale: 0.5,
            softcap: 0.0,
        };
        let sinks = [0.7f32, -1.5];
        let host = attend_on_host(&shape, 0, &q, Some(&sinks), &batch, &cache).unwrap();
        let (keys, vals) = cache.layer(0).unwrap().to_f32();
        for (h, sink) in sinks.iter().enumerate() {
            let query = &q[h * 32..(h + 1) * 32];
            let scores: Vec<f32> = (0..n)
                .map(|p| {
                    let at = cache.slot_offset(&table, p);
                    let key = &keys[at..at + 32];
                    0.5 * query.iter().zip(key).map(|(a, b)| a * b).sum::<f32>()
                })
                .collect();
            let z: f32 = scores.iter().map(|s| s.exp()).sum::<f32>() + sink.exp();
            for d in 0..32 {
                let want: f32 = (0..n)
                    .map(|p| scores[p].exp() / z * vals[cache.slot_offset(&table, p) + d])
                    .sum();
                let got = host[h * 32 + d];
                assert!(
                    (got - want).abs() < 1e-5,
                    "head {h}, dim {d}: {got} vs {want}"
                );
            }
        }
    }

    /// YaRN keeps the fast pairs' frequencies, divides the slow ones' by the factor, blends between, and
    /// scales every cosine and sine by `1 + 0.1 ln factor`.
    #[test]
    fn yarn_blends_frequencies_and_scales_magnitudes() {
        let (dims, base) = (32, 150_000.0);
        let plain = Rope::new(dims, base, RopeStyle::Neox);
        let yarn = Rope::new(dims, base, RopeStyle::Neox).with_yarn(
            base,
            Yarn {
                factor: 32.0,
                original_context: 4096,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attn_factor: 1.0,
            },
        );
        // ggml_rope_yarn_corr_dims for these numbers: 4 and 9.
        for i in 0..16 {
            let ratio = yarn.inv_freq[i] / plain.inv_freq[i];
            match i {
                0..=4 => assert!((ratio - 1.0).abs() < 1e-6, "pair {i}: {ratio}"),
                9.. => assert!((ratio - 1.0 / 32.0).abs() < 1e-6, "pair {i}: {ratio}"),
                _ => assert!(ratio < 1.0 && ratio > 1.0 / 32.0, "pair {i}: {ratio}"),
            }
        }
        let mscale = 1.0 + 0.1 * 32f32.ln();
        let angles = yarn.angles(&[0]);
        assert!(angles.cos.iter().all(|c| (c - mscale).abs() < 1e-6));
    }

    #[test]
    fn rope_matches_the_kernels_twin() {
        for (style, neox) in [(RopeStyle::Neox, true), (RopeStyle::Interleaved, false)] {
            let rope = Rope::new(32, 10000.0, style);
            let angles = rope.angles(&[0, 7, 300]);
            let (heads, head_dim) = (3, 64);
            let x = values(3 * heads * head_dim, 4);
            let mut host = x.clone();
            rope.apply(&mut host, heads, head_dim, &angles);
            let mut twin = vec![0f32; x.len()];
            reference::rope(
                &mut twin,
                &x,
                &angles.cos,
                &angles.sin,
                heads,
                head_dim,
                16,
                neox,
            );
            assert_eq!(host, twin);
        }
    }

    #[test]
    fn rope_styles_rotate_the_right_pairs() {
        let angles = RopeAngles {
            cos: vec![0.0, 1.0],
            sin: vec![1.0, 0.0],
            pairs: 2,
            #[cfg(feature = "cuda")]
            on_device: None,
        };
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        Rope {
            inv_freq: vec![0.0; 2],
            style: RopeStyle::Interleaved,
            mscale: 1.0,
        }
        .apply(&mut x, 1, 4, &angles);
        assert_eq!(x, [-2.0, 1.0, 3.0, 4.0]);
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        Rope {
            inv_freq: vec![0.0; 2],
            style: RopeStyle::Neox,
            mscale: 1.0,
        }
        .apply(&mut x, 1, 4, &angles);
        assert_eq!(x, [-3.0, 2.0, 1.0, 4.0]);
    }
}
