//! The final sweep and the verification: what is still alive after every
//! unit stopped — this server's descendants (orphans adopted as a child
//! subreaper), processes in its unit cgroups, holders of a declared port,
//! matches of a declared process filter — is stopped through the process
//! crate's stop engine (TERM, a short grace, KILL deepest first); then a
//! fresh scan says what is left. Never this process, its ancestors, PID 1,
//! kernel threads, or the clients that asked (and their ancestors).

use super::{Leftover, ShutdownEventKind, Verification};
use crate::config::ServiceConfig;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use zinit_process::members::protected_pids;
use zinit_process::stop::{StopEvent, StopMode, StopSpec, stop};
use zinit_process::{
    Detail, Members, Port, ProcState, ProcessFilter, ProcessId, ProcessTable, Signal,
};

/// Why the sweep targets a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepReason {
    /// A descendant of this server no unit claims (a double fork's daemon).
    Orphan,
    /// It is in the cgroup of this unit.
    Cgroup(String),
    /// It holds this declared port.
    Port(Port),
    /// It matches this declared process filter.
    Filter(String),
}

impl fmt::Display for SweepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Orphan => f.write_str("orphan"),
            Self::Cgroup(unit) => write!(f, "cgroup of {unit}"),
            Self::Port(port) => write!(f, "port {port}"),
            Self::Filter(filter) => write!(f, "filter {filter}"),
        }
    }
}

/// One process the sweep targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepTarget {
    /// Its identity.
    pub id: ProcessId,
    /// Its command name.
    pub name: String,
    /// Why it is targeted.
    pub reason: SweepReason,
    /// How many ancestors it has (the deepest go first).
    pub depth: usize,
}

/// What the sweep looks at.
#[derive(Debug, Clone)]
pub(crate) struct SweepScope {
    pub ports: Vec<Port>,
    pub filters: Vec<ProcessFilter>,
    /// The directories holding unit cgroups.
    pub cgroup_dirs: Vec<PathBuf>,
    /// Never targeted: the clients that asked, processes of live units (for
    /// a dry run), and so on.
    pub spare: Vec<i32>,
}

impl SweepScope {
    /// The scope for these services' ports and filters.
    pub fn new(configs: &[Arc<ServiceConfig>], cgroup_dirs: Vec<PathBuf>, spare: Vec<i32>) -> Self {
        Self {
            ports: configs
                .iter()
                .flat_map(|c| c.ports.iter().copied())
                .collect(),
            filters: configs
                .iter()
                .flat_map(|c| c.process_filters.iter().cloned())
                .collect(),
            cgroup_dirs,
            spare,
        }
    }

    /// The targets now (blocking: reads /proc). Without process filters
    /// only the candidates (this server's descendants, from the kernel's
    /// children lists, the cgroups' members and the ports' owners) and their
    /// ancestors are read, not the whole table; executables and command
    /// lines are read only when a filter needs them.
    pub fn targets(&self) -> std::io::Result<Vec<SweepTarget>> {
        let me = std::process::id() as i32;
        let in_cgroups: Vec<(i32, String)> = self
            .cgroup_dirs
            .iter()
            .flat_map(|dir| zinit_process::cgroup::unit_cgroups(dir))
            .flat_map(|(unit, cgroup)| {
                let pids = cgroup.procs().unwrap_or_default();
                pids.into_iter().map(move |pid| (pid, unit.clone()))
            })
            .collect();
        let on_ports = zinit_process::ports::port_owners(&self.ports);
        let descendants = if self.filters.is_empty() {
            zinit_process::proc_table::descendant_pids(me)
        } else {
            None
        };
        let table = match descendants {
            Some(descendants) => {
                let candidates = descendants
                    .into_iter()
                    .chain(in_cgroups.iter().map(|(pid, _)| *pid))
                    .chain(on_ports.iter().map(|(pid, _)| *pid))
                    .chain(self.spare.iter().copied())
                    .chain([me]);
                ProcessTable::of_pids_and_ancestors(candidates, Detail::Basic)
            }
            None if self.filters.iter().any(|f| f.detail() == Detail::Full) => {
                ProcessTable::snapshot(Detail::Full)?
            }
            None => ProcessTable::snapshot(Detail::Basic)?,
        };
        let mut protected = protected_pids(&table);
        for &pid in &self.spare {
            protected.insert(pid);
            protected.extend(table.ancestors(pid));
        }
        let mut found: BTreeMap<i32, SweepReason> = BTreeMap::new();
        for (pid, _) in table.descendants(me) {
            found.entry(pid).or_insert(SweepReason::Orphan);
        }
        for (pid, unit) in in_cgroups {
            found.entry(pid).or_insert(SweepReason::Cgroup(unit));
        }
        for (pid, port) in on_ports {
            found.entry(pid).or_insert(SweepReason::Port(port));
        }
        let spare: Vec<i32> = protected.iter().copied().collect();
        for (info, index) in zinit_process::filter::matching(&self.filters, &table, &spare) {
            found
                .entry(info.pid)
                .or_insert_with(|| SweepReason::Filter(self.filters[index].to_string()));
        }
        Ok(found
            .into_iter()
            .filter(|(pid, _)| !protected.contains(pid))
            .filter_map(|(pid, reason)| {
                let info = table.get(pid)?;
                if info.kernel_thread || info.is_zombie() {
                    return None;
                }
                Some(SweepTarget {
                    id: ProcessId {
                        pid,
                        start_time: info.start_time,
                    },
                    name: info.comm.clone(),
                    reason,
                    depth: table.ancestors(pid).len(),
                })
            })
            .collect())
    }

