//! Prefix caching: full KV blocks of earlier prompts, found again by a hash of every token up to and
//! including the block (as vLLM hashes blocks), so sequences that share a prompt prefix (a system prompt,
//! tool schemas) share its blocks instead of recomputing them.
//!
//! A prompt's last, partly filled block is remembered too, under the hash of the full blocks before it,
//! with the prompt's tokens in it. A later prompt that matches some of them takes a private copy of those
//! positions (it will write the next position into that block, so it cannot share it): a repeated prompt
//! then computes only its last token, as llama.cpp's slots do.
//!
//! The cache holds its own share of each block through a lease; a cached position is never written again,
//! because sequences only write positions past the prefix they share or copied, and a prompt's owner writes
//! its partial block only past the prompt. Entries whose blocks no sequence holds are evicted least
//! recently used first when memory is needed.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use models::{BlockLease, BlockPool};

pub struct PrefixCache {
    block_size: usize,
    entries: HashMap<u64, Entry>,
    /// Partly filled last blocks, by the chain hash of the full blocks before them (0: none).
    partials: HashMap<u64, Partial>,
    lease: BlockLease,
    pool: BlockPool,
    clock: u64,
}

struct Entry {
    block: u32,
    last_used: u64,
}

struct Partial {
    block: u32,
    /// The prompt's tokens in the block, from its first position.
    tokens: Vec<u32>,
    last_used: u64,
}

