//! x86-64 kernels for the super-block tiles (`superblocks`): AVX2 and AVX-512 VNNI on 256-bit vectors
//! (decode-sized steps, and Q2K), and (`avx512`) Q3K to Q6K sixteen rows at once in 512-bit vectors for
//! prompt-sized steps.
//!
//! The 256-bit kernels take four rows against one to eight activation rows (`SuperRows`) at once: each
//! unpacked weight vector and sub-block scale serves every token, and the tokens' integer sums stay in
//! registers for a whole super-block. The products are `vpmaddubsw` (u8 weights x i8 activations into
//! i16 pairs) and a multiply-add of those pairs with the sub-block's scale into i32 (`vpdpwssd` with
//! VNNI, `vpmaddwd` + `vpaddd` without). Q4K, Q5K and Q6K interleave the rows eight values at a time,
//! so the pairs of a sub-block (32 values; Q6K's and Q3K's 16) add up in 16 bits before one scale
//! multiply; Q2K (4 tokens) keeps a vector per row and multiplies every 32 values.
//!
//! The 512-bit kernels unpack a super-block of four groups once for up to `SUPER_WIDE_TOKENS` tokens, into
//! sixteen rows' values four to a 32-bit lane (`avx512::Quads`), and take them eight tokens at a time:
//! one `vpdpbusd` against a token's four activations (a broadcast folded into the instruction) does four
//! values of all sixteen rows, and one `vpmulld` a sub-block applies the rows' scales: ten instructions
//! per 512 products of a 32-value sub-block (twelve for 16-value ones), where `vpmaddubsw` with its
//! broadcasts, 16-bit sums and `vpdpwssd` took 24.
//!
//! The mins (Q4K, Q5K per 32 values, Q2K per 16), Q6K's offset of 32 and Q3K's of 4 come from the
//! activations' per-32 and per-16 sums, once per super-block. Floats appear once per super-block, row and
//! token, in the same steps at every width (a row's integer sums, then `d`, `dmin` and the token's
//! scale), so a token's results do not depend on which kernel its rows fell to. Callers check the CPU's
//! features (`SimdLevel::available`).

use std::arch::x86_64::*;

use super::SUPER_WIDE_TOKENS;
use super::activations::{SuperRow, super_blocks};
use super::superblocks::{
    Q2K_QS, Q2K_SCALES, Q2K_TILE_BYTES, Q3K_HMASK, Q3K_QS, Q3K_SCALES, Q3K_TILE_BYTES, Q4K_MINS,
    Q4K_QS, Q4K_SCALES, Q4K_TILE_BYTES, Q5K_QH, Q5K_TILE_BYTES, Q6K_HALF, Q6K_HALVES, Q6K_QH,
    Q6K_SCALES, Q6K_TILE_BYTES,
};
use super::x86::{load32, prefetch_ahead};

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load16(at: *const u8) -> __m128i {
    unsafe { _mm_loadu_si128(at as *const __m128i) }
}

/// `acc + pairwise(p * s)` over i16 lanes into i32 lanes, without VNNI.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn madd_avx2(acc: __m256i, p: __m256i, s: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(p, s))
}

/// The same in one `vpdpwssd`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
fn madd_vnni(acc: __m256i, p: __m256i, s: __m256i) -> __m256i {
    _mm256_dpwssd_epi32(acc, p, s)
}

/// Four rows' i32 lane vectors summed to `[r0, r1, r2, r3]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_rows(acc: [__m256i; 4]) -> __m128i {
    let h = _mm256_hadd_epi32(
        _mm256_hadd_epi32(acc[0], acc[1]),
        _mm256_hadd_epi32(acc[2], acc[3]),
    );
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// An interleaved kernel's accumulator, i32 lanes `[r0, r0, r1, r1 | r2, r2, r3, r3]`, each row's two
/// lanes added into its first (the even lanes; the odd ones are left to be ignored).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn row_sums(acc: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_srli_epi64::<32>(acc))
}

/// Four f16 at `at` as floats in the even lanes (as `row_sums` leaves a row's sum), each also in the
/// next lane: `[v0, v0, v1, v1 | v2, v2, v3, v3]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_pairs(at: *const u8) -> __m256 {
    let v = _mm_cvtph_ps(unsafe { _mm_loadl_epi64(at as *const __m128i) });
    _mm256_set_m128(_mm_unpackhi_ps(v, v), _mm_unpacklo_ps(v, v))
}

/// The even lanes of `total`: four rows' sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn even_lanes(total: __m256) -> __m128 {
    _mm256_castps256_ps128(_mm256_permutevar8x32_ps(
        total,
        _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6),
    ))
}

/// Four i16 at `at` in every 64-bit lane: a token's sums of four sub-blocks, against which a row's four
/// i16 factors give (`vpmaddwd`) the row's two lanes of an interleaved accumulator.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quad(at: *const i16) -> __m256i {
    _mm256_set1_epi64x(unsafe { std::ptr::read_unaligned(at as *const i64) })
}

/// `vpshufb` controls that put i16 lane `lo` of a 128-bit half in the low half's eight lanes and lane `hi`
/// in the high half's: `PAIRS[k]` takes lanes `2k` and `2k + 1` (two 16-value sub-blocks of a 32-value
/// run).
const fn word_shuffle(lo: usize, hi: usize) -> [u8; 32] {
    let mut m = [0u8; 32];
    let mut i = 0;
    while i < 8 {
        m[2 * i] = 2 * lo as u8;
        m[2 * i + 1] = 2 * lo as u8 + 1;
        m[16 + 2 * i] = 2 * hi as u8;
        m[16 + 2 * i + 1] = 2 * hi as u8 + 1;
        i += 1;
    }
    m
}

static PAIRS: [[u8; 32]; 4] = [
    word_shuffle(0, 1),
    word_shuffle(2, 3),
    word_shuffle(4, 5),
    word_shuffle(6, 7),
];

