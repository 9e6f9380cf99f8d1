//! The packing against candle's GGML dequantizers, and every kernel level this CPU has against the scalar
//! path and against an f32 product, on random data of every supported type.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::*;

/// A deterministic pseudo-random matrix (xorshift), values in about [-1, 1] with a few larger ones.
fn random(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..rows * cols)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if i % 97 == 0 { v * 4.0 } else { v }
        })
        .collect()
}

const TYPES: [(GgmlType, GgmlDType); 12] = [
    (GgmlType::F16, GgmlDType::F16),
    (GgmlType::BF16, GgmlDType::BF16),
    (GgmlType::Q4_0, GgmlDType::Q4_0),
    (GgmlType::Q4_1, GgmlDType::Q4_1),
    (GgmlType::Q5_0, GgmlDType::Q5_0),
    (GgmlType::Q5_1, GgmlDType::Q5_1),
    (GgmlType::Q8_0, GgmlDType::Q8_0),
    (GgmlType::Q2K, GgmlDType::Q2K),
    (GgmlType::Q3K, GgmlDType::Q3K),
    (GgmlType::Q4K, GgmlDType::Q4K),
    (GgmlType::Q5K, GgmlDType::Q5K),
    (GgmlType::Q6K, GgmlDType::Q6K),
];

/// Random IQ4_NL or IQ4_XS bytes (candle has no quantizer for them): random indices and sub-block
/// scales under f16 scales of about 1/64, so values stay near the other types' range.
fn iq4_matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let noise = random(1, rows * cols / ty.block_elems() * ty.block_bytes(), seed);
    let mut bytes: Vec<u8> = noise.iter().map(|v| (v.to_bits() >> 7) as u8).collect();
    for (b, block) in bytes.chunks_exact_mut(ty.block_bytes()).enumerate() {
        let d = half::f16::from_f32((1.0 + (b % 7) as f32) / 448.0).to_le_bytes();
        block[..2].copy_from_slice(&d);
    }
    bytes
}

/// Every type's test matrix: candle's quantization of random values, and random i-quant blocks.
fn every_type_matrix(rows: usize, cols: usize, seed: u64) -> Vec<(GgmlType, Vec<u8>)> {
    let mut all: Vec<_> = TYPES
        .iter()
        .map(|&(ty, dtype)| (ty, ggml_matrix(dtype, rows, cols, seed).0))
        .collect();
    for ty in [GgmlType::IQ4NL, GgmlType::IQ4XS] {
        all.push((ty, iq4_matrix(ty, rows, cols, seed)));
    }
    all.push((GgmlType::MXFP4, mxfp4_matrix(rows, cols, seed)));
    all
}

/// Random MXFP4 bytes (candle has no quantizer for them): random codes under E8M0 scales from 2^-9 to
/// 2^-3 (the doubled table reaches 12, so values stay within about 1.5), and a few blocks at the lowest
/// E8M0 scales (2^-128, 2^-127: subnormal), which an f32 scale keeps exactly. (A block far above the
/// others would make the f32-product check measure only its activations' rounding.)
fn mxfp4_matrix(rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let noise = random(1, rows * cols / 32 * 17, seed);
    let mut bytes: Vec<u8> = noise.iter().map(|v| (v.to_bits() >> 7) as u8).collect();
    for (b, block) in bytes.chunks_exact_mut(17).enumerate() {
        block[0] = match b % 53 {
            0 => 0,
            1 => 1,
            _ => 119 + (b % 7) as u8,
        };
    }
    bytes
}

#[test]
fn mxfp4_blocks_decode_to_ggmls_values() {
    // e = 128: scale 2^0 on the doubled table; code 7 (12) then 15 (-12) in byte 0, 9 (-1) and 2 (2).
    let mut block = vec![0u8; 17];
    block[0] = 128;
    block[1] = 0xF7;
    block[2] = 0x29;
    let mut row = Vec::new();
    super::dequantize_row(GgmlType::MXFP4, &block, &mut row).unwrap();
    assert_eq!((row[0], row[16], row[1], row[17]), (12.0, -12.0, -1.0, 2.0));
    // e = 0 and 1: ggml's subnormal halves, 2^-128 and 2^-127.
    for (e, d) in [
        (0u8, 2f32.powi(-128)),
        (1, 2f32.powi(-127)),
        (255, 2f32.powi(127)),
    ] {
        block[0] = e;
        row.clear();
        super::dequantize_row(GgmlType::MXFP4, &block, &mut row).unwrap();
        assert_eq!(row[1], -d, "e {e}");
    }
    // Packed: 17 file bytes a block become 20 (an f32 scale and the codes), not Q8_0's 36.
    let bytes = mxfp4_matrix(8, 256, 1);
    let packed = PackedMatrix::pack(GgmlType::MXFP4, &bytes, 8, 256).unwrap();
    assert_eq!(packed.data.len(), 8 * 256 / 32 * 20);
}

