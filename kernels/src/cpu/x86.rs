//! x86-64 kernels for Fp4 tiles: AVX2 (with FMA and F16C), and the same with AVX-512 VNNI's `vpdpbusd` on
//! 256-bit vectors (AVX512VL), which replaces AVX2's two-step multiply-add; and the helpers `x86_wide`
//! (the other 32-column tiles) shares. Callers check the CPU's features (`SimdLevel::available`) before
//! calling any function here, and pass slices of the sizes the tiles need.
//!
//! Each kernel takes one row group (four rows) and one or two activation rows: with two, every unpacked
//! weight vector and scale serves both tokens, which is where a step with many tokens gains.

use std::arch::x86_64::*;

use super::ggml::FP4_VALUES;
use super::prefetch_ahead_bytes;
use super::tiles::FP4_TILE_BYTES;

/// Sums each of four 8-lane vectors: `[sum(a), sum(b), sum(c), sum(d)]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    let ab = _mm256_hadd_ps(a, b);
    let cd = _mm256_hadd_ps(c, d);
    let abcd = _mm256_hadd_ps(ab, cd);
    _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1))
}

/// Lane `i` of `v` in all eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lane(v: __m256, i: i32) -> __m256 {
    _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(i))
}

/// 32 bytes from `at`, unaligned.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load32(at: *const u8) -> __m256i {
    unsafe { _mm256_loadu_si256(at as *const __m256i) }
}

/// Asks the cache for `bytes` of lines, `prefetch_ahead_bytes()` past `tile`. A hint,
/// which never faults: near the end of a matrix it may name addresses past it (so `wrapping_add`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn prefetch_ahead(tile: *const u8, bytes: usize) {
    let ahead = prefetch_ahead_bytes();
    let mut offset = 0;
    while offset < bytes {
        _mm_prefetch::<_MM_HINT_T0>(tile.wrapping_add(ahead + offset) as *const i8);
        offset += 64;
    }
}

/// `sum(u8 x i8)` over each four bytes, as eight i32 lanes, converted to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_avx2(w: __m256i, a: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_madd_epi16(
        _mm256_maddubs_epi16(w, a),
        _mm256_set1_epi16(1),
    ))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
fn dot_vnni(w: __m256i, a: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a))
}

/// One activation row: values, block scales, scaled block sums.
pub type Act<'a> = (&'a [i8], &'a [f32], &'a [f32]);

/// `FP4_VALUES` in both 128-bit halves, for `fp4_row`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fp4_table() -> __m256i {
    // SAFETY: the table is 16 bytes.
    unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(FP4_VALUES.as_ptr() as *const __m128i)) }
}

/// Row `r`'s 32 values of an Fp4 tile as int8: its codes looked up in `table` (`vpshufb`). The 16 code
/// bytes go to both halves with a broadcast load and the high half is shifted by a nibble in place, which
/// keeps the unpacking off the shuffle port that the lookup needs.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fp4_row(table: __m256i, tile: *const u8, r: usize) -> __m256i {
    unsafe {
        let codes =
            _mm256_broadcastsi128_si256(_mm_loadu_si128(tile.add(16 + 16 * r) as *const __m128i));
        let shifted = _mm256_srlv_epi32(codes, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
        _mm256_shuffle_epi8(table, _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F)))
    }
}

/// Kernels for Fp4 tiles: the I8 kernels' signed products on looked-up values, one f32 scale per row.
macro_rules! fp4_kernels {
    ($one:ident, $two:ident, $features:literal, $dot:ident) => {
        /// Four Fp4 rows against one activation row.
        ///
        /// # Safety
        /// The CPU has the features named; `tiles` holds `d.len()` tiles and `qs` `32 * d.len()` values.
        #[target_feature(enable = $features)]
        pub unsafe fn $one(tiles: &[u8], (qs, d, _): Act) -> [f32; 4] {
            let blocks = d.len().min(tiles.len() / FP4_TILE_BYTES).min(qs.len() / 32);
            let table = fp4_table();
            let mut acc = [_mm256_setzero_ps(); 4];
            for b in 0..blocks {
                unsafe {
                    let tile = tiles.as_ptr().add(b * FP4_TILE_BYTES);
                    prefetch_ahead(tile, FP4_TILE_BYTES);
                    let a = load32(qs.as_ptr().add(32 * b) as *const u8);
                    let scales = _mm256_castps128_ps256(_mm_mul_ps(
                        _mm_loadu_ps(tile as *const f32),
                        _mm_set1_ps(*d.get_unchecked(b)),
                    ));
                    for r in 0..4 {
                        let w = fp4_row(table, tile, r);
                        // u8 x i8 products: |w| against a carrying w's sign.
                        let p = $dot(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
                        acc[r] = _mm256_fmadd_ps(p, lane(scales, r as i32), acc[r]);
                    }
                }
            }
            let mut out = [0f32; 4];
            unsafe { _mm_storeu_ps(out.as_mut_ptr(), hsum4(acc[0], acc[1], acc[2], acc[3])) };
            out
        }

        /// Four Fp4 rows against two activation rows.
        ///
        /// # Safety
        /// As for the one-row kernel, for both rows.
        #[target_feature(enable = $features)]
        pub unsafe fn $two(tiles: &[u8], x: Act, y: Act) -> [[f32; 4]; 2] {
            let blocks =
                x.1.len()
                    .min(y.1.len())
                    .min(tiles.len() / FP4_TILE_BYTES)
                    .min(x.0.len() / 32)
                    .min(y.0.len() / 32);
            let table = fp4_table();
            let mut ax = [_mm256_setzero_ps(); 4];
            let mut ay = [_mm256_setzero_ps(); 4];
            for b in 0..blocks {
                unsafe {
                    let tile = tiles.as_ptr().add(b * FP4_TILE_BYTES);
                    prefetch_ahead(tile, FP4_TILE_BYTES);
                    let a = load32(x.0.as_ptr().add(32 * b) as *const u8);
                    let c = load32(y.0.as_ptr().add(32 * b) as *const u8);
                    let raw = _mm_loadu_ps(tile as *const f32);
                    let sx =
                        _mm256_castps128_ps256(_mm_mul_ps(raw, _mm_set1_ps(*x.1.get_unchecked(b))));
                    let sy =
                        _mm256_castps128_ps256(_mm_mul_ps(raw, _mm_set1_ps(*y.1.get_unchecked(b))));
                    for r in 0..4 {
                        let w = fp4_row(table, tile, r);
                        let magnitude = _mm256_sign_epi8(w, w);
                        let px = $dot(magnitude, _mm256_sign_epi8(a, w));
                        let py = $dot(magnitude, _mm256_sign_epi8(c, w));
                        ax[r] = _mm256_fmadd_ps(px, lane(sx, r as i32), ax[r]);
                        ay[r] = _mm256_fmadd_ps(py, lane(sy, r as i32), ay[r]);
                    }
                }
            }
            let mut out = [[0f32; 4]; 2];
            unsafe {
                _mm_storeu_ps(out[0].as_mut_ptr(), hsum4(ax[0], ax[1], ax[2], ax[3]));
                _mm_storeu_ps(out[1].as_mut_ptr(), hsum4(ay[0], ay[1], ay[2], ay[3]));
            }
            out
        }
    };
}

fp4_kernels!(fp4_avx2, fp4_avx2_x2, "avx2,fma,f16c", dot_avx2);
fp4_kernels!(
    fp4_vnni,
    fp4_vnni_x2,
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    dot_vnni
);
