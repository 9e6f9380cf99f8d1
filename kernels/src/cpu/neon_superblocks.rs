//! AArch64 kernels for the K-quants' super-block tiles (`superblocks`), with the scalar kernels' integer
//! sums (exact) and float steps (the same operations in the same order, so the same bits).
//!
//! The tiles interleave four rows eight bytes at a time (Q2K's excepted), so one 16-byte load holds
//! eight values of two rows. Against a token's eight activations held twice, `sdot` leaves the first
//! row's partial sums in lanes 0 and 1 and the second's in lanes 2 and 3; one pairwise add over two such
//! vectors gives a sub-block's four row sums in one vector, which its four scales multiply at once. CPUs
//! without the dot-product extension get the same lanes from widening multiplies and pairwise adds
//! (`DOT` picks; callers check `SimdLevel::available`).

use std::arch::aarch64::*;
use std::arch::asm;

use super::SuperKernel;
use super::activations::{SuperRow, super_blocks};
use super::superblocks::{
    Q2K_QS, Q2K_SCALES, Q2K_TILE_BYTES, Q3K_HMASK, Q3K_QS, Q3K_SCALES, Q3K_TILE_BYTES, Q4K_MINS,
    Q4K_QS, Q4K_SCALES, Q4K_TILE_BYTES, Q5K_QH, Q5K_TILE_BYTES, Q6K_HALF, Q6K_HALVES, Q6K_QH,
    Q6K_SCALES, Q6K_TILE_BYTES, SUPER, SuperKind,
};
use super::tiles::read_f16;

/// The kernel for `kind`, with `sdot` where `dot` (the CPU has the dot-product extension).
pub fn kernel(dot: bool, kind: SuperKind) -> SuperKernel {
    // SAFETY (every arm): the caller's level saw NEON (and, with `dot`, the dot-product extension);
    // `PackedMatrix::matmul_with` passes one group's whole tiles and activation rows of as many
    // super-blocks, with a result for each.
    match (dot, kind) {
        (true, SuperKind::Q4K) => |t, x, o| unsafe { q4k::<true, false>(t, x, o) },
        (true, SuperKind::Q5K) => |t, x, o| unsafe { q4k::<true, true>(t, x, o) },
        (true, SuperKind::Q6K) => |t, x, o| unsafe { q16::<true, true>(t, x, o) },
        (true, SuperKind::Q3K) => |t, x, o| unsafe { q16::<true, false>(t, x, o) },
        (true, SuperKind::Q2K) => |t, x, o| unsafe { q2k::<true>(t, x, o) },
        (false, SuperKind::Q4K) => |t, x, o| unsafe { q4k::<false, false>(t, x, o) },
        (false, SuperKind::Q5K) => |t, x, o| unsafe { q4k::<false, true>(t, x, o) },
        (false, SuperKind::Q6K) => |t, x, o| unsafe { q16::<false, true>(t, x, o) },
        (false, SuperKind::Q3K) => |t, x, o| unsafe { q16::<false, false>(t, x, o) },
        (false, SuperKind::Q2K) => |t, x, o| unsafe { q2k::<false>(t, x, o) },
    }
}

/// `acc` plus, in lane `i`, the products of bytes `4i..4i + 4` of `w` and `a` (what `sdot` does).
///
/// # Safety
/// The CPU has the dot-product extension for `DOT`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot4<const DOT: bool>(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    if DOT {
        let mut acc = acc;
        // SAFETY: `sdot` reads and writes registers only; the caller saw the extension. (Rust's
        // `vdotq_s32` is not stable.)
        unsafe {
            asm!(
                ".arch_extension dotprod",
                "sdot {acc:v}.4s, {w:v}.16b, {a:v}.16b",
                acc = inout(vreg) acc,
                w = in(vreg) w,
                a = in(vreg) a,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        acc
    } else {
        // A pair of products fits 16 bits: weights are at most 63 here, activations at most 128.
        let pairs = vpaddq_s16(
            vmull_s8(vget_low_s8(w), vget_low_s8(a)),
            vmull_high_s8(w, a),
        );
        vpadalq_s16(acc, pairs)
    }
}

/// Eight activations at `at`, twice (one for each of a load's two rows).
///
/// # Safety
/// `at` has eight readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn eight_twice(at: *const i8) -> int8x16_t {
    // SAFETY: as for this function.
    let a = unsafe { vld1_s8(at) };
    vcombine_s8(a, a)
}

