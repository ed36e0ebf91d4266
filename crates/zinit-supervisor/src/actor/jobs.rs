//! Jobs: one run of a oneshot service file or of an ad-hoc command, named
//! `job-N` (a name no service may take), kept after they end (the newest
//! hundred) with their output and exit status.

use super::Actor;
use crate::api::{JobSpec, SupervisorError};
use crate::config::{ConfigErrors, RestartMode, ServiceConfig, parse_file};
use crate::state::State;
use crate::unit::{Unit, UnitKind};
use std::sync::Arc;

/// Finished jobs kept for `job list`.
const KEEP_FINISHED_JOBS: usize = 100;

impl Actor {
    pub(super) fn run_job(&mut self, spec: JobSpec) -> Result<String, SupervisorError> {
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
                // The argv goes through as it is: nothing is parsed.
                (ServiceConfig::for_command("job", argv), None)
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
}
