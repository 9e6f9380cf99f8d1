//! x86-64 kernels for the 32-column tiles (I8, U4, U8, F16) that take up to eight tokens at once (twelve
//! for F16), as ggml's repacked Q8_0 / Q4_0 GEMMs and llamafile's tinyBLAS do for a prompt: each weight
//! vector is unpacked (or widened from f16) once per call and serves every token, and the per-block float
//! work is one conversion and one multiply-add per token for all four rows (F16: two multiply-adds per
//! column for all sixteen at AVX2, one 512-bit one at AVX-512).
//!
//! The integer kernels regroup a tile's four rows (`regroup`) so that one `vpdpbusd` (or `vpmaddubsw`)
//! lane holds one row's four-byte group: the activation's group is spread to the lanes with an in-lane
//! `vpshufd`, and after four steps the i32 lanes are `[rows 0..4 over elements 0..16 | rows 0..4 over
//! 16..32]`, exactly the sums a block's scales apply to. The integer sums are exact, and every token goes
//! through the same float operations in the same order whatever else shares the call, so one token's
//! results are bit-identical whether it is decoded alone or in a batch (the models rely on that).
//!
//! Callers check the CPU's features (`SimdLevel::available`) before calling any function here.

use std::arch::x86_64::*;

use super::prefetch_ahead_bytes;
use super::tiles::{
    F16_TILE_BYTES, I8_TILE_BYTES, U4_TILE_BYTES, U8_TILE_BYTES, f16_blocks, f16_call,
};
use super::x86::{Act, load32, prefetch_ahead};

/// Tokens one call of a VNNI-level kernel takes (32 vector registers).
const VNNI_TOKENS: usize = 8;
/// Tokens one call of an AVX2 kernel takes (16 vector registers).
const AVX2_TOKENS: usize = 4;
/// Tokens one call of the F16 kernels takes, at the VNNI level (AVX-512's 32 registers) and AVX2 (16).
const F16_AVX512_TOKENS: usize = 12;
const F16_AVX2_TOKENS: usize = 6;

/// A tile's four row vectors (each 32 bytes: elements 0..16 in the low lane, 16..32 in the high one)
/// regrouped: vector `k` holds the rows' four-byte groups `k` (low lane) and `k + 4` (high lane),
/// `[r0, r1, r2, r3 | r0, r1, r2, r3]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn regroup(w: [__m256i; 4]) -> [__m256i; 4] {
    let t0 = _mm256_unpacklo_epi32(w[0], w[1]);
    let t1 = _mm256_unpackhi_epi32(w[0], w[1]);
    let t2 = _mm256_unpacklo_epi32(w[2], w[3]);
    let t3 = _mm256_unpackhi_epi32(w[2], w[3]);
    [
        _mm256_unpacklo_epi64(t0, t2),
        _mm256_unpackhi_epi64(t0, t2),
        _mm256_unpacklo_epi64(t1, t3),
        _mm256_unpackhi_epi64(t1, t3),
    ]
}

/// An activation block's four-byte group `k` (low lane) and `k + 4` (high lane), each in four lanes: the
/// operand that meets `regroup`'s vector `k`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn spread(a: __m256i) -> [__m256i; 4] {
    [
        _mm256_shuffle_epi32::<0x00>(a),
        _mm256_shuffle_epi32::<0x55>(a),
        _mm256_shuffle_epi32::<0xAA>(a),
        _mm256_shuffle_epi32::<0xFF>(a),
    ]
}

/// `[lo + hi]`: a token's eight lanes (rows over the two halves) as its four rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn halves(v: __m256) -> __m128 {
    _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v))
}

/// Four rows of U4 tile `tile`, one value per byte.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn u4_rows(tile: *const u8) -> [__m256i; 4] {
    let mask = _mm256_set1_epi8(0x0F);
    let row = |r: usize| {
        // SAFETY: a U4 tile holds four rows of 16 bytes after its 16 bytes of scales.
        let raw = unsafe { _mm_loadu_si128(tile.add(16 + 16 * r) as *const __m128i) };
        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw), mask)
    };
    [row(0), row(1), row(2), row(3)]
}

