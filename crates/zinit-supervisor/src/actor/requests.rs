//! Requests about one unit (start, stop, restart, signal) and the queries
//! (list, status, members, configs), and the answers to waiting requests.

use super::Actor;
use super::messages::{Reply, Request};
use crate::api::{StopResult, SupervisorError};
use crate::state::State;
use crate::stopping::{StopParams, StopProgress, StopWatcher, UnitStopReport};
use crate::unit::{Then, UnitStatus};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;
use zinit_process::{Members, ProcessHandle, ProcessId, Signal};

impl Actor {
    pub(super) fn request(&mut self, request: Request) {
        match request {
            Request::List(reply) => {
                let _ = reply.send(self.list());
            }
            Request::Status(name, reply) => {
                let _ = reply.send(self.status_of(&name));
            }
            Request::Start(name, wait, reply) => self.start(&name, wait, reply),
            Request::Stop(name, progress, reply) => self.stop(&name, progress, reply),
            Request::Restart(name, reply) => self.restart(&name, reply),
            Request::Add {
                file_name,
                config,
                reply,
            } => self.add(&file_name, *config, reply),
            Request::Remove(name, progress, reply) => self.remove(&name, progress, reply),
            Request::Reload(set, dry_run, reply) => {
                let _ = reply.send(self.reload(*set, dry_run));
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
            Request::BeginShutdown(deadline, reboot, reply) => {
                self.shutdown_deadline = Some((deadline, reboot));
                let _ = reply.send(self.begin_shutdown());
            }
            Request::ShutdownDone(reply) => {
                if let Some(file) = self.record_file.take() {
                    file.remove();
                }
                let _ = reply.send(());
            }
            Request::ShutdownStop(stop) => self.shutdown_stop(stop),
        }
    }

    fn start(&mut self, name: &str, wait: bool, reply: Reply<UnitStatus>) {
        test_hooks::maybe_panic(name);
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
                unit.timers.forget_pending();
                self.start_afresh(name, "start requested");
            }
            State::Stopped | State::Blocked => {}
        }
        if wait {
            self.waiters
                .start
                .entry(name.to_string())
                .or_default()
                .push(reply);
        } else {
            self.reconcile();
            let _ = reply.send(self.status_of(name));
        }
    }

    fn stop(
        &mut self,
        name: &str,
        progress: Option<UnboundedSender<StopProgress>>,
        reply: Reply<StopResult>,
    ) {
        if let Err(e) = self.admit(name) {
            let _ = reply.send(Err(e));
            return;
        }
        let unit = self.units.get_mut(name).expect("checked");
        unit.wanted = false;
        unit.timers.forget_pending();
        if unit.state == State::Stopping {
            if !matches!(unit.then, Then::Remove { .. }) {
                unit.then = Then::Rest;
            }
            self.waiters
                .stop
                .entry(name.to_string())
                .or_default()
                .push(reply);
            return;
        }
        if unit.alive() {
            self.last_stop.remove(name);
            self.begin_watched_stop(name, Then::Rest, "stop requested", progress);
            self.waiters
                .stop
                .entry(name.to_string())
                .or_default()
                .push(reply);
            return;
        }
        // Nothing runs. A unit that ended keeps its result (state, reason,
        // exit status); one waiting to restart or for its dependencies
        // simply stops waiting.
        match unit.state {
            State::BackOff => self.set_state(
                name,
                State::Stopped,
                "stopped by request while waiting to restart",
            ),
            State::Blocked => self.set_state(
                name,
                State::Stopped,
                "stopped by request while waiting for its dependencies",
            ),
            _ => {}
        }
        let result = self.stop_result(name, None);
        let _ = reply.send(Ok(result));
    }

    /// Starts a stop on request with the unit's own timeout, its progress
    /// (its start, then every step) sent to `progress` if given.
    pub(super) fn begin_watched_stop(
        &mut self,
        name: &str,
        then: Then,
        reason: &str,
        progress: Option<UnboundedSender<StopProgress>>,
    ) {
        let Some(unit) = self.units.get(name) else {
            return;
        };
        let mut params = StopParams::ordinary(&unit.config);
        if let Some(watcher) = progress
            && unit.state != State::Stopping
        {
            let _ = watcher.send(StopProgress::Began {
                signal: unit.config.stop_signal,
                mode: unit.config.stop_mode,
                budget: params.budget,
            });
            params.progress = Some(Arc::new(StopWatcher(watcher)));
        }
        self.begin_stop_with(name, then, reason, params);
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

    /// Answers the stop and remove requests that waited for `name`'s stop.
    pub(super) fn answer_stop_waiters(&mut self, name: &str) {
        if let Some(waiters) = self.waiters.stop.remove(name)
            && self.units.contains_key(name)
        {
            let report = self.last_stop.get(name).cloned();
            for reply in waiters {
                let _ = reply.send(Ok(self.stop_result(name, report.clone())));
            }
        }
        let removed = self.waiters.remove.remove(name).unwrap_or_default();
        if !removed.is_empty() {
            let report = self.last_stop.get(name).cloned();
            for reply in removed {
                let _ = reply.send(Ok(report.clone()));
            }
        }
        if !self.units.contains_key(name) {
            self.last_stop.remove(name);
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
            unit.timers.forget_pending();
            self.set_state(name, State::Stopped, "restart requested");
        }
        self.waiters
            .start
            .entry(name.to_string())
            .or_default()
            .push(reply);
    }

    /// Answers start waiters whose unit has settled: running, exited,
    /// failed, stopped, or blocked on a dependency that is not coming.
    pub(super) fn answer_start_waiters(&mut self) {
        let settled: Vec<String> = self
            .waiters
            .start
            .keys()
            .filter(|name| match self.units.get(*name) {
                None => true,
                Some(unit) => match unit.state {
                    // A forking program's start ends once its pid file is read.
                    State::Running => {
                        !unit.config.oneshot
                            && (unit.config.pid_file.is_none()
                                || unit
                                    .instance
                                    .as_ref()
                                    .is_none_or(|i| i.daemon == crate::unit::Daemon::Followed))
                    }
                    State::Exited | State::Failed => true,
                    State::Stopped => !unit.wanted,
                    State::Blocked => unit.waiting_for.iter().any(|dep| {
                        let mut seen = std::collections::HashSet::from([name.to_string()]);
                        self.not_coming(dep, &mut seen).is_some()
                    }),
                    _ => false,
                },
            })
            .cloned()
            .collect();
        for name in settled {
            let status = self.status_of(&name);
            for reply in self.waiters.start.remove(&name).unwrap_or_default() {
                let _ = reply.send(status.clone());
            }
        }
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
        let targets: Vec<ProcessId> = if all {
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

/// A fault hook for the headless-supervisor test, compiled into debug builds
/// only (never into a release): `ZINIT_TEST_PANIC_ON_START=NAME` makes the
/// actor panic when asked to start NAME.
mod test_hooks {
    #[cfg(debug_assertions)]
    pub fn maybe_panic(name: &str) {
        if std::env::var("ZINIT_TEST_PANIC_ON_START").is_ok_and(|n| n == name) {
            panic!("test hook: the actor panics on starting {name}");
        }
    }

    #[cfg(not(debug_assertions))]
    pub fn maybe_panic(_name: &str) {}
}
