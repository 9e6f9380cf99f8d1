//! Quantized matrix products on the CPU.
//!
//! `PackedMatrix::pack` turns GGUF weight bytes into four-row tiles (sixteen-row for F16: `tiles`, or
//! `superblocks` for Q2_K to Q6_K); `PackedMatrix::matmul` takes f32 activations, quantizes them per
//! 32-element block, or per 256 for super-block tiles (`activations`), and computes every output with
//! the best integer kernel this CPU has (`SimdLevel`): `x86` and `x86_wide` (AVX-512 VNNI, AVX2),
//! `x86_superblocks` for super-block tiles, `neon` and `neon_superblocks` on AArch64, or `scalar`, the
//! reference every SIMD kernel is tested against. Work is split by row groups over `pool`, a persistent
//! pool with one thread per core whose workers spin between the loops of a step; each task runs all of
//! the step's tokens against its groups, so a weight tile is read from memory once per step however many
//! tokens share it. `elementwise` holds a step's element-wise math.

mod activations;
mod elementwise;
mod ggml;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
mod neon_superblocks;
mod pages;
mod pool;
mod scalar;
mod superblocks;
mod tiles;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_superblocks;
#[cfg(target_arch = "x86_64")]
mod x86_wide;

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

pub use activations::QuantizedRows;
use activations::{SuperRow, SuperRows};
pub use elementwise::{CEPHES_EXP_LN2, CEPHES_EXP_POLY, silu_times};
use ggml::{Block32, decode_float_row, decode_row};
pub use ggml::{FP4_VALUES, GgmlType, TileKind, dequantize_row, e8m0_half};
use pages::PageBuffer;
use pool::SendPtr;
pub use pool::{ThreadPool, pool};
use superblocks::SuperKind;
use tiles::{
    F16_GROUP_ROWS, GROUP_ROWS, group_rows, tile_bytes, tile_cols, write_f16_tile, write_tile,
};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("bad shape: {0}")]
    Shape(String),
    #[error("cannot stack {0:?} rows with {1:?} rows in one packed matrix")]
    MixedKinds(GgmlType, GgmlType),
}

/// The instruction set a kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    Scalar,
    /// AArch64 NEON.
    Neon,
    /// AArch64 NEON with the dot-product extension (`sdot`: Armv8.4, and most Armv8.2 cores).
    NeonDot,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// AVX2 plus AVX-512 VNNI on 256-bit vectors (AVX512VL, and AVX512BW for byte and word operations
    /// on all 32 vector registers).
    Avx512Vnni,
}

impl SimdLevel {
    /// Every level this CPU can run, lowest first.
    pub fn available() -> &'static [SimdLevel] {
        static LEVELS: OnceLock<Vec<SimdLevel>> = OnceLock::new();
        LEVELS.get_or_init(Self::probe)
    }

    fn probe() -> Vec<SimdLevel> {
        let mut levels = vec![SimdLevel::Scalar];
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            levels.push(SimdLevel::Neon);
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                levels.push(SimdLevel::NeonDot);
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                levels.push(SimdLevel::Avx2);
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
                {
                    levels.push(SimdLevel::Avx512Vnni);
                }
            }
        }
        levels
    }

    /// The best level, detected once. `MODEL_RUNNER_SIMD=scalar|neon|avx2` caps it (to compare paths).
    pub fn detect() -> SimdLevel {
        static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let cap = match std::env::var("MODEL_RUNNER_SIMD").as_deref() {
                Ok("scalar") => SimdLevel::Scalar,
                Ok("neon") => SimdLevel::Neon,
                Ok("avx2") => SimdLevel::Avx2,
                _ => SimdLevel::Avx512Vnni,
            };
            let best = Self::available()
                .iter()
                .copied()
                .filter(|l| *l <= cap)
                .max()
                .unwrap_or(SimdLevel::Scalar);
            tracing::debug!(simd = best.name(), "CPU kernels");
            best
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Neon => "neon",
            SimdLevel::NeonDot => "neon-dotprod",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512Vnni => "avx512vnni",
        }
    }
}

/// One activation row: quantized values, block scales, scaled block sums.
type Act<'a> = (&'a [i8], &'a [f32], &'a [f32]);

/// Four rows of tiles against any number of activation rows, into as many results. Every token goes
/// through the same arithmetic whatever else shares the call, so a token's results do not depend on the
/// step's other tokens.
type TileKernel = fn(&[u8], &[Act], &mut [[f32; 4]]);

