//! The per-unit stop, used by `stop`, `restart`, `remove`, reload, job
//! cancel and the shutdown alike: the unit's `stop` command first (at most
//! half of the budget), then its stop signal in its stop mode, escalation to
//! SIGKILL when the budget ends, and a report of what happened. A client
//! may watch a stop on request as it goes (`StopProgress`).

use crate::command::{CommandResult, run_bounded};
use crate::config::ServiceConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zinit_process::stop::{StopEvent, StopMode, StopOutcome, StopReport, StopSink, StopSpec, stop};
use zinit_process::{Members, Signal, Wave};

/// One step of a stop on request, for a client that watches it
/// (`Supervisor::stop_unit_watched`, `Supervisor::remove_watched`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopProgress {
    /// The stop began, with the unit's signal, mode and budget.
    Began {
        /// The stop signal.
        signal: Signal,
        /// The stop mode.
        mode: StopMode,
        /// The budget (the unit's stop timeout).
        budget: Duration,
    },
    /// A signal was sent to one process.
    Signalled {
        /// The process.
        pid: i32,
        /// Its depth below the unit's main process.
        depth: usize,
        /// Its command name.
        name: String,
        /// The signal.
        signal: Signal,
        /// Time since the stop began.
        at: Duration,
    },
    /// Processes still alive (about every second).
    Waiting {
        /// The processes (pid, command name), deepest first.
        remaining: Vec<(i32, String)>,
        /// Time since the stop began.
        at: Duration,
    },
}

impl StopProgress {
    /// The step a watcher sees of a step of the processes' stop, if any
    /// (exits and the escalation show in the result; SIGSTOP, which only
    /// freezes a tree before SIGKILL, is not shown).
    pub(crate) fn of(event: &StopEvent) -> Option<Self> {
        match event {
            StopEvent::Signalled {
                pid,
                depth,
                comm,
                signal,
                at,
            } if *signal != Signal::SIGSTOP => Some(Self::Signalled {
                pid: *pid,
                depth: *depth,
                name: comm.to_string(),
                signal: *signal,
                at: *at,
            }),
            StopEvent::Waiting { remaining, at } => Some(Self::Waiting {
                remaining: remaining.clone(),
                at: *at,
            }),
            _ => None,
        }
    }
}

/// Sends the steps of a watched stop to its watcher as they happen.
pub(crate) struct StopWatcher(pub UnboundedSender<StopProgress>);

impl StopSink for StopWatcher {
    fn event(&self, event: &StopEvent) {
        if let Some(step) = StopProgress::of(event) {
            let _ = self.0.send(step);
        }
    }
}

/// How long to wait after SIGKILL in a single-unit stop.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// How one stop runs: its budget, its wait after SIGKILL, where its
/// progress goes, the token that skips the rest of its grace, and its
/// place in a wave of stops that signal together.
pub(crate) struct StopParams {
    pub budget: Duration,
    pub kill_wait: Duration,
    pub progress: Option<Arc<dyn StopSink>>,
    pub hurry: CancellationToken,
    pub wave: Option<Wave>,
}

impl StopParams {
    /// A stop on request: the unit's own timeout, on its own.
    pub(crate) fn ordinary(config: &ServiceConfig) -> Self {
        Self {
            budget: config.stop_timeout,
            kill_wait: KILL_WAIT,
            progress: None,
            hurry: CancellationToken::new(),
            wave: None,
        }
    }
}

/// What stopping one unit did.
#[derive(Debug, Clone)]
pub struct UnitStopReport {
    /// How it ended.
    pub outcome: StopOutcome,
    /// How long it took in all.
    pub elapsed: Duration,
    /// The budget it had.
    pub budget: Duration,
    /// The `stop` command's result, if the unit has one.
    pub stop_command: Option<CommandResult>,
    /// The signal part.
    pub processes: StopReport,
}

/// Stops a unit's processes within its budget (the caller has already
/// capped it by the unit's own timeout): its `stop` command within half of
/// it, then its signal in its mode. `kill_wait` bounds the wait after
/// SIGKILL. Cancelling `hurry` skips the rest of the graceful budget (a
/// forced shutdown), the `stop` command's included. A unit with a `stop`
/// command leaves its wave at once: its command is its first step.
pub(crate) async fn stop_unit(
    config: &ServiceConfig,
    members: &Members,
    params: StopParams,
) -> std::io::Result<UnitStopReport> {
    let StopParams {
        budget,
        kill_wait,
        progress,
        hurry,
        mut wave,
    } = params;
    let start = Instant::now();
    let stop_command = match &config.stop_command {
        Some(argv) => {
            wave = None;
            Some(run_bounded(config, argv, budget / 2, Some(&hurry)).await)
        }
        None => None,
    };
    let spec = StopSpec {
        signal: config.stop_signal,
        mode: config.stop_mode,
        timeout: budget.saturating_sub(start.elapsed()),
        kill_wait,
        hurry: Some(hurry),
        wave,
        ..StopSpec::default()
    };
    let processes = stop(members, &spec, progress.as_deref()).await?;
    Ok(UnitStopReport {
        outcome: processes.outcome,
        elapsed: start.elapsed(),
        budget,
        stop_command,
        processes,
    })
}
