//! This process's own memory: settings a long-running supervisor makes
//! before it starts its threads, and giving freed memory back.

/// Lets every thread of this process share one malloc arena (glibc), so
/// that what one thread frees, another reuses. Call it before any thread
/// starts. Returns whether the setting took.
pub fn share_one_malloc_arena() -> bool {
    crate::sys::limit_malloc_arenas(1)
}

/// Gives the memory this process has freed back to the system (glibc's
/// `malloc_trim`): after a burst (a log flood read by many followers) the
/// allocator would otherwise keep tens of MiB it no longer uses. Costs a
/// walk of the heap; callers coalesce it. Returns whether anything was
/// given back (always `false` without glibc).
pub fn give_back() -> bool {
    crate::sys::trim_malloc()
}
