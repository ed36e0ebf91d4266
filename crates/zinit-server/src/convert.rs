//! The one place that maps supervisor types to proto types, and supervisor
//! errors to `tonic::Status`.

use std::time::{Duration, SystemTime};
use tonic::{Code, Status};
use zinit_process::StopOutcome;
use zinit_process::spawn::ExitStatus;
use zinit_proto::v1 as pb;
use zinit_supervisor::logs::{LogLine, Stream};
use zinit_supervisor::state::State;
use zinit_supervisor::stopping::UnitStopReport;
use zinit_supervisor::{SupervisorError, UnitKind, UnitStatus};

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
            zinit_process::Signal::try_from(sig)
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
    let mut response = pb::StopUnitResponse {
        unit: Some(unit(status)),
        outcome: pb::StopOutcome::NothingRunning as i32,
        running_dependents: dependents,
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
