//! The scheduler driven turn by turn over a fake `StepModel`: admission under the KV budget, preemption
//! and recompute, a prompt that can never fit, prefix-cache eviction, and a scheduler that stops.
//!
//! The fake keeps a token in every KV slot a step writes and derives each next token from every slot the
//! sequence's block table reaches, so a wrong block table, a lost prefix or a missed recompute changes
//! the output (or panics on a slot never written).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use models::{BlockPool, LogitsWanted, StepBatch};
use tokio::sync::mpsc;

use super::step_loop::{Held, Loop};
use super::*;
use crate::engine::EngineError;
use crate::engine::tokenizer::Tokenizer;

/// Tokens 0..3 are text ("a", "b", "ab"); 3 ends a generation and is never chosen by the fake.
const VOCAB: usize = 4;

struct FakeModel {
    pool: BlockPool,
    tokenizer: Tokenizer,
    context: usize,
    /// The token whose keys and values each (block, slot) holds.
    kv: HashMap<(u32, usize), u32>,
}

impl FakeModel {
    fn new(blocks: usize, block_size: usize) -> Self {
        let metadata = crate::engine::tokenizer::test_vocab::gpt2_metadata();
        Self {
            pool: BlockPool::new(blocks, block_size),
            tokenizer: Tokenizer::from_gguf(&metadata).expect("fake tokenizer"),
            context: 64,
            kv: HashMap::new(),
        }
    }
}

/// The fake's next token after `tokens`: a function of every token and its position.
fn next_token(tokens: impl Iterator<Item = u32>) -> u32 {
    let sum: u64 = tokens
        .enumerate()
        .map(|(p, t)| (p as u64 + 1) * (t as u64 + 1))
        .sum();
    (sum % 3) as u32
}

/// What the fake generates after `prompt`, greedily, `n` tokens.
fn continuation(prompt: &[u32], n: usize) -> Vec<u32> {
    let mut tokens = prompt.to_vec();
    for _ in 0..n {
        tokens.push(next_token(tokens.iter().copied()));
    }
    tokens.split_off(prompt.len())
}

impl StepModel for FakeModel {
    fn pool(&self) -> &BlockPool {
        &self.pool
    }

    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn vocab_size(&self) -> usize {
        VOCAB
    }

    fn context_size(&self) -> usize {
        self.context
    }

    fn step_logits(&mut self, batch: &StepBatch) -> Result<Vec<Vec<f32>>, EngineError> {
        let size = self.pool.block_size();
        let mut rows = Vec::new();
        for s in &batch.sequences {
            for (j, &token) in batch.tokens[s.tokens()].iter().enumerate() {
                let p = s.cached + j;
                self.kv.insert((s.block_table[p / size], p % size), token);
            }
            assert_ne!(
                s.logits,
                LogitsWanted::All,
                "the scheduler never asks for All"
            );
            if s.logits == LogitsWanted::Last {
                let seen = (0..s.cached + s.len).map(|p| {
                    *self
                        .kv
                        .get(&(s.block_table[p / size], p % size))
                        .expect("a KV slot read before it was written")
                });
                let mut logits = vec![0.0; VOCAB];
                logits[next_token(seen) as usize] = 10.0;
                rows.push(logits);
            }
        }
        Ok(rows)
    }

    fn copy_kv_positions(&mut self, src: u32, dst: u32, count: usize) -> Result<(), EngineError> {
        for slot in 0..count {
            if let Some(&t) = self.kv.get(&(src, slot)) {
                self.kv.insert((dst, slot), t);
            }
        }
        Ok(())
    }

    fn embed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        Ok(vec![tokens.len() as f32])
    }
}

/// A scheduler loop over a fake with `blocks` KV blocks of `block_size` positions, and its handle.
fn harness(blocks: usize, block_size: usize, max_running: usize) -> (Loop<FakeModel>, Scheduler) {
    let (tx, rx) = std::sync::mpsc::channel();
    let stats = Arc::new(SchedulerStats::default());
    let config = SchedulerConfig {
        max_running,
        ..SchedulerConfig::default()
    };
    let handle = Scheduler {
        submissions: tx,
        stats: stats.clone(),
        max_waiting: 16,
    };
    (
        Loop::new(FakeModel::new(blocks, block_size), config, rx, stats),
        handle,
    )
}

