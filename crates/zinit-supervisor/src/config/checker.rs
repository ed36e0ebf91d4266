//! Checking a service file's YAML value by value: each check records an
//! error that names the file, the field, the value as written and its line,
//! and returns what it could read, so every problem of a file is found in
//! one pass. Every number is range-checked before it becomes a `Duration`
//! or a count (no input can make the supervisor panic).

use super::ConfigError;
use serde_yaml_ng::Value;
use std::path::Path;
use std::time::Duration;
use zinit_process::Signal;
use zinit_process::signal::parse_signal;

/// The longest duration any field accepts (test, restart and back-off
/// timings): a day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Checks one field after another, collecting every error.
pub(super) struct Checker<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    pub errors: Vec<ConfigError>,
}

/// The most of a value an error message repeats.
const SHOWN: usize = 100;

/// A value as written (strings quoted), for messages; long ones are cut.
pub(super) fn show(value: &Value) -> String {
    let text = match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".to_string(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|_| kind(other).to_string()),
    };
    if text.chars().count() <= SHOWN {
        return text;
    }
    let cut: String = text.chars().take(SHOWN).collect();
    format!("{cut}… ({} characters)", text.chars().count())
}

/// What kind of value it is, for messages.
pub(super) fn kind(value: &Value) -> &'static str {
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

/// The indentation of a line.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Whether a (trimmed) line starts the mapping key `key`.
fn is_key(line: &str, key: &str) -> bool {
    let line = line.strip_prefix("- ").unwrap_or(line);
    [
        format!("{key}:"),
        format!("\"{key}\":"),
        format!("'{key}':"),
    ]
    .iter()
    .any(|k| line.starts_with(k.as_str()))
}

impl Checker<'_> {
    /// The line where `field` (a top-level key, or `parent.child`) is
    /// written: a child is looked for only inside its parent's block, so
    /// `signal.stop` never points at a top-level `stop:`. A child written
    /// in flow style (`signal: {stop: X}`) is on its parent's line.
    pub fn line_of(&self, field: &str) -> Option<usize> {
        let lines: Vec<&str> = self.text.lines().collect();
        let mut parts = field.split('.');
        let first = parts.next()?;
        let mut pos = lines
            .iter()
            .position(|l| indent(l) == 0 && is_key(l, first))?;
        let mut base = 0;
        for part in parts {
            let mut found = None;
            for (i, line) in lines.iter().enumerate().skip(pos + 1) {
                let trimmed = line.trim_start();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                if indent(line) <= base {
                    break;
                }
                if is_key(trimmed, part) {
                    found = Some((i, indent(line)));
                    break;
                }
            }
            match found {
                Some((i, depth)) => (pos, base) = (i, depth),
                None => break,
            }
        }
        Some(pos + 1)
    }

    /// Records a problem with `field`.
    pub fn error(&mut self, field: &str, value: Option<&Value>, message: impl Into<String>) {
        let line = self.line_of(field);
        self.errors
            .push(ConfigError::field(self.file, field, value.map(show), message).at_line(line));
    }

    /// A string (numbers are taken as written).
    pub fn string(&mut self, field: &str, value: &Value) -> Option<String> {
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

    /// A command line, split like a shell does.
    pub fn command(&mut self, field: &str, value: &Value) -> Option<Vec<String>> {
        let text = self.string(field, value)?;
        match shlex::split(&text) {
            Some(words) if words.iter().any(|w| w.contains('\0')) => {
                self.error(field, Some(value), "the command contains a NUL byte");
                None
            }
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

    /// `true` or `false`.
    pub fn boolean(&mut self, field: &str, value: &Value) -> Option<bool> {
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

    /// A stop signal: a name or number, never SIGKILL or SIGSTOP.
    pub fn signal(&mut self, field: &str, value: &Value) -> Option<Signal> {
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

    /// A finite, non-negative number.
    pub fn number(&mut self, field: &str, value: &Value) -> Option<f64> {
        match value.as_f64() {
            Some(n) if n.is_finite() && n >= 0.0 => Some(n),
            _ => {
                self.error(field, Some(value), "expected a non-negative number");
                None
            }
        }
    }

    /// `500ms`, `10s`, `1m 30s`, or a bare number of seconds, from `min`
    /// to `max`.
    pub fn duration(
        &mut self,
        field: &str,
        value: &Value,
        (min, max): (Duration, Duration),
    ) -> Option<Duration> {
        let parsed = match value {
            Value::Number(_) => value
                .as_f64()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map(|n| {
                    // Compared before converting: a huge number cannot overflow.
                    if n > max.as_secs_f64() {
                        max + Duration::from_secs(1)
                    } else {
                        Duration::from_secs_f64(n)
                    }
                }),
            Value::String(s) => humantime::parse_duration(s.trim()).ok(),
            _ => None,
        };
        let Some(duration) = parsed else {
            self.error(
                field,
                Some(value),
                "expected a duration such as 500ms, 10s or 1m, or a number of seconds",
            );
            return None;
        };
        if duration < min || duration > max {
            self.error(
                field,
                Some(value),
                format!(
                    "expected a duration from {} to {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
            return None;
        }
        Some(duration)
    }

    /// A whole number from `min` to `max`.
    pub fn count(&mut self, field: &str, value: &Value, (min, max): (u64, u64)) -> Option<u64> {
        match value.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    field,
                    Some(value),
                    format!("expected a whole number from {min} to {max}"),
                );
                None
            }
        }
    }

    /// A list (`null` is an empty one).
    pub fn list<'v>(&mut self, field: &str, value: &'v Value) -> &'v [Value] {
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

    /// A mapping's entries; with `allowed` not empty, other keys are errors.
    pub fn mapping<'v>(
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
