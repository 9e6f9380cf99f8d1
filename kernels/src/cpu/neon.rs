//! AArch64 kernels on NEON, which every AArch64 CPU has: widening 8-bit multiplies (`smull`) summed
//! across the vector, then the same scaling as the scalar path. Callers check `SimdLevel::available`.

use std::arch::aarch64::*;
use std::arch::asm;

use super::ggml::FP4_VALUES;
use super::tiles::{
    F16_TILE_BYTES, FP4_TILE_BYTES, I8_TILE_BYTES, U4_TILE_BYTES, U8_TILE_BYTES, f16_blocks,
    f16_call, read_f16, read_f32,
};

/// `sum(w[i] * a[i])` over 16 lanes.
#[inline]
#[target_feature(enable = "neon")]
fn dot16(w: int8x16_t, a: int8x16_t) -> i32 {
    vaddlvq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(a))) + vaddlvq_s16(vmull_high_s8(w, a))
}

/// Four U4 rows against one activation row.
///
/// # Safety
/// The CPU has NEON (every AArch64 CPU does).
#[target_feature(enable = "neon")]
pub unsafe fn u4_group(tiles: &[u8], qs: &[i8], d: &[f32], s: &[f32]) -> [f32; 4] {
    let blocks = d
        .len()
        .min(s.len())
        .min(tiles.len() / U4_TILE_BYTES)
        .min(qs.len() / 32);
    let mask = vdupq_n_u8(0x0F);
    let mut out = [0f32; 4];
    for b in 0..blocks {
        let tile = &tiles[b * U4_TILE_BYTES..(b + 1) * U4_TILE_BYTES];
        let a = &qs[32 * b..32 * b + 32];
        // SAFETY: `a` has 32 values, each row of the tile 16 bytes at 16 + 16 * r.
        let (a_lo, a_hi) = unsafe { (vld1q_s8(a.as_ptr()), vld1q_s8(a.as_ptr().add(16))) };
        for (r, o) in out.iter_mut().enumerate() {
            let raw = unsafe { vld1q_u8(tile.as_ptr().add(16 + 16 * r)) };
            let w_lo = vreinterpretq_s8_u8(vandq_u8(raw, mask));
            let w_hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(raw));
            let sum = dot16(w_lo, a_lo) + dot16(w_hi, a_hi);
            *o += read_f16(tile, 2 * r) * d[b] * sum as f32 + read_f16(tile, 8 + 2 * r) * s[b];
        }
    }
    out
}

/// Four I8 rows against one activation row.
///
/// # Safety
/// The CPU has NEON (every AArch64 CPU does).
#[target_feature(enable = "neon")]
pub unsafe fn i8_group(tiles: &[u8], qs: &[i8], d: &[f32]) -> [f32; 4] {
    let blocks = d.len().min(tiles.len() / I8_TILE_BYTES).min(qs.len() / 32);
    let mut out = [0f32; 4];
    for b in 0..blocks {
        let tile = &tiles[b * I8_TILE_BYTES..(b + 1) * I8_TILE_BYTES];
        let a = &qs[32 * b..32 * b + 32];
        // SAFETY: `a` has 32 values, each row of the tile 32 bytes at 16 + 32 * r.
        let (a_lo, a_hi) = unsafe { (vld1q_s8(a.as_ptr()), vld1q_s8(a.as_ptr().add(16))) };
        for (r, o) in out.iter_mut().enumerate() {
            let at = tile[16 + 32 * r..].as_ptr() as *const i8;
            let (w_lo, w_hi) = unsafe { (vld1q_s8(at), vld1q_s8(at.add(16))) };
            *o += d[b]
                * (read_f16(tile, 4 * r) * dot16(w_lo, a_lo) as f32
                    + read_f16(tile, 4 * r + 2) * dot16(w_hi, a_hi) as f32);
        }
    }
    out
}