fn request(prompt: Vec<u32>, max_tokens: usize) -> ValidRequest {
    ValidRequest {
        prompt,
        sampling: SamplingParams::greedy(),
        max_tokens,
        stop: Vec::new(),
        ignore_eos: false,
        constraint: None,
    }
}

/// What a request's stream has carried so far.
#[derive(Debug, Default)]
struct Received {
    tokens: Vec<u32>,
    end: Option<Result<FinishReason, GenerationError>>,
}

fn receive(rx: &mut mpsc::UnboundedReceiver<Event>, into: &mut Received) {
    while let Ok(event) = rx.try_recv() {
        assert!(into.end.is_none(), "an event after the end: {event:?}");
        match event {
            Event::Token { token, .. } => into.tokens.push(token.id),
            Event::Done { finish, .. } => into.end = Some(Ok(finish)),
            Event::Failed(e) => into.end = Some(Err(e)),
        }
    }
}

/// Turns the loop until it is idle (at most `limit` turns), collecting every stream.
fn run_to_idle(
    lp: &mut Loop<FakeModel>,
    streams: &mut [(mpsc::UnboundedReceiver<Event>, Received)],
    limit: usize,
) {
    for _ in 0..limit {
        lp.turn();
        for (rx, received) in streams.iter_mut() {
            receive(rx, received);
        }
        if lp.is_idle() {
            return;
        }
    }
    panic!("the scheduler was still busy after {limit} turns");
}

fn gauge(
    stats: &SchedulerStats,
    pick: fn(&SchedulerStats) -> &std::sync::atomic::AtomicUsize,
) -> usize {
    pick(stats).load(Ordering::Relaxed)
}

#[test]
fn a_request_waits_while_the_kv_budget_is_full_and_starts_when_blocks_free() {
    // 16 positions; each prompt needs 10 (9 tokens and the next): the second cannot start beside the first.
    let (mut lp, handle) = harness(4, 4, 8);
    let first: Vec<u32> = vec![0, 1, 2, 0, 1, 2, 0, 1, 2];
    let second: Vec<u32> = vec![1, 1, 1, 2, 2, 2, 0, 0, 1];
    let mut streams = vec![
        (
            handle.submit(request(first.clone(), 2)).unwrap(),
            Received::default(),
        ),
        (
            handle.submit(request(second.clone(), 2)).unwrap(),
            Received::default(),
        ),
    ];
    lp.turn();
    assert_eq!(gauge(&handle.stats, |s| &s.running), 1);
    assert_eq!(
        gauge(&handle.stats, |s| &s.waiting),
        1,
        "the second waits for blocks"
    );
    run_to_idle(&mut lp, &mut streams, 20);
    assert_eq!(streams[0].1.tokens, continuation(&first, 2));
    assert_eq!(streams[1].1.tokens, continuation(&second, 2));
    for (_, received) in &streams {
        assert!(
            matches!(received.end, Some(Ok(FinishReason::Length))),
            "{received:?}"
        );
    }
    assert_eq!(handle.stats.preemptions.load(Ordering::Relaxed), 0);
    // The first prompt's cached blocks were evicted to make room for the second; nothing leaked: every
    // block still used is the prefix cache's.
    assert_eq!(
        gauge(&handle.stats, |s| &s.kv_blocks_used),
        gauge(&handle.stats, |s| &s.prefix_cache_blocks)
    );
    assert_eq!(handle.stats.requests_finished.load(Ordering::Relaxed), 2);
}

#[test]
fn the_youngest_sequence_is_preempted_when_decoding_runs_out_of_blocks_and_recomputed_unchanged() {
    // 20 positions: two prompts of 6 start together (2 blocks each), then outgrow the one block left.
    let (mut lp, handle) = harness(5, 4, 2);
    let older: Vec<u32> = vec![2, 0, 1, 1, 0, 2];
    let younger: Vec<u32> = vec![1, 2, 2, 0, 0, 1];
    let mut streams = vec![
        (
            handle.submit(request(older.clone(), 10)).unwrap(),
            Received::default(),
        ),
        (
            handle.submit(request(younger.clone(), 10)).unwrap(),
            Received::default(),
        ),
    ];
    lp.turn();
    assert_eq!(
        gauge(&handle.stats, |s| &s.running),
        2,
        "both prompts fit at first"
    );
    run_to_idle(&mut lp, &mut streams, 100);
    assert!(handle.stats.preemptions.load(Ordering::Relaxed) >= 1);
    // Recomputed from its tokens so far, the younger continues exactly where it was, each token sent once.
    assert_eq!(streams[0].1.tokens, continuation(&older, 10));
    assert_eq!(streams[1].1.tokens, continuation(&younger, 10));
    for (_, received) in &streams {
        assert!(
            matches!(received.end, Some(Ok(FinishReason::Length))),
            "{received:?}"
        );
    }
    assert_eq!(gauge(&handle.stats, |s| &s.waiting), 0);
}