#[test]
fn iq4_blocks_decode_to_ggmls_table_values() {
    // IQ4_NL: d = 0.5; byte 0 holds index 15 (element 0) and 3 (element 16).
    let mut nl = vec![0u8; 18];
    nl[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
    nl[2] = 0x3F;
    let mut row = Vec::new();
    super::dequantize_row(GgmlType::IQ4NL, &nl, &mut row).unwrap();
    assert_eq!((row[0], row[16], row[1]), (56.5, -32.5, -63.5));
    // IQ4_XS: d = 1; sub-block 0's scale 1 | 2 << 4 = 33 (x1), sub-block 1's 2 | 1 << 4 = 18 (x-14).
    let mut xs = vec![0u8; 136];
    xs[..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
    xs[2..4].copy_from_slice(&0b0110u16.to_le_bytes());
    xs[4] = 0x21;
    xs[8] = 0x80;
    xs[8 + 16] = 0x0F;
    row.clear();
    super::dequantize_row(GgmlType::IQ4XS, &xs, &mut row).unwrap();
    assert_eq!(row.len(), 256);
    assert_eq!(
        (row[0], row[16], row[32], row[48]),
        (-127.0, 1.0, -1582.0, 1778.0)
    );
}

/// A GGML tensor of `ty` made by candle, its bytes, and candle's dequantization of it.
fn ggml_matrix(dtype: GgmlDType, rows: usize, cols: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let values = Tensor::from_vec(random(rows, cols, seed), (rows, cols), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&values, dtype).unwrap();
    let bytes = q.data().unwrap().into_owned();
    let dequantized = q
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    (bytes, dequantized)
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// How far packed values may be from the file's: exact for the 32-element types and the super-block
/// tiles; K-quants and IQ4_XS in 32-column tiles have their (sub-block) scales rounded to f16.
fn packing_tolerance(ty: GgmlType, values: &[f32]) -> f32 {
    match ty {
        _ if ty.tile_kind().superblock().is_some() => 0.0,
        GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K | GgmlType::IQ4XS => {
            2e-3 * max_abs(values)
        }
        // BF16 narrowed to f16: exact in f16's normal range, f16's subnormal step (6e-8) below it.
        GgmlType::BF16 => 6e-8,
        // MXFP4's subnormal scales (2^-128, 2^-127) pack as zero.
        GgmlType::MXFP4 => 2e-37,
        _ => 0.0,
    }
}

#[test]
fn packing_reproduces_candles_dequantization() {
    // 9 rows: two full groups and one padded group.
    let (rows, cols) = (9, 512);
    for (ty, dtype) in TYPES {
        let (bytes, reference) = ggml_matrix(dtype, rows, cols, 7);
        let packed = PackedMatrix::pack(ty, &bytes, rows, cols).unwrap();
        let tolerance = packing_tolerance(ty, &reference);
        for r in 0..rows {
            let row = packed.dequantize_row(r);
            for (c, (got, want)) in row.iter().zip(&reference[r * cols..]).enumerate() {
                assert!(
                    (got - want).abs() <= tolerance,
                    "{ty:?} row {r} col {c}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn raw_rows_dequantize_exactly_as_candle() {
    let (rows, cols) = (3, 512);
    for (ty, dtype) in TYPES {
        let (bytes, reference) = ggml_matrix(dtype, rows, cols, 11);
        let row_bytes = bytes.len() / rows;
        for r in 0..rows {
            let mut row = Vec::new();
            super::dequantize_row(ty, &bytes[r * row_bytes..][..row_bytes], &mut row).unwrap();
            assert_eq!(row.len(), cols);
            for (c, (got, want)) in row.iter().zip(&reference[r * cols..]).enumerate() {
                assert!(
                    got.to_bits() == want.to_bits() || got == want,
                    "{ty:?} row {r} col {c}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn every_kernel_level_matches_scalar_and_the_f32_product() {
    let (rows, cols) = (13, 768);
    let levels = SimdLevel::available();
    assert!(levels.contains(&SimdLevel::Scalar));
    #[cfg(target_arch = "aarch64")]
    assert!(levels.contains(&SimdLevel::Neon));
    for (ty, bytes) in every_type_matrix(rows, cols, 11) {
        let packed = PackedMatrix::pack(ty, &bytes, rows, cols).unwrap();
        let mut raw_row = Vec::new();
        let row_bytes = bytes.len() / rows;
        for r in 0..rows {
            raw_row.clear();
            super::dequantize_row(ty, &bytes[r * row_bytes..][..row_bytes], &mut raw_row).unwrap();
            let tolerance = packing_tolerance(ty, &raw_row);
            for (c, (got, want)) in packed.dequantize_row(r).iter().zip(&raw_row).enumerate() {
                assert!(
                    (got - want).abs() <= tolerance,
                    "{ty:?} r{r} c{c}: tiles {got}, file {want}"
                );
            }
        }
        // 1 to 13 tokens take every width of the super-block kernels (1 to 8 at once for Q4K and Q5K,
        // four for the others: 8 + 5 is 4 + 4 + 4 + 1); 40 is a prompt.
        for tokens in [1, 2, 3, 4, 5, 6, 7, 8, 13, 40] {
            let x = random(tokens, cols, 5 + tokens as u64);
            let mut scalar = vec![0f32; tokens * rows];
            packed
                .matmul_with(SimdLevel::Scalar, &x, &mut scalar)
                .unwrap();
            // The f32 product of the dequantized weights with unquantized activations: the scalar
            // kernel differs from it only by the activations' 8-bit rounding.
            for t in 0..tokens {
                for r in 0..rows {
                    let w = packed.dequantize_row(r);
                    let exact: f32 = w.iter().zip(&x[t * cols..]).map(|(a, b)| a * b).sum();
                    let norm: f32 = w
                        .iter()
                        .zip(&x[t * cols..])
                        .map(|(a, b)| (a * b).abs())
                        .sum();
                    let got = scalar[t * rows + r];
                    assert!(
                        (got - exact).abs() <= 0.01 * norm,
                        "{ty:?} t{t} r{r}: scalar {got} vs f32 {exact} (norm {norm})"
                    );
                }
            }
            for &level in &levels[1..] {
                let mut simd = vec![0f32; tokens * rows];
                packed.matmul_with(level, &x, &mut simd).unwrap();
                for (i, (a, b)) in simd.iter().zip(&scalar).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{ty:?} {level:?} tokens {tokens} output {i}: {a} vs scalar {b}"
                    );
                }
            }
        }
    }
}

/// `x` (rows of `packed.cols()`) through every level this CPU has: each matches the scalar path, and each
/// token's results are bit-identical to those it gets alone (a batch's rows must not depend on each other).
fn assert_levels_match_scalar_and_each_token_alone(ty: GgmlType, packed: &PackedMatrix, x: &[f32]) {
    let (rows, cols) = (packed.rows(), packed.cols());
    let tokens = x.len() / cols;
    let mut scalar = vec![0f32; tokens * rows];
    packed
        .matmul_with(SimdLevel::Scalar, x, &mut scalar)
        .unwrap();
    for &level in SimdLevel::available() {
        let mut got = vec![0f32; tokens * rows];
        packed.matmul_with(level, x, &mut got).unwrap();
        for (i, (a, b)) in got.iter().zip(&scalar).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{ty:?} {level:?} tokens {tokens} output {i}: {a} vs scalar {b}"
            );
        }
        for t in 0..tokens {
            let mut alone = vec![0f32; rows];
            packed
                .matmul_with(level, &x[t * cols..(t + 1) * cols], &mut alone)
                .unwrap();
            for (r, (a, b)) in alone.iter().zip(&got[t * rows..]).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{ty:?} {level:?} token {t} of {tokens}, row {r}: alone {a}, batched {b}"
                );
            }
        }
    }
}

/// `x` through every SIMD level this CPU has: all give the same bits (x86's AVX2 and AVX-512 kernels; NEON
/// with and without the dot-product instructions). With `and_scalar`, the scalar kernels' too.
fn assert_simd_levels_give_the_same_bits(
    ty: GgmlType,
    packed: &PackedMatrix,
    x: &[f32],
    and_scalar: bool,
) {
    let tokens = x.len() / packed.cols();
    let simd: Vec<(SimdLevel, Vec<f32>)> = SimdLevel::available()
        .iter()
        .filter(|&&level| and_scalar || level > SimdLevel::Scalar)
        .map(|&level| {
            let mut out = vec![0f32; tokens * packed.rows()];
            packed.matmul_with(level, x, &mut out).unwrap();
            (level, out)
        })
        .collect();
    for pair in simd.windows(2) {
        let ((low, a), (high, b)) = (&pair[0], &pair[1]);
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{ty:?} tokens {tokens} output {i}: {low:?} {a}, {high:?} {b}"
            );
        }
    }
}

/// The super-block kernels' integer sums are exact and their float steps the same at every x86 width, so
/// AVX2, the 256-bit VNNI kernels and the 512-bit ones (Q3K to Q6K: four groups a pass on `vpdpbusd`, the
/// rest at 256 bits) give the same bits: a token's results cannot depend on how a step's groups fall into
/// passes. On eleven groups (the last one short; two passes of four, then three groups the 512-bit
/// kernels leave to the 256-bit ones), every token count up to nine, 17, a prompt of 40, and 140 (a call
/// of 128 tokens, each super-block unpacked once for all of them, and one of twelve). The NEON kernels
/// (with `sdot` and without) take the scalar kernels' float steps too, so on AArch64 every level gives
/// the same bits.
#[test]
fn super_block_kernels_give_the_same_bits_at_every_width() {
    let (rows, cols) = (4 * 10 + 3, 512);
    for (ty, bytes) in every_type_matrix(rows, cols, 9) {
        if ty.tile_kind().superblock().is_none() {
            continue;
        }
        let packed = PackedMatrix::pack(ty, &bytes, rows, cols).unwrap();
        for tokens in (1..=9).chain([17, 40, 140]) {
            let x = random(tokens, cols, 80 + tokens as u64);
            assert_levels_match_scalar_and_each_token_alone(ty, &packed, &x);
            let and_scalar = cfg!(target_arch = "aarch64");
            assert_simd_levels_give_the_same_bits(ty, &packed, &x, and_scalar);
        }
    }
}

/// The 32-column tiles' kernels take up to eight tokens a call: every count from 1 to 9 (and 17, a remainder
/// after two calls) matches the scalar path at every level, on a row count that is no multiple of four;
/// and each token's results are bit-identical to those it gets alone (a batch's rows must not depend on
/// each other).
#[test]
fn tile_kernels_match_scalar_at_every_token_count_and_each_token_alone() {
    let (rows, cols) = (11, 512);
    for (ty, bytes) in every_type_matrix(rows, cols, 3) {
        if ty.tile_kind().superblock().is_some() {
            continue;
        }
        let packed = PackedMatrix::pack(ty, &bytes, rows, cols).unwrap();
        for tokens in (1..=9).chain([17]) {
            let x = random(tokens, cols, 40 + tokens as u64);
            assert_levels_match_scalar_and_each_token_alone(ty, &packed, &x);
        }
    }
}

/// F16 and BF16 calls of one to three tokens take up to four sixteen-row groups at once, and of twelve
/// tokens two: on enough groups that a task's range holds several such calls and a remainder (41 groups,
/// the last one short), every level matches the scalar path at every token count, and each token's
/// results are bit-identical to those it gets alone, where its call took four groups and in a batch one
/// or two; and AVX2's two 256-bit sums a row group and AVX-512's one 512-bit sum give the same bits.
#[test]
fn f16_calls_of_several_groups_match_scalar_and_each_token_alone() {
    let (rows, cols) = (16 * 40 + 5, 64);
    for (ty, dtype) in [
        (GgmlType::F16, GgmlDType::F16),
        (GgmlType::BF16, GgmlDType::BF16),
    ] {
        let (bytes, _) = ggml_matrix(dtype, rows, cols, 7);
        let packed = PackedMatrix::pack(ty, &bytes, rows, cols).unwrap();
        for tokens in [1, 2, 3, 4, 5, 12, 13, 25] {
            let x = random(tokens, cols, 60 + tokens as u64);
            assert_levels_match_scalar_and_each_token_alone(ty, &packed, &x);
            assert_simd_levels_give_the_same_bits(ty, &packed, &x, false);
        }
    }
}

#[test]
fn k_quants_pack_into_super_block_tiles_no_larger_than_the_file() {
    for (ty, bits) in [
        (GgmlType::Q4K, 4.625),
        (GgmlType::Q5K, 5.625),
        (GgmlType::Q6K, 6.5625),
    ] {
        let kind = ty.tile_kind();
        assert!(kind.superblock().is_some(), "{ty:?}");
        let (rows, cols) = (8, 512);
        let (bytes, _) = ggml_matrix(
            match ty {
                GgmlType::Q4K => GgmlDType::Q4K,
                GgmlType::Q5K => GgmlDType::Q5K,
                _ => GgmlDType::Q6K,
            },
            rows,
            cols,
            3,
        );
        let packed = PackedMatrix::pack(ty, &bytes, rows, cols).unwrap();
        assert_eq!(packed.data.len() as f64 * 8.0 / (rows * cols) as f64, bits);
        // A K-quant needs whole super-blocks.
        assert!(PackedMatrix::pack(ty, &bytes, 4 * rows, cols / 4).is_err());
    }
}

#[test]
fn q2k_packs_into_super_block_tiles_as_large_as_the_file_on_every_architecture() {
    let (rows, cols) = (8, 512);
    let (bytes, _) = ggml_matrix(GgmlDType::Q2K, rows, cols, 3);
    assert_eq!(GgmlType::Q2K.tile_kind(), TileKind::Q2K);
    let packed = PackedMatrix::pack(GgmlType::Q2K, &bytes, rows, cols).unwrap();
    assert_eq!(packed.data.len(), bytes.len());
    assert_eq!(packed.data.len() as f64 * 8.0 / (rows * cols) as f64, 2.625);
    assert!(PackedMatrix::pack(GgmlType::Q2K, &bytes, 4 * rows, cols / 4).is_err());
    // No 32-column form: a min per 16 values does not fit one.
    let mut blocks = Vec::new();
    assert!(ggml::decode_row(GgmlType::Q2K, &bytes[..84], &mut blocks).is_err());
}

#[test]
fn q2k_blocks_decode_to_ggmls_values() {
    // d = 0.5, dmin = 0.25; sub-block 0: scale 3, min 2; sub-block 15: scale 15, min 15.
    let mut block = vec![0u8; 84];
    block[0] = 0x23;
    block[15] = 0xFF;
    // qs[0]: value 0 = 1, value 32 = 2, value 64 = 3, value 96 = 0; qs[63] bits 6..8: value 255 = 3.
    block[16] = 0b00_11_10_01;
    block[16 + 63] = 0b11_00_00_00;
    block[80..82].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
    block[82..84].copy_from_slice(&half::f16::from_f32(0.25).to_le_bytes());
    let mut row = Vec::new();
    super::dequantize_row(GgmlType::Q2K, &block, &mut row).unwrap();
    assert_eq!(row.len(), 256);
    // 0.5 * 3 * q - 0.25 * 2 in sub-block 0; 0.5 * 15 * q - 0.25 * 15 in sub-block 15.
    assert_eq!(
        (row[0], row[1], row[255], row[254]),
        (1.0, -0.5, 18.75, -3.75)
    );
    // Sub-blocks 2 and 4 (scale and min 0): zero, whatever their quants.
    assert_eq!((row[32], row[64]), (0.0, 0.0));
}

#[test]
fn q3k_packs_into_super_block_tiles_of_3_5625_bits() {
    let (rows, cols) = (8, 512);
    let (bytes, _) = ggml_matrix(GgmlDType::Q3K, rows, cols, 3);
    assert_eq!(GgmlType::Q3K.tile_kind(), TileKind::Q3K);
    let packed =
        PackedMatrix::pack_into(TileKind::Q3K, &[(GgmlType::Q3K, &bytes, rows)], cols).unwrap();
    // 110 file bytes a row and super-block become 114: the sixteen scales unpacked to bytes.
    assert_eq!(packed.data.len(), bytes.len() / 110 * 114);
    assert_eq!(
        packed.data.len() as f64 * 8.0 / (rows * cols) as f64,
        3.5625
    );
    assert!(
        PackedMatrix::pack_into(
            TileKind::Q3K,
            &[(GgmlType::Q3K, &bytes, 4 * rows)],
            cols / 4
        )
        .is_err()
    );
}

#[test]
fn q3k_tiles_dequantize_to_ggmls_values() {
    // d = 0.5; scale 0 is 35 (x3), scale 15 is 0 (x-32), scale 5 is 63 (x31), the rest 32 (x0).
    let mut block = vec![0u8; 110];
    let mut scales = [32u8; 16];
    (scales[0], scales[15], scales[5]) = (35, 0, 63);
    for (s, &sc) in scales.iter().enumerate() {
        block[96 + s % 8] |= (sc & 0x0F) << (4 * (s / 8));
        block[104 + s % 4] |= (sc >> 4) << (2 * (s / 4));
    }
    block[108..110].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
    // Value 0: low bits 3, high bit set (3); value 1: low 2, high bit clear (-2); value 255: low 1,
    // high bit clear (-3); value 80 (sub-block 5): low 0, high bit set (0); value 81: low 0, clear (-4).
    block[32] = 3;
    block[33] = 2;
    block[32 + 63] = 1 << 6;
    block[32 + 16] = 0;
    block[0] = 1;
    block[16] = 1 << 2;
    let mut raw = Vec::new();
    super::dequantize_row(GgmlType::Q3K, &block, &mut raw).unwrap();
    assert_eq!(
        (raw[0], raw[1], raw[255], raw[80], raw[81]),
        (4.5, -3.0, 48.0, 0.0, -62.0)
    );
    let packed =
        PackedMatrix::pack_into(TileKind::Q3K, &[(GgmlType::Q3K, &block, 1)], 256).unwrap();
    assert_eq!(packed.dequantize_row(0), raw);
}

/// Q3K tiles on every architecture (AArch64 packs Q3_K into 32-column tiles by default): against
/// candle's dequantizer exactly, and every kernel level against the scalar twin, on a row count that is
/// not a multiple of four and three super-blocks.
#[test]
fn q3k_tiles_match_candle_and_every_level_the_scalar_kernel() {
    let (rows, cols) = (11, 768);
    let (bytes, reference) = ggml_matrix(GgmlDType::Q3K, rows, cols, 13);
    let packed =
        PackedMatrix::pack_into(TileKind::Q3K, &[(GgmlType::Q3K, &bytes, rows)], cols).unwrap();
    for r in 0..rows {
        assert_eq!(
            packed.dequantize_row(r),
            reference[r * cols..(r + 1) * cols],
            "row {r}"
        );
    }
    for tokens in [1, 2, 3, 4, 7, 33] {
        let x = random(tokens, cols, 17 + tokens as u64);
        let mut scalar = vec![0f32; tokens * rows];
        packed
            .matmul_with(SimdLevel::Scalar, &x, &mut scalar)
            .unwrap();
        for t in 0..tokens {
            for r in 0..rows {
                let w = &reference[r * cols..(r + 1) * cols];
                let xs = &x[t * cols..(t + 1) * cols];
                let exact: f32 = w.iter().zip(xs).map(|(a, b)| a * b).sum();
                let norm: f32 = w.iter().zip(xs).map(|(a, b)| (a * b).abs()).sum();
                let got = scalar[t * rows + r];
                assert!(
                    (got - exact).abs() <= 0.01 * norm,
                    "t{t} r{r}: scalar {got} vs f32 {exact} (norm {norm})"
                );
            }
        }
        for &level in &SimdLevel::available()[1..] {
            let mut simd = vec![0f32; tokens * rows];
            packed.matmul_with(level, &x, &mut simd).unwrap();
            for (i, (a, b)) in simd.iter().zip(&scalar).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{level:?} tokens {tokens} output {i}: {a} vs scalar {b}"
                );
            }
        }
    }
}

#[test]
fn stacked_matrices_equal_their_parts() {
    let cols = 256;
    let (q, _) = ggml_matrix(GgmlDType::Q4_1, 6, cols, 1);
    let (k, _) = ggml_matrix(GgmlDType::Q4_1, 3, cols, 2);
    let stacked =
        PackedMatrix::pack_stacked(&[(GgmlType::Q4_1, &q, 6), (GgmlType::Q4_1, &k, 3)], cols)
            .unwrap();
    let alone = PackedMatrix::pack(GgmlType::Q4_1, &k, 3, cols).unwrap();
    assert_eq!(stacked.rows(), 9);
    for r in 0..3 {
        assert_eq!(stacked.dequantize_row(6 + r), alone.dequantize_row(r));
    }
    let (v, _) = ggml_matrix(GgmlDType::Q8_0, 3, cols, 3);
    assert!(matches!(
        PackedMatrix::pack_stacked(&[(GgmlType::Q4_1, &q, 6), (GgmlType::Q8_0, &v, 3)], cols),
        Err(KernelError::MixedKinds(..))
    ));
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let (bytes, _) = ggml_matrix(GgmlDType::Q8_0, 4, 64, 1);
    assert!(PackedMatrix::pack(GgmlType::Q8_0, &bytes[1..], 4, 64).is_err());
    assert!(PackedMatrix::pack(GgmlType::Q8_0, &bytes, 4, 48).is_err());
    let packed = PackedMatrix::pack(GgmlType::Q8_0, &bytes, 4, 64).unwrap();
    let mut out = vec![0f32; 4];
    assert!(packed.matmul(&[0.0; 63], &mut out).is_err());
    assert!(packed.matmul(&[0.0; 64], &mut out[..3]).is_err());
}

/// Not a check but a measurement: the super-block kernels against the 32-column tiles on the same K-quant
/// matrix, at one token (memory-bound) and 64 (compute-bound), best of several runs. On a shared machine
/// run it on one thread, where the time taken is the caller's CPU time, which other processes barely
/// move:
/// `MODEL_RUNNER_THREADS=1 cargo test -p model-runner-kernels --lib kernel_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn kernel_speed() {
    let (rows, cols) = (2048, 4096);
    for (ty, dtype, old) in [
        (GgmlType::Q4K, GgmlDType::Q4K, TileKind::U4),
        (GgmlType::Q6K, GgmlDType::Q6K, TileKind::I8),
        (GgmlType::Q5K, GgmlDType::Q5K, TileKind::U8),
    ] {
        let (bytes, _) = ggml_matrix(dtype, rows, cols, 1);
        let new = PackedMatrix::pack(ty, &bytes, rows, cols).unwrap();
        let old = PackedMatrix::pack_into(old, &[(ty, &bytes, rows)], cols).unwrap();
        for tokens in [1, 64] {
            let x = random(tokens, cols, 2);
            let mut out = vec![0f32; tokens * rows];
            let mut best = [f64::MAX; 2];
            for _ in 0..(if tokens == 1 { 200 } else { 12 }) {
                for (i, m) in [&old, &new].into_iter().enumerate() {
                    best[i] = best[i].min(timed_seconds(|| m.matmul(&x, &mut out).unwrap()));
                }
            }
            let macs = (tokens * rows * cols) as f64;
            println!(
                "{ty:?} {tokens:>2} tokens: 32-column tiles {:.1} GMAC/s ({} MB), super-block {:.1} GMAC/s ({} MB): x{:.2}",
                macs / best[0] / 1e9,
                old.data.len() >> 20,
                macs / best[1] / 1e9,
                new.data.len() >> 20,
                best[0] / best[1]
            );
        }
    }
}

