//! The child subreaper: adopts orphaned descendants and reaps them.
//!
//! With `PR_SET_CHILD_SUBREAPER`, processes that double-fork away from a
//! unit are re-parented to this process instead of PID 1, so they stay
//! visible as our descendants. This module is the only caller of
//! `waitid(P_ALL)`: the [`Reaper`] (or, in a process that does all of its
//! waiting itself, [`reap_any`]) takes the spawn table's lock, reaps every
//! exited child, and files the status of children spawned through
//! [`crate::spawn::Command`] in that table for their own [`crate::Child::wait`].
//!
//! The subreaper flag is process-wide: a process that starts the reaper must
//! spawn every child through this crate (anything else would have its
//! statuses reaped here). Tests of it run in a process of their own.

use crate::spawn::{ExitStatus, children};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast;

/// An adopted orphan that the reaper reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Its pid.
    pub pid: i32,
    /// How it ended.
    pub status: ExitStatus,
}

/// The running reaper.
#[derive(Debug, Clone)]
pub struct Reaper {
    reaped: Arc<AtomicU64>,
    orphans: broadcast::Sender<Reaped>,
}

impl Reaper {
    /// Makes this process a child subreaper and starts reaping on SIGCHLD.
    /// Needs a tokio runtime.
    pub fn start() -> io::Result<Self> {
        set_child_subreaper()?;
        let mut sigchld = signal(SignalKind::child())?;
        let (orphans, _) = broadcast::channel(1024);
        let reaper = Self {
            reaped: Arc::new(AtomicU64::new(0)),
            orphans,
        };
        let task = reaper.clone();
        tokio::spawn(async move {
            loop {
                task.reap_now();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Reaps every exited child now; returns how many orphans it reaped.
    pub fn reap_now(&self) -> usize {
        let mut table = children();
        let mut orphans = 0;
        while let Ok(Some((pid, status))) = crate::sys::waitid_any() {
            match table.get_mut(&pid) {
                Some(slot) => *slot = Some(status),
                None => {
                    orphans += 1;
                    self.reaped.fetch_add(1, Ordering::Relaxed);
                    let _ = self.orphans.send(Reaped { pid, status });
                }
            }
        }
        orphans
    }

    /// How many adopted orphans have been reaped so far.
    pub fn orphans_reaped(&self) -> u64 {
        self.reaped.load(Ordering::Relaxed)
    }

    /// A stream of reaped orphans.
    pub fn subscribe(&self) -> broadcast::Receiver<Reaped> {
        self.orphans.subscribe()
    }
}

/// What [`reap_any`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reap {
    /// A child that had exited, now reaped.
    Exited(Reaped),
    /// Children are running, and none of them has exited.
    Running,
    /// This process has no child at all.
    NoChildren,
}

/// Reaps one exited child of this process, whichever it is (`waitid(P_ALL,
/// WEXITED | WNOHANG)`), for a process that does all of its waiting itself
/// (zinit_pid1) instead of running a [`Reaper`]: call it until it returns
/// [`Reap::Running`] or [`Reap::NoChildren`]. The status of a child spawned
/// through [`crate::Command`] is also filed for its [`crate::Child::try_wait`],
/// under the spawn table's lock, as the [`Reaper`] does. One system call and
/// one table look-up per child.
pub fn reap_any() -> Reap {
    let mut table = children();
    match crate::sys::waitid_any() {
        Ok(Some((pid, status))) => {
            if let Some(slot) = table.get_mut(&pid) {
                *slot = Some(status);
            }
            Reap::Exited(Reaped { pid, status })
        }
        Ok(None) => Reap::Running,
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ECHILD as i32) => Reap::NoChildren,
        // waitid with WNOHANG fails otherwise only on invalid arguments.
        Err(_) => Reap::Running,
    }
}

/// Sets `PR_SET_CHILD_SUBREAPER` on this process.
pub fn set_child_subreaper() -> io::Result<()> {
    Ok(nix::sys::prctl::set_child_subreaper(true)?)
}

/// Whether this process is a child subreaper.
pub fn is_child_subreaper() -> bool {
    nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}
