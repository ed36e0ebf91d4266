//! Rendering: human tables, and JSON with snake_case fields, durations in
//! seconds (float) and RFC 3339 timestamps. Everything goes to stdout
//! through `write_line`: a reader that went away (`zinit logs X | head -1`)
//! ends the program quietly with 0, as it ends `cat`.

use serde_json::{Value, json};
use std::io::{ErrorKind, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zinit_proto::v1 as pb;

/// Ends the program after a failed write to stdout: quietly with 0 when the
/// reader has gone (a closed pipe), else with an error.
fn write_failed(error: &std::io::Error) -> ! {
    if error.kind() == ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("zinit: cannot write to stdout: {error}");
    std::process::exit(1);
}

/// Writes one line to stdout (use `outln!`).
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let written = {
        let mut out = std::io::stdout().lock();
        out.write_fmt(args)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
    };
    if let Err(e) = written {
        write_failed(&e);
    }
}

/// Writes bytes to stdout as they are.
pub fn write_raw(bytes: &[u8]) {
    let written = {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes).and_then(|()| out.flush())
    };
    if let Err(e) = written {
        write_failed(&e);
    }
}

/// Writes one line to stderr, ignoring a closed stderr.
pub fn write_err_line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// `1 process`, `2 processes`.
pub fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn seconds(d: Option<&prost_types::Duration>) -> f64 {
    d.map_or(0.0, |d| d.seconds as f64 + d.nanos as f64 / 1e9)
}

pub fn time(t: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    let t = t?;
    Some(UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32))
}

pub fn rfc3339(t: Option<&prost_types::Timestamp>) -> Value {
    time(t).map_or(Value::Null, |t| {
        Value::String(humantime::format_rfc3339_millis(t).to_string())
    })
}

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

pub fn outcome_name(outcome: i32) -> &'static str {
    match pb::StopOutcome::try_from(outcome).unwrap_or(pb::StopOutcome::Unspecified) {
        pb::StopOutcome::Unspecified => "unknown",
        pb::StopOutcome::Graceful => "graceful",
        pb::StopOutcome::Killed => "killed",
        pb::StopOutcome::Incomplete => "incomplete",
        pb::StopOutcome::NothingRunning => "nothing_running",
    }
}

pub fn exit_text(status: Option<&pb::ExitStatus>) -> String {
    match status.and_then(|s| s.how.as_ref()) {
        Some(pb::exit_status::How::Code(code)) => format!("exit {code}"),
        Some(pb::exit_status::How::Signal(sig)) => sig.clone(),
        None => "-".to_string(),
    }
}

pub fn exit_json(status: Option<&pb::ExitStatus>) -> Value {
    match status.and_then(|s| s.how.as_ref()) {
        Some(pb::exit_status::How::Code(code)) => json!({ "code": code }),
        Some(pb::exit_status::How::Signal(sig)) => json!({ "signal": sig }),
        None => Value::Null,
    }
}

pub fn unit_json(unit: &pb::Unit) -> Value {
    json!({
        "name": unit.name,
        "kind": if unit.kind == pb::UnitKind::Job as i32 { "job" } else { "service" },
        "state": state_name(unit.state),
        "since": rfc3339(unit.since.as_ref()),
        "reason": unit.reason,
        "pid": (unit.pid != 0).then_some(unit.pid),
        "processes_alive": unit.processes_alive,
        "restarts": unit.restarts,
        "last_exit": exit_json(unit.last_exit.as_ref()),
        "command": unit.command,
        "after": unit.after,
        "waiting_for": unit.waiting_for,
        "oneshot": unit.oneshot,
        "config_errors": unit.config_errors,
        "job_source": (!unit.job_source.is_empty()).then_some(&unit.job_source),
        "adopted": unit.adopted,
    })
}

pub fn print_json(value: &Value) {
    outln!("{value}");
}

fn ago(t: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = time(t) else { return "-".into() };
    let d = SystemTime::now().duration_since(t).unwrap_or_default();
    let secs = d.as_secs();
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{}s", secs / 60, secs % 60),
        3600..=86399 => format!("{}h{}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d{}h", secs / 86400, (secs % 86400) / 3600),
    }
}

/// A table of units: name, state, pid, since, restarts, reason.
pub fn unit_table(units: &[pb::Unit]) {
    let width = units.iter().map(|u| u.name.len()).max().unwrap_or(4).max(4);
    outln!(
        "{:<width$}  {:<9} {:>7} {:>7} {:>8}  REASON",
        "NAME",
        "STATE",
        "PID",
        "SINCE",
        "RESTARTS"
    );
    for unit in units {
        let pid = if unit.pid == 0 {
            "-".to_string()
        } else {
            unit.pid.to_string()
        };
        let reason = if unit.config_errors.is_empty() {
            unit.reason.clone()
        } else {
            unit.config_errors.first().cloned().unwrap_or_default()
        };
        outln!(
            "{:<width$}  {:<9} {:>7} {:>7} {:>8}  {}",
            unit.name,
            state_name(unit.state),
            pid,
            ago(unit.since.as_ref()),
            unit.restarts,
            reason
        );
    }
}

/// One unit in detail.
pub fn unit_detail(unit: &pb::Unit) {
    let kind = if unit.kind == pb::UnitKind::Job as i32 {
        "job"
    } else {
        "service"
    };
    outln!("{}: {kind}, {}", unit.name, state_name(unit.state));
    outln!("  reason:    {}", unit.reason);
    outln!("  since:     {} ago", ago(unit.since.as_ref()));
    if unit.pid != 0 {
        outln!("  pid:       {}", unit.pid);
    }
    outln!(
        "  processes: {}",
        if unit.processes_alive {
            "alive"
        } else {
            "none"
        }
    );
    outln!("  last exit: {}", exit_text(unit.last_exit.as_ref()));
    outln!("  restarts:  {}", unit.restarts);
    if !unit.command.is_empty() {
        outln!("  command:   {}", unit.command.join(" "));
    }
    if !unit.after.is_empty() {
        outln!("  after:     {}", unit.after.join(", "));
    }
    if !unit.waiting_for.is_empty() {
        outln!("  waiting:   {}", unit.waiting_for.join(", "));
    }
    if unit.oneshot {
        outln!("  oneshot:   yes");
    }
    for error in &unit.config_errors {
        outln!("  error:     {error}");
    }
}

/// The line after a start or restart: `web: running (pid 42)`, or the
/// state and its reason.
pub fn started_line(unit: &pb::Unit) -> String {
    let state = state_name(unit.state);
    let live =
        unit.state == pb::UnitState::Running as i32 || unit.state == pb::UnitState::Starting as i32;
    if live && unit.pid != 0 {
        format!("{}: {state} (pid {})", unit.name, unit.pid)
    } else if unit.reason.is_empty() {
        format!("{}: {state}", unit.name)
    } else {
        format!("{}: {state}: {}", unit.name, unit.reason)
    }
}

/// A list of units under `key`, as JSON or as a table.
pub fn print_units(key: &str, units: &[pb::Unit], json: bool) {
    if json {
        print_json(&json!({ key: units.iter().map(unit_json).collect::<Vec<_>>() }));
    } else {
        unit_table(units);
    }
}

/// One unit, as JSON or in detail.
pub fn print_unit(unit: &pb::Unit, json: bool) {
    if json {
        print_json(&unit_json(unit));
    } else {
        unit_detail(unit);
    }
}