/// Four signed byte scales at `at`, one per row, widened.
///
/// # Safety
/// `at` has eight readable bytes (four are used).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn scales4(at: *const u8) -> int32x4_t {
    // SAFETY: as for this function.
    let s = unsafe { vld1_s8(at as *const i8) };
    vmovl_s16(vget_low_s16(vmovl_s8(s)))
}

/// The four rows' f16 values at `at` (bytes of `tile`), as f32.
#[inline]
#[target_feature(enable = "neon")]
fn f16x4(tile: &[u8], at: usize) -> float32x4_t {
    let v = [0, 1, 2, 3].map(|r| read_f16(tile, at + 2 * r));
    // SAFETY: `v` has four values.
    unsafe { vld1q_f32(v.as_ptr()) }
}

/// `o + (xd * d * sumi - xd * dmin * summ)`, row by row, as `scalar::q4k_group` and `q2k_group` do.
#[inline]
#[target_feature(enable = "neon")]
fn scaled_with_mins(
    o: &mut [f32; 4],
    xd: f32,
    (d, dmin): (float32x4_t, float32x4_t),
    sumi: int32x4_t,
    summ: int32x4_t,
) {
    let xd = vdupq_n_f32(xd);
    let plus = vmulq_f32(vmulq_f32(xd, d), vcvtq_f32_s32(sumi));
    let minus = vmulq_f32(vmulq_f32(xd, dmin), vcvtq_f32_s32(summ));
    // SAFETY: `o` has four values.
    unsafe {
        let sum = vaddq_f32(vld1q_f32(o.as_ptr()), vsubq_f32(plus, minus));
        vst1q_f32(o.as_mut_ptr(), sum);
    }
}

/// Four rows of Q4K (Q5K with `Q5`) tiles against each activation row of `x`, into `out`.
///
/// # Safety
/// The CPU has NEON (and the dot-product extension for `DOT`).
#[target_feature(enable = "neon")]
unsafe fn q4k<const DOT: bool, const Q5: bool>(tiles: &[u8], x: &[SuperRow], out: &mut [[f32; 4]]) {
    let tile_bytes = if Q5 { Q5K_TILE_BYTES } else { Q4K_TILE_BYTES };
    let n = x.len().min(out.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    out.fill([0.0; 4]);
    let blocks = super_blocks(tiles.len() / tile_bytes, x);
    let (low, fifth) = (vdupq_n_u8(0x0F), vdupq_n_u8(16));
    for b in 0..blocks {
        let tile = &tiles[b * tile_bytes..(b + 1) * tile_bytes];
        let t = tile.as_ptr();
        let scales = (f16x4(tile, 0), f16x4(tile, 8));
        // SAFETY: every load is of the tile's parts at their offsets (`superblocks`) or of super-block
        // `b` of an activation row, which `blocks` bounds.
        unsafe {
            // Each row's eight mins, widened: `[row][s]`.
            let (m01, m23) = (vld1q_u8(t.add(Q4K_MINS)), vld1q_u8(t.add(Q4K_MINS + 16)));
            let mins = [
                vmovl_u8(vget_low_u8(m01)),
                vmovl_high_u8(m01),
                vmovl_u8(vget_low_u8(m23)),
                vmovl_high_u8(m23),
            ]
            .map(|m| vreinterpretq_s16_u16(m));
            for (x, o) in x.iter().zip(out.iter_mut()) {
                let a = x.qs.as_ptr().add(SUPER * b);
                let mut sumi = vdupq_n_s32(0);
                // Chunk `p`'s bytes hold sub-block 2p in their low nibbles and 2p + 1 in their high ones.
                for p in 0..4 {
                    let qs = t.add(Q4K_QS + 128 * p);
                    let bits = (vdupq_n_u8(1 << (2 * p)), vdupq_n_u8(2 << (2 * p)));
                    // Low nibbles' rows (0, 1) and (2, 3), then the high ones'.
                    let mut acc = [vdupq_n_s32(0); 4];
                    for k in 0..4 {
                        let a_low = eight_twice(a.add(64 * p + 8 * k));
                        let a_high = eight_twice(a.add(64 * p + 32 + 8 * k));
                        for pair in 0..2 {
                            let v = vld1q_u8(qs.add(32 * k + 16 * pair));
                            let (mut lo, mut hi) = (vandq_u8(v, low), vshrq_n_u8::<4>(v));
                            if Q5 {
                                let qh = vld1q_u8(t.add(Q5K_QH + 32 * k + 16 * pair));
                                lo = vorrq_u8(lo, vandq_u8(vtstq_u8(qh, bits.0), fifth));
                                hi = vorrq_u8(hi, vandq_u8(vtstq_u8(qh, bits.1), fifth));
                            }
                            acc[pair] = dot4::<DOT>(acc[pair], vreinterpretq_s8_u8(lo), a_low);
                            acc[2 + pair] =
                                dot4::<DOT>(acc[2 + pair], vreinterpretq_s8_u8(hi), a_high);
                        }
                    }
                    // Sub-blocks 2p and 2p + 1's scales, `[s][row]`.
                    let sc = vmovl_u8(vld1_u8(t.add(Q4K_SCALES + 8 * p)));
                    let sc_low = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(sc)));
                    let sc_high = vreinterpretq_s32_u32(vmovl_high_u16(sc));
                    sumi = vmlaq_s32(sumi, vpaddq_s32(acc[0], acc[1]), sc_low);
                    sumi = vmlaq_s32(sumi, vpaddq_s32(acc[2], acc[3]), sc_high);
                }
                let sums = vld1q_s16(x.sums32.as_ptr().add(8 * b));
                let per_row = mins.map(|m| {
                    vmlal_high_s16(vmull_s16(vget_low_s16(m), vget_low_s16(sums)), m, sums)
                });
                let summ = vpaddq_s32(
                    vpaddq_s32(per_row[0], per_row[1]),
                    vpaddq_s32(per_row[2], per_row[3]),
                );
                scaled_with_mins(o, x.d[b], scales, sumi, summ);
            }
        }
    }
}

