//! The paged KV cache: fixed-size blocks of key/value slots, and leases on them.
//!
//! Storage is one preallocated buffer per layer for keys and one for values, laid out
//! `[block][slot][kv_head][head_dim]` (vLLM's paged layout), in the layout's `KvType` (f16 by default in
//! host memory; the CUDA kernels read f32). A sequence owns a `BlockLease`: the blocks
//! holding its positions, in order. Dropping a lease returns its blocks to the pool, so a cancelled or
//! failed sequence cannot leak cache memory. Blocks are reference counted so that sequences sharing a
//! prompt prefix can share the blocks that hold it.

use std::sync::{Arc, Mutex, MutexGuard};

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::kv_layout::{KvLayout, KvType};

/// Key and value storage for every layer.
pub struct PagedKvCache {
    layout: KvLayout,
    num_blocks: usize,
    storage: KvStorage,
}

enum KvStorage {
    Host(HostKv),
    /// In device memory, read and written by our CUDA kernels.
    #[cfg(feature = "cuda")]
    Cuda(Box<crate::cuda::DeviceKv>),
}

/// Keys and values in host memory: one buffer per layer each, in the layout's element type.
enum HostKv {
    F32 {
        keys: Vec<Vec<f32>>,
        values: Vec<Vec<f32>>,
    },
    F16 {
        keys: Vec<Vec<f16>>,
        values: Vec<Vec<f16>>,
    },
    Q8_0 {
        keys: Vec<Vec<Q8Block>>,
        values: Vec<Vec<Q8Block>>,
    },
}

/// llama.cpp's `block_q8_0`: 32 values stored as `d * qs[i]`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[repr(C)]
pub struct Q8Block {
    pub d: f16,
    pub qs: [i8; 32],
}

impl Q8Block {
    /// `n` zero blocks from zeroed memory, which the OS maps lazily (as `vec![0.0f32; n]` is): the
    /// cache's pages count in the process's memory only once positions are written.
    fn zeroed(n: usize) -> Vec<Q8Block> {
        let Ok(layout) = std::alloc::Layout::array::<Q8Block>(n) else {
            panic!("a KV cache of {n} blocks overflows the address space");
        };
        if layout.size() == 0 {
            return Vec::new();
        }
        // SAFETY: the layout is non-zero-sized and for `n` blocks; all-zero bytes are a valid
        // `Q8Block` (`d` = +0.0, `qs` = 0), and the Vec takes ownership with the allocator and layout
        // it was allocated with.
        unsafe {
            let ptr = std::alloc::alloc_zeroed(layout) as *mut Q8Block;
            if ptr.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Vec::from_raw_parts(ptr, n, n)
        }
    }

    /// Quantizes `src` (whole blocks) into `dst` as llama.cpp's `quantize_row_q8_0_ref` does.
    pub fn quantize(dst: &mut [Q8Block], src: &[f32]) {
        for (block, x) in dst.iter_mut().zip(src.chunks_exact(KvType::Q8_BLOCK)) {
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
            for (q, v) in block.qs.iter_mut().zip(x) {
                *q = (v * inverse).round() as i8;
            }
            block.d = f16::from_f32(d);
        }
    }

    /// The blocks' values as f32, `d * q`, into `out` (32 per block; a loop the compiler vectorises).
    #[inline(always)]
    pub fn widen_into(blocks: &[Q8Block], out: &mut [f32]) {
        for (block, out) in blocks.iter().zip(out.chunks_exact_mut(KvType::Q8_BLOCK)) {
            let d = block.d.to_f32();
            for (o, &q) in out.iter_mut().zip(&block.qs) {
                *o = d * q as f32;
            }
        }
    }

    /// The blocks' values as f32.
    pub fn widen(blocks: &[Q8Block]) -> Vec<f32> {
        let mut out = vec![0f32; blocks.len() * KvType::Q8_BLOCK];
        Self::widen_into(blocks, &mut out);
        out
    }
}

