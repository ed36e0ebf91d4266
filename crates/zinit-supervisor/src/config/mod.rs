//! Service files: one YAML file per service, the file stem is its name.
//!
//! Files are parsed into a YAML value and then checked field by field, so
//! that every problem names the file, the field, the value and the line, and
//! all problems of a file are reported at once. The original zinit fields
//! (`exec`, `test`, `oneshot`, `after`, `signal.stop`, `shutdown_timeout`,
//! `log`, `env`, `dir`) keep working.

mod error;
mod load;

pub use error::{ConfigError, ConfigErrors};
pub use load::{ConfigSet, load_dir, parse_file};

use nix::sys::resource::Resource;
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zinit_process::limits::{Limit, UNLIMITED};
use zinit_process::signal::parse_signal;
use zinit_process::stop::StopMode;
use zinit_process::{Port, ProcessFilter, Signal};

/// The most a stop may take; longer timeouts are capped (with a warning).
pub const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The stop timeout when none is given (as in the original zinit).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a unit's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    /// Kept in a bounded in-memory ring, readable with `zinit logs`.
    Ring,
    /// Written to the server's stdout, prefixed with the unit name (and kept in the ring).
    Stdout,
    /// Discarded.
    Null,
}

/// A log file with size-based rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// The file (absolute).
    pub path: PathBuf,
    /// Rotate when the file reaches this many bytes.
    pub max_size: u64,
    /// How many rotated files to keep (`path.1` .. `path.N`).
    pub keep: u32,
}

/// How a unit's output is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The mode.
    pub mode: LogMode,
    /// An optional file, written besides the mode.
    pub file: Option<LogFile>,
}

/// When a unit is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// After every exit.
    Always,
    /// After a non-zero exit or a death by signal.
    OnFailure,
    /// Never.
    Never,
}

/// The restart policy with its exponential back-off.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// When to restart.
    pub mode: RestartMode,
    /// The first delay.
    pub delay: Duration,
    /// Each further delay is the previous one times this.
    pub factor: f64,
    /// The longest delay.
    pub max_delay: Duration,
    /// A unit that ran this long without exiting starts again from `delay`.
    pub reset_after: Duration,
    /// After this many restarts in a row the unit is failed (`None`: no limit).
    pub max_restarts: Option<u32>,
}

impl RestartPolicy {
    fn default_for(oneshot: bool) -> Self {
        Self {
            mode: if oneshot {
                RestartMode::Never
            } else {
                RestartMode::Always
            },
            delay: Duration::from_millis(500),
            factor: 2.0,
            max_delay: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
            max_restarts: None,
        }
    }
}

/// The user a unit runs as, resolved when the file is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user name as written.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The primary gid (the user's, or the `group` field's).
    pub gid: u32,
    /// Supplementary groups of the user.
    pub groups: Vec<u32>,
    /// The user's home directory (from the password database).
    pub home: PathBuf,
    /// The user's login shell (from the password database).
    pub shell: PathBuf,
}

/// A validated service file.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The name (the file stem).
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// The file's text, to tell changed files from unchanged ones on reload.
    pub source: String,
    /// The command and its arguments.
    pub exec: Vec<String>,
    /// The readiness test command.
    pub test: Option<Vec<String>>,
    /// How often the test is retried.
    pub test_interval: Duration,
    /// How long the test may keep failing before the start fails.
    pub test_timeout: Duration,
    /// A oneshot runs once and is never restarted by default.
    pub oneshot: bool,
    /// Units this one starts after (and stops before).
    pub after: Vec<String>,
    /// The stop signal.
    pub stop_signal: Signal,
    /// The stop timeout (at most 30 s).
    pub stop_timeout: Duration,
    /// A command run first when stopping, within half of the budget.
    pub stop_command: Option<Vec<String>>,
    /// Which processes get the stop signal, in which order.
    pub stop_mode: StopMode,
    /// Output handling.
    pub log: LogConfig,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub dir: Option<PathBuf>,
    /// Ports whose holders the shutdown's final sweep kills.
    pub ports: Vec<Port>,
    /// Filters whose matches the shutdown's final sweep kills.
    pub process_filters: Vec<ProcessFilter>,
    /// The restart policy.
    pub restart: RestartPolicy,
    /// The user to run as.
    pub run_as: Option<RunAs>,
    /// Resource limits its commands start with (others: as the server was given).
    pub limits: Vec<Limit>,
    /// Things worth a warning that are not errors (a capped timeout).
    pub warnings: Vec<String>,
}

