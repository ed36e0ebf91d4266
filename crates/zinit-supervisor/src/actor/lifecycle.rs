//! A unit's life: starting what may start (dependencies first), spawning,
//! readiness, the main process's exit, the unit emptying, stops and their
//! results, restarts with back-off.
//!
//! A program that cannot be started (missing, not executable, a working
//! directory that cannot be entered, a user that cannot be switched to)
//! fails the unit at once with the step and the reason: trying again would
//! fail the same way, so spawn failures never back off. A crash after a
//! successful start backs off by the unit's restart policy.

use super::Actor;
use super::messages::Msg;
use crate::backoff::Next;
use crate::command::command_for;
use crate::config::{LogMode, RestartMode, ServiceConfig};
use crate::events::EventKind;
use crate::logs::{RotatingFile, Sinks, Stream, capture};
use crate::shutdown::{StopCounts, UnitShutDown};
use crate::state::State;
use crate::stopping::{StopParams, UnitStopReport, stop_unit};
use crate::streams::Reader;
use crate::tasks::{follow_pid_file, monitor, readiness, watch_adopted};
use crate::unit::{Daemon, Instance, Then, TimerGeneration, Unit, UnitKind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zinit_process::identity::FsIdentity;
use zinit_process::spawn::{ExitStatus, Output};
use zinit_process::{Members, StopOutcome};

/// How long a restart that is due waits for the previous run's processes
/// to be reported gone (their exits may still be on their way on a busy
/// machine) before it stops what is left of them.
const LEFTOVER_GRACE: Duration = Duration::from_secs(1);

impl Actor {
    /// Starts every wanted unit whose dependencies are satisfied; marks the
    /// others blocked with what they wait for. Repeats until nothing more
    /// starts, so a unit that became ready in this pass wakes its dependents
    /// whatever the order of their names.
    pub(super) fn reconcile(&mut self) {
        if self.intake_frozen {
            return;
        }
        while self.reconcile_pass() {}
        // Starts nothing more; a blocked unit's reason now follows the
        // chains its dependencies recorded in the passes before.
        self.reconcile_pass();
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
            started |= self.start_or_block(&name);
        }
        started
    }

    /// Spawns the unit if its dependencies are satisfied (true); else marks
    /// it blocked with what it waits for.
    fn start_or_block(&mut self, name: &str) -> bool {
        let Some(unit) = self.units.get(name) else {
            return false;
        };
        let waiting: Vec<String> = unit
            .config
            .after
            .iter()
            .filter(|dep| !self.units.get(*dep).is_some_and(Unit::satisfies_dependents))
            .cloned()
            .collect();
        if waiting.is_empty() {
            self.spawn(name);
            return true;
        }
        // A dependency that will not become ready unless someone acts (an
        // invalid file, a failed unit, one stopped by request, or one that
        // waits for such a unit itself): the reason spells out the chain,
        // and whoever waits for this unit's start is answered.
        let mut seen = std::collections::HashSet::from([name.to_string()]);
        let stuck = waiting
            .iter()
            .find_map(|dep| self.not_coming(dep, &mut seen));
        let reason = match &stuck {
            Some(chain) => format!("waiting for {chain}"),
            None => format!(
                "waiting for {}",
                waiting
                    .iter()
                    .map(|dep| match self.units.get(dep) {
                        Some(u) => format!("{dep} ({})", u.state),
                        None => format!("{dep} (not loaded)"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        // A job runs once: one whose dependency is not coming fails, so
        // that whoever waits for it (`job run`) is answered.
        let is_job = matches!(unit.kind, UnitKind::Job { .. });
        if is_job && stuck.is_some() {
            self.set_state(name, State::Failed, format!("cannot run: {reason}"));
            return false;
        }
        self.set_state(name, State::Blocked, reason);
        if let Some(unit) = self.units.get_mut(name) {
            unit.waiting_for = waiting;
        }
        false
    }

    /// Reads an instance's output streams into the unit's log (and its
    /// echo and file); once all have ended, their FIFOs are removed and the
    /// actor is told. Returns whether there was nothing to read.
    pub(super) fn capture_output(
        &mut self,
        name: &str,
        instance: u64,
        config: &ServiceConfig,
        readers: Vec<Reader>,
    ) -> bool {
        if readers.is_empty() {
            return true;
        }
        let sinks = self.sinks(name, config);
        let mut captures = Vec::new();
        let mut fifos = Vec::new();
        for reader in readers {
            fifos.extend(reader.fifo);
            captures.push(tokio::spawn(capture(
                self.hub.clone(),
                name.to_string(),
                reader.stream,
                reader.fd,
                sinks.clone(),
            )));
        }
        let tx = self.tx.clone();
        let unit = name.to_string();
        tokio::spawn(async move {
            for capture in captures {
                let _ = capture.await;
            }
            for fifo in &fifos {
                crate::streams::remove(Some(fifo));
            }
            let _ = tx.send(Msg::OutputClosed { unit, instance });
        });
        false
    }

    /// Where a unit's lines go besides its log: the server's stdout for
    /// `log: stdout`, and its log file.
    fn sinks(&self, name: &str, config: &ServiceConfig) -> Sinks {
        Sinks {
            echo: config.log.mode == LogMode::Stdout
                || !config.log.mode_given && crate::command::base().echo_by_default,
            file: config.log.file.as_ref().and_then(|f| {
                let owner = config.run_as.as_ref().map(|u| FsIdentity {
                    uid: u.uid,
                    gid: u.gid,
                    groups: u.groups.clone(),
                });
                match RotatingFile::open(f.path.clone(), f.max_size, f.keep, owner) {
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
        }
    }

    /// Why the unit `dep` will not become ready unless someone acts, as a
    /// chain down to the cause (`migrate, which waits for db: its file is
    /// invalid (...)`); `None` while it may still come (starting, backing
    /// off, waiting for units that may). `seen` ends cycles.
    pub(super) fn not_coming(
        &self,
        dep: &str,
        seen: &mut std::collections::HashSet<String>,
    ) -> Option<String> {
        if !seen.insert(dep.to_string()) {
            return None;
        }
        let Some(unit) = self.units.get(dep) else {
            return Some(match self.invalid.get(dep).and_then(|e| e.first()) {
                Some(error) => format!("{dep}: its file is invalid ({error})"),
                None => format!("{dep}, which is not loaded"),
            });
        };
        match unit.state {
            State::Failed => Some(format!("{dep}, which failed: {}", unit.reason)),
            State::Stopped if !unit.wanted => Some(format!("{dep}, which was stopped by request")),
            State::Exited if !unit.satisfies_dependents() => Some(format!(
                "{dep}, which exited unsuccessfully: {}",
                unit.reason
            )),
            State::Blocked => unit
                .waiting_for
                .iter()
                .find_map(|next| self.not_coming(next, seen))
                .map(|chain| format!("{dep}, which waits for {chain}")),
            _ => None,
        }
    }

    /// Spawns the unit's command in its cgroup, with its output captured,
    /// and the tasks that watch it.
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
        let wants_output = !(config.log.mode == LogMode::Null && config.log.file.is_none());
        let instance_id = self.next_instance + 1;
        let fifos = match (&self.streams, wants_output) {
            (Some(dir), true) => match dir.create(name, instance_id) {
                Ok(streams) => Some(streams),
                Err(e) => {
                    tracing::warn!(
                        "{name}: {e}; its output goes through plain pipes, which die with the server"
                    );
                    None
                }
            },
            _ => None,
        };
        let (stdout, stderr) = match (&fifos, wants_output) {
            (Some(f), _) => (Output::Fd(f.stdout.clone()), Output::Fd(f.stderr.clone())),
            (None, true) => (Output::Piped, Output::Piped),
            (None, false) => (Output::Null, Output::Null),
        };
        let mut command = command_for(&config, &config.exec)
            .stdout(stdout)
            .stderr(stderr);
        if let Some(cgroup) = &cgroup {
            command = command.cgroup(cgroup.clone());
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                // No back-off: the same spawn would fail the same way.
                if let Some(cgroup) = &cgroup {
                    let _ = cgroup.remove();
                }
                for reader in fifos.iter().flat_map(|f| &f.readers) {
                    crate::streams::remove(reader.fifo.as_deref());
                }
                if let Some(unit) = self.units.get_mut(name) {
                    unit.last_exit = None;
                }
                self.set_state(name, State::Starting, "spawning");
                self.set_state(name, State::Failed, format!("cannot start: {e}"));
                return;
            }
        };
        self.next_instance = instance_id;
        let members = Members::of_child(&child);
        let pid = child.pid();
        // The child's ends go with the command: only the child holds them.
        let readers = match fifos {
            Some(f) => f.readers,
            None => [
                (child.take_stdout(), Stream::Stdout),
                (child.take_stderr(), Stream::Stderr),
            ]
            .into_iter()
            .filter_map(|(fd, stream)| {
                fd.map(|fd| Reader {
                    stream,
                    fd,
                    fifo: None,
                })
            })
            .collect(),
        };
        let streams = readers.iter().filter_map(|r| r.fifo.clone()).collect();
        let output_closed = self.capture_output(name, instance_id, &config, readers);
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
            output_closed,
            main_exited: false,
            streams,
            daemon: Daemon::Started,
        });
        unit.last_exit = None;
        unit.adopted = false;
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
            None if config.pid_file.is_some() => {
                // A forking program runs once its daemon is followed.
                self.set_state(
                    name,
                    State::Starting,
                    format!("started (pid {pid}); waiting for it to daemonize"),
                );
            }
            None => {
                self.set_state(name, State::Starting, format!("started (pid {pid})"));
                self.set_state(name, State::Running, format!("started (pid {pid})"));
            }
        }
    }

    /// Starts stopping the unit with its own timeout, then does `then`.
    pub(super) fn begin_stop(&mut self, name: &str, then: Then, reason: &str) {
        let Some(unit) = self.units.get(name) else {
            return;
        };
        let params = StopParams::ordinary(&unit.config);
        self.begin_stop_with(name, then, reason, params);
    }

    /// Starts stopping the unit (unless a stop runs already: then only
    /// `then` changes); the result comes back as `Msg::StopDone`.
    pub(super) fn begin_stop_with(
        &mut self,
        name: &str,
        then: Then,
        reason: &str,
        params: StopParams,
    ) {
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
        unit.stop_op += 1;
        let stop_op = unit.stop_op;
        unit.stop_hurry = params.hurry.clone();
        let config = unit.config.clone();
        self.set_state(name, State::Stopping, reason.to_string());
        let tx = self.tx.clone();
        let unit_name = name.to_string();
        tokio::spawn(async move {
            // Every progress event is sent before the result is: the
            // parameters (and the progress sink) are gone by then.
            let report = stop_unit(&config, &instance.members, params)
                .await
                .map_err(|e| e.to_string());
            let _ = tx.send(Msg::StopDone {
                unit: unit_name,
                stop_op,
                report,
            });
        });
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
        match next {
            Next::GiveUp { restarts } => {
                self.set_state(
                    name,
                    State::Failed,
                    format!("{reason}; gave up after {restarts} restarts"),
                );
            }
            Next::RestartAfter { delay, attempt } => {
                let timers = unit.timers.next();
                self.set_state(
                    name,
                    State::BackOff,
                    format!(
                        "{reason}; restart #{attempt} in {}",
                        humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
                    ),
                );
                self.events
                    .send(name, EventKind::Restarting { attempt, delay });
                self.wake_after(name, timers, delay);
            }
        }
    }

    /// Sends `BackoffDone` for `name` after `delay` (ignored unless `timers`
    /// is still the unit's generation then).
    fn wake_after(&self, name: &str, timers: TimerGeneration, delay: Duration) {
        let tx = self.tx.clone();
        let unit = name.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::BackoffDone { unit, timers });
        });
    }

    /// The main process ended. An adopted one's status is unknown
    /// (`None`): it counts as a clean exit.
    pub(super) fn main_exited(
        &mut self,
        name: &str,
        instance: u64,
        status: Option<ExitStatus>,
        remaining: usize,
    ) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        let Some(current) = unit.instance.as_mut().filter(|i| i.id == instance) else {
            return;
        };
        current.main_exited = true;
        let following = current.daemon == Daemon::Followed;
        unit.last_exit = status;
        if let Some((stop_op, report)) = unit.stop_awaiting_exit.take() {
            self.stop_done(name, stop_op, report);
            return;
        }
        if !matches!(unit.state, State::Starting | State::Running) {
            return;
        }
        let Some(current) = unit.instance.as_mut() else {
            return;
        };
        let success = status.is_none_or(ExitStatus::success);
        // A program that daemonized: its main process exited 0 and left
        // processes behind. The unit runs on (a service does not flap), and
        // ends when they do; with `pid_file`, the daemon becomes its main
        // process.
        let forking = unit.config.pid_file.is_some() && current.daemon == Daemon::Started;
        if success && !unit.config.oneshot && (forking || remaining > 0 && !following) {
            if let Some(path) = unit.config.pid_file.clone().filter(|_| forking) {
                current.daemon = Daemon::Reading;
                let members = current.members.clone();
                let state = unit.state;
                let bound = unit.config.test_timeout.min(Duration::from_secs(10));
                tokio::spawn(follow_pid_file(
                    path.clone(),
                    members,
                    bound,
                    self.tx.clone(),
                    name.to_string(),
                    instance,
                ));
                self.set_state(
                    name,
                    state,
                    format!("main process exited 0; reading {}", path.display()),
                );
                return;
            }
            let state = unit.state;
            self.set_state(
                name,
                state,
                format!(
                    "main process exited 0, {} remain{} (did it daemonize? run it in the foreground, or set pid_file)",
                    match remaining {
                        1 => "1 process".to_string(),
                        n => format!("{n} processes"),
                    },
                    if remaining == 1 { "s" } else { "" }
                ),
            );
            return;
        }
        let why = match status {
            Some(status) => format!("main process ended: {status}"),
            None if following => "its main process (from its pid file) ended".to_string(),
            None => {
                "main process ended (exit status unknown: it was adopted from a previous server)"
                    .to_string()
            }
        };
        self.ended(name, success, why);
    }

    /// A unit whose main process has ended (or, after it daemonized, whose
    /// last process has): exited or failed, or restarted by its policy.
    fn ended(&mut self, name: &str, success: bool, why: String) {
        let Some(unit) = self.units.get(name) else {
            return;
        };
        let restart = unit.wanted
            && match unit.config.restart.mode {
                RestartMode::Always => true,
                RestartMode::OnFailure => !success,
                RestartMode::Never => false,
            };
        if !restart {
            let state = if success {
                State::Exited
            } else {
                State::Failed
            };
            self.set_state(name, state, why);
            return;
        }
        self.back_off(name, why);
    }

    /// The main process read from a unit's `pid_file` (or why not).
    pub(super) fn followed(
        &mut self,
        name: &str,
        instance: u64,
        main: Result<zinit_process::ProcessId, String>,
    ) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        let Some(current) = unit
            .instance
            .as_mut()
            .filter(|i| i.id == instance && i.alive)
        else {
            return;
        };
        if !matches!(unit.state, State::Starting | State::Running) {
            return;
        }
        let state = unit.state;
        match main {
            Ok(main) => {
                current.pid = main.pid;
                current.daemon = Daemon::Followed;
                current.main_exited = false;
                current.members = current.members.with_root(main);
                tokio::spawn(watch_adopted(
                    main,
                    current.members.clone(),
                    self.tx.clone(),
                    name.to_string(),
                    instance,
                ));
                let path = unit
                    .config
                    .pid_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                // Ready now, unless a readiness test still has to pass.
                let state = if state == State::Starting && unit.config.test.is_none() {
                    State::Running
                } else {
                    state
                };
                self.set_state(
                    name,
                    state,
                    format!("running (pid {} from {path})", main.pid),
                );
            }
            Err(why) => {
                self.begin_stop(name, Then::Failure(why.clone()), &why);
            }
        }
    }

    pub(super) fn empty(&mut self, name: &str, instance: u64) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        let stopping = unit.state == State::Stopping;
        // Without a cgroup a daemon that left the session is not seen as a
        // member: while its pid file is read, or while the daemon read from
        // it lives, the unit is not empty (its watcher says when it is).
        let daemon_lives = unit.instance.as_ref().is_some_and(|i| {
            i.id == instance
                && (i.daemon == Daemon::Reading || i.daemon == Daemon::Followed && !i.main_exited)
        });
        if daemon_lives {
            return;
        }
        if let Some(current) = unit.instance.as_mut().filter(|i| i.id == instance) {
            current.alive = false;
            // A running stop still reads the cgroup; it removes it when done.
            if let Some(cgroup) = current.cgroup.as_ref().filter(|_| !stopping) {
                let _ = cgroup.remove();
            }
        }
        // A unit whose main process exited 0 and left processes (it
        // daemonized) ends with them.
        let daemon_ended = matches!(unit.state, State::Starting | State::Running)
            && !unit.config.oneshot
            && unit
                .instance
                .as_ref()
                .is_some_and(|i| i.id == instance && i.main_exited && !i.alive);
        if daemon_ended {
            let why = "its last process ended (its main process had exited 0)".to_string();
            self.ended(name, true, why);
            return;
        }
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        // A restart that was due waited for exactly this.
        if unit.awaiting_empty && unit.state == State::BackOff && unit.wanted && !unit.alive() {
            unit.awaiting_empty = false;
            unit.timers.forget_pending();
            self.start_afresh(name, "restarting");
        }
    }

    pub(super) fn ready(&mut self, name: &str, instance: u64, result: Result<(), String>) {
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
                format!("started (pid {pid}); its test passed"),
            ),
            Err(reason) => self.begin_stop(name, Then::Failure(reason.clone()), &reason),
        }
    }

    pub(super) fn stop_done(
        &mut self,
        name: &str,
        stop_op: u64,
        report: Result<UnitStopReport, String>,
    ) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        if unit.stop_op != stop_op || unit.state != State::Stopping {
            return;
        }
        let leftovers = report
            .as_ref()
            .map(|r| r.processes.leftovers.len())
            .unwrap_or(0);
        // Every process is gone, but the main process's waiter may not have
        // reaped it yet: its status comes with `main_exited`, which finishes
        // this stop (the waiter reports whenever the main process is gone).
        if report.is_ok()
            && leftovers == 0
            && unit.instance.as_ref().is_some_and(|i| !i.main_exited)
        {
            unit.stop_awaiting_exit = Some((stop_op, report));
            return;
        }
        if let Some(instance) = unit.instance.as_mut() {
            instance.alive = leftovers > 0;
            if leftovers == 0
                && let Some(cgroup) = &instance.cgroup
            {
                let _ = cgroup.remove();
            }
        }
        let last_exit = unit.last_exit;
        let then = std::mem::replace(&mut unit.then, Then::Rest);
        let summary = match &report {
            Ok(_) if leftovers == 1 => "stopped, but 1 process could not be killed".to_string(),
            Ok(_) if leftovers > 0 => {
                format!("stopped, but {leftovers} processes could not be killed")
            }
            Ok(r) => format!(
                "stopped ({} in {:.2}s)",
                match r.outcome {
                    StopOutcome::Graceful => "gracefully",
                    _ => "killed at its timeout",
                },
                r.elapsed.as_secs_f64()
            ),
            Err(e) => format!("stopped with an error: {e}"),
        };
        for reply in self.waiters.shutdown.remove(name).unwrap_or_default() {
            reply.send(UnitShutDown {
                counts: report.as_ref().ok().map(StopCounts::of),
                error: report.as_ref().err().cloned(),
                last_exit,
            });
        }
        // Kept for the stop requests that ask for it; once intake is frozen
        // (a shutdown) only a waiting request can, so the report of every
        // other unit's stop is let go at once.
        if let Ok(report) = report
            && (!self.intake_frozen || self.waiters.stop.contains_key(name))
        {
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
                // Straight from stopping to its back-off (or to failed when
                // it gives up): a restart is counted only when it is due.
                if self
                    .units
                    .get(name)
                    .is_some_and(|u| u.wanted && u.config.restart.mode != RestartMode::Never)
                {
                    self.back_off(name, reason);
                } else {
                    self.set_state(name, State::Failed, reason);
                }
            }
            Then::Remove { delete_file } => {
                self.set_state(name, State::Stopped, summary);
                // A stop that the removal overtook is answered while the
                // unit still exists: it stopped.
                self.answer_stop_waiters(name);
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

    pub(super) fn backoff_done(&mut self, name: &str, timers: TimerGeneration) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        if unit.timers != timers || unit.state != State::BackOff || !unit.wanted {
            return;
        }
        if unit.alive() && !unit.awaiting_empty {
            // The previous run may be on its way out: wait for its exit to
            // be reported (see `empty`), at most LEFTOVER_GRACE.
            unit.awaiting_empty = true;
            let timers = unit.timers.next();
            self.wake_after(name, timers, LEFTOVER_GRACE);
            return;
        }
        self.start_afresh(name, "restarting");
    }

    /// Starts an ended unit again: what its previous run left is stopped
    /// first (then it starts); else it starts at once (or waits for its
    /// dependencies), without passing through `stopped`.
    pub(super) fn start_afresh(&mut self, name: &str, why: &str) {
        if let Some(unit) = self.units.get_mut(name) {
            unit.awaiting_empty = false;
        }
        if self.units.get(name).is_some_and(Unit::alive) {
            self.begin_stop(
                name,
                Then::Start,
                "stopping what the previous run left before starting",
            );
        } else if self.intake_frozen {
            self.set_state(name, State::Stopped, why);
        } else {
            self.start_or_block(name);
        }
    }
}
