//! The fields of what the shutdown's final sweep also kills: `ports` and
//! `process_filters`.

use super::Fields;
use super::checker::Checker;
use serde_yaml_ng::Value;
use zinit_process::{Port, ProcessFilter};

pub(super) struct Sweep {
    pub ports: Vec<Port>,
    pub filters: Vec<ProcessFilter>,
}

pub(super) fn parse(c: &mut Checker<'_>, get: &Fields<'_>) -> Sweep {
    let mut ports = Vec::new();
    if let Some(v) = get("ports") {
        for item in c.list("ports", v) {
            let text = match item {
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
                Ok(port) if ports.contains(&port) => c.error("ports", Some(item), "listed twice"),
                Ok(port) => ports.push(port),
                Err(e) => c.error("ports", Some(item), e.to_string()),
            }
        }
    }
    let mut filters = Vec::new();
    if let Some(v) = get("process_filters") {
        for item in c.list("process_filters", v) {
            if let Some(text) = c.string("process_filters", item) {
                match text.parse::<ProcessFilter>() {
                    Ok(filter) => filters.push(filter),
                    Err(e) => c.error("process_filters", Some(item), e.to_string()),
                }
            }
        }
    }
    Sweep { ports, filters }
}
