//! Reading a GGUF file's metadata and tensors, with errors that name what is missing.
//!
//! The file is memory-mapped: weights our kernels repack are read from the mapping straight into their
//! tiles (no transient copy of the tensor), and the mapped pages are released as each is packed, so the
//! load's peak memory is the packed model plus one tensor group. Weights used as the file has them (a
//! quantized token-embedding table) keep the mapping and only the rows looked up become resident.
//!
//! The file is untrusted: before candle parses it, `gguf::GgufHeader` (the one header reader) checks it
//! whole, with checked arithmetic (alignment, every tensor's range within the file), and we refuse what
//! candle would hold at many times its size (metadata arrays of millions of elements, which candle keeps
//! as one enum per element).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::Cursor;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use kernels::{GgmlType, PackedMatrix};

use crate::ModelError;
use crate::gguf::{GgufError, GgufHeader, GgufValue};

/// An open GGUF file: its metadata, its tensor directory, and its tensors' bytes mapped.
pub struct GgufWeights {
    metadata: HashMap<String, gguf_file::Value>,
    tensors: HashMap<String, TensorEntry>,
    /// One mapping per file: a split model (`-00001-of-00003.gguf`) has its tensors in several.
    shards: Vec<Arc<memmap2::Mmap>>,
    device: Device,
    architecture: String,
    /// Keep f32 copies of linear weights for steps with many rows (small models on CPU only).
    dense_linears: bool,
    /// Repack weights of the types our CPU kernels run (`MODEL_RUNNER_KERNELS=candle` turns it off).
    packed_kernels: bool,
    /// Types already reported as running on candle's matmul (said once per type, not per tensor).
    fallback_types: Vec<u32>,
}

/// One tensor as our header reader found it (it knows every GGML type, candle's reader does not).
#[derive(Debug, Clone)]
struct TensorEntry {
    ggml_type: u32,
    /// Candle's order: `[rows, cols]` for a matrix.
    dims: Vec<usize>,
    at: Location,
}

/// Where a tensor's bytes lie: which file of the model, and where in it.
#[derive(Debug, Clone)]
struct Location {
    shard: usize,
    range: Range<usize>,
}

/// Largest model (all tensors as f32) whose linear weights also get a dense f32 copy.
const DENSE_LIMIT_BYTES: u64 = 1 << 30;
/// Longest metadata array accepted (real vocabularies and merge lists stay under a million).
pub const MAX_METADATA_ARRAY_LEN: u64 = 1 << 22;
/// Most array elements in all of a header's metadata: candle holds each as a 32-byte value.
pub const MAX_METADATA_ARRAY_ELEMENTS: u64 = 1 << 24;

impl GgufWeights {
    pub fn open(path: &Path, device: &Device) -> Result<Self, ModelError> {
        Self::open_shards(&[path], device)
    }

