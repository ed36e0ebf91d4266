//! The actor's part of crash safety: applying what a starting server takes
//! over from a previous one (`crate::takeover`), and keeping the record a
//! successor would need, rewritten after every batch of messages that
//! changed it.

use super::Actor;
use super::messages::Msg;
use crate::events::EventKind;
use crate::state::State;
use crate::takeover::{
    Disposition, Record, RecordedJob, RecordedProcess, RecordedShutdown, RecordedUnit, TakeoverPlan,
};
use crate::tasks::watch_adopted;
use crate::unit::{Daemon, Instance, Then, Unit, UnitKind};
use std::time::Instant;
use zinit_process::stop::StopMode;

/// How often the record is rewritten at most during a shutdown.
const RECORD_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Actor {
    /// Takes the previous server's units over: adopts, or starts stopping.
    pub(super) fn take_over(&mut self, plan: TakeoverPlan) {
        self.next_job = self.next_job.max(plan.last_job);
        self.adopted_roots = plan.roots.iter().map(|r| r.path().to_path_buf()).collect();
        for name in plan.not_wanted {
            if let Some(unit) = self.units.get_mut(&name) {
                unit.wanted = false;
            }
        }
        for name in &plan.report.exited {
            self.set_state(name, State::Starting, "taken over from a previous server");
            self.set_state(
                name,
                State::Exited,
                "exited successfully under a previous server; not run again",
            );
        }
        let mut keep_streams = std::collections::HashSet::new();
        for found in plan.found {
            keep_streams.extend(found.streams.iter().cloned());
            let kind = match &found.job {
                Some(job) => {
                    self.next_job = self.next_job.max(job.id);
                    UnitKind::Job {
                        id: job.id,
                        from: job.from.clone(),
                    }
                }
                None => UnitKind::Service,
            };
            let mut unit = Unit::new(found.config.clone(), kind);
            unit.wanted = found.wanted && !matches!(found.disposition, Disposition::Retire);
            unit.adopted = true;
            self.next_instance += 1;
            let instance = self.next_instance;
            let name = found.name.clone();
            // Its output FIFOs, where a previous server read them: read on.
            let mut notes = Vec::new();
            let readers = match &self.streams {
                Some(dir) => dir.reopen(&found.streams, &mut notes),
                None => Vec::new(),
            };
            for note in notes {
                tracing::warn!("takeover: {name}: {note}");
            }
            let streams = readers.iter().filter_map(|r| r.fifo.clone()).collect();
            let output_closed = self.capture_output(&name, instance, &found.config, readers);
            unit.instance = Some(Instance {
                id: instance,
                pid: found.main.pid,
                members: found.members.clone(),
                cgroup: found.cgroup.clone(),
                started: Instant::now(),
                alive: true,
                output_closed,
                main_exited: false,
                streams,
                daemon: Daemon::Started,
            });
            self.invalid.remove(&name);
            self.units.insert(name.clone(), unit);
            tokio::spawn(watch_adopted(
                found.main,
                found.members,
                self.tx.clone(),
                name.clone(),
                instance,
            ));
            let from = format!("{}", found.main.pid);
            self.set_state(
                &name,
                State::Starting,
                format!("adopted from a previous server (pid {from})"),
            );
            self.set_state(
                &name,
                State::Running,
                format!(
                    "running (pid {from}), adopted from a previous server; its exit status will be unknown"
                ),
            );
            let message = match &found.disposition {
                Disposition::Adopt => format!("adopted {name} (pid {from}) from a previous server"),
                Disposition::Replace(_) => format!(
                    "{name}'s file changed while no server ran: stopping the old one, then starting the new"
                ),
                Disposition::Retire => {
                    format!("{name} is no longer configured: stopping what a previous server left")
                }
            };
            tracing::info!("takeover: {message}");
            self.events.send(&name, EventKind::Warning { message });
            match found.disposition {
                Disposition::Adopt => {}
                Disposition::Replace(config) => {
                    self.begin_stop(&name, Then::Replace(config), "its file changed")
                }
                Disposition::Retire => self.begin_stop(
                    &name,
                    Then::Remove { delete_file: false },
                    "no longer configured",
                ),
            }
        }
        if let Some(dir) = &self.streams {
            dir.remove_others(&keep_streams);
        }
        if plan.report.thawed > 0 {
            tracing::warn!(
                "takeover: thawed {} frozen cgroup(s) a previous server left",
                plan.report.thawed
            );
        }
        for note in &plan.report.notes {
            tracing::warn!("takeover: {note}");
        }
    }

    /// What a successor would need now.
    pub(super) fn record(&self) -> Record {
        let mut roots: Vec<_> = self
            .cgroups
            .iter()
            .map(|r| r.path().to_path_buf())
            .collect();
        roots.extend(self.adopted_roots.iter().cloned());
        let mut record = Record::of_this_server(roots);
        record.last_job = self.next_job;
        record.shutdown =
            self.shutdown_deadline
                .map(|(deadline_unix_ms, reboot)| RecordedShutdown {
                    deadline_unix_ms,
                    reboot,
                });
        let process = |id: zinit_process::ProcessId| RecordedProcess {
            pid: id.pid,
            start_time: id.start_time,
        };
        for (name, unit) in &self.units {
            let live = unit.instance.as_ref().filter(|i| i.alive);
            // A finished oneshot is kept for its result; another unit
            // without processes only when it was stopped by request.
            let finished = unit.state == State::Exited && unit.config.oneshot;
            if live.is_none() && unit.wanted && !finished {
                continue;
            }
            let job = match &unit.kind {
                UnitKind::Job { id, from } => Some(RecordedJob {
                    id: *id,
                    from: from.clone(),
                    exec: unit.config.exec.clone(),
                }),
                UnitKind::Service => None,
            };
            if job.is_some() && live.is_none() {
                continue;
            }
            record.units.push(RecordedUnit {
                name: name.clone(),
                job,
                digest: unit.config.digest(),
                wanted: unit.wanted,
                state: unit.state.to_string(),
                main: live.map(|i| process(i.members.root())),
                cgroup: live.and_then(|i| i.cgroup.as_ref().map(|c| c.path().to_path_buf())),
                members: live
                    .map(|i| i.members.recorded().into_iter().map(process).collect())
                    .unwrap_or_default(),
                stop_signal: unit.config.stop_signal as i32,
                stop_timeout_ms: unit.config.stop_timeout.as_millis() as u64,
                stop_mode: match unit.config.stop_mode {
                    StopMode::Tree => "tree",
                    StopMode::Group => "group",
                    StopMode::Main => "main",
                }
                .to_string(),
                streams: live
                    .map(|i| {
                        i.streams
                            .iter()
                            .filter_map(|p| crate::streams::name_of(p))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        record
    }

    /// Rewrites the record if it changed. During a shutdown (when nothing
    /// starts, and every batch of messages changes some unit's state) at
    /// most every [`RECORD_EVERY`]: a record a moment old only makes a
    /// successor stop again what is already gone.
    pub(super) fn save_record(&mut self) {
        if self.record_file.is_none() {
            return;
        }
        if self.shutdown_deadline.is_some()
            && let Some(saved) = self.record_saved
            && saved.elapsed() < RECORD_EVERY
        {
            if !self.record_timer {
                self.record_timer = true;
                let tx = self.tx.clone();
                let due = RECORD_EVERY.saturating_sub(saved.elapsed());
                tokio::spawn(async move {
                    tokio::time::sleep(due).await;
                    let _ = tx.send(Msg::SaveRecord);
                });
            }
            return;
        }
        let record = self.record();
        if let Some(file) = self.record_file.as_mut() {
            file.save(record);
            self.record_saved = Some(Instant::now());
        }
    }
}
