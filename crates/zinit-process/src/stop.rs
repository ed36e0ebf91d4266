//! Stopping one unit's process tree, gracefully and then by force.
//!
//! [`stop`] sends the stop signal (followed by `SIGCONT` to a process read
//! as stopped, so it sees it; a rescan that finds a signalled process stopped
//! continues it) according to a [`StopMode`]: in [`StopMode::Tree`] the
//! deepest descendants first, level by level up to the main process, the tree
//! re-read between levels. A level gets until it has exited, or until
//! `level_idle` passes with none of its members exiting, and never more than
//! `timeout / (2 × depth)`. Then it waits, event-driven, for every member to
//! be gone (looking at the tree once early, `level_idle` in, for a member
//! that replaced its program after its signal). When the timeout ends it
//! escalates: it freezes what is left
//! (`cgroup.freeze`, or `SIGSTOP` from the top down until a re-list finds
//! nothing new), `SIGKILL`s deepest first, and waits a bounded time for the
//! kill to land. Whatever survives is reported with a reason, never waited on.

use crate::handle::{ProcessHandle, ProcessId};
use crate::members::{Found, Members};
use crate::proc_table::{Detail, ProcState};
use crate::signal::{Signal, short_name};
use crate::watch::ExitWatcher;
use crate::wave::{WAVE_WAIT, Wave};
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Which processes receive the stop signal, and in what order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopMode {
    /// Deepest descendants first, level by level up to the main process.
    #[default]
    Tree,
    /// Every member at once.
    Group,
    /// The main process only; the rest gets a short grace after it exits,
    /// then escalation.
    Main,
}

/// How to stop one unit.
#[derive(Debug, Clone)]
pub struct StopSpec {
    /// The stop signal.
    pub signal: Signal,
    /// The order in which members are signalled.
    pub mode: StopMode,
    /// The graceful budget: escalation starts when it ends.
    pub timeout: Duration,
    /// A level is left once this long passes with none of its members exiting.
    pub level_idle: Duration,
    /// In [`StopMode::Main`], how long the rest may take after the main process exits.
    pub main_grace: Duration,
    /// How long to wait for `SIGKILL` to land before reporting leftovers.
    pub kill_wait: Duration,
    /// How often a "still waiting" event is sent while members remain.
    pub progress_every: Duration,
    /// When this is cancelled, the rest of the graceful budget is skipped
    /// (escalation starts at once).
    pub hurry: Option<CancellationToken>,
    /// The stop's place in a [`Wave`] of stops that send their first
    /// signals together, once each has read its tree.
    pub wave: Option<Wave>,
}

impl Default for StopSpec {
    fn default() -> Self {
        Self {
            signal: Signal::SIGTERM,
            mode: StopMode::Tree,
            timeout: Duration::from_secs(10),
            level_idle: Duration::from_millis(100),
            main_grace: Duration::from_secs(1),
            kill_wait: Duration::from_secs(2),
            progress_every: Duration::from_secs(1),
            hurry: None,
            wave: None,
        }
    }
}

/// What happened during a stop, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopEvent {
    /// A signal was sent to a member.
    Signalled {
        /// Target pid.
        pid: i32,
        /// Its depth below the main process.
        depth: usize,
        /// Its command name (shared by every event of the process).
        comm: Arc<str>,
        /// The signal.
        signal: Signal,
        /// Time since the stop began.
        at: Duration,
    },
    /// A member exited (or became a zombie).
    Exited {
        /// Its pid.
        pid: i32,
        /// Its depth below the main process.
        depth: usize,
        /// Its command name (shared by every event of the process).
        comm: Arc<str>,
        /// Whether it had been sent SIGKILL.
        killed: bool,
        /// Time since the stop began.
        at: Duration,
    },
    /// Members are still alive: sent about every `progress_every`.
    Waiting {
        /// The members still alive (pid, command name), deepest first.
        remaining: Vec<(i32, String)>,
        /// Time since the stop began.
        at: Duration,
    },
    /// The graceful budget ended with these many members alive.
    Escalating {
        /// How many members were alive.
        remaining: usize,
        /// Time since the stop began.
        at: Duration,
    },
}

/// Where a stop's events go as they happen (besides its report): a
/// channel, or anything that turns them into something else on the spot.
pub trait StopSink: Send + Sync {
    /// Called with every event, in order, from the stopping task.
    fn event(&self, event: &StopEvent);
}