/// Four rows of a U8 or I8 tile (32 bytes each after 16 bytes of scales).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn byte_rows(tile: *const u8) -> [__m256i; 4] {
    // SAFETY: the tile holds four rows of 32 bytes after its 16 bytes of scales.
    unsafe {
        [
            load32(tile.add(16)),
            load32(tile.add(48)),
            load32(tile.add(80)),
            load32(tile.add(112)),
        ]
    }
}

/// The I8 tile's eight half scales (`[[f16; 2]; 4]`) in `halves`' lane order: `[r0..4 of elements 0..16 |
/// r0..4 of 16..32]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i8_scales(tile: *const u8) -> __m256 {
    // SAFETY: the tile starts with 16 bytes of scales.
    let raw = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(tile as *const __m128i)) };
    _mm256_permutevar8x32_ps(raw, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7))
}

/// A U4 or U8 tile's scales in both halves, `[s0..4 | s0..4]`, and its mins in the low half,
/// `[m0..4 | 0]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn offset_scales(tile: *const u8) -> (__m256, __m256) {
    // SAFETY: the tile starts with four f16 scales and four f16 mins.
    let raw = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(tile as *const __m128i)) };
    (
        _mm256_permute2f128_ps::<0x00>(raw, raw),
        _mm256_permute2f128_ps::<0x81>(raw, raw),
    )
}

/// Writes `T` tokens' accumulators as their four rows each.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store<const T: usize>(acc: &[__m256; T], out: &mut [[f32; 4]]) {
    for (o, a) in out.iter_mut().zip(acc) {
        // SAFETY: `o` is four f32.
        unsafe { _mm_storeu_ps(o.as_mut_ptr(), halves(*a)) };
    }
}

/// Integer kernels over `T` tokens: `$prepare(tile) -> W` regroups a tile's weights once, `$dot(&W, a)`
/// gives a token's i32 sums in `halves` lane order (for one token, `$single` on the rows as `$rows` reads
/// them gives the same sums with fewer shuffles), and `offset` says whether the tile has mins (U4, U8),
/// which meet the activations' scaled sums.
macro_rules! wide_integer {
    ($name:ident, $wide:ident, $tokens:expr, $features:literal, $tile:expr, $rows:ident, $single:ident, $prepare:ident, $dot:ident, offset: $offset:tt) => {
        #[target_feature(enable = $features)]
        unsafe fn $wide<const T: usize>(tiles: &[u8], x: &[Act], out: &mut [[f32; 4]]) {
            let x: &[Act; T] = x[..T].try_into().expect("T activation rows");
            let blocks = x
                .iter()
                .fold(tiles.len() / $tile, |n, a| n.min(a.1.len()).min(a.2.len()).min(a.0.len() / 32));
            let mut acc = [_mm256_setzero_ps(); T];
            for b in 0..blocks {
                // SAFETY: `b` is below every row's block count and the tiles'.
                unsafe {
                    let tile = tiles.as_ptr().add(b * $tile);
                    prefetch_ahead(tile, $tile);
                    if T == 1 {
                        // One token: the rows' sums gathered after the products, fewer shuffles.
                        let w = $rows(tile);
                        wide_integer!(@scales $offset, tile, w, x, b, acc, $single);
                    } else {
                        let w = $prepare(tile);
                        wide_integer!(@scales $offset, tile, w, x, b, acc, $dot);
                    }
                }
            }
            store(&acc, out);
        }

        /// Four rows of tiles against any number of activation rows, into as many results.
        ///
        /// # Safety
        /// The CPU has the features named; `tiles` holds whole tiles, every row of `x` 32 values (and a
        /// scale and a sum) per tile; `out` is as long as `x`.
        #[target_feature(enable = $features)]
        pub unsafe fn $name(tiles: &[u8], x: &[Act], out: &mut [[f32; 4]]) {
            let n = x.len().min(out.len());
            for (x, out) in x[..n].chunks($tokens).zip(out[..n].chunks_mut($tokens)) {
                // SAFETY: as for this function.
                unsafe {
                    match x.len() {
                        1 => $wide::<1>(tiles, x, out),
                        2 => $wide::<2>(tiles, x, out),
                        3 => $wide::<3>(tiles, x, out),
                        4 => $wide::<4>(tiles, x, out),
                        5 => $wide::<5>(tiles, x, out),
                        6 => $wide::<6>(tiles, x, out),
                        7 => $wide::<7>(tiles, x, out),
                        _ => $wide::<8>(tiles, x, out),
                    }
                }
            }
        }
    };
    (@scales false, $tile:ident, $w:ident, $x:ident, $b:ident, $acc:ident, $dot:ident) => {
        let scales = i8_scales($tile);
        for (acc, (qs, d, _)) in $acc.iter_mut().zip($x) {
            let a = load32(qs.as_ptr().add(32 * $b) as *const u8);
            let sums = _mm256_cvtepi32_ps($dot(&$w, a));
            let scale = _mm256_mul_ps(scales, _mm256_set1_ps(*d.get_unchecked($b)));
            *acc = _mm256_fmadd_ps(sums, scale, *acc);
        }
    };
    (@scales true, $tile:ident, $w:ident, $x:ident, $b:ident, $acc:ident, $dot:ident) => {
        let (scales, mins) = offset_scales($tile);
        for (acc, (qs, d, s)) in $acc.iter_mut().zip($x) {
            let a = load32(qs.as_ptr().add(32 * $b) as *const u8);
            let sums = _mm256_cvtepi32_ps($dot(&$w, a));
            let scale = _mm256_mul_ps(scales, _mm256_set1_ps(*d.get_unchecked($b)));
            *acc = _mm256_fmadd_ps(sums, scale, *acc);
            *acc = _mm256_fmadd_ps(mins, _mm256_set1_ps(*s.get_unchecked($b)), *acc);
        }
    };
}

