//! Prefix caching: full KV blocks of earlier prompts, found again by a hash of every token up to and
//! including the block (as vLLM hashes blocks), so sequences that share a prompt prefix (a system prompt,
//! tool schemas) share its blocks instead of recomputing them.
//!
//! The cache holds its own share of each block through a lease; a cached block is never written again,
//! because sequences only write positions past the prefix they share. Entries whose blocks no sequence
//! holds are evicted least recently used first when memory is needed.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use models::{BlockLease, BlockPool};

pub struct PrefixCache {
    block_size: usize,
    entries: HashMap<u64, Entry>,
    lease: BlockLease,
    pool: BlockPool,
    clock: u64,
}

struct Entry {
    block: u32,
    last_used: u64,
}

/// The chain hash of each full block of `tokens`.
fn block_hashes(tokens: &[u32], block_size: usize) -> Vec<u64> {
    let mut hashes = Vec::with_capacity(tokens.len() / block_size);
    let mut previous = 0u64;
    for block in tokens.chunks_exact(block_size) {
        let mut h = DefaultHasher::new();
        previous.hash(&mut h);
        block.hash(&mut h);
        previous = h.finish();
        hashes.push(previous);
    }
    hashes
}

impl PrefixCache {
    pub fn new(pool: &BlockPool) -> Self {
        Self {
            block_size: pool.block_size(),
            entries: HashMap::new(),
            lease: pool.lease(),
            pool: pool.clone(),
            clock: 0,
        }
    }

    /// Cached blocks holding a prefix of `tokens`, leaving at least the last token to compute.
    pub fn lookup(&mut self, tokens: &[u32]) -> Vec<u32> {
        self.clock += 1;
        let usable = tokens.len().saturating_sub(1);
        let mut blocks = Vec::new();
        for hash in block_hashes(&tokens[..usable], self.block_size) {
            match self.entries.get_mut(&hash) {
                Some(entry) => {
                    entry.last_used = self.clock;
                    blocks.push(entry.block);
                }
                None => break,
            }
        }
        blocks
    }

    /// Remembers the full blocks of `tokens`, stored in `block_table`'s blocks.
    pub fn insert(&mut self, tokens: &[u32], block_table: &[u32]) {
        self.clock += 1;
        for (hash, &block) in block_hashes(tokens, self.block_size)
            .into_iter()
            .zip(block_table)
        {
            if let Some(entry) = self.entries.get_mut(&hash) {
                entry.last_used = self.clock;
                continue;
            }
            self.lease.adopt(block);
            self.entries.insert(
                hash,
                Entry {
                    block,
                    last_used: self.clock,
                },
            );
        }
    }

    /// Blocks the cache holds a share of.
    pub fn blocks(&self) -> usize {
        self.entries.len()
    }

    /// Drops the least recently used entry that only the cache holds; false when there is none.
    pub fn evict_one(&mut self) -> bool {
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| self.pool.holders(e.block) == 1)
            .min_by_key(|(_, e)| e.last_used)
            .map(|(h, e)| (*h, e.block));
        match victim {
            Some((hash, block)) => {
                self.entries.remove(&hash);
                self.lease.give_back(block);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefixes_are_found_and_the_last_token_is_left_to_compute() {
        let pool = BlockPool::new(8, 4);
        let mut cache = PrefixCache::new(&pool);
        let mut first = pool.lease();
        let tokens: Vec<u32> = (0..10).collect();
        first.reserve(tokens.len()).unwrap();
        cache.insert(&tokens, first.blocks());
        let hit = cache.lookup(&[0, 1, 2, 3, 4, 5, 6, 7, 99]);
        assert_eq!(hit, first.blocks()[..2]);
        // Exactly two full blocks: the second cannot be shared, its last token must be computed.
        assert_eq!(cache.lookup(&tokens[..8]), first.blocks()[..1]);
        assert!(cache.lookup(&[9, 9, 9, 9, 9]).is_empty());
    }

    #[test]
    fn only_blocks_no_sequence_holds_are_evicted() {
        let pool = BlockPool::new(4, 4);
        let mut cache = PrefixCache::new(&pool);
        let mut seq = pool.lease();
        seq.reserve(8).unwrap();
        cache.insert(&[1, 2, 3, 4, 5, 6, 7, 8], seq.blocks());
        assert!(!cache.evict_one(), "both blocks are still in use");
        drop(seq);
        assert_eq!(pool.free_blocks(), 2);
        assert!(cache.evict_one());
        assert!(cache.evict_one());
        assert_eq!(pool.free_blocks(), 4);
    }
}