/// Each activation row against four rows of tiles on its own.
fn each_row(out: &mut [[f32; 4]], x: &[Act], kernel: impl Fn(Act) -> [f32; 4]) {
    for (o, x) in out.iter_mut().zip(x) {
        *o = kernel(*x);
    }
}

/// The integer kernel for a tile kind; `None` for F16 tiles, which take unquantized activations.
fn kernels(level: SimdLevel, kind: TileKind) -> Option<TileKernel> {
    // SAFETY (every x86 arm): `SimdLevel::available` saw the features the kernel is compiled for, and
    // `PackedMatrix::matmul_with` passes whole tiles, activation rows of the same block count, and as many
    // results as rows.
    Some(match (level, kind) {
        (
            _,
            TileKind::F16
            | TileKind::Q2K
            | TileKind::Q3K
            | TileKind::Q4K
            | TileKind::Q5K
            | TileKind::Q6K,
        ) => {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, TileKind::U4) => |t, x, o| unsafe { x86_wide::u4_avx2(t, x, o) },
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, TileKind::I8) => |t, x, o| unsafe { x86_wide::i8_avx2(t, x, o) },
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, TileKind::U8) => |t, x, o| unsafe { x86_wide::u8_avx2(t, x, o) },
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512Vnni, TileKind::U4) => |t, x, o| unsafe { x86_wide::u4_vnni(t, x, o) },
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512Vnni, TileKind::I8) => |t, x, o| unsafe { x86_wide::i8_vnni(t, x, o) },
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512Vnni, TileKind::U8) => |t, x, o| unsafe { x86_wide::u8_vnni(t, x, o) },
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, TileKind::Fp4) => |t, x, o| unsafe { fp4_pairs::<false>(t, x, o) },
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512Vnni, TileKind::Fp4) => |t, x, o| unsafe { fp4_pairs::<true>(t, x, o) },
        #[cfg(target_arch = "aarch64")]
        (SimdLevel::Neon | SimdLevel::NeonDot, TileKind::U8) => {
            |t, x, o| each_row(o, x, |(q, d, s)| unsafe { neon::u8_group(t, q, d, s) })
        }
        #[cfg(target_arch = "aarch64")]
        (SimdLevel::Neon | SimdLevel::NeonDot, TileKind::U4) => {
            |t, x, o| each_row(o, x, |(q, d, s)| unsafe { neon::u4_group(t, q, d, s) })
        }
        #[cfg(target_arch = "aarch64")]
        (SimdLevel::Neon | SimdLevel::NeonDot, TileKind::I8) => {
            |t, x, o| each_row(o, x, |(q, d, _)| unsafe { neon::i8_group(t, q, d) })
        }
        #[cfg(target_arch = "aarch64")]
        (SimdLevel::Neon | SimdLevel::NeonDot, TileKind::Fp4) => {
            |t, x, o| each_row(o, x, |(q, d, _)| unsafe { neon::fp4_group(t, q, d) })
        }
        (_, TileKind::Fp4) => |t, x, o| each_row(o, x, |(q, d, _)| scalar::fp4_group(t, q, d)),
        (_, TileKind::U4) => |t, x, o| each_row(o, x, |(q, d, s)| scalar::u4_group(t, q, d, s)),
        (_, TileKind::U8) => |t, x, o| each_row(o, x, |(q, d, s)| scalar::u8_group(t, q, d, s)),
        (_, TileKind::I8) => |t, x, o| each_row(o, x, |(q, d, _)| scalar::i8_group(t, q, d)),
    })
}

/// The Fp4 kernels two activation rows at a time (their two-row kernel computes each row as the one-row
/// kernel does).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C (and AVX-512 VNNI for `VNNI`); the slices are as `TileKernel` takes them.
#[cfg(target_arch = "x86_64")]
unsafe fn fp4_pairs<const VNNI: bool>(tiles: &[u8], x: &[Act], out: &mut [[f32; 4]]) {
    for (x, o) in x.chunks(2).zip(out.chunks_mut(2)) {
        // SAFETY: as for this function.
        unsafe {
            match (x, o) {
                ([x, y], [a, b]) => {
                    [*a, *b] = if VNNI {
                        x86::fp4_vnni_x2(tiles, *x, *y)
                    } else {
                        x86::fp4_avx2_x2(tiles, *x, *y)
                    }
                }
                ([x, ..], [a, ..]) => {
                    *a = if VNNI {
                        x86::fp4_vnni(tiles, *x)
                    } else {
                        x86::fp4_avx2(tiles, *x)
                    }
                }
                _ => {}
            }
        }
    }
}