/// One layer's keys and values as attention reads them.
#[derive(Clone, Copy)]
pub enum KvLayer<'a> {
    F32 {
        keys: &'a [f32],
        values: &'a [f32],
    },
    F16 {
        keys: &'a [f16],
        values: &'a [f16],
    },
    /// Blocks of 32 values: position offsets divide by 32 to index them.
    Q8_0 {
        keys: &'a [Q8Block],
        values: &'a [Q8Block],
    },
}

impl KvLayer<'_> {
    /// The layer's keys and values widened to f32 (for tests and checks, not the hot path).
    pub fn to_f32(&self) -> (Vec<f32>, Vec<f32>) {
        match *self {
            KvLayer::F32 { keys, values } => (keys.to_vec(), values.to_vec()),
            KvLayer::F16 { keys, values } => (keys.to_f32_vec(), values.to_f32_vec()),
            KvLayer::Q8_0 { keys, values } => (Q8Block::widen(keys), Q8Block::widen(values)),
        }
    }
}

/// `n` zero f16 values from zeroed memory (a `vec![0u16; n]` reinterpreted, no copy), which the OS maps
/// lazily: `vec![f16::ZERO; n]` would write every value and make the whole cache resident at once.
fn zeroed_f16(n: usize) -> Vec<f16> {
    use half::vec::HalfBitsVecExt;
    vec![0u16; n].reinterpret_into()
}

/// Copies `len` values from `src` to `dst` within every buffer.
fn copy_within_all<T: Copy>(buffers: &mut [Vec<T>], src: usize, dst: usize, len: usize) {
    for buffer in buffers {
        buffer.copy_within(src..src + len, dst);
    }
}

impl PagedKvCache {
    /// A cache in host memory.
    pub fn new(layout: KvLayout, num_blocks: usize) -> Self {
        let per_layer = num_blocks * layout.block_size * layout.token_width();
        let host = match layout.kv_type {
            KvType::F32 => HostKv::F32 {
                keys: (0..layout.layers).map(|_| vec![0.0; per_layer]).collect(),
                values: (0..layout.layers).map(|_| vec![0.0; per_layer]).collect(),
            },
            KvType::F16 => HostKv::F16 {
                keys: (0..layout.layers).map(|_| zeroed_f16(per_layer)).collect(),
                values: (0..layout.layers).map(|_| zeroed_f16(per_layer)).collect(),
            },
            KvType::Q8_0 => {
                let blocks = per_layer.div_ceil(KvType::Q8_BLOCK);
                HostKv::Q8_0 {
                    keys: (0..layout.layers)
                        .map(|_| Q8Block::zeroed(blocks))
                        .collect(),
                    values: (0..layout.layers)
                        .map(|_| Q8Block::zeroed(blocks))
                        .collect(),
                }
            }
        };
        Self {
            layout,
            num_blocks,
            storage: KvStorage::Host(host),
        }
    }

    /// A cache where `device`'s attention reads it: device memory on CUDA (always f32, what the kernels
    /// read), host memory otherwise (the CPU path, and Metal, whose attention runs on the host).
    pub fn on_device(
        layout: KvLayout,
        num_blocks: usize,
        device: &candle_core::Device,
    ) -> Result<Self, crate::ModelError> {
        match device {
            #[cfg(feature = "cuda")]
            candle_core::Device::Cuda(cuda) => Ok(Self {
                layout: KvLayout {
                    kv_type: KvType::F32,
                    ..layout
                },
                num_blocks,
                storage: KvStorage::Cuda(Box::new(crate::cuda::DeviceKv::new(
                    cuda, layout, num_blocks,
                )?)),
            }),
            _ => Ok(Self::new(layout, num_blocks)),
        }
    }

    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Makes the step's block tables ready for the device kernels (a no-op in host memory).
    pub fn begin_step(&mut self, batch: &crate::StepBatch) -> Result<(), crate::ModelError> {
        match &mut self.storage {
            KvStorage::Host(_) => {
                let _ = batch;
                Ok(())
            }
            #[cfg(feature = "cuda")]
            KvStorage::Cuda(device) => Ok(device.begin_step(batch)?),
        }
    }

