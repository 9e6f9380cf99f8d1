//! Our CUDA kernels: PTX compiled from `src/cuda/*.cu` by `build.rs`, loaded once per CUDA context and
//! launched through cudarc on the caller's stream (candle's, so they order with candle's own work).
//! Each kernel has a CPU twin in `reference` with the same arguments; `tests` compares the two.
//!
//! Launchers check every size against the buffers they are given before launching: a wrong shape is an
//! error here, never an out-of-bounds access on the device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, DriverError, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use crate::reference::{GatedActivation, PagedAttentionShape};

#[cfg(test)]
mod tests;

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

/// Threads per block of the paged-attention kernel: four warps share each (head, token).
const ATTENTION_THREADS: u32 = 128;
/// Widest head the attention kernel holds in registers (8 values per lane).
pub const MAX_HEAD_DIM: usize = 256;
const ELEMENTWISE_THREADS: u32 = 256;
const NORM_THREADS: u32 = 256;

#[derive(Debug, thiserror::Error)]
pub enum CudaKernelError {
    #[error("CUDA driver: {0}")]
    Driver(#[from] DriverError),
    #[error("CUDA kernel {kernel}: {reason}")]
    Shape {
        kernel: &'static str,
        reason: String,
    },
}

fn shape_error(kernel: &'static str, reason: impl Into<String>) -> CudaKernelError {
    CudaKernelError::Shape {
        kernel,
        reason: reason.into(),
    }
}

/// A size as the kernels' `int`.
fn int(kernel: &'static str, n: usize) -> Result<i32, CudaKernelError> {
    i32::try_from(n).map_err(|_| shape_error(kernel, format!("{n} does not fit a 32-bit int")))
}

/// A buffer of rows `stride` floats apart, each `cols` wide: does it hold `rows` of them?
fn check_rows(
    kernel: &'static str,
    what: &str,
    len: usize,
    rows: usize,
    cols: usize,
    stride: usize,
) -> Result<(), CudaKernelError> {
    let needed = if rows == 0 {
        0
    } else {
        (rows - 1) * stride + cols
    };
    if stride < cols || len < needed {
        return Err(shape_error(
            kernel,
            format!("{what}: {len} floats cannot hold {rows} rows of {cols} at stride {stride}"),
        ));
    }
    Ok(())
}

/// Key and value caches of the same size, a whole number of `unit`-float slots each.
fn check_caches(
    kernel: &'static str,
    keys: usize,
    values: usize,
    unit: usize,
) -> Result<(), CudaKernelError> {
    if keys != values || unit == 0 || !keys.is_multiple_of(unit) {
        return Err(shape_error(kernel, "key and value caches differ in size"));
    }
    Ok(())
}

fn elementwise_config(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n as u32).div_ceil(ELEMENTWISE_THREADS), 1, 1),
        block_dim: (ELEMENTWISE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The kernels, loaded into one CUDA context.
#[derive(Debug)]
pub struct CudaKernels {
    paged_attention: CudaFunction,
    write_kv: CudaFunction,
    rope: CudaFunction,
    rms_norm: CudaFunction,
    gated_activation: CudaFunction,
}

impl CudaKernels {
    /// The kernels of `ctx`, loading their modules on first use.
    pub fn for_context(ctx: &Arc<CudaContext>) -> Result<Arc<Self>, CudaKernelError> {
        static LOADED: OnceLock<Mutex<HashMap<usize, Arc<CudaKernels>>>> = OnceLock::new();
        let mut loaded = LOADED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = ctx.cu_ctx() as usize;
        if let Some(kernels) = loaded.get(&key) {
            return Ok(kernels.clone());
        }
        let function = |ptx: &str, name: &str| -> Result<CudaFunction, CudaKernelError> {
            Ok(ctx.load_module(Ptx::from_src(ptx))?.load_function(name)?)
        };
        let kernels = Arc::new(Self {
            paged_attention: function(ptx::ATTENTION, "paged_attention_f32")?,
            write_kv: function(ptx::ATTENTION, "write_kv_f32")?,
            rope: function(ptx::ROPE, "rope_f32")?,
            rms_norm: function(ptx::NORM, "rms_norm_f32")?,
            gated_activation: function(ptx::ACTIVATION, "gated_activation_f32")?,
        });
        loaded.insert(key, kernels.clone());
        Ok(kernels)
    }

    /// `reference::paged_attention` on the device, for `token_meta.len() / 2` tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn paged_attention(
        &self,
        stream: &CudaStream,
        out: &mut CudaSlice<f32>,
        q: &CudaView<'_, f32>,
        key_cache: &CudaSlice<f32>,
        value_cache: &CudaSlice<f32>,
        block_tables: &CudaSlice<u32>,
        token_meta: &CudaSlice<u32>,
        shape: &PagedAttentionShape,
    ) -> Result<(), CudaKernelError> {
        const K: &str = "paged_attention";
        let tokens = token_meta.len() / 2;
        if shape.kv_heads == 0 || !shape.heads.is_multiple_of(shape.kv_heads) {
            return Err(shape_error(K, "query heads must be a multiple of KV heads"));
        }
        if shape.softcap != 0.0 {
            return Err(shape_error(K, "score soft-capping is not implemented here"));
        }
        if shape.head_dim == 0 || shape.head_dim > MAX_HEAD_DIM || shape.block_size == 0 {
            return Err(shape_error(
                K,
                format!(
                    "head size {} (at most {MAX_HEAD_DIM}), block size {}",
                    shape.head_dim, shape.block_size
                ),
            ));
        }
        let width = shape.heads * shape.head_dim;
        check_rows(K, "q", q.len(), tokens, width, width)?;
        check_rows(K, "out", out.len(), tokens, width, width)?;
        check_caches(K, key_cache.len(), value_cache.len(), shape.slot_width())?;
        if tokens == 0 {
            return Ok(());
        }
        let warps = ATTENTION_THREADS as usize / 32;
        let config = LaunchConfig {
            grid_dim: (shape.heads as u32, tokens as u32, 1),
            block_dim: (ATTENTION_THREADS, 1, 1),
            shared_mem_bytes: (warps * (2 + shape.head_dim) * 4) as u32,
        };
        let (heads, kv_heads) = (int(K, shape.heads)?, int(K, shape.kv_heads)?);
        let (head_dim, block_size) = (int(K, shape.head_dim)?, int(K, shape.block_size)?);
        let window = int(K, shape.window)?;
        let mut launch = stream.launch_builder(&self.paged_attention);
        launch
            .arg(out)
            .arg(q)
            .arg(key_cache)
            .arg(value_cache)
            .arg(block_tables)
            .arg(token_meta)
            .arg(&heads)
            .arg(&kv_heads)
            .arg(&head_dim)
            .arg(&block_size)
            .arg(&window)
            .arg(&shape.scale);
        // SAFETY: the arguments match the kernel's signature; q and out hold `tokens` rows (checked
        // above). Block tables and slots come from the KV cache's own allocator, so they stay inside it.
        unsafe { launch.launch(config) }?;
        Ok(())
    }

    /// `reference::write_kv` on the device: key and value rows `k_stride`/`v_stride` apart.
    #[allow(clippy::too_many_arguments)]
    pub fn write_kv(
        &self,
        stream: &CudaStream,
        key_cache: &mut CudaSlice<f32>,
        value_cache: &mut CudaSlice<f32>,
        k: &CudaView<'_, f32>,
        v: &CudaView<'_, f32>,
        slots: &CudaSlice<u32>,
        width: usize,
        strides: (usize, usize),
    ) -> Result<(), CudaKernelError> {
        const K: &str = "write_kv";
        let tokens = slots.len();
        check_rows(K, "k", k.len(), tokens, width, strides.0)?;
        check_rows(K, "v", v.len(), tokens, width, strides.1)?;
        check_caches(K, key_cache.len(), value_cache.len(), width)?;
        if tokens == 0 {
            return Ok(());
        }
        let (tokens_i, width_i) = (int(K, tokens)?, int(K, width)?);
        let (k_stride, v_stride) = (int(K, strides.0)?, int(K, strides.1)?);
        let mut launch = stream.launch_builder(&self.write_kv);
        launch
            .arg(key_cache)
            .arg(value_cache)
            .arg(k)
            .arg(v)
            .arg(slots)
            .arg(&tokens_i)
            .arg(&width_i)
            .arg(&k_stride)
            .arg(&v_stride);
        // SAFETY: k and v hold `tokens` rows (checked); slots are cache slots from the allocator.
        unsafe { launch.launch(elementwise_config(tokens * width)) }?;
        Ok(())
    }

    /// `reference::rope` on the device; `x` rows are `x_stride` apart, `angles` is cos then sin, each
    /// `[token][pair]`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        stream: &CudaStream,
        out: &mut CudaSlice<f32>,
        x: &CudaView<'_, f32>,
        angles: &CudaView<'_, f32>,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        x_stride: usize,
        pairs: usize,
        neox: bool,
    ) -> Result<(), CudaKernelError> {
        const K: &str = "rope";
        let width = heads * head_dim;
        check_rows(K, "x", x.len(), tokens, width, x_stride)?;
        check_rows(K, "out", out.len(), tokens, width, width)?;
        if 2 * pairs > head_dim || angles.len() < 2 * tokens * pairs {
            return Err(shape_error(K, "angles do not match the heads"));
        }
        if tokens == 0 || width == 0 {
            return Ok(());
        }
        let (cos, sin) = angles.split_at(tokens * pairs);
        let (tokens_i, heads_i, head_dim_i) = (int(K, tokens)?, int(K, heads)?, int(K, head_dim)?);
        let (stride_i, pairs_i, neox_i) = (int(K, x_stride)?, int(K, pairs)?, i32::from(neox));
        let mut launch = stream.launch_builder(&self.rope);
        launch
            .arg(out)
            .arg(x)
            .arg(&cos)
            .arg(&sin)
            .arg(&tokens_i)
            .arg(&heads_i)
            .arg(&head_dim_i)
            .arg(&stride_i)
            .arg(&pairs_i)
            .arg(&neox_i);
        // SAFETY: every buffer holds what the kernel indexes (checked above).
        unsafe { launch.launch(elementwise_config(tokens * width)) }?;
        Ok(())
    }

    /// `reference::rms_norm` on the device over `rows` rows of `weight.len()`, `x_stride` apart.
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm(
        &self,
        stream: &CudaStream,
        out: &mut CudaSlice<f32>,
        x: &CudaView<'_, f32>,
        weight: &CudaView<'_, f32>,
        rows: usize,
        x_stride: usize,
        eps: f32,
    ) -> Result<(), CudaKernelError> {
        const K: &str = "rms_norm";
        let cols = weight.len();
        check_rows(K, "x", x.len(), rows, cols, x_stride)?;
        check_rows(K, "out", out.len(), rows, cols, cols)?;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let (cols_i, stride_i) = (int(K, cols)?, int(K, x_stride)?);
        let config = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (NORM_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = stream.launch_builder(&self.rms_norm);
        launch
            .arg(out)
            .arg(x)
            .arg(weight)
            .arg(&cols_i)
            .arg(&stride_i)
            .arg(&eps);
        // SAFETY: x and out hold `rows` rows of `cols` (checked).
        unsafe { launch.launch(config) }?;
        Ok(())
    }

    /// `reference::gated_activation` on the device: `rows` rows of `cols`, gate and up rows at their
    /// own strides (the halves of one fused projection work in place).
    #[allow(clippy::too_many_arguments)]
    pub fn gated_activation(
        &self,
        stream: &CudaStream,
        out: &mut CudaSlice<f32>,
        gate: &CudaView<'_, f32>,
        up: &CudaView<'_, f32>,
        rows: usize,
        cols: usize,
        strides: (usize, usize),
        activation: GatedActivation,
    ) -> Result<(), CudaKernelError> {
        const K: &str = "gated_activation";
        check_rows(K, "gate", gate.len(), rows, cols, strides.0)?;
        check_rows(K, "up", up.len(), rows, cols, strides.1)?;
        check_rows(K, "out", out.len(), rows, cols, cols)?;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let (rows_i, cols_i) = (int(K, rows)?, int(K, cols)?);
        let (gate_stride, up_stride) = (int(K, strides.0)?, int(K, strides.1)?);
        let code = activation.code();
        let mut launch = stream.launch_builder(&self.gated_activation);
        launch
            .arg(out)
            .arg(gate)
            .arg(up)
            .arg(&rows_i)
            .arg(&cols_i)
            .arg(&gate_stride)
            .arg(&up_stride)
            .arg(&code);
        // SAFETY: gate, up and out hold `rows` rows of `cols` (checked).
        unsafe { launch.launch(elementwise_config(rows * cols)) }?;
        Ok(())
    }
}
