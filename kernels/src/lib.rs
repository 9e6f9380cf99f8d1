//! Compute kernels for model-runner's engine.
//!
//! `cpu`: quantized matrix products. GGUF weights (Q4_0 to Q8_0, Q2_K to Q6_K, IQ4_NL, IQ4_XS, MXFP4,
//! F16, BF16) are repacked at load into tiles of four interleaved rows (sixteen column-major for F16 and
//! BF16; the K-quants keeping their 256-value super-blocks whole); activations are quantized to 8 bits
//! per 32-element block (per 256 for the K-quants' tiles); the product runs on integer SIMD (AVX-512 VNNI,
//! AVX2, NEON with or without `sdot`, or a scalar path) picked at run time from the CPU's
//! features, split by output rows over a persistent thread pool. A step with many tokens reads each weight
//! tile once for all of them.

//!
//! `cuda` (feature `cuda`): paged attention over the block-table KV cache, the cache write, RoPE, RMSNorm
//! and the gated activations, compiled from `src/cuda/*.cu` to PTX by `build.rs` and launched through
//! cudarc. `reference` holds their CPU twins.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod reference;

pub use cpu::{
    FP4_VALUES, GgmlType, KernelError, PackedMatrix, QuantizedRows, SimdLevel, ThreadPool,
    TileKind, dequantize_row, e8m0_half, pool, prefetch_ahead_bytes, timed_seconds,
};
