//! MXFP4 (GGML type 39, the type gpt-oss's experts are released in) converted at load to Q8_0 for candle,
//! which has no MXFP4 matmul: on another device, or with our kernels turned off. On the CPU our kernels run
//! MXFP4 as it is (`kernels`' Fp4 tiles: the codes and an f32 scale, 20 bytes a block) and take no
//! conversion.
//!
//! An MXFP4 block is 32 values: one E8M0 byte (a power of two) and 32 four-bit E2M1 codes, low nibbles
//! the first 16 values, high nibbles the last 16. ggml reads a code through the doubled E2M1 table
//! (`kvalues_mxfp4`: 0, 1, 2, 3, 4, 6, 8, 12 and their negatives) and the byte as half its power of two
//! (`ggml_e8m0_to_fp32_half`). A Q8_0 block is 32 signed bytes and an f16 scale, so the table's integers
//! are Q8_0 values as they are and the conversion is exact wherever the scale `2^(e-128)` is an f16
//! (`e` in 104..=143, which covers real weights); a block outside that range is requantized (the nearest
//! Q8_0 of its values), and counted so that the loader can say so. The price is memory: 34 bytes per
//! block against 17, twice the experts' size.
//!
//! candle's GGUF reader refuses type 39; `weights` reads tensors itself (candle parses only the metadata)
//! and converts these with `to_q8_0` wherever candle takes them.

/// GGML's type number for MXFP4.
pub const MXFP4: u32 = 39;
/// GGML's type number for Q8_0.
pub const Q8_0: u32 = 8;
/// Values per block (both types).
pub const BLOCK_VALUES: usize = 32;
/// Bytes of one MXFP4 block.
pub const MXFP4_BLOCK_BYTES: usize = 17;
/// Bytes of one Q8_0 block.
pub const Q8_0_BLOCK_BYTES: usize = 34;

// The doubled E2M1 table and the halved E8M0 scale are the kernels' own (`kernels::FP4_VALUES`,
// `kernels::e8m0_half`), so the conversion and the Fp4 tiles read a block alike.
use kernels::{FP4_VALUES, e8m0_half};

/// An MXFP4 block whose values Q8_0 cannot hold at all (its f16 scale would overflow).
#[derive(Debug, thiserror::Error)]
#[error("an MXFP4 block's values reach {0}, past what a Q8_0 block's f16 scale can hold")]
pub struct OutOfRange(pub f32);

/// MXFP4 blocks as Q8_0 blocks, and how many of them could not be converted exactly.
pub fn to_q8_0(blocks: &[u8]) -> Result<(Vec<u8>, usize), OutOfRange> {
    let mut out = Vec::with_capacity(blocks.len() / MXFP4_BLOCK_BYTES * Q8_0_BLOCK_BYTES);
    let mut inexact = 0;
    let mut quants = [0i8; BLOCK_VALUES];
    for block in blocks.chunks_exact(MXFP4_BLOCK_BYTES) {
        let (e, codes) = (block[0], &block[1..]);
        for (i, c) in codes.iter().enumerate() {
            quants[i] = FP4_VALUES[(c & 0x0f) as usize];
            quants[i + 16] = FP4_VALUES[(c >> 4) as usize];
        }
        let d = e8m0_half(e);
        let scale = half::f16::from_f32(d);
        if scale.to_f32() == d || quants.iter().all(|&q| q == 0) {
            out.extend_from_slice(&scale.to_le_bytes());
            out.extend(quants.iter().map(|&q| q as u8));
            continue;
        }
        // A scale f16 cannot hold: the block's values, requantized as ggml's `quantize_row_q8_0` does.
        inexact += 1;
        let values: Vec<f32> = quants.iter().map(|&q| q as f32 * d).collect();
        let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d8 = amax / 127.0;
        if !half::f16::from_f32(d8).is_finite() {
            return Err(OutOfRange(amax));
        }
        let inv = if d8 > 0.0 { 1.0 / d8 } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d8).to_le_bytes());
        out.extend(values.iter().map(|v| (v * inv).round() as i8 as u8));
    }
    Ok((out, inexact))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of `ty` as the kernels' GGML dequantizer gives their values.
    fn values(ty: kernels::GgmlType, blocks: &[u8]) -> Vec<f32> {
        let mut out = Vec::new();
        kernels::dequantize_row(ty, blocks, &mut out).expect("whole blocks");
        out
    }

    fn q8_0_values(blocks: &[u8]) -> Vec<f32> {
        values(kernels::GgmlType::Q8_0, blocks)
    }

    fn dequantize(blocks: &[u8]) -> Vec<f32> {
        values(kernels::GgmlType::MXFP4, blocks)
    }

    fn blocks(scales: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &e) in scales.iter().enumerate() {
            out.push(e);
            out.extend(
                (0..16u32).map(|j| (j.wrapping_mul(37).wrapping_add(i as u32 * 11) % 256) as u8),
            );
        }
        out
    }

    #[test]
    fn blocks_with_f16_scales_convert_exactly() {
        let mxfp4 = blocks(&[104, 110, 120, 127, 128, 135, 143]);
        let (q8, inexact) = to_q8_0(&mxfp4).unwrap();
        assert_eq!(inexact, 0);
        assert_eq!(q8.len(), 7 * Q8_0_BLOCK_BYTES);
        assert_eq!(q8_0_values(&q8), dequantize(&mxfp4));
    }

    #[test]
    fn blocks_past_f16_are_requantized_and_counted_or_refused() {
        let mxfp4 = blocks(&[90, 144, 128]);
        let (q8, inexact) = to_q8_0(&mxfp4).unwrap();
        assert_eq!(inexact, 2);
        let amax = 12.0 * e8m0_half(144);
        for (ours, want) in q8_0_values(&q8).iter().zip(dequantize(&mxfp4)) {
            // Half a step of the block's Q8_0 scale, and f16's rounding of that scale.
            assert!(
                (ours - want).abs() <= amax / 254.0 + want.abs() * 1e-3,
                "{ours} vs {want}"
            );
        }
        assert!(to_q8_0(&blocks(&[160])).is_err());
    }

    #[test]
    fn e8m0_is_half_the_power_of_two() {
        assert_eq!(e8m0_half(128), 1.0);
        assert_eq!(e8m0_half(127), 0.5);
        assert_eq!(e8m0_half(130), 4.0);
        assert_eq!(e8m0_half(1), 2f32.powi(-127));
    }
}
