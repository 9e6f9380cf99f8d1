//! The one reader of a GGUF header: what `package` needs to describe a model, proof that a file is a whole
//! GGUF, and the engine's check of a file before candle parses it (`weights.rs`).
//!
//! We read the header ourselves rather than through `candle_core::quantized::gguf_file`: candle refuses files
//! holding tensor types it cannot compute with (IQ*, TQ*, MXFP4), but the store must package and describe any
//! GGUF, runnable here or not; and candle trusts the header (it divides by its alignment, multiplies its
//! dimensions unchecked and holds every metadata array element as an enum).
//!
//! The header is untrusted input: every length is checked against what is left of the file before anything
//! is allocated, sizes and offsets use checked arithmetic, and metadata arrays (vocabularies of hundreds of
//! thousands of strings, which the store never needs) are skipped over and recorded by type and length.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

const MAGIC: u32 = 0x4655_4747; // "GGUF", little-endian
const DEFAULT_ALIGNMENT: u64 = 32;
// Bounds that a sane header never reaches; they keep a corrupt one from asking for absurd allocations.
const MAX_STRING_LEN: u64 = 64 << 20;
const MAX_ARRAY_LEN: u64 = 1 << 32;
const MAX_TENSORS: u64 = 1 << 20;
const MAX_KVS: u64 = 1 << 20;
const MAX_DIMS: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: not a GGUF file (bad magic)")]
    NotGguf { path: String },
    #[error("{path}: unsupported GGUF version {version}")]
    UnsupportedVersion { path: String, version: u32 },
    #[error("{path}: truncated or corrupt GGUF header: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{path}: truncated GGUF: tensor data needs {needed} bytes, the file has {actual}")]
    Truncated {
        path: String,
        needed: u64,
        actual: u64,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// One metadata value. Arrays are recorded by element type and length only: their elements (tokenizer
/// vocabularies, mostly) are of no use to the store and would cost many times their size in memory.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    String(String),
    Array { element_type: u32, len: u64 },
}

impl GgufValue {
    /// The value as text, for scalars; arrays have no text form.
    pub fn as_text(&self) -> Option<String> {
        match self {
            GgufValue::Uint(v) => Some(v.to_string()),
            GgufValue::Int(v) => Some(v.to_string()),
            GgufValue::Float(v) => Some(v.to_string()),
            GgufValue::Bool(v) => Some(v.to_string()),
            GgufValue::String(v) => Some(v.clone()),
            GgufValue::Array { .. } => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::Uint(v) => Some(v),
            GgufValue::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset from the start of the tensor data section.
    pub offset: u64,
    /// Where in the file this tensor's type field lies (`mxfp4::HeaderAsQ8_0` shows it to candle).
    pub type_position: u64,
}

impl TensorInfo {
    /// The product of the dimensions (a header read by `read_file` was checked not to overflow).
    pub fn element_count(&self) -> u64 {
        self.checked_element_count().unwrap_or(u64::MAX)
    }

    fn checked_element_count(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }

    /// Bytes the tensor occupies, or None for a type this table does not know (or a size past u64).
    pub fn byte_size(&self) -> Option<u64> {
        let (block, size) = ggml_type_layout(self.ggml_type)?;
        self.checked_element_count()?
            .div_ceil(block)
            .checked_mul(size)
    }
}

/// A GGUF file's header: metadata, tensor directory, and where tensor data starts.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<TensorInfo>,
    pub data_offset: u64,
}

impl GgufHeader {
    /// Reads the header and checks that the file is long enough to hold every tensor it declares.
    pub fn read_file(path: &Path) -> Result<Self, GgufError> {
        let display = path.display().to_string();
        let io = |source| GgufError::Io {
            path: display.clone(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut reader = HeaderReader {
            inner: BufReader::with_capacity(1 << 16, file),
            path: &display,
            version: 3,
            position: 0,
            file_len,
        };
        let header = reader.header()?;
        let needed = header.data_end(&display)?;
        if needed > file_len {
            return Err(GgufError::Truncated {
                path: display,
                needed,
                actual: file_len,
            });
        }
        Ok(header)
    }

    /// The end of the last tensor's bytes, which the file must reach.
    fn data_end(&self, path: &str) -> Result<u64, GgufError> {
        let mut end = self.data_offset;
        for t in &self.tensors {
            let tensor_end = t
                .byte_size()
                .and_then(|size| self.data_offset.checked_add(t.offset)?.checked_add(size))
                .ok_or_else(|| GgufError::Corrupt {
                    path: path.to_string(),
                    reason: format!(
                        "tensor {} ({:?} at offset {}) ends beyond any file",
                        t.name, t.dims, t.offset
                    ),
                })?;
            end = end.max(tensor_end);
        }
        Ok(end)
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.metadata.get(key) {
            Some(GgufValue::String(s)) => Some(s),
            _ => None,
        }
    }

    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// The context length the model was trained for (`<arch>.context_length`).
    pub fn context_length(&self) -> Option<u64> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.context_length"))?.as_u64()
    }

    pub fn parameter_count(&self) -> u64 {
        self.tensors
            .iter()
            .map(TensorInfo::element_count)
            .fold(0, u64::saturating_add)
    }

    pub fn tensor_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .filter_map(TensorInfo::byte_size)
            .fold(0, u64::saturating_add)
    }