/// Four rows of Q6K (`Q6`) or Q3K tiles against each activation row of `x`, into `out`: per 16-value
/// sub-block the unsigned values' dot, less their offset (32 or 4) times the activations' sum, times the
/// signed scale.
///
/// # Safety
/// The CPU has NEON (and the dot-product extension for `DOT`).
#[target_feature(enable = "neon")]
unsafe fn q16<const DOT: bool, const Q6: bool>(tiles: &[u8], x: &[SuperRow], out: &mut [[f32; 4]]) {
    let (tile_bytes, offset, scales_at) = if Q6 {
        (Q6K_TILE_BYTES, 32, Q6K_SCALES)
    } else {
        (Q3K_TILE_BYTES, 4, Q3K_SCALES)
    };
    let n = x.len().min(out.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    out.fill([0.0; 4]);
    let blocks = super_blocks(tiles.len() / tile_bytes, x);
    let (low, two_bits, third) = (vdupq_n_u8(0x0F), vdupq_n_u8(3), vdupq_n_u8(4));
    for b in 0..blocks {
        let tile = &tiles[b * tile_bytes..(b + 1) * tile_bytes];
        let t = tile.as_ptr();
        let d = f16x4(tile, 0);
        // SAFETY: as in `q4k`.
        unsafe {
            for (x, o) in x.iter().zip(out.iter_mut()) {
                let a = x.qs.as_ptr().add(SUPER * b);
                let mut sumi = vdupq_n_s32(0);
                for h in 0..2 {
                    for k in 0..4 {
                        // Bytes `l` of rows (0, 1) and (2, 3) hold value `32k + l` of half `h`.
                        let values = |kk: usize, pair: usize| {
                            let at = 32 * kk + 16 * pair;
                            if Q6 {
                                let half = t.add(Q6K_HALVES + Q6K_HALF * h);
                                let ql = vld1q_u8(half.add(128 * (k & 1) + at));
                                let qh = vld1q_u8(half.add(Q6K_QH + at));
                                let ql = if k < 2 {
                                    vandq_u8(ql, low)
                                } else {
                                    vshrq_n_u8::<4>(ql)
                                };
                                let qh = vandq_u8(vshlq_u8(qh, vdupq_n_s8(-2 * k as i8)), two_bits);
                                vorrq_u8(ql, vshlq_n_u8::<4>(qh))
                            } else {
                                let qs = vld1q_u8(t.add(Q3K_QS + 128 * h + at));
                                let hm = vld1q_u8(t.add(Q3K_HMASK + at));
                                let q2 = vandq_u8(vshlq_u8(qs, vdupq_n_s8(-2 * k as i8)), two_bits);
                                let high = vtstq_u8(hm, vdupq_n_u8(1 << (4 * h + k)));
                                vorrq_u8(q2, vandq_u8(high, third))
                            }
                        };
                        // Values 0..16 and 16..32 of the run are two sub-blocks.
                        for sb in 0..2 {
                            let mut acc = [vdupq_n_s32(0); 2];
                            for kk in 2 * sb..2 * sb + 2 {
                                let act = eight_twice(a.add(128 * h + 32 * k + 8 * kk));
                                for (pair, acc) in acc.iter_mut().enumerate() {
                                    let w = vreinterpretq_s8_u8(values(kk, pair));
                                    *acc = dot4::<DOT>(*acc, w, act);
                                }
                            }
                            let s = 8 * h + 2 * k + sb;
                            let sum = i32::from(x.sums16[16 * b + s]);
                            let dots =
                                vsubq_s32(vpaddq_s32(acc[0], acc[1]), vdupq_n_s32(offset * sum));
                            sumi = vmlaq_s32(sumi, dots, scales4(t.add(scales_at + 4 * s)));
                        }
                    }
                }
                let step = vmulq_f32(vmulq_f32(vdupq_n_f32(x.d[b]), d), vcvtq_f32_s32(sumi));
                vst1q_f32(o.as_mut_ptr(), vaddq_f32(vld1q_f32(o.as_ptr()), step));
            }
        }
    }
}

/// Four rows of Q2K tiles (each row's bytes whole, not interleaved) against each activation row of `x`,
/// into `out`: per 16-value sub-block the 2-bit values' dot times the 4-bit scale, and the 4-bit min
/// against the activations' sum.
///
/// # Safety
/// The CPU has NEON (and the dot-product extension for `DOT`).
#[target_feature(enable = "neon")]
unsafe fn q2k<const DOT: bool>(tiles: &[u8], x: &[SuperRow], out: &mut [[f32; 4]]) {
    let n = x.len().min(out.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    out.fill([0.0; 4]);
    let blocks = super_blocks(tiles.len() / Q2K_TILE_BYTES, x);
    let two_bits = vdupq_n_u8(3);
    for b in 0..blocks {
        let tile = &tiles[b * Q2K_TILE_BYTES..(b + 1) * Q2K_TILE_BYTES];
        let t = tile.as_ptr();
        let scales = (f16x4(tile, 0), f16x4(tile, 8));
        // SAFETY: as in `q4k`.
        unsafe {
            for (x, o) in x.iter().zip(out.iter_mut()) {
                let a = x.qs.as_ptr().add(SUPER * b);
                let (s_lo, s_hi) = (
                    vld1q_s16(x.sums16.as_ptr().add(16 * b)),
                    vld1q_s16(x.sums16.as_ptr().add(16 * b + 8)),
                );
                let (mut sumi, mut summ) = ([0i32; 4], [0i32; 4]);
                for r in 0..4 {
                    let sc = t.add(Q2K_SCALES + 16 * r);
                    let mut acc = vdupq_n_s32(0);
                    for h in 0..2 {
                        let q = t.add(Q2K_QS + 128 * h + 32 * r);
                        let v = [vld1q_u8(q), vld1q_u8(q.add(16))];
                        for k in 0..4 {
                            let shift = vdupq_n_s8(-2 * k as i8);
                            for (half, v) in v.iter().enumerate() {
                                let s = 8 * h + 2 * k + half;
                                let w = vandq_u8(vshlq_u8(*v, shift), two_bits);
                                let act = vld1q_s8(a.add(128 * h + 32 * k + 16 * half));
                                let dot = dot4::<DOT>(vdupq_n_s32(0), vreinterpretq_s8_u8(w), act);
                                acc = vmlaq_n_s32(acc, dot, i32::from(*sc.add(s) & 0x0F));
                            }
                        }
                    }
                    sumi[r] = vaddvq_s32(acc);
                    let mins = vshrq_n_u8::<4>(vld1q_u8(sc));
                    let (m_lo, m_hi) = (
                        vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins))),
                        vreinterpretq_s16_u16(vmovl_high_u8(mins)),
                    );
                    let prod = vmlal_high_s16(
                        vmull_s16(vget_low_s16(m_lo), vget_low_s16(s_lo)),
                        m_lo,
                        s_lo,
                    );
                    let prod = vmlal_s16(prod, vget_low_s16(m_hi), vget_low_s16(s_hi));
                    summ[r] = vaddvq_s32(vmlal_high_s16(prod, m_hi, s_hi));
                }
                let (sumi, summ) = (vld1q_s32(sumi.as_ptr()), vld1q_s32(summ.as_ptr()));
                scaled_with_mins(o, x.d[b], scales, sumi, summ);
            }
        }
    }
}
