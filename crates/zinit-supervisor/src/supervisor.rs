//! The public handle: `Supervisor`. Cheap to clone; every call is a message
//! to the one task that owns all unit state (see `actor`), so transitions
//! never race.

use crate::actor::Actor;
use crate::actor::messages::{Msg, Request};
use crate::api::{AddResult, JobSpec, Options, ReloadSummary, StopResult, SupervisorError};
use crate::config::{ConfigErrors, ServiceConfig, load_dir};
use crate::events::{Event, EventBus};
use crate::logs::{Follower, LogHub, LogLine};
use crate::stats::UnitStats;
use crate::stopping::{StopProgress, UnitStopReport};
use crate::streams::StreamDir;
use crate::takeover::{RecordFile, Takeover};
use crate::unit::UnitStatus;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{broadcast, mpsc, oneshot};
use zinit_process::{CgroupRoot, Members, Signal};

/// The supervisor.
#[derive(Debug, Clone)]
pub struct Supervisor {
    pub(crate) tx: UnboundedSender<Msg>,
    adopted_roots: Arc<Vec<PathBuf>>,
    takeover: Arc<Takeover>,
    pending_shutdown: Option<(Duration, bool)>,
    /// The actor task, for the one who watches it (`failed`).
    actor: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    hub: Arc<LogHub>,
    events: EventBus,
    config_dir: PathBuf,
    cgroups: Option<CgroupRoot>,
}

impl Supervisor {
    /// Loads the config directory and starts every valid service. Invalid
    /// files are listed (with their errors) but do not stop the others.
    /// Needs a tokio runtime. Fails only if the directory cannot be read.
    pub fn start(options: Options) -> Result<Self, SupervisorError> {
        let set = load_dir(&options.config_dir)
            .map_err(|e| SupervisorError::InvalidConfig(ConfigErrors(vec![e])))?;
        for warning in set.warnings() {
            tracing::warn!("{warning}");
        }
        for error in set.errors() {
            tracing::error!("{error}");
        }
        let takeover = match &options.record_file {
            Some(path) => crate::takeover::plan(path, options.cgroups.as_ref(), &set)
                .map_err(SupervisorError::FailedPrecondition)?,
            None => crate::takeover::TakeoverPlan::default(),
        };
        crate::command::set_base(options.base.clone());
        let cgroups = options.cgroups.clone();
        let hub = Arc::new(LogHub::new(options.log_lines, options.log_bytes));
        let events = EventBus::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut actor = Actor::new(
            options.config_dir.clone(),
            cgroups.clone(),
            hub.clone(),
            events.clone(),
            tx.clone(),
            set,
            options.record_file.clone().map(RecordFile::new),
        );
        if let Some(dir) = &options.streams_dir {
            match StreamDir::open(dir.clone()) {
                Ok(dir) => actor.streams = Some(dir),
                Err(e) => tracing::warn!(
                    "{}: {e}; units' output goes through plain pipes, which die with the server",
                    dir.display()
                ),
            }
        }
        let adopted_roots = takeover
            .roots
            .iter()
            .map(|r| r.path().to_path_buf())
            .collect();
        let report = Arc::new(takeover.report.clone());
        let pending_shutdown = takeover.shutdown_left;
        let actor = tokio::spawn(actor.run(rx, takeover));
        Ok(Self {
            tx,
            hub,
            events,
            config_dir: options.config_dir,
            cgroups,
            adopted_roots: Arc::new(adopted_roots),
            takeover: report,
            pending_shutdown,
            actor: Arc::new(std::sync::Mutex::new(Some(actor))),
        })
    }

    /// What this supervisor took over from a previous server.
    pub fn takeover(&self) -> &Takeover {
        &self.takeover
    }

    /// A shutdown the previous server had begun and this one must finish:
    /// what is left of its deadline, and whether a reboot follows it.
    pub fn pending_shutdown(&self) -> Option<(Duration, bool)> {
        self.pending_shutdown
    }