impl StopSink for UnboundedSender<StopEvent> {
    fn event(&self, event: &StopEvent) {
        let _ = self.send(event.clone());
    }
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// Every member exited within the graceful budget.
    Graceful,
    /// Escalation was needed, and every member is gone.
    Killed,
    /// Some members survived even SIGKILL (see [`StopReport::leftovers`]).
    Incomplete,
}

/// A member that survived the stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Its pid.
    pub pid: i32,
    /// Its command name.
    pub comm: String,
    /// Its scheduler state at the end.
    pub state: ProcState,
    /// Why it is still there, for a person.
    pub reason: String,
}

/// What a stop did.
#[derive(Debug, Clone)]
pub struct StopReport {
    /// How it ended.
    pub outcome: StopOutcome,
    /// How long it took.
    pub elapsed: Duration,
    /// Every event, in order.
    pub events: Vec<StopEvent>,
    /// Members that could not be killed.
    pub leftovers: Vec<Leftover>,
}

impl StopReport {
    /// The pids that were sent `signal`, in the order they were sent it.
    pub fn signalled_with(&self, signal: Signal) -> Vec<i32> {
        self.events
            .iter()
            .filter_map(|e| match e {
                StopEvent::Signalled { pid, signal: s, .. } if *s == signal => Some(*pid),
                _ => None,
            })
            .collect()
    }

    /// How many members exited, and how many of them had been killed.
    pub fn exit_counts(&self) -> (usize, usize) {
        let mut exited = 0;
        let mut killed = 0;
        for event in &self.events {
            if let StopEvent::Exited { killed: k, .. } = event {
                exited += 1;
                killed += usize::from(*k);
            }
        }
        (exited, killed)
    }
}

/// Stops every member of a unit, following `spec`. Events are also given
/// to `progress` as they happen. Returns when every member is gone, or when
/// escalation and `kill_wait` are over.
pub async fn stop(
    members: &Members,
    spec: &StopSpec,
    progress: Option<&dyn StopSink>,
) -> io::Result<StopReport> {
    let mut run = Run::new(members, spec, progress)?;
    run.rescan().await?;
    let graceful_end = run.start + spec.timeout;
    if let Some(wave) = &spec.wave
        && !run.hurried
    {
        let bound = WAVE_WAIT.min(spec.timeout / 4);
        wave.ready(bound).await;
    }
    match spec.mode {
        StopMode::Tree => run.tree(graceful_end).await?,
        StopMode::Group => run.signal_where(|_| true),
        StopMode::Main => run.main(graceful_end).await?,
    }
    if spec.mode != StopMode::Main {
        run.wait_all(graceful_end, true).await?;
    }
    let outcome = if run.live.is_empty() {
        StopOutcome::Graceful
    } else {
        run.escalate().await?;
        if run.live.is_empty() {
            StopOutcome::Killed
        } else {
            StopOutcome::Incomplete
        }
    };
    let leftovers = run.leftovers();
    Ok(StopReport {
        outcome,
        elapsed: run.start.elapsed(),
        events: run.events,
        leftovers,
    })
}

struct Tracked {
    handle: ProcessHandle,
    depth: usize,
    comm: Arc<str>,
    signalled: bool,
    /// Job-control stopped (state T) as of the last read: it gets SIGCONT
    /// after its stop signal, and again at a rescan that finds it stopped.
    suspended: bool,
    stopped: bool,
    killed: bool,
}

struct Run<'a> {
    members: &'a Members,
    spec: &'a StopSpec,
    progress: Option<&'a dyn StopSink>,
    start: Instant,
    watcher: ExitWatcher,
    live: HashMap<i32, Tracked>,
    gone: HashSet<ProcessId>,
    events: Vec<StopEvent>,
    hurry: Option<CancellationToken>,
    /// The caller asked to skip the rest of the graceful budget.
    hurried: bool,
}

impl<'a> Run<'a> {
    fn new(
        members: &'a Members,
        spec: &'a StopSpec,
        progress: Option<&'a dyn StopSink>,
    ) -> io::Result<Self> {
        let mut watcher = ExitWatcher::new()?;
        if let Some(events) = members.cgroup().and_then(|c| c.open_events().ok()) {
            watcher.watch_cgroup(events)?;
        }
        Ok(Self {
            members,
            spec,
            progress,
            start: Instant::now(),
            watcher,
            live: HashMap::new(),
            gone: HashSet::new(),
            events: Vec::new(),
            hurried: spec.hurry.as_ref().is_some_and(|h| h.is_cancelled()),
            hurry: spec.hurry.clone(),
        })
    }

