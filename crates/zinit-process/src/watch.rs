//! Event-driven waiting for many processes (and a cgroup) to exit.
//!
//! An [`ExitWatcher`] keeps one epoll instance with a pidfd per watched
//! process (and, optionally, a cgroup's `cgroup.events`), registered with the
//! tokio reactor. Waiting costs no CPU until the kernel reports an exit:
//! there is no polling loop.

use crate::handle::ProcessHandle;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
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
    /// The watched cgroup was removed (so it holds no process), or its
    /// events can no longer be read: it is no longer watched. (A removed
    /// cgroup's events file reports a change forever; watching it would
    /// spin. A new cgroup at the same path is another cgroup.)
    pub cgroup_gone: bool,
}

impl Wake {
    /// Whether nothing happened before the deadline.
    pub fn is_timeout(&self) -> bool {
        self.exited.is_empty() && !self.cgroup_changed
    }
}

/// An epoll instance, as tokio's reactor needs it (a raw descriptor).
#[derive(Debug)]
struct EpollFd(Epoll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

/// Waits for watched processes to exit.
#[derive(Debug)]
pub struct ExitWatcher {
    epoll: AsyncFd<EpollFd>,
    /// The watched pidfds, shared with their handles: the registration is
    /// removed through the same open descriptor it was made with, which
    /// stays open while it is here even if the handle is dropped.
    pidfds: HashMap<i32, Arc<OwnedFd>>,
    cgroup_events: Option<std::fs::File>,
}

impl ExitWatcher {
    /// An empty watcher. Needs a tokio runtime with IO enabled.
    pub fn new() -> io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        Ok(Self {
            epoll: crate::sys::async_fd(EpollFd(epoll), tokio::io::Interest::READABLE)?,
            pidfds: HashMap::new(),
            cgroup_events: None,
        })
    }

    /// Watches the process behind `handle`. Returns `false` when the handle
    /// has no pidfd (the caller must then re-check it on other wake-ups).
    pub fn add(&mut self, handle: &ProcessHandle) -> io::Result<bool> {
        if self.pidfds.contains_key(&handle.pid()) {
            return Ok(true);
        }
        let Some(pidfd) = handle.shared_pidfd() else {
            return Ok(false);
        };
        self.epoll.get_ref().0.add(
            &*pidfd,
            EpollEvent::new(EpollFlags::EPOLLIN, handle.pid() as u64),
        )?;
        self.pidfds.insert(handle.pid(), pidfd);
        Ok(true)
    }

    /// Also wakes when the cgroup's `cgroup.events` file changes
    /// (populated / frozen).
    pub fn watch_cgroup(&mut self, events: std::fs::File) -> io::Result<()> {
        self.epoll
            .get_ref()
            .0
            .add(&events, EpollEvent::new(EpollFlags::EPOLLPRI, CGROUP_TOKEN))?;
        self.cgroup_events = Some(events);
        Ok(())
    }

    /// Whether a cgroup's `cgroup.events` is watched (until it is gone).
    pub fn watches_cgroup(&self) -> bool {
        self.cgroup_events.is_some()
    }

    /// Stops watching `pid`.
    pub fn remove(&mut self, pid: i32) {
        if let Some(fd) = self.pidfds.remove(&pid) {
            // Dropping our share is not enough: the registration lives as
            // long as the descriptor does (the handle may still hold it).
            let _ = self.epoll.get_ref().0.delete(&*fd);
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
        let mut events = [EpollEvent::empty(); 256];
        let n = match self.epoll.get_ref().0.wait(&mut events, EpollTimeout::ZERO) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => return Ok(Wake::default()),
            Err(e) => return Err(e.into()),
        };
        let mut wake = Wake::default();
        for event in &events[..n] {
            if event.data() == CGROUP_TOKEN {
                wake.cgroup_changed = true;
                // Reading consumes the notification so that it does not
                // fire again; a removed cgroup fails the read (ENODEV).
                let mut buf = [0u8; 128];
                let read = self.cgroup_events.as_ref().map(|f| f.read_at(&mut buf, 0));
                if let Some(Err(_)) = read {
                    if let Some(file) = self.cgroup_events.take() {
                        let _ = self.epoll.get_ref().0.delete(&file);
                    }
                    wake.cgroup_gone = true;
                }
            } else {
                let pid = event.data() as i32;
                if self.pidfds.contains_key(&pid) {
                    self.remove(pid);
                    wake.exited.push(pid);
                }
            }
        }
        Ok(wake)
    }
}