/// Four rows of super-block tiles (or `super_call`'s groups of them) against as many activation rows as
/// `super_call` gives, into as many results a group, token-major.
type SuperKernel = fn(&[u8], &[SuperRow], &mut [[f32; 4]]);

/// The tokens and groups a call of `super_kernel(level, kind)` takes in a step of `CALL_TOKENS` or more:
/// the 512-bit kernels (all but Q2K's) do four groups' rows in one vector and unpack each super-block
/// once for up to `SUPER_WIDE_TOKENS` tokens; the others take eight tokens and one group.
fn super_call(level: SimdLevel, kind: SuperKind) -> (usize, usize) {
    match (level, kind) {
        (
            SimdLevel::Avx512Vnni,
            SuperKind::Q3K | SuperKind::Q4K | SuperKind::Q5K | SuperKind::Q6K,
        ) if cfg!(target_arch = "x86_64") => (SUPER_WIDE_TOKENS, 4),
        _ => (CALL_TOKENS, 1),
    }
}

fn super_kernel(level: SimdLevel, kind: SuperKind) -> SuperKernel {
    // SAFETY (every x86 arm): `SimdLevel::available` saw the features the kernel is compiled for, and
    // `PackedMatrix::matmul_with` passes whole tiles (`super_call` groups at most), activation rows of
    // as many super-blocks, and 1 to 8 of them (`super_call`'s tokens for the 512-bit kernels) with as
    // many results a group.
    match (level, kind) {
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, SuperKind::Q4K) => {
            |t, x, o| unsafe { x86_superblocks::avx2::q4k(t, x, o) }
        }
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, SuperKind::Q5K) => {
            |t, x, o| unsafe { x86_superblocks::avx2::q5k(t, x, o) }
        }
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, SuperKind::Q6K) => {
            |t, x, o| unsafe { x86_superblocks::avx2::q6k(t, x, o) }
        }
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, SuperKind::Q2K) => {
            |t, x, o| unsafe { x86_superblocks::avx2::q2k(t, x, o) }
        }
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, SuperKind::Q3K) => {
            |t, x, o| unsafe { x86_superblocks::avx2::q3k(t, x, o) }
        }
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512Vnni, SuperKind::Q4K) => {
            |t, x, o| unsafe { x86_superblocks::avx512::q4k(t, x, o) }
        }
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512Vnni, SuperKind::Q5K) => {
            |t, x, o| unsafe { x86_superblocks::avx512::q5k(t, x, o) }
        }
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512Vnni, SuperKind::Q6K) => {
            |t, x, o| unsafe { x86_superblocks::avx512::q6k(t, x, o) }
        }
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512Vnni, SuperKind::Q2K) => {
            |t, x, o| unsafe { x86_superblocks::vnni::q2k(t, x, o) }
        }
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512Vnni, SuperKind::Q3K) => {
            |t, x, o| unsafe { x86_superblocks::avx512::q3k(t, x, o) }
        }
        #[cfg(target_arch = "aarch64")]
        (SimdLevel::Neon | SimdLevel::NeonDot, kind) => {
            neon_superblocks::kernel(level == SimdLevel::NeonDot, kind)
        }
        (_, SuperKind::Q3K) => |t, x, o| {
            for (o, x) in o.iter_mut().zip(x) {
                *o = scalar::q16_group(SuperKind::Q3K, t, *x);
            }
        },
        (_, SuperKind::Q2K) => |t, x, o| {
            for (o, x) in o.iter_mut().zip(x) {
                *o = scalar::q2k_group(t, *x);
            }
        },
        (_, SuperKind::Q4K) => |t, x, o| {
            for (o, x) in o.iter_mut().zip(x) {
                *o = scalar::q4k_group(SuperKind::Q4K, t, *x);
            }
        },
        (_, SuperKind::Q5K) => |t, x, o| {
            for (o, x) in o.iter_mut().zip(x) {
                *o = scalar::q4k_group(SuperKind::Q5K, t, *x);
            }
        },
        (_, SuperKind::Q6K) => |t, x, o| {
            for (o, x) in o.iter_mut().zip(x) {
                *o = scalar::q16_group(SuperKind::Q6K, t, *x);
            }
        },
    }
}

