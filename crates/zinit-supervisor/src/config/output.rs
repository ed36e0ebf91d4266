//! The `log` field: where a unit's output goes (`ring`, `stdout`, `null`,
//! or a mapping with a rotating `file`).

use super::checker::Checker;
use super::types::{LogConfig, LogFile, LogMode};
use serde_yaml_ng::Value;
use std::path::PathBuf;

/// The largest rotation size a log file accepts (1 TiB).
const MAX_LOG_SIZE: u64 = 1 << 40;

pub(super) fn parse(c: &mut Checker<'_>, value: Option<&Value>) -> LogConfig {
    let mut config = LogConfig {
        mode: LogMode::Ring,
        file: None,
        mode_given: false,
    };
    let Some(value) = value else {
        return config;
    };
    let mode_of = |c: &mut Checker<'_>, field: &str, v: &Value| match v {
        // `log: null`, as the original zinit documents it (YAML reads a
        // bare null as "nothing").
        Value::Null => LogMode::Null,
        _ => match c.string(field, v).as_deref() {
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
        },
    };
    if !matches!(value, Value::Mapping(_)) {
        config.mode = mode_of(c, "log", value);
        config.mode_given = true;
        return config;
    }
    let mut path = None;
    let mut max_size = 10 * 1024 * 1024;
    let mut keep = 3;
    for (key, v) in c.mapping("log", value, &["mode", "file", "max_size", "keep"]) {
        match key.as_str() {
            "mode" => {
                config.mode = mode_of(c, "log.mode", v);
                config.mode_given = true;
            }
            "file" => {
                if let Some(p) = c.string("log.file", v) {
                    if p.starts_with('/') {
                        path = Some(PathBuf::from(p));
                    } else {
                        c.error("log.file", Some(v), "must be an absolute path");
                    }
                }
            }
            "max_size" => {
                if let Some(n) = c.count("log.max_size", v, (1024, MAX_LOG_SIZE)) {
                    max_size = n;
                }
            }
            _ => {
                if let Some(n) = c.count("log.keep", v, (0, 100)) {
                    keep = n as u32;
                }
            }
        }
    }
    config.file = path.map(|path| LogFile {
        path,
        max_size,
        keep,
    });
    config
}