    /// The quantization name llama.cpp gives the file (`general.file_type`), else the most common tensor type.
    pub fn quantization(&self) -> String {
        if let Some(name) = self
            .get("general.file_type")
            .and_then(GgufValue::as_u64)
            .and_then(file_type_name)
        {
            return name.to_string();
        }
        let mut bytes_by_type: BTreeMap<u32, u64> = BTreeMap::new();
        for t in &self.tensors {
            let bytes = bytes_by_type.entry(t.ggml_type).or_default();
            *bytes = bytes.saturating_add(t.byte_size().unwrap_or(0));
        }
        bytes_by_type
            .into_iter()
            .max_by_key(|&(_, bytes)| bytes)
            .and_then(|(ty, _)| ggml_type_name(ty))
            .unwrap_or("unknown")
            .to_string()
    }

    /// The scalar metadata as text, as Docker Model Runner puts it in the artifact's config.
    pub fn text_metadata(&self) -> BTreeMap<String, String> {
        self.metadata
            .iter()
            .filter_map(|(k, v)| v.as_text().map(|t| (k.clone(), t)))
            .collect()
    }

    /// `split.count` for a model sharded over several files; 1 otherwise.
    pub fn split_count(&self) -> u64 {
        self.get("split.count")
            .and_then(GgufValue::as_u64)
            .unwrap_or(1)
    }
}

struct HeaderReader<'a, R> {
    inner: R,
    path: &'a str,
    version: u32,
    /// Bytes consumed so far, so that lengths are checked against what is left of the file.
    position: u64,
    file_len: u64,
}

