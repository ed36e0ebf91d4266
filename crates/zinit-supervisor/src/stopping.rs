//! The per-unit stop, used by `stop`, `restart`, `remove`, reload, job
//! cancel and the shutdown alike: the unit's `stop` command first (at most
//! half of the budget), then its stop signal in its stop mode, escalation to
//! SIGKILL when the budget ends, and a report of what happened. A client
//! may watch a stop on request as it goes (`StopProgress`).

use crate::command::{CommandResult, run_bounded};
use crate::config::ServiceConfig;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zinit_process::stop::{StopEvent, StopMode, StopOutcome, StopReport, StopSink, StopSpec, stop};
use zinit_process::{Members, Signal};

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

/// Stops a unit's processes within `budget` (the caller has already capped
/// it by the unit's own timeout): its `stop` command within half of it,
/// then its signal in its mode. `kill_wait` bounds the wait after SIGKILL.
/// Cancelling `hurry` skips the rest of the graceful budget (a forced
/// shutdown), the `stop` command's included.
pub async fn stop_unit(
    config: &ServiceConfig,
    members: &Members,
    budget: Duration,
    kill_wait: Duration,
    progress: Option<&dyn StopSink>,
    hurry: Option<CancellationToken>,
) -> std::io::Result<UnitStopReport> {
    let start = Instant::now();
    let stop_command = match &config.stop_command {
        Some(argv) => Some(run_bounded(config, argv, budget / 2, hurry.as_ref()).await),
        None => None,
    };
    let spec = StopSpec {
        signal: config.stop_signal,
        mode: config.stop_mode,
        timeout: budget.saturating_sub(start.elapsed()),
        kill_wait,
        hurry,
        ..StopSpec::default()
    };
    let processes = stop(members, &spec, progress).await?;
    Ok(UnitStopReport {
        outcome: processes.outcome,
        elapsed: start.elapsed(),
        budget,
        stop_command,
        processes,
    })
}
