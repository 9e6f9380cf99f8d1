//! Micro-benchmarks of the engine's hot loops: the packed quantized matmul at every kernel level this
//! CPU has (decode: 1 token; a batch of decodes: 16; a prompt: 512), and the sampler over SmolLM2's
//! vocabulary.   cargo bench --bench kernels [-- FILTER]

use std::hint::black_box;
use std::time::Duration;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use criterion::{Criterion, Throughput};
use kernels::{GgmlType, PackedMatrix, SimdLevel};
use model_runner::engine::sampler::{Sampler, SamplingParams};

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

/// A weight matrix in `dtype`, packed.
fn packed(dtype: GgmlDType, ty: GgmlType, rows: usize, cols: usize) -> PackedMatrix {
    let w = Tensor::from_vec(values(rows * cols, 7), (rows, cols), &Device::Cpu)
        .expect("weights tensor");
    let q = QTensor::quantize(&w, dtype).expect("quantize");
    let bytes = q.data().expect("bytes");
    PackedMatrix::pack(ty, &bytes, rows, cols).expect("pack")
}

fn matmul(c: &mut Criterion) {
    // SmolLM2-135M's FFN down projection (576 outputs, 1536 inputs: whole Q4_K blocks).
    let (rows, cols) = (576, 1536);
    for (dtype, ty) in [
        (GgmlDType::Q4_1, GgmlType::Q4_1),
        (GgmlDType::Q8_0, GgmlType::Q8_0),
        (GgmlDType::Q4K, GgmlType::Q4K),
        (GgmlDType::Q2K, GgmlType::Q2K),
    ] {
        let m = packed(dtype, ty, rows, cols);
        let mut group = c.benchmark_group(format!("matmul_{ty:?}_{rows}x{cols}"));
        for tokens in [1, 16, 512] {
            let x = values(tokens * cols, 3);
            let mut out = vec![0f32; tokens * rows];
            group.throughput(Throughput::Elements((tokens * rows * cols) as u64));
            for &level in SimdLevel::available() {
                if level == SimdLevel::Scalar && tokens > 16 {
                    continue;
                }
                group.bench_function(format!("{}/{tokens}", level.name()), |b| {
                    b.iter(|| {
                        m.matmul_with(level, black_box(&x), &mut out)
                            .expect("matmul")
                    })
                });
            }
        }
        group.finish();
    }
}

fn sampler(c: &mut Criterion) {
    let logits = values(49_152, 11);
    let mut group = c.benchmark_group("sampler_49152");
    group.bench_function("greedy", |b| {
        let mut s = Sampler::new(SamplingParams::greedy());
        b.iter(|| s.sample(black_box(&logits)))
    });
    group.bench_function("top_k40_top_p0.95_min_p0.05", |b| {
        let mut s = Sampler::new(SamplingParams {
            seed: Some(1),
            ..SamplingParams::default()
        });
        b.iter(|| s.sample(black_box(&logits)))
    });
    group.finish();
}

fn main() {
    // `cargo test --all-targets` runs benches once in test mode with libtest's flags, which criterion's
    // argument parser refuses: there, run every benchmark briefly instead.
    let test_mode = std::env::args().any(|a| a.starts_with("--test-threads") || a == "--test");
    let mut c = if test_mode {
        Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_millis(10))
            .without_plots()
    } else {
        Criterion::default().configure_from_args()
    };
    matmul(&mut c);
    sampler(&mut c);
    c.final_summary();
}
