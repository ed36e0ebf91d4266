//! Crash safety: a server that starts where another one died takes its
//! units over instead of starting them a second time.
//!
//! Every server keeps a record of its units (`record`). A server that
//! starts and finds the record or the cgroup directories of a server that
//! is gone:
//!
//! - thaws anything frozen (a server killed between freezing and killing
//!   leaves its units frozen);
//! - adopts each unit that is still configured and unchanged (same file
//!   digest) and still has live processes: it watches the old main process
//!   through a pidfd (its exit status will be unknown) and the unit's
//!   membership (its cgroup, or its recorded processes) as for any unit, and
//!   does not start it again; running jobs are adopted as jobs;
//! - stops each unit that is no longer configured, or whose file changed,
//!   with its recorded stop signal, timeout and mode, then starts the new
//!   one;
//! - keeps an unchanged oneshot that had exited successfully as exited (it
//!   is not run a second time, and its dependents stay satisfied);
//! - starts afresh, with a note, from a record of another boot or another
//!   container run (its boot id and PID namespace differ): a container's
//!   `/run` may keep the record of the run its runtime killed;
//! - finishes a shutdown that was in progress, within what is left of its
//!   deadline (at least a few seconds), and exits as the old server would.
//!
//! A recorded process counts only while its start time matches: a pid that
//! was reused is never touched. What it did is in the log, in `zinit info`
//! and in the events.

mod record;

pub(crate) use record::unix_ms_in;
pub(crate) use record::{
    Record, RecordFile, RecordedJob, RecordedProcess, RecordedShutdown, RecordedUnit,
};

use crate::config::{ConfigSet, MAX_STOP_TIMEOUT, ServiceConfig};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use zinit_process::stop::StopMode;
use zinit_process::{Cgroup, CgroupRoot, Members, ProcState, ProcessHandle, ProcessId, Signal};

/// The least a taken-over shutdown gets, however little of the old
/// deadline is left.
const FINISH_AT_LEAST: Duration = Duration::from_secs(5);

/// What a server did with what a previous one left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Takeover {
    /// The previous server's pid, if a record was found.
    pub from_pid: Option<i32>,
    /// Units adopted (still running, not started again).
    pub adopted: Vec<String>,
    /// Units stopped because they are no longer configured or changed.
    pub stopped: Vec<String>,
    /// Oneshots that had exited successfully: kept as exited, not run again.
    pub exited: Vec<String>,
    /// Cgroups that were frozen and were thawed.
    pub thawed: usize,
    /// Whether a shutdown in progress is being finished.
    pub finishing_shutdown: bool,
    /// Anything else worth saying (a record that could not be used, ...).
    pub notes: Vec<String>,
}

impl Takeover {
    /// Whether there was anything to take over.
    pub fn is_empty(&self) -> bool {
        self.from_pid.is_none()
            && self.adopted.is_empty()
            && self.exited.is_empty()
            && self.stopped.is_empty()
            && self.thawed == 0
    }
}

/// What to do with a unit found alive.
#[derive(Debug, Clone)]
pub(crate) enum Disposition {
    /// Keep it: it is configured and unchanged (or a running job).
    Adopt,
    /// Stop it (with its old stop settings), then start this configuration.
    Replace(Arc<ServiceConfig>),
    /// Stop it and forget it: it is no longer configured.
    Retire,
}

/// A unit of the previous server whose processes are alive.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub name: String,
    pub job: Option<RecordedJob>,
    /// What it runs with now: the current configuration when adopted, its
    /// recorded stop settings when it is to be stopped.
    pub config: Arc<ServiceConfig>,
    pub members: Members,
    pub cgroup: Option<Cgroup>,
    pub main: ProcessId,
    pub wanted: bool,
    pub disposition: Disposition,
    /// The FIFOs its output goes to, by name (see `crate::streams`).
    pub streams: Vec<String>,
}