#[test]
fn a_prompt_larger_than_the_whole_cache_fails_at_once_and_others_still_run() {
    // 8 positions in all: a prompt of 8 needs 9.
    let (mut lp, handle) = harness(2, 4, 8);
    let mut streams = vec![
        (
            handle.submit(request(vec![0; 8], 2)).unwrap(),
            Received::default(),
        ),
        (
            handle.submit(request(vec![1, 2], 2)).unwrap(),
            Received::default(),
        ),
    ];
    run_to_idle(&mut lp, &mut streams, 10);
    match &streams[0].1.end {
        Some(Err(
            e @ GenerationError::NeverFits {
                needed: 9,
                capacity: 8,
            },
        )) => {
            assert!(e.to_string().contains("KV cache"), "{e}")
        }
        other => panic!("expected NeverFits, got {other:?}"),
    }
    assert!(streams[0].1.tokens.is_empty());
    assert_eq!(streams[1].1.tokens, continuation(&[1, 2], 2));
    assert_eq!(gauge(&handle.stats, |s| &s.waiting), 0);
}

#[test]
fn a_repeated_prompt_reuses_its_cached_blocks_and_gives_the_same_answer() {
    let (mut lp, handle) = harness(8, 4, 8);
    let prompt: Vec<u32> = vec![0, 1, 2, 2, 1, 0, 0, 1, 2, 1];
    for _ in 0..2 {
        let mut streams = vec![(
            handle.submit(request(prompt.clone(), 3)).unwrap(),
            Received::default(),
        )];
        run_to_idle(&mut lp, &mut streams, 10);
        assert_eq!(streams[0].1.tokens, continuation(&prompt, 3));
    }
    // The second run found all but the last prompt token (two blocks shared, one position copied).
    assert_eq!(handle.stats.prefix_cache_hits.load(Ordering::Relaxed), 9);
}

#[test]
fn token_ids_outside_the_vocabulary_fail_before_the_queue_and_embeddings_run_between_steps() {
    let (mut lp, handle) = harness(4, 4, 8);
    let mut streams = vec![(
        handle.submit(request(vec![0, VOCAB as u32], 2)).unwrap(),
        Received::default(),
    )];
    run_to_idle(&mut lp, &mut streams, 2);
    assert!(matches!(
        streams[0].1.end,
        Some(Err(GenerationError::Scheduler(
            SchedulerError::TokenOutOfVocabulary { .. }
        )))
    ));
    assert_eq!(gauge(&handle.stats, |s| &s.waiting), 0);
    let (reply, mut rx) = tokio::sync::oneshot::channel();
    handle
        .submissions
        .send(Work::Embed(EmbedJob {
            tokens: vec![1, 2, 3],
            reply,
        }))
        .unwrap();
    lp.turn();
    assert_eq!(rx.try_recv().unwrap().unwrap(), [3.0]);
}

fn submission(prompt: Vec<u32>) -> (Submission, mpsc::UnboundedReceiver<Event>) {
    let (events, rx) = mpsc::unbounded_channel();
    let request = request(prompt, 4);
    let arrived = Instant::now();
    (
        Submission {
            request,
            events,
            arrived,
        },
        rx,
    )
}

