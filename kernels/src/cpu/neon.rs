//! AArch64 kernels on NEON, which every AArch64 CPU has: widening 8-bit multiplies (`smull`) summed
//! across the vector, then the same scaling as the scalar path. Callers check `SimdLevel::available`.

use std::arch::aarch64::*;

use super::ggml::FP4_VALUES;
use super::tiles::{
    FP4_TILE_BYTES, I8_TILE_BYTES, U4_TILE_BYTES, U8_TILE_BYTES, read_f16, read_f32,
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
