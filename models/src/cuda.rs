//! The CUDA path of the layers: our kernels (`kernels::cuda`) applied to candle tensors on a CUDA device,
//! on candle's own stream, and the device side of the paged KV cache.
//!
//! Attention on CUDA never leaves the device: RoPE, the cache write and paged attention run as our kernels
//! over the same block tables the CPU path reads. RMSNorm and the gated activation are fused kernels too
//! (candle would run the activation and the product as separate passes).

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DriverError};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{Device, Result, Shape, Storage, Tensor};
use kernels::cuda::{CudaKernelError, CudaKernels};
use kernels::reference::{GatedActivation, PagedAttentionShape};

use crate::ModelError;
use crate::batch::StepBatch;
use crate::kv_layout::{KvLayout, StepTables};

fn driver_error(e: CudaKernelError) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// A cudarc call's error as candle's, saying what was being done.
fn failed(what: &'static str) -> impl Fn(DriverError) -> candle_core::Error {
    move |e| candle_core::Error::Msg(format!("CUDA {what}: {e}"))
}

fn cuda_device(t: &Tensor) -> Result<&CudaDevice> {
    match t.device() {
        Device::Cuda(device) => Ok(device),
        other => candle_core::bail!("expected a CUDA tensor, got one on {other:?}"),
    }
}

fn kernels_for(device: &CudaDevice) -> Result<Arc<CudaKernels>> {
    CudaKernels::for_context(device.cuda_stream().context()).map_err(driver_error)
}

/// Runs `f` on a 2-D f32 tensor's rows: the device buffer from its first element, and the distance
/// between rows. Rows must be contiguous (a narrow of columns is fine; a transpose is not).
fn with_rows<R>(t: &Tensor, f: impl FnOnce(CudaView<'_, f32>, usize) -> Result<R>) -> Result<R> {
    let (rows, cols) = t.dims2()?;
    if cols > 1 && t.stride()[1] != 1 {
        return with_rows(&t.contiguous()?, f);
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(storage) = &*storage else {
        candle_core::bail!("expected a CUDA tensor");
    };
    let row_stride = if rows > 1 { layout.stride()[0] } else { cols };
    let slice = storage.as_cuda_slice::<f32>()?;
    f(slice.slice(layout.start_offset()..), row_stride)
}

fn tensor_from(slice: CudaSlice<f32>, device: &CudaDevice, shape: impl Into<Shape>) -> Tensor {
    let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, device.clone()));
    Tensor::from_storage(storage, shape, BackpropOp::none(), false)
}

/// A fresh device buffer the kernel overwrites in full (never empty: the driver refuses zero bytes).
fn output(device: &CudaDevice, len: usize) -> Result<CudaSlice<f32>> {
    // SAFETY: every launcher writes all `len` elements before anything reads them.
    unsafe { device.cuda_stream().alloc::<f32>(len.max(1)) }.map_err(failed("allocation"))
}

/// RMS norm over the last dimension of `x` (any rank), with candle's arithmetic.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let device = cuda_device(x)?;
    let dims = x.dims().to_vec();
    let cols = dims.last().copied().unwrap_or(1);
    let rows = x.elem_count() / cols.max(1);
    let flat = if dims.len() == 2 {
        x.clone()
    } else {
        x.contiguous()?.reshape((rows, cols))?
    };
    let kernels = kernels_for(device)?;
    let mut out = output(device, rows * cols)?;
    let weight = weight.contiguous()?;
    with_rows(&weight.reshape((1, cols))?, |weight, _| {
        with_rows(&flat, |x, x_stride| {
            kernels
                .rms_norm(
                    &device.cuda_stream(),
                    &mut out,
                    &x,
                    &weight.slice(..cols),
                    rows,
                    x_stride,
                    eps,
                )
                .map_err(driver_error)
        })
    })?;
    Ok(tensor_from(out, device, dims))
}

/// `act(gate) * up` for `[rows, cols]` inputs, in one pass.
pub fn gated_activation(gate: &Tensor, up: &Tensor, activation: GatedActivation) -> Result<Tensor> {
    let device = cuda_device(gate)?;
    let (rows, cols) = gate.dims2()?;
    let kernels = kernels_for(device)?;
    let mut out = output(device, rows * cols)?;
    with_rows(gate, |gate, gate_stride| {
        with_rows(up, |up, up_stride| {
            kernels
                .gated_activation(
                    &device.cuda_stream(),
                    &mut out,
                    &gate,
                    &up,
                    rows,
                    cols,
                    (gate_stride, up_stride),
                    activation,
                )
                .map_err(driver_error)
        })
    })?;
    Ok(tensor_from(out, device, (rows, cols)))
}

/// Rotary embedding of `x` (`[tokens, heads * head_dim]`); `angles` holds cos then sin, `[token][pair]`.
pub fn rope(
    x: &Tensor,
    angles: &Tensor,
    heads: usize,
    head_dim: usize,
    pairs: usize,
    neox: bool,
) -> Result<Tensor> {
    let device = cuda_device(x)?;
    let tokens = x.dim(0)?;
    let kernels = kernels_for(device)?;
    let mut out = output(device, tokens * heads * head_dim)?;
    with_rows(&angles.reshape((1, angles.elem_count()))?, |angles, _| {
        with_rows(x, |x, x_stride| {
            kernels
                .rope(
                    &device.cuda_stream(),
                    &mut out,
                    &x,
                    &angles,
                    tokens,
                    heads,
                    head_dim,
                    x_stride,
                    pairs,
                    neox,
                )
                .map_err(driver_error)
        })
    })?;
    Ok(tensor_from(out, device, (tokens, heads * head_dim)))
}