fn failed_with(rx: &mut mpsc::UnboundedReceiver<Event>) -> String {
    match rx.try_recv() {
        Ok(Event::Failed(e)) => e.to_string(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn a_stopped_scheduler_fails_every_request_it_holds_or_is_sent_and_refuses_new_ones() {
    let pool = models::BlockPool::new(8, 16);
    let (tx, queue) = std::sync::mpsc::channel();
    let stats = Arc::new(SchedulerStats::default());
    stats.waiting.store(2, Ordering::Relaxed);
    let (running, mut running_rx) = submission(vec![1, 2]);
    let (waiting, mut waiting_rx) = submission(vec![3]);
    let (queued, mut queued_rx) = submission(vec![4]);
    tx.send(Work::Generate(Box::new(queued))).unwrap();
    let (reply, mut embed_rx) = tokio::sync::oneshot::channel();
    tx.send(Work::Embed(EmbedJob {
        tokens: vec![1],
        reply,
    }))
    .unwrap();
    let held = Held {
        running: vec![sequence::Sequence::new(running, pool.lease())],
        waiting: VecDeque::from([sequence::Sequence::new(waiting, pool.lease())]),
        embeds: VecDeque::new(),
    };
    let failure = SchedulerError::Panicked("index out of bounds".into());
    held.fail(&failure, &queue, &stats);
    for rx in [&mut running_rx, &mut waiting_rx, &mut queued_rx] {
        let message = failed_with(rx);
        assert!(message.contains("index out of bounds"), "{message}");
        assert!(message.contains("unloaded"), "{message}");
    }
    assert!(embed_rx.try_recv().unwrap().is_err());
    assert_eq!(stats.waiting.load(Ordering::Relaxed), 0);
    let handle = Scheduler {
        submissions: tx,
        stats,
        max_waiting: 4,
    };
    assert!(handle.is_stopped());
    let (next, _) = submission(vec![1]);
    assert_eq!(
        handle.submit(next.request).err(),
        Some(SubmitError::Stopped)
    );
}

#[test]
fn a_short_prompt_behind_a_long_one_gets_its_first_token_before_the_long_one_is_prefilled() {
    let (mut lp, handle) = harness(32, 4, 4);
    lp.config.budget = StepBudget {
        tokens: 8,
        prefill_chunk: 8,
    };
    let long: Vec<u32> = (0..40).map(|i| (i * 7 % 3) as u32).collect();
    let short: Vec<u32> = vec![2, 1, 0];
    let mut streams = vec![
        (
            handle.submit(request(long.clone(), 2)).unwrap(),
            Received::default(),
        ),
        (
            handle.submit(request(short.clone(), 4)).unwrap(),
            Received::default(),
        ),
    ];
    // Step 1: the short prompt whole, and the long one's floor plus what is left; then the short one
    // decodes every step (never starved) while the long one's chunks go on beside it.
    for turn in 1..=4 {
        lp.turn();
        for (rx, received) in streams.iter_mut() {
            receive(rx, received);
        }
        assert_eq!(
            streams[1].1.tokens.len(),
            turn,
            "the short one, turn {turn}"
        );
        assert!(streams[0].1.tokens.is_empty(), "the long one, turn {turn}");
    }
    run_to_idle(&mut lp, &mut streams, 20);
    assert_eq!(streams[0].1.tokens, continuation(&long, 2));
    assert_eq!(streams[1].1.tokens, continuation(&short, 4));
}

#[test]
fn tiny_prompts_arriving_together_share_a_step_up_to_the_pack_size() {
    let (mut lp, handle) = harness(128, 4, 16);
    let prompts: Vec<Vec<u32>> = (0..16u32)
        .map(|i| vec![i % 3, i / 3 % 3, i / 9 % 3])
        .collect();
    let mut streams: Vec<_> = prompts
        .iter()
        .map(|p| {
            (
                handle.submit(request(p.clone(), 3)).unwrap(),
                Received::default(),
            )
        })
        .collect();
    // Three tokens each: the first eleven (33 tokens, past PACK_TOKENS) share the first step, the other
    // five the second, beside the first eleven's decodes.
    let shared = plan::PACK_TOKENS.div_ceil(3);
    for turn in 0..2 {
        lp.turn();
        for (i, (rx, received)) in streams.iter_mut().enumerate() {
            receive(rx, received);
            assert_eq!(
                received.tokens.len(),
                turn + usize::from(i < shared),
                "prompt {i}, turn {turn}"
            );
        }
    }
    run_to_idle(&mut lp, &mut streams, 10);
    for (prompt, (_, received)) in prompts.iter().zip(&streams) {
        assert_eq!(received.tokens, continuation(prompt, 3));
    }
}