    /// The targets, read on a blocking thread (a /proc read can hang on a
    /// process in uninterruptible sleep); `None` if that takes longer than
    /// `bound`.
    pub async fn targets_within(&self, bound: Duration) -> Option<Vec<SweepTarget>> {
        let scope = self.clone();
        let read = tokio::task::spawn_blocking(move || scope.targets());
        match tokio::time::timeout(bound, read).await {
            Ok(Ok(Ok(targets))) => Some(targets),
            _ => None,
        }
    }
}

/// How long swept processes get between SIGTERM and SIGKILL.
const SWEEP_GRACE: Duration = Duration::from_millis(500);
/// How long the sweep waits for SIGKILL to land.
const SWEEP_KILL_WAIT: Duration = Duration::from_millis(500);

/// Stops `targets` (SIGTERM, and SIGCONT to the stopped ones, at most `SWEEP_GRACE`, then
/// SIGKILL deepest first) without going past `end`; reports each signal and
/// each process that died. Returns how many died.
pub(crate) async fn sweep(
    targets: Vec<SweepTarget>,
    end: Instant,
    emit: &impl Fn(ShutdownEventKind),
) -> u32 {
    if targets.is_empty() {
        return 0;
    }
    let left = end.saturating_duration_since(Instant::now());
    let spec = StopSpec {
        signal: Signal::SIGTERM,
        mode: StopMode::Group,
        timeout: SWEEP_GRACE.min(left / 2),
        kill_wait: SWEEP_KILL_WAIT.min(left / 2),
        // No "still waiting" events: the sweep is short.
        progress_every: Duration::from_secs(3600),
        ..StopSpec::default()
    };
    let reasons: BTreeMap<i32, (String, SweepReason)> = targets
        .iter()
        .map(|t| (t.id.pid, (t.name.clone(), t.reason.clone())))
        .collect();
    let members = Members::fixed(targets.iter().map(|t| (t.id, t.depth)).collect());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stopped = stop(&members, &spec, Some(&tx)).await;
    drop(tx);
    let mut swept = 0;
    while let Ok(event) = rx.try_recv() {
        match event {
            StopEvent::Signalled {
                pid,
                depth,
                comm,
                signal,
                ..
            } if signal != Signal::SIGSTOP => emit(ShutdownEventKind::SignalSent {
                unit: None,
                pid,
                depth,
                signal,
                name: comm.to_string(),
            }),
            StopEvent::Exited { pid, killed, .. } => {
                swept += 1;
                let (name, reason) = reasons
                    .get(&pid)
                    .cloned()
                    .unwrap_or_else(|| (String::new(), SweepReason::Orphan));
                emit(ShutdownEventKind::ProcessSwept {
                    pid,
                    name,
                    reason,
                    signal: if killed {
                        Signal::SIGKILL
                    } else {
                        Signal::SIGTERM
                    },
                });
            }
            _ => {}
        }
    }
    if let Err(e) = stopped {
        tracing::error!("shutdown: the sweep failed: {e}");
    }
    swept
}

/// A fresh scan: anything the sweep would still target is a leftover. A
/// scan that cannot finish by `end` makes the result "unverified", never a
/// leftover. Every leftover goes to the server's log too.
pub(crate) async fn verify(scope: &SweepScope, end: Instant) -> Verification {
    let bound = end
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(200));
    let Some(targets) = scope.targets_within(bound).await else {
        let why = format!(
            "the verification scan did not finish within {:.1}s (a /proc read blocked)",
            bound.as_secs_f64()
        );
        tracing::warn!("shutdown: unverified: {why}");
        return Verification {
            leftovers: Vec::new(),
            unverified: Some(why),
        };
    };
    let mut buf = Vec::new();
    let leftovers: Vec<Leftover> = targets
        .into_iter()
        .filter_map(|t| {
            // Gone since the scan: not a leftover.
            let state = zinit_process::proc_table::read_process(t.id.pid, Detail::Basic, &mut buf)
                .filter(|i| i.start_time == t.id.start_time && !i.is_zombie())?
                .state;
            let why = match state {
                ProcState::Uninterruptible => {
                    "in uninterruptible sleep (D): SIGKILL lands only when its system call returns"
                        .to_string()
                }
                s => format!("still alive after SIGKILL (state {})", s.code()),
            };
            Some(Leftover {
                pid: t.id.pid,
                name: t.name,
                reason: format!("{} ({why})", t.reason),
            })
        })
        .collect();
    for left in &leftovers {
        tracing::warn!(
            "shutdown: left: pid {} ({}): {}",
            left.pid,
            left.name,
            left.reason
        );
    }
    Verification {
        leftovers,
        unverified: None,
    }
}
