//! The binary's global allocator: the system allocator, except that every block of at
//! least [`LARGE`] bytes is a mapping of its own, 2 MiB-aligned and advised
//! `MADV_HUGEPAGE`, so that the kernel backs it with transparent huge pages where it
//! can (the machine's `transparent_hugepage/enabled` is `madvise` or `always`; with
//! `never`, the advice is ignored and nothing else changes).
//!
//! Why: loading a world fills a few large arrays and hash tables (the node and edge
//! arrays, the id and identifier maps) of fresh memory. With 4 KiB pages that is one
//! page fault per 4 KiB (a medium world: ≈ 29 000 faults, a quarter of the load's CPU)
//! and a TLB miss on nearly every random hash-table insert; a huge page takes one fault
//! per 2 MiB and one TLB entry. Small blocks stay with the system allocator (glibc's
//! `malloc`), which is good at them.
//!
//! A large block is `mmap`ed with its length rounded up to 2 MiB (a last huge page
//! touched costs up to 2 MiB more of resident memory than asked: a few MiB per large
//! block at most), grows and shrinks with `mremap` (pages move, nothing is copied),
//! and is given back with `munmap` at once (glibc would keep some freed memory). Which
//! of the two allocators owns a block is decided by its layout alone ([`is_large`]),
//! which `GlobalAlloc` hands back unchanged to `dealloc` and `realloc`.
//!
//! Only on Linux; elsewhere the system allocator does everything.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of at least this many bytes get a mapping of their own (one huge page).
pub const LARGE: usize = 2 << 20;
/// The size and alignment of a transparent huge page on x86_64 and most aarch64.
const HUGE: usize = 2 << 20;

/// See the module's documentation.
pub struct HugePages;

/// Whether a block of `layout` is mapped by [`HugePages`] rather than the system
/// allocator (the same answer for a block's whole life: its layout never changes but by
/// `realloc`, which moves it between the two when the answer does).
fn is_large(layout: Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= LARGE && layout.align() <= HUGE
}

/// `size` rounded up to whole huge pages (None on overflow).
fn mapped_len(size: usize) -> Option<usize> {
    size.checked_next_multiple_of(HUGE)
}

#[cfg(target_os = "linux")]
mod map {
    use super::HUGE;

