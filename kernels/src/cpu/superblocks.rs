//! The K-quants' repacked layout, which keeps each 256-value super-block whole: the file's own integers
//! (6-bit sub-block scales and mins unpacked to bytes, the quants as they are), four rows interleaved as
//! `tiles` does, so that a kernel keeps integer sums over a super-block and converts to float once per
//! super-block and row (as ggml's Q4_K x Q8_K dot product does), and reads no more bytes than the file.
//!
//! One tile per 256 columns of a four-row group (missing rows are zero, which dequantizes to zero):
//!
//! - Q4K tile, 592 bytes (4.625 bits a weight; the file 4.5): `d: [f16; 4]`, `dmin: [f16; 4]`,
//!   `scales: [[u8; 4]; 8]` (`[s][row]`: one load brings a sub-block's four rows), `mins: [[u8; 8]; 4]`
//!   (`[row][s]`), then the quants: each row's 128 bytes are four 32-byte chunks `p`, and byte `l` of chunk
//!   `p` holds value `l` of sub-block `2p` in its low nibble and of sub-block `2p + 1` in its high one, as
//!   Q4_K does; the tile stores them as `q: [[[[u8; 8]; 4]; 4]; 4]` (`[p][l / 8][row][l % 8]`), so one
//!   32-byte vector holds eight values of each of the four rows. Against a token's eight activations
//!   broadcast four times, `vpmaddubsw` gives each row four 16-bit sums, which add up over a sub-block
//!   before its scale multiplies them once (ggml's `q4_K_8x8` idea).
//!   `x = d * scales[s] * q - dmin * mins[s]` for sub-block `s` (32 values).
//! - Q5K tile, 720 bytes (5.625 bits; the file 5.5): a Q4K tile, then `qh: [[[u8; 8]; 4]; 4]`
//!   (`[l / 8][row][l % 8]`): bit `s` of byte `l` is the fifth bit (16) of value `l` of sub-block `s`, as
//!   Q5_K has it.
//! - Q6K tile, 840 bytes (6.5625 bits, as the file): `d: [f16; 4]`, `scales: [[i8; 4]; 16]` (`[s][row]`,
//!   one per 16 values), then for each half `h` (128 values) Q6_K's own bytes, rows interleaved eight
//!   bytes at a time as Q4K's quants (`interleaved`): the rows' `ql: [u8; 64]` as two 32-byte runs, then
//!   their `qh: [u8; 32]`. Value `32k + l` of a half is `ql[l + 32 (k & 1)] >> 4 (k >> 1) & 15 |
//!   (qh[l] >> 2k & 3) << 4`. `x = d * scales[s] * (q - 32)` for 16-value sub-block `s`.
//! - Q2K tile, 336 bytes (2.625 bits, as the file): `d: [f16; 4]`, `dmin: [f16; 4]`, `scales: [[u8; 16];
//!   4]` (Q2_K's own bytes: sub-block `s`'s scale in the low nibble, its min in the high one, per 16
//!   values), then for each half `h` (128 values) the four rows' `qs: [u8; 32]`: value `32k + l` of a half
//!   is bits `2k..2k + 2` of byte `l`, as Q2_K has it. `x = d * (sc & 15) * q - dmin * (sc >> 4)`. Q2_K
//!   takes these tiles on every architecture: its min per 16 values has no 32-column tile.
//! - Q3K tile, 456 bytes (3.5625 bits; the file 3.4375): `d: [f16; 4]`, `scales: [[i8; 4]; 16]`
//!   (`[s][row]`: Q3_K's sixteen 6-bit scales unpacked, less their offset of 32: -32..=31, one per 16
//!   values), then for each half `h` (128 values) the quants `qs: [[[u8; 8]; 4]; 4]` (`[l / 8][row][l %
//!   8]`, interleaved as Q4K's): value `32k + l` of a half is bits `2k..2k + 2` of byte `l`, as Q3_K has
//!   it, then `hmask: [[[u8; 8]; 4]; 4]` (`[l / 8][row][l % 8]`): bit `j` of byte `l` is the high bit (4)
//!   of value `32j + l`, as Q3_K has it. A kernel forms unsigned `q = q2 | hbit << 2` (0..=7), meets
//!   eight values of each row with a token's eight activations broadcast (as Q6K), and takes the offset
//!   of 4 back through the activations' 16-value sums: `x = d * scales[s] * (q - 4)` for sub-block `s`.
//!
//! Packing copies the file's integers and f16 scales, so the tiles dequantize to exactly ggml's values.

