//! A persistent thread pool for the engine's hot loops, one thread per core (the caller is one of them).
//!
//! A decode step runs a few hundred small parallel loops, each tens of microseconds long. Waking sleeping
//! threads for each (as rayon does) costs as much as the work: profiles of decode showed more time in the
//! scheduler than in the kernels. Here workers spin for a while after each loop, so the next one starts
//! at once, and sleep only when the engine goes idle.
//!
//! A loop is published as `(generation, tasks, next task)` in one atomic word: a worker claims task `i`
//! only by moving that word from `(g, n, i)` to `(g, n, i + 1)`, and reads the loop's closure only after
//! such a claim succeeds, while the loop's caller is still waiting for it. So no worker ever touches a
//! loop that has ended. The caller runs tasks too, and returns when all of its loop's tasks are done.
//!
//! The matmuls run as `run_shares`: one contiguous share of the rows per thread, streamed front to back,
//! and a thread done early takes ranges from the back of another's. Between loops, the caller works
//! alone (norms, activations) while the memory a one-token step is bound by sits idle; `warm` has an
//! idle worker read the start of its share of the next matmul meanwhile.
//!
//! A task that panics is caught where it runs (worker or caller) and counted done like the others; the
//! first panic's payload is kept and re-raised in the caller only once every task of the loop has ended,
//! so no worker still reads the loop's closure while the caller's stack unwinds, and every worker stays
//! alive for the next loop. Catching costs nothing on the path where no task panics.

use std::any::Any;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use super::PackedMatrix;

/// How long an idle worker spins (then yields) before it sleeps.
const SPIN: Duration = Duration::from_millis(2);
/// Tasks per loop: they share the state word with the generation.
const MAX_TASKS: usize = 0xFFFF;

/// The closure of the loop being run; lives on the caller's stack for the loop's duration.
struct Slot<'a> {
    f: &'a (dyn Fn(usize) + Sync),
}

struct Shared {
    /// `generation << 32 | tasks << 16 | next task`.
    state: AtomicU64,
    /// The current loop's `Slot`, stored before its generation is published.
    slot: AtomicPtr<Slot<'static>>,
    done: AtomicUsize,
    /// Set when a task of the current loop panicked; its payload waits in `panic` for the caller.
    panicked: AtomicBool,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    sleepers: AtomicUsize,
    /// Per worker (by number; 0, the caller's, unused): memory to read ahead while idle (`warm`).
    ahead: Box<[ReadAhead]>,
    wake: Condvar,
    sleep_lock: Mutex<()>,
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    threads: usize,
    /// One loop at a time; a second caller meanwhile runs its loop alone.
    running: Mutex<()>,
}

/// The process's pool, sized to the machine's cores (`MODEL_RUNNER_THREADS` overrides).
pub fn pool() -> &'static ThreadPool {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::env::var("MODEL_RUNNER_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n: &usize| *n > 0)
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
        ThreadPool::new(threads)
    })
}