/// VNNI: I8 weights regrouped, and `-128 * sum(w)` per lane, which `i8_dot_vnni`'s start takes back out
/// of its unsigned (`a + 128`) products.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn i8_prepare_vnni(tile: *const u8) -> ([__m256i; 4], __m256i) {
    let w = regroup(unsafe { byte_rows(tile) });
    let bias = _mm256_set1_epi8(-128);
    let mut sums = _mm256_setzero_si256();
    for v in w {
        sums = _mm256_dpbusd_epi32(sums, bias, v);
    }
    (w, _mm256_sub_epi32(_mm256_setzero_si256(), sums))
}

/// `sum(a * w)` as `sum((a + 128) * w) - 128 * sum(w)`: `vpdpbusd` wants one unsigned operand.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
fn i8_dot_vnni(w: &([__m256i; 4], __m256i), a: __m256i) -> __m256i {
    let a = spread(_mm256_xor_si256(a, _mm256_set1_epi8(-128)));
    let mut sums = w.1;
    for (a, w) in a.into_iter().zip(w.0) {
        sums = _mm256_dpbusd_epi32(sums, a, w);
    }
    sums
}

/// AVX2: I8 weights regrouped, and their magnitudes (`vpmaddubsw`'s unsigned operand; the activation
/// takes the weight's sign).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i8_prepare_avx2(tile: *const u8) -> ([__m256i; 4], [__m256i; 4]) {
    let w = regroup(unsafe { byte_rows(tile) });
    (w, w.map(|v| _mm256_sign_epi8(v, v)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn i8_dot_avx2(w: &([__m256i; 4], [__m256i; 4]), a: __m256i) -> __m256i {
    let a = spread(a);
    let ones = _mm256_set1_epi16(1);
    let mut sums = _mm256_setzero_si256();
    for ((a, w), magnitude) in a.into_iter().zip(w.0).zip(w.1) {
        // |w| * |a| pairs reach 2 * 128 * 127: each step widens to i32 on its own.
        let pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(a, w));
        sums = _mm256_add_epi32(sums, _mm256_madd_epi16(pairs, ones));
    }
    sums
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn u4_prepare(tile: *const u8) -> [__m256i; 4] {
    regroup(unsafe { u4_rows(tile) })
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn u8_prepare(tile: *const u8) -> [__m256i; 4] {
    regroup(unsafe { byte_rows(tile) })
}

/// Unsigned weights against the activations: `vpdpbusd` takes them as they are.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
fn unsigned_dot_vnni(w: &[__m256i; 4], a: __m256i) -> __m256i {
    let a = spread(a);
    let mut sums = _mm256_setzero_si256();
    for k in 0..4 {
        sums = _mm256_dpbusd_epi32(sums, w[k], a[k]);
    }
    sums
}

/// Unsigned weights of at most 31 against the activations: four `vpmaddubsw` pairs (each within
/// 2 * 31 * 127) sum in i16 without overflow before one widening.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unsigned_dot_avx2(w: &[__m256i; 4], a: __m256i) -> __m256i {
    let a = spread(a);
    let mut pairs = _mm256_maddubs_epi16(w[0], a[0]);
    for k in 1..4 {
        pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(w[k], a[k]));
    }
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// Four rows' i32 products (each row's eight four-byte groups) summed per row and half, in `halves` lane
/// order: `[r0..4 over groups 0..4 | r0..4 over groups 4..8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn gather(p: [__m256i; 4]) -> __m256i {
    _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]))
}

