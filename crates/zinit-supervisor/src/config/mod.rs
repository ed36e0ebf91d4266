//! Service files: one YAML file per service, the file stem is its name.
//!
//! A file is parsed into a YAML value and then checked field by field
//! (`checker`), one field group per module (`commands`, `stopping`,
//! `output`, `environment`, `user`, `sweep`, `restart`), so that every
//! problem names the file, the field, the value and the line, and all
//! problems of a file are reported at once. The original zinit fields
//! (`exec`, `test`, `oneshot`, `after`, `signal.stop`, `shutdown_timeout`,
//! `log`, `env`, `dir`) keep working. `load` reads a whole directory.

mod checker;
mod commands;
mod environment;
mod error;
mod load;
mod output;
mod restart;
mod stopping;
mod sweep;
mod types;
mod user;

pub use checker::MAX_DURATION;
pub use error::{ConfigError, ConfigErrors};
pub use load::{ConfigSet, load_dir, parse_file};
pub use types::{
    DEFAULT_MAX_RESTARTS, DEFAULT_STOP_TIMEOUT, DEFAULT_TEST_INTERVAL, DEFAULT_TEST_TIMEOUT,
    FieldChange, LogConfig, LogFile, LogMode, MAX_STOP_TIMEOUT, RestartMode, RestartPolicy, RunAs,
    ServiceConfig,
};

use checker::{Checker, kind, show};
use serde_yaml_ng::Value;
use std::collections::HashMap;
use std::path::Path;

/// The largest service file accepted.
pub const MAX_FILE_SIZE: usize = 1024 * 1024;
/// The deepest nesting accepted (a service file needs three levels).
pub const MAX_NESTING: usize = 32;

/// Looks a top-level field up.
type Fields<'a> = dyn Fn(&str) -> Option<&'a Value> + 'a;

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
    "pid_file",
];

/// How deeply `text` nests, counting flow brackets and block indentation
/// levels (an over-estimate is fine: real files nest three levels).
fn nesting(text: &str) -> usize {
    let mut deepest = 0;
    let mut indents: Vec<usize> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        while indents.last().is_some_and(|&i| i >= indent) {
            indents.pop();
        }
        indents.push(indent);
        let mut flow: usize = 0;
        let mut quote = None;
        for ch in trimmed.chars() {
            match (quote, ch) {
                (None, '"' | '\'') => quote = Some(ch),
                (Some(q), c) if c == q => quote = None,
                (None, '[' | '{') => flow += 1,
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
            deepest = deepest.max(indents.len() + flow);
        }
    }
    deepest
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
                "{:?} is not a valid service name (letters, digits, '.', '_', '-', '@'; at most 128; not starting with '.')",
                name.chars().take(140).collect::<String>()
            ),
        ));
    } else if is_job_name(name) {
        c.errors.push(ConfigError::file(
            file,
            format!("{name:?} is not a valid service name: names of the form job-N are reserved for jobs"),
        ));
    }
    if text.len() > MAX_FILE_SIZE {
        c.errors.push(ConfigError::file(
            file,
            format!(
                "the file has {} bytes; a service file may have at most {MAX_FILE_SIZE}",
                text.len()
            ),
        ));
        return Err(c.errors);
    }
    if nesting(text) > MAX_NESTING {
        c.errors.push(ConfigError::file(
            file,
            format!("the file nests deeper than {MAX_NESTING} levels"),
        ));
        return Err(c.errors);
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
    let mut fields: HashMap<&str, &Value> = HashMap::new();
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

    let commands = commands::parse(&mut c, &get, name);
    let stopping = stopping::parse(&mut c, &get);
    let log = output::parse(&mut c, get("log"));
    let environment = environment::parse(&mut c, &get);
    let sweep = sweep::parse(&mut c, &get);
    let restart = restart::parse(&mut c, get("restart"), commands.oneshot);
    let run_as = user::resolve(&mut c, get("user"), get("group"));

    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(ServiceConfig {
        name: name.to_string(),
        file: file.to_path_buf(),
        source: text.to_string(),
        exec: commands.exec.unwrap_or_default(),
        test: commands.test,
        test_interval: commands.test_interval,
        test_timeout: commands.test_timeout,
        oneshot: commands.oneshot,
        after: commands.after,
        pid_file: commands.pid_file,
        stop_signal: stopping.signal,
        stop_timeout: stopping.timeout,
        stop_timeout_given: stopping.timeout_given,
        stop_command: stopping.command,
        stop_mode: stopping.mode,
        log,
        env: environment.env,
        dir: environment.dir,
        ports: sweep.ports,
        process_filters: sweep.filters,
        restart,
        run_as,
        limits: environment.limits,
        warnings: stopping.warning.into_iter().collect(),
        digest_cache: std::sync::OnceLock::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::nesting;

    #[test]
    fn nesting_counts_blocks_and_flow_brackets() {
        assert_eq!(nesting("exec: /bin/a\n"), 1);
        assert_eq!(nesting("restart:\n  policy: always\n"), 2);
        assert_eq!(nesting("a: [[[1]]]\n"), 4);
        assert_eq!(nesting("exec: \"[[[[\"\n"), 1);
        let deep = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        assert_eq!(nesting(&deep), 101);
    }
}