/// How far past the tile in use the x86 kernels ask for the weights' cache lines (bytes), chosen once
/// for this core. With the hardware prefetcher alone, a one-token step (which streams every weight once)
/// waited on memory: 1B Q5_K_M decode ran at 12.5 tokens/s on a Zen 3 and 17-18 with 2 KiB ahead (1-4
/// KiB were all near that). A read must be asked for about a memory latency before it is used, and a Zen
/// 5 core's kernels read at 40+ GB/s: there 8 KiB ahead took 1B Q4_K_M decode on two threads from 79 to
/// 95 tokens/s and 3B from 30.5 to 36.2 (16 KiB: the same). But the lines land in the L1 data cache,
/// and a kernel streams up to four groups of rows at once: on a Zen 4 (32 KiB L1) 8 KiB ahead evicted
/// lines before their use and 1B decode fell from 44-56 to 43 tokens/s. So 8 KiB where the L1 data
/// cache holds 48 KiB or more, 2 KiB otherwise.
pub fn prefetch_ahead_bytes() -> usize {
    static AHEAD: OnceLock<usize> = OnceLock::new();
    *AHEAD.get_or_init(|| prefetch_distance_for(l1_data_cache_bytes()))
}

/// The prefetch distance for a core whose L1 data cache holds `l1_bytes` (`None`: unknown).
fn prefetch_distance_for(l1_bytes: Option<usize>) -> usize {
    match l1_bytes {
        Some(bytes) if bytes >= 48 << 10 => 8 << 10,
        _ => 2 << 10,
    }
}

/// The first core's level-1 data cache, from `cpuid`: Intel's deterministic cache leaf (4), else AMD's
/// L1 leaf (0x8000_0005, whose ECX[31:24] is the size in KiB). `None` where neither says.
#[cfg(target_arch = "x86_64")]
fn l1_data_cache_bytes() -> Option<usize> {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    let max_leaf = __cpuid(0).eax;
    if max_leaf >= 4 {
        for subleaf in 0..8 {
            let r = __cpuid_count(4, subleaf);
            let (kind, level) = (r.eax & 0x1f, (r.eax >> 5) & 0x7);
            if kind == 0 {
                break;
            }
            if kind == 1 && level == 1 {
                let ways = (r.ebx >> 22) as usize + 1;
                let partitions = ((r.ebx >> 12) & 0x3ff) as usize + 1;
                let line = (r.ebx & 0xfff) as usize + 1;
                let sets = r.ecx as usize + 1;
                return Some(ways * partitions * line * sets);
            }
        }
    }
    if __cpuid(0x8000_0000).eax >= 0x8000_0005 {
        let kib = (__cpuid(0x8000_0005).ecx >> 24) as usize;
        if kib > 0 {
            return Some(kib << 10);
        }
    }
    None
}

#[cfg(not(target_arch = "x86_64"))]
fn l1_data_cache_bytes() -> Option<usize> {
    None
}

/// Tokens one kernel call is given (a kernel may take them in smaller groups): the integer kernels take
/// up to eight at once.
const CALL_TOKENS: usize = 8;
/// Tokens one call of the 512-bit super-block kernels is given, at most: each super-block's weights are
/// unpacked once for all of them (unpacked for each eight, they took a quarter of Q5K's instructions and
/// a third of Q6K's; 128 rather than 64 read 5-10% faster for Q5K and 10-15% for Q6K, one thread).
const SUPER_WIDE_TOKENS: usize = 128;
/// Tokens one F16 kernel call is given: a multiple of both levels' token counts (six at AVX2, twelve at
/// VNNI), so that no call ends on a short pass.
const FLOAT_CALL_TOKENS: usize = 12;
/// F16 groups one call is given, at most (when the step has at most three tokens).
const FLOAT_CALL_GROUPS: usize = 4;
/// F16 groups a call of a whole `FLOAT_CALL_TOKENS` is given: AVX-512 takes twelve tokens over two groups.
const FLOAT_PROMPT_GROUPS: usize = 2;
/// One kernel call of `matmul_with`: a row group's tiles against a run of tokens, into their results
/// (token-major, each token's rows in fours).
type GroupCall<'a> = dyn Fn(&[u8], Range<usize>, &mut [[f32; 4]]) + Sync + 'a;
/// Activation bytes one task walks all its row groups with before the next tokens', so that they stay in
/// the core's cache (L2) while the weights stream past.
const TOKEN_BLOCK_BYTES: usize = 256 << 10;

