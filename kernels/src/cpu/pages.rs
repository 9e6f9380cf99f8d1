//! Memory for packed weights: an anonymous mapping of its own, outside the allocator, aligned to 2 MiB
//! and offered to the kernel as transparent huge pages.
//!
//! A decode step streams every weight once: with 4 KiB pages a 1B model's ~700 MiB is ~180k TLB misses
//! per token. Where THP is in `madvise` mode (the common default) memory gets huge pages only when
//! asked, and only whole aligned 2 MiB extents can have them. Owning the mapping also keeps the weights
//! out of the allocator's heaps, so the process can let the allocator keep a step's temporaries for
//! the next step (`model_runner::allocator`) without a model's weights landing in those heaps.

use std::ops::{Deref, DerefMut};

/// Zeroed bytes, in their own mapping where the platform has one.
pub struct PageBuffer {
    memory: Memory,
}

enum Memory {
    #[cfg(target_os = "linux")]
    Mapped {
        ptr: std::ptr::NonNull<u8>,
        len: usize,
    },
    Heap(Vec<u8>),
}

// SAFETY: the mapping is owned by this value alone, like a `Vec`'s buffer; `&self` gives only shared
// reads and `&mut self` the only writes.
unsafe impl Send for PageBuffer {}
// SAFETY: as above.
unsafe impl Sync for PageBuffer {}

#[cfg(target_os = "linux")]
const HUGE_PAGE: usize = 2 << 20;

impl PageBuffer {
    /// `len` zero bytes. Untouched until written: packing's first write to each 2 MiB extent faults in
    /// a huge page where the kernel has one free.
    pub fn zeroed(len: usize) -> Self {
        #[cfg(target_os = "linux")]
        if len > 0
            && let Some(ptr) = map_aligned(len)
        {
            return Self {
                memory: Memory::Mapped { ptr, len },
            };
        }
        Self {
            memory: Memory::Heap(vec![0; len]),
        }
    }
}

/// A private anonymous mapping of `len` bytes starting on a 2 MiB boundary, advised as huge pages.
#[cfg(target_os = "linux")]
fn map_aligned(len: usize) -> Option<std::ptr::NonNull<u8>> {
    let padded = len.checked_add(HUGE_PAGE)?;
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            padded,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    let start = (base as usize).next_multiple_of(HUGE_PAGE);
    let (head, tail) = (
        start - base as usize,
        base as usize + padded - (start + len),
    );
    // SAFETY: the head and tail are parts of the mapping just made that the buffer will not use; the
    // advice changes only how the kernel backs the rest, never its contents.
    unsafe {
        if head > 0 {
            libc::munmap(base, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    std::ptr::NonNull::new(start as *mut u8)
}

impl Drop for PageBuffer {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Memory::Mapped { ptr, len } = self.memory {
            // SAFETY: the buffer owns exactly this mapping, and nothing borrows it once it drops.
            unsafe { libc::munmap(ptr.as_ptr() as *mut libc::c_void, len) };
        }
    }
}

impl Deref for PageBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.memory {
            // SAFETY: the mapping holds `len` initialised (zeroed, then written) bytes for as long as
            // the buffer lives.
            #[cfg(target_os = "linux")]
            Memory::Mapped { ptr, len } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), *len)
            },
            Memory::Heap(v) => v,
        }
    }
}

impl DerefMut for PageBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.memory {
            // SAFETY: as for `deref`, and `&mut self` makes this the only access.
            #[cfg(target_os = "linux")]
            Memory::Mapped { ptr, len } => unsafe {
                std::slice::from_raw_parts_mut(ptr.as_ptr(), *len)
            },
            Memory::Heap(v) => v,
        }
    }
}

impl Clone for PageBuffer {
    fn clone(&self) -> Self {
        let mut copy = Self::zeroed(self.len());
        copy.copy_from_slice(self);
        copy
    }
}

impl std::fmt::Debug for PageBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PageBuffer({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_zeroed_on_a_huge_page_boundary_and_clone_their_bytes() {
        for len in [1, 4096, (2 << 20) + 17] {
            let mut b = PageBuffer::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
            #[cfg(target_os = "linux")]
            assert_eq!(b.as_ptr() as usize % (2 << 20), 0);
            b[len - 1] = 7;
            let c = b.clone();
            assert_eq!(c[len - 1], 7);
            drop(b);
            assert_eq!(c[len - 1], 7);
        }
        assert!(PageBuffer::zeroed(0).is_empty());
    }
}
