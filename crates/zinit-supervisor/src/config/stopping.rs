//! The fields of how a unit stops: `signal.stop` or `stop_signal`,
//! `shutdown_timeout` (seconds) or `stop_timeout_ms`, the `stop` command and
//! `stop_mode`.

use super::Fields;
use super::checker::Checker;
use super::types::{DEFAULT_STOP_TIMEOUT, MAX_STOP_TIMEOUT};
use std::time::Duration;
use zinit_process::Signal;
use zinit_process::stop::StopMode;

pub(super) struct Stopping {
    pub signal: Signal,
    pub timeout: Duration,
    /// Whether the file gave the timeout (else the 10 s default).
    pub timeout_given: bool,
    pub command: Option<Vec<String>>,
    pub mode: StopMode,
    /// Set when a timeout above 30 s was capped.
    pub warning: Option<String>,
}

pub(super) fn parse(c: &mut Checker<'_>, get: &Fields<'_>) -> Stopping {
    let nested = get("signal").and_then(|v| {
        let entries = c.mapping("signal", v, &["stop"]);
        entries
            .into_iter()
            .find(|(k, _)| k == "stop")
            .and_then(|(_, v)| c.signal("signal.stop", v))
    });
    let flat = get("stop_signal").and_then(|v| c.signal("stop_signal", v));
    if get("signal").is_some() && get("stop_signal").is_some() {
        c.error(
            "stop_signal",
            None,
            "give either `signal.stop` or `stop_signal`, not both",
        );
    }
    // Seconds and milliseconds, capped before they become a Duration.
    let seconds = get("shutdown_timeout").and_then(|v| c.number("shutdown_timeout", v));
    let millis = get("stop_timeout_ms")
        .and_then(|v| c.number("stop_timeout_ms", v))
        .map(|ms| ms / 1000.0);
    if seconds.is_some() && millis.is_some() {
        c.error(
            "stop_timeout_ms",
            None,
            "give either `shutdown_timeout` (seconds) or `stop_timeout_ms` (milliseconds), not both",
        );
    }
    let mut warning = None;
    let timeout = match seconds.or(millis) {
        None => DEFAULT_STOP_TIMEOUT,
        Some(secs) if secs > MAX_STOP_TIMEOUT.as_secs_f64() => {
            warning = Some(format!(
                "{}: stop timeout {secs} s is above the 30 s limit; using 30 s",
                c.file.display()
            ));
            MAX_STOP_TIMEOUT
        }
        Some(secs) => Duration::from_secs_f64(secs),
    };
    let command = get("stop").and_then(|v| c.command("stop", v));
    let mode = match get("stop_mode") {
        None => StopMode::Tree,
        Some(v) => match c.string("stop_mode", v).as_deref() {
            Some("tree") => StopMode::Tree,
            Some("group") => StopMode::Group,
            Some("main") => StopMode::Main,
            Some(_) => {
                c.error("stop_mode", Some(v), "expected tree, group or main");
                StopMode::Tree
            }
            None => StopMode::Tree,
        },
    };
    Stopping {
        signal: nested.or(flat).unwrap_or(Signal::SIGTERM),
        timeout,
        timeout_given: seconds.or(millis).is_some(),
        command,
        mode,
        warning,
    }
}
