//! The shutdown controller: the one path that ends the server, whether the
//! `Shutdown` RPC, SIGTERM, SIGINT or zinit_pid1 asked.
//!
//! 1. Freeze intake (the supervisor hands over every unit that is alive).
//! 2. Plan: a unit starts stopping as soon as every unit that depends on it
//!    has stopped; independent units stop in parallel.
//! 3. Stop each unit with its own command, signal, mode and timeout, capped
//!    by what the global deadline leaves minus a tail reserve.
//! 4. Sweep what is still alive: our descendants (adopted orphans), unit
//!    cgroups, holders of declared ports, matches of declared filters.
//! 5. Verify with a fresh scan; report what is left.
//! 6. Send the summary, close the streams, remove the socket, exit.
//!
//! A watchdog on its own OS thread enforces the deadline even if a step hangs.
//! Events go to a replay log: a request that joins receives every event so
//! far, then the live ones; the summary is always the last.

use crate::convert;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::Status;
use zinit_process::members::protected_pids;
use zinit_process::stop::StopEvent;
use zinit_process::{Detail, ProcessHandle, ProcessId, ProcessTable, Signal, StopOutcome};
use zinit_proto::v1 as pb;
use zinit_supervisor::{ShutdownUnit, Supervisor};

/// The most a shutdown may take.
pub const MAX_DEADLINE: Duration = Duration::from_secs(30);
/// Kept free at the end of the deadline for the sweep, the verification,
/// the final event and the exit.
pub const TAIL_RESERVE: Duration = Duration::from_secs(2);
/// How long swept processes get between SIGTERM and SIGKILL.
const SWEEP_GRACE: Duration = Duration::from_millis(500);

type EventStream =
    Pin<Box<dyn Stream<Item = Result<pb::ShutdownResponse, Status>> + Send + 'static>>;

/// Server exit codes.
pub mod exit {
    /// Everything stopped and nothing is left.
    pub const CLEAN: i32 = 0;
    /// Processes were left.
    pub const LEFTOVERS: i32 = 3;
    /// The deadline cut in.
    pub const DEADLINE: i32 = 4;
}

/// The replay log of the running shutdown.
#[derive(Default)]
struct Log {
    events: Vec<pb::ShutdownEvent>,
    done: bool,
}

struct Inner {
    sup: Supervisor,
    socket: PathBuf,
    pid_file: Option<PathBuf>,
    log: Mutex<Option<Log>>,
    /// The number of events in the log, for streams to wait on.
    grown: watch::Sender<usize>,
    force: watch::Sender<bool>,
    finished: watch::Sender<bool>,
    began: watch::Sender<bool>,
    exit_code: AtomicI32,
    clients: Mutex<HashSet<i32>>,
}

/// A cheap handle to the one shutdown.
#[derive(Clone)]
pub struct ShutdownHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShutdownHandle")
    }
}

