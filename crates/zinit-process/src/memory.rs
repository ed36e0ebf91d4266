//! This process's own memory: settings a long-running supervisor makes
//! before it starts its threads.

/// Lets every thread of this process share one malloc arena (glibc), so
/// that what one thread frees, another reuses. Call it before any thread
/// starts. Returns whether the setting took.
pub fn share_one_malloc_arena() -> bool {
    crate::sys::limit_malloc_arenas(1)
}
