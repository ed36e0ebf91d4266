//! PID-reuse-safe process handles.
//!
//! A process's identity is its pid *and* its start time. A [`ProcessHandle`]
//! holds a pidfd, so signals reach the process it was opened for or fail with
//! `ESRCH`, never a newcomer that reused the pid. Without a pidfd (an old
//! kernel, or file descriptors exhausted), the handle re-checks the start time
//! before every `kill(2)`.

use crate::proc_table::read_start_time;
use crate::signal::Signal;
use crate::sys;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

/// A process identity: a pid and the start time that tells reuses apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks after boot (field 22 of `/proc/PID/stat`).
    pub start_time: u64,
}

impl ProcessId {
    /// The identity of the live process `pid`, or `None` if it does not exist.
    pub fn of(pid: i32) -> Option<Self> {
        read_start_time(pid).map(|start_time| Self { pid, start_time })
    }
}

/// A handle to one process that never signals the wrong process.
///
/// The pidfd is shared, not duplicated, with whatever watches the process
/// (an [`ExitWatcher`](crate::watch::ExitWatcher)): one descriptor per
/// process, however many parts of zinit look at it.
#[derive(Debug)]
pub struct ProcessHandle {
    id: ProcessId,
    pidfd: Option<Arc<OwnedFd>>,
}

impl ProcessHandle {
    /// Opens a handle to `id`, failing with `ESRCH` if that exact process
    /// (same pid, same start time) is gone. The pidfd is opened *before* the
    /// start time is checked, so a reuse between the two steps is caught.
    pub fn open(id: ProcessId) -> io::Result<Self> {
        let pidfd = match sys::pidfd_open(id.pid) {
            Ok(fd) => Some(Arc::new(fd)),
            Err(e) if e.raw_os_error() == Some(Errno::ESRCH as i32) => return Err(e),
            Err(_) => None,
        };
        if read_start_time(id.pid) != Some(id.start_time) {
            return Err(Errno::ESRCH.into());
        }
        Ok(Self { id, pidfd })
    }

    /// A handle that checks the start time before each signal instead of
    /// using a pidfd: the fallback when pidfds are unavailable.
    pub fn by_start_time(id: ProcessId) -> Self {
        Self { id, pidfd: None }
    }

    /// Wraps a pidfd already opened for `id` (a child we spawned and have not reaped).
    pub(crate) fn from_pidfd(id: ProcessId, pidfd: OwnedFd) -> Self {
        Self {
            id,
            pidfd: Some(Arc::new(pidfd)),
        }
    }

    /// The identity this handle refers to.
    pub fn id(&self) -> ProcessId {
        self.id
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.id.pid
    }

    /// The pidfd, when the handle has one.
    pub fn pidfd(&self) -> Option<&OwnedFd> {
        self.pidfd.as_deref()
    }

    /// The pidfd itself, shared: it stays open while any holder keeps it.
    pub(crate) fn shared_pidfd(&self) -> Option<Arc<OwnedFd>> {
        self.pidfd.clone()
    }

    /// Sends `signal`. Fails with `ESRCH` once the process has exited (or
    /// when its pid now belongs to another process).
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        if let Some(fd) = &self.pidfd {
            return sys::pidfd_send_signal(fd.as_raw_fd(), signal as i32);
        }
        if read_start_time(self.id.pid) != Some(self.id.start_time) {
            return Err(Errno::ESRCH.into());
        }
        // The start time was just checked: the pid is still this process's.
        Ok(nix::sys::signal::kill(Pid::from_raw(self.id.pid), signal)?)
    }

    /// Whether the process has not exited yet. A zombie has exited.
    pub fn is_alive(&self) -> bool {
        if let Some(fd) = &self.pidfd {
            return pidfd_alive(fd);
        }
        let mut buf = Vec::new();
        match crate::proc_table::read_process(self.id.pid, crate::Detail::Basic, &mut buf) {
            Some(info) => info.start_time == self.id.start_time && !info.is_zombie(),
            None => false,
        }
    }
}

/// Whether the process behind a pidfd has not exited yet (a pidfd becomes
/// readable when its process exits).
pub(crate) fn pidfd_alive(fd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n == 0)
}
