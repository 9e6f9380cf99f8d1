//! The portable kernels: the same integer arithmetic as the SIMD paths, one element at a time. Every SIMD
//! kernel is tested against these.

use super::activations::SuperRow;
use super::ggml::FP4_VALUES;
use super::superblocks::{
    Q2K_SCALES, Q2K_TILE_BYTES, Q3K_TILE_BYTES, Q6K_TILE_BYTES, SuperKind, q2k_value, q3k_scale,
    q3k_value, q4k_scale_min, q4k_value, q6k_scale, q6k_value,
};
use super::tiles::{
    F16_GROUP_ROWS, F16_TILE_BYTES, FP4_TILE_BYTES, I8_TILE_BYTES, U4_TILE_BYTES, U8_TILE_BYTES,
    read_f16, read_f32,
};

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

/// Four rows of an Fp4 tile group against one activation row: table values (int8) against the
/// activations, one scale per row and block.
pub fn fp4_group(tiles: &[u8], qs: &[i8], d: &[f32]) -> [f32; 4] {
    let mut out = [0f32; 4];
    for (b, tile) in tiles.chunks_exact(FP4_TILE_BYTES).enumerate() {
        let a = &qs[32 * b..32 * b + 32];
        for (r, o) in out.iter_mut().enumerate() {
            let q = &tile[16 + 16 * r..32 + 16 * r];
            let mut sum = 0i32;
            for j in 0..16 {
                sum += FP4_VALUES[usize::from(q[j] & 0x0F)] as i32 * a[j] as i32
                    + FP4_VALUES[usize::from(q[j] >> 4)] as i32 * a[j + 16] as i32;
            }
            *o += read_f32(tile, 4 * r) * d[b] * sum as f32;
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

/// The sixteen rows of an F16 tile group against one unquantized activation row, into four fours of
/// results; each row's sum runs over the columns in order, as the SIMD kernels' do.
pub fn f16_group(tiles: &[u8], x: &[f32], out: &mut [[f32; 4]]) {
    let mut sums = [0f32; F16_GROUP_ROWS];
    for (b, tile) in tiles.chunks_exact(F16_TILE_BYTES).enumerate() {
        let a = &x[32 * b..32 * b + 32];
        for (j, v) in a.iter().enumerate() {
            for (r, sum) in sums.iter_mut().enumerate() {
                *sum += read_f16(tile, 2 * (F16_GROUP_ROWS * j + r)) * v;
            }
        }
    }
    for (o, sums) in out.iter_mut().zip(sums.chunks_exact(4)) {
        o.copy_from_slice(sums);
    }
}

/// Four rows of Q4K or Q5K super-block tiles against one activation row (`SuperRows`): per super-block
/// and row, the sub-blocks' integer dots weighted by their 6-bit scales, and the mins against the
/// activations' 32-value sums, each converted to float once.
pub fn q4k_group(kind: SuperKind, tiles: &[u8], x: SuperRow) -> [f32; 4] {
    let mut out = [0f32; 4];
    for (b, tile) in tiles.chunks_exact(kind.tile_bytes()).enumerate() {
        let a = &x.qs[256 * b..256 * b + 256];
        for (r, o) in out.iter_mut().enumerate() {
            let (mut sumi, mut summ) = (0i32, 0i32);
            for s in 0..8 {
                let dot: i32 = (0..32)
                    .map(|l| q4k_value(kind, tile, r, s, l) as i32 * a[32 * s + l] as i32)
                    .sum();
                let (sc, m) = q4k_scale_min(tile, r, s);
                sumi += sc as i32 * dot;
                summ += m as i32 * x.sums32[8 * b + s] as i32;
            }
            let (d, dmin) = (read_f16(tile, 2 * r), read_f16(tile, 8 + 2 * r));
            *o += x.d[b] * d * sumi as f32 - x.d[b] * dmin * summ as f32;
        }
    }
    out
}

/// Four rows of Q6K or Q3K super-block tiles against one activation row: per 16-value sub-block the
/// unsigned values' integer dot (Q6K's stored plus 32, Q3K's plus 4) less that offset times the
/// activations' 16-value sum, weighted by the signed scale, summed over the super-block and converted to
/// float once.
pub fn q16_group(kind: SuperKind, tiles: &[u8], x: SuperRow) -> [f32; 4] {
    let (tile_bytes, offset) = match kind {
        SuperKind::Q6K => (Q6K_TILE_BYTES, 32),
        _ => (Q3K_TILE_BYTES, 4),
    };
    let value = |tile: &[u8], r, i| match kind {
        SuperKind::Q6K => q6k_value(tile, r, i),
        _ => q3k_value(tile, r, i),
    };
    let scale = |tile: &[u8], r, s| match kind {
        SuperKind::Q6K => q6k_scale(tile, r, s),
        _ => q3k_scale(tile, r, s),
    };
    let mut out = [0f32; 4];
    for (b, tile) in tiles.chunks_exact(tile_bytes).enumerate() {
        let a = &x.qs[256 * b..256 * b + 256];
        for (r, o) in out.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for s in 0..16 {
                let dot: i32 = (16 * s..16 * s + 16)
                    .map(|i| value(tile, r, i) as i32 * a[i] as i32)
                    .sum();
                sumi += scale(tile, r, s) as i32 * (dot - offset * x.sums16[16 * b + s] as i32);
            }
            *o += x.d[b] * read_f16(tile, 2 * r) * sumi as f32;
        }
    }
    out
}

/// Four rows of Q2K super-block tiles against one activation row, as ggml's `vec_dot_q2_K_q8_K`: per
/// 16-value sub-block the 2-bit values' integer dot weighted by the 4-bit scale, and the 4-bit min against
/// the activations' 16-value sum, each summed over the super-block and converted to float once.
pub fn q2k_group(tiles: &[u8], x: SuperRow) -> [f32; 4] {
    let mut out = [0f32; 4];
    for (b, tile) in tiles.chunks_exact(Q2K_TILE_BYTES).enumerate() {
        let a = &x.qs[256 * b..256 * b + 256];
        for (r, o) in out.iter_mut().enumerate() {
            let (mut sumi, mut summ) = (0i32, 0i32);
            for s in 0..16 {
                let sc = tile[Q2K_SCALES + 16 * r + s];
                let dot: i32 = (16 * s..16 * s + 16)
                    .map(|i| q2k_value(tile, r, i) as i32 * a[i] as i32)
                    .sum();
                sumi += (sc & 0x0F) as i32 * dot;
                summ += (sc >> 4) as i32 * x.sums16[16 * b + s] as i32;
            }
            let (d, dmin) = (read_f16(tile, 2 * r), read_f16(tile, 8 + 2 * r));
            *o += x.d[b] * d * sumi as f32 - x.d[b] * dmin * summ as f32;
        }
    }
    out
}