/// Not a check but a measurement: Q2_K on our super-block kernel against candle's quantized matmul (the
/// fallback Q2_K had before), on a 2048 x 8192 matrix at one token and at 64, best of several runs:
/// `cargo test -p model-runner-kernels --release --lib q2k_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn q2k_speed_against_candle() {
    use candle_core::Module;
    let (rows, cols) = (2048, 8192);
    let values = Tensor::from_vec(random(rows, cols, 1), (rows, cols), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&values, GgmlDType::Q2K).unwrap();
    let bytes = q.data().unwrap().into_owned();
    let ours = PackedMatrix::pack(GgmlType::Q2K, &bytes, rows, cols).unwrap();
    let candle = candle_core::quantized::QMatMul::from_qtensor(q).unwrap();
    for tokens in [1, 64] {
        let x = random(tokens, cols, 2);
        let xt = Tensor::from_vec(x.clone(), (tokens, cols), &Device::Cpu).unwrap();
        let mut out = vec![0f32; tokens * rows];
        let mut best = [f64::MAX; 2];
        for _ in 0..(if tokens == 1 { 50 } else { 5 }) {
            let start = std::time::Instant::now();
            let theirs = candle.forward(&xt).unwrap();
            best[0] = best[0].min(start.elapsed().as_secs_f64());
            let start = std::time::Instant::now();
            ours.matmul(&x, &mut out).unwrap();
            best[1] = best[1].min(start.elapsed().as_secs_f64());
            let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = max_abs(&theirs);
            for (a, b) in out.iter().zip(&theirs) {
                assert!((a - b).abs() <= 2e-2 * scale, "ours {a} vs candle {b}");
            }
        }
        let macs = (tokens * rows * cols) as f64;
        println!(
            "Q2K {tokens:>2} tokens x 2048x8192: candle {:.2} ms ({:.1} GMAC/s), ours {:.2} ms ({:.1} GMAC/s): x{:.2} ({} threads, {})",
            best[0] * 1e3,
            macs / best[0] / 1e9,
            best[1] * 1e3,
            macs / best[1] / 1e9,
            best[0] / best[1],
            pool().threads(),
            SimdLevel::detect().name()
        );
    }
}

