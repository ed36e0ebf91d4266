//! The shutdown controller: the one path that ends the server, whether the
//! `Shutdown` RPC, SIGTERM, SIGINT or zinit_pid1 asked. The first request
//! starts the supervisor's shutdown (`Supervisor::shutdown`, which owns the
//! order, the stops, the sweep and the verification); later ones join it
//! (a join never changes the deadline; `force` only skips the grace).
//!
//! What is the server's own: the deadline's watchdog (`watchdog`), the
//! replay log every client streams from (`replay`), the exit code, the
//! after-shutdown file for zinit_pid1 (`after`: `reboot` or `poweroff`, as
//! the request that started the shutdown asked), and the clean-up of the
//! socket, the pid file and the cgroup directory.

mod after;
mod replay;
mod watchdog;

use crate::convert;
use replay::{EventStream, Replay};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use zinit_proto::v1 as pb;
use zinit_supervisor::Supervisor;
use zinit_supervisor::shutdown::{EventSink, MAX_DEADLINE, ShutdownOptions, SparePids, Summary};

/// Server exit codes.
pub mod exit {
    /// Everything stopped and nothing is left.
    pub const CLEAN: i32 = 0;
    /// Processes were left.
    pub const LEFTOVERS: i32 = 3;
    /// The deadline cut in (a budget was shortened, or the watchdog fired).
    pub const DEADLINE: i32 = super::watchdog::EXIT_DEADLINE;
}

struct Inner {
    sup: Supervisor,
    socket: PathBuf,
    pid_file: Option<PathBuf>,
    replay: Arc<Replay>,
    force: CancellationToken,
    spare: SparePids,
    finished: watch::Sender<bool>,
    began: watch::Sender<bool>,
    exit_code: AtomicI32,
    /// Where to say `reboot` or `poweroff` when the shutdown ends.
    after_shutdown_file: Option<PathBuf>,
    /// Whether the request that started the shutdown asked for a reboot.
    reboot: AtomicBool,
}

/// A cheap handle to the one shutdown.
#[derive(Clone)]
pub struct ShutdownController {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShutdownController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShutdownController")
    }
}

impl ShutdownController {
    pub fn new(
        sup: Supervisor,
        socket: PathBuf,
        pid_file: Option<PathBuf>,
        after_shutdown_file: Option<PathBuf>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                sup,
                socket,
                pid_file,
                replay: Arc::default(),
                force: CancellationToken::new(),
                spare: SparePids::default(),
                finished: watch::channel(false).0,
                began: watch::channel(false).0,
                exit_code: AtomicI32::new(exit::CLEAN),
                after_shutdown_file,
                reboot: AtomicBool::new(false),
            }),
        }
    }

    /// Resolves once the shutdown has sent its summary.
    pub fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.finished.subscribe();
        async move {
            let _ = rx.wait_for(|f| *f).await;
        }
    }

    /// Resolves once a shutdown has begun.
    pub fn began(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.began.subscribe();
        async move {
            let _ = rx.wait_for(|b| *b).await;
        }
    }

    /// The server's exit code, once the shutdown finished.
    pub fn exit_code(&self) -> i32 {
        self.inner.exit_code.load(Ordering::SeqCst)
    }

    /// Removes the socket, the pid file and this server's cgroup directory.
    pub fn cleanup(&self) {
        let _ = std::fs::remove_file(&self.inner.socket);
        // Empty once every unit's output has ended.
        let _ = std::fs::remove_dir(crate::streams_dir(&self.inner.socket));
        if let Some(path) = &self.inner.pid_file {
            let _ = std::fs::remove_file(path);
        }
        self.inner.sup.remove_cgroup_dirs();
    }

    /// Starts the shutdown, or joins the running one (a join never changes
    /// the deadline, nor whether a reboot follows). `force` skips the
    /// remaining grace. The sweep spares `client` (and its ancestors).
    /// `reboot` is what the after-shutdown file will say.
    pub fn start(&self, timeout: Duration, force: bool, client: Option<i32>, reboot: bool) {
        if let Some(pid) = client {
            self.inner.spare.add(pid);
        }
        if self.inner.replay.begin() {
            self.inner.reboot.store(reboot, Ordering::SeqCst);
            self.inner.began.send_replace(true);
            let inner = self.inner.clone();
            tokio::spawn(async move { run(inner, timeout).await });
        }
        if force {
            self.inner.force.cancel();
        }
    }

    /// The `Shutdown` RPC: a dry run, a watch of the running shutdown, or
    /// a start (or join) with its event stream.
    pub async fn request(
        &self,
        request: pb::ShutdownRequest,
        client: Option<i32>,
    ) -> Result<EventStream, Status> {
        let timeout = convert::shutdown_timeout(request.timeout)?;
        if request.dry_run {
            let spare: Vec<i32> = client.into_iter().collect();
            let plan = self
                .inner
                .sup
                .shutdown_plan(timeout, spare)
                .await
                .map_err(convert::status)?;
            let event = convert::plan_event(plan);
            let item = Ok(pb::ShutdownResponse { event: Some(event) });
            return Ok(Box::pin(tokio_stream::iter(vec![item])));
        }
        if request.join_only {
            if !self.inner.replay.began() {
                return Err(convert::failed_precondition("no shutdown is running"));
            }
            return Ok(self.inner.replay.stream());
        }
        self.start(timeout, request.force, client, request.reboot);
        Ok(self.inner.replay.stream())
    }
}

async fn run(inner: Arc<Inner>, timeout: Duration) {
    let timeout = timeout.min(MAX_DEADLINE);
    let after = inner
        .after_shutdown_file
        .clone()
        .map(|path| after::AfterShutdown {
            path,
            reboot: inner.reboot.load(Ordering::SeqCst),
        });
    let watchdog = watchdog::Watchdog::arm(watchdog::Armed {
        deadline: std::time::Instant::now() + timeout,
        timeout,
        kill: inner.sup.emergency_stop(),
        socket: inner.socket.clone(),
        pid_file: inner.pid_file.clone(),
        after: after.clone(),
    });
    tracing::info!(
        "shutdown: begins (deadline {})",
        humantime::format_duration(timeout)
    );
    // Every event goes into the replay log as it happens, from whichever
    // task makes it (no queue in between to fill up).
    let replay = inner.replay.clone();
    let events: EventSink = Arc::new(move |event| replay.push(convert::shutdown_event(event)));
    let options = ShutdownOptions {
        timeout,
        force: inner.force.clone(),
        spare: inner.spare.clone(),
        reboot: inner.reboot.load(Ordering::SeqCst),
    };
    let summary = inner.sup.shutdown(options, events).await;
    inner.replay.finish();
    watchdog.disarm();
    if let Some(after) = &after {
        after.write_or_warn();
    }
    inner.exit_code.store(exit_code(&summary), Ordering::SeqCst);
    inner.finished.send_replace(true);
}

/// The server's exit code for a shutdown's summary.
fn exit_code(summary: &Summary) -> i32 {
    if !summary.clean() {
        exit::LEFTOVERS
    } else if summary.deadline_hit {
        exit::DEADLINE
    } else {
        exit::CLEAN
    }
}