/// Four U8 rows against one activation row (values 0..=31 fit a signed byte).
///
/// # Safety
/// The CPU has NEON (every AArch64 CPU does).
#[target_feature(enable = "neon")]
pub unsafe fn u8_group(tiles: &[u8], qs: &[i8], d: &[f32], s: &[f32]) -> [f32; 4] {
    let blocks = d
        .len()
        .min(s.len())
        .min(tiles.len() / U8_TILE_BYTES)
        .min(qs.len() / 32);
    let mut out = [0f32; 4];
    for b in 0..blocks {
        let tile = &tiles[b * U8_TILE_BYTES..(b + 1) * U8_TILE_BYTES];
        let a = &qs[32 * b..32 * b + 32];
        // SAFETY: `a` has 32 values, each row of the tile 32 bytes at 16 + 32 * r.
        let (a_lo, a_hi) = unsafe { (vld1q_s8(a.as_ptr()), vld1q_s8(a.as_ptr().add(16))) };
        for (r, o) in out.iter_mut().enumerate() {
            let at = tile[16 + 32 * r..].as_ptr() as *const i8;
            let (w_lo, w_hi) = unsafe { (vld1q_s8(at), vld1q_s8(at.add(16))) };
            let sum = dot16(w_lo, a_lo) + dot16(w_hi, a_hi);
            *o += read_f16(tile, 2 * r) * d[b] * sum as f32 + read_f16(tile, 8 + 2 * r) * s[b];
        }
    }
    out
}

/// Four Fp4 rows against one activation row: codes looked up in the table (`tbl`), then as I8.
///
/// # Safety
/// The CPU has NEON (every AArch64 CPU does).
#[target_feature(enable = "neon")]
pub unsafe fn fp4_group(tiles: &[u8], qs: &[i8], d: &[f32]) -> [f32; 4] {
    let blocks = d.len().min(tiles.len() / FP4_TILE_BYTES).min(qs.len() / 32);
    let mask = vdupq_n_u8(0x0F);
    let mut out = [0f32; 4];
    // SAFETY (the loads): 16 bytes of the table, of a tile's row codes and of the block's activations.
    let table = unsafe { vld1q_s8(FP4_VALUES.as_ptr()) };
    for b in 0..blocks {
        let tile = &tiles[b * FP4_TILE_BYTES..(b + 1) * FP4_TILE_BYTES];
        let a = &qs[32 * b..32 * b + 32];
        let (a_lo, a_hi) = unsafe { (vld1q_s8(a.as_ptr()), vld1q_s8(a.as_ptr().add(16))) };
        for (r, o) in out.iter_mut().enumerate() {
            let raw = unsafe { vld1q_u8(tile.as_ptr().add(16 + 16 * r)) };
            let lo = vqtbl1q_s8(table, vandq_u8(raw, mask));
            let hi = vqtbl1q_s8(table, vshrq_n_u8::<4>(raw));
            let sum = dot16(lo, a_lo) + dot16(hi, a_hi);
            *o += read_f32(tile, 4 * r) * d[b] * sum as f32;
        }
    }
    out
}

