//! The one task that owns every unit's state. Requests, process exits,
//! readiness results, finished stops and back-off timers all arrive as
//! messages; each is handled to completion before the next, so transitions
//! never race. Anything slow (a stop, a readiness test, waiting for exits)
//! runs in its own task and reports back with the instance or operation
//! number it was started for, so stale reports are ignored.

use crate::backoff::Next;
use crate::command::{CommandResult, command_for, run_bounded};
use crate::config::{
    ConfigError, ConfigErrors, ConfigSet, RestartMode, ServiceConfig, load_dir, parse_file,
};
use crate::events::{EventBus, EventKind};
use crate::logs::{LogHub, RotatingFile, Sinks, Stream, capture};
use crate::state::State;
use crate::stopping::{UnitStopReport, stop_unit};
use crate::supervisor::{JobSpec, ReloadSummary, ShutdownUnit, StopResult, SupervisorError};
use crate::unit::{Instance, Then, Unit, UnitKind, UnitStatus};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};
use zinit_process::spawn::{ExitStatus, Output};
use zinit_process::watch::ExitWatcher;
use zinit_process::{CgroupRoot, Members, ProcessHandle, Signal};

type Reply<T> = oneshot::Sender<Result<T, SupervisorError>>;

/// Requests from the handle.
pub(crate) enum Request {
    List(oneshot::Sender<Vec<UnitStatus>>),
    Status(String, Reply<UnitStatus>),
    Start(String, bool, Reply<UnitStatus>),
    Stop(String, Reply<StopResult>),
    Restart(String, Reply<UnitStatus>),
    Add {
        source: PathBuf,
        file_name: String,
        text: String,
        reply: Reply<String>,
    },
    Remove(String, Reply<()>),
    Reload(Reply<ReloadSummary>),
    Signal(String, Signal, bool, Reply<Vec<i32>>),
    RunJob(JobSpec, Reply<String>),
    Members(Option<String>, Reply<Vec<(String, Members)>>),
    BeginShutdown(oneshot::Sender<Vec<ShutdownUnit>>),
    Configs(oneshot::Sender<Vec<Arc<ServiceConfig>>>),
    UnitShutDown(String, String),
}

/// Everything the actor handles.
pub(crate) enum Msg {
    Req(Request),
    MainExited {
        unit: String,
        instance: u64,
        status: ExitStatus,
    },
    Empty {
        unit: String,
        instance: u64,
    },
    Ready {
        unit: String,
        instance: u64,
        result: Result<(), String>,
    },
    StopDone {
        unit: String,
        op: u64,
        report: Result<UnitStopReport, String>,
    },
    BackoffDone {
        unit: String,
        timer: u64,
    },
}

/// How long to wait after SIGKILL in a single-unit stop.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// Finished jobs kept for `job list`.
const KEEP_FINISHED_JOBS: usize = 100;

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
    start_waiters: HashMap<String, Vec<Reply<UnitStatus>>>,
    stop_waiters: HashMap<String, Vec<Reply<StopResult>>>,
    remove_waiters: HashMap<String, Vec<Reply<()>>>,
    last_stop: HashMap<String, UnitStopReport>,
    /// Set by the shutdown: no new starts, restarts or jobs.
    intake_frozen: bool,
}