use super::KernelError;
use super::ggml::{GgmlType, q3k_scales};
use super::tiles::read_f16;

/// Values per super-block.
pub const SUPER: usize = 256;
pub const Q4K_TILE_BYTES: usize = 592;
pub const Q5K_TILE_BYTES: usize = 720;
pub const Q6K_TILE_BYTES: usize = 840;
pub const Q2K_TILE_BYTES: usize = 336;
pub const Q3K_TILE_BYTES: usize = 456;

/// Where the parts of a Q4K / Q5K tile start.
pub const Q4K_SCALES: usize = 16;
pub const Q4K_MINS: usize = 48;
pub const Q4K_QS: usize = 80;
pub const Q5K_QH: usize = Q4K_TILE_BYTES;
/// Where a Q6K tile's scales and halves start, and a half's bytes.
pub const Q6K_SCALES: usize = 8;
pub const Q6K_HALVES: usize = 72;
pub const Q6K_HALF: usize = 384;
/// Where a half's `qh` bytes start, from the half's start.
pub const Q6K_QH: usize = 256;
/// Where a Q2K tile's packed scales and its halves' quants start.
pub const Q2K_SCALES: usize = 16;
pub const Q2K_QS: usize = 80;
/// Where a Q3K tile's scales, its halves' low bits and its high bits start.
pub const Q3K_SCALES: usize = 8;
pub const Q3K_QS: usize = 72;
pub const Q3K_HMASK: usize = 328;

/// The super-block layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuperKind {
    Q4K,
    Q5K,
    Q6K,
    Q2K,
    Q3K,
}

impl SuperKind {
    pub fn tile_bytes(self) -> usize {
        match self {
            SuperKind::Q4K => Q4K_TILE_BYTES,
            SuperKind::Q5K => Q5K_TILE_BYTES,
            SuperKind::Q6K => Q6K_TILE_BYTES,
            SuperKind::Q2K => Q2K_TILE_BYTES,
            SuperKind::Q3K => Q3K_TILE_BYTES,
        }
    }

    /// The GGML type whose blocks this layout holds.
    fn source(self) -> GgmlType {
        match self {
            SuperKind::Q4K => GgmlType::Q4K,
            SuperKind::Q5K => GgmlType::Q5K,
            SuperKind::Q6K => GgmlType::Q6K,
            SuperKind::Q2K => GgmlType::Q2K,
            SuperKind::Q3K => GgmlType::Q3K,
        }
    }
}

