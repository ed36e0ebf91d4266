//! The one task that owns every unit's state. Requests, process exits,
//! readiness results, finished stops and back-off timers all arrive as
//! messages (`messages`); each is handled to completion before the next, so
//! transitions never race. Anything slow (a stop, a readiness test, waiting
//! for exits) runs in a task of its own (`crate::tasks`) that reports back.
//!
//! The handling is split by concept: `lifecycle` (starting, exits,
//! readiness, stops, back-off), `requests` (start, stop, restart, signal,
//! queries), `changes` (add, remove, reload), `jobs`, and `shutdown` (the
//! actor's part of the shutdown: freezing intake and stopping one unit).

mod changes;
mod jobs;
mod lifecycle;
pub(crate) mod messages;
mod requests;
mod shutdown;
mod takeover;

use crate::api::{StopResult, SupervisorError};
use crate::config::{ConfigError, ConfigSet};
use crate::events::{EventBus, EventKind};
use crate::logs::LogHub;
use crate::shutdown::DoneTo;
use crate::state::State;
use crate::stopping::UnitStopReport;
use crate::streams::StreamDir;
use crate::takeover::{RecordFile, TakeoverPlan};
use crate::unit::{Unit, UnitKind, UnitStatus};
use messages::{Msg, Reply};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;
use zinit_process::CgroupRoot;

/// Requests waiting for a unit to get somewhere, by unit name.
#[derive(Default)]
pub(crate) struct Waiters {
    /// Start and restart requests, answered once the unit settles.
    start: HashMap<String, Vec<Reply<UnitStatus>>>,
    /// Stop requests, answered when the running stop finishes.
    stop: HashMap<String, Vec<Reply<StopResult>>>,
    /// Remove requests, answered when the stop before the removal finishes.
    remove: HashMap<String, Vec<Reply<Option<UnitStopReport>>>>,
    /// The shutdown's stop of a unit, answered when that stop finishes.
    shutdown: HashMap<String, Vec<DoneTo>>,
}

pub(crate) struct Actor {
    config_dir: PathBuf,
    cgroups: Option<CgroupRoot>,
    hub: Arc<LogHub>,
    events: EventBus,
    tx: mpsc::UnboundedSender<Msg>,
    units: BTreeMap<String, Unit>,
    invalid: BTreeMap<String, Vec<ConfigError>>,
    next_instance: u64,
    next_job: u64,
    waiters: Waiters,
    last_stop: HashMap<String, UnitStopReport>,
    /// Set by the shutdown: no new starts, restarts or jobs.
    intake_frozen: bool,
    /// The deadline of a running shutdown, in ms since the Unix epoch, and
    /// whether a reboot follows it.
    shutdown_deadline: Option<(u64, bool)>,
    /// The record a successor would take over from (`None`: none kept).
    record_file: Option<RecordFile>,
    /// Cgroup directories of previous servers whose units were adopted.
    adopted_roots: Vec<PathBuf>,
    /// When the record was last handed to its writer.
    record_saved: Option<std::time::Instant>,
    /// A `Msg::SaveRecord` is on its way.
    record_timer: bool,
    /// Where units' output FIFOs live (`None`: plain pipes).
    pub(crate) streams: Option<StreamDir>,
}

impl Actor {
    pub fn new(
        config_dir: PathBuf,
        cgroups: Option<CgroupRoot>,
        hub: Arc<LogHub>,
        events: EventBus,
        tx: mpsc::UnboundedSender<Msg>,
        set: ConfigSet,
        record_file: Option<RecordFile>,
    ) -> Self {
        let mut actor = Self {
            config_dir,
            cgroups,
            hub,
            events,
            tx,
            units: BTreeMap::new(),
            invalid: set.invalid,
            next_instance: 0,
            next_job: 0,
            waiters: Waiters::default(),
            last_stop: HashMap::new(),
            intake_frozen: false,
            shutdown_deadline: None,
            record_file,
            adopted_roots: Vec::new(),
            record_saved: None,
            record_timer: false,
            streams: None,
        };
        for (name, config) in set.services {
            let mut unit = Unit::new(Arc::new(config), UnitKind::Service);
            unit.wanted = true;
            actor.units.insert(name, unit);
        }
        actor
    }

