//! The one place that maps supervisor types to proto types, and errors to
//! `tonic::Status` (the tidy test keeps it so).

use std::time::{Duration, SystemTime};
use tonic::{Code, Status};
use zinit_proto::v1 as pb;
use zinit_supervisor::logs::{LogLine, Stream};
use zinit_supervisor::shutdown::{
    Leftover, MAX_DEADLINE, Plan, ShutdownEvent, ShutdownEventKind, Summary,
};
use zinit_supervisor::state::State;
use zinit_supervisor::stopping::{StopProgress, UnitStopReport};
use zinit_supervisor::{
    ExitStatus, Signal, StopMode, StopOutcome, SupervisorError, UnitKind, UnitStatus,
};

/// A request that is not valid.
pub fn invalid_argument(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

/// A request that does not fit the server's state.
pub fn failed_precondition(message: impl Into<String>) -> Status {
    Status::failed_precondition(message)
}

/// Something that does not exist.
pub fn not_found(message: impl Into<String>) -> Status {
    Status::not_found(message)
}

/// A caller that may not use this listener.
pub fn permission_denied(message: impl Into<String>) -> Status {
    Status::permission_denied(message)
}

/// A per-client resource limit was reached.
pub fn resource_exhausted(message: impl Into<String>) -> Status {
    Status::resource_exhausted(message)
}

/// A caller without the token this listener needs.
pub fn unauthenticated(message: impl Into<String>) -> Status {
    Status::unauthenticated(message)
}

/// A shutdown request's timeout: unset or zero means 30 s; more is refused.
pub fn shutdown_timeout(timeout: Option<prost_types::Duration>) -> Result<Duration, Status> {
    match timeout {
        None => Ok(MAX_DEADLINE),
        Some(t) if t.seconds == 0 && t.nanos == 0 => Ok(MAX_DEADLINE),
        Some(t) if t.seconds < 0 || t.nanos < 0 => {
            Err(invalid_argument("the shutdown timeout cannot be negative"))
        }
        Some(t) => {
            let d = Duration::new(t.seconds as u64, t.nanos as u32);
            if d > MAX_DEADLINE {
                return Err(invalid_argument(format!(
                    "a shutdown takes at most 30 s; a timeout of {} is refused (only lower ones are allowed)",
                    humantime::format_duration(d)
                )));
            }
            Ok(d)
        }
    }
}

/// A supervisor error as a gRPC status with a message a person can act on.
pub fn status(error: SupervisorError) -> Status {
    let code = match &error {
        SupervisorError::NotFound(_) => Code::NotFound,
        SupervisorError::AlreadyExists(_) => Code::AlreadyExists,
        SupervisorError::InvalidConfig(_) | SupervisorError::InvalidArgument(_) => {
            Code::InvalidArgument
        }
        SupervisorError::FailedPrecondition(_) | SupervisorError::ShuttingDown => {
            Code::FailedPrecondition
        }
        SupervisorError::Io(_) => Code::Internal,
        SupervisorError::Gone => Code::Unavailable,
    };
    Status::new(code, error.to_string())
}

pub fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn exit_status(status: ExitStatus) -> pb::ExitStatus {
    let how = match status {
        ExitStatus::Exited(code) => pb::exit_status::How::Code(code),
        ExitStatus::Signaled(sig) => pb::exit_status::How::Signal(
            Signal::try_from(sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {sig}")),
        ),
    };
    pb::ExitStatus { how: Some(how) }
}

pub fn state(state: State) -> pb::UnitState {
    match state {
        State::Stopped => pb::UnitState::Stopped,
        State::Blocked => pb::UnitState::Blocked,
        State::Starting => pb::UnitState::Starting,
        State::Running => pb::UnitState::Running,
        State::Stopping => pb::UnitState::Stopping,
        State::Exited => pb::UnitState::Exited,
        State::Failed => pb::UnitState::Failed,
        State::BackOff => pb::UnitState::Backoff,
    }
}

pub fn unit(status: UnitStatus) -> pb::Unit {
    let invalid = !status.invalid.is_empty();
    let (kind, job_source) = match &status.kind {
        UnitKind::Service => (pb::UnitKind::Service, String::new()),
        UnitKind::Job { from, .. } => (pb::UnitKind::Job, from.clone().unwrap_or_default()),
    };
    pb::Unit {
        name: status.name,
        kind: kind as i32,
        state: if invalid {
            pb::UnitState::Invalid
        } else {
            state(status.state)
        } as i32,
        since: Some(timestamp(status.since)),
        reason: status.reason,
        pid: status.pid.unwrap_or(0) as u32,
        processes_alive: status.processes_alive,
        restarts: status.restarts,
        last_exit: status.last_exit.map(exit_status),
        command: status.command,
        after: status.after,
        waiting_for: status.waiting_for,
        oneshot: status.oneshot,
        config_errors: status.invalid,
        job_source,
        adopted: status.adopted,
    }
}

pub fn outcome(outcome: StopOutcome) -> pb::StopOutcome {
    match outcome {
        StopOutcome::Graceful => pb::StopOutcome::Graceful,
        StopOutcome::Killed => pb::StopOutcome::Killed,
        StopOutcome::Incomplete => pb::StopOutcome::Incomplete,
    }
}

pub fn stop_response(
    status: UnitStatus,
    report: Option<UnitStopReport>,
    dependents: Vec<String>,
) -> pb::StopUnitResponse {
    pb::StopUnitResponse {
        unit: Some(unit(status)),
        running_dependents: dependents,
        ..stop_report(report)
    }
}

/// How a stop went (no unit, no dependents).
fn stop_report(report: Option<UnitStopReport>) -> pb::StopUnitResponse {
    let mut response = pb::StopUnitResponse {
        outcome: pb::StopOutcome::NothingRunning as i32,
        ..Default::default()
    };
    if let Some(report) = report {
        let (exited, killed) = report.processes.exit_counts();
        response.outcome = outcome(report.outcome) as i32;
        response.duration = Some(duration(report.elapsed));
        response.processes_exited = exited as u32;
        response.processes_killed = killed as u32;
        response.leftovers = report
            .processes
            .leftovers
            .iter()
            .map(|l| pb::Leftover {
                pid: l.pid as u32,
                name: l.comm.clone(),
                reason: l.reason.clone(),
            })
            .collect();
    }
    response
}

/// What a remove answers: how the stop before the removal went.
pub fn remove_response(report: Option<UnitStopReport>) -> pb::RemoveServiceResponse {
    pb::RemoveServiceResponse {
        stop: report.map(|report| stop_report(Some(report))),
    }
}

/// A step of a watched stop in the protocol; `budget` keeps the budget
/// of the stop's start for the blockers of later steps.
pub fn stop_progress(
    unit: &str,
    progress: StopProgress,
    budget: &mut Duration,
) -> pb::StopProgress {
    use pb::stop_progress::Kind;
    let (at, kind) = match progress {
        StopProgress::Began {
            signal,
            mode,
            budget: b,
        } => {
            *budget = b;
            (
                Duration::ZERO,
                Kind::UnitStopping(pb::UnitStopping {
                    name: unit.to_string(),
                    signal: signal.as_str().to_string(),
                    mode: mode_name(mode).to_string(),
                    budget: Some(duration(b)),
                }),
            )
        }
        StopProgress::Signalled {
            pid,
            depth,
            name,
            signal,
            at,
        } => (
            at,
            Kind::SignalSent(pb::SignalSent {
                unit: unit.to_string(),
                pid: pid as u32,
                depth: depth as u32,
                signal: signal.as_str().to_string(),
                name,
            }),
        ),
        StopProgress::Waiting { remaining, at } => (
            at,
            Kind::StillWaiting(pb::StillWaiting {
                blockers: remaining
                    .into_iter()
                    .map(|(pid, name)| pb::Blocker {
                        unit: unit.to_string(),
                        pid: pid as u32,
                        name,
                        waiting: Some(duration(at)),
                        budget: Some(duration(*budget)),
                    })
                    .collect(),
            }),
        ),
    };
    pb::StopProgress {
        at: Some(duration(at)),
        kind: Some(kind),
    }
}

pub fn log_line(line: &LogLine) -> pb::StreamLogsResponse {
    pb::StreamLogsResponse {
        unit: line.unit.clone(),
        time: Some(timestamp(line.time)),
        stream: match line.stream {
            Stream::Stdout => pb::LogStream::Stdout,
            Stream::Stderr => pb::LogStream::Stderr,
        } as i32,
        text: line.text.clone(),
        seq: line.seq,
        missed: 0,
    }
}

pub fn event(event: zinit_supervisor::events::Event) -> pb::StreamEventsResponse {
    use pb::stream_events_response::Kind;
    use zinit_supervisor::events::EventKind;
    let kind = match event.kind {
        EventKind::State { from, to, reason } => Kind::StateChanged(pb::StateChanged {
            from: state(from) as i32,
            to: state(to) as i32,
            reason,
        }),
        EventKind::Restarting { attempt, delay } => Kind::Restarting(pb::Restarting {
            attempt,
            delay: Some(duration(delay)),
        }),
        EventKind::JobFinished { status } => Kind::JobFinished(pb::JobFinished {
            status: status.map(exit_status),
        }),
        EventKind::Warning { message } => Kind::Warning(message),
    };
    pb::StreamEventsResponse {
        time: Some(timestamp(event.time)),
        unit: event.unit,
        kind: Some(kind),
    }
}

fn mode_name(mode: StopMode) -> &'static str {
    match mode {
        StopMode::Tree => "tree",
        StopMode::Group => "group",
        StopMode::Main => "main",
    }
}

fn leftovers(list: Vec<Leftover>) -> Vec<pb::Leftover> {
    list.into_iter()
        .map(|l| pb::Leftover {
            pid: l.pid as u32,
            name: l.name,
            reason: l.reason,
        })
        .collect()
}

fn plan(plan: Plan) -> pb::ShutdownPlan {
    pb::ShutdownPlan {
        units: plan
            .units
            .into_iter()
            .map(|u| pb::PlannedUnit {
                name: u.name,
                waits_for: u.waits_for,
                via: u
                    .via
                    .into_iter()
                    .map(|(dependent, between)| (dependent, between.join(", ")))
                    .collect(),
                budget: Some(duration(u.budget)),
                signal: u.signal.as_str().to_string(),
                mode: mode_name(u.mode).to_string(),
            })
            .collect(),
        deadline: Some(duration(plan.deadline)),
        sweep: plan
            .sweep
            .into_iter()
            .map(|t| pb::SweepTarget {
                pid: t.id.pid as u32,
                name: t.name,
                reason: t.reason.to_string(),
            })
            .collect(),
        dry_run: plan.dry_run,
    }
}

/// A dry run's plan as the only event of its stream.
pub fn plan_event(dry_run: Plan) -> pb::ShutdownEvent {
    pb::ShutdownEvent {
        at: Some(duration(Duration::ZERO)),
        kind: Some(pb::shutdown_event::Kind::Plan(plan(dry_run))),
    }
}

fn summary(summary: Summary) -> pb::ShutdownSummary {
    pb::ShutdownSummary {
        duration: Some(duration(summary.duration)),
        units_graceful: summary.units_graceful,
        units_killed: summary.units_killed,
        processes_graceful: summary.processes_graceful,
        processes_killed: summary.processes_killed,
        processes_swept: summary.processes_swept,
        clean: summary.clean(),
        leftovers: leftovers(summary.leftovers),
        deadline_hit: summary.deadline_hit,
        unverified: summary.unverified.unwrap_or_default(),
    }
}

/// A shutdown event in the protocol.
pub fn shutdown_event(event: ShutdownEvent) -> pb::ShutdownEvent {
    use pb::shutdown_event::Kind;
    let kind = match event.kind {
        ShutdownEventKind::Plan(p) => Kind::Plan(plan(p)),
        ShutdownEventKind::UnitStopping {
            unit,
            signal,
            mode,
            budget,
        } => Kind::UnitStopping(pb::UnitStopping {
            name: unit,
            signal: signal.as_str().to_string(),
            mode: mode_name(mode).to_string(),
            budget: Some(duration(budget)),
        }),
        ShutdownEventKind::SignalSent {
            unit,
            pid,
            depth,
            signal,
            name,
        } => Kind::SignalSent(pb::SignalSent {
            unit: unit.unwrap_or_default(),
            pid: pid as u32,
            depth: depth as u32,
            signal: signal.as_str().to_string(),
            name,
        }),
        ShutdownEventKind::UnitStopped {
            unit,
            took,
            outcome: how,
            exit,
            exited,
            killed,
        } => Kind::UnitStopped(pb::UnitStopped {
            name: unit,
            duration: Some(duration(took)),
            outcome: how.map_or(pb::StopOutcome::Incomplete, outcome) as i32,
            exit_status: exit.map(exit_status),
            processes_exited: exited,
            processes_killed: killed,
        }),
        ShutdownEventKind::StillWaiting(blockers) => Kind::StillWaiting(pb::StillWaiting {
            blockers: blockers
                .into_iter()
                .map(|b| pb::Blocker {
                    unit: b.unit,
                    pid: b.pid as u32,
                    name: b.name,
                    waiting: Some(duration(b.waiting)),
                    budget: Some(duration(b.budget)),
                })
                .collect(),
        }),
        ShutdownEventKind::ProcessSwept {
            pid,
            name,
            reason,
            signal,
        } => Kind::ProcessSwept(pb::ProcessSwept {
            pid: pid as u32,
            name,
            reason: reason.to_string(),
            signal: signal.as_str().to_string(),
        }),
        ShutdownEventKind::Verification(v) => Kind::Verification(pb::Verification {
            clean: v.leftovers.is_empty(),
            leftovers: leftovers(v.leftovers),
            unverified: v.unverified.unwrap_or_default(),
        }),
        ShutdownEventKind::Summary(s) => Kind::Summary(summary(s)),
    };
    pb::ShutdownEvent {
        at: Some(duration(event.at)),
        kind: Some(kind),
    }
}

/// What the server took over from a previous one.
pub fn takeover(report: &zinit_supervisor::takeover::Takeover) -> pb::Takeover {
    pb::Takeover {
        from_pid: report.from_pid.unwrap_or(0) as u32,
        adopted: report.adopted.clone(),
        stopped: report.stopped.clone(),
        thawed: report.thawed as u32,
        finishing_shutdown: report.finishing_shutdown,
        notes: report.notes.clone(),
    }
}

pub fn reload(summary: zinit_supervisor::ReloadSummary) -> pb::ReloadResponse {
    pb::ReloadResponse {
        added: summary.added,
        removed: summary.removed,
        changed: summary.changed,
        unchanged: summary.unchanged,
        warnings: summary.warnings,
        updated: summary.updated,
        units: summary
            .units
            .into_iter()
            .map(|u| pb::UnitReload {
                name: u.name,
                action: u.action,
                fields: u
                    .fields
                    .into_iter()
                    .map(|f| pb::FieldChange {
                        field: f.field.to_string(),
                        restarts: f.restarts,
                        old: f.old,
                        new: f.new,
                    })
                    .collect(),
            })
            .collect(),
        dry_run: summary.dry_run,
    }
}