    /// A model in one GGUF, or split across several (llama.cpp's `gguf-split`: every file a GGUF of its
    /// own tensors, `split.no` / `split.count` in each, the model's metadata in the first), in any order.
    pub fn open_shards(paths: &[&Path], device: &Device) -> Result<Self, ModelError> {
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let header = check_header(path)?;
            let map = map_file(path)?;
            let metadata = read_metadata(path, &map, &header)?;
            files.push((*path, header, map, metadata));
        }
        if files.len() > 1 {
            order_shards(&mut files)?;
        }
        let mut tensors = HashMap::new();
        for (shard, (path, header, map, _)) in files.iter().enumerate() {
            for (name, entry) in tensor_entries(path, header, map.len(), shard)? {
                if tensors.contains_key(&name) {
                    return Err(ModelError::Corrupt {
                        path: path.display().to_string(),
                        reason: format!("tensor {name} is in more than one file of the model"),
                    });
                }
                tensors.insert(name, entry);
            }
        }
        let f32_bytes: u64 = tensors
            .values()
            .map(|t| (t.dims.iter().product::<usize>() as u64).saturating_mul(4))
            .fold(0, u64::saturating_add);
        let mut shards = Vec::with_capacity(files.len());
        let mut metadata = None;
        for (_, _, map, file_metadata) in files {
            metadata.get_or_insert(file_metadata);
            shards.push(Arc::new(map));
        }
        let metadata =
            metadata.ok_or_else(|| ModelError::Unsupported("a model with no files".into()))?;
        let architecture = match metadata.get("general.architecture") {
            Some(gguf_file::Value::String(a)) => a.clone(),
            _ => return Err(ModelError::MissingMetadata("general.architecture".into())),
        };
        let dense_linears = device.is_cpu()
            && f32_bytes <= DENSE_LIMIT_BYTES
            && std::env::var("MODEL_RUNNER_DENSE_LINEARS").map_or(true, |v| v != "0");
        let packed_kernels = device.is_cpu()
            && std::env::var("MODEL_RUNNER_KERNELS").map_or(true, |v| v != "candle");
        let mxfp4 = tensors
            .values()
            .filter(|t| t.ggml_type == crate::mxfp4::MXFP4)
            .count();
        if mxfp4 > 0 && !packed_kernels {
            // Our CPU kernels run MXFP4 as it is; candle (another device, or the kernels turned off)
            // takes it converted.
            tracing::warn!(
                tensors = mxfp4,
                "MXFP4 weights are converted to Q8_0 for candle's matmul (exact for real weights' \
                 scales, twice their memory)"
            );
        }
        Ok(Self {
            metadata,
            tensors,
            shards,
            device: device.clone(),
            architecture,
            dense_linears,
            packed_kernels,
            fallback_types: Vec::new(),
        })
    }

    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn metadata(&self) -> &HashMap<String, gguf_file::Value> {
        &self.metadata
    }

    pub fn into_metadata(self) -> HashMap<String, gguf_file::Value> {
        self.metadata
    }

    fn value(&self, key: &str) -> Result<&gguf_file::Value, ModelError> {
        self.metadata
            .get(key)
            .ok_or_else(|| ModelError::MissingMetadata(key.to_string()))
    }

    /// `<architecture>.<key>` as an unsigned integer (GGUF writers use several integer widths).
    pub fn arch_usize(&self, key: &str) -> Result<usize, ModelError> {
        let full = format!("{}.{key}", self.architecture);
        let value = self.value(&full)?;
        let n = match value {
            gguf_file::Value::U8(v) => *v as u64,
            gguf_file::Value::U16(v) => *v as u64,
            gguf_file::Value::U32(v) => *v as u64,
            gguf_file::Value::U64(v) => *v,
            gguf_file::Value::I32(v) if *v >= 0 => *v as u64,
            gguf_file::Value::I64(v) if *v >= 0 => *v as u64,
            _ => return Err(ModelError::BadMetadata(full)),
        };
        Ok(n as usize)
    }

    pub fn arch_usize_or(&self, key: &str, default: usize) -> Result<usize, ModelError> {
        match self.arch_usize(key) {
            Err(ModelError::MissingMetadata(_)) => Ok(default),
            other => other,
        }
    }

    pub fn arch_f32_or(&self, key: &str, default: f32) -> Result<f32, ModelError> {
        let full = format!("{}.{key}", self.architecture);
        match self.metadata.get(&full) {
            None => Ok(default),
            Some(gguf_file::Value::F32(v)) => Ok(*v),
            Some(gguf_file::Value::F64(v)) => Ok(*v as f32),
            Some(_) => Err(ModelError::BadMetadata(full)),
        }
    }

    /// `<architecture>.<key>` as a float, which the file must have.
    pub fn arch_f32(&self, key: &str) -> Result<f32, ModelError> {
        let full = format!("{}.{key}", self.architecture);
        match self.value(&full)? {
            gguf_file::Value::F32(v) => Ok(*v),
            gguf_file::Value::F64(v) => Ok(*v as f32),
            _ => Err(ModelError::BadMetadata(full)),
        }
    }

    pub fn arch_bool_or(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        let full = format!("{}.{key}", self.architecture);
        match self.metadata.get(&full) {
            None => Ok(default),
            Some(gguf_file::Value::Bool(v)) => Ok(*v),
            Some(_) => Err(ModelError::BadMetadata(full)),
        }
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A tensor's dimensions as candle orders them (`[rows, cols]` for a matrix), if the file has it.
    pub fn tensor_dims(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.dims.as_slice())
    }

    /// A tensor's GGML type and where its bytes lie.
    fn tensor_at(&self, name: &str) -> Result<(u32, Location), ModelError> {
        self.tensors
            .get(name)
            .map(|t| (t.ggml_type, t.at.clone()))
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    fn bytes(&self, at: &Location) -> &[u8] {
        &self.shards[at.shard][at.range.clone()]
    }

    /// The file's bytes of each of `names`, in order (the parts of one packed matrix): the kernels take
    /// every type they run as the file has it, MXFP4 included.
    fn weights_bytes(&self, names: &[&str]) -> Result<Vec<&[u8]>, ModelError> {
        names
            .iter()
            .map(|name| self.tensor_at(name).map(|(_, at)| self.bytes(&at)))
            .collect()
    }

    /// A tensor's bytes as candle takes them, with their GGML type: as the file has them, or, for MXFP4
    /// (which candle does not run), converted to Q8_0 (`crate::mxfp4`).
    fn weight_bytes(&self, name: &str) -> Result<(u32, Cow<'_, [u8]>), ModelError> {
        let (ggml_type, at) = self.tensor_at(name)?;
        let raw = self.bytes(&at);
        if ggml_type != crate::mxfp4::MXFP4 {
            return Ok((ggml_type, Cow::Borrowed(raw)));
        }
        let (q8, inexact) = crate::mxfp4::to_q8_0(raw).map_err(|e| ModelError::Tensor {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        if inexact > 0 {
            tracing::warn!(
                tensor = name,
                blocks = inexact,
                "MXFP4 blocks whose scale f16 cannot hold were requantized to Q8_0 (not exact)"
            );
        }
        Ok((crate::mxfp4::Q8_0, Cow::Owned(q8)))
    }

    /// Gives the mapped pages at `at` back to the page cache: what was packed from them is no longer
    /// read there, and without this the pages would count in the process's memory for its lifetime.
    fn release(&self, at: Location) {
        #[cfg(unix)]
        {
            // SAFETY: the mapping is read-only and file-backed, so dropped pages read back from the file
            // unchanged if anything touches them again.
            let released = unsafe {
                self.shards[at.shard].unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    at.range.start,
                    at.range.len(),
                )
            };
            if let Err(e) = released {
                tracing::debug!(error = %e, "could not release mapped pages");
            }
        }
        #[cfg(not(unix))]
        let _ = at;
    }

    /// A tensor as candle holds it. Types only our kernels decode (the 4-bit i-quants) come as f32:
    /// candle runs them only where our kernels do not (another device, or packing turned off).
    pub fn qtensor(&mut self, name: &str) -> Result<QTensor, ModelError> {
        let at = self.tensor_at(name)?.1;
        let dims = self.tensor_dims(name).unwrap_or_default().to_vec();
        let tensor_error = |reason: String| ModelError::Tensor {
            name: name.to_string(),
            reason,
        };
        let (ggml_type, raw) = self.weight_bytes(name)?;
        let raw = raw.as_ref();
        let tensor = match (candle_dtype(ggml_type), kernel_type(ggml_type)) {
            (Some(dtype), _) => {
                candle_core::quantized::ggml_file::qtensor_from_ggml(dtype, raw, dims, &self.device)
                    .map_err(|e| tensor_error(e.to_string()))
            }
            (None, Some(ty)) => {
                let mut values = Vec::new();
                kernels::dequantize_row(ty, raw, &mut values)
                    .map_err(|e| tensor_error(e.to_string()))?;
                Tensor::from_vec(values, dims, &self.device)
                    .and_then(|t| QTensor::quantize(&t, GgmlDType::F32))
                    .map_err(|e| tensor_error(e.to_string()))
            }
            (None, None) => Err(tensor_error(format!(
                "type {} is not one this runner loads",
                crate::gguf::ggml_type_name(ggml_type).unwrap_or("unknown")
            ))),
        };
        self.release(at);
        tensor
    }

    /// A 2-D tensor used where it lies in the file, for a type whose rows the kernels decode; `None`
    /// off the CPU or for other types.
    pub fn mapped_matrix(&self, name: &str) -> Result<Option<MappedMatrix>, ModelError> {
        let (dtype, at) = self.tensor_at(name)?;
        let (Some(ty), Some(&[rows, cols])) = (kernel_type(dtype), self.tensor_dims(name)) else {
            return Ok(None);
        };
        if !self.device.is_cpu() || rows == 0 || !cols.is_multiple_of(ty.block_elems()) {
            return Ok(None);
        }
        Ok(Some(MappedMatrix {
            map: self.shards[at.shard].clone(),
            ty,
            row_bytes: at.range.len() / rows,
            range: at.range,
            rows,
            cols,
        }))
    }

    pub fn qmatmul(&mut self, name: &str) -> Result<QMatMul, ModelError> {
        Ok(QMatMul::from_qtensor(self.qtensor(name)?)?)
    }

    /// Several weights of the same input width packed as one matrix, rows stacked in order; `None` when
    /// the device is not the CPU, or a type is not one the kernels run, or the types need different tiles.
    pub fn packed(&mut self, names: &[&str]) -> Result<Option<Arc<PackedMatrix>>, ModelError> {
        let Some((tensors, cols)) = self.kernel_sources(names, Stacking::Matrices)? else {
            return Ok(None);
        };
        let bytes = self.weights_bytes(names)?;
        let parts: Vec<(GgmlType, &[u8], usize)> = tensors
            .iter()
            .zip(&bytes)
            .map(|((ty, _, rows), raw)| (*ty, *raw, *rows))
            .collect();
        let packed = pack_parts(names, &parts, cols)?.map(Arc::new);
        tensors.into_iter().for_each(|(_, at, _)| self.release(at));
        Ok(packed)
    }

    /// A 3-D expert tensor's dimensions, `[experts, rows, cols]` in candle's order, checked against the
    /// expert count (`crate::shape` has checked them already; this keeps the split below in bounds).
    fn expert_dims(&self, name: &str, experts: usize) -> Result<(usize, usize), ModelError> {
        match self.tensor_dims(name) {
            None => Err(ModelError::MissingTensor(name.to_string())),
            Some(&[n, rows, cols]) if n == experts && n > 0 => Ok((rows, cols)),
            Some(dims) => Err(ModelError::Shape {
                key: name.to_string(),
                reason: format!("expected [{experts}, rows, cols], found {dims:?}"),
            }),
        }
    }

    /// Each of `names` as the kernels take it: its kernel type, its tensor and its rows (an expert's, for
    /// 3-D stacks), with the input width they all share; `None` where no packed matrix can be made (not
    /// the CPU, a type the kernels do not run, which is logged once per type, or differing widths).
    fn kernel_sources(
        &mut self,
        names: &[&str],
        stacking: Stacking,
    ) -> Result<Option<KernelSources>, ModelError> {
        if !self.packed_kernels {
            return Ok(None);
        }
        let mut tensors = Vec::with_capacity(names.len());
        let mut cols = None;
        for name in names {
            let Some(info) = self.tensors.get(*name) else {
                return Err(ModelError::MissingTensor(name.to_string()));
            };
            let (dtype, dims) = (info.ggml_type, info.dims.clone());
            let expert_dims = match stacking {
                Stacking::Experts(experts) => Some(self.expert_dims(name, experts)?),
                Stacking::Matrices => None,
            };
            let Some(ty) = kernel_type(dtype) else {
                // Stated, not silent: these run correctly but without our kernels' speed.
                let alone = names.len() == 1 || matches!(stacking, Stacking::Experts(_));
                if alone && !self.fallback_types.contains(&dtype) {
                    match stacking {
                        Stacking::Matrices => tracing::warn!(
                            tensor = name,
                            ggml_type = crate::gguf::ggml_type_name(dtype).unwrap_or("unknown"),
                            "no packed CPU kernel for this type: its matmuls run on candle's (slower)"
                        ),
                        Stacking::Experts(_) => tracing::warn!(
                            tensor = name,
                            ggml_type = crate::gguf::ggml_type_name(dtype).unwrap_or("unknown"),
                            "no packed CPU kernel for this type: its experts run on candle's matmul (slower)"
                        ),
                    }
                    self.fallback_types.push(dtype);
                }
                return Ok(None);
            };
            let (rows, c) = match (expert_dims, dims.as_slice()) {
                (Some(per_expert), _) => per_expert,
                (None, [rows, c]) => (*rows, *c),
                (None, _) => return Ok(None),
            };
            if cols.is_some_and(|k| k != c) {
                return Ok(None);
            }
            cols = Some(c);
            tensors.push((ty, self.tensor_at(name)?.1, rows));
        }
        Ok(cols.map(|cols| (tensors, cols)))
    }

    /// Each expert's slice of 3-D tensors (`ffn_*_exps`: `[experts, rows, cols]`) packed as its own
    /// matrix, the tensors' slices stacked in `names`' order (gate rows then up rows); `None` where
    /// `packed` would give none (not the CPU, a type the kernels do not run, mixed tile kinds).
    pub fn packed_experts(
        &mut self,
        names: &[&str],
        experts: usize,
    ) -> Result<Option<Vec<Arc<PackedMatrix>>>, ModelError> {
        let Some((tensors, cols)) = self.kernel_sources(names, Stacking::Experts(experts))? else {
            return Ok(None);
        };
        let bytes = self.weights_bytes(names)?;
        let mut packed = Vec::with_capacity(experts);
        for e in 0..experts {
            let parts: Vec<(GgmlType, &[u8], usize)> = tensors
                .iter()
                .zip(&bytes)
                .map(|((ty, _, rows), raw)| {
                    let per_expert = raw.len() / experts;
                    (*ty, &raw[e * per_expert..(e + 1) * per_expert], *rows)
                })
                .collect();
            let Some(matrix) = pack_parts(names, &parts, cols)? else {
                return Ok(None);
            };
            packed.push(Arc::new(matrix));
        }
        tensors.into_iter().for_each(|(_, at, _)| self.release(at));
        Ok(Some(packed))
    }

    /// Each expert's slice of a 3-D tensor as a candle matmul on this device (where the kernels do
    /// not run it). The tensor is read on the CPU and split there.
    pub fn expert_matmuls(
        &mut self,
        name: &str,
        experts: usize,
    ) -> Result<Vec<QMatMul>, ModelError> {
        let (rows, cols) = self.expert_dims(name, experts)?;
        let tensor_error = |e: candle_core::Error| ModelError::Tensor {
            name: name.to_string(),
            reason: e.to_string(),
        };
        let at = self.tensor_at(name)?.1;
        let (ggml_type, raw) = self.weight_bytes(name)?;
        let Some(dtype) = candle_dtype(ggml_type) else {
            return Err(ModelError::Unsupported(format!(
                "experts of type {} off the CPU kernels",
                crate::gguf::ggml_type_name(ggml_type).unwrap_or("unknown")
            )));
        };
        let per_expert = raw.len() / experts;
        let matmuls = (0..experts)
            .map(|e| {
                let slice = &raw[e * per_expert..(e + 1) * per_expert];
                let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
                    dtype,
                    slice,
                    vec![rows, cols],
                    &self.device,
                )
                .map_err(tensor_error)?;
                Ok(QMatMul::from_qtensor(q)?)
            })
            .collect();
        self.release(at);
        matmuls
    }

    /// A dense f32 copy of a linear weight, when this model keeps them.
    pub fn dense_copy(&mut self, name: &str) -> Result<Option<Tensor>, ModelError> {
        if self.dense_linears {
            self.dequantized(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A tensor dequantized to f32 (norm weights, biases, embeddings).
    pub fn dequantized(&mut self, name: &str) -> Result<Tensor, ModelError> {
        let device = self.device.clone();
        Ok(self.qtensor(name)?.dequantize(&device)?)
    }

    pub fn optional_dequantized(&mut self, name: &str) -> Result<Option<Tensor>, ModelError> {
        if self.has_tensor(name) {
            self.dequantized(name).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Reads the header with the one GGUF reader (which checks alignment and every tensor's range with checked
/// arithmetic), then refuses metadata arrays candle would hold at 32 bytes an element.
fn check_header(path: &Path) -> Result<GgufHeader, ModelError> {
    let display = path.display().to_string();
    let corrupt = |reason: String| ModelError::Corrupt {
        path: display.clone(),
        reason,
    };
    let header = GgufHeader::read_file(path).map_err(|e| match e {
        GgufError::Io { path, source } => ModelError::Io { path, source },
        GgufError::Corrupt { reason, .. } => corrupt(reason),
        GgufError::Truncated { needed, actual, .. } => corrupt(format!(
            "tensor data needs {needed} bytes, the file has {actual}: a tensor does not fit"
        )),
        GgufError::NotGguf { .. } => corrupt("not a GGUF file (bad magic)".into()),
        GgufError::UnsupportedVersion { version, .. } => {
            ModelError::Unsupported(format!("GGUF version {version}"))
        }
    })?;
    // Types the header knows but neither candle nor our kernels load (most i-quants, the ternary
    // types): a clear error naming the tensor and its type.
    for tensor in &header.tensors {
        if candle_dtype(tensor.ggml_type).is_none() && kernel_type(tensor.ggml_type).is_none() {
            let name = crate::gguf::ggml_type_name(tensor.ggml_type).unwrap_or("unknown");
            return Err(ModelError::Unsupported(format!(
                "tensor {} is {name}, a type this runner does not run yet (it runs F32, F16, BF16, \
                 Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K to Q6_K, IQ4_NL, IQ4_XS and MXFP4)",
                tensor.name
            )));
        }
    }
    let mut elements = 0u64;
    for (key, value) in &header.metadata {
        if let GgufValue::Array { len, .. } = value {
            elements = elements.saturating_add(*len);
            if *len > MAX_METADATA_ARRAY_LEN || elements > MAX_METADATA_ARRAY_ELEMENTS {
                return Err(corrupt(format!(
                    "metadata array {key} of {len} elements (at most {MAX_METADATA_ARRAY_LEN}, {MAX_METADATA_ARRAY_ELEMENTS} in all)"
                )));
            }
        }
    }
    Ok(header)
}

/// The file mapped read-only.
fn map_file(path: &Path) -> Result<memmap2::Mmap, ModelError> {
    let io = |source| ModelError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    // SAFETY: the mapping is read-only and the store never rewrites a blob in place (blobs are written
    // to a temporary name and renamed); a file truncated under us by another process is outside what the
    // runner defends against (llama.cpp maps its files the same way).
    unsafe { memmap2::Mmap::map(&file) }.map_err(io)
}

/// One file of a model as `open_shards` reads it: its path, header, mapping and metadata.
type ShardFile<'a> = (
    &'a Path,
    GgufHeader,
    memmap2::Mmap,
    HashMap<String, gguf_file::Value>,
);

/// A split model's files put in `split.no` order, checked to be exactly files 0 to `split.count - 1`.
fn order_shards(files: &mut [ShardFile<'_>]) -> Result<(), ModelError> {
    let count = files.len();
    let number = |metadata: &HashMap<String, gguf_file::Value>, key: &str| match metadata.get(key) {
        Some(gguf_file::Value::U16(v)) => Some(usize::from(*v)),
        Some(gguf_file::Value::U32(v)) => usize::try_from(*v).ok(),
        Some(gguf_file::Value::I32(v)) => usize::try_from(*v).ok(),
        _ => None,
    };
    let mut seen = vec![false; count];
    for (path, _, _, metadata) in files.iter() {
        let bad = |reason: String| ModelError::Corrupt {
            path: path.display().to_string(),
            reason,
        };
        let (Some(no), Some(of)) = (
            number(metadata, "split.no"),
            number(metadata, "split.count"),
        ) else {
            return Err(bad(
                "one of several files of a model, without split.no and split.count".into(),
            ));
        };
        if of != count || no >= count || std::mem::replace(&mut seen[no], true) {
            return Err(bad(format!(
                "split.no {no} of split.count {of}, where the model has {count} files"
            )));
        }
    }
    files.sort_by_key(|(_, _, _, metadata)| number(metadata, "split.no"));
    Ok(())
}

/// The metadata as candle holds it (the tokenizer and the families read it so). Candle's reader is given
/// the header with its tensor count set to zero: the tensor directory is ours (`tensor_entries`), which
/// knows the types candle's reader would refuse.
fn read_metadata(
    path: &Path,
    map: &memmap2::Mmap,
    header: &GgufHeader,
) -> Result<HashMap<String, gguf_file::Value>, ModelError> {
    let end = usize::try_from(header.data_offset)
        .ok()
        .filter(|&end| end <= map.len() && end >= 24)
        .ok_or_else(|| ModelError::Corrupt {
            path: path.display().to_string(),
            reason: "the header runs past the end of the file".into(),
        })?;
    let mut head = map[..end].to_vec();
    // The tensor count follows the magic and version: 32 bits in version 1, 64 after.
    let count = if header.version == 1 { 8..12 } else { 8..16 };
    head[count].fill(0);
    let content = gguf_file::Content::read(&mut Cursor::new(head))
        .map_err(|e| ModelError::corrupt(path, e))?;
    Ok(content.metadata)
}

/// Every tensor's type, dimensions (candle's order) and bytes, from the checked header.
fn tensor_entries(
    path: &Path,
    header: &GgufHeader,
    file_len: usize,
    shard: usize,
) -> Result<HashMap<String, TensorEntry>, ModelError> {
    let mut entries = HashMap::with_capacity(header.tensors.len());
    for t in &header.tensors {
        let range = t.byte_size().and_then(|len| {
            let start = header.data_offset.checked_add(t.offset)?;
            let start = usize::try_from(start).ok()?;
            Some(start..start.checked_add(usize::try_from(len).ok()?)?)
        });
        let dims: Option<Vec<usize>> = t
            .dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d).ok())
            .collect();
        match (range, dims) {
            (Some(range), Some(dims)) if range.end <= file_len => {
                entries.insert(
                    t.name.clone(),
                    TensorEntry {
                        ggml_type: t.ggml_type,
                        dims,
                        at: Location { shard, range },
                    },
                );
            }
            _ => {
                return Err(ModelError::Corrupt {
                    path: path.display().to_string(),
                    reason: format!("tensor {} does not fit in the file", t.name),
                });
            }
        }
    }
    Ok(entries)
}

/// Candle's name for a GGML type it loads (its `GgmlDType::from_u32`, which is private).
fn candle_dtype(ggml_type: u32) -> Option<GgmlDType> {
    Some(match ggml_type {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// Whether the weights packed together are plain matrices or 3-D stacks of experts (and how many).
#[derive(Debug, Clone, Copy)]
enum Stacking {
    Matrices,
    Experts(usize),
}

/// Each weight's kernel type, bytes in the mapping and rows, and the input width they share.
type KernelSources = (Vec<(GgmlType, Location, usize)>, usize);

/// A quantized matrix read where it lies in the mapped file, one row at a time (a token-embedding
/// table: a step reads a few of its rows, so the rest never need to be resident).
#[derive(Debug, Clone)]
pub struct MappedMatrix {
    map: Arc<memmap2::Mmap>,
    ty: GgmlType,
    range: Range<usize>,
    row_bytes: usize,
    rows: usize,
    cols: usize,
}

impl MappedMatrix {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `r` as f32 appended to `out`, exactly as GGML dequantizes it.
    pub fn dequantize_row_into(&self, r: usize, out: &mut Vec<f32>) -> Result<(), ModelError> {
        if r >= self.rows {
            return Err(ModelError::Unsupported(format!(
                "row {r} of a {}-row table",
                self.rows
            )));
        }
        let start = self.range.start + r * self.row_bytes;
        let row = &self.map[start..start + self.row_bytes];
        kernels::dequantize_row(self.ty, row, out).map_err(|e| ModelError::Tensor {
            name: "mapped row".into(),
            reason: e.to_string(),
        })
    }
}

/// `parts` packed as one matrix; `None` when their types need different tiles.
fn pack_parts(
    names: &[&str],
    parts: &[(GgmlType, &[u8], usize)],
    cols: usize,
) -> Result<Option<PackedMatrix>, ModelError> {
    match PackedMatrix::pack_stacked(parts, cols) {
        Ok(packed) => Ok(Some(packed)),
        Err(kernels::KernelError::MixedKinds(..)) => Ok(None),
        Err(e) => Err(ModelError::Tensor {
            name: names.join("+"),
            reason: e.to_string(),
        }),
    }
}

/// The kernels' name for a GGML type they run.
fn kernel_type(ggml_type: u32) -> Option<GgmlType> {
    Some(match ggml_type {
        2 => GgmlType::Q4_0,
        3 => GgmlType::Q4_1,
        6 => GgmlType::Q5_0,
        7 => GgmlType::Q5_1,
        8 => GgmlType::Q8_0,
        10 => GgmlType::Q2K,
        11 => GgmlType::Q3K,
        12 => GgmlType::Q4K,
        13 => GgmlType::Q5K,
        14 => GgmlType::Q6K,
        20 => GgmlType::IQ4NL,
        23 => GgmlType::IQ4XS,
        crate::mxfp4::MXFP4 => GgmlType::MXFP4,
        1 => GgmlType::F16,
        30 => GgmlType::BF16,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 with the given metadata entries (key, type, value bytes) and one F32 tensor.
    fn gguf(kvs: &[(&str, u32, Vec<u8>)], dims: &[u64], data: usize) -> Vec<u8> {
        typed_gguf(kvs, dims, 0, data)
    }

    /// As `gguf`, with the tensor of GGML type `tensor_type`.
    fn typed_gguf(
        kvs: &[(&str, u32, Vec<u8>)],
        dims: &[u64],
        tensor_type: u32,
        data: usize,
    ) -> Vec<u8> {
        let mut b = Vec::new();
        let string = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        b.extend(0x4655_4747u32.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend((kvs.len() as u64).to_le_bytes());
        for (key, ty, value) in kvs {
            string(&mut b, key);
            b.extend(ty.to_le_bytes());
            b.extend(value);
        }
        string(&mut b, "w");
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(tensor_type.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend(vec![0u8; data]);
        b
    }

    fn open_error(name: &str, bytes: &[u8]) -> String {
        let path = std::env::temp_dir().join(format!("weights-{}-{name}.gguf", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let result = GgufWeights::open(&path, &Device::Cpu);
        std::fs::remove_file(&path).ok();
        match result {
            Err(ModelError::Corrupt { reason, .. }) => reason,
            Err(other) => panic!("expected a corrupt-file error, got {other}"),
            Ok(_) => panic!("a hostile GGUF was opened"),
        }
    }

    fn arch() -> (&'static str, u32, Vec<u8>) {
        let mut v = 5u64.to_le_bytes().to_vec();
        v.extend(b"llama");
        ("general.architecture", 8, v)
    }

    #[test]
    fn an_alignment_of_zero_is_an_error_not_a_division_panic() {
        let kvs = [
            arch(),
            ("general.alignment", 4, 0u32.to_le_bytes().to_vec()),
        ];
        let reason = open_error("align0", &gguf(&kvs, &[4], 16));
        assert!(
            reason.contains("general.alignment") && reason.contains("power of two"),
            "{reason}"
        );
    }

    #[test]
    fn huge_metadata_arrays_are_refused_before_candle_holds_them() {
        let mut array = 0u32.to_le_bytes().to_vec(); // u8 elements
        let len = MAX_METADATA_ARRAY_LEN + 1;
        array.extend(len.to_le_bytes());
        array.extend(vec![0u8; len as usize]);
        let reason = open_error("array", &gguf(&[arch(), ("blob", 9, array)], &[4], 16));
        assert!(reason.contains("metadata array"), "{reason}");
    }

    #[test]
    fn tensors_beyond_the_file_are_refused_with_checked_sizes() {
        let reason = open_error("dims", &gguf(&[arch()], &[1 << 32, 1 << 32, 16], 16));
        assert!(reason.contains("cannot fit in a file"), "{reason}");
        let reason = open_error("short", &gguf(&[arch()], &[64], 16));
        assert!(reason.contains("cannot fit in a file"), "{reason}");
    }

    #[test]
    fn a_type_nothing_here_loads_is_named_in_a_clear_error() {
        // IQ2_XXS (16): 256 values in 66 bytes; neither candle nor our kernels read it.
        let path = std::env::temp_dir().join(format!("weights-{}-iq2.gguf", std::process::id()));
        std::fs::write(&path, typed_gguf(&[arch()], &[256], 16, 66)).unwrap();
        let result = GgufWeights::open(&path, &Device::Cpu);
        std::fs::remove_file(&path).ok();
        match result {
            Err(ModelError::Unsupported(reason)) => {
                assert!(reason.contains("tensor w is IQ2_XXS"), "{reason}")
            }
            Err(other) => panic!("expected an unsupported-type error, got {other}"),
            Ok(_) => panic!("an IQ2_XXS file opened though nothing here reads it"),
        }
    }

    #[test]
    fn an_iq4_xs_tensor_candle_cannot_read_opens_and_dequantizes() {
        // IQ4_XS (23): 256 values in 136 bytes, all zero but for d = 1 and one index: 1 * (0 - 32) * 113.
        let path = std::env::temp_dir().join(format!("weights-{}-iq4.gguf", std::process::id()));
        let mut bytes = typed_gguf(&[arch()], &[256], 23, 136);
        let data = bytes.len() - 136;
        bytes[data..data + 2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        bytes[data + 8] = 0x0F;
        std::fs::write(&path, bytes).unwrap();
        let result = GgufWeights::open(&path, &Device::Cpu).and_then(|mut w| w.dequantized("w"));
        std::fs::remove_file(&path).ok();
        let values = result.unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(values.len(), 256);
        assert_eq!((values[0], values[16]), (-32.0 * 113.0, -32.0 * -127.0));
    }
}