/// A Q4K or Q5K tile's mins as i16 to meet a token's 32-value sums four at a time (`quad`): `[j]` holds
/// each row's mins `4j..4j + 4`, rows in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_mins(tile: *const u8) -> [__m256i; 2] {
    // A row's eight bytes: its first four, then its last four.
    let halves = _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15);
    let rows01 = _mm_shuffle_epi8(unsafe { load16(tile.add(Q4K_MINS)) }, halves);
    let rows23 = _mm_shuffle_epi8(unsafe { load16(tile.add(Q4K_MINS + 16)) }, halves);
    [
        _mm256_cvtepu8_epi16(_mm_unpacklo_epi64(rows01, rows23)),
        _mm256_cvtepu8_epi16(_mm_unpackhi_epi64(rows01, rows23)),
    ]
}

/// A Q6K (`SIX`) or Q3K tile's offsets, negated, to meet a token's 16-value sums four at a time (`quad`):
/// the values are stored plus 32 (Q3K: 4), so `[k]` holds each row's scales `4k..4k + 4` (gathered from
/// the `[s][row]` bytes at `scales_at`) times -32 (-4) as i16, rows in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q16_offsets<const SIX: bool>(tile: *const u8, scales_at: usize) -> [__m256i; 4] {
    let by_row = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    let offsets = |k: usize| {
        let scales = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(
            unsafe { load16(tile.add(scales_at + 16 * k)) },
            by_row,
        ));
        let negated = _mm256_sub_epi16(_mm256_setzero_si256(), scales);
        if SIX {
            _mm256_slli_epi16::<5>(negated)
        } else {
            _mm256_slli_epi16::<2>(negated)
        }
    };
    [offsets(0), offsets(1), offsets(2), offsets(3)]
}

/// `out[..n] = $kernel::<n, $flag>(tiles, x)` for `n = x.len()` (1 to 8; more take 8): the token count
/// as the kernel's constant.
macro_rules! up_to_eight {
    ($kernel:ident, $flag:tt, $tiles:expr, $x:expr, $out:expr) => {
        match $x.len() {
            1 => $out[..1].copy_from_slice(&$kernel::<1, $flag>($tiles, $x)),
            2 => $out[..2].copy_from_slice(&$kernel::<2, $flag>($tiles, $x)),
            3 => $out[..3].copy_from_slice(&$kernel::<3, $flag>($tiles, $x)),
            4 => $out[..4].copy_from_slice(&$kernel::<4, $flag>($tiles, $x)),
            5 => $out[..5].copy_from_slice(&$kernel::<5, $flag>($tiles, $x)),
            6 => $out[..6].copy_from_slice(&$kernel::<6, $flag>($tiles, $x)),
            7 => $out[..7].copy_from_slice(&$kernel::<7, $flag>($tiles, $x)),
            _ => $out[..8].copy_from_slice(&$kernel::<8, $flag>($tiles, $x)),
        }
    };
}

