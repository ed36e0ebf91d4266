//! Changes to the configuration while running: `add` (validate a file,
//! write it into the config directory, start it), `remove` (stop, forget,
//! delete the file) and `reload` (all or nothing).

use super::Actor;
use super::messages::Reply;
use crate::api::{AddResult, ReloadSummary, SupervisorError, UnitReload};
use crate::config::{ConfigError, ConfigErrors, ConfigSet, ServiceConfig};
use crate::state::State;
use crate::stopping::{StopProgress, UnitStopReport};
use crate::unit::{Then, Unit, UnitKind};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

impl Actor {
    /// Adds a parsed service and tries to start it; the answer carries its
    /// status right after the try (failed at once when its program cannot
    /// be started: the file stays added).
    pub(super) fn add(&mut self, file_name: &str, config: ServiceConfig, reply: Reply<AddResult>) {
        let result = self.add_config(file_name, config).map(|(name, warnings)| {
            self.reconcile();
            let status = self.units[&name].status(&name);
            AddResult {
                name,
                status,
                warnings,
            }
        });
        let _ = reply.send(result);
    }

    /// Checks a parsed service against the units (a name taken, a
    /// dependency missing), writes it into the config directory atomically
    /// (never through a link) and makes it wanted; returns its name and the
    /// file's warnings.
    fn add_config(
        &mut self,
        file_name: &str,
        config: ServiceConfig,
    ) -> Result<(String, Vec<String>), SupervisorError> {
        if self.intake_frozen {
            return Err(SupervisorError::ShuttingDown);
        }
        let invalid = |errors| SupervisorError::InvalidConfig(ConfigErrors(errors));
        let source = config.file.clone();
        let text = config.source.clone();
        let name = config.name.clone();
        if self.units.contains_key(&name) {
            return Err(SupervisorError::AlreadyExists(name));
        }
        // A dependency whose file is invalid is allowed: the service waits
        // for it (blocked), as at start-up.
        let missing: Vec<ConfigError> = config
            .after
            .iter()
            .filter(|dep| !self.units.contains_key(*dep) && !self.invalid.contains_key(*dep))
            .map(|dep| {
                ConfigError::field(
                    &source,
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
        crate::files::write_atomically(&target, text.as_bytes(), 0o644)
            .map_err(|e| SupervisorError::Io(format!("cannot write {}: {e}", target.display())))?;
        let mut config = config;
        config.file = target;
        let warnings = config.warnings.clone();
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        self.invalid.remove(&name);
        let mut unit = Unit::new(Arc::new(config), UnitKind::Service);
        unit.wanted = true;
        self.units.insert(name.clone(), unit);
        Ok((name, warnings))
    }

    pub(super) fn remove(
        &mut self,
        name: &str,
        progress: Option<UnboundedSender<StopProgress>>,
        reply: Reply<Option<UnitStopReport>>,
    ) {
        if let Some(errors) = self.invalid.remove(name) {
            let file = errors.first().map(|e| e.file.clone());
            if let Some(file) = file {
                let _ = std::fs::remove_file(file);
            }
            let _ = reply.send(Ok(None));
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
        unit.timers.forget_pending();
        if unit.alive() || unit.state == State::Stopping {
            if unit.state != State::Stopping {
                self.last_stop.remove(name);
            }
            self.begin_watched_stop(
                name,
                Then::Remove { delete_file: true },
                "remove requested",
                progress,
            );
            self.waiters
                .remove
                .entry(name.to_string())
                .or_default()
                .push(reply);
            return;
        }
        self.forget(name, true);
        let _ = reply.send(Ok(None));
    }

    pub(super) fn forget(&mut self, name: &str, delete_file: bool) {
        if let Some(unit) = self.units.remove(name) {
            if delete_file {
                let _ = std::fs::remove_file(&unit.config.file);
            }
            self.hub.remove(name);
            for reply in self.waiters.start.remove(name).unwrap_or_default() {
                let _ = reply.send(Err(SupervisorError::NotFound(name.to_string())));
            }
        }
    }

    /// Applies a reloaded config directory, all or nothing, changing only
    /// what changed as parsed: a running unit restarts only for a field
    /// that shapes its process, takes other changes live, and a unit
    /// stopped by request stays stopped. With `dry_run`, changes nothing and
    /// says what it would do.
    pub(super) fn reload(
        &mut self,
        set: ConfigSet,
        dry_run: bool,
    ) -> Result<ReloadSummary, SupervisorError> {
        if self.intake_frozen {
            return Err(SupervisorError::ShuttingDown);
        }
        let errors = set.errors();
        if !errors.is_empty() {
            return Err(SupervisorError::InvalidConfig(ConfigErrors(errors)));
        }
        let mut summary = ReloadSummary {
            warnings: set.warnings(),
            dry_run,
            ..ReloadSummary::default()
        };
        if !dry_run {
            for warning in &summary.warnings {
                tracing::warn!("{warning}");
            }
        }
        let gone: Vec<String> = self
            .units
            .iter()
            .filter(|(name, u)| u.kind == UnitKind::Service && !set.services.contains_key(*name))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            summary.removed.push(name.clone());
            summary.units.push(UnitReload {
                name: name.clone(),
                action: "stop and forget".to_string(),
                fields: Vec::new(),
            });
            if dry_run {
                continue;
            }
            let unit = self.units.get_mut(&name).expect("listed");
            unit.wanted = false;
            unit.timers.forget_pending();
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
            let Some(unit) = self.units.get_mut(&name) else {
                summary.added.push(name.clone());
                summary.units.push(UnitReload {
                    name: name.clone(),
                    action: "start".to_string(),
                    fields: Vec::new(),
                });
                if !dry_run {
                    let mut unit = Unit::new(config, UnitKind::Service);
                    unit.wanted = true;
                    self.units.insert(name, unit);
                }
                continue;
            };
            let fields = unit.config.changes(&config);
            if fields.is_empty() {
                summary.unchanged.push(name);
                if !dry_run {
                    // The same service; keep the file's latest text.
                    unit.config = config;
                }
                continue;
            }
            let running = unit.alive() || unit.state == State::Stopping;
            let restarts = fields.iter().any(|f| f.restarts);
            let action = match (running, restarts, unit.wanted) {
                (true, true, _) => "restart",
                (true, false, _) => "apply live",
                (false, _, false) => "keep stopped (stopped by request)",
                (false, _, true) => "takes effect at its next start",
            };
            if running && restarts {
                summary.changed.push(name.clone());
            } else {
                summary.updated.push(name.clone());
            }
            summary.units.push(UnitReload {
                name: name.clone(),
                action: action.to_string(),
                fields,
            });
            if dry_run {
                continue;
            }
            if running && restarts {
                self.begin_stop(&name, Then::Replace(config), "its file changed");
            } else {
                // Read where they apply: the next stop, the next exit, the
                // next start, the shutdown's order and sweep.
                unit.config = config;
                if !running && unit.wanted && unit.state == State::BackOff {
                    // Its next try uses the new file at once.
                    unit.backoff.reset();
                    unit.timers.forget_pending();
                    self.set_state(&name, State::Stopped, "its file changed");
                } else if !running && unit.wanted && unit.state == State::Failed {
                    unit.backoff.reset();
                    self.set_state(&name, State::Stopped, "its file changed");
                }
            }
        }
        if !dry_run {
            self.invalid.clear();
        }
        Ok(summary)
    }
}