/// What a prompt finds in the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixHit {
    /// Full blocks to share, in order.
    pub blocks: Vec<u32>,
    /// A block whose first `.1` positions continue the prefix: to be copied, not shared.
    pub partial: Option<(u32, usize)>,
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
            partials: HashMap::new(),
            lease: pool.lease(),
            pool: pool.clone(),
            clock: 0,
        }
    }

    /// Cached positions holding a prefix of `tokens`, leaving at least the last token to compute.
    pub fn lookup(&mut self, tokens: &[u32]) -> PrefixHit {
        self.clock += 1;
        let usable = tokens.len().saturating_sub(1);
        let mut hit = PrefixHit::default();
        let mut chain = 0u64;
        for hash in block_hashes(&tokens[..usable], self.block_size) {
            match self.entries.get_mut(&hash) {
                Some(entry) => {
                    entry.last_used = self.clock;
                    hit.blocks.push(entry.block);
                    chain = hash;
                }
                None => break,
            }
        }
        let rest = &tokens[hit.blocks.len() * self.block_size..usable];
        if let Some(partial) = self.partials.get_mut(&chain) {
            let same = partial
                .tokens
                .iter()
                .zip(rest)
                .take_while(|(a, b)| a == b)
                .count();
            if same > 0 {
                partial.last_used = self.clock;
                hit.partial = Some((partial.block, same));
            }
        }
        // A prompt that ends exactly at a cached full block: all but its last position can be copied.
        if hit.partial.is_none() && !rest.is_empty() {
            let whole = block_hashes(tokens, self.block_size);
            if let Some(entry) = whole
                .get(hit.blocks.len())
                .and_then(|hash| self.entries.get_mut(hash))
            {
                entry.last_used = self.clock;
                hit.partial = Some((entry.block, rest.len()));
            }
        }
        hit
    }

    /// Remembers the blocks of `tokens` (a whole prompt), stored in `block_table`'s blocks: the full ones,
    /// and the partly filled last one.
    pub fn insert(&mut self, tokens: &[u32], block_table: &[u32]) {
        self.clock += 1;
        let hashes = block_hashes(tokens, self.block_size);
        let chain = hashes.last().copied().unwrap_or(0);
        for (hash, &block) in hashes.into_iter().zip(block_table) {
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
        let full = tokens.len() / self.block_size;
        let tail = &tokens[full * self.block_size..];
        let Some(&block) = block_table.get(full) else {
            return;
        };
        if tail.is_empty() {
            return;
        }
        if let Some(old) = self.partials.get_mut(&chain) {
            old.last_used = self.clock;
            // Keep the one that covers more: an equal or longer one stays.
            if old.tokens.len() >= tail.len() {
                return;
            }
            let replaced = old.block;
            self.partials.remove(&chain);
            self.lease.give_back(replaced);
        }
        self.lease.adopt(block);
        self.partials.insert(
            chain,
            Partial {
                block,
                tokens: tail.to_vec(),
                last_used: self.clock,
            },
        );
    }

    /// Blocks the cache holds a share of.
    pub fn blocks(&self) -> usize {
        self.entries.len() + self.partials.len()
    }

    /// Drops the least recently used entry that only the cache holds; false when there is none.
    pub fn evict_one(&mut self) -> bool {
        // (last used, key, block, partial?) of every entry, full and partial alike.
        let victim = self
            .entries
            .iter()
            .map(|(h, e)| (e.last_used, *h, e.block, false))
            .chain(
                self.partials
                    .iter()
                    .map(|(h, p)| (p.last_used, *h, p.block, true)),
            )
            .filter(|&(_, _, block, _)| self.pool.holders(block) == 1)
            .min_by_key(|&(last_used, ..)| last_used);
        let Some((_, hash, block, partial)) = victim else {
            return false;
        };
        if partial {
            self.partials.remove(&hash);
        } else {
            self.entries.remove(&hash);
        }
        self.lease.give_back(block);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache holding the prompt 0..10 in blocks of 4 (two full, one partial), and the prompt's lease.
    fn cached_prompt(pool: &BlockPool) -> (PrefixCache, BlockLease, Vec<u32>) {
        let mut cache = PrefixCache::new(pool);
        let mut first = pool.lease();
        let tokens: Vec<u32> = (0..10).collect();
        first.reserve(tokens.len()).unwrap();
        cache.insert(&tokens, first.blocks());
        (cache, first, tokens)
    }

    #[test]
    fn shared_prefixes_are_found_and_the_last_token_is_left_to_compute() {
        let pool = BlockPool::new(8, 4);
        let (mut cache, first, tokens) = cached_prompt(&pool);
        let hit = cache.lookup(&[0, 1, 2, 3, 4, 5, 6, 7, 99]);
        assert_eq!(hit.blocks, first.blocks()[..2]);
        assert_eq!(hit.partial, None);
        // Exactly two full blocks: the second cannot be shared, its last token must be computed; its
        // first three positions are the cached prompt's, to be copied.
        let hit = cache.lookup(&tokens[..8]);
        assert_eq!(hit.blocks, first.blocks()[..1]);
        assert_eq!(hit.partial, Some((first.blocks()[1], 3)));
        assert!(cache.lookup(&[9, 9, 9, 9, 9]).blocks.is_empty());
    }

    #[test]
    fn a_prompts_partial_last_block_is_found_to_be_copied() {
        let pool = BlockPool::new(8, 4);
        let (mut cache, first, tokens) = cached_prompt(&pool);
        assert_eq!(cache.blocks(), 3);
        // The same prompt again: two blocks shared, one position of the third copied (nine positions in
        // all), the last computed.
        let hit = cache.lookup(&tokens);
        assert_eq!(hit.blocks, first.blocks()[..2]);
        assert_eq!(hit.partial, Some((first.blocks()[2], 1)));
        // A longer prompt with the same start copies both cached positions of the partial block.
        let hit = cache.lookup(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 50, 51]);
        assert_eq!(hit.partial, Some((first.blocks()[2], 2)));
        // A different continuation after the full blocks copies nothing.
        assert_eq!(
            cache.lookup(&[0, 1, 2, 3, 4, 5, 6, 7, 70, 71]).partial,
            None
        );
        drop(first);
        while cache.evict_one() {}
        assert_eq!(cache.blocks(), 0);
        assert_eq!(pool.free_blocks(), 8);
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

    #[test]
    fn under_memory_pressure_the_least_recently_used_prompt_is_evicted_first() {
        let pool = BlockPool::new(4, 4);
        let mut cache = PrefixCache::new(&pool);
        let (older, newer): (Vec<u32>, Vec<u32>) = ((0..8).collect(), (10..18).collect());
        for prompt in [&older, &newer] {
            let mut seq = pool.lease();
            seq.reserve(8).unwrap();
            cache.insert(prompt, seq.blocks());
        }
        assert_eq!(pool.free_blocks(), 0, "the cache holds all four blocks");
        // Looking the older prompt up makes it the most recently used.
        assert_eq!(cache.lookup(&[&older[..], &[99]].concat()).blocks.len(), 2);
        assert!(cache.evict_one());
        assert!(cache.evict_one());
        assert_eq!(pool.free_blocks(), 2);
        assert_eq!(cache.lookup(&[&older[..], &[99]].concat()).blocks.len(), 2);
        assert!(
            cache
                .lookup(&[&newer[..], &[99]].concat())
                .blocks
                .is_empty()
        );
    }
}
