//! Event-driven waiting for many processes (and a cgroup) to exit.
//!
//! An [`ExitWatcher`] keeps one epoll instance with a pidfd per watched
//! process (and, optionally, a cgroup's `cgroup.events`), registered with the
//! tokio reactor. Waiting costs no CPU until the kernel reports an exit:
//! there is no polling loop.

use crate::handle::ProcessHandle;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// The epoll token of the cgroup events file.
const CGROUP_TOKEN: u64 = u64::MAX;

/// What woke a wait.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wake {
    /// Watched processes that exited (they are no longer watched).
    pub exited: Vec<i32>,
    /// The cgroup's `cgroup.events` changed.
    pub cgroup_changed: bool,
}

impl Wake {
    /// Whether nothing happened before the deadline.
    pub fn is_timeout(&self) -> bool {
        self.exited.is_empty() && !self.cgroup_changed
    }
}

/// Waits for watched processes to exit.
#[derive(Debug)]
pub struct ExitWatcher {
    epoll: AsyncFd<OwnedFd>,
    pidfds: HashMap<i32, OwnedFd>,
    cgroup_events: Option<std::fs::File>,
}

impl ExitWatcher {
    /// An empty watcher. Needs a tokio runtime with IO enabled.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain system call.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new, owned descriptor.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            epoll: crate::sys::async_fd(epoll, tokio::io::Interest::READABLE)?,
            pidfds: HashMap::new(),
            cgroup_events: None,
        })
    }

    fn ctl_add(&self, fd: i32, events: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: valid epoll fd and event.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.get_ref().as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd,
                &mut event,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches the process behind `handle`. Returns `false` when the handle
    /// has no pidfd (the caller must then re-check it on other wake-ups).
    pub fn add(&mut self, handle: &ProcessHandle) -> io::Result<bool> {
        if self.pidfds.contains_key(&handle.pid()) {
            return Ok(true);
        }
        let Some(pidfd) = handle.pidfd() else {
            return Ok(false);
        };
        let dup = pidfd.try_clone()?;
        self.ctl_add(dup.as_raw_fd(), libc::EPOLLIN as u32, handle.pid() as u64)?;
        self.pidfds.insert(handle.pid(), dup);
        Ok(true)
    }

    /// Also wakes when the cgroup's `cgroup.events` file changes
    /// (populated / frozen).
    pub fn watch_cgroup(&mut self, events: std::fs::File) -> io::Result<()> {
        self.ctl_add(events.as_raw_fd(), libc::EPOLLPRI as u32, CGROUP_TOKEN)?;
        self.cgroup_events = Some(events);
        Ok(())
    }

    /// Stops watching `pid`.
    pub fn remove(&mut self, pid: i32) {
        if let Some(fd) = self.pidfds.remove(&pid) {
            // Closing our duplicate is not enough: the registration lives as
            // long as any descriptor of the pidfd does (the handle's, too).
            // SAFETY: valid epoll fd and registered fd; no event needed for DEL.
            unsafe {
                libc::epoll_ctl(
                    self.epoll.get_ref().as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd.as_raw_fd(),
                    std::ptr::null_mut(),
                )
            };
        }
    }

    /// How many processes are watched.
    pub fn len(&self) -> usize {
        self.pidfds.len()
    }

    /// Whether no process is watched.
    pub fn is_empty(&self) -> bool {
        self.pidfds.is_empty()
    }

    /// Waits until at least one watched process exits, the cgroup changes,
    /// or `deadline` passes (then the returned [`Wake`] is empty).
    pub async fn wait(&mut self, deadline: Instant) -> io::Result<Wake> {
        loop {
            let wake = self.collect()?;
            if !wake.is_timeout() {
                return Ok(wake);
            }
            match tokio::time::timeout_at(deadline, self.epoll.readable()).await {
                Err(_) => return Ok(Wake::default()),
                // Readiness is cleared here and re-armed by epoll_wait in
                // collect(): the epoll fd stays readable while events are pending.
                Ok(guard) => guard?.clear_ready(),
            }
        }
    }

    fn collect(&mut self) -> io::Result<Wake> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        // SAFETY: the buffer is valid for `events.len()` entries; zero timeout.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.get_ref().as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                0,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(Wake::default());
            }
            return Err(err);
        }
        let mut wake = Wake::default();
        for event in &events[..n as usize] {
            if event.u64 == CGROUP_TOKEN {
                wake.cgroup_changed = true;
                // Consume the notification so that it does not fire again.
                if let Some(file) = &self.cgroup_events {
                    let mut buf = [0u8; 128];
                    // SAFETY: valid fd and buffer.
                    unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                }
            } else {
                let pid = event.u64 as i32;
                if self.pidfds.contains_key(&pid) {
                    self.remove(pid);
                    wake.exited.push(pid);
                }
            }
        }
        Ok(wake)
    }
}
