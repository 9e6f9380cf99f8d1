//! The repacked weight layout. Rows are taken four at a time (a group; sixteen for F16); for each 32-column
//! block a group stores one tile with the four rows' scales side by side, then their values, so one vector
//! load brings four rows' scales and a group's tiles are contiguous in memory.
//!
//! - U4 tile, 80 bytes: `scale: [f16; 4]`, `min: [f16; 4]`, `q: [[u8; 16]; 4]` (byte `j` holds element `j`
//!   in its low nibble and element `j + 16` in its high one, as Q4_0 does). `x = scale * q + min`.
//! - U8 tile, 144 bytes: as U4 but `q: [[u8; 32]; 4]`, one byte per element (5-bit types). `x = scale * q + min`.
//! - F16 tile, 1024 bytes, of sixteen rows (an F16 group is four integer groups wide): `w: [[f16; 16]; 32]`,
//!   column-major, the sixteen rows' values of one column side by side (F16, and BF16 narrowed). A kernel
//!   widens a column's sixteen weights into two vectors and multiplies them by one token's value broadcast
//!   (an outer product, as BLIS's micro-kernels do), so no horizontal sums and one conversion serves every
//!   token's two multiply-adds.
//! - I8 tile, 144 bytes: `scale: [[f16; 2]; 4]` (one per 16 elements), `q: [[i8; 32]; 4]`. `x = scale * q`.
//! - Fp4 tile, 80 bytes (MXFP4, 5 bits a weight; the file 4.25): `scale: [f32; 4]` (the E8M0 power of two,
//!   halved: exact, but for the two subnormal ones, which pack as zero), `q: [[u8; 16]; 4]` (the file's codes, nibbles as U4's). `x = scale * FP4_VALUES[q]`.
//!
//! Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 pack without loss. K-quants' per-sub-block scales (`d * sc`, `dmin * m`) are rounded to
//! f16, a relative error of 2^-11 on the scale, far below the 4-bit quantization step.

use half::f16;

use super::ggml::{Block32, FP4_VALUES, TileKind};
use super::superblocks::{self, SUPER};

pub const U4_TILE_BYTES: usize = 80;
pub const I8_TILE_BYTES: usize = 144;
pub const U8_TILE_BYTES: usize = 144;
pub const F16_TILE_BYTES: usize = 1024;
pub const FP4_TILE_BYTES: usize = 80;
/// Rows per group of the integer tiles; a kernel call's results come in fours of rows.
pub const GROUP_ROWS: usize = 4;
/// Rows per group of F16 tiles.
pub const F16_GROUP_ROWS: usize = 16;

/// Rows one group of `kind`'s tiles holds.
pub fn group_rows(kind: TileKind) -> usize {
    match kind {
        TileKind::F16 => F16_GROUP_ROWS,
        _ => GROUP_ROWS,
    }
}

pub fn tile_bytes(kind: TileKind) -> usize {
    match kind {
        TileKind::U4 => U4_TILE_BYTES,
        TileKind::I8 => I8_TILE_BYTES,
        TileKind::U8 => U8_TILE_BYTES,
        TileKind::F16 => F16_TILE_BYTES,
        TileKind::Fp4 => FP4_TILE_BYTES,
        TileKind::Q2K | TileKind::Q3K | TileKind::Q4K | TileKind::Q5K | TileKind::Q6K => {
            kind.superblock().map_or(0, |s| s.tile_bytes())
        }
    }
}

/// Columns one tile covers: 32, or a super-block's 256.
pub fn tile_cols(kind: TileKind) -> usize {
    if kind.superblock().is_some() {
        SUPER
    } else {
        32
    }
}