    /// A fresh mapping of `len` bytes (a multiple of [`HUGE`]) at a [`HUGE`]-aligned
    /// address, advised for huge pages; null when the kernel refuses.
    pub fn new(len: usize) -> *mut u8 {
        let Some(over) = len.checked_add(HUGE) else {
            return std::ptr::null_mut();
        };
        // SAFETY: an anonymous private mapping at an address of the kernel's choice
        // touches no memory of this process.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                over,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let start = p as usize;
        let aligned = start.next_multiple_of(HUGE);
        let head = aligned - start;
        let tail = over - head - len;
        // SAFETY: both ranges lie inside the mapping just made, which nothing else
        // knows of; unmapping them leaves `len` bytes at `aligned`.
        unsafe {
            if head > 0 {
                libc::munmap(p, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
        }
        advise(aligned as *mut u8, len);
        aligned as *mut u8
    }

    /// Asks for huge pages over `len` bytes at `p` (a mapping of ours); a hint whose
    /// failure (THP compiled out, say) changes nothing but the speed.
    pub fn advise(p: *mut u8, len: usize) {
        // SAFETY: MADV_HUGEPAGE changes no content and no permission of the range,
        // which is mapped (ours).
        unsafe {
            libc::madvise(p.cast(), len, libc::MADV_HUGEPAGE);
        }
    }

    /// Gives back a mapping of `len` bytes at `p`.
    ///
    /// # Safety
    /// `p` and `len` are those of a mapping made by [`new`] or [`resize`], in use by
    /// no one any more.
    pub unsafe fn free(p: *mut u8, len: usize) {
        // SAFETY: by the caller's promise.
        unsafe {
            libc::munmap(p.cast(), len);
        }
    }

    /// The mapping of `old` bytes at `p` made `new` bytes long (both multiples of
    /// [`HUGE`]), its contents kept up to the shorter; null when the kernel refuses,
    /// the old mapping then untouched.
    ///
    /// # Safety
    /// `p` and `old` are those of a mapping made by [`new`] or [`resize`]; on success it
    /// is used by no one any more but through the address returned.
    pub unsafe fn resize(p: *mut u8, old: usize, new: usize) -> *mut u8 {
        if new == old {
            return p;
        }
        if new < old {
            // SAFETY: the tail is part of the caller's mapping and no longer used.
            unsafe { libc::munmap(p.add(new).cast(), old - new) };
            return p;
        }
        // In place when the addresses after it are free (flags, the advice among them,
        // extend with the mapping).
        // SAFETY: `p`/`old` are a mapping of ours; without MREMAP_MAYMOVE nothing moves.
        let grown = unsafe { libc::mremap(p.cast(), old, new, 0) };
        if grown != libc::MAP_FAILED {
            advise(p, new);
            return p;
        }
        // Else onto a fresh aligned mapping: the pages move there (MREMAP_FIXED replaces
        // what `to` held), no byte is copied.
        let to = self::new(new);
        if to.is_null() {
            return to;
        }
        // SAFETY: `p`/`old` are a mapping of ours, `to`/`new` one just made; on success
        // the old range is unmapped by the kernel, on failure both stay as they were.
        let moved = unsafe {
            libc::mremap(
                p.cast(),
                old,
                new,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                to.cast::<libc::c_void>(),
            )
        };
        if moved == libc::MAP_FAILED {
            // SAFETY: the mapping just made, not handed out.
            unsafe { free(to, new) };
            return std::ptr::null_mut();
        }
        advise(to, new);
        to
    }
}

#[cfg(not(target_os = "linux"))]
mod map {
    pub fn new(_: usize) -> *mut u8 {
        std::ptr::null_mut()
    }
    pub unsafe fn free(_: *mut u8, _: usize) {}
    pub unsafe fn resize(_: *mut u8, _: usize, _: usize) -> *mut u8 {
        std::ptr::null_mut()
    }
}

// SAFETY: small blocks are the system allocator's, under its contract; a large block is
// a private mapping of at least its size at a 2 MiB-aligned address (so aligned for any
// `align <= HUGE`, the only ones `is_large` takes), zero-filled when new (as
// `alloc_zeroed` wants), given back only by `dealloc`/`realloc` with the layout it was
// made with (which tells them it is ours).
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_large(layout) {
            // SAFETY: forwarded under the caller's promises.
            return unsafe { System.alloc(layout) };
        }
        mapped_len(layout.size()).map_or(std::ptr::null_mut(), map::new)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !is_large(layout) {
            // SAFETY: forwarded under the caller's promises.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // A fresh anonymous mapping reads as zeros.
        mapped_len(layout.size()).map_or(std::ptr::null_mut(), map::new)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !is_large(layout) {
            // SAFETY: forwarded under the caller's promises.
            return unsafe { System.dealloc(ptr, layout) };
        }
        if let Some(len) = mapped_len(layout.size()) {
            // SAFETY: a large block is a mapping of `len` bytes at `ptr` (see `alloc`).
            unsafe { map::free(ptr, len) };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (of the layout): the caller promises `new_size`, rounded up to
        // `layout.align()`, does not overflow `isize`.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (is_large(layout), is_large(new)) {
            // SAFETY: forwarded under the caller's promises.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            (true, true) => match (mapped_len(layout.size()), mapped_len(new_size)) {
                // SAFETY: the block is a mapping of `old` bytes at `ptr` (see `alloc`),
                // which the caller no longer uses on success.
                (Some(old), Some(len)) => unsafe { map::resize(ptr, old, len) },
                _ => std::ptr::null_mut(),
            },
            // Between the two allocators: a new block, the contents copied, the old one
            // given back (left alone on failure, as `realloc` promises).
            _ => {
                // SAFETY: `new` has a non-zero size (`realloc`'s contract) and the
                // block's own alignment.
                let to = unsafe { self.alloc(new) };
                if !to.is_null() {
                    // SAFETY: both blocks hold at least the shorter size, and are
                    // distinct; the old one is given back with its own layout.
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, to, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                to
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills `len` bytes at `p` with a pattern of `seed`, and checks it back.
    fn fill(p: *mut u8, len: usize, seed: u8) {
        // SAFETY: the tests hand blocks of at least `len` bytes.
        let s = unsafe { std::slice::from_raw_parts_mut(p, len) };
        for (i, b) in s.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
        }
    }
    fn holds(p: *const u8, len: usize, seed: u8) -> bool {
        // SAFETY: as in `fill`.
        let s = unsafe { std::slice::from_raw_parts(p, len) };
        s.iter()
            .enumerate()
            .all(|(i, b)| *b == (i as u8).wrapping_mul(31).wrapping_add(seed))
    }

    #[test]
    fn large_blocks_keep_their_contents_through_growing_shrinking_and_crossing_the_line() {
        let a = HugePages;
        let small = Layout::from_size_align(1000, 8).unwrap_or(Layout::new::<u8>());
        // SAFETY: each block is used within its size and given back with its layout.
        unsafe {
            let p = a.alloc(small);
            assert!(!p.is_null());
            fill(p, 1000, 1);
            // small → large: copied into a mapping of its own, 2 MiB-aligned.
            let big = 3 * LARGE + 5;
            let p = a.realloc(p, small, big);
            assert!(!p.is_null());
            assert_eq!(p as usize % HUGE, 0);
            assert!(holds(p, 1000, 1));
            fill(p, big, 2);
            // large → larger (in place or moved by the kernel): contents kept.
            let layout = Layout::from_size_align(big, 8).unwrap_or(small);
            let bigger = 9 * LARGE + 1;
            let p = a.realloc(p, layout, bigger);
            assert!(!p.is_null());
            assert!(holds(p, big, 2));
            // While another mapping sits right after it, growing must move it.
            let other = a.alloc(Layout::from_size_align(LARGE, 8).unwrap_or(small));
            assert!(!other.is_null());
            fill(other, LARGE, 9);
            let layout = Layout::from_size_align(bigger, 8).unwrap_or(small);
            let p = a.realloc(p, layout, 20 * LARGE);
            assert!(!p.is_null());
            assert_eq!(p as usize % HUGE, 0);
            assert!(holds(p, big, 2));
            assert!(holds(other, LARGE, 9));
            a.dealloc(other, Layout::from_size_align(LARGE, 8).unwrap_or(small));
            // large → smaller large, then → small: contents kept up to the new size.
            let layout = Layout::from_size_align(20 * LARGE, 8).unwrap_or(small);
            let p = a.realloc(p, layout, LARGE + 7);
            assert!(!p.is_null());
            assert!(holds(p, LARGE + 7, 2));
            let layout = Layout::from_size_align(LARGE + 7, 8).unwrap_or(small);
            let p = a.realloc(p, layout, 4096);
            assert!(!p.is_null());
            assert!(holds(p, 4096, 2));
            a.dealloc(p, Layout::from_size_align(4096, 8).unwrap_or(small));
        }
    }

    #[test]
    fn a_zeroed_large_block_reads_as_zeros_and_vectors_work_through_it() {
        let a = HugePages;
        let layout = Layout::from_size_align(5 * LARGE / 2, 64).unwrap_or(Layout::new::<u8>());
        // SAFETY: the block is read within its size and given back with its layout.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert!(std::slice::from_raw_parts(p, layout.size()).iter().all(|b| *b == 0));
            a.dealloc(p, layout);
        }
        // The process's own allocator is this one (main.rs): a vector growing through
        // the line and a large hash table behave.
        let mut v: Vec<u64> = Vec::new();
        for i in 0..2_000_000u64 {
            v.push(i);
        }
        assert!(v.iter().enumerate().all(|(i, x)| *x == i as u64));
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, (0..10).collect::<Vec<u64>>());
    }
}
