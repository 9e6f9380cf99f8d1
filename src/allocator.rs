//! The process allocator, tuned for a server that loads and unloads models of hundreds of MiB and
//! whose steps make and free the same temporaries again and again.
//!
//! glibc serves large blocks with `mmap` and returns them with `munmap`, and by default it raises its
//! mmap threshold to the size of each such block freed (up to 32 MiB). Both hurt here:
//! - Left dynamic, the threshold rises after the first unload, and the next model's tensors come from
//!   heaps that mostly keep freed memory: a server that unloads and reloads grew by a model's size every
//!   few cycles (measured: 143 MiB loaded, 446 MiB after five reloads of the same model).
//! - Kept at its default of 128 KiB, every prompt-sized activation (a 1B model's 512-token FFN output is
//!   16 MiB) is a fresh mapping whose pages fault in one by one, each step again: 5-8% of a 512-token
//!   prompt's time went to page faults.
//!
//! So the threshold is fixed at its 32 MiB maximum and the heaps keep up to 256 MiB of free memory at
//! their top: a step's temporaries are reused by the next step. Model weights do not come from here
//! (packed weights have their own mappings, `kernels::cpu::pages`; the file is mapped; the KV cache is
//! its own mapping), and trimming after an unload returns what the heaps hold free.

/// The largest block the heaps serve (glibc's ceiling for this setting); larger ones are mapped.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 32 << 20;
/// Free memory the heaps keep at their top before returning it to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD_BYTES: libc::c_int = 256 << 20;

/// Fixes the allocator's mmap and trim thresholds. Call once at start, before threads allocate much.
pub fn tune_for_server() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's parameters; it takes plain integers.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1
            || libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) != 1
        {
            tracing::warn!("cannot fix the allocator's mmap and trim thresholds");
        }
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