/// Whole F16 groups (sixteen rows each) against any number of unquantized activation rows, into four
/// results per token and group, token-major (rows `16g + 4q..16g + 4q + 4` of token `t` at
/// `4 * (t * groups + g) + q`; each row's arithmetic the same whatever else shares the call).
type FloatKernel = fn(&[u8], &[&[f32]], &mut [[f32; 4]]);

fn float_kernel(level: SimdLevel) -> FloatKernel {
    match level {
        // SAFETY: `SimdLevel::available` saw the features at these levels, and
        // `PackedMatrix::matmul_with` passes whole tiles, rows of `cols` values and as many results.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => |t, x, o| unsafe { x86_wide::f16_avx2(t, x, o) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512Vnni => |t, x, o| unsafe { x86_wide::f16_avx512(t, x, o) },
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon | SimdLevel::NeonDot => |t, x, o| unsafe { neon::f16(t, x, o) },
        _ => |t, x, o| {
            let fours = F16_GROUP_ROWS / GROUP_ROWS;
            let group_bytes = x
                .first()
                .map_or(0, |x| x.len() / 32 * tile_bytes(TileKind::F16));
            let groups = t.len() / group_bytes.max(1);
            for (x, o) in x.iter().zip(o.chunks_mut(groups * fours)) {
                for (tiles, o) in t
                    .chunks_exact(group_bytes.max(1))
                    .zip(o.chunks_exact_mut(fours))
                {
                    scalar::f16_group(tiles, x, o);
                }
            }
        },
    }
}

/// Seconds `f` takes, for speed measurements: on a one-thread pool (`MODEL_RUNNER_THREADS=1`), where the
/// caller does all the work, the caller's CPU time, which other processes sharing the cores barely move;
/// otherwise (or where the platform has no thread clock) wall time.
pub fn timed_seconds(f: impl FnOnce()) -> f64 {
    let (start, cpu) = (std::time::Instant::now(), thread_cpu_seconds());
    f();
    match (cpu, thread_cpu_seconds()) {
        (Some(before), Some(after)) if pool().threads() == 1 => after - before,
        _ => start.elapsed().as_secs_f64(),
    }
}

/// Seconds of CPU the calling thread has used, where the platform says.
fn thread_cpu_seconds() -> Option<f64> {
    #[cfg(target_os = "linux")]
    {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid timespec for the call to fill.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0 {
            return Some(t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9);
        }
    }
    None
}

/// A weight matrix (`rows` outputs by `cols` inputs) repacked for the integer kernels.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    kind: TileKind,
    rows: usize,
    cols: usize,
    data: PageBuffer,
}

/// Steps with fewer multiply-adds than this run on the calling thread: waking the pool costs more.
const SERIAL_WORK: usize = 1 << 16;
/// Steps of at least this many tokens are split finer over the pool.
const PROMPT_TOKENS: usize = 32;
/// Ranges of row groups a thread's share of a step of fewer tokens is cut into (`share_grain`). 4 to 32
/// streamed alike (one-token steps through 1B-shaped weights, `decode_stream_speed`).
const DECODE_CHUNKS: usize = 8;
/// Bytes of its next share a worker reads ahead (`PackedMatrix::warm`): about what one core reads in
/// the 50-100 us a one-token step spends between matmuls, and within its L2.
const WARM_BYTES: usize = 2 << 20;

impl PackedMatrix {
    /// Packs a GGUF tensor's bytes: `rows` rows of `cols` elements of type `ty`.
    pub fn pack(ty: GgmlType, raw: &[u8], rows: usize, cols: usize) -> Result<Self, KernelError> {
        Self::pack_stacked(&[(ty, raw, rows)], cols)
    }

