//! The CPU attention's inner loops (`attention::attend`): query-key scores, softmax's scaling,
//! exponentials and the weighted sum of values, compiled for the build's baseline and, on x86-64, with
//! AVX2, FMA and F16C, and again on AVX-512's 16-float vectors, picked at run time (a portable build's
//! baseline is SSE2).
//!
//! Both products are small matrix products over one tile's rows (its tokens' query heads that share a
//! KV head) and one chunk of cached positions, whose keys and values are widened to f32 rows once:
//! - scores: up to four rows against four keys at a time (AVX2: two rows at a time), the sums in
//!   registers across the head, reduced once per four keys;
//! - weighted values: up to four rows by sixteen (AVX-512: 64) output dimensions in registers across
//!   every position, each value vector loaded once for all the rows.
//!
//! Every row is computed on its own, in the same order whatever rows share its call: a token's result
//! does not depend on the tile it is in.

/// Keys one score step covers; a chunk's key rows are padded (with zeros) to whole blocks.
pub const KEY_BLOCK: usize = 4;
/// Rows one score step takes at most.
pub const SCORE_ROWS: usize = 4;
/// Rows one weighted-values step takes at most.
pub const VALUE_ROWS: usize = 4;

/// Softmax's exponentials take Cephes' `expf` (`kernels::cpu::CEPHES_EXP_*`) for shifted scores
/// (`x <= 0`); anything below `EXP_FLOOR` gives exp(-87).
#[cfg(target_arch = "x86_64")]
const EXP_FLOOR: f32 = -87.0;

/// The vector level the loops run at.
#[derive(Clone, Copy, Debug)]
pub enum VectorOps {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX2's loops on 512-bit vectors (AVX-512F), where the matrix kernels run at their AVX-512 level
    /// (`kernels::cpu::SimdLevel`, so `MODEL_RUNNER_SIMD=avx2` caps both).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl VectorOps {
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            if is_x86_feature_detected!("avx512f")
                && kernels::cpu::SimdLevel::detect() == kernels::cpu::SimdLevel::Avx512Vnni
            {
                return VectorOps::Avx512;
            }
            return VectorOps::Avx2;
        }
        VectorOps::Baseline
    }

    /// `out[r * stride + i]` = `queries[r]` . key `i`, for one to `SCORE_ROWS` queries of `head_dim`
    /// and the keys in `keys` (rows of `head_dim`, a whole number of `KEY_BLOCK`s, at most `stride`).
    #[inline]
    pub fn scores(self, queries: &[&[f32]], keys: &[f32], stride: usize, out: &mut [f32]) {
        match self {
            VectorOps::Baseline => scores(queries, keys, stride, out),
            // SAFETY: `detect` saw AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            VectorOps::Avx2 => unsafe { x86::scores(queries, keys, stride, out) },
            // SAFETY: `detect` saw AVX-512F, AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            VectorOps::Avx512 => unsafe { x86_wide::scores(queries, keys, stride, out) },
        }
    }

    /// `x[i] *= scale`, returning their maximum (negative infinity for none).
    #[inline]
    pub fn scale_max(self, x: &mut [f32], scale: f32) -> f32 {
        match self {
            VectorOps::Baseline => scale_max(x, scale),
            // SAFETY: `detect` saw AVX2.
            #[cfg(target_arch = "x86_64")]
            VectorOps::Avx2 => unsafe { x86::scale_max(x, scale) },
            // SAFETY: `detect` saw AVX-512F.
            #[cfg(target_arch = "x86_64")]
            VectorOps::Avx512 => unsafe { x86_wide::scale_max(x, scale) },
        }
    }

    /// `x[i] = exp(x[i] - max)`, returning their sum.
    #[inline]
    pub fn exp_sum(self, x: &mut [f32], max: f32) -> f32 {
        match self {
            VectorOps::Baseline => exp_sum(x, max),
            // SAFETY: `detect` saw AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            VectorOps::Avx2 => unsafe { x86::exp_sum(x, max) },
            // SAFETY: `detect` saw AVX-512F, AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            VectorOps::Avx512 => unsafe { x86_wide::exp_sum(x, max) },
        }
    }

    /// `outs[r]` += the sum over positions `i` of `weights[r * stride + i] * values[i]`, for one to
    /// `VALUE_ROWS` rows of `head_dim` outputs; `values` holds rows of `head_dim`, at most `stride`.
    #[inline]
    pub fn weighted_values(
        self,
        weights: &[f32],
        stride: usize,
        values: &[f32],
        head_dim: usize,
        outs: &mut [f32],
    ) {
        match self {
            VectorOps::Baseline => weighted_values(weights, stride, values, head_dim, outs),
            // SAFETY: `detect` saw AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            VectorOps::Avx2 => unsafe {
                x86::weighted_values(weights, stride, values, head_dim, outs)
            },
            // SAFETY: `detect` saw AVX-512F, AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            VectorOps::Avx512 => unsafe {
                x86_wide::weighted_values(weights, stride, values, head_dim, outs)
            },
        }
    }
}

