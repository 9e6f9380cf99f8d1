//! Reading a GGUF file's metadata and tensors through candle, with errors that name what is missing.
//!
//! The file is untrusted: before candle parses it, `gguf::GgufHeader` (the one header reader) checks it
//! whole, with checked arithmetic (alignment, every tensor's range within the file), and we refuse what
//! candle would hold at many times its size (metadata arrays of millions of elements, which candle keeps
//! as one enum per element).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use kernels::{GgmlType, PackedMatrix};

use crate::ModelError;
use crate::gguf::{GgufError, GgufHeader, GgufValue};

/// An open GGUF file: its header, and a reader for its tensors.
pub struct GgufWeights {
    content: gguf_file::Content,
    reader: BufReader<File>,
    device: Device,
    architecture: String,
    /// Keep f32 copies of linear weights for steps with many rows (small models on CPU only).
    dense_linears: bool,
    /// Repack weights of the types our CPU kernels run (`MODEL_RUNNER_KERNELS=candle` turns it off).
    packed_kernels: bool,
    /// Types already reported as running on candle's matmul (said once per type, not per tensor).
    fallback_types: Vec<GgmlDType>,
    /// MXFP4 tensors, which candle sees as Q8_0 (`mxfp4::HeaderAsQ8_0`): read here and converted.
    mxfp4: HashMap<String, Mxfp4Tensor>,
}

/// Where an MXFP4 tensor's blocks lie, and its dimensions in candle's order.
struct Mxfp4Tensor {
    offset: u64,
    bytes: u64,
    dims: Vec<usize>,
}

/// Largest model (all tensors as f32) whose linear weights also get a dense f32 copy.
const DENSE_LIMIT_BYTES: u64 = 1 << 30;
/// Longest metadata array accepted (real vocabularies and merge lists stay under a million).
pub const MAX_METADATA_ARRAY_LEN: u64 = 1 << 22;
/// Most array elements in all of a header's metadata: candle holds each as a 32-byte value.
pub const MAX_METADATA_ARRAY_ELEMENTS: u64 = 1 << 24;

impl GgufWeights {
    pub fn open(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|e| ModelError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let header = check_header(path)?;
        let mxfp4: Vec<&crate::gguf::TensorInfo> = header
            .tensors
            .iter()
            .filter(|t| t.ggml_type == crate::mxfp4::MXFP4)
            .collect();
        let reader = BufReader::with_capacity(1 << 20, file);
        let io = |source| ModelError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut shown = crate::mxfp4::HeaderAsQ8_0::new(
            reader,
            mxfp4.iter().map(|t| t.type_position).collect(),
        )
        .map_err(io)?;
        let content =
            gguf_file::Content::read(&mut shown).map_err(|e| ModelError::corrupt(path, e))?;
        let reader = shown.into_inner();
        let mxfp4: HashMap<String, Mxfp4Tensor> = mxfp4
            .into_iter()
            .map(|t| {
                let tensor = Mxfp4Tensor {
                    offset: content.tensor_data_offset.saturating_add(t.offset),
                    bytes: t.byte_size().unwrap_or(u64::MAX),
                    dims: t.dims.iter().rev().map(|&d| d as usize).collect(),
                };
                (t.name.clone(), tensor)
            })
            .collect();
        if !mxfp4.is_empty() {
            tracing::warn!(
                tensors = mxfp4.len(),
                "MXFP4 weights are converted to Q8_0 at load (exact for real weights' scales, twice \
                 their memory): this engine has no MXFP4 kernel yet"
            );
        }
        let architecture = match content.metadata.get("general.architecture") {
            Some(gguf_file::Value::String(a)) => a.clone(),
            _ => return Err(ModelError::MissingMetadata("general.architecture".into())),
        };
        let f32_bytes: u64 = content
            .tensor_infos
            .values()
            .map(|t| (t.shape.elem_count() as u64).saturating_mul(4))
            .fold(0, u64::saturating_add);
        let dense_linears = device.is_cpu()
            && f32_bytes <= DENSE_LIMIT_BYTES
            && std::env::var("MODEL_RUNNER_DENSE_LINEARS").map_or(true, |v| v != "0");
        let packed_kernels = device.is_cpu()
            && std::env::var("MODEL_RUNNER_KERNELS").map_or(true, |v| v != "candle");
        Ok(Self {
            content,
            reader,
            device: device.clone(),
            architecture,
            dense_linears,
            packed_kernels,
            fallback_types: Vec::new(),
            mxfp4,
        })
    }

    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn metadata(&self) -> &HashMap<String, gguf_file::Value> {
        &self.content.metadata
    }

    pub fn into_metadata(self) -> HashMap<String, gguf_file::Value> {
        self.content.metadata
    }

