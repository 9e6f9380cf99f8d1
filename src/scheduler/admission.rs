//! Who runs and who waits, under the KV memory budget: waiting sequences start oldest first when their
//! whole prompt (plus the token they will add) fits, taking what the prefix cache holds of it; a running
//! sequence that needs a block when none is free preempts the youngest, whose blocks go back and whose
//! tokens are recomputed when it runs again; a prompt larger than the whole cache ends at once.
//!
//! Unused prefix-cache blocks give way first, least recently used first, before anyone waits or is
//! preempted.

use std::sync::atomic::Ordering;

use models::BlockLease;

use super::step_loop::Loop;
use super::{GenerationError, StepModel};
use crate::engine::FinishReason;

impl<M: StepModel> Loop<M> {
    /// Starts waiting sequences, oldest first, while there is room and blocks for their whole prompt.
    pub(super) fn admit(&mut self) {
        while self.running.len() < self.config.max_running {
            let Some(mut next) = self.waiting.pop_front() else {
                break;
            };
            let pool = self.model.pool().clone();
            let capacity = pool.block_size() * pool.total_blocks();
            let needed = next.tokens.len() + 1;
            if capacity < needed {
                // It could never fit, however long it waited: end it now rather than hang. A recompute
                // that grew past the cache ends as if it reached its length.
                self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                let outcome = if next.generated > 0 {
                    Ok(FinishReason::Length)
                } else {
                    Err(GenerationError::NeverFits { needed, capacity })
                };
                next.finish(outcome);
                continue;
            }
            let hit = self.prefix.lookup(&next.tokens);
            if !hit.blocks.is_empty() {
                next.lease.share_prefix(&hit.blocks);
                next.cached = hit.blocks.len() * pool.block_size();
            }
            // Held while blocks are reserved (which may evict cache entries), until it is copied.
            let mut copy_source = pool.lease();
            if let Some((block, _)) = hit.partial {
                copy_source.adopt(block);
            }
            if !self.reserve_or_evict(&mut next.lease, needed) {
                // Not enough blocks yet: it stays first in line, holding nothing.
                next.lease.clear();
                next.cached = 0;
                self.waiting.push_front(next);
                break;
            }
            if let Some((block, positions)) = hit.partial {
                let own = next.lease.blocks()[hit.blocks.len()];
                match self.model.copy_kv_positions(block, own, positions) {
                    Ok(()) => next.cached += positions,
                    Err(e) => tracing::warn!("prefix cache copy failed, recomputing: {e}"),
                }
            }
            drop(copy_source);
            if next.generated == 0 {
                next.prefix_hit = next.cached;
                self.stats
                    .prefix_cache_queries
                    .fetch_add(next.tokens.len() as u64, Ordering::Relaxed);
                self.stats
                    .prefix_cache_hits
                    .fetch_add(next.cached as u64, Ordering::Relaxed);
            }
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            self.running.push(next);
        }
    }

    /// Gives every running sequence room for the token it is about to add, preempting the youngest while
    /// that is not possible.
    pub(super) fn make_room(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            let need = self.running[i].tokens.len() + 1;
            let mut lease =
                std::mem::replace(&mut self.running[i].lease, self.model.pool().lease());
            let reserved = self.reserve_or_evict(&mut lease, need);
            self.running[i].lease = lease;
            if reserved {
                i += 1;
            } else if !self.preempt_youngest() {
                break;
            } else {
                i = 0;
            }
        }
    }

    /// Reserves room for `tokens` positions, evicting unused prefix-cache blocks if that makes room.
    fn reserve_or_evict(&mut self, lease: &mut BlockLease, tokens: usize) -> bool {
        loop {
            if lease.reserve(tokens).is_ok() {
                return true;
            }
            if !self.prefix.evict_one() {
                return false;
            }
        }
    }

    /// Frees the youngest running sequence's blocks and puts it back at the head of the queue.
    fn preempt_youngest(&mut self) -> bool {
        let Some(youngest) = self
            .running
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| s.submission.arrived)
            .map(|(i, _)| i)
        else {
            return false;
        };
        let mut seq = self.running.swap_remove(youngest);
        seq.lease.clear();
        seq.cached = 0;
        self.stats.preemptions.fetch_add(1, Ordering::Relaxed);
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        self.waiting.push_front(seq);
        true
    }
}
