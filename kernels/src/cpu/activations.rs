//! Activations quantized for the integer kernels: 8-bit values per 32-element block with an f32 scale, and
//! the block's sum times its scale (the term that weights with an offset need); or, for the super-block
//! tiles (`superblocks`), per 256-element super-block as ggml's Q8_K: one f32 scale, and the integer sums
//! of each 16 and each 32 values (the terms that the K-quants' mins and Q6_K's offset need).

use super::pool::{SendPtr, pool};

/// `rows` activation rows of `cols` elements each, quantized per 32-element block.
#[derive(Debug, Default)]
pub struct QuantizedRows {
    pub cols: usize,
    pub qs: Vec<i8>,
    /// Scale per block.
    pub d: Vec<f32>,
    /// `d * sum(q)` per block.
    pub s: Vec<f32>,
}

/// Rows at least this many: quantize them in parallel.
const PARALLEL_ROWS: usize = 16;

impl QuantizedRows {
    /// Quantizes `x` (`rows * cols` values, row-major); `cols` is a multiple of 32.
    pub fn quantize(x: &[f32], cols: usize) -> Self {
        let rows = x.len() / cols;
        let blocks = cols / 32;
        let mut out = Self {
            cols,
            qs: vec![0; rows * cols],
            d: vec![0.0; rows * blocks],
            s: vec![0.0; rows * blocks],
        };
        let task_rows =
            |range: std::ops::Range<usize>, qs: &mut [i8], d: &mut [f32], s: &mut [f32]| {
                for (i, t) in range.enumerate() {
                    quantize_blocks(
                        &x[t * cols..(t + 1) * cols],
                        &mut qs[i * cols..(i + 1) * cols],
                        &mut d[i * blocks..(i + 1) * blocks],
                        &mut s[i * blocks..(i + 1) * blocks],
                    );
                }
            };
        if rows >= PARALLEL_ROWS {
            let pool = pool();
            let tasks = pool.threads() * 2;
            let (qs, d, s) = (
                SendPtr(out.qs.as_mut_ptr()),
                SendPtr(out.d.as_mut_ptr()),
                SendPtr(out.s.as_mut_ptr()),
            );
            pool.run(tasks, &|task| {
                let range = task * rows / tasks..(task + 1) * rows / tasks;
                let (first, n) = (range.start, range.len());
                // SAFETY: each task takes the disjoint rows `range` of buffers sized for all rows, which
                // outlive `run`.
                let (qs, d, s) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(qs.at(first * cols), n * cols),
                        std::slice::from_raw_parts_mut(d.at(first * blocks), n * blocks),
                        std::slice::from_raw_parts_mut(s.at(first * blocks), n * blocks),
                    )
                };
                task_rows(range, qs, d, s);
            });
        } else {
            task_rows(0..rows, &mut out.qs, &mut out.d, &mut out.s);
        }
        out
    }

    pub fn rows(&self) -> usize {
        self.qs.len() / self.cols.max(1)
    }

    pub fn blocks(&self) -> usize {
        self.cols / 32
    }

    /// Row `t`'s values, scales and scaled sums.
    pub fn row(&self, t: usize) -> (&[i8], &[f32], &[f32]) {
        let b = self.blocks();
        (
            &self.qs[t * self.cols..(t + 1) * self.cols],
            &self.d[t * b..(t + 1) * b],
            &self.s[t * b..(t + 1) * b],
        )
    }
}

/// ggml's Q8_0 rounding: scale by the block's largest magnitude to +-127, round half away from zero.
fn quantize_blocks(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    for (b, (xb, qb)) in x.chunks_exact(32).zip(qs.chunks_exact_mut(32)).enumerate() {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in qb.iter_mut().zip(xb) {
            let r = (v * inv).round() as i32;
            *q = r as i8;
            sum += r;
        }
        d[b] = scale;
        s[b] = scale * sum as f32;
    }
}

/// `rows` activation rows of `cols` elements each, quantized per 256-element super-block (ggml's Q8_K).
#[derive(Debug, Default)]
pub struct SuperRows {
    pub cols: usize,
    pub qs: Vec<i8>,
    /// Scale per super-block.
    pub d: Vec<f32>,
    /// Sum of each 16 values: 16 per super-block.
    pub sums16: Vec<i16>,
    /// Sum of each 32 values: 8 per super-block.
    pub sums32: Vec<i16>,
}

/// One row of `SuperRows`.
#[derive(Debug, Clone, Copy)]
pub struct SuperRow<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub sums16: &'a [i16],
    pub sums32: &'a [i16],
}

/// Super-blocks every activation row of `x` holds whole (its values, scale and both sums), and at most
/// `tiles`: how far a kernel may read rows of `tiles` super-block tiles against them.
pub fn super_blocks(tiles: usize, x: &[SuperRow]) -> usize {
    x.iter().fold(tiles, |n, x| {
        n.min(x.d.len())
            .min(x.qs.len() / 256)
            .min(x.sums16.len() / 16)
            .min(x.sums32.len() / 8)
    })
}