impl<R: Read + Seek> HeaderReader<'_, R> {
    fn corrupt(&self, reason: impl Into<String>) -> GgufError {
        GgufError::Corrupt {
            path: self.path.to_string(),
            reason: reason.into(),
        }
    }

    fn remaining(&self) -> u64 {
        self.file_len.saturating_sub(self.position)
    }

    /// Fails unless `len` more bytes are in the file (before anything of that size is allocated).
    fn ensure_left(&self, len: u64, what: &str) -> Result<(), GgufError> {
        if len > self.remaining() {
            return Err(self.corrupt(format!(
                "{what} needs {len} bytes, only {} are left in the file",
                self.remaining()
            )));
        }
        Ok(())
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| self.corrupt(format!("unexpected end of file ({e})")))?;
        self.position += N as u64;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        self.bytes().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        self.bytes().map(u64::from_le_bytes)
    }

    /// Counts and lengths are u32 in GGUF v1 and u64 since.
    fn count(&mut self) -> Result<u64, GgufError> {
        if self.version == 1 {
            self.u32().map(u64::from)
        } else {
            self.u64()
        }
    }

    fn string_len(&mut self) -> Result<u64, GgufError> {
        let len = self.count()?;
        if len > MAX_STRING_LEN {
            return Err(self.corrupt(format!("string of {len} bytes")));
        }
        self.ensure_left(len, "a string")?;
        Ok(len)
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.string_len()?;
        let mut buf = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| self.corrupt(format!("unexpected end of file ({e})")))?;
        self.position += len;
        // Some converters write invalid UTF-8 in token lists; keep what is there rather than refuse the file.
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Moves past `len` bytes already checked to be in the file.
    fn skip(&mut self, len: u64) -> Result<(), GgufError> {
        self.ensure_left(len, "a metadata value")?;
        let offset = i64::try_from(len).map_err(|_| self.corrupt("value past any file"))?;
        self.inner
            .seek_relative(offset)
            .map_err(|e| self.corrupt(e.to_string()))?;
        self.position += len;
        Ok(())
    }

    /// Walks over an array's elements without keeping them.
    fn skip_array(&mut self) -> Result<GgufValue, GgufError> {
        let element_type = self.u32()?;
        let len = self.count()?;
        if len > MAX_ARRAY_LEN {
            return Err(self.corrupt(format!("array of {len} elements")));
        }
        match element_type {
            8 => {
                // Each string has at least its length prefix.
                let prefix = if self.version == 1 { 4 } else { 8 };
                self.ensure_left(len.saturating_mul(prefix), "an array of strings")?;
                for _ in 0..len {
                    let string_len = self.string_len()?;
                    self.skip(string_len)?;
                }
            }
            other => {
                let size = scalar_size(other).ok_or_else(|| {
                    self.corrupt(format!("array of unsupported element type {other}"))
                })?;
                let bytes = len
                    .checked_mul(size)
                    .ok_or_else(|| self.corrupt(format!("array of {len} elements")))?;
                self.skip(bytes)?;
            }
        }
        Ok(GgufValue::Array { element_type, len })
    }

    fn value(&mut self, value_type: u32) -> Result<GgufValue, GgufError> {
        Ok(match value_type {
            0 => GgufValue::Uint(self.bytes::<1>()?[0].into()),
            1 => GgufValue::Int(i8::from_le_bytes(self.bytes()?).into()),
            2 => GgufValue::Uint(u16::from_le_bytes(self.bytes()?).into()),
            3 => GgufValue::Int(i16::from_le_bytes(self.bytes()?).into()),
            4 => GgufValue::Uint(self.u32()?.into()),
            5 => GgufValue::Int(i32::from_le_bytes(self.bytes()?).into()),
            6 => GgufValue::Float(f32::from_le_bytes(self.bytes()?).into()),
            7 => GgufValue::Bool(self.bytes::<1>()?[0] != 0),
            8 => GgufValue::String(self.string()?),
            9 => self.skip_array()?,
            10 => GgufValue::Uint(self.u64()?),
            11 => GgufValue::Int(i64::from_le_bytes(self.bytes()?)),
            12 => GgufValue::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(self.corrupt(format!("unknown metadata value type {other}"))),
        })
    }

    fn header(&mut self) -> Result<GgufHeader, GgufError> {
        let magic = self.u32().map_err(|_| GgufError::NotGguf {
            path: self.path.to_string(),
        })?;
        if magic != MAGIC {
            return Err(GgufError::NotGguf {
                path: self.path.to_string(),
            });
        }
        let version = self.u32()?;
        if !(1..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion {
                path: self.path.to_string(),
                version,
            });
        }
        self.version = version;
        let tensor_count = self.count()?;
        let kv_count = self.count()?;
        if tensor_count > MAX_TENSORS || kv_count > MAX_KVS {
            return Err(self.corrupt(format!("{tensor_count} tensors, {kv_count} keys")));
        }
        // A key is at least a length, a type and one byte; a tensor at least a name length, a rank, a type
        // and an offset.
        let prefix = if version == 1 { 4 } else { 8 };
        self.ensure_left(
            kv_count * (prefix + 5) + tensor_count * (prefix + 16),
            "the declared keys and tensors",
        )?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = self.string()?;
            let value_type = self.u32()?;
            let value = self.value(value_type)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(tensor_count.min(1 << 12) as usize);
        for _ in 0..tensor_count {
            tensors.push(self.tensor_info()?);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(value) => match value.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(
                        self.corrupt(format!("general.alignment {value:?} is not a power of two"))
                    );
                }
            },
        };
        let data_offset = self
            .position
            .div_ceil(alignment)
            .checked_mul(alignment)
            .ok_or_else(|| self.corrupt("tensor data offset past any file"))?;
        Ok(GgufHeader {
            version,
            metadata,
            tensors,
            data_offset,
        })
    }

    fn tensor_info(&mut self) -> Result<TensorInfo, GgufError> {
        let name = self.string()?;
        let n_dims = self.u32()?;
        if n_dims > MAX_DIMS {
            return Err(self.corrupt(format!("tensor {name} has {n_dims} dimensions")));
        }
        let dims = (0..n_dims)
            .map(|_| self.count())
            .collect::<Result<Vec<_>, _>>()?;
        let type_position = self.position;
        let ggml_type = self.u32()?;
        if ggml_type_layout(ggml_type).is_none() {
            return Err(self.corrupt(format!("tensor {name} has unknown type {ggml_type}")));
        }
        let offset = self.u64()?;
        let tensor = TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            type_position,
        };
        match tensor.byte_size() {
            Some(size) if size <= self.file_len && offset <= self.file_len => Ok(tensor),
            _ => Err(self.corrupt(format!(
                "tensor {} of dimensions {:?} at offset {} cannot fit in a file of {} bytes",
                tensor.name, tensor.dims, tensor.offset, self.file_len
            ))),
        }
    }
}