/// Not a check but a measurement: MXFP4 on its own tiles against the same weights converted to Q8_0 (what
/// the loader did before), on a gpt-oss-20b expert's shape (2880 x 2880), at one token and at 16; hot
/// (one matrix, in the cache) and cold (sixteen such experts in turn, 70 to 130 MB: from memory, as a
/// real model's experts are):
/// `cargo test -p model-runner-kernels --lib mxfp4_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn mxfp4_speed_against_its_q8_0_conversion() {
    let (rows, cols) = (2880, 2880);
    let fp4 = mxfp4_matrix(rows, cols, 1);
    let mut q8 = Vec::with_capacity(fp4.len() / 17 * 34);
    for block in fp4.chunks_exact(17) {
        q8.extend_from_slice(&half::f16::from_f32(ggml::e8m0_half(block[0])).to_le_bytes());
        q8.extend(
            block[1..]
                .iter()
                .map(|c| ggml::FP4_VALUES[usize::from(c & 0x0F)] as u8),
        );
        q8.extend(
            block[1..]
                .iter()
                .map(|c| ggml::FP4_VALUES[usize::from(c >> 4)] as u8),
        );
    }
    let ours = PackedMatrix::pack(GgmlType::MXFP4, &fp4, rows, cols).unwrap();
    let converted = PackedMatrix::pack(GgmlType::Q8_0, &q8, rows, cols).unwrap();
    for (experts, tokens) in [(1, 1), (1, 16), (16, 1), (16, 16)] {
        let ours: Vec<PackedMatrix> = (0..experts).map(|_| ours.clone()).collect();
        let converted: Vec<PackedMatrix> = (0..experts).map(|_| converted.clone()).collect();
        let x = random(tokens, cols, 2);
        let (mut a, mut b) = (vec![0f32; tokens * rows], vec![0f32; tokens * rows]);
        let mut best = [f64::MAX; 2];
        for _ in 0..(if tokens == 1 { 50 } else { 10 }) {
            for (i, (ms, out)) in [(&converted, &mut b), (&ours, &mut a)]
                .into_iter()
                .enumerate()
            {
                let start = std::time::Instant::now();
                for m in ms {
                    m.matmul(&x, out).unwrap();
                }
                best[i] = best[i].min(start.elapsed().as_secs_f64() / experts as f64);
            }
        }
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 1e-3 * (1.0 + q.abs()), "{p} vs {q}");
        }
        println!(
            "MXFP4 {tokens:>2} tokens x {rows}x{cols}, {experts:>2} experts: as Q8_0 {:.3} ms ({} MB), own tiles {:.3} ms ({} MB): x{:.2}",
            best[0] * 1e3,
            (converted[0].data.len() * experts) >> 20,
            best[1] * 1e3,
            (ours[0].data.len() * experts) >> 20,
            best[0] / best[1]
        );
    }
}