impl ShutdownHandle {
    pub fn new(sup: Supervisor, socket: PathBuf, pid_file: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                sup,
                socket,
                pid_file,
                log: Mutex::new(None),
                grown: watch::channel(0).0,
                force: watch::channel(false).0,
                finished: watch::channel(false).0,
                began: watch::channel(false).0,
                exit_code: AtomicI32::new(exit::CLEAN),
                clients: Mutex::new(HashSet::new()),
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

    pub fn exit_code(&self) -> i32 {
        self.inner.exit_code.load(Ordering::SeqCst)
    }

    /// Removes the socket, the pid file and this server's cgroup directory.
    pub fn cleanup(&self) {
        let _ = std::fs::remove_file(&self.inner.socket);
        if let Some(path) = &self.inner.pid_file {
            let _ = std::fs::remove_file(path);
        }
        if let Some(root) = self.inner.sup.cgroup_root() {
            let _ = root.remove();
        }
    }

    /// Starts the shutdown, or joins the running one (a join never changes
    /// the deadline). `force` skips the remaining grace.
    pub fn start(&self, timeout: Duration, force: bool, client: Option<i32>) {
        if let Some(pid) = client {
            self.inner
                .clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(pid);
        }
        let mut log = self.inner.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.is_none() {
            *log = Some(Log::default());
            self.inner.began.send_replace(true);
            let inner = self.inner.clone();
            tokio::spawn(async move { run(inner, timeout).await });
        }
        drop(log);
        if force {
            self.inner.force.send_replace(true);
        }
    }

    /// The `Shutdown` RPC.
    pub async fn request(
        &self,
        request: pb::ShutdownRequest,
        client: Option<i32>,
    ) -> Result<EventStream, Status> {
        let timeout = match request.timeout {
            None => MAX_DEADLINE,
            Some(t) if t.seconds == 0 && t.nanos == 0 => MAX_DEADLINE,
            Some(t) if t.seconds < 0 || t.nanos < 0 => {
                return Err(Status::invalid_argument(
                    "the shutdown timeout cannot be negative",
                ));
            }
            Some(t) => {
                let d = Duration::new(t.seconds as u64, t.nanos as u32);
                if d > MAX_DEADLINE {
                    return Err(Status::invalid_argument(format!(
                        "a shutdown takes at most 30 s; a timeout of {} is refused (only lower ones are allowed)",
                        humantime::format_duration(d)
                    )));
                }
                d
            }
        };
        if request.dry_run {
            let plan = dry_run(&self.inner.sup, timeout, client).await?;
            let event = pb::ShutdownEvent {
                at: Some(convert::duration(Duration::ZERO)),
                kind: Some(pb::shutdown_event::Kind::Plan(plan)),
            };
            let item = Ok(pb::ShutdownResponse { event: Some(event) });
            return Ok(Box::pin(tokio_stream::iter(vec![item])));
        }
        if request.join_only {
            let running = self
                .inner
                .log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some();
            if !running {
                return Err(Status::failed_precondition("no shutdown is running"));
            }
            return Ok(self.stream());
        }
        self.start(timeout, request.force, client);
        Ok(self.stream())
    }

    /// Every event so far, then the live ones, ending after the summary.
    fn stream(&self) -> EventStream {
        let inner = self.inner.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut grown = inner.grown.subscribe();
            let mut sent = 0;
            loop {
                let (batch, done) = {
                    let log = inner.log.lock().unwrap_or_else(|e| e.into_inner());
                    let log = log.as_ref().expect("started");
                    (log.events[sent..].to_vec(), log.done)
                };
                sent += batch.len();
                for event in batch {
                    if tx
                        .send(Ok(pb::ShutdownResponse { event: Some(event) }))
                        .await
                        .is_err()
                    {
                        return; // The client went away; the shutdown goes on.
                    }
                }
                if done {
                    return;
                }
                if grown.wait_for(|n| *n > sent).await.is_err() {
                    return;
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// The running shutdown's context.
struct Run {
    inner: Arc<Inner>,
    start: Instant,
    deadline: Instant,
}

impl Run {
    fn at(&self) -> Duration {
        self.start.elapsed()
    }

    fn emit(&self, kind: pb::shutdown_event::Kind) {
        let event = pb::ShutdownEvent {
            at: Some(convert::duration(self.at())),
            kind: Some(kind),
        };
        let n = {
            let mut log = self.inner.log.lock().unwrap_or_else(|e| e.into_inner());
            let log = log.as_mut().expect("started");
            log.events.push(event);
            log.events.len()
        };
        self.inner.grown.send_replace(n);
    }

    fn finish(&self) {
        let n = {
            let mut log = self.inner.log.lock().unwrap_or_else(|e| e.into_inner());
            let Some(log) = log.as_mut() else { return };
            log.done = true;
            log.events.len()
        };
        // Wake the streams so they see `done`.
        self.inner.grown.send_replace(n + 1);
    }

    /// What a unit may spend: its timeout, capped by the deadline minus the
    /// tail reserve; nothing once forced.
    fn budget_for(&self, timeout: Duration) -> Duration {
        if *self.inner.force.borrow() {
            return Duration::ZERO;
        }
        let left = (self.deadline - TAIL_RESERVE).saturating_duration_since(Instant::now());
        timeout.min(left)
    }
}

/// What the watchdog kills when the deadline passes: everything in this
/// server's cgroups and every descendant of this server (it is a child
/// subreaper, so double-forked daemons are descendants too). It reads only
/// the filesystem: no lock the runtime could hold.
fn watchdog_kill(cgroup_root: Option<&std::path::Path>) {
    if let Some(root) = cgroup_root {
        for dir in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let _ = std::fs::write(dir.path().join("cgroup.kill"), "1");
        }
    }
    let me = std::process::id() as i32;
    for _ in 0..3 {
        let table = ProcessTable::snapshot(Detail::Basic).unwrap_or_default();
        let descendants = table.descendants(me);
        if descendants.is_empty() {
            break;
        }
        for (pid, _) in descendants {
            // SAFETY: plain system call; these are our own descendants.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn arm_watchdog(
    deadline: std::time::Instant,
    timeout: Duration,
    done: Arc<AtomicBool>,
    cgroup_root: Option<PathBuf>,
    socket: PathBuf,
    pid_file: Option<PathBuf>,
) -> Option<std::thread::Thread> {
    let spawned = std::thread::Builder::new()
        .name("zinit-watchdog".into())
        .spawn(move || {
            loop {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                let now = std::time::Instant::now();
                if now >= deadline {
                    break;
                }
                std::thread::park_timeout(deadline - now);
            }
            if done.load(Ordering::SeqCst) {
                return;
            }
            watchdog_kill(cgroup_root.as_deref());
            eprintln!(
                "zinit_server: the shutdown deadline of {} passed with a step still running; \
             killed every process left in the units and below the server; exiting with code {}",
                humantime::format_duration(timeout),
                exit::DEADLINE
            );
            let _ = std::fs::remove_file(&socket);
            if let Some(path) = &pid_file {
                let _ = std::fs::remove_file(path);
            }
            // SAFETY: ends the process at once, with no unwinding or locks.
            unsafe { libc::_exit(exit::DEADLINE) };
        });
    match spawned {
        Ok(handle) => Some(handle.thread().clone()),
        Err(e) => {
            tracing::error!("cannot start the shutdown watchdog: {e}");
            None
        }
    }
}

async fn run(inner: Arc<Inner>, timeout: Duration) {
    let start = Instant::now();
    let run = Run {
        inner: inner.clone(),
        start,
        deadline: start + timeout,
    };
    let done = Arc::new(AtomicBool::new(false));
    let watchdog_deadline = std::time::Instant::now() + timeout;
    let watchdog = arm_watchdog(
        watchdog_deadline,
        timeout,
        done.clone(),
        inner.sup.cgroup_root().map(|r| r.path().to_path_buf()),
        inner.socket.clone(),
        inner.pid_file.clone(),
    );
    tracing::info!(
        "shutdown: begins (deadline {})",
        humantime::format_duration(timeout)
    );

    test_hooks::maybe_wedge("before-freeze").await;
    let units = match tokio::time::timeout(Duration::from_secs(5), inner.sup.begin_shutdown()).await
    {
        Ok(Ok(units)) => units,
        _ => Vec::new(),
    };
    let configs = inner.sup.configs().await.unwrap_or_default();

    let mut summary = pb::ShutdownSummary::default();
    stop_units(&run, &units, &mut summary).await;
    test_hooks::maybe_wedge("before-sweep").await;
    let scope = SweepScope {
        configs,
        cgroup_root: inner.sup.cgroup_root().map(|r| r.path().to_path_buf()),
        exclude: excluded_pids(&inner),
    };
    summary.processes_swept = sweep(&run, &scope).await;
    let leftovers = verify(&scope).await;
    run.emit(pb::shutdown_event::Kind::Verification(pb::Verification {
        clean: leftovers.is_empty(),
        leftovers: leftovers.clone(),
    }));
    summary.clean = leftovers.is_empty();
    summary.leftovers = leftovers;
    summary.duration = Some(convert::duration(run.at()));
    let code = if !summary.clean {
        exit::LEFTOVERS
    } else if summary.deadline_hit {
        exit::DEADLINE
    } else {
        exit::CLEAN
    };
    tracing::info!(
        "shutdown: done in {:.2}s; {} graceful, {} killed, {} swept, {} left",
        run.at().as_secs_f64(),
        summary.processes_graceful,
        summary.processes_killed,
        summary.processes_swept,
        summary.leftovers.len()
    );
    run.emit(pb::shutdown_event::Kind::Summary(summary));
    run.finish();
    done.store(true, Ordering::SeqCst);
    if let Some(thread) = watchdog {
        thread.unpark();
    }
    inner.exit_code.store(code, Ordering::SeqCst);
    inner.finished.send_replace(true);
}

/// The client pids (and their ancestors) that asked: never swept.
fn excluded_pids(inner: &Inner) -> Vec<i32> {
    let clients: Vec<i32> = inner
        .clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    let table = ProcessTable::snapshot(Detail::Basic).unwrap_or_default();
    let mut out = clients.clone();
    for pid in clients {
        out.extend(table.ancestors(pid));
    }
    out
}

/// For each unit, the alive units that depend on it (they stop first).
fn dependents_of(units: &[ShutdownUnit]) -> BTreeMap<String, Vec<String>> {
    let alive: HashSet<&str> = units.iter().map(|u| u.name.as_str()).collect();
    let mut out: BTreeMap<String, Vec<String>> =
        units.iter().map(|u| (u.name.clone(), Vec::new())).collect();
    for unit in units {
        for dep in &unit.after {
            if alive.contains(dep.as_str()) {
                out.entry(dep.clone()).or_default().push(unit.name.clone());
            }
        }
    }
    out
}

fn planned(unit: &ShutdownUnit, waits_for: Vec<String>, budget: Duration) -> pb::PlannedUnit {
    pb::PlannedUnit {
        name: unit.name.clone(),
        waits_for,
        budget: Some(convert::duration(budget)),
        signal: unit.config.stop_signal.as_str().to_string(),
        mode: mode_name(unit.config.stop_mode).to_string(),
    }
}

fn mode_name(mode: zinit_process::StopMode) -> &'static str {
    match mode {
        zinit_process::StopMode::Tree => "tree",
        zinit_process::StopMode::Group => "group",
        zinit_process::StopMode::Main => "main",
    }
}

/// Stops every unit, each as soon as its dependents are gone.
async fn stop_units(run: &Run, units: &[ShutdownUnit], summary: &mut pb::ShutdownSummary) {
    let dependents = dependents_of(units);
    run.emit(pb::shutdown_event::Kind::Plan(pb::ShutdownPlan {
        units: units
            .iter()
            .map(|u| {
                planned(
                    u,
                    dependents[&u.name].clone(),
                    run.budget_for(u.config.stop_timeout),
                )
            })
            .collect(),
        deadline: Some(convert::duration(run.deadline - run.start)),
        sweep: Vec::new(),
        dry_run: false,
    }));
    let by_name: HashMap<&str, &ShutdownUnit> =
        units.iter().map(|u| (u.name.as_str(), u)).collect();
    let mut pending: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
    let mut stopped: HashSet<String> = HashSet::new();
    let mut running = tokio::task::JoinSet::new();
    let (progress_tx, mut progress_rx) =
        tokio::sync::mpsc::unbounded_channel::<(String, Duration, StopEvent)>();
    loop {
        // Start every unit whose dependents have all stopped. If nothing can
        // start and nothing runs, the rest is a cycle: start it all.
        let ready: Vec<&str> = pending
            .iter()
            .copied()
            .filter(|name| dependents[*name].iter().all(|d| stopped.contains(d)))
            .collect();
        let ready = if ready.is_empty() && running.is_empty() {
            pending.clone()
        } else {
            ready
        };
        for name in ready {
            pending.retain(|p| *p != name);
            let unit = by_name[name];
            let budget = run.budget_for(unit.config.stop_timeout);
            if budget < unit.config.stop_timeout {
                summary.deadline_hit |= !*run.inner.force.borrow();
            }
            run.emit(pb::shutdown_event::Kind::UnitStopping(pb::UnitStopping {
                name: name.to_string(),
                signal: unit.config.stop_signal.as_str().to_string(),
                mode: mode_name(unit.config.stop_mode).to_string(),
                budget: Some(convert::duration(budget)),
            }));
            let kill_wait = (run.deadline - TAIL_RESERVE / 2)
                .saturating_duration_since(Instant::now() + budget)
                .clamp(Duration::from_millis(100), Duration::from_secs(1));
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let forward = progress_tx.clone();
            let unit_name = name.to_string();
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    let _ = forward.send((unit_name.clone(), budget, event));
                }
            });
            let config = unit.config.clone();
            let members = unit.members.clone();
            let hurry = run.inner.force.subscribe();
            let unit_name = name.to_string();
            running.spawn(async move {
                let started = Instant::now();
                let mut config = (*config).clone();
                config.stop_timeout = budget;
                let report = zinit_supervisor::stopping::stop_unit_with(
                    &config,
                    &members,
                    budget,
                    kill_wait,
                    Some(&tx),
                    Some(hurry),
                )
                .await;
                (unit_name, started.elapsed(), report)
            });
        }
        if running.is_empty() && pending.is_empty() {
            break;
        }
        tokio::select! {
            Some(joined) = running.join_next() => {
                let Ok((name, took, report)) = joined else { continue };
                // Flush this unit's progress first.
                while let Ok((unit, budget, event)) = progress_rx.try_recv() {
                    progress(run, &unit, budget, event);
                }
                let mut stopped_event = pb::UnitStopped {
                    name: name.clone(),
                    duration: Some(convert::duration(took)),
                    outcome: pb::StopOutcome::Incomplete as i32,
                    ..Default::default()
                };
                match report {
                    Ok(report) => {
                        let (exited, killed) = report.processes.exit_counts();
                        stopped_event.outcome = convert::outcome(report.outcome) as i32;
                        stopped_event.processes_exited = exited as u32;
                        stopped_event.processes_killed = killed as u32;
                        summary.processes_graceful += (exited - killed) as u32;
                        summary.processes_killed += killed as u32;
                        match report.outcome {
                            StopOutcome::Graceful => summary.units_graceful += 1,
                            _ => summary.units_killed += 1,
                        }
                    }
                    Err(e) => tracing::error!("shutdown: stopping {name}: {e}"),
                }
                if let Ok(status) = run.inner.sup.status(&name).await {
                    stopped_event.exit_status = status.last_exit.map(convert::exit_status);
                }
                run.inner.sup.unit_shut_down(&name, "stopped by the shutdown");
                run.emit(pb::shutdown_event::Kind::UnitStopped(stopped_event));
                stopped.insert(name);
            }
            Some((unit, budget, event)) = progress_rx.recv() => progress(run, &unit, budget, event),
        }
    }
    while let Ok((unit, budget, event)) = progress_rx.try_recv() {
        progress(run, &unit, budget, event);
    }
}

fn progress(run: &Run, unit: &str, budget: Duration, event: StopEvent) {
    match event {
        StopEvent::Signalled {
            pid,
            depth,
            comm,
            signal,
            ..
        } => run.emit(pb::shutdown_event::Kind::SignalSent(pb::SignalSent {
            unit: unit.to_string(),
            pid: pid as u32,
            depth: depth as u32,
            signal: signal.as_str().to_string(),
            name: comm,
        })),
        StopEvent::Waiting { remaining, at } => {
            run.emit(pb::shutdown_event::Kind::StillWaiting(pb::StillWaiting {
                blockers: remaining
                    .into_iter()
                    .map(|(pid, comm)| pb::Blocker {
                        unit: unit.to_string(),
                        pid: pid as u32,
                        name: comm,
                        waiting: Some(convert::duration(at)),
                        budget: Some(convert::duration(budget)),
                    })
                    .collect(),
            }))
        }
        StopEvent::Exited { .. } | StopEvent::Escalating { .. } => {}
    }
}

/// One process the sweep targets.
struct Target {
    id: ProcessId,
    name: String,
    reason: String,
    depth: usize,
}

/// What the sweep looks at: the declared ports and filters, this server's
/// cgroup directory, and the pids it must spare (the clients that asked).
#[derive(Clone)]
struct SweepScope {
    configs: Vec<Arc<zinit_supervisor::config::ServiceConfig>>,
    cgroup_root: Option<PathBuf>,
    exclude: Vec<i32>,
}

impl SweepScope {
    /// The targets, read on a blocking thread (/proc reads can hang),
    /// giving up after `bound`.
    async fn targets_within(&self, bound: Duration) -> Option<Vec<Target>> {
        let scope = self.clone();
        let read = tokio::task::spawn_blocking(move || sweep_targets(&scope));
        match tokio::time::timeout(bound, read).await {
            Ok(Ok(targets)) => Some(targets),
            _ => None,
        }
    }
}

/// What the sweep would kill now: our descendants, unit cgroups, port
/// holders, filter matches; never protected processes or the excluded ones.
fn sweep_targets(scope: &SweepScope) -> Vec<Target> {
    let (configs, exclude) = (&scope.configs, &scope.exclude);
    let Ok(table) = ProcessTable::snapshot(Detail::Full) else {
        return Vec::new();
    };
    let mut protected = protected_pids(&table);
    protected.extend(exclude.iter().copied());
    let me = std::process::id() as i32;
    let mut found: BTreeMap<i32, String> = BTreeMap::new();
    for (pid, _) in table.descendants(me) {
        found.entry(pid).or_insert_with(|| "orphan".to_string());
    }
    if let Some(root) = &scope.cgroup_root
        && let Ok(dirs) = std::fs::read_dir(root)
    {
        for dir in dirs.flatten().filter(|d| d.path().is_dir()) {
            let cgroup = zinit_process::Cgroup::at(dir.path());
            let unit = dir.file_name().to_string_lossy().into_owned();
            for pid in cgroup.procs().unwrap_or_default() {
                found
                    .entry(pid)
                    .or_insert_with(|| format!("cgroup of {unit}"));
            }
        }
    }
    let ports: Vec<zinit_process::Port> = configs
        .iter()
        .flat_map(|c| c.ports.iter().copied())
        .collect();
    for (pid, port) in zinit_process::ports::port_owners(&ports) {
        found.entry(pid).or_insert_with(|| format!("port {port}"));
    }
    let filters: Vec<zinit_process::ProcessFilter> = configs
        .iter()
        .flat_map(|c| c.process_filters.iter().cloned())
        .collect();
    for (info, index) in zinit_process::filter::matching(&filters, &table, exclude.as_slice()) {
        found
            .entry(info.pid)
            .or_insert_with(|| format!("filter {}", filters[index]));
    }
    found
        .into_iter()
        .filter(|(pid, _)| !protected.contains(pid))
        .filter_map(|(pid, reason)| {
            let info = table.get(pid)?;
            if info.kernel_thread || info.is_zombie() {
                return None;
            }
            Some(Target {
                id: ProcessId {
                    pid,
                    start_time: info.start_time,
                },
                name: info.comm.clone(),
                reason,
                depth: table.ancestors(pid).len(),
            })
        })
        .collect()
}

async fn dry_run(
    sup: &Supervisor,
    timeout: Duration,
    client: Option<i32>,
) -> Result<pb::ShutdownPlan, Status> {
    let units = sup.list().await.map_err(convert::status)?;
    let configs = sup.configs().await.map_err(convert::status)?;
    let mut exclude: Vec<i32> = client.into_iter().collect();
    let table = ProcessTable::snapshot(Detail::Basic).unwrap_or_default();
    if let Some(pid) = client {
        exclude.extend(table.ancestors(pid));
    }
    // Processes of live units are stopped by their units, not swept.
    for (_, members) in sup.unit_members().await.map_err(convert::status)? {
        exclude.extend(members.scan(&table).into_iter().map(|m| m.id.pid));
    }
    let alive: Vec<&zinit_supervisor::UnitStatus> =
        units.iter().filter(|u| u.processes_alive).collect();
    let names: HashSet<&str> = alive.iter().map(|u| u.name.as_str()).collect();
    let by_name: HashMap<&str, &Arc<zinit_supervisor::config::ServiceConfig>> =
        configs.iter().map(|c| (c.name.as_str(), c)).collect();
    let plan_units = alive
        .iter()
        .map(|u| {
            let waits_for: Vec<String> = alive
                .iter()
                .filter(|other| {
                    other.after.iter().any(|d| d == &u.name) && names.contains(other.name.as_str())
                })
                .map(|other| other.name.clone())
                .collect();
            let (budget, signal, mode) = match by_name.get(u.name.as_str()) {
                Some(c) => (
                    c.stop_timeout.min(timeout.saturating_sub(TAIL_RESERVE)),
                    c.stop_signal.as_str().to_string(),
                    mode_name(c.stop_mode).to_string(),
                ),
                None => (Duration::ZERO, String::new(), String::new()),
            };
            pb::PlannedUnit {
                name: u.name.clone(),
                waits_for,
                budget: Some(convert::duration(budget)),
                signal,
                mode,
            }
        })
        .collect();
    let scope = SweepScope {
        configs,
        cgroup_root: sup.cgroup_root().map(|r| r.path().to_path_buf()),
        exclude,
    };
    let sweep = scope
        .targets_within(Duration::from_secs(2))
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|t| pb::SweepTarget {
            pid: t.id.pid as u32,
            name: t.name,
            reason: t.reason,
        })
        .collect();
    Ok(pb::ShutdownPlan {
        units: plan_units,
        deadline: Some(convert::duration(timeout)),
        sweep,
        dry_run: true,
    })
}

/// TERM (and CONT), a short grace, KILL deepest first; returns how many died.
async fn sweep(run: &Run, scope: &SweepScope) -> u32 {
    let bound = (run.deadline - TAIL_RESERVE / 2)
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let mut targets = scope.targets_within(bound).await.unwrap_or_default();
    if targets.is_empty() {
        return 0;
    }
    targets.sort_by_key(|t| std::cmp::Reverse(t.depth));
    let Ok(mut watcher) = zinit_process::watch::ExitWatcher::new() else {
        return 0;
    };
    let mut live: HashMap<i32, (ProcessHandle, &Target, &'static str)> = HashMap::new();
    for target in &targets {
        if let Ok(handle) = ProcessHandle::open(target.id) {
            let _ = handle.signal(Signal::SIGTERM);
            let _ = handle.signal(Signal::SIGCONT);
            let _ = watcher.add(&handle);
            run.emit(pb::shutdown_event::Kind::SignalSent(pb::SignalSent {
                unit: String::new(),
                pid: target.id.pid as u32,
                depth: target.depth as u32,
                signal: "SIGTERM".into(),
                name: target.name.clone(),
            }));
            live.insert(target.id.pid, (handle, target, "SIGTERM"));
        }
    }
    let mut swept = 0;
    let mut reap =
        |watcher_exits: Vec<i32>,
         live: &mut HashMap<i32, (ProcessHandle, &Target, &'static str)>| {
            for pid in watcher_exits {
                if let Some((_, target, signal)) = live.remove(&pid) {
                    swept += 1;
                    run.emit(pb::shutdown_event::Kind::ProcessSwept(pb::ProcessSwept {
                        pid: pid as u32,
                        name: target.name.clone(),
                        reason: target.reason.clone(),
                        signal: signal.to_string(),
                    }));
                }
            }
        };
    let grace_end = Instant::now()
        + SWEEP_GRACE
            .min((run.deadline - TAIL_RESERVE / 2).saturating_duration_since(Instant::now()));
    while !live.is_empty() {
        match watcher.wait(grace_end).await {
            Ok(wake) if !wake.is_timeout() => reap(wake.exited, &mut live),
            _ => break,
        }
    }
    let mut left: Vec<(i32, usize)> = live
        .iter()
        .map(|(pid, (_, t, _))| (*pid, t.depth))
        .collect();
    left.sort_by_key(|l| std::cmp::Reverse(l.1));
    for (pid, _) in left {
        if let Some(entry) = live.get_mut(&pid) {
            let _ = entry.0.signal(Signal::SIGKILL);
            entry.2 = "SIGKILL";
        }
    }
    let kill_end = Instant::now()
        + Duration::from_millis(500)
            .min((run.deadline - TAIL_RESERVE / 4).saturating_duration_since(Instant::now()));
    while !live.is_empty() {
        match watcher.wait(kill_end).await {
            Ok(wake) if !wake.is_timeout() => reap(wake.exited, &mut live),
            _ => break,
        }
    }
    swept
}

/// A fresh scan: anything the sweep would still target is a leftover.
async fn verify(scope: &SweepScope) -> Vec<pb::Leftover> {
    let targets = match scope.targets_within(Duration::from_secs(1)).await {
        Some(targets) => targets,
        None => {
            return vec![pb::Leftover {
                pid: 0,
                name: String::new(),
                reason: "the verification scan did not finish (a /proc read blocked)".into(),
            }];
        }
    };
    let mut buf = Vec::new();
    targets
        .into_iter()
        .map(|t| {
            let state = zinit_process::proc_table::read_process(t.id.pid, Detail::Basic, &mut buf)
                .map(|i| i.state);
            let why = match state {
                Some(zinit_process::ProcState::Uninterruptible) => {
                    "in uninterruptible sleep (D): SIGKILL lands only when its system call returns"
                        .to_string()
                }
                Some(s) => format!("still alive after SIGKILL (state {})", s.code()),
                None => "gone during the verification".to_string(),
            };
            pb::Leftover {
                pid: t.id.pid as u32,
                name: t.name,
                reason: format!("{} ({why})", t.reason),
            }
        })
        .collect()
}

/// The signals the server takes on its signal thread.
pub struct Signals(nix::sys::signal::SigSet);

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and every thread
/// started after it); the signal thread takes them with `sigwait`.
pub fn block_signals() -> std::io::Result<Signals> {
    use nix::sys::signal::{SigSet, Signal as S};
    let mut set = SigSet::empty();
    for sig in [S::SIGTERM, S::SIGINT, S::SIGHUP] {
        set.add(sig);
    }
    set.thread_block().map_err(std::io::Error::from)?;
    Ok(Signals(set))
}

/// Takes OS signals on a thread of its own, so that a second Ctrl+C forces
/// the shutdown even when the runtime is busy: SIGHUP reloads, SIGTERM starts
/// (or joins) the shutdown, SIGINT starts it and a second SIGINT forces it.
pub fn signal_thread(signals: Signals, controller: ShutdownHandle, sup: Supervisor) {
    let runtime = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new().name("zinit-signals".into()).spawn(move || {
        let mut interrupts = 0;
        loop {
            let Ok(signal) = signals.0.wait() else { continue };
            match signal {
                Signal::SIGHUP => {
                    let sup = sup.clone();
                    runtime.spawn(async move {
                        match sup.reload().await {
                            Ok(s) => tracing::info!(
                                "SIGHUP: reloaded; added {:?}, removed {:?}, changed {:?}",
                                s.added, s.removed, s.changed
                            ),
                            Err(e) => tracing::error!("SIGHUP: reload refused: {e}"),
                        }
                    });
                }
                Signal::SIGINT => {
                    interrupts += 1;
                    let force = interrupts > 1;
                    if force {
                        tracing::warn!("second SIGINT: forcing the shutdown (the sweep and verification still run)");
                    }
                    let controller = controller.clone();
                    let _guard = runtime.enter();
                    controller.start(MAX_DEADLINE, force, None);
                }
                _ => {
                    let controller = controller.clone();
                    let _guard = runtime.enter();
                    controller.start(MAX_DEADLINE, false, None);
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the signal thread: {e}");
    }
}

/// A fault hook for the watchdog test, compiled into debug builds only
/// (never into a release): `ZINIT_TEST_WEDGE=<step>` makes that step hang.
mod test_hooks {
    #[cfg(debug_assertions)]
    pub async fn maybe_wedge(step: &str) {
        if std::env::var("ZINIT_TEST_WEDGE").is_ok_and(|s| s == step) {
            tracing::warn!("test hook: wedging the shutdown at {step}");
            std::future::pending::<()>().await;
        }
    }

    #[cfg(not(debug_assertions))]
    pub async fn maybe_wedge(_step: &str) {}
}