    /// The device half, when the cache lives on a CUDA device.
    #[cfg(feature = "cuda")]
    pub fn device_mut(&mut self) -> Option<&mut crate::cuda::DeviceKv> {
        match &mut self.storage {
            KvStorage::Cuda(device) => Some(device),
            KvStorage::Host(_) => None,
        }
    }

    /// Where position `position` of a sequence with `block_table` starts in a layer's buffer.
    #[inline]
    pub fn slot_offset(&self, block_table: &[u32], position: usize) -> usize {
        let block = block_table[position / self.layout.block_size] as usize;
        (block * self.layout.block_size + position % self.layout.block_size)
            * self.layout.token_width()
    }

    #[cfg(feature = "cuda")]
    fn host_only() -> crate::ModelError {
        crate::ModelError::Unsupported("the KV cache is in device memory".into())
    }

    /// Stores one position's keys and values (`kv_heads * head_dim` each) for one layer.
    pub fn write(
        &mut self,
        layer: usize,
        block_table: &[u32],
        position: usize,
        key: &[f32],
        value: &[f32],
    ) -> Result<(), crate::ModelError> {
        let offset = self.slot_offset(block_table, position);
        let width = self.layout.token_width();
        match &mut self.storage {
            KvStorage::Host(HostKv::F32 { keys, values }) => {
                keys[layer][offset..offset + width].copy_from_slice(key);
                values[layer][offset..offset + width].copy_from_slice(value);
                Ok(())
            }
            KvStorage::Host(HostKv::F16 { keys, values }) => {
                keys[layer][offset..offset + width].convert_from_f32_slice(key);
                values[layer][offset..offset + width].convert_from_f32_slice(value);
                Ok(())
            }
            KvStorage::Host(HostKv::Q8_0 { keys, values }) => {
                // A token's row is whole blocks (`KvType::fits_head`), so blocks never straddle tokens.
                let blocks = offset / KvType::Q8_BLOCK..(offset + width) / KvType::Q8_BLOCK;
                Q8Block::quantize(&mut keys[layer][blocks.clone()], key);
                Q8Block::quantize(&mut values[layer][blocks], value);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            KvStorage::Cuda(_) => Err(Self::host_only()),
        }
    }

    /// Copies the first `count` positions of `src_block` into `dst_block`, keys and values of every
    /// layer: a sequence takes a private copy of a shared block it is about to write into.
    pub fn copy_positions(
        &mut self,
        src_block: u32,
        dst_block: u32,
        count: usize,
    ) -> Result<(), crate::ModelError> {
        let width = self.layout.token_width();
        if count > self.layout.block_size
            || src_block as usize >= self.num_blocks
            || dst_block as usize >= self.num_blocks
        {
            return Err(crate::ModelError::Unsupported(format!(
                "copying {count} positions from block {src_block} to {dst_block}"
            )));
        }
        if src_block == dst_block || count == 0 {
            return Ok(());
        }
        let src = src_block as usize * self.layout.block_size * width;
        let dst = dst_block as usize * self.layout.block_size * width;
        let len = count * width;
        match &mut self.storage {
            KvStorage::Host(HostKv::F32 { keys, values }) => {
                copy_within_all(keys, src, dst, len);
                copy_within_all(values, src, dst, len);
                Ok(())
            }
            KvStorage::Host(HostKv::F16 { keys, values }) => {
                copy_within_all(keys, src, dst, len);
                copy_within_all(values, src, dst, len);
                Ok(())
            }
            KvStorage::Host(HostKv::Q8_0 { keys, values }) => {
                let block = KvType::Q8_BLOCK;
                copy_within_all(keys, src / block, dst / block, len / block);
                copy_within_all(values, src / block, dst / block, len / block);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            KvStorage::Cuda(device) => Ok(device.copy_within(src, dst, len)?),
        }
    }

    /// A layer's key and value buffers, in host memory.
    pub fn layer(&self, layer: usize) -> Result<KvLayer<'_>, crate::ModelError> {
        match &self.storage {
            KvStorage::Host(HostKv::F32 { keys, values }) => Ok(KvLayer::F32 {
                keys: &keys[layer],
                values: &values[layer],
            }),
            KvStorage::Host(HostKv::F16 { keys, values }) => Ok(KvLayer::F16 {
                keys: &keys[layer],
                values: &values[layer],
            }),
            KvStorage::Host(HostKv::Q8_0 { keys, values }) => Ok(KvLayer::Q8_0 {
                keys: &keys[layer],
                values: &values[layer],
            }),
            #[cfg(feature = "cuda")]
            KvStorage::Cuda(_) => Err(Self::host_only()),
        }
    }
}

/// Free blocks and reference counts. Shared by leases through a `BlockPool`.
#[derive(Debug)]
pub struct BlockAllocator {
    free: Vec<u32>,
    refs: Vec<u32>,
}

impl BlockAllocator {
    pub fn new(num_blocks: usize) -> Self {
        Self {
            // Pop from the end: low block ids are handed out first.
            free: (0..num_blocks as u32).rev().collect(),
            refs: vec![0; num_blocks],
        }
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    pub fn total_blocks(&self) -> usize {
        self.refs.len()
    }

    fn allocate(&mut self, n: usize) -> Option<Vec<u32>> {
        if self.free.len() < n {
            return None;
        }
        let blocks = self.free.split_off(self.free.len() - n);
        for &b in &blocks {
            self.refs[b as usize] = 1;
        }
        Some(blocks)
    }

    fn retain(&mut self, block: u32) {
        self.refs[block as usize] += 1;
    }

    fn refs(&self, block: u32) -> u32 {
        self.refs[block as usize]
    }

    fn release(&mut self, block: u32) {
        let r = &mut self.refs[block as usize];
        *r = r.saturating_sub(1);
        if *r == 0 {
            self.free.push(block);
        }
    }
}

/// A shareable handle on a cache's block allocator.
#[derive(Debug, Clone)]
pub struct BlockPool {
    inner: Arc<Mutex<BlockAllocator>>,
    block_size: usize,
}

/// Not enough free blocks for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("KV cache is full: {needed} blocks needed, {free} free")]
pub struct OutOfBlocks {
    pub needed: usize,
    pub free: usize,
}

impl BlockPool {
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(BlockAllocator::new(num_blocks))),
            block_size,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BlockAllocator> {
        // A panic while holding the lock leaves the counts consistent (every method is one short update).
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn free_blocks(&self) -> usize {
        self.lock().free_blocks()
    }

    pub fn total_blocks(&self) -> usize {
        self.lock().total_blocks()
    }

    /// How many leases hold `block`.
    pub fn holders(&self, block: u32) -> u32 {
        self.lock().refs(block)
    }

    /// An empty lease that grows as its sequence does.
    pub fn lease(&self) -> BlockLease {
        BlockLease {
            pool: self.clone(),
            blocks: Vec::new(),
        }
    }
}

/// The blocks one sequence holds. Returned to the pool when dropped.
#[derive(Debug)]
pub struct BlockLease {
    pool: BlockPool,
    blocks: Vec<u32>,
}

impl BlockLease {
    pub fn blocks(&self) -> &[u32] {
        &self.blocks
    }