    /// Packs several matrices with the same `cols` as one, rows stacked in order (fused Q/K/V or gate/up
    /// projections: one activation pass and one pool wake-up for all of them). Their types must pack into
    /// the same kind of tile.
    pub fn pack_stacked(
        parts: &[(GgmlType, &[u8], usize)],
        cols: usize,
    ) -> Result<Self, KernelError> {
        let Some(&(first, _, _)) = parts.first() else {
            return Err(KernelError::Shape("nothing to pack".into()));
        };
        Self::pack_into(first.tile_kind(), parts, cols)
    }

    /// `pack_stacked` into tiles of `kind` (the tests compare kinds on one matrix).
    fn pack_into(
        kind: TileKind,
        parts: &[(GgmlType, &[u8], usize)],
        cols: usize,
    ) -> Result<Self, KernelError> {
        let Some(&(first, _, _)) = parts.first() else {
            return Err(KernelError::Shape("nothing to pack".into()));
        };
        let mut sources: Vec<(GgmlType, &[u8])> = Vec::new();
        for &(ty, raw, rows) in parts {
            if ty.tile_kind() != first.tile_kind() {
                return Err(KernelError::MixedKinds(first, ty));
            }
            if cols == 0
                || !cols.is_multiple_of(ty.block_elems())
                || !cols.is_multiple_of(tile_cols(kind))
            {
                return Err(KernelError::Shape(format!(
                    "{cols} columns is not whole {ty:?} blocks"
                )));
            }
            let row_bytes = cols / ty.block_elems() * ty.block_bytes();
            if raw.len() != rows * row_bytes {
                return Err(KernelError::Shape(format!(
                    "{rows} rows of {cols} {ty:?} need {} bytes, got {}",
                    rows * row_bytes,
                    raw.len()
                )));
            }
            sources.extend(raw.chunks_exact(row_bytes).map(|row| (ty, row)));
        }
        let rows = sources.len();
        let blocks = cols / tile_cols(kind);
        let tile = tile_bytes(kind);
        let groups = rows.div_ceil(group_rows(kind));
        let mut data = PageBuffer::zeroed(groups * blocks * tile);
        data.par_chunks_mut(blocks * tile)
            .zip(sources.par_chunks(group_rows(kind)))
            .try_for_each(|(group, rows)| match (kind, kind.superblock()) {
                (_, Some(layout)) => superblocks::write_group(layout, rows, group),
                (TileKind::F16, None) => {
                    pack_float_group(rows, cols, group);
                    Ok(())
                }
                _ => pack_integer_group(kind, rows, cols, group),
            })?;
        Ok(Self {
            kind,
            rows,
            cols,
            data,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn group_bytes(&self) -> usize {
        self.cols / tile_cols(self.kind) * tile_bytes(self.kind)
    }

    /// Row `r`, dequantized from the packed tiles.
    pub fn dequantize_row(&self, r: usize) -> Vec<f32> {
        let group_rows = group_rows(self.kind);
        let group = &self.data[(r / group_rows) * self.group_bytes()..][..self.group_bytes()];
        let mut out = vec![0f32; self.cols];
        for (tile, values) in group
            .chunks_exact(tile_bytes(self.kind))
            .zip(out.chunks_exact_mut(tile_cols(self.kind)))
        {
            tiles::dequantize_tile_row(self.kind, tile, r % group_rows, values);
        }
        out
    }

    /// The row groups in each range the pool's threads share in a step of `tokens` (`ThreadPool::
    /// run_shares`), a whole number of `call_groups`. A one-token step's ranges are small, so that the
    /// threads end together; a prompt's have many tokens' work each, and ranges too small would hand
    /// the token blocks' activations from thread to thread.
    fn share_grain(&self, tokens: usize, call_groups: usize) -> usize {
        let groups = self.rows.div_ceil(group_rows(self.kind));
        if tokens * self.rows * self.cols < SERIAL_WORK {
            return groups;
        }
        let chunks_per_thread = if tokens >= PROMPT_TOKENS {
            16
        } else {
            DECODE_CHUNKS
        };
        groups
            .div_ceil(pool().threads() * chunks_per_thread)
            .next_multiple_of(call_groups)
    }

    /// Asks the pool's idle workers to read the start of their shares of this matrix's next step, of
    /// `tokens` tokens, into their caches (`ThreadPool::warm`), if that step is one bound by memory: a
    /// caller about to spend a while on other work (norms, activations, attention) before it keeps the
    /// memory busy meanwhile. Costs nothing when the pool has no idle worker.
    pub fn warm(self: &Arc<Self>, tokens: usize) {
        let pool = pool();
        let groups = self.rows.div_ceil(group_rows(self.kind));
        // As `matmul_with` will cut the step (F16 tiles are the float kernel's; the others, at fewer
        // than `CALL_TOKENS`, take a group a call).
        let call_groups = match self.kind {
            TileKind::F16 => float_call_groups(tokens),
            _ => 1,
        };
        let grain = self.share_grain(tokens, call_groups);
        if tokens >= CALL_TOKENS || grain >= groups {
            return;
        }
        let chunks = groups.div_ceil(grain);
        let parts = pool.threads().min(chunks);
        let gb = self.group_bytes();
        for p in 1..parts {
            let start = p * chunks / parts * grain * gb;
            let end = ((p + 1) * chunks / parts * grain).min(groups) * gb;
            pool.warm(p, self.clone(), start..end.min(start + WARM_BYTES));
        }
    }

    /// The packed tiles.
    fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// `out = x W^T`: `x` is `tokens x cols` and `out` `tokens x rows`, both row-major.
    pub fn matmul(&self, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
        self.matmul_with(SimdLevel::detect(), x, out)
    }

    /// `matmul` on a chosen kernel level (one this CPU has: see `SimdLevel::available`).
    pub fn matmul_with(
        &self,
        level: SimdLevel,
        x: &[f32],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let level = if SimdLevel::available().contains(&level) {
            level
        } else {
            SimdLevel::Scalar
        };
        if !x.len().is_multiple_of(self.cols) {
            return Err(KernelError::Shape(format!(
                "{} inputs are not rows of {}",
                x.len(),
                self.cols
            )));
        }
        let tokens = x.len() / self.cols;
        if out.len() != tokens * self.rows {
            return Err(KernelError::Shape(format!(
                "{tokens} tokens x {} outputs need {} values, got {}",
                self.rows,
                tokens * self.rows,
                out.len()
            )));
        }
        let groups = self.rows.div_ceil(group_rows(self.kind));
        // Four-row results a call gives per token.
        let fours = group_rows(self.kind) / GROUP_ROWS;
        let out_ptr = SendPtr(out.as_mut_ptr());
        // Token `t`'s rows from `4 * four` on (the padding rows past `rows` dropped). Whole fours are
        // fixed-size copies, which compile to plain stores (a call to `memcpy` for each token's few
        // results was 9% of a 1B Q5_K_M prompt).
        let store = |t: usize, four: usize, values: &[[f32; 4]]| {
            let row = four * GROUP_ROWS;
            let whole = values.len().min(self.rows.saturating_sub(row) / GROUP_ROWS);
            // SAFETY: `out` has `tokens * rows` values and every row written is below `rows`; each (t,
            // row) is written by the one task that owns the row's group, and `out` outlives the tasks.
            unsafe {
                let at = out_ptr.at(t * self.rows + row) as *mut [f32; 4];
                for (i, values) in values[..whole].iter().enumerate() {
                    at.add(i).write_unaligned(*values);
                }
                let rest = self
                    .rows
                    .saturating_sub(row + whole * GROUP_ROWS)
                    .min(GROUP_ROWS);
                if whole < values.len() && rest > 0 {
                    std::ptr::copy_nonoverlapping(
                        values[whole].as_ptr(),
                        at.add(whole) as *mut f32,
                        rest,
                    );
                }
            }
        };
        let gb = self.group_bytes();
        let grain = |call_groups: usize| self.share_grain(tokens, call_groups);
        // Every row group against every token, `call_tokens` and `call_groups` a call, the tokens in
        // blocks whose activations (`token_bytes` each) stay in the core's cache (L2) while a task's
        // weight tiles stream past.
        let blocked = |token_bytes: usize,
                       call_tokens: usize,
                       call_groups: usize,
                       call: &GroupCall| {
            let token_block = (TOKEN_BLOCK_BYTES / token_bytes / call_tokens).max(1) * call_tokens;
            let run = |range: Range<usize>| {
                // A call's results, as many as it can fill (a fixed buffer for the largest call
                // would be zeroed by every task of every one-token step).
                let mut results = vec![[0f32; 4]; call_tokens.min(tokens) * call_groups * fours];
                for block in (0..tokens).step_by(token_block) {
                    let block_end = (block + token_block).min(tokens);
                    for g in range.clone().step_by(call_groups) {
                        let ng = call_groups.min(range.end - g);
                        let tiles = &self.data[g * gb..(g + ng) * gb];
                        let per_token = ng * fours;
                        for t in (block..block_end).step_by(call_tokens) {
                            let n = call_tokens.min(block_end - t);
                            call(tiles, t..t + n, &mut results[..n * per_token]);
                            for (i, values) in
                                results[..n * per_token].chunks_exact(per_token).enumerate()
                            {
                                store(t + i, g * fours, values);
                            }
                        }
                    }
                }
            };
            pool().run_shares(groups, grain(call_groups), &run);
        };
        if let Some(layout) = self.kind.superblock() {
            let kernel = super_kernel(level, layout);
            let act = SuperRows::quantize(x, self.cols);
            let acts: Vec<SuperRow> = (0..tokens).map(|t| act.row(t)).collect();
            // Steps of fewer tokens than a call holds stay at one group a call: at one token the
            // 512-bit kernels' joins and split-up sums cost more than they save (1B Q4_K_M decode
            // read 10-15% slower), and few tokens are bound by memory, not the multiplies.
            let (call_tokens, call_groups) = if tokens >= CALL_TOKENS {
                super_call(level, layout)
            } else {
                (CALL_TOKENS, 1)
            };
            blocked(self.cols, call_tokens, call_groups, &|tiles, t, results| {
                kernel(tiles, &acts[t], results)
            });
            return Ok(());
        }
        match kernels(level, self.kind) {
            Some(kernel) => {
                let act = QuantizedRows::quantize(x, self.cols);
                let acts: Vec<Act> = (0..tokens).map(|t| act.row(t)).collect();
                blocked(self.cols, CALL_TOKENS, 1, &|tiles, t, results| {
                    kernel(tiles, &acts[t], results)
                });
            }
            None => {
                let float = float_kernel(level);
                let rows: Vec<&[f32]> = x.chunks_exact(self.cols).collect();
                blocked(
                    4 * self.cols,
                    FLOAT_CALL_TOKENS,
                    float_call_groups(tokens),
                    &|tiles, t, results| float(tiles, &rows[t], results),
                );
            }
        }
        Ok(())
    }
}

/// Groups a call of the float kernel takes in a step of `tokens`: a step of few tokens (a decode) gives
/// each call several, as many as keep a call's results within twelve tokens' sixteen rows (the kernel
/// needs independent sums).
fn float_call_groups(tokens: usize) -> usize {
    if tokens >= FLOAT_CALL_TOKENS {
        FLOAT_PROMPT_GROUPS
    } else {
        (FLOAT_CALL_TOKENS / tokens.max(1)).clamp(1, FLOAT_CALL_GROUPS)
    }
}

/// Writes one group's tiles (`group`: `cols / 32` of them) from up to four rows of an integer-tile type.
fn pack_integer_group(
    kind: TileKind,
    rows: &[(GgmlType, &[u8])],
    cols: usize,
    group: &mut [u8],
) -> Result<(), KernelError> {
    let mut decoded: Vec<Vec<Block32>> = Vec::with_capacity(GROUP_ROWS);
    for &(ty, row) in rows {
        let mut blocks = Vec::with_capacity(cols / 32);
        decode_row(ty, row, &mut blocks)?;
        decoded.push(blocks);
    }
    for (b, tile) in group.chunks_exact_mut(tile_bytes(kind)).enumerate() {
        let column: Vec<&Block32> = decoded.iter().map(|r| &r[b]).collect();
        write_tile(kind, &column, tile);
    }
    Ok(())
}

/// Writes one group's F16 tiles from up to sixteen F16 or BF16 rows.
fn pack_float_group(rows: &[(GgmlType, &[u8])], cols: usize, group: &mut [u8]) {
    let decoded: Vec<Vec<half::f16>> = rows
        .iter()
        .map(|&(ty, row)| {
            let mut values = Vec::with_capacity(cols);
            decode_float_row(ty, row, &mut values);
            values
        })
        .collect();
    for (b, tile) in group
        .chunks_exact_mut(tile_bytes(TileKind::F16))
        .enumerate()
    {
        let column: Vec<&[half::f16]> = decoded.iter().map(|r| &r[32 * b..32 * b + 32]).collect();
        write_f16_tile(&column, tile);
    }
}

#[cfg(test)]
mod tests;