    /// Waits for exits until `until`, or until the caller hurries us.
    async fn wait(&mut self, until: Instant) -> io::Result<crate::watch::Wake> {
        if self.hurried {
            return Ok(crate::watch::Wake::default());
        }
        let Some(hurry) = self.hurry.clone() else {
            return self.watcher.wait(until).await;
        };
        tokio::select! {
            wake = self.watcher.wait(until) => wake,
            _ = hurry.cancelled() => {
                self.hurried = true;
                Ok(crate::watch::Wake::default())
            }
        }
    }

    fn emit(&mut self, event: StopEvent) {
        if let Some(progress) = self.progress {
            progress.event(&event);
        }
        self.events.push(event);
    }

    /// Re-reads the tree: adds new members (their handles opened by the
    /// scan), updates depths, and drops members that vanished without a
    /// pidfd event (handles without a pidfd).
    async fn rescan(&mut self) -> io::Result<()> {
        let known: HashSet<i32> = self.live.keys().copied().collect();
        let found = self
            .members
            .scan_for_stop(known, Duration::from_secs(2))
            .await?;
        let current: HashSet<i32> = found.iter().map(|f| f.member.id.pid).collect();
        for Found { member, handle } in found {
            if let Some(tracked) = self.live.get_mut(&member.id.pid) {
                tracked.depth = member.depth;
                tracked.suspended = member.state == ProcState::Stopped;
                if tracked.suspended && tracked.signalled && !tracked.stopped {
                    // Stopped after its stop signal: it cannot act on it.
                    let _ = tracked.handle.signal(Signal::SIGCONT);
                }
                if *tracked.comm != *member.comm {
                    // It executed a new program since we saw it. A signal
                    // sent between its fork and that exec may have gone to
                    // its parent's handler (a shell's trap) and been lost:
                    // it gets the stop signal again.
                    tracked.comm = Arc::from(member.comm.as_str());
                    tracked.signalled = false;
                }
                continue;
            }
            if self.gone.contains(&member.id) {
                continue;
            }
            let Some(handle) = handle else {
                continue;
            };
            // Without a pidfd the member is still tracked; rescans notice its exit.
            self.watcher.add(&handle)?;
            self.live.insert(
                member.id.pid,
                Tracked {
                    handle,
                    depth: member.depth,
                    comm: Arc::from(member.comm.as_str()),
                    signalled: false,
                    suspended: member.state == ProcState::Stopped,
                    stopped: false,
                    killed: false,
                },
            );
        }
        let vanished: Vec<i32> = self
            .live
            .iter()
            .filter(|(pid, t)| !current.contains(pid) && !t.handle.is_alive())
            .map(|(pid, _)| *pid)
            .collect();
        self.record_exits(&vanished);
        Ok(())
    }

    fn record_exits(&mut self, pids: &[i32]) {
        for &pid in pids {
            self.watcher.remove(pid);
            if let Some(t) = self.live.remove(&pid) {
                self.gone.insert(t.handle.id());
                let at = self.start.elapsed();
                self.emit(StopEvent::Exited {
                    pid,
                    depth: t.depth,
                    comm: t.comm,
                    killed: t.killed,
                    at,
                });
            }
        }
    }

    /// Sends `signal` to one tracked member (then SIGCONT if it was read as
    /// stopped, unless the signal is SIGSTOP or SIGKILL). A member that
    /// already exited is simply skipped.
    fn send(&mut self, pid: i32, signal: Signal) {
        let Some(t) = self.live.get_mut(&pid) else {
            return;
        };
        if t.handle.signal(signal).is_err() {
            return;
        }
        match signal {
            Signal::SIGKILL => t.killed = true,
            Signal::SIGSTOP => t.stopped = true,
            _ => {
                t.signalled = true;
                if t.suspended {
                    let _ = t.handle.signal(Signal::SIGCONT);
                }
            }
        }
        let (depth, comm) = (t.depth, t.comm.clone());
        let at = self.start.elapsed();
        self.emit(StopEvent::Signalled {
            pid,
            depth,
            comm,
            signal,
            at,
        });
    }

