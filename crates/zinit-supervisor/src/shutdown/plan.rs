//! The shutdown's plan, computed by one function for the real shutdown and
//! for the dry run alike: for every unit whose processes are alive, the
//! live units that depend on it, directly or through units that are not
//! live (an exited oneshot between a database and its app still orders
//! them): it starts stopping once they have all stopped. And its budget,
//! signal and mode.

use super::sweep::SweepTarget;
use crate::config::ServiceConfig;
use crate::graph;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use zinit_process::Signal;
use zinit_process::stop::StopMode;

/// The most a shutdown may take.
pub const MAX_DEADLINE: Duration = Duration::from_secs(30);
/// Kept free at the end of the deadline for the sweep, the verification,
/// the final event and the exit.
pub const TAIL_RESERVE: Duration = Duration::from_secs(2);

/// A unit handed to the shutdown: its processes are alive.
#[derive(Debug, Clone)]
pub(crate) struct ShutdownUnit {
    pub name: String,
    pub config: Arc<ServiceConfig>,
}

/// One unit in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedUnit {
    /// The unit.
    pub name: String,
    /// The live units that depend on it: it starts stopping once they have.
    pub waits_for: Vec<String>,
    /// For a dependent in `waits_for` reached through units that are not
    /// live: those units, nearest the dependent first (`app` waits for
    /// `db` via `migrate`).
    pub via: BTreeMap<String, Vec<String>>,
    /// What its stop may take: its timeout, capped by the deadline.
    pub budget: Duration,
    /// Its stop signal.
    pub signal: Signal,
    /// Its stop mode.
    pub mode: StopMode,
}

/// The plan of a shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every live unit, by name.
    pub units: Vec<PlannedUnit>,
    /// The global deadline.
    pub deadline: Duration,
    /// For a dry run: what the final sweep would target right now.
    pub sweep: Vec<SweepTarget>,
    /// Whether this is a dry run (nothing is stopped).
    pub dry_run: bool,
}

/// What a unit may spend: its timeout, capped by what the deadline leaves
/// (`left`) minus the tail reserve; nothing once forced.
pub fn budget(timeout: Duration, left: Duration, forced: bool) -> Duration {
    if forced {
        return Duration::ZERO;
    }
    timeout.min(left.saturating_sub(TAIL_RESERVE))
}

/// The plan's units: for each live unit, its live dependents (through
/// every unit of `all`, live or not), and its budget with `left` of the
/// deadline remaining.
pub(crate) fn plan_units(
    units: &[ShutdownUnit],
    all: &[Arc<ServiceConfig>],
    left: Duration,
    forced: bool,
) -> Vec<PlannedUnit> {
    let live: BTreeSet<String> = units.iter().map(|u| u.name.clone()).collect();
    let mut deps: BTreeMap<String, Vec<String>> = all
        .iter()
        .map(|c| (c.name.clone(), c.after.clone()))
        .collect();
    // A live unit's own configuration wins (a job is not in `all`).
    for u in units {
        deps.insert(u.name.clone(), u.config.after.clone());
    }
    // Per dependency: its dependents, and the chains of the indirect ones.
    type Waits = (Vec<String>, BTreeMap<String, Vec<String>>);
    let mut waits: BTreeMap<String, Waits> = BTreeMap::new();
    for (dependent, found) in graph::live_dependencies(&deps, &live) {
        for (dependency, between) in found {
            let entry = waits.entry(dependency).or_default();
            entry.0.push(dependent.clone());
            if !between.is_empty() {
                entry.1.insert(dependent.clone(), between);
            }
        }
    }
    units
        .iter()
        .map(|u| {
            let (waits_for, via) = waits.remove(&u.name).unwrap_or_default();
            PlannedUnit {
                name: u.name.clone(),
                waits_for,
                via,
                budget: budget(u.config.stop_timeout, left, forced),
                signal: u.config.stop_signal,
                mode: u.config.stop_mode,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_the_timeout_capped_by_the_deadline_less_the_reserve() {
        let s = Duration::from_secs;
        assert_eq!(budget(s(10), s(30), false), s(10));
        assert_eq!(budget(s(60), s(30), false), s(28));
        assert_eq!(budget(s(10), s(5), false), s(3));
        assert_eq!(budget(s(10), s(1), false), s(0));
        assert_eq!(budget(s(10), s(30), true), s(0));
    }
}