/// Not a check but a measurement: the 32-column tiles (Q8_0 as I8, Q4_0 as U4, F16) on a 2048 x 4096
/// matrix at one token (decode, memory-bound) and at 64 (a prompt, compute-bound), best of several runs so
/// that a shared machine's noise mostly drops out, in GMAC/s at the detected level:
/// `MODEL_RUNNER_THREADS=1 cargo test -p model-runner-kernels --lib tile_speed -- --ignored --nocapture`
/// (on one thread the time is the caller's CPU time, as `kernel_speed`'s).
#[test]
#[ignore]
fn tile_speed() {
    let (rows, cols) = (2048, 4096);
    for (ty, dtype) in [
        (GgmlType::Q8_0, GgmlDType::Q8_0),
        (GgmlType::Q4_0, GgmlDType::Q4_0),
        (GgmlType::F16, GgmlDType::F16),
    ] {
        let (bytes, _) = ggml_matrix(dtype, rows, cols, 1);
        let packed = PackedMatrix::pack(ty, &bytes, rows, cols).unwrap();
        for tokens in [1, 64] {
            let x = random(tokens, cols, 2);
            let mut out = vec![0f32; tokens * rows];
            let mut best = f64::MAX;
            for _ in 0..(if tokens == 1 { 200 } else { 20 }) {
                best = best.min(timed_seconds(|| packed.matmul(&x, &mut out).unwrap()));
            }
            let macs = (tokens * rows * cols) as f64;
            println!(
                "{ty:?} {tokens:>2} tokens x {rows}x{cols}: {:.3} ms, {:.1} GMAC/s ({} threads, {})",
                best * 1e3,
                macs / best / 1e9,
                pool().threads(),
                SimdLevel::detect().name()
            );
        }
    }
}

