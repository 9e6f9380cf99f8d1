//! Each kernel against its CPU twin, on the first GPU. Without one, each test says so and passes: the
//! twins themselves are checked against the engine's CPU path in the models crate.

use super::*;
use crate::reference;

fn gpu() -> Option<(Arc<CudaKernels>, Arc<CudaStream>)> {
    let ctx = match CudaContext::new(0) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            return None;
        }
    };
    let kernels = CudaKernels::for_context(&ctx).expect("the PTX loads");
    Some((kernels, ctx.default_stream()))
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn assert_close(gpu: &[f32], cpu: &[f32], tolerance: f32) {
    assert_eq!(gpu.len(), cpu.len());
    let worst = gpu
        .iter()
        .zip(cpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= tolerance,
        "largest difference {worst} > {tolerance}"
    );
}

/// Sequences of `lengths` tokens, all of them new this step, over shuffled blocks.
fn attention_case(shape: PagedAttentionShape, lengths: &[usize]) {
    let Some((kernels, stream)) = gpu() else {
        return;
    };
    let blocks_needed: usize = lengths.iter().map(|l| l.div_ceil(shape.block_size)).sum();
    let num_blocks = blocks_needed + 3;
    // Blocks in reverse, so that a wrong table lookup cannot pass by luck.
    let order: Vec<u32> = (0..num_blocks as u32).rev().collect();
    let (mut tables, mut meta) = (Vec::new(), Vec::new());
    let mut next = 0;
    for &len in lengths {
        let table_start = tables.len() as u32;
        for _ in 0..len.div_ceil(shape.block_size) {
            tables.push(order[next]);
            next += 1;
        }
        for p in 0..len as u32 {
            meta.extend([table_start, p]);
        }
    }
    let tokens = meta.len() / 2;
    let cache_len = num_blocks * shape.block_size * shape.slot_width();
    let keys = values(cache_len, 1);
    let vals = values(cache_len, 2);
    let q = values(tokens * shape.heads * shape.head_dim, 3);
    let mut expected = vec![0f32; q.len()];
    reference::paged_attention(&mut expected, &q, &keys, &vals, &tables, &meta, &shape);

    let d_keys = stream.clone_htod(&keys).unwrap();
    let d_vals = stream.clone_htod(&vals).unwrap();
    let d_q = stream.clone_htod(&q).unwrap();
    let d_tables = stream.clone_htod(&tables).unwrap();
    let d_meta = stream.clone_htod(&meta).unwrap();
    let mut d_out = stream.alloc_zeros::<f32>(q.len()).unwrap();
    kernels
        .paged_attention(
            &stream,
            &mut d_out,
            &d_q.as_view(),
            &d_keys,
            &d_vals,
            &d_tables,
            &d_meta,
            &shape,
        )
        .unwrap();
    assert_close(&stream.clone_dtoh(&d_out).unwrap(), &expected, 1e-4);
}

#[test]
fn paged_attention_matches_its_twin_for_smollm2_heads() {
    let shape = PagedAttentionShape {
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        block_size: 16,
        window: 0,
        scale: 0.125,
        softcap: 0.0,
    };
    attention_case(shape, &[1, 17, 70]);
}

#[test]
fn paged_attention_matches_its_twin_with_wide_heads_and_a_window() {
    let shape = PagedAttentionShape {
        heads: 4,
        kv_heads: 1,
        head_dim: 256,
        block_size: 16,
        window: 20,
        scale: 0.0625,
        softcap: 0.0,
    };
    attention_case(shape, &[45, 3]);
}

#[test]
fn paged_attention_refuses_heads_wider_than_its_registers() {
    let Some((kernels, stream)) = gpu() else {
        return;
    };
    let shape = PagedAttentionShape {
        heads: 1,
        kv_heads: 1,
        head_dim: 512,
        block_size: 16,
        window: 0,
        scale: 1.0,
        softcap: 0.0,
    };
    let buffer = stream.alloc_zeros::<f32>(16 * 512).unwrap();
    let meta = stream.clone_htod(&[0u32, 0]).unwrap();
    let mut out = stream.alloc_zeros::<f32>(512).unwrap();
    let result = kernels.paged_attention(
        &stream,
        &mut out,
        &buffer.as_view(),
        &buffer,
        &buffer,
        &meta,
        &meta,
        &shape,
    );
    assert!(matches!(result, Err(CudaKernelError::Shape { .. })));
}

