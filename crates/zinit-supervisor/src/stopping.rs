//! The per-unit stop, used by `stop`, `restart`, `remove`, reload, job
//! cancel and the shutdown alike: the unit's `stop` command first (at most
//! half of the budget), then its stop signal in its stop mode, escalation to
//! SIGKILL when the budget ends, and a report of what happened.

use crate::config::ServiceConfig;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use zinit_process::spawn::{ExitStatus, Output};
use zinit_process::stop::{StopEvent, StopMode, StopOutcome, StopReport, StopSpec, stop};
use zinit_process::{Command, Members};

/// How the `stop` command went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopCommandResult {
    /// It exited (with this status) within its half of the budget.
    Exited(ExitStatus),
    /// It was still running at half of the budget and was killed.
    TimedOut,
    /// It could not be started.
    Failed(String),
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
    pub stop_command: Option<StopCommandResult>,
    /// The signal part.
    pub processes: StopReport,
}

/// Spawns a command with the unit's environment, directory and user.
pub(crate) fn command_for(config: &ServiceConfig, argv: &[String]) -> Command {
    let mut command = Command::new(&argv[0]).args(&argv[1..]);
    for (key, value) in &config.env {
        command = command.env(key, value);
    }
    if let Some(dir) = &config.dir {
        command = command.current_dir(dir);
    }
    if let Some(run_as) = &config.run_as {
        command = command.user(run_as.uid, run_as.gid, run_as.groups.clone());
    }
    command
}

/// Runs `argv` (outside the unit's cgroup) and waits at most `bound`; on
/// timeout its whole group is killed.
pub(crate) async fn run_bounded(
    config: &ServiceConfig,
    argv: &[String],
    bound: Duration,
) -> StopCommandResult {
    let spawned = command_for(config, argv)
        .stdout(Output::Null)
        .stderr(Output::Null)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return StopCommandResult::Failed(format!("{}: {e}", argv[0])),
    };
    match tokio::time::timeout(bound, child.wait()).await {
        Ok(Ok(status)) => StopCommandResult::Exited(status),
        Ok(Err(e)) => StopCommandResult::Failed(e.to_string()),
        Err(_) => {
            let members = Members::of_child(&child);
            let spec = StopSpec {
                timeout: Duration::ZERO,
                mode: StopMode::Group,
                kill_wait: Duration::from_millis(500),
                ..StopSpec::default()
            };
            let _ = stop(&members, &spec, None).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
            StopCommandResult::TimedOut
        }
    }
}

/// Stops a unit's processes within `budget` (the caller has already capped
/// it by the unit's own timeout). `kill_wait` bounds the wait after SIGKILL.
pub async fn stop_unit(
    config: &ServiceConfig,
    members: &Members,
    budget: Duration,
    kill_wait: Duration,
    progress: Option<&UnboundedSender<StopEvent>>,
) -> std::io::Result<UnitStopReport> {
    stop_unit_with(config, members, budget, kill_wait, progress, None).await
}

/// As [`stop_unit`]; when `hurry` becomes true the rest of the graceful
/// budget is skipped (a forced shutdown).
pub async fn stop_unit_with(
    config: &ServiceConfig,
    members: &Members,
    budget: Duration,
    kill_wait: Duration,
    progress: Option<&UnboundedSender<StopEvent>>,
    hurry: Option<tokio::sync::watch::Receiver<bool>>,
) -> std::io::Result<UnitStopReport> {
    let start = Instant::now();
    let stop_command = match &config.stop_command {
        Some(argv) => Some(run_bounded(config, argv, budget / 2).await),
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
