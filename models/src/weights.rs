//! Reading a GGUF file's metadata and tensors through candle, with errors that name what is missing.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::{QMatMul, QTensor, gguf_file};
use candle_core::{Device, Tensor};

use crate::ModelError;

/// An open GGUF file: its header, and a reader for its tensors.
pub struct GgufWeights {
    content: gguf_file::Content,
    reader: BufReader<File>,
    device: Device,
    architecture: String,
}

impl GgufWeights {
    pub fn open(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|e| ModelError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let content =
            gguf_file::Content::read(&mut reader).map_err(|e| ModelError::corrupt(path, e))?;
        let architecture = match content.metadata.get("general.architecture") {
            Some(gguf_file::Value::String(a)) => a.clone(),
            _ => return Err(ModelError::MissingMetadata("general.architecture".into())),
        };
        Ok(Self {
            content,
            reader,
            device: device.clone(),
            architecture,
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

    pub fn qtensor(&mut self, name: &str) -> Result<QTensor, ModelError> {
        if !self.has_tensor(name) {
            return Err(ModelError::MissingTensor(name.to_string()));
        }
        self.content
            .tensor(&mut self.reader, name, &self.device)
            .map_err(|e| ModelError::Tensor {
                name: name.to_string(),
                reason: e.to_string(),
            })
    }

    pub fn qmatmul(&mut self, name: &str) -> Result<QMatMul, ModelError> {
        Ok(QMatMul::from_qtensor(self.qtensor(name)?)?)
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
