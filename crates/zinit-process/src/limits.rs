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

/// The most open files this process asks for: a stop holds a descriptor per
/// process (its pidfd), and a machine may run hundreds of thousands.
const WANTED_NOFILE: u64 = 1 << 20;

/// The descriptor slots [`presize_descriptor_table`] gives the supervisor:
/// a pidfd each for the processes of a 10,000-process shutdown, with room.
pub const PRESIZED_DESCRIPTORS: u64 = 16_384;

/// Raises the limit on open files so that a pidfd per process of thousands
/// of processes fits: soft and hard to 2^20 (at most `fs.nr_open`) when this
/// process may raise its hard limit (root), else the soft limit to the hard
/// one. Remembers the original for children ([`original_nofile`]). Returns
/// the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let _ = ORIGINAL_NOFILE.set((soft, hard));
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(hard);
    let wanted = WANTED_NOFILE.min(nr_open);
    if wanted > hard && setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_ok() {
        return Ok(wanted);
    }
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

/// Grows this process's descriptor table to `slots` (at most the soft
/// open-file limit) now. Call it while the process has one thread.
///
/// The kernel grows the table by doubling as descriptors are opened, and
/// in a process with more than one thread every growth waits for an RCU
/// grace period with the opening thread blocked: a shutdown that opens a
/// pidfd per process grew it six times, each a stall of milliseconds for a
/// worker on the shutdown's path. A table grown once never shrinks, and
/// 16,384 slots cost the kernel 128 KiB.
pub fn presize_descriptor_table(slots: u64) -> io::Result<()> {
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let highest = slots.min(soft).saturating_sub(1);
    let Ok(highest) = i32::try_from(highest) else {
        return Ok(());
    };
    let any = std::fs::File::open("/")?;
    // The copy goes as soon as it is made: the table keeps its size.
    drop(crate::sys::dup_at_or_above(&any, highest)?);
    Ok(())
}