/// Q4_K's 6-bit scale and min of sub-block `j` (ggml's `get_scale_min_k4`).
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Writes one group's tiles (`group`: one per super-block) from up to four rows of `kind`'s type.
pub fn write_group(
    kind: SuperKind,
    rows: &[(GgmlType, &[u8])],
    group: &mut [u8],
) -> Result<(), KernelError> {
    let ty = kind.source();
    let bb = ty.block_bytes();
    let tb = kind.tile_bytes();
    group.fill(0);
    for (r, &(row_ty, row)) in rows.iter().enumerate() {
        if row_ty != ty || !row.len().is_multiple_of(bb) || row.len() / bb != group.len() / tb {
            return Err(KernelError::Shape(format!(
                "a {row_ty:?} row of {} bytes does not fill {kind:?} tiles",
                row.len()
            )));
        }
        for (block, tile) in row.chunks_exact(bb).zip(group.chunks_exact_mut(tb)) {
            match kind {
                SuperKind::Q4K | SuperKind::Q5K => {
                    tile[2 * r..2 * r + 2].copy_from_slice(&block[0..2]);
                    tile[8 + 2 * r..10 + 2 * r].copy_from_slice(&block[2..4]);
                    for s in 0..8 {
                        let (sc, m) = scale_min_k4(s, &block[4..16]);
                        tile[Q4K_SCALES + 4 * s + r] = sc;
                        tile[Q4K_MINS + 8 * r + s] = m;
                    }
                    let qs = if kind == SuperKind::Q5K {
                        for (l, &qh) in block[16..48].iter().enumerate() {
                            tile[interleaved(Q5K_QH, r, l)] = qh;
                        }
                        &block[48..176]
                    } else {
                        &block[16..144]
                    };
                    for p in 0..4 {
                        for (l, &q) in qs[32 * p..32 * p + 32].iter().enumerate() {
                            tile[interleaved(Q4K_QS + 128 * p, r, l)] = q;
                        }
                    }
                }
                SuperKind::Q6K => {
                    tile[2 * r..2 * r + 2].copy_from_slice(&block[208..210]);
                    for (sub, &sc) in block[192..208].iter().enumerate() {
                        tile[Q6K_SCALES + 4 * sub + r] = sc;
                    }
                    for h in 0..2 {
                        let half = Q6K_HALVES + Q6K_HALF * h;
                        for (l, &q) in block[64 * h..64 * h + 64].iter().enumerate() {
                            tile[interleaved(half + 128 * (l / 32), r, l % 32)] = q;
                        }
                        for (l, &q) in block[128 + 32 * h..160 + 32 * h].iter().enumerate() {
                            tile[interleaved(half + Q6K_QH, r, l)] = q;
                        }
                    }
                }
                SuperKind::Q2K => {
                    tile[2 * r..2 * r + 2].copy_from_slice(&block[80..82]);
                    tile[8 + 2 * r..10 + 2 * r].copy_from_slice(&block[82..84]);
                    tile[Q2K_SCALES + 16 * r..Q2K_SCALES + 16 * r + 16]
                        .copy_from_slice(&block[0..16]);
                    for h in 0..2 {
                        let at = Q2K_QS + 128 * h + 32 * r;
                        tile[at..at + 32].copy_from_slice(&block[16 + 32 * h..48 + 32 * h]);
                    }
                }
                SuperKind::Q3K => write_q3k(block, r, tile),
            }
        }
    }
    Ok(())
}

/// Row `r` of a Q3K tile from one Q3_K block (`hmask[32]`, `qs[64]`, `scales[12]`, `d`).
fn write_q3k(block: &[u8], r: usize, tile: &mut [u8]) {
    tile[2 * r..2 * r + 2].copy_from_slice(&block[108..110]);
    for (s, sc) in q3k_scales(&block[96..108]).into_iter().enumerate() {
        tile[Q3K_SCALES + 4 * s + r] = (sc - 32) as u8;
    }
    for l in 0..32 {
        for h in 0..2 {
            tile[interleaved(Q3K_QS + 128 * h, r, l)] = block[32 + 32 * h + l];
        }
        tile[interleaved(Q3K_HMASK, r, l)] = block[l];
    }
}

/// Q3K sub-block `s`'s scale in row `r`: -32..=31.
#[inline]
pub fn q3k_scale(tile: &[u8], r: usize, s: usize) -> i8 {
    tile[Q3K_SCALES + 4 * s + r] as i8
}

/// Q3K value `i` (0..256) of row `r`: 0..=7, the stored value plus 4.
#[inline]
pub fn q3k_value(tile: &[u8], r: usize, i: usize) -> u8 {
    let l = i % 32;
    let low = (tile[interleaved(Q3K_QS + 128 * (i / 128), r, l)] >> (2 * ((i % 128) / 32))) & 3;
    let high = (tile[interleaved(Q3K_HMASK, r, l)] >> (i / 32)) & 1;
    low | high << 2
}

