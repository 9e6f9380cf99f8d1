//! GGML's block formats, decoded to one 32-element form that the packer takes: small integers, one or two
//! scales, and an offset. Layouts follow ggml-common.h.

// Index loops here mirror ggml's reference dequantizers line for line, which is how they are checked.
#![allow(clippy::needless_range_loop)]

use half::f16;

use super::KernelError;
use super::superblocks::{SuperKind, scale_min_k4};

/// The GGML tensor types the CPU kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    /// 2-bit values with a 4-bit scale and a 4-bit min per 16 (`x = d * sc * q - dmin * m`), in
    /// 256-value super-blocks: only the super-block tiles hold it (a min per 16 has no 32-value form).
    Q2K,
    /// 3-bit values (two low bits and a high-bit mask) with a signed 6-bit scale per 16:
    /// `x = d * (sc - 32) * q`, `q` in -4..=3.
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    /// 4-bit indices into a fixed non-linear table of int8 values, one f16 scale per 32.
    IQ4NL,
    /// IQ4_NL's table in 256-element super-blocks, with a 6-bit scale per 32.
    IQ4XS,
    /// MXFP4 (gpt-oss's experts): 4-bit E2M1 codes with an E8M0 power-of-two scale per 32.
    MXFP4,
    F16,
    /// Packed as f16: exact for every value in f16's normal range (|x| from 6.1e-5 to 65504); smaller
    /// weights keep f16's subnormal precision.
    BF16,
}

/// Which tile a type packs into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileKind {
    /// 4-bit unsigned values, one scale and one offset per 32: `x = scale * q + min`.
    U4,
    /// 8-bit signed values, one scale per 16: `x = scale * q`.
    I8,
    /// 5-bit unsigned values held in bytes, one scale and one offset per 32: `x = scale * q + min`.
    U8,
    /// f16 values, multiplied with unquantized f32 activations.
    F16,
    /// 4-bit codes into MXFP4's table of doubled E2M1 values (int8), one f32 scale per 32:
    /// `x = scale * table[q]`.
    Fp4,
    /// Q4_K's super-blocks as the file has them (`superblocks`).
    Q4K,
    /// Q5_K's super-blocks as the file has them.
    Q5K,
    /// Q6_K's super-blocks as the file has them.
    Q6K,
    /// Q2_K's super-blocks as the file has them (on every architecture).
    Q2K,
    /// Q3_K's super-blocks: the file's bytes, its scales unpacked to bytes.
    Q3K,
}

impl TileKind {
    /// The super-block layout of this kind, if it is one.
    pub(crate) fn superblock(self) -> Option<SuperKind> {
        match self {
            TileKind::Q4K => Some(SuperKind::Q4K),
            TileKind::Q5K => Some(SuperKind::Q5K),
            TileKind::Q6K => Some(SuperKind::Q6K),
            TileKind::Q2K => Some(SuperKind::Q2K),
            TileKind::Q3K => Some(SuperKind::Q3K),
            _ => None,
        }
    }
}

impl GgmlType {
    /// Elements per block.
    pub fn block_elems(self) -> usize {
        match self {
            Self::Q4_0
            | Self::Q4_1
            | Self::Q5_0
            | Self::Q5_1
            | Self::Q8_0
            | Self::IQ4NL
            | Self::MXFP4 => 32,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K | Self::IQ4XS => 256,
            Self::F16 | Self::BF16 => 1,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::IQ4NL => 18,
            Self::IQ4XS => 136,
            Self::MXFP4 => 17,
            Self::F16 | Self::BF16 => 2,
        }
    }

    pub fn tile_kind(self) -> TileKind {
        match self {
            Self::Q2K => TileKind::Q2K,
            Self::Q3K => TileKind::Q3K,
            Self::Q4K => TileKind::Q4K,
            Self::Q5K => TileKind::Q5K,
            Self::Q6K => TileKind::Q6K,
            Self::Q4_0 | Self::Q4_1 => TileKind::U4,
            Self::Q5_1 => TileKind::U8,
            Self::Q5_0 | Self::Q8_0 | Self::IQ4NL | Self::IQ4XS => TileKind::I8,
            Self::MXFP4 => TileKind::Fp4,
            Self::F16 | Self::BF16 => TileKind::F16,
        }
    }
}