/// One token against I8 rows: `|w|` against `a` with `w`'s sign, a row at a time.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
fn i8_single_vnni(w: &[__m256i; 4], a: __m256i) -> __m256i {
    gather(w.map(|w| {
        _mm256_dpbusd_epi32(
            _mm256_setzero_si256(),
            _mm256_sign_epi8(w, w),
            _mm256_sign_epi8(a, w),
        )
    }))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn i8_single_avx2(w: &[__m256i; 4], a: __m256i) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    gather(w.map(|w| {
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
        _mm256_madd_epi16(pairs, ones)
    }))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
fn unsigned_single_vnni(w: &[__m256i; 4], a: __m256i) -> __m256i {
    gather(w.map(|w| _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unsigned_single_avx2(w: &[__m256i; 4], a: __m256i) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    gather(w.map(|w| _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), ones)))
}

wide_integer!(
    i8_vnni,
    i8_vnni_wide,
    VNNI_TOKENS,
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    I8_TILE_BYTES,
    byte_rows,
    i8_single_vnni,
    i8_prepare_vnni,
    i8_dot_vnni,
    offset: false
);
wide_integer!(
    i8_avx2,
    i8_avx2_wide,
    AVX2_TOKENS,
    "avx2,fma,f16c",
    I8_TILE_BYTES,
    byte_rows,
    i8_single_avx2,
    i8_prepare_avx2,
    i8_dot_avx2,
    offset: false
);
wide_integer!(
    u4_vnni,
    u4_vnni_wide,
    VNNI_TOKENS,
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    U4_TILE_BYTES,
    u4_rows,
    unsigned_single_vnni,
    u4_prepare,
    unsigned_dot_vnni,
    offset: true
);
wide_integer!(
    u4_avx2,
    u4_avx2_wide,
    AVX2_TOKENS,
    "avx2,fma,f16c",
    U4_TILE_BYTES,
    u4_rows,
    unsigned_single_avx2,
    u4_prepare,
    unsigned_dot_avx2,
    offset: true
);
wide_integer!(
    u8_vnni,
    u8_vnni_wide,
    VNNI_TOKENS,
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    U8_TILE_BYTES,
    byte_rows,
    unsigned_single_vnni,
    u8_prepare,
    unsigned_dot_vnni,
    offset: true
);
wide_integer!(
    u8_avx2,
    u8_avx2_wide,
    AVX2_TOKENS,
    "avx2,fma,f16c",
    U8_TILE_BYTES,
    byte_rows,
    unsigned_single_avx2,
    u8_prepare,
    unsigned_dot_avx2,
    offset: true
);

/// The F16 kernels over `T` tokens and `G` groups, as outer products: each column's sixteen weights (a
/// group's) widened once for all the tokens, each token's value broadcast against them, and one sum per
/// row, token and group over the columns in order: the same multiply-adds in the same order for every
/// row, whatever else shares the call (so AVX2's and AVX-512's results are the same too). `T` tokens
/// against the `G` groups (`group_bytes` each) at `tiles`' start, into `out[t * stride + 4 * g + q]`.
///
/// AVX2 holds a column in two vectors (rows 0..8, 8..16), so six tokens' twelve accumulators, the
/// weights and the broadcast fill its sixteen registers.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_avx2_wide<const T: usize, const G: usize>(
    tiles: &[u8],
    group_bytes: usize,
    x: &[&[f32]],
    out: &mut [[f32; 4]],
    stride: usize,
) {
    let x: &[&[f32]; T] = x[..T].try_into().expect("T activation rows");
    let blocks = f16_blocks(tiles, G, group_bytes, x);
    let ahead = prefetch_ahead_bytes();
    let mut acc = [[[_mm256_setzero_ps(); 2]; G]; T];
    for b in 0..blocks {
        // SAFETY: `b` is below every row's block count and each group's.
        unsafe {
            let tile: [*const u8; G] =
                std::array::from_fn(|g| tiles.as_ptr().add(g * group_bytes + b * F16_TILE_BYTES));
            let xs = x.map(|x| x.as_ptr().add(32 * b));
            for pair in 0..16 {
                // One cache line holds two columns.
                for tile in &tile {
                    _mm_prefetch::<_MM_HINT_T0>(tile.wrapping_add(ahead + 64 * pair) as *const i8);
                }
                for j in [2 * pair, 2 * pair + 1] {
                    let w = tile.map(|tile| {
                        let column = tile.add(32 * j);
                        [
                            _mm256_cvtph_ps(_mm_loadu_si128(column as *const __m128i)),
                            _mm256_cvtph_ps(_mm_loadu_si128(column.add(16) as *const __m128i)),
                        ]
                    });
                    for (acc, xs) in acc.iter_mut().zip(&xs) {
                        let v = _mm256_broadcast_ss(&*xs.add(j));
                        for (acc, w) in acc.iter_mut().zip(&w) {
                            acc[0] = _mm256_fmadd_ps(w[0], v, acc[0]);
                            acc[1] = _mm256_fmadd_ps(w[1], v, acc[1]);
                        }
                    }
                }
            }
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        for (g, acc) in acc.iter().enumerate() {
            let o = &mut out[t * stride + 4 * g..][..4];
            // SAFETY: `o` is four fours of f32, sixteen in a row.
            unsafe {
                let o = o.as_mut_ptr() as *mut f32;
                _mm256_storeu_ps(o, acc[0]);
                _mm256_storeu_ps(o.add(8), acc[1]);
            }
        }
    }
}

/// AVX-512 holds a column's sixteen weights in one vector, so a multiply-add does sixteen rows (twice
/// AVX2's work on a CPU with full-width AVX-512 units) and its thirty-two registers take twelve tokens
/// over two groups: twenty-four accumulators, two weight vectors and the broadcast.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn f16_avx512_wide<const T: usize, const G: usize>(
    tiles: &[u8],
    group_bytes: usize,
    x: &[&[f32]],
    out: &mut [[f32; 4]],
    stride: usize,
) {
    let x: &[&[f32]; T] = x[..T].try_into().expect("T activation rows");
    let blocks = f16_blocks(tiles, G, group_bytes, x);
    let ahead = prefetch_ahead_bytes();
    let mut acc = [[_mm512_setzero_ps(); G]; T];
    for b in 0..blocks {
        // SAFETY: `b` is below every row's block count and each group's.
        unsafe {
            let tile: [*const u8; G] =
                std::array::from_fn(|g| tiles.as_ptr().add(g * group_bytes + b * F16_TILE_BYTES));
            let xs = x.map(|x| x.as_ptr().add(32 * b));
            for pair in 0..16 {
                // One cache line holds two columns.
                for tile in &tile {
                    _mm_prefetch::<_MM_HINT_T0>(tile.wrapping_add(ahead + 64 * pair) as *const i8);
                }
                for j in [2 * pair, 2 * pair + 1] {
                    let w = tile.map(|tile| {
                        _mm512_cvtph_ps(_mm256_loadu_si256(tile.add(32 * j) as *const __m256i))
                    });
                    for (acc, xs) in acc.iter_mut().zip(&xs) {
                        let v = _mm512_set1_ps(*xs.add(j));
                        for (acc, w) in acc.iter_mut().zip(&w) {
                            *acc = _mm512_fmadd_ps(*w, v, *acc);
                        }
                    }
                }
            }
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        for (g, acc) in acc.iter().enumerate() {
            let o = &mut out[t * stride + 4 * g..][..4];
            // SAFETY: `o` is four fours of f32, sixteen in a row.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr() as *mut f32, *acc) };
        }
    }
}

/// Whole F16 groups (sixteen rows each) against any number of unquantized activation rows, into four
/// results per token and group, token-major (`out[4 * (t * groups + g) + q]`), by a `$wide` kernel: calls
/// of `$tokens` tokens over `$groups` groups for a prompt; one to three tokens take two or four groups at
/// once, so that enough independent sums are in flight to hide the multiply-adds' latency (one group's
/// alone were bound by it).
macro_rules! f16_calls {
    ($name:ident, $wide:ident, $tokens:expr, $groups:literal, $features:literal, [$($fewer:literal)*]) => {
        /// # Safety
        /// The CPU has the features named; every row of `x` has the same length, 32 values per tile of a
        /// group.
        #[target_feature(enable = $features)]
        pub unsafe fn $name(tiles: &[u8], x: &[&[f32]], out: &mut [[f32; 4]]) {
            let n = x.len();
            let Some((group_bytes, groups, stride)) = f16_call(tiles, x, out) else {
                return;
            };
            let mut g = 0;
            while g < groups {
                let tiles = &tiles[g * group_bytes..];
                // SAFETY (each call): as for this function; every call's groups and tokens are in
                // `tiles`, `x` and `out`.
                g += match (n, groups - g) {
                    (1, 4..) => {
                        unsafe { $wide::<1, 4>(tiles, group_bytes, x, &mut out[4 * g..], stride) };
                        4
                    }
                    (2, 2..) => {
                        unsafe { $wide::<2, 2>(tiles, group_bytes, x, &mut out[4 * g..], stride) };
                        2
                    }
                    (3, 2..) => {
                        unsafe { $wide::<3, 2>(tiles, group_bytes, x, &mut out[4 * g..], stride) };
                        2
                    }
                    (_, left) => {
                        let call_groups = if left >= $groups { $groups } else { 1 };
                        for (c, x) in x.chunks($tokens).enumerate() {
                            let out = &mut out[c * $tokens * stride + 4 * g..];
                            unsafe {
                                match (x.len(), call_groups) {
                                    $(($fewer, 1) => $wide::<$fewer, 1>(tiles, group_bytes, x, out, stride),)*
                                    $(($fewer, _) => $wide::<$fewer, $groups>(tiles, group_bytes, x, out, stride),)*
                                    (_, 1) => $wide::<{ $tokens }, 1>(tiles, group_bytes, x, out, stride),
                                    _ => $wide::<{ $tokens }, $groups>(tiles, group_bytes, x, out, stride),
                                }
                            }
                        }
                        call_groups
                    }
                };
            }
        }
    };
}

f16_calls!(
    f16_avx512,
    f16_avx512_wide,
    F16_AVX512_TOKENS,
    2,
    "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni",
    [1 2 3 4 5 6 7 8 9 10 11]
);
f16_calls!(
    f16_avx2,
    f16_avx2_wide,
    F16_AVX2_TOKENS,
    1,
    "avx2,fma,f16c",
    [1 2 3 4 5]
);