/// Everything a starting server takes over.
#[derive(Debug, Default)]
pub(crate) struct TakeoverPlan {
    pub found: Vec<Found>,
    /// Services recorded as stopped by request: they stay stopped.
    pub not_wanted: Vec<String>,
    /// The previous servers' cgroup directories that still hold units.
    pub roots: Vec<CgroupRoot>,
    /// A shutdown to finish: what is left of its deadline, and whether a
    /// reboot follows it.
    pub shutdown_left: Option<(Duration, bool)>,
    pub last_job: u64,
    pub report: Takeover,
}

fn mode_of(text: &str) -> StopMode {
    match text {
        "group" => StopMode::Group,
        "main" => StopMode::Main,
        _ => StopMode::Tree,
    }
}

/// Reads what a previous server left (its record at `record_path`, its
/// cgroup directories beside `own_root`) and decides what to do with it.
/// Fails only when the server that wrote the record still runs.
pub(crate) fn plan(
    record_path: &Path,
    own_root: Option<&CgroupRoot>,
    set: &ConfigSet,
) -> Result<TakeoverPlan, String> {
    let mut plan = TakeoverPlan::default();
    let record = match record::read(record_path) {
        Ok(Some(record)) if !record.run.is_empty() && record.run != record::run_id() => {
            plan.report.notes.push(format!(
                "record not used: it is from another boot or container run ({}); starting afresh",
                record.run
            ));
            None
        }
        Ok(record) => record,
        Err(why) => {
            plan.report.notes.push(format!("record not used: {why}"));
            None
        }
    };
    if let Some(record) = &record {
        let server = ProcessId {
            pid: record.server.pid,
            start_time: record.server.start_time,
        };
        // A server that died but is not reaped yet (a zombie) is gone.
        let still_runs = zinit_process::proc_table::read_process(
            server.pid,
            zinit_process::Detail::Basic,
            &mut Vec::new(),
        )
        .is_some_and(|p| p.start_time == server.start_time && p.state != ProcState::Zombie);
        if still_runs && server.pid != std::process::id() as i32 {
            return Err(format!(
                "the zinit_server that wrote {} (pid {}) still runs; stop it first",
                record_path.display(),
                server.pid
            ));
        }
        plan.report.from_pid = Some(server.pid);
        plan.last_job = record.last_job;
        plan.shutdown_left = record.shutdown_left().map(|left| {
            let reboot = record.shutdown.is_some_and(|s| s.reboot);
            (left.max(FINISH_AT_LEAST), reboot)
        });
        plan.report.finishing_shutdown = plan.shutdown_left.is_some();
    }

    // The cgroup directories the previous server used: its own, which is
    // ours too (the same identity), and any it had adopted.
    let mut roots: Vec<CgroupRoot> = Vec::new();
    let recorded_roots = record.iter().flat_map(|r| r.cgroup_roots.iter());
    for root in recorded_roots.filter_map(|p| CgroupRoot::existing(p.clone())) {
        if own_root.is_none_or(|own| own.path() != root.path()) {
            roots.push(root);
        }
    }
    for root in roots.iter().chain(own_root) {
        plan.report.thawed += root.thaw_all();
    }

    let mut seen: HashSet<String> = HashSet::new();
    for unit in record.iter().flat_map(|r| r.units.iter()) {
        seen.insert(unit.name.clone());
        if let Some(found) = found_from_record(unit, set) {
            plan.found.push(found);
        } else if !unit.wanted && unit.job.is_none() {
            plan.not_wanted.push(unit.name.clone());
        } else if unit.state == "exited"
            && unit.job.is_none()
            && set
                .services
                .get(&unit.name)
                .is_some_and(|c| c.oneshot && c.digest() == unit.digest)
        {
            // Its result stands: a migration that ran is not run again,
            // and what waits for it stays satisfied.
            plan.report.exited.push(unit.name.clone());
        }
    }
    // Unit cgroups nobody recorded (a server that died before its record
    // said so): adopted by name if configured, else stopped.
    for root in roots.iter().chain(own_root) {
        for (name, cgroup) in root.units() {
            if seen.contains(&name) {
                continue;
            }
            if let Some(found) = found_from_cgroup(&name, cgroup, set) {
                plan.report.notes.push(format!(
                    "{name}: found in {} without a record",
                    root.path().display()
                ));
                seen.insert(name);
                plan.found.push(found);
            }
        }
    }
    for found in &plan.found {
        match found.disposition {
            Disposition::Adopt => plan.report.adopted.push(found.name.clone()),
            Disposition::Replace(_) | Disposition::Retire => {
                plan.report.stopped.push(found.name.clone())
            }
        }
    }
    plan.roots = roots;
    Ok(plan)
}

