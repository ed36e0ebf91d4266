//! The raw Linux calls this crate needs where `nix` has no equivalent, or
//! only one that allocates (which a child between `fork` and `exec` must
//! not do): pidfds, `waitid` on a pidfd, `close_range`, resetting the
//! dispositions of every signal (realtime ones included) and `execve` with
//! argument arrays built before the fork. This is the only module of the
//! workspace that calls `libc` directly.

use std::ffi::{CStr, c_char};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// `pidfd_open(2)`: a file descriptor that refers to the process `pid`.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new, owned file descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `fcntl(F_DUPFD_CLOEXEC)`: a copy of `fd` at the lowest free number at
/// or above `lowest` (the descriptor table grows to hold it).
pub(crate) fn dup_at_or_above(fd: &impl std::os::fd::AsRawFd, lowest: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, lowest) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new, owned file descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `pidfd_send_signal(2)`: signal the process the pidfd refers to, never a
/// process that reused its pid.
pub(crate) fn pidfd_send_signal(fd: RawFd, signal: i32) -> io::Result<()> {
    // SAFETY: plain system call; a null siginfo means "as kill(2) would".
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `waitid(P_PIDFD, fd, WEXITED | WNOHANG)`: the exit status of our child
/// behind `fd` if it has exited (reaping it), `None` while it runs.
pub(crate) fn waitid_pidfd(fd: RawFd) -> io::Result<Option<crate::ExitStatus>> {
    // SAFETY: a zeroed siginfo is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pidfd of our own child and out-pointer.
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            fd as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(exit_status(&info))
}

/// `waitid(P_ALL, WEXITED | WNOHANG)`: the next exited child of this
/// process, reaped; `Ok(None)` when children run but none has exited; the
/// error `ECHILD` when this process has no child at all.
pub(crate) fn waitid_any() -> io::Result<Option<(i32, crate::ExitStatus)>> {
    // SAFETY: a zeroed siginfo is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled the siginfo (si_pid stays 0 if nothing exited).
    let pid = unsafe { info.si_pid() };
    Ok(exit_status(&info).map(|status| (pid, status)))
}

fn exit_status(info: &libc::siginfo_t) -> Option<crate::ExitStatus> {
    // SAFETY: the siginfo was zeroed, then filled by waitid for a child event.
    if unsafe { info.si_pid() } == 0 {
        return None;
    }
    // SAFETY: as above.
    let status = unsafe { info.si_status() };
    Some(if info.si_code == libc::CLD_EXITED {
        crate::ExitStatus::Exited(status)
    } else {
        crate::ExitStatus::Signaled(status)
    })
}

/// Registers an owned descriptor with the tokio reactor.
pub(crate) fn async_fd<T: std::os::fd::AsRawFd>(
    fd: T,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: the AsyncFd owns `fd`, which owns its descriptor, so the
    // descriptor stays open and refers to the same file description for the
    // AsyncFd's whole life.
    Ok(unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }?)
}

/// `_exit(2)`: ends the process at once, without running exit handlers or
/// flushing buffers (which could wait for a lock another thread holds).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no shared state.
    unsafe { libc::_exit(code) }
}

/// The calling thread's supplementary groups (`getgroups(2)` as a raw
/// system call: per thread).
pub(crate) fn thread_groups() -> io::Result<Vec<u32>> {
    // SAFETY: a size of 0 asks for the count only; the pointer is not used.
    let count = unsafe { libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<u32>()) };
    if count < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0u32; count as usize];
    // SAFETY: the buffer holds `groups.len()` gid_t values.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, groups.len(), groups.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(n as usize);
    Ok(groups)
}

/// Sets the calling thread's supplementary groups (the raw system call
/// changes only this thread; the C library's wrapper would change them all).
pub(crate) fn set_thread_groups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: the slice holds `groups.len()` gid_t values.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ----- between fork and exec: async-signal-safe, no allocation ----------

/// Sets every signal, realtime ones included, to its default disposition
/// (an ignored signal stays ignored across `exec`). Uses the raw
/// `rt_sigaction` system call, because the C library refuses to touch the
/// two signals it reserves for itself (32 and 33). Child side only.
pub(crate) fn reset_signal_dispositions() {
    /// The kernel's `struct sigaction` on Linux.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: rt_sigaction(2) with a valid kernel sigaction, no old
            // action, and the kernel's sigset size (8 bytes).
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                )
            };
        }
    }
}

/// Marks every descriptor from `first` up as close-on-exec, so that the
/// program starts with nothing beyond what it was handed deliberately.
/// Child side only.
pub(crate) fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range(2) with integer arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11: one fcntl per possible descriptor.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let last = limit.rlim_cur.min(1 << 20) as i32;
    for fd in first as i32..last {
        // SAFETY: fcntl on a descriptor that may not exist fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// `execve(2)` with arrays built before the fork (null-terminated pointer
/// arrays to strings that outlive the call). Returns only on failure.
/// Child side only.
pub(crate) fn execve(path: &CStr, argv: &[*const c_char], envp: &[*const c_char]) -> io::Error {
    debug_assert!(argv.last().is_some_and(|p| p.is_null()));
    debug_assert!(envp.last().is_some_and(|p| p.is_null()));
    // SAFETY: valid C string and null-terminated arrays of valid C strings.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// Writes `bytes` to `fd` with one `write(2)`. Child side only.
pub(crate) fn write_all_once(fd: RawFd, bytes: &[u8]) {
    // SAFETY: valid buffer; a failed write is ignored.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

/// `mallopt(M_ARENA_MAX, n)`: at most `n` malloc arenas. glibc gives each
/// thread that meets a busy arena one of its own, up to eight per core, and
/// memory freed in one arena is never reused by another; a supervisor that
/// spends its time waiting gains nothing from that and pays in memory.
/// Returns whether the setting took (always `false` without glibc).
pub(crate) fn limit_malloc_arenas(n: i32) -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only changes the allocator's settings; it is safe
        // to call at any time, from any thread.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = n;
        false
    }
}

/// `malloc_trim(0)`: returns the free pages of every arena to the system.
/// Returns whether any was returned (always `false` without glibc).
pub(crate) fn trim_malloc() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim only releases free memory; it is safe to call
        // at any time, from any thread.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}