#[test]
fn write_kv_matches_its_twin_from_strided_rows() {
    let Some((kernels, stream)) = gpu() else {
        return;
    };
    let (width, tokens, stride) = (192, 5, 192 * 3);
    let fused = values(tokens * stride, 4);
    let slots = [7u32, 0, 31, 16, 2];
    let (mut keys, mut vals) = (vec![0f32; 32 * width], vec![0f32; 32 * width]);
    let row = |t: usize, part: usize| fused[t * stride + part * width..][..width].to_vec();
    let k: Vec<f32> = (0..tokens).flat_map(|t| row(t, 1)).collect();
    let v: Vec<f32> = (0..tokens).flat_map(|t| row(t, 2)).collect();
    reference::write_kv(&mut keys, &mut vals, &k, &v, &slots, width);

    let d_fused = stream.clone_htod(&fused).unwrap();
    let d_slots = stream.clone_htod(&slots).unwrap();
    let mut d_keys = stream.alloc_zeros::<f32>(keys.len()).unwrap();
    let mut d_vals = stream.alloc_zeros::<f32>(vals.len()).unwrap();
    kernels
        .write_kv(
            &stream,
            &mut d_keys,
            &mut d_vals,
            &d_fused.slice(width..),
            &d_fused.slice(2 * width..),
            &d_slots,
            width,
            (stride, stride),
        )
        .unwrap();
    assert_eq!(stream.clone_dtoh(&d_keys).unwrap(), keys);
    assert_eq!(stream.clone_dtoh(&d_vals).unwrap(), vals);
}

#[test]
fn rope_matches_its_twin_in_both_styles_and_partial_rotation() {
    let Some((kernels, stream)) = gpu() else {
        return;
    };
    let (tokens, heads, head_dim) = (6, 3, 64);
    for (pairs, neox) in [(32, true), (32, false), (16, true)] {
        let x = values(tokens * heads * head_dim, 5);
        let angles: Vec<f32> = (0..tokens * pairs)
            .map(|i| (i as f32 * 0.37).cos())
            .chain((0..tokens * pairs).map(|i| (i as f32 * 0.37).sin()))
            .collect();
        let (cos, sin) = angles.split_at(tokens * pairs);
        let mut expected = vec![0f32; x.len()];
        reference::rope(&mut expected, &x, cos, sin, heads, head_dim, pairs, neox);

        let d_x = stream.clone_htod(&x).unwrap();
        let d_angles = stream.clone_htod(&angles).unwrap();
        let mut d_out = stream.alloc_zeros::<f32>(x.len()).unwrap();
        kernels
            .rope(
                &stream,
                &mut d_out,
                &d_x.as_view(),
                &d_angles.as_view(),
                tokens,
                heads,
                head_dim,
                heads * head_dim,
                pairs,
                neox,
            )
            .unwrap();
        assert_close(&stream.clone_dtoh(&d_out).unwrap(), &expected, 1e-6);
    }
}

#[test]
fn rms_norm_matches_its_twin() {
    let Some((kernels, stream)) = gpu() else {
        return;
    };
    let (rows, cols) = (7, 576);
    let x = values(rows * cols, 6);
    let weight = values(cols, 7);
    let mut expected = vec![0f32; x.len()];
    reference::rms_norm(&mut expected, &x, &weight, 1e-5);

    let d_x = stream.clone_htod(&x).unwrap();
    let d_weight = stream.clone_htod(&weight).unwrap();
    let mut d_out = stream.alloc_zeros::<f32>(x.len()).unwrap();
    kernels
        .rms_norm(
            &stream,
            &mut d_out,
            &d_x.as_view(),
            &d_weight.as_view(),
            rows,
            cols,
            1e-5,
        )
        .unwrap();
    assert_close(&stream.clone_dtoh(&d_out).unwrap(), &expected, 1e-5);
}

#[test]
fn gated_activation_matches_its_twin_on_fused_halves() {
    let Some((kernels, stream)) = gpu() else {
        return;
    };
    let (rows, cols) = (4, 1536);
    let fused = values(rows * 2 * cols, 8);
    let gate: Vec<f32> = fused
        .chunks(2 * cols)
        .flat_map(|r| r[..cols].to_vec())
        .collect();
    let up: Vec<f32> = fused
        .chunks(2 * cols)
        .flat_map(|r| r[cols..].to_vec())
        .collect();
    for activation in [GatedActivation::Silu, GatedActivation::GeluTanh] {
        let mut expected = vec![0f32; rows * cols];
        reference::gated_activation(&mut expected, &gate, &up, activation);
        let d_fused = stream.clone_htod(&fused).unwrap();
        let mut d_out = stream.alloc_zeros::<f32>(rows * cols).unwrap();
        kernels
            .gated_activation(
                &stream,
                &mut d_out,
                &d_fused.as_view(),
                &d_fused.slice(cols..),
                rows,
                cols,
                (2 * cols, 2 * cols),
                activation,
            )
            .unwrap();
        assert_close(&stream.clone_dtoh(&d_out).unwrap(), &expected, 1e-5);
    }
}