/// Whether `name` may be a service name: letters, digits, `.`, `_`, `-`,
/// `@`, at most 128 characters, not starting with a dot.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// Whether `name` has the form of a job's name (`job-` and a number):
/// services may not take it, so jobs and services never share a name.
pub fn is_job_name(name: &str) -> bool {
    name.strip_prefix("job-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The fields a service file may have.
const FIELDS: &[&str] = &[
    "exec",
    "test",
    "test_interval",
    "test_timeout",
    "oneshot",
    "after",
    "signal",
    "stop_signal",
    "shutdown_timeout",
    "stop_timeout_ms",
    "stop",
    "stop_mode",
    "log",
    "env",
    "dir",
    "ports",
    "process_filters",
    "restart",
    "user",
    "group",
    "limits",
];

/// Checks one field after another, collecting every error.
struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

/// A scalar as written (strings unquoted), for messages.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".to_string(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|_| format!("{other:?}")),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

impl<'a> Checker<'a> {
    /// The line where `field` (a top-level key, or `parent.child`) is written.
    fn line_of(&self, field: &str) -> Option<usize> {
        let key = field.rsplit('.').next().unwrap_or(field);
        let top_level = !field.contains('.');
        self.text
            .lines()
            .position(|line| {
                let trimmed = line.trim_start();
                let indented = trimmed.len() != line.len();
                (top_level != indented || !top_level)
                    && (trimmed.starts_with(&format!("{key}:"))
                        || trimmed.starts_with(&format!("\"{key}\":"))
                        || trimmed.starts_with(&format!("'{key}':")))
            })
            .map(|i| i + 1)
    }

    fn error(&mut self, field: &str, value: Option<&Value>, message: impl Into<String>) {
        let line = self.line_of(field);
        self.errors
            .push(ConfigError::field(self.file, field, value.map(show), message).at_line(line));
    }

    fn string(&mut self, field: &str, value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            other => {
                self.error(
                    field,
                    Some(other),
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn command(&mut self, field: &str, value: &Value) -> Option<Vec<String>> {
        let text = self.string(field, value)?;
        match shlex::split(&text) {
            Some(words) if !words.is_empty() => Some(words),
            Some(_) => {
                self.error(field, Some(value), "the command is empty");
                None
            }
            None => {
                self.error(
                    field,
                    Some(value),
                    "unbalanced quotes or a trailing backslash",
                );
                None
            }
        }
    }

    fn boolean(&mut self, field: &str, value: &Value) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            other => {
                self.error(
                    field,
                    Some(other),
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn signal(&mut self, field: &str, value: &Value) -> Option<Signal> {
        let text = self.string(field, value)?;
        match parse_signal(&text) {
            Ok(Signal::SIGKILL | Signal::SIGSTOP) => {
                self.error(
                    field,
                    Some(value),
                    "SIGKILL and SIGSTOP cannot be a graceful stop signal",
                );
                None
            }
            Ok(sig) => Some(sig),
            Err(e) => {
                self.error(field, Some(value), e.to_string());
                None
            }
        }
    }

    /// A non-negative number of `unit`s (seconds or milliseconds).
    fn number(&mut self, field: &str, value: &Value) -> Option<f64> {
        match value.as_f64() {
            Some(n) if n.is_finite() && n >= 0.0 => Some(n),
            _ => {
                self.error(field, Some(value), "expected a non-negative number");
                None
            }
        }
    }

    /// `500ms`, `10s`, `1m 30s`, or a bare number of seconds.
    fn duration(&mut self, field: &str, value: &Value) -> Option<Duration> {
        if let Some(n) = value.as_f64()
            && n.is_finite()
            && n >= 0.0
        {
            return Some(Duration::from_secs_f64(n));
        }
        if let Value::String(s) = value
            && let Ok(d) = humantime::parse_duration(s.trim())
        {
            return Some(d);
        }
        self.error(
            field,
            Some(value),
            "expected a duration such as 500ms, 10s or 1m, or a number of seconds",
        );
        None
    }

    fn list<'v>(&mut self, field: &str, value: &'v Value) -> &'v [Value] {
        match value {
            Value::Sequence(items) => items,
            Value::Null => &[],
            other => {
                self.error(
                    field,
                    Some(other),
                    format!("expected a list, found {}", kind(other)),
                );
                &[]
            }
        }
    }

    fn mapping<'v>(
        &mut self,
        field: &str,
        value: &'v Value,
        allowed: &[&str],
    ) -> Vec<(String, &'v Value)> {
        let Value::Mapping(map) = value else {
            self.error(
                field,
                Some(value),
                format!("expected a mapping, found {}", kind(value)),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, item) in map {
            let Some(key) = key.as_str() else {
                self.error(field, Some(key), "keys must be strings");
                continue;
            };
            let path = format!("{field}.{key}");
            if !allowed.is_empty() && !allowed.contains(&key) {
                self.error(
                    &path,
                    None,
                    format!("unknown field; expected one of: {}", allowed.join(", ")),
                );
                continue;
            }
            out.push((key.to_string(), item));
        }
        out
    }
}

/// Parses and validates one service file's text. `name` is the file stem.
pub fn parse_service(
    file: &Path,
    name: &str,
    text: &str,
) -> Result<ServiceConfig, Vec<ConfigError>> {
    let mut c = Checker {
        file,
        text,
        errors: Vec::new(),
    };
    if !valid_name(name) {
        c.errors.push(ConfigError::file(
            file,
            format!(
                "{name:?} is not a valid service name (letters, digits, '.', '_', '-', '@'; at most 128; not starting with '.')"
            ),
        ));
    } else if is_job_name(name) {
        c.errors.push(ConfigError::file(
            file,
            format!("{name:?} is not a valid service name: names of the form job-N are reserved for jobs"),
        ));
    }
    let root: Value = match serde_yaml_ng::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            let line = e.location().map(|l| l.line());
            c.errors
                .push(ConfigError::file(file, format!("invalid YAML: {e}")).at_line(line));
            return Err(c.errors);
        }
    };
    let Value::Mapping(map) = &root else {
        c.errors.push(ConfigError::file(
            file,
            format!(
                "a service file is a mapping of fields (exec: ..., after: ...), found {}",
                kind(&root)
            ),
        ));
        return Err(c.errors);
    };
    let mut fields: std::collections::HashMap<&str, &Value> = std::collections::HashMap::new();
    for (key, value) in map {
        match key.as_str() {
            Some(k) if FIELDS.contains(&k) => {
                fields.insert(k, value);
            }
            Some(k) => c.error(
                k,
                None,
                format!("unknown field; expected one of: {}", FIELDS.join(", ")),
            ),
            None => c.errors.push(ConfigError::file(
                file,
                format!("field names must be strings, found {}", show(key)),
            )),
        }
    }
    let get = |k: &str| fields.get(k).copied();

    let exec = match get("exec") {
        Some(v) => c.command("exec", v),
        None => {
            c.errors.push(ConfigError::field(
                file,
                "exec",
                None,
                "missing: every service needs a command",
            ));
            None
        }
    };
    let test = get("test").and_then(|v| c.command("test", v));
    let test_interval = get("test_interval")
        .and_then(|v| c.duration("test_interval", v))
        .unwrap_or(Duration::from_millis(500));
    let test_timeout = get("test_timeout")
        .and_then(|v| c.duration("test_timeout", v))
        .unwrap_or(Duration::from_secs(60));
    let oneshot = get("oneshot")
        .and_then(|v| c.boolean("oneshot", v))
        .unwrap_or(false);

    let mut after = Vec::new();
    if let Some(v) = get("after") {
        for item in c.list("after", v).to_vec() {
            if let Some(dep) = c.string("after", &item) {
                if !valid_name(&dep) {
                    c.error("after", Some(&item), "not a valid service name");
                } else if dep == name {
                    c.error("after", Some(&item), "a service cannot start after itself");
                } else if after.contains(&dep) {
                    c.error("after", Some(&item), "listed twice");
                } else {
                    after.push(dep);
                }
            }
        }
    }

    let mut warnings = Vec::new();
    let nested_signal = get("signal").and_then(|v| {
        let entries = c.mapping("signal", v, &["stop"]);
        entries
            .into_iter()
            .find(|(k, _)| k == "stop")
            .and_then(|(_, v)| c.signal("signal.stop", v))
    });
    let flat_signal = get("stop_signal").and_then(|v| c.signal("stop_signal", v));
    if get("signal").is_some() && get("stop_signal").is_some() {
        c.error(
            "stop_signal",
            None,
            "give either `signal.stop` or `stop_signal`, not both",
        );
    }
    let stop_signal = nested_signal.or(flat_signal).unwrap_or(Signal::SIGTERM);

    let seconds = get("shutdown_timeout")
        .and_then(|v| c.number("shutdown_timeout", v))
        .map(Duration::from_secs_f64);
    let millis = get("stop_timeout_ms")
        .and_then(|v| c.number("stop_timeout_ms", v))
        .map(|ms| Duration::from_secs_f64(ms / 1000.0));
    if get("shutdown_timeout").is_some() && get("stop_timeout_ms").is_some() {
        c.error(
            "stop_timeout_ms",
            None,
            "give either `shutdown_timeout` (seconds) or `stop_timeout_ms` (milliseconds), not both",
        );
    }
    let mut stop_timeout = seconds.or(millis).unwrap_or(DEFAULT_STOP_TIMEOUT);
    if stop_timeout > MAX_STOP_TIMEOUT {
        warnings.push(format!(
            "{}: stop timeout {:?} is above the 30 s limit; using 30 s",
            file.display(),
            stop_timeout
        ));
        stop_timeout = MAX_STOP_TIMEOUT;
    }
    let stop_command = get("stop").and_then(|v| c.command("stop", v));
    let stop_mode = match get("stop_mode") {
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

    let log = get("log")
        .map(|v| parse_log(&mut c, v))
        .unwrap_or(LogConfig {
            mode: LogMode::Ring,
            file: None,
        });

    let mut env = Vec::new();
    if let Some(v) = get("env") {
        for (key, value) in c.mapping("env", v, &[]) {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                c.error(
                    &format!("env.{key}"),
                    None,
                    "not a valid environment variable name",
                );
                continue;
            }
            let text = match value {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                Value::Null => Some(String::new()),
                other => {
                    c.error(
                        &format!("env.{key}"),
                        Some(other),
                        "expected a string, number or boolean",
                    );
                    None
                }
            };
            if let Some(text) = text {
                env.push((key, text));
            }
        }
    }
    let dir = get("dir").and_then(|v| c.string("dir", v)).and_then(|d| {
        let path = PathBuf::from(&d);
        if path.is_absolute() {
            Some(path)
        } else {
            c.error("dir", Some(&Value::String(d)), "must be an absolute path");
            None
        }
    });

    let mut ports = Vec::new();
    if let Some(v) = get("ports") {
        for item in c.list("ports", v).to_vec() {
            let text = match &item {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                other => {
                    c.error(
                        "ports",
                        Some(other),
                        "expected a port such as 8080, \"53/udp\" or \"8443/tcp\"",
                    );
                    continue;
                }
            };
            match text.parse::<Port>() {
                Ok(port) if ports.contains(&port) => c.error("ports", Some(&item), "listed twice"),
                Ok(port) => ports.push(port),
                Err(e) => c.error("ports", Some(&item), e.to_string()),
            }
        }
    }
    let mut process_filters = Vec::new();
    if let Some(v) = get("process_filters") {
        for item in c.list("process_filters", v).to_vec() {
            if let Some(text) = c.string("process_filters", &item) {
                match text.parse::<ProcessFilter>() {
                    Ok(filter) => process_filters.push(filter),
                    Err(e) => c.error("process_filters", Some(&item), e.to_string()),
                }
            }
        }
    }

    let restart = parse_restart(&mut c, get("restart"), oneshot);
    let run_as = resolve_user(&mut c, get("user"), get("group"));
    let limits = get("limits")
        .map(|v| parse_limits(&mut c, v))
        .unwrap_or_default();

    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(ServiceConfig {
        name: name.to_string(),
        file: file.to_path_buf(),
        source: text.to_string(),
        exec: exec.unwrap_or_default(),
        test,
        test_interval,
        test_timeout,
        oneshot,
        after,
        stop_signal,
        stop_timeout,
        stop_command,
        stop_mode,
        log,
        env,
        dir,
        ports,
        process_filters,
        restart,
        run_as,
        limits,
        warnings,
    })
}

/// The resource limits a service file may set, by field name.
const LIMITS: &[(&str, Resource)] = &[
    ("nofile", Resource::RLIMIT_NOFILE),
    ("nproc", Resource::RLIMIT_NPROC),
    ("core", Resource::RLIMIT_CORE),
    ("memlock", Resource::RLIMIT_MEMLOCK),
    ("stack", Resource::RLIMIT_STACK),
    ("fsize", Resource::RLIMIT_FSIZE),
];

/// `limits: {nofile: 4096, core: unlimited, nproc: "512:1024"}`: one value
/// sets the soft and hard limit, `SOFT:HARD` each.
fn parse_limits(c: &mut Checker<'_>, value: &Value) -> Vec<Limit> {
    let names: Vec<&str> = LIMITS.iter().map(|(n, _)| *n).collect();
    let mut out = Vec::new();
    for (key, v) in c.mapping("limits", value, &names) {
        let field = format!("limits.{key}");
        let resource = LIMITS
            .iter()
            .find(|(n, _)| *n == key)
            .map(|(_, r)| *r)
            .expect("checked against the list");
        let one = |text: &str| -> Option<u64> {
            match text.trim() {
                "unlimited" | "infinity" => Some(UNLIMITED),
                number => number.parse::<u64>().ok().filter(|n| *n < UNLIMITED),
            }
        };
        let text = match v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => String::new(),
        };
        let parsed = match text.split_once(':') {
            Some((soft, hard)) => one(soft).zip(one(hard)),
            None => one(&text).map(|n| (n, n)),
        };
        match parsed {
            Some((soft, hard)) if soft <= hard => out.push(Limit {
                resource,
                soft,
                hard,
            }),
            Some(_) => c.error(&field, Some(v), "the soft limit is above the hard limit"),
            None => c.error(
                &field,
                Some(v),
                "expected a whole number, unlimited, or SOFT:HARD",
            ),
        }
    }
    out
}

fn parse_log(c: &mut Checker<'_>, value: &Value) -> LogConfig {
    let mode_of = |c: &mut Checker<'_>, field: &str, v: &Value| match c.string(field, v).as_deref()
    {
        Some("ring") => LogMode::Ring,
        Some("stdout") => LogMode::Stdout,
        Some("null") => LogMode::Null,
        Some(_) => {
            c.error(
                field,
                Some(v),
                "expected ring, stdout or null (or a mapping with `file`)",
            );
            LogMode::Ring
        }
        None => LogMode::Ring,
    };
    if !matches!(value, Value::Mapping(_)) {
        return LogConfig {
            mode: mode_of(c, "log", value),
            file: None,
        };
    }
    let mut config = LogConfig {
        mode: LogMode::Ring,
        file: None,
    };
    let mut path = None;
    let mut max_size = 10 * 1024 * 1024;
    let mut keep = 3;
    for (key, v) in c.mapping("log", value, &["mode", "file", "max_size", "keep"]) {
        match key.as_str() {
            "mode" => config.mode = mode_of(c, "log.mode", v),
            "file" => {
                if let Some(p) = c.string("log.file", v) {
                    if p.starts_with('/') {
                        path = Some(PathBuf::from(p));
                    } else {
                        c.error("log.file", Some(v), "must be an absolute path");
                    }
                }
            }
            "max_size" => match v.as_u64() {
                Some(n) if n >= 1024 => max_size = n,
                _ => c.error(
                    "log.max_size",
                    Some(v),
                    "expected a number of bytes, at least 1024",
                ),
            },
            _ => match v.as_u64() {
                Some(n) if n <= 100 => keep = n as u32,
                _ => c.error(
                    "log.keep",
                    Some(v),
                    "expected a number of rotated files from 0 to 100",
                ),
            },
        }
    }
    config.file = path.map(|path| LogFile {
        path,
        max_size,
        keep,
    });
    config
}

fn parse_restart(c: &mut Checker<'_>, value: Option<&Value>, oneshot: bool) -> RestartPolicy {
    let mut policy = RestartPolicy::default_for(oneshot);
    let mode_of = |c: &mut Checker<'_>, field: &str, v: &Value| match c.string(field, v).as_deref()
    {
        Some("always") => Some(RestartMode::Always),
        Some("on-failure" | "on_failure") => Some(RestartMode::OnFailure),
        Some("never" | "no") => Some(RestartMode::Never),
        Some(_) => {
            c.error(field, Some(v), "expected always, on-failure or never");
            None
        }
        None => None,
    };
    let Some(value) = value else {
        return policy;
    };
    if !matches!(value, Value::Mapping(_)) {
        if let Some(mode) = mode_of(c, "restart", value) {
            policy.mode = mode;
        }
        return policy;
    }
    let allowed = [
        "policy",
        "delay",
        "factor",
        "max_delay",
        "reset_after",
        "max_restarts",
    ];
    for (key, v) in c.mapping("restart", value, &allowed) {
        let field = format!("restart.{key}");
        match key.as_str() {
            "policy" => {
                if let Some(mode) = mode_of(c, &field, v) {
                    policy.mode = mode;
                }
            }
            "delay" => policy.delay = c.duration(&field, v).unwrap_or(policy.delay),
            "max_delay" => policy.max_delay = c.duration(&field, v).unwrap_or(policy.max_delay),
            "reset_after" => {
                policy.reset_after = c.duration(&field, v).unwrap_or(policy.reset_after)
            }
            "factor" => match v.as_f64() {
                Some(f) if (1.0..=100.0).contains(&f) => policy.factor = f,
                _ => c.error(&field, Some(v), "expected a number from 1 to 100"),
            },
            _ => match v.as_u64() {
                Some(n) if n <= u32::MAX as u64 => policy.max_restarts = Some(n as u32),
                _ => c.error(&field, Some(v), "expected a whole number of restarts"),
            },
        }
    }
    if policy.delay < Duration::from_millis(10) {
        c.error(
            "restart.delay",
            None,
            "must be at least 10ms, so that a crash loop never spins",
        );
    }
    if policy.max_delay < policy.delay {
        c.error(
            "restart.max_delay",
            None,
            "must not be shorter than restart.delay",
        );
    }
    policy
}

fn resolve_user(c: &mut Checker<'_>, user: Option<&Value>, group: Option<&Value>) -> Option<RunAs> {
    let group_name = group.and_then(|v| c.string("group", v));
    let gid_of_group =
        group_name
            .as_ref()
            .and_then(|name| match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => Some(g.gid.as_raw()),
                Ok(None) => match name.parse::<u32>() {
                    Ok(gid) => Some(gid),
                    Err(_) => {
                        c.error("group", Some(&Value::String(name.clone())), "no such group");
                        None
                    }
                },
                Err(e) => {
                    c.error(
                        "group",
                        Some(&Value::String(name.clone())),
                        format!("cannot look up the group: {e}"),
                    );
                    None
                }
            });
    let Some(user_value) = user else {
        if group_name.is_some() {
            c.error("group", group, "needs `user` too");
        }
        return None;
    };
    let name = c.string("user", user_value)?;
    let found = match nix::unistd::User::from_name(&name) {
        Ok(Some(u)) => Some((u.uid.as_raw(), u.gid.as_raw(), u.dir, u.shell)),
        Ok(None) => None,
        Err(e) => {
            c.error(
                "user",
                Some(user_value),
                format!("cannot look up the user: {e}"),
            );
            return None;
        }
    };
    let Some((uid, user_gid, home, shell)) = found else {
        c.error("user", Some(user_value), "no such user");
        return None;
    };
    let gid = gid_of_group.unwrap_or(user_gid);
    let groups = std::ffi::CString::new(name.clone())
        .ok()
        .and_then(|cname| nix::unistd::getgrouplist(&cname, nix::unistd::Gid::from_raw(gid)).ok())
        .map(|list| list.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|| vec![gid]);
    Some(RunAs {
        user: name,
        uid,
        gid,
        groups,
        home,
        shell,
    })
}
