//! The fields of what a unit runs: `exec`, the readiness `test` with its
//! interval and timeout, `oneshot`, the `after` dependencies and the
//! `pid_file` of a program that can only daemonize.

use super::Fields;
use super::checker::{Checker, MAX_DURATION};
use super::types::{DEFAULT_TEST_INTERVAL, DEFAULT_TEST_TIMEOUT};
use super::valid_name;
use std::time::Duration;

/// The smallest interval between readiness tests (a loop never spins).
const MIN_TEST_INTERVAL: Duration = Duration::from_millis(10);

pub(super) struct Commands {
    pub exec: Option<Vec<String>>,
    pub test: Option<Vec<String>>,
    pub test_interval: Duration,
    pub test_timeout: Duration,
    pub oneshot: bool,
    pub after: Vec<String>,
    pub pid_file: Option<std::path::PathBuf>,
}

pub(super) fn parse(c: &mut Checker<'_>, get: &Fields<'_>, name: &str) -> Commands {
    let exec = match get("exec") {
        Some(v) => c.command("exec", v),
        None => {
            c.errors.push(super::ConfigError::field(
                c.file,
                "exec",
                None,
                "missing: every service needs a command",
            ));
            None
        }
    };
    let test = get("test").and_then(|v| c.command("test", v));
    let test_interval = get("test_interval")
        .and_then(|v| c.duration("test_interval", v, (MIN_TEST_INTERVAL, MAX_DURATION)))
        .unwrap_or(DEFAULT_TEST_INTERVAL);
    let test_timeout = get("test_timeout")
        .and_then(|v| c.duration("test_timeout", v, (Duration::ZERO, MAX_DURATION)))
        .unwrap_or(DEFAULT_TEST_TIMEOUT);
    let oneshot = get("oneshot")
        .and_then(|v| c.boolean("oneshot", v))
        .unwrap_or(false);
    let mut after = Vec::new();
    if let Some(v) = get("after") {
        for item in c.list("after", v) {
            if let Some(dep) = c.string("after", item) {
                if !valid_name(&dep) {
                    c.error("after", Some(item), "not a valid service name");
                } else if dep == name {
                    c.error("after", Some(item), "a service cannot start after itself");
                } else if after.contains(&dep) {
                    c.error("after", Some(item), "listed twice");
                } else {
                    after.push(dep);
                }
            }
        }
    }
    let pid_file = get("pid_file")
        .and_then(|v| c.string("pid_file", v).map(|p| (v, p)))
        .and_then(|(v, p)| {
            let path = std::path::PathBuf::from(&p);
            if !path.is_absolute() {
                c.error("pid_file", Some(v), "must be an absolute path");
                None
            } else if oneshot {
                c.error(
                    "pid_file",
                    Some(v),
                    "a oneshot has no daemon to follow (remove oneshot or pid_file)",
                );
                None
            } else {
                Some(path)
            }
        });
    Commands {
        exec,
        test,
        test_interval,
        test_timeout,
        oneshot,
        after,
        pid_file,
    }
}