    /// Positions the lease can hold.
    pub fn capacity(&self) -> usize {
        self.blocks.len() * self.pool.block_size
    }

    /// Makes room for `tokens` positions in all, taking new blocks as needed.
    pub fn reserve(&mut self, tokens: usize) -> Result<(), OutOfBlocks> {
        let needed = tokens
            .div_ceil(self.pool.block_size)
            .saturating_sub(self.blocks.len());
        if needed == 0 {
            return Ok(());
        }
        let mut allocator = self.pool.lock();
        let free = allocator.free_blocks();
        let new = allocator
            .allocate(needed)
            .ok_or(OutOfBlocks { needed, free })?;
        self.blocks.extend(new);
        Ok(())
    }

    /// Shares `blocks` (held by another lease) as this lease's first blocks.
    pub fn share_prefix(&mut self, blocks: &[u32]) {
        let mut allocator = self.pool.lock();
        for &b in blocks {
            allocator.retain(b);
        }
        drop(allocator);
        let rest = std::mem::take(&mut self.blocks);
        self.blocks = blocks.to_vec();
        self.blocks.extend(rest);
    }

    /// Takes a share of `block` (held by another lease) at the end of this lease.
    pub fn adopt(&mut self, block: u32) {
        self.pool.lock().retain(block);
        self.blocks.push(block);
    }

