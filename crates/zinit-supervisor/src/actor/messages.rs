//! What the actor receives: requests from the `Supervisor` handle (each
//! with the channel its answer goes back on) and reports from the tasks the
//! actor started (process exits, readiness results, finished stops, back-off
//! timers), each carrying the instance, stop or timer generation it was
//! started for, so a stale report is recognised and ignored.

use crate::api::{AddResult, JobSpec, ReloadSummary, StopResult, SupervisorError};
use crate::config::{ConfigSet, ServiceConfig};
use crate::shutdown::{DoneTo, ShutdownUnit};
use crate::stopping::{StopProgress, UnitStopReport};
use crate::unit::{TimerGeneration, UnitStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use zinit_process::StopSink;
use zinit_process::spawn::ExitStatus;
use zinit_process::{Members, Signal, Wave};

/// Where the answer to a request goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, SupervisorError>>;

/// Requests from the handle.
pub(crate) enum Request {
    List(oneshot::Sender<Vec<UnitStatus>>),
    Status(String, Reply<UnitStatus>),
    Start(String, bool, Reply<UnitStatus>),
    /// Stop a unit; its progress goes to the sender, if any.
    Stop(
        String,
        Option<UnboundedSender<StopProgress>>,
        Reply<StopResult>,
    ),
    Restart(String, Reply<UnitStatus>),
    /// A file parsed (off the actor's task) and to be written as `file_name`.
    Add {
        file_name: String,
        config: Box<ServiceConfig>,
        reply: Reply<AddResult>,
    },
    /// Stop a service (its progress to the sender, if any) and forget it;
    /// answered with the stop's report.
    Remove(
        String,
        Option<UnboundedSender<StopProgress>>,
        Reply<Option<UnitStopReport>>,
    ),
    /// The config directory, loaded off the actor's task.
    /// A reloaded directory; `true`: only say what would change.
    Reload(Box<ConfigSet>, bool, Reply<ReloadSummary>),
    Signal(String, Signal, bool, Reply<Vec<i32>>),
    RunJob(JobSpec, Reply<String>),
    Members(Option<String>, Reply<Vec<(String, Members)>>),
    Configs(oneshot::Sender<Vec<Arc<ServiceConfig>>>),
    /// Freeze intake (recording the deadline, in ms since the Unix epoch);
    /// answer with every unit whose processes are alive.
    BeginShutdown(u64, bool, oneshot::Sender<Vec<ShutdownUnit>>),
    /// The shutdown is over: nothing is left for a successor. Answered once
    /// the takeover record is gone.
    ShutdownDone(oneshot::Sender<()>),
    /// Stop one unit for the shutdown.
    ShutdownStop(ShutdownStop),
}

/// The shutdown's stop of one unit: the same stop as any other, with the
/// budget the deadline leaves, the shutdown's progress channel and its
/// `force` token.
pub(crate) struct ShutdownStop {
    pub name: String,
    pub budget: Duration,
    pub kill_wait: Duration,
    pub progress: Arc<dyn StopSink>,
    pub hurry: CancellationToken,
    /// Its place in the wave of units the shutdown starts together.
    pub wave: Wave,
    pub reply: DoneTo,
}

/// Everything the actor handles.
pub(crate) enum Msg {
    Req(Request),
    MainExited {
        unit: String,
        instance: u64,
        /// `None` for an adopted process: not our child, its status is unknown.
        status: Option<ExitStatus>,
        /// The processes of the instance still alive right after (a
        /// program that daemonized leaves its daemon).
        remaining: usize,
    },
    /// The main process a unit with `pid_file` follows from now on, read
    /// from that file once the first one exited (or why it could not be).
    Followed {
        unit: String,
        instance: u64,
        main: Result<zinit_process::ProcessId, String>,
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
        stop_op: u64,
        report: Result<UnitStopReport, String>,
    },
    BackoffDone {
        unit: String,
        timers: TimerGeneration,
    },
    /// Every output pipe of the instance reached end of file.
    OutputClosed {
        unit: String,
        instance: u64,
    },
    /// A record held back during a shutdown is due (see `save_record`).
    SaveRecord,
}
