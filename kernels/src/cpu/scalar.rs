//! The portable kernels: the same integer arithmetic as the SIMD paths, one element at a time. Every SIMD
//! kernel is tested against these.

use super::tiles::{F16_TILE_BYTES, I8_TILE_BYTES, U4_TILE_BYTES, U8_TILE_BYTES, read_f16};

/// Four rows of a U4 tile group against one activation row: `[f32; 4]` dot products.
pub fn u4_group(tiles: &[u8], qs: &[i8], d: &[f32], s: &[f32]) -> [f32; 4] {
    let mut out = [0f32; 4];
    for (b, tile) in tiles.chunks_exact(U4_TILE_BYTES).enumerate() {
        let a = &qs[32 * b..32 * b + 32];
        for (r, o) in out.iter_mut().enumerate() {
            let scale = read_f16(tile, 2 * r);
            let min = read_f16(tile, 8 + 2 * r);
            let q = &tile[16 + 16 * r..32 + 16 * r];
            let mut sum = 0i32;
            for j in 0..16 {
                sum += (q[j] & 0x0F) as i32 * a[j] as i32 + (q[j] >> 4) as i32 * a[j + 16] as i32;
            }
            *o += scale * d[b] * sum as f32 + min * s[b];
        }
    }
    out
}

/// Four rows of an I8 tile group against one activation row.
pub fn i8_group(tiles: &[u8], qs: &[i8], d: &[f32]) -> [f32; 4] {
    let mut out = [0f32; 4];
    for (b, tile) in tiles.chunks_exact(I8_TILE_BYTES).enumerate() {
        let a = &qs[32 * b..32 * b + 32];
        for (r, o) in out.iter_mut().enumerate() {
            let q = &tile[16 + 32 * r..48 + 32 * r];
            let mut halves = [0i32; 2];
            for (j, (&w, &x)) in q.iter().zip(a).enumerate() {
                halves[j / 16] += (w as i8) as i32 * x as i32;
            }
            *o += d[b]
                * (read_f16(tile, 4 * r) * halves[0] as f32
                    + read_f16(tile, 4 * r + 2) * halves[1] as f32);
        }
    }
    out
}

/// Four rows of a U8 tile group against one activation row.
pub fn u8_group(tiles: &[u8], qs: &[i8], d: &[f32], s: &[f32]) -> [f32; 4] {
    let mut out = [0f32; 4];
    for (b, tile) in tiles.chunks_exact(U8_TILE_BYTES).enumerate() {
        let a = &qs[32 * b..32 * b + 32];
        for (r, o) in out.iter_mut().enumerate() {
            let scale = read_f16(tile, 2 * r);
            let min = read_f16(tile, 8 + 2 * r);
            let q = &tile[16 + 32 * r..48 + 32 * r];
            let sum: i32 = q.iter().zip(a).map(|(&w, &x)| w as i32 * x as i32).sum();
            *o += scale * d[b] * sum as f32 + min * s[b];
        }
    }
    out
}

/// Four rows of an F16 tile group against one unquantized activation row.
pub fn f16_group(tiles: &[u8], x: &[f32]) -> [f32; 4] {
    let mut out = [0f32; 4];
    for (b, tile) in tiles.chunks_exact(F16_TILE_BYTES).enumerate() {
        let a = &x[32 * b..32 * b + 32];
        for (r, o) in out.iter_mut().enumerate() {
            for (j, v) in a.iter().enumerate() {
                *o += read_f16(tile, 64 * r + 2 * j) * v;
            }
        }
    }
    out
}
