//! GGUF header inspection for the store: what `package` needs to describe a model, and proof that a file is
//! a whole GGUF.
//!
//! We read the header ourselves rather than through `candle_core::quantized::gguf_file`: candle refuses files
//! holding tensor types it cannot compute with (IQ*, TQ*, MXFP4), but the store must package and describe any
//! GGUF, runnable here or not. The engine loads weights through candle.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

const MAGIC: u32 = 0x4655_4747; // "GGUF", little-endian
const DEFAULT_ALIGNMENT: u64 = 32;
// Bounds that a sane header never reaches; they keep a corrupt one from asking for absurd allocations.
const MAX_STRING_LEN: u64 = 64 << 20;
const MAX_ARRAY_LEN: u64 = 1 << 26;
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

/// One metadata value. Arrays keep their elements; tokenizer vocabularies are arrays of strings.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
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
            GgufValue::Array(_) => None,
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
}

impl TensorInfo {
    pub fn element_count(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes the tensor occupies, or None for a type this table does not know.
    pub fn byte_size(&self) -> Option<u64> {
        let (block, size) = ggml_type_layout(self.ggml_type)?;
        Some(self.element_count().div_ceil(block) * size)
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
        };
        let header = reader.header()?;
        let needed = header.data_end()?;
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
    fn data_end(&self) -> Result<u64, GgufError> {
        let mut end = self.data_offset;
        for t in &self.tensors {
            let size = t.byte_size().unwrap_or(0);
            end = end.max(self.data_offset + t.offset + size);
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
        self.tensors.iter().map(TensorInfo::element_count).sum()
    }

    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().filter_map(TensorInfo::byte_size).sum()
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
            *bytes_by_type.entry(t.ggml_type).or_default() += t.byte_size().unwrap_or(0);
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
}

impl<R: Read + Seek> HeaderReader<'_, R> {
    fn corrupt(&self, reason: impl Into<String>) -> GgufError {
        GgufError::Corrupt {
            path: self.path.to_string(),
            reason: reason.into(),
        }
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| self.corrupt(format!("unexpected end of file ({e})")))?;
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

    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.count()?;
        if len > MAX_STRING_LEN {
            return Err(self.corrupt(format!("string of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| self.corrupt(format!("unexpected end of file ({e})")))?;
        // Some converters write invalid UTF-8 in token lists; keep what is there rather than refuse the file.
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn value(&mut self, value_type: u32, depth: u32) -> Result<GgufValue, GgufError> {
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
            9 if depth == 0 => {
                let element_type = self.u32()?;
                let len = self.count()?;
                if len > MAX_ARRAY_LEN {
                    return Err(self.corrupt(format!("array of {len} elements")));
                }
                let mut items = Vec::with_capacity(len.min(1 << 16) as usize);
                for _ in 0..len {
                    items.push(self.value(element_type, depth + 1)?);
                }
                GgufValue::Array(items)
            }
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
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = self.string()?;
            let value_type = self.u32()?;
            let value = self.value(value_type, 0)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        for _ in 0..tensor_count {
            let name = self.string()?;
            let n_dims = self.u32()?;
            if n_dims > MAX_DIMS {
                return Err(self.corrupt(format!("tensor {name} has {n_dims} dimensions")));
            }
            let dims = (0..n_dims)
                .map(|_| self.count())
                .collect::<Result<Vec<_>, _>>()?;
            let ggml_type = self.u32()?;
            if ggml_type_layout(ggml_type).is_none() {
                return Err(self.corrupt(format!("tensor {name} has unknown type {ggml_type}")));
            }
            let offset = self.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(GgufValue::as_u64)
            .filter(|a| *a > 0)
            .unwrap_or(DEFAULT_ALIGNMENT);
        let position = self
            .inner
            .stream_position()
            .map_err(|e| self.corrupt(e.to_string()))?;
        Ok(GgufHeader {
            version,
            metadata,
            tensors,
            data_offset: position.div_ceil(alignment) * alignment,
        })
    }
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
}