/// Q6K value `i` (0..256) of row `r`: 0..=63, stored plus 32.
#[inline]
pub fn q6k_value(tile: &[u8], r: usize, i: usize) -> u8 {
    let half = Q6K_HALVES + Q6K_HALF * (i / 128);
    let (k, l) = ((i % 128) / 32, i % 32);
    let ql = tile[interleaved(half + 128 * (k & 1), r, l)];
    let qh = tile[interleaved(half + Q6K_QH, r, l)];
    ((ql >> (4 * (k >> 1))) & 0x0F) | (((qh >> (2 * k)) & 3) << 4)
}

/// Q6K sub-block `s`'s scale in row `r`.
#[inline]
pub fn q6k_scale(tile: &[u8], r: usize, s: usize) -> i8 {
    tile[Q6K_SCALES + 4 * s + r] as i8
}

/// Where byte `l` (0..32) of row `r` sits in a Q4K / Q5K run of 32-byte vectors starting at `at`: eight
/// bytes of each row in turn.
#[inline]
pub fn interleaved(at: usize, r: usize, l: usize) -> usize {
    at + 32 * (l / 8) + 8 * r + l % 8
}

/// Q4K / Q5K sub-block `s`'s scale and min in row `r`.
#[inline]
pub fn q4k_scale_min(tile: &[u8], r: usize, s: usize) -> (u8, u8) {
    (tile[Q4K_SCALES + 4 * s + r], tile[Q4K_MINS + 8 * r + s])
}

/// Q4K / Q5K value `l` of sub-block `s` of row `r`: 0..=15, or 0..=31 with the fifth bit.
#[inline]
pub fn q4k_value(kind: SuperKind, tile: &[u8], r: usize, s: usize, l: usize) -> u8 {
    let byte = tile[interleaved(Q4K_QS + 128 * (s / 2), r, l)];
    let low = if s.is_multiple_of(2) {
        byte & 0x0F
    } else {
        byte >> 4
    };
    let high = if kind == SuperKind::Q5K {
        ((tile[interleaved(Q5K_QH, r, l)] >> s) & 1) << 4
    } else {
        0
    };
    low | high
}

/// Q2K value `i` (0..256) of row `r`: 0..=3.
#[inline]
pub fn q2k_value(tile: &[u8], r: usize, i: usize) -> u8 {
    let byte = tile[Q2K_QS + 128 * (i / 128) + 32 * r + i % 32];
    (byte >> (2 * ((i % 128) / 32))) & 3
}

/// Row `r`'s 256 values of a tile, dequantized as ggml does.
pub fn dequantize_tile_row(kind: SuperKind, tile: &[u8], r: usize, out: &mut [f32]) {
    match kind {
        SuperKind::Q4K | SuperKind::Q5K => {
            let (d, dmin) = (read_f16(tile, 2 * r), read_f16(tile, 8 + 2 * r));
            for s in 0..8 {
                let (sc, m) = q4k_scale_min(tile, r, s);
                let (d1, m1) = (d * sc as f32, dmin * m as f32);
                for l in 0..32 {
                    out[32 * s + l] = d1 * q4k_value(kind, tile, r, s, l) as f32 - m1;
                }
            }
        }
        SuperKind::Q6K => {
            let d = read_f16(tile, 2 * r);
            for (i, o) in out.iter_mut().enumerate().take(SUPER) {
                let sc = q6k_scale(tile, r, i / 16);
                *o = d * sc as f32 * (q6k_value(tile, r, i) as i32 - 32) as f32;
            }
        }
        SuperKind::Q2K => {
            let (d, dmin) = (read_f16(tile, 2 * r), read_f16(tile, 8 + 2 * r));
            for (i, o) in out.iter_mut().enumerate().take(SUPER) {
                let sc = tile[Q2K_SCALES + 16 * r + i / 16];
                let (dl, ml) = (d * (sc & 0x0F) as f32, dmin * (sc >> 4) as f32);
                *o = dl * q2k_value(tile, r, i) as f32 - ml;
            }
        }
        SuperKind::Q3K => {
            let d = read_f16(tile, 2 * r);
            for (i, o) in out.iter_mut().enumerate().take(SUPER) {
                let dl = d * q3k_scale(tile, r, i / 16) as f32;
                *o = dl * (q3k_value(tile, r, i) as i32 - 4) as f32;
            }
        }
    }
}
