//! CPU twins of the CUDA kernels (`cuda`): the same arithmetic over the same layouts, written plainly.
//! The CUDA tests compare each kernel with its twin on a GPU; the models' tests compare the twins with the
//! engine's CPU path, so all three compute one thing.

/// The shape of a paged-attention launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PagedAttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Token positions per cache block.
    pub block_size: usize,
    /// Attend only to the last `window` positions; 0: to all.
    pub window: usize,
    pub scale: f32,
    /// Scaled scores pass through `softcap * tanh(score / softcap)` before the softmax (Gemma 2); 0: not.
    pub softcap: f32,
}

impl PagedAttentionShape {
    /// Floats one cache slot holds: every KV head of one position.
    pub fn slot_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// The nonlinearity of a gated feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatedActivation {
    Silu,
    /// GELU, tanh approximation (Gemma).
    GeluTanh,
}

impl GatedActivation {
    /// The kernel's code for it.
    pub fn code(self) -> i32 {
        match self {
            GatedActivation::Silu => 0,
            GatedActivation::GeluTanh => 1,
        }
    }

    pub fn apply(self, g: f32) -> f32 {
        match self {
            GatedActivation::Silu => g / (1.0 + (-g).exp()),
            GatedActivation::GeluTanh => {
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                0.5 * g * (1.0 + (SQRT_2_OVER_PI * g * (1.0 + 0.044715 * g * g)).tanh())
            }
        }
    }
}

/// Softmax attention of each token's query heads (`q`: `[token][head][head_dim]`) over its own sequence's
/// cached positions. `token_meta[2t]` is where token t's block table starts in `block_tables`,
/// `token_meta[2t + 1]` its position; caches are `[block][slot][kv_head][head_dim]`.
pub fn paged_attention(
    out: &mut [f32],
    q: &[f32],
    key_cache: &[f32],
    value_cache: &[f32],
    block_tables: &[u32],
    token_meta: &[u32],
    shape: &PagedAttentionShape,
) {
    let PagedAttentionShape {
        heads,
        kv_heads,
        head_dim,
        block_size,
        window,
        scale,
        softcap,
    } = *shape;
    let group = heads / kv_heads;
    for (t, meta) in token_meta.chunks_exact(2).enumerate() {
        let (table, position) = (meta[0] as usize, meta[1] as usize);
        let first = if window > 0 {
            (position + 1).saturating_sub(window)
        } else {
            0
        };
        let row = |p: usize, kv_head: usize| {
            let block = block_tables[table + p / block_size] as usize;
            ((block * block_size + p % block_size) * kv_heads + kv_head) * head_dim
        };
        for head in 0..heads {
            let kv_head = head / group;
            let query = &q[(t * heads + head) * head_dim..][..head_dim];
            let scores: Vec<f32> = (first..=position)
                .map(|p| {
                    let key = &key_cache[row(p, kv_head)..][..head_dim];
                    let score = query.iter().zip(key).map(|(a, b)| a * b).sum::<f32>() * scale;
                    if softcap > 0.0 {
                        softcap * (score / softcap).tanh()
                    } else {
                        score
                    }
                })
                .collect();
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let inv_sum = 1.0 / weights.iter().sum::<f32>();
            let out_head = &mut out[(t * heads + head) * head_dim..][..head_dim];
            out_head.fill(0.0);
            for (p, w) in (first..=position).zip(&weights) {
                let value = &value_cache[row(p, kv_head)..][..head_dim];
                for (o, v) in out_head.iter_mut().zip(value) {
                    *o += w * inv_sum * v;
                }
            }
        }
    }
}

/// Stores token t's key and value rows (`width` floats each) at cache slot `slots[t]`.
pub fn write_kv(
    key_cache: &mut [f32],
    value_cache: &mut [f32],
    k: &[f32],
    v: &[f32],
    slots: &[u32],
    width: usize,
) {
    for (t, &slot) in slots.iter().enumerate() {
        let dst = slot as usize * width;
        key_cache[dst..dst + width].copy_from_slice(&k[t * width..(t + 1) * width]);
        value_cache[dst..dst + width].copy_from_slice(&v[t * width..(t + 1) * width]);
    }
}

/// Rotary embedding of `x` (`[token][head][head_dim]`) into `out`; `cos`/`sin` are `[token][pair]`. The
/// first `2 * pairs` dimensions of each head rotate, in NeoX halves or adjacent pairs; the rest are copied.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    out: &mut [f32],
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    heads: usize,
    head_dim: usize,
    pairs: usize,
    neox: bool,
) {
    out.copy_from_slice(x);
    for (t, token) in out.chunks_exact_mut(heads * head_dim).enumerate() {
        for head in token.chunks_exact_mut(head_dim) {
            for i in 0..pairs {
                let (a, b) = if neox {
                    (i, i + pairs)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (c, s) = (cos[t * pairs + i], sin[t * pairs + i]);
                let (xa, xb) = (head[a], head[b]);
                head[a] = xa * c - xb * s;
                head[b] = xa * s + xb * c;
            }
        }
    }
}

/// `out = x / sqrt(mean(x^2) + eps) * weight`, per row of `weight.len()` values.
pub fn rms_norm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let cols = weight.len();
    for (out_row, row) in out.chunks_exact_mut(cols).zip(x.chunks_exact(cols)) {
        let mean_square = row.iter().map(|v| v * v).sum::<f32>() / cols as f32;
        let inv_rms = 1.0 / (mean_square + eps).sqrt();
        for ((o, v), w) in out_row.iter_mut().zip(row).zip(weight) {
            *o = v * inv_rms * w;
        }
    }
}

/// `out = act(gate) * up`, element by element.
pub fn gated_activation(out: &mut [f32], gate: &[f32], up: &[f32], activation: GatedActivation) {
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = activation.apply(*g) * u;
    }
}