impl Actor {
    pub fn new(
        config_dir: PathBuf,
        cgroups: Option<CgroupRoot>,
        hub: Arc<LogHub>,
        events: EventBus,
        tx: mpsc::UnboundedSender<Msg>,
        set: ConfigSet,
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
            start_waiters: HashMap::new(),
            stop_waiters: HashMap::new(),
            remove_waiters: HashMap::new(),
            last_stop: HashMap::new(),
            intake_frozen: false,
        };
        for (name, config) in set.services {
            let mut unit = Unit::new(Arc::new(config), UnitKind::Service);
            unit.wanted = true;
            actor.units.insert(name, unit);
        }
        actor
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        self.reconcile();
        while let Some(msg) = rx.recv().await {
            self.handle(msg);
            self.reconcile();
            self.answer_waiters();
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Req(request) => self.request(request),
            Msg::MainExited {
                unit,
                instance,
                status,
            } => self.main_exited(&unit, instance, status),
            Msg::Empty { unit, instance } => self.empty(&unit, instance),
            Msg::Ready {
                unit,
                instance,
                result,
            } => self.ready(&unit, instance, result),
            Msg::StopDone { unit, op, report } => self.stop_done(&unit, op, report),
            Msg::BackoffDone { unit, timer } => self.backoff_done(&unit, timer),
        }
    }

    // ----- state changes -------------------------------------------------

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
        }
    }

    /// Starts every wanted unit whose dependencies are satisfied; marks the
    /// others blocked with what they wait for. Repeats until nothing more
    /// starts, so a unit that became ready in this pass wakes its dependents
    /// whatever the order of their names.
    fn reconcile(&mut self) {
        if self.intake_frozen {
            return;
        }
        while self.reconcile_pass() {}
    }

    /// One pass of [`Actor::reconcile`]; whether it started anything.
    fn reconcile_pass(&mut self) -> bool {
        let mut started = false;
        let names: Vec<String> = self.units.keys().cloned().collect();
        for name in names {
            let unit = &self.units[&name];
            if !unit.wanted
                || !matches!(unit.state, State::Stopped | State::Blocked)
                || unit.alive()
            {
                continue;
            }
            let waiting: Vec<String> = unit
                .config
                .after
                .iter()
                .filter(|dep| !self.units.get(*dep).is_some_and(Unit::satisfies_dependents))
                .cloned()
                .collect();
            if waiting.is_empty() {
                self.spawn(&name);
                started = true;
                continue;
            }
            let reason = format!(
                "waiting for {}",
                waiting
                    .iter()
                    .map(|dep| match self.units.get(dep) {
                        Some(u) => format!("{dep} ({})", u.state),
                        None => format!("{dep} (not loaded)"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.set_state(&name, State::Blocked, reason);
            if let Some(unit) = self.units.get_mut(&name) {
                unit.waiting_for = waiting;
            }
        }
        started
    }

    fn spawn(&mut self, name: &str) {
        let Some(unit) = self.units.get(name) else {
            return;
        };
        let config = unit.config.clone();
        let cgroup = match &self.cgroups {
            Some(root) => match root.create(name) {
                Ok(cgroup) => Some(cgroup),
                Err(e) => {
                    tracing::warn!("{name}: no cgroup ({e}); using its process group");
                    None
                }
            },
            None => None,
        };
        let log_mode = config.log.mode;
        let output = if log_mode == crate::config::LogMode::Null && config.log.file.is_none() {
            Output::Null
        } else {
            Output::Piped
        };
        let mut command = command_for(&config, &config.exec)
            .stdout(output)
            .stderr(output);
        if let Some(cgroup) = &cgroup {
            command = command.cgroup(cgroup.clone());
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let reason = format!("cannot start {}: {e}", config.exec[0]);
                self.set_state(name, State::Starting, "spawning");
                self.after_failure(name, reason);
                return;
            }
        };
        self.next_instance += 1;
        let instance_id = self.next_instance;
        let members = Members::of_child(&child);
        let pid = child.pid();

        let sinks = Sinks {
            echo: log_mode == crate::config::LogMode::Stdout,
            file: config.log.file.as_ref().and_then(|f| {
                match RotatingFile::open(f.path.clone(), f.max_size, f.keep) {
                    Ok(file) => Some(Arc::new(Mutex::new(file))),
                    Err(e) => {
                        self.events.send(
                            name,
                            EventKind::Warning {
                                message: format!("cannot write log file {}: {e}", f.path.display()),
                            },
                        );
                        None
                    }
                }
            }),
        };
        for (fd, stream) in [
            (child.take_stdout(), Stream::Stdout),
            (child.take_stderr(), Stream::Stderr),
        ] {
            if let Some(fd) = fd {
                tokio::spawn(capture(
                    self.hub.clone(),
                    name.to_string(),
                    stream,
                    fd,
                    sinks.clone(),
                ));
            }
        }
        tokio::spawn(monitor(
            child,
            members.clone(),
            self.tx.clone(),
            name.to_string(),
            instance_id,
        ));

        let unit = self.units.get_mut(name).expect("checked above");
        unit.instance = Some(Instance {
            id: instance_id,
            pid,
            members,
            cgroup,
            started: Instant::now(),
            alive: true,
        });
        unit.last_exit = None;
        match config.test.clone() {
            Some(test) => {
                self.set_state(
                    name,
                    State::Starting,
                    format!("started (pid {pid}); waiting for its test to pass"),
                );
                tokio::spawn(readiness(
                    config,
                    test,
                    self.tx.clone(),
                    name.to_string(),
                    instance_id,
                ));
            }
            None => {
                self.set_state(name, State::Starting, format!("started (pid {pid})"));
                self.set_state(name, State::Running, format!("running (pid {pid})"));
            }
        }
    }

    fn begin_stop(&mut self, name: &str, then: Then, reason: &str) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        unit.then = then;
        if unit.state == State::Stopping {
            return;
        }
        let Some(instance) = unit.instance.clone() else {
            return;
        };
        unit.op += 1;
        let op = unit.op;
        let config = unit.config.clone();
        self.set_state(name, State::Stopping, reason.to_string());
        let tx = self.tx.clone();
        let unit_name = name.to_string();
        tokio::spawn(async move {
            let budget = config.stop_timeout;
            let report = stop_unit(&config, &instance.members, budget, KILL_WAIT, None)
                .await
                .map_err(|e| e.to_string());
            let _ = tx.send(Msg::StopDone {
                unit: unit_name,
                op,
                report,
            });
        });
    }

    /// A start failed (spawn error, readiness timeout): restart by policy or fail.
    fn after_failure(&mut self, name: &str, reason: String) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        let restart = unit.wanted && unit.config.restart.mode != RestartMode::Never;
        if !restart {
            self.set_state(name, State::Failed, reason);
            return;
        }
        self.back_off(name, reason);
    }

    /// Counts a restart for the unit's back-off (from when its instance
    /// started) and schedules it, or fails the unit at its limit.
    fn back_off(&mut self, name: &str, reason: String) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        let started = unit
            .instance
            .as_ref()
            .map_or_else(Instant::now, |i| i.started);
        let next = unit
            .backoff
            .after_exit(&unit.config.restart, started, Instant::now());
        self.schedule_restart(name, next, reason);
    }

    fn schedule_restart(&mut self, name: &str, next: Next, reason: String) {
        match next {
            Next::GiveUp { restarts } => {
                self.set_state(
                    name,
                    State::Failed,
                    format!("{reason}; gave up after {restarts} restarts"),
                );
            }
            Next::RestartAfter { delay, attempt } => {
                let Some(unit) = self.units.get_mut(name) else {
                    return;
                };
                unit.timer += 1;
                let timer = unit.timer;
                self.set_state(
                    name,
                    State::BackOff,
                    format!(
                        "{reason}; restart #{attempt} in {}",
                        humantime::format_duration(round_ms(delay))
                    ),
                );
                self.events
                    .send(name, EventKind::Restarting { attempt, delay });
                let tx = self.tx.clone();
                let unit_name = name.to_string();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Msg::BackoffDone {
                        unit: unit_name,
                        timer,
                    });
                });
            }
        }
    }

    // ----- reports from tasks ---------------------------------------------

    fn main_exited(&mut self, name: &str, instance: u64, status: ExitStatus) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        if unit.instance.as_ref().is_none_or(|i| i.id != instance) {
            return;
        }
        unit.last_exit = Some(status);
        if !matches!(unit.state, State::Starting | State::Running) {
            return;
        }
        let config = unit.config.clone();
        let restart = unit.wanted
            && match config.restart.mode {
                RestartMode::Always => true,
                RestartMode::OnFailure => !status.success(),
                RestartMode::Never => false,
            };
        if !restart {
            let state = if status.success() {
                State::Exited
            } else {
                State::Failed
            };
            self.set_state(name, state, format!("main process ended: {status}"));
            return;
        }
        self.back_off(name, format!("main process ended: {status}"));
    }

    fn empty(&mut self, name: &str, instance: u64) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        let stopping = unit.state == State::Stopping;
        if let Some(current) = unit.instance.as_mut().filter(|i| i.id == instance) {
            current.alive = false;
            // A running stop still reads the cgroup; it removes it when done.
            if let Some(cgroup) = current.cgroup.as_ref().filter(|_| !stopping) {
                let _ = cgroup.remove();
            }
        }
    }

    fn ready(&mut self, name: &str, instance: u64, result: Result<(), String>) {
        let Some(unit) = self.units.get(name) else {
            return;
        };
        if unit.state != State::Starting || unit.instance.as_ref().is_none_or(|i| i.id != instance)
        {
            return;
        }
        let pid = unit.instance.as_ref().map(|i| i.pid).unwrap_or(0);
        match result {
            Ok(()) => self.set_state(
                name,
                State::Running,
                format!("running (pid {pid}); its test passed"),
            ),
            Err(reason) => self.begin_stop(name, Then::Failure(reason.clone()), &reason),
        }
    }

    fn stop_done(&mut self, name: &str, op: u64, report: Result<UnitStopReport, String>) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        if unit.op != op || unit.state != State::Stopping {
            return;
        }
        let leftovers = report
            .as_ref()
            .map(|r| r.processes.leftovers.len())
            .unwrap_or(0);
        if let Some(instance) = unit.instance.as_mut() {
            instance.alive = leftovers > 0;
            if leftovers == 0
                && let Some(cgroup) = &instance.cgroup
            {
                let _ = cgroup.remove();
            }
        }
        let then = std::mem::replace(&mut unit.then, Then::Rest);
        let summary = match &report {
            Ok(r) if leftovers > 0 => {
                format!("stopped, but {leftovers} process(es) could not be killed")
            }
            Ok(r) => format!(
                "stopped ({}, {:.2}s)",
                match r.outcome {
                    zinit_process::StopOutcome::Graceful => "gracefully",
                    _ => "killed at its timeout",
                },
                r.elapsed.as_secs_f64()
            ),
            Err(e) => format!("stopped with an error: {e}"),
        };
        if let Ok(report) = report {
            self.last_stop.insert(name.to_string(), report);
        }
        match then {
            Then::Rest => self.set_state(name, State::Stopped, summary),
            Then::Start => {
                self.set_state(name, State::Stopped, summary);
                if let Some(unit) = self.units.get_mut(name) {
                    unit.wanted = true;
                }
            }
            Then::Failure(reason) => {
                self.set_state(name, State::Failed, reason.clone());
                if self
                    .units
                    .get(name)
                    .is_some_and(|u| u.wanted && u.config.restart.mode != RestartMode::Never)
                {
                    self.back_off(name, reason);
                }
            }
            Then::Remove { delete_file } => {
                self.set_state(name, State::Stopped, summary);
                self.forget(name, delete_file);
            }
            Then::Replace(config) => {
                self.set_state(name, State::Stopped, summary);
                if let Some(unit) = self.units.get_mut(name) {
                    unit.config = config;
                    unit.backoff.reset();
                }
            }
        }
        self.answer_stop_waiters(name);
    }

    fn backoff_done(&mut self, name: &str, timer: u64) {
        let Some(unit) = self.units.get(name) else {
            return;
        };
        if unit.timer != timer || unit.state != State::BackOff || !unit.wanted {
            return;
        }
        self.start_afresh(name, "restarting");
    }

    /// Makes an ended unit startable: what its previous run left is stopped
    /// first (then it starts), else it is simply marked stopped (and
    /// `reconcile` starts it).
    fn start_afresh(&mut self, name: &str, why: &str) {
        if self.units.get(name).is_some_and(Unit::alive) {
            self.begin_stop(
                name,
                Then::Start,
                "stopping what the previous run left before starting",
            );
        } else {
            self.set_state(name, State::Stopped, why);
        }
    }

    // ----- requests --------------------------------------------------------

    fn request(&mut self, request: Request) {
        match request {
            Request::List(reply) => {
                let _ = reply.send(self.list());
            }
            Request::Status(name, reply) => {
                let _ = reply.send(self.status_of(&name));
            }
            Request::Start(name, wait, reply) => self.start(&name, wait, reply),
            Request::Stop(name, reply) => self.stop(&name, reply),
            Request::Restart(name, reply) => self.restart(&name, reply),
            Request::Add {
                source,
                file_name,
                text,
                reply,
            } => {
                let _ = reply.send(self.add(&source, &file_name, &text));
            }
            Request::Remove(name, reply) => self.remove(&name, reply),
            Request::Reload(reply) => {
                let _ = reply.send(self.reload());
            }
            Request::Signal(name, signal, all, reply) => {
                let _ = reply.send(self.signal(&name, signal, all));
            }
            Request::RunJob(spec, reply) => {
                let _ = reply.send(self.run_job(spec));
            }
            Request::Members(name, reply) => {
                let _ = reply.send(self.members(name.as_deref()));
            }
            Request::Configs(reply) => {
                let _ = reply.send(self.units.values().map(|u| u.config.clone()).collect());
            }
            Request::BeginShutdown(reply) => {
                let _ = reply.send(self.begin_shutdown());
            }
            Request::UnitShutDown(name, reason) => {
                if self
                    .units
                    .get(&name)
                    .is_some_and(|u| u.state == State::Stopping)
                {
                    if let Some(unit) = self.units.get_mut(&name)
                        && let Some(instance) = unit.instance.as_mut()
                    {
                        instance.alive = false;
                    }
                    self.set_state(&name, State::Stopped, reason);
                }
            }
        }
    }

    /// Freezes intake and hands every unit with live processes to the
    /// shutdown: nothing starts or restarts from here on.
    fn begin_shutdown(&mut self) -> Vec<ShutdownUnit> {
        self.intake_frozen = true;
        let names: Vec<String> = self.units.keys().cloned().collect();
        let mut out = Vec::new();
        for name in names {
            let unit = self.units.get_mut(&name).expect("listed");
            unit.wanted = false;
            unit.timer += 1;
            unit.then = Then::Rest;
            let alive = unit.alive();
            let instance = unit.instance.clone();
            let config = unit.config.clone();
            match unit.state {
                State::BackOff | State::Blocked if !alive => {
                    self.set_state(&name, State::Stopped, "shutdown: not restarted");
                }
                _ if alive => {
                    if self.units[&name].state != State::Stopping {
                        self.set_state(&name, State::Stopping, "shutting down");
                    }
                    let instance = instance.expect("alive");
                    out.push(ShutdownUnit {
                        name: name.clone(),
                        after: config.after.clone(),
                        config,
                        pid: instance.pid,
                        members: instance.members,
                        job: matches!(self.units[&name].kind, UnitKind::Job { .. }),
                    });
                }
                _ => {}
            }
        }
        for (_, waiters) in self.start_waiters.drain() {
            for reply in waiters {
                let _ = reply.send(Err(SupervisorError::ShuttingDown));
            }
        }
        out
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

    fn start(&mut self, name: &str, wait: bool, reply: Reply<UnitStatus>) {
        if let Err(e) = self.admit(name) {
            let _ = reply.send(Err(e));
            return;
        }
        let unit = self.units.get_mut(name).expect("checked");
        unit.wanted = true;
        unit.backoff.reset();
        match unit.state {
            State::Running | State::Starting => {}
            State::Stopping => unit.then = Then::Start,
            State::BackOff | State::Exited | State::Failed => {
                unit.timer += 1;
                self.start_afresh(name, "start requested");
            }
            State::Stopped | State::Blocked => {}
        }
        if wait {
            self.start_waiters
                .entry(name.to_string())
                .or_default()
                .push(reply);
        } else {
            self.reconcile();
            let _ = reply.send(self.status_of(name));
        }
    }

    fn stop(&mut self, name: &str, reply: Reply<StopResult>) {
        if let Err(e) = self.admit(name) {
            let _ = reply.send(Err(e));
            return;
        }
        let unit = self.units.get_mut(name).expect("checked");
        unit.wanted = false;
        unit.timer += 1;
        if unit.state == State::Stopping {
            if !matches!(unit.then, Then::Remove { .. }) {
                unit.then = Then::Rest;
            }
            self.stop_waiters
                .entry(name.to_string())
                .or_default()
                .push(reply);
            return;
        }
        if unit.alive() {
            self.last_stop.remove(name);
            self.begin_stop(name, Then::Rest, "stop requested");
            self.stop_waiters
                .entry(name.to_string())
                .or_default()
                .push(reply);
            return;
        }
        if unit.state != State::Stopped {
            self.set_state(
                name,
                State::Stopped,
                "stopped by request (nothing was running)",
            );
        }
        let result = self.stop_result(name, None);
        let _ = reply.send(Ok(result));
    }

    fn stop_result(&self, name: &str, report: Option<UnitStopReport>) -> StopResult {
        let running_dependents = self
            .units
            .iter()
            .filter(|(_, u)| u.config.after.iter().any(|d| d == name) && u.alive())
            .map(|(n, _)| n.clone())
            .collect();
        StopResult {
            status: self.units[name].status(name),
            report,
            running_dependents,
        }
    }

    fn answer_stop_waiters(&mut self, name: &str) {
        let Some(waiters) = self.stop_waiters.remove(name) else {
            if let Some(waiters) = self.remove_waiters.remove(name) {
                for reply in waiters {
                    let _ = reply.send(Ok(()));
                }
            }
            return;
        };
        if self.units.contains_key(name) {
            let report = self.last_stop.get(name).cloned();
            for reply in waiters {
                let _ = reply.send(Ok(self.stop_result(name, report.clone())));
            }
        }
        if let Some(waiters) = self.remove_waiters.remove(name) {
            for reply in waiters {
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn restart(&mut self, name: &str, reply: Reply<UnitStatus>) {
        if let Err(e) = self.admit(name) {
            let _ = reply.send(Err(e));
            return;
        }
        let unit = self.units.get_mut(name).expect("checked");
        unit.wanted = true;
        unit.backoff.reset();
        if unit.alive() {
            self.begin_stop(name, Then::Start, "restart requested");
        } else if unit.state != State::Stopped
            && unit.state != State::Blocked
            && unit.state != State::Stopping
        {
            unit.timer += 1;
            self.set_state(name, State::Stopped, "restart requested");
        }
        self.start_waiters
            .entry(name.to_string())
            .or_default()
            .push(reply);
    }

    /// Answers start waiters whose unit has settled: running, exited,
    /// failed, stopped, or blocked on a dependency that is not coming.
    fn answer_waiters(&mut self) {
        let settled: Vec<String> = self
            .start_waiters
            .keys()
            .filter(|name| match self.units.get(*name) {
                None => true,
                Some(unit) => match unit.state {
                    State::Running => !unit.config.oneshot,
                    State::Exited | State::Failed => true,
                    State::Stopped => !unit.wanted,
                    State::Blocked => unit.waiting_for.iter().any(|dep| {
                        self.units
                            .get(dep)
                            .is_none_or(|d| !d.wanted || d.state == State::Failed)
                    }),
                    _ => false,
                },
            })
            .cloned()
            .collect();
        for name in settled {
            let status = self.status_of(&name);
            for reply in self.start_waiters.remove(&name).unwrap_or_default() {
                let _ = reply.send(status.clone());
            }
        }
    }

    fn add(
        &mut self,
        source: &Path,
        file_name: &str,
        text: &str,
    ) -> Result<String, SupervisorError> {
        if self.intake_frozen {
            return Err(SupervisorError::ShuttingDown);
        }
        let invalid = |errors| SupervisorError::InvalidConfig(ConfigErrors(errors));
        let stem = Path::new(file_name)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let is_yaml = Path::new(file_name)
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml");
        if !is_yaml || file_name.contains('/') {
            return Err(invalid(vec![ConfigError::file(
                source,
                "a service file's name ends in .yaml or .yml",
            )]));
        }
        let config = crate::config::parse_service(source, &stem, text).map_err(invalid)?;
        let name = config.name.clone();
        if self.units.contains_key(&name) {
            return Err(SupervisorError::AlreadyExists(name));
        }
        let missing: Vec<ConfigError> = config
            .after
            .iter()
            .filter(|dep| !self.units.contains_key(*dep))
            .map(|dep| {
                ConfigError::field(
                    source,
                    "after",
                    Some(format!("{dep:?}")),
                    "depends on a service that does not exist",
                )
            })
            .collect();
        if !missing.is_empty() {
            return Err(invalid(missing));
        }
        let target = self.config_dir.join(file_name);
        std::fs::write(&target, text)
            .map_err(|e| SupervisorError::Io(format!("cannot write {}: {e}", target.display())))?;
        let mut config = config;
        config.file = target;
        self.invalid.remove(&name);
        let mut unit = Unit::new(Arc::new(config), UnitKind::Service);
        unit.wanted = true;
        self.units.insert(name.clone(), unit);
        Ok(name)
    }

    fn remove(&mut self, name: &str, reply: Reply<()>) {
        if let Some(errors) = self.invalid.remove(name) {
            let file = errors.first().map(|e| e.file.clone());
            if let Some(file) = file {
                let _ = std::fs::remove_file(file);
            }
            let _ = reply.send(Ok(()));
            return;
        }
        let Some(unit) = self.units.get_mut(name) else {
            let _ = reply.send(Err(SupervisorError::NotFound(name.to_string())));
            return;
        };
        if matches!(unit.kind, UnitKind::Job { .. }) {
            let _ = reply.send(Err(SupervisorError::InvalidArgument(format!(
                "{name} is a job; use job cancel"
            ))));
            return;
        }
        unit.wanted = false;
        unit.timer += 1;
        if unit.alive() || unit.state == State::Stopping {
            self.begin_stop(name, Then::Remove { delete_file: true }, "remove requested");
            self.remove_waiters
                .entry(name.to_string())
                .or_default()
                .push(reply);
            return;
        }
        self.forget(name, true);
        let _ = reply.send(Ok(()));
    }

    fn forget(&mut self, name: &str, delete_file: bool) {
        if let Some(unit) = self.units.remove(name) {
            if delete_file {
                let _ = std::fs::remove_file(&unit.config.file);
            }
            self.hub.remove(name);
            for reply in self.start_waiters.remove(name).unwrap_or_default() {
                let _ = reply.send(Err(SupervisorError::NotFound(name.to_string())));
            }
        }
    }

    fn reload(&mut self) -> Result<ReloadSummary, SupervisorError> {
        if self.intake_frozen {
            return Err(SupervisorError::ShuttingDown);
        }
        let set = load_dir(&self.config_dir)
            .map_err(|e| SupervisorError::InvalidConfig(ConfigErrors(vec![e])))?;
        let errors = set.errors();
        if !errors.is_empty() {
            return Err(SupervisorError::InvalidConfig(ConfigErrors(errors)));
        }
        let mut summary = ReloadSummary::default();
        let services: Vec<String> = self
            .units
            .iter()
            .filter(|(_, u)| u.kind == UnitKind::Service)
            .map(|(n, _)| n.clone())
            .collect();
        for name in services {
            if set.services.contains_key(&name) {
                continue;
            }
            summary.removed.push(name.clone());
            let unit = self.units.get_mut(&name).expect("listed");
            unit.wanted = false;
            unit.timer += 1;
            if unit.alive() || unit.state == State::Stopping {
                self.begin_stop(
                    &name,
                    Then::Remove { delete_file: false },
                    "its file was removed",
                );
            } else {
                self.forget(&name, false);
            }
        }
        for (name, config) in set.services {
            let config = Arc::new(config);
            match self.units.get_mut(&name) {
                None => {
                    summary.added.push(name.clone());
                    let mut unit = Unit::new(config, UnitKind::Service);
                    unit.wanted = true;
                    self.units.insert(name, unit);
                }
                Some(unit) if unit.config.source == config.source => summary.unchanged.push(name),
                Some(unit) => {
                    summary.changed.push(name.clone());
                    if unit.alive() || unit.state == State::Stopping {
                        unit.wanted = true;
                        self.begin_stop(&name, Then::Replace(config), "its file changed");
                    } else {
                        unit.config = config;
                        unit.backoff.reset();
                        unit.wanted = true;
                        if unit.state != State::Stopped {
                            unit.timer += 1;
                            self.set_state(&name, State::Stopped, "its file changed");
                        }
                    }
                }
            }
        }
        self.invalid.clear();
        Ok(summary)
    }

    fn signal(
        &mut self,
        name: &str,
        signal: Signal,
        all: bool,
    ) -> Result<Vec<i32>, SupervisorError> {
        self.unit_or_error(name)?;
        let unit = &self.units[name];
        let Some(instance) = unit.instance.as_ref().filter(|i| i.alive) else {
            return Err(SupervisorError::FailedPrecondition(format!(
                "{name} is not running"
            )));
        };
        let targets: Vec<zinit_process::ProcessId> = if all {
            instance
                .members
                .scan_now()
                .map_err(|e| SupervisorError::Io(e.to_string()))?
                .into_iter()
                .map(|m| m.id)
                .collect()
        } else {
            vec![instance.members.root()]
        };
        let mut sent = Vec::new();
        for id in targets {
            if let Ok(handle) = ProcessHandle::open(id)
                && handle.signal(signal).is_ok()
            {
                sent.push(id.pid);
            }
        }
        if sent.is_empty() {
            return Err(SupervisorError::FailedPrecondition(format!(
                "{name}'s main process has exited"
            )));
        }
        Ok(sent)
    }

    fn run_job(&mut self, spec: JobSpec) -> Result<String, SupervisorError> {
        if self.intake_frozen {
            return Err(SupervisorError::ShuttingDown);
        }
        let (config, from) = match spec {
            JobSpec::Named(service) => {
                let path = ["yaml", "yml"]
                    .iter()
                    .map(|ext| self.config_dir.join(format!("{service}.{ext}")))
                    .find(|p| p.exists())
                    .ok_or_else(|| SupervisorError::NotFound(service.clone()))?;
                let config = parse_file(&path)
                    .map_err(|e| SupervisorError::InvalidConfig(ConfigErrors(e)))?;
                (config, Some(service))
            }
            JobSpec::Command(argv) => {
                if argv.is_empty() || argv[0].is_empty() {
                    return Err(SupervisorError::InvalidArgument(
                        "a job needs a command".to_string(),
                    ));
                }
                let text = format!(
                    "exec: {}\noneshot: true\n",
                    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_default()
                );
                let config = crate::config::parse_service(Path::new("(job command)"), "job", &text)
                    .map_err(|e| SupervisorError::InvalidConfig(ConfigErrors(e)))?;
                (config, None)
            }
        };
        for dep in &config.after {
            if !self.units.contains_key(dep) {
                return Err(SupervisorError::FailedPrecondition(format!(
                    "the job depends on {dep:?}, which is not loaded"
                )));
            }
        }
        self.next_job += 1;
        let id = self.next_job;
        let name = format!("job-{id}");
        let mut config: ServiceConfig = config;
        config.name = name.clone();
        config.oneshot = true;
        config.restart.mode = RestartMode::Never;
        let mut unit = Unit::new(Arc::new(config), UnitKind::Job { id, from });
        unit.wanted = true;
        self.units.insert(name.clone(), unit);
        self.prune_jobs();
        Ok(name)
    }

    fn prune_jobs(&mut self) {
        let finished: Vec<(u64, String)> = self
            .units
            .iter()
            .filter_map(|(name, u)| match u.kind {
                UnitKind::Job { id, .. }
                    if !u.alive()
                        && matches!(u.state, State::Exited | State::Failed | State::Stopped) =>
                {
                    Some((id, name.clone()))
                }
                _ => None,
            })
            .collect();
        if finished.len() > KEEP_FINISHED_JOBS {
            let mut finished = finished;
            finished.sort_unstable();
            for (_, name) in finished.iter().take(finished.len() - KEEP_FINISHED_JOBS) {
                self.units.remove(name);
                self.hub.remove(name);
            }
        }
    }

    fn members(&self, name: Option<&str>) -> Result<Vec<(String, Members)>, SupervisorError> {
        if let Some(name) = name {
            self.unit_or_error(name)?;
        }
        Ok(self
            .units
            .iter()
            .filter(|(n, _)| name.is_none_or(|want| want == n.as_str()))
            .filter_map(|(n, u)| {
                u.instance
                    .as_ref()
                    .filter(|i| i.alive)
                    .map(|i| (n.clone(), i.members.clone()))
            })
            .collect())
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
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Waits for the main process to exit (reaping it), then for every other
/// process of the instance to be gone.
async fn monitor(
    mut child: zinit_process::Child,
    members: Members,
    tx: mpsc::UnboundedSender<Msg>,
    unit: String,
    instance: u64,
) {
    let status = match child.wait().await {
        Ok(status) => status,
        Err(_) => ExitStatus::Exited(-1),
    };
    let _ = tx.send(Msg::MainExited {
        unit: unit.clone(),
        instance,
        status,
    });
    loop {
        let left = members
            .scan_async(Duration::from_secs(2))
            .await
            .unwrap_or_default();
        if left.is_empty() {
            let _ = tx.send(Msg::Empty { unit, instance });
            return;
        }
        let Ok(mut watcher) = ExitWatcher::new() else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        for member in &left {
            if let Ok(handle) = ProcessHandle::open(member.id) {
                let _ = watcher.add(&handle);
            }
        }
        if let Some(events) = members.cgroup().and_then(|c| c.open_events().ok()) {
            let _ = watcher.watch_cgroup(events);
        }
        // An exit (or the ~2 s tick, to catch processes that appeared) ends the wait.
        let _ = watcher
            .wait(tokio::time::Instant::now() + Duration::from_secs(2))
            .await;
    }
}

/// Runs the readiness test until it passes or `test_timeout` ends.
async fn readiness(
    config: Arc<ServiceConfig>,
    test: Vec<String>,
    tx: mpsc::UnboundedSender<Msg>,
    unit: String,
    instance: u64,
) {
    let deadline = Instant::now() + config.test_timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt_bound = remaining
            .min(Duration::from_secs(10))
            .max(Duration::from_millis(100));
        let last = match run_bounded(&config, &test, attempt_bound).await {
            CommandResult::Exited(status) if status.success() => {
                let _ = tx.send(Msg::Ready {
                    unit,
                    instance,
                    result: Ok(()),
                });
                return;
            }
            CommandResult::Exited(status) => status.to_string(),
            CommandResult::TimedOut => "timed out".to_string(),
            CommandResult::Failed(e) => e,
        };
        if Instant::now() + config.test_interval >= deadline {
            let result = Err(format!(
                "its test did not pass within {} (last: {last})",
                humantime::format_duration(config.test_timeout)
            ));
            let _ = tx.send(Msg::Ready {
                unit,
                instance,
                result,
            });
            return;
        }
        tokio::time::sleep(config.test_interval).await;
    }
}
