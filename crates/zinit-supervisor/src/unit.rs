//! What the supervisor knows of one unit (a service or a job), and what it
//! shows of it.

use crate::backoff::Backoff;
use crate::config::ServiceConfig;
use crate::state::State;
use crate::stopping::UnitStopReport;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use zinit_process::spawn::ExitStatus;
use zinit_process::{Cgroup, Members};

/// Whether a unit is a service or a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitKind {
    /// A service from the config directory.
    Service,
    /// A job: one run of an action that is meant to end.
    Job {
        /// The job's number.
        id: u64,
        /// The service file it runs, or `None` for an ad-hoc command.
        from: Option<String>,
    },
}

/// A snapshot of one unit, for `list` and `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitStatus {
    /// The name (`job-N` for jobs).
    pub name: String,
    /// Service or job.
    pub kind: UnitKind,
    /// The state (for an invalid file: `Failed`, with `invalid` set).
    pub state: State,
    /// When it entered the state.
    pub since: SystemTime,
    /// Why it is in the state, for a person.
    pub reason: String,
    /// The main process, while it runs.
    pub pid: Option<i32>,
    /// Whether any of its processes is alive (also after the main exited).
    pub processes_alive: bool,
    /// Restarts in a row so far.
    pub restarts: u32,
    /// How its main process last ended.
    pub last_exit: Option<ExitStatus>,
    /// Its command.
    pub command: Vec<String>,
    /// Units it starts after.
    pub after: Vec<String>,
    /// Dependencies it is waiting for (when blocked).
    pub waiting_for: Vec<String>,
    /// Whether it is a oneshot.
    pub oneshot: bool,
    /// For an invalid service file: every problem in it.
    pub invalid: Vec<String>,
    /// Whether its processes were adopted from a previous server (its main
    /// process's exit status will be unknown).
    pub adopted: bool,
}

/// A running (or lingering) instance: one spawn of the unit's command.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    /// Increases with every spawn of any unit.
    pub id: u64,
    pub pid: i32,
    pub members: Members,
    pub cgroup: Option<Cgroup>,
    pub started: Instant,
    /// Whether processes of the instance are still alive.
    pub alive: bool,
    /// Whether its output pipes have reached end of file (or it has none).
    pub output_closed: bool,
    /// Whether its main process's exit (and status) has been reported.
    pub main_exited: bool,
    /// The FIFOs its output goes to (empty: plain pipes, or none).
    pub streams: Vec<std::path::PathBuf>,
    /// Where it stands with its `pid_file`.
    pub daemon: Daemon,
}

/// A unit with `pid_file` follows the daemon its first process left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Daemon {
    /// Its main process is the one zinit started.
    #[default]
    Started,
    /// That one exited 0; the pid file is being read.
    Reading,
    /// Its main process is the pid read from the file.
    Followed,
}

/// The generation of a unit's pending back-off timers: a timer that fires
/// acts only if the generation it was started in is still current, so
/// [`TimerGeneration::forget_pending`] cancels every pending timer at once.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimerGeneration(u64);

impl TimerGeneration {
    /// Pending timers of this unit will do nothing when they fire.
    pub fn forget_pending(&mut self) {
        self.0 += 1;
    }

    /// The generation for a new timer (which forgets the older ones).
    pub fn next(&mut self) -> Self {
        self.0 += 1;
        *self
    }
}

/// What to do once the unit's running stop has finished.
#[derive(Debug, Clone)]
pub(crate) enum Then {
    /// Nothing: stay stopped.
    Rest,
    /// Start again (restart, or a restart after back-off with leftovers).
    Start,
    /// Start failed (readiness); decide by the restart policy.
    Failure(String),
    /// Forget the unit (and delete its file if `delete_file`).
    Remove { delete_file: bool },
    /// Swap in a changed configuration, then start if wanted.
    Replace(Arc<ServiceConfig>),
}

/// The supervisor's record of one unit.
#[derive(Debug)]
pub(crate) struct Unit {
    pub config: Arc<ServiceConfig>,
    pub kind: UnitKind,
    pub state: State,
    pub since: SystemTime,
    pub reason: String,
    /// Whether the unit should be running (set by start, cleared by stop).
    pub wanted: bool,
    pub instance: Option<Instance>,
    /// The number of the running (or last) stop: increases with each stop,
    /// so a finished stop that is not the current one is ignored.
    pub stop_op: u64,
    /// Cancelled to skip the rest of the running stop's graceful budget.
    pub stop_hurry: CancellationToken,
    /// Pending back-off timers (a running stop keeps its `stop_op`).
    pub timers: TimerGeneration,
    /// A restart is due and waits for the previous run's processes to be
    /// reported gone (at most a short grace, then they are stopped).
    pub awaiting_empty: bool,
    pub then: Then,
    pub backoff: Backoff,
    pub last_exit: Option<ExitStatus>,
    pub waiting_for: Vec<String>,
    /// Its instance was adopted from a previous server.
    pub adopted: bool,
    /// A finished stop held back until the main process's exit status
    /// arrives (its stop number and report), so that the stop's answer
    /// carries the status.
    pub stop_awaiting_exit: Option<(u64, Result<UnitStopReport, String>)>,
}

impl Unit {
    pub fn new(config: Arc<ServiceConfig>, kind: UnitKind) -> Self {
        Self {
            config,
            kind,
            state: State::Stopped,
            since: SystemTime::now(),
            reason: "not started".to_string(),
            wanted: false,
            instance: None,
            stop_op: 0,
            stop_hurry: CancellationToken::new(),
            timers: TimerGeneration::default(),
            awaiting_empty: false,
            then: Then::Rest,
            backoff: Backoff::default(),
            last_exit: None,
            waiting_for: Vec::new(),
            adopted: false,
            stop_awaiting_exit: None,
        }
    }

    /// Whether processes of this unit are alive.
    pub fn alive(&self) -> bool {
        self.instance.as_ref().is_some_and(|i| i.alive)
    }

    pub fn status(&self, name: &str) -> UnitStatus {
        UnitStatus {
            name: name.to_string(),
            kind: self.kind.clone(),
            state: self.state,
            since: self.since,
            reason: self.reason.clone(),
            pid: self.instance.as_ref().filter(|i| i.alive).map(|i| i.pid),
            processes_alive: self.alive(),
            restarts: self.backoff.attempts(),
            last_exit: self.last_exit,
            command: self.config.exec.clone(),
            after: self.config.after.clone(),
            waiting_for: self.waiting_for.clone(),
            oneshot: self.config.oneshot,
            invalid: Vec::new(),
            adopted: self.adopted && self.alive(),
        }
    }

    /// Whether a unit that depends on this one may start.
    pub fn satisfies_dependents(&self) -> bool {
        match self.state {
            // A oneshot satisfies its dependents by finishing, not by running.
            State::Running => !self.config.oneshot,
            State::Exited => self.config.oneshot && self.last_exit.is_none_or(ExitStatus::success),
            _ => false,
        }
    }
}