macro_rules! superblock_kernels {
    ($q2k:ident, $q3k:ident, $q4k:ident, $q5k:ident, $q6k:ident, $features:literal, $madd:ident) => {
        /// Four Q2K rows against the first `N` activation rows of `x`.
        #[target_feature(enable = $features)]
        unsafe fn q2k_tokens<const N: usize>(tiles: &[u8], x: &[SuperRow]) -> [[f32; 4]; N] {
            let x = &x[..N];
            let supers = super_blocks(tiles.len() / Q2K_TILE_BYTES, x);
            let three = _mm256_set1_epi8(3);
            let nibble = _mm_set1_epi8(0x0F);
            let mut total = [_mm_setzero_ps(); N];
            for b in 0..supers {
                unsafe {
                    let tile = tiles.as_ptr().add(b * Q2K_TILE_BYTES);
                    prefetch_ahead(tile, Q2K_TILE_BYTES);
                    let mut acts = [std::ptr::null::<u8>(); N];
                    for t in 0..N {
                        acts[t] = x[t].qs.as_ptr().add(256 * b) as *const u8;
                    }
                    let mut acc = [[_mm256_setzero_si256(); N]; 4];
                    for h in 0..2 {
                        // One row of half `h`: its 128 values against every token.
                        macro_rules! row {
                            ($r:literal) => {
                                let sc8 = _mm_loadl_epi64(
                                    tile.add(Q2K_SCALES + 16 * $r + 8 * h) as *const __m128i
                                );
                                let scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(
                                    _mm_and_si128(sc8, nibble),
                                ));
                                let q = load32(tile.add(Q2K_QS + 128 * h + 32 * $r));
                                let values = [
                                    _mm256_and_si256(q, three),
                                    _mm256_and_si256(_mm256_srli_epi16::<2>(q), three),
                                    _mm256_and_si256(_mm256_srli_epi16::<4>(q), three),
                                    _mm256_and_si256(_mm256_srli_epi16::<6>(q), three),
                                ];
                                for k in 0..4 {
                                    let s = _mm256_shuffle_epi8(scales, load32(PAIRS[k].as_ptr()));
                                    for t in 0..N {
                                        let a = load32(acts[t].add(128 * h + 32 * k));
                                        acc[$r][t] = $madd(
                                            acc[$r][t],
                                            _mm256_maddubs_epi16(values[k], a),
                                            s,
                                        );
                                    }
                                }
                            };
                        }
                        row!(0);
                        row!(1);
                        row!(2);
                        row!(3);
                    }
                    // Each row's sixteen mins as i16, against each token's 16-value sums.
                    let d = _mm_cvtph_ps(_mm_loadl_epi64(tile as *const __m128i));
                    let dmin = _mm_cvtph_ps(_mm_loadl_epi64(tile.add(8) as *const __m128i));
                    let mins = [0, 1, 2, 3].map(|r| {
                        _mm256_cvtepu8_epi16(_mm_and_si128(
                            _mm_srli_epi16::<4>(load16(tile.add(Q2K_SCALES + 16 * r))),
                            nibble,
                        ))
                    });
                    for t in 0..N {
                        let sums = load32(x[t].sums16.as_ptr().add(16 * b) as *const u8);
                        let summ = sum_rows(mins.map(|m| _mm256_madd_epi16(m, sums)));
                        let sumi = sum_rows([acc[0][t], acc[1][t], acc[2][t], acc[3][t]]);
                        let da = _mm_set1_ps(*x[t].d.get_unchecked(b));
                        total[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(sumi), _mm_mul_ps(d, da), total[t]);
                        total[t] =
                            _mm_fnmadd_ps(_mm_cvtepi32_ps(summ), _mm_mul_ps(dmin, da), total[t]);
                    }
                }
            }
            let mut out = [[0f32; 4]; N];
            for t in 0..N {
                // SAFETY: `out[t]` has four floats.
                unsafe { _mm_storeu_ps(out[t].as_mut_ptr(), total[t]) };
            }
            out
        }

        /// Four Q2K rows against 1 to 8 activation rows (four at a time).
        ///
        /// # Safety
        /// As for the Q4K kernel.
        #[target_feature(enable = $features)]
        pub unsafe fn $q2k(tiles: &[u8], x: &[SuperRow], out: &mut [[f32; 4]]) {
            for (x, out) in x.chunks(4).zip(out.chunks_mut(4)) {
                unsafe {
                    match x.len() {
                        1 => out[..1].copy_from_slice(&q2k_tokens::<1>(tiles, x)),
                        2 => out[..2].copy_from_slice(&q2k_tokens::<2>(tiles, x)),
                        3 => out[..3].copy_from_slice(&q2k_tokens::<3>(tiles, x)),
                        _ => out[..4].copy_from_slice(&q2k_tokens::<4>(tiles, x)),
                    }
                }
            }
        }

        /// Four Q3K rows against 1 to 8 activation rows.
        ///
        /// # Safety
        /// As for the Q4K kernel.
        #[target_feature(enable = $features)]
        pub unsafe fn $q3k(tiles: &[u8], x: &[SuperRow], out: &mut [[f32; 4]]) {
            unsafe { up_to_eight!(q16_tokens, false, tiles, x, out) }
        }

        /// Four Q4K (or, with `FIVE`, Q5K) rows against the first `N` activation rows of `x`.
        ///
        /// Per sub-block, the four rows' 32 values are four vectors of eight values a row
        /// (`superblocks::interleaved`); each token's eight matching activations, broadcast, meet them
        /// in `vpmaddubsw`, the four products add up in 16 bits (at most 4 x 2 x 31 x 127 < 2^15), and
        /// one multiply-add applies the rows' scales: five multiplies per 128 multiply-adds.
        #[target_feature(enable = $features)]
        unsafe fn q4k_tokens<const N: usize, const FIVE: bool>(
            tiles: &[u8],
            x: &[SuperRow],
        ) -> [[f32; 4]; N] {
            let tb = if FIVE { Q5K_TILE_BYTES } else { Q4K_TILE_BYTES };
            let x = &x[..N];
            let supers = super_blocks(tiles.len() / tb, x);
            let nibble = _mm256_set1_epi8(0x0F);
            let fifth = _mm256_set1_epi8(0x10);
            // `vpshufb` controls that spread four bytes (a sub-block's four rows' scales: bytes 0..4 of a
            // pair, or 4..8) to four bytes each.
            let spread = [
                _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                _mm_setr_epi8(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7),
            ];
            // Per token, its four rows' sums in the even lanes.
            let mut total = [_mm256_setzero_ps(); N];
            for b in 0..supers {
                unsafe {
                    let tile = tiles.as_ptr().add(b * tb);
                    prefetch_ahead(tile, tb);
                    let mut acts = [std::ptr::null::<u8>(); N];
                    for t in 0..N {
                        acts[t] = x[t].qs.as_ptr().add(256 * b) as *const u8;
                    }
                    // Per token, i32 lanes [r0, r0, r1, r1 | r2, r2, r3, r3].
                    let mut acc = [_mm256_setzero_si256(); N];
                    for p in 0..4 {
                        // Sub-blocks 2p and 2p + 1: their four rows' scales, each over its row's
                        // four i16 lanes, and their values, eight of each row per vector.
                        let eight = _mm_loadl_epi64(tile.add(Q4K_SCALES + 8 * p) as *const __m128i);
                        let scales = [
                            _mm256_cvtepu8_epi16(_mm_shuffle_epi8(eight, spread[0])),
                            _mm256_cvtepu8_epi16(_mm_shuffle_epi8(eight, spread[1])),
                        ];
                        let qh_shift = _mm_cvtsi32_si128(2 * p as i32);
                        let mut w = [[_mm256_setzero_si256(); 4]; 2];
                        for g in 0..4 {
                            let raw = load32(tile.add(Q4K_QS + 128 * p + 32 * g));
                            w[0][g] = _mm256_and_si256(raw, nibble);
                            w[1][g] = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), nibble);
                            if FIVE {
                                // Bits 2p and 2p + 1 of each qh byte, to bit 4.
                                let qh =
                                    _mm256_srl_epi16(load32(tile.add(Q5K_QH + 32 * g)), qh_shift);
                                w[0][g] = _mm256_or_si256(
                                    w[0][g],
                                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), fifth),
                                );
                                w[1][g] = _mm256_or_si256(
                                    w[1][g],
                                    _mm256_and_si256(_mm256_slli_epi16::<3>(qh), fifth),
                                );
                            }
                        }
                        for h in 0..2 {
                            for t in 0..N {
                                let a = acts[t].add(64 * p + 32 * h) as *const i64;
                                let product = |g: usize| {
                                    let a8 = _mm256_set1_epi64x(std::ptr::read_unaligned(a.add(g)));
                                    _mm256_maddubs_epi16(w[h][g], a8)
                                };
                                let sum = _mm256_add_epi16(
                                    _mm256_add_epi16(product(0), product(1)),
                                    _mm256_add_epi16(product(2), product(3)),
                                );
                                acc[t] = $madd(acc[t], sum, scales[h]);
                            }
                        }
                    }
                    // Each token's super-block, a row at a time (in the even lanes): `d` times the
                    // sums less `dmin` times the mins against the token's 32-value sums, times the
                    // token's scale (the 512-bit kernels' steps, so the same bits).
                    let mins = q4k_mins(tile);
                    let (d, dmin) = (f16_pairs(tile), f16_pairs(tile.add(8)));
                    for t in 0..N {
                        let sums = x[t].sums32.as_ptr().add(8 * b);
                        let m = $madd(
                            _mm256_madd_epi16(mins[0], quad(sums)),
                            mins[1],
                            quad(sums.add(4)),
                        );
                        let v = _mm256_fnmadd_ps(
                            _mm256_cvtepi32_ps(row_sums(m)),
                            dmin,
                            _mm256_mul_ps(_mm256_cvtepi32_ps(row_sums(acc[t])), d),
                        );
                        let da = _mm256_set1_ps(*x[t].d.get_unchecked(b));
                        total[t] = _mm256_fmadd_ps(v, da, total[t]);
                    }
                }
            }
            let mut out = [[0f32; 4]; N];
            for t in 0..N {
                // SAFETY: `out[t]` has four floats.
                unsafe { _mm_storeu_ps(out[t].as_mut_ptr(), even_lanes(total[t])) };
            }
            out
        }

        /// Four rows of a kind with 16-value sub-blocks and signed scales against the first `N`
        /// activation rows of `x`: Q6K (`SIX`) or Q3K.
        ///
        /// As Q4K: per 32 values of a half, four vectors of eight values a row, stored unsigned (Q6K's
        /// 6 bits plus 32; Q3K's low two bits or'd with its high bit moved to bit 2, plus 4); two
        /// `vpmaddubsw` products add up in 16 bits (at most 2 x 2 x 63 x 127 < 2^15) before each
        /// 16-value sub-block's scale multiplies them, and the offset is taken back once per
        /// super-block through the activations' 16-value sums.
        #[target_feature(enable = $features)]
        unsafe fn q16_tokens<const N: usize, const SIX: bool>(
            tiles: &[u8],
            x: &[SuperRow],
        ) -> [[f32; 4]; N] {
            let (tb, scales_at) = if SIX {
                (Q6K_TILE_BYTES, Q6K_SCALES)
            } else {
                (Q3K_TILE_BYTES, Q3K_SCALES)
            };
            let x = &x[..N];
            let supers = super_blocks(tiles.len() / tb, x);
            let (nibble, high) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
            let (three, four) = (_mm256_set1_epi8(3), _mm256_set1_epi8(4));
            // `vpshufb` controls: a sub-block's four rows' scales (bytes 0..4 or 4..8 of a loaded
            // pair) to four bytes each.
            let spread = [
                _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                _mm_setr_epi8(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7),
            ];
            // Per token, its four rows' sums in the even lanes.
            let mut total = [_mm256_setzero_ps(); N];
            for b in 0..supers {
                unsafe {
                    let tile = tiles.as_ptr().add(b * tb);
                    prefetch_ahead(tile, tb);
                    let mut acts = [std::ptr::null::<u8>(); N];
                    for t in 0..N {
                        acts[t] = x[t].qs.as_ptr().add(256 * b) as *const u8;
                    }
                    // Per token, i32 lanes [r0, r0, r1, r1 | r2, r2, r3, r3].
                    let mut acc = [_mm256_setzero_si256(); N];
                    for h in 0..2 {
                        let half = tile.add(Q6K_HALVES + Q6K_HALF * h);
                        for k in 0..4 {
                            let pair = _mm_loadl_epi64(
                                tile.add(scales_at + 4 * (8 * h + 2 * k)) as *const __m128i
                            );
                            let scales = [
                                _mm256_cvtepi8_epi16(_mm_shuffle_epi8(pair, spread[0])),
                                _mm256_cvtepi8_epi16(_mm_shuffle_epi8(pair, spread[1])),
                            ];
                            let mut w = [_mm256_setzero_si256(); 4];
                            if SIX {
                                let ql_shift = _mm_cvtsi32_si128(4 * (k as i32 >> 1));
                                let qh_shift = _mm_cvtsi32_si128(2 * k as i32);
                                for (g, w) in w.iter_mut().enumerate() {
                                    let ql = load32(half.add(128 * (k & 1) + 32 * g));
                                    let qh = load32(half.add(Q6K_QH + 32 * g));
                                    *w = _mm256_or_si256(
                                        _mm256_and_si256(_mm256_srl_epi16(ql, ql_shift), nibble),
                                        _mm256_and_si256(
                                            _mm256_slli_epi16::<4>(_mm256_srl_epi16(qh, qh_shift)),
                                            high,
                                        ),
                                    );
                                }
                            } else {
                                let q_shift = _mm_cvtsi32_si128(2 * k as i32);
                                // Bit `j` = 4h + k of each hmask byte to bit 2 (a 16-bit shift, whose
                                // bits crossing between the bytes the mask drops).
                                let j = (4 * h + k) as i32;
                                let (hm_right, hm_left) = (
                                    _mm_cvtsi32_si128((j - 2).max(0)),
                                    _mm_cvtsi32_si128((2 - j).max(0)),
                                );
                                for (g, w) in w.iter_mut().enumerate() {
                                    let q = load32(tile.add(Q3K_QS + 128 * h + 32 * g));
                                    let hm = load32(tile.add(Q3K_HMASK + 32 * g));
                                    *w = _mm256_or_si256(
                                        _mm256_and_si256(_mm256_srl_epi16(q, q_shift), three),
                                        _mm256_and_si256(
                                            _mm256_sll_epi16(
                                                _mm256_srl_epi16(hm, hm_right),
                                                hm_left,
                                            ),
                                            four,
                                        ),
                                    );
                                }
                            }
                            for t in 0..N {
                                let a = acts[t].add(128 * h + 32 * k) as *const i64;
                                let product = |g: usize| {
                                    let a8 = _mm256_set1_epi64x(std::ptr::read_unaligned(a.add(g)));
                                    _mm256_maddubs_epi16(w[g], a8)
                                };
                                let lo = _mm256_add_epi16(product(0), product(1));
                                let hi = _mm256_add_epi16(product(2), product(3));
                                acc[t] = $madd(acc[t], lo, scales[0]);
                                acc[t] = $madd(acc[t], hi, scales[1]);
                            }
                        }
                    }
                    // The offsets against each token's 16-value sums, then its super-block a row at
                    // a time (in the even lanes): `d` times the sums, times the token's scale.
                    let offsets = q16_offsets::<SIX>(tile, scales_at);
                    let d = f16_pairs(tile);
                    for t in 0..N {
                        let sums = x[t].sums16.as_ptr().add(16 * b);
                        let mut sumi = acc[t];
                        for (k, offsets) in offsets.iter().enumerate() {
                            sumi = $madd(sumi, *offsets, quad(sums.add(4 * k)));
                        }
                        let da = _mm256_set1_ps(*x[t].d.get_unchecked(b));
                        total[t] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(row_sums(sumi)),
                            _mm256_mul_ps(d, da),
                            total[t],
                        );
                    }
                }
            }
            let mut out = [[0f32; 4]; N];
            for t in 0..N {
                // SAFETY: `out[t]` has four floats.
                unsafe { _mm_storeu_ps(out[t].as_mut_ptr(), even_lanes(total[t])) };
            }
            out
        }

        /// Four Q4K rows against `x.len()` (1 to 8) activation rows, into `out[..x.len()]`.
        ///
        /// # Safety
        /// The CPU has the features named; `x` has 1 to 8 rows, `out` as many.
        #[target_feature(enable = $features)]
        pub unsafe fn $q4k(tiles: &[u8], x: &[SuperRow], out: &mut [[f32; 4]]) {
            unsafe { up_to_eight!(q4k_tokens, false, tiles, x, out) }
        }

        /// Four Q5K rows against 1 to 8 activation rows.
        ///
        /// # Safety
        /// As for the Q4K kernel.
        #[target_feature(enable = $features)]
        pub unsafe fn $q5k(tiles: &[u8], x: &[SuperRow], out: &mut [[f32; 4]]) {
            unsafe { up_to_eight!(q4k_tokens, true, tiles, x, out) }
        }

        /// Four Q6K rows against 1 to 8 activation rows.
        ///
        /// # Safety
        /// As for the Q4K kernel.
        #[target_feature(enable = $features)]
        pub unsafe fn $q6k(tiles: &[u8], x: &[SuperRow], out: &mut [[f32; 4]]) {
            unsafe { up_to_eight!(q16_tokens, true, tiles, x, out) }
        }
    };
}