    fn value(&self, key: &str) -> Result<&gguf_file::Value, ModelError> {
        self.content
            .metadata
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
        match self.content.metadata.get(&full) {
            None => Ok(default),
            Some(gguf_file::Value::F32(v)) => Ok(*v),
            Some(gguf_file::Value::F64(v)) => Ok(*v as f32),
            Some(_) => Err(ModelError::BadMetadata(full)),
        }
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// A tensor's dimensions as candle orders them (`[rows, cols]` for a matrix), if the file has it.
    pub fn tensor_dims(&self, name: &str) -> Option<&[usize]> {
        self.content.tensor_infos.get(name).map(|t| t.shape.dims())
    }

    pub fn qtensor(&mut self, name: &str) -> Result<QTensor, ModelError> {
        let device = self.device.clone();
        self.read_tensor(name, &device)
    }

    /// A tensor onto `device`: through candle, or, for MXFP4, read here and converted to Q8_0.
    fn read_tensor(&mut self, name: &str, device: &Device) -> Result<QTensor, ModelError> {
        if !self.has_tensor(name) {
            return Err(ModelError::MissingTensor(name.to_string()));
        }
        let tensor_error = |reason: String| ModelError::Tensor {
            name: name.to_string(),
            reason,
        };
        let Some(mxfp4) = self.mxfp4.get(name) else {
            return self
                .content
                .tensor(&mut self.reader, name, device)
                .map_err(|e| tensor_error(e.to_string()));
        };
        let len = usize::try_from(mxfp4.bytes).map_err(|e| tensor_error(e.to_string()))?;
        let mut blocks = vec![0u8; len];
        self.reader
            .seek(SeekFrom::Start(mxfp4.offset))
            .and_then(|_| self.reader.read_exact(&mut blocks))
            .map_err(|e| tensor_error(e.to_string()))?;
        let (q8, inexact) =
            crate::mxfp4::to_q8_0(&blocks).map_err(|e| tensor_error(e.to_string()))?;
        if inexact > 0 {
            tracing::warn!(
                tensor = name,
                blocks = inexact,
                "MXFP4 blocks whose scale f16 cannot hold were requantized to Q8_0 (not exact)"
            );
        }
        let dims = mxfp4.dims.clone();
        candle_core::quantized::ggml_file::qtensor_from_ggml(GgmlDType::Q8_0, &q8, dims, device)
            .map_err(|e| tensor_error(e.to_string()))
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
        // The tensors' bytes, borrowed where candle holds them as they are on disk.
        let bytes = tensors
            .iter()
            .map(|(_, t, _)| t.data())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let parts: Vec<(GgmlType, &[u8], usize)> = tensors
            .iter()
            .zip(&bytes)
            .map(|((ty, _, rows), raw)| (*ty, raw.as_ref(), *rows))
            .collect();
        Ok(pack_parts(names, &parts, cols)?.map(Arc::new))
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
            let Some(info) = self.content.tensor_infos.get(*name) else {
                return Err(ModelError::MissingTensor(name.to_string()));
            };
            let (dtype, dims) = (info.ggml_dtype, info.shape.dims().to_vec());
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
                            ggml_type = ?dtype,
                            "no packed CPU kernel for this type: its matmuls run on candle's (slower)"
                        ),
                        Stacking::Experts(_) => tracing::warn!(
                            tensor = name,
                            ggml_type = ?dtype,
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
            tensors.push((ty, self.qtensor(name)?, rows));
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
        let bytes = tensors
            .iter()
            .map(|(_, t, _)| t.data())
            .collect::<candle_core::Result<Vec<_>>>()?;
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
        let whole = self.read_tensor(name, &Device::Cpu)?;
        let dtype = whole.dtype();
        let raw = whole.data().map_err(tensor_error)?;
        let per_expert = raw.len() / experts;
        (0..experts)
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
            .collect()
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
    // Types the header knows but candle cannot load (the i-quants, ternary and MXFP4 types): a clear
    // error naming the tensor and its type, where candle's would only give the type's number.
    for tensor in &header.tensors {
        if !candle_loads(tensor.ggml_type) && tensor.ggml_type != crate::mxfp4::MXFP4 {
            let name = crate::gguf::ggml_type_name(tensor.ggml_type).unwrap_or("unknown");
            return Err(ModelError::Unsupported(format!(
                "tensor {} is {name}, a type this runner does not run yet (it runs F32, F16, BF16, \
                 Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K to Q6_K and MXFP4)",
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

/// Whether candle's GGUF reader takes tensors of this GGML type (its `GgmlDType::from_u32`).
fn candle_loads(ggml_type: u32) -> bool {
    matches!(ggml_type, 0..=3 | 6..=15 | 30)
}

/// Whether the weights packed together are plain matrices or 3-D stacks of experts (and how many).
#[derive(Debug, Clone, Copy)]
enum Stacking {
    Matrices,
    Experts(usize),
}

/// Each weight's kernel type, tensor and rows, and the input width they share.
type KernelSources = (Vec<(GgmlType, QTensor, usize)>, usize);

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
fn kernel_type(dtype: GgmlDType) -> Option<GgmlType> {
    Some(match dtype {
        GgmlDType::Q4_0 => GgmlType::Q4_0,
        GgmlDType::Q4_1 => GgmlType::Q4_1,
        GgmlDType::Q5_0 => GgmlType::Q5_0,
        GgmlDType::Q5_1 => GgmlType::Q5_1,
        GgmlDType::Q8_0 => GgmlType::Q8_0,
        GgmlDType::Q3K => GgmlType::Q3K,
        GgmlDType::Q4K => GgmlType::Q4K,
        GgmlDType::Q5K => GgmlType::Q5K,
        GgmlDType::Q6K => GgmlType::Q6K,
        GgmlDType::F16 => GgmlType::F16,
        GgmlDType::BF16 => GgmlType::BF16,
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
    fn a_type_candle_cannot_load_is_named_in_a_clear_error() {
        // IQ4_XS (23): 256 values in 136 bytes.
        let path = std::env::temp_dir().join(format!("weights-{}-iq4.gguf", std::process::id()));
        std::fs::write(&path, typed_gguf(&[arch()], &[256], 23, 136)).unwrap();
        let result = GgufWeights::open(&path, &Device::Cpu);
        std::fs::remove_file(&path).ok();
        match result {
            Err(ModelError::Unsupported(reason)) => {
                assert!(reason.contains("tensor w is IQ4_XS"), "{reason}")
            }
            Err(other) => panic!("expected an unsupported-type error, got {other}"),
            Ok(_) => panic!("an IQ4_XS file opened though candle cannot read it"),
        }
    }
}