/// Not a check but a measurement: Q3_K on its super-block tiles against the 32-column I8 tiles it took
/// before, on a 2048 x 8192 matrix at one token and at 64, best of several runs (on one thread, the
/// caller's CPU time, as `kernel_speed`):
/// `MODEL_RUNNER_THREADS=1 cargo test -p model-runner-kernels --lib q3k_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn q3k_speed_against_i8_tiles() {
    let (rows, cols) = (2048, 8192);
    let (bytes, _) = ggml_matrix(GgmlDType::Q3K, rows, cols, 1);
    let parts = [(GgmlType::Q3K, bytes.as_slice(), rows)];
    let old = PackedMatrix::pack_into(TileKind::I8, &parts, cols).unwrap();
    let new = PackedMatrix::pack_into(TileKind::Q3K, &parts, cols).unwrap();
    for tokens in [1, 64] {
        let x = random(tokens, cols, 2);
        let (mut a, mut b) = (vec![0f32; tokens * rows], vec![0f32; tokens * rows]);
        let mut best = [f64::MAX; 2];
        for _ in 0..(if tokens == 1 { 200 } else { 12 }) {
            for (i, (m, out)) in [(&old, &mut a), (&new, &mut b)].into_iter().enumerate() {
                best[i] = best[i].min(timed_seconds(|| m.matmul(&x, out).unwrap()));
            }
        }
        let scale = max_abs(&a);
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 2e-2 * scale, "I8 {p} vs Q3K {q}");
        }
        let macs = (tokens * rows * cols) as f64;
        println!(
            "Q3K {tokens:>2} tokens x 2048x8192: I8 tiles {:.1} GMAC/s ({} bytes), Q3K tiles {:.1} GMAC/s ({} bytes): x{:.2} ({} threads, {})",
            macs / best[0] / 1e9,
            old.data.len(),
            macs / best[1] / 1e9,
            new.data.len(),
            best[0] / best[1],
            pool().threads(),
            SimdLevel::detect().name()
        );
    }
}

