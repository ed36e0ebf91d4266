//! The last sweep, once the server has ended: whatever is still alive gets
//! SIGTERM (and SIGCONT), a short grace, then SIGKILL, and is reaped. As
//! PID 1 that is `kill(-1)`: everything in the PID namespace (on a machine,
//! everything but kernel threads). Not as PID 1, it is this process's own
//! descendants only, signalled one by one through pidfds; `kill(-1)` would
//! reach the whole machine.
//!
//! Waiting is event-driven: after each SIGCHLD everything exited is reaped
//! and the sweep checks whether anything is left (`kill(-1, 0)` fails with
//! ESRCH once the namespace is empty; a subreaper has no descendant left
//! once it has no child).

use crate::mode::Mode;
use crate::signals::Signals;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};
use zinit_process::reaper::{Reap, reap_any};
use zinit_process::{Detail, ProcessHandle, ProcessId, ProcessTable};

/// The longest grace between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(1);
/// The longest wait for killed processes to be gone.
pub const KILL_WAIT: Duration = Duration::from_secs(1);

/// One process the sweep found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its pid (in this PID namespace).
    pub pid: i32,
    /// Its command name.
    pub name: String,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.name)
    }
}

/// What the sweep found and did.
#[derive(Debug, Default)]
pub struct Report {
    /// Processes below zinit_pid1 still alive after the server ended:
    /// orphans, or what the server's shutdown left.
    pub found: Vec<Found>,
    /// Processes in the namespace whose parent is outside it (a `docker
    /// exec` session, `nsenter`, a `zinit shutdown` run from outside):
    /// ended too, but they are not zinit's own and do not make the
    /// shutdown unclean.
    pub visitors: Vec<Found>,
    /// Processes still there after SIGKILL and [`KILL_WAIT`].
    pub left: Vec<Found>,
}

/// Sweeps, within `hard_end`.
pub fn sweep(mode: Mode, signals: &Signals, hard_end: Instant) -> Report {
    reap_all();
    let me = std::process::id() as i32;
    let (found, visitors) = survivors(mode, me);
    let mut report = Report {
        found,
        visitors,
        left: Vec::new(),
    };
    if report.found.is_empty() && report.visitors.is_empty() && empty(mode) {
        crate::info!("final sweep: nothing left");
        return report;
    }
    if !report.found.is_empty() {
        crate::warn!(
            "final sweep: still alive after the server's shutdown: {}",
            list(&report.found)
        );
    }
    if !report.visitors.is_empty() {
        crate::info!(
            "final sweep: ending processes entered from outside the namespace: {}",
            list(&report.visitors)
        );
    }
    signal_all(mode, me, Signal::SIGTERM);
    signal_all(mode, me, Signal::SIGCONT);
    let grace_end =
        (Instant::now() + GRACE).min(hard_end.checked_sub(KILL_WAIT / 2).unwrap_or(hard_end));
    if !wait_empty(mode, signals, grace_end) {
        let (below, visiting) = survivors(mode, me);
        crate::warn!(
            "final sweep: SIGKILL to what ignored SIGTERM: {}",
            list(&[below, visiting].concat())
        );
        signal_all(mode, me, Signal::SIGKILL);
        let kill_end = (Instant::now() + KILL_WAIT).min(hard_end);
        if !wait_empty(mode, signals, kill_end) {
            let (below, visiting) = survivors(mode, me);
            report.left = [below, visiting].concat();
            crate::error!(
                "final sweep: still there after SIGKILL (uninterruptible?): {}",
                list(&report.left)
            );
        }
    }
    report
}

fn list(found: &[Found]) -> String {
    if found.is_empty() {
        return "(gone meanwhile)".into();
    }
    found
        .iter()
        .map(Found::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reaps every exited child now.
pub fn reap_all() {
    while let Reap::Exited(_) = reap_any() {}
}

/// The live processes the sweep targets: (below zinit_pid1, visitors).
fn survivors(mode: Mode, me: i32) -> (Vec<Found>, Vec<Found>) {
    let Ok(table) = ProcessTable::snapshot(Detail::Basic) else {
        return (Vec::new(), Vec::new());
    };
    let found = |pid: i32| {
        table
            .get(pid)
            .filter(|p| !p.is_zombie() && !p.kernel_thread && p.pid != me)
            .map(|p| Found {
                pid,
                name: p.comm.clone(),
            })
    };
    let below: Vec<i32> = table
        .descendants(me)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    let mut ours: Vec<Found> = below.iter().filter_map(|&pid| found(pid)).collect();
    ours.sort_by_key(|f| f.pid);
    if !mode.is_pid1() {
        return (ours, Vec::new());
    }
    let mut visitors: Vec<Found> = table
        .iter()
        .map(|p| p.pid)
        .filter(|pid| !below.contains(pid))
        .filter_map(found)
        .collect();
    visitors.sort_by_key(|f| f.pid);
    (ours, visitors)
}

/// Sends `signal` to everything the sweep targets.
fn signal_all(mode: Mode, me: i32, signal: Signal) {
    if mode.is_pid1() {
        // As PID 1, -1 is every process in this PID namespace but us.
        let _ = kill(Pid::from_raw(-1), signal);
        return;
    }
    let Ok(table) = ProcessTable::snapshot(Detail::Basic) else {
        return;
    };
    for (pid, _) in table.descendants(me) {
        let Some(info) = table.get(pid) else { continue };
        let id = ProcessId {
            pid,
            start_time: info.start_time,
        };
        if let Ok(handle) = ProcessHandle::open(id) {
            let _ = handle.signal(signal);
        }
    }
}

/// Whether nothing the sweep targets is left (after reaping).
fn empty(mode: Mode) -> bool {
    if mode == Mode::Machine {
        // Kernel threads exist for kill(-1, 0) too: read /proc instead.
        reap_all();
        let (below, visitors) = survivors(mode, std::process::id() as i32);
        below.is_empty() && visitors.is_empty()
    } else if mode.is_pid1() {
        reap_all();
        // Signal 0 only checks for existence; ESRCH: no process but us in
        // this namespace (kernel threads are not in it).
        kill(Pid::from_raw(-1), None) == Err(Errno::ESRCH)
    } else {
        // A subreaper inherits every orphan among its descendants, so
        // without a child it has no descendant.
        loop {
            match reap_any() {
                Reap::Exited(_) => continue,
                Reap::Running => return false,
                Reap::NoChildren => return true,
            }
        }
    }
}

/// Waits, reaping on every SIGCHLD, until nothing is left (true) or `end`.
fn wait_empty(mode: Mode, signals: &Signals, end: Instant) -> bool {
    loop {
        if empty(mode) {
            return true;
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        // Other signals (another SIGTERM) change nothing now.
        let _ = signals.wait(Some(end - now));
    }
}