impl ThreadPool {
    /// A pool of `threads` (the caller plus `threads - 1` workers).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            slot: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            panic: Mutex::new(None),
            sleepers: AtomicUsize::new(0),
            ahead: (0..threads.max(1)).map(|_| ReadAhead::default()).collect(),
            wake: Condvar::new(),
            sleep_lock: Mutex::new(()),
        });
        let mut started = 1;
        for i in 1..threads.max(1) {
            let shared = shared.clone();
            // A pool short of workers still works: the caller runs the tasks no one claims.
            if thread::Builder::new()
                .name(format!("kernels-{i}"))
                .spawn(move || worker(&shared, i))
                .is_ok()
            {
                started += 1;
            }
        }
        Self {
            shared,
            threads: started,
            running: Mutex::new(()),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(0..tasks)`, spread over the pool; returns when every task has run. If a task panics, the
    /// panic is re-raised here after all the loop's tasks have ended, and the pool stays usable.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        if tasks > MAX_TASKS {
            // Split into loops the state word can count.
            for start in (0..tasks).step_by(MAX_TASKS) {
                let n = MAX_TASKS.min(tasks - start);
                self.run(n, &|i| f(start + i));
            }
            return;
        }
        let guard = match self.running.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                (0..tasks).for_each(f);
                return;
            }
        };
        if tasks == 1 || self.threads == 1 {
            (0..tasks).for_each(f);
            return;
        }
        let s = &*self.shared;
        let slot = Slot { f };
        // Lifetime erased: see the module comment for why no worker reads it after this call returns.
        s.slot
            .store((&slot as *const Slot).cast_mut().cast(), Ordering::SeqCst);
        s.done.store(0, Ordering::SeqCst);
        let generation = (s.state.load(Ordering::SeqCst) >> 32).wrapping_add(1) & 0xFFFF_FFFF;
        s.state
            .store(generation << 32 | (tasks as u64) << 16, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _lock = s.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
        run_tasks(s, generation);
        while s.done.load(Ordering::Acquire) < tasks {
            std::hint::spin_loop();
        }
        if s.panicked.load(Ordering::Acquire) {
            s.panicked.store(false, Ordering::Relaxed);
            let payload = s.panic.lock().unwrap_or_else(|p| p.into_inner()).take();
            drop(guard);
            resume_unwind(payload.unwrap_or_else(|| Box::new("a pool task panicked")));
        }
    }

    /// Asks worker `number` (1 to `threads - 1`), the one that most likely takes share `number` of the
    /// next `run_shares` loop, to read `range` of `matrix`'s bytes into its cache while it waits for
    /// that loop: a step of one token is bound by memory reads, which otherwise stop while the caller
    /// works alone between loops. The worker stops reading when a loop starts; a later post replaces
    /// one not yet taken.
    pub fn warm(&self, number: usize, matrix: Arc<PackedMatrix>, range: Range<usize>) {
        if let Some(ahead) = self.shared.ahead.get(number).filter(|_| number > 0) {
            *ahead.job.lock().unwrap_or_else(|p| p.into_inner()) = Some((matrix, range));
            ahead.posted.store(true, Ordering::Release);
        }
    }

    /// Calls `f` on `0..items` in ranges of `grain` (the last may be shorter; every range but the last
    /// starts and ends on a multiple of `grain`), spread over the pool. Each thread takes one contiguous
    /// share, front to back, so that its reads stream through memory; a thread whose share runs out
    /// takes ranges from the back of the others', so the threads finish together. (Loops of interleaved
    /// tasks gave each thread a jump at every task and left one thread idle while the other ran its
    /// last task: 5-10% of a 1B decode's time on two threads.)
    pub fn run_shares(&self, items: usize, grain: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        let grain = grain.max(1);
        let chunks = items.div_ceil(grain);
        let parts = self.threads.min(chunks);
        if parts <= 1 || items > u32::MAX as usize {
            for start in (0..items).step_by(grain) {
                f(start..(start + grain).min(items));
            }
            return;
        }
        let shares: Vec<Share> = (0..parts)
            .map(|p| {
                let end = ((p + 1) * chunks / parts * grain).min(items);
                Share::new(p * chunks / parts * grain, end)
            })
            .collect();
        self.run(parts, &|p| {
            while let Some(range) = shares[p].take_front(grain) {
                f(range);
            }
            for q in (1..parts).map(|k| (p + k) % parts) {
                while let Some(range) = shares[q].take_back(grain) {
                    f(range);
                }
            }
        });
    }

    /// Calls `f(i, chunk)` for every `chunk_len`-sized chunk `i` of `data` (the last may be shorter),
    /// spread over the pool in contiguous runs of chunks.
    pub fn for_each_chunk_mut<T: Send>(
        &self,
        data: &mut [T],
        chunk_len: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        let (len, chunk_len) = (data.len(), chunk_len.max(1));
        let chunks = len.div_ceil(chunk_len);
        let tasks = chunks.min(self.threads * 4);
        let base = SendPtr(data.as_mut_ptr());
        self.run(tasks, &|task| {
            for c in task * chunks / tasks..(task + 1) * chunks / tasks {
                let start = c * chunk_len;
                let end = (start + chunk_len).min(len);
                // SAFETY: chunks are disjoint and inside `data`, which outlives `run`.
                let chunk = unsafe { std::slice::from_raw_parts_mut(base.at(start), end - start) };
                f(c, chunk);
            }
        });
    }
}

/// Part of a packed matrix an idle worker reads into its cache, posted by `ThreadPool::warm`.
#[derive(Default)]
struct ReadAhead {
    posted: AtomicBool,
    job: Mutex<Option<(Arc<PackedMatrix>, Range<usize>)>>,
}

/// Bytes read ahead between looks at whether a loop has started.
const READ_AHEAD_STEP: usize = 4096;

impl ReadAhead {
    /// Reads the posted bytes, if any, a byte per cache line, until done or `stop()`. (Loads rather
    /// than prefetch hints: in a measurement of one-token steps with 80 us of other work between
    /// them, the loads took back about twice the time the hints did.)
    fn run(&self, stop: impl Fn() -> bool) {
        if !self.posted.load(Ordering::Relaxed) || !self.posted.swap(false, Ordering::Acquire) {
            return;
        }
        let job = self.job.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some((matrix, range)) = job else {
            return;
        };
        let Some(bytes) = matrix.bytes().get(range) else {
            return;
        };
        let mut seen = 0u8;
        for step in bytes.chunks(READ_AHEAD_STEP) {
            if stop() {
                break;
            }
            for line in step.iter().step_by(64) {
                seen ^= *line;
            }
        }
        std::hint::black_box(seen);
    }
}

/// What is left of one thread's share of a `run_shares` loop, `lo..hi` in one word (`hi << 32 | lo`): its
/// owner takes ranges from the front, other threads from the back, each by moving its end of the word.
struct Share(AtomicU64);

impl Share {
    fn new(lo: usize, hi: usize) -> Self {
        Self(AtomicU64::new((hi as u64) << 32 | lo as u64))
    }

    fn take_front(&self, grain: usize) -> Option<Range<usize>> {
        self.take(|lo, hi| (lo, (lo + grain).min(hi)))
    }

    /// The last range: from the last multiple of `grain` below `hi` (shares start on one).
    fn take_back(&self, grain: usize) -> Option<Range<usize>> {
        self.take(|lo, hi| (((hi - 1) / grain * grain).max(lo), hi))
    }

    /// Claims the range `pick(lo, hi)` (a front or back part of `lo..hi`, never empty).
    fn take(&self, pick: impl Fn(usize, usize) -> (usize, usize)) -> Option<Range<usize>> {
        let mut word = self.0.load(Ordering::Acquire);
        loop {
            let (lo, hi) = ((word & 0xFFFF_FFFF) as usize, (word >> 32) as usize);
            if lo >= hi {
                return None;
            }
            let (start, end) = pick(lo, hi);
            // What stays: the part past a front range, or before a back one.
            let (lo, hi) = if start == lo { (end, hi) } else { (lo, start) };
            let next = (hi as u64) << 32 | lo as u64;
            match self
                .0
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(start..end),
                Err(now) => word = now,
            }
        }
    }
}

/// A pointer into a buffer whose disjoint parts a loop's tasks write (`for_each_chunk_mut`, the matmul's
/// outputs, the activations' rows).
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: every user has its tasks write disjoint elements, within a buffer that outlives the loop.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    pub(crate) fn at(&self, i: usize) -> *mut T {
        // SAFETY: callers stay inside the buffer.
        unsafe { self.0.add(i) }
    }
}

/// Claims and runs tasks of `generation` until none are left.
fn run_tasks(s: &Shared, generation: u64) {
    let mut state = s.state.load(Ordering::Acquire);
    loop {
        let (tasks, next) = ((state >> 16) & 0xFFFF, state & 0xFFFF);
        if state >> 32 != generation || next >= tasks {
            return;
        }
        match s
            .state
            .compare_exchange_weak(state, state + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                // SAFETY: task `next` of `generation` is claimed and not yet done, so the loop's caller
                // is still inside `run`, its `Slot` alive and published (stored before the generation).
                let slot = unsafe { &*s.slot.load(Ordering::Acquire) };
                // Caught so that the task still counts as done and this thread lives on; the caller
                // re-raises it once the loop has ended.
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (slot.f)(next as usize))) {
                    let mut first = s.panic.lock().unwrap_or_else(|p| p.into_inner());
                    if first.is_none() {
                        *first = Some(payload);
                    }
                    s.panicked.store(true, Ordering::Release);
                }
                s.done.fetch_add(1, Ordering::Release);
                state = s.state.load(Ordering::Acquire);
            }
            Err(now) => state = now,
        }
    }
}

fn worker(s: &Shared, number: usize) {
    let mut seen = 0u64;
    loop {
        let idle_since = Instant::now();
        let mut spins = 0u32;
        let generation = loop {
            let generation = s.state.load(Ordering::Acquire) >> 32;
            if generation != seen {
                break generation;
            }
            s.ahead[number].run(|| s.state.load(Ordering::Relaxed) >> 32 != seen);
            spins += 1;
            if spins < 2048 {
                std::hint::spin_loop();
            } else if idle_since.elapsed() < SPIN {
                thread::yield_now();
            } else {
                let lock = s.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
                s.sleepers.fetch_add(1, Ordering::SeqCst);
                if s.state.load(Ordering::SeqCst) >> 32 == seen {
                    let _unused = s.wake.wait_timeout(lock, Duration::from_millis(100));
                }
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
                spins = 0;
            }
        };
        seen = generation;
        run_tasks(s, generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_across_many_loops() {
        let pool = ThreadPool::new(3);
        for round in 0..2000usize {
            let tasks = round % 13;
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            pool.run(tasks, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn a_panicking_task_panics_the_caller_after_the_others_end_and_the_pool_keeps_working() {
        let pool = ThreadPool::new(3);
        for round in 0..50usize {
            let ran = AtomicUsize::new(0);
            let bad = round % 16;
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                pool.run(16, &|i| {
                    if i == bad {
                        panic!("task {i} fails");
                    }
                    thread::sleep(Duration::from_micros(200));
                    ran.fetch_add(1, Ordering::SeqCst);
                });
            }));
            let payload = outcome.expect_err("the task's panic reaches the caller");
            assert_eq!(
                payload.downcast_ref::<String>().map(String::as_str),
                Some(format!("task {bad} fails").as_str())
            );
            // Every other task had finished before the panic reached the caller.
            assert_eq!(ran.load(Ordering::SeqCst), 15);
            let sum = AtomicUsize::new(0);
            pool.run(10, &|i| {
                sum.fetch_add(i, Ordering::Relaxed);
            });
            assert_eq!(sum.load(Ordering::Relaxed), 45);
        }
    }

    #[test]
    fn a_second_caller_runs_its_loop_alone() {
        let pool = Arc::new(ThreadPool::new(2));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                thread::spawn(move || {
                    for _ in 0..200 {
                        let sum = AtomicUsize::new(0);
                        pool.run(10, &|i| {
                            sum.fetch_add(i, Ordering::Relaxed);
                        });
                        assert_eq!(sum.load(Ordering::Relaxed), 45);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("caller thread");
        }
    }

    #[test]
    fn shares_cover_every_item_once_in_whole_grains() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads);
            for (items, grain) in [
                (0, 4),
                (1, 4),
                (7, 1),
                (64, 4),
                (1001, 8),
                (3, 16),
                (512, 32),
            ] {
                let hits: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
                pool.run_shares(items, grain, &|range| {
                    assert!(
                        range.start.is_multiple_of(grain),
                        "{range:?} starts off the grain"
                    );
                    assert!(range.end == items || range.end.is_multiple_of(grain));
                    assert!(!range.is_empty() && range.len() <= grain);
                    for i in range {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn a_thread_done_with_its_share_takes_from_the_others() {
        let pool = ThreadPool::new(2);
        let by_caller = AtomicUsize::new(0);
        let caller = thread::current().id();
        // Share 1's ranges are slow: the caller, done with share 0, takes some of them from the back.
        pool.run_shares(64, 1, &|range| {
            if range.start >= 32 {
                thread::sleep(Duration::from_millis(2));
            }
            if thread::current().id() == caller {
                by_caller.fetch_add(range.len(), Ordering::Relaxed);
            }
        });
        assert!(by_caller.load(Ordering::Relaxed) > 32);
    }

    #[test]
    fn an_idle_worker_reads_a_posted_matrix_and_lets_it_go() {
        use crate::cpu::GgmlType;
        let pool = ThreadPool::new(2);
        // 64 rows of 256 Q8_0 values: blocks of an f16 scale and 32 bytes, all zero.
        let (rows, cols) = (64, 256);
        let raw = vec![0u8; rows * cols / 32 * 34];
        let matrix = Arc::new(PackedMatrix::pack(GgmlType::Q8_0, &raw, rows, cols).unwrap());
        let len = matrix.bytes().len();
        pool.warm(1, matrix.clone(), 0..len);
        // The caller's number, and one past the last worker, take nothing.
        pool.warm(0, matrix.clone(), 0..len);
        pool.warm(2, matrix.clone(), 0..len);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&matrix) > 1 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(Arc::strong_count(&matrix), 1, "the worker kept the matrix");
        let sum = AtomicUsize::new(0);
        pool.run(10, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 45);
    }
}