/// AVX2 without VNNI.
pub mod avx2 {
    use super::*;
    superblock_kernels!(q2k, q3k, q4k, q5k, q6k, "avx2,fma,f16c", madd_avx2);
}

/// AVX-512 VNNI on 256-bit vectors.
pub mod vnni {
    use super::*;
    superblock_kernels!(
        q2k,
        q3k,
        q4k,
        q5k,
        q6k,
        "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni",
        madd_vnni
    );
}

/// Q3K, Q4K, Q5K and Q6K in 512-bit vectors: two groups (eight rows) a pass, each 256-bit weight vector
/// of `q4k_tokens` or `q16_tokens` beside the same vector of the next group's tile, so one `vpmaddubsw`
/// and one `vpdpwssd` do both groups' work (twice the 256-bit kernels' on a CPU with full-width AVX-512 units). The
/// arithmetic of every row is the 256-bit kernels', in the same order, so the results are the same bits
/// at either width and whatever shares a call.
pub mod avx512 {
    use super::*;

    /// Two 256-bit halves in one vector: `lo` in lanes 0..8, `hi` in 8..16.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    fn join(lo: __m256i, hi: __m256i) -> __m512i {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }

    /// Gathers one 32-bit word from each of four groups' tiles, at `at`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn words(tile: [*const u8; 4], at: usize) -> __m128i {
        let word = |g: usize| unsafe { std::ptr::read_unaligned(tile[g].add(at) as *const i32) };
        _mm_setr_epi32(word(0), word(1), word(2), word(3))
    }

    /// Four groups' four f16 (at `at`) as sixteen floats, rows in order.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn f16_rows(tile: [*const u8; 4], at: usize) -> __m512 {
        let four = |g: usize| unsafe { std::ptr::read_unaligned(tile[g].add(at) as *const i64) };
        _mm512_cvtph_ps(_mm256_setr_epi64x(four(0), four(1), four(2), four(3)))
    }

    /// The even and the odd four-value words of sixteen rows, from two groups' interleaved vectors each
    /// (eight values of each of their four rows, as the super-block tiles store them): `lo` holds groups 0
    /// and 1, `hi` groups 2 and 3.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    fn to_quads(lo: __m512i, hi: __m512i) -> [__m512i; 2] {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        [
            _mm512_permutex2var_epi32(lo, even, hi),
            _mm512_permutex2var_epi32(lo, odd, hi),
        ]
    }

    /// One super-block of four groups (sixteen rows), unpacked once for every chunk of tokens.
    struct Quads {
        /// Values `4q..4q + 4` of each row as bytes, one 32-bit lane a row, rows in order.
        quads: [__m512i; 64],
        /// Each row's scale of sub-block `s` (32 values for Q4K and Q5K, 16 for Q6K and Q3K), i32 lanes.
        scales: [__m512i; 16],
        /// Each row's mins (Q4K, Q5K) or negated offsets (Q6K, Q3K) of sub-blocks `2j` and `2j + 1` as two
        /// i16, to meet a token's two sums of those sub-blocks in `vpmaddwd`.
        pairs: [__m512i; 8],
        d: __m512,
        dmin: __m512,
    }

    /// Unpacks super-block `tile` of four Q4K (Q5K with `FIVE`) groups.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn quads_q32<const FIVE: bool>(tile: [*const u8; 4], out: &mut Quads) {
        unsafe {
            let both = |first: usize, at: usize| {
                join(load32(tile[first].add(at)), load32(tile[first + 1].add(at)))
            };
            let nibble = _mm512_set1_epi8(0x0F);
            let fifth = _mm512_set1_epi8(0x10);
            // Q5K's fifth bits of each pair of groups, for every `p`.
            let qh: [[__m512i; 4]; 2] = if FIVE {
                [0, 2].map(|first| std::array::from_fn(|g| both(first, Q5K_QH + 32 * g)))
            } else {
                [[_mm512_setzero_si512(); 4]; 2]
            };
            for p in 0..4 {
                // Each 32-byte run `g`: its low nibbles (sub-block 2p) and high ones (2p + 1), with
                // Q5K's fifth bits (bits 2p and 2p + 1 of `qh`) added in as 16 by mask.
                let (low_bit, high_bit) = (
                    _mm512_set1_epi8((1u8 << (2 * p)) as i8),
                    _mm512_set1_epi8((2u8 << (2 * p)) as i8),
                );
                for g in 0..4 {
                    let [lo, hi] = [0, 1].map(|pair| {
                        let raw = both(2 * pair, Q4K_QS + 128 * p + 32 * g);
                        let mut low = _mm512_and_si512(raw, nibble);
                        let mut high = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), nibble);
                        if FIVE {
                            let qh = qh[pair][g];
                            let to_low = _mm512_test_epi8_mask(qh, low_bit);
                            let to_high = _mm512_test_epi8_mask(qh, high_bit);
                            low = _mm512_mask_add_epi8(low, to_low, low, fifth);
                            high = _mm512_mask_add_epi8(high, to_high, high, fifth);
                        }
                        [low, high]
                    });
                    for h in 0..2 {
                        let q = (2 * p + h) * 8 + 2 * g;
                        [out.quads[q], out.quads[q + 1]] = to_quads(lo[h], hi[h]);
                    }
                }
            }
            for s in 0..8 {
                out.scales[s] = _mm512_cvtepu8_epi32(words(tile, Q4K_SCALES + 4 * s));
            }
            // A group's mins as i16, dword `4r + j` = row r's mins 2j and 2j + 1.
            let mins: [__m512i; 4] =
                std::array::from_fn(|g| _mm512_cvtepu8_epi16(load32(tile[g].add(Q4K_MINS))));
            for j in 0..4 {
                let pick = _mm512_add_epi32(
                    _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0),
                    _mm512_set1_epi32(j as i32),
                );
                let first = _mm512_permutex2var_epi32(mins[0], pick, mins[1]);
                let second = _mm512_permutex2var_epi32(mins[2], pick, mins[3]);
                out.pairs[j] = _mm512_inserti64x4::<1>(first, _mm512_castsi512_si256(second));
            }
            out.d = f16_rows(tile, 0);
            out.dmin = f16_rows(tile, 8);
        }
    }

    /// Unpacks super-block `tile` of four Q6K (`SIX`) or Q3K groups.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn quads_q16<const SIX: bool>(tile: [*const u8; 4], out: &mut Quads) {
        unsafe {
            let scales_at = if SIX { Q6K_SCALES } else { Q3K_SCALES };
            let both = |first: usize, at: usize| {
                join(load32(tile[first].add(at)), load32(tile[first + 1].add(at)))
            };
            let (nibble, high) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
            let (three, four) = (_mm512_set1_epi8(3), _mm512_set1_epi8(4));
            for h in 0..2 {
                for k in 0..4 {
                    for g in 0..4 {
                        let [lo, hi] = [0, 2].map(|first| {
                            if SIX {
                                let half = Q6K_HALVES + Q6K_HALF * h;
                                let ql = both(first, half + 128 * (k & 1) + 32 * g);
                                let qh = both(first, half + Q6K_QH + 32 * g);
                                // Bits 2k and 2k + 1 of `qh` to bits 4 and 5: one shift each way.
                                let (low, high_bits) = match k {
                                    0 => (ql, _mm512_slli_epi16::<4>(qh)),
                                    1 => (ql, _mm512_slli_epi16::<2>(qh)),
                                    2 => (_mm512_srli_epi16::<4>(ql), qh),
                                    _ => (_mm512_srli_epi16::<4>(ql), _mm512_srli_epi16::<2>(qh)),
                                };
                                _mm512_or_si512(
                                    _mm512_and_si512(low, nibble),
                                    _mm512_and_si512(high_bits, high),
                                )
                            } else {
                                let q_shift = _mm_cvtsi32_si128(2 * k as i32);
                                // Bit `j` = 4h + k of each hmask byte to bit 2.
                                let j = (4 * h + k) as i32;
                                let (hm_right, hm_left) = (
                                    _mm_cvtsi32_si128((j - 2).max(0)),
                                    _mm_cvtsi32_si128((2 - j).max(0)),
                                );
                                let q = both(first, Q3K_QS + 128 * h + 32 * g);
                                let hm = both(first, Q3K_HMASK + 32 * g);
                                _mm512_or_si512(
                                    _mm512_and_si512(_mm512_srl_epi16(q, q_shift), three),
                                    _mm512_and_si512(
                                        _mm512_sll_epi16(_mm512_srl_epi16(hm, hm_right), hm_left),
                                        four,
                                    ),
                                )
                            }
                        });
                        let q = 32 * h + 8 * k + 2 * g;
                        [out.quads[q], out.quads[q + 1]] = to_quads(lo, hi);
                    }
                }
            }
            for s in 0..16 {
                out.scales[s] = _mm512_cvtepi8_epi32(words(tile, scales_at + 4 * s));
            }
            // The values are stored plus 32 (Q3K: 4): each sub-block's scale times that, negated, as
            // i16, two sub-blocks a lane.
            let offset = |s: usize| {
                let negated = _mm512_sub_epi32(_mm512_setzero_si512(), out.scales[s]);
                if SIX {
                    _mm512_slli_epi32::<5>(negated)
                } else {
                    _mm512_slli_epi32::<2>(negated)
                }
            };
            for j in 0..8 {
                out.pairs[j] = _mm512_or_si512(
                    _mm512_and_si512(offset(2 * j), _mm512_set1_epi32(0xFFFF)),
                    _mm512_slli_epi32::<16>(offset(2 * j + 1)),
                );
            }
            out.d = f16_rows(tile, 0);
        }
    }

    /// `x`'s four i8 activations at `at`, in every 32-bit lane.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn four(at: *const u8) -> __m512i {
        _mm512_set1_epi32(unsafe { std::ptr::read_unaligned(at as *const i32) })
    }

    /// The integer sums of super-block `b` of sixteen rows, unpacked in `u`, against the first `N`
    /// activation rows of `x`, a lane a row: per sub-block of `4 * QUADS` values and token, `QUADS`
    /// `vpdpbusd` (the token's four activations, broadcast, against four values of every row), then one
    /// multiply by the rows' scales.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn scaled_sums<const N: usize, const QUADS: usize>(
        u: &Quads,
        x: &[SuperRow],
        b: usize,
    ) -> [__m512i; N] {
        let mut acc = [_mm512_setzero_si512(); N];
        unsafe {
            let mut acts = [std::ptr::null::<u8>(); N];
            for t in 0..N {
                acts[t] = x[t].qs.as_ptr().add(256 * b) as *const u8;
            }
            for s in 0..64 / QUADS {
                let w: [__m512i; QUADS] = std::array::from_fn(|i| u.quads[QUADS * s + i]);
                let scale = u.scales[s];
                for t in 0..N {
                    let a = acts[t].add(4 * QUADS * s);
                    let mut sub = _mm512_setzero_si512();
                    for (i, w) in w.iter().enumerate() {
                        sub = _mm512_dpbusd_epi32(sub, *w, four(a.add(4 * i)));
                    }
                    acc[t] = _mm512_add_epi32(acc[t], _mm512_mullo_epi32(sub, scale));
                }
            }
        }
        acc
    }

    /// Super-block `b` of sixteen Q4K or Q5K rows, unpacked in `u`, against the first `N` activation rows
    /// of `x`, added to their sums in `total` (a lane a row).
    ///
    /// The rows' sums by `scaled_sums` (eight `vpdpbusd` per 32-value sub-block); the mins meet the
    /// token's 32-value sums in four `vpmaddwd`/`vpdpwssd`; floats once per super-block, row and token.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn q32_chunk<const N: usize>(u: &Quads, x: &[SuperRow], b: usize, total: &mut [__m512]) {
        let (x, total) = (&x[..N], &mut total[..N]);
        unsafe {
            let acc = scaled_sums::<N, 8>(u, x, b);
            for t in 0..N {
                let sums = x[t].sums32.as_ptr().add(8 * b) as *const u8;
                let mut mins = _mm512_madd_epi16(u.pairs[0], four(sums));
                for j in 1..4 {
                    mins = _mm512_dpwssd_epi32(mins, u.pairs[j], four(sums.add(4 * j)));
                }
                let v = _mm512_fnmadd_ps(
                    _mm512_cvtepi32_ps(mins),
                    u.dmin,
                    _mm512_mul_ps(_mm512_cvtepi32_ps(acc[t]), u.d),
                );
                let da = _mm512_set1_ps(*x[t].d.get_unchecked(b));
                total[t] = _mm512_fmadd_ps(v, da, total[t]);
            }
        }
    }

    /// Super-block `b` of sixteen Q6K or Q3K rows, unpacked in `u`, against the first `N` activation rows
    /// of `x`: as `q32_chunk`, four `vpdpbusd` per 16-value sub-block, and the offsets taken back
    /// through the token's 16-value sums.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn q16_chunk<const N: usize>(u: &Quads, x: &[SuperRow], b: usize, total: &mut [__m512]) {
        let (x, total) = (&x[..N], &mut total[..N]);
        unsafe {
            let acc = scaled_sums::<N, 4>(u, x, b);
            for t in 0..N {
                let sums = x[t].sums16.as_ptr().add(16 * b) as *const u8;
                let mut sumi = acc[t];
                for j in 0..8 {
                    sumi = _mm512_dpwssd_epi32(sumi, u.pairs[j], four(sums.add(4 * j)));
                }
                let da = _mm512_set1_ps(*x[t].d.get_unchecked(b));
                total[t] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_mul_ps(u.d, da), total[t]);
            }
        }
    }

    /// `$chunk::<n>($u, $x, $b, $total)` for `n = $x.len()` (1 to 8; more take 8).
    macro_rules! chunk_up_to_eight {
        ($chunk:ident, $u:expr, $x:expr, $b:expr, $total:expr) => {
            match $x.len() {
                1 => $chunk::<1>($u, $x, $b, $total),
                2 => $chunk::<2>($u, $x, $b, $total),
                3 => $chunk::<3>($u, $x, $b, $total),
                4 => $chunk::<4>($u, $x, $b, $total),
                5 => $chunk::<5>($u, $x, $b, $total),
                6 => $chunk::<6>($u, $x, $b, $total),
                7 => $chunk::<7>($u, $x, $b, $total),
                _ => $chunk::<8>($u, $x, $b, $total),
            }
        };
    }

    /// Four groups of a kind's tiles against up to `SUPER_WIDE_TOKENS` activation rows, into `out[t]`
    /// (the sixteen rows' results, in fours): each super-block unpacked once (`$unpack`), then taken by
    /// every chunk of eight tokens (`$chunk`).
    macro_rules! four_groups {
        ($name:ident, $unpack:ident, $chunk:ident) => {
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
            unsafe fn $name<const FLAG: bool>(
                tile_bytes: usize,
                tiles: [&[u8]; 4],
                x: &[SuperRow],
                out: &mut [[[f32; 4]; 4]],
            ) {
                let n = x.len().min(out.len()).min(SUPER_WIDE_TOKENS);
                let x = &x[..n];
                let supers = super_blocks(
                    tiles.iter().map(|t| t.len()).min().unwrap_or(0) / tile_bytes,
                    x,
                );
                let mut total = [_mm512_setzero_ps(); SUPER_WIDE_TOKENS];
                // SAFETY: all-zero bits are valid vectors.
                let mut u: Quads = unsafe { std::mem::zeroed() };
                for b in 0..supers {
                    unsafe {
                        let tile = [0, 1, 2, 3].map(|g| tiles[g].as_ptr().add(b * tile_bytes));
                        for tile in tile {
                            prefetch_ahead(tile, tile_bytes);
                        }
                        $unpack::<FLAG>(tile, &mut u);
                        for c in (0..n).step_by(8) {
                            let end = (c + 8).min(n);
                            chunk_up_to_eight!($chunk, &u, &x[c..end], b, &mut total[c..end]);
                        }
                    }
                }
                for t in 0..n {
                    // SAFETY: `out[t]` is sixteen floats in a row.
                    unsafe { _mm512_storeu_ps(out[t].as_mut_ptr() as *mut f32, total[t]) };
                }
            }
        };
    }

    four_groups!(q32_groups, quads_q32, q32_chunk);
    four_groups!(q16_groups, quads_q16, q16_chunk);

    /// Groups of `tile_bytes` tiles against up to `SUPER_WIDE_TOKENS` activation rows, into `out[t *
    /// groups + g]`: four at a time by `four`, the rest by `single` (the 256-bit kernel, eight tokens a
    /// call, whose bits are the same).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn in_fours(
        tile_bytes: usize,
        tiles: &[u8],
        x: &[SuperRow],
        out: &mut [[f32; 4]],
        four: impl Fn([&[u8]; 4], &[SuperRow], &mut [[[f32; 4]; 4]]),
        single: unsafe fn(&[u8], &[SuperRow], &mut [[f32; 4]]),
    ) {
        let x = &x[..x.len().min(SUPER_WIDE_TOKENS)];
        let n = x.len();
        let group_bytes = x.first().map_or(0, |x| x.qs.len() / 256 * tile_bytes);
        if n == 0 || group_bytes == 0 {
            return;
        }
        let groups = (tiles.len() / group_bytes).min(out.len() / n);
        let mut g = 0;
        // Only where there are four groups: zeroing it took half of a one-token step's time.
        let mut results = if groups >= 4 {
            vec![[[0f32; 4]; 4]; n]
        } else {
            Vec::new()
        };
        while g + 4 <= groups {
            let group = |i: usize| &tiles[(g + i) * group_bytes..];
            four(
                [group(0), group(1), group(2), group(3)],
                x,
                &mut results[..n],
            );
            for (t, results) in results[..n].iter().enumerate() {
                out[t * groups + g..][..4].copy_from_slice(results);
            }
            g += 4;
        }
        for g in g..groups {
            for c in (0..n).step_by(8) {
                let end = (c + 8).min(n);
                let mut last = [[0f32; 4]; 8];
                // SAFETY: as for the caller; `single` takes one group and 1 to 8 tokens.
                unsafe {
                    single(
                        &tiles[g * group_bytes..][..group_bytes],
                        &x[c..end],
                        &mut last[..end - c],
                    )
                };
                for (i, last) in last[..end - c].iter().enumerate() {
                    out[(c + i) * groups + g] = *last;
                }
            }
        }
    }

    /// Q4K groups (any number) against up to `SUPER_WIDE_TOKENS` activation rows, into `out[t * groups + g]`.
    ///
    /// # Safety
    /// The CPU has AVX-512 (F, VL, BW) and VNNI; the activation rows have as many super-blocks as a
    /// group's tiles.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    pub unsafe fn q4k(tiles: &[u8], x: &[SuperRow], out: &mut [[f32; 4]]) {
        let four = |t: [&[u8]; 4], x: &[SuperRow], o: &mut [[[f32; 4]; 4]]| unsafe {
            q32_groups::<false>(Q4K_TILE_BYTES, t, x, o)
        };
        unsafe { in_fours(Q4K_TILE_BYTES, tiles, x, out, four, vnni::q4k) }
    }

    /// Q5K groups against up to `SUPER_WIDE_TOKENS` activation rows.
    ///
    /// # Safety
    /// As for the Q4K kernel.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    pub unsafe fn q5k(tiles: &[u8], x: &[SuperRow], out: &mut [[f32; 4]]) {
        let four = |t: [&[u8]; 4], x: &[SuperRow], o: &mut [[[f32; 4]; 4]]| unsafe {
            q32_groups::<true>(Q5K_TILE_BYTES, t, x, o)
        };
        unsafe { in_fours(Q5K_TILE_BYTES, tiles, x, out, four, vnni::q5k) }
    }

    /// Q6K groups against up to `SUPER_WIDE_TOKENS` activation rows.
    ///
    /// # Safety
    /// As for the Q4K kernel.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    pub unsafe fn q6k(tiles: &[u8], x: &[SuperRow], out: &mut [[f32; 4]]) {
        let four = |t: [&[u8]; 4], x: &[SuperRow], o: &mut [[[f32; 4]; 4]]| unsafe {
            q16_groups::<true>(Q6K_TILE_BYTES, t, x, o)
        };
        unsafe { in_fours(Q6K_TILE_BYTES, tiles, x, out, four, vnni::q6k) }
    }

    /// Q3K groups against up to `SUPER_WIDE_TOKENS` activation rows.
    ///
    /// # Safety
    /// As for the Q4K kernel.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    pub unsafe fn q3k(tiles: &[u8], x: &[SuperRow], out: &mut [[f32; 4]]) {
        let four = |t: [&[u8]; 4], x: &[SuperRow], o: &mut [[[f32; 4]; 4]]| unsafe {
            q16_groups::<false>(Q3K_TILE_BYTES, t, x, o)
        };
        unsafe { in_fours(Q3K_TILE_BYTES, tiles, x, out, four, vnni::q3k) }
    }
}