/// The recorded unit, if any of its processes is alive.
fn found_from_record(unit: &RecordedUnit, set: &ConfigSet) -> Option<Found> {
    let main = unit.main.map(|p| ProcessId {
        pid: p.pid,
        start_time: p.start_time,
    })?;
    let cgroup = unit.cgroup.as_ref().filter(|p| p.is_dir()).map(Cgroup::at);
    let members = Members::adopted(
        main,
        cgroup.clone(),
        unit.members
            .iter()
            .map(|p| ProcessId {
                pid: p.pid,
                start_time: p.start_time,
            })
            .collect(),
    );
    let alive = members.scan_now().ok()?;
    if alive.is_empty() {
        return None;
    }
    if cgroup.is_none() {
        // Without a cgroup, an escalation freezes with SIGSTOP: continue
        // what a server that died mid-escalation left stopped.
        for member in alive.iter().filter(|m| m.state == ProcState::Stopped) {
            if let Ok(handle) = ProcessHandle::open(member.id) {
                let _ = handle.signal(Signal::SIGCONT);
            }
        }
    }
    let signal = Signal::try_from(unit.stop_signal).unwrap_or(Signal::SIGTERM);
    let timeout = Duration::from_millis(unit.stop_timeout_ms).min(MAX_STOP_TIMEOUT);
    let mode = mode_of(&unit.stop_mode);
    let with_old_stop = |config: &ServiceConfig| {
        let mut old = config.clone();
        old.stop_signal = signal;
        old.stop_timeout = timeout;
        old.stop_mode = mode;
        old.stop_command = None;
        Arc::new(old)
    };
    let (config, disposition) = match (&unit.job, set.services.get(&unit.name)) {
        (Some(job), _) => {
            let mut config =
                ServiceConfig::recorded(&unit.name, job.exec.clone(), signal, timeout, mode);
            config.oneshot = true;
            (Arc::new(config), Disposition::Adopt)
        }
        (None, Some(current)) if current.digest() == unit.digest => {
            (Arc::new(current.clone()), Disposition::Adopt)
        }
        (None, Some(current)) => (
            with_old_stop(current),
            Disposition::Replace(Arc::new(current.clone())),
        ),
        (None, None) => (
            Arc::new(ServiceConfig::recorded(
                &unit.name,
                Vec::new(),
                signal,
                timeout,
                mode,
            )),
            Disposition::Retire,
        ),
    };
    Some(Found {
        name: unit.name.clone(),
        job: unit.job.clone(),
        config,
        main,
        members,
        cgroup,
        wanted: unit.wanted,
        disposition,
        streams: unit.streams.clone(),
    })
}

/// A unit known only by its populated cgroup: its oldest process stands
/// for its main process.
fn found_from_cgroup(name: &str, cgroup: Cgroup, set: &ConfigSet) -> Option<Found> {
    let main = cgroup
        .procs()
        .ok()?
        .into_iter()
        .filter_map(ProcessId::of)
        .min_by_key(|id| (id.start_time, id.pid))?;
    let (config, disposition) = match set.services.get(name) {
        Some(current) => (Arc::new(current.clone()), Disposition::Adopt),
        None => (
            Arc::new(ServiceConfig::recorded(
                name,
                Vec::new(),
                Signal::SIGTERM,
                crate::config::DEFAULT_STOP_TIMEOUT,
                StopMode::Tree,
            )),
            Disposition::Retire,
        ),
    };
    Some(Found {
        name: name.to_string(),
        job: None,
        config,
        members: Members::new(main, Some(cgroup.clone())),
        cgroup: Some(cgroup),
        main,
        wanted: true,
        disposition,
        streams: Vec::new(),
    })
}
