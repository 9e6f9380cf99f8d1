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
//! A task that panics is caught where it runs (worker or caller) and counted done like the others; the
//! first panic's payload is kept and re-raised in the caller only once every task of the loop has ended,
//! so no worker still reads the loop's closure while the caller's stack unwinds, and every worker stays
//! alive for the next loop. Catching costs nothing on the path where no task panics.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

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
            wake: Condvar::new(),
            sleep_lock: Mutex::new(()),
        });
        let mut started = 1;
        for i in 1..threads.max(1) {
            let shared = shared.clone();
            // A pool short of workers still works: the caller runs the tasks no one claims.
            if thread::Builder::new()
                .name(format!("kernels-{i}"))
                .spawn(move || worker(&shared))
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

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let idle_since = Instant::now();
        let mut spins = 0u32;
        let generation = loop {
            let generation = s.state.load(Ordering::Acquire) >> 32;
            if generation != seen {
                break generation;
            }
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
}