    /// Handles messages until every handle is gone. After each batch (what
    /// arrived meanwhile is handled together), the record is saved if it
    /// changed.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>, takeover: TakeoverPlan) {
        self.take_over(takeover);
        self.reconcile();
        self.save_record();
        while let Some(msg) = rx.recv().await {
            self.handle(msg);
            while let Ok(msg) = rx.try_recv() {
                self.handle(msg);
            }
            self.reconcile();
            self.answer_start_waiters();
            self.save_record();
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Req(request) => self.request(request),
            Msg::MainExited {
                unit,
                instance,
                status,
                remaining,
            } => self.main_exited(&unit, instance, status, remaining),
            Msg::Followed {
                unit,
                instance,
                main,
            } => self.followed(&unit, instance, main),
            Msg::Empty { unit, instance } => self.empty(&unit, instance),
            Msg::Ready {
                unit,
                instance,
                result,
            } => self.ready(&unit, instance, result),
            Msg::StopDone {
                unit,
                stop_op,
                report,
            } => self.stop_done(&unit, stop_op, report),
            Msg::BackoffDone { unit, timers } => self.backoff_done(&unit, timers),
            Msg::OutputClosed { unit, instance } => self.output_closed(&unit, instance),
            Msg::SaveRecord => self.record_timer = false,
        }
    }

    /// Every output pipe of an instance reached end of file.
    fn output_closed(&mut self, name: &str, instance: u64) {
        let Some(current) = self
            .units
            .get_mut(name)
            .and_then(|u| u.instance.as_mut())
            .filter(|i| i.id == instance)
        else {
            return;
        };
        current.output_closed = true;
        self.finish_job_output(name);
    }

    /// A job's output is complete once the job has ended (or never started)
    /// and its pipes are closed: its log followers end (`job run` waits for
    /// exactly that).
    fn finish_job_output(&self, name: &str) {
        let Some(unit) = self.units.get(name) else {
            return;
        };
        let ended = matches!(unit.kind, UnitKind::Job { .. })
            && matches!(unit.state, State::Exited | State::Failed | State::Stopped)
            && unit.instance.as_ref().is_none_or(|i| i.output_closed);
        if ended {
            self.hub.finish(name);
        }
    }

    /// Moves a unit to `to` if its state machine allows it, recording why,
    /// and tells the event stream. The only place a unit's state changes.
    fn set_state(&mut self, name: &str, to: State, reason: impl Into<String>) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        let reason = reason.into();
        let from = unit.state;
        if from == to {
            unit.reason = reason;
            return;
        }
        if !from.can_become(to) {
            tracing::error!("unit {name}: refused transition {from} -> {to} ({reason})");
            return;
        }
        unit.state = to;
        unit.since = SystemTime::now();
        unit.reason = reason.clone();
        if to != State::Blocked {
            unit.waiting_for.clear();
        }
        tracing::info!("{name}: {from} -> {to}: {reason}");
        self.events
            .send(name, EventKind::State { from, to, reason });
        if let UnitKind::Job { .. } = unit.kind
            && matches!(to, State::Exited | State::Failed | State::Stopped)
        {
            let status = unit.last_exit;
            self.events.send(name, EventKind::JobFinished { status });
            self.finish_job_output(name);
        }
    }

    fn list(&self) -> Vec<UnitStatus> {
        let mut out: Vec<UnitStatus> = self.units.iter().map(|(n, u)| u.status(n)).collect();
        out.extend(
            self.invalid
                .iter()
                .map(|(name, errors)| invalid_status(name, errors)),
        );
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn status_of(&self, name: &str) -> Result<UnitStatus, SupervisorError> {
        if let Some(unit) = self.units.get(name) {
            return Ok(unit.status(name));
        }
        if let Some(errors) = self.invalid.get(name) {
            return Ok(invalid_status(name, errors));
        }
        Err(SupervisorError::NotFound(name.to_string()))
    }

    fn unit_or_error(&self, name: &str) -> Result<(), SupervisorError> {
        if self.units.contains_key(name) {
            Ok(())
        } else if let Some(errors) = self.invalid.get(name) {
            Err(SupervisorError::FailedPrecondition(format!(
                "{name} has an invalid service file:\n{}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )))
        } else {
            Err(SupervisorError::NotFound(name.to_string()))
        }
    }

    /// A request that changes a unit: refused during a shutdown, and for
    /// unknown or invalid units.
    fn admit(&self, name: &str) -> Result<(), SupervisorError> {
        if self.intake_frozen {
            return Err(SupervisorError::ShuttingDown);
        }
        self.unit_or_error(name)
    }
}

fn invalid_status(name: &str, errors: &[ConfigError]) -> UnitStatus {
    UnitStatus {
        name: name.to_string(),
        kind: UnitKind::Service,
        state: State::Failed,
        since: SystemTime::now(),
        reason: "invalid service file".to_string(),
        pid: None,
        processes_alive: false,
        restarts: 0,
        last_exit: None,
        command: Vec::new(),
        after: Vec::new(),
        waiting_for: Vec::new(),
        oneshot: false,
        invalid: errors.iter().map(ToString::to_string).collect(),
        adopted: false,
    }
}