/// 32 elements in the packer's form. For `U4` tiles `q` holds 0..=15 and for `U8` tiles 0..=31, both with
/// `scale[0] == scale[1]`; for `I8` tiles `min` is zero.
#[derive(Debug, Clone, Copy, Default)]
pub struct Block32 {
    pub q: [i8; 32],
    pub scale: [f32; 2],
    pub min: f32,
}

fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Decodes one row of an F16 or BF16 tensor into f16 values.
pub fn decode_float_row(ty: GgmlType, row: &[u8], out: &mut Vec<f16>) {
    out.clear();
    out.extend(row.chunks_exact(2).map(|b| {
        let bits = u16::from_le_bytes([b[0], b[1]]);
        match ty {
            GgmlType::BF16 => f16::from_f32(half::bf16::from_bits(bits).to_f32()),
            _ => f16::from_bits(bits),
        }
    }));
}

/// One row of a tensor of type `ty` as f32, appended to `out`: the values GGML's dequantizer gives.
pub fn dequantize_row(ty: GgmlType, row: &[u8], out: &mut Vec<f32>) -> Result<(), KernelError> {
    match ty {
        GgmlType::Q2K => dequantize_q2k(row, out)?,
        GgmlType::F16 | GgmlType::BF16 => {
            out.extend(row.chunks_exact(2).map(|b| {
                let bits = u16::from_le_bytes([b[0], b[1]]);
                match ty {
                    GgmlType::BF16 => half::bf16::from_bits(bits).to_f32(),
                    _ => f16::from_bits(bits).to_f32(),
                }
            }));
        }
        _ => {
            let mut blocks =
                Vec::with_capacity(row.len() / ty.block_bytes() * ty.block_elems() / 32);
            decode_row(ty, row, &mut blocks)?;
            for block in &blocks {
                out.extend(
                    (0..32).map(|i| block.scale[i / 16] * f32::from(block.q[i]) + block.min),
                );
            }
        }
    }
    Ok(())
}