fn scores(queries: &[&[f32]], keys: &[f32], stride: usize, out: &mut [f32]) {
    for (r, query) in queries.iter().enumerate() {
        for (i, key) in keys.chunks_exact(query.len()).enumerate() {
            out[r * stride + i] = query.iter().zip(key).map(|(q, k)| q * k).sum();
        }
    }
}

fn scale_max(x: &mut [f32], scale: f32) -> f32 {
    let mut max = f32::NEG_INFINITY;
    for v in x.iter_mut() {
        *v *= scale;
        max = max.max(*v);
    }
    max
}

fn exp_sum(x: &mut [f32], max: f32) -> f32 {
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    sum
}

fn weighted_values(
    weights: &[f32],
    stride: usize,
    values: &[f32],
    head_dim: usize,
    outs: &mut [f32],
) {
    for (r, out) in outs.chunks_exact_mut(head_dim).enumerate() {
        for (i, value) in values.chunks_exact(head_dim).enumerate() {
            let w = weights[r * stride + i];
            for (o, v) in out.iter_mut().zip(value) {
                *o += w * v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use kernels::cpu::{CEPHES_EXP_LN2 as EXP_LN2, CEPHES_EXP_POLY as EXP_POLY};

    use super::{EXP_FLOOR, KEY_BLOCK, VALUE_ROWS};

    /// Two rows (or one) against `KEY_BLOCK` keys: per eight dimensions, two query loads and four key
    /// loads feed eight FMAs.
    #[target_feature(enable = "avx2,fma")]
    pub fn scores(queries: &[&[f32]], keys: &[f32], stride: usize, out: &mut [f32]) {
        let Some(&q0) = queries.first() else {
            return;
        };
        let hd = q0.len();
        let n = keys.len() / hd.max(1);
        if hd == 0
            || queries.iter().any(|q| q.len() != hd)
            || !n.is_multiple_of(KEY_BLOCK)
            || n > stride
            || out.len() < queries.len() * stride
        {
            return super::scores(queries, keys, stride, out);
        }
        for (pair, out) in queries.chunks(2).zip(out.chunks_mut(2 * stride)) {
            match pair {
                [a] => rows_by_4::<1>([a], keys, n, stride, out),
                [a, b] => rows_by_4::<2>([a, b], keys, n, stride, out),
                _ => {}
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn rows_by_4<const R: usize>(
        queries: [&[f32]; R],
        keys: &[f32],
        n: usize,
        stride: usize,
        out: &mut [f32],
    ) {
        let hd = queries[0].len();
        let whole = hd / 8 * 8;
        for block in (0..n).step_by(KEY_BLOCK) {
            let mut acc = [[_mm256_setzero_ps(); KEY_BLOCK]; R];
            // SAFETY (every access): `c + 8 <= hd`, each query has `hd` values, key `block + k < n`
            // has its `hd` values in `keys`, and `out` holds `R` rows of `stride >= n`, checked by the
            // caller.
            unsafe {
                let k0 = keys.as_ptr().add(block * hd);
                for c in (0..whole).step_by(8) {
                    let x = queries.map(|q| _mm256_loadu_ps(q.as_ptr().add(c)));
                    for k in 0..KEY_BLOCK {
                        let key = _mm256_loadu_ps(k0.add(k * hd + c));
                        for (acc, x) in acc.iter_mut().zip(&x) {
                            acc[k] = _mm256_fmadd_ps(*x, key, acc[k]);
                        }
                    }
                }
                for (r, (acc, query)) in acc.iter().zip(&queries).enumerate() {
                    let mut sums = reduce4(*acc);
                    // A head size that is not whole vectors.
                    for (k, s) in sums.iter_mut().enumerate() {
                        for (d, q) in query.iter().enumerate().skip(whole) {
                            *s += q * *k0.add(k * hd + d);
                        }
                    }
                    let to = out.as_mut_ptr().add(r * stride + block);
                    _mm_storeu_ps(to, _mm_loadu_ps(sums.as_ptr()));
                }
            }
        }
    }

    /// Four vectors' sums.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn reduce4(v: [__m256; 4]) -> [f32; 4] {
        let h = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
        let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
        let mut out = [0f32; 4];
        // SAFETY: `out` has four floats.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), s) };
        out
    }

    /// `exp(x)` for `x <= 0` (softmax's shifted scores), Cephes' polynomial (`EXP_POLY`): relative
    /// error ~1e-7, and `exp(-87)` (~2e-38) for anything below -87.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp(x: __m256) -> __m256 {
        let x = _mm256_max_ps(x, _mm256_set1_ps(EXP_FLOOR));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2[0]), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2[1]), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let p = _mm256_fmadd_ps(
            _mm256_mul_ps(p, r),
            r,
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(scale))
    }

    #[target_feature(enable = "avx2")]
    pub fn scale_max(x: &mut [f32], scale: f32) -> f32 {
        let s = _mm256_set1_ps(scale);
        let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut chunks = x.chunks_exact_mut(8);
        for chunk in &mut chunks {
            // SAFETY: `chunk` has eight floats.
            unsafe {
                let v = _mm256_mul_ps(_mm256_loadu_ps(chunk.as_ptr()), s);
                _mm256_storeu_ps(chunk.as_mut_ptr(), v);
                max = _mm256_max_ps(max, v);
            }
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` has eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), max) };
        lanes
            .into_iter()
            .fold(super::scale_max(chunks.into_remainder(), scale), f32::max)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn exp_sum(x: &mut [f32], max: f32) -> f32 {
        let m = _mm256_set1_ps(max);
        let mut acc = _mm256_setzero_ps();
        let mut chunks = x.chunks_exact_mut(8);
        for chunk in &mut chunks {
            // SAFETY: `chunk` has eight floats.
            unsafe {
                let e = exp(_mm256_sub_ps(_mm256_loadu_ps(chunk.as_ptr()), m));
                _mm256_storeu_ps(chunk.as_mut_ptr(), e);
                acc = _mm256_add_ps(acc, e);
            }
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` has eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        lanes.iter().sum::<f32>() + super::exp_sum(chunks.into_remainder(), max)
    }

    /// Up to `VALUE_ROWS` rows by sixteen dimensions: per position, two value loads and one broadcast
    /// weight per row feed two FMAs per row.
    #[target_feature(enable = "avx2,fma")]
    pub fn weighted_values(
        weights: &[f32],
        stride: usize,
        values: &[f32],
        head_dim: usize,
        outs: &mut [f32],
    ) {
        let rows = outs.len() / head_dim.max(1);
        let n = values.len() / head_dim.max(1);
        if head_dim == 0
            || !(1..=VALUE_ROWS).contains(&rows)
            || n > stride
            || weights.len() < rows * stride
        {
            return super::weighted_values(weights, stride, values, head_dim, outs);
        }
        match rows {
            1 => rows_by_16::<1>(weights, stride, values, n, head_dim, outs),
            2 => rows_by_16::<2>(weights, stride, values, n, head_dim, outs),
            3 => rows_by_16::<3>(weights, stride, values, n, head_dim, outs),
            _ => rows_by_16::<4>(weights, stride, values, n, head_dim, outs),
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn rows_by_16<const R: usize>(
        weights: &[f32],
        stride: usize,
        values: &[f32],
        n: usize,
        hd: usize,
        outs: &mut [f32],
    ) {
        let whole = hd / 16 * 16;
        let o = outs.as_mut_ptr();
        for dim in (0..whole).step_by(16) {
            // SAFETY (every access): `dim + 16 <= hd`; `outs` holds `R` rows of `hd`, `values` `n`
            // rows of `hd`, and `weights` `R` rows of `stride >= n`, checked by the caller.
            unsafe {
                let mut acc = [[_mm256_setzero_ps(); 2]; R];
                for (r, acc) in acc.iter_mut().enumerate() {
                    acc[0] = _mm256_loadu_ps(o.add(r * hd + dim));
                    acc[1] = _mm256_loadu_ps(o.add(r * hd + dim + 8));
                }
                for i in 0..n {
                    let value = values.as_ptr().add(i * hd + dim);
                    let (x0, x1) = (_mm256_loadu_ps(value), _mm256_loadu_ps(value.add(8)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let w = _mm256_broadcast_ss(&*weights.as_ptr().add(r * stride + i));
                        acc[0] = _mm256_fmadd_ps(w, x0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(w, x1, acc[1]);
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    _mm256_storeu_ps(o.add(r * hd + dim), acc[0]);
                    _mm256_storeu_ps(o.add(r * hd + dim + 8), acc[1]);
                }
            }
        }
        // A head size that is not whole blocks (80: five vectors, 16 + 64).
        for r in 0..R {
            for i in 0..n {
                let w = weights[r * stride + i];
                for d in whole..hd {
                    outs[r * hd + d] += w * values[i * hd + d];
                }
            }
        }
    }
}

/// The AVX2 loops on 16-float vectors. A head size that is not whole vectors takes the AVX2 loops.
#[cfg(target_arch = "x86_64")]
mod x86_wide {
    use std::arch::x86_64::*;

    use kernels::cpu::{CEPHES_EXP_LN2 as EXP_LN2, CEPHES_EXP_POLY as EXP_POLY};

    use super::{EXP_FLOOR, KEY_BLOCK, SCORE_ROWS, VALUE_ROWS};

    /// Up to four rows against `KEY_BLOCK` keys: per sixteen dimensions, a load of each query and each
    /// key feeds sixteen FMAs; each row's four sums are reduced once per block.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub fn scores(queries: &[&[f32]], keys: &[f32], stride: usize, out: &mut [f32]) {
        let Some(&q0) = queries.first() else {
            return;
        };
        let hd = q0.len();
        let n = keys.len() / hd.max(1);
        if hd == 0
            || !hd.is_multiple_of(16)
            || queries.len() > SCORE_ROWS
            || queries.iter().any(|q| q.len() != hd)
            || !n.is_multiple_of(KEY_BLOCK)
            || n > stride
            || out.len() < queries.len() * stride
        {
            return super::x86::scores(queries, keys, stride, out);
        }
        match queries {
            [a] => rows_by_4::<1>([a], keys, n, stride, out),
            [a, b] => rows_by_4::<2>([a, b], keys, n, stride, out),
            [a, b, c] => rows_by_4::<3>([a, b, c], keys, n, stride, out),
            [a, b, c, d] => rows_by_4::<4>([a, b, c, d], keys, n, stride, out),
            _ => {}
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn rows_by_4<const R: usize>(
        queries: [&[f32]; R],
        keys: &[f32],
        n: usize,
        stride: usize,
        out: &mut [f32],
    ) {
        let hd = queries[0].len();
        for block in (0..n).step_by(KEY_BLOCK) {
            let mut acc = [[_mm512_setzero_ps(); KEY_BLOCK]; R];
            // SAFETY (every access): `c + 16 <= hd` (a multiple of 16), each query has `hd` values,
            // key `block + k < n` has its `hd` values in `keys`, and `out` holds `R` rows of
            // `stride >= n`, checked by the caller.
            unsafe {
                let k0 = keys.as_ptr().add(block * hd);
                for c in (0..hd).step_by(16) {
                    let x = queries.map(|q| _mm512_loadu_ps(q.as_ptr().add(c)));
                    for k in 0..KEY_BLOCK {
                        let key = _mm512_loadu_ps(k0.add(k * hd + c));
                        for (acc, x) in acc.iter_mut().zip(&x) {
                            acc[k] = _mm512_fmadd_ps(*x, key, acc[k]);
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    let halves = acc.map(|v| _mm256_add_ps(low(v), high(v)));
                    let sums = super::x86::reduce4(halves);
                    let to = out.as_mut_ptr().add(r * stride + block);
                    _mm_storeu_ps(to, _mm_loadu_ps(sums.as_ptr()));
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn low(v: __m512) -> __m256 {
        _mm512_castps512_ps256(v)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn high(v: __m512) -> __m256 {
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))
    }

    #[target_feature(enable = "avx512f")]
    pub fn scale_max(x: &mut [f32], scale: f32) -> f32 {
        let s = _mm512_set1_ps(scale);
        let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut chunks = x.chunks_exact_mut(16);
        for chunk in &mut chunks {
            // SAFETY: `chunk` has sixteen floats.
            unsafe {
                let v = _mm512_mul_ps(_mm512_loadu_ps(chunk.as_ptr()), s);
                _mm512_storeu_ps(chunk.as_mut_ptr(), v);
                max = _mm512_max_ps(max, v);
            }
        }
        let rest = chunks.into_remainder();
        // The last few under a mask: softmax's rows end anywhere.
        let mask = tail_mask(rest.len());
        // SAFETY: the mask covers `rest`'s floats.
        unsafe {
            let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, rest.as_ptr()), s);
            _mm512_mask_storeu_ps(rest.as_mut_ptr(), mask, v);
            max = _mm512_mask_max_ps(max, mask, max, v);
        }
        _mm512_reduce_max_ps(max)
    }

    /// The first `len` (under 16) lanes.
    #[inline]
    fn tail_mask(len: usize) -> __mmask16 {
        ((1u32 << len.min(16)) - 1) as __mmask16
    }

    /// The AVX2 loop's exponential (`EXP_POLY`, `exp(-87)` below -87) on sixteen floats.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(EXP_FLOOR));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2[0]), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2[1]), r);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let p = _mm512_fmadd_ps(
            _mm512_mul_ps(p, r),
            r,
            _mm512_add_ps(r, _mm512_set1_ps(1.0)),
        );
        let scale = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        ));
        _mm512_mul_ps(p, _mm512_castsi512_ps(scale))
    }

    #[target_feature(enable = "avx512f")]
    pub fn exp_sum(x: &mut [f32], max: f32) -> f32 {
        let m = _mm512_set1_ps(max);
        let mut acc = _mm512_setzero_ps();
        let mut chunks = x.chunks_exact_mut(16);
        for chunk in &mut chunks {
            // SAFETY: `chunk` has sixteen floats.
            unsafe {
                let e = exp(_mm512_sub_ps(_mm512_loadu_ps(chunk.as_ptr()), m));
                _mm512_storeu_ps(chunk.as_mut_ptr(), e);
                acc = _mm512_add_ps(acc, e);
            }
        }
        let rest = chunks.into_remainder();
        let mask = tail_mask(rest.len());
        // SAFETY: the mask covers `rest`'s floats.
        unsafe {
            let e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, rest.as_ptr()), m));
            _mm512_mask_storeu_ps(rest.as_mut_ptr(), mask, e);
            acc = _mm512_mask_add_ps(acc, mask, acc, e);
        }
        _mm512_reduce_add_ps(acc)
    }

    /// Up to `VALUE_ROWS` rows by 64 dimensions (then by 16): per position, four value loads and one
    /// broadcast weight per row feed four FMAs per row.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub fn weighted_values(
        weights: &[f32],
        stride: usize,
        values: &[f32],
        head_dim: usize,
        outs: &mut [f32],
    ) {
        let rows = outs.len() / head_dim.max(1);
        let n = values.len() / head_dim.max(1);
        if !head_dim.is_multiple_of(16)
            || head_dim == 0
            || !(1..=VALUE_ROWS).contains(&rows)
            || n > stride
            || weights.len() < rows * stride
        {
            return super::x86::weighted_values(weights, stride, values, head_dim, outs);
        }
        let mut dim = 0;
        while dim < head_dim {
            let width = if head_dim - dim >= 64 { 4 } else { 1 };
            match (rows, width) {
                (1, 4) => rows_by::<1, 4>(weights, stride, values, n, head_dim, dim, outs),
                (2, 4) => rows_by::<2, 4>(weights, stride, values, n, head_dim, dim, outs),
                (3, 4) => rows_by::<3, 4>(weights, stride, values, n, head_dim, dim, outs),
                (_, 4) => rows_by::<4, 4>(weights, stride, values, n, head_dim, dim, outs),
                (1, _) => rows_by::<1, 1>(weights, stride, values, n, head_dim, dim, outs),
                (2, _) => rows_by::<2, 1>(weights, stride, values, n, head_dim, dim, outs),
                (3, _) => rows_by::<3, 1>(weights, stride, values, n, head_dim, dim, outs),
                (_, _) => rows_by::<4, 1>(weights, stride, values, n, head_dim, dim, outs),
            }
            dim += 16 * width;
        }
    }

    /// `R` rows by `V` vectors of 16 dimensions from `dim`, in registers across every position.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    fn rows_by<const R: usize, const V: usize>(
        weights: &[f32],
        stride: usize,
        values: &[f32],
        n: usize,
        hd: usize,
        dim: usize,
        outs: &mut [f32],
    ) {
        let o = outs.as_mut_ptr();
        // SAFETY (every access): `dim + 16 * V <= hd`; `outs` holds `R` rows of `hd`, `values` `n`
        // rows of `hd`, and `weights` `R` rows of `stride >= n`, checked by the caller.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            for (r, acc) in acc.iter_mut().enumerate() {
                for (v, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_loadu_ps(o.add(r * hd + dim + 16 * v));
                }
            }
            for i in 0..n {
                let value = values.as_ptr().add(i * hd + dim);
                let x: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(value.add(16 * v)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*weights.as_ptr().add(r * stride + i));
                    for (acc, x) in acc.iter_mut().zip(&x) {
                        *acc = _mm512_fmadd_ps(w, *x, *acc);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (v, acc) in acc.iter().enumerate() {
                    _mm512_storeu_ps(o.add(r * hd + dim + 16 * v), *acc);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::tests::values;

    /// The baseline and, on x86-64, every vector level this CPU runs.
    fn levels() -> Vec<VectorOps> {
        #[cfg(target_arch = "x86_64")]
        {
            let detected = VectorOps::detect();
            let mut levels = vec![VectorOps::Baseline];
            if !matches!(detected, VectorOps::Baseline) {
                levels.push(VectorOps::Avx2);
            }
            if matches!(detected, VectorOps::Avx512) {
                levels.push(VectorOps::Avx512);
            }
            levels
        }
        #[cfg(not(target_arch = "x86_64"))]
        vec![VectorOps::Baseline]
    }

    /// Every level's scores and weighted values equal plain sums, for each row count and head sizes
    /// with and without a rest (80 = 64 + 16; 72 = 64 + 8; 96 = 64 + 32).
    #[test]
    fn products_match_plain_sums() {
        for hd in [64, 72, 80, 96, 128, 256] {
            let (n, stride) = (36, 40);
            let q = values(SCORE_ROWS.max(VALUE_ROWS) * hd, 1);
            let keys = values(n * hd, 2);
            let weights = values(VALUE_ROWS * stride, 3);
            let vals = values(n * hd, 4);
            for simd in levels() {
                for rows in 1..=SCORE_ROWS {
                    let queries: Vec<&[f32]> = q.chunks_exact(hd).take(rows).collect();
                    let mut got = vec![0f32; rows * stride];
                    simd.scores(&queries, &keys, stride, &mut got);
                    for (r, query) in queries.iter().enumerate() {
                        // A row's scores do not depend on the rows that share its call.
                        let mut alone = vec![0f32; stride];
                        simd.scores(&[query], &keys, stride, &mut alone);
                        for i in 0..n {
                            let want: f32 = (0..hd).map(|d| query[d] * keys[i * hd + d]).sum();
                            let got = got[r * stride + i];
                            assert!((got - want).abs() < 1e-4, "{simd:?} hd {hd} score {r} {i}");
                            assert_eq!(got.to_bits(), alone[i].to_bits(), "{simd:?} hd {hd}");
                        }
                    }
                }
                for rows in 1..=VALUE_ROWS {
                    let before = values(rows * hd, 5);
                    let mut outs = before.clone();
                    simd.weighted_values(&weights, stride, &vals, hd, &mut outs);
                    for r in 0..rows {
                        let mut alone = before[r * hd..(r + 1) * hd].to_vec();
                        let weights = &weights[r * stride..(r + 1) * stride];
                        simd.weighted_values(weights, stride, &vals, hd, &mut alone);
                        for d in 0..hd {
                            let want = before[r * hd + d]
                                + (0..n).map(|i| weights[i] * vals[i * hd + d]).sum::<f32>();
                            let got = outs[r * hd + d];
                            assert!((got - want).abs() < 1e-4, "{simd:?} hd {hd} output {r} {d}");
                            assert_eq!(got.to_bits(), alone[d].to_bits(), "{simd:?} hd {hd}");
                        }
                    }
                }
            }
        }
    }

    /// Scaling gives the plain products, bit for bit, and their maximum, at every length.
    #[test]
    fn scaling_matches_plain_products() {
        for len in [0, 1, 7, 8, 16, 37] {
            let x = values(len, 6);
            for simd in levels() {
                let mut got = x.clone();
                let max = simd.scale_max(&mut got, 0.125);
                let want: Vec<f32> = x.iter().map(|v| v * 0.125).collect();
                assert_eq!(got, want, "{simd:?} {len}");
                assert_eq!(max, want.iter().copied().fold(f32::NEG_INFINITY, f32::max));
            }
        }
    }

    /// The vector exponential agrees with the library's to a few units in the last place, down to
    /// where it flushes to zero, and so does the sum.
    #[test]
    fn exponentials_match_the_library() {
        let x: Vec<f32> = (0..1003).map(|i| -(i as f32) * 0.09).collect();
        for simd in levels() {
            let mut got = x.clone();
            let sum = simd.exp_sum(&mut got, 0.5);
            let mut want_sum = 0.0;
            for (g, &v) in got.iter().zip(&x) {
                let want = (v - 0.5).exp();
                want_sum += want;
                if v - 0.5 > -87.0 {
                    assert!(
                        (g - want).abs() <= want * 3e-7,
                        "{simd:?} exp({v}) {g} vs {want}"
                    );
                } else {
                    assert!(*g <= 1e-37, "{simd:?} exp({v}) {g}");
                }
            }
            assert!((sum - want_sum).abs() <= want_sum * 1e-6);
        }
    }
}
