//! The supervisor's public types besides the handle: options, errors and
//! the answers of requests that return more than a unit's status.

use crate::config::ConfigErrors;
use crate::stopping::UnitStopReport;
use crate::unit::UnitStatus;
use std::path::PathBuf;
use zinit_process::CgroupRoot;

/// Why a request failed. The control plane maps each to a gRPC code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SupervisorError {
    /// No unit (or job) with that name.
    #[error("no service or job named {0:?}")]
    NotFound(String),
    /// A unit with that name exists already.
    #[error("a service named {0:?} exists already")]
    AlreadyExists(String),
    /// Configuration problems (reload is all-or-nothing; add checks one file).
    #[error("invalid configuration:\n{0}")]
    InvalidConfig(ConfigErrors),
    /// The request does not fit the unit's state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A shutdown is running: no new starts, restarts or jobs.
    #[error("zinit is shutting down: no new starts, restarts or jobs")]
    ShuttingDown,
    /// Bad arguments.
    #[error("{0}")]
    InvalidArgument(String),
    /// The operating system refused something.
    #[error("{0}")]
    Io(String),
    /// The supervisor task is gone.
    #[error("the supervisor has stopped")]
    Gone,
}

/// How to start a supervisor.
#[derive(Debug, Clone)]
pub struct Options {
    /// The config directory.
    pub config_dir: PathBuf,
    /// Where each unit gets its own cgroup (`None`: process groups only).
    pub cgroups: Option<CgroupRoot>,
    /// Lines kept per unit.
    pub log_lines: usize,
    /// Bytes of text kept per unit.
    pub log_bytes: usize,
    /// Where the record a successor takes over from is kept (`None`: no
    /// record, no takeover).
    pub record_file: Option<PathBuf>,
    /// Where units' output FIFOs are kept, so that units that write keep
    /// running when the server dies and the next server reads on (`None`:
    /// plain pipes, which die with the server).
    pub streams_dir: Option<PathBuf>,
    /// What every unit's environment and directory start from.
    pub base: crate::command::Base,
}

impl Options {
    /// Defaults for `config_dir`: no cgroups (set `cgroups` to
    /// [`CgroupRoot::detect`] for them), 10,000 lines or 1 MiB of output per unit.
    pub fn new(config_dir: impl Into<PathBuf>) -> Self {
        Self {
            config_dir: config_dir.into(),
            cgroups: None,
            log_lines: 10_000,
            log_bytes: 1024 * 1024,
            record_file: None,
            streams_dir: None,
            base: crate::command::Base::default(),
        }
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// New services, started.
    pub added: Vec<String>,
    /// Services whose files were deleted, stopped and forgotten.
    pub removed: Vec<String>,
    /// Services whose files changed in what shapes the process (exec, env,
    /// user, dir, limits, log), restarted with the new file.
    pub changed: Vec<String>,
    /// Services whose changes applied without a restart (stop settings,
    /// `after`, restart policy, ports, filters, test).
    pub updated: Vec<String>,
    /// Services left alone (a comment or formatting change is no change).
    pub unchanged: Vec<String>,
    /// Per added, removed, changed or updated service: what changed and
    /// what the reload does about it.
    pub units: Vec<UnitReload>,
    /// Warnings of the new configuration (a capped stop timeout).
    pub warnings: Vec<String>,
    /// Nothing was changed: this is what a reload would do.
    pub dry_run: bool,
}

/// What a reload does (or would do) to one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitReload {
    /// The service.
    pub name: String,
    /// In words: `start`, `stop and forget`, `restart`, `apply live`,
    /// `keep stopped (stopped by request)`, `takes effect at its next start`.
    pub action: String,
    /// The fields that changed (empty for an added or removed service).
    pub fields: Vec<crate::config::FieldChange>,
}

/// What an `add` did.
#[derive(Debug, Clone)]
pub struct AddResult {
    /// The service's name.
    pub name: String,
    /// Its status right after its start was tried: `Failed` with the
    /// reason when its program could not be started (the file stays added).
    pub status: UnitStatus,
    /// Warnings of the file (a capped stop timeout).
    pub warnings: Vec<String>,
}

/// What a stop did, and who still depends on the stopped unit.
#[derive(Debug, Clone)]
pub struct StopResult {
    /// The unit's status after the stop.
    pub status: UnitStatus,
    /// The stop's report (`None` when nothing was running).
    pub report: Option<UnitStopReport>,
    /// Running units that depend on it (they keep running).
    pub running_dependents: Vec<String>,
}

/// What a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobSpec {
    /// The oneshot (or any) service file `NAME` from the config directory.
    Named(String),
    /// An ad-hoc command.
    Command(Vec<String>),
}

/// This process, made ready to supervise by [`Host::prepare`].
#[derive(Debug)]
pub struct Host {
    _reaper: zinit_process::Reaper,
    cgroups: Option<CgroupRoot>,
}

impl Host {
    /// What must be set before the process starts its threads (so before
    /// the async runtime): one malloc arena for all of them, which keeps a
    /// supervisor of hundreds of units small, and the open-file limit
    /// raised with the descriptor table grown to match, which keeps a large
    /// shutdown from stalling on the table's growth (see
    /// [`zinit_process::limits::presize_descriptor_table`]). Call it first
    /// thing in `main`.
    pub fn before_threads() {
        if !zinit_process::memory::share_one_malloc_arena() {
            tracing::debug!("the allocator keeps its own number of arenas");
        }
        let presized = zinit_process::limits::raise_nofile_limit().and_then(|_| {
            zinit_process::limits::presize_descriptor_table(
                zinit_process::limits::PRESIZED_DESCRIPTORS,
            )
        });
        if let Err(e) = presized {
            tracing::debug!("descriptor table left to grow on demand: {e}");
        }
    }

    /// Gives the memory this process freed back to the system, at most once
    /// a second however often it is asked (the asks within that second are
    /// served by one trim at its end). For the end of a burst: a log stream
    /// of a flood that ended, a large shutdown.
    pub fn give_back_memory() {
        static PENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            zinit_process::memory::give_back();
            return;
        };
        if PENDING.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        runtime.spawn(async {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            PENDING.store(false, std::sync::atomic::Ordering::SeqCst);
            let _ = tokio::task::spawn_blocking(zinit_process::memory::give_back).await;
        });
    }

    /// Makes this process ready to supervise: raises its open-file limit to
    /// the hard limit (a pidfd per process; children get the original
    /// back), becomes a child subreaper that reaps the orphans it adopts,
    /// and finds a cgroup v2 hierarchy it may use (none with
    /// `ZINIT_CGROUP=off`). Needs a tokio runtime; call it once.
    /// `identity` names this server's cgroup directory (see
    /// [`CgroupRoot::detect`]): the same for a server and its successor.
    pub fn prepare(identity: &str) -> std::io::Result<Self> {
        let limit = zinit_process::limits::raise_nofile_limit()?;
        tracing::debug!("open file limit {limit}");
        let reaper = zinit_process::Reaper::start()?;
        Ok(Self {
            _reaper: reaper,
            cgroups: CgroupRoot::detect(identity),
        })
    }

    /// Where units get their cgroups, if anywhere.
    pub fn cgroups(&self) -> Option<CgroupRoot> {
        self.cgroups.clone()
    }
}