/// Not a check but a measurement: a prompt's matmuls at Llama-3.2-1B's shapes (attention 2048 x 2048,
/// FFN up 8192 x 2048, FFN down 2048 x 8192) against 512 tokens on the whole pool, best of a few runs, in
/// GFLOP/s, for the types named by `MODEL_RUNNER_PROMPT_TYPES` (default F16):
/// `cargo test -p model-runner-kernels --lib prompt_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn prompt_speed() {
    let names = std::env::var("MODEL_RUNNER_PROMPT_TYPES").unwrap_or_else(|_| "F16".into());
    let tokens = 512;
    for name in names.split(',') {
        let Some(&(ty, dtype)) = TYPES.iter().find(|(t, _)| format!("{t:?}") == name) else {
            panic!("unknown type {name}");
        };
        for (rows, cols) in [(2048, 2048), (8192, 2048), (2048, 8192)] {
            let (bytes, _) = ggml_matrix(dtype, rows, cols, 1);
            let packed = PackedMatrix::pack(ty, &bytes, rows, cols).unwrap();
            let x = random(tokens, cols, 2);
            let mut out = vec![0f32; tokens * rows];
            let mut best = f64::MAX;
            for _ in 0..4 {
                best = best.min(timed_seconds(|| packed.matmul(&x, &mut out).unwrap()));
            }
            println!(
                "{ty:?} {tokens} tokens x {rows}x{cols}: {:.1} ms, {:.1} GFLOP/s ({} threads, {})",
                best * 1e3,
                2.0 * (tokens * rows * cols) as f64 / best / 1e9,
                pool().threads(),
                SimdLevel::detect().name()
            );
        }
    }
}