/// Eight f16 values as f32 (`fcvtl`, `fcvtl2`: base AArch64, whose Rust intrinsics take a type that is
/// not stable).
#[inline]
#[target_feature(enable = "neon")]
fn widen_f16(v: uint16x8_t) -> [float32x4_t; 2] {
    let (low, high): (float32x4_t, float32x4_t);
    // SAFETY: register-only conversions every AArch64 CPU has; `out` keeps `low` off `v`'s register.
    unsafe {
        asm!(
            "fcvtl {low:v}.4s, {v:v}.4h",
            "fcvtl2 {high:v}.4s, {v:v}.8h",
            v = in(vreg) v,
            low = out(vreg) low,
            high = out(vreg) high,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    [low, high]
}

/// `T` tokens against `G` F16 groups (`group_bytes` each) at `tiles`' start, into
/// `out[t * stride + 4 * g + q]`, as outer products: each column's sixteen weights widened once for all
/// the tokens, each token's value multiplied into them, one sum per row over the columns in order (the
/// same multiply-adds in the same order for a row whatever else shares the call), as x86's F16 kernels
/// do.
///
/// # Safety
/// The CPU has NEON; every row of `x` has 32 values per tile of a group; `out` has the results.
#[target_feature(enable = "neon")]
unsafe fn f16_wide<const T: usize, const G: usize>(
    tiles: &[u8],
    group_bytes: usize,
    x: &[&[f32]],
    out: &mut [[f32; 4]],
    stride: usize,
) {
    let x: &[&[f32]; T] = x[..T].try_into().expect("T activation rows");
    let blocks = f16_blocks(tiles, G, group_bytes, x);
    let mut acc = [[[vdupq_n_f32(0.0); 4]; G]; T];
    for b in 0..blocks {
        // SAFETY: `b` is below every group's tile count and every row's.
        unsafe {
            let tile: [*const u16; G] = std::array::from_fn(|g| {
                tiles.as_ptr().add(g * group_bytes + b * F16_TILE_BYTES) as *const u16
            });
            let xs = x.map(|x| x.as_ptr().add(32 * b));
            for j in 0..32 {
                let w = tile.map(|tile| {
                    let [w0, w1] = widen_f16(vld1q_u16(tile.add(16 * j)));
                    let [w2, w3] = widen_f16(vld1q_u16(tile.add(16 * j + 8)));
                    [w0, w1, w2, w3]
                });
                for (acc, xs) in acc.iter_mut().zip(&xs) {
                    let v = *xs.add(j);
                    for (acc, w) in acc.iter_mut().zip(&w) {
                        for (acc, w) in acc.iter_mut().zip(w) {
                            *acc = vfmaq_n_f32(*acc, *w, v);
                        }
                    }
                }
            }
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        for (g, acc) in acc.iter().enumerate() {
            for (q, acc) in acc.iter().enumerate() {
                // SAFETY: `out` holds the result, as for this function.
                unsafe { vst1q_f32(out[t * stride + 4 * g + q].as_mut_ptr(), *acc) };
            }
        }
    }
}

/// Whole F16 groups (sixteen rows each) against any number of unquantized activation rows, into four
/// results per token and group, token-major (`out[4 * (t * groups + g) + q]`): one token takes two
/// groups at once (eight independent sums, to hide the multiply-adds' latency), more take one group and
/// up to four tokens a pass.
///
/// # Safety
/// The CPU has NEON; every row of `x` has the same length, 32 values per tile of a group.
#[target_feature(enable = "neon")]
pub unsafe fn f16(tiles: &[u8], x: &[&[f32]], out: &mut [[f32; 4]]) {
    let n = x.len();
    let Some((group_bytes, groups, stride)) = f16_call(tiles, x, out) else {
        return;
    };
    let mut g = 0;
    while g < groups {
        let tiles = &tiles[g * group_bytes..];
        // SAFETY (each call): as for this function; every call's groups and tokens are in `tiles`, `x`
        // and `out`.
        if n == 1 && groups - g >= 2 {
            unsafe { f16_wide::<1, 2>(tiles, group_bytes, x, &mut out[4 * g..], stride) };
            g += 2;
            continue;
        }
        for (i, x) in x.chunks(4).enumerate() {
            let out = &mut out[4 * i * stride + 4 * g..];
            unsafe {
                match x.len() {
                    4 => f16_wide::<4, 1>(tiles, group_bytes, x, out, stride),
                    3 => f16_wide::<3, 1>(tiles, group_bytes, x, out, stride),
                    2 => f16_wide::<2, 1>(tiles, group_bytes, x, out, stride),
                    _ => f16_wide::<1, 1>(tiles, group_bytes, x, out, stride),
                }
            }
        }
        g += 1;
    }
}
