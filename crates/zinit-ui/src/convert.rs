//! Protocol messages as the JSON the page reads: snake_case fields,
//! durations in seconds (float), times in milliseconds since the Unix epoch
//! (what JavaScript's `Date` takes).

use serde_json::{Value, json};
use zinit_proto::v1 as pb;
use zinit_proto::v1::shutdown_event::Kind;

/// A duration in seconds.
pub fn seconds(d: Option<&prost_types::Duration>) -> f64 {
    d.map_or(0.0, |d| d.seconds as f64 + d.nanos as f64 / 1e9)
}

/// A timestamp in milliseconds since the epoch, or null.
pub fn millis(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| {
        json!(t.seconds as f64 * 1000.0 + (t.nanos / 1_000_000) as f64)
    })
}

/// A unit state's name, as the CLI prints it.
pub fn state_name(state: i32) -> &'static str {
    match pb::UnitState::try_from(state).unwrap_or(pb::UnitState::Unspecified) {
        pb::UnitState::Unspecified => "unknown",
        pb::UnitState::Stopped => "stopped",
        pb::UnitState::Blocked => "blocked",
        pb::UnitState::Starting => "starting",
        pb::UnitState::Running => "running",
        pb::UnitState::Stopping => "stopping",
        pb::UnitState::Exited => "exited",
        pb::UnitState::Failed => "failed",
        pb::UnitState::Backoff => "backoff",
        pb::UnitState::Invalid => "invalid",
    }
}

/// A stop outcome's name.
pub fn outcome_name(outcome: i32) -> &'static str {
    match pb::StopOutcome::try_from(outcome).unwrap_or(pb::StopOutcome::Unspecified) {
        pb::StopOutcome::Unspecified => "unknown",
        pb::StopOutcome::Graceful => "graceful",
        pb::StopOutcome::Killed => "killed",
        pb::StopOutcome::Incomplete => "incomplete",
        pb::StopOutcome::NothingRunning => "nothing_running",
    }
}

/// How a process ended: `exit 0`, `SIGKILL`, or null.
pub fn exit_text(status: Option<&pb::ExitStatus>) -> Value {
    match status.and_then(|s| s.how.as_ref()) {
        Some(pb::exit_status::How::Code(code)) => json!(format!("exit {code}")),
        Some(pb::exit_status::How::Signal(sig)) => json!(sig),
        None => Value::Null,
    }
}

/// One unit (a row of the units table).
pub fn unit(u: &pb::Unit) -> Value {
    let kind = match pb::UnitKind::try_from(u.kind).unwrap_or(pb::UnitKind::Unspecified) {
        pb::UnitKind::Job => "job",
        _ => "service",
    };
    json!({
        "name": u.name,
        "kind": kind,
        "state": state_name(u.state),
        "since": millis(u.since.as_ref()),
        "reason": u.reason,
        "pid": u.pid,
        "processes_alive": u.processes_alive,
        "restarts": u.restarts,
        "last_exit": exit_text(u.last_exit.as_ref()),
        "command": u.command.join(" "),
        "after": u.after,
        "waiting_for": u.waiting_for,
        "oneshot": u.oneshot,
        "config_errors": u.config_errors,
    })
}

/// Resource use per unit, by name.
pub fn stats(list: &[pb::UnitStats]) -> Value {
    let map: serde_json::Map<String, Value> = list
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                json!({"processes": s.processes, "cpu_percent": s.cpu_percent, "memory_bytes": s.memory_bytes}),
            )
        })
        .collect();
    Value::Object(map)
}

/// The server's description.
pub fn server_info(info: &pb::ServerInfoResponse) -> Value {
    json!({
        "pid": info.pid,
        "version": info.version,
        "start_time": millis(info.start_time.as_ref()),
        "config_dir": info.config_dir,
        "cgroups": info.cgroups,
        "socket": info.socket,
    })
}

/// One output line, or a notice that lines were missed.
pub fn log_line(line: &pb::StreamLogsResponse) -> Value {
    if line.missed > 0 {
        return json!({"missed": line.missed, "by": "server"});
    }
    let stream = match pb::LogStream::try_from(line.stream).unwrap_or(pb::LogStream::Unspecified) {
        pb::LogStream::Stderr => "stderr",
        _ => "stdout",
    };
    json!({
        "seq": line.seq,
        "unit": line.unit,
        "time": millis(line.time.as_ref()),
        "stream": stream,
        "text": line.text,
    })
}