    /// Sends the stop signal, deepest first, to every member not yet signalled
    /// whose depth satisfies `select`.
    fn signal_where(&mut self, select: impl Fn(usize) -> bool) {
        let mut targets: Vec<(i32, usize)> = self
            .live
            .iter()
            .filter(|(_, t)| !t.signalled && select(t.depth))
            .map(|(pid, t)| (*pid, t.depth))
            .collect();
        crate::proc_table::sort_deepest_first(&mut targets);
        for (pid, _) in targets {
            self.send(pid, self.spec.signal);
        }
    }

    fn max_depth(&self) -> usize {
        self.live.values().map(|t| t.depth).max().unwrap_or(0)
    }

    /// Deepest-first, level by level.
    async fn tree(&mut self, graceful_end: Instant) -> io::Result<()> {
        let depth = self.max_depth();
        let level_cap = self.spec.timeout / (2 * depth.max(1) as u32);
        let mut level = depth;
        while level > 0 {
            self.signal_where(|d| d >= level);
            let level_end = (Instant::now() + level_cap).min(graceful_end);
            let mut idle_end = Instant::now() + self.spec.level_idle;
            // Whether the loop ended on a fresh read of the tree.
            let fresh = loop {
                if !self.live.values().any(|t| t.depth >= level) {
                    // Confirm with a fresh read. Newcomers at or below this
                    // level (a parent replacing the children that exited, as
                    // nginx's master does) are signalled at once, and the
                    // walk moves up to that parent instead of waiting for
                    // them: waiting would only let it respawn again.
                    self.rescan().await?;
                    if self.live.values().any(|t| t.depth >= level) {
                        self.signal_where(|d| d >= level);
                    }
                    break true;
                }
                let until = level_end.min(idle_end);
                if Instant::now() >= until || self.hurried {
                    break false;
                }
                let wake = self.wait(until).await?;
                if !wake.exited.is_empty() {
                    let level_exits = wake
                        .exited
                        .iter()
                        .any(|pid| self.live.get(pid).is_some_and(|t| t.depth >= level));
                    self.record_exits(&wake.exited);
                    if level_exits {
                        idle_end = Instant::now() + self.spec.level_idle;
                    }
                }
            };
            if !fresh {
                self.rescan().await?;
            }
            level = level.saturating_sub(1).min(self.max_depth());
        }
        self.signal_where(|_| true);
        Ok(())
    }

    /// The main process only, then a short grace for the rest.
    async fn main(&mut self, graceful_end: Instant) -> io::Result<()> {
        let root = self.members.root().pid;
        if self.live.contains_key(&root) {
            self.send(root, self.spec.signal);
            while self.live.contains_key(&root) {
                let wake = self.wait(graceful_end).await?;
                if wake.is_timeout() {
                    return Ok(());
                }
                self.record_exits(&wake.exited);
            }
        }
        let grace_end = (Instant::now() + self.spec.main_grace).min(graceful_end);
        self.wait_all(grace_end, false).await
    }

    /// Waits until no member is left or `until`. With `signal_newcomers`,
    /// members that appear meanwhile get the stop signal at once.
    async fn wait_all(&mut self, until: Instant, signal_newcomers: bool) -> io::Result<()> {
        let mut next_progress = self.start + self.spec.progress_every;
        // One early look, `level_idle` in: a member signalled between its
        // fork and its exec (a shell running its next command) may have
        // lost the signal to the handler it inherited; the look sees the new
        // program and signals it again, instead of waiting for the first
        // progress tick (a shell's trap waits for its foreground command).
        let mut early_look = Some(Instant::now() + self.spec.level_idle);
        loop {
            if self.live.is_empty() {
                self.rescan().await?;
                if self.live.is_empty() {
                    return Ok(());
                }
                if signal_newcomers {
                    self.signal_where(|_| true);
                }
            }
            let now = Instant::now();
            if now >= until || self.hurried {
                return Ok(());
            }
            let next_look = early_look.map_or(next_progress, |at| at.min(next_progress));
            let wake = self.wait(until.min(next_look)).await?;
            self.record_exits(&wake.exited);
            let now = Instant::now();
            if now >= next_look {
                early_look = None;
                self.rescan().await?;
                if signal_newcomers {
                    self.signal_where(|_| true);
                }
            }
            if now >= next_progress {
                next_progress += self.spec.progress_every;
                self.emit_waiting();
            }
        }
    }