    /// Gives back this lease's share of `block`.
    pub fn give_back(&mut self, block: u32) {
        if let Some(at) = self.blocks.iter().position(|&b| b == block) {
            self.blocks.swap_remove(at);
            self.pool.lock().release(block);
        }
    }

    /// Gives every block back; the lease stays usable and empty.
    pub fn clear(&mut self) {
        let mut allocator = self.pool.lock();
        for b in self.blocks.drain(..) {
            allocator.release(b);
        }
    }
}

impl Drop for BlockLease {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_grow_by_blocks_and_return_them_when_dropped() {
        let pool = BlockPool::new(4, 16);
        let mut a = pool.lease();
        a.reserve(17).unwrap();
        assert_eq!(a.blocks().len(), 2);
        assert_eq!(pool.free_blocks(), 2);
        let mut b = pool.lease();
        assert_eq!(b.reserve(48), Err(OutOfBlocks { needed: 3, free: 2 }));
        b.reserve(32).unwrap();
        assert_eq!(pool.free_blocks(), 0);
        drop(a);
        assert_eq!(pool.free_blocks(), 2);
        drop(b);
        assert_eq!(pool.free_blocks(), 4);
    }

    #[test]
    fn positions_copy_between_blocks_in_every_layer() {
        for kv_type in [KvType::F32, KvType::F16] {
            let layout = KvLayout {
                layers: 2,
                kv_heads: 1,
                head_dim: 2,
                block_size: 4,
                kv_type,
            };
            let mut cache = PagedKvCache::new(layout, 3);
            for p in 0..4 {
                let (k, v) = ([p as f32, 1.0], [10.0 + p as f32, 2.0]);
                cache.write(0, &[2], p, &k, &v).unwrap();
                cache.write(1, &[2], p, &v, &k).unwrap();
            }
            cache.copy_positions(2, 0, 3).unwrap();
            let (keys, values) = cache.layer(0).unwrap().to_f32();
            assert_eq!(keys[..8], [0.0, 1.0, 1.0, 1.0, 2.0, 1.0, 0.0, 0.0]);
            assert_eq!(values[..6], [10.0, 2.0, 11.0, 2.0, 12.0, 2.0]);
            let (keys, _) = cache.layer(1).unwrap().to_f32();
            assert_eq!(keys[..6], [10.0, 2.0, 11.0, 2.0, 12.0, 2.0]);
            assert!(cache.copy_positions(2, 0, 5).is_err());
            assert!(cache.copy_positions(3, 0, 1).is_err());
        }
    }

    /// The process's resident memory in KiB.
    #[cfg(target_os = "linux")]
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    /// A new cache costs address space, not memory: its pages become resident only as positions are
    /// written (as an f32 cache's always did), whatever the element type.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_new_cache_of_any_type_is_not_resident_until_written() {
        for kv_type in [KvType::F32, KvType::F16, KvType::Q8_0] {
            let layout = KvLayout {
                layers: 8,
                kv_heads: 8,
                head_dim: 128,
                block_size: 16,
                kv_type,
            };
            let before = rss_kib();
            let cache = PagedKvCache::new(layout, 2048);
            let grown = rss_kib().saturating_sub(before);
            assert!(
                grown < 32 * 1024,
                "{kv_type:?}: a new cache of {} MiB made {} MiB resident",
                (layout.bytes_per_block() * 2048) >> 20,
                grown >> 10
            );
            drop(cache);
        }
    }