/// One step's `StepTables` in device memory.
struct DeviceTables {
    block_tables: CudaSlice<u32>,
    token_meta: CudaSlice<u32>,
    slots: CudaSlice<u32>,
    tokens: usize,
}

/// The tables of the step under way.
fn begun(step: &Option<DeviceTables>) -> Result<&DeviceTables> {
    step.as_ref()
        .ok_or_else(|| candle_core::Error::Msg("the KV cache has no step begun".into()))
}

/// The KV cache in device memory: one key and one value buffer per layer, the host cache's layout.
pub struct DeviceKv {
    device: CudaDevice,
    layout: KvLayout,
    keys: Vec<CudaSlice<f32>>,
    values: Vec<CudaSlice<f32>>,
    step: Option<DeviceTables>,
}

impl DeviceKv {
    pub fn new(device: &CudaDevice, layout: KvLayout, num_blocks: usize) -> Result<Self> {
        let stream = device.cuda_stream();
        let per_layer = num_blocks * layout.block_size * layout.token_width();
        let alloc = || {
            stream
                .alloc_zeros::<f32>(per_layer)
                .map_err(failed("allocation of the KV cache"))
        };
        let keys = (0..layout.layers).map(|_| alloc()).collect::<Result<_>>()?;
        let values = (0..layout.layers).map(|_| alloc()).collect::<Result<_>>()?;
        Ok(Self {
            device: device.clone(),
            layout,
            keys,
            values,
            step: None,
        })
    }

    /// Uploads the step's block tables, positions and slots, once for all layers.
    pub fn begin_step(&mut self, batch: &StepBatch) -> std::result::Result<(), ModelError> {
        let tables = StepTables::new(batch, self.layout.block_size)?;
        let stream = self.device.cuda_stream();
        let upload = |v: &[u32]| {
            // Never empty: cudarc cannot copy nothing.
            let v = if v.is_empty() { &[0u32][..] } else { v };
            stream.clone_htod(v).map_err(failed("copy"))
        };
        self.step = Some(DeviceTables {
            block_tables: upload(&tables.block_tables)?,
            token_meta: upload(&tables.token_meta)?,
            slots: upload(&tables.slots)?,
            tokens: tables.slots.len(),
        });
        Ok(())
    }

    /// Copies `len` floats from `src` to `dst` (disjoint ranges) in every layer's keys and values.
    pub fn copy_within(&mut self, src: usize, dst: usize, len: usize) -> Result<()> {
        let stream = self.device.cuda_stream();
        for buffer in self.keys.iter_mut().chain(self.values.iter_mut()) {
            // Split at the later range so that one side reads and the other writes.
            if src < dst {
                let (low, mut high) = buffer.split_at_mut(dst);
                let from = low.slice(src..src + len);
                let mut to = high.slice_mut(0..len);
                stream.memcpy_dtod(&from, &mut to).map_err(failed("copy"))?;
            } else {
                let (mut low, high) = buffer.split_at_mut(src);
                let from = high.slice(0..len);
                let mut to = low.slice_mut(dst..dst + len);
                stream.memcpy_dtod(&from, &mut to).map_err(failed("copy"))?;
            }
        }
        Ok(())
    }

    pub fn block_size(&self) -> usize {
        self.layout.block_size
    }

    /// Writes the step's keys and values (`[tokens, kv_heads * head_dim]`) into `layer`.
    pub fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let tokens = k.dim(0)?;
        if tokens == 0 {
            return Ok(());
        }
        let width = self.layout.token_width();
        let kernels = kernels_for(&self.device)?;
        let stream = self.device.cuda_stream();
        // Field by field: the step's tables are read while the layer's buffers are written.
        let step = begun(&self.step)?;
        if step.tokens != tokens {
            candle_core::bail!("{tokens} key rows for a step of {} tokens", step.tokens);
        }
        let (keys, values) = (&mut self.keys[layer], &mut self.values[layer]);
        with_rows(k, |k, k_stride| {
            with_rows(v, |v, v_stride| {
                kernels
                    .write_kv(
                        &stream,
                        keys,
                        values,
                        &k,
                        &v,
                        &step.slots,
                        width,
                        (k_stride, v_stride),
                    )
                    .map_err(driver_error)
            })
        })
    }

    /// Paged attention of the step's queries (`[tokens, heads * head_dim]`, after RoPE) in `layer`.
    pub fn attend(&self, layer: usize, q: &Tensor, shape: &PagedAttentionShape) -> Result<Tensor> {
        let tokens = q.dim(0)?;
        let width = shape.heads * shape.head_dim;
        if tokens == 0 {
            return Tensor::zeros((0, width), candle_core::DType::F32, q.device());
        }
        let step = begun(&self.step)?;
        let kernels = kernels_for(&self.device)?;
        let mut out = output(&self.device, tokens * width)?;
        let q = q.contiguous()?;
        with_rows(&q, |q, _| {
            kernels
                .paged_attention(
                    &self.device.cuda_stream(),
                    &mut out,
                    &q,
                    &self.keys[layer],
                    &self.values[layer],
                    &step.block_tables,
                    &step.token_meta,
                    shape,
                )
                .map_err(driver_error)
        })?;
        Ok(tensor_from(out, &self.device, (tokens, width)))
    }
}

/// Free and total bytes of the device's memory.
pub fn memory_info(device: &CudaDevice) -> Result<(usize, usize)> {
    device
        .cuda_stream()
        .context()
        .mem_get_info()
        .map_err(failed("memory info"))
}
