//! The CPU attention's inner loops (`attention::attend`): query-key scores, softmax's exponentials and
//! the weighted sum of values, compiled twice: for the build's baseline and, on x86-64, with AVX2, FMA
//! and F16C, picked at run time (a portable build's baseline is SSE2).
//!
//! Both products are small matrix products over one tile's rows (its tokens' query heads that share a
//! KV head) and one chunk of cached positions, whose keys and values are widened to f32 rows once:
//! - scores: two rows against four keys at a time, eight sums in registers across the head, reduced
//!   once per four keys;
//! - weighted values: up to four rows by sixteen output dimensions in registers across every position,
//!   each value vector loaded once for all the rows.

/// Keys one score step covers; a chunk's key rows are padded (with zeros) to whole blocks.
pub const KEY_BLOCK: usize = 4;
/// Rows one weighted-values step takes at most.
pub const VALUE_ROWS: usize = 4;

/// The vector level the loops run at.
#[derive(Clone, Copy, Debug)]
pub enum VectorOps {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl VectorOps {
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return VectorOps::Avx2;
        }
        VectorOps::Baseline
    }

    /// `out[r * stride + i]` = `queries[r]` . key `i`, for one or two queries of `head_dim` and the
    /// keys in `keys` (rows of `head_dim`, a whole number of `KEY_BLOCK`s, at most `stride`).
    #[inline]
    pub fn scores(self, queries: &[&[f32]], keys: &[f32], stride: usize, out: &mut [f32]) {
        match self {
            VectorOps::Baseline => scores(queries, keys, stride, out),
            // SAFETY: `detect` saw AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            VectorOps::Avx2 => unsafe { x86::scores(queries, keys, stride, out) },
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

    use super::{KEY_BLOCK, VALUE_ROWS};

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
        match queries {
            [a] => rows_by_4::<1>([a], keys, n, stride, out),
            [a, b] => rows_by_4::<2>([a, b], keys, n, stride, out),
            _ => super::scores(queries, keys, stride, out),
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
    fn reduce4(v: [__m256; 4]) -> [f32; 4] {
        let h = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
        let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
        let mut out = [0f32; 4];
        // SAFETY: `out` has four floats.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), s) };
        out
    }

    /// `exp(x)` for `x <= 0` (softmax's shifted scores), Cephes' polynomial: relative error ~1e-7,
    /// and `exp(-87)` (~2e-38) for anything below -87.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp(x: __m256) -> __m256 {
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::tests::values;

    fn levels() -> Vec<VectorOps> {
        let mut levels = vec![VectorOps::Baseline];
        if !matches!(VectorOps::detect(), VectorOps::Baseline) {
            levels.push(VectorOps::detect());
        }
        levels
    }

    /// Every level's scores and weighted values equal plain sums, for each row count and head sizes
    /// with and without a rest (80 = 64 + 16; 72 = 64 + 8).
    #[test]
    fn products_match_plain_sums() {
        for hd in [64, 72, 80, 128] {
            let (n, stride) = (36, 40);
            let q = values(VALUE_ROWS * hd, 1);
            let keys = values(n * hd, 2);
            let weights = values(VALUE_ROWS * stride, 3);
            let vals = values(n * hd, 4);
            for simd in levels() {
                for rows in 1..=2 {
                    let queries: Vec<&[f32]> = q.chunks_exact(hd).take(rows).collect();
                    let mut got = vec![0f32; rows * stride];
                    simd.scores(&queries, &keys, stride, &mut got);
                    for (r, query) in queries.iter().enumerate() {
                        for i in 0..n {
                            let want: f32 = (0..hd).map(|d| query[d] * keys[i * hd + d]).sum();
                            let got = got[r * stride + i];
                            assert!((got - want).abs() < 1e-4, "{simd:?} hd {hd} score {r} {i}");
                        }
                    }
                }
                for rows in 1..=VALUE_ROWS {
                    let before = values(rows * hd, 5);
                    let mut outs = before.clone();
                    simd.weighted_values(&weights, stride, &vals, hd, &mut outs);
                    for r in 0..rows {
                        for d in 0..hd {
                            let want = before[r * hd + d]
                                + (0..n)
                                    .map(|i| weights[r * stride + i] * vals[i * hd + d])
                                    .sum::<f32>();
                            let got = outs[r * hd + d];
                            assert!((got - want).abs() < 1e-4, "{simd:?} hd {hd} output {r} {d}");
                        }
                    }
                }
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