    fn emit_waiting(&mut self) {
        if self.live.is_empty() {
            return;
        }
        let mut remaining: Vec<(usize, i32, String)> = self
            .live
            .iter()
            .map(|(pid, t)| (t.depth, *pid, t.comm.to_string()))
            .collect();
        remaining.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let at = self.start.elapsed();
        self.emit(StopEvent::Waiting {
            remaining: remaining.into_iter().map(|(_, p, c)| (p, c)).collect(),
            at,
        });
    }

    /// Freeze, re-list until stable, SIGKILL deepest first, wait (bounded).
    async fn escalate(&mut self) -> io::Result<()> {
        let at = self.start.elapsed();
        self.emit(StopEvent::Escalating {
            remaining: self.live.len(),
            at,
        });
        let cgroup = self.members.cgroup().cloned();
        if let Some(cgroup) = &cgroup {
            let _ = cgroup.freeze(Duration::from_millis(500)).await;
            self.rescan().await?;
        } else {
            // SIGSTOP from the top down, so no parent replaces a stopped
            // child; repeat until a re-list finds nobody new.
            for _ in 0..20 {
                let mut targets: Vec<(i32, usize)> = self
                    .live
                    .iter()
                    .filter(|(_, t)| !t.stopped)
                    .map(|(pid, t)| (*pid, t.depth))
                    .collect();
                if targets.is_empty() {
                    break;
                }
                targets.sort_unstable_by_key(|&(pid, depth)| (depth, pid));
                for (pid, _) in targets {
                    self.send(pid, Signal::SIGSTOP);
                }
                self.rescan().await?;
            }
        }
        test_hooks::maybe_wedge("after-freeze").await;
        let mut targets: Vec<(i32, usize)> =
            self.live.iter().map(|(pid, t)| (*pid, t.depth)).collect();
        crate::proc_table::sort_deepest_first(&mut targets);
        for (pid, _) in targets {
            self.send(pid, Signal::SIGKILL);
        }
        if let Some(cgroup) = &cgroup {
            let _ = cgroup.kill();
            let _ = cgroup.set_frozen(false);
        }
        let kill_end = Instant::now() + self.spec.kill_wait;
        loop {
            if self.live.is_empty() {
                self.rescan().await?;
                let fresh: Vec<i32> = self.live.keys().copied().collect();
                if fresh.is_empty() {
                    return Ok(());
                }
                for pid in fresh {
                    self.send(pid, Signal::SIGKILL);
                }
            }
            let wake = self.watcher.wait(kill_end).await?;
            if wake.is_timeout() {
                return Ok(());
            }
            self.record_exits(&wake.exited);
        }
    }

    fn leftovers(&self) -> Vec<Leftover> {
        let mut buf = Vec::new();
        let mut out: Vec<Leftover> = self
            .live
            .iter()
            .map(|(pid, t)| {
                let info = crate::proc_table::read_process(*pid, Detail::Basic, &mut buf);
                let state = info.as_ref().map_or(ProcState::Other('?'), |i| i.state);
                let reason = match state {
                    ProcState::Uninterruptible => {
                        "in uninterruptible sleep (D): SIGKILL lands only when its system call returns".to_string()
                    }
                    ProcState::Stopped => "stopped, and did not die from SIGKILL".to_string(),
                    _ if t.killed => format!(
                        "still alive after {} (state {})",
                        short_name(Signal::SIGKILL),
                        state.code()
                    ),
                    _ => format!("still alive (state {})", state.code()),
                };
                Leftover {
                    pid: *pid,
                    comm: t.comm.to_string(),
                    state,
                    reason,
                }
            })
            .collect();
        out.sort_unstable_by_key(|l| l.pid);
        out
    }
}

/// A fault hook for the crash-safety tests, compiled into debug builds only
/// (never into a release): `ZINIT_TEST_WEDGE=after-freeze` makes an
/// escalation hang between freezing and killing (while the file named by
/// `ZINIT_TEST_WEDGE_WHILE` exists, if set), so a test can kill the server
/// at that moment.
mod test_hooks {
    #[cfg(debug_assertions)]
    pub async fn maybe_wedge(step: &str) {
        if std::env::var("ZINIT_TEST_WEDGE").is_ok_and(|s| s == step) {
            tracing::warn!("test hook: wedging the stop at {step}");
            // With ZINIT_TEST_WEDGE_WHILE=FILE, only while FILE exists.
            match std::env::var_os("ZINIT_TEST_WEDGE_WHILE") {
                Some(file) => {
                    while std::path::Path::new(&file).exists() {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    #[cfg(not(debug_assertions))]
    pub async fn maybe_wedge(_step: &str) {}
}
