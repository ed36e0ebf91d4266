//! Resource limits: the supervisor raises its own open-file limit at
//! start-up, and every child starts again from the limits the supervisor
//! was given (or from the ones its unit sets).

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use std::io;
use std::sync::OnceLock;

/// `RLIMIT_NOFILE` as this process was given it, before
/// [`raise_nofile_limit`] changed it.
static ORIGINAL_NOFILE: OnceLock<(u64, u64)> = OnceLock::new();

/// A resource limit a child starts with: soft and hard value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The resource.
    pub resource: Resource,
    /// The soft limit (what the process gets).
    pub soft: u64,
    /// The hard limit (how far it may raise the soft one).
    pub hard: u64,
}

/// The value that means "no limit" (`RLIM_INFINITY` on Linux).
pub const UNLIMITED: u64 = u64::MAX;

/// Raises the soft limit on open files to the hard limit, so that a pidfd per
/// process of thousands of processes fits, and remembers the original for
/// children ([`original_nofile`]). Returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let _ = ORIGINAL_NOFILE.set((soft, hard));
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// The open-file limit this process was given before it raised its own, if
/// it did: children get it back (a `select()` program needs a soft limit of
/// at most 1024).
pub fn original_nofile() -> Option<Limit> {
    ORIGINAL_NOFILE.get().map(|&(soft, hard)| Limit {
        resource: Resource::RLIMIT_NOFILE,
        soft,
        hard,
    })
}
