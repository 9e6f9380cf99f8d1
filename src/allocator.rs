//! The process allocator, tuned for a server that loads and unloads models of hundreds of MiB.
//!
//! glibc serves large blocks with `mmap`, but each time such a block is freed it raises its mmap
//! threshold to that block's size (up to 32 MiB): after the first unload, the next model's tensors come
//! from the heap, and freed heap memory mostly stays with the process. A server that unloads and
//! reloads then grows by a model's size every few cycles (measured: 143 MiB loaded, 446 MiB after five
//! reloads of the same model). A fixed threshold keeps large blocks mmapped, so freeing them returns
//! them to the system; trimming after an unload returns what the heaps hold free.

/// glibc's default threshold; setting it at all stops the dynamic raise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;

/// Fixes the allocator's mmap threshold. Call once at start, before threads allocate much.
pub fn tune_for_server() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's parameters; it takes plain integers.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) } != 1 {
        tracing::warn!("cannot fix the allocator's mmap threshold");
    }
}

/// Returns the heaps' free memory to the system (after a model is dropped).
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages the allocator holds.
    unsafe {
        libc::malloc_trim(0);
    }
}