impl SuperRows {
    /// Quantizes `x` (`rows * cols` values, row-major); `cols` is a multiple of 256.
    pub fn quantize(x: &[f32], cols: usize) -> Self {
        let rows = x.len() / cols;
        let supers = cols / 256;
        let mut out = Self {
            cols,
            qs: vec![0; rows * cols],
            d: vec![0.0; rows * supers],
            sums16: vec![0; rows * supers * 16],
            sums32: vec![0; rows * supers * 8],
        };
        let parts = (
            SendPtr(out.qs.as_mut_ptr()),
            SendPtr(out.d.as_mut_ptr()),
            SendPtr(out.sums16.as_mut_ptr()),
            SendPtr(out.sums32.as_mut_ptr()),
        );
        let task = |range: std::ops::Range<usize>| {
            let (first, n) = (range.start, range.len());
            // SAFETY: each call takes the disjoint rows `range` of buffers sized for all rows, which
            // outlive it.
            let (qs, d, s16, s32) = unsafe {
                (
                    std::slice::from_raw_parts_mut(parts.0.at(first * cols), n * cols),
                    std::slice::from_raw_parts_mut(parts.1.at(first * supers), n * supers),
                    std::slice::from_raw_parts_mut(
                        parts.2.at(first * supers * 16),
                        n * supers * 16,
                    ),
                    std::slice::from_raw_parts_mut(parts.3.at(first * supers * 8), n * supers * 8),
                )
            };
            let values = x[first * cols..(first + n) * cols].chunks_exact(256);
            let outs = qs
                .chunks_exact_mut(256)
                .zip(d)
                .zip(s16.chunks_exact_mut(16));
            for ((xb, ((qb, db), s16)), s32) in values.zip(outs).zip(s32.chunks_exact_mut(8)) {
                quantize_super(xb, qb, db, s16, s32);
            }
        };
        if rows >= PARALLEL_ROWS {
            let tasks = pool().threads() * 2;
            pool().run(tasks, &|t| task(t * rows / tasks..(t + 1) * rows / tasks));
        } else {
            task(0..rows);
        }
        out
    }

    #[cfg(test)]
    pub fn rows(&self) -> usize {
        self.qs.len() / self.cols.max(1)
    }

    /// Row `t`.
    pub fn row(&self, t: usize) -> SuperRow<'_> {
        let s = self.cols / 256;
        SuperRow {
            qs: &self.qs[t * self.cols..(t + 1) * self.cols],
            d: &self.d[t * s..(t + 1) * s],
            sums16: &self.sums16[t * s * 16..(t + 1) * s * 16],
            sums32: &self.sums32[t * s * 8..(t + 1) * s * 8],
        }
    }
}

/// One super-block, rounded as `quantize_blocks` rounds (to +-127 by the largest magnitude).
fn quantize_super(x: &[f32], qs: &mut [i8], d: &mut f32, sums16: &mut [i16], sums32: &mut [i16]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = amax / 127.0;
    let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    for (q, v) in qs.iter_mut().zip(x) {
        *q = (v * inv).round() as i8;
    }
    *d = scale;
    for (sum, q) in sums16.iter_mut().zip(qs.chunks_exact(16)) {
        *sum = q.iter().map(|&v| v as i16).sum();
    }
    for (i, sum) in sums32.iter_mut().enumerate() {
        *sum = sums16[2 * i] + sums16[2 * i + 1];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantized_rows_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..128)
            .map(|i| ((i * 37) % 101) as f32 / 10.0 - 5.0)
            .collect();
        let q = QuantizedRows::quantize(&x, 64);
        assert_eq!(q.rows(), 2);
        for t in 0..2 {
            let (qs, d, s) = q.row(t);
            for b in 0..2 {
                let mut sum = 0i32;
                for j in 0..32 {
                    let v = x[t * 64 + b * 32 + j];
                    let back = qs[b * 32 + j] as f32 * d[b];
                    assert!((back - v).abs() <= d[b] * 0.5 + 1e-6, "{back} vs {v}");
                    sum += qs[b * 32 + j] as i32;
                }
                assert!((s[b] - d[b] * sum as f32).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn super_rows_round_trip_within_half_a_step_and_sum_their_values() {
        let x: Vec<f32> = (0..1024)
            .map(|i| ((i * 37) % 101) as f32 / 10.0 - 5.0)
            .collect();
        let q = SuperRows::quantize(&x, 512);
        assert_eq!(q.rows(), 2);
        for t in 0..2 {
            let row = q.row(t);
            for b in 0..2 {
                let d = row.d[b];
                for j in 0..256 {
                    let v = x[t * 512 + b * 256 + j];
                    let back = row.qs[b * 256 + j] as f32 * d;
                    assert!((back - v).abs() <= d * 0.5 + 1e-6, "{back} vs {v}");
                }
                for i in 0..16 {
                    let sum: i32 = row.qs[b * 256 + 16 * i..][..16]
                        .iter()
                        .map(|&v| v as i32)
                        .sum();
                    assert_eq!(row.sums16[16 * b + i] as i32, sum);
                }
                for i in 0..8 {
                    let sum: i32 = row.qs[b * 256 + 32 * i..][..32]
                        .iter()
                        .map(|&v| v as i32)
                        .sum();
                    assert_eq!(row.sums32[8 * b + i] as i32, sum);
                }
            }
        }
    }
}