/// Not a check but a measurement: one-token steps through a 1B-shaped Q4_K_M model's weights (16 layers
/// of fused QKV 3072 x 2048, output 2048 x 2048 and gate/up 16384 x 2048 in Q4K, down 2048 x 8192 in
/// Q6K: ~600 MB, far past the caches), the matmuls alone on the whole pool, in GB/s of weights read;
/// then with 60 us of other work on the caller after each matmul (a decode's norms, activations and
/// attention), without and with `PackedMatrix::warm` of the next matrix first. Alternated, best and
/// median of 30: `cargo test -p model-runner-kernels --lib decode_stream_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn decode_stream_speed() {
    let layers = 16;
    let shapes = [
        (GgmlType::Q4K, GgmlDType::Q4K, 3072, 2048),
        (GgmlType::Q4K, GgmlDType::Q4K, 2048, 2048),
        (GgmlType::Q4K, GgmlDType::Q4K, 16384, 2048),
        (GgmlType::Q6K, GgmlDType::Q6K, 2048, 8192),
    ];
    let mut matrices = Vec::new();
    for &(ty, dtype, rows, cols) in &shapes {
        let (bytes, _) = ggml_matrix(dtype, rows, cols, 1);
        for _ in 0..layers {
            matrices.push(Arc::new(
                PackedMatrix::pack(ty, &bytes, rows, cols).unwrap(),
            ));
        }
    }
    // Layer by layer, as a forward pass reads them.
    let order: Vec<&Arc<PackedMatrix>> = (0..layers)
        .flat_map(|l| (0..shapes.len()).map(move |s| s * layers + l))
        .map(|i| &matrices[i])
        .collect();
    let bytes: usize = matrices.iter().map(|m| m.data.len()).sum();
    let inputs: Vec<Vec<f32>> = order.iter().map(|m| random(1, m.cols(), 2)).collect();
    let mut outputs: Vec<Vec<f32>> = order.iter().map(|m| vec![0f32; m.rows()]).collect();
    let ways = [
        ("back to back", 0, false),
        ("60 us between", 60, false),
        ("60 us between, warmed", 60, true),
    ];
    let mut times = vec![Vec::new(); ways.len()];
    for _ in 0..30 {
        for (&(_, between, warm), times) in ways.iter().zip(&mut times) {
            let start = std::time::Instant::now();
            for (k, ((m, x), out)) in order.iter().zip(&inputs).zip(&mut outputs).enumerate() {
                m.matmul(x, out).unwrap();
                if let Some(next) = order.get(k + 1).filter(|_| warm) {
                    next.warm(1);
                }
                let other_work = std::time::Instant::now();
                while other_work.elapsed().as_micros() < between {
                    std::hint::spin_loop();
                }
            }
            times.push(start.elapsed().as_secs_f64());
        }
    }
    for ((name, _, _), times) in ways.iter().zip(&mut times) {
        times.sort_by(f64::total_cmp);
        let (best, median) = (times[0], times[times.len() / 2]);
        println!(
            "{name}: {} MB, best {:.2} ms, median {:.2} ms ({:.1} GB/s) ({} threads, {})",
            bytes >> 20,
            best * 1e3,
            median * 1e3,
            bytes as f64 / median / 1e9,
            pool().threads(),
            SimdLevel::detect().name()
        );
    }
}

#[test]
fn prefetch_distance_follows_the_l1_data_cache() {
    let l1 = l1_data_cache_bytes();
    if cfg!(target_arch = "x86_64") {
        // Every x86-64 CPU this runs on names its L1 data cache in one of the two leaves.
        let bytes = l1.expect("cpuid names the L1 data cache");
        assert!(
            (16 << 10..=256 << 10).contains(&bytes),
            "L1 data cache of {bytes} bytes"
        );
    }
    for (l1_kib, ahead) in [(32, 2 << 10), (47, 2 << 10), (48, 8 << 10), (64, 8 << 10)] {
        assert_eq!(
            prefetch_distance_for(Some(l1_kib << 10)),
            ahead,
            "{l1_kib} KiB L1"
        );
    }
    assert_eq!(prefetch_distance_for(None), 2 << 10);
    assert_eq!(prefetch_ahead_bytes(), prefetch_distance_for(l1));
    eprintln!(
        "L1 data cache {l1:?}, prefetching {} bytes ahead",
        prefetch_ahead_bytes()
    );
}