#[inline]
pub fn read_f16(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

#[inline]
pub fn read_f32(bytes: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn write_f16(bytes: &mut [u8], at: usize, v: f32) {
    bytes[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// Writes one F16 tile from up to sixteen rows' 32 values each (missing rows stay zero: padding).
pub fn write_f16_tile(rows: &[&[f16]], tile: &mut [u8]) {
    tile.fill(0);
    for (r, values) in rows.iter().enumerate() {
        for (j, v) in values.iter().enumerate() {
            let at = 2 * (F16_GROUP_ROWS * j + r);
            tile[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Writes one tile from up to four rows' blocks (missing rows stay zero: padding).
pub fn write_tile(kind: TileKind, rows: &[&Block32], tile: &mut [u8]) {
    tile.fill(0);
    for (r, b) in rows.iter().enumerate() {
        match kind {
            TileKind::U4 => {
                write_f16(tile, 2 * r, b.scale[0]);
                write_f16(tile, 8 + 2 * r, b.min);
                for j in 0..16 {
                    tile[16 + 16 * r + j] = (b.q[j] as u8 & 0x0F) | ((b.q[j + 16] as u8) << 4);
                }
            }
            TileKind::F16
            | TileKind::Q2K
            | TileKind::Q3K
            | TileKind::Q4K
            | TileKind::Q5K
            | TileKind::Q6K => {
                unreachable!("F16 and super-block tiles have their own writers")
            }
            TileKind::U8 => {
                write_f16(tile, 2 * r, b.scale[0]);
                write_f16(tile, 8 + 2 * r, b.min);
                for j in 0..32 {
                    tile[16 + 32 * r + j] = b.q[j] as u8;
                }
            }
            TileKind::Fp4 => {
                // E8M0's two lowest scales (2^-128, 2^-127: an all-zero block's, as ggml writes it) are
                // f32 subnormals, which cost x86 a microcode assist per multiply: they pack as zero,
                // dropping values under 2e-37.
                let scale = if b.scale[0] < f32::MIN_POSITIVE {
                    0.0
                } else {
                    b.scale[0]
                };
                tile[4 * r..4 * r + 4].copy_from_slice(&scale.to_le_bytes());
                // The code of each value (the first of the table's two zeros for zero).
                let code = |v: i8| FP4_VALUES.iter().position(|&t| t == v).unwrap_or(0) as u8;
                for j in 0..16 {
                    tile[16 + 16 * r + j] = code(b.q[j]) | (code(b.q[j + 16]) << 4);
                }
            }
            TileKind::I8 => {
                write_f16(tile, 4 * r, b.scale[0]);
                write_f16(tile, 4 * r + 2, b.scale[1]);
                for j in 0..32 {
                    tile[16 + 32 * r + j] = b.q[j] as u8;
                }
            }
        }
    }
}

/// Row `r`'s values of a tile (`tile_cols`), dequantized (for tests, the reference path, embeddings).
pub fn dequantize_tile_row(kind: TileKind, tile: &[u8], r: usize, out: &mut [f32]) {
    if let Some(layout) = kind.superblock() {
        superblocks::dequantize_tile_row(layout, tile, r, out);
        return;
    }
    match kind {
        TileKind::U4 => {
            let (scale, min) = (read_f16(tile, 2 * r), read_f16(tile, 8 + 2 * r));
            for j in 0..16 {
                let byte = tile[16 + 16 * r + j];
                out[j] = scale * (byte & 0x0F) as f32 + min;
                out[j + 16] = scale * (byte >> 4) as f32 + min;
            }
        }
        TileKind::F16 => {
            for (j, o) in out.iter_mut().enumerate().take(32) {
                *o = read_f16(tile, 2 * (F16_GROUP_ROWS * j + r));
            }
        }
        TileKind::U8 => {
            let (scale, min) = (read_f16(tile, 2 * r), read_f16(tile, 8 + 2 * r));
            for j in 0..32 {
                out[j] = scale * tile[16 + 32 * r + j] as f32 + min;
            }
        }
        TileKind::Fp4 => {
            let scale = read_f32(tile, 4 * r);
            for j in 0..16 {
                let byte = tile[16 + 16 * r + j];
                out[j] = scale * FP4_VALUES[usize::from(byte & 0x0F)] as f32;
                out[j + 16] = scale * FP4_VALUES[usize::from(byte >> 4)] as f32;
            }
        }
        TileKind::I8 => {
            for j in 0..32 {
                let scale = read_f16(tile, 4 * r + 2 * (j / 16));
                out[j] = scale * (tile[16 + 32 * r + j] as i8) as f32;
            }
        }
        TileKind::Q2K | TileKind::Q3K | TileKind::Q4K | TileKind::Q5K | TileKind::Q6K => {}
    }
}

/// The shape of an F16 kernel call (`FloatKernel`) over `tiles`, `x` and `out`: each group's bytes, the
/// whole groups all three hold, and the stride of a token's results (four fours a group). `None` for an
/// empty call.
pub fn f16_call(tiles: &[u8], x: &[&[f32]], out: &[[f32; 4]]) -> Option<(usize, usize, usize)> {
    let group_bytes = x.first().map_or(0, |x| x.len() / 32 * F16_TILE_BYTES);
    if group_bytes == 0 {
        return None;
    }
    let groups = (tiles.len() / group_bytes).min(out.len() / (4 * x.len()));
    Some((group_bytes, groups, 4 * groups))
}

/// The tiles every row of a call of `groups` F16 groups has: the fewest of each group's and each
/// activation row's.
pub fn f16_blocks(tiles: &[u8], groups: usize, group_bytes: usize, x: &[&[f32]]) -> usize {
    x.iter().fold(
        (tiles.len() / groups).min(group_bytes) / F16_TILE_BYTES,
        |n, x| n.min(x.len() / 32),
    )
}