fn leftovers(list: &[pb::Leftover]) -> Value {
    list.iter()
        .map(|l| json!({"pid": l.pid, "name": l.name, "reason": l.reason}))
        .collect()
}

/// A shutdown event: `at` (seconds since the shutdown began), `kind`, and
/// the kind's fields (the same shape as `zinit shutdown --json`).
pub fn shutdown_event(event: &pb::ShutdownEvent) -> Value {
    let secs = |d: &Option<prost_types::Duration>| seconds(d.as_ref());
    let (kind, body) = match &event.kind {
        Some(Kind::Plan(p)) => (
            "plan",
            json!({
                "units": p.units.iter().map(|u| json!({"name": u.name, "waits_for": u.waits_for, "via": u.via, "budget": secs(&u.budget), "signal": u.signal, "mode": u.mode})).collect::<Vec<_>>(),
                "deadline": secs(&p.deadline),
                "sweep": p.sweep.iter().map(|t| json!({"pid": t.pid, "name": t.name, "reason": t.reason})).collect::<Vec<_>>(),
                "dry_run": p.dry_run,
            }),
        ),
        Some(Kind::UnitStopping(u)) => (
            "unit_stopping",
            json!({"unit": u.name, "signal": u.signal, "mode": u.mode, "budget": secs(&u.budget)}),
        ),
        Some(Kind::SignalSent(s)) => (
            "signal_sent",
            json!({"unit": s.unit, "pid": s.pid, "depth": s.depth, "signal": s.signal, "name": s.name}),
        ),
        Some(Kind::UnitStopped(u)) => (
            "unit_stopped",
            json!({"unit": u.name, "duration": secs(&u.duration), "outcome": outcome_name(u.outcome), "exit_status": exit_text(u.exit_status.as_ref()), "processes_exited": u.processes_exited, "processes_killed": u.processes_killed}),
        ),
        Some(Kind::StillWaiting(w)) => (
            "still_waiting",
            json!({"blockers": w.blockers.iter().map(|b| json!({"unit": b.unit, "pid": b.pid, "name": b.name, "waiting": secs(&b.waiting), "budget": secs(&b.budget)})).collect::<Vec<_>>()}),
        ),
        Some(Kind::ProcessSwept(p)) => (
            "process_swept",
            json!({"pid": p.pid, "name": p.name, "reason": p.reason, "signal": p.signal}),
        ),
        Some(Kind::Verification(v)) => (
            "verification",
            json!({"clean": v.clean, "leftovers": leftovers(&v.leftovers)}),
        ),
        Some(Kind::Summary(s)) => (
            "summary",
            json!({"duration": secs(&s.duration), "units_graceful": s.units_graceful, "units_killed": s.units_killed, "processes_graceful": s.processes_graceful, "processes_killed": s.processes_killed, "processes_swept": s.processes_swept, "leftovers": leftovers(&s.leftovers), "deadline_hit": s.deadline_hit, "clean": s.clean}),
        ),
        None => ("unknown", json!({})),
    };
    let mut value = json!({"at": secs(&event.at), "kind": kind});
    if let (Some(map), Value::Object(extra)) = (value.as_object_mut(), body) {
        map.extend(extra);
    }
    value
}

/// What a stop did, for the action's result line.
pub fn stop_result(r: &pb::StopUnitResponse) -> Value {
    json!({
        "unit": r.unit.as_ref().map(unit),
        "outcome": outcome_name(r.outcome),
        "duration": seconds(r.duration.as_ref()),
        "processes_exited": r.processes_exited,
        "processes_killed": r.processes_killed,
        "leftovers": leftovers(&r.leftovers),
        "running_dependents": r.running_dependents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_keeps_its_fields_beside_at_and_kind() {
        let event = pb::ShutdownEvent {
            at: Some(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000,
            }),
            kind: Some(Kind::Summary(pb::ShutdownSummary {
                clean: true,
                units_killed: 2,
                ..Default::default()
            })),
        };
        let json = shutdown_event(&event);
        assert_eq!(json["at"], 1.5);
        assert_eq!(json["kind"], "summary");
        assert_eq!(json["units_killed"], 2);
        assert_eq!(json["clean"], true);
    }

    #[test]
    fn a_missed_notice_says_how_many() {
        let line = pb::StreamLogsResponse {
            missed: 7,
            ..Default::default()
        };
        assert_eq!(log_line(&line)["missed"], 7);
    }
}