/// Bytes of one scalar metadata value of GGUF type `value_type`; None for strings, arrays, unknown types.
fn scalar_size(value_type: u32) -> Option<u64> {
    Some(match value_type {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => return None,
    })
}

/// (elements per block, bytes per block) for each ggml tensor type, as ggml's type traits define them.
pub fn ggml_type_layout(ggml_type: u32) -> Option<(u64, u64)> {
    Some(match ggml_type {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        _ => return None,
    })
}

/// ggml's name for a tensor type.
pub fn ggml_type_name(ggml_type: u32) -> Option<&'static str> {
    Some(match ggml_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

/// llama.cpp's `llama_ftype` names, the quantization a whole file was made with.
fn file_type_name(file_type: u64) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

/// A parameter count the way model cards write it: `134.52M`, `7.24B`.
pub fn format_parameter_count(count: u64) -> String {
    let n = count as f64;
    match count {
        c if c >= 1_000_000_000 => format!("{:.2}B", n / 1e9),
        c if c >= 1_000_000 => format!("{:.2}M", n / 1e6),
        c if c >= 1_000 => format!("{:.2}K", n / 1e3),
        c => c.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal GGUF v3 with one F32 tensor of `elements` values, optionally cut short.
    fn tiny_gguf(elements: u64, cut: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(MAGIC.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(2u64.to_le_bytes()); // kvs
        let string = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        string(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        string(&mut b, "llama");
        string(&mut b, "llama.context_length");
        b.extend(4u32.to_le_bytes());
        b.extend(2048u32.to_le_bytes());
        string(&mut b, "w");
        b.extend(1u32.to_le_bytes());
        b.extend(elements.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend(vec![0u8; elements as usize * 4]);
        b.truncate(b.len() - cut);
        b
    }

    fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn reads_metadata_and_tensor_directory() {
        let f = write_temp(&tiny_gguf(10, 0));
        let h = GgufHeader::read_file(f.path()).unwrap();
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.context_length(), Some(2048));
        assert_eq!(h.parameter_count(), 10);
        assert_eq!(h.quantization(), "F32");
    }

    #[test]
    fn refuses_truncated_and_foreign_files() {
        let f = write_temp(&tiny_gguf(10, 4));
        assert!(matches!(
            GgufHeader::read_file(f.path()),
            Err(GgufError::Truncated { .. })
        ));
        let f = write_temp(b"PK\x03\x04 not a gguf");
        assert!(matches!(
            GgufHeader::read_file(f.path()),
            Err(GgufError::NotGguf { .. })
        ));
        let mut cut_header = tiny_gguf(10, 0);
        cut_header.truncate(40);
        let f = write_temp(&cut_header);
        assert!(matches!(
            GgufHeader::read_file(f.path()),
            Err(GgufError::Corrupt { .. })
        ));
    }

    #[test]
    fn parameter_counts_read_like_model_cards() {
        assert_eq!(format_parameter_count(134_515_008), "134.52M");
        assert_eq!(format_parameter_count(7_241_732_096), "7.24B");
    }

    /// Little-endian pieces of a hand-written GGUF v3.
    #[derive(Default)]
    struct Writer(Vec<u8>);

    impl Writer {
        fn u32(&mut self, v: u32) -> &mut Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn string(&mut self, s: &str) -> &mut Self {
            self.u64(s.len() as u64);
            self.0.extend(s.as_bytes());
            self
        }
        fn header(&mut self, tensors: u64, kvs: u64) -> &mut Self {
            self.u32(MAGIC).u32(3).u64(tensors).u64(kvs)
        }
        /// A tensor directory entry of type F32.
        fn tensor(&mut self, name: &str, dims: &[u64], offset: u64) -> &mut Self {
            self.string(name).u32(dims.len() as u32);
            for &d in dims {
                self.u64(d);
            }
            self.u32(0).u64(offset)
        }
        fn padded(&mut self, data: usize) -> Vec<u8> {
            while !self.0.len().is_multiple_of(32) {
                self.0.push(0);
            }
            self.0.extend(vec![0u8; data]);
            self.0.clone()
        }
    }

    fn corrupt_reason(bytes: &[u8]) -> String {
        let f = write_temp(bytes);
        match GgufHeader::read_file(f.path()) {
            Err(GgufError::Corrupt { reason, .. }) => reason,
            other => panic!("expected a corrupt-header error, got {other:?}"),
        }
    }

    #[test]
    fn tensor_sizes_that_overflow_are_refused() {
        let mut w = Writer::default();
        w.header(1, 0).tensor("w", &[1 << 32, 1 << 32, 16], 0);
        let reason = corrupt_reason(&w.padded(64));
        assert!(reason.contains("cannot fit"), "{reason}");

        let mut w = Writer::default();
        w.header(1, 0).tensor("w", &[4], u64::MAX - 8);
        let reason = corrupt_reason(&w.padded(64));
        assert!(reason.contains("cannot fit"), "{reason}");
    }

    #[test]
    fn an_alignment_of_zero_or_not_a_power_of_two_is_refused() {
        for alignment in [0u32, 3, 48] {
            let mut w = Writer::default();
            w.header(1, 1)
                .string("general.alignment")
                .u32(4)
                .u32(alignment);
            w.tensor("w", &[4], 0);
            let reason = corrupt_reason(&w.padded(64));
            assert!(
                reason.contains("general.alignment"),
                "{alignment}: {reason}"
            );
        }
        let mut w = Writer::default();
        w.header(1, 1).string("general.alignment").u32(4).u32(64);
        w.tensor("w", &[4], 0);
        let mut bytes = w.0.clone();
        bytes.resize(bytes.len().div_ceil(64) * 64 + 16, 0);
        let f = write_temp(&bytes);
        let h = GgufHeader::read_file(f.path()).unwrap();
        assert_eq!(h.data_offset % 64, 0);
    }

    #[test]
    fn array_and_string_lengths_are_checked_against_the_file_before_allocating() {
        for (element_type, len) in [
            (0u32, 1u64 << 60),
            (0, 1 << 31),
            (8, 1 << 31),
            (10, 1 << 62),
        ] {
            let mut w = Writer::default();
            w.header(0, 1)
                .string("huge")
                .u32(9)
                .u32(element_type)
                .u64(len);
            let reason = corrupt_reason(&w.padded(0));
            assert!(
                reason.contains("elements") || reason.contains("left in the file"),
                "{element_type} x {len}: {reason}"
            );
        }
        let mut w = Writer::default();
        w.header(0, 1).string("name").u32(8).u64(60 << 20);
        let reason = corrupt_reason(&w.padded(0));
        assert!(reason.contains("left in the file"), "{reason}");

        let mut w = Writer::default();
        w.header(1 << 19, 1 << 19);
        let reason = corrupt_reason(&w.padded(0));
        assert!(reason.contains("declared keys and tensors"), "{reason}");
    }

    #[test]
    fn metadata_arrays_are_skipped_and_recorded_by_length() {
        let mut w = Writer::default();
        w.header(0, 3);
        w.string("tokenizer.ggml.tokens").u32(9).u32(8).u64(3);
        w.string("a").string("bb").string("ccc");
        w.string("tokenizer.ggml.scores").u32(9).u32(6).u64(3);
        w.u32(0).u32(0).u32(0);
        w.string("general.architecture").u32(8).string("llama");
        let f = write_temp(&w.padded(0));
        let h = GgufHeader::read_file(f.path()).unwrap();
        assert_eq!(
            h.get("tokenizer.ggml.tokens"),
            Some(&GgufValue::Array {
                element_type: 8,
                len: 3
            })
        );
        assert_eq!(
            h.get("tokenizer.ggml.scores"),
            Some(&GgufValue::Array {
                element_type: 6,
                len: 3
            })
        );
        assert_eq!(h.architecture(), Some("llama"));
    }
}