    #[test]
    fn a_q8_0_cache_takes_34_bytes_per_32_values_keeps_each_within_half_a_step_and_copies_blocks() {
        let layout = KvLayout {
            layers: 1,
            kv_heads: 2,
            head_dim: 32,
            block_size: 2,
            kv_type: KvType::Q8_0,
        };
        let wide = KvLayout {
            kv_type: KvType::F32,
            ..layout
        };
        assert_eq!(layout.bytes_per_block() * 128, wide.bytes_per_block() * 34);
        assert!(!KvType::Q8_0.fits_head(48) && KvType::Q8_0.fits_head(64));
        let mut cache = PagedKvCache::new(layout, 2);
        let key: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let value: Vec<f32> = key.iter().map(|k| -k * 100.0).collect();
        cache.write(0, &[1], 1, &key, &value).unwrap();
        let (keys, values) = cache.layer(0).unwrap().to_f32();
        // Position 1 of block 1 is slot 3: values 192..256.
        for (head, (stored, exact)) in [(&keys[192..256], &key), (&values[192..256], &value)]
            .into_iter()
            .enumerate()
        {
            for (s32, e32) in stored.chunks(32).zip(exact.chunks(32)) {
                let amax = e32.iter().fold(0f32, |m, v| m.max(v.abs()));
                // Half a step of rounding, plus the block scale's own rounding to f16 (2^-11 of amax).
                let bound = amax / 127.0 * 0.5 + amax / 2048.0;
                for (s, e) in s32.iter().zip(e32) {
                    assert!((s - e).abs() <= bound, "{head}: {s} vs {e}");
                }
            }
        }
        cache.copy_positions(1, 0, 2).unwrap();
        let (copied, _) = cache.layer(0).unwrap().to_f32();
        assert_eq!(copied[64..128], copied[192..256]);
    }

    #[test]
    fn an_f16_cache_takes_half_the_bytes_and_keeps_values_to_f16_precision() {
        let layout = KvLayout {
            layers: 1,
            kv_heads: 2,
            head_dim: 4,
            block_size: 2,
            kv_type: KvType::F16,
        };
        let wide = KvLayout {
            kv_type: KvType::F32,
            ..layout
        };
        assert_eq!(layout.bytes_per_block() * 2, wide.bytes_per_block());
        let mut cache = PagedKvCache::new(layout, 1);
        let key: Vec<f32> = (0..8).map(|i| 0.1 + i as f32 / 3.0).collect();
        let value: Vec<f32> = key.iter().map(|k| -k * 1000.0).collect();
        cache.write(0, &[0], 1, &key, &value).unwrap();
        let (keys, values) = cache.layer(0).unwrap().to_f32();
        for (stored, exact) in keys[8..]
            .iter()
            .zip(&key)
            .chain(values[8..].iter().zip(&value))
        {
            assert!(
                (stored - exact).abs() <= exact.abs() / 1024.0,
                "{stored} vs {exact}"
            );
        }
    }

    #[test]
    fn shared_blocks_are_freed_by_their_last_holder() {
        let pool = BlockPool::new(4, 16);
        let mut a = pool.lease();
        a.reserve(16).unwrap();
        let mut b = pool.lease();
        b.share_prefix(a.blocks());
        b.reserve(32).unwrap();
        assert_eq!(b.blocks()[0], a.blocks()[0]);
        assert_eq!(pool.free_blocks(), 2);
        drop(a);
        assert_eq!(pool.free_blocks(), 2);
        drop(b);
        assert_eq!(pool.free_blocks(), 4);
    }
}