    /// Every unit cgroup directory: this supervisor's own, and those of
    /// previous servers whose units it adopted.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .cgroups
            .iter()
            .map(|r| r.path().to_path_buf())
            .collect();
        dirs.extend(self.adopted_roots.iter().cloned());
        dirs
    }

    /// Removes the cgroup directories once empty (at exit).
    pub fn remove_cgroup_dirs(&self) {
        if let Some(root) = &self.cgroups {
            let _ = root.remove();
        }
        for dir in self.adopted_roots.iter() {
            if let Some(root) = CgroupRoot::existing(dir.clone()) {
                let _ = root.remove();
            }
        }
    }

    /// Resolves if the task that owns every unit ends (it never should: a
    /// panic in it is a bug). The server must not go on without it.
    pub fn failed(&self) -> impl Future<Output = String> + Send + 'static {
        let handle = self.actor.lock().unwrap_or_else(|e| e.into_inner()).take();
        async move {
            match handle {
                Some(handle) => match handle.await {
                    Ok(()) => "the supervisor task ended".to_string(),
                    Err(e) if e.is_panic() => {
                        let panic = e.into_panic();
                        let what = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "a panic".to_string());
                        format!("the supervisor task panicked: {what}")
                    }
                    Err(e) => format!("the supervisor task failed: {e}"),
                },
                None => std::future::pending().await,
            }
        }
    }

    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, SupervisorError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Req(make(reply)))
            .map_err(|_| SupervisorError::Gone)?;
        answer.await.map_err(|_| SupervisorError::Gone)
    }

    /// The config directory.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The cgroup directory of this supervisor's units, if it uses cgroups.
    pub fn cgroup_root(&self) -> Option<&CgroupRoot> {
        self.cgroups.as_ref()
    }

    /// Every unit (services, invalid files, jobs), by name.
    pub async fn list(&self) -> Result<Vec<UnitStatus>, SupervisorError> {
        self.ask(Request::List).await
    }

    /// One unit.
    pub async fn status(&self, name: &str) -> Result<UnitStatus, SupervisorError> {
        self.ask(|r| Request::Status(name.to_string(), r)).await?
    }

    /// Starts a unit; with `wait`, returns once it is running (ready) or has
    /// failed (a oneshot: once it has exited).
    pub async fn start_unit(&self, name: &str, wait: bool) -> Result<UnitStatus, SupervisorError> {
        self.ask(|r| Request::Start(name.to_string(), wait, r))
            .await?
    }

    /// Stops a unit (its dependents keep running) and returns what happened.
    /// A unit that has ended keeps its state and result (the answer has no
    /// report: nothing was running).
    pub async fn stop_unit(&self, name: &str) -> Result<StopResult, SupervisorError> {
        self.ask(|r| Request::Stop(name.to_string(), None, r))
            .await?
    }

    /// As [`Supervisor::stop_unit`], with the stop's progress sent to
    /// `progress` as it goes (nothing when nothing runs, or when it joins a
    /// stop that runs already). Every step is sent before the answer.
    pub async fn stop_unit_watched(
        &self,
        name: &str,
        progress: UnboundedSender<StopProgress>,
    ) -> Result<StopResult, SupervisorError> {
        self.ask(|r| Request::Stop(name.to_string(), Some(progress), r))
            .await?
    }

    /// Stops (if running) and starts a unit; returns once it runs or failed.
    pub async fn restart_unit(&self, name: &str) -> Result<UnitStatus, SupervisorError> {
        self.ask(|r| Request::Restart(name.to_string(), r)).await?
    }

    /// Validates a service file, copies it into the config directory (so a
    /// reload keeps it) and starts the service. Returns its name, its status
    /// right after the start was tried and the file's warnings.
    pub async fn add(&self, file: &Path) -> Result<AddResult, SupervisorError> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            SupervisorError::InvalidArgument(format!("cannot read {}: {e}", file.display()))
        })?;
        let file_name = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                SupervisorError::InvalidArgument(format!("{} has no file name", file.display()))
            })?
            .to_string();
        self.add_text(file, &file_name, &text).await
    }

    /// As [`Supervisor::add`], with the file's content given: `file_name`
    /// (`web.yaml`) names the service, `source` is shown in error messages.
    pub async fn add_text(
        &self,
        source: &Path,
        file_name: &str,
        text: &str,
    ) -> Result<AddResult, SupervisorError> {
        let invalid = |errors| SupervisorError::InvalidConfig(ConfigErrors(errors));
        let is_yaml = Path::new(file_name)
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml");
        if !is_yaml || file_name.contains('/') {
            return Err(invalid(vec![crate::config::ConfigError::file(
                source,
                "a service file's name ends in .yaml or .yml",
            )]));
        }
        let stem = Path::new(file_name)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let (source, text) = (source.to_path_buf(), text.to_string());
        // Parsed off the actor's task: a hostile file stalls nobody else.
        let parsed = tokio::task::spawn_blocking(move || {
            crate::config::parse_service(&source, &stem, &text)
        })
        .await
        .map_err(|e| SupervisorError::Io(e.to_string()))?;
        let config = parsed.map_err(invalid)?;
        let file_name = file_name.to_string();
        self.ask(|r| Request::Add {
            file_name,
            config: Box::new(config),
            reply: r,
        })
        .await?
    }

    /// Stops a service and deletes its file. Returns the stop's report
    /// (`None` when nothing was running).
    pub async fn remove(&self, name: &str) -> Result<Option<UnitStopReport>, SupervisorError> {
        self.ask(|r| Request::Remove(name.to_string(), None, r))
            .await?
    }

    /// As [`Supervisor::remove`], with the stop's progress sent to
    /// `progress` as it goes.
    pub async fn remove_watched(
        &self,
        name: &str,
        progress: UnboundedSender<StopProgress>,
    ) -> Result<Option<UnitStopReport>, SupervisorError> {
        self.ask(|r| Request::Remove(name.to_string(), Some(progress), r))
            .await?
    }

    /// Re-reads the config directory, all or nothing; with `dry_run`, only
    /// says what a reload would do.
    pub async fn reload(&self, dry_run: bool) -> Result<ReloadSummary, SupervisorError> {
        let dir = self.config_dir.clone();
        // Read and parsed off the actor's task.
        let set = tokio::task::spawn_blocking(move || load_dir(&dir))
            .await
            .map_err(|e| SupervisorError::Io(e.to_string()))?
            .map_err(|e| SupervisorError::InvalidConfig(ConfigErrors(vec![e])))?;
        self.ask(|r| Request::Reload(Box::new(set), dry_run, r))
            .await?
    }

    /// Sends `signal` to a unit's main process, or with `all` to every
    /// process of the unit. Returns the pids signalled.
    pub async fn signal(
        &self,
        name: &str,
        signal: Signal,
        all: bool,
    ) -> Result<Vec<i32>, SupervisorError> {
        self.ask(|r| Request::Signal(name.to_string(), signal, all, r))
            .await?
    }

    /// Runs a job; returns its name (`job-N`).
    pub async fn run_job(&self, spec: JobSpec) -> Result<String, SupervisorError> {
        self.ask(|r| Request::RunJob(spec, r)).await?
    }

    /// Every job, oldest first.
    pub async fn jobs(&self) -> Result<Vec<UnitStatus>, SupervisorError> {
        let all = self.list().await?;
        let mut jobs: Vec<UnitStatus> = all
            .into_iter()
            .filter(|u| matches!(u.kind, crate::unit::UnitKind::Job { .. }))
            .collect();
        jobs.sort_by_key(|u| match u.kind {
            crate::unit::UnitKind::Job { id, .. } => id,
            _ => 0,
        });
        Ok(jobs)
    }

    /// CPU (over [`crate::stats::WINDOW`]) and memory of every running
    /// unit (or one).
    pub async fn stats(&self, name: Option<&str>) -> Result<Vec<UnitStats>, SupervisorError> {
        let units = self
            .ask(|r| Request::Members(name.map(str::to_string), r))
            .await??;
        Ok(crate::stats::sample(units).await)
    }

    /// The kept output of a unit (all units when `None`), the last `last` lines.
    pub async fn logs(
        &self,
        name: Option<&str>,
        last: Option<usize>,
    ) -> Result<Vec<Arc<LogLine>>, SupervisorError> {
        if let Some(name) = name {
            self.status(name).await?;
        }
        Ok(self.hub.snapshot(name, last))
    }

    /// As [`Supervisor::logs`], and a follower for the lines after those.
    pub async fn follow_logs(
        &self,
        name: Option<&str>,
        last: Option<usize>,
    ) -> Result<(Vec<Arc<LogLine>>, Follower), SupervisorError> {
        if let Some(name) = name {
            self.status(name).await?;
        }
        Ok(self.hub.follow(name, last))
    }

    /// The processes of every unit that has live ones.
    pub async fn unit_members(&self) -> Result<Vec<(String, Members)>, SupervisorError> {
        self.ask(|r| Request::Members(None, r)).await?
    }

    /// Every service's configuration (for the shutdown's sweep of ports and filters).
    pub async fn configs(&self) -> Result<Vec<Arc<ServiceConfig>>, SupervisorError> {
        self.ask(Request::Configs).await
    }

    /// The event stream from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}
