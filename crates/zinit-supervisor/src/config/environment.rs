//! The fields of where and how a unit's commands run: `env`, `dir` and
//! `limits` (the user is in `user`).

use super::Fields;
use super::checker::Checker;
use nix::sys::resource::Resource;
use serde_yaml_ng::Value;
use std::path::PathBuf;
use zinit_process::limits::{Limit, UNLIMITED};

pub(super) struct Environment {
    pub env: Vec<(String, String)>,
    pub dir: Option<PathBuf>,
    pub limits: Vec<Limit>,
}

pub(super) fn parse(c: &mut Checker<'_>, get: &Fields<'_>) -> Environment {
    let mut env = Vec::new();
    if let Some(v) = get("env") {
        for (key, value) in c.mapping("env", v, &[]) {
            let field = format!("env.{key}");
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                c.error(&field, None, "not a valid environment variable name");
                continue;
            }
            let text = match value {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                Value::Null => Some(String::new()),
                other => {
                    c.error(&field, Some(other), "expected a string, number or boolean");
                    None
                }
            };
            match text {
                Some(text) if text.contains('\0') => {
                    c.error(&field, Some(value), "contains a NUL byte")
                }
                Some(text) => env.push((key, text)),
                None => {}
            }
        }
    }
    let dir = get("dir").and_then(|v| c.string("dir", v)).and_then(|d| {
        // `dir: ""` means "the default", as in the original zinit.
        if d.is_empty() {
            return None;
        }
        let path = PathBuf::from(&d);
        if path.is_absolute() {
            Some(path)
        } else {
            c.error("dir", Some(&Value::String(d)), "must be an absolute path");
            None
        }
    });
    let limits = get("limits")
        .map(|v| parse_limits(c, v))
        .unwrap_or_default();
    Environment { env, dir, limits }
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
