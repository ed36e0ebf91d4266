//! The `restart` field: `always`, `on-failure` or `never`, or a mapping
//! with the policy and its exponential back-off.

use super::checker::{Checker, MAX_DURATION};
use super::types::{RestartMode, RestartPolicy};
use serde_yaml_ng::Value;
use std::time::Duration;

/// The shortest restart delay: a crash loop never spins.
const MIN_DELAY: Duration = Duration::from_millis(10);

pub(super) fn parse(c: &mut Checker<'_>, value: Option<&Value>, oneshot: bool) -> RestartPolicy {
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
        let bounds = (MIN_DELAY, MAX_DURATION);
        match key.as_str() {
            "policy" => {
                if let Some(mode) = mode_of(c, &field, v) {
                    policy.mode = mode;
                }
            }
            "delay" => policy.delay = c.duration(&field, v, bounds).unwrap_or(policy.delay),
            "max_delay" => {
                policy.max_delay = c.duration(&field, v, bounds).unwrap_or(policy.max_delay)
            }
            "reset_after" => {
                policy.reset_after = c.duration(&field, v, bounds).unwrap_or(policy.reset_after)
            }
            "factor" => match v.as_f64() {
                Some(f) if (1.0..=100.0).contains(&f) => policy.factor = f,
                _ => c.error(&field, Some(v), "expected a number from 1 to 100"),
            },
            _ => match v {
                Value::String(s) if s == "unlimited" => policy.max_restarts = None,
                _ => {
                    if let Some(n) = c.count(&field, v, (0, u64::from(u32::MAX))) {
                        policy.max_restarts = Some(n as u32);
                    }
                }
            },
        }
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