/// Decodes one row (`cols` elements of type `ty`) into `cols / 32` blocks.
pub fn decode_row(ty: GgmlType, row: &[u8], out: &mut Vec<Block32>) -> Result<(), KernelError> {
    let bb = ty.block_bytes();
    if !row.len().is_multiple_of(bb) {
        return Err(KernelError::Shape(format!(
            "a {ty:?} row of {} bytes is not whole blocks of {bb}",
            row.len()
        )));
    }
    out.clear();
    for block in row.chunks_exact(bb) {
        match ty {
            GgmlType::F16 | GgmlType::BF16 => {
                return Err(KernelError::Shape(format!(
                    "{ty:?} rows are not integer blocks"
                )));
            }
            GgmlType::Q2K => {
                return Err(KernelError::Shape(
                    "Q2_K has a min per 16 values: it packs only into super-block tiles".into(),
                ));
            }
            GgmlType::Q4_0 => {
                let d = half_at(block, 0);
                out.push(nibbles(&block[2..18], d, -8.0 * d));
            }
            GgmlType::Q4_1 => {
                let (d, m) = (half_at(block, 0), half_at(block, 2));
                out.push(nibbles(&block[4..20], d, m));
            }
            GgmlType::Q5_0 => {
                let d = half_at(block, 0);
                let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
                let qs = &block[6..22];
                let mut b = Block32 {
                    scale: [d, d],
                    ..Block32::default()
                };
                for j in 0..16 {
                    let lo = (qs[j] & 0x0F) | ((((qh >> j) << 4) & 0x10) as u8);
                    let hi = (qs[j] >> 4) | (((qh >> (j + 12)) & 0x10) as u8);
                    b.q[j] = lo as i8 - 16;
                    b.q[j + 16] = hi as i8 - 16;
                }
                out.push(b);
            }
            GgmlType::Q5_1 => {
                let (d, m) = (half_at(block, 0), half_at(block, 2));
                let qh = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
                let qs = &block[8..24];
                let mut b = Block32 {
                    scale: [d, d],
                    min: m,
                    ..Block32::default()
                };
                for j in 0..16 {
                    b.q[j] = ((qs[j] & 0x0F) | ((((qh >> j) << 4) & 0x10) as u8)) as i8;
                    b.q[j + 16] = ((qs[j] >> 4) | (((qh >> (j + 12)) & 0x10) as u8)) as i8;
                }
                out.push(b);
            }
            GgmlType::Q8_0 => {
                let d = half_at(block, 0);
                let mut b = Block32 {
                    scale: [d, d],
                    ..Block32::default()
                };
                for (q, &byte) in b.q.iter_mut().zip(&block[2..34]) {
                    *q = byte as i8;
                }
                out.push(b);
            }
            GgmlType::Q3K => {
                let hmask = &block[0..32];
                let qs = &block[32..96];
                let scales = q3k_scales(&block[96..108]);
                let d = half_at(block, 108);
                let mut values = [0i8; 256];
                let mut bit = 1u8;
                for half in 0..2 {
                    let q = &qs[32 * half..32 * half + 32];
                    for j in 0..4 {
                        let shift = 2 * j;
                        let y = &mut values[128 * half + 32 * j..128 * half + 32 * j + 32];
                        for l in 0..32 {
                            let low = ((q[l] >> shift) & 3) as i8;
                            y[l] = low - if hmask[l] & bit != 0 { 0 } else { 4 };
                        }
                        bit <<= 1;
                    }
                }
                for b32 in 0..8 {
                    let mut b = Block32 {
                        scale: [
                            d * (scales[2 * b32] - 32) as f32,
                            d * (scales[2 * b32 + 1] - 32) as f32,
                        ],
                        ..Block32::default()
                    };
                    b.q.copy_from_slice(&values[32 * b32..32 * b32 + 32]);
                    out.push(b);
                }
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                // Q5_K is Q4_K with a fifth bit per value: bit `sub` of byte `l` of `qh`, before the nibbles.
                let (d, dmin) = (half_at(block, 0), half_at(block, 2));
                let scales = &block[4..16];
                let (qh, qs) = match ty {
                    GgmlType::Q5K => (Some(&block[16..48]), &block[48..176]),
                    _ => (None, &block[16..144]),
                };
                for pair in 0..4 {
                    let q = &qs[32 * pair..32 * pair + 32];
                    for (sub, shift) in [(2 * pair, 0), (2 * pair + 1, 4)] {
                        let (sc, m) = scale_min_k4(sub, scales);
                        let mut b = Block32 {
                            scale: [d * sc as f32; 2],
                            min: -dmin * m as f32,
                            ..Block32::default()
                        };
                        for l in 0..32 {
                            let high =
                                qh.map_or(0, |qh| if qh[l] & (1 << sub) != 0 { 16 } else { 0 });
                            b.q[l] = (((q[l] >> shift) & 0x0F) + high) as i8;
                        }
                        out.push(b);
                    }
                }
            }
            GgmlType::Q6K => {
                let ql = &block[0..128];
                let qh = &block[128..192];
                let sc = &block[192..208];
                let d = half_at(block, 208);
                let mut values = [0i8; 256];
                for half in 0..2 {
                    let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
                    let y = &mut values[128 * half..128 * half + 128];
                    for l in 0..32 {
                        y[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                        y[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                        y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                        y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                    }
                }
                for b32 in 0..8 {
                    let mut b = Block32 {
                        scale: [
                            d * (sc[2 * b32] as i8) as f32,
                            d * (sc[2 * b32 + 1] as i8) as f32,
                        ],
                        ..Block32::default()
                    };
                    b.q.copy_from_slice(&values[32 * b32..32 * b32 + 32]);
                    out.push(b);
                }
            }
            GgmlType::IQ4NL => out.push(iq4_block(&block[2..18], half_at(block, 0))),
            GgmlType::MXFP4 => {
                let d = e8m0_half(block[0]);
                let mut b = Block32 {
                    scale: [d, d],
                    ..Block32::default()
                };
                for j in 0..16 {
                    b.q[j] = FP4_VALUES[usize::from(block[1 + j] & 0x0F)];
                    b.q[j + 16] = FP4_VALUES[usize::from(block[1 + j] >> 4)];
                }
                out.push(b);
            }
            GgmlType::IQ4XS => {
                let d = half_at(block, 0);
                let scales_h = u16::from_le_bytes([block[2], block[3]]);
                let (scales_l, qs) = (&block[4..8], &block[8..136]);
                for ib in 0..8 {
                    let low = (scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F;
                    let high = ((scales_h >> (2 * ib)) & 3) as u8;
                    let ls = i32::from(low | (high << 4)) - 32;
                    out.push(iq4_block(&qs[16 * ib..16 * ib + 16], d * ls as f32));
                }
            }
        }
    }
    Ok(())
}

/// Q2_K rows as ggml's `dequantize_row_q2_K` gives them. A block is `scales: [u8; 16]` (scale in the low
/// nibble, min in the high one, per 16 values), `qs: [u8; 64]` (value `128h + 32k + l` is bits `2k..2k+2`
/// of `qs[32h + l]`), then the f16 `d` and `dmin`.
fn dequantize_q2k(row: &[u8], out: &mut Vec<f32>) -> Result<(), KernelError> {
    if !row.len().is_multiple_of(84) {
        return Err(KernelError::Shape(format!(
            "a Q2K row of {} bytes is not whole blocks of 84",
            row.len()
        )));
    }
    for block in row.chunks_exact(84) {
        let (scales, qs) = (&block[0..16], &block[16..80]);
        let (d, dmin) = (half_at(block, 80), half_at(block, 82));
        for i in 0..256 {
            let sc = scales[i / 16];
            let (dl, ml) = (d * (sc & 0x0F) as f32, dmin * (sc >> 4) as f32);
            let q = (qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
            out.push(dl * q as f32 - ml);
        }
    }
    Ok(())
}

/// ggml's `kvalues_mxfp4`: the E2M1 values doubled (0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives), so
/// that they are integers; the scale is halved to match (`e8m0_half`).
pub const FP4_VALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// ggml's `ggml_e8m0_to_fp32_half`: `2^(e - 128)`, subnormal below `e` = 2. Every E8M0 byte's value is
/// an f32, so MXFP4 tiles keep it exactly (but the two subnormal ones: `tiles`).
pub fn e8m0_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        (e as u32 - 1) << 23
    };
    f32::from_bits(bits)
}

/// The values IQ4_NL's and IQ4_XS's 4-bit indices stand for (ggml's `kvalues_iq4nl`).
const IQ4_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// IQ4 nibbles: byte `j` holds the index of element `j` (low) and `j + 16` (high), as Q4_0's.
fn iq4_block(qs: &[u8], scale: f32) -> Block32 {
    let mut b = Block32 {
        scale: [scale, scale],
        ..Block32::default()
    };
    for j in 0..16 {
        b.q[j] = IQ4_VALUES[usize::from(qs[j] & 0x0F)];
        b.q[j + 16] = IQ4_VALUES[usize::from(qs[j] >> 4)];
    }
    b
}

/// Q4_0/Q4_1 nibbles: byte `j` holds element `j` (low) and `j + 16` (high).
fn nibbles(qs: &[u8], scale: f32, min: f32) -> Block32 {
    let mut b = Block32 {
        scale: [scale, scale],
        min,
        ..Block32::default()
    };
    for j in 0..16 {
        b.q[j] = (qs[j] & 0x0F) as i8;
        b.q[j + 16] = (qs[j] >> 4) as i8;
    }
    b
}

/// Q3_K's sixteen 6-bit scales (0..=63, centred on 32), unpacked from 12 bytes as ggml does.
pub(crate) fn q3k_scales(packed: &[u8]) -> [i8; 16] {
    let word = |i: usize| {
        u32::from_le_bytes([
            packed[4 * i],
            packed[4 * i + 1],
            packed[4 * i + 2],
            packed[4 * i + 3],
        ])
    };
    let (kmask1, kmask2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    let aux = [
        (a0 & kmask2) | ((tmp & kmask1) << 4),
        (a1 & kmask2) | (((tmp >> 2) & kmask1) << 4),
        ((a0 >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4),
        ((a1 >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, word) in aux.iter().enumerate() {
        for (j, byte) in word.to_le_bytes().into_iter().enumerate() {
            out[4 * i + j] = byte as i8;
        }
    }
    out
}
