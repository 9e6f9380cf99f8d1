//! The shape of a paged KV cache and one step's addressing of it: plain values that the cache's storage
//! (`kv_cache`) and the CUDA path (`cuda`) both read. Kept apart from both so that neither imports the
//! other for them.

/// The element type keys and values are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    F32,
    /// Half the memory of f32, as llama.cpp's default cache; attention widens each value as it reads it.
    #[default]
    F16,
    /// llama.cpp's `q8_0` (`-ctk q8_0 -ctv q8_0`): 32 values as one f16 scale and 32 signed bytes, 34 bytes
    /// where f16 takes 64. Needs a head size that is whole blocks of 32.
    Q8_0,
}

impl KvType {
    /// Values per Q8_0 block.
    pub const Q8_BLOCK: usize = 32;

    /// Bytes that `values` keys (or values) take; for Q8_0, `values` is whole blocks.
    pub fn bytes_for(self, values: usize) -> usize {
        match self {
            KvType::F32 => 4 * values,
            KvType::F16 => 2 * values,
            KvType::Q8_0 => values / Self::Q8_BLOCK * 34,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }

    /// Whether a head of `head_dim` values can be stored in this type.
    pub fn fits_head(self, head_dim: usize) -> bool {
        self != KvType::Q8_0 || head_dim.is_multiple_of(Self::Q8_BLOCK)
    }
}

impl std::str::FromStr for KvType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(KvType::F32),
            "f16" => Ok(KvType::F16),
            "q8_0" => Ok(KvType::Q8_0),
            other => Err(format!(
                "KV cache type {other:?} is not supported: use f16 (the default), q8_0 or f32"
            )),
        }
    }
}

/// The shape of one model's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Token positions per block.
    pub block_size: usize,
    pub kv_type: KvType,
}

impl KvLayout {
    /// Values one token position takes in one layer, for keys or for values.
    pub fn token_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Bytes one block takes across all layers, keys and values.
    pub fn bytes_per_block(&self) -> usize {
        self.layers * 2 * self.kv_type.bytes_for(self.block_size * self.token_width())
    }

    /// Blocks needed to hold `tokens` positions.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }
}

/// A step's addressing of the cache, flattened as the kernels read it (`kernels::reference`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepTables {
    /// Every sequence's block table, one after another.
    pub block_tables: Vec<u32>,
    /// Per token: where its sequence's table starts in `block_tables`, then its position.
    pub token_meta: Vec<u32>,
    /// Per token: the slot (block * block size + offset) its key and value go to.
    pub slots: Vec<u32>,
}

impl StepTables {
    pub fn new(batch: &crate::StepBatch, block_size: usize) -> Result<Self, crate::ModelError> {
        let mut tables = StepTables::default();
        for seq in &batch.sequences {
            let start = tables.block_tables.len() as u32;
            tables.block_tables.extend_from_slice(&seq.block_table);
            for position in seq.cached..seq.cached + seq.len {
                let Some(&block) = seq.block_table.get(position / block_size) else {
                    return Err(crate::ModelError::Unsupported(format!(
                        "position {position} is outside the sequence's {} cache blocks",
                        seq.block_table.len()
                    )));
                };
                tables.token_meta.extend([start, position as u32]);
                tables
                    .slots
                    .push(block * block_size as u32 + (position % block_size) as u32);
            }
        }
        Ok(tables)
    }
}
